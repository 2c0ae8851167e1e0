"""Config-to-daemon mapping, effect adapters, the resource list, sd_notify and the CLI exits."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from takeover import cli
from takeover.addresses import VipPlacement
from takeover.arbitration import Outcome
from takeover.config import load_cluster
from takeover.daemon import SdNotify
from takeover.exits import Exit, StatusExit
from takeover.machine import Event, HeartbeatCarrier, LinkState
from takeover.resources import ResourceError, ResourceList, ThreadResource, VipResource
from takeover.runtime import (
    ENODEV,
    CarrierWatch,
    GuardAdapter,
    PingAdapter,
    ThreadFencer,
    carrier_of_all,
    carrier_verdict,
    daemon_config,
    guard_window,
    heartbeat_only,
    placements,
)
from takeover.status import write_status

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = """
[cluster]
name = "mail"
auto_failback = true
failback_delay = "30s"

[[node]]
name = "a"
priority = 150
interface = "lan0"
[node.heartbeat]
hb = "198.51.100.1"
lan = "192.0.2.11"
[node.fencing]
type = "ipmi"
address = "192.0.2.201"
user = "admin"
password_file = "/etc/hapair/a.ipmi"
on_failure = "vip-guard"

[[node]]
name = "b"
interface = "lan0"
[node.heartbeat]
hb = "198.51.100.2"
lan = "192.0.2.12"

[heartbeat]
links = ["hb", "lan"]
interval = "100ms"
deadtime = "400ms"
initdead = "2s"
key_file = "/etc/hapair/authkey"

[arbitration]
targets = ["192.0.2.1", "192.0.2.2"]
max_unreachable = 1
switchover_margin = 2
dampen = "2s"

[[vip]]
address = "192.0.2.100/24"

[[vip]]
address = "2001:db8::100/64"
interface = "lan1"
mac = "02:00:5e:10:00:01"

[[hook]]
command = ["/usr/local/bin/notify", "x"]
timeout = "3s"
"""


def test_daemon_config_maps_cluster_file(tmp_path: Path) -> None:
    """Every machine parameter comes from the right key; b fences a with a's policy."""
    path = tmp_path / "cluster.toml"
    path.write_text(CLUSTER)
    cluster = load_cluster(path)
    b = cluster.node("b")
    cfg = daemon_config(cluster, b, b"k" * 32)
    p = cfg.params
    assert (p.node, p.peer, p.priority) == ("b", "a", 100)
    assert (p.interval, p.deadtime, p.initdead) == (0.1, 0.4, 2.0)
    assert (p.auto_failback, p.failback_delay) == (True, 30.0)
    assert (p.max_unreachable, p.switchover_margin) == (1, 2)
    assert p.fencing and p.fencing_policy == "vip-guard" and p.guard
    # Guard window min(0.3, 0.4 / 2) = 0.2, plus half an interval, under 2/3 of deadtime.
    assert p.prearbitrate == pytest.approx(0.25)
    assert cfg.dampen == 2.0 and cfg.hooks[0].timeout == 3.0
    assert len(cfg.digest) == 32
    a_params = daemon_config(cluster, cluster.node("a"), b"k" * 32).params
    assert not a_params.fencing and a_params.priority == 150
    vips = placements(cluster, b)
    assert [(str(v.address), v.interface, v.mac) for v in vips] == [
        ("192.0.2.100/24", "lan0", None),
        ("2001:db8::100/64", "lan1", "02:00:5e:10:00:01"),
    ]


def test_guard_verdict_is_due_before_deadtime_at_three_intervals(tmp_path: Path) -> None:
    """At deadtime = 3 intervals the early guard's window ends well before the peer is lost."""
    path = tmp_path / "cluster.toml"
    path.write_text(CLUSTER.replace('deadtime = "400ms"', 'deadtime = "300ms"'))
    cluster = load_cluster(path)
    p = daemon_config(cluster, cluster.node("b"), b"k" * 32).params
    verdict = p.deadtime - p.prearbitrate + guard_window(cluster)
    assert p.prearbitrate > 0 and verdict <= p.deadtime - 0.025


class FakePinger:
    """Stands in for PingProber: fixed answers."""

    targets = [ipaddress.ip_address("192.0.2.1"), ipaddress.ip_address("192.0.2.2")]

    async def probe_outcomes(self, tries: int = 3, window: float = 0.3) -> dict[Any, Outcome]:
        return {self.targets[0]: Outcome.REPLY, self.targets[1]: Outcome.UNREACHABLE}


def test_ping_adapter_maps_reachability_to_outcomes() -> None:
    """The prober's outcome per target passes through, keyed by address string."""
    adapter = PingAdapter(FakePinger(), 0.3)  # type: ignore[arg-type]
    assert adapter.targets == ["192.0.2.1", "192.0.2.2"]
    got = asyncio.run(adapter.probe())
    assert got == {"192.0.2.1": [Outcome.REPLY], "192.0.2.2": [Outcome.UNREACHABLE]}


@dataclass
class FakeVipGuard:
    """Stands in for VipGuard: answers with a set MAC."""

    answer: str | None
    asked: list[str] = field(default_factory=list)

    async def probe(self, vip: Any, timeout: float = 0.3, tries: int = 2) -> str | None:
        self.asked.append(str(vip))
        return self.answer


def test_guard_adapter_reports_any_answer() -> None:
    """The guard answers with the first MAC found among all VIPs, or None if none answered."""
    p1 = VipPlacement(ipaddress.ip_interface("192.0.2.100/24"), "lan0")
    p2 = VipPlacement(ipaddress.ip_interface("2001:db8::100/64"), "lan0")
    silent, loud = FakeVipGuard(None), FakeVipGuard("02:00:00:00:00:0b")
    assert asyncio.run(GuardAdapter([(p1, silent), (p2, loud)], 0.3).probe()) == (  # type: ignore[list-item]
        "02:00:00:00:00:0b"
    )
    assert asyncio.run(GuardAdapter([(p1, silent)], 0.3).probe()) is None  # type: ignore[list-item]
    assert silent.asked == ["192.0.2.100", "192.0.2.100"] and loud.asked == ["2001:db8::100"]


@dataclass
class Result:
    ok: bool
    detail: str | None


class BlockingAgent:
    """Stands in for IpmiFencer: a blocking call returning a result."""

    def __init__(self, result: Result) -> None:
        self.result = result
        self.calls = 0

    def power_off_and_confirm(self) -> Result:
        self.calls += 1
        return self.result


def test_thread_fencer_reports_ok_and_detail() -> None:
    """The blocking agent runs off the loop; its ok and detail come back as a tuple."""
    agent = BlockingAgent(Result(False, "wrong-password"))
    assert asyncio.run(ThreadFencer(agent).fence("a")) == (False, "wrong-password")
    assert asyncio.run(ThreadFencer(BlockingAgent(Result(True, None))).fence("a")) == (
        True,
        "powered off",
    )
    assert agent.calls == 1


# ---------------------------------------------------------------------------------------------
# resources


class FakeAddresses:
    """Records add/remove; fails for addresses listed in `fail`."""

    def __init__(self, log: list[str], fail: set[str] | None = None) -> None:
        self.log = log
        self.fail = fail or set()

    async def add_vip(self, vip: VipPlacement) -> bool:
        self.log.append(f"add {vip.address}")
        if str(vip.address) in self.fail:
            raise RuntimeError(f"cannot add {vip.address}")
        return True

    async def remove_vip(self, vip: VipPlacement) -> bool:
        self.log.append(f"remove {vip.address}")
        if f"-{vip.address}" in self.fail:
            raise RuntimeError(f"cannot remove {vip.address}")
        return True


class FakeAnnouncer:
    """Counts announcement rounds per VIP."""

    def __init__(self, log: list[str]) -> None:
        self.log = log

    def send_round(self, vip: Any, mac: str | None = None) -> int:
        self.log.append(f"garp {vip}")
        return 2

    async def announce(
        self, vip: Any, mac: str | None = None, count: int = 5, interval: float = 0.1
    ) -> int:
        for _ in range(count):
            self.send_round(vip, mac)
        return 2 * count


def resources(log: list[str], fail: set[str] | None = None, count: int = 1) -> ResourceList:
    """Return two VIP resources on fakes."""
    addrs, ann = FakeAddresses(log, fail), FakeAnnouncer(log)
    vips = [
        VipPlacement(ipaddress.ip_interface(a), "lan0")
        for a in ("192.0.2.100/24", "192.0.2.101/24")
    ]
    return ResourceList(
        [VipResource(v, addrs, ann, count=count, interval=0.0) for v in vips]  # type: ignore[arg-type]
    )


def test_release_addresses_lets_only_the_vips_go() -> None:
    """The daemon's last act removes the VIPs in reverse and touches nothing else."""
    log: list[str] = []
    vips = resources(log)
    other = RecordingOther()
    res = ResourceList([*vips.items, other])
    asyncio.run(res.release_addresses())
    assert log == ["remove 192.0.2.101/24", "remove 192.0.2.100/24"]
    assert not other.released


class RecordingOther:
    """A resource that is no VIP (a VM), recording a release."""

    name = "vm mail"
    released = False

    async def acquire(self) -> None:
        """Never used."""

    async def release(self) -> None:
        """Record."""
        self.released = True

    async def announce(self) -> None:
        """Nothing to announce."""

    def describe(self) -> dict[str, Any]:
        """Held."""
        return {"held": True}


class QuickAddresses(FakeAddresses):
    """FakeAddresses that can also add at once (Addresses.add_now), except those in `slow`."""

    def __init__(self, log: list[str], slow: set[str] | None = None) -> None:
        super().__init__(log)
        self.slow = slow or set()

    def add_now(self, vip: VipPlacement) -> bool:
        if str(vip.address) in self.slow:
            return False
        self.log.append(f"add_now {vip.address}")
        return True


def quick_vip(log: list[str], address: str, slow: set[str] | None = None) -> VipResource:
    """Return one VIP resource whose addresses can add at once."""
    placement = VipPlacement(ipaddress.ip_interface(address), "lan0")
    addrs = QuickAddresses(log, slow)
    return VipResource(placement, addrs, FakeAnnouncer(log), count=1, interval=0.0)  # type: ignore[arg-type]


class BlockedOther(RecordingOther):
    """A resource blocked by a configuration error."""

    blocked = "OCF_ERR_CONFIGURED"


# (resources in order: "vip" plain, "slow" a VIP that cannot add at once, "vm", "blocked")
# -> the VIPs claimed at once.
CLAIMS = [
    (("vip", "vip", "vm"), ["192.0.2.100/24", "192.0.2.101/24"]),
    (("vip", "vm", "vip"), ["192.0.2.100/24"]),
    (("vm", "vip"), []),
    (("vip", "slow", "vip"), ["192.0.2.100/24"]),
    (("vip", "vip", "blocked"), []),
]


@pytest.mark.parametrize("kinds, claimed", CLAIMS)
def test_claim_now_takes_only_the_leading_vips(kinds: tuple[str, ...], claimed: list[str]) -> None:
    """A takeover's quick claim adds and announces the VIPs that come first, and nothing past
    a resource that is no quick VIP; nothing at all when one is blocked."""
    log: list[str] = []
    items: list[Any] = []
    for n, kind in enumerate(kinds):
        address = f"192.0.2.{100 + n}/24"
        if kind in ("vip", "slow"):
            items.append(quick_vip(log, address, {address} if kind == "slow" else None))
        else:
            items.append(BlockedOther() if kind == "blocked" else RecordingOther())
    res = ResourceList(items)
    assert res.claim_now() == [f"vip {a}" for a in claimed]
    assert log == [x for a in claimed for x in (f"add_now {a}", f"garp {a.split('/')[0]}")]


def test_acquire_after_a_claim_does_not_announce_again() -> None:
    """A VIP claimed at once is confirmed by acquire() without a second announcement round."""
    log: list[str] = []
    vip = quick_vip(log, "192.0.2.100/24")
    assert vip.claim_now()
    asyncio.run(vip.acquire())
    assert log == ["add_now 192.0.2.100/24", "garp 192.0.2.100", "add 192.0.2.100/24"]
    # Released, then acquired the slow way: announced again.
    asyncio.run(vip.release())
    asyncio.run(vip.acquire())
    assert log[-2:] == ["add 192.0.2.100/24", "garp 192.0.2.100"]


def test_acquire_in_order_announcing_each_at_once() -> None:
    """VIPs are added in order, each announced right after it is added."""
    log: list[str] = []
    res = resources(log)
    asyncio.run(res.acquire())
    assert log == [
        "add 192.0.2.100/24",
        "garp 192.0.2.100",
        "add 192.0.2.101/24",
        "garp 192.0.2.101",
    ]
    assert [d["held"] for d in res.describe()] == [True, True]


def test_acquire_failure_rolls_back_in_reverse() -> None:
    """When the second VIP fails, both are removed and the error names the failing one."""
    log: list[str] = []
    res = resources(log, fail={"192.0.2.101/24"})
    with pytest.raises(ResourceError, match=r"192\.0\.2\.101"):
        asyncio.run(res.acquire())
    assert log[-2:] == ["remove 192.0.2.100/24", "remove 192.0.2.101/24"]
    assert [d["held"] for d in res.describe()] == [False, False]


def test_release_tries_every_resource_in_reverse() -> None:
    """Release goes in reverse and keeps going after a failure, which it then reports."""
    log: list[str] = []
    res = resources(log, fail={"-192.0.2.101/24"})
    with pytest.raises(ResourceError, match=r"cannot remove 192\.0\.2\.101"):
        asyncio.run(res.release())
    assert log == ["remove 192.0.2.101/24", "remove 192.0.2.100/24"]


def test_burst_sends_remaining_rounds_in_background() -> None:
    """With garp_count 3 the first round is immediate and two more follow in the background."""
    log: list[str] = []

    async def main() -> None:
        res = resources(log, count=3)
        await res.acquire()
        assert log.count("garp 192.0.2.100") == 1
        for _ in range(20):
            await asyncio.sleep(0)
        assert log.count("garp 192.0.2.100") == 3
        await res.release()

    asyncio.run(main())


# ---------------------------------------------------------------------------------------------
# sd_notify


def test_sd_notify_sends_datagram(tmp_path: Path) -> None:
    """READY=1 arrives as one datagram on $NOTIFY_SOCKET; no socket means a silent no-op."""
    path = tmp_path / "notify"
    sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sink.bind(str(path))
    sink.settimeout(5)
    try:
        SdNotify(str(path)).notify("READY=1")
        assert sink.recv(100) == b"READY=1"
    finally:
        sink.close()
    SdNotify(None).notify("READY=1")


# ---------------------------------------------------------------------------------------------
# CLI exits


def test_status_not_running_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No status file: `takeover status` says not running and exits 3."""
    assert cli.main(["--run-dir", str(tmp_path), "status"]) == StatusExit.NOT_RUNNING
    assert "not running" in capsys.readouterr().out


def test_status_json_fresh_and_stale(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--json prints one document with a verdict; a stale file with a live pid exits 4."""
    doc = {
        "written": time.time(),
        "status_interval": 1.0,
        "pid": os.getpid(),
        "local": {"name": "a", "role": "ACTIVE"},
    }
    write_status(tmp_path / "takeover.json", doc)
    assert cli.main(["--run-dir", str(tmp_path), "status", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["verdict"] == "active_or_standby" and out["local"]["role"] == "ACTIVE"
    write_status(tmp_path / "takeover.json", {**doc, "written": time.time() - 60})
    assert cli.main(["--run-dir", str(tmp_path), "status"]) == StatusExit.UNKNOWN
    assert "stale" in capsys.readouterr().out


def test_status_of_a_daemon_killed_a_moment_ago_exits_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A fresh status file whose daemon is gone: exit 3, the last state shown as stale."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    doc = {
        "written": time.time(),
        "status_interval": 1.0,
        "pid": dead.pid,
        "local": {"name": "a", "role": "ACTIVE"},
    }
    write_status(tmp_path / "takeover.json", doc)
    assert cli.main(["--run-dir", str(tmp_path), "status"]) == StatusExit.NOT_RUNNING
    out = capsys.readouterr().out
    assert f"NOT RUNNING: the daemon (pid {dead.pid}) is gone" in out and "ACTIVE" in out
    assert cli.main(["--run-dir", str(tmp_path), "status", "--json"]) == StatusExit.NOT_RUNNING
    got = json.loads(capsys.readouterr().out)
    assert got["verdict"] == "not_running" and got["local"]["role"] == "ACTIVE"


def test_standby_without_daemon_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`takeover standby` with no daemon running exits 1 and says so on stderr."""
    assert cli.main(["--run-dir", str(tmp_path), "standby"]) == Exit.FAILURE
    assert "is takeover running" in capsys.readouterr().err


def test_run_without_config_exits_6(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`takeover run` with a missing cluster file exits NOT_CONFIGURED."""
    code = cli.main(["-c", str(tmp_path / "none.toml"), "--node", "a", "run"])
    assert code == Exit.NOT_CONFIGURED
    assert "takeover: error:" in capsys.readouterr().err


def test_run_with_readable_key_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A key file readable by others is refused with exit 2 naming the file and key."""
    key = tmp_path / "authkey"
    key.write_text("x" * 64)
    key.chmod(0o644)
    path = tmp_path / "cluster.toml"
    path.write_text(CLUSTER.replace("/etc/hapair/authkey", str(key)))
    code = cli.main(["-c", str(path), "--node", "b", "--run-dir", str(tmp_path), "run"])
    assert code == Exit.CONFIG
    err = capsys.readouterr().err
    assert "heartbeat.key_file" in err and str(key) in err


class BlockingVm:
    """Stands in for VmResource: blocking calls, a describe() that says where it runs."""

    def __init__(self, running: bool = False, fail: str = "") -> None:
        self.running = running
        self.fail = fail
        self.calls: list[str] = []

    def acquire(self) -> None:
        self.calls.append("acquire")
        if self.fail:
            raise RuntimeError(self.fail)
        self.running = True

    def release(self) -> None:
        self.calls.append("release")
        self.running = False

    def describe(self) -> dict[str, Any]:
        return {"name": "mail", "where": "here" if self.running else "absent"}


def test_thread_resource_runs_blocking_calls_and_caches_view() -> None:
    """A blocking VM is acquired and released off the loop; describe follows each change."""
    vm = BlockingVm(running=True)
    res = ThreadResource("vm mail", vm)
    assert res.describe()["held"]
    asyncio.run(res.release())
    assert not res.describe()["held"]
    asyncio.run(res.acquire())
    assert res.describe()["held"] and vm.calls == ["release", "acquire"]


def test_thread_resource_failure_propagates_into_rollback() -> None:
    """A VM that cannot start fails the list's acquire, which releases the VIP before it."""
    log: list[str] = []
    vm = BlockingVm(fail="domain XML missing")
    vip = VipPlacement(ipaddress.ip_interface("192.0.2.100/24"), "lan0")
    res = ResourceList(
        [
            VipResource(vip, FakeAddresses(log), FakeAnnouncer(log), count=1),
            ThreadResource("vm mail", vm),
        ]  # type: ignore[arg-type]
    )
    with pytest.raises(ResourceError, match="domain XML missing"):
        asyncio.run(res.acquire())
    assert log[-1] == "remove 192.0.2.100/24" and vm.calls == ["acquire", "release"]


# (IFLA_CARRIER, errno of the failed request, verdict)
CARRIER_READINGS = [
    (1, None, True),
    (0, None, False),
    (None, None, None),  # an answer without the attribute says nothing
    (None, ENODEV, False),  # the interface is gone: as good as no carrier
    (None, 16, None),  # EBUSY: a spurious error says nothing
    (None, 105, None),  # ENOBUFS
    (None, -1, None),  # an error without errno
]


@pytest.mark.parametrize(("carrier", "error", "verdict"), CARRIER_READINGS)
def test_carrier_verdict(carrier: int | None, error: int | None, verdict: bool | None) -> None:
    """Only a missing interface or a carrier of 0 reads as down; other errors read as unknown."""
    assert carrier_verdict(carrier, error) is verdict


def test_carrier_of_all_needs_every_interface() -> None:
    """One interface down is down; one unknown (and none down) is unknown; else up."""
    assert carrier_of_all({"a": True, "b": True}) is True
    assert carrier_of_all({"a": True, "b": False}) is False
    assert carrier_of_all({"a": None, "b": False}) is False
    assert carrier_of_all({"a": True, "b": None}) is None


class NetlinkError(Exception):
    """Stands in for pyroute2's NetlinkError: an errno in `code`."""

    def __init__(self, code: int) -> None:
        super().__init__(code, "fake")
        self.code = code


class ScriptedNetlink:
    """Answers `link("get")` from a script of carriers and errors; stops the watch at its end."""

    def __init__(self, script: list[int | Exception], done: asyncio.Event) -> None:
        self.script = list(script)
        self.done = done
        self.closed = False

    async def link(self, cmd: str, ifname: str) -> list[dict[str, int]]:
        if not self.script:
            self.done.set()
            await asyncio.Event().wait()
        item = self.script.pop(0)
        if isinstance(item, Exception):
            raise item
        return [{"IFLA_CARRIER": item}]

    def close(self) -> None:
        self.closed = True


def watch_carrier(script: list[int | Exception], heartbeat: bool = False) -> list[Event]:
    """Run a polling CarrierWatch over `script` (no link events); return what it emitted."""

    async def main() -> list[Event]:
        done = asyncio.Event()
        nl = ScriptedNetlink(script, done)

        async def no_events() -> Any:
            raise OSError("no events here")

        async def netlink() -> Any:
            return nl

        got: list[Event] = []
        watch = CarrierWatch(
            ["lan0"], 0.001, open_netlink=netlink, open_events=no_events, heartbeat=heartbeat
        )
        task = asyncio.ensure_future(watch(got.append))
        await asyncio.wait_for(done.wait(), 5)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert nl.closed
        return got

    return asyncio.run(main())


def test_carrier_watch_ignores_a_spurious_netlink_error() -> None:
    """A netlink error other than a missing interface reports no carrier loss."""
    got = watch_carrier([1, NetlinkError(16), NetlinkError(105), 1, 0, NetlinkError(ENODEV)])
    assert got == [LinkState(True), LinkState(False)]


def test_carrier_watch_reports_a_missing_interface_as_down() -> None:
    """An interface that disappears counts as no carrier, and its return as carrier again."""
    got = watch_carrier([1, NetlinkError(ENODEV), 1])
    assert got == [LinkState(True), LinkState(False), LinkState(True)]


def test_heartbeat_carrier_watch_reports_heartbeat_carrier_with_the_link() -> None:
    """Watching a heartbeat-only interface reports HeartbeatCarrier naming it, not LinkState."""
    got = watch_carrier([1, 0, 1], heartbeat=True)
    assert got == [HeartbeatCarrier(True), HeartbeatCarrier(False, "lan0"), HeartbeatCarrier(True)]


@pytest.mark.parametrize(
    ("locals_", "service", "expected"),
    [
        (["192.0.2.1", "198.51.100.1"], ["eth0"], ["hb0"]),
        (["192.0.2.1"], ["eth0"], []),
        (["2001:db8:0::1", "203.0.113.9"], [], ["hb1"]),
    ],
    ids=["direct_cable", "lan_only", "no_vip_unknown_address_skipped"],
)
def test_heartbeat_only_interfaces(
    locals_: list[str], service: list[str], expected: list[str]
) -> None:
    """Only interfaces holding a heartbeat link's local address and no VIP are watched."""
    where = {"192.0.2.1": "eth0", "198.51.100.1": "hb0", "2001:db8::1": "hb1"}
    assert heartbeat_only(where, locals_, service) == expected


def test_carrier_watch_reads_again_on_a_link_event() -> None:
    """A kernel link event for a watched interface wakes the watch before its resync period."""

    class Events:
        def __init__(self) -> None:
            self.queue: asyncio.Queue[dict[str, str]] = asyncio.Queue()

        async def get(self) -> Any:
            yield await self.queue.get()

        def close(self) -> None:
            pass

    async def main() -> list[Event]:
        done = asyncio.Event()
        nl = ScriptedNetlink([1, 0], done)
        events = Events()

        async def open_events() -> Any:
            return events

        async def netlink() -> Any:
            return nl

        got: list[Event] = []
        # A resync period of an hour: only the event can make the second read happen.
        watch = CarrierWatch(
            ["lan0"], 0.001, open_netlink=netlink, open_events=open_events, resync=3600.0
        )
        task = asyncio.ensure_future(watch(got.append))
        await asyncio.sleep(0.05)
        await events.queue.put({"IFLA_IFNAME": "other0"})
        await asyncio.sleep(0.05)
        assert got == [LinkState(True)]
        await events.queue.put({"IFLA_IFNAME": "lan0"})
        for _ in range(500):
            if len(got) == 2:
                break
            await asyncio.sleep(0.01)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return got

    assert asyncio.run(main()) == [LinkState(True), LinkState(False)]
