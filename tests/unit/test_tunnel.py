"""The tunnel's state (mirrord.tunnel): when a pass goes through it, and when by ssh."""

from __future__ import annotations

import pytest

from mirrord.tunnel import RETRY, Tunnel, failure


def test_the_tunnel_starts_down_and_is_forwarded_after_the_first_pass_by_ssh() -> None:
    """No ControlMaster yet: the first pass goes by ssh, then the forward is added at once."""
    t = Tunnel()
    assert not t.use()
    assert t.forward_due(0.0)
    t.forwarded(None, 0.1)
    assert t.use() and not t.forward_due(0.2)
    assert t.status(873)["up"] is True


def test_a_tunnel_that_failed_a_pass_waits_before_it_is_forwarded_again() -> None:
    """A failure sends the pass by ssh and keeps the tunnel down for RETRY seconds."""
    t = Tunnel(up=True)
    t.failed_one("rsync: failed to connect to 127.0.0.1: Connection refused", 100.0)
    assert not t.use()
    assert not t.forward_due(100.0 + RETRY - 0.1)
    assert t.forward_due(100.0 + RETRY)
    assert (t.failed, t.error) == (1, "rsync: failed to connect to 127.0.0.1: Connection refused")


def test_a_forward_refused_is_tried_again_after_the_wait() -> None:
    """The master could not listen (port taken, no master): down, and again after RETRY."""
    t = Tunnel()
    t.forwarded("Port forwarding failed", 5.0)
    assert not t.use() and t.error == "Port forwarding failed"
    assert not t.forward_due(5.0 + RETRY / 2)
    assert t.forward_due(5.0 + RETRY)
    t.forwarded(None, 5.0 + RETRY)
    assert t.use() and t.error is None


def test_one_forward_at_a_time() -> None:
    """While a pass adds the forward, passes ending meanwhile do not add another; a forward
    that did not finish (the pass stopped) is tried again after the wait."""
    t = Tunnel()
    assert t.forward_due(1.0)
    t.forwarding()
    assert not t.forward_due(1.0) and not t.use()
    t.forwarded("the pass was stopped while the forward was added", 2.0)
    assert not t.forward_due(2.0)
    assert t.forward_due(2.0 + RETRY)


@pytest.mark.parametrize(
    ("rc", "stderr", "changed", "tunnel_failed"),
    [
        (10, "rsync: failed to connect to 127.0.0.1 (127.0.0.1): Connection refused (111)", 0,
         True),
        (5, "@ERROR: auth failed on module srv-a-1234", 0, True),
        (5, "@ERROR: Unknown module 'srv-a-1234'", 0, True),
        (5, "rsync: did not see server greeting", 0, True),
        (12, "rsync: connection unexpectedly closed (0 bytes received so far) [sender]", 0, True),
        # The forward's connection closed as the greeting was written (no daemon on the peer).
        (12, "rsync error: error in rsync protocol data stream (code 12) at io.c(340)", 0, True),
        (35, "rsync error: timeout waiting for daemon connection (code 35)", 0, True),
        # The pass reached the daemon: its own outcome, not the tunnel's.
        (5, "mirrord: /srv/a: this node is (or was, until it stopped) the source of this root\n"
            "@ERROR: pre-xfer exec returned failure", 0, False),
        (5, "@ERROR: chroot failed", 0, False),
        (23, "rsync: [sender] link_stat \"/x\" failed: No such file or directory (2)", 0, False),
        (12, "rsync: connection unexpectedly closed (1034 bytes received so far) [sender]", 3,
         False),
        (0, "", 0, False),
    ],
)  # fmt: skip
def test_what_says_the_tunnel_failed_not_the_pass(
    rc: int, stderr: str, changed: int, tunnel_failed: bool
) -> None:
    """A tunnel that did not reach a daemon set up for it sends the pass by ssh again (always
    safe); a pass the daemon answered, or that sent something, ends as its own."""
    assert (failure(rc, changed, stderr) is not None) is tunnel_failed
