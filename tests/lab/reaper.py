"""Run a command as a child subreaper, so its orphaned descendants are reaped at once.

    python -m tests.lab.reaper COMMAND [ARG...]

Why: QEMU daemonizes, so when libvirtd starts a guest its parent becomes the machine's init.
This machine's init reaps orphans only every ~1.8 s, and libvirt waits for a stopped QEMU's PID
to disappear: every destroy, migration confirm and crash event took ~1.5 s longer than on a host
whose init is systemd. With PR_SET_CHILD_SUBREAPER the orphans come to this process instead,
which reaps them immediately. SIGTERM/SIGINT/SIGHUP are passed to the command; this process
exits with the command's status once the command has exited.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_CHILD_SUBREAPER = 36


def main(argv: list[str]) -> int:
    """Start argv as a child, reap every descendant that ends, return argv's exit status."""
    if not argv:
        print("usage: python -m tests.lab.reaper COMMAND [ARG...]", file=sys.stderr)
        return 2
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print(f"reaper: prctl: {os.strerror(ctypes.get_errno())}", file=sys.stderr)
        return 1
    child = os.fork()
    if child == 0:
        try:
            os.execvp(argv[0], argv)
        finally:
            os._exit(127)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: os.kill(child, signum))
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            return 1
        if pid == child:
            return os.waitstatus_to_exitcode(status) & 0xFF


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
