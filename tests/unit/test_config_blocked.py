"""A configuration error (OCF_ERR_CONFIGURED) is fatal for the pair: the node where it happened
and its peer (told by the heartbeat's blocked bit) take nothing over for it until
`takeover cleanup`; a lost peer is another reason. The machine's edges, a two-node scenario,
the wire bit, and the resource list's cleanup."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from takeover import control
from takeover.machine import (
    BLOCKED,
    AcquireFailed,
    AcquireResources,
    Event,
    HeartbeatSeen,
    ProbeTargets,
    ResourceBlocked,
    Role,
    State,
    Tick,
    blocked_by_config,
    step,
)
from takeover.resources import ResourceList
from takeover.status import render
from takeover.testing import FakeResources
from takeover.wire import Heartbeat, Receiver, encode
from tests.unit.test_daemon import DIGEST, KEY, Rig, run
from tests.unit.test_machine import PA, PB, T0, Node, Pair, complete, hb, mk, peer

# (id, state, event, seconds after T0, expected role, whether the condition says blocked)
ROWS: list[tuple[str, State, Event, float, Role, bool]] = [
    (
        "standby_stays_when_blocked_peer_faults",
        mk(Role.STANDBY, peer=peer(Role.FAULT, blocked=True)),
        Tick(),
        0.0,
        Role.STANDBY,
        True,
    ),
    (
        "standby_stays_when_blocked_peer_asks_for_failover",
        mk(Role.STANDBY, peer=peer(Role.STANDBY, hold_standby=True, blocked=True)),
        Tick(),
        0.0,
        Role.STANDBY,
        True,
    ),
    (
        "standby_stays_when_the_blocked_peer_is_heard_faulted",
        mk(Role.STANDBY, peer=peer(Role.ACTIVE)),
        hb(Role.FAULT, blocked=True),
        0.0,
        Role.STANDBY,
        True,
    ),
    (
        "standby_blocked_here_does_not_arbitrate_a_lost_peer",
        mk(Role.STANDBY, peer=peer(Role.ACTIVE, ago=5.0), blocked="web"),
        Tick(),
        0.0,
        Role.STANDBY,
        True,
    ),
    (
        "standby_arbitrates_when_the_blocked_peer_is_lost",
        mk(Role.STANDBY, peer=peer(Role.FAULT, ago=5.0, blocked=True)),
        Tick(),
        0.0,
        Role.ARBITRATING,
        False,
    ),
    (
        "standby_blocked_here_is_not_elected",
        mk(Role.STANDBY, peer=peer(Role.STANDBY), blocked="web"),
        Tick(),
        0.0,
        Role.STANDBY,
        True,
    ),
    (
        "starting_election_won_goes_standby_when_the_peer_is_blocked",
        mk(Role.STARTING, peer=peer(Role.STANDBY, blocked=True)),
        Tick(),
        0.0,
        Role.STANDBY,
        True,
    ),
    (
        "standby_takes_over_from_a_faulted_peer_once_cleared",
        mk(Role.STANDBY, peer=peer(Role.FAULT), condition=f"{BLOCKED} (x)"),
        Tick(),
        0.0,
        Role.ACTIVE,
        False,
    ),
    (
        "standby_is_elected_again_once_cleaned_up_here",
        mk(Role.STANDBY, peer=peer(Role.STANDBY), blocked="web"),
        ResourceBlocked(""),
        0.0,
        Role.ACTIVE,
        False,
    ),
]


@pytest.mark.parametrize(
    ("state", "event", "dt", "expected", "says_blocked"),
    [pytest.param(*row[1:], id=row[0]) for row in ROWS],
)
def test_configuration_error_edge(
    state: State, event: Event, dt: float, expected: Role, says_blocked: bool
) -> None:
    """Each row: a configuration error here or on a live peer keeps this node from taking over."""
    new, out = step(state, event, T0 + dt)
    assert new.role is expected
    assert new.condition.startswith(BLOCKED) is says_blocked
    if says_blocked:
        assert not any(isinstance(a, AcquireResources | ProbeTargets) for a in out)
        assert "takeover cleanup" in new.condition


def test_blocked_condition_names_the_resource_here_and_the_node_on_the_peer() -> None:
    """Here the condition names the resource and its cleanup command; on the peer, the node."""
    here = blocked_by_config(mk(Role.STANDBY, blocked="web"), T0)
    there = blocked_by_config(mk(Role.STANDBY, peer=peer(Role.FAULT, blocked=True)), T0)
    assert here == f"{BLOCKED} (resource web) — fix and run `takeover cleanup web` to clear"
    assert there is not None and there.startswith(BLOCKED) and "on beta" in there


class BlockingNode(Node):
    """A node whose acquire fails on a configuration error until it is cleaned up."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.broken = True
        self.acquires = 0

    def feed(self, ev: Event, now: float) -> list[Any]:
        out = super().feed(ev, now)
        if any(isinstance(a, AcquireResources) for a in out):
            self.acquires += 1
            if self.broken:
                # As the daemon does: the blocked resource is told before the failure.
                out = [a for a in out if not isinstance(a, AcquireResources)]
                out += self.feed(ResourceBlocked("web"), now)
                more = self.feed(AcquireFailed("resource web: blocked"), now)
                complete(self, more, now)
                out += more
        return out

    def heartbeat(self) -> HeartbeatSeen:
        return replace(super().heartbeat(), blocked=bool(self.state.blocked))


def test_scenario_configuration_error_is_not_retried_on_the_peer() -> None:
    """The active's acquire fails on a configuration error: the peer never acquires; both say
    blocked; once cleaned up the pair serves again."""
    pair = Pair(PA, PB)
    pair.a = BlockingNode(PA, T0)
    pair.b = BlockingNode(PB, T0)
    pair.b.broken = False
    pair.run(30.0)
    assert pair.a.acquires == 1
    assert pair.b.acquires == 0
    assert pair.a.role is Role.STANDBY and pair.b.role is Role.STANDBY
    assert "resource web" in pair.a.state.condition
    assert pair.b.state.condition.startswith(BLOCKED)
    pair.a.broken = False
    pair.a.feed(ResourceBlocked(""), pair.now)
    pair.run(3.0)
    assert Role.ACTIVE in (pair.a.role, pair.b.role)
    assert not pair.a.state.condition and not pair.b.state.condition


def test_wire_carries_the_blocked_bit_as_bit_5() -> None:
    """The flag is bit 5 of the flags byte (older receivers ignore it) and round-trips."""
    key = b"k" * 32
    beat = Heartbeat(
        "beta", b"b" * 16, 1, Role.FAULT, 1, 0, 1, b"d" * 8, healthy=False, blocked=True
    )
    data = encode(beat, key)
    assert data[5] == 0x20
    got = Receiver(key, ("alpha", "beta"), own="alpha").receive(data)
    assert got == beat


class FakeService:
    """A service resource as ResourceList sees it (takeover.backends.services.ServiceItem)."""

    def __init__(self, name: str, blocked: str = "") -> None:
        self.name = f"resource {name}"
        self.resource = name
        self.blocked = blocked
        self.cleaned = 0

    def cleanup(self) -> None:
        self.blocked = ""
        self.cleaned += 1


def test_resource_list_names_the_blocked_resource_and_cleans_up_by_name() -> None:
    """The first blocked resource is named; cleanup clears one by name, or all; an unknown
    name is refused with the known ones."""
    fs, web = FakeService("fs"), FakeService("web", "start: OCF_ERR_CONFIGURED")
    group = ResourceList([fs, web])  # type: ignore[list-item]
    assert group.blocked_resource() == "web"
    with pytest.raises(KeyError, match="known: fs, web"):
        group.cleanup("db")
    assert group.cleanup("fs") == []
    assert group.blocked_resource() == "web"
    assert group.cleanup(None) == ["web"]
    assert group.blocked_resource() == ""
    assert (fs.cleaned, web.cleaned) == (2, 1)


@dataclass
class BlockingResources(FakeResources):
    """Fake resources whose acquire fails on a configuration error of "web" until cleaned up."""

    blocked: str = ""
    fixed: bool = False

    async def acquire(self) -> None:
        """Record; block "web" and raise while not fixed."""
        self.calls.append("acquire")
        if not self.fixed:
            self.blocked = "web"
            raise RuntimeError("resource web: start: OCF_ERR_CONFIGURED (exit 6)")
        self.held = True

    def blocked_resource(self) -> str:
        """Return the blocked resource's name, or ""."""
        return self.blocked

    def cleanup(self, name: str | None) -> list[str]:
        """Clear the block (as ResourceList.cleanup)."""
        was, self.blocked = self.blocked, ""
        return [was] if was else []


def test_daemon_advertises_the_block_shows_it_and_cleanup_clears_it(tmp_path: Path) -> None:
    """A configuration error sets the heartbeat's blocked bit before FAULT is advertised, no
    retry follows after fault_hold, status names the resource, and cleanup lets it acquire."""

    async def body(rig: Rig) -> None:
        rig.daemon.fx.resources = res = BlockingResources()
        await rig.advance(1.2)
        assert rig.daemon.state.role is Role.FAULT
        assert rig.daemon.heartbeat().blocked
        await rig.advance(12.0)
        assert rig.daemon.state.role is Role.STANDBY
        assert res.calls == ["acquire", "release"]
        path = control.socket_path(rig.cfg.run_dir)
        doc = (await asyncio.to_thread(control.call, path, {"cmd": "status"}))["status"]
        assert doc["local"]["blocked"] == "web"
        assert any("resource web" in c for c in doc["conditions"])
        assert "takeover cleanup web" in render(doc, doc["written"])
        res.fixed = True
        reply = await asyncio.to_thread(control.call, path, {"cmd": "cleanup", "resource": "web"})
        assert reply["ok"]
        await rig.advance(2.0)
        assert rig.daemon.state.role is Role.ACTIVE
        assert not rig.daemon.heartbeat().blocked
        assert res.calls[-1] == "acquire"

    run(tmp_path, body)


def test_cleanup_where_nothing_is_blocked_points_at_the_blocked_peer(tmp_path: Path) -> None:
    """On the node whose peer is blocked, cleanup refuses and names the node to run it on."""

    async def body(rig: Rig) -> None:
        rig.daemon.fx.resources = BlockingResources(fixed=True)
        for seq in range(2, 10):
            beat = Heartbeat("beta", b"B" * 16, seq, Role.FAULT, 50, 0, 0, DIGEST, blocked=True)
            rig.links.inject("lan", encode(beat, KEY))
            await rig.advance(0.2)
        assert rig.daemon.state.role is Role.STANDBY
        assert rig.daemon.state.condition.startswith(BLOCKED)
        path = control.socket_path(rig.cfg.run_dir)
        with pytest.raises(control.ControlError, match="run takeover cleanup on beta"):
            await asyncio.to_thread(control.call, path, {"cmd": "cleanup"})

    run(tmp_path, body)
