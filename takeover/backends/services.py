"""Service and storage resources: OCF agents, systemd units and commands, run for real.

Each `[[resource]]` becomes a `ServiceItem` in the group (takeover.resources.ResourceList):
acquire = probe (adopt what already runs), start, confirm with a monitor; release = stop.
While held, a monitor runs every `monitor_interval`; a failure is restarted in place within
`max_restarts` per `restart_window` (takeover.backends.vmpolicy.RestartBudget, as for VMs),
then the pair is asked to fail over. A hard error (the agent says it cannot work on this
node) fails over at once; a configuration error blocks the resource here, and through the
heartbeat on the peer too, until `takeover cleanup` (or the daemon restarts). A stop that
fails or times out raises: the machine's FAULT then keeps the node marked as holding, which
the peer fences before it acquires anything.

What an exit code means is decided in takeover.ocf (pure); this module only runs things.
An action's output goes to a file, not a pipe: an agent that leaves a daemon behind (holding
its stdout) must not keep the action waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from takeover import ocf
from takeover.backends.vmpolicy import CrashVerdict, RestartBudget
from takeover.config import service_limits
from takeover.deadlines import ServiceLimits
from takeover.ocf import ExitMeaning, MetaData, Outcome
from takeover.svcconfig import ResourceConfig

log = logging.getLogger(__name__)

# What an action's output keeps for status and logs (the end says why it failed).
OUTPUT_TAIL = 2000
# The environment an agent starts from: no daemon secrets, a known PATH and locale.
BASE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C",
    "LC_ALL": "C",
}


@dataclass(frozen=True)
class RunResult:
    """How one process ended: its exit code (None: timed out or could not start), its output."""

    code: int | None
    # stdout and stderr, the end kept (OUTPUT_TAIL): what status shows.
    output: str
    timed_out: bool = False
    # stdout whole: what meta-data prints.
    stdout: str = ""


async def run_captured(
    argv: Sequence[str], env: Mapping[str, str] | None, timeout: float
) -> RunResult:
    """Run `argv` with `env`; kill its process group past `timeout`; return code and output."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err_out:
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                env=dict(env) if env is not None else None,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=err_out,
                # Own session: on timeout the whole group goes, not just the agent's shell.
                start_new_session=True,
            )
        except OSError as err:
            return RunResult(None, str(err))
        timed_out = False
        try:
            code: int | None = await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            code, timed_out = None, True
        except asyncio.CancelledError:
            # A release cancels the monitor mid-restart: the agent goes too, its stop follows.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            raise
        out.seek(0)
        err_out.seek(0)
        text = out.read().decode("utf-8", "replace")
        both = (text + err_out.read().decode("utf-8", "replace")).strip()
    return RunResult(code, both[-OUTPUT_TAIL:], timed_out, text)


@dataclass(frozen=True)
class ActionResult:
    """One action of a resource: what it meant, its exit code and the agent's output."""

    action: str
    meaning: ExitMeaning
    code: int | None
    output: str
    stdout: str = ""

    @property
    def outcome(self) -> Outcome:
        """Return what the action says of the resource."""
        return self.meaning.outcome

    def text(self) -> str:
        """Return a one-line account for errors and logs."""
        code = "timeout" if self.code is None else f"exit {self.code}"
        tail = self.output.splitlines()[-1] if self.output else ""
        return f"{self.action}: {self.meaning.name} ({code}): {self.meaning.reason}" + (
            f"; output: {tail}" if tail else ""
        )


class Driver:
    """Runs one resource's actions: start, stop, monitor (and validate-all, meta-data)."""

    def __init__(self, cfg: ResourceConfig, run: Callable[..., Any] = run_captured) -> None:
        """Drive `cfg`; `run` runs a process (run_captured, or a fake in tests)."""
        self.cfg = cfg
        self.run = run

    def argv_env(self, action: str, timeout: float) -> tuple[list[str], dict[str, str] | None]:
        """Return the command line and environment of `action`."""
        cfg = self.cfg
        if cfg.type == "ocf":
            split = ocf.split_agent(cfg.agent)
            assert split is not None
            provider, kind = split
            root = str(cfg.ocf_root)
            env = dict(BASE_ENV)
            env.update(
                ocf.ocf_env(
                    root=root,
                    provider=provider,
                    kind=kind,
                    instance=cfg.name,
                    params=cfg.params,
                    timeout=timeout,
                )
            )
            return [ocf.agent_path(root, provider, kind), action], env
        if cfg.type == "systemd":
            return ocf.systemctl_argv(action, cfg.unit), None
        argv = {"start": cfg.start, "stop": cfg.stop, "monitor": cfg.status}[action]
        return list(argv), None

    async def act(self, action: str, timeout: float) -> ActionResult:
        """Run `action` within `timeout` and say what its exit means."""
        argv, env = self.argv_env(action, timeout)
        res: RunResult = await self.run(argv, env, timeout)
        if res.code is None:
            meaning = ocf.TIMED_OUT if res.timed_out else ocf.UNKNOWN_EXIT
            if not res.timed_out and self.cfg.type == "ocf":
                # The agent could not be run at all: as if it were not installed here.
                meaning = ocf.OCF_EXIT[5]
            return ActionResult(action, meaning, None, res.output)
        return ActionResult(action, self.meaning(action, res), res.code, res.output, res.stdout)

    def meaning(self, action: str, res: RunResult) -> ExitMeaning:
        """Return what an ended action means for this resource's type."""
        assert res.code is not None
        if self.cfg.type == "ocf":
            return ocf.ocf_meaning(res.code)
        if self.cfg.type == "systemd":
            if action == "monitor":
                if res.code != 0:
                    return ExitMeaning(f"systemctl {res.code}", Outcome.FAILED, "show failed")
                return ocf.systemd_meaning(res.stdout)
            return ocf.lsb_meaning(res.code, action)
        return ocf.lsb_meaning(res.code, "status" if action == "monitor" else action)

    async def meta_data(self) -> MetaData:
        """Run the OCF agent's `meta-data` and parse it (MetaDataError, OSError on failure)."""
        res = await self.act("meta-data", ocf.META_DATA_TIMEOUT)
        if res.code != 0:
            raise ocf.MetaDataError(res.text())
        return ocf.parse_meta_data(res.stdout)


async def resolve_timeouts(cfg: ResourceConfig, driver: Driver) -> ResourceConfig:
    """Return `cfg` with unset timeouts taken from the OCF agent's meta-data (else as is)."""
    if cfg.type != "ocf" or all((cfg.start_timeout, cfg.stop_timeout, cfg.monitor_timeout)):
        return cfg
    try:
        meta = await driver.meta_data()
    except (ocf.MetaDataError, OSError) as err:
        log.warning("resource.meta_data_failed name=%s error=%s", cfg.name, err)
        return cfg
    return replace(
        cfg,
        start_timeout=cfg.start_timeout or meta.timeout("start"),
        stop_timeout=cfg.stop_timeout or meta.timeout("stop"),
        monitor_timeout=cfg.monitor_timeout or meta.timeout("monitor"),
    )


class ServiceError(Exception):
    """An action of a service resource failed; `result` says how."""

    def __init__(self, name: str, result: ActionResult) -> None:
        """Name the resource and the failed action."""
        super().__init__(f"{name} {result.text()}")
        self.result = result


class ServiceItem:
    """One `[[resource]]` in the group: acquire, release, monitor, restart in place."""

    def __init__(
        self,
        cfg: ResourceConfig,
        driver: Driver,
        limits: ServiceLimits,
        on_failover: Callable[[str, str], None],
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        """Run `cfg` through `driver` within `limits`; `on_failover(name, reason)` asks the
        machine for a switchover when restarting here is not enough."""
        self.cfg = cfg
        self.name = f"resource {cfg.name}"
        # The `[[resource]]` name (what `takeover cleanup` takes).
        self.resource = cfg.name
        self.driver = driver
        self.limits = limits
        self.on_failover = on_failover
        self.clock = clock
        self.wall = wall
        # Seconds a release (stop) may take (takeover.deadlines; ResourceList reads it).
        self.release_budget = limits.stop_budget()
        self.held = False
        self.state = "unknown"
        self.failures = 0
        self.blocked = ""
        self.budget = RestartBudget(cfg.max_restarts, cfg.restart_window)
        self.last_monitor: dict[str, Any] | None = None
        self.last_error: dict[str, Any] | None = None
        self._lock = asyncio.Lock()
        self._monitor: asyncio.Task[None] | None = None

    # -- actions ------------------------------------------------------------------------------
    async def _act(self, action: str, timeout: float) -> ActionResult:
        res = await self.driver.act(action, timeout)
        level = logging.INFO if res.outcome in {Outcome.RUNNING, Outcome.STOPPED} else logging.ERROR
        if action != "monitor" or level == logging.ERROR:
            log.log(level, "resource.%s name=%s result=%s", action, self.cfg.name, res.text())
        if action == "monitor":
            self.last_monitor = {
                "result": res.meaning.name,
                "outcome": res.outcome.value,
                "exit": res.code,
                "at": self.wall(),
            }
            self.state = res.outcome.value
        if level == logging.ERROR:
            self._record_error(res)
        return res

    def _record_error(self, res: ActionResult) -> None:
        self.last_error = {
            "action": res.action,
            "result": res.meaning.name,
            "exit": res.code,
            "reason": res.meaning.reason,
            "output": res.output,
            "at": self.wall(),
        }
        if res.outcome is Outcome.MISCONFIGURED:
            # Not retried: the same configuration fails the same way until it is fixed.
            self.blocked = res.text()

    async def probe(self) -> Outcome:
        """Monitor once (at start-up): is it running here? Sets `held` when something is."""
        async with self._lock:
            res = await self._act("monitor", self.limits.monitor_timeout)
        # A failed monitor leaves something to clean up (a stop); a hard error: nothing runs.
        self.held = res.outcome in {Outcome.RUNNING, Outcome.FAILED}
        return res.outcome

    async def _start(self) -> None:
        if self.blocked:
            blocked = ActionResult("start", ocf.OCF_EXIT[6], None, self.blocked)
            raise ServiceError(self.name, blocked)
        probe = await self._act("monitor", self.limits.monitor_timeout)
        if probe.outcome is Outcome.RUNNING:
            log.info("resource.adopted name=%s", self.cfg.name)
            return
        res = await self._act("start", self.limits.start_timeout)
        if res.outcome is not Outcome.RUNNING:
            raise ServiceError(self.name, res)
        confirm = await self._act("monitor", self.limits.monitor_timeout)
        if confirm.outcome is not Outcome.RUNNING:
            raise ServiceError(self.name, confirm)

    async def _stop(self) -> None:
        res = await self._act("stop", self.limits.stop_timeout)
        if not ocf.stop_succeeded(res.meaning):
            # The node may still run it: the caller's failure sends the machine to FAULT.
            self.held = True
            raise ServiceError(self.name, res)
        self.held = False
        self.state = Outcome.STOPPED.value

    async def acquire(self) -> None:
        """Start it (adopting it when it already runs), confirm, then watch it."""
        self.held = True
        async with self._lock:
            await self._start()
        self.budget = self.budget.reset()
        self.state = Outcome.RUNNING.value
        self._watch()

    async def release(self) -> None:
        """Stop watching, then stop it; raise ServiceError when the stop fails or times out."""
        self._unwatch()
        async with self._lock:
            await self._stop()

    async def announce(self) -> None:
        """Nothing to announce: the VIPs do."""

    def cleanup(self) -> None:
        """Forget the configuration error and the failures (`takeover cleanup`), as
        crm_resource --cleanup does; the last error stays in status as history."""
        self.blocked = ""
        self.failures = 0
        self.budget = self.budget.reset()

    def runs_here(self) -> bool:
        """Return whether the last look found it running (or failed) here."""
        return self.held

    # -- monitor ------------------------------------------------------------------------------
    def _watch(self) -> None:
        if self._monitor is None:
            self._monitor = asyncio.ensure_future(self._monitor_loop())

    def _unwatch(self) -> None:
        if self._monitor is not None:
            self._monitor.cancel()
            self._monitor = None

    async def _monitor_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.monitor_interval)
            if not await self.check():
                self._monitor = None
                return

    async def check(self) -> bool:
        """Monitor once; restart or ask for a failover on a failure. True: watch on."""
        async with self._lock:
            res = await self._act("monitor", self.limits.monitor_timeout)
            if res.outcome is Outcome.RUNNING:
                return True
            # Not running while held is a failure, even when the agent calls it clean.
            self.failures += 1
            self._record_error(res)
            return await self._recover(res)

    async def _recover(self, res: ActionResult) -> bool:
        """Restart in place within the budget; else ask for a failover. True: watch on."""
        reason = res.text()
        verdict, self.budget = self.budget.on_crash(self.clock())
        if res.outcome in {Outcome.FAILED_HERE, Outcome.MISCONFIGURED}:
            # A hard error: a restart here would fail the same way.
            verdict = CrashVerdict.FAILOVER
        if verdict is CrashVerdict.RESTART:
            log.warning(
                "resource.restart name=%s restarts=%d max=%d reason=%s",
                self.cfg.name,
                len(self.budget.restarts),
                self.cfg.max_restarts,
                reason,
            )
            try:
                await self._stop()
                self.held = True
                await self._start()
                self.state = Outcome.RUNNING.value
                return True
            except ServiceError as err:
                reason = str(err)
        log.error("resource.failover name=%s reason=%s", self.cfg.name, reason)
        self.on_failover(self.name, reason)
        return False

    def describe(self) -> dict[str, Any]:
        """Return the status view: type and agent, state here, monitor, restarts, last error."""
        return {
            "kind": "service",
            "name": self.cfg.name,
            "type": self.cfg.type,
            "agent": self.cfg.label,
            "held": self.held,
            "state": self.state,
            "last_monitor": self.last_monitor,
            "restarts": len(self.budget.recent(self.clock())),
            "max_restarts": self.cfg.max_restarts,
            "failures": self.failures,
            "last_error": self.last_error,
            "blocked": self.blocked or None,
        }


async def service_items(
    resources: Sequence[ResourceConfig], on_failover: Callable[[str, str], None]
) -> list[ServiceItem]:
    """Return one probed ServiceItem per resource, timeouts filled in from the meta-data.

    Each is monitored once now: what already runs here goes into the start-up decision.
    """
    out = []
    for given in resources:
        driver = Driver(given)
        cfg = driver.cfg = await resolve_timeouts(given, driver)
        (limits,) = service_limits((cfg,))
        item = ServiceItem(cfg, driver, limits, on_failover)
        outcome = await item.probe()
        log.info("resource.probed name=%s outcome=%s", cfg.name, outcome.value)
        out.append(item)
    return out


# --- takeover check -----------------------------------------------------------------------------


async def check_resource(cfg: ResourceConfig, index: int, label: str) -> list[str]:
    """Return `takeover check` problems for one resource, each naming file and key.

    OCF: the agent exists and is executable, its meta-data parses, the params are known to
    it and the required ones given, and `validate-all` passes (agents keep it free of side
    effects: it reads the configuration and looks for programs). systemd: the unit is known
    (when systemd answers). command: each program exists and is executable.
    """
    key = f"{label}: resource[{index}]"
    driver = Driver(cfg)
    if cfg.type == "ocf":
        split = ocf.split_agent(cfg.agent)
        assert split is not None
        path = Path(ocf.agent_path(str(cfg.ocf_root), *split))
        if not path.is_file() or not os.access(path, os.X_OK):
            return [f"{key}.agent: no executable agent {path} (is resource-agents installed?)"]
        try:
            meta = await driver.meta_data()
        except (ocf.MetaDataError, OSError) as err:
            return [f"{key}.agent: meta-data of {cfg.agent}: {err}"]
        problems = [f"{key}.params.{p}: {m}" for p, m in ocf.param_problems(meta, cfg.params)]
        if problems:
            return problems
        res = await driver.act("validate-all", cfg.monitor_timeout or meta.timeout("validate-all"))
        if res.outcome is not Outcome.RUNNING:
            return [f"{key}.params: validate-all failed: {res.text()}"]
        return []
    if cfg.type == "systemd":
        res = await driver.run(ocf.systemctl_argv("exists", cfg.unit), None, 10.0)
        if res.code == 0 and res.stdout.strip() == "not-found":
            return [f'{key}.unit: systemd knows no unit "{cfg.unit}"']
        return []
    out = []
    for name in ("start", "stop", "status"):
        program = getattr(cfg, name)[0]
        if shutil.which(program) is None:
            out.append(f"{key}.{name}[0]: {program} is not an executable program")
    return out


async def check_resources(resources: Sequence[ResourceConfig], label: str) -> list[str]:
    """Return the problems of every resource, in file order."""
    out: list[str] = []
    for i, cfg in enumerate(resources):
        out += await check_resource(cfg, i, label)
    return out


__all__ = [
    "ActionResult",
    "Driver",
    "RunResult",
    "ServiceError",
    "ServiceItem",
    "check_resource",
    "check_resources",
    "resolve_timeouts",
    "run_captured",
    "service_items",
]
