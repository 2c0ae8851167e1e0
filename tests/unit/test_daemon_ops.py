"""The daemon's day-two operations on fakes: maintenance across a restart, and reload."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from pathlib import Path

from takeover.arbitration import Outcome
from takeover.daemon import DaemonConfig, load_maintenance
from takeover.machine import Role
from takeover.reloadplan import Plan, ReloadRefused
from takeover.startup import Held, Verdict
from takeover.status import read_status, render, status_path
from takeover.testing import (
    FakeStartup,
    drive,
)
from takeover.wire import Heartbeat, encode
from tests.unit.test_daemon import DIGEST, KEY, Rig, stop

VIP = "192.0.2.100/24"


@dataclass
class FakeReloader:
    """Returns the next plan (or refuses); records each apply's `acquire`."""

    plan: Plan = field(default_factory=Plan)
    cfg: DaemonConfig | None = None
    refuse: tuple[str, ...] = ()
    applied: list[bool] = field(default_factory=list)

    def load(self, maintenance: bool) -> tuple[Plan, DaemonConfig]:
        """Refuse if told to, else return the plan and configuration set."""
        if self.refuse:
            raise ReloadRefused(self.refuse)
        assert self.cfg is not None
        return self.plan, self.cfg

    async def apply(self, acquire: bool) -> None:
        """Record the call."""
        self.applied.append(acquire)


class OpsRig(Rig):
    """A Rig whose daemon also has a start-up effect (what was found held) and a reloader."""

    def __init__(self, tmp: Path, held: bool = False) -> None:
        """Build the daemon with the fake VIP found held when `held`."""
        self.startup = FakeStartup(Held(vips=(VIP,) if held else ()))
        self.reloader = FakeReloader()
        extra = {"startup": self.startup, "reloader": self.reloader}
        super().__init__(tmp, stale=held, fx_extra=extra)
        self.startup.resources = self.resources

    async def hear(self, role: Role, seconds: float, maintenance: bool = False) -> None:
        """Hear the peer (holding nothing) in `role` every 0.1 s for `seconds`."""
        for _ in range(round(seconds / 0.1)):
            self.peer_seq += 1
            hb = Heartbeat("beta", b"B" * 16, self.peer_seq, role, 50, 0, 1, DIGEST,
                           maintenance=maintenance)  # fmt: skip
            self.links.inject("lan", encode(hb, KEY))
            await self.advance(0.1)


def test_maintenance_survives_a_restart_and_nothing_is_touched_until_off(tmp_path: Path) -> None:
    """Active in maintenance: a stop releases nothing; the restarted daemon neither mutes,
    decides nor acquires while the peer is gone; off with the peer heard keeps it all."""

    async def first(rig: OpsRig) -> None:
        await rig.advance(1.2)
        assert rig.daemon.state.role is Role.ACTIVE
        assert rig.daemon.command("maintenance", {"on": True}) is None
        assert load_maintenance(rig.cfg.state_dir)
        assert rig.daemon.command("standby", {}) == "the pair is in maintenance mode"
        await stop(rig, 50, 0.05)
        assert rig.resources.calls == ["acquire"] and rig.resources.held

    rig = OpsRig(tmp_path)
    drive(rig.daemon, lambda: first(rig))

    async def second(rig: OpsRig) -> None:
        assert "READY=1" in rig.notifier.messages
        await rig.advance(5.0)
        # Peer silent for many deadtimes: no arbitration, no decision, no mute.
        assert rig.daemon.state.role is Role.STARTING and rig.daemon.state.maintenance
        assert rig.startup.calls == [] and rig.resources.calls == [] and rig.resources.held
        doc = read_status(status_path(rig.cfg.run_dir))
        assert doc is not None and doc["local"]["maintenance"] is True
        assert render(doc, 1.7e9 + rig.clock()).splitlines()[1].startswith("MAINTENANCE MODE")
        await rig.hear(Role.STARTING, 0.5, maintenance=True)
        assert rig.daemon.command("maintenance", {"on": False}) is None
        await rig.hear(Role.STARTING, 0.5)
        # The peer is heard holding nothing: kept, no mute, and active with no gap.
        assert rig.startup.calls == ["settle"]
        assert rig.startup.decisions[0].vips == {VIP: Verdict.KEEP}
        assert rig.daemon.state.role is Role.ACTIVE and rig.resources.held
        assert "release" not in rig.resources.calls
        assert not load_maintenance(rig.cfg.state_dir)

    rig2 = OpsRig(tmp_path, held=True)
    drive(rig2.daemon, lambda: second(rig2))


def test_reload_refused_keeps_the_configuration_and_says_why(tmp_path: Path) -> None:
    """A refused reload changes nothing and is a condition in status naming file and key."""

    async def body(rig: OpsRig) -> None:
        await rig.advance(1.2)
        before = rig.daemon.cfg
        rig.reloader.refuse = ("cluster.toml: heartbeat.interval: bad",)
        assert await rig.daemon.reload() is False
        assert rig.daemon.cfg is before and rig.reloader.applied == []
        doc = read_status(status_path(rig.cfg.run_dir))
        assert doc is not None and doc["reload"]["ok"] is False
        assert any("heartbeat.interval" in c for c in doc["conditions"])

    rig = OpsRig(tmp_path)
    drive(rig.daemon, lambda: body(rig))


def test_reload_applies_timings_and_acquires_new_only_on_the_active(tmp_path: Path) -> None:
    """An applied reload changes the machine's interval; the active takes what was added."""

    async def body(rig: OpsRig) -> None:
        await rig.advance(1.2)
        assert rig.daemon.state.role is Role.ACTIVE
        faster = replace(rig.cfg, params=replace(rig.cfg.params, interval=0.05))
        rig.reloader.cfg = faster
        rig.reloader.plan = Plan(timings=True)
        assert await rig.daemon.reload() is True
        assert rig.daemon.state.params.interval == 0.05
        assert rig.reloader.applied == [True]
        assert rig.resources.calls == ["acquire"]
        doc = read_status(status_path(rig.cfg.run_dir))
        assert doc is not None and doc["reload"] == {
            "time": doc["reload"]["time"],
            "ok": True,
            "changes": ["timings"],
        }
        assert doc["conditions"] == []

    rig = OpsRig(tmp_path)
    drive(rig.daemon, lambda: body(rig))


def test_sighup_runs_the_reload_from_the_loop(tmp_path: Path) -> None:
    """SIGHUP only sets a flag; the loop then reloads (before: it only logged a note)."""

    async def body(rig: OpsRig) -> None:
        await rig.advance(0.3)
        rig.reloader.cfg = rig.cfg
        rig.daemon.request_reload()
        await rig.advance(0.2)
        await asyncio.sleep(0)
        assert rig.reloader.applied == [False]

    rig = OpsRig(tmp_path)
    drive(rig.daemon, lambda: body(rig))


def test_reload_retargets_the_ping_list_keeping_known_targets(tmp_path: Path) -> None:
    """A new ping list is probed from the next round; a kept target keeps its damped state,
    a removed one is gone from status, a new one starts unknown."""

    async def body(rig: OpsRig) -> None:
        await rig.advance(1.2)
        assert rig.daemon.status()["targets"]["192.0.2.1"] == "up"
        rig.prober.targets = ("192.0.2.1", "192.0.2.9")
        rig.reloader.cfg = rig.cfg
        rig.reloader.plan = Plan(targets=True)
        assert await rig.daemon.reload() is True
        assert rig.daemon.status()["targets"] == {"192.0.2.1": "up", "192.0.2.9": "unknown"}
        # A round started before the reload answers for a target that is gone: ignored.
        rig.daemon.reach.record("192.0.2.2", Outcome.TIMEOUT, rig.clock())
        rig.daemon.reach.record("192.0.2.9", Outcome.REPLY, rig.clock())
        assert rig.daemon.status()["targets"] == {"192.0.2.1": "up", "192.0.2.9": "up"}

    rig = OpsRig(tmp_path)
    drive(rig.daemon, lambda: body(rig))
