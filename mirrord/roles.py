"""Which way the data flows: mirrord's reading of takeover's role. Pure: no I/O, no clock.

Only the ACTIVE node pushes (and a RELEASING one, for its final flush), and only toward a peer
that takeover hears and that is STANDBY: a lost peer (crashed, partitioned, or only its
heartbeat links cut) may be serving, so nothing is pushed at it until takeover hears it again.

A node whose role says the peer may be pushing to it (STANDBY and the passive roles) treats
every change it sees in its trees as *received*: written by the peer's rsync, so never journaled
and never pushed back. Whatever its journal still holds on entering such a role was never
confirmed by the peer: those are orphans, set aside before the peer's pushes are accepted.
With takeover's role unknown (takeover not running) changes are journaled, the cautious side:
a change nobody vouches for is kept, at worst as an orphan, never dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# Roles whose node pushes its trees to the peer.
PUSH_ROLES: Final = frozenset({"ACTIVE", "RELEASING"})
# Roles whose node may be receiving the peer's pushes (its changes are the peer's writes).
RECEIVING_ROLES: Final = frozenset({"STANDBY", "ISOLATED", "FAULT", "STARTING", "ARBITRATING"})
# The peer roles a push may go to.
PEER_RECEIVES: Final = frozenset({"STANDBY"})


@dataclass(frozen=True)
class Peer:
    """The peer as this node's takeover last described it."""

    # Whether takeover hears its heartbeats.
    alive: bool
    # Its role as it advertises it (None: never heard).
    role: str | None


@dataclass(frozen=True)
class Direction:
    """What mirrord does with its trees now, and why (for `mirrord status`)."""

    # Push the trees to the peer.
    push: bool
    # Changes seen here are the peer's pushes: do not journal them.
    receiving: bool
    # One line for the operator.
    why: str


def direction(role: str | None, peer: Peer | None, node: str, peer_name: str) -> Direction:
    """Return what a node in `role` (None: takeover not running) does with its trees."""
    if role is None:
        return Direction(False, False, "role unknown: takeover not running")
    if role in RECEIVING_ROLES:
        return Direction(False, True, f"role {role}: not pushing; {peer_name} may push here")
    if role not in PUSH_ROLES:
        return Direction(False, False, f"role {role}: not pushing until ACTIVE")
    if peer is None or not peer.alive:
        return Direction(False, False, f"role {role}: peer {peer_name} not heard: holding changes")
    if peer.role not in PEER_RECEIVES:
        return Direction(
            False, False, f"role {role}: peer {peer_name} is {peer.role}: holding changes"
        )
    return Direction(True, False, f"role {role}: pushing {node} -> {peer_name}")


def peer_returned(before: Peer | None, after: Peer | None) -> bool:
    """Return whether the peer came back (takeover lost it, now hears it again).

    The peer may have set orphans aside while it was away (and a crashed node's tree is unknown
    anyway): only a full pass makes its copy right again.
    """
    was = before is not None and before.alive
    now = after is not None and after.alive
    return now and not was and before is not None
