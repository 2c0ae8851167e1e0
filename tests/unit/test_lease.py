"""The witness's lease rules and the node's share of a lease, on fake clocks, drift included."""

from __future__ import annotations

import pytest

from takeover.lease import (
    DRIFT,
    ClusterLeases,
    Op,
    Verdict,
    demote_at,
    lease_end,
    min_lease,
    new_cluster,
    node_share,
    request,
)

L = 5.0
START = 100.0
# A witness whose restart quiet period is over.
AFTER_QUIET = START + L


def fresh() -> ClusterLeases:
    """A witness that started at START and may grant from AFTER_QUIET on."""
    return new_cluster(max_lease=L, started=START)


def ask(c: ClusterLeases, node: str, op: Op, now: float, *, seq: int = 1, lease: float = L):
    """Send one request from node (peer is the other of a/b)."""
    other = "b" if node == "a" else "a"
    return request(c, node, other, op, lease=lease, seq=seq, now=now)


# (steps: (node, op, at seconds after AFTER_QUIET, seq)), expected verdict of the last step,
# expected holder after it.
TABLE = [
    ("renew on a free lease grants it", [("a", Op.RENEW, 0.0, 1)], Verdict.GRANTED, "a"),
    ("claim on a free lease grants it", [("b", Op.CLAIM, 0.0, 1)], Verdict.GRANTED, "b"),
    ("query never grants", [("a", Op.QUERY, 0.0, 1)], Verdict.FREE, ""),
    (
        "claim refused while the active's lease runs",
        [("a", Op.RENEW, 0.0, 1), ("b", Op.CLAIM, L - 0.01, 1)],
        Verdict.HELD,
        "a",
    ),
    (
        "claim granted once the active's lease expired",
        [("a", Op.RENEW, 0.0, 1), ("b", Op.CLAIM, L, 1)],
        Verdict.GRANTED,
        "b",
    ),
    (
        "renewals extend the lease from their arrival",
        [("a", Op.RENEW, 0.0, 1), ("a", Op.RENEW, 4.0, 2), ("b", Op.CLAIM, 8.9, 1)],
        Verdict.HELD,
        "a",
    ),
    (
        "a release frees the lease for the other node at once",
        [("a", Op.RENEW, 0.0, 1), ("a", Op.RELEASE, 1.0, 2), ("b", Op.RENEW, 1.1, 1)],
        Verdict.GRANTED,
        "b",
    ),
    (
        "a release older than the grant it would undo is ignored",
        [("a", Op.RENEW, 0.0, 5), ("a", Op.RELEASE, 1.0, 4)],
        Verdict.GRANTED,
        "a",
    ),
    (
        "a release by the non-holder changes nothing",
        [("a", Op.RENEW, 0.0, 1), ("b", Op.RELEASE, 1.0, 9)],
        Verdict.HELD,
        "a",
    ),
    (
        "the other node gets it after a release, by claim too",
        [("a", Op.RENEW, 0.0, 1), ("a", Op.RELEASE, 1.0, 2), ("b", Op.CLAIM, 1.1, 1)],
        Verdict.GRANTED,
        "b",
    ),
]


@pytest.mark.parametrize(
    "steps, verdict, holder", [t[1:] for t in TABLE], ids=[t[0] for t in TABLE]
)
def test_witness_grant_rules(steps, verdict, holder) -> None:
    """Each row's requests end in the expected verdict and holder."""
    c = fresh()
    answer = None
    now = AFTER_QUIET
    for node, op, at, seq in steps:
        now = AFTER_QUIET + at
        c, answer = ask(c, node, op, now, seq=seq)
    assert answer is not None
    assert answer.verdict is verdict
    assert c.holder_at(now) == holder


def test_restarted_witness_grants_nothing_for_max_lease() -> None:
    """A witness that just started answers QUIET to every claim and renewal for max_lease."""
    c = fresh()
    for at in (0.0, 1.0, L - 0.001):
        c, answer = ask(c, "a", Op.RENEW, START + at)
        assert answer.verdict is Verdict.QUIET
        assert answer.remaining == pytest.approx(L - at)
        c, answer = ask(c, "b", Op.CLAIM, START + at)
        assert answer.verdict is Verdict.QUIET
    c, answer = ask(c, "a", Op.RENEW, START + L, seq=2)
    assert answer.verdict is Verdict.GRANTED


def test_after_restart_the_renewing_active_keeps_precedence_over_a_claim() -> None:
    """A claim right after the quiet period is refused when the other node renewed meanwhile."""
    c = fresh()
    c, _ = ask(c, "a", Op.RENEW, START + L - 0.5)
    c, answer = ask(c, "b", Op.CLAIM, START + L)
    assert answer.verdict is Verdict.FREE
    assert c.holder_at(START + L) == ""
    c, answer = ask(c, "a", Op.RENEW, START + L + 0.1, seq=2)
    assert answer.verdict is Verdict.GRANTED


def test_claim_granted_once_the_renewals_stopped_for_a_lease() -> None:
    """A claim is granted once the other node has not renewed for max_lease."""
    c = fresh()
    c, _ = ask(c, "a", Op.RENEW, AFTER_QUIET)
    c, answer = ask(c, "b", Op.CLAIM, AFTER_QUIET + L - 0.001)
    assert answer.verdict is Verdict.HELD
    c, answer = ask(c, "b", Op.CLAIM, AFTER_QUIET + L, seq=2)
    assert answer.verdict is Verdict.GRANTED


def test_longer_lease_than_allowed_is_refused() -> None:
    """A node asking for more than max_lease gets TOO_LONG and no grant."""
    c, answer = ask(fresh(), "a", Op.RENEW, AFTER_QUIET, lease=L + 1)
    assert answer.verdict is Verdict.TOO_LONG
    assert c.holder_at(AFTER_QUIET) == ""


def test_witness_remembers_when_it_heard_each_node() -> None:
    """Every request, queries too, records when its sender was last heard."""
    c, _ = ask(fresh(), "a", Op.QUERY, AFTER_QUIET + 1)
    c, _ = ask(c, "b", Op.CLAIM, AFTER_QUIET + 2)
    assert c.heard == {"a": AFTER_QUIET + 1, "b": AFTER_QUIET + 2}


# ---------------------------------------------------------------------------------------------
# The node's side under bounded drift


class DriftClock:
    """A clock that reads `rate` seconds per real second from `origin`."""

    def __init__(self, rate: float, origin: float) -> None:
        self.rate = rate
        self.origin = origin

    def read(self, real: float) -> float:
        return self.origin + self.rate * real

    def real(self, reading: float) -> float:
        return (reading - self.origin) / self.rate


@pytest.mark.parametrize("node_rate", [1 - DRIFT, 1.0, 1 + DRIFT])
@pytest.mark.parametrize("witness_rate", [1 - DRIFT, 1.0, 1 + DRIFT])
@pytest.mark.parametrize("flight", [0.0, 0.05, 2.0])
def test_node_lease_ends_before_the_witness_one_at_the_drift_bound(
    node_rate: float, witness_rate: float, flight: float
) -> None:
    """Whatever both clock rates within DRIFT and the request's flight time, the node's lease
    ends (in real time) no later than the moment the witness would grant the other node."""
    node = DriftClock(node_rate, 5000.0)
    witness = DriftClock(witness_rate, 77.0)
    sent_real = 10.0
    c = new_cluster(max_lease=L, started=witness.read(0.0) - L)
    arrival = witness.read(sent_real + flight)
    c, answer = ask(c, "a", Op.RENEW, arrival)
    assert answer.verdict is Verdict.GRANTED
    node_end_real = node.real(lease_end(node.read(sent_real), L))
    # The first witness reading at which b's claim is granted, in real time.
    c2, refused = ask(c, "b", Op.CLAIM, c.expires - 1e-6)
    assert refused.verdict is Verdict.HELD
    grant_real = witness.real(c.expires)
    _, granted = ask(c2, "b", Op.CLAIM, c.expires, seq=2)
    assert granted.verdict is Verdict.GRANTED
    assert node_end_real <= grant_real + 1e-9


def test_node_lease_would_outlive_the_witness_one_without_the_drift_share() -> None:
    """Counting the full lease on a slow node clock against a fast witness clock overlaps:
    the shrink by DRIFT is what the argument needs."""
    node = DriftClock(1 - DRIFT, 0.0)
    witness = DriftClock(1 + DRIFT, 0.0)
    naive_end_real = node.real(node.read(0.0) + L)
    witness_expiry_real = witness.real(witness.read(0.0) + L)
    assert naive_end_real > witness_expiry_real
    assert node.real(lease_end(node.read(0.0), L)) <= witness_expiry_real + 1e-9


def test_demotion_starts_a_margin_before_the_node_share_ends() -> None:
    """demote_at is lease_end less the release margin; node_share shrinks the lease by drift."""
    assert node_share(L) == pytest.approx(L * (1 - DRIFT) / (1 + DRIFT))
    assert demote_at(10.0, L, 1.5) == pytest.approx(10.0 + node_share(L) - 1.5)
    assert node_share(L, drift=0.0) == L


def test_min_lease_leaves_room_for_deadtime_two_renewals_and_the_margin() -> None:
    """The node's share of min_lease, less the margin, covers deadtime and two intervals."""
    lo = min_lease(deadtime=0.6, interval=0.2, margin=1.0)
    assert node_share(lo) - 1.0 == pytest.approx(0.6 + 0.4)
