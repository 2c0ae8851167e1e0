"""The daemon wiring: machine actions reach the effects, events come back, status and control."""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from takeover import control
from takeover.daemon import Daemon, DaemonConfig, Effects, load_epoch, store_epoch
from takeover.machine import PEER_STILL_SERVING, HeartbeatCarrier, MachineParams, Role, Tick
from takeover.status import read_status, render, status_path
from takeover.testing import (
    FakeClock,
    FakeGuard,
    FakeNetwork,
    FakeProber,
    FakeResources,
    RecordingNotifier,
    drive,
)
from takeover.wire import Heartbeat, config_digest, decode, encode

KEY = b"0123456789abcdef0123456789abcdef"
DIGEST = config_digest(b"cluster")
LINKS = ("direct", "lan")


def params(node: str, peer: str, priority: int, interval: float = 0.2) -> MachineParams:
    """Return machine parameters for one side of a test pair."""
    return MachineParams(
        node=node,
        peer=peer,
        priority=priority,
        interval=interval,
        deadtime=3 * interval,
        initdead=4 * interval,
        recheck=5 * interval,
        inhibit_timeout=2.0,
    )


class Rig:
    """One daemon on fakes, driven by hand with a fake clock."""

    def __init__(
        self,
        tmp: Path,
        network: FakeNetwork | None = None,
        stale: bool = False,
        fx_extra: dict[str, object] | None = None,
        expected: tuple[str, ...] = (),
        **over: object,
    ) -> None:
        self.clock = FakeClock()
        self.network = network or FakeNetwork()
        p = params("alpha", "beta", 100)
        self.cfg = DaemonConfig(
            params=replace(p, **over),  # type: ignore[arg-type]
            cluster="mail",
            key=KEY,
            digest=DIGEST,
            run_dir=tmp / "run",
            state_dir=tmp / "state",
            expected_inhibitors=expected,
        )
        # stale: a killed predecessor left the VIP on the interface.
        self.resources = FakeResources(held=stale)
        self.prober = FakeProber()
        self.guard = FakeGuard()
        self.notifier = RecordingNotifier()
        factory = self.network.links("alpha", "beta", LINKS, clock=self.clock)
        fx = Effects(factory, self.resources, self.prober, self.guard, None, self.notifier,
                     **(fx_extra or {}))  # type: ignore[arg-type]  # fmt: skip
        self.daemon = Daemon(self.cfg, fx, clock=self.clock, wall=lambda: 1.7e9 + self.clock())
        self.links = self.network.nodes["alpha"]
        self.peer_seq = 1

    def peer_heartbeat(self, role: Role, epoch: int = 0, key: bytes = KEY) -> bytes:
        """Return a signed heartbeat from beta."""
        self.peer_seq += 1
        hb = Heartbeat("beta", b"B" * 16, self.peer_seq, role, 50, 0, epoch, DIGEST)
        return encode(hb, key)

    async def settle(self) -> None:
        """Let spawned effect tasks finish and feed their results back."""
        for _ in range(10):
            await asyncio.sleep(0)
            self.daemon.pump()

    async def advance(self, seconds: float, step: float = 0.1) -> None:
        """Move the fake clock in steps, pumping the daemon at each."""
        end = self.clock() + seconds
        while self.clock() < end - 1e-9:
            self.clock.advance(step)
            self.daemon.pump()
            await self.settle()


def run(
    tmp: Path, body: Callable[[Rig], Awaitable[None]], stale: bool = False, **over: object
) -> Rig:
    """Start a rig, run `body`, close the daemon whatever happens."""
    rig = Rig(tmp, stale=stale, **over)
    drive(rig.daemon, lambda: body(rig))
    return rig


def test_alone_after_initdead_takes_over_and_persists_epoch(tmp_path: Path) -> None:
    """With no peer heard, the daemon arbitrates, acquires, persists epoch 1 and says READY."""

    async def body(rig: Rig) -> None:
        await rig.advance(1.2)
        assert rig.daemon.state.role is Role.ACTIVE
        assert rig.resources.calls == ["acquire"]
        assert rig.guard.calls == 1
        assert await _pump_until(rig, lambda: load_epoch(rig.cfg.state_dir) == 1)
        assert "READY=1" in rig.notifier.messages
        doc = read_status(status_path(rig.cfg.run_dir))
        assert doc is not None and doc["local"]["role"] == "ACTIVE" and doc["epoch"] == 1
        assert [t["new"] for t in doc["transitions"]] == ["ARBITRATING", "ACTIVE"]

    run(tmp_path, body)


async def _pump_until(rig: Rig, cond: Callable[[], bool], limit: float = 10.0) -> bool:
    """Pump the daemon (real time passing, the fake clock not) until `cond` holds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + limit
    while not cond() and loop.time() < end:
        await asyncio.sleep(0.01)
        rig.daemon.pump()
    return cond()


class GatedStore:
    """An epoch store that waits in its thread until the test opens the gate (at most 2 s)."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.waited_out = False

    def __call__(self, state_dir: Path, epoch: int) -> None:
        if not self.gate.wait(2.0):
            self.waited_out = True
        store_epoch(state_dir, epoch)


def epochs_sent(rig: Rig) -> set[int]:
    """Return the epochs carried by every heartbeat the daemon sent."""
    got = (decode(data, KEY, {"alpha", "beta"}) for _, data in rig.links.sent)
    return {hb.epoch for hb in got if isinstance(hb, Heartbeat)}


def test_takeover_acquires_while_the_epoch_is_written_and_advertises_it_after(
    tmp_path: Path,
) -> None:
    """The VIPs are acquired while the new epoch is being stored; no heartbeat carries it before."""
    gated = GatedStore()

    async def body(rig: Rig) -> None:
        await rig.advance(1.2)
        assert rig.daemon.state.role is Role.ACTIVE and rig.daemon.state.epoch == 1
        assert rig.resources.calls == ["acquire"]
        assert 1 not in epochs_sent(rig)
        gated.gate.set()
        assert await _pump_until(rig, lambda: 1 in epochs_sent(rig))
        assert load_epoch(rig.cfg.state_dir) == 1
        assert not gated.waited_out

    rig = Rig(tmp_path, fx_extra={"epoch_store": gated})
    drive(rig.daemon, lambda: body(rig))


@dataclass
class ClaimingResources(FakeResources):
    """FakeResources that can claim the VIP at once, noting what systemd was told by then."""

    notifier: RecordingNotifier = field(default_factory=RecordingNotifier)
    told_at_claim: list[str] | None = None

    def claim_now(self) -> list[str]:
        """Record the claim and what the notifier had heard at that moment."""
        self.calls.append("claim")
        self.told_at_claim = list(self.notifier.messages)
        self.held = True
        return [f"vip {self.vip}"]


def test_takeover_claims_the_vip_before_telling_anyone(tmp_path: Path) -> None:
    """The VIP is claimed in the step that decides the takeover, before hooks, status or systemd
    hear of the transition; the acquire task follows."""

    async def body(rig: Rig) -> None:
        claiming = ClaimingResources(notifier=rig.notifier)
        rig.daemon.fx.resources = rig.resources = claiming
        await rig.advance(1.2)
        assert rig.daemon.state.role is Role.ACTIVE
        assert claiming.calls == ["claim", "acquire"]
        assert claiming.told_at_claim is not None
        assert not any("ACTIVE" in m for m in claiming.told_at_claim)
        assert any("ACTIVE" in m for m in rig.notifier.messages)

    run(tmp_path, body)


def test_heartbeats_sent_on_every_link_with_distinct_sequences(tmp_path: Path) -> None:
    """Each round sends one datagram per link, each with its own sequence number."""

    async def body(rig: Rig) -> None:
        await rig.advance(0.5)
        links = [link for link, _ in rig.links.sent]
        assert set(links) == set(LINKS)
        seqs = [int.from_bytes(d[26:34], "big") for _, d in rig.links.sent]
        assert len(set(seqs)) == len(seqs)

    run(tmp_path, body)


def test_active_peer_makes_starting_node_standby_and_reconcile(tmp_path: Path) -> None:
    """A heartbeat from an active peer sends the starting node to STANDBY, releasing leftovers."""

    async def body(rig: Rig) -> None:
        rig.links.inject("lan", rig.peer_heartbeat(Role.ACTIVE, epoch=4))
        await rig.advance(0.1)
        assert rig.daemon.state.role is Role.STANDBY
        assert rig.resources.calls == ["release"]
        assert await _pump_until(rig, lambda: load_epoch(rig.cfg.state_dir) == 4)
        doc = rig.daemon.status()
        assert doc["links"]["lan"]["up"] and not doc["links"]["direct"]["up"]
        assert doc["peer"]["role"] == "ACTIVE" and doc["vips"][0]["holder"] == "beta"

    run(tmp_path, body, stale=True)


def test_heartbeat_says_holding_until_stale_vip_released(tmp_path: Path) -> None:
    """A node that starts with a stale VIP advertises holding until its release is done."""

    async def body(rig: Rig) -> None:
        assert rig.daemon.heartbeat().holding
        rig.links.inject("lan", rig.peer_heartbeat(Role.ACTIVE))
        await rig.advance(0.1)
        assert not rig.daemon.heartbeat().holding

    run(tmp_path, body, stale=True)


def test_active_with_a_lost_peer_waits_for_a_future_wake(tmp_path: Path) -> None:
    """After taking over from a silent peer, the loop's next wake is ahead (it does not spin)."""

    async def body(rig: Rig) -> None:
        rig.links.inject("lan", rig.peer_heartbeat(Role.STANDBY))
        await rig.advance(0.1)
        await rig.advance(2.0)
        assert rig.daemon.state.role is Role.ACTIVE
        assert rig.daemon.next_wake() > rig.clock()

    run(tmp_path, body)


def test_forged_heartbeat_is_counted_and_ignored(tmp_path: Path) -> None:
    """A heartbeat signed with another key changes nothing and is counted as bad_mac."""

    async def body(rig: Rig) -> None:
        rig.links.inject("lan", rig.peer_heartbeat(Role.ACTIVE, key=b"x" * 32))
        data = rig.peer_heartbeat(Role.ACTIVE)
        rig.links.inject("lan", data)
        rig.links.inject("lan", data)
        await rig.advance(0.1)
        counters = rig.daemon.status()["heartbeat"]
        assert counters["bad_mac"] == 1
        assert counters["replay"] == 1
        assert counters["accepted"] == 1

    run(tmp_path, body)


def test_vip_answered_keeps_node_standby(tmp_path: Path) -> None:
    """When another MAC answers for the VIP, the lone node does not take over."""

    async def body(rig: Rig) -> None:
        rig.guard.answer = "02:00:00:00:00:0b"
        await rig.advance(1.2)
        assert rig.daemon.state.role is Role.STANDBY
        assert "acquire" not in rig.resources.calls
        assert rig.daemon.status()["local"]["condition"] == "heartbeat lost, peer still serving"

    run(tmp_path, body)


def test_acquire_failure_goes_to_fault_and_releases(tmp_path: Path) -> None:
    """A failing acquire ends in FAULT with a release to roll back."""

    async def body(rig: Rig) -> None:
        rig.resources.fail_acquire = "RTNETLINK answers: File exists"
        await rig.advance(1.2)
        assert rig.daemon.state.role is Role.FAULT
        assert rig.resources.calls == ["acquire", "release"]
        assert rig.daemon.state.clean

    run(tmp_path, body)


def test_loop_stall_reported_to_machine(tmp_path: Path) -> None:
    """A late loop iteration is fed to the machine as a stall, which delays the lost verdict."""

    async def body(rig: Rig) -> None:
        rig.links.inject("lan", rig.peer_heartbeat(Role.ACTIVE))
        await rig.advance(0.2)
        assert rig.daemon.state.role is Role.STANDBY
        rig.clock.advance(5.0)
        rig.daemon.pump()
        assert rig.daemon.state.last_stall == rig.clock()
        assert rig.daemon.state.role is Role.STANDBY
        rig.links.inject("lan", rig.peer_heartbeat(Role.ACTIVE))
        await rig.advance(0.3)
        assert rig.daemon.state.role is Role.STANDBY

    run(tmp_path, body)


def test_control_status_standby_refusal_and_promote(tmp_path: Path) -> None:
    """The control socket serves status, refuses a standby without a peer, accepts promote."""

    async def body(rig: Rig) -> None:
        await rig.advance(1.2)
        path = control.socket_path(rig.cfg.run_dir)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        reply = await asyncio.to_thread(control.call, path, {"cmd": "status"})
        assert reply["status"]["local"]["role"] == "ACTIVE"
        with pytest.raises(control.ControlError, match="cannot take over"):
            await asyncio.to_thread(control.call, path, {"cmd": "standby"})
        assert (await asyncio.to_thread(control.call, path, {"cmd": "promote"}))["ok"]

    run(tmp_path, body)


def test_subscriber_inhibitor_holds_releasing_until_released(tmp_path: Path) -> None:
    """A subscriber with an inhibitor keeps RELEASING from finishing until it releases."""

    async def body(rig: Rig) -> None:
        await rig.advance(1.2)
        path = control.socket_path(rig.cfg.run_dir)
        sub = await control.Subscription.open(path, inhibitor="mirrord")
        assert sub.first["role"] == "ACTIVE"
        events = sub.events()
        await asyncio.to_thread(control.call, path, {"cmd": "standby", "force": True})
        ev = await asyncio.wait_for(events.__anext__(), 5)
        assert (ev["old"], ev["new"]) == ("ACTIVE", "RELEASING")
        await rig.advance(0.5)
        assert rig.daemon.state.role is Role.RELEASING
        assert rig.daemon.status()["inhibitors"] == ["mirrord"]
        await sub.release("mirrord")
        for _ in range(50):
            await rig.advance(0.05)
            if rig.daemon.state.role is Role.STANDBY:
                break
        assert rig.daemon.state.role is Role.STANDBY
        sub.close()

    run(tmp_path, body)


async def release_until(rig: Rig, role: Role, seconds: float) -> None:
    """Advance the fake clock in small steps until the daemon is in `role` (or time is up)."""
    for _ in range(round(seconds / 0.05)):
        # A real moment for the control server's reader to take a release line in.
        await asyncio.sleep(0.01)
        await rig.advance(0.05, step=0.05)
        if rig.daemon.state.role is role:
            return


def test_expected_inhibitor_holds_releasing_until_a_late_subscriber_releases(
    tmp_path: Path,
) -> None:
    """With mirrord expected but not subscribed, a planned release waits; mirrord subscribing
    during RELEASING holds the inhibitor, learns RELEASING, and its release lets it finish."""

    async def body(rig: Rig) -> None:
        await rig.advance(1.2)
        assert rig.daemon.state.role is Role.ACTIVE
        path = control.socket_path(rig.cfg.run_dir)
        await asyncio.to_thread(control.call, path, {"cmd": "standby", "force": True})
        await rig.advance(1.0)
        assert rig.daemon.state.role is Role.RELEASING
        assert rig.daemon.status()["inhibitors_awaited"] == ["mirrord"]
        doc = rig.daemon.status()
        assert "mirrord (not subscribed yet)" in render(doc, doc["written"])
        sub = await control.Subscription.open(path, inhibitor="mirrord")
        assert sub.first["role"] == "RELEASING"
        assert rig.daemon.status()["inhibitors"] == ["mirrord"]
        await rig.advance(0.3)
        assert rig.daemon.state.role is Role.RELEASING
        await sub.release("mirrord")
        await release_until(rig, Role.STANDBY, 0.5)
        assert rig.daemon.state.role is Role.STANDBY
        assert rig.daemon.state.condition != "release inhibitors timed out"
        assert rig.daemon.status()["totals"]["inhibitor_timeouts"] == {}
        sub.close()

    drive((rig := Rig(tmp_path, expected=("mirrord",))).daemon, lambda: body(rig))


def test_expected_inhibitor_never_subscribing_times_out_counted(tmp_path: Path) -> None:
    """An expected inhibitor that never subscribes holds a planned release for inhibit_timeout,
    then the release goes on, counted and shown."""

    async def body(rig: Rig) -> None:
        await rig.advance(1.2)
        path = control.socket_path(rig.cfg.run_dir)
        await asyncio.to_thread(control.call, path, {"cmd": "standby", "force": True})
        await rig.advance(1.5)
        assert rig.daemon.state.role is Role.RELEASING
        await release_until(rig, Role.STANDBY, 2.0)
        assert rig.daemon.state.role is Role.STANDBY
        doc = rig.daemon.status()
        assert doc["totals"]["inhibitor_timeouts"] == {"mirrord": 1}
        assert doc["inhibitors_awaited"] == []
        assert "without an inhibitor: mirrord 1x" in render(doc, doc["written"])

    drive((rig := Rig(tmp_path, expected=("mirrord",))).daemon, lambda: body(rig))


def test_subscriber_closing_before_its_release_has_not_had_its_say(tmp_path: Path) -> None:
    """An expected subscriber whose connection closes mid-flush (mirrord killed) is waited
    for again: its restarted self subscribes, holds it, and releases."""

    async def body(rig: Rig) -> None:
        await rig.advance(1.2)
        path = control.socket_path(rig.cfg.run_dir)
        first = await control.Subscription.open(path, inhibitor="mirrord")
        await asyncio.to_thread(control.call, path, {"cmd": "standby", "force": True})
        await rig.advance(0.5)
        first.close()
        await rig.advance(0.5)
        assert rig.daemon.state.role is Role.RELEASING
        assert rig.daemon.status()["inhibitors_awaited"] == ["mirrord"]
        again = await control.Subscription.open(path, inhibitor="mirrord")
        assert again.first["role"] == "RELEASING"
        await again.release("mirrord")
        await release_until(rig, Role.STANDBY, 0.5)
        assert rig.daemon.state.role is Role.STANDBY
        assert rig.daemon.state.condition != "release inhibitors timed out"
        again.close()

    drive((rig := Rig(tmp_path, expected=("mirrord",))).daemon, lambda: body(rig))


def test_without_expected_inhibitors_a_release_waits_for_nobody(tmp_path: Path) -> None:
    """Without [mirror] nothing is expected: a planned release with no subscriber ends at once."""

    async def body(rig: Rig) -> None:
        await rig.advance(1.2)
        path = control.socket_path(rig.cfg.run_dir)
        await asyncio.to_thread(control.call, path, {"cmd": "standby", "force": True})
        await release_until(rig, Role.STANDBY, 0.5)
        assert rig.daemon.state.role is Role.STANDBY
        assert rig.daemon.state.condition != "release inhibitors timed out"

    run(tmp_path, body)


async def stop(rig: Rig, turns: int, step: float, wake: bool = False) -> None:
    """Request a stop and run the loop until it exits, moving the fake clock `step` per turn.

    The loop's own iterations drive the release; with `wake`, a Tick per turn wakes it as its
    real timers would, so it checks the stop deadline each turn.
    """
    rig.daemon.request_stop()
    loop_task = asyncio.ensure_future(rig.daemon._loop())
    for _ in range(turns):
        if loop_task.done():
            break
        rig.clock.advance(step)
        if wake:
            rig.daemon.queue.put_nowait(Tick())
        await asyncio.sleep(0)
    await asyncio.wait_for(loop_task, 5)


def test_stop_while_active_releases_first(tmp_path: Path) -> None:
    """A stop request on the active node releases the resources before the loop exits."""

    async def body(rig: Rig) -> None:
        await rig.advance(1.2)
        assert rig.daemon.state.role is Role.ACTIVE
        await stop(rig, 200, 0.05)
        assert rig.resources.calls[-1] == "release"
        assert not rig.resources.held

    run(tmp_path, body)


@dataclass
class SlowRelease(FakeResources):
    """Resources whose release takes until the fake clock reaches `until` (a slow VM stop)."""

    clock: FakeClock = field(default_factory=FakeClock)
    until: float = 0.0

    async def release(self, handover: bool = False) -> None:
        """Wait for the fake clock, then let go."""
        while self.clock() < self.until:
            await asyncio.sleep(0)
        await super().release(handover)


def test_stop_waits_for_a_release_within_its_budget_and_tells_systemd(tmp_path: Path) -> None:
    """A stop outlasts inhibit_timeout + 5 s while a VM release within its budget runs."""

    async def body(rig: Rig) -> None:
        await rig.advance(1.2)
        assert rig.daemon.state.role is Role.ACTIVE
        slow = SlowRelease(held=True, clock=rig.clock, until=rig.clock() + 60.0)
        rig.daemon.fx.resources = rig.resources = slow
        await stop(rig, 2000, 0.1, wake=True)
        assert not slow.held and slow.calls[-1:] == ["release"]
        budget = 100.0 + 2.0 + 5.0
        assert f"EXTEND_TIMEOUT_USEC={int((budget + 5.0) * 1e6)}" in rig.notifier.messages

    run(tmp_path, body, release_timeout=100.0)


@dataclass
class HungRelease(FakeResources):
    """Resources whose release never returns (a hung hypervisor); the VIPs can still go."""

    addresses_released: bool = False

    async def release(self, handover: bool = False) -> None:
        """Hang."""
        self.calls.append("release")
        await asyncio.Event().wait()

    async def release_addresses(self) -> None:
        """Let the VIPs go."""
        self.addresses_released = True


def test_stop_with_a_hung_release_ends_in_fault_and_lets_the_vips_go(tmp_path: Path) -> None:
    """A release past its budget is FAULT; the daemon releases the VIPs before it exits."""

    async def body(rig: Rig) -> None:
        await rig.advance(1.2)
        hung = HungRelease(held=True)
        rig.daemon.fx.resources = rig.resources = hung
        await stop(rig, 2000, 0.1, wake=True)
        assert rig.daemon.state.role is Role.FAULT
        assert hung.addresses_released

    run(tmp_path, body, release_timeout=20.0)


def test_unwritable_state_dir_does_not_stop_a_takeover(tmp_path: Path) -> None:
    """When the epoch cannot be stored, the daemon still takes over and logs the failure."""

    async def body(rig: Rig) -> None:
        # After start-up, the state directory's place is taken by a file: writes fail.
        shutil.rmtree(rig.cfg.state_dir, ignore_errors=True)
        rig.cfg.state_dir.write_text("a file where the state directory should be")
        await rig.advance(1.2)
        assert rig.daemon.state.role is Role.ACTIVE and rig.daemon.state.epoch == 1

    run(tmp_path, body)


def test_epoch_file_round_trip_and_corruption(tmp_path: Path) -> None:
    """The epoch survives a store/load round trip; a corrupt file is an error, not zero."""
    assert load_epoch(tmp_path) == 0
    store_epoch(tmp_path, 42)
    assert load_epoch(tmp_path) == 42
    (tmp_path / "takeover.epoch").write_text("garbage")
    with pytest.raises(ValueError, match=r"takeover\.epoch"):
        load_epoch(tmp_path)


# ---------------------------------------------------------------------------------------------
# Two daemons in real time over an in-memory network (bounded waits on conditions).


async def _until(cond: Callable[[], bool], limit: float = 10.0) -> bool:
    loop = asyncio.get_running_loop()
    end = loop.time() + limit
    while loop.time() < end:
        if cond():
            return True
        await asyncio.sleep(0.02)
    return cond()


def test_pair_elects_then_fails_over_when_active_dies(tmp_path: Path) -> None:
    """Two real loops elect the higher priority, and the standby takes over when it goes silent."""
    network = FakeNetwork()

    def make(node: str, peer: str, prio: int) -> tuple[Daemon, FakeResources]:
        res = FakeResources()
        cfg = DaemonConfig(
            params=params(node, peer, prio, interval=0.05),
            cluster="mail",
            key=KEY,
            digest=DIGEST,
            run_dir=tmp_path / node / "run",
            state_dir=tmp_path / node / "state",
            status_interval=0.2,
        )
        links = network.links(node, peer, LINKS)
        fx = Effects(links, res, FakeProber(), FakeGuard(), None, RecordingNotifier())
        return Daemon(cfg, fx), res

    async def main() -> None:
        a, res_a = make("alpha", "beta", 100)
        b, res_b = make("beta", "alpha", 50)
        ta = asyncio.ensure_future(a.run())
        tb = asyncio.ensure_future(b.run())
        try:
            # Settled once beta has heard alpha's takeover epoch (ties go to priority).
            assert await _until(
                lambda: (
                    (a.state.role, b.state.role) == (Role.ACTIVE, Role.STANDBY)
                    and b.state.seen_epoch == a.state.epoch
                )
            )
            assert res_a.held and not res_b.held
            network.nodes["alpha"].alive = False
            assert await _until(lambda: b.state.role is Role.ACTIVE)
            assert res_b.held and b.state.epoch > a.state.epoch
            # alpha comes back to the wire: both active, the newer epoch (beta) keeps it.
            network.nodes["alpha"].alive = True
            assert await _until(lambda: a.state.role is Role.STANDBY)
            assert b.state.role is Role.ACTIVE and not res_a.held
        finally:
            a.request_stop()
            b.request_stop()
            await asyncio.wait_for(asyncio.gather(ta, tb), 10)

    asyncio.run(main())
    assert not (tmp_path / "alpha" / "run" / "takeover.json").exists()


def test_replay_of_previous_peer_boot_after_our_restart_never_reaches_the_machine(
    tmp_path: Path,
) -> None:
    """A datagram captured from beta's previous boot, replayed after alpha's daemon restarts,
    is dropped as stale_boot from the kept record; beta's genuine heartbeats go on counting."""
    old_boot = encode(Heartbeat("beta", b"O" * 16, 1, Role.ACTIVE, 50, 0, 7, DIGEST), KEY)

    async def first(rig: Rig) -> None:
        rig.peer_seq = 1_000
        for _ in range(3):
            rig.links.inject("lan", rig.peer_heartbeat(Role.STANDBY, epoch=2))
        await rig.advance(1.2)

    async def second(rig: Rig) -> None:
        rig.peer_seq = 1_010
        rig.links.inject("lan", old_boot)
        for _ in range(3):
            rig.links.inject("lan", rig.peer_heartbeat(Role.STANDBY, epoch=2))
        await rig.advance(0.1)
        peer = rig.daemon.state.peer
        assert peer is not None and peer.role is Role.STANDBY and peer.epoch == 2
        counters = rig.daemon.status()["heartbeat"]
        assert counters["stale_boot"] == 1 and counters["accepted"] == 3

    run(tmp_path, first)
    run(tmp_path, second)


def test_sequence_never_goes_back_across_restarts_with_a_clock_stepped_back(
    tmp_path: Path,
) -> None:
    """A daemon restarted with its wall clock an hour behind still sends higher sequences."""

    def first_seq(wall: float) -> int:
        network = FakeNetwork()
        cfg = Rig(tmp_path, network).cfg
        fx = Effects(network.links("alpha", "beta", LINKS), FakeResources(), FakeProber(),
                     FakeGuard(), None, RecordingNotifier())  # fmt: skip
        return Daemon(cfg, fx, clock=FakeClock(), wall=lambda: wall).seq

    before = first_seq(1.7e9 + 3600)
    after = first_seq(1.7e9)
    assert after > before


class SlowGuard:
    """A VIP guard whose probe answers only when the test says so."""

    def __init__(self) -> None:
        self.answer: asyncio.Future[str | None] | None = None

    async def probe(self) -> str | None:
        """Wait for the test's answer."""
        self.answer = asyncio.get_running_loop().create_future()
        return await self.answer


def test_vip_held_by_a_silent_peer_is_not_shown_as_nobody(tmp_path: Path) -> None:
    """After the heartbeats stop, the VIP shows what is known: the peer last heard active
    while the guard looks, then the guard's view that it still answers on the LAN."""

    async def body(rig: Rig) -> None:
        guard = SlowGuard()
        rig.daemon.fx.guard = guard
        rig.links.inject("lan", rig.peer_heartbeat(Role.ACTIVE, epoch=4))
        await rig.advance(0.1)
        rig.network.all_cut = True
        await rig.advance(0.8)
        assert guard.answer is not None and rig.daemon.state.role is not Role.ACTIVE
        vip = rig.daemon.status()["vips"][0]
        assert vip["holder"] is None
        assert vip["holder_seen"].startswith("beta? (not heard for 0.")
        assert vip["holder_seen"].endswith("last heard ACTIVE)")
        guard.answer.set_result("02:00:00:00:00:0b")
        await rig.advance(0.3)
        assert rig.daemon.state.condition == PEER_STILL_SERVING
        doc = rig.daemon.status()
        assert doc["vips"][0]["holder_seen"] == "beta? (answers on the LAN; heartbeats lost)"
        assert "beta? (answers on the LAN; heartbeats lost)" in render(doc, doc["written"])

    run(tmp_path, body)


def test_vip_of_a_releasing_peer_heard_now_says_it_may_still_hold(tmp_path: Path) -> None:
    """A peer heard releasing and still holding is shown as such, not as "not heard"."""

    async def body(rig: Rig) -> None:
        hb = Heartbeat("beta", b"B" * 16, 5, Role.RELEASING, 50, 0, 3, DIGEST, holding=True)
        rig.links.inject("lan", encode(hb, KEY))
        await rig.advance(0.1)
        vip = rig.daemon.status()["vips"][0]
        assert vip["holder"] is None
        assert vip["holder_seen"] == "beta? (RELEASING, may still hold it)"

    run(tmp_path, body)


def test_links_are_down_once_a_suspected_peer_is_silent_for_two_intervals(
    tmp_path: Path,
) -> None:
    """While the peer is suspected (a heartbeat-only interface lost carrier), a link counts as
    up only within the shortened silence (2 intervals), as the peer counts as lost: status never
    shows a lost peer over links that are up."""

    async def body(rig: Rig) -> None:
        for link in LINKS:
            rig.links.inject(link, rig.peer_heartbeat(Role.ACTIVE, epoch=4))
        await rig.advance(0.05)
        doc = rig.daemon.status()
        assert doc["links"]["direct"]["up"] and doc["links"]["lan"]["up"]
        rig.daemon.queue.put_nowait(HeartbeatCarrier(False, "hb0"))
        # Past 2 intervals (0.4 s), within deadtime (0.6 s).
        await rig.advance(0.45)
        doc = rig.daemon.status()
        assert not doc["peer"]["alive"]
        assert not doc["links"]["direct"]["up"] and not doc["links"]["lan"]["up"], doc["links"]

    run(tmp_path, body, stale=True)
