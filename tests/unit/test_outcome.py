"""rsync's messages, all of them, name why a pass failed; the class follows the cause."""

from __future__ import annotations

import pytest

from mirrord.cli import format_status
from mirrord.outcome import CAUSES, TAIL_LINES, Messages
from mirrord.planner import Result
from mirrord.transfer import classify

# What rsync, its daemon, ssh and the push check printed in the lab (rsync 3.2.7, OpenSSH).
DISK_FULL = """\
rsync: [receiver] write failed on "big" (in srv-a): No space left on device (28)
rsync error: error in file IO (code 11) at receiver.c(657) [receiver=3.2.7]
rsync: [sender] write error: Broken pipe (32)
rsync error: error in rsync protocol data stream (code 12) at io.c(848) [sender=3.2.7]
"""
MISSING_ARG = """\
invalid file mode 00 for gone.txt [Receiver]
rsync error: protocol incompatibility (code 2) at flist.c(874) [Receiver=3.2.7]
"""
CHROOT = """\
@ERROR: chroot failed
rsync error: error starting client-server protocol (code 5) at main.c(1863) [sender=3.2.7]
"""
UNKNOWN_MODULE = """\
@ERROR: Unknown module 'srv-a-1f2e3d'
rsync error: error starting client-server protocol (code 5) at main.c(1863) [sender=3.2.7]
"""
HOST_KEY = """\
Host key verification failed.
rsync: did not see server greeting
rsync error: error starting client-server protocol (code 5) at main.c(1863) [sender=3.2.7]
"""
MISSING_ROOT = """\
pre-xfer exec returned failure (256):
mirrord: /srv/a does not exist on this node (create it, or mount its disk)
rsync error: requested action not supported (code 4) at clientserver.c(1267) [Receiver=3.2.7]
"""
SOURCE = """\
pre-xfer exec returned failure (256):
mirrord: /srv/a: this node is (or was, until it stopped) the source of this root; it accepts \
pushes once its mirrord has set its unsynced changes aside
rsync error: requested action not supported (code 4) at clientserver.c(1267) [Receiver=3.2.7]
"""
REFUSED_KEY = """\
mirrord@192.0.2.12: Permission denied (publickey).
rsync: connection unexpectedly closed (0 bytes received so far) [sender]
rsync error: unexplained error (code 255) at io.c(232) [sender=3.2.7]
"""
UNREACHABLE = """\
ssh: connect to host 192.0.2.12 port 22: No route to host
rsync: connection unexpectedly closed (0 bytes received so far) [sender]
rsync error: unexplained error (code 255) at io.c(232) [sender=3.2.7]
"""

# rc, stderr -> class, words in the reason, the line shown
TABLE = [
    (2, DISK_FULL, Result.ALARM, "disk is full", "No space left on device"),
    (11, DISK_FULL, Result.ALARM, "disk is full", "No space left on device"),
    (23, DISK_FULL, Result.ALARM, "disk is full", "No space left on device"),
    (5, CHROOT, Result.ALARM, "root is missing on the peer", "@ERROR: chroot failed"),
    (5, UNKNOWN_MODULE, Result.ALARM, "mirrord authorize", "Unknown module 'srv-a-1f2e3d'"),
    (5, HOST_KEY, Result.ALARM, "host key", "Host key verification failed."),
    (4, MISSING_ROOT, Result.ALARM, "root is missing on the peer", "/srv/a does not exist"),
    (4, SOURCE, Result.RETRY, "still the source", "set its unsynced changes aside"),
    (255, REFUSED_KEY, Result.ALARM, "refused the mirror key", "Permission denied (publickey)"),
    (255, UNREACHABLE, Result.RETRY, "no route to the peer", "No route to host"),
    # Without a known cause the exit code's row stands, with rsync's last line.
    (12, "rsync: connection unexpectedly closed\n", Result.RETRY, "protocol data stream",
     "connection unexpectedly closed"),
    (4, "rsync: [receiver] ACLs are not supported\n", Result.ALARM, "action not supported",
     "ACLs are not supported"),
    # Debian 12's rsync 3.2.7 refuses a deleted path: retried as a full pass (mirrord.daemon).
    (2, MISSING_ARG, Result.RETRY, "a full pass carries them", "invalid file mode 00"),
    # A success, a vanished file and an interrupted run keep their meaning.
    (0, HOST_KEY, Result.OK, "success", ""),
    (24, DISK_FULL, Result.OK, "vanished", ""),
    (20, DISK_FULL, Result.RETRY, "interrupted", ""),
    (-15, DISK_FULL, Result.RETRY, "signal 15", ""),
]  # fmt: skip


@pytest.mark.parametrize("rc, stderr, result, words, line", TABLE)
def test_the_cause_decides_class_and_words(
    rc: int, stderr: str, result: Result, words: str, line: str
) -> None:
    """A known cause anywhere in stderr gives the pass its class and words, with its line."""
    out = classify(rc, stderr)
    assert out.result is result
    assert words in out.reason and line in out.reason


def test_a_cause_early_in_a_long_stderr_is_not_lost() -> None:
    """The cause is found however many lines follow it (rsync keeps printing per file)."""
    m = Messages()
    m.feed(DISK_FULL.splitlines()[0])
    for i in range(5000):
        m.feed(f'rsync: [receiver] write failed on "f{i}": Broken pipe (32)')
    assert len(m.tail) == TAIL_LINES
    out = classify(11, m)
    assert out.result is Result.ALARM and "disk is full" in out.reason


def test_every_cause_row_explains_itself() -> None:
    """Each row of the causes table has a marker and a reason."""
    assert all(c.marker and c.outcome.reason for c in CAUSES)


def test_status_shows_why_a_directory_is_retrying() -> None:
    """`mirrord status` shows the cause of a failing pass before it becomes an alarm."""
    reason = classify(4, SOURCE).reason
    doc = {"directories": [{
        "directory": "/srv/a", "class": "hot", "interval": 5.0, "dirty": 3, "rpo": 2.5,
        "running": False, "full_needed": "startup", "alarm": None, "next_due": 1.0,
        "last": {"kind": "full", "result": "retry", "detail": reason},
    }]}  # fmt: skip
    row = format_status(doc, 0.0).splitlines()[2]
    assert "retrying: the peer is still the source" in row
