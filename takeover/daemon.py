"""The takeover daemon: an asyncio loop that feeds facts to the machine and runs its actions.

The loop decides nothing (STYLE.md "Decide, then do"). It waits for the next event or the
next deadline (heartbeat send, `next_deadline()`, status refresh), steps the machine, and
hands each action to an executor. Effects (addresses, announcements, probes, fencing,
heartbeat sockets) come in as constructor arguments following the protocols below, so the
same daemon runs against the real effects in the lab and against recording fakes in unit
tests (takeover/testing.py).

Slow effects run as tasks and report back as events; acquire and release are serialised by
one lock, so a release asked for during an acquire starts after it and undoes all of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import socket
import time
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from takeover import deadlines, drift
from takeover import machine as m
from takeover.arbitration import Outcome, Reachability, fresh_down
from takeover.control import ControlServer, role_event, socket_path
from takeover.fsutil import write_atomic
from takeover.health import CheckSpec, HealthMonitor
from takeover.heartbeat import PeerRecord, SequenceFloor
from takeover.hooks import Hook, HookRunner
from takeover.lease import Op
from takeover.reloadplan import Plan, ReloadRefused
from takeover.startup import Decision, Held, PeerAdvert, decide
from takeover.status import (
    link_conditions,
    process_start,
    reload_conditions,
    remove_status,
    status_path,
    write_status,
)
from takeover.wire import Heartbeat, Receiver, encode

log = logging.getLogger(__name__)

EPOCH_NAME = "takeover.epoch"
# Present while the pair is in maintenance mode: a restart must not act either.
MAINTENANCE_NAME = "takeover.maintenance"
# A loop iteration later than interval + this share of deadtime counts as a stall.
STALL_FRACTION = 0.5
# How many transitions status keeps.
HISTORY = 20


# ---------------------------------------------------------------------------------------------
# Effect protocols


class Resources(Protocol):
    """The ordered resource list: addresses (with announcements), then VMs."""

    async def acquire(self) -> None:
        """Acquire everything in order; raise (after rolling back) on failure."""
        ...

    async def release(self, handover: bool = False) -> None:
        """Release everything in reverse order; idempotent; raise if something stays held.

        `handover`: a planned switchover to a live standby peer; resources that can move
        themselves (live migration) do so instead of stopping.
        """
        ...

    async def announce(self) -> None:
        """Announce every held VIP again."""
        ...

    def describe(self) -> list[dict[str, Any]]:
        """Return one dict per VIP/VM for status: address/name, interface, held; VMs have
        kind "vm"."""
        ...


class TargetProber(Protocol):
    """ICMP probes of the ping list."""

    @property
    def targets(self) -> Sequence[str]:
        """Return the ping list."""
        ...

    async def probe(self) -> dict[str, list[Outcome]]:
        """Probe every target (a few tries, bounded) and return the outcomes per target."""
        ...


class GuardProber(Protocol):
    """The VIP guard: is some other MAC answering for a VIP?"""

    async def probe(self) -> str | None:
        """Return the MAC of another host answering for any VIP, or None."""
        ...


class Fencer(Protocol):
    """Powers the peer off."""

    async def fence(self, peer: str) -> tuple[bool, str]:
        """Power `peer` off and confirm; return (ok, detail)."""
        ...

    def describe(self) -> dict[str, Any]:
        """Return the fencing device and its recent results (with attempts) for status."""
        ...


class Links(Protocol):
    """The heartbeat transport (takeover.heartbeat.HeartbeatLinks): one socket per link.

    Built by a `LinksFactory` from the daemon's Receiver and heartbeat callback, so the
    sockets are bound at start-up and every datagram is authenticated before it reaches us.
    """

    def start(self) -> None:
        """Start reading every link from the running loop."""
        ...

    def send(self, make: Callable[[], bytes]) -> int:
        """Send one datagram per link, each from a fresh `make()`; return how many went."""
        ...

    def drain(self) -> int:
        """Read and hand over every datagram queued right now; return how many."""
        ...

    def stats(self) -> dict[str, dict[str, object]]:
        """Per link: last_seen_age, received, sent, send_errors, dropped."""
        ...

    def close(self) -> None:
        """Close every link."""
        ...


LinksFactory = Callable[[Receiver, Callable[[str, Heartbeat], None]], Links]


class WitnessLink(Protocol):
    """The link to the witness (takeover.witnessclient.WitnessClient)."""

    def start(self) -> None:
        """Open the socket and read answers on the running loop."""
        ...

    def request(self, op: Op, now: float) -> None:
        """Send one request; its answer comes back as a WitnessAnswer event."""
        ...

    def stats(self) -> dict[str, Any]:
        """Return the address, what was asked last, and the counters."""
        ...

    def close(self) -> None:
        """Close the socket."""
        ...


# (boot id, next sequence number, event sink) -> the witness link.
WitnessFactory = Callable[[bytes, Callable[[], int], Callable[[m.Event], None]], WitnessLink]


class Startup(Protocol):
    """What this node holds at start-up, muted until the start-up decision is carried out."""

    def held(self) -> Held:
        """Return the VIPs and running guests this node holds now."""
        ...

    async def mute(self) -> None:
        """Keep every held VIP from being answered or announced until `settle`."""
        ...

    async def settle(self, decision: Decision) -> bool:
        """Carry out `decision` per resource, then unmute; return whether nothing is held."""
        ...


class Reloader(Protocol):
    """Re-reads every file and carries a reload plan out on the effects (runtime.Reloader)."""

    def load(self, maintenance: bool) -> tuple[Plan, DaemonConfig]:
        """Read and validate every file; return the plan and the daemon's new configuration.

        Raise ReloadRefused naming file and key when a file is invalid or the plan refuses
        (restart to apply); nothing has changed then.
        """
        ...

    async def apply(self, acquire: bool) -> None:
        """Carry the plan `load` returned out: release removed resources, add new ones and,
        with `acquire` (this node is active), acquire and announce them; the rest untouched."""
        ...


class Notifier(Protocol):
    """sd_notify sink."""

    def notify(self, message: str) -> None:
        """Send one notification (e.g. "READY=1")."""
        ...


Watcher = Callable[[Callable[[m.Event], None]], Coroutine[Any, Any, None]]


class SdNotify:
    """sd_notify(3) over $NOTIFY_SOCKET; a no-op when not started by systemd."""

    def __init__(self, address: str | None) -> None:
        """Notify `address` (a path, or "@name" for the abstract namespace), or nobody."""
        self.address = None
        if address:
            self.address = "\0" + address[1:] if address.startswith("@") else address

    @classmethod
    def from_env(cls) -> SdNotify:
        """Return a notifier for $NOTIFY_SOCKET."""
        return cls(os.environ.get("NOTIFY_SOCKET"))

    def notify(self, message: str) -> None:
        """Send `message`; failures are logged, never raised (systemd may be gone)."""
        if self.address is None:
            return
        try:
            # A socket per message: they are rare (READY, STATUS, WATCHDOG every few seconds).
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(message.encode(), self.address)
        except OSError as err:
            log.warning("sd_notify.failed error=%s", err)


def watchdog_period() -> float | None:
    """Return how often to send WATCHDOG=1 (half of $WATCHDOG_USEC), or None if unset."""
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec or not usec.isdigit() or int(usec) == 0:
        return None
    return int(usec) / 2e6


# ---------------------------------------------------------------------------------------------
# Epoch persistence


def load_epoch(state_dir: Path) -> int:
    """Return the persisted epoch (0 when none); raise ValueError if the file is corrupt."""
    path = state_dir / EPOCH_NAME
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return 0
    if not text.isdigit():
        raise ValueError(f"{path}: not a non-negative integer: {text[:20]!r}")
    return int(text)


def store_epoch(state_dir: Path, epoch: int) -> None:
    """Persist `epoch` atomically and durably (it decides double-active conflicts)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(state_dir / EPOCH_NAME, f"{epoch}\n", durable=True)


def load_maintenance(state_dir: Path) -> bool:
    """Return whether the pair was left in maintenance mode (the file is there)."""
    return (state_dir / MAINTENANCE_NAME).exists()


def store_maintenance(state_dir: Path, on: bool) -> None:
    """Persist the maintenance mode durably: a file while on, none while off."""
    path = state_dir / MAINTENANCE_NAME
    if on:
        state_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(path, "on\n", durable=True)
    else:
        path.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# The daemon


@dataclass(frozen=True)
class DaemonConfig:
    """What the daemon needs besides the machine parameters; cli.py maps the cluster file."""

    params: m.MachineParams
    # Cluster name, shown in status.
    cluster: str
    # Shared HMAC key.
    key: bytes
    # Truncated digest of the cluster file, carried in heartbeats.
    digest: bytes
    # Status file and control socket.
    run_dir: Path
    # Persisted epoch.
    state_dir: Path
    # Seconds between two rounds of background pings.
    probe_interval: float = 1.0
    # Seconds a target's state must hold before the score changes.
    dampen: float = 3.0
    # Seconds between status file rewrites (besides every transition).
    status_interval: float = 1.0
    hooks: tuple[Hook, ...] = ()
    checks: tuple[CheckSpec, ...] = ()
    # Keyed digest of each section of the cluster file (takeover.drift), told to a peer
    # whose configuration digest differs.
    sections: Mapping[str, bytes] = field(default_factory=dict)
    # Release inhibitors every planned release waits for, subscribed or not (mirrord's, when
    # the cluster file has a [mirror] table).
    expected_inhibitors: tuple[str, ...] = ()


@dataclass
class Effects:
    """The effect objects the daemon drives."""

    links: LinksFactory
    resources: Resources
    prober: TargetProber
    guard: GuardProber
    fencer: Fencer | None = None
    notifier: Notifier = field(default_factory=SdNotify.from_env)
    # Background watchers (carrier of the service interfaces ...): each runs until cancelled
    # and reports what it sees through the callback it is given.
    watchers: Sequence[Watcher] = ()
    # What was found held at start-up (probe first, then decide); None: only VIPs' "held".
    startup: Startup | None = None
    # Re-reads the files on SIGHUP; None: a reload changes nothing (logged).
    reloader: Reloader | None = None
    # The witness; None without a [witness] table.
    witness: WitnessFactory | None = None
    # Stores the epoch durably; runs in a thread (store_epoch; a test slows it down).
    epoch_store: Callable[[Path, int], None] = store_epoch


class Daemon:
    """One node's takeover daemon."""

    def __init__(
        self,
        cfg: DaemonConfig,
        effects: Effects,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        """Wire `cfg` and `effects`; nothing is opened until `run()` or `start()`."""
        self.cfg = cfg
        self.fx = effects
        self.clock = clock
        self.wall = wall
        p = cfg.params
        # What a killed predecessor left behind: a node holding nothing says so in its
        # heartbeats, and the peer need not wait for its release. What is held stays muted
        # until the start-up decision (takeover.startup) says what to keep.
        self.found = effects.startup.held() if effects.startup is not None else Held()
        held = bool(self.found) or any(item.get("held") for item in effects.resources.describe())
        self.state = m.initial_state(
            p,
            clock(),
            epoch=load_epoch(cfg.state_dir),
            clean=not held,
            deciding=bool(self.found),
            maintenance=load_maintenance(cfg.state_dir),
        )
        # The start-up decision has begun (muted, the guard asked); in maintenance it waits.
        self._deciding_begun = False
        # The VIP guard's verdict at start-up (None while its probe is out), and whether the
        # decision is being carried out.
        self._found_answered: bool | None = None if p.guard else False
        self._settling = False
        self.boot_id = uuid.uuid4().bytes
        # Sequence numbers start from the wall clock in microseconds, never below the mark an
        # earlier boot kept: strictly increasing across restarts, which receivers rely on.
        self.seq_floor = SequenceFloor(cfg.state_dir, int(wall() * 1e6))
        self.seq = self.seq_floor.first
        self.receiver = Receiver(cfg.key, (p.node, p.peer), own=p.node, digest=cfg.digest)
        self.peer_record = PeerRecord(cfg.state_dir, p.peer)
        self.peer_record.load(self.receiver)
        self.sent = 0
        self.reach = Reachability(effects.prober.targets, cfg.dampen)
        self.links = effects.links(self.receiver, self._on_heartbeat)
        self.witness = (
            effects.witness(self.boot_id, self._witness_seq, self._emit)
            if effects.witness is not None
            else None
        )
        self._next_witness = 0.0
        self.history: deque[dict[str, Any]] = deque(maxlen=HISTORY)
        # Cumulative since start (the metrics' counters): "OLD->NEW" edges, fencing outcomes.
        self.totals: dict[str, Counter[str]] = {
            "transitions": Counter(),
            "fence_attempts": Counter(),
            # Planned releases that went on without an inhibitor's say, by its name.
            "inhibitor_timeouts": Counter(),
        }
        self.drift = drift.DriftExchange(cfg.sections)
        # The status document last written: what the metrics exporter maps at each scrape.
        self.last_status: dict[str, Any] | None = None
        self.queue: asyncio.Queue[m.Event] = asyncio.Queue()
        self.hooks = HookRunner(cfg.hooks, node=p.node, peer=p.peer)
        self.health = HealthMonitor(cfg.checks, self._health_changed)
        self.control = ControlServer(
            socket_path(cfg.run_dir), self, expected=cfg.expected_inhibitors
        )
        self.stop_requested = False
        self.reload_requested = False
        # The last reload's outcome for status: when, ok, what changed or the problems.
        self.last_reload: dict[str, Any] | None = None
        self.ready = False
        self._resource_lock = asyncio.Lock()
        self._probe_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._background: list[asyncio.Task[None]] = []
        self._next_send = 0.0
        self._next_status = 0.0
        self._written_key: tuple[object, ...] = ()
        self._sent_key: tuple[object, ...] = ()
        self._last_iter: float | None = None
        # Epoch writes run in a thread, one at a time and in the order asked.
        self._epoch_lock = asyncio.Lock()
        # When the machine was last ticked: deadlines up to then have had their Tick.
        self._ticked: float | None = None
        self._watchdog = watchdog_period()
        self._last_watchdog = -math.inf

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Open links and the control socket, start hooks, checks and background probes."""
        self.links.start()
        listen_sections = getattr(self.links, "listen_sections", None)
        if listen_sections is not None:
            listen_sections(self._on_sections)
        if self.witness is not None:
            self.witness.start()
        await self.control.start()
        self.hooks.start()
        self.health.start()
        loop = asyncio.get_running_loop()
        self._background.append(loop.create_task(self._probe_loop()))
        for watch in self.fx.watchers:
            self._background.append(loop.create_task(watch(self._emit)))
        if self.state.maintenance:
            log.warning("daemon.maintenance note=nothing_is_acquired_released_or_failed_over")
            # Nothing will be decided until maintenance is off: systemd must not wait for it.
            self.ready = True
            self.fx.notifier.notify("READY=1")
        elif self.state.deciding:
            await self._begin_deciding()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGTERM, self.request_stop)
            loop.add_signal_handler(signal.SIGINT, self.request_stop)
            loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        log.info(
            "daemon.start node=%s peer=%s epoch=%s boot=%s",
            self.cfg.params.node,
            self.cfg.params.peer,
            self.state.epoch,
            self.boot_id.hex(),
        )
        self._write_status()

    async def close(self) -> None:
        """Stop everything started, in reverse; remove the status file and socket."""
        for t in self._background:
            t.cancel()
        for t in list(self._tasks) + self._background:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await self.health.close()
        await self.hooks.close()
        await self.control.close()
        self.links.close()
        if self.witness is not None:
            self.witness.close()
        remove_status(status_path(self.cfg.run_dir))
        self.fx.notifier.notify("STOPPING=1")
        log.info("daemon.stop role=%s", self.state.role.value)

    def request_stop(self) -> None:
        """Signal handler: ask the loop to hand over and exit."""
        self.stop_requested = True
        self.queue.put_nowait(m.Tick())

    def request_reload(self) -> None:
        """Signal handler: ask the loop to re-read the files and apply what changed."""
        self.reload_requested = True
        self.queue.put_nowait(m.Tick())

    async def run(self) -> int:
        """Run until stopped; return the exit status."""
        await self.start()
        try:
            await self._loop()
        finally:
            await self.close()
        return 0

    async def _loop(self) -> None:
        p = self.cfg.params
        stop_deadline: float | None = None
        while True:
            if self.stop_requested:
                if stop_deadline is None:
                    budget = deadlines.stop_deadline(p.release_timeout, p.inhibit_timeout)
                    stop_deadline = self.clock() + budget
                    # systemd would kill us after TimeoutStopSec: a release may take longer.
                    usec = deadlines.extend_timeout_usec(budget + deadlines.EXIT_MARGIN)
                    self.fx.notifier.notify(f"EXTEND_TIMEOUT_USEC={usec}")
                    self._begin_stop()
                if self.state.maintenance:
                    # Maintenance: exit holding what is held; the next daemon keeps it.
                    log.info("daemon.exit_in_maintenance role=%s", self.state.role.value)
                    self._send_heartbeats()
                    return
                if self._may_exit() or self.clock() >= stop_deadline:
                    if not self.state.clean:
                        await self._release_addresses()
                    self._send_heartbeats()
                    return
            await self.iterate()

    def _begin_stop(self) -> None:
        log.info("daemon.stopping role=%s", self.state.role.value)
        if self.state.maintenance:
            return
        if self.state.role is m.Role.ACTIVE:
            # A stop is a planned switchover: give the service away, flush, then exit.
            self.handle(m.OperatorStandby(force=True))
        else:
            # Keep the peer from electing us while we go away.
            self.state = _with_hold(self.state)

    async def _release_addresses(self) -> None:
        """Let the VIPs go before exiting while something may still be held (a hung VM).

        A node that exits holding a VIP keeps answering for it through its kernel: the
        peer's guard sees it answered and never takes over.
        """
        release = getattr(self.fx.resources, "release_addresses", None)
        if release is None:
            return
        try:
            await asyncio.wait_for(release(), deadlines.VIP_MARGIN)
        except Exception as err:
            log.error("daemon.exit_release_failed role=%s error=%s", self.state.role.value, err)
        else:
            log.warning("daemon.exit_released_addresses role=%s", self.state.role.value)

    def _may_exit(self) -> bool:
        return self.state.role not in {m.Role.ACTIVE, m.Role.RELEASING}

    async def iterate(self) -> None:
        """Wait for one event or the next deadline, then step and act (one loop iteration)."""
        deadline = self.next_wake()
        timeout = max(0.0, deadline - self.clock())
        ev: m.Event | None
        try:
            ev = await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            ev = None
        self.pump(ev)

    def pump(self, first: m.Event | None = None) -> None:
        """Process `first` and every queued event, then tick, send and refresh as due."""
        now = self.clock()
        if self._last_iter is not None:
            lag = now - self._last_iter - self.cfg.params.interval
            if lag > STALL_FRACTION * self.cfg.params.deadtime:
                # Our own loop was late (SIGSTOP, swap, a blocked call): the peer's silence
                # may be ours. The machine waits a grace before trusting its timers.
                log.warning("loop.stalled lag=%.3f", lag)
                self.handle(m.LoopStalled(lag))
                drained = self.links.drain()
                log.info("loop.drained heartbeats=%s", drained)
        self._last_iter = now
        # Before the events: an acquire that failed on a configuration error must block this
        # node (and, through its heartbeat, the peer) before its FAULT is advertised.
        self._check_blocked()
        if first is not None:
            self.handle(first)
        while not self.queue.empty():
            self.handle(self.queue.get_nowait())
        if self.state.deciding and not self.state.maintenance:
            if self._deciding_begun:
                self._try_deciding()
            else:
                self._deciding_begun = True
                self._spawn(self._begin_deciding(after_maintenance=True))
        self._ticked = self.clock()
        self.handle(m.Tick())
        now = self.clock()
        if now >= self._next_send or self._advert_key() != self._sent_key:
            # Also at once when what we advertise changed: the peer must not wait an interval
            # to learn that we let go (its takeover waits for exactly that).
            self._send_heartbeats()
            self._next_send = now + self.cfg.params.interval
        if self.witness is not None and now >= self._next_witness:
            # The active renews, a node that lost its peer claims, the rest ask.
            self.witness.request(m.witness_op(self.state, now), now)
            self._next_witness = now + self.cfg.params.interval
        if now >= self._next_status or self._status_key() != self._written_key:
            self._write_status()
        if self.reload_requested:
            self.reload_requested = False
            self._spawn(self._reload_task())
        self._kick_watchdog(now)

    def next_wake(self) -> float:
        """Return the next time the loop must run even without events."""
        times = [self._next_send, self._next_status]
        if self.witness is not None:
            times.append(self._next_witness)
        if self.state.deciding:
            times.append(self.state.started + self.cfg.params.deadtime)
        d = m.next_deadline(self.state, self._ticked)
        if d is not None:
            times.append(d)
        return min(times)

    # -- reload ----------------------------------------------------------------------------

    async def reload(self) -> bool:
        """Re-read every file and apply the difference (takeover.reloadplan); return success.

        Any problem keeps the old configuration running unchanged: logged at error, named in
        status (file and key). A VIP in both files is never touched.
        """
        if self.fx.reloader is None:
            log.info("reload.unsupported note=restart_to_apply")
            return False
        wall = self.wall()
        try:
            plan, cfg = self.fx.reloader.load(self.state.maintenance)
        except ReloadRefused as err:
            return self._reload_refused(err, wall)
        async with self._resource_lock:
            # After the lock: an acquire or release in progress has finished. Only an active
            # node (not in maintenance) takes what was added; the others just know of it.
            acquire = self.state.role is m.Role.ACTIVE and not self.state.maintenance
            problems = []
            try:
                await self.fx.reloader.apply(acquire)
            except ReloadRefused as err:
                # Found out before anything changed (an interface that is not there).
                return self._reload_refused(err, wall)
            except Exception as err:
                # The new file is in force; what could not be taken is named (status shows
                # the VIP not held) and taken at the next acquire.
                problems.append(f"reload applied, but: {err or type(err).__name__}")
                log.error("reload.apply_failed error=%s", err)
        await self._use_config(cfg, plan)
        log.info("reload.applied changes=%s", ",".join(plan.changes()))
        self.last_reload = {"time": wall, "ok": not problems, "changes": plan.changes()}
        if problems:
            self.last_reload["problems"] = problems
        self._write_status()
        return not problems

    def _reload_refused(self, err: ReloadRefused, wall: float) -> bool:
        """Keep the old configuration; log each problem and show them in status."""
        for problem in err.problems:
            log.error("reload.failed problem=%s", problem)
        self.last_reload = {"time": wall, "ok": False, "problems": list(err.problems)}
        self._write_status()
        return False

    async def _reload_task(self) -> None:
        await self.reload()

    async def _use_config(self, cfg: DaemonConfig, plan: Plan) -> None:
        """Run on with `cfg`: the machine's parameters, ping list, hooks and checks."""
        self.cfg = cfg
        self.state = replace(self.state, params=cfg.params)
        # A [mirror] table added or removed: the next release waits for mirrord, or not.
        self.control.inhibitors.expected = frozenset(cfg.expected_inhibitors)
        self.receiver.digest = cfg.digest
        self.drift.ours = dict(cfg.sections)
        self.reach.retarget(self.fx.prober.targets, cfg.dampen)
        p = cfg.params
        if plan.hooks:
            await self.hooks.close()
            self.hooks = HookRunner(cfg.hooks, node=p.node, peer=p.peer)
            self.hooks.start()
        if plan.checks:
            await self.health.close()
            self.health = HealthMonitor(cfg.checks, self._health_changed)
            self.health.start()
        # The next heartbeat goes at the new interval, and carries the new digest.
        self._next_send = min(self._next_send, self.clock() + p.interval)

    # -- start-up: probe first, then decide -------------------------------------------------

    async def _begin_deciding(self, after_maintenance: bool = False) -> None:
        """Tell the peer we are here and hold something, mute it, and ask the LAN who answers.

        Begun at start-up, or when maintenance ends on a node restarted during it: then what
        is held is looked at afresh, and muted only if the peer is not heard (a heard peer
        decides at once, and a mute would be a gap for nothing).
        """
        self._deciding_begun = True
        assert self.fx.startup is not None
        if after_maintenance:
            # Probe first: what is held now, not what was found before maintenance.
            look = getattr(self.fx.startup, "look", None)
            if look is not None:
                await look()
            self.found = self.fx.startup.held()
            if not self.found:
                self._emit(m.StartupDecided(m.Role.STARTING, "maintenance off: nothing held", True))
                return
        log.info(
            "startup.found_held vips=%s guests=%s",
            ",".join(self.found.vips) or "-",
            ",".join(self.found.guests) or "-",
        )
        # Heartbeats first: a peer re-checking a silent node must hear us before its guard
        # can find our VIPs muted and take them over.
        self._send_heartbeats()
        self._next_send = self.clock() + self.cfg.params.interval
        if not (after_maintenance and self.state.peer_alive(self.clock())):
            await self.fx.startup.mute()
        if self._found_answered is None:
            self._spawn(self._startup_guard())

    async def _startup_guard(self) -> None:
        try:
            mac = await self.fx.guard.probe()
        except Exception as err:
            log.error("startup.guard_failed error=%s", err)
            self._found_answered = True
        else:
            log.info("startup.guard answered=%s mac=%s", mac is not None, mac or "-")
            self._found_answered = mac is not None
        self._emit(m.Tick())

    def _try_deciding(self) -> None:
        """Decide once the facts allow it (takeover.startup), then carry the decision out."""
        if self._settling:
            return
        s, now = self.state, self.clock()
        peer = None
        if s.peer is not None and s.peer_alive(now):
            won = m.prefer(m.me_candidate(s), m.peer_candidate(s), s.params.switchover_margin)
            peer = PeerAdvert(s.peer.role, s.peer.holding, won)
        decision = decide(
            self.found,
            peer,
            listened=now - s.started >= s.params.deadtime,
            answered=self._found_answered,
            lan_up=s.lan_up,
        )
        if decision is None:
            return
        self._settling = True
        log.info(
            "startup.decided role=%s reason=%s vips=%s guests=%s",
            decision.role.value,
            decision.reason,
            ",".join(f"{k}:{v.value}" for k, v in decision.vips.items()) or "-",
            ",".join(f"{k}:{v.value}" for k, v in decision.guests.items()) or "-",
        )
        self._spawn(self._settle(decision))

    async def _settle(self, decision: Decision) -> None:
        assert self.fx.startup is not None
        async with self._resource_lock:
            try:
                clean = await self.fx.startup.settle(decision)
            except Exception as err:
                # Whatever is left is released by the machine (or goes to FAULT there).
                log.error("startup.settle_failed error=%s", err)
                clean = False
        self._emit(m.StartupDecided(decision.role, decision.reason, clean))

    # -- the machine -----------------------------------------------------------------------

    def handle(self, ev: m.Event) -> list[m.Action]:
        """Step the machine with `ev` and execute the actions; return them."""
        old = self.state
        self.state, actions = m.step(old, ev, self.clock())
        if self.state.suspected() != old.suspected():
            self._log_suspicion(ev)
        if any(isinstance(a, m.AcquireResources) for a in actions):
            self._claim_now()
        for action in actions:
            self.execute(action)
        if isinstance(ev, _HOLDINGS_CHANGED):
            # Who holds the VIPs changed without a transition: status must say so now.
            self._write_status()
        return actions

    def _log_suspicion(self, ev: m.Event) -> None:
        """Log the start or end of the peer's suspicion (machine.State.suspected)."""
        if self.state.suspected():
            link = ev.link if isinstance(ev, m.HeartbeatCarrier) else ""
            log.warning(
                "peer.suspected link=%s reason=carrier dead_after=%.3f",
                link or "?",
                self.state.dead_after(),
            )
        else:
            why = "carrier_back" if isinstance(ev, m.HeartbeatCarrier) else "heartbeat"
            log.info("peer.unsuspected reason=%s", why)

    def execute(self, a: m.Action) -> None:
        """Carry out one action (slow ones as tasks that report back as events)."""
        if isinstance(a, m.Notify):
            self._on_transition(a)
        elif isinstance(a, m.AcquireResources):
            self._spawn(self._acquire(a.reason))
        elif isinstance(a, m.ReleaseResources):
            self._spawn(self._release(a.reason, self._planned_handover()))
        elif isinstance(a, m.Announce):
            self._spawn(self._announce())
        elif isinstance(a, m.ProbeTargets):
            self._spawn(self._fresh_probe(a.round))
        elif isinstance(a, m.ProbeVipGuard):
            self._spawn(self._guard(a.round))
        elif isinstance(a, m.Fence):
            self._spawn(self._fence(a.peer))
        elif isinstance(a, m.WaitInhibitors):
            self._spawn(self._wait_inhibitors())
        elif isinstance(a, m.PersistEpoch):
            # Off the loop: a takeover adds its VIPs meanwhile; heartbeats wait for it.
            self._spawn(self._persist_epoch(a.epoch))
        elif isinstance(a, m.PersistMaintenance):
            self._maintenance_changed(a.on)
        elif isinstance(a, m.Refused):
            log.info("command.refused command=%s reason=%s", a.command, a.reason)

    def _claim_now(self) -> None:
        """Take the leading VIPs before anything else of a takeover (ResourceList.claim_now).

        Clients wait for the address; the transition's hooks, status and epoch wait for it.
        Not while a release or an acquire still runs: the acquire task then goes in order.
        """
        claim = getattr(self.fx.resources, "claim_now", None)
        if claim is None or self._resource_lock.locked():
            return
        try:
            names = claim()
        except Exception as err:
            # The acquire task tries again, and reports what fails.
            log.error("resources.claim_failed error=%s", err)
            return
        if names:
            log.info("resources.claimed names=%s", ",".join(names))

    def _check_blocked(self) -> None:
        """Tell the machine when a resource became blocked by a configuration error, or not."""
        look = getattr(self.fx.resources, "blocked_resource", None)
        name = look() if look is not None else ""
        if name != self.state.blocked:
            log.log(
                logging.ERROR if name else logging.INFO,
                "resource.config_blocked resource=%s",
                name or "-",
            )
            self.handle(m.ResourceBlocked(name))
            self._write_status()

    def _cleanup(self, resource: object) -> str | None:
        """`takeover cleanup [RESOURCE]`: clear a configuration error here; return a refusal."""
        if resource is not None and not isinstance(resource, str):
            return '"resource" must be a string'
        clear = getattr(self.fx.resources, "cleanup", None)
        if clear is None:
            return "no service resources are configured"
        try:
            cleared = clear(resource or None)
        except KeyError as err:
            return str(err.args[0])
        log.warning("resource.cleanup resources=%s", ",".join(cleared) or "-")
        self._check_blocked()
        self._write_status()
        peer = self.state.peer
        if not cleared and peer is not None and peer.blocked:
            name = self.cfg.params.peer
            return f"nothing blocked here; {name} says it is: run takeover cleanup on {name}"
        return None

    def _maintenance_changed(self, on: bool) -> None:
        """Persist the mode, pause or resume resource monitoring, and say so."""
        try:
            store_maintenance(self.cfg.state_dir, on)
        except OSError as err:
            log.error("maintenance.store_failed on=%s error=%s", on, err)
        log.warning("maintenance.%s role=%s", "on" if on else "off", self.state.role.value)
        pause = getattr(self.fx.resources, "maintenance", None)
        if pause is not None:
            self._spawn(pause(on))
        self._write_status()

    def _on_transition(self, a: m.Notify) -> None:
        s = self.state
        # How long the peer had been silent: a takeover's own measure of its detection time.
        silent = f"{self.clock() - s.peer.heard_at:.3f}" if s.peer is not None else "-"
        log.info(
            "transition from=%s to=%s reason=%s epoch=%s silent=%s",
            a.old.value,
            a.new.value,
            a.reason,
            s.epoch,
            silent,
        )
        wall = self.wall()
        self.history.append(
            {"time": wall, "old": a.old.value, "new": a.new.value, "reason": a.reason}
        )
        self.totals["transitions"][f"{a.old.value}->{a.new.value}"] += 1
        if a.old is m.Role.RELEASING and s.condition == m.INHIBITORS_TIMED_OUT:
            missing = self.control.inhibitors.awaited()
            for name in missing:
                self.totals["inhibitor_timeouts"][name] += 1
            log.warning(
                "inhibitors.timed_out names=%s timeout=%s",
                ",".join(missing),
                s.params.inhibit_timeout,
            )
        self.hooks.submit(a.old.value, a.new.value, a.reason, s.epoch)
        self.control.publish(role_event(a.old.value, a.new.value, a.reason, s.epoch, wall))
        self._write_status()
        self.fx.notifier.notify(f"STATUS={a.new.value}: {a.reason}")
        if not self.ready and a.old is m.Role.STARTING:
            # The first decision is made: systemd may now start what depends on us.
            self.ready = True
            self.fx.notifier.notify("READY=1")

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _emit(self, ev: m.Event) -> None:
        self.queue.put_nowait(ev)

    async def _acquire(self, reason: str) -> None:
        async with self._resource_lock:
            try:
                await self.fx.resources.acquire()
            except Exception as err:
                log.error("resources.acquire_failed reason=%s error=%s", reason, err)
                self._emit(m.AcquireFailed(str(err) or type(err).__name__))
                return
        log.info("resources.acquired reason=%s", reason)
        self._emit(m.AcquireDone())

    def _planned_handover(self) -> bool:
        """Return whether the release now starting hands the service to a live standby peer.

        Only then may a VM live-migrate: the peer's libvirtd is up and the peer is about to
        acquire (adopting the migrated copy). Urgent releases, faults and surrenders stop.
        """
        s = self.state
        peer = s.peer
        return (
            s.role is m.Role.RELEASING
            and not s.urgent
            and s.release_to is m.Role.STANDBY
            and peer is not None
            and peer.role is m.Role.STANDBY
            # A peer held in standby (stopping, or told so) will not take the VM over.
            and not peer.hold_standby
            and s.peer_alive(self.clock())
        )

    async def _release(self, reason: str, handover: bool = False) -> None:
        async with self._resource_lock:
            try:
                await self.fx.resources.release(handover=handover)
            except Exception as err:
                log.error("resources.release_failed reason=%s error=%s", reason, err)
                self._emit(m.ReleaseFailed(str(err) or type(err).__name__))
                return
        log.info("resources.released reason=%s handover=%s", reason, handover)
        self._emit(m.ReleaseDone())

    async def _persist_epoch(self, epoch: int) -> None:
        """Store `epoch` durably in a thread (in order: one write at a time), then say so."""
        async with self._epoch_lock:
            try:
                await asyncio.to_thread(self.fx.epoch_store, self.cfg.state_dir, epoch)
            except OSError as err:
                # Serving matters more than the record: the epoch in memory is right, only a
                # restart before the next successful write could reuse an older one.
                log.error("epoch.store_failed epoch=%s error=%s", epoch, err)
            else:
                log.info("epoch.stored epoch=%s", epoch)
        self._emit(m.EpochStored(epoch))

    async def _announce(self) -> None:
        try:
            await self.fx.resources.announce()
        except Exception as err:
            log.error("announce.failed error=%s", err)

    async def _fresh_probe(self, round_: int) -> None:
        try:
            async with self._probe_lock:
                results = await self.fx.prober.probe()
        except Exception as err:
            # Nothing known: count every target as down rather than take over blind.
            log.error("probe.failed error=%s", err)
            self._emit(m.TargetsProbed(down=len(self.fx.prober.targets), round=round_))
            return
        now = self.clock()
        for target, outcomes in results.items():
            self.reach.record(target, _summary(outcomes), now)
        down = fresh_down(results)
        log.info("probe.fresh down=%s of=%s", down, len(results))
        self._emit(m.TargetsProbed(down=down, round=round_))

    async def _guard(self, round_: int) -> None:
        try:
            mac = await self.fx.guard.probe()
        except Exception as err:
            # A guard that cannot look must not let us take over a VIP someone may hold.
            log.error("guard.failed error=%s", err)
            self._emit(m.VipGuardResult(True, "unknown (guard failed)", round_))
            return
        log.info("guard.result answered=%s mac=%s", mac is not None, mac or "-")
        self._emit(m.VipGuardResult(mac is not None, mac or "", round_))

    async def _fence(self, peer: str) -> None:
        if self.fx.fencer is None:
            self._emit(m.FenceResult(ok=False, detail="no fencing device"))
            return
        try:
            ok, detail = await self.fx.fencer.fence(peer)
        except Exception as err:
            ok, detail = False, str(err) or type(err).__name__
        self.totals["fence_attempts"]["ok" if ok else "failed"] += 1
        log.info("fence.result peer=%s ok=%s detail=%s", peer, ok, detail)
        self._emit(m.FenceResult(ok=ok, detail=detail))

    async def _wait_inhibitors(self) -> None:
        held = self.control.inhibitors.awaited()
        if held:
            log.info("inhibitors.waiting names=%s", ",".join(held))
        await self.control.inhibitors.wait_clear()
        self._emit(m.InhibitorsReleased())

    async def _probe_loop(self) -> None:
        """Probe the ping list every probe_interval; report score changes."""
        last = self.state.score
        while True:
            try:
                async with self._probe_lock:
                    results = await self.fx.prober.probe()
            except Exception as err:
                log.error("probe.failed error=%s", err)
                results = {}
            now = self.clock()
            for target, outcomes in results.items():
                self.reach.record(target, _summary(outcomes), now)
            score = self.reach.score(now)
            if score != last:
                log.info("probe.score score=%s down=%s", score, self.reach.down_targets(now))
                last = score
                self._emit(m.ProbeResult(score))
            await asyncio.sleep(self.cfg.probe_interval)

    def _health_changed(self, healthy: bool) -> None:
        self._emit(m.HealthChanged(healthy))

    # -- heartbeats ------------------------------------------------------------------------

    def _on_heartbeat(self, link: str, hb: Heartbeat) -> None:
        """Link callback: queue an authenticated, fresh heartbeat for the machine."""
        self.drift.heard(self.receiver.digest_differs(hb))
        self._emit(
            m.HeartbeatSeen(
                role=hb.role,
                epoch=hb.epoch,
                priority=hb.priority,
                score=hb.score,
                boot_id=hb.boot_id.hex(),
                healthy=hb.healthy,
                promote=hb.promote,
                hold_standby=hb.hold_standby,
                holding=hb.holding,
                maintenance=hb.maintenance,
                blocked=hb.blocked,
            )
        )

    def heartbeat(self) -> Heartbeat:
        """Return the heartbeat this node sends now (sequence not yet advanced)."""
        s = self.state
        return Heartbeat(
            node=s.params.node,
            boot_id=self.boot_id,
            sequence=self.seq,
            role=s.role,
            priority=s.params.priority,
            score=m.own_score(s),
            epoch=s.epoch,
            digest=self.cfg.digest,
            healthy=s.healthy,
            promote=s.promote,
            hold_standby=s.hold_standby,
            holding=not s.clean,
            maintenance=s.maintenance,
            blocked=bool(s.blocked),
        )

    def _advert_key(self) -> tuple[object, ...]:
        s = self.state
        return (s.role, s.clean, s.epoch, m.own_score(s), s.healthy, s.promote, s.hold_standby,
                s.maintenance, s.blocked)  # fmt: skip

    def _send_heartbeats(self) -> None:
        if not m.advertisable(self.state):
            # The epoch is still being written: the pump sends once EpochStored is in.
            return
        self._sent_key = self._advert_key()
        self.sent += self.links.send(self._next_datagram)
        if self.drift.due(self.clock()):
            self.links.send(self._sections_datagram)

    def _sections_datagram(self) -> bytes:
        self.seq += 1
        self.seq_floor.cover(self.seq)
        return drift.encode(self.cfg.params.node, self.boot_id, self.seq, self.cfg.sections,
                            self.cfg.key)  # fmt: skip

    def _on_sections(self, link: str, data: bytes) -> None:
        """Link callback: the peer's section digests (takeover.drift); keep the newest."""
        peer, now = self.cfg.params.peer, self.clock()
        before = (self.drift.describe(now) or {}).get("sections")
        got = drift.decode(data, self.cfg.key, peer)
        why = (
            got
            if isinstance(got, str)
            else self.drift.accept(got, self.receiver.window.record(peer), now)
        )
        if why is not None:
            log.debug("drift.sections_dropped link=%s reason=%s", link, why)
            return
        after = (self.drift.describe(now) or {}).get("sections")
        if after != before:
            log.warning("drift.sections peer=%s differ=%s", peer, ",".join(after or []) or "none")

    def _witness_seq(self) -> int:
        # Witness requests share the heartbeat's sequence space: increasing across boots.
        self.seq += 1
        self.seq_floor.cover(self.seq)
        return self.seq

    def _next_datagram(self) -> bytes:
        # One sequence number per datagram: the copy on the second link is no replay.
        self.seq += 1
        self.seq_floor.cover(self.seq)
        return encode(self.heartbeat(), self.cfg.key)

    # -- status and control ----------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Return the status document (also served by the control socket)."""
        s, p, now, wall = self.state, self.cfg.params, self.clock(), self.wall()
        peer: dict[str, Any] = {"name": p.peer}
        if s.peer is not None:
            peer.update(
                role=s.peer.role.value,
                epoch=s.peer.epoch,
                priority=s.peer.priority,
                score=s.peer.score,
                healthy=s.peer.healthy,
                alive=s.peer_alive(now),
                last_heard_age=round(now - s.peer.heard_at, 3),
                holding=s.peer.holding,
                blocked=s.peer.blocked,
            )
        links: dict[str, dict[str, object]] = {}
        for name, st in self.links.stats().items():
            age = st.get("last_seen_age")
            # Up: heard within the silence that makes the peer lost (shorter while suspected).
            up = isinstance(age, float | int) and age <= s.dead_after()
            links[name] = {**st, "up": up}
        counters = self.receiver.counters()
        counters["sent"] = self.sent
        resources = self._vips()
        local = {
            "name": p.node,
            "role": s.role.value,
            "since": wall - (now - s.since),
            "reason": s.reason,
            "condition": s.condition,
            "priority": p.priority,
            "score": m.own_score(s),
            "lan_up": s.lan_up,
            "peer_suspected": s.suspected(),
            "healthy": s.healthy,
            "promote": s.promote,
            "hold_standby": s.hold_standby,
            "maintenance": s.maintenance,
            "blocked": s.blocked or None,
        }
        return {
            "version": 1,
            "written": wall,
            "pid": os.getpid(),
            "pid_start": process_start(os.getpid()),
            "status_interval": self.cfg.status_interval,
            "cluster": self.cfg.cluster,
            "epoch": s.epoch,
            "local": local,
            "peer": peer,
            "links": links,
            "targets": self.reach.states(now),
            "vips": [e for e in resources if e.get("kind") not in {"vm", "service"}],
            "vms": [e for e in resources if e.get("kind") == "vm"],
            "services": [e for e in resources if e.get("kind") == "service"],
            "fencing": self._fencing(),
            "checks": self.health.states(),
            "inhibitors": self.control.inhibitors.names(),
            # What a release under way still waits for: held, or expected and not subscribed.
            "inhibitors_awaited": self.control.inhibitors.awaited(),
            "heartbeat": counters,
            "conditions": link_conditions(p.peer, links)
            + reload_conditions(self.last_reload)
            + self._witness_conditions(now)
            + [c for c in (m.blocked_by_config(s, now),) if c]
            + ([m.PEER_SUSPECTED] if s.suspected() else []),
            "witness": self._witness_status(now),
            "transitions": list(self.history),
            "totals": {k: dict(v) for k, v in self.totals.items()},
            "drift": self.drift.describe(now),
            "reload": self.last_reload,
        }

    def _vips(self) -> list[dict[str, Any]]:
        out = []
        for item in self.fx.resources.describe():
            entry = dict(item)
            holder = self.cfg.params.node if item.get("held") else None
            peer = self.state.peer
            now = self.clock()
            if (
                holder is None
                and peer
                and peer.role is m.Role.ACTIVE
                and self.state.peer_alive(now)
            ):
                holder = self.cfg.params.peer
            entry["holder"] = holder
            if holder is None:
                entry["holder_seen"] = self._holder_seen(now)
            if item.get("kind") == "service":
                entry["peer"] = self._peer_claim(now)
            out.append(entry)
        return out

    def _peer_claim(self, now: float) -> dict[str, Any]:
        """Return what the peer's heartbeats say of the group a service belongs to: its role,
        whether it holds (or may still hold) it, whether it is blocked, how fresh that is."""
        s, peer = self.state, self.state.peer
        out: dict[str, Any] = {"name": self.cfg.params.peer, "heard": peer is not None}
        if peer is not None:
            out.update(
                role=peer.role.value,
                alive=s.peer_alive(now),
                holding=peer.holding or peer.role in {m.Role.ACTIVE, m.Role.RELEASING},
                blocked=peer.blocked,
                last_heard_age=round(now - peer.heard_at, 3),
            )
        return out

    def _holder_seen(self, now: float) -> str | None:
        """Return what is known of a holder elsewhere when nobody is known to hold for sure."""
        s, peer, name = self.state, self.state.peer, self.cfg.params.peer
        if s.condition == m.PEER_STILL_SERVING:
            return f"{name}? (answers on the LAN; heartbeats lost)"
        if peer is None or not (peer.holding or peer.role is m.Role.ACTIVE):
            return None
        if s.peer_alive(now):
            return f"{name}? ({peer.role.value}, may still hold it)"
        return f"{name}? (not heard for {now - peer.heard_at:.1f}s; last heard {peer.role.value})"

    def _witness_status(self, now: float) -> dict[str, Any] | None:
        """Return the witness's view for status: reachable, last answer, holder, remaining."""
        if self.witness is None:
            return None
        s, w = self.state, self.state.witness
        out = dict(self.witness.stats())
        out["reachable"] = m.witness_reachable(s, now)
        if w is None:
            out.update(last_answer_age=None, verdict=None, holder=None, remaining=None)
        else:
            age = now - w.heard_at
            out.update(
                last_answer_age=round(age, 3),
                verdict=w.verdict.name,
                holder=w.holder or None,
                remaining=round(max(0.0, w.remaining - age), 3) if w.holder else None,
            )
        held = w.lease_until if w is not None and m.witness_granted(s, now) else None
        out["lease_held_for"] = round(held - now, 3) if held is not None else None
        return out

    def _witness_conditions(self, now: float) -> list[str]:
        """Return the warning for a witness that does not answer (a warning, not a failover)."""
        if self.witness is None or m.witness_reachable(self.state, now):
            return []
        w = self.state.witness
        since = "never answered" if w is None else f"silent for {now - w.heard_at:.1f}s"
        return [f"witness {self.witness.stats()['address']} unreachable ({since})"]

    def _fencing(self) -> dict[str, Any] | None:
        """Return the fencing device's status view, or None when the peer has none."""
        if self.fx.fencer is None:
            return None
        try:
            return dict(self.fx.fencer.describe())
        except Exception as err:
            return {"error": str(err) or type(err).__name__}

    def _status_key(self) -> tuple[object, ...]:
        """Return what, when it changes, makes the status file worth rewriting at once."""
        s, peer = self.state, self.state.peer
        alive = s.peer_alive(self.clock())
        peer_key = (
            (peer.role, peer.epoch, peer.holding, alive, peer.blocked) if peer is not None else None
        )
        return (s.role, s.condition, s.healthy, s.lan_up, s.hold_standby, s.promote, peer_key,
                s.maintenance, s.blocked, s.suspected())  # fmt: skip

    def _write_status(self) -> None:
        self._written_key = self._status_key()
        self.last_status = doc = self.status()
        try:
            write_status(status_path(self.cfg.run_dir), doc)
        except OSError as err:
            log.error("status.write_failed error=%s", err)
        self.peer_record.store(self.receiver)
        self._next_status = self.clock() + self.cfg.status_interval

    def command(self, cmd: str, args: dict[str, Any]) -> str | None:
        """Control handler: run standby/promote/maintenance through the machine, or clear a
        configuration error (cleanup); return a refusal or None."""
        ev: m.Event
        if cmd == "cleanup":
            return self._cleanup(args.get("resource"))
        if cmd == "maintenance":
            ev = m.MaintenanceSet(on=bool(args.get("on")))
        elif cmd == "standby":
            ev = m.OperatorStandby(force=bool(args.get("force", False)))
        else:
            ev = m.OperatorPromote()
        for a in self.handle(ev):
            if isinstance(a, m.Refused):
                return a.reason
        self._write_status()
        return None

    def _kick_watchdog(self, now: float) -> None:
        if self._watchdog is not None and now - self._last_watchdog >= self._watchdog:
            self.fx.notifier.notify("WATCHDOG=1")
            self._last_watchdog = now


_HOLDINGS_CHANGED = (m.AcquireDone, m.AcquireFailed, m.ReleaseDone, m.ReleaseFailed)


def _with_hold(s: m.State) -> m.State:
    return replace(s, hold_standby=True, promote=False)


def _summary(outcomes: Sequence[Outcome]) -> Outcome:
    """Return one outcome for several tries: a reply wins, then a down verdict, then error."""
    if Outcome.REPLY in outcomes:
        return Outcome.REPLY
    for o in outcomes:
        if o is not Outcome.ERROR:
            return o
    return Outcome.ERROR
