"""The state machine with a witness: edges from a table, then scenarios on a fake clock."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from takeover.lease import Op, Verdict, lease_end
from takeover.machine import (
    WITNESS_LOST_TOGETHER,
    WITNESS_UNREACHABLE_HOLD,
    AcquireDone,
    AcquireResources,
    Event,
    HeartbeatSeen,
    MachineParams,
    Notify,
    PersistEpoch,
    ProbeTargets,
    ProbeVipGuard,
    ReleaseDone,
    ReleaseResources,
    Role,
    State,
    TargetsProbed,
    Tick,
    VipGuardResult,
    WitnessAnswer,
    WitnessView,
    next_deadline,
    step,
    witness_op,
)
from tests.unit.test_machine import T0, peer
from tests.unit.test_machine import P as BASE
from tests.unit.test_machine import mk as base_mk

LEASE = 3.0
MARGIN = 0.5
P = replace(BASE, witness_lease=LEASE, witness_margin=MARGIN)
HOLD = replace(P, witness_hold=True)
NO_WITNESS = replace(P, witness_lease=None)


def mk(role: Role, params: MachineParams = P, **kw: Any) -> State:
    """Return a state in `role` with the witness parameters (see test_machine.mk)."""
    return base_mk(role, params, **kw)


def seen(verdict: Verdict, holder: str = "", ago: float = 0.1, **kw: Any) -> WitnessView:
    """Return a witness view heard `ago` seconds before T0."""
    return WitnessView(T0 - ago, verdict, holder, kw.pop("remaining", 1.0), **kw)


def granted_until(until: float, ago: float = 0.1) -> WitnessView:
    """A witness view granting this node a lease that surely ends at `until`, asked for
    `ago` seconds before T0."""
    return seen(Verdict.GRANTED, "alpha", ago, lease_until=until, granted_sent=T0 - ago)


# (id, state, event, seconds after T0, expected role, expected action types, condition)
EDGES: list[tuple[str, State, Event, float, Role, list[type], str | None]] = [
    (
        "standby_waits_for_the_grant_while_the_lease_is_held",
        mk(Role.STANDBY, peer=peer(Role.ACTIVE, ago=1.0), witness=seen(Verdict.HELD, "beta")),
        Tick(),
        0.0,
        Role.STANDBY,
        [],
        "witness: lease held by beta",
    ),
    (
        "standby_waits_while_the_witness_is_quiet_after_restart",
        mk(Role.STANDBY, peer=peer(Role.ACTIVE, ago=1.0), witness=seen(Verdict.QUIET)),
        Tick(),
        0.0,
        Role.STANDBY,
        [],
        "witness restarted: grants nothing for one lease",
    ),
    (
        "standby_to_arbitrating_once_granted",
        mk(Role.STANDBY, peer=peer(Role.ACTIVE, ago=1.0), witness=granted_until(T0 + 2.0)),
        Tick(),
        0.0,
        Role.ARBITRATING,
        [Notify, ProbeTargets, ProbeVipGuard],
        None,
    ),
    (
        "standby_holds_when_peer_and_witness_were_lost_together",
        mk(
            Role.STANDBY,
            peer=peer(Role.ACTIVE, ago=1.0),
            witness=seen(Verdict.HELD, "beta", ago=1.1),
        ),
        Tick(),
        0.0,
        Role.STANDBY,
        [],
        WITNESS_LOST_TOGETHER,
    ),
    (
        "standby_falls_back_to_the_ping_list_when_the_witness_was_lost_first",
        mk(
            Role.STANDBY,
            peer=peer(Role.ACTIVE, ago=1.0),
            witness=seen(Verdict.HELD, "beta", ago=30.0),
        ),
        Tick(),
        0.0,
        Role.ARBITRATING,
        [Notify, ProbeTargets, ProbeVipGuard],
        None,
    ),
    (
        "standby_falls_back_when_the_witness_never_answered",
        mk(Role.STANDBY, peer=peer(Role.ACTIVE, ago=1.0)),
        Tick(),
        0.0,
        Role.ARBITRATING,
        [Notify, ProbeTargets, ProbeVipGuard],
        None,
    ),
    (
        "standby_holds_on_unreachable_witness_with_hold",
        mk(Role.STANDBY, HOLD, peer=peer(Role.ACTIVE, ago=1.0)),
        Tick(),
        0.0,
        Role.STANDBY,
        [],
        WITNESS_UNREACHABLE_HOLD,
    ),
    (
        "standby_hearing_its_peer_ignores_the_witness",
        mk(Role.STANDBY, peer=peer(Role.ACTIVE), witness=seen(Verdict.HELD, "beta", ago=100)),
        Tick(),
        0.0,
        Role.STANDBY,
        [],
        "",
    ),
    (
        "starting_alone_waits_in_standby_for_the_grant",
        mk(Role.STARTING, started=T0 - 2.0, witness=seen(Verdict.HELD, "beta")),
        Tick(),
        0.0,
        Role.STANDBY,
        [Notify, ReleaseResources],
        "witness: lease held by beta",
    ),
    (
        "starting_alone_arbitrates_once_granted",
        mk(Role.STARTING, started=T0 - 2.0, witness=granted_until(T0 + 2.0)),
        Tick(),
        0.0,
        Role.ARBITRATING,
        [Notify, ProbeTargets, ProbeVipGuard],
        None,
    ),
    (
        "active_demotes_itself_before_its_lease_ends_without_peer_and_witness",
        mk(
            Role.ACTIVE,
            peer=peer(Role.STANDBY, ago=1.0),
            witness=granted_until(T0 + MARGIN, ago=1.0),
        ),
        Tick(),
        0.0,
        Role.RELEASING,
        [Notify, ReleaseResources],
        None,
    ),
    (
        "active_keeps_until_the_margin_before_its_lease_ends",
        mk(
            Role.ACTIVE,
            peer=peer(Role.STANDBY, ago=1.0),
            witness=granted_until(T0 + MARGIN + 0.01, ago=1.0),
        ),
        Tick(),
        0.0,
        Role.ACTIVE,
        [],
        "",
    ),
    (
        "active_hearing_its_peer_keeps_when_its_lease_lapses",
        mk(Role.ACTIVE, peer=peer(Role.STANDBY), witness=granted_until(T0 - 5.0, ago=10.0)),
        Tick(),
        0.0,
        Role.ACTIVE,
        [],
        "",
    ),
    (
        "active_keeps_when_its_lease_ran_out_while_the_peer_was_heard",
        mk(
            Role.ACTIVE,
            peer=peer(Role.STANDBY, ago=1.0),
            witness=granted_until(T0 - 5.0, ago=10.0),
        ),
        Tick(),
        0.0,
        Role.ACTIVE,
        [],
        "",
    ),
    (
        "active_lets_go_at_once_when_the_witness_names_the_peer",
        mk(Role.ACTIVE, peer=peer(Role.STANDBY, ago=1.0), witness=seen(Verdict.HELD, "beta")),
        Tick(),
        0.0,
        Role.RELEASING,
        [Notify, ReleaseResources],
        None,
    ),
    (
        "active_renewing_keeps_when_only_the_peer_is_lost",
        mk(
            Role.ACTIVE,
            peer=peer(Role.STANDBY, ago=1.0),
            witness=granted_until(T0 + LEASE - 0.2, ago=0.05),
        ),
        Tick(),
        0.0,
        Role.ACTIVE,
        [],
        "",
    ),
    (
        "active_without_witness_configured_keeps",
        mk(
            Role.ACTIVE,
            NO_WITNESS,
            peer=peer(Role.STANDBY, ago=1.0),
            witness=granted_until(T0 - 0.1, ago=1.0),
        ),
        Tick(),
        0.0,
        Role.ACTIVE,
        [],
        "",
    ),
]


@pytest.mark.parametrize(
    "state, event, dt, role, actions, condition",
    [e[1:] for e in EDGES],
    ids=[e[0] for e in EDGES],
)
def test_witness_edges(  # noqa: PLR0917  the table's columns
    state: State,
    event: Event,
    dt: float,
    role: Role,
    actions: list[type],
    condition: str | None,
) -> None:
    """Each row: the event at T0 + dt leads to the role, the actions and the condition."""
    new, got = step(state, event, T0 + dt)
    assert new.role is role, new.reason
    assert [type(a) for a in got] == actions
    if condition is not None:
        assert new.condition == condition


def test_grant_counts_from_the_sending_of_the_request() -> None:
    """A grant makes the lease surely held until lease_end of the request's sending time."""
    s = mk(Role.ACTIVE, peer=peer(Role.STANDBY))
    s, _ = step(s, WitnessAnswer(T0 - 0.3, Verdict.GRANTED, "alpha", LEASE, LEASE), T0)
    assert s.witness is not None
    assert s.witness.lease_until == lease_end(T0 - 0.3, LEASE)
    # A late answer to an older request never shortens what a newer grant gave.
    s, _ = step(s, WitnessAnswer(T0 - 1.0, Verdict.GRANTED, "alpha", LEASE, LEASE), T0)
    assert s.witness.lease_until == lease_end(T0 - 0.3, LEASE)


def test_witness_ops_by_role() -> None:
    """The active renews, a node that lost its peer claims, a clean former holder releases."""
    assert witness_op(mk(Role.ACTIVE, peer=peer(Role.STANDBY)), T0) is Op.RENEW
    assert witness_op(mk(Role.RELEASING), T0) is Op.RENEW
    assert witness_op(mk(Role.FAULT, clean=False), T0) is Op.RENEW
    assert witness_op(mk(Role.FAULT, clean=True), T0) is Op.QUERY
    assert witness_op(mk(Role.ARBITRATING), T0) is Op.CLAIM
    assert witness_op(mk(Role.STANDBY, peer=peer(Role.ACTIVE, ago=1.0)), T0) is Op.CLAIM
    assert witness_op(mk(Role.STANDBY, peer=peer(Role.ACTIVE)), T0) is Op.QUERY
    held = mk(Role.STANDBY, peer=peer(Role.ACTIVE), witness=seen(Verdict.GRANTED, "alpha"))
    assert witness_op(held, T0) is Op.RELEASE
    stopping = mk(Role.STANDBY, peer=peer(Role.ACTIVE, ago=1.0), hold_standby=True)
    assert witness_op(stopping, T0) is Op.QUERY


def test_next_deadline_wakes_the_active_for_its_demotion() -> None:
    """An active with a lease running past its peer's last heartbeat is woken at its due time."""
    s = mk(Role.ACTIVE, peer=peer(Role.STANDBY, ago=0.0), witness=granted_until(T0 + 1.0))
    due = next_deadline(s)
    assert due is not None and due <= T0 + 1.0 - MARGIN + 1e-9


def answer(verdict: Verdict, holder: str, sent: float) -> WitnessAnswer:
    """The witness's answer to a request sent at `sent`."""
    return WitnessAnswer(sent, verdict, holder, LEASE, LEASE)


def test_isolated_active_demotes_and_the_standby_takes_over_only_after_the_lease() -> None:
    """Scenario on one fake clock: the active loses peer and witness at T0; it has released
    everything before the witness grants the standby, who then arbitrates and takes over."""
    interval = P.interval
    a = mk(Role.ACTIVE, peer=peer(Role.STANDBY, ago=0.0))
    b = replace(
        mk(Role.STANDBY, replace(P, node="beta", peer="alpha")), peer=peer(Role.ACTIVE, ago=0.0)
    )
    # Up to T0 both renew/query every interval and hear each other.
    for k in range(10):
        t = T0 - 2.0 + k * interval
        a, _ = step(a, answer(Verdict.GRANTED, "alpha", t), t + 0.001)
        a, _ = step(a, HeartbeatSeen(Role.STANDBY, 1, 50, 0, "b1"), t + 0.001)
        b, _ = step(b, answer(Verdict.HELD, "alpha", t), t + 0.001)
        b, _ = step(b, HeartbeatSeen(Role.ACTIVE, 1, 150, 0, "a1"), t + 0.001)
    last_renew_arrival = T0 - 2.0 + 9 * interval + 0.001
    a_released_at = None
    b_active_at = None
    t = T0
    while t < T0 + 10.0:
        # The daemon wakes at its deadlines too: tick the active finely.
        for k in range(10):
            at = t - interval + (k + 1) * interval / 10
            a, acts = step(a, Tick(), at)
            if a_released_at is None and any(isinstance(x, ReleaseResources) for x in acts):
                a, _ = step(a, ReleaseDone(), at)
                a_released_at = at
        # The witness grants b only once a's lease expired there (arrival + LEASE).
        granted = t >= last_renew_arrival + LEASE
        verdict, holder = (Verdict.GRANTED, "beta") if granted else (Verdict.HELD, "alpha")
        b, acts = step(b, answer(verdict, holder, t), t + 0.001)
        b, more = step(b, Tick(), t + 0.002)
        if any(isinstance(x, ProbeTargets) for x in acts + more):
            b, _ = step(b, TargetsProbed(0), t + 0.003)
            b, _ = step(b, VipGuardResult(False), t + 0.003)
        if b.role is Role.ACTIVE and b_active_at is None:
            b, _ = step(b, AcquireDone(), t + 0.004)
            b_active_at = t
        t += interval
    assert a_released_at is not None and b_active_at is not None
    assert a_released_at <= last_renew_arrival + LEASE - MARGIN
    assert b_active_at >= last_renew_arrival + LEASE
    # The demoted node, cut off from both, holds instead of arbitrating with the ping list.
    assert a.role is Role.STANDBY and a.condition == WITNESS_LOST_TOGETHER


def test_heartbeat_cut_only_moves_nothing() -> None:
    """Scenario: only the heartbeat paths are cut; the witness keeps renewing the active and
    refusing the standby, which never probes, so nothing moves."""
    a = mk(Role.ACTIVE, peer=peer(Role.STANDBY, ago=0.0))
    b = replace(
        mk(Role.STANDBY, replace(P, node="beta", peer="alpha")), peer=peer(Role.ACTIVE, ago=0.0)
    )
    t = T0
    while t < T0 + 20.0:
        a, acts_a = step(a, answer(Verdict.GRANTED, "alpha", t), t + 0.001)
        a, more = step(a, Tick(), t + 0.002)
        b, _ = step(b, answer(Verdict.HELD, "alpha", t), t + 0.001)
        b, acts_b = step(b, Tick(), t + 0.002)
        assert not any(isinstance(x, ReleaseResources) for x in acts_a + more)
        assert not any(isinstance(x, ProbeVipGuard | AcquireResources) for x in acts_b)
        t += P.interval
    assert a.role is Role.ACTIVE and b.role is Role.STANDBY
    assert witness_op(b, t) is Op.CLAIM


def test_without_witness_the_standby_takes_over_a_silent_peer_as_before() -> None:
    """Regression guard: with no witness configured, a lost peer is arbitrated at once."""
    b = mk(Role.STANDBY, NO_WITNESS, peer=peer(Role.ACTIVE, ago=1.0))
    new, acts = step(b, Tick(), T0)
    assert new.role is Role.ARBITRATING
    assert PersistEpoch not in [type(x) for x in acts]


def test_no_pre_probe_while_the_witness_holds_the_lease_for_the_peer() -> None:
    """A silent peer whose lease the witness still holds is not pre-probed (no guard at all)."""
    early = replace(P, prearbitrate=0.3)
    s = mk(Role.STANDBY, early, peer=peer(Role.ACTIVE, ago=0.4), witness=seen(Verdict.HELD, "beta"))
    new, acts = step(s, Tick(), T0)
    assert acts == [] and new.probing_since is None
    bare = replace(s, params=replace(early, witness_lease=None), witness=None)
    _, acts = step(bare, Tick(), T0)
    assert [type(a) for a in acts] == [ProbeTargets, ProbeVipGuard]


def test_a_grant_told_to_a_query_extends_nothing() -> None:
    """GRANTED in answer to a query or release only says who holds the lease: the lease runs
    from the last renewal at the witness, not from the query, so nothing is extended."""
    s = mk(Role.FAULT, peer=peer(Role.ACTIVE), witness=granted_until(T0 - 1.0))
    told = WitnessAnswer(T0, Verdict.GRANTED, "alpha", 0.2, LEASE, asked=False)
    s, _ = step(s, told, T0)
    assert s.witness is not None and s.witness.lease_until == T0 - 1.0


def test_a_grant_from_before_the_peer_went_silent_does_not_open_the_gate() -> None:
    """A standby whose last grant was asked for while its peer was still heard (a former
    active whose release answer was lost) waits for a fresh grant before arbitrating."""
    stale = replace(granted_until(T0 + 2.0), granted_sent=T0 - 1.5)
    s = mk(Role.STANDBY, peer=peer(Role.ACTIVE, ago=1.0), witness=stale)
    new, acts = step(s, Tick(), T0)
    assert new.role is Role.STANDBY and acts == []
    fresh = replace(stale, granted_sent=T0 - 0.5)
    new, _ = step(replace(s, witness=fresh), Tick(), T0)
    assert new.role is Role.ARBITRATING
