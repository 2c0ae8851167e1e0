"""The witness's active lease: who holds it and until when, and when its holder must let go.

Pure: no sockets, no clock; callers pass `now` (each side its own monotonic clock).

A pair has no majority; a witness on a third host gives it one. The witness grants one node
of a cluster the *active lease*, a duration. The active renews it every heartbeat interval;
the standby asks for it only after losing its peer, and gets it only once the active's lease
has expired at the witness. An active that can renew neither through the witness nor hears
its peer releases everything before its lease can have expired there (self-demotion).

The witness's rules (`Leases.request`):

- a lease is a duration on the witness's monotonic clock, counted from when the request that
  won or renewed it arrived: `expires = arrival + lease`;
- the holder's renewals extend it; a claim by the other node is refused while it runs, and
  also while the other node has *renewed* (asked as the active) within the last lease
  period, granted or not: after a witness restart the serving active keeps precedence;
- a node that lets go (`release`, sent only after it released everything) frees the lease
  at once, unless the release is older than the grant it would undo;
- a restarted witness remembers nothing, so it grants nothing for `max_lease` (no node may
  ask for a longer lease): whatever the previous process granted has expired by then.

The node's side (`lease_end`): a node never compares timestamps across hosts. It counts its
lease from when it SENT the request that was granted, on its own monotonic clock, which
happens no later than the arrival the witness counts from. Let both clocks run at a rate
within [1 - DRIFT, 1 + DRIFT] of real time. The witness's lease of L on its clock lasts at
least L / (1 + DRIFT) real seconds from the arrival, so at least that long from the send.
The node's D on its clock lasts at most D / (1 - DRIFT) real seconds from the send. With

    D = L * (1 - DRIFT) / (1 + DRIFT)

the node's lease ends, in real time, no later than the witness's, whatever the two rates
within the bound and however long the request was in flight. The node starts releasing
`margin` (its release budget) before D is over, so it holds nothing once the witness may
grant the other node. An answer that arrives late only shortens what the node believes it
holds; an answer that never arrives grants nothing.

A restart of the witness: a grant made before it, at real time r, ends at the node no later
than r + L / (1 + DRIFT); the restarted witness grants nothing before max_lease >= L on its
clock, at least max_lease / (1 + DRIFT) real seconds after it started, which was after r.

What the lease does not cover: an active whose lease had already run out while it still
heard its peer (the witness was lost first) keeps serving when it then loses the peer; the
standby then arbitrates as it did without a witness (ping list, VIP guard, fencing).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import Final

# Bound on how far either clock's rate may differ from real time (1%: quartz without NTP is
# within 0.01%, and NTP slews at most 0.05%); the node's share of a lease shrinks by it twice.
DRIFT: Final = 0.01


class Op(enum.Enum):
    """What a node asks the witness (carried in every request)."""

    # Tell me who holds the lease (a standby hearing its peer, a passive node).
    QUERY = 0
    # I serve: renew my lease, or grant it if it is free (the active, a releasing node).
    RENEW = 1
    # I lost my peer and want to take over: grant me the lease once it is free.
    CLAIM = 2
    # I hold nothing any more: free my lease.
    RELEASE = 3


class Verdict(enum.Enum):
    """The witness's answer to one request."""

    # The requester holds the lease, counted from this request's arrival.
    GRANTED = 0
    # Another node holds it (`holder`, for `remaining` more seconds at the witness).
    HELD = 1
    # Nobody holds it (an answer to a query or release, or a claim the witness refuses
    # because the other node renewed within the last lease period).
    FREE = 2
    # The witness restarted and grants nothing for `remaining` more seconds.
    QUIET = 3
    # The requested lease is longer than the witness allows for this cluster.
    TOO_LONG = 4


@dataclass(frozen=True)
class Answer:
    """What the witness tells the requester."""

    verdict: Verdict
    # Who holds the lease now ("" if nobody).
    holder: str
    # Seconds the holder's lease still runs at the witness (QUIET: seconds of quiet left).
    remaining: float


@dataclass(frozen=True)
class ClusterLeases:
    """One cluster's lease at the witness."""

    # Longest lease a node may ask for; also how long a restarted witness grants nothing.
    max_lease: float
    # When this witness process started (its monotonic clock).
    started: float
    holder: str = ""
    # When the holder's lease ends (witness clock).
    expires: float = 0.0
    # Sequence of the request that last granted or renewed the lease: an older release
    # must not undo it.
    granted_seq: int = 0
    # When each node last asked to renew (as the active) and when it was last heard at all.
    renewed: dict[str, float] = field(default_factory=dict)
    heard: dict[str, float] = field(default_factory=dict)

    def quiet_left(self, now: float) -> float:
        """Return the seconds this restarted witness still grants nothing (0 when over)."""
        return max(0.0, self.started + self.max_lease - now)

    def holder_at(self, now: float) -> str:
        """Return who holds an unexpired lease now ("" if nobody)."""
        return self.holder if self.holder and now < self.expires else ""


def new_cluster(max_lease: float, started: float) -> ClusterLeases:
    """Return the state of a cluster at a witness that started at `started`."""
    return ClusterLeases(max_lease=max_lease, started=started)


def request(
    c: ClusterLeases, node: str, other: str, op: Op, *, lease: float, seq: int, now: float
) -> tuple[ClusterLeases, Answer]:
    """Apply one authentic, fresh request from `node` (peer `other`); return state and answer."""
    heard = {**c.heard, node: now}
    renewed = {**c.renewed, node: now} if op is Op.RENEW else c.renewed
    c = replace(c, heard=heard, renewed=renewed)
    holder = c.holder_at(now)
    if op is Op.RELEASE:
        if holder == node and seq > c.granted_seq:
            # Released after the grant it undoes: the lease is free for the other node now.
            renewed = {k: v for k, v in c.renewed.items() if k != node}
            c = replace(c, holder="", expires=now, renewed=renewed)
            return c, Answer(Verdict.FREE, "", 0.0)
        return c, _tell(c, node, now)
    if op is Op.QUERY:
        return c, _tell(c, node, now)
    if lease > c.max_lease:
        return c, Answer(Verdict.TOO_LONG, holder, _remaining(c, now))
    quiet = c.quiet_left(now)
    if quiet > 0:
        # Restarted: what the previous process granted may still run somewhere.
        return c, Answer(Verdict.QUIET, "", quiet)
    if holder == node:
        # Renewed by its holder: counted from this request's arrival.
        c = replace(c, expires=max(c.expires, now + lease), granted_seq=max(c.granted_seq, seq))
        return c, Answer(Verdict.GRANTED, node, c.expires - now)
    if holder:
        return c, Answer(Verdict.HELD, holder, c.expires - now)
    last = c.renewed.get(other)
    if op is Op.CLAIM and last is not None and now - last < c.max_lease:
        # Free, but the other node said within a lease period that it serves (a witness that
        # restarted meanwhile, or a renewal it lost): it keeps precedence.
        return c, Answer(Verdict.FREE, "", 0.0)
    c = replace(c, holder=node, expires=now + lease, granted_seq=seq)
    return c, Answer(Verdict.GRANTED, node, lease)


def _tell(c: ClusterLeases, node: str, now: float) -> Answer:
    """Return the answer to a request that changes nothing."""
    holder = c.holder_at(now)
    if holder == node:
        return Answer(Verdict.GRANTED, node, c.expires - now)
    if holder:
        return Answer(Verdict.HELD, holder, c.expires - now)
    quiet = c.quiet_left(now)
    if quiet > 0:
        return Answer(Verdict.QUIET, "", quiet)
    return Answer(Verdict.FREE, "", 0.0)


def _remaining(c: ClusterLeases, now: float) -> float:
    return max(0.0, c.expires - now) if c.holder_at(now) else 0.0


# ---------------------------------------------------------------------------------------------
# The node's side


def node_share(lease: float, drift: float = DRIFT) -> float:
    """Return how long, on the node's clock, a lease of `lease` witness seconds is surely held."""
    return lease * (1 - drift) / (1 + drift)


def lease_end(sent_at: float, lease: float, drift: float = DRIFT) -> float:
    """Return when (node clock) a lease granted to a request sent at `sent_at` surely ends."""
    return sent_at + node_share(lease, drift)


def demote_at(sent_at: float, lease: float, margin: float, drift: float = DRIFT) -> float:
    """Return when (node clock) the holder must start releasing, `margin` before lease_end."""
    return lease_end(sent_at, lease, drift) - margin


def min_lease(deadtime: float, interval: float, margin: float, drift: float = DRIFT) -> float:
    """Return the shortest lease that survives the loss of a few answers before demoting.

    The node's share of the lease, less the release margin, must outlast the peer's deadtime
    and two missed renewals: otherwise a short hiccup of the witness path alone, while the
    peer is lost, would demote a healthy active.
    """
    need = deadtime + 2 * interval + margin
    return need * (1 + drift) / (1 - drift)


__all__ = [
    "DRIFT",
    "Answer",
    "ClusterLeases",
    "Op",
    "Verdict",
    "demote_at",
    "lease_end",
    "min_lease",
    "new_cluster",
    "node_share",
    "request",
]
