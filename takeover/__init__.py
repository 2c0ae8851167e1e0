"""takeover: decides which node of the pair is active and moves the service to it."""

__version__ = "0.1.0"
