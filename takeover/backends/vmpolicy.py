"""VM resource decisions: the restart-in-place budget and what a returning node must undo.

Pure: no libvirt, no clock; callers pass `now` (monotonic seconds) and what they observed.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class CrashVerdict(StrEnum):
    """What to do about a domain that stopped while this node holds it."""

    # Start it again on this node: still within max_restarts in restart_window.
    RESTART = "restart"
    # Too many crashes in the window: stop trying here and hand the pair over.
    FAILOVER = "failover"


@dataclass(frozen=True)
class RestartBudget:
    """Restarts in place allowed per sliding window, like Pacemaker's migration-threshold."""

    # Restarts allowed within any `window` seconds; 0 means fail over on the first crash.
    max_restarts: int
    # Length of the sliding window, seconds.
    window: float
    # Times (monotonic seconds) of the restarts done so far, oldest first.
    restarts: tuple[float, ...] = ()

    def recent(self, now: float) -> tuple[float, ...]:
        """The restarts that still count at `now`."""
        return tuple(t for t in self.restarts if now - t < self.window)

    def on_crash(self, now: float) -> tuple[CrashVerdict, RestartBudget]:
        """Decide about a crash seen at `now`; a RESTART verdict is already counted."""
        recent = self.recent(now)
        if len(recent) >= self.max_restarts:
            return CrashVerdict.FAILOVER, RestartBudget(self.max_restarts, self.window, recent)
        return CrashVerdict.RESTART, RestartBudget(self.max_restarts, self.window, (*recent, now))

    def reset(self) -> RestartBudget:
        """A fresh budget, for a new acquire."""
        return RestartBudget(self.max_restarts, self.window)


class Undo(StrEnum):
    """Steps that clear a copy of a domain off a node that must not run it."""

    # Stop the running copy at once (no graceful shutdown: the owner runs the real one).
    DESTROY = "destroy"
    # Remove the persistent definition so nothing (autostart, an operator) starts it here.
    UNDEFINE = "undefine"


def reconcile_steps(*, active: bool, persistent: bool, owner_elsewhere: bool) -> list[Undo]:
    """Steps a node must take, before anything else, for a domain it finds at start-up.

    `active`/`persistent` describe this node's copy; `owner_elsewhere` is True when the peer
    holds (or is about to hold) the service. A node that will own the domain keeps its copy:
    acquire adopts a running one and redefines from the shared XML.
    """
    if not owner_elsewhere:
        return []
    steps: list[Undo] = []
    if active:
        steps.append(Undo.DESTROY)
    if persistent:
        steps.append(Undo.UNDEFINE)
    return steps
