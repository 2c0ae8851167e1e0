"""The node state machine: every edge from a table, then whole scenarios on a fake clock."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from takeover.machine import (
    PEER_STILL_SERVING,
    TRANSITIONS,
    AcquireDone,
    AcquireFailed,
    AcquireResources,
    Action,
    Announce,
    Candidate,
    EpochStored,
    Event,
    Fence,
    FenceResult,
    HealthChanged,
    HeartbeatSeen,
    IllegalTransition,
    InhibitorsReleased,
    LinkState,
    LoopStalled,
    MachineParams,
    Notify,
    OperatorPromote,
    OperatorStandby,
    PeerView,
    PersistEpoch,
    ProbeResult,
    ProbeTargets,
    ProbeVipGuard,
    Refused,
    ReleaseDone,
    ReleaseFailed,
    ReleaseResources,
    Role,
    State,
    TargetsProbed,
    Tick,
    VipGuardResult,
    WaitInhibitors,
    advertisable,
    initial_state,
    next_deadline,
    own_score,
    prefer,
    step,
)

T0 = 1000.0
P = MachineParams(
    node="alpha",
    peer="beta",
    priority=100,
    interval=0.2,
    deadtime=0.6,
    initdead=2.0,
    recheck=1.0,
    inhibit_timeout=5.0,
    fault_hold=10.0,
)
FENCED = replace(P, fencing=True)
EARLY = replace(P, prearbitrate=0.3)
FENCED_GUARD = replace(P, fencing=True, fencing_policy="vip-guard")


def peer(role: Role, ago: float = 0.1, **kw: Any) -> PeerView:
    """Return a peer view heard `ago` seconds before T0."""
    fields: dict[str, Any] = {
        "role": role,
        "epoch": 1,
        "priority": 50,
        "score": 0,
        "healthy": True,
        "promote": False,
        "hold_standby": False,
        "boot_id": "b1",
        "heard_at": T0 - ago,
    }
    fields.update(kw)
    return PeerView(**fields)


def mk(role: Role, params: MachineParams = P, **kw: Any) -> State:
    """Return a state in `role`, started long ago, entered one second before T0."""
    base = initial_state(params, T0 - 60.0, epoch=1)
    defaults: dict[str, Any] = {
        "role": role,
        "since": T0 - 1.0,
        "clean": role not in {Role.ACTIVE, Role.RELEASING, Role.STARTING},
        "acquired": role is Role.ACTIVE,
    }
    defaults.update(kw)
    return replace(base, **defaults)


def hb(role: Role, **kw: Any) -> HeartbeatSeen:
    """Return a heartbeat from the peer (priority 50, epoch 1, score 0 unless given)."""
    fields: dict[str, Any] = {"role": role, "epoch": 1, "priority": 50, "score": 0, "boot_id": "b1"}
    fields.update(kw)
    return HeartbeatSeen(**fields)


LOST = None  # peer=None: never heard


# (id, state, event, seconds after T0, expected role, expected action types in order)
EDGES: list[tuple[str, State, Event, float, Role, list[type]]] = [
    # STARTING
    (
        "starting_to_standby_when_peer_active",
        mk(Role.STARTING, started=T0, since=T0),
        hb(Role.ACTIVE),
        0.1,
        Role.STANDBY,
        [Notify, ReleaseResources],
    ),
    (
        "starting_to_active_when_election_won_by_priority",
        mk(Role.STARTING, started=T0 - 2.0, peer=peer(Role.STARTING)),
        Tick(),
        0.0,
        Role.ACTIVE,
        [Notify, PersistEpoch, AcquireResources],
    ),
    (
        "starting_to_standby_when_election_lost_by_priority",
        mk(Role.STARTING, started=T0 - 2.0, peer=peer(Role.STANDBY, priority=200)),
        Tick(),
        0.0,
        Role.STANDBY,
        [Notify, ReleaseResources],
    ),
    (
        "starting_to_active_when_peer_isolated",
        mk(Role.STARTING, started=T0 - 2.0, peer=peer(Role.ISOLATED, priority=200)),
        Tick(),
        0.0,
        Role.ACTIVE,
        [Notify, PersistEpoch, AcquireResources],
    ),
    (
        "starting_to_arbitrating_when_nothing_heard_in_initdead",
        mk(Role.STARTING, started=T0 - 2.0, peer=LOST),
        Tick(),
        0.0,
        Role.ARBITRATING,
        [Notify, ProbeTargets, ProbeVipGuard],
    ),
    (
        "starting_stays_during_initdead",
        mk(Role.STARTING, started=T0 - 1.0, peer=peer(Role.STANDBY)),
        Tick(),
        0.0,
        Role.STARTING,
        [],
    ),
    (
        "starting_refuses_operator_promote",
        mk(Role.STARTING, started=T0 - 1.0),
        OperatorPromote(),
        0.0,
        Role.STARTING,
        [Refused],
    ),
    # STANDBY
    (
        "standby_to_arbitrating_when_peer_silent",
        mk(Role.STANDBY, peer=peer(Role.ACTIVE, ago=0.7)),
        Tick(),
        0.0,
        Role.ARBITRATING,
        [Notify, ProbeTargets, ProbeVipGuard],
    ),
    (
        "standby_starts_probes_before_deadtime_when_prearbitrating",
        mk(Role.STANDBY, EARLY, peer=peer(Role.ACTIVE, ago=0.35)),
        Tick(),
        0.0,
        Role.STANDBY,
        [ProbeTargets, ProbeVipGuard],
    ),
    (
        "standby_to_active_at_deadtime_on_early_probe_results",
        mk(
            Role.STANDBY,
            EARLY,
            peer=peer(Role.ACTIVE, ago=0.65),
            probing_since=T0 - 0.3,
            fresh_down=0,
            guard_answered=False,
        ),
        Tick(),
        0.0,
        Role.ACTIVE,
        [Notify, PersistEpoch, AcquireResources],
    ),
    (
        "standby_to_arbitrating_at_deadtime_while_early_probes_in_flight",
        mk(Role.STANDBY, EARLY, peer=peer(Role.ACTIVE, ago=0.65), probing_since=T0 - 0.3),
        Tick(),
        0.0,
        Role.ARBITRATING,
        [Notify],
    ),
    (
        "standby_stays_when_peer_active",
        mk(Role.STANDBY, peer=peer(Role.ACTIVE, priority=10)),
        Tick(),
        0.0,
        Role.STANDBY,
        [],
    ),
    (
        "standby_to_active_when_elected_against_standby_peer",
        mk(Role.STANDBY, peer=peer(Role.STANDBY)),
        Tick(),
        0.0,
        Role.ACTIVE,
        [Notify, PersistEpoch, AcquireResources],
    ),
    (
        "standby_to_active_when_peer_fault",
        mk(Role.STANDBY, peer=peer(Role.FAULT, priority=200)),
        Tick(),
        0.0,
        Role.ACTIVE,
        [Notify, PersistEpoch, AcquireResources],
    ),
    (
        "standby_waits_when_elected_but_peer_still_holding",
        mk(Role.STANDBY, peer=peer(Role.STARTING, holding=True)),
        Tick(),
        0.0,
        Role.STANDBY,
        [],
    ),
    (
        "starting_waits_when_election_won_but_peer_holding",
        mk(Role.STARTING, started=T0 - 2.0, peer=peer(Role.STANDBY, holding=True)),
        Tick(),
        0.0,
        Role.STARTING,
        [],
    ),
    (
        "standby_stays_when_peer_releasing",
        mk(Role.STANDBY, peer=peer(Role.RELEASING)),
        Tick(),
        0.0,
        Role.STANDBY,
        [],
    ),
    (
        "standby_to_fault_when_reconcile_release_failed",
        mk(Role.STANDBY, clean=False, peer=peer(Role.ACTIVE)),
        ReleaseFailed("EPERM"),
        0.0,
        Role.FAULT,
        [Notify, ReleaseResources],
    ),
    (
        "standby_stays_silently_within_stall_grace",
        mk(Role.STANDBY, peer=peer(Role.ACTIVE, ago=0.7), last_stall=T0 - 0.1),
        Tick(),
        0.0,
        Role.STANDBY,
        [],
    ),
    (
        "standby_stays_on_peer_loss_while_operator_standby_holds",
        mk(Role.STANDBY, hold_standby=True, peer=peer(Role.STANDBY, ago=0.7)),
        Tick(),
        0.0,
        Role.STANDBY,
        [],
    ),
    (
        "standby_operator_promote_against_active_peer_sets_flag_only",
        mk(Role.STANDBY, peer=peer(Role.ACTIVE)),
        OperatorPromote(),
        0.0,
        Role.STANDBY,
        [],
    ),
    # ARBITRATING
    (
        "arbitrating_to_isolated_when_too_many_targets_down",
        mk(Role.ARBITRATING, peer=peer(Role.ACTIVE, ago=2.0)),
        TargetsProbed(down=2),
        0.0,
        Role.ISOLATED,
        [Notify],
    ),
    (
        "arbitrating_to_standby_when_vip_answered",
        mk(Role.ARBITRATING, peer=peer(Role.ACTIVE, ago=2.0), fresh_down=0),
        VipGuardResult(answered=True, mac="02:00:00:00:00:02"),
        0.0,
        Role.STANDBY,
        [Notify],
    ),
    (
        "arbitrating_to_active_when_vip_unanswered",
        mk(Role.ARBITRATING, peer=peer(Role.ACTIVE, ago=2.0), fresh_down=0),
        VipGuardResult(answered=False),
        0.0,
        Role.ACTIVE,
        [Notify, PersistEpoch, AcquireResources],
    ),
    (
        "arbitrating_waits_for_guard_after_targets",
        mk(Role.ARBITRATING, peer=peer(Role.ACTIVE, ago=2.0)),
        TargetsProbed(down=0),
        0.0,
        Role.ARBITRATING,
        [],
    ),
    (
        "arbitrating_to_fencing_when_fencing_configured",
        mk(Role.ARBITRATING, FENCED, peer=peer(Role.ACTIVE, ago=2.0), fresh_down=0),
        VipGuardResult(answered=False),
        0.0,
        Role.FENCING,
        [Notify, Fence],
    ),
    (
        "arbitrating_to_standby_when_peer_heard_again",
        mk(Role.ARBITRATING, peer=peer(Role.ACTIVE, ago=2.0)),
        hb(Role.ACTIVE),
        0.0,
        Role.STANDBY,
        [Notify],
    ),
    (
        "arbitrating_to_standby_when_probes_time_out",
        mk(Role.ARBITRATING, since=T0 - 5.0, peer=peer(Role.ACTIVE, ago=6.0)),
        Tick(),
        0.0,
        Role.STANDBY,
        [Notify],
    ),
    (
        "arbitrating_surrenders_on_damped_score_too",
        mk(Role.ARBITRATING, peer=peer(Role.ACTIVE, ago=2.0), score=3, guard_answered=False),
        TargetsProbed(down=0),
        0.0,
        Role.ISOLATED,
        [Notify],
    ),
    # FENCING
    (
        "fencing_to_active_when_fence_confirmed",
        mk(Role.FENCING, FENCED, peer=peer(Role.ACTIVE, ago=2.0)),
        FenceResult(ok=True),
        0.0,
        Role.ACTIVE,
        [Notify, PersistEpoch, AcquireResources],
    ),
    (
        "fencing_to_standby_when_fence_failed_policy_refuse",
        mk(Role.FENCING, FENCED, peer=peer(Role.ACTIVE, ago=2.0)),
        FenceResult(ok=False, detail="timeout"),
        0.0,
        Role.STANDBY,
        [Notify],
    ),
    (
        "fencing_reprobes_vip_when_fence_failed_policy_vip_guard",
        mk(Role.FENCING, FENCED_GUARD, peer=peer(Role.ACTIVE, ago=2.0)),
        FenceResult(ok=False, detail="timeout"),
        0.0,
        Role.FENCING,
        [ProbeVipGuard],
    ),
    (
        "fencing_to_active_when_fence_failed_and_vip_unanswered",
        mk(Role.FENCING, FENCED_GUARD, peer=peer(Role.ACTIVE, ago=2.0), fence_failed=True),
        VipGuardResult(answered=False),
        0.0,
        Role.ACTIVE,
        [Notify, PersistEpoch, AcquireResources],
    ),
    (
        "fencing_to_standby_when_fence_failed_and_vip_answered",
        mk(Role.FENCING, FENCED_GUARD, peer=peer(Role.ACTIVE, ago=2.0), fence_failed=True),
        VipGuardResult(answered=True, mac="02:00:00:00:00:02"),
        0.0,
        Role.STANDBY,
        [Notify],
    ),
    (
        "fencing_ignores_a_heartbeat_once_the_shot_is_fired",
        mk(Role.FENCING, FENCED, peer=peer(Role.ACTIVE, ago=2.0)),
        hb(Role.ACTIVE),
        0.0,
        Role.FENCING,
        [],
    ),
    # ACTIVE
    (
        "active_stays_when_peer_standby",
        mk(Role.ACTIVE, peer=peer(Role.STANDBY)),
        Tick(),
        0.0,
        Role.ACTIVE,
        [],
    ),
    (
        "active_to_fault_when_acquire_failed",
        mk(Role.ACTIVE, acquired=False, peer=peer(Role.STANDBY)),
        AcquireFailed("RTNETLINK answers: Operation not permitted"),
        0.0,
        Role.FAULT,
        [Notify, ReleaseResources],
    ),
    (
        "active_to_releasing_on_operator_standby",
        mk(Role.ACTIVE, peer=peer(Role.STANDBY)),
        OperatorStandby(),
        0.0,
        Role.RELEASING,
        [Notify, ReleaseResources],
    ),
    (
        "active_refuses_operator_standby_without_peer",
        mk(Role.ACTIVE, peer=LOST),
        OperatorStandby(),
        0.0,
        Role.ACTIVE,
        [Refused],
    ),
    (
        "active_to_releasing_on_forced_operator_standby_without_peer",
        mk(Role.ACTIVE, peer=LOST),
        OperatorStandby(force=True),
        0.0,
        Role.RELEASING,
        [Notify, ReleaseResources],
    ),
    (
        "active_to_releasing_when_peer_promoted",
        mk(Role.ACTIVE, peer=peer(Role.STANDBY)),
        hb(Role.STANDBY, promote=True),
        0.0,
        Role.RELEASING,
        [Notify, ReleaseResources],
    ),
    (
        "active_to_releasing_when_unhealthy_and_peer_healthy",
        mk(Role.ACTIVE, peer=peer(Role.STANDBY)),
        HealthChanged(ok=False),
        0.0,
        Role.RELEASING,
        [Notify, ReleaseResources],
    ),
    (
        "active_stays_when_unhealthy_and_peer_unhealthy",
        mk(Role.ACTIVE, peer=peer(Role.STANDBY, healthy=False)),
        HealthChanged(ok=False),
        0.0,
        Role.ACTIVE,
        [],
    ),
    (
        "active_to_releasing_when_score_worse_by_margin",
        mk(Role.ACTIVE, peer=peer(Role.STANDBY)),
        ProbeResult(score=1),
        0.0,
        Role.RELEASING,
        [Notify, ReleaseResources],
    ),
    (
        "active_to_releasing_when_peer_active_with_newer_epoch",
        mk(Role.ACTIVE, epoch=3, peer=peer(Role.STANDBY)),
        hb(Role.ACTIVE, epoch=4),
        0.0,
        Role.RELEASING,
        [Notify, ReleaseResources, PersistEpoch],
    ),
    (
        "active_announces_when_peer_active_with_older_epoch",
        mk(Role.ACTIVE, epoch=4, peer=peer(Role.STANDBY)),
        hb(Role.ACTIVE, epoch=3),
        0.0,
        Role.ACTIVE,
        [Announce],
    ),
    (
        "active_to_releasing_when_peer_lost_and_score_bad",
        mk(Role.ACTIVE, peer=peer(Role.STANDBY, ago=2.0)),
        ProbeResult(score=2),
        0.0,
        Role.RELEASING,
        [Notify, ReleaseResources],
    ),
    (
        "active_to_releasing_at_once_when_service_interface_down",
        mk(Role.ACTIVE, peer=peer(Role.STANDBY)),
        LinkState(up=False),
        0.0,
        Role.RELEASING,
        [Notify, ReleaseResources],
    ),
    (
        "active_to_releasing_when_lan_down_and_peer_lost",
        mk(Role.ACTIVE, peer=peer(Role.STANDBY, ago=2.0)),
        LinkState(up=False),
        0.0,
        Role.RELEASING,
        [Notify, ReleaseResources],
    ),
    (
        "active_stays_when_peer_lost_and_score_good",
        mk(Role.ACTIVE, peer=peer(Role.STANDBY, ago=2.0)),
        Tick(),
        0.0,
        Role.ACTIVE,
        [],
    ),
    # RELEASING
    (
        "releasing_waits_for_inhibitors_after_release",
        mk(Role.RELEASING, peer=peer(Role.STANDBY)),
        ReleaseDone(),
        0.0,
        Role.RELEASING,
        [WaitInhibitors],
    ),
    (
        "releasing_to_standby_when_inhibitors_released",
        mk(Role.RELEASING, released=True, peer=peer(Role.STANDBY)),
        InhibitorsReleased(),
        0.0,
        Role.STANDBY,
        [Notify],
    ),
    (
        "releasing_to_standby_when_inhibitors_time_out",
        mk(Role.RELEASING, released=True, since=T0 - 5.0, peer=peer(Role.STANDBY)),
        Tick(),
        0.0,
        Role.STANDBY,
        [Notify],
    ),
    (
        "releasing_to_standby_at_once_when_urgent",
        mk(Role.RELEASING, urgent=True, peer=peer(Role.ACTIVE)),
        ReleaseDone(),
        0.0,
        Role.STANDBY,
        [Notify],
    ),
    (
        "releasing_to_isolated_when_surrendering",
        mk(Role.RELEASING, urgent=True, release_to=Role.ISOLATED, score=3),
        ReleaseDone(),
        0.0,
        Role.ISOLATED,
        [Notify],
    ),
    (
        "releasing_to_fault_when_release_failed",
        mk(Role.RELEASING, peer=peer(Role.STANDBY)),
        ReleaseFailed("device busy"),
        0.0,
        Role.FAULT,
        [Notify],
    ),
    (
        "standby_to_fencing_when_peer_faulted_holding_resources",
        mk(Role.STANDBY, FENCED, peer=peer(Role.FAULT, holding=True)),
        Tick(),
        0.0,
        Role.FENCING,
        [Notify, Fence],
    ),
    (
        "standby_stays_when_peer_faulted_holding_and_no_fencing",
        mk(Role.STANDBY, peer=peer(Role.FAULT, holding=True)),
        Tick(),
        0.0,
        Role.STANDBY,
        [],
    ),
    (
        "standby_stays_when_fencing_the_faulted_peer_failed_already",
        mk(
            Role.STANDBY,
            FENCED,
            peer=peer(Role.FAULT, holding=True),
            condition="fencing failed; not taking over",
        ),
        Tick(),
        0.0,
        Role.STANDBY,
        [],
    ),
    (
        "releasing_to_fault_when_release_past_its_budget",
        mk(Role.RELEASING, replace(P, release_timeout=50.0), since=T0 - 50.0),
        Tick(),
        0.0,
        Role.FAULT,
        [Notify],
    ),
    (
        "releasing_stays_while_release_within_its_budget",
        mk(Role.RELEASING, replace(P, release_timeout=50.0), since=T0 - 49.0),
        Tick(),
        0.0,
        Role.RELEASING,
        [],
    ),
    # ISOLATED
    (
        "isolated_to_standby_when_score_recovers",
        mk(Role.ISOLATED, score=2),
        ProbeResult(score=0),
        0.0,
        Role.STANDBY,
        [Notify],
    ),
    (
        "isolated_stays_while_score_bad",
        mk(Role.ISOLATED, score=2, peer=peer(Role.ACTIVE)),
        hb(Role.ACTIVE),
        0.0,
        Role.ISOLATED,
        [],
    ),
    (
        "isolated_stays_while_service_interface_down",
        mk(Role.ISOLATED, score=2, lan_up=False),
        ProbeResult(score=0),
        0.0,
        Role.ISOLATED,
        [],
    ),
    (
        "isolated_to_fault_when_release_failed",
        mk(Role.ISOLATED, score=2, clean=False),
        ReleaseFailed("device busy"),
        0.0,
        Role.FAULT,
        [Notify],
    ),
    # FAULT
    (
        "fault_to_standby_after_fault_hold",
        mk(Role.FAULT, since=T0 - 10.0, peer=peer(Role.ACTIVE)),
        Tick(),
        0.0,
        Role.STANDBY,
        [Notify],
    ),
    (
        "fault_retries_release_after_fault_hold_when_not_clean",
        mk(Role.FAULT, since=T0 - 10.0, clean=False, peer=peer(Role.ACTIVE)),
        Tick(),
        0.0,
        Role.FAULT,
        [ReleaseResources],
    ),
    (
        "fault_to_standby_when_operator_clears",
        mk(Role.FAULT, peer=peer(Role.ACTIVE)),
        OperatorStandby(),
        0.0,
        Role.STANDBY,
        [Notify],
    ),
    (
        "fault_holds_before_fault_hold",
        mk(Role.FAULT, peer=peer(Role.ACTIVE)),
        Tick(),
        0.0,
        Role.FAULT,
        [],
    ),
]


@pytest.mark.parametrize(
    ("state", "event", "dt", "expected", "actions"),
    [pytest.param(*row[1:], id=row[0]) for row in EDGES],
)
def test_edge(state: State, event: Event, dt: float, expected: Role, actions: list[type]) -> None:
    """Each row: the event in the role yields the expected role and action kinds in order."""
    new, out = step(state, event, T0 + dt)
    assert new.role is expected
    assert [type(a) for a in out] == actions
    if new.role is not state.role:
        assert out[0] == Notify(state.role, new.role, new.reason)
        assert state.role in TRANSITIONS[new.role]


def test_every_role_appears_in_transitions() -> None:
    """TRANSITIONS names every role as a target, and only roles as sources."""
    assert set(TRANSITIONS) == set(Role)
    for sources in TRANSITIONS.values():
        assert sources <= set(Role)


def test_every_allowed_edge_is_exercised_by_the_table() -> None:
    """Each edge TRANSITIONS allows is taken by at least one row of EDGES."""
    allowed = {(src, dst) for dst, srcs in TRANSITIONS.items() for src in srcs}
    taken = {(row[1].role, row[4]) for row in EDGES if row[1].role is not row[4]}
    assert allowed - taken == set()
    assert taken - allowed == set()


def test_to_raises_on_an_edge_missing_from_transitions() -> None:
    """State.to() refuses STANDBY -> RELEASING, which TRANSITIONS does not allow."""
    with pytest.raises(IllegalTransition):
        mk(Role.STANDBY).to(Role.RELEASING, T0, "bug")


def test_takeover_increments_epoch_above_everything_seen() -> None:
    """A takeover numbers itself above both its own and the peer's last epoch, and persists it."""
    s = mk(Role.ARBITRATING, epoch=2, seen_epoch=7, fresh_down=0, peer=peer(Role.ACTIVE, ago=2))
    new, out = step(s, VipGuardResult(answered=False), T0)
    assert new.epoch == 8
    assert PersistEpoch(8) in out
    assert out.index(PersistEpoch(8)) < [type(a) for a in out].index(AcquireResources)


def test_recheck_pauses_grow_from_interval_to_recheck() -> None:
    """Quiet re-checks start one interval apart and back off to `recheck` while the VIP answers."""
    s = mk(Role.ARBITRATING, peer=peer(Role.ACTIVE, ago=2.0), fresh_down=0)
    now = T0
    s, _ = step(s, VipGuardResult(answered=True, mac="02:00:00:00:00:02"), now)
    pauses = []
    for _ in range(12):
        assert s.recheck_at is not None
        pauses.append(round(s.recheck_at - now, 6))
        now = s.recheck_at
        s, out = step(s, Tick(), now)
        assert any(isinstance(a, ProbeVipGuard) for a in out)
        s, _ = step(s, TargetsProbed(down=0), now)
        s, _ = step(s, VipGuardResult(answered=True, mac="02:00:00:00:00:02"), now)
        assert s.role is Role.STANDBY
    assert pauses[0] == P.interval
    assert pauses == sorted(pauses)
    assert pauses[-1] == P.recheck


def test_result_of_an_abandoned_round_is_ignored() -> None:
    """A guard answer numbered for an earlier round does not count in the current one."""
    s = mk(Role.STANDBY, peer=peer(Role.ACTIVE, ago=0.7))
    s, out = step(s, Tick(), T0)
    assert s.role is Role.ARBITRATING
    current = s.probe_round
    s, _ = step(s, TargetsProbed(down=0, round=current), T0)
    s, out = step(s, VipGuardResult(answered=False, round=current - 1), T0)
    assert s.role is Role.ARBITRATING and out == []
    s, out = step(s, VipGuardResult(answered=False, round=current), T0)
    assert s.role is Role.ACTIVE


def test_early_probe_results_absorbed_while_peer_not_yet_lost() -> None:
    """Results arriving in the stall grace (peer silent, not yet lost) are kept for the verdict."""
    s = mk(Role.STANDBY, EARLY, peer=peer(Role.ACTIVE, ago=0.35, holding=True))
    s, out = step(s, Tick(), T0)
    assert [type(a) for a in out] == [ProbeTargets, ProbeVipGuard]
    s, _ = step(s, LoopStalled(lag=0.5), T0 + 0.3)
    s, _ = step(s, TargetsProbed(down=0, round=s.probe_round), T0 + 0.3)
    s, _ = step(s, VipGuardResult(answered=False, round=s.probe_round), T0 + 0.3)
    assert s.role is Role.STANDBY and s.guard_answered is False
    s, out = step(s, Tick(), T0 + 0.3 + P.deadtime)
    assert s.role is Role.ACTIVE


def test_higher_peer_epoch_is_persisted_once() -> None:
    """A heartbeat with a higher epoch than any known is persisted; the same epoch again is not."""
    s = mk(Role.STANDBY, epoch=2, seen_epoch=2, peer=peer(Role.ACTIVE))
    s, out = step(s, hb(Role.ACTIVE, epoch=5), T0)
    assert out == [PersistEpoch(5)]
    _, out = step(s, hb(Role.ACTIVE, epoch=5), T0 + 0.2)
    assert out == []


def test_vip_answered_sets_condition_and_recheck() -> None:
    """Backing off because the VIP answers reports the condition and schedules a re-check."""
    s = mk(Role.ARBITRATING, peer=peer(Role.ACTIVE, ago=2.0), fresh_down=0)
    new, _ = step(s, VipGuardResult(answered=True, mac="02:00:00:00:00:02"), T0)
    assert new.condition == PEER_STILL_SERVING
    assert new.recheck_at == T0 + P.interval


def test_prefer_is_antisymmetric() -> None:
    """For any two distinct candidates exactly one is preferred, so both nodes agree."""
    cands = [
        Candidate(name, prio, score, healthy, promote, hold)
        for name in ("alpha", "beta")
        for prio in (50, 100)
        for score in (0, 2)
        for healthy in (True, False)
        for promote in (False, True)
        for hold in (False, True)
    ]
    for a in cands:
        for b in cands:
            if a.name != b.name:
                assert prefer(a, b, 1) != prefer(b, a, 1)


def test_prefer_ignores_score_difference_below_margin() -> None:
    """A score difference smaller than the margin falls through to priority."""
    a = Candidate("alpha", 100, 1, True, False, False)
    b = Candidate("beta", 50, 0, True, False, False)
    assert prefer(a, b, 2)
    assert not prefer(a, b, 1)


# ---------------------------------------------------------------------------------------------
# Scenarios: two machines, or one machine and a scripted peer, on a fake clock.


class Node:
    """One machine plus a record of every action it emitted."""

    def __init__(self, params: MachineParams, now: float, epoch: int = 0) -> None:
        self.state = initial_state(params, now, epoch=epoch)
        self.actions: list[Action] = []

    def feed(self, ev: Event, now: float) -> list[Action]:
        """Step the machine and keep its actions."""
        self.state, out = step(self.state, ev, now)
        self.actions.extend(out)
        return out

    @property
    def role(self) -> Role:
        return self.state.role

    def heartbeat(self) -> HeartbeatSeen:
        """Return the heartbeat this node would send."""
        s = self.state
        return HeartbeatSeen(
            holding=not s.clean,
            role=s.role,
            epoch=s.epoch,
            priority=s.params.priority,
            score=own_score(s),
            boot_id=s.params.node,
            healthy=s.healthy,
            promote=s.promote,
            hold_standby=s.hold_standby,
        )

    def transitions(self) -> list[tuple[Role, Role]]:
        """Return every (old, new) transition so far."""
        return [(a.old, a.new) for a in self.actions if isinstance(a, Notify)]


def complete(node: Node, out: list[Action], now: float, guard_answered: bool = False) -> None:
    """Answer the effects `out` asked for as a healthy world would."""
    for a in out:
        if isinstance(a, AcquireResources):
            complete(node, node.feed(AcquireDone(), now), now, guard_answered)
        elif isinstance(a, ReleaseResources):
            complete(node, node.feed(ReleaseDone(), now), now, guard_answered)
        elif isinstance(a, ProbeTargets):
            complete(node, node.feed(TargetsProbed(down=0), now), now, guard_answered)
        elif isinstance(a, ProbeVipGuard):
            complete(node, node.feed(VipGuardResult(guard_answered), now), now, guard_answered)
        elif isinstance(a, WaitInhibitors):
            complete(node, node.feed(InhibitorsReleased(), now), now, guard_answered)
        elif isinstance(a, Fence):
            complete(node, node.feed(FenceResult(ok=True), now), now, guard_answered)


class Pair:
    """Two machines exchanging heartbeats every interval unless the link is cut."""

    def __init__(self, pa: MachineParams, pb: MachineParams, now: float = T0) -> None:
        self.now = now
        self.a = Node(pa, now)
        self.b = Node(pb, now)
        self.link = True
        self.alive = {"a": True, "b": True}

    def run(self, seconds: float, guard: dict[str, bool] | None = None) -> None:
        """Advance time in interval steps, delivering heartbeats and completing effects."""
        interval = self.a.state.params.interval
        end = self.now + seconds
        while self.now < end - 1e-9:
            self.now = round(self.now + interval, 6)
            # Both heartbeats leave before either arrives, as on a real wire.
            sent = {"a": self.a.heartbeat(), "b": self.b.heartbeat()}
            for name, me in (("a", self.a), ("b", self.b)):
                if not self.alive[name]:
                    continue
                other_name = "b" if name == "a" else "a"
                if self.link and self.alive[other_name]:
                    out = me.feed(sent[other_name], self.now)
                    complete(me, out, self.now, (guard or {}).get(name, False))
                out = me.feed(Tick(), self.now)
                complete(me, out, self.now, (guard or {}).get(name, False))


PA = replace(P, node="alpha", peer="beta", priority=100)
PB = replace(P, node="beta", peer="alpha", priority=50)


def test_scenario_start_together_higher_priority_wins() -> None:
    """Both nodes start together: the higher priority becomes active, the other standby."""
    pair = Pair(PA, PB)
    pair.run(3.0)
    assert (pair.a.role, pair.b.role) == (Role.ACTIVE, Role.STANDBY)
    assert pair.a.state.epoch == 1


def test_scenario_equal_priority_lower_name_wins() -> None:
    """With equal priorities the lower node name wins the start-up election."""
    pair = Pair(replace(PA, priority=70), replace(PB, priority=70))
    pair.run(3.0)
    assert (pair.a.role, pair.b.role) == (Role.ACTIVE, Role.STANDBY)


def test_scenario_active_crash_standby_takes_over() -> None:
    """The active dies: the standby arbitrates, finds the VIP silent and takes over."""
    pair = Pair(PA, PB)
    pair.run(3.0)
    pair.alive["a"] = False
    pair.run(1.0)
    assert pair.b.role is Role.ACTIVE
    assert (Role.STANDBY, Role.ARBITRATING) in pair.b.transitions()
    assert pair.b.state.epoch == 2


def test_scenario_partition_with_guard_does_not_take_over() -> None:
    """Heartbeats cut while the active still answers for the VIP: the standby stays put."""
    pair = Pair(PA, PB)
    pair.run(3.0)
    pair.link = False
    pair.run(5.0, guard={"b": True})
    assert (pair.a.role, pair.b.role) == (Role.ACTIVE, Role.STANDBY)
    assert pair.b.state.condition == PEER_STILL_SERVING
    # Re-checks are quiet: one trip into ARBITRATING and back, not one per recheck.
    assert pair.b.transitions().count((Role.STANDBY, Role.ARBITRATING)) == 1
    probes = [a for a in pair.b.actions if isinstance(a, ProbeVipGuard)]
    assert len(probes) >= 4


def test_scenario_partition_heals_and_peer_dies_later() -> None:
    """After backing off, a re-check that finds the VIP silent takes over."""
    pair = Pair(PA, PB)
    pair.run(3.0)
    pair.link = False
    pair.run(2.0, guard={"b": True})
    pair.alive["a"] = False
    pair.run(2.0, guard={"b": False})
    assert pair.b.role is Role.ACTIVE


def test_scenario_double_active_newer_epoch_wins() -> None:
    """After a heal, both active: the newer epoch keeps the VIP, the other releases at once."""
    pair = Pair(PA, PB)
    pair.run(3.0)
    pair.link = False
    pair.run(2.0, guard={"b": False})
    assert (pair.a.role, pair.b.role) == (Role.ACTIVE, Role.ACTIVE)
    assert pair.b.state.epoch > pair.a.state.epoch
    pair.link = True
    pair.run(1.0)
    assert (pair.a.role, pair.b.role) == (Role.STANDBY, Role.ACTIVE)
    assert (Role.RELEASING, Role.STANDBY) in pair.a.transitions()
    # The loser did not wait for inhibitors; the winner announced (conflict, then resolution).
    assert not any(isinstance(x, WaitInhibitors) for x in pair.a.actions)
    assert sum(isinstance(x, Announce) for x in pair.b.actions) == 2


def test_scenario_score_switchover() -> None:
    """The active's score worsens by the margin: it hands over and the standby becomes active."""
    pair = Pair(PA, PB)
    pair.run(3.0)
    pair.a.feed(ProbeResult(score=2), pair.now)
    complete(pair.a, pair.a.actions[-1:], pair.now)
    pair.run(1.0)
    assert (pair.a.role, pair.b.role) == (Role.STANDBY, Role.ACTIVE)
    assert any(isinstance(x, WaitInhibitors) for x in pair.a.actions)


def test_scenario_switchover_is_dampened() -> None:
    """With switchover_hold the worse score must persist before the active hands over."""
    pa = replace(PA, switchover_hold=2.0)
    pair = Pair(pa, replace(PB, switchover_hold=2.0))
    pair.run(3.0)
    pair.a.feed(ProbeResult(score=1), pair.now)
    pair.run(1.0)
    assert pair.a.role is Role.ACTIVE
    pair.a.feed(ProbeResult(score=0), pair.now)
    pair.run(0.4)
    pair.a.feed(ProbeResult(score=1), pair.now)
    pair.run(1.6)
    assert pair.a.role is Role.ACTIVE
    pair.run(1.0)
    assert (pair.a.role, pair.b.role) == (Role.STANDBY, Role.ACTIVE)


def test_scenario_operator_standby_hands_over() -> None:
    """`takeover standby` on the active moves the service and the node stays standby."""
    pair = Pair(PA, PB)
    pair.run(3.0)
    complete(pair.a, pair.a.feed(OperatorStandby(), pair.now), pair.now)
    pair.run(1.0)
    assert (pair.a.role, pair.b.role) == (Role.STANDBY, Role.ACTIVE)
    # Once the peer is active, the hold flag is cleared: a normal standby again.
    assert not pair.a.state.hold_standby


def test_scenario_operator_promote_on_standby() -> None:
    """`takeover promote` on the standby makes the active hand over to it."""
    pair = Pair(PA, PB)
    pair.run(3.0)
    pair.b.feed(OperatorPromote(), pair.now)
    pair.run(1.0)
    assert (pair.a.role, pair.b.role) == (Role.STANDBY, Role.ACTIVE)
    assert not pair.b.state.promote
    pair.run(2.0)
    assert (pair.a.role, pair.b.role) == (Role.STANDBY, Role.ACTIVE)


def test_scenario_isolated_recovery() -> None:
    """A node that loses peer and LAN surrenders, and recovers to standby with its score."""
    pair = Pair(PA, PB)
    pair.run(3.0)
    # a's LAN goes down: every heartbeat path dies at once, its damped score follows later.
    pair.link = False
    pair.run(1.0, guard={"b": False})
    assert (pair.a.role, pair.b.role) == (Role.ACTIVE, Role.ACTIVE)
    complete(pair.a, pair.a.feed(ProbeResult(score=3), pair.now), pair.now)
    assert pair.a.role is Role.ISOLATED
    assert (Role.RELEASING, Role.ISOLATED) in pair.a.transitions()
    assert pair.b.role is Role.ACTIVE
    complete(pair.a, pair.a.feed(ProbeResult(score=0), pair.now), pair.now)
    pair.link = True
    pair.run(1.0)
    assert (pair.a.role, pair.b.role) == (Role.STANDBY, Role.ACTIVE)


def test_scenario_no_failback_by_default() -> None:
    """A recovered higher-priority node stays standby when auto_failback is off."""
    pair = Pair(PA, PB)
    pair.run(3.0)
    pair.alive["a"] = False
    pair.run(1.0)
    pair.a = Node(PA, pair.now, epoch=1)
    pair.alive["a"] = True
    pair.run(120.0)
    assert (pair.a.role, pair.b.role) == (Role.STANDBY, Role.ACTIVE)


def test_scenario_failback_after_delay() -> None:
    """With auto_failback the recovered higher-priority node gets the service after the delay."""
    pa = replace(PA, auto_failback=True, failback_delay=10.0)
    pb = replace(PB, auto_failback=True, failback_delay=10.0)
    pair = Pair(pa, pb)
    pair.run(3.0)
    pair.alive["a"] = False
    pair.run(1.0)
    pair.a = Node(pa, pair.now, epoch=1)
    pair.alive["a"] = True
    pair.run(9.0)
    assert (pair.a.role, pair.b.role) == (Role.STANDBY, Role.ACTIVE)
    pair.run(3.0)
    assert (pair.a.role, pair.b.role) == (Role.ACTIVE, Role.STANDBY)


def test_scenario_lan_down_on_active_hands_over_without_waiting() -> None:
    """Carrier loss on the active's LAN moves the service over the direct link at once."""
    pair = Pair(PA, PB)
    pair.run(3.0)
    complete(pair.a, pair.a.feed(LinkState(up=False), pair.now), pair.now)
    assert pair.a.role is Role.STANDBY
    assert not any(isinstance(x, WaitInhibitors) for x in pair.a.actions)
    pair.run(0.4)
    assert (pair.a.role, pair.b.role) == (Role.STANDBY, Role.ACTIVE)
    # The LAN comes back: nothing moves back (no failback by default).
    pair.a.feed(LinkState(up=True), pair.now)
    pair.run(2.0)
    assert (pair.a.role, pair.b.role) == (Role.STANDBY, Role.ACTIVE)


def test_scenario_prearbitration_takes_over_at_deadtime() -> None:
    """With prearbitrate the guard runs before deadtime and the takeover follows at deadtime."""
    pa, pb = replace(PA, prearbitrate=0.3), replace(PB, prearbitrate=0.3)
    pair = Pair(pa, pb)
    pair.run(3.0)
    lost_at = pair.now
    pair.alive["a"] = False
    pair.run(0.8)
    assert pair.b.role is Role.ACTIVE
    taken = [a for a in pair.b.actions if isinstance(a, AcquireResources)]
    assert len(taken) == 1
    # Exactly one guard probe: the early one served the decision.
    assert sum(isinstance(a, ProbeVipGuard) for a in pair.b.actions) == 1
    assert pair.b.state.since - lost_at <= P.deadtime + P.interval + 1e-6


def test_early_probe_discarded_when_heartbeat_returns() -> None:
    """A heartbeat arriving after the early probes started makes their results moot."""
    s = mk(Role.STANDBY, EARLY, peer=peer(Role.ACTIVE, ago=0.35))
    s, out = step(s, Tick(), T0)
    assert s.probing_since == T0 and any(isinstance(a, ProbeVipGuard) for a in out)
    stale_round = s.probe_round
    s, _ = step(s, hb(Role.ACTIVE), T0 + 0.05)
    s, _ = step(s, VipGuardResult(answered=False, round=stale_round), T0 + 0.1)
    assert s.probing_since is None and s.guard_answered is None
    # Silent again for deadtime - prearbitrate after that heartbeat: a new early round starts.
    s, out = step(s, Tick(), T0 + 0.05 + P.deadtime - 0.3 + 0.01)
    assert s.role is Role.STANDBY and any(isinstance(a, ProbeVipGuard) for a in out)


def test_standby_to_arbitrating_with_a_fresh_guard_when_the_early_probe_saw_the_vip() -> None:
    """An early guard answer is stale once the peer is lost: a fresh round, not a back-off."""
    s = mk(Role.STANDBY, EARLY, peer=peer(Role.ACTIVE, ago=0.35))
    s, _ = step(s, Tick(), T0)
    early_round = s.probe_round
    # The peer still answered the early ARP probe, then died before its next heartbeat.
    s, _ = step(s, VipGuardResult(answered=True, round=early_round), T0 + 0.01)
    s, out = step(s, Tick(), T0 + P.deadtime)
    assert s.role is Role.ARBITRATING
    assert s.probe_round == early_round + 1
    assert any(isinstance(a, ProbeVipGuard) for a in out)
    # The fresh round finds nobody: the takeover goes ahead without a re-check pause.
    s, _ = step(s, TargetsProbed(down=0, round=s.probe_round), T0 + P.deadtime + 0.01)
    s, out = step(s, VipGuardResult(answered=False, round=s.probe_round), T0 + P.deadtime + 0.02)
    assert s.role is Role.ACTIVE and any(isinstance(a, AcquireResources) for a in out)


def test_standby_held_is_not_elected_when_the_peer_is_held_too() -> None:
    """Both nodes held in standby (both stopping): the preferred one is not re-elected."""
    s = replace(mk(Role.STANDBY, P, peer=peer(Role.STANDBY, ago=0.05)), hold_standby=True)
    s = replace(s, peer=replace(s.peer, hold_standby=True))
    s, out = step(s, Tick(), T0)
    assert s.role is Role.STANDBY
    assert not any(isinstance(a, AcquireResources) for a in out)


def test_scenario_health_demotion() -> None:
    """A failing active hands over to a healthy standby."""
    pair = Pair(PA, PB)
    pair.run(3.0)
    complete(pair.a, pair.a.feed(HealthChanged(ok=False), pair.now), pair.now)
    pair.run(1.0)
    assert (pair.a.role, pair.b.role) == (Role.STANDBY, Role.ACTIVE)
    pair.run(2.0)
    assert pair.b.role is Role.ACTIVE


def test_scenario_loop_stall_drains_before_declaring_peer_lost() -> None:
    """After a stall the standby waits a grace for queued heartbeats instead of arbitrating."""
    pair = Pair(PA, PB)
    pair.run(3.0)
    b = pair.b
    stalled_at = pair.now + 5.0
    b.feed(LoopStalled(lag=5.0), stalled_at)
    out = b.feed(Tick(), stalled_at)
    assert out == []
    assert b.role is Role.STANDBY
    b.feed(pair.a.heartbeat(), stalled_at + 0.01)
    b.feed(Tick(), stalled_at + 0.2)
    assert b.role is Role.STANDBY
    # Without heartbeats, once the grace is over, the peer is lost after all.
    b.feed(Tick(), stalled_at + 0.7)
    assert b.role is Role.ARBITRATING


def test_scenario_restart_with_stale_vip_never_two_holders() -> None:
    """The killed active restarts holding a stale VIP: the winner acquires only after release."""
    pair = Pair(PA, PB)
    pair.run(3.0)
    pair.alive["a"] = False
    pair.run(2.0, guard={"b": True})  # a's kernel still answers for the VIP: b stays
    assert pair.b.role is Role.STANDBY
    pair.a = Node(PA, pair.now, epoch=1)  # restarted, clean=False: the VIP is still there
    pair.alive["a"] = True
    held = {"a": True, "b": False}
    overlap = False
    interval = PA.interval
    for _ in range(40):
        pair.now = round(pair.now + interval, 6)
        sent = {"a": pair.a.heartbeat(), "b": pair.b.heartbeat()}
        for name, node in (("a", pair.a), ("b", pair.b)):
            other = "b" if name == "a" else "a"
            for ev in (sent[other], Tick()):
                for act in node.feed(ev, pair.now):
                    if isinstance(act, AcquireResources):
                        held[name] = True
                        node.feed(AcquireDone(), pair.now)
                    elif isinstance(act, ReleaseResources):
                        held[name] = False
                        node.feed(ReleaseDone(), pair.now)
            overlap |= held["a"] and held["b"]
    assert not overlap
    assert (pair.a.role, pair.b.role) == (Role.ACTIVE, Role.STANDBY)


def test_scenario_stale_vip_reconciled_when_starting_as_standby() -> None:
    """A node restarting while the peer is active releases whatever it may still hold."""
    node = Node(PB, T0)
    out = node.feed(hb(Role.ACTIVE, priority=100), T0 + 0.2)
    assert node.role is Role.STANDBY
    assert any(isinstance(a, ReleaseResources) for a in out)
    out = node.feed(ReleaseDone(), T0 + 0.3)
    assert node.state.clean and out == []


def test_next_deadline_covers_initdead_and_deadtime() -> None:
    """next_deadline is the end of initdead at start, and just past deadtime once paired."""
    s = initial_state(P, T0)
    assert next_deadline(s) == T0 + P.initdead
    s = mk(Role.STANDBY, peer=peer(Role.ACTIVE, ago=0.0))
    d = next_deadline(s)
    assert d is not None and T0 + P.deadtime < d <= T0 + P.deadtime + P.interval
    assert step(s, Tick(), d)[0].role is Role.ARBITRATING


@pytest.mark.parametrize("interval", [0.05, 0.1, 1.0])
def test_standby_to_arbitrating_wakes_just_past_deadtime(interval: float) -> None:
    """The loop wakes for a silent peer within a few ms of deadtime, at any interval."""
    params = replace(P, interval=interval, deadtime=3 * interval)
    s = mk(Role.STANDBY, params, peer=peer(Role.ACTIVE, ago=0.0))
    d = next_deadline(s)
    assert d is not None and T0 + params.deadtime < d <= T0 + params.deadtime + 0.002
    assert step(s, Tick(), d)[0].role is Role.ARBITRATING


# (role, what else the state holds): a peer silent past deadtime, already acted on.
LOST_PEER_SETTLED = [
    (Role.ACTIVE, {}),
    (Role.STANDBY, {"hold_standby": True}),
    (Role.STANDBY, {"recheck_at": T0 + 5.0, "condition": "heartbeat lost, peer still serving"}),
    (Role.ISOLATED, {}),
]


@pytest.mark.parametrize("role, kw", LOST_PEER_SETTLED)
def test_next_deadline_after_a_tick_is_in_the_future(role: Role, kw: dict[str, Any]) -> None:
    """Once ticked, a peer silent for long gives no deadline at or before that Tick (no spin)."""
    params = replace(EARLY, witness_lease=None)
    s = mk(role, params, peer=peer(Role.ACTIVE, ago=10.0), **kw)
    s, _ = step(s, Tick(), T0)
    d = next_deadline(s, T0)
    assert d is None or d > T0


def test_takeover_epoch_is_advertisable_only_once_stored() -> None:
    """A takeover's new epoch may go out in heartbeats only after EpochStored says it is durable."""
    s = mk(Role.ARBITRATING, fresh_down=0, guard_answered=False, since=T0 - 0.1)
    assert advertisable(s)
    s, out = step(s, Tick(), T0)
    assert s.role is Role.ACTIVE and s.epoch == 2
    assert PersistEpoch(2) in out and not advertisable(s)
    s, _ = step(s, EpochStored(1), T0 + 0.01)
    assert not advertisable(s)
    s, _ = step(s, EpochStored(2), T0 + 0.02)
    assert advertisable(s) and s.role is Role.ACTIVE


# ---------------------------------------------------------------------------------------------
# Link flapping on the active's side: both heartbeat paths and the LAN carrier go down and up.


def test_standby_not_elected_on_peer_state_heard_before_its_carrier_loss() -> None:
    """Carrier back after a loss: the peer's STANDBY heard before the loss elects nobody."""
    node = Node(PA, T0)
    node.state = mk(Role.ACTIVE, PA, peer=peer(Role.STANDBY, ago=0.05))
    complete(node, node.feed(LinkState(up=False), T0), T0)
    assert node.role is Role.STANDBY
    out = node.feed(LinkState(up=True), T0 + 0.3)
    out += node.feed(Tick(), T0 + 0.35)
    assert node.role is Role.STANDBY
    assert not any(isinstance(a, AcquireResources) for a in out)
    # A heartbeat sent since the links came back counts again: the peer is still standby.
    node.feed(hb(Role.STANDBY), T0 + 0.4)
    assert node.role is Role.ACTIVE


def test_standby_arbitrates_after_a_deadtime_of_silence_once_carrier_is_back() -> None:
    """With no fresh heartbeat after the links return, the normal arbitration decides."""
    node = Node(PA, T0)
    node.state = mk(Role.STANDBY, PA, peer=peer(Role.STANDBY, ago=0.05))
    node.feed(LinkState(up=False), T0)
    node.feed(LinkState(up=True), T0 + 0.3)
    node.feed(Tick(), T0 + 0.5)
    assert node.role is Role.STANDBY
    out = node.feed(Tick(), T0 + 0.05 + P.deadtime + 0.01)
    assert node.role is Role.ARBITRATING
    assert [type(a) for a in out] == [Notify, ProbeTargets, ProbeVipGuard]


def test_carrier_counts_as_back_only_after_carrier_hold() -> None:
    """Carrier back: the node advertises LAN_DOWN_SCORE until carrier_hold has passed."""
    params = replace(PA, carrier_hold=1.0)
    node = Node(params, T0)
    node.state = mk(Role.STANDBY, params, score=0)
    node.feed(LinkState(up=False), T0)
    node.feed(LinkState(up=True), T0 + 0.3)
    assert own_score(node.state) == 255
    assert next_deadline(node.state) == T0 + 1.3
    # Down again before the hold is over: the hold starts anew at the next return.
    node.feed(LinkState(up=False), T0 + 0.6)
    node.feed(LinkState(up=True), T0 + 0.9)
    node.feed(Tick(), T0 + 1.5)
    assert own_score(node.state) == 255
    node.feed(Tick(), T0 + 1.9)
    assert own_score(node.state) == 0 and node.state.lan_up


FLAP = replace(P, initdead=1.0, carrier_hold=P.deadtime)


def test_scenario_flapping_active_moves_the_service_once_and_never_two_owners() -> None:
    """The active's links flap every 300 ms: one move to the peer, never two holders."""
    pa = replace(FLAP, node="alpha", peer="beta", priority=100)
    pb = replace(FLAP, node="beta", peer="alpha", priority=50)
    a, b = Node(pa, T0), Node(pb, T0)
    now, up = T0, True
    held = {"alpha": False, "beta": False}
    overlap = False

    def act(node: Node, ev: Event) -> None:
        name = node.state.params.node
        for x in node.feed(ev, now):
            if isinstance(x, AcquireResources):
                held[name] = True
                act(node, AcquireDone())
            elif isinstance(x, ReleaseResources):
                held[name] = False
                act(node, ReleaseDone())
            elif isinstance(x, ProbeTargets):
                act(node, TargetsProbed(down=0))
            elif isinstance(x, ProbeVipGuard):
                other = "alpha" if name == "beta" else "beta"
                act(node, VipGuardResult(held[other]))

    for i in range(300):
        now = round(T0 + 0.05 * (i + 1), 6)
        if 60 <= i < 168 and (i - 60) % 6 == 0:
            # Every 300 ms for 5.4 s: alpha's LAN port and crossover go down or up together.
            up = not up
            act(a, LinkState(up=up))
        if i % 4 == 0:
            sent = {"alpha": a.heartbeat(), "beta": b.heartbeat()}
            if up:
                act(a, sent["beta"])
                act(b, sent["alpha"])
        act(a, Tick())
        act(b, Tick())
        overlap |= held["alpha"] and held["beta"]
    assert not overlap
    assert (a.role, b.role) == (Role.STANDBY, Role.ACTIVE)
    assert b.transitions().count((Role.STANDBY, Role.ACTIVE)) <= 1
    assert sum(1 for t in a.transitions() if t[1] is Role.ACTIVE) == 1  # the start-up election


def test_release_past_its_budget_leaves_fault_unclean_and_retries() -> None:
    """A hung release ends in FAULT holding possibly everything; FAULT retries the release."""
    params = replace(P, release_timeout=50.0)
    s = mk(Role.RELEASING, params, since=T0)
    assert next_deadline(s) == T0 + 50.0
    s, _ = step(s, Tick(), T0 + 50.0)
    assert s.role is Role.FAULT and not s.clean
    assert s.reason == "release past its budget of 50 s"
    s, out = step(s, Tick(), T0 + 50.0 + P.fault_hold)
    assert [type(a) for a in out] == [ReleaseResources]


def test_scenario_hung_release_is_fenced_by_the_peer_then_taken_over() -> None:
    """A release past its budget ends in FAULT; the peer fences it, then takes over."""
    pa = replace(PA, fencing=True, release_timeout=3.0)
    pb = replace(PB, fencing=True, release_timeout=3.0)
    a, b = Node(pa, T0), Node(pb, T0)
    a.state = mk(Role.ACTIVE, pa, peer=peer(Role.STANDBY, ago=0.0))
    b.state = mk(Role.STANDBY, pb, peer=peer(Role.ACTIVE, ago=0.0, priority=100))
    now = T0
    fenced: list[Action] = []
    # The operator hands over; the release never reports back (a hung hypervisor).
    a.feed(OperatorStandby(), now)
    assert a.role is Role.RELEASING
    for _ in range(40):
        now = round(now + 0.1, 6)
        a.feed(b.heartbeat(), now)
        a.feed(Tick(), now)
        out = b.feed(a.heartbeat(), now) + b.feed(Tick(), now)
        fenced += [x for x in out if isinstance(x, Fence)]
        if fenced:
            break
    assert a.role is Role.FAULT and not a.state.clean
    assert b.role is Role.FENCING and fenced == [Fence("alpha")]
    out = b.feed(FenceResult(ok=True), now)
    assert b.role is Role.ACTIVE
    assert any(isinstance(x, AcquireResources) for x in out)


HUNG = 4.0


@pytest.mark.parametrize(
    ("fencing", "hung_after", "hung_for", "fenced"),
    [
        (True, HUNG, 6.0, True),  # fencing, silent past hung_after: fenced, then taken over
        (True, HUNG, 3.0, False),  # silent, but not yet for hung_after: a pause, not a hang
        (True, 0.0, 8.0, False),  # hung_after 0: never, the guard alone decides
        (False, HUNG, 8.0, False),  # no fencing: nothing can make the peer stop answering
    ],
)
def test_scenario_hung_peer_is_fenced_only_past_hung_after_with_fencing(
    fencing: bool, hung_after: float, hung_for: float, fenced: bool
) -> None:
    """The active freezes (no heartbeat, its kernel still answers for the VIP): the standby
    fences it once hung_after has passed, with fencing configured, and then takes over."""
    pair = Pair(
        replace(PA, fencing=fencing, hung_after=hung_after),
        replace(PB, fencing=fencing, hung_after=hung_after),
    )
    pair.run(3.0)
    pair.alive["a"] = False
    pair.run(hung_for, guard={"b": True})
    fences = [x for x in pair.b.actions if isinstance(x, Fence)]
    if fenced:
        assert fences == [Fence("alpha")]
        assert pair.b.role is Role.ACTIVE and pair.b.state.epoch == 2
        assert (Role.FENCING, Role.ACTIVE) in pair.b.transitions()
    else:
        assert fences == []
        assert pair.b.role is Role.STANDBY and pair.b.state.condition == PEER_STILL_SERVING


def test_a_node_that_never_heard_its_peer_never_calls_it_hung() -> None:
    """Started while every heartbeat is cut and the VIP answers: long past hung_after, this
    node fences nobody (two nodes that cannot hear each other must not fence in turn)."""
    pb = replace(PB, fencing=True, hung_after=HUNG)
    b = Node(pb, T0)
    now = T0
    for _ in range(200):
        now = round(now + pb.interval, 6)
        complete(b, b.feed(Tick(), now), now, guard_answered=True)
    assert now - T0 > 4 * HUNG
    assert not [x for x in b.actions if isinstance(x, Fence)]
    assert b.role is Role.STANDBY


def test_a_hung_peer_whose_fencing_fails_is_not_taken_over() -> None:
    """Fencing a hung peer fails (policy refuse): the standby stays standby, VIP untouched."""
    pb = replace(PB, fencing=True, hung_after=HUNG)
    b = Node(pb, T0)
    b.state = mk(Role.STANDBY, pb, peer=peer(Role.ACTIVE, ago=0.0, priority=100))
    now = T0

    def answer(out: list[Action]) -> None:
        for action in out:
            if isinstance(action, ProbeTargets):
                answer(b.feed(TargetsProbed(down=0), now))
            elif isinstance(action, ProbeVipGuard):
                answer(b.feed(VipGuardResult(True, round=action.round), now))
            elif isinstance(action, Fence):
                answer(b.feed(FenceResult(ok=False, detail="BMC unreachable"), now))

    for _ in range(60):
        now = round(now + pb.interval, 6)
        answer(b.feed(Tick(), now))
    assert [x for x in b.actions if isinstance(x, Fence)]
    assert "fencing failed" in b.state.condition
    assert b.role is Role.STANDBY
    assert not any(isinstance(x, AcquireResources) for x in b.actions)
