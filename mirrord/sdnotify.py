"""systemd's notify protocol (READY=1, WATCHDOG=1, STATUS=...) without libsystemd."""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


def notify(state: str) -> bool:
    """Send `state` to $NOTIFY_SOCKET; return False when not run by systemd or on error."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    # "@name" is an abstract socket: a leading NUL byte on the wire.
    address = "\0" + path[1:] if path.startswith("@") else path
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(state.encode(), address)
    except OSError as exc:
        log.warning("sdnotify.failed state=%s error=%s", state.split("\n", maxsplit=1)[0], exc)
        return False
    return True


def watchdog_interval() -> float | None:
    """Return how often to send WATCHDOG=1 (half of WatchdogSec), or None if not asked."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2e6
    except ValueError:
        return None
