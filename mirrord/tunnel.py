"""Whether a pass goes through the tunnel to the peer's standing rsync daemon (pure).

With `[mirror] tunnel_port`, a push can skip its ssh session: rsync connects to a forward on
mirrord's ControlMaster, which reaches the peer's standing daemon (mirrord.rsyncd). The
forward lives as long as the ControlMaster, which only a pass by ssh starts; so:

- the tunnel starts down: the first pass goes by ssh, and brings the master up;
- after a pass by ssh, a tunnel that is down and due is forwarded (`forward_due`), and is up
  once the forward is added;
- a pass through the tunnel that the tunnel failed (transfer.tunnel_failure: no master, no
  daemon, a stale secret or module list) is sent again by ssh at once, and the tunnel is down
  until RETRY has passed (a peer without the daemon costs one failed connection per RETRY).

The daemon executes (mirrord.daemon `_rsync`); `status()` is what `mirrord status` shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

# Seconds before a tunnel that failed, or whose forward could not be added, is tried again.
RETRY: Final = 10.0


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
