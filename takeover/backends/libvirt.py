"""A whole virtual machine as a takeover resource, through libvirt.

`VmResource` starts, stops, watches and live-migrates one domain whose XML lives on shared
storage. Its rules:

- acquire: (re)define from the shared XML unless a copy already runs here, start it, and wait
  until libvirt reports it running (start_timeout).
- release: graceful shutdown, destroy after stop_timeout, then undefine: a node that does not
  own the VM keeps no definition that autostart or an operator could start by mistake.
- reconcile: a node coming back destroys and undefines any copy it still has while the peer
  owns the VM, before anything else (`vmpolicy.reconcile_steps`).
- monitor: lifecycle events (libvirt's default event loop in a thread) plus a periodic check.
  An unexpected stop is restarted in place within the restart budget (`vmpolicy.RestartBudget`);
  beyond it the `on_failover` callback asks the daemon to hand the pair over.
- migrate: live peer-to-peer migration (LIVE|PEER2PEER|PERSIST_DEST|UNDEFINE_SOURCE), aborted
  (virDomainAbortJob) once past migrate_timeout; when it fails or is aborted, stop here and
  (optionally) start on the destination.

Event callbacks and the periodic timer only queue work; one monitor thread acts on it.
libvirt-python is optional at import time: without it, constructing a resource raises VmError.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from takeover.backends.vmpolicy import CrashVerdict, RestartBudget, Undo, reconcile_steps

try:
    import libvirt
except ImportError:  # pragma: no cover - exercised only where libvirt-python is missing
    libvirt = None

if TYPE_CHECKING:
    from takeover.config import VmConfig

log = logging.getLogger(__name__)

# libvirt's domain states (virDomainState), by number, for logs and status.
STATE_NAMES: dict[int, str] = {
    0: "nostate",
    1: "running",
    2: "blocked",
    3: "paused",
    4: "shutdown",
    5: "shut off",
    6: "crashed",
    7: "pmsuspended",
}
# Lifecycle event types (virDomainEventType) by number.
EVENT_NAMES: dict[int, str] = {
    0: "defined",
    1: "undefined",
    2: "started",
    3: "suspended",
    4: "resumed",
    5: "stopped",
    6: "shutdown",
    7: "pmsuspended",
    8: "crashed",
}
RUNNING = 1
PAUSED = 3
# How often waits re-read the domain state, seconds.
POLL = 0.1
# libvirt error code for "no domain with matching name".
ERR_NO_DOMAIN = 42


class VmError(Exception):
    """A VM operation failed; the message names the domain and the step."""


@dataclass(frozen=True)
class VmSpec:
    """One `[[vm]]` entry as seen from one node."""

    # Domain name, as in the XML.
    name: str
    # The domain XML on shared storage.
    xml: Path
    # This node's libvirt URI (what this process connects to).
    uri: str = "qemu:///system"
    # Seconds to wait for the domain to report running after start.
    start_timeout: float = 30.0
    # Seconds to wait for a graceful shutdown before destroying.
    stop_timeout: float = 60.0
    # Whether a planned switchover live-migrates this VM (else stop here, start there).
    migrate: bool = True
    # Seconds a live migration may run before it is aborted (virDomainAbortJob).
    migrate_timeout: float = 120.0
    # Restarts in place allowed within restart_window before failing over.
    max_restarts: int = 3
    # Sliding window for max_restarts, seconds.
    restart_window: float = 300.0
    # Seconds between periodic state checks while monitoring.
    check_interval: float = 2.0
    # Where a planned switchover live-migrates the domain (the peer's libvirtd as this node's
    # libvirtd reaches it); None: stop here and let the peer start it.
    migrate_to: str | None = None

    @classmethod
    def from_config(cls, vm: VmConfig, node: str, peer: str | None = None) -> VmSpec:
        """The spec of a `[[vm]]` entry as node `node` runs it (migrating to `peer`)."""
        return cls(
            migrate_to=vm.migrate_uri_for(peer) if peer is not None else None,
            name=vm.name,
            xml=vm.xml,
            uri=vm.uri_for(node),
            start_timeout=vm.start_timeout,
            stop_timeout=vm.stop_timeout,
            migrate=vm.migrate,
            migrate_timeout=vm.migrate_timeout,
            max_restarts=vm.max_restarts,
            restart_window=vm.restart_window,
        )


@dataclass(frozen=True)
class MigrationResult:
    """How a planned move of the VM went."""

    # "live" (migrated running), "stop-start" (fallback) or "failed".
    method: str
    # True when the VM ended up running at the destination (or was left stopped on purpose).
    ok: bool
    # Seconds the whole operation took.
    elapsed: float
    # Why live migration failed, when it did.
    error: str | None = None


_loop_lock = threading.Lock()
_loop_started = False


def _ensure_event_loop() -> None:
    """Register libvirt's default event loop and run it in a daemon thread (once per process).

    Must happen before the first connection is opened, or that connection delivers no events.
    """
    global _loop_started
    with _loop_lock:
        if _loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()
        # libvirt prints every error to stderr by default; ours are raised and logged instead.
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _loop_started = True


def _err_code(exc: BaseException) -> int | None:
    getter = getattr(exc, "get_error_code", None)
    return int(getter()) if callable(getter) else None


class VmResource:
    """One libvirt domain held (or not) by this node."""

    def __init__(
        self,
        spec: VmSpec,
        *,
        # Called (name, reason) from the monitor thread when restarts are exhausted; an asyncio
        # daemon hands it on with loop.call_soon_threadsafe.
        on_failover: Callable[[str, str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if libvirt is None:
            raise VmError(
                f"vm {spec.name}: libvirt-python is not installed (pip install hapair[libvirt])"
            )
        self.spec = spec
        self._on_failover = on_failover
        self._clock = clock
        self._lock = threading.RLock()
        self._conn: Any = None
        self._callback_id: int | None = None
        # True while this node is supposed to run the domain (between acquire and release).
        self._held = False
        self._budget = RestartBudget(spec.max_restarts, spec.restart_window)
        self._failed: str | None = None
        self._last_event: str | None = None
        self._queue: queue.Queue[str] = queue.Queue()
        # Set by the timer that aborted the latest migration.
        self._aborted = False
        self._monitor: threading.Thread | None = None
        self._stop_monitor = threading.Event()

    # -- connection ---------------------------------------------------------------------
    def _connection(self) -> Any:
        with self._lock:
            if self._conn is not None:
                try:
                    if self._conn.isAlive():
                        return self._conn
                except libvirt.libvirtError:
                    pass
                log.info("vm.reconnect name=%s uri=%s", self.spec.name, self.spec.uri)
                self._conn = None
                self._callback_id = None
            _ensure_event_loop()
            try:
                conn = libvirt.open(self.spec.uri)
            except libvirt.libvirtError as exc:
                raise VmError(
                    f"vm {self.spec.name}: cannot connect to {self.spec.uri}: {exc}"
                ) from exc
            # Keepalive lets a dead libvirtd show up as a dead connection within ~15 s. Drivers
            # without a daemon (test:///) do not support it and need none.
            with contextlib.suppress(libvirt.libvirtError):
                conn.setKeepAlive(5, 3)
            self._conn = conn
            if self._monitor is not None:
                self._register_events(conn)
            return conn

    def _register_events(self, conn: Any) -> None:
        if self._callback_id is not None:
            return
        self._callback_id = conn.domainEventRegisterAny(
            None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle, None
        )

    def _on_lifecycle(self, _conn: Any, dom: Any, event: int, detail: int, _opaque: Any) -> None:
        # Runs on the event-loop thread: record and queue only, never call back into libvirt.
        if dom.name() != self.spec.name:
            return
        self._last_event = f"{EVENT_NAMES.get(event, str(event))}/{detail}"
        log.info(
            "vm.event name=%s event=%s detail=%d",
            self.spec.name,
            EVENT_NAMES.get(event, event),
            detail,
        )
        self._queue.put("event")

    def _lookup(self) -> Any | None:
        try:
            return self._connection().lookupByName(self.spec.name)
        except libvirt.libvirtError as exc:
            if _err_code(exc) == ERR_NO_DOMAIN:
                return None
            raise VmError(f"vm {self.spec.name}: lookup on {self.spec.uri}: {exc}") from exc

    def _state(self, dom: Any) -> int:
        return int(dom.state()[0])

    # -- acquire / release --------------------------------------------------------------
    def acquire(self) -> None:
        """Define (from the shared XML) and start the domain here; wait until it runs."""
        started = self._clock()
        with self._lock:
            self._held = True
            self._failed = None
            self._budget = self._budget.reset()
            try:
                self._bring_up(started)
            except (VmError, libvirt.libvirtError) as exc:
                # Not held: the monitor must not keep restarting what the daemon saw fail.
                self._held = False
                if isinstance(exc, VmError):
                    raise
                raise VmError(f"vm {self.spec.name}: acquire on {self.spec.uri}: {exc}") from exc
        log.info(
            "vm.acquired name=%s uri=%s elapsed=%.3f",
            self.spec.name,
            self.spec.uri,
            self._clock() - started,
        )

    def _bring_up(self, started: float) -> None:
        dom = self._lookup()
        if dom is not None and dom.isActive():
            state = self._state(dom)
            log.info(
                "vm.adopt name=%s uri=%s state=%s",
                self.spec.name,
                self.spec.uri,
                STATE_NAMES.get(state),
            )
            if state == PAUSED:
                # Left paused by an interrupted migration or an operator: run it.
                dom.resume()
        else:
            if dom is not None:
                # The shared XML is authoritative: replace whatever definition is here
                # (an XML without <uuid> could not redefine it in place).
                self._undefine(dom)
            dom = self._define()
            self._start(dom)
        self._wait_running(dom, started)

    def _define(self) -> Any:
        try:
            xml = self.spec.xml.read_text()
        except OSError as exc:
            raise VmError(
                f"vm {self.spec.name}: cannot read {self.spec.xml}: {exc.strerror}"
            ) from exc
        # Checked before libvirt sees it, so a wrong file defines nothing on this node.
        try:
            name = ET.fromstring(xml).findtext("name")
        except ET.ParseError as exc:
            raise VmError(f"vm {self.spec.name}: {self.spec.xml}: not valid XML: {exc}") from exc
        if name != self.spec.name:
            raise VmError(f"vm {self.spec.name}: {self.spec.xml} defines domain {name!r}")
        try:
            dom = self._connection().defineXML(xml)
        except libvirt.libvirtError as exc:
            raise VmError(f"vm {self.spec.name}: define from {self.spec.xml}: {exc}") from exc
        log.info("vm.defined name=%s uri=%s xml=%s", self.spec.name, self.spec.uri, self.spec.xml)
        return dom

    def _start(self, dom: Any) -> None:
        try:
            dom.create()
        except libvirt.libvirtError as exc:
            raise VmError(f"vm {self.spec.name}: start on {self.spec.uri}: {exc}") from exc
        log.info("vm.started name=%s uri=%s", self.spec.name, self.spec.uri)

    def _wait_running(self, dom: Any, since: float) -> None:
        deadline = since + self.spec.start_timeout
        while self._state(dom) != RUNNING:
            if self._clock() > deadline:
                state = STATE_NAMES.get(self._state(dom), "?")
                raise VmError(
                    f"vm {self.spec.name}: not running after "
                    f"{self.spec.start_timeout:g}s (state {state})"
                )
            time.sleep(POLL)

    def release(self) -> None:
        """Shut the domain down gracefully, destroy it after stop_timeout, then undefine it."""
        started = self._clock()
        with self._lock:
            self._held = False
            dom = self._lookup()
            if dom is None:
                log.info("vm.released name=%s uri=%s absent=true", self.spec.name, self.spec.uri)
                return
            if dom.isActive():
                self._shutdown(dom)
            self._undefine(dom)
        log.info(
            "vm.released name=%s uri=%s elapsed=%.3f",
            self.spec.name,
            self.spec.uri,
            self._clock() - started,
        )

    def _shutdown(self, dom: Any) -> None:
        try:
            dom.shutdown()
            log.info(
                "vm.shutdown name=%s uri=%s timeout=%g",
                self.spec.name,
                self.spec.uri,
                self.spec.stop_timeout,
            )
        except libvirt.libvirtError as exc:
            log.info("vm.shutdown name=%s refused=%s", self.spec.name, exc)
        deadline = self._clock() + self.spec.stop_timeout
        while dom.isActive():
            if self._clock() > deadline:
                # A guest that ignores ACPI (or hangs) must not hold the handover: pull the plug.
                self._destroy(dom, reason="stop-timeout")
                return
            time.sleep(POLL)

    def _destroy(self, dom: Any, reason: str) -> None:
        try:
            dom.destroy()
        except libvirt.libvirtError as exc:
            if dom.isActive():
                raise VmError(f"vm {self.spec.name}: destroy on {self.spec.uri}: {exc}") from exc
        log.info("vm.destroyed name=%s uri=%s reason=%s", self.spec.name, self.spec.uri, reason)

    def _undefine(self, dom: Any) -> None:
        if not dom.isPersistent():
            return
        flags = (
            libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
            | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
            | libvirt.VIR_DOMAIN_UNDEFINE_KEEP_NVRAM
        )
        try:
            try:
                dom.undefineFlags(flags)
            except libvirt.libvirtError as exc:
                if _err_code(exc) != libvirt.VIR_ERR_INVALID_ARG:
                    raise
                # A driver that knows no NVRAM or managed save rejects those flags.
                dom.undefine()
        except libvirt.libvirtError as exc:
            raise VmError(f"vm {self.spec.name}: undefine on {self.spec.uri}: {exc}") from exc
        log.info("vm.undefined name=%s uri=%s", self.spec.name, self.spec.uri)

    def reconcile(self, owner_elsewhere: bool) -> list[str]:
        """Clear this node's copy when the peer owns the VM; returns the steps taken."""
        with self._lock:
            dom = self._lookup()
            if dom is None:
                return []
            steps = reconcile_steps(
                active=bool(dom.isActive()),
                persistent=bool(dom.isPersistent()),
                owner_elsewhere=owner_elsewhere,
            )
            for step in steps:
                if step is Undo.DESTROY:
                    self._held = False
                    self._destroy(dom, reason="reconcile")
                elif step is Undo.UNDEFINE:
                    self._undefine(dom)
            if steps:
                log.info(
                    "vm.reconciled name=%s uri=%s steps=%s",
                    self.spec.name,
                    self.spec.uri,
                    ",".join(steps),
                )
            return [str(s) for s in steps]

    # -- monitor --------------------------------------------------------------------------
    def start_monitor(self) -> None:
        """Watch the domain: lifecycle events plus a check every check_interval seconds."""
        with self._lock:
            if self._monitor is not None:
                return
            self._stop_monitor.clear()
            self._monitor = threading.Thread(
                target=self._monitor_loop, name=f"vm-{self.spec.name}", daemon=True
            )
            self._register_events(self._connection())
            self._monitor.start()

    def stop_monitor(self) -> None:
        """Stop watching (events deregistered, thread joined)."""
        with self._lock:
            thread, self._monitor = self._monitor, None
            if self._conn is not None and self._callback_id is not None:
                with contextlib.suppress(libvirt.libvirtError):
                    self._conn.domainEventDeregisterAny(self._callback_id)
                self._callback_id = None
        if thread is not None:
            self._stop_monitor.set()
            self._queue.put("stop")
            thread.join(timeout=10)

    def _monitor_loop(self) -> None:
        while not self._stop_monitor.is_set():
            with contextlib.suppress(queue.Empty):
                self._queue.get(timeout=self.spec.check_interval)
            if self._stop_monitor.is_set():
                return
            try:
                self.check()
            except (VmError, libvirt.libvirtError) as exc:
                # libvirtd away or restarting: the next check reconnects and looks again.
                log.warning("vm.check_failed name=%s error=%s", self.spec.name, exc)
            except Exception:
                # The watcher must outlive any surprise; say so loudly and keep watching.
                log.exception("vm.check_crashed name=%s", self.spec.name)

    def check(self) -> str:
        """Compare the domain with what this node should run; restart or fail over if needed.

        Returns "idle" (not held), "ok", "restarted", "failover" or "failed" (given up earlier).
        """
        with self._lock:
            if not self._held:
                return "idle"
            if self._failed is not None:
                return "failed"
            dom = self._lookup()
            if dom is not None and self._state(dom) == RUNNING:
                return "ok"
            state = "absent" if dom is None else STATE_NAMES.get(self._state(dom), "?")
            verdict, self._budget = self._budget.on_crash(self._clock())
            if verdict is CrashVerdict.RESTART:
                log.info(
                    "vm.restart name=%s uri=%s state=%s restarts=%d max=%d",
                    self.spec.name,
                    self.spec.uri,
                    state,
                    len(self._budget.restarts),
                    self.spec.max_restarts,
                )
                try:
                    # Restart in place: the definition this node runs stays as it is.
                    if dom is None:
                        dom = self._define()
                    if not dom.isActive():
                        self._start(dom)
                    self._wait_running(dom, self._clock())
                    return "restarted"
                except VmError as exc:
                    # Counted as a restart; the next check decides again.
                    log.warning("vm.restart_failed name=%s error=%s", self.spec.name, exc)
                    return "restarted"
            reason = (
                f"{self.spec.max_restarts} restarts in {self.spec.restart_window:g}s, state {state}"
            )
            self._failed = reason
            log.warning(
                "vm.failover_needed name=%s uri=%s reason=%s", self.spec.name, self.spec.uri, reason
            )
        if self._on_failover is not None:
            self._on_failover(self.spec.name, reason)
        return "failover"

    # -- migration -----------------------------------------------------------------------
    def migrate(self, dest_uri: str, fallback: VmResource | None = None) -> MigrationResult:
        """Live-migrate to `dest_uri` (as this node's libvirtd reaches the peer's).

        On failure, stop the domain here; if `fallback` (the destination's resource) is given,
        acquire it there. The daemon passes None and lets the peer acquire on its own.
        """
        started = self._clock()
        flags = (
            libvirt.VIR_MIGRATE_LIVE
            | libvirt.VIR_MIGRATE_PEER2PEER
            | libvirt.VIR_MIGRATE_PERSIST_DEST
            | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
        )
        with self._lock:
            dom = self._lookup()
            if dom is None or not dom.isActive():
                raise VmError(
                    f"vm {self.spec.name}: not running on {self.spec.uri}, nothing to migrate"
                )
            # From here a stop of the local copy is expected, not a crash.
            self._held = False
            self._aborted = False
            error: str | None = None
            timer = threading.Timer(self.spec.migrate_timeout, self._abort_migration, (dom,))
            timer.daemon = True
            timer.start()
            try:
                dom.migrateToURI3(dest_uri, {}, flags)
            except libvirt.libvirtError as exc:
                error = str(exc)
            finally:
                timer.cancel()
            if error is not None and self._aborted:
                error = f"past its budget of {self.spec.migrate_timeout:g} s, aborted: {error}"
            if error is None:
                elapsed = self._clock() - started
                log.info(
                    "vm.migrated name=%s from=%s to=%s method=live elapsed=%.3f",
                    self.spec.name,
                    self.spec.uri,
                    dest_uri,
                    elapsed,
                )
                return MigrationResult("live", True, elapsed)
            log.warning("vm.migrate_failed name=%s to=%s error=%s", self.spec.name, dest_uri, error)
            self.release()
        if fallback is None:
            return MigrationResult("stop-start", True, self._clock() - started, error)
        try:
            fallback.acquire()
        except VmError as exc:
            log.warning("vm.fallback_failed name=%s error=%s", self.spec.name, exc)
            return MigrationResult("failed", False, self._clock() - started, f"{error}; then {exc}")
        elapsed = self._clock() - started
        log.info(
            "vm.migrated name=%s from=%s to=%s method=stop-start elapsed=%.3f",
            self.spec.name,
            self.spec.uri,
            fallback.spec.uri,
            elapsed,
        )
        return MigrationResult("stop-start", True, elapsed, error)

    def _abort_migration(self, dom: Any) -> None:
        """Abort a migration past its budget (from a timer thread): the caller falls back."""
        self._aborted = True
        log.warning(
            "vm.migrate_abort name=%s timeout=%g", self.spec.name, self.spec.migrate_timeout
        )
        try:
            dom.abortJob()
        except libvirt.libvirtError as exc:
            # Finished in the meantime, or libvirtd gone: migrateToURI3 returns either way.
            log.warning("vm.migrate_abort_failed name=%s error=%s", self.spec.name, exc)

    def hand_over(self) -> MigrationResult | None:
        """Release for a planned switchover: live-migrate to the peer when allowed, else stop.

        The peer's acquire then adopts the migrated copy (or starts its own after a stop).
        Returns the migration's result, or None when the domain was simply released.
        """
        with self._lock:
            dom = self._lookup()
            running = dom is not None and self._state(dom) == RUNNING
        if not (running and self.spec.migrate and self.spec.migrate_to):
            self.release()
            return None
        return self.migrate(self.spec.migrate_to)

    # -- status -------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """Name, where it runs, its state and the restart record, for `takeover status`."""
        info: dict[str, Any] = {
            "name": self.spec.name,
            "uri": self.spec.uri,
            "held": self._held,
            "restarts": len(self._budget.recent(self._clock())),
            "max_restarts": self.spec.max_restarts,
            "failed": self._failed,
            "last_event": self._last_event,
        }
        try:
            dom = self._lookup()
            if dom is None:
                info.update(where="absent", state="undefined", persistent=False)
            else:
                state = self._state(dom)
                info.update(
                    where="here" if state == RUNNING else "defined",
                    state=STATE_NAMES.get(state, str(state)),
                    persistent=bool(dom.isPersistent()),
                )
        except (VmError, libvirt.libvirtError) as exc:
            info.update(where="unknown", state="unknown", error=str(exc))
        return info

    def close(self) -> None:
        """Stop monitoring and close the connection."""
        self.stop_monitor()
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(libvirt.libvirtError):
                    self._conn.close()
                self._conn = None
