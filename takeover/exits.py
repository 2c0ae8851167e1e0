"""Exit codes with their systemd/LSB meanings, shared by both command-line tools."""

from enum import IntEnum


class Exit(IntEnum):
    """Exit status of every subcommand except `status`."""

    OK = 0
    FAILURE = 1
    # Invalid configuration: systemd must not restart (RestartPreventExitStatus=2 6).
    CONFIG = 2
    NO_PERMISSION = 4
    NOT_CONFIGURED = 6


class StatusExit(IntEnum):
    """Exit status of `status`, after the LSB init-script convention."""

    ACTIVE_OR_STANDBY = 0
    NOT_RUNNING = 3
    UNKNOWN = 4
