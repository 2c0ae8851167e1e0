"""VM and fencing wiring: monitor while held, migrate on a planned handover,
fencing results in status, and the `fence` / `check --fencing` commands (on fakes)."""

from __future__ import annotations

import asyncio
import io
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from takeover import cli, fencecli
from takeover.config import Node, cluster_deadlines, load_cluster
from takeover.configparse import ConfigError
from takeover.daemon import Daemon, DaemonConfig, Effects
from takeover.deadlines import ABORT_MARGIN, DESTROY_MARGIN
from takeover.exits import Exit
from takeover.fencing.ipmi import Attempt, FenceResult
from takeover.machine import Role
from takeover.resources import ResourceList, VmItem
from takeover.runtime import ThreadFencer, machine_params, vm_resources
from takeover.status import render
from takeover.testing import (
    FakeClock,
    FakeGuard,
    FakeNetwork,
    FakeProber,
    FakeResources,
    RecordingNotifier,
    drive,
)
from takeover.wire import Heartbeat, config_digest, encode
from tests.unit.test_daemon import KEY, params

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
MINIMAL = (CONFIGS / "valid-minimal.toml").read_text()


# -- fakes ----------------------------------------------------------------------------------


class FakeVm:
    """Stands in for VmResource: records every blocking call in order."""

    def __init__(self, running: bool = False, stale: list[str] | None = None) -> None:
        self.running = running
        self.stale = stale or []
        self.calls: list[str] = []

    def acquire(self) -> None:
        self.calls.append("acquire")
        self.running = True

    def release(self) -> None:
        self.calls.append("release")
        self.running = False

    def hand_over(self) -> None:
        self.calls.append("hand_over")
        self.running = False

    def start_monitor(self) -> None:
        self.calls.append("start_monitor")

    def stop_monitor(self) -> None:
        self.calls.append("stop_monitor")

    def reconcile(self, owner_elsewhere: bool) -> list[str]:
        self.calls.append(f"reconcile owner_elsewhere={owner_elsewhere}")
        steps, self.stale = self.stale, []
        self.running = False
        return steps

    def describe(self) -> dict[str, Any]:
        return {"name": "mx1", "where": "here" if self.running else "absent", "held": self.running}


class RecordingItem:
    """A VIP-like resource that records release calls (it has no hand_over)."""

    name = "vip"

    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def acquire(self) -> None:
        self.log.append("vip acquire")

    async def release(self) -> None:
        self.log.append("vip release")

    async def announce(self) -> None:
        """Nothing to announce."""

    def describe(self) -> dict[str, Any]:
        return {"address": "192.0.2.100/24", "held": False}


def fence_result(ok: bool, node: str = "b", action: str = "off") -> FenceResult:
    """A FenceResult as IpmiFencer returns it: one attempt, ok or wrong password."""
    attempt = Attempt(1, "ok" if ok else "wrong-password", "power off" if ok else "bad pw", 0.2)
    return FenceResult(
        node=node,
        action=action,
        ok=ok,
        power="off" if ok and action == "off" else ("on" if ok else None),
        attempts=(attempt,),
        error=None if ok else "wrong-password",
        detail=None if ok else "Incorrect password provided",
        elapsed=0.25,
        finished_at=1.7e9,
    )


class FakeAgent:
    """Stands in for IpmiFencer: returns set results and records calls."""

    def __init__(self, ok: bool = True, node: str = "b") -> None:
        self.ok = ok
        self.node = node
        self.calls: list[str] = []

    def power_off_and_confirm(self) -> FenceResult:
        self.calls.append("off")
        return fence_result(self.ok, self.node)

    def power_state(self) -> FenceResult:
        self.calls.append("status")
        return fence_result(self.ok, self.node, action="status")

    def prepare(self) -> None:
        self.calls.append("prepare")

    def close(self) -> None:
        self.calls.append("close")

    def describe(self) -> dict[str, Any]:
        return {"node": self.node, "bmc": "192.0.2.202:623", "user": "admin", "last": None}


# -- resources ------------------------------------------------------------------------------


def test_vm_item_monitors_while_held_and_stops_watching_before_release() -> None:
    """Acquire starts the monitor after the domain runs; release stops it before shutting down."""
    vm = FakeVm()
    item = VmItem("vm mx1", vm)
    asyncio.run(item.acquire())
    asyncio.run(item.release())
    assert vm.calls == ["acquire", "start_monitor", "stop_monitor", "release"]
    assert item.describe()["kind"] == "vm"


def test_planned_handover_migrates_vms_and_releases_vips() -> None:
    """A handover release moves the VM with hand_over (after the monitor stops); VIPs release."""
    log: list[str] = []
    vm = FakeVm(running=True)
    items = ResourceList([RecordingItem(log), VmItem("vm mx1", vm)])  # type: ignore[list-item]
    asyncio.run(items.release(handover=True))
    assert vm.calls == ["stop_monitor", "hand_over"]
    assert log == ["vip release"]
    assert not items.describe()[1]["held"]


def test_unplanned_release_stops_the_vm() -> None:
    """Without handover the VM is released (shut down), never migrated."""
    vm = FakeVm(running=True)
    asyncio.run(ResourceList([VmItem("vm mx1", vm)]).release())
    assert vm.calls == ["stop_monitor", "release"]


# -- fencing in the daemon and status -------------------------------------------------------


def test_thread_fencer_keeps_results_with_attempts() -> None:
    """Each fencing result, with its attempts, is kept for status; prepare/close reach the agent."""
    agent = FakeAgent(ok=False)
    fencer = ThreadFencer(agent)
    fencer.prepare()
    ok, detail = asyncio.run(fencer.fence("b"))
    fencer.close()
    assert (ok, detail) == (False, "Incorrect password provided")
    info = fencer.describe()
    assert info["bmc"] == "192.0.2.202:623" and "last" not in info
    [res] = info["results"]
    assert res["ok"] is False and res["error"] == "wrong-password"
    assert res["attempts"][0]["result"] == "wrong-password"
    assert agent.calls == ["prepare", "off", "close"]


class Rig:
    """One daemon on fakes with a fake clock and an optional fencer."""

    def __init__(self, tmp: Path, fencer: ThreadFencer | None = None) -> None:
        self.clock = FakeClock()
        self.network = FakeNetwork()
        self.cfg = DaemonConfig(
            params=replace(params("alpha", "beta", 100), fencing=fencer is not None),
            cluster="mail",
            key=KEY,
            digest=config_digest(b"cluster"),
            run_dir=tmp / "run",
            state_dir=tmp / "state",
        )
        self.resources = FakeResources()
        factory = self.network.links("alpha", "beta", ("direct", "lan"), clock=self.clock)
        fx = Effects(
            factory, self.resources, FakeProber(), FakeGuard(), fencer, RecordingNotifier()
        )
        self.daemon = Daemon(self.cfg, fx, clock=self.clock, wall=lambda: 1.7e9 + self.clock())
        self.links = self.network.nodes["alpha"]
        self.seq = 1

    async def advance(self, seconds: float, peer: Role | None = None, hold: bool = False) -> None:
        """Move the clock in 0.1 s steps; with `peer`, beta sends a heartbeat in that role
        (held in standby by its operator with `hold`)."""
        end = self.clock() + seconds
        while self.clock() < end - 1e-9:
            if peer is not None:
                self.seq += 1
                hb = Heartbeat(
                    "beta", b"B" * 16, self.seq, peer, 50, 0, 0, self.cfg.digest, hold_standby=hold
                )
                self.links.inject("lan", encode(hb, KEY))
            self.clock.advance(0.1)
            self.daemon.pump()
            for _ in range(10):
                await asyncio.sleep(0)
                self.daemon.pump()


def run_rig(rig: Rig, body: Any) -> None:
    """Start the rig's daemon, run `body(rig)`, close it whatever happens."""
    drive(rig.daemon, lambda: body(rig))


def test_operator_standby_with_live_standby_peer_is_a_handover(tmp_path: Path) -> None:
    """`takeover standby` while the peer stands by releases with handover (VMs migrate)."""

    async def body(rig: Rig) -> None:
        await rig.advance(1.5, peer=Role.STANDBY)
        assert rig.daemon.state.role is Role.ACTIVE
        assert rig.daemon.command("standby", {}) is None
        await rig.advance(0.2, peer=Role.STANDBY)
        assert rig.resources.handovers == [True]

    run_rig(Rig(tmp_path), body)


def test_release_with_the_peer_lost_is_no_handover(tmp_path: Path) -> None:
    """A forced standby with no peer to receive the VM stops it instead of migrating."""

    async def body(rig: Rig) -> None:
        await rig.advance(1.2)
        assert rig.daemon.state.role is Role.ACTIVE
        assert rig.daemon.command("standby", {"force": True}) is None
        await rig.advance(0.2)
        assert rig.resources.handovers == [False]

    run_rig(Rig(tmp_path), body)


def test_release_to_a_peer_held_in_standby_is_no_handover(tmp_path: Path) -> None:
    """A peer that will not take over (held in standby, e.g. stopping) gets no migrated VM."""

    async def body(rig: Rig) -> None:
        await rig.advance(1.5, peer=Role.STANDBY)
        assert rig.daemon.state.role is Role.ACTIVE
        await rig.advance(0.1, peer=Role.STANDBY, hold=True)
        assert rig.daemon.command("standby", {"force": True}) is None
        await rig.advance(0.2, peer=Role.STANDBY, hold=True)
        assert rig.resources.handovers == [False]

    run_rig(Rig(tmp_path), body)


def test_status_shows_fencing_attempts_after_a_takeover(tmp_path: Path) -> None:
    """After fencing a lost peer, status carries the result with its attempts, text and JSON."""
    agent = FakeAgent(ok=True, node="beta")

    async def body(rig: Rig) -> None:
        await rig.advance(1.5)
        assert rig.daemon.state.role is Role.ACTIVE
        doc = rig.daemon.status()
        [res] = doc["fencing"]["results"]
        assert res["ok"] and res["power"] == "off" and res["attempts"][0]["result"] == "ok"
        assert doc["vms"] == []
        text = render(json.loads(json.dumps(doc)), doc["written"])
        assert "Fencing: beta via BMC 192.0.2.202:623" in text
        assert "off: OK, power off" in text and "try 1: ok" in text

    run_rig(Rig(tmp_path, ThreadFencer(agent)), body)
    assert agent.calls == ["off"]


def test_render_lists_each_vm_with_where_it_runs() -> None:
    """The text status names each VM, the node it runs on, its state here and restarts."""
    doc = {
        "written": 100.0,
        "local": {"name": "a", "role": "ACTIVE"},
        "vms": [
            {
                "name": "mx1",
                "holder": "a",
                "state": "running",
                "restarts": 1,
                "max_restarts": 3,
                "kind": "vm",
            }
        ],
    }
    text = render(doc, 100.0)
    assert "Virtual machines:" in text
    line = next(x for x in text.splitlines() if "mx1" in x)
    assert "runs on a" in line and "here: running" in line and "restarts 1/3" in line


# -- config ---------------------------------------------------------------------------------


VM = """
[[vm]]
name = "mx1"
xml = "/srv/shared/mx1.xml"
migrate = {migrate}
migrate_uri = {{ a = "qemu+tcp://192.0.2.11/system", b = "qemu+tcp://192.0.2.12/system" }}
"""


def test_migrate_uri_names_the_destination_per_node(tmp_path: Path) -> None:
    """migrate_uri gives the peer's destination for each node; without migrate there is none."""
    path = tmp_path / "cluster.toml"
    path.write_text(MINIMAL + VM.format(migrate="true"))
    vm = load_cluster(path).vms[0]
    assert vm.migrate_uri_for("b") == "qemu+tcp://192.0.2.12/system"
    path.write_text(MINIMAL + VM.format(migrate="false"))
    assert load_cluster(path).vms[0].migrate_uri_for("b") is None


def test_vm_items_carry_their_budgets_and_the_spec_its_migrate_timeout(tmp_path: Path) -> None:
    """Each VM item is bounded by its derived stop and handover budgets; the spec aborts."""
    path = tmp_path / "cluster.toml"
    path.write_text(MINIMAL + VM.format(migrate="true") + 'migrate_timeout = "40s"\n')
    cluster = load_cluster(path)
    (item,) = vm_resources(cluster, cluster.node("a"), lambda _name, _reason: None)
    assert item.release_budget == 120.0 + DESTROY_MARGIN
    assert item.handover_budget == 40.0 + ABORT_MARGIN + 120.0 + DESTROY_MARGIN
    spec = getattr(item.inner, "spec", None)
    assert spec is not None and spec.migrate_timeout == 40.0
    mp = machine_params(cluster, cluster.node("a"))
    assert mp.release_timeout == cluster_deadlines(cluster).release_timeout
    assert mp.inhibit_timeout == cluster.inhibit_timeout


def test_migrate_uri_key_must_be_a_node(tmp_path: Path) -> None:
    """A migrate_uri key that is no node is an error naming the key."""
    path = tmp_path / "cluster.toml"
    path.write_text(MINIMAL + VM.format(migrate="true").replace(" a =", " c ="))
    with pytest.raises(ConfigError) as err:
        load_cluster(path)
    assert any("vm[0].migrate_uri.c: is not a node" in p for p in err.value.problems)


# -- the fence and check --fencing commands -------------------------------------------------


def fencing_cluster(tmp_path: Path, nodes: tuple[str, ...] = ("a", "b")) -> Path:
    """Write the minimal cluster with a [node.fencing] table for each of `nodes`."""
    pw = tmp_path / "ipmi.pw"
    pw.write_text("secret\n")
    pw.chmod(0o600)
    text = MINIMAL
    for name, last, bmc in (
        ("a", 'lan = "192.0.2.11"\n', "192.0.2.201"),
        ("b", 'lan = "192.0.2.12"\n', "192.0.2.202"),
    ):
        if name in nodes:
            text = text.replace(
                last,
                last + f'[node.fencing]\ntype = "ipmi"\naddress = "{bmc}"\n'
                f'user = "admin"\npassword_file = "{pw}"\n',
            )
    path = tmp_path / "cluster.toml"
    path.write_text(text)
    return path


class Tty(io.StringIO):
    """A StringIO that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def fence(
    tmp_path: Path, argv: list[str], agent: FakeAgent, stdin: io.StringIO | None = None
) -> tuple[int, io.StringIO]:
    """Run `takeover -c FILE --node a fence ...` with a fake agent; return (code, stderr)."""
    path = fencing_cluster(tmp_path)
    args = cli.build_parser().parse_args(["-c", str(path), "--node", "a", "fence", *argv])
    err = io.StringIO()
    code = fencecli.run_fence(
        args, agent=lambda _node: agent, stdin=stdin or io.StringIO(), stderr=err
    )  # type: ignore[arg-type, return-value]
    return code, err


def test_fence_with_yes_powers_off_and_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`fence b --yes` fences without asking and says power off, exit 0."""
    agent = FakeAgent()
    code, _ = fence(tmp_path, ["b", "--yes"], agent)
    assert code == Exit.OK and agent.calls == ["off"]
    assert "b: fenced via 192.0.2.202:623: power off" in capsys.readouterr().out


def test_fence_failure_exits_1_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A failed fence exits 1 naming the classified reason."""
    code, err = fence(tmp_path, ["b", "--yes"], FakeAgent(ok=False))
    assert code == Exit.FAILURE
    assert "failed: wrong-password: Incorrect password provided" in capsys.readouterr().err
    assert "try 1: wrong-password" in err.getvalue()


def test_fence_refuses_this_node(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A node never fences itself, even with --yes."""
    agent = FakeAgent()
    code, _ = fence(tmp_path, ["a", "--yes"], agent)
    assert code == Exit.FAILURE and agent.calls == []
    assert "refusing to fence myself" in capsys.readouterr().err


def test_fence_asks_on_a_terminal_and_needs_the_node_name(tmp_path: Path) -> None:
    """On a terminal, only typing the node's name fences; anything else does nothing."""
    agent = FakeAgent()
    code, err = fence(tmp_path, ["b"], agent, stdin=Tty("yes\n"))
    assert code == Exit.FAILURE and agent.calls == []
    assert "Type the node name to confirm" in err.getvalue()
    code, _ = fence(tmp_path, ["b"], agent, stdin=Tty("b\n"))
    assert code == Exit.OK and agent.calls == ["off"]


def test_fence_without_terminal_or_yes_does_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not on a terminal and no --yes: refused, the BMC is not touched."""
    agent = FakeAgent()
    code, _ = fence(tmp_path, ["b"], agent)
    assert code == Exit.FAILURE and agent.calls == []
    assert "--yes" in capsys.readouterr().err


def test_fence_unknown_or_unconfigured_node(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unknown node exits 2; a node without [node.fencing] exits 6 naming the key."""
    path = fencing_cluster(tmp_path, nodes=("a",))
    base = ["-c", str(path), "--node", "a", "fence"]
    agent = FakeAgent()
    for target, want in (("zz", Exit.CONFIG), ("b", Exit.NOT_CONFIGURED)):
        args = cli.build_parser().parse_args([*base, target, "--yes"])
        assert fencecli.run_fence(args, agent=lambda _n: agent) == want  # type: ignore[arg-type, return-value]
    assert "node[1].fencing: not configured" in capsys.readouterr().err
    assert agent.calls == []


def test_check_fencing_reads_each_bmc(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """check --fencing reads every BMC's power state (never powers off); exit 1 if one fails."""
    cluster = load_cluster(fencing_cluster(tmp_path))
    agents = {"a": FakeAgent(node="a"), "b": FakeAgent(ok=False, node="b")}

    def factory(node: Node) -> FakeAgent:
        return agents[node.name]

    assert fencecli.check_fencing(cluster, False, factory) == Exit.FAILURE  # type: ignore[arg-type]
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("a: BMC 192.0.2.201:623: ok: power on")
    assert lines[1].startswith("b: BMC 192.0.2.202:623: FAILED: wrong-password")
    assert agents["a"].calls == ["status"] and agents["b"].calls == ["status"]
    agents["b"].ok = True
    assert fencecli.check_fencing(cluster, True, factory) == Exit.OK  # type: ignore[arg-type]
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] and set(doc["fencing"]) == {"a", "b"}
