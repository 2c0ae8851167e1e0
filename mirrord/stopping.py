"""Which running passes to stop, and whether new ones may start. Pure: no I/O, no clock.

A pass writes into the peer's tree (and a full pass deletes from it). Once this node no longer
pushes, or its final flush is over and takeover is about to hand the service over, the peer may
be serving that tree: a pass still running there would write into, or delete from, a live
service. So every running pass is stopped, and the daemon waits until each rsync is reaped
before it drops the release inhibitor (the flush's end) or goes on receiving.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Stop:
    """The passes to stop now, and why (for the log and the pass's journal entry)."""

    roots: tuple[str, ...]
    why: str


def passes_to_stop(running: Iterable[str], push: bool, released: bool, why: str) -> Stop:
    """Return the running passes (by root) to stop.

    `push`: the node still pushes (mirrord.roles.direction); `why` is that direction's reason.
    `released`: the final flush is over, so takeover may hand over as soon as it hears back.
    """
    roots = tuple(sorted(running))
    if not roots:
        return Stop((), "")
    if not push:
        # The peer may be serving (or about to): no pass of ours may touch its tree.
        return Stop(roots, f"no longer pushing ({why})")
    if released:
        # The final flush ended (in time or not): the peer takes over next.
        return Stop(roots, "final flush over: the peer takes over")
    return Stop((), "")


def may_start(push: bool, released: bool) -> bool:
    """Return whether a new pass may start: pushing, and no final flush has ended since the
    node entered RELEASING (a pass started then would outlive the inhibitor)."""
    return push and not released
