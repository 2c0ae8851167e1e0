"""mirrord's daemon: the watcher, planner, journal, guard and transfer wired on one asyncio loop.

Threads: watchdog's (inotify) and APScheduler's timers only put records on the loop's queue
(`LoopSink.put`). One consumer coroutine applies every record: changes go to the journal (first,
so they survive a crash) and to the planner; then it asks the planner which passes are due,
starts each as a task (one rsync per directory at a time), and sets APScheduler's wake-up job to
the planner's next deadline. A finished pass comes back as a record too, so the planner and the
journal are only ever touched by the consumer.

Files: the journal in the state dir; `mirrord.json` (status, rewritten atomically every second
and after each pass) and `mirrord.sock` (control: sync requests, status) in the run dir.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Protocol

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from mirrord import guard, orphans, roles, sdnotify
from mirrord.backups import prune_backups
from mirrord.changes import Overflow, RawEvent, RootGone, Watcher, coalesce
from mirrord.follow import Follower, PeerSeen, RoleSeen
from mirrord.journal import Journal
from mirrord.planner import Cadence, PassKind, PassPlan, Planner, Result
from mirrord.scan import changed_since
from mirrord.transfer import (
    Peer,
    TransferOptions,
    TransferResult,
    full_argv,
    incremental_argv,
    run_rsync,
)
from takeover.fsutil import write_atomic

log = logging.getLogger(__name__)

STATUS_NAME: Final = "mirrord.json"
SOCKET_NAME: Final = "mirrord.sock"
LOCK_NAME: Final = "mirrord.lock"
# Seconds between status file rewrites (`mirrord status` calls a file 3x older stale).
STATUS_INTERVAL: Final = 1.0
# A batch that follows the previous one within BUSY_WITHIN seconds waits BATCH_WAIT seconds
# for more records first (a churning tree sends hundreds of events per second).
BUSY_WITHIN: Final = 0.05
BATCH_WAIT: Final = 0.02
# Seconds between attempts to watch roots that are not watched (vanished, or no watch left).
REWATCH_INTERVAL: Final = 5.0
# Deleted paths a refused full pass names in its report.
REPORT_PATHS: Final = 5
# max_delete counts deletions over a sliding window, not per pass: an `rm -rf` of a large tree
# arrives over several incremental passes, each of which would look small on its own. The
# window is this many seconds, or twice the directory's max_interval if that is longer.
DELETE_WINDOW: Final = 60.0
# Final flush: seconds for inotify to deliver the last writes, between retries of a failed
# pass, and unsynced paths named per directory when it gives up.
FLUSH_SETTLE: Final = 0.1
FLUSH_RETRY: Final = 0.2
FLUSH_REPORT: Final = 50
# A change this many seconds before the recorded stop counts as made while stopped: file
# systems store times as coarse as 1 s (ext3) or 2 s (FAT), truncated.
CATCH_UP_MARGIN: Final = 2.0
# Seconds between prunings of the backup areas (what the peer's passes replaced here).
PRUNE_INTERVAL: Final = 3600.0


class PolicyLike(Protocol):
    """The fields of mirrord.policy.Policy the daemon uses."""

    @property
    def path(self) -> Path: ...
    @property
    def volatility(self) -> str: ...
    @property
    def interval(self) -> float: ...
    @property
    def min_interval(self) -> float: ...
    @property
    def max_interval(self) -> float: ...
    @property
    def exclude(self) -> tuple[str, ...]: ...
    @property
    def delete(self) -> bool: ...
    @property
    def max_delete_count(self) -> int | None: ...
    @property
    def max_delete_percent(self) -> float | None: ...
    @property
    def bwlimit(self) -> int: ...
    @property
    def verify_every(self) -> float: ...
    @property
    def verify_checksum(self) -> bool: ...
    @property
    def hard_links(self) -> bool: ...
    @property
    def acls(self) -> bool: ...
    @property
    def xattrs(self) -> bool: ...
    @property
    def sparse(self) -> bool: ...
    @property
    def max_duty(self) -> float: ...


@dataclass(frozen=True)
class MirrorDir:
    """One mirrored directory as the daemon needs it."""

    # Absolute path, the same on both nodes.
    root: str
    # Volatility class, for status.
    volatility: str
    cadence: Cadence
    # rsync options; max_delete is filled in per pass from the two limits below.
    options: TransferOptions
    # Guard: at most this many deletions per pass...
    max_delete_count: int | None = None
    # ...or this percentage of the tree.
    max_delete_percent: float | None = None

    def delete_limit(self, tree_size: int | None) -> int | None:
        """Return the deletion limit for a tree of `tree_size` entries (None: no limit)."""
        if self.max_delete_count is not None:
            return self.max_delete_count
        if self.max_delete_percent is not None:
            return guard.resolve_max_delete(f"{self.max_delete_percent}%", tree_size)
        return None


def mirror_dir(policy: PolicyLike) -> MirrorDir:
    """Build a MirrorDir from a mirror policy."""
    return MirrorDir(
        root=str(policy.path),
        volatility=policy.volatility,
        cadence=Cadence(
            interval=policy.interval,
            min_interval=policy.min_interval,
            max_interval=policy.max_interval,
            max_duty=policy.max_duty,
            verify_every=policy.verify_every,
        ),
        options=TransferOptions(
            excludes=policy.exclude,
            delete=policy.delete,
            bwlimit=policy.bwlimit,
            hard_links=policy.hard_links,
            acls=policy.acls,
            xattrs=policy.xattrs,
            sparse=policy.sparse,
            verify_checksum=policy.verify_checksum,
        ),
        max_delete_count=policy.max_delete_count,
        max_delete_percent=policy.max_delete_percent,
    )


# -- records on the consumer's queue -----------------------------------------------------------


@dataclass(frozen=True)
class Tick:
    """A timer fired: re-evaluate what is due."""


@dataclass(frozen=True)
class Rewatch:
    """Try to watch the roots that are not watched."""


@dataclass(frozen=True)
class Stop:
    """Shut down cleanly."""


@dataclass(frozen=True)
class SyncRequest:
    """`mirrord sync`: pass now (None: every directory); `reply` gets the results."""

    directory: str | None
    full: bool
    reply: asyncio.Future[dict[str, Any]] | None = None
    # The operator confirms the deletions: the next pass skips the max_delete guard (the
    # root checks still apply).
    allow_deletions: bool = False


@dataclass(frozen=True)
class CatchUp:
    """What changed in `root` while mirrord was stopped (mirrord.scan), found by a walk."""

    root: str
    paths: frozenset[str]
    # A directory changed: deletions are possible, only a full pass is sure to carry them.
    full_because: str | None = None


@dataclass(frozen=True)
class PassOutcome:
    """How a pass (guard + rsync) ended."""

    result: Result
    detail: str
    rc: int | None = None
    changed: int = 0
    deleted: int = 0
    bytes_sent: int = 0
    # Entries in the source tree (known from full passes).
    files: int | None = None


@dataclass(frozen=True)
class PassDone:
    """A pass task ended."""

    plan: PassPlan
    pass_id: int
    mark: int
    started: float
    outcome: PassOutcome


class LoopSink:
    """Lets other threads put records on the loop's queue (the only thing they may do).

    Records from a burst are handed over together: a thread wakes the loop only when it adds
    to an empty hand-over list (a wake-up per inotify event costs more than the event).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, q: asyncio.Queue[Any]) -> None:
        self._loop = loop
        self._q = q
        self._lock = threading.Lock()
        self._pending: list[Any] = []

    def put(self, item: Any) -> None:
        """Queue `item` from any thread."""
        with self._lock:
            self._pending.append(item)
            first = len(self._pending) == 1
        if first:
            self._loop.call_soon_threadsafe(self._hand_over)

    def _hand_over(self) -> None:
        with self._lock:
            items, self._pending = self._pending, []
        for item in items:
            self._q.put_nowait(item)


@dataclass
class _LastPass:
    kind: str = ""
    result: str = ""
    rc: int | None = None
    detail: str = ""
    changed: int = 0
    deleted: int = 0
    bytes_sent: int = 0


@dataclass
class _SyncWait:
    """One `mirrord sync --wait`: answered when every requested directory has reported.

    Only a pass that started after the request answers it: a pass already running took its
    snapshot before the changes the operator wants sent.
    """

    future: asyncio.Future[dict[str, Any]]
    pending: set[str]
    requested: float
    results: dict[str, Any] = field(default_factory=dict)


def write_json_atomic(path: Path, document: object) -> None:
    """Write `document` to `path` through a temp file and a rename (readers never see half)."""
    write_atomic(path, json.dumps(document, indent=1, sort_keys=True), mode=0o600)


class DaemonError(Exception):
    """The daemon cannot start (another instance runs, or a directory is unusable)."""


class Daemon:
    """One mirrord process: pushes every directory to the peer (or to a local destination)."""

    def __init__(
        self,
        dirs: Sequence[MirrorDir],
        *,
        peer: Peer | None,
        state_dir: Path,
        run_dir: Path,
        node: str = "",
        local_dest: Path | None = None,
        clock: Callable[[], float] = time.time,
        follow: bool = False,
        peer_name: str = "peer",
        flush_timeout: float = 20.0,
        backup_retention: float | None = None,
    ) -> None:
        if peer is None and local_dest is None:
            raise DaemonError("mirrord: need a peer or a local destination")
        self.dirs = {d.root: d for d in dirs}
        # What the peer's passes overwrote or deleted here is kept this long (None: forever).
        self.backup_retention = backup_retention
        self.peer = peer
        self.state_dir = state_dir
        self.run_dir = run_dir
        self.node = node
        self.local_dest = local_dest
        self.clock = clock
        self.planner = Planner()
        self.journal: Journal | None = None
        self._q: asyncio.Queue[Any] = asyncio.Queue()
        self._tasks: dict[str, tuple[asyncio.Task[PassDone], int]] = {}
        self._last: dict[str, _LastPass] = {d: _LastPass() for d in self.dirs}
        self._tree_size: dict[str, int | None] = dict.fromkeys(self.dirs)
        self._expect_mount: dict[str, bool] = {}
        self._deleted: dict[str, list[tuple[float, int]]] = {d: [] for d in self.dirs}
        self._allow_deletions: set[str] = set()
        self._unwatched: set[str] = set()
        self._waiters: dict[str, list[_SyncWait]] = {}
        self._vouch: dict[str, str] = {}
        self._stopping = False
        self._started = 0.0
        self._lock_fd: int | None = None
        self._watcher: Watcher | None = None
        self._scheduler: AsyncIOScheduler | None = None
        # Following takeover (mirrord.roles): without `follow`, push always (one-way mirror).
        self.follow = follow
        self.peer_name = peer_name
        self.flush_timeout = flush_timeout
        self.role: str | None = None
        self.role_reason = ""
        self.peer_state: roles.Peer | None = None
        self._direction = (
            roles.direction(None, None, node, peer_name)
            if follow
            else roles.Direction(True, False, "standalone: pushing always (not following takeover)")
        )
        # Roots vouched for by a clean stop -> its time: walked once this node pushes again.
        # An entry stays until the walk's result is applied (a stop before that keeps the
        # older time for the next run), or until this node receives (the tree is the peer's).
        self._catch_up: dict[str, float] = {}
        self._walking: set[str] = set()
        self._quarantine_due = False
        self._marked = False
        # Whether this run itself marked the roots (a marker it did not set is a crash's).
        self._marked_here = False
        self._received = 0
        self._ok_start: dict[str, float] = {}
        self._flush: dict[str, Any] | None = None
        self._follower: asyncio.Task[None] | None = None
        self._wake_at: float | None = None

    # -- start-up -------------------------------------------------------------------------

    def _lock(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.state_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DaemonError(
                f"mirrord: another mirrord holds {self.state_dir / LOCK_NAME}"
            ) from None
        self._lock_fd = fd

    def _open_journal(self, now: float) -> Journal:
        journal = Journal(self.state_dir)
        for root, d in self.dirs.items():
            vouch = journal.open_directory(root, now)
            last_full = journal.last_full(root)
            self._tree_size[root] = last_full.files if last_full else None
            self.planner.add_directory(
                root, d.cadence, now, last_full_ok=last_full.ended if last_full else None
            )
            self.planner.restore(root, journal.dirty(root))
            self._vouch[root] = vouch.reason
            if vouch.vouched and vouch.stopped_at is not None:
                self._catch_up[root] = vouch.stopped_at
            if not vouch.vouched:
                reason = f"startup: {vouch.reason}"
                self.planner.need_full(root, reason, now)
                # Persisted, so a clean stop before the full pass does not vouch next time.
                journal.need_full(root, reason, now)
            self._expect_mount[root] = os.path.ismount(root)
        return journal

    async def run(self) -> None:
        """Run until SIGTERM/SIGINT (or `stop()`), then shut down cleanly."""
        loop = asyncio.get_running_loop()
        self._lock()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        now = self.clock()
        self._started = now
        self.journal = self._open_journal(now)
        sink = LoopSink(loop, self._q)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        loop.add_signal_handler(signal.SIGHUP, lambda: log.info("reload.ignored hint=restart"))
        self._watcher = Watcher(list(self.dirs), sink)
        self._unwatched = set(await asyncio.to_thread(self._watcher.start))
        for root in self._unwatched:
            self.planner.need_full(root, "unwatched", now)
        server = await asyncio.start_unix_server(self._serve, path=self.run_dir / SOCKET_NAME)
        os.chmod(self.run_dir / SOCKET_NAME, 0o600)
        self._scheduler = self._start_scheduler(loop, sink)
        if self._direction.push:
            self._start_catch_up()  # standalone: the watcher runs, so the walk misses nothing
        if self.follow:
            follower = Follower(self.run_dir, self._q.put_nowait, self.final_flush, self.clock)
            self._follower = asyncio.ensure_future(follower.run())
        self._write_status()
        sdnotify.notify("READY=1\nSTATUS=mirroring")
        log.info("daemon.ready dirs=%d peer=%s", len(self.dirs), self.peer and self.peer.address)
        try:
            await self._consume()
        finally:
            await self._shutdown(server)

    def _start_scheduler(self, loop: asyncio.AbstractEventLoop, sink: LoopSink) -> AsyncIOScheduler:
        sched = AsyncIOScheduler(event_loop=loop, timezone=UTC)

        # Coroutines run on the loop itself: a WATCHDOG=1 sent from here proves it turns.
        async def status_job() -> None:
            self._write_status()

        async def rewatch_job() -> None:
            sink.put(Rewatch())

        async def watchdog_job() -> None:
            sdnotify.notify("WATCHDOG=1")

        async def prune_job() -> None:
            await asyncio.to_thread(self.prune_backups, self.clock())

        sched.add_job(status_job, "interval", seconds=STATUS_INTERVAL, id="status")
        sched.add_job(rewatch_job, "interval", seconds=REWATCH_INTERVAL, id="rewatch")
        if self.backup_retention is not None:
            # On whichever node receives: the passes' backup areas, once now and then hourly.
            sched.add_job(prune_job, "interval", seconds=PRUNE_INTERVAL, id="prune",
                          next_run_time=datetime.now(UTC))  # fmt: skip
        every = sdnotify.watchdog_interval()
        if every:
            sched.add_job(watchdog_job, "interval", seconds=every, id="watchdog")
        sched.start()
        return sched

    def prune_backups(self, now: float) -> None:
        """Delete each root's backup hours older than the retention (a thread runs this)."""
        assert self.backup_retention is not None
        for root in self.dirs:
            try:
                gone = prune_backups(root, self.backup_retention, now)
            except OSError as exc:
                log.warning("backups.prune_failed dir=%s error=%s", root, exc)
                continue
            if gone:
                log.info("backups.pruned dir=%s hours=%s", root, ",".join(gone))

    def stop(self) -> None:
        """Ask the daemon to shut down (signal handlers call this)."""
        log.info("daemon.stopping")
        self._stopping = True
        self._q.put_nowait(Stop())

    # -- the consumer ---------------------------------------------------------------------

    async def _consume(self) -> None:
        last = -math.inf
        while not self._stopping:
            batch = [await self._q.get()]
            if time.monotonic() - last < BUSY_WITHIN:
                # Under a stream of events, gather for a moment: one journal commit and one
                # planning round per batch instead of per event. After a quiet spell the
                # first change is applied at once.
                await asyncio.sleep(BATCH_WAIT)
            while not self._q.empty():
                batch.append(self._q.get_nowait())
            last = time.monotonic()
            self._apply(batch)
            if self._stopping:
                break
            self._start_due()
            self._answer_idle()
            self._set_wake()

    def _apply(self, batch: list[Any]) -> None:
        """Apply records in order; a role record splits the batch (what a change means, local
        or received, depends on the role when it was seen)."""
        segment: list[Any] = []
        for rec in batch:
            if isinstance(rec, RoleSeen | PeerSeen):
                self._apply_segment(segment)
                segment = []
                self._follow(rec, self.clock())
            else:
                segment.append(rec)
        self._apply_segment(segment)

    def _apply_segment(self, batch: list[Any]) -> None:
        """Apply records: changes reach the journal before anything else happens."""
        assert self.journal is not None
        now = self.clock()
        events = [r for r in batch if isinstance(r, RawEvent)]
        for root, paths in coalesce(events).items():
            if self._direction.receiving:
                # The peer's rsync wrote them: never journaled, never pushed back.
                self._received += len(paths)
                continue
            self.journal.record_changes(root, paths, now)
            self.planner.changes(root, paths, now)
        for rec in batch:
            if isinstance(rec, Overflow):
                # One inotify queue serves every watch: all roots lost events.
                for root in self.dirs:
                    self._need_full(root, "overflow", now)
            elif isinstance(rec, RootGone):
                self._unwatched.add(rec.directory)
                self._need_full(rec.directory, "root vanished", now)
            elif isinstance(rec, Rewatch):
                self._rewatch(now)
            elif isinstance(rec, SyncRequest):
                self._request(rec, now)
            elif isinstance(rec, PassDone):
                self._finish(rec, now)
            elif isinstance(rec, CatchUp):
                self._caught_up(rec, now)

    def _need_full(self, root: str, reason: str, now: float) -> None:
        assert self.journal is not None
        self.planner.need_full(root, reason, now)
        self.journal.need_full(root, reason, now)

    def _rewatch(self, now: float) -> None:
        assert self._watcher is not None
        for root in sorted(self._unwatched):
            if os.path.isdir(root) and self._watcher.watch(root):
                self._unwatched.discard(root)
                self._need_full(root, "watch restored", now)
            elif not self.planner.is_running(root):
                # No inotify here: poll with full passes, spaced by the planner.
                self.planner.need_full(root, "unwatched", now)

    def _request(self, req: SyncRequest, now: float) -> None:
        roots = [req.directory] if req.directory else list(self.dirs)
        if not self._direction.push:
            if req.reply is not None and not req.reply.done():
                why = {"result": "not pushing", "detail": self._direction.why}
                req.reply.set_result(dict.fromkeys(roots, why))
            return
        for root in roots:
            self.planner.request(root, now, full=req.full)
            if req.allow_deletions:
                self._allow_deletions.add(root)
                log.info("guard.override dir=%s reason=operator allowed deletions", root)
        if req.reply is not None:
            wait = _SyncWait(req.reply, set(roots), now)
            for root in roots:
                self._waiters.setdefault(root, []).append(wait)

    def _answer_idle(self) -> None:
        """Answer waiters of directories with no pass running: nothing was left to send."""
        for root in list(self._waiters):
            if root not in self._tasks:
                self._resolve(root, {"result": "in sync", "detail": "nothing to send"})

    def _resolve(self, root: str, entry: dict[str, Any], started: float | None = None) -> None:
        """Give `entry` to the waiters of `root` that a pass started at `started` answers."""
        keep = []
        for wait in self._waiters.pop(root, []):
            if started is not None and wait.requested > started:
                keep.append(wait)
                continue
            wait.pending.discard(root)
            wait.results[root] = entry
            if not wait.pending and not wait.future.done():
                wait.future.set_result(wait.results)
        if keep:
            self._waiters[root] = keep

    def _start_due(self) -> None:
        assert self.journal is not None
        now = self.clock()
        if self._quarantine_due and not self._tasks:
            self._quarantine(now)
        if not self._direction.push:
            return
        for plan in self.planner.due(now):
            d = self.dirs[plan.directory]
            self.planner.pass_started(plan, now)
            mark = self.journal.mark()
            pass_id = self.journal.pass_started(d.root, plan.kind.value, plan.reason, now)
            log.info(
                "pass.start dir=%s kind=%s reason=%s paths=%d",
                d.root, plan.kind.value, plan.reason, len(plan.paths),
            )  # fmt: skip
            task = asyncio.ensure_future(self._pass(d, plan, pass_id, mark, now))
            task.add_done_callback(self._pass_ended)
            self._tasks[d.root] = (task, pass_id)

    def _pass_ended(self, task: asyncio.Task[PassDone]) -> None:
        if not task.cancelled():
            self._q.put_nowait(task.result())

    async def _pass(
        self, d: MirrorDir, plan: PassPlan, pass_id: int, mark: int, started: float
    ) -> PassDone:
        try:
            outcome = await self._execute(d, plan, started)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # rsync could not start, or a bug: the snapshot must go back, never get lost.
            log.exception("pass.crashed dir=%s", d.root)
            outcome = PassOutcome(Result.RETRY, f"pass crashed: {exc!r}")
        return PassDone(plan, pass_id, mark, started, outcome)

    def _recently_deleted(self, d: MirrorDir, now: float) -> int:
        """Return the deletions this directory's passes made within the window."""
        window = max(DELETE_WINDOW, 2 * d.cadence.max_interval)
        recent = [(t, n) for t, n in self._deleted[d.root] if t >= now - window]
        self._deleted[d.root] = recent
        return sum(n for _t, n in recent)

    @staticmethod
    def _room(limit: int | None, already: int) -> int | None:
        """Return rsync's --max-delete for a pass: what the window has left."""
        return None if limit is None else max(0, limit - already)

    def _dest(self, root: str) -> str | None:
        if self.local_dest is None:
            return None
        dest = self.local_dest / root.lstrip("/")
        dest.mkdir(parents=True, exist_ok=True)
        return str(dest)

    async def _execute(self, d: MirrorDir, plan: PassPlan, now: float) -> PassOutcome:
        facts = await asyncio.to_thread(guard.inspect_root, d.root)
        verdict = guard.judge_root(d.root, facts, self._expect_mount.get(d.root, False))
        if not verdict.ok:
            log.warning("guard.refused dir=%s reason=%s", d.root, verdict.reason)
            return PassOutcome(Result.ALARM, verdict.reason)
        dest = self._dest(d.root)
        limit_known = d.max_delete_count is not None or d.max_delete_percent is not None
        full = plan.kind is PassKind.FULL
        if not full and d.options.hard_links:
            # rsync -H links only names that are both in its file list: a new link to an
            # old file would arrive as a copy. A whole-tree pass sees every name.
            full = await asyncio.to_thread(guard.any_hard_linked, d.root, plan.paths)
            if full:
                log.info("pass.upgraded dir=%s kind=full reason=hard links", d.root)
        already = self._recently_deleted(d, now)
        if d.root in self._allow_deletions:
            self._allow_deletions.discard(d.root)
            self._deleted[d.root] = []
            return await self._transfer(d, plan, now, full=full, dest=dest, limit=None)
        if full:
            limit = d.delete_limit(self._tree_size.get(d.root))
            if d.options.delete and limit_known:
                dry = await run_rsync(
                    full_argv(d.root, self.peer, d.options, now, dry_run=True, dest=dest),
                    keep_deleted=REPORT_PATHS,
                )
                if dry.outcome.result is not Result.OK:
                    return self._outcome(dry, "dry run: ")
                limit = d.delete_limit(dry.stats.files)
                verdict = guard.judge_deletions(d.root, dry.stats.deleted + already, limit)
                if not verdict.ok:
                    sample = ", ".join(dry.stats.deleted_paths)
                    log.warning("guard.refused dir=%s reason=%s", d.root, verdict.reason)
                    return PassOutcome(Result.ALARM, f"{verdict.reason}; e.g. {sample}")
            room = self._room(limit, already)
            return await self._transfer(d, plan, now, full=True, dest=dest, limit=room)
        limit = d.delete_limit(self._tree_size.get(d.root))
        if d.options.delete and limit is not None:
            missing = await asyncio.to_thread(guard.count_missing, d.root, plan.paths)
            verdict = guard.judge_deletions(d.root, missing + already, limit)
            if not verdict.ok:
                log.warning("guard.refused dir=%s reason=%s", d.root, verdict.reason)
                return PassOutcome(Result.ALARM, verdict.reason)
        room = self._room(limit, already)
        return await self._transfer(d, plan, now, full=False, dest=dest, limit=room)

    async def _transfer(
        self,
        d: MirrorDir,
        plan: PassPlan,
        now: float,
        *,
        full: bool,
        dest: str | None,
        limit: int | None,
    ) -> PassOutcome:
        """Run the pass's rsync with `limit` as its --max-delete backstop."""
        opts = replace(d.options, max_delete=limit)
        if full:
            res = await run_rsync(
                full_argv(d.root, self.peer, opts, now, audit=plan.audit, dest=dest)
            )
        else:
            argv = incremental_argv(d.root, self.peer, opts, now, dest=dest)
            res = await run_rsync(argv, sorted(plan.paths))
        return self._outcome(res)

    @staticmethod
    def _outcome(res: TransferResult, prefix: str = "") -> PassOutcome:
        detail = res.outcome.reason
        if res.rc != 0 and res.stderr:
            lines = res.stderr.splitlines()
            # The peer's push check says why in its own line; then ssh's own ("Host key
            # verification failed."), which rsync's later lines would hide behind its exit
            # code; otherwise rsync's last word.
            why = [line for line in lines if line.startswith("mirrord:")] or [
                line for line in lines if line.strip() and not line.startswith("rsync")
            ]
            detail += ": " + (why[-1] if why else lines[-1])
        return PassOutcome(
            result=res.outcome.result,
            detail=prefix + detail,
            rc=res.rc,
            changed=res.stats.changed,
            deleted=res.stats.deleted,
            bytes_sent=res.stats.bytes_sent,
            files=res.stats.files or None,
        )

    def _finish(self, done: PassDone, now: float) -> None:
        assert self.journal is not None
        plan, out = done.plan, done.outcome
        root = plan.directory
        self._tasks.pop(root, None)
        self.planner.pass_finished(root, out.result, now, detail=out.detail)
        self.journal.pass_finished(
            done.pass_id, now, out.result.value,
            rc=out.rc, files=out.files, nbytes=out.bytes_sent, detail=out.detail,
        )  # fmt: skip
        if out.deleted:
            self._deleted[root].append((now, out.deleted))
        if out.result is Result.OK:
            self._ok_start[root] = done.started
            self.journal.clear_synced(root, plan.paths, done.mark)
            if plan.kind is PassKind.FULL:
                self.journal.full_done(root, done.started, now)
                self._tree_size[root] = out.files
        before = self._last.get(root)
        self._last[root] = _LastPass(
            kind=plan.kind.value, result=out.result.value, rc=out.rc, detail=out.detail,
            changed=out.changed, deleted=out.deleted, bytes_sent=out.bytes_sent,
        )  # fmt: skip
        # A failed pass is a warning (journalctl -p warning) when its cause is new; the same
        # cause again, at every retry, stays at info.
        new_failure = out.result is not Result.OK and (
            before is None or before.detail != out.detail
        )
        log.log(
            logging.WARNING if new_failure else logging.INFO,
            "pass.end dir=%s kind=%s result=%s rc=%s changed=%d deleted=%d duration=%.3f "
            "detail=%s",
            root, plan.kind.value, out.result.value, out.rc, out.changed, out.deleted,
            now - done.started, out.detail,
        )  # fmt: skip
        entry = {"result": out.result.value, "kind": plan.kind.value, "rc": out.rc,
                 "detail": out.detail}  # fmt: skip
        self._resolve(root, entry, started=done.started)
        self._write_status()

    def _set_wake(self) -> None:
        if self._scheduler is None:
            return
        # Not pushing: nothing is due until a role record arrives (no wake-ups in the past).
        deadline = self.planner.next_deadline() if self._direction.push else None
        if deadline == self._wake_at and deadline is not None and deadline > self.clock():
            return  # APScheduler already holds this wake-up; re-adding a job costs ~0.3 ms
        self._wake_at = deadline
        if deadline is None:
            if self._scheduler.get_job("wake"):
                self._scheduler.remove_job("wake")
            return

        async def wake() -> None:
            self._q.put_nowait(Tick())

        at = datetime.fromtimestamp(max(deadline, self.clock()), UTC)
        self._scheduler.add_job(
            wake, "date", run_date=at, id="wake", replace_existing=True,
            misfire_grace_time=None, coalesce=True,
        )  # fmt: skip

    # -- following takeover ---------------------------------------------------------------

    def _follow(self, rec: RoleSeen | PeerSeen, now: float) -> None:
        """Apply a role or peer record: recompute the direction and act on the change."""
        assert self.journal is not None
        before = self._direction
        if isinstance(rec, RoleSeen):
            if rec.role != self.role:
                log.info("role.seen role=%s old=%s reason=%s", rec.role, self.role, rec.reason)
            self.role, self.role_reason = rec.role, rec.reason
        else:
            if self.role in roles.PUSH_ROLES and roles.peer_returned(self.peer_state, rec.peer):
                # Its tree is unknown (it may have set orphans aside): only a full pass fixes it.
                for root in self.dirs:
                    self._need_full(root, f"peer {self.peer_name} returned", now)
            self.peer_state = rec.peer
        d = roles.direction(self.role, self.peer_state, self.node, self.peer_name)
        if d != before:
            log.info("role.direction push=%s receiving=%s why=%s", d.push, d.receiving, d.why)
        if d.receiving and not before.receiving:
            self._quarantine_due = True
            # The tree is the peer's from now on: what changed here while stopped was its
            # pushes (they reach this node whether its mirrord runs or not).
            self._catch_up = {}
        if d.push and not before.push:
            self._start_catch_up()
        if self.role == "ACTIVE" and not self._marked:
            # From now on, an incoming push is refused here until the orphans are set aside.
            for root in self.dirs:
                orphans.set_source(root, self.node, now)
            self._marked = self._marked_here = True
        self._direction = d
        self._write_status()

    def _start_catch_up(self) -> None:
        """Walk each root vouched for by a clean stop for what changed while mirrord was
        stopped (once per run, when this node first pushes); the result comes back as a record.
        """
        for root, stopped in self._catch_up.items():
            if root in self._walking:
                continue
            self._walking.add(root)
            task = asyncio.ensure_future(self._walk(root, stopped))
            task.add_done_callback(self._walked)

    async def _walk(self, root: str, stopped: float) -> CatchUp:
        since = stopped - CATCH_UP_MARGIN
        found = await asyncio.to_thread(changed_since, root, since)
        if found.directories:
            why = f"changed while mirrord was stopped: directory {found.directories[0]}"
            return CatchUp(root, frozenset(), full_because=why)
        return CatchUp(root, frozenset(found.paths))

    def _walked(self, task: asyncio.Task[CatchUp]) -> None:
        if task.cancelled():
            return
        if task.exception() is not None:
            # The entry stays: the next push transition or run walks again.
            log.error("catchup.failed error=%r", task.exception())
            self._walking.clear()
            return
        self._q.put_nowait(task.result())

    def _caught_up(self, rec: CatchUp, now: float) -> None:
        """Apply a walk's result: the changed files become dirty, or the root owes a full pass."""
        assert self.journal is not None
        self._walking.discard(rec.root)
        if rec.root not in self._catch_up:
            return  # this node received meanwhile: the tree is the peer's
        if not self._direction.push:
            # Kept: the next push transition walks again (nothing is journaled meanwhile).
            log.info("catchup.deferred dir=%s reason=not pushing any more", rec.root)
            return
        del self._catch_up[rec.root]
        log.info("catchup.done dir=%s changed=%d full=%s", rec.root, len(rec.paths),
                 rec.full_because or "no")  # fmt: skip
        if rec.full_because:
            self._need_full(rec.root, rec.full_because, now)
        elif rec.paths:
            self.journal.record_changes(rec.root, rec.paths, now)
            self.planner.changes(rec.root, rec.paths, now)

    def _quarantine(self, now: float) -> None:
        """Set aside what the journal holds that the peer never confirmed; then accept pushes."""
        assert self.journal is not None
        self._quarantine_due = False
        self._marked = False
        found: list[orphans.Orphan] = []
        for root in self.dirs:
            candidates = set(self.journal.dirty(root))
            crashed = self._vouch.get(root) != "clean shutdown" and not self._marked_here
            if crashed and orphans.has_source(root):
                # The last run crashed as the source: changes between inotify and the journal
                # died with it. Whatever changed since the last confirmed pass began is kept.
                candidates |= self._changed_since_confirmed(root)
            moved, failed = orphans.quarantine(root, candidates, now, f"role {self.role}")
            found += moved
            done = [o.path for o in moved]
            self.journal.clear_synced(root, done, self.journal.mark())
            self.planner.forget(root, done)
            if failed:
                log.error("orphans.kept_marker dir=%s unmovable=%d", root, len(failed))
                continue
            orphans.clear_source(root)
        if found:
            orphans.record(self.state_dir, found)
            log.warning("orphans.found count=%d list=mirrord-orphans", len(found))

    def _changed_since_confirmed(self, root: str) -> set[str]:
        assert self.journal is not None
        confirmed = [p.started for p in self.journal.history(root, 200) if p.result == "ok"]
        since = confirmed[0] if confirmed else 0.0
        return changed_since(root, since, by_ctime=False).paths

    async def final_flush(self) -> dict[str, Any]:
        """Push every directory until a pass that began after the flush did succeed (bounded by
        flush_timeout); return (and keep, for status) the report with any unsynced paths."""
        start = self.clock()
        report: dict[str, Any] = {"started": start, "ended": None, "ok": False, "unsynced": {}}
        self._flush = report
        log.info("flush.start dirs=%d timeout=%.1f", len(self.dirs), self.flush_timeout)
        # Writes just before the release are still on their way through inotify.
        await asyncio.sleep(FLUSH_SETTLE)
        mark = self.clock()
        deadline = start + self.flush_timeout
        pending = list(self.dirs)
        while True:
            pending = [r for r in self.dirs if not self._flushed(r, mark)]
            now = self.clock()
            if not pending or now >= deadline or not self._direction.push:
                break
            waits = []
            for root in pending:
                fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
                self._q.put_nowait(SyncRequest(root, False, fut))
                waits.append(fut)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*waits), deadline - now)
            if any(self._last[r].result not in ("", "ok") for r in pending):
                await asyncio.sleep(FLUSH_RETRY)
        report["ended"] = self.clock()
        report["ok"] = not pending
        if pending:
            assert self.journal is not None
            why = "timeout" if self._direction.push else self._direction.why
            report["detail"] = why
            for root in pending:
                paths = sorted(self.journal.dirty(root))
                report["unsynced"][root] = paths[:FLUSH_REPORT]
                log.warning(
                    "flush.incomplete dir=%s unsynced=%d why=%s paths=%s",
                    root, len(paths), why, ",".join(paths[:FLUSH_REPORT]),
                )  # fmt: skip
        log.info("flush.end ok=%s took=%.3f", report["ok"], report["ended"] - start)
        self._write_status()
        return report

    def _flushed(self, root: str, mark: float) -> bool:
        """Whether everything seen before `mark` is on the peer."""
        if self._ok_start.get(root, -1.0) >= mark:
            return True
        st = self.planner.status(root, self.clock())
        return st.dirty == 0 and not st.running and st.full_needed is None

    # -- status and control ---------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Return the status document (`mirrord status --json` prints it)."""
        now = self.clock()
        dirs = []
        for root, d in self.dirs.items():
            st = asdict(self.planner.status(root, now))
            st.update(
                {
                    "class": d.volatility,
                    "watched": root not in self._unwatched,
                    "startup": self._vouch.get(root, ""),
                    "last": asdict(self._last[root]),
                }
            )
            dirs.append(st)
        return {
            "pid": os.getpid(),
            "node": self.node,
            "peer": None if self.peer is None else self.peer.login,
            "started": self._started,
            "updated": now,
            "status_interval": STATUS_INTERVAL,
            "stopped": self._stopping,
            "directories": dirs,
            "follow": {
                "following": self.follow,
                "role": self.role,
                "role_reason": self.role_reason,
                "peer": self.peer_name,
                "peer_role": None if self.peer_state is None else self.peer_state.role,
                "peer_alive": None if self.peer_state is None else self.peer_state.alive,
                "pushing": self._direction.push,
                "receiving": self._direction.receiving,
                "why": self._direction.why,
                "received_changes": self._received,
                "last_flush": self._flush,
            },
        }

    def _write_status(self) -> None:
        try:
            write_json_atomic(self.run_dir / STATUS_NAME, self.status())
        except OSError as exc:
            log.warning("status.write_failed error=%s", exc)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            req = json.loads(line or b"{}")
            cmd = req.get("cmd")
            if cmd == "status":
                reply: dict[str, Any] = self.status()
            elif cmd == "sync":
                directory = req.get("directory")
                if directory is not None and directory.rstrip("/") not in self.dirs:
                    reply = {"error": f"not a mirrored directory: {directory}"}
                else:
                    fut: asyncio.Future[dict[str, Any]] | None = None
                    if req.get("wait"):
                        fut = asyncio.get_running_loop().create_future()
                    self._q.put_nowait(
                        SyncRequest(
                            directory and directory.rstrip("/"),
                            bool(req.get("full")),
                            fut,
                            allow_deletions=bool(req.get("allow_deletions")),
                        )
                    )
                    reply = {"results": await fut} if fut is not None else {"queued": True}
            else:
                reply = {"error": f"unknown command: {cmd!r}"}
        except (ValueError, AttributeError) as exc:
            reply = {"error": f"bad request: {exc}"}
        with contextlib.suppress(ConnectionError):
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
            writer.close()

    # -- shutdown -------------------------------------------------------------------------

    async def _shutdown(self, server: asyncio.Server) -> None:
        self._stopping = True
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
        server.close()
        # Changes from here on are the next run's walk's (mirrord.scan): the journal keeps
        # this moment as the stop.
        unwatched_from = self.clock()
        if self._watcher is not None:
            await asyncio.to_thread(self._watcher.stop)
        now = self.clock()
        if self._follower is not None:
            # Closing the subscription drops any inhibitor it holds: takeover goes on.
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._follower
        for root, (task, pass_id) in list(self._tasks.items()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            if task.cancelled():
                assert self.journal is not None
                self.journal.pass_finished(pass_id, now, "interrupted", detail="mirrord stopped")
                self._tasks.pop(root)
                log.info("pass.interrupted dir=%s", root)
        # Whatever the watcher queued before it stopped still goes into the journal, and a
        # pass that ended meanwhile is recorded as it ended.
        leftovers = []
        while not self._q.empty():
            leftovers.append(self._q.get_nowait())
        self._apply(
            [r for r in leftovers
             if isinstance(r, RawEvent | Overflow | RootGone | PassDone | CatchUp)]
        )  # fmt: skip
        self._tasks.clear()
        for root in list(self._waiters):
            self._resolve(root, {"result": "stopped"})
        assert self.journal is not None
        for root in self.dirs:
            # A walk not applied yet: the next run walks from the older stop.
            self.journal.close_clean(
                [root], min(unwatched_from, self._catch_up.get(root, math.inf))
            )
        self.journal.close()
        self._write_status()
        with contextlib.suppress(OSError):
            os.unlink(self.run_dir / SOCKET_NAME)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
        sdnotify.notify("STOPPING=1")
        log.info("daemon.stopped")
