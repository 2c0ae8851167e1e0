"""A failed pass's note names the real cause: the push check's line, then ssh's own words."""

from __future__ import annotations

import pytest

from mirrord.daemon import Daemon
from mirrord.transfer import Stats, TransferResult, classify

RSYNC_TAIL = (
    "rsync: connection unexpectedly closed (0 bytes received so far) [sender]\n"
    "rsync error: error starting client-server protocol (code 5) at main.c(1872) [sender=3.2.7]"
)


def detail(rc: int, stderr: str) -> str:
    """Return the note a pass that ended with `rc` and `stderr` gets."""
    res = TransferResult(rc=rc, outcome=classify(rc, stderr), stats=Stats(), duration=0.1,
                         stderr=stderr)  # fmt: skip
    return Daemon._outcome(res).detail


@pytest.mark.parametrize(
    "ssh_line",
    ["Host key verification failed.", "root@192.0.2.12: Permission denied (publickey).",
     "ssh: connect to host 192.0.2.12 port 22: Connection refused"],
)  # fmt: skip
def test_ssh_own_complaint_is_kept_behind_rsyncs_lines(ssh_line: str) -> None:
    """rsync's closing lines do not hide why ssh failed (seen on the systemd pair: rc 5)."""
    assert detail(5, f"{ssh_line}\n{RSYNC_TAIL}").endswith(": " + ssh_line)


def test_the_push_checks_refusal_comes_first() -> None:
    """The receiving side's `mirrord:` line is still the one shown."""
    text = "mirrord: refused: this node is the source of /srv\n" + RSYNC_TAIL
    assert detail(5, text).endswith(": mirrord: refused: this node is the source of /srv")


def test_rsyncs_last_word_when_nothing_else_speaks() -> None:
    """With only rsync's own lines, its last one is shown, as before."""
    assert detail(5, RSYNC_TAIL).endswith("[sender=3.2.7]")
