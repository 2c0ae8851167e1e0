"""Which way the data flows: mirrord's reading of takeover's role. Pure: no I/O, no clock.

Only the ACTIVE node pushes (and a RELEASING one, for its final flush), and only toward a peer
that takeover hears and that is STANDBY: a lost peer (crashed, partitioned, or only its
heartbeat links cut) may be serving, so nothing is pushed at it until takeover hears it again.

A node *receives* (every change it sees in its trees is the peer's rsync writing: never
journaled, never pushed back) only once it knows the peer is the source: its own role holds
nothing and takeover hears the peer as ACTIVE or RELEASING. Whatever its journal still holds on
starting to receive was never confirmed by the peer: those are orphans, set aside (moved to the
recovery area) before the peer's pushes are accepted. Unknown is not receiving: a role that
says nothing about who the source is (takeover restarting: no role, then STARTING; the peer
unheard or itself passive) keeps what the node was doing. An active whose takeover restarts
keeps journaling its live writes; a standby whose takeover restarts keeps receiving, but
refuses the pushes until takeover is back (the gap, below).

    this node's role                  peer heard ACTIVE/RELEASING   otherwise (peer passive,
                                                                    unheard, or unknown)
    ACTIVE, RELEASING                 hold (both think they push)   push if the peer is heard
                                                                    STANDBY, else hold; never
                                                                    receiving
    STANDBY, STARTING, ARBITRATING,   receiving                     as before
    FENCING, ISOLATED, FAULT
    none (takeover not running),      as before                     as before
    or a role this mirrord does
    not know

"As before" is the previous direction's `receiving`. Receiving ends only when the node itself
becomes the source (ACTIVE or RELEASING).

Across a restart of mirrord, "as before" is what the journal says the last run did
(`resumes_receiving`). A node whose last run received, with its orphans set aside, starts
receiving again: while mirrord was down the peer's pushes went on landing here (rsync needs
only sshd), and those landing before takeover is heard again are the peer's, confirmed to it.
Journaled, they would be set aside as orphans once the peer is heard ACTIVE, and the peer,
which counts them sent, would never send them again: the trees would diverge in silence. The
journal keeps the epochs the last run knew too: takeover not answering yet opens a gap (below)
that ends as any gap does (a node back STANDBY with an epoch no higher set nothing aside). Any
other start (a root the last run did not receive, a root still holding the source marker, or
dirty paths in the journal) starts not receiving: changes are journaled, the cautious side (a
change nobody vouches for is kept, at worst as an orphan).

What mirrord does on each change of takeover's role or of the peer (`follow`, the one place the
daemon asks; it executes the `Step`). Passes stop whenever the node stops pushing (and are
confirmed stopped, mirrord.stopping); changes are journaled whenever it does not receive.

    what happened (the new state)            push  receive  set orphans  full pass  catch-up
                                                            aside        owed       walk
    takeover restarts on the active           no    no       no           no         no
      (no role, then STARTING)                (held: passes stop, live writes journaled)
    ... and comes back ACTIVE, peer STANDBY   yes   no       no           no         yes
    takeover restarts on the standby          no    yes      no           no         no
      (pushes refused until it is back: the gap, below)
    the peer is lost (ACTIVE, peer unheard)   no    no       no           no         no
    the peer returns (ACTIVE, peer STANDBY)   yes   no       no           yes        yes
    the node becomes standby (STANDBY, the    no    yes      yes          no         no
      peer heard ACTIVE or RELEASING)
    the node becomes ACTIVE, peer STANDBY     yes   no       no           no         yes
      (and marks its roots as the source)
    both ACTIVE (the peer heard ACTIVE)       no    no       no           no         no

"Catch-up walk": the roots a clean stop vouched for are walked for what changed while mirrord
was stopped, when the node first pushes; on starting to receive that walk is dropped (what
changed here was the peer's pushes).

Takeover lost while receiving (the gap). A receiving node whose takeover goes away keeps
receiving, but takeover may come back, win the start-up election and serve before mirrord has
subscribed again: what the service writes then is not journaled (mirrord still receives), and
the peer's next push would overwrite it. So the gap is guarded on disk: when takeover is lost
while receiving, every root gets the source marker (the peer's pushes are refused from then
on, mirrord.orphans), and the gap ends once takeover tells a role that settles where the node
stands (`GAP_SETTLED`); what changed in the root since the marker was written is then:

    role at the end of the gap        the node's epoch          what changed in the gap
    ACTIVE, RELEASING                 any                       walked and journaled: sent by
                                                                the next pass (or the flush)
    STANDBY, ISOLATED, FAULT          above every epoch known   walked and set aside as orphans
                                      as the gap began, or      before the peer's pushes are
                                      unknown                   let in
    STANDBY, ISOLATED, FAULT          not above                 nothing (the node never served:
                                                                the marker goes, pushes resume)

STARTING, ARBITRATING and FENCING (or no role again) keep the gap open: the node may still take
over. A node that takes over numbers itself above every epoch it knows (its own and the
peer's); one that does not only ever adopts an epoch it heard (takeover persists the highest
epoch heard and a restarted takeover loads it as its own). So an epoch above both epochs known
as the gap began says the node served in the gap; anything else says it did not (short of the
peer taking over anew in the gap: the cautious side, at worst a file the peer pushed as the gap
began is listed as an orphan, and the peer's full pass sends it again).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

# Roles whose node pushes its trees to the peer.
PUSH_ROLES: Final = frozenset({"ACTIVE", "RELEASING"})
# Roles whose node holds nothing: it receives once the peer is heard as the source.
PASSIVE_ROLES: Final = frozenset(
    {"STANDBY", "STARTING", "ARBITRATING", "FENCING", "ISOLATED", "FAULT"}
)
# The peer roles a push may go to.
PEER_RECEIVES: Final = frozenset({"STANDBY"})
# The peer roles that make it the source (it pushes to a STANDBY; RELEASING for its flush).
PEER_PUSHES: Final = PUSH_ROLES
# Roles that end a gap: the node is the source, or holds nothing and is not taking over.
GAP_SETTLED: Final = PUSH_ROLES | frozenset({"STANDBY", "ISOLATED", "FAULT"})
# How a gap ends (see the module docstring).
GAP_SEND: Final = "send"
GAP_SET_ASIDE: Final = "set aside"
GAP_NOTHING: Final = "nothing"


@dataclass(frozen=True)
class RootAtStart:
    """What the journal and the disk say of one root as mirrord starts."""

    # The last run received into it, its set-aside done (the journal's `receiving` table).
    received: bool
    # It holds the source marker (this node was the source, or a gap was open).
    marked: bool
    # Paths the journal holds dirty.
    dirty: int


def resumes_receiving(roots: Iterable[RootAtStart]) -> bool:
    """Return whether mirrord starts receiving (see "across a restart" above): only when
    every root was received into by the last run and holds neither marker nor dirty path."""
    seen = False
    for r in roots:
        if not r.received or r.marked or r.dirty:
            return False
        seen = True
    return seen


@dataclass(frozen=True)
class Peer:
    """The peer as this node's takeover last described it."""

    # Whether takeover hears its heartbeats.
    alive: bool
    # Its role as it advertises it (None: never heard).
    role: str | None
    # Its takeover epoch as it advertises it (None: not known).
    epoch: int | None = None


@dataclass(frozen=True)
class Direction:
    """What mirrord does with its trees now, and why (for `mirrord status`)."""

    # Push the trees to the peer.
    push: bool
    # Changes seen here are the peer's pushes: do not journal them.
    receiving: bool
    # One line for the operator.
    why: str


def direction(
    role: str | None, peer: Peer | None, node: str, peer_name: str, was_receiving: bool = False
) -> Direction:
    """Return what a node in `role` (None: takeover not running) does with its trees.

    `was_receiving` is the previous direction's `receiving` (see the table above).
    """
    if role in PUSH_ROLES:
        if peer is None or not peer.alive:
            return Direction(
                False, False, f"role {role}: peer {peer_name} not heard: holding changes"
            )
        if peer.role not in PEER_RECEIVES:
            return Direction(
                False, False, f"role {role}: peer {peer_name} is {peer.role}: holding changes"
            )
        return Direction(True, False, f"role {role}: pushing {node} -> {peer_name}")
    what = "role unknown: takeover not running" if role is None else f"role {role}"
    source = peer is not None and peer.alive and peer.role in PEER_PUSHES
    if role in PASSIVE_ROLES and source:
        return Direction(False, True, f"{what}: not pushing; {peer_name} pushes here")
    if was_receiving:
        return Direction(False, True, f"{what}: not pushing; still taking {peer_name}'s pushes")
    if role is None:
        return Direction(False, False, what)
    return Direction(False, False, f"{what}: not pushing until ACTIVE")


def peer_returned(before: Peer | None, after: Peer | None) -> bool:
    """Return whether the peer came back (takeover lost it, now hears it again).

    The peer may have set orphans aside while it was away (and a crashed node's tree is unknown
    anyway): only a full pass makes its copy right again.
    """
    was = before is not None and before.alive
    now = after is not None and after.alive
    return now and not was and before is not None


@dataclass(frozen=True)
class Gap:
    """takeover was lost while this node received (see "the gap" in the module docstring)."""

    # The highest epoch known when takeover was lost: this node's and the peer's (None:
    # takeover never told this node's).
    epoch: int | None


def gap_end(role: str | None, gap: Gap, epoch: int | None) -> str | None:
    """Return how the gap ends now that takeover says `role` (None: it goes on), given the
    node's epoch as takeover tells it now (None: not told)."""
    if role not in GAP_SETTLED:
        return None
    if role in PUSH_ROLES:
        return GAP_SEND
    if gap.epoch is not None and epoch is not None and epoch <= gap.epoch:
        return GAP_NOTHING
    return GAP_SET_ASIDE


@dataclass(frozen=True)
class Step:
    """What the daemon does on a role or peer change (see the table in the module docstring)."""

    direction: Direction
    # Began receiving: orphans are set aside before the peer's pushes are accepted, and the
    # catch-up walk is dropped (what changed here while stopped was the peer's pushes).
    set_aside: bool
    # Began pushing: walk for what changed while mirrord was stopped.
    catch_up: bool
    # Every root owes a full pass, for this reason (the peer came back: its tree is unknown).
    full_pass: str | None
    # The node is ACTIVE and its roots are not marked yet: mark them as this node's (an
    # incoming push is refused here from now on, until the orphans are set aside).
    mark_source: bool
    # The gap after this step (None: none), whether it began now (the roots get the marker),
    # and how it ended if it ended now (GAP_SEND, GAP_SET_ASIDE, GAP_NOTHING).
    gap: Gap | None = None
    open_gap: bool = False
    end_gap: str | None = None


def follow(
    role: str | None,
    peer_before: Peer | None,
    peer: Peer | None,
    before: Direction,
    *,
    marked: bool,
    node: str,
    peer_name: str,
    gap: Gap | None = None,
    epoch: int | None = None,
    peer_epoch: int | None = None,
) -> Step:
    """Return what to do now that takeover says `role` and the peer is `peer` (was
    `peer_before`), given the previous direction, whether the roots are marked, the gap
    (if takeover was lost while receiving), the node's epoch as takeover last told it and the
    peer's as takeover last heard it."""
    d = direction(role, peer, node, peer_name, before.receiving)
    returned = role in PUSH_ROLES and peer_returned(peer_before, peer)
    open_gap = gap is None and role is None and d.receiving
    end = gap_end(role, gap, epoch) if gap is not None else None
    if open_gap:
        gap = Gap(None if epoch is None else max(epoch, peer_epoch or 0))
    elif end is not None:
        gap = None
    return Step(
        direction=d,
        set_aside=d.receiving and not before.receiving,
        catch_up=d.push and not before.push,
        full_pass=f"peer {peer_name} returned" if returned else None,
        # A gap's marker is the source marker already (rewritten as this node's by the walk).
        mark_source=role == "ACTIVE" and not marked,
        gap=gap,
        open_gap=open_gap,
        end_gap=end,
    )
