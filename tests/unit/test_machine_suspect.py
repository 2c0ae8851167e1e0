"""A suspected peer: a heartbeat-only interface lost carrier, so silence counts sooner."""

from __future__ import annotations

from dataclasses import replace

from takeover.machine import (
    PAST_DEADTIME,
    PEER_STILL_SERVING,
    AcquireResources,
    Action,
    Event,
    HeartbeatCarrier,
    HeartbeatSeen,
    MachineParams,
    ProbeTargets,
    ProbeVipGuard,
    Role,
    State,
    TargetsProbed,
    Tick,
    VipGuardResult,
    initial_state,
    next_deadline,
    step,
)

T0 = 1000.0
# deadtime = 3 intervals, as in the bench; suspected, the peer is lost after 2 intervals.
P = MachineParams(node="alpha", peer="beta", priority=100, interval=0.2, deadtime=0.6, initdead=2.0)
SHORT = 0.4


def standby() -> State:
    """Return a clean STANDBY that last heard its active peer at T0."""
    s = replace(initial_state(P, T0 - 60.0, epoch=1), role=Role.STANDBY, since=T0 - 10, clean=True)
    s, _ = step(s, HeartbeatSeen(role=Role.ACTIVE, epoch=1, priority=50, score=0, boot_id="b"), T0)
    return s


def run(s: State, events: list[tuple[float, Event]]) -> tuple[State, list[Action]]:
    """Step through (seconds after T0, event) pairs; return the state and every action."""
    out: list[Action] = []
    for dt, ev in events:
        s, actions = step(s, ev, T0 + dt)
        out += actions
    return s, out


def probes(actions: list[Action]) -> list[Action]:
    """Return the probe actions among `actions`."""
    return [a for a in actions if isinstance(a, ProbeTargets | ProbeVipGuard)]


def test_carrier_loss_starts_the_probes_at_once() -> None:
    """The direct cable dying with the peer silent starts the arbitration probes right then."""
    s, actions = run(standby(), [(0.05, HeartbeatCarrier(False))])
    assert s.suspected()
    assert {type(a) for a in probes(actions)} == {ProbeTargets, ProbeVipGuard}
    assert s.probing_since == T0 + 0.05


def test_crash_peer_lost_after_two_intervals_and_taken_over() -> None:
    """A crashed active (cable and beats gone) is taken over 2 intervals after its last beat."""
    s, actions = run(standby(), [(0.05, HeartbeatCarrier(False))])
    n = s.probe_round
    s, _ = run(s, [(0.1, TargetsProbed(0, n)), (0.3, VipGuardResult(False, round=n))])
    assert next_deadline(s, T0 + 0.3) == T0 + SHORT + PAST_DEADTIME
    s, _ = run(s, [(SHORT - 0.01, Tick())])
    assert s.role is Role.STANDBY
    s, actions = run(s, [(SHORT + PAST_DEADTIME, Tick())])
    assert s.role is Role.ACTIVE
    assert any(isinstance(a, AcquireResources) for a in actions)


def test_cable_cut_peer_alive_keeps_the_full_deadtime() -> None:
    """A heartbeat after the carrier loss ends the suspicion: deadtime again, no arbitration."""
    hb = HeartbeatSeen(role=Role.ACTIVE, epoch=1, priority=50, score=0, boot_id="b")
    s, _ = run(standby(), [(0.05, HeartbeatCarrier(False)), (0.2, hb)])
    assert not s.suspected()
    assert next_deadline(s, T0 + 0.2) == T0 + 0.2 + P.deadtime + PAST_DEADTIME
    s, actions = run(s, [(0.2 + SHORT + 0.05, Tick()), (0.2 + P.deadtime - 0.01, Tick())])
    assert s.role is Role.STANDBY
    assert probes(actions) == []
    assert s.peer_alive(T0 + 0.2 + P.deadtime - 0.01)


def test_suspected_peer_whose_vip_answers_is_backed_off_from() -> None:
    """The VIP guard still decides: a suspected peer whose VIP answers is not taken over."""
    s, _ = run(standby(), [(0.05, HeartbeatCarrier(False))])
    s, _ = run(s, [(0.1, TargetsProbed(0, s.probe_round))])
    s, _ = run(s, [(0.3, VipGuardResult(True, round=s.probe_round))])
    s, _ = run(s, [(SHORT + PAST_DEADTIME, Tick())])
    assert s.role is Role.ARBITRATING
    n = s.probe_round
    s, _ = run(s, [(0.5, TargetsProbed(0, n)), (0.6, VipGuardResult(True, round=n))])
    assert s.role is Role.STANDBY
    assert s.condition == PEER_STILL_SERVING


def test_carrier_back_ends_the_suspicion() -> None:
    """Carrier coming back before the shortened deadline restores the full deadtime."""
    s, _ = run(standby(), [(0.05, HeartbeatCarrier(False)), (0.1, HeartbeatCarrier(True))])
    assert not s.suspected()
    s, _ = run(s, [(SHORT + 0.05, Tick())])
    assert s.role is Role.STANDBY
    assert s.peer_alive(T0 + SHORT + 0.05)
    assert next_deadline(s, T0 + SHORT + 0.05) == T0 + P.deadtime + PAST_DEADTIME


def test_without_heartbeat_only_interface_deadtime_is_unchanged() -> None:
    """No HeartbeatCarrier ever (no such interface): the peer is lost at deadtime, not before."""
    s = standby()
    assert not s.suspected()
    assert s.dead_after() == P.deadtime
    s, actions = run(s, [(SHORT + 0.05, Tick())])
    assert s.role is Role.STANDBY and probes(actions) == []
    assert next_deadline(s, T0 + SHORT + 0.05) == T0 + P.deadtime + PAST_DEADTIME


def test_a_later_loss_does_not_move_the_first() -> None:
    """A second carrier-loss report keeps the first loss time: a beat heard between still counts."""
    hb = HeartbeatSeen(role=Role.ACTIVE, epoch=1, priority=50, score=0, boot_id="b")
    s, _ = run(standby(), [(0.05, HeartbeatCarrier(False)), (0.1, hb)])
    s, _ = run(s, [(0.15, HeartbeatCarrier(False))])
    assert s.hb_carrier_lost == T0 + 0.05
    assert not s.suspected()


def test_guard_answered_at_the_carrier_loss_is_probed_again_at_once() -> None:
    """A VIP answer caught at the carrier loss (a frame in flight) starts a new round at once."""
    s, _ = run(standby(), [(0.05, HeartbeatCarrier(False))])
    first = s.probe_round
    s, _ = run(s, [(0.06, TargetsProbed(0, first))])
    s, actions = run(s, [(0.07, VipGuardResult(True, round=first))])
    assert s.probe_round == first + 1
    assert {type(a) for a in probes(actions)} == {ProbeTargets, ProbeVipGuard}
    n = s.probe_round
    s, _ = run(s, [(0.08, TargetsProbed(0, n)), (0.2, VipGuardResult(False, round=n))])
    s, _ = run(s, [(SHORT + PAST_DEADTIME, Tick())])
    assert s.role is Role.ACTIVE
