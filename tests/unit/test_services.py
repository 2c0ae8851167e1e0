"""Service resources: the OCF exit-code map, meta-data, command lines, the group's order and
rollback, and ServiceItem's restart budget, on fakes (the real agents run in tests/lab)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from takeover import deadlines, ocf
from takeover.backends.services import Driver, RunResult, ServiceError, ServiceItem
from takeover.config import cluster_deadlines, load_cluster, service_limits
from takeover.machine import Role
from takeover.ocf import Outcome
from takeover.resources import FoundHeld, ResourceError, ResourceList, arrange
from takeover.startup import Decision, Held, PeerAdvert, Verdict, decide
from takeover.status import render
from takeover.svcconfig import ResourceConfig, order_problems

ROOT = Path(__file__).resolve().parents[2]
MINIMAL = ROOT / "tests" / "configs" / "valid-minimal.toml"

# -- the OCF exit-code map ---------------------------------------------------------------------

OCF_ROWS = [
    (0, "OCF_SUCCESS", Outcome.RUNNING),
    (1, "OCF_ERR_GENERIC", Outcome.FAILED),
    (2, "OCF_ERR_ARGS", Outcome.FAILED_HERE),
    (3, "OCF_ERR_UNIMPLEMENTED", Outcome.FAILED_HERE),
    (4, "OCF_ERR_PERM", Outcome.FAILED_HERE),
    (5, "OCF_ERR_INSTALLED", Outcome.FAILED_HERE),
    (6, "OCF_ERR_CONFIGURED", Outcome.MISCONFIGURED),
    (7, "OCF_NOT_RUNNING", Outcome.STOPPED),
    (8, "OCF_RUNNING_MASTER", Outcome.RUNNING),
    (9, "OCF_FAILED_MASTER", Outcome.FAILED),
    (99, "unknown", Outcome.FAILED),
]


@pytest.mark.parametrize(("code", "name", "outcome"), OCF_ROWS)
def test_ocf_exit_code_map(code: int, name: str, outcome: Outcome) -> None:
    """Each OCF exit code has the standard's name and its recovery class, with a reason."""
    meaning = ocf.ocf_meaning(code)
    assert (meaning.name, meaning.outcome) == (name, outcome)
    assert meaning.reason


@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        (0, Outcome.RUNNING),
        (1, Outcome.FAILED),
        (2, Outcome.FAILED),
        (3, Outcome.STOPPED),
        (4, Outcome.FAILED),
    ],
)
def test_lsb_status_codes(code: int, outcome: Outcome) -> None:
    """A command's status answers by LSB: 0 running, 3 stopped, 1, 2 and others failed."""
    assert ocf.lsb_meaning(code, "status").outcome is outcome


def test_lsb_start_and_stop_succeed_on_zero_only() -> None:
    """A command's start or stop succeeds on exit 0 only (3 is no "stopped" there)."""
    assert ocf.lsb_meaning(0, "start").outcome is Outcome.RUNNING
    assert ocf.lsb_meaning(3, "stop").outcome is Outcome.FAILED


@pytest.mark.parametrize(
    ("state", "outcome"),
    [
        ("active\n", Outcome.RUNNING),
        ("inactive", Outcome.STOPPED),
        ("failed", Outcome.FAILED),
        ("activating", Outcome.FAILED),
        ("bogus", Outcome.FAILED),
    ],
)
def test_systemd_active_state(state: str, outcome: Outcome) -> None:
    """A unit's ActiveState is its monitor: active runs, inactive is stopped, others fail."""
    assert ocf.systemd_meaning(state).outcome is outcome


@pytest.mark.parametrize(
    ("meaning", "ok"),
    [
        (ocf.OCF_EXIT[0], True),
        (ocf.OCF_EXIT[7], True),
        (ocf.OCF_EXIT[1], False),
        (ocf.OCF_EXIT[6], False),
        (ocf.TIMED_OUT, False),
    ],
)
def test_stop_succeeds_on_success_or_not_running(meaning: ocf.ExitMeaning, ok: bool) -> None:
    """A stop succeeded when the agent says 0 or 7; anything else (a timeout) is a stop failure."""
    assert ocf.stop_succeeded(meaning) is ok


# -- meta-data ---------------------------------------------------------------------------------

DUMMY_META = """<?xml version="1.0"?>
<!DOCTYPE resource-agent SYSTEM "ra-api-1.dtd">
<resource-agent name="Filesystem" version="1.1">
<parameters>
<parameter name="device" required="1"><content type="string" /></parameter>
<parameter name="directory" required="1"><content type="string" /></parameter>
<parameter name="options"><content type="string" default="" /></parameter>
</parameters>
<actions>
<action name="start" timeout="60s" />
<action name="stop" timeout="2m" />
<action name="monitor" depth="0" timeout="40s" interval="20s" />
<action name="monitor" depth="10" timeout="100" interval="120s" />
<action name="meta-data" timeout="5s" />
</actions>
</resource-agent>
"""


def test_meta_data_gives_params_and_timeouts() -> None:
    """meta-data yields the parameters (required ones marked) and the first advised timeouts."""
    meta = ocf.parse_meta_data(DUMMY_META)
    assert meta.name == "Filesystem"
    assert sorted(meta.params) == ["device", "directory", "options"]
    assert meta.params["device"].required and not meta.params["options"].required
    assert meta.timeout("start") == 60.0
    assert meta.timeout("stop") == 120.0
    assert meta.timeout("monitor") == 40.0
    assert meta.intervals["monitor"] == 20.0
    assert meta.timeout("validate-all") == ocf.DEFAULT_TIMEOUT


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("not xml", "not XML"),
        ("<agent/>", "not <resource-agent>"),
        ('<resource-agent><actions><action timeout="soon"/></actions></resource-agent>', "no name"),
        (
            '<resource-agent><actions><action name="start" timeout="soon"/></actions>'
            "</resource-agent>",
            "not a duration",
        ),
    ],
)
def test_bad_meta_data_is_refused(text: str, error: str) -> None:
    """Meta-data that is not the OCF XML is refused with what is wrong."""
    with pytest.raises(ocf.MetaDataError, match=error):
        ocf.parse_meta_data(text)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("20s", 20.0), ("2m", 120.0), ("500ms", 0.5), ("15", 15.0), ("1h", 3600.0)],
)
def test_meta_data_durations(text: str, seconds: float) -> None:
    """Meta-data durations read in seconds, milliseconds, minutes, hours or bare seconds."""
    assert ocf.ocf_seconds(text) == seconds


def test_params_unknown_and_required_missing() -> None:
    """An unknown param and a missing required one are each named."""
    meta = ocf.parse_meta_data(DUMMY_META)
    problems = ocf.param_problems(meta, {"device": "/dev/loop0", "fstype": "ext4"})
    assert [p for p, _ in problems] == ["fstype", "directory"]
    assert "no such parameter" in problems[0][1] and "required" in problems[1][1]


def test_ocf_environment() -> None:
    """An action runs with the OCF environment, params as OCF_RESKEY_*, timeout in ms."""
    env = ocf.ocf_env(
        root="/usr/lib/ocf",
        provider="heartbeat",
        kind="Dummy",
        instance="d1",
        params={"state": "/run/x"},
        timeout=20.0,
    )
    assert env == {
        "OCF_ROOT": "/usr/lib/ocf",
        "OCF_RA_VERSION_MAJOR": "1",
        "OCF_RA_VERSION_MINOR": "0",
        "OCF_RESOURCE_INSTANCE": "d1",
        "OCF_RESOURCE_TYPE": "Dummy",
        "OCF_RESOURCE_PROVIDER": "heartbeat",
        "OCF_RESKEY_CRM_meta_timeout": "20000",
        "OCF_RESKEY_state": "/run/x",
    }


@pytest.mark.parametrize(
    ("agent", "split"),
    [
        ("heartbeat:Filesystem", ("heartbeat", "Filesystem")),
        ("ocf:heartbeat:IPaddr2", ("heartbeat", "IPaddr2")),
        ("Filesystem", None),
        ("a:b:c", None),
        ("heart beat:x", None),
    ],
)
def test_agent_names(agent: str, split: tuple[str, str] | None) -> None:
    """An agent is "provider:type", with an optional "ocf:" class prefix."""
    assert ocf.split_agent(agent) == split


def test_systemctl_command_lines() -> None:
    """systemd units start and stop through systemctl; the monitor reads ActiveState.

    These are unit-tested only: the real systemd is proven in the packaging containers.
    """
    assert ocf.systemctl_argv("start", "nginx.service") == [
        "systemctl",
        "start",
        "--no-ask-password",
        "--",
        "nginx.service",
    ]
    assert ocf.systemctl_argv("stop", "nginx.service") == [
        "systemctl",
        "stop",
        "--no-ask-password",
        "--",
        "nginx.service",
    ]
    assert ocf.systemctl_argv("monitor", "nginx.service") == [
        "systemctl",
        "show",
        "--property=ActiveState",
        "--value",
        "--",
        "nginx.service",
    ]
    with pytest.raises(ValueError, match="reload"):
        ocf.systemctl_argv("reload", "nginx.service")


# -- the fake runner ---------------------------------------------------------------------------


class FakeRun:
    """Answers each action from a script: action -> list of exit codes (the last repeats)."""

    def __init__(self, codes: Mapping[str, Sequence[int | None]], output: str = "") -> None:
        """Answer with `codes`; None is a timeout."""
        self.codes = {k: list(v) for k, v in codes.items()}
        self.output = output
        self.calls: list[tuple[str, dict[str, str] | None]] = []

    async def __call__(
        self, argv: Sequence[str], env: Mapping[str, str] | None, timeout: float
    ) -> RunResult:
        """Record the action (an agent's argv[1], a command's argv[0], systemctl's verb)."""
        action = argv[-1] if len(argv) == 2 else argv[0]
        if argv[0] == "systemctl":
            action = {"show": "monitor"}.get(argv[1], argv[1])
        self.calls.append((action, dict(env) if env is not None else None))
        queue = self.codes.get(action, [0])
        code = queue.pop(0) if len(queue) > 1 else queue[0]
        if code is None:
            return RunResult(None, "", timed_out=True)
        out = self.output or ("active" if argv[0] == "systemctl" and code == 0 else "")
        return RunResult(code, out, stdout=out)

    def actions(self) -> list[str]:
        """Return the actions run so far."""
        return [a for a, _ in self.calls]


def dummy(**kw: Any) -> ResourceConfig:
    """An OCF Dummy resource config."""
    base: dict[str, Any] = {
        "name": "d1",
        "type": "ocf",
        "agent": "heartbeat:Dummy",
        "params": MappingProxyType({"state": "/run/d1"}),
    }
    return ResourceConfig(**{**base, **kw})


def item(
    run: FakeRun,
    cfg: ResourceConfig | None = None,
    failovers: list[str] | None = None,
    now: list[float] | None = None,
) -> ServiceItem:
    """A ServiceItem on `run`, its failover requests recorded, its clock `now[0]`."""
    cfg = cfg or dummy()
    clock = now if now is not None else [0.0]
    sink = failovers if failovers is not None else []
    (limits,) = service_limits((cfg,))
    return ServiceItem(
        cfg,
        Driver(cfg, run),
        limits,
        lambda n, r: sink.append(f"{n}: {r}"),
        clock=lambda: clock[0],
        wall=lambda: 1.7e9 + clock[0],
    )


def test_ocf_agent_runs_with_its_path_and_environment() -> None:
    """An OCF action runs OCF_ROOT/resource.d/PROVIDER/TYPE ACTION with the OCF environment."""
    cfg = dummy(start_timeout=30.0)
    argv, env = Driver(cfg).argv_env("start", 30.0)
    assert argv == ["/usr/lib/ocf/resource.d/heartbeat/Dummy", "start"]
    assert env is not None
    assert env["OCF_RESKEY_state"] == "/run/d1" and env["OCF_RESKEY_CRM_meta_timeout"] == "30000"
    assert env["PATH"].startswith("/usr/local/sbin")


def test_command_resource_runs_its_argv() -> None:
    """A command resource's monitor runs its status argv."""
    cfg = ResourceConfig(
        name="web",
        type="command",
        start=("/bin/s", "-x"),
        stop=("/bin/t",),
        status=("/bin/u", "-q"),
    )
    assert Driver(cfg).argv_env("monitor", 5.0) == (["/bin/u", "-q"], None)


def test_acquire_probes_starts_and_confirms() -> None:
    """Acquire: a monitor (not running), the start, then a monitor confirming it runs."""
    run = FakeRun({"monitor": [7, 0]})
    svc = item(run)
    asyncio.run(svc.acquire())
    svc._unwatch()
    assert run.actions() == ["monitor", "start", "monitor"]
    assert svc.held and svc.state == "running"


def test_acquire_adopts_what_already_runs() -> None:
    """A resource already running (kept at start-up) is adopted, never started again."""
    run = FakeRun({"monitor": [0]})
    svc = item(run)
    asyncio.run(svc.acquire())
    svc._unwatch()
    assert run.actions() == ["monitor"]


def test_a_failed_start_raises_and_the_group_rolls_back() -> None:
    """A start that fails stops the acquisition; what was started is released in reverse."""
    log: list[str] = []

    class Fake:
        def __init__(self, name: str) -> None:
            self.name = name

        async def acquire(self) -> None:
            log.append(f"acquire {self.name}")

        async def release(self) -> None:
            log.append(f"release {self.name}")

        async def announce(self) -> None:
            """Nothing."""

        def describe(self) -> dict[str, Any]:
            return {}

    run = FakeRun({"monitor": [7], "start": [1]}, output="Couldn't mount")
    svc = item(run, dummy(name="web"))
    group = arrange(
        ["data", "vips", "web", "tail"],
        {"data": [Fake("data")], "vips": [Fake("vip")], "web": [svc], "tail": [Fake("tail")]},
    )
    with pytest.raises(ResourceError, match=r"OCF_ERR_GENERIC.*Couldn.t mount"):
        asyncio.run(ResourceList(group).acquire())
    assert log == ["acquire data", "acquire vip", "release vip", "release data"]
    assert run.actions() == ["monitor", "start", "stop"]
    assert svc.last_error is not None and svc.last_error["output"] == "Couldn't mount"


def test_arrange_follows_the_group_order() -> None:
    """The group is acquired in `[group] order`: storage, then the VIPs, then the service."""
    assert arrange(
        ["fs", "vips", "vms", "web"], {"vips": [1, 2], "vms": [], "fs": [0], "web": [3]}
    ) == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("order", "problems"),
    [
        (["fs", "vips", "web"], []),
        (["fs", "web"], [("order", 'must place every resource; missing: "vips"')]),
        (["fs", "vips", "web", "fs"], [("order[3]", '"fs" is listed twice')]),
        (
            ["fs", "vips", "vms", "web"],
            [("order[2]", '"vms" is not a resource here (known: "fs", "web", "vips")')],
        ),
    ],
)
def test_order_problems(order: list[str], problems: list[tuple[str, str]]) -> None:
    """`[group] order` must place each resource once, and nothing else."""
    assert order_problems(order, ["fs", "web"], True, False) == problems


def test_a_failed_stop_raises_and_keeps_the_resource_held() -> None:
    """A stop that fails raises (FAULT follows) and the resource counts as still held here."""
    run = FakeRun({"monitor": [0], "stop": [1]})
    svc = item(run)
    asyncio.run(svc.acquire())
    with pytest.raises(ServiceError, match="stop: OCF_ERR_GENERIC"):
        asyncio.run(svc.release())
    assert svc.held


def test_a_stop_timeout_is_a_stop_failure() -> None:
    """A stop past its timeout raises like a failed stop."""
    run = FakeRun({"monitor": [0], "stop": [None]})
    svc = item(run)
    asyncio.run(svc.acquire())
    with pytest.raises(ServiceError, match="timeout"):
        asyncio.run(svc.release())


def test_monitor_failures_restart_in_place_then_fail_over() -> None:
    """A failed monitor restarts in place up to max_restarts in the window, then fails over."""
    run = FakeRun({"monitor": [7]})
    failovers: list[str] = []
    now = [100.0]
    svc = item(run, dummy(max_restarts=2, restart_window=60.0), failovers, now)
    svc.held = True

    async def body() -> list[bool]:
        out = []
        for t in (100.0, 110.0, 120.0):
            now[0] = t
            run.codes["monitor"] = [7, 7, 0]  # the check, the start's probe, the confirmation
            out.append(await svc.check())
        return out

    assert asyncio.run(body()) == [True, True, False]
    assert run.actions().count("start") == 2
    assert len(failovers) == 1 and "OCF_NOT_RUNNING" in failovers[0]
    assert svc.describe()["restarts"] == 2 and svc.describe()["failures"] == 3


def test_restarts_outside_the_window_do_not_count() -> None:
    """Restarts older than restart_window no longer count against the budget."""
    run = FakeRun({"monitor": [7]})
    failovers: list[str] = []
    now = [0.0]
    svc = item(run, dummy(max_restarts=1, restart_window=60.0), failovers, now)
    svc.held = True

    async def body() -> None:
        for t in (0.0, 61.0):
            now[0] = t
            run.codes["monitor"] = [7, 7, 0]
            assert await svc.check()

    asyncio.run(body())
    assert failovers == []


def test_a_hard_error_fails_over_at_once() -> None:
    """A monitor saying the agent cannot work here (5) fails over without a restart."""
    run = FakeRun({"monitor": [5]})
    failovers: list[str] = []
    svc = item(run, failovers=failovers)
    svc.held = True
    assert asyncio.run(svc.check()) is False
    assert "start" not in run.actions() and len(failovers) == 1


def test_a_configuration_error_blocks_the_resource_here() -> None:
    """After OCF_ERR_CONFIGURED the resource is not started again until it is cleaned up."""
    run = FakeRun({"monitor": [7], "start": [6]})
    svc = item(run)
    with pytest.raises(ServiceError, match="OCF_ERR_CONFIGURED"):
        asyncio.run(svc.acquire())
    run.calls.clear()
    with pytest.raises(ServiceError, match="OCF_ERR_CONFIGURED"):
        asyncio.run(svc.acquire())
    assert "start" not in run.actions()
    assert svc.describe()["blocked"]


def test_a_command_start_exiting_6_blocks_until_cleanup() -> None:
    """A command whose start exits 6 (LSB "not configured") is blocked like OCF's 6; cleanup
    lets the next acquire start it again."""
    cfg = ResourceConfig(
        name="web", type="command", start=("start",), stop=("stop",), status=("status",)
    )
    run = FakeRun({"status": [3], "start": [6, 0]})
    svc = item(run, cfg)
    with pytest.raises(ServiceError, match="not configured"):
        asyncio.run(svc.acquire())
    assert svc.blocked and ocf.lsb_meaning(6, "stop").outcome is Outcome.MISCONFIGURED
    svc.cleanup()
    run.codes["status"] = [3, 0]
    asyncio.run(svc.acquire())
    assert run.actions().count("start") == 2 and not svc.blocked
    svc._unwatch()


@pytest.mark.parametrize(("code", "held"), [(0, True), (7, False), (1, True), (5, False)])
def test_probe_finds_what_runs_here(code: int, held: bool) -> None:
    """The start-up probe counts a running or failed resource as held (something to decide)."""
    svc = item(FakeRun({"monitor": [code]}))
    asyncio.run(svc.probe())
    assert svc.runs_here() is held


def test_systemd_resource_through_systemctl() -> None:
    """A systemd resource starts with systemctl and its monitor reads ActiveState."""
    cfg = ResourceConfig(name="web", type="systemd", unit="nginx.service")
    run = FakeRun({"monitor": [0]}, output="")
    svc = item(run, cfg)
    run.codes["monitor"] = [0]
    run.output = "inactive"
    with pytest.raises(ServiceError):
        asyncio.run(svc.acquire())
    assert run.actions()[:2] == ["monitor", "start"]


# -- start-up: a service found running is decided like a guest ----------------------------------


def test_a_running_service_is_kept_when_the_peer_holds_nothing() -> None:
    """A restart on the active keeps the service it finds running (peer standby)."""
    d = decide(
        Held(services=("resource web",)),
        PeerAdvert(Role.STANDBY, False),
        listened=False,
        answered=None,
    )
    assert d is not None and d.role is Role.ACTIVE
    assert d.services == {"resource web": Verdict.KEEP}


def test_a_running_service_is_stopped_when_the_peer_holds_it() -> None:
    """A service running here while the peer is heard active is stopped (DESTROY)."""
    d = decide(
        Held(services=("resource web",)),
        PeerAdvert(Role.ACTIVE, True),
        listened=False,
        answered=None,
    )
    assert d is not None and d.services == {"resource web": Verdict.DESTROY}


def test_a_running_service_is_released_when_someone_answers() -> None:
    """A silent peer but an answered VIP: the service found running is stopped in order."""
    d = decide(
        Held(vips=("192.0.2.100/24",), services=("resource web",)),
        None,
        listened=True,
        answered=True,
    )
    assert d is not None and d.services == {"resource web": Verdict.RELEASE}


def test_found_held_stops_the_services_the_decision_gives_up() -> None:
    """Settling stops each service given up, in reverse order, and keeps the kept one."""
    runs = {n: FakeRun({"monitor": [0]}) for n in ("data", "web")}
    svcs = [item(runs[n], dummy(name=n)) for n in ("data", "web")]
    for svc in svcs:
        asyncio.run(svc.probe())
    found = FoundHeld([], [], None, svcs)
    assert found.held() == Held(services=("resource data", "resource web"))
    decision = Decision(
        Role.STARTING,
        "test",
        services={"resource data": Verdict.RELEASE, "resource web": Verdict.DESTROY},
    )
    assert asyncio.run(found.settle(decision)) is True
    assert [r.actions()[-1] for r in runs.values()] == ["stop", "stop"]
    kept = Decision(Role.ACTIVE, "test", services={"resource web": Verdict.KEEP})
    runs["web"].calls.clear()
    asyncio.run(FoundHeld([], [], None, svcs[1:]).settle(kept))
    assert runs["web"].actions() == []


# -- deadlines and status ----------------------------------------------------------------------


def test_deadlines_include_the_services_timeouts(tmp_path: Path) -> None:
    """The acquire and release budgets grow by each resource's start and stop timeouts."""
    path = tmp_path / "cluster.toml"
    path.write_text(
        MINIMAL.read_text()
        + """
[[resource]]
name = "web"
type = "command"
start = ["/bin/true"]
stop = ["/bin/true"]
status = ["/bin/true"]
start_timeout = "30s"
stop_timeout = "45s"
monitor_timeout = "5s"
"""
    )
    cluster = load_cluster(path)
    got = cluster_deadlines(cluster)
    bare = deadlines.derive(cluster.inhibit_timeout, [])
    assert got.release_budget == bare.release_budget + 45.0 + deadlines.SERVICE_MARGIN
    assert got.acquire_budget == bare.acquire_budget + 30.0 + 2 * 5.0 + deadlines.SERVICE_MARGIN
    assert got.release_timeout == got.acquire_budget + got.release_budget


def test_status_lists_resources_with_state_and_last_error() -> None:
    """`takeover status` shows each resource: agent, holder, state, restarts, last error."""
    run = FakeRun({"monitor": [7], "start": [1]}, output="line one\nmount: no such device")
    svc = item(run, dummy(name="data", agent="heartbeat:Filesystem"))
    with pytest.raises(ServiceError):
        asyncio.run(svc.acquire())
    entry = {**svc.describe(), "holder": None}
    doc = {"written": 1.7e9, "pid": 0, "services": [entry], "local": {}, "peer": {}}
    text = render(doc, 1.7e9 + 1)
    assert "Resources:" in text
    assert "data" in text and "ocf:heartbeat:Filesystem" in text and "? (here): stopped" in text
    assert "start OCF_ERR_GENERIC (exit 1)" in text and "| mount: no such device" in text


def test_a_failed_stop_fails_the_release_but_the_vips_go_all_the_same() -> None:
    """Releasing the group, a service whose stop fails is named in the error (FAULT follows),
    and the resources before it in the order (the VIPs) are released all the same."""
    released: list[str] = []

    class FakeVip:
        name = "vip 192.0.2.100/24"

        async def acquire(self) -> None:
            """Nothing."""

        async def release(self) -> None:
            released.append(self.name)

        async def announce(self) -> None:
            """Nothing."""

        def describe(self) -> dict[str, Any]:
            return {}

    run = FakeRun({"monitor": [0], "stop": [1]})
    svc = item(run, dummy(name="web"))
    group = ResourceList([FakeVip(), svc])
    asyncio.run(group.acquire())
    with pytest.raises(ResourceError, match="resource web: resource web stop: OCF_ERR_GENERIC"):
        asyncio.run(group.release())
    assert released == ["vip 192.0.2.100/24"] and svc.held


def test_a_blocked_resource_fails_the_acquire_before_anything_starts() -> None:
    """After a configuration error, the group's next acquire fails before the storage or the
    VIPs are touched."""
    data_run = FakeRun({"monitor": [7, 0]})
    web_run = FakeRun({"monitor": [7], "start": [6]})
    data, web = item(data_run, dummy(name="data")), item(web_run, dummy(name="web"))
    group = ResourceList([data, web])
    with pytest.raises(ResourceError, match="OCF_ERR_CONFIGURED"):
        asyncio.run(group.acquire())
    data_run.calls.clear()
    with pytest.raises(ResourceError, match="blocked by a configuration error"):
        asyncio.run(group.acquire())
    assert data_run.actions() == []
