"""mirrord: keeps the standby's copy of each mirrored directory fresh."""

__version__ = "0.1.0"
