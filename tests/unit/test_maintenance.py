"""Maintenance mode in the machine: every edge refused, the mode carried by heartbeats, and
what a node does when it ends; the wire bit; the persisted file."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from takeover.daemon import load_maintenance, store_maintenance
from takeover.machine import (
    MAINTENANCE,
    AcquireDone,
    AcquireResources,
    Event,
    HealthChanged,
    LinkState,
    MaintenanceSet,
    OperatorPromote,
    OperatorStandby,
    PersistEpoch,
    PersistMaintenance,
    ProbeResult,
    Refused,
    ReleaseResources,
    Role,
    State,
    Tick,
    initial_state,
    next_deadline,
    step,
)
from takeover.wire import Heartbeat, Receiver, encode
from tests.unit.test_machine import T0, P, hb, mk, peer


def maint(role: Role, **kw: Any) -> State:
    """Return a state in `role`, in maintenance mode."""
    return mk(role, maintenance=True, **kw)


# (id, state, event, seconds after T0): the edge each would take outside maintenance.
WOULD_MOVE: list[tuple[str, State, Event, float]] = [
    ("standby: peer lost, no arbitration", maint(Role.STANDBY, peer=peer(Role.ACTIVE)), Tick(), 5),
    ("standby: never heard", maint(Role.STANDBY), Tick(), 100),
    ("starting: initdead over, no election", maint(Role.STARTING), Tick(), 100),
    ("starting: peer active", maint(Role.STARTING), hb(Role.ACTIVE), 0),
    ("active: LAN down, no handover",
     maint(Role.ACTIVE, peer=peer(Role.STANDBY)), LinkState(False), 0),
    ("active: unhealthy, no demotion",
     maint(Role.ACTIVE, peer=peer(Role.STANDBY)), HealthChanged(False), 0),
    ("active: score worse, no switchover",
     maint(Role.ACTIVE, peer=peer(Role.STANDBY)), ProbeResult(5), 10),
    ("active: peer lost", maint(Role.ACTIVE, peer=peer(Role.STANDBY)), Tick(), 5),
    ("active: both active", maint(Role.ACTIVE), hb(Role.ACTIVE, epoch=9, maintenance=True), 0),
    ("fault: no retry", maint(Role.FAULT, since=T0 - 100), Tick(), 0),
    ("isolated: score back", maint(Role.ISOLATED, score=5), ProbeResult(0), 0),
]  # fmt: skip


@pytest.mark.parametrize(
    "state, event, dt", [w[1:] for w in WOULD_MOVE], ids=[w[0] for w in WOULD_MOVE]
)
def test_no_edge_and_no_effect_in_maintenance(state: State, event: Event, dt: float) -> None:
    """In maintenance nothing moves: no transition, no acquire, release, probe or fence."""
    new, actions = step(state, event, T0 + dt)
    assert new.role is state.role
    # Facts are still recorded: a higher epoch heard is persisted, nothing else happens.
    assert [a for a in actions if not isinstance(a, PersistEpoch)] == []
    assert new.maintenance and new.condition == MAINTENANCE


def test_the_same_events_do_move_outside_maintenance() -> None:
    """The table above is no table of no-ops: outside maintenance each of them acts."""
    for _, state, event, dt in WOULD_MOVE:
        if isinstance(event, HealthChanged | ProbeResult | LinkState) or state.role in {
            Role.STARTING,
            Role.ACTIVE,
        }:
            continue
        new, actions = step(replace(state, maintenance=False), event, T0 + dt)
        assert new.role is not state.role or actions, state.role


@pytest.mark.parametrize(
    "event", [OperatorStandby(), OperatorStandby(force=True), OperatorPromote()]
)
def test_operator_moves_refused_in_maintenance(event: Event) -> None:
    """standby and promote are refused while the pair is in maintenance mode."""
    new, actions = step(maint(Role.ACTIVE, peer=peer(Role.STANDBY)), event, T0)
    assert new.role is Role.ACTIVE
    assert [type(a) for a in actions] == [Refused]


def test_maintenance_on_is_persisted_and_freezes_the_active() -> None:
    """Turning maintenance on persists it; the active stays active holding everything."""
    new, actions = step(mk(Role.ACTIVE, peer=peer(Role.STANDBY)), MaintenanceSet(True), T0)
    assert new.maintenance and new.role is Role.ACTIVE and new.acquired
    assert actions == [PersistMaintenance(True)]
    assert next_deadline(new) is None


@pytest.mark.parametrize("role", [Role.ARBITRATING, Role.FENCING, Role.RELEASING])
def test_maintenance_on_refused_during_a_move(role: Role) -> None:
    """A move under way finishes first: maintenance on is refused, nothing persisted."""
    new, actions = step(mk(role, peer=peer(Role.STANDBY)), MaintenanceSet(True), T0)
    assert not new.maintenance
    assert [type(a) for a in actions] == [Refused]


def test_maintenance_on_refused_while_the_peer_moves() -> None:
    """A peer heard releasing is a move under way too."""
    new, actions = step(mk(Role.STANDBY, peer=peer(Role.RELEASING)), MaintenanceSet(True), T0)
    assert not new.maintenance and [type(a) for a in actions] == [Refused]


def test_peer_turning_maintenance_on_and_off_is_followed() -> None:
    """The mode is the pair's: a change the peer announces is taken over, both ways."""
    s = mk(Role.STANDBY, peer=peer(Role.ACTIVE))
    s, actions = step(s, hb(Role.ACTIVE, maintenance=True), T0)
    assert s.maintenance and actions == [PersistMaintenance(True)]
    s, actions = step(s, hb(Role.ACTIVE, maintenance=True), T0 + 0.2)
    assert s.maintenance and actions == []
    s, actions = step(s, hb(Role.ACTIVE), T0 + 0.4)
    assert not s.maintenance and actions == [PersistMaintenance(False)]


def test_own_off_is_not_undone_by_a_peer_that_has_not_heard_it_yet() -> None:
    """Only a change of the peer's flag counts: its stale "on" does not bring us back."""
    s = maint(Role.ACTIVE, peer=peer(Role.STANDBY, maintenance=True))
    s, _ = step(s, MaintenanceSet(False), T0)
    s, actions = step(s, hb(Role.STANDBY, maintenance=True), T0 + 0.2)
    assert not s.maintenance and actions == []


def test_a_peer_first_heard_in_maintenance_brings_this_node_in() -> None:
    """A node started after maintenance began (peer never heard) joins it."""
    s = initial_state(P, T0, epoch=1)
    s, actions = step(s, hb(Role.ACTIVE, maintenance=True), T0 + 0.1)
    assert s.maintenance and s.role is Role.STARTING
    assert actions == [PersistMaintenance(True)]


def test_restarted_in_maintenance_holding_stays_deciding_until_off() -> None:
    """A daemon restarted in maintenance with something held decides nothing until off."""
    s = initial_state(P, T0, epoch=1, clean=False, deciding=True, maintenance=True)
    assert s.condition == MAINTENANCE
    s, actions = step(s, hb(Role.STARTING, maintenance=True), T0 + 100)
    assert s.role is Role.STARTING and s.deciding and actions == []
    s, actions = step(s, MaintenanceSet(False), T0 + 101)
    # Off: the daemon now looks at what is held and decides (StartupDecided).
    assert s.deciding and not s.maintenance and actions == [PersistMaintenance(False)]


def test_off_on_the_active_rechecks_what_it_holds_without_a_move() -> None:
    """Off: the active stays active and acquires idempotently (what is held stays)."""
    s = maint(Role.ACTIVE, peer=peer(Role.STANDBY), handover_since=T0 - 50)
    s, actions = step(s, MaintenanceSet(False), T0)
    assert s.role is Role.ACTIVE and s.handover_since is None
    assert [type(a) for a in actions] == [AcquireResources, PersistMaintenance]
    s, actions = step(s, AcquireDone(), T0 + 0.1)
    assert s.role is Role.ACTIVE and s.acquired and actions == []


def test_off_on_a_standby_holding_something_releases_it() -> None:
    """Off: a passive node that holds something lets it go (the active serves)."""
    s = maint(Role.STANDBY, peer=peer(Role.ACTIVE), clean=False)
    s, actions = step(s, MaintenanceSet(False), T0)
    assert s.role is Role.STANDBY
    assert [type(a) for a in actions] == [ReleaseResources, PersistMaintenance]


def test_off_outside_maintenance_changes_nothing() -> None:
    """An "off" when the mode is off does not re-acquire anything."""
    s = mk(Role.ACTIVE, peer=peer(Role.STANDBY))
    assert step(s, MaintenanceSet(False), T0) == (s, [])


def test_wire_carries_the_maintenance_bit() -> None:
    """The flag round-trips; a heartbeat without it decodes as not in maintenance."""
    key = b"k" * 32
    for on in (True, False):
        beat = Heartbeat("beta", b"b" * 16, 7, Role.ACTIVE, 1, 0, 1, b"d" * 8, maintenance=on)
        got = Receiver(key, ("alpha", "beta"), own="alpha").receive(encode(beat, key))
        assert isinstance(got, Heartbeat) and got.maintenance is on


def test_maintenance_file_round_trip(tmp_path: Path) -> None:
    """The mode survives a restart through the state directory; off removes the file."""
    assert not load_maintenance(tmp_path)
    store_maintenance(tmp_path / "sub", True)
    assert load_maintenance(tmp_path / "sub")
    store_maintenance(tmp_path / "sub", False)
    assert not load_maintenance(tmp_path / "sub")
