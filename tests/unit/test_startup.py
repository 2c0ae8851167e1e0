"""The start-up decision (takeover.startup) as a table, and its wiring in the daemon."""

from __future__ import annotations

import asyncio
import ipaddress
from pathlib import Path
from typing import Any

import pytest

from takeover import machine as m
from takeover.addresses import mute_script, unmute_script
from takeover.daemon import Daemon, Effects
from takeover.machine import Role
from takeover.resources import FoundHeld, ResourceList, VmItem
from takeover.startup import Decision, Held, PeerAdvert, Verdict, decide
from takeover.testing import FakeGuard, FakeProber, FakeStartup, drive
from tests.unit.test_daemon import LINKS, Rig
from tests.unit.test_vm_wiring import FakeVm

K, R, D = Verdict.KEEP, Verdict.RELEASE, Verdict.DESTROY
VIP = "192.0.2.100/24"
BOTH = Held(vips=(VIP,), guests=("vm mx1",))

# (name, held, peer, listened, answered, lan_up, vip verdict, guest verdict, role)
DECISIONS = [
    (
        "peer_standby_keeps",
        BOTH,
        PeerAdvert(Role.STANDBY, False),
        False,
        None,
        True,
        K,
        K,
        Role.ACTIVE,
    ),
    (
        "peer_starting_clean_keeps",
        BOTH,
        PeerAdvert(Role.STARTING, False),
        False,
        None,
        True,
        K,
        K,
        Role.ACTIVE,
    ),
    (
        "peer_isolated_keeps",
        BOTH,
        PeerAdvert(Role.ISOLATED, False),
        True,
        True,
        False,
        K,
        K,
        Role.ACTIVE,
    ),
    (
        "peer_active_destroys",
        BOTH,
        PeerAdvert(Role.ACTIVE, False),
        False,
        None,
        True,
        R,
        D,
        Role.STANDBY,
    ),
    (
        "peer_releasing_destroys",
        BOTH,
        PeerAdvert(Role.RELEASING, True),
        True,
        False,
        True,
        R,
        D,
        Role.STARTING,
    ),
    (
        "both_starting_we_win_keep",
        BOTH,
        PeerAdvert(Role.STARTING, True, we_win=True),
        False,
        None,
        True,
        K,
        K,
        Role.ACTIVE,
    ),
    (
        "both_starting_we_lose_destroy",
        BOTH,
        PeerAdvert(Role.STARTING, True),
        False,
        None,
        True,
        R,
        D,
        Role.STARTING,
    ),
    ("silent_unanswered_keeps", BOTH, None, True, False, True, K, K, Role.ACTIVE),
    ("silent_answered_releases", BOTH, None, True, True, True, R, R, Role.STARTING),
    ("silent_lan_down_releases", BOTH, None, True, None, False, R, R, Role.STARTING),
]


@pytest.mark.parametrize("row", [pytest.param(r[1:], id=r[0]) for r in DECISIONS])
def test_decision_table(row: tuple[Any, ...]) -> None:
    """Each row of the start-up table gives its verdict per resource and its role."""
    held, peer, listened, answered, lan_up, vip, guest, role = row
    d = decide(held, peer, listened=listened, answered=answered, lan_up=lan_up)
    assert d is not None
    assert (d.vips, d.guests, d.role) == ({VIP: vip}, {"vm mx1": guest}, role)
    assert d.keeps is (vip is K)


@pytest.mark.parametrize(
    ("listened", "answered", "lan_up"),
    [(False, False, True), (False, None, False), (True, None, True)],
)
def test_silent_peer_waits_for_the_window_and_the_guard(
    listened: bool, answered: bool | None, lan_up: bool
) -> None:
    """With the peer silent, nothing is decided before one deadtime and the guard's answer."""
    assert decide(BOTH, None, listened=listened, answered=answered, lan_up=lan_up) is None


def test_nothing_held_needs_no_decision() -> None:
    """A node holding nothing goes on with the usual start-up, at once."""
    d = decide(Held(), None, listened=False, answered=None)
    assert d == Decision(Role.STARTING, "nothing held")


def test_guests_alone_are_kept_when_nobody_answers() -> None:
    """A guest without held VIPs is kept when the peer is silent and no VIP is answered."""
    d = decide(Held(guests=("vm mx1",)), None, listened=True, answered=False)
    assert d is not None and d.guests == {"vm mx1": K} and d.role is Role.ACTIVE


# -- the machine while deciding --------------------------------------------------------------


MP = m.MachineParams(
    node="alpha", peer="beta", priority=100, interval=0.2, deadtime=0.6, initdead=0.8
)


def deciding() -> m.State:
    """A STARTING state (started at 0, epoch 2) that found something held."""
    return m.initial_state(MP, 0.0, epoch=2, deciding=True)


@pytest.mark.parametrize(
    "event",
    [
        m.HeartbeatSeen(m.Role.ACTIVE, 1, 50, 0, "b1", holding=True),
        m.HeartbeatSeen(m.Role.STANDBY, 1, 50, 0, "b1"),
        m.Tick(),
        m.VipGuardResult(False, "", None),
    ],
    ids=["active_peer", "standby_peer", "tick_past_initdead", "guard"],
)
def test_deciding_machine_does_nothing_until_told(event: m.Event) -> None:
    """While deciding, no heartbeat, timer or probe moves the machine or acts."""
    s, actions = m.step(deciding(), event, 10.0)
    assert s.role is Role.STARTING and s.deciding and actions == []


@pytest.mark.parametrize(
    ("role", "clean", "expected", "actions"),
    [
        (Role.ACTIVE, False, Role.ACTIVE, [m.Notify, m.PersistEpoch, m.AcquireResources]),
        (Role.STANDBY, True, Role.STANDBY, [m.Notify]),
        (Role.STANDBY, False, Role.STANDBY, [m.Notify, m.ReleaseResources]),
        (Role.STARTING, True, Role.STARTING, []),
    ],
    ids=["keep_takes_over", "released_standby", "left_held_released", "election_follows"],
)
def test_startup_decided_edges(
    role: Role, clean: bool, expected: Role, actions: list[type]
) -> None:
    """StartupDecided ends the deciding: ACTIVE re-acquires, STANDBY releases what is left."""
    s, out = m.step(deciding(), m.StartupDecided(role, "why", clean), 1.0)
    assert s.role is expected and not s.deciding and s.clean is (clean and role is not Role.ACTIVE)
    assert [type(a) for a in out] == actions


# -- the daemon ------------------------------------------------------------------------------


class StartupRig(Rig):
    """A daemon on fakes that found the VIP (and a guest) held at start-up."""

    def __init__(self, tmp: Path, answer: str | None = None, fail: str = "") -> None:
        super().__init__(tmp, stale=True)
        self.startup = FakeStartup(BOTH, self.resources, fail_settle=fail)
        self.guard = FakeGuard(answer)
        factory = self.network.links("alpha", "beta", LINKS, clock=self.clock)
        fx = Effects(
            factory,
            self.resources,
            self.prober,
            self.guard,
            None,
            self.notifier,
            startup=self.startup,
        )
        self.daemon = Daemon(self.cfg, fx, clock=self.clock, wall=lambda: 1.7e9 + self.clock())
        self.links = self.network.nodes["alpha"]


def run_startup(tmp: Path, body: Any, **kw: Any) -> StartupRig:
    """Start a StartupRig, run `body`, close the daemon whatever happens."""
    rig = StartupRig(tmp, **kw)
    drive(rig.daemon, lambda: body(rig))
    return rig


def test_restart_on_the_active_with_a_standby_peer_keeps_everything(tmp_path: Path) -> None:
    """Heard standby and clean: muted first, kept, then ACTIVE re-acquires (adopts), no release."""

    async def body(rig: StartupRig) -> None:
        assert rig.daemon.state.deciding and rig.daemon.heartbeat().holding
        assert rig.startup.calls == ["mute"]
        rig.links.inject("lan", rig.peer_heartbeat(Role.STANDBY, epoch=3))
        await rig.advance(0.1)
        assert rig.daemon.state.role is Role.ACTIVE
        assert rig.startup.decisions[0].vips == {VIP: K}
        assert rig.resources.calls == ["acquire"]
        assert rig.daemon.state.epoch == 4

    run_startup(tmp_path, body)


def test_active_peer_heard_releases_and_destroys_then_standby(tmp_path: Path) -> None:
    """Heard active: the VIP is released and the guest destroyed before STANDBY; no acquire."""

    async def body(rig: StartupRig) -> None:
        rig.links.inject("lan", rig.peer_heartbeat(Role.ACTIVE, epoch=4))
        await rig.advance(0.1)
        assert rig.daemon.state.role is Role.STANDBY
        d = rig.startup.decisions[0]
        assert (d.vips, d.guests) == ({VIP: R}, {"vm mx1": D})
        assert rig.resources.calls == [] and not rig.daemon.heartbeat().holding

    run_startup(tmp_path, body)


def test_nothing_moves_before_the_decision_while_the_peer_is_silent(tmp_path: Path) -> None:
    """Peer silent: no decision before one deadtime; then, nobody answering, the node keeps."""

    async def body(rig: StartupRig) -> None:
        await rig.advance(0.4)
        assert rig.daemon.state.role is Role.STARTING and rig.startup.decisions == []
        await rig.advance(0.3)
        assert rig.daemon.state.role is Role.ACTIVE
        assert rig.guard.calls == 1 and rig.resources.calls == ["acquire"]

    run_startup(tmp_path, body)


def test_silent_peer_but_answered_vip_releases_and_backs_off(tmp_path: Path) -> None:
    """Peer silent but another MAC answers: everything is let go and the node does not serve."""

    async def body(rig: StartupRig) -> None:
        await rig.advance(2.0)
        d = rig.startup.decisions[0]
        assert (d.vips, d.guests) == ({VIP: R}, {"vm mx1": R})
        assert rig.daemon.state.role is Role.STANDBY
        assert "acquire" not in rig.resources.calls

    run_startup(tmp_path, body, answer="02:00:00:00:00:0b")


def test_a_failed_settle_leaves_the_release_to_the_machine(tmp_path: Path) -> None:
    """When carrying out a release fails, the machine releases again on its way to STANDBY."""

    async def body(rig: StartupRig) -> None:
        rig.links.inject("lan", rig.peer_heartbeat(Role.ACTIVE, epoch=4))
        await rig.advance(0.1)
        assert rig.daemon.state.role is Role.STANDBY
        assert rig.resources.calls == ["release"]

    run_startup(tmp_path, body, fail="libvirt gone")


# -- FoundHeld on a fake guest ---------------------------------------------------------------


def guest_daemon(tmp_path: Path, guest: FakeVm) -> tuple[StartupRig, FoundHeld]:
    """A daemon whose resources are one guest, found through FoundHeld (no VIPs, no mute)."""
    rig = StartupRig(tmp_path)
    item = VmItem("vm mx1", guest)
    found = FoundHeld([], [item], None)
    asyncio.run(found.clear_stale())
    fx = Effects(
        rig.network.links("alpha", "beta", LINKS, clock=rig.clock),
        ResourceList([item]),
        FakeProber(),
        rig.guard,
        None,
        rig.notifier,
        startup=found,
    )
    rig.daemon = Daemon(rig.cfg, fx, clock=rig.clock, wall=lambda: 1.7e9 + rig.clock())
    rig.links = rig.network.nodes["alpha"]
    return rig, found


async def hear(rig: StartupRig, role: Role) -> None:
    """Deliver one heartbeat from the peer in `role`, then let the guest's threads finish."""
    rig.links.inject("lan", rig.peer_heartbeat(role, epoch=2))
    await rig.advance(0.1)
    for _ in range(20):
        await asyncio.sleep(0.01)
        rig.daemon.pump()


def test_a_running_guest_survives_a_restart_with_the_peer_standby(tmp_path: Path) -> None:
    """A guest running on the active is adopted, never destroyed, when the peer is standby."""
    guest = FakeVm(running=True)
    rig, found = guest_daemon(tmp_path, guest)
    assert found.held() == Held(guests=("vm mx1",))

    async def body() -> None:
        await hear(rig, Role.STANDBY)
        assert rig.daemon.state.role is Role.ACTIVE

    drive(rig.daemon, body)
    assert guest.running
    assert not any(c.startswith("reconcile") or c == "release" for c in guest.calls), guest.calls
    assert "acquire" in guest.calls


def test_a_running_guest_is_destroyed_when_the_peer_is_heard_holding_it(tmp_path: Path) -> None:
    """A guest running here while the peer is heard active is destroyed (the peer runs it)."""
    guest = FakeVm(running=True, stale=["destroy", "undefine"])
    rig, _ = guest_daemon(tmp_path, guest)

    async def body() -> None:
        await hear(rig, Role.ACTIVE)
        assert rig.daemon.state.role is Role.STANDBY

    drive(rig.daemon, body)
    assert guest.calls == ["reconcile owner_elsewhere=True"] and not guest.running


def test_a_stale_definition_is_cleared_before_start(tmp_path: Path) -> None:
    """A guest defined but not running here is undefined before the daemon starts."""
    guest = FakeVm(running=False, stale=["undefine"])
    _, found = guest_daemon(tmp_path, guest)
    assert guest.calls == ["reconcile owner_elsewhere=True"]
    assert not found.held()


# -- the mute ----------------------------------------------------------------------------------


def test_mute_script_replaces_any_earlier_mute_and_covers_both_families() -> None:
    """The nft script first drops old mute tables, then mutes ARP for IPv4 and NAs for IPv6."""
    script = mute_script([ipaddress.ip_address("192.0.2.100"), ipaddress.ip_address("2001:db8::1")])
    assert script.startswith(unmute_script())
    assert "table arp takeover_mute {" in script
    assert "arp saddr ip { 192.0.2.100 } drop" in script
    assert (
        "icmpv6 type nd-neighbor-advert @th,64,128 0x20010db8000000000000000000000001 drop"
        in script
    )
    v4_only = mute_script([ipaddress.ip_address("192.0.2.100")])
    assert "table ip6 takeover_mute {" not in v4_only
