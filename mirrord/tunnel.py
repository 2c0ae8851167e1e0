"""Whether a pass goes through the tunnel to the peer's standing rsync daemon (pure).

With `[mirror] tunnel_port`, a push can skip its ssh session: rsync connects to a forward on
mirrord's ControlMaster, which reaches the peer's standing daemon (mirrord.rsyncd). The
forward lives as long as the ControlMaster, which only a pass by ssh starts; so:

- the tunnel starts down: the first pass goes by ssh, and brings the master up;
- after a pass by ssh, a tunnel that is down and due is forwarded (`forward_due`), and is up
  once the forward is added;
- a pass through the tunnel that the tunnel failed (`failure`: no master, no
  daemon, a stale secret or module list) is sent again by ssh at once, and the tunnel is down
  until RETRY has passed (a peer without the daemon costs one failed connection per RETRY).

The daemon executes (mirrord.daemon `_rsync`); `status()` is what `mirrord status` shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from mirrord.outcome import PUSHCHECK_MARKER

# Seconds before a tunnel that failed, or whose forward could not be added, is tried again.
RETRY: Final = 10.0
# What rsync says when the tunnel, not the pass, failed: nothing listens on the forward's end
# (no ControlMaster), the peer's daemon is not there (sshd could not connect: the forward's
# connection closes before the greeting) or not set up for this (secret, modules).
FAILURES: Final = (
    "failed to connect to",
    "did not see server greeting",
    "@ERROR: auth failed",
    "@ERROR: Unknown module",
)
# Exit codes of a connection that broke (socket I/O, protocol stream, daemon timeout): before
# anything was transferred, the tunnel's too (the daemon closing at once shows as either).
BROKEN: Final = (10, 12, 35)


def failure(rc: int, changed: int, stderr: str) -> str | None:
    """Why the tunnel failed a pass that ended with exit code `rc`, having sent `changed`
    entries and printed `stderr` (None: it reached the peer's daemon, whatever the pass's own
    end). Sending such a pass again by ssh is always safe, so a connection that broke before
    anything was sent counts as the tunnel's; a refusal by the push check is the daemon's."""
    if rc == 0 or changed:
        return None
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    if any(PUSHCHECK_MARKER in line for line in lines):
        return None
    for line in lines:
        if any(f in line for f in FAILURES):
            return line
    if rc in BROKEN:
        return lines[0] if lines else f"rsync exited {rc} before sending anything"
    return None


@dataclass
class Tunnel:
    """The tunnel's state as passes find it (times on the monotonic clock)."""

    up: bool = False
    # When a down tunnel may be forwarded again.
    retry_at: float = 0.0
    # Why it is down (None: never failed, or up).
    error: str | None = None
    # Passes it carried, and passes it failed (each then sent by ssh).
    carried: int = 0
    failed: int = 0
    # A forward is being added (by the pass that found it due; the others go on by ssh).
    adding: bool = False

    def use(self) -> bool:
        """Whether the next pass goes through the tunnel."""
        return self.up

    def carried_one(self) -> None:
        """A pass went through (whatever its own outcome)."""
        self.carried += 1

    def failed_one(self, why: str, now: float) -> None:
        """A pass found the tunnel broken: down until RETRY has passed."""
        self.up, self.error, self.retry_at = False, why, now + RETRY
        self.failed += 1

    def forward_due(self, now: float) -> bool:
        """After a pass by ssh (the ControlMaster runs): whether to add the forward now."""
        return not self.up and not self.adding and now >= self.retry_at

    def forwarding(self) -> None:
        """A forward is being added: no other pass adds one meanwhile."""
        self.adding = True

    def forwarded(self, error: str | None, now: float) -> None:
        """The forward was added (error None), or not: try again after RETRY."""
        self.adding = False
        if error is None:
            self.up, self.error = True, None
        else:
            self.error, self.retry_at = error, now + RETRY

    def status(self, port: int) -> dict[str, Any]:
        """The tunnel in the status document."""
        return {"port": port, "up": self.up, "error": self.error, "carried": self.carried,
                "failed": self.failed}  # fmt: skip
