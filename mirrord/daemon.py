"""mirrord's daemon: the watcher, planner, journal, guard and transfer wired on one asyncio loop.

Threads: the inotify reader (`changes.Watcher`) only puts records on the loop's queue
(`LoopSink.put`). Work that walks or moves a tree (a new directory's contents, the set-aside of
orphans, re-watching a root) runs in a worker thread and comes back as a record too, so the
loop keeps serving the final flush and systemd's watchdog meanwhile. One consumer coroutine
applies every record: changes go to the journal (first, so they survive a crash) and to the
planner; then it asks the planner which passes are due, starts each as a task (one rsync per
directory at a time), and sets the loop's wake-up timer to the planner's next deadline. A
finished pass comes back as a record too, so the planner and the journal are only ever touched
by the consumer.

Clocks: every decision and timer runs on the monotonic clock (`clock`, the loop's own timers:
the wake-up, status, re-watch, pruning and WATCHDOG=1), so a step of the wall clock delays no
pass and no watchdog ping. The wall clock (`wall`) only stamps what outlives the process or is
compared with file times: the journal, the status file, backup and recovery names, the source
marker. APScheduler serves what is truly calendar time: the policies' cron `schedule`s.

Files: the journal in the state dir; `mirrord.json` (status, rewritten atomically every second
and after each pass) and `mirrord.sock` (control: sync requests, status) in the run dir.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import inspect
import json
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

from mirrord import (
    deletions,
    guard,
    mounts,
    orphans,
    reloadplan,
    roles,
    sdnotify,
    stopping,
    tunnel,
)
from mirrord.backups import find_unbackable, open_area, prune_backups, unbackable
from mirrord.changes import MountWatcher, Watcher, appeared, blind_spots, coalesce, relative
from mirrord.follow import Follower, PeerSeen, RoleSeen
from mirrord.journal import COMMIT_WITHIN, Journal
from mirrord.planner import Cadence, PassKind, PassPlan, Planner, Result
from mirrord.scan import Changed, changed_since
from mirrord.tally import PassTally
from mirrord.transfer import (
    Peer,
    TransferOptions,
    TransferResult,
    add_forward,
    files_from,
    full_argv,
    incremental_argv,
    literal_pattern,
    run_rsync,
    sendable,
    tunnel_env,
    tunneled,
    use_pidfd_watcher,
)
from mirrord.watchtable import Overflow, RawEvent, RootGone
from takeover.fsutil import write_atomic
from takeover.reloadplan import ReloadRefused
from takeover.status import process_start

if TYPE_CHECKING:
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

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
# The set-aside walk of a node that crashed as the source starts this long before its last
# confirmed pass began: a change made just before that pass whose event reached the daemon
# after the pass took its snapshot was not in it (seconds; the event comes within tens of ms).
SET_ASIDE_MARGIN: Final = 1.0
# rsync's words for a backup path at or past PATH_MAX, and ours for the paths it stops.
BACKUP_TOO_LONG: Final = ("backup filename too long", "File name too long")
UNBACKABLE: Final = "path too long for its backup copy on the peer"
# Why a directory whose absolute path passes PATH_MAX is left out (mirrord.changes).
UNWATCHABLE: Final = "directory path past PATH_MAX: inotify cannot watch it, rsync cannot read it"
# Seconds between prunings of the backup areas (what the peer's passes replaced here).
# (Also what bounds the backup budget's overshoot: a growing file backed up at every pass.)
PRUNE_INTERVAL: Final = 600.0


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
    @property
    def schedule(self) -> str | None: ...


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
    # Crontab line (local time) of the scheduled audits, or None.
    schedule: str | None = None

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
        schedule=policy.schedule,
    )


def _root_of(d: MirrorDir) -> str:
    return d.root


# -- records on the consumer's queue -----------------------------------------------------------


@dataclass(frozen=True)
class Tick:
    """A timer fired: re-evaluate what is due."""


@dataclass(frozen=True)
class Rewatch:
    """Try to watch the roots that are not watched, and look at the watched ones' mounts (the
    re-watch timer, or /proc/self/mountinfo signalled a mount or an unmount)."""


@dataclass(frozen=True)
class Stop:
    """Shut down cleanly."""


@dataclass(frozen=True)
class Walked:
    """What the walk of directories that appeared found (relative paths per root)."""

    paths: dict[str, set[str]]
    # Roots whose walk failed: only a full pass is sure to carry their new contents.
    failed: tuple[str, ...] = ()


@dataclass(frozen=True)
class SetAside:
    """What the set-aside of orphans (mirrord.orphans, in a thread) moved or could not move."""

    moved: dict[str, list[orphans.Orphan]]
    failed: dict[str, int]


@dataclass(frozen=True)
class GapWalked:
    """What changed in each root while takeover was lost (walked from its gap marker's time)."""

    found: dict[str, Changed]


@dataclass(frozen=True)
class Rewatched:
    """The unwatched roots a re-watch (in a thread) could watch again."""

    restored: frozenset[str]
    # What each restored root is on now (mirrord.mounts).
    seen: dict[str, mounts.RootMount] = field(default_factory=dict)
    # The roots it tried (None: every unwatched root).
    tried: frozenset[str] | None = None


@dataclass(frozen=True)
class MountsMoved:
    """/proc/self/mountinfo signalled a mount or an unmount: look at the roots now."""


@dataclass(frozen=True)
class MountsSeen:
    """What the watched roots are on now (looked at in a thread; mirrord.mounts judges)."""

    seen: dict[str, mounts.RootMount]


@dataclass(frozen=True)
class Scheduled:
    """A directory's cron schedule fired: audit it."""

    directory: str


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
    # Entries created, and deletions that were the old names of renames (in `deleted` too).
    created: int = 0
    renamed: int = 0
    # The peer refused the pass for a cause only a full pass mends (mirrord.outcome's `full`).
    full: str | None = None


@dataclass(frozen=True)
class PassDone:
    """A pass task ended."""

    plan: PassPlan
    pass_id: int
    mark: int
    # When it started, on the monotonic clock and on the wall clock (for the journal).
    started: float
    started_wall: float
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


async def every(seconds: float, job: Callable[[], object], *, first: float | None = None) -> None:
    """Run `job` every `seconds` on the loop's monotonic timers (the first time after `first`
    seconds), awaiting what it returns if that is awaitable; a late run is not repeated."""
    loop = asyncio.get_running_loop()
    due = loop.time() + (seconds if first is None else first)
    while True:
        await asyncio.sleep(max(0.0, due - loop.time()))
        result = job()
        if inspect.isawaitable(result):
            await result
        due = max(due + seconds, loop.time())


def _keep_carrier(root: str) -> bool:
    """Make sure the source root has its backup area, the carrier an incremental pass lists
    for the root's own times (mirrord.transfer); return whether it has. A pushing node
    following takeover has it already (its source marker lives there); a standalone one
    creates it here. An unsafe area (a symlink, another owner's) stays as it is: it is not
    listed, and the root's times wait for the next full pass."""
    try:
        os.close(open_area(root, create=True))
    except OSError:  # UnsafeArea too
        return False
    return True


def _below(paths: Iterable[str]) -> tuple[str, ...]:
    """Return the prefixes of what lies below `paths` (for str.startswith)."""
    return tuple(p.rstrip("/") + "/" for p in paths)


def write_json_atomic(path: Path, document: object) -> None:
    """Write `document` to `path` through a temp file and a rename (readers never see half).

    One line: json's C encoder writes it, where an indented document goes through the pure
    Python one (the status is written at every pass start and end; `mirrord status` shows it).
    """
    text = json.dumps(document, sort_keys=True, separators=(",", ":"))
    write_atomic(path, text, mode=0o600)


@dataclass(frozen=True)
class Reload:
    """SIGHUP: re-read the cluster file and the policies, apply what changed."""


@dataclass(frozen=True)
class Reloaded:
    """What a reload read: the directories and the settings that apply live."""

    dirs: tuple[MirrorDir, ...]
    flush_timeout: float
    backup_budget: str | None


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
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        follow: bool = False,
        peer_name: str = "peer",
        flush_timeout: float = 20.0,
        backup_retention: float | None = None,
        backup_budget: str | None = None,
        reloader: Callable[[], Reloaded] | None = None,
        tunnel_password: str | None = None,
    ) -> None:
        """`tunnel_password`: rsync's password for the peer's standing daemon, when the peer
        has a tunnel port (mirrord.tunnel)."""
        if peer is None and local_dest is None:
            raise DaemonError("mirrord: need a peer or a local destination")
        self.dirs = {d.root: d for d in dirs}
        # What the peer's passes overwrote or deleted here is kept this long (None: forever).
        self.backup_retention = backup_retention
        # ...and within this budget per root, oldest passes first (mirrord.backups).
        self.backup_budget = backup_budget
        # Bytes each root's backup area held at the last pruning (None: not measured yet).
        self._backup_size: dict[str, int | None] = dict.fromkeys(self.dirs)
        self.peer = peer
        # The tunnel to the peer's standing daemon (None: every push is an ssh session).
        self._tunnel: tunnel.Tunnel | None = None
        self._tunnel_env: dict[str, str] = {}
        if peer is not None and peer.tunnel_port and tunnel_password and local_dest is None:
            self._tunnel = tunnel.Tunnel()
            self._tunnel_env = tunnel_env(tunnel_password)
        self.state_dir = state_dir
        self.run_dir = run_dir
        self.node = node
        self.local_dest = local_dest
        # Decisions and timers (monotonic); what is stamped or compared with file times (wall).
        self.clock = clock
        self.wall = wall
        self.planner = Planner()
        self.journal: Journal | None = None
        self._q: asyncio.Queue[Any] = asyncio.Queue()
        self._tasks: dict[str, tuple[asyncio.Task[PassDone], int]] = {}
        self._last: dict[str, _LastPass] = {d: _LastPass() for d in self.dirs}
        self._tree_size: dict[str, int | None] = dict.fromkeys(self.dirs)
        self._expect_mount: dict[str, bool] = {}
        self._deleted: dict[str, list[tuple[float, int]]] = {d: [] for d in self.dirs}
        # How paths left each tree since they were sent (renames are not deletions).
        self._departures = {d: deletions.Departures() for d in self.dirs}
        self._allow_deletions: set[str] = set()
        self._unwatched: set[str] = set()
        self._waiters: dict[str, list[_SyncWait]] = {}
        self._vouch: dict[str, str] = {}
        self._stopping = False
        self._started = 0.0
        self._lock_fd: int | None = None
        self._watcher: Watcher | None = None
        # The policies' cron schedules (None when no directory has one), the periodic jobs
        # and the planner's wake-up (the loop's monotonic timers).
        self._scheduler: AsyncIOScheduler | None = None
        self._timers: list[asyncio.Task[None]] = []
        self._wake: asyncio.TimerHandle | None = None
        # The journal's commit of recorded changes, when one is due (mirrord.journal;
        # cancelled as the journal closes).
        self._commit_at: asyncio.TimerHandle | None = None
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
        # This node's takeover epoch as takeover last told it, and the gap (takeover lost while
        # receiving, mirrord.roles) while it lasts.
        self._epoch: int | None = None
        # The peer's epoch as takeover last heard it (kept while the peer is unknown).
        self._peer_epoch: int | None = None
        self._gap: roles.Gap | None = None
        # Whether the next set-aside walks a gap marker's root for what changed since (False
        # only when the gap ended with the node having served nobody).
        self._gap_walk = True
        self._marked = False
        # Whether this run itself marked the roots (a marker it did not set is a crash's).
        self._marked_here = False
        self._received = 0
        self._ok_start: dict[str, float] = {}
        self._flush: dict[str, Any] | None = None
        self._follower: asyncio.Task[None] | None = None
        self._wake_at: float | None = None
        # The final flush of this RELEASING is over: no pass may start (mirrord.stopping).
        self._released = False
        # Paths that cannot be mirrored (root -> path -> why): excluded from passes, in status.
        self._not_mirrored: dict[str, dict[str, str]] = {d: {} for d in self.dirs}
        # Passes being stopped (root -> why): their task ends as a RETRY, not a cancellation.
        self._stop_why: dict[str, str] = {}
        # Cumulative pass figures for the metrics, and the status document last written.
        self._tally = PassTally()
        # With the pid, tells `status` a later process given the same pid from this one.
        self._pid_start = process_start(os.getpid())
        self.last_status: dict[str, Any] | None = None
        # Work in worker threads whose record has not been applied yet (see _background).
        self._bg: set[asyncio.Task[Any]] = set()
        self._walks_pending = 0
        self._setting_aside = False
        self._rewatching = False
        # What each watched root was on when its watches were set, and the roots whose
        # filesystem is gone (root -> why: an alarm in status until it is back). mirrord.mounts
        self._seen: dict[str, mounts.RootMount] = {}
        self._mount_alarm: dict[str, str] = {}
        # Per root, the descriptor pinning it while its pass runs (`_execute`).
        self._pins: dict[str, int] = {}
        self._looking = False
        self._mount_watch: MountWatcher | None = None
        # Reads the files again on SIGHUP (raises ReloadRefused); None: a reload is logged.
        self.reloader = reloader
        # Roots a reload dropped while their pass ran: dropped once it has ended.
        self._retiring: set[str] = set()
        self.last_reload: dict[str, Any] | None = None

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

    def _monotonic(self, wall_time: float) -> float:
        """Return the monotonic time of a wall-clock time read from the journal."""
        return self.clock() - (self.wall() - wall_time)

    def _wall_of(self, mono: float | None) -> float | None:
        """Return the wall-clock time of a planner (monotonic) time, for the status file."""
        return None if mono is None else self.wall() - (self.clock() - mono)

    def _open_journal(self, now: float) -> Journal:
        journal = Journal(self.state_dir)
        wall = self.wall()
        dirty_at_start: dict[str, int] = {}
        for root, d in self.dirs.items():
            vouch = journal.open_directory(root, wall)
            last_full = journal.last_full(root)
            self._tree_size[root] = last_full.files if last_full else None
            ended = last_full.ended if last_full else None
            last_ok = None if ended is None else self._monotonic(ended)
            self.planner.add_directory(root, d.cadence, now, last_full_ok=last_ok)
            dirty = journal.dirty(root)
            dirty_at_start[root] = len(dirty)
            self.planner.restore(root, {p: self._monotonic(t) for p, t in dirty.items()})
            self._vouch[root] = vouch.reason
            if vouch.vouched and vouch.stopped_at is not None:
                self._catch_up[root] = vouch.stopped_at
            if not vouch.vouched:
                reason = f"startup: {vouch.reason}"
                self.planner.need_full(root, reason, now)
                # Persisted, so a clean stop before the full pass does not vouch next time.
                journal.need_full(root, reason, wall)
            self._expect_mount[root] = os.path.ismount(root)
        if self.follow:
            self._resume_receiving(journal, dirty_at_start)
        return journal

    def _resume_receiving(self, journal: Journal, dirty: dict[str, int]) -> None:
        """Start receiving if the last run received and set everything aside (mirrord.roles,
        "across a restart"); otherwise forget that it did. `dirty`: each root's dirty paths."""
        start = [
            roles.RootAtStart(journal.received(r), orphans.has_source(r), dirty[r])
            for r in self.dirs
        ]
        if not roles.resumes_receiving(start):
            journal.clear_receiving()
            return
        self._direction = roles.direction(None, None, self.node, self.peer_name, True)
        # A gap opened before takeover answers knows which epochs mean "served meanwhile".
        self._epoch, self._peer_epoch = journal.received_epochs()
        log.info("role.direction push=False receiving=True why=%s (as the last run did, "
                 "epochs %s/%s)", self._direction.why, self._epoch, self._peer_epoch)  # fmt: skip

    async def run(self) -> None:
        """Run until SIGTERM/SIGINT (or `stop()`), then shut down cleanly."""
        loop = asyncio.get_running_loop()
        use_pidfd_watcher(loop)
        self._lock()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        now = self.clock()
        self._started = self.wall()
        self.journal = self._open_journal(now)
        sink = LoopSink(loop, self._q)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        loop.add_signal_handler(signal.SIGHUP, lambda: self._q.put_nowait(Reload()))
        self._watcher = Watcher(list(self.dirs), sink)
        self._unwatched = set(await asyncio.to_thread(self._watcher.start))
        for root in self._unwatched:
            self.planner.need_full(root, "unwatched", now)
        for root in self.dirs:
            self._set_blind(root)
        watched = [r for r in self.dirs if r not in self._unwatched]
        self._seen = await asyncio.to_thread(lambda: {r: guard.root_mount(r) for r in watched})
        self._mount_watch = MountWatcher(lambda: sink.put(MountsMoved()))
        self._mount_watch.start()
        server = await asyncio.start_unix_server(self._serve, path=self.run_dir / SOCKET_NAME)
        os.chmod(self.run_dir / SOCKET_NAME, 0o600)
        self._start_timers(sink)
        self._scheduler = self._start_schedules(loop)
        if self._direction.push:
            self._start_catch_up()  # standalone: the watcher runs, so the walk misses nothing
        if self.follow:
            # takeover stamps its status file with the wall clock.
            follower = Follower(self.run_dir, self._q.put_nowait, self.final_flush, self.wall)
            self._follower = asyncio.ensure_future(follower.run())
        self._write_status()
        sdnotify.notify("READY=1\nSTATUS=mirroring")
        log.info("daemon.ready dirs=%d peer=%s", len(self.dirs), self.peer and self.peer.address)
        # Consult the planner now: a start-up full pass is due at once, not on the first record.
        self._q.put_nowait(Tick())
        try:
            await self._consume()
        finally:
            await self._shutdown(server)

    def _start_timers(self, sink: LoopSink) -> None:
        """Start the periodic jobs on the loop's monotonic timers (never the wall clock: a
        clock step must not hold back WATCHDOG=1 until systemd kills a healthy daemon)."""
        jobs = [
            every(STATUS_INTERVAL, self._write_status),
            every(REWATCH_INTERVAL, lambda: sink.put(Rewatch())),
        ]
        if self.backup_retention is not None:
            # On whichever node receives: the passes' backup areas, once now and then hourly.
            jobs.append(every(PRUNE_INTERVAL, self._prune_in_thread, first=0.0))
        ping = sdnotify.watchdog_interval()
        if ping:
            # A coroutine on the loop itself: each WATCHDOG=1 proves that the loop turns.
            jobs.append(every(ping, lambda: sdnotify.notify("WATCHDOG=1")))
        self._timers = [asyncio.ensure_future(job) for job in jobs]

    async def _prune_in_thread(self) -> None:
        await asyncio.to_thread(self.prune_backups, self.wall())

    def _start_schedules(self, loop: asyncio.AbstractEventLoop) -> AsyncIOScheduler | None:
        """Start APScheduler with the directories' cron schedules (calendar time, local)."""
        scheduled = {root: d.schedule for root, d in self.dirs.items() if d.schedule}
        if not scheduled:
            return None
        # Imported only when a policy has a schedule (mirrord.policy says why).
        from apscheduler.schedulers.asyncio import AsyncIOScheduler  # noqa: PLC0415
        from apscheduler.triggers.cron import CronTrigger  # noqa: PLC0415

        sched = AsyncIOScheduler(event_loop=loop)
        for root, line in scheduled.items():

            async def fire(root: str = root) -> None:
                self._q.put_nowait(Scheduled(root))

            # However late the loop gets to it, a fired schedule is one audit.
            sched.add_job(fire, CronTrigger.from_crontab(line), id=f"schedule:{root}",
                          misfire_grace_time=None, coalesce=True)  # fmt: skip
        sched.start()
        return sched

    def prune_backups(self, now: float) -> None:
        """Delete each root's backup hours older than the retention (a thread runs this)."""
        assert self.backup_retention is not None
        for root in self.dirs:
            try:
                done = prune_backups(root, self.backup_retention, now, self.backup_budget)
            except OSError as exc:
                log.warning("backups.prune_failed dir=%s error=%s", root, exc)
                continue
            self._backup_size[root] = done.size
            if done.expired or done.over_budget:
                log.info(
                    "backups.pruned dir=%s hours=%s over_budget=%s size=%d budget=%s", root,
                    ",".join(done.expired), ",".join(done.over_budget), done.size, done.budget,
                )  # fmt: skip

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
                # Under a stream of events, gather for a moment: one journal write and one
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
            self._commit_soon()
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
        if not self._direction.receiving:
            for ev in events:
                self._note_departure(ev)
        for root, paths in coalesce(events, walk=False).items():
            if root not in self.dirs:
                # Queued before a reload dropped the directory: it is not mirrored any more.
                continue
            if self._direction.receiving:
                # The peer's rsync wrote them: never journaled, never pushed back.
                self._received += len(paths)
                continue
            self.journal.record_changes(root, paths, self.wall())
            self.planner.changes(root, paths, now)
        new_dirs = [ev for ev in events if appeared(ev)]
        if new_dirs and not self._direction.receiving:
            for root, rels in blind_spots(new_dirs).items():
                if root in self.dirs:
                    self._set_blind(root, sorted(rels))
            # rsync --files-from sends a listed directory without its contents: they are
            # walked off the loop and come back as a Walked record.
            self._walks_pending += 1
            self._background(self._walk_new, new_dirs)
        for rec in batch:
            if isinstance(rec, Overflow):
                # One inotify queue serves every watch: all roots lost events.
                for root in self.dirs:
                    self._need_full(root, "overflow", now)
            elif isinstance(rec, RootGone) and rec.directory in self.dirs:
                self._unwatched.add(rec.directory)
                self._need_full(rec.directory, "root vanished", now)
            elif isinstance(rec, Rewatch):
                self._rewatch(now)
                self._look_at_mounts()
            elif isinstance(rec, MountsMoved):
                # Cheap (a stat per root), however often mounts change on this host: only
                # the roots whose filesystem is gone are tried again at once.
                self._look_at_mounts()
                self._rewatch(now, only=set(self._mount_alarm))
            elif isinstance(rec, MountsSeen):
                self._mounts_seen(rec, now)
            elif isinstance(rec, SyncRequest):
                self._request(rec, now)
            elif isinstance(rec, PassDone):
                self._finish(rec, now)
                if rec.plan.directory in self._retiring:
                    self._drop_dir(rec.plan.directory)
            elif isinstance(rec, Reload):
                self._reload(now)
            elif isinstance(rec, CatchUp):
                self._caught_up(rec, now)
            elif isinstance(rec, Scheduled):
                self.planner.schedule_audit(rec.directory, now)
            elif isinstance(rec, Walked):
                self._walked_dirs(rec, now)
            elif isinstance(rec, SetAside):
                self._set_aside(rec)
            elif isinstance(rec, GapWalked):
                self._gap_walked(rec, now)
            elif isinstance(rec, Rewatched):
                self._rewatched(rec, now)

    def _background(self, work: Callable[..., Any], *args: Any) -> None:
        """Run blocking `work(*args)` in a worker thread; its result (a record) comes back on
        the queue. It must not raise: it would be lost with what it found."""
        task = asyncio.ensure_future(asyncio.to_thread(work, *args))
        self._bg.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        self._bg.discard(task)
        if task.cancelled():
            return
        if task.exception() is not None:
            log.error("background.failed error=%r", task.exception())
            return
        self._q.put_nowait(task.result())

    @staticmethod
    def _walk_new(events: list[RawEvent]) -> Walked:
        """In a worker thread: list the contents of the directories that appeared."""
        try:
            return Walked(coalesce(events))
        except Exception:
            log.exception("walk.failed")
            return Walked({}, failed=tuple(sorted({ev.directory for ev in events})))

    def _walked_dirs(self, rec: Walked, now: float) -> None:
        """Apply a walk of new directories: their contents become dirty."""
        assert self.journal is not None
        self._walks_pending -= 1
        for root, paths in rec.paths.items():
            self.journal.record_changes(root, paths, self.wall())
            self.planner.changes(root, paths, now)
        for root in rec.failed:
            self._need_full(root, "the walk of a new directory failed", now)

    # -- reload ------------------------------------------------------------------------------

    def _reload(self, now: float) -> None:
        """Re-read the files and apply the difference (mirrord.reloadplan); on any problem
        keep everything as it runs and say why (log at error, status)."""
        if self.reloader is None:
            log.info("reload.unsupported note=restart_to_apply")
            return
        try:
            got = self.reloader()
        except ReloadRefused as err:
            for problem in err.problems:
                log.error("reload.failed problem=%s", problem)
            self.last_reload = {"time": self.wall(), "ok": False, "problems": list(err.problems)}
            self._write_status()
            return
        p = reloadplan.plan(self.dirs, got.dirs, _root_of)
        for root in p.removed:
            self._retire(root)
        for d in p.added:
            self._add_dir(d, now)
        for d in p.changed:
            # New cadence, excludes and options from the next pass on; a pass running
            # finishes with the old ones.
            self.dirs[d.root] = d
            self.planner.set_cadence(d.root, d.cadence)
        self.flush_timeout, self.backup_budget = got.flush_timeout, got.backup_budget
        log.info("reload.applied changes=%s", ",".join(p.changes()))
        self.last_reload = {"time": self.wall(), "ok": True, "changes": p.changes()}
        self._write_status()

    def _add_dir(self, d: MirrorDir, now: float) -> None:
        """Watch a directory a reload added and give it its first full pass."""
        assert self.journal is not None
        root = d.root
        self._retiring.discard(root)
        self.dirs[root] = d
        self._backup_size[root] = None
        self._last[root] = _LastPass()
        self._tree_size[root] = None
        self._deleted[root] = []
        self._departures[root] = deletions.Departures()
        self._not_mirrored[root] = {}
        self.journal.open_directory(root, self.wall())
        self.planner.add_directory(root, d.cadence, now)
        dirty = self.journal.dirty(root)
        self.planner.restore(root, {p: self._monotonic(t) for p, t in dirty.items()})
        self._vouch[root] = "added by a reload"
        self._expect_mount[root] = os.path.ismount(root)
        self._need_full(root, "reload: new directory", now)
        # Watching walks the whole tree: in a worker thread, as every re-watch; until it is
        # watched, full passes poll it (and one more follows once the watch is in place).
        self._unwatched.add(root)
        if self._watcher is not None:
            self._rewatch(now, only={root})

    def _retire(self, root: str) -> None:
        """Stop pushing a directory a reload dropped; its data stays as it is on both nodes."""
        if root in self._tasks and not self._tasks[root][0].done():
            # Its pass ends first (as a RETRY: nothing half-sent is lost or recorded as sent).
            self._retiring.add(root)
            self._stop_why[root] = "directory removed by a reload"
            self._tasks[root][0].cancel()
            log.warning("pass.stopping dir=%s why=removed_by_reload", root)
            return
        self._drop_dir(root)

    def _drop_dir(self, root: str) -> None:
        self._retiring.discard(root)
        if self._watcher is not None:
            self._watcher.unwatch(root)
        self._unwatched.discard(root)
        self._seen.pop(root, None)
        self._mount_alarm.pop(root, None)
        self.planner.remove_directory(root)
        self.dirs.pop(root, None)
        self._catch_up.pop(root, None)
        log.info("reload.dir_removed dir=%s note=data_left_as_it_is", root)

    def _note_departure(self, ev: RawEvent) -> None:
        """Remember how a path left its tree, for the guard (mirrord.deletions)."""
        dep = self._departures.get(ev.directory)
        src = relative(ev.directory, ev.src) if ev.src else None
        if dep is None or src is None:
            return
        if ev.kind == "moved":
            dep.moved(src, relative(ev.directory, ev.dest) if ev.dest else None, ev.is_dir)
        elif ev.kind == "deleted":
            dep.deleted(src, ev.is_dir)
        elif ev.kind == "created":
            dep.created(src)

    def _need_full(self, root: str, reason: str, now: float) -> None:
        assert self.journal is not None
        self.planner.need_full(root, reason, now)
        self.journal.need_full(root, reason, self.wall())

    def _rewatch(self, now: float, only: set[str] | None = None) -> None:
        """Try, in a worker thread (a watch walks the whole tree), to watch the unwatched
        roots (`only` these, if given) again; the result comes back as a Rewatched record."""
        roots = self._unwatched if only is None else self._unwatched & only
        if self._rewatching or not roots:
            return
        self._rewatching = True
        expect = {r: self._expect_mount.get(r, False) for r in roots}
        tried = None if only is None else frozenset(roots)
        self._background(self._watch_again, sorted(roots), expect, tried)

    def _watch_again(
        self, roots: list[str], expect: dict[str, bool], tried: frozenset[str] | None = None
    ) -> Rewatched:
        """In a worker thread: watch each root again, unless it is missing or not mounted
        (its bare mount point would be watched); return those now watched."""
        assert self._watcher is not None
        restored, seen = set(), {}
        for root in roots:
            try:
                now = guard.root_mount(root)
                if mounts.absent(root, expect[root], now) is not None:
                    continue
                if os.path.isdir(root) and self._watcher.watch(root):
                    restored.add(root)
                    seen[root] = now
            except Exception:
                log.exception("watch.failed root=%s", root)
        return Rewatched(frozenset(restored), seen, tried)

    def _rewatched(self, rec: Rewatched, now: float) -> None:
        self._rewatching = False
        tried = self._unwatched if rec.tried is None else self._unwatched & rec.tried
        for root in sorted(tried):
            if root in rec.restored:
                self._unwatched.discard(root)
                self._seen[root] = rec.seen[root]
                if self._mount_alarm.pop(root, None) is not None:
                    log.warning("mount.back dir=%s", root)
                self._set_blind(root)
                self._need_full(root, "watch restored", now)
            elif not self.planner.is_running(root):
                # No inotify here: poll with full passes, spaced by the planner.
                self.planner.need_full(root, "unwatched", now)

    def _look_at_mounts(self) -> None:
        """Look, in a worker thread (a stat may hang on a dead mount), at what the watched
        roots are on; the answer comes back as a MountsSeen record."""
        if self._looking or not self._seen:
            return
        self._looking = True
        roots = sorted(self._seen)
        self._background(lambda: MountsSeen({r: guard.root_mount(r) for r in roots}))

    def _mounts_seen(self, rec: MountsSeen, now: float) -> None:
        """Act on mount changes (mirrord.mounts): a gone root is an alarm at once and is
        watched no more; a root on another filesystem is watched again with a full pass."""
        self._looking = False
        moved = False
        for root, seen in rec.seen.items():
            if root not in self._seen or root not in self.dirs:
                continue
            expect = self._expect_mount.get(root, False)
            change, why = mounts.judge(root, expect, self._seen[root], seen)
            if change is mounts.Change.SAME:
                continue
            del self._seen[root]
            moved = True
            if self._watcher is not None:
                self._watcher.unwatch(root)
            self._unwatched.add(root)
            if change is mounts.Change.GONE:
                self._mount_alarm[root] = why
                log.error("mount.gone dir=%s why=%s", root, why)
            else:
                log.warning("mount.changed dir=%s why=%s", root, why)
                self._need_full(root, "filesystem changed", now)
        if moved:
            self._write_status()
            self._rewatch(now)

    def _set_blind(self, root: str, appeared: Iterable[str] = ()) -> None:
        """Leave out of every pass, and name, the root's directories too deep to watch (from
        its last (re)watch, or `appeared` since): rsync cannot read them either (it fails
        the whole pass, at every retry), and no change below them would ever be seen."""
        found = self._watcher.unwatchable.get(root, ()) if self._watcher else ()
        self._skip(root, [*found, *appeared], UNWATCHABLE)

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
        if self._walks_pending:
            return  # what the walk finds may still be owed
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

    def _commit_soon(self) -> None:
        """Have the journal commit each change still dirty once it is COMMIT_WITHIN old
        (mirrord.journal)."""
        if self._commit_at is not None or self.journal is None:
            return
        due = self.journal.next_commit()
        if due is not None:
            delay = max(0.0, due - time.monotonic())
            self._commit_at = asyncio.get_running_loop().call_later(delay, self._commit)

    def _commit(self) -> None:
        self._commit_at = None
        if self.journal is not None:
            self.journal.commit(aged=COMMIT_WITHIN)
            self._commit_soon()

    def _start_due(self) -> None:
        assert self.journal is not None
        now = self.clock()
        if self._quarantine_due and not self._tasks and not self._walks_pending:
            self._quarantine()
        if not stopping.may_start(self._direction.push, self._released) or self._setting_aside:
            return
        for plan in self.planner.due(now):
            d = self.dirs[plan.directory]
            self.planner.pass_started(plan, now)
            mark = self.journal.mark()
            wall = self.wall()
            pass_id = self.journal.pass_started(d.root, plan.kind.value, plan.reason, wall)
            log.info(
                "pass.start dir=%s kind=%s reason=%s paths=%d",
                d.root, plan.kind.value, plan.reason, len(plan.paths),
            )  # fmt: skip
            task = asyncio.ensure_future(self._pass(d, plan, pass_id, mark, started=now, wall=wall))
            task.add_done_callback(self._pass_ended)
            self._tasks[d.root] = (task, pass_id)

    def _pass_ended(self, task: asyncio.Task[PassDone]) -> None:
        if not task.cancelled():
            self._q.put_nowait(task.result())

    async def _pass(
        self, d: MirrorDir, plan: PassPlan, pass_id: int, mark: int, *, started: float, wall: float
    ) -> PassDone:
        try:
            outcome = await self._execute(d, plan, started, wall)
        except asyncio.CancelledError:
            why = self._stop_why.pop(d.root, None)
            if why is None or self._stopping:
                raise
            # Stopped (mirrord.stopping), rsync reaped: the snapshot goes back, as a retry.
            log.warning("pass.stopped dir=%s why=%s", d.root, why)
            outcome = PassOutcome(Result.RETRY, f"stopped: {why}")
        except Exception as exc:
            # rsync could not start, or a bug: the snapshot must go back, never get lost.
            log.exception("pass.crashed dir=%s", d.root)
            outcome = PassOutcome(Result.RETRY, f"pass crashed: {exc!r}")
        return PassDone(plan, pass_id, mark, started, wall, outcome)

    def _recently_deleted(self, d: MirrorDir, now: float) -> int:
        """Return the deletions this directory's passes made within the window."""
        window = max(DELETE_WINDOW, 2 * d.cadence.max_interval)
        recent = [(t, n) for t, n in self._deleted[d.root] if t >= now - window]
        self._deleted[d.root] = recent
        return sum(n for _t, n in recent)

    @staticmethod
    def _room(limit: int | None, already: int, renames: int = 0) -> int | None:
        """Return rsync's --max-delete for a pass: what the window has left (rsync counts the
        old names of renames too)."""
        return None if limit is None else max(0, limit - already) + renames

    def _dest(self, root: str) -> str | None:
        if self.local_dest is None:
            return None
        dest = self.local_dest / root.lstrip("/")
        dest.mkdir(parents=True, exist_ok=True)
        return str(dest)

    async def _execute(self, d: MirrorDir, plan: PassPlan, now: float, wall: float) -> PassOutcome:
        """Run one pass with its root pinned (`guard.pin_root`) from before the guard looks at
        it until rsync has ended: the tree the guard passed is the tree rsync reads. Unpinned,
        an unmount between the check and rsync's start made rsync read the bare mount point,
        and --delete-missing-args deleted the pass's paths on the peer."""
        look_task = asyncio.ensure_future(asyncio.to_thread(guard.look_at_root, d.root))
        try:
            look = await asyncio.shield(look_task)
        except asyncio.CancelledError:
            # Stopped while the thread looked: it still ends, and its pin must not outlive it.
            look = await look_task
            if look.pin is not None:
                os.close(look.pin)
            raise
        if look.pin is not None:
            self._pins[d.root] = look.pin
        try:
            return await self._execute_pinned(d, plan, now, wall, look)
        finally:
            if look.pin is not None:
                del self._pins[d.root]
                os.close(look.pin)

    async def _execute_pinned(
        self, d: MirrorDir, plan: PassPlan, now: float, wall: float, look: guard.Look
    ) -> PassOutcome:
        """Run one pass: the guard's checks, then rsync (`wall` names its backups)."""
        verdict = guard.judge_root(d.root, look.facts, self._expect_mount.get(d.root, False))
        if not verdict.ok:
            log.warning("guard.refused dir=%s reason=%s", d.root, verdict.reason)
            return PassOutcome(Result.ALARM, verdict.reason)
        if not look.same:
            why = "guard: the source root changed while it was checked (a mount or a rename)"
            log.warning("guard.refused dir=%s reason=%s", d.root, why)
            return PassOutcome(Result.RETRY, why)
        if plan.kind is not PassKind.FULL and d.options.excludes:
            # Never list what the policy excludes: the guard counts, and rsync sends, the rest.
            kept = await asyncio.to_thread(sendable, d.root, plan.paths, d.options.excludes)
            if not kept:
                return PassOutcome(Result.OK, "nothing to send: every dirty path is excluded")
            plan = replace(plan, paths=frozenset(kept))
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
            return await self._transfer(d, plan, wall, full=full, dest=dest, limit=None)
        renamed = self._departures[d.root].renamed_away()
        if full:
            limit, renames = None, 0
            if d.options.delete and limit_known:
                dry = await self._rsync(
                    d.root,
                    full_argv(d.root, self.peer, d.options, wall, dry_run=True, dest=dest,
                              pin=self._pins[d.root]),
                    keep_deleted=REPORT_PATHS, renamed=renamed,
                )  # fmt: skip
                if dry.outcome.result is not Result.OK:
                    return self._outcome(dry, "dry run: ")
                st = dry.stats
                # The peer's tree now: the source's entries, less those it lacks, plus those
                # it would delete.
                before = deletions.tree_before(st.files - st.created + st.deleted, already)
                limit, renames = d.delete_limit(before), st.renamed
                refusal = self._judge(d, st.deleted - st.renamed + already, limit, dry)
                if refusal is not None:
                    return refusal
            room = self._room(limit, already, renames)
            return await self._transfer(d, plan, wall, full=True, dest=dest, limit=room)
        limit = d.delete_limit(deletions.tree_before(self._tree_size.get(d.root), already))
        renames = 0
        if d.options.delete and limit is not None:
            missing = await asyncio.to_thread(guard.missing_paths, d.root, plan.paths)
            tally = deletions.tally(missing, self._departures[d.root])
            count, renames, dry_res = tally.deletions, tally.renamed, None
            if tally.unsure:
                # A directory takes its subtree from the peer: only a dry run knows how much.
                carried = await asyncio.to_thread(_keep_carrier, d.root)
                dry_res = await self._rsync(
                    d.root,
                    incremental_argv(d.root, self.peer, d.options, wall, dest=dest, dry_run=True,
                                     pin=self._pins[d.root]),
                    files_from(plan.paths, carried), keep_deleted=REPORT_PATHS, renamed=renamed,
                )  # fmt: skip
                if dry_res.outcome.result is not Result.OK:
                    return self._outcome(dry_res, "dry run: ")
                count = dry_res.stats.deleted - dry_res.stats.renamed
                renames = dry_res.stats.renamed
            refusal = self._judge(d, count + already, limit, dry_res)
            if refusal is not None:
                return refusal
        room = self._room(limit, already, renames)
        return await self._transfer(d, plan, wall, full=False, dest=dest, limit=room)

    @staticmethod
    def _judge(
        d: MirrorDir, count: int, limit: int | None, dry: TransferResult | None
    ) -> PassOutcome | None:
        """Return the refusal of a pass deleting `count` entries in the window, or None."""
        verdict = guard.judge_deletions(d.root, count, limit)
        if verdict.ok:
            return None
        log.warning("guard.refused dir=%s reason=%s", d.root, verdict.reason)
        sample = ", ".join(dry.stats.deleted_paths) if dry is not None else ""
        return PassOutcome(Result.ALARM, f"{verdict.reason}; e.g. {sample}" if sample else
                           verdict.reason)  # fmt: skip

    async def _transfer(
        self,
        d: MirrorDir,
        plan: PassPlan,
        wall: float,
        *,
        full: bool,
        dest: str | None,
        limit: int | None,
    ) -> PassOutcome:
        """Run the pass's rsync with `limit` as its --max-delete backstop (`wall`: its start,
        which names its backups).

        Paths whose backup path rsync cannot name are left out (and named), never sent: rsync
        would abort the whole pass on them, again at every retry (mirrord.backups).
        """
        skip = self._not_mirrored[d.root]
        opts = replace(d.options, max_delete=limit)
        renamed = self._departures[d.root].renamed_away()
        if full:
            first = None
            if plan.paths:
                # The watcher saw these paths change, but the full pass's quick check (size and
                # mtime to the nanosecond) skips a same-size rewrite whose mtime did not move
                # (put back by the writer, or a coarse clock), and success clears them: send
                # them first with -I, as an incremental pass would. Deletions stay the full
                # pass's (guarded) business; its -H then relinks what -I sent as copies.
                paths = plan.paths
                if opts.excludes:
                    paths = frozenset(
                        await asyncio.to_thread(sendable, d.root, paths, opts.excludes)
                    )
                first = await self._incremental(d, paths, replace(opts, delete=False), wall, dest)
                if first.result is not Result.OK:
                    return replace(first, detail=f"dirty paths of a full pass: {first.detail}")
            opts = replace(opts, excludes=opts.excludes + tuple(map(literal_pattern, sorted(skip))))
            argv = full_argv(d.root, self.peer, opts, wall, audit=plan.audit, dest=dest,
                             pin=self._pins[d.root])  # fmt: skip
            res = await self._rsync(d.root, argv, renamed=renamed)
            if opts.backup and res.rc and any(w in res.stderr for w in BACKUP_TOO_LONG):
                found = await asyncio.to_thread(find_unbackable, d.root, wall)
                new = [p for p in found if p not in skip]
                if new:
                    self._skip(d.root, new)
                    return PassOutcome(Result.RETRY, f"{UNBACKABLE}: {', '.join(new[:5])}; "
                                       "left out from now on", rc=res.rc)  # fmt: skip
            out = self._outcome(res)
            if out.result is Result.OK and skip:
                # ok means the peer has what the source has: but for these, named.
                out = replace(out, detail=f"{out.detail}; not mirrored ({len(skip)}, see "
                              f"status): {', '.join(sorted(skip)[:5])}")  # fmt: skip
            if first is None or out.result is not Result.OK:
                return out
            return replace(
                out,
                changed=out.changed + first.changed,
                bytes_sent=out.bytes_sent + first.bytes_sent,
            )
        return await self._incremental(d, plan.paths, opts, wall, dest)

    async def _incremental(
        self,
        d: MirrorDir,
        paths: frozenset[str],
        opts: TransferOptions,
        wall: float,
        dest: str | None,
    ) -> PassOutcome:
        """Send `paths` with -I (never the quick check), leaving out those not mirrored (rsync
        cannot back them up, or reach them) and what lies below them."""
        skip = self._not_mirrored[d.root]
        too_long = unbackable(paths, wall) if opts.backup else []
        self._skip(d.root, too_long)
        below = _below(skip)
        left = sorted(p for p in paths if p in skip or p.startswith(below))
        argv = incremental_argv(d.root, self.peer, opts, wall, dest=dest, pin=self._pins[d.root])
        carried = await asyncio.to_thread(_keep_carrier, d.root)
        res = await self._rsync(
            d.root, argv, files_from(set(paths) - set(left), carried),
            renamed=self._departures[d.root].renamed_away(),
        )  # fmt: skip
        out = self._outcome(res)
        if left:
            why = sorted({skip[p] for p in left if p in skip} or {UNBACKABLE})
            out = replace(out, detail=f"{out.detail}; not mirrored ({'; '.join(why)}): "
                          f"{', '.join(left[:5])}")  # fmt: skip
        return out

    async def _rsync(
        self,
        root: str,
        argv: Sequence[str],
        paths: Iterable[str] | None = None,
        *,
        keep_deleted: int = 0,
        renamed: frozenset[str] = frozenset(),
    ) -> TransferResult:
        """Run rsync on the directory `root`'s pass pinned (`_execute`; a pass runs no rsync
        before its pin is taken and checked): `argv` is built with `pin=self._pins[root]`.

        With a tunnel (mirrord.tunnel) that is up, the pass goes through it; if the tunnel
        failed it, the same pass goes by ssh at once. A pass by ssh that succeeds brings the
        tunnel's forward up when it is due."""
        listed = None if paths is None else list(paths)
        pin = self._pins[root]
        t, peer = self._tunnel, self.peer
        if t is not None and peer is not None and t.use():
            res = await run_rsync(tunneled(argv, peer, root), listed, keep_deleted=keep_deleted,
                                  renamed=renamed, pin=pin, env=self._tunnel_env)  # fmt: skip
            why = tunnel.failure(res.rc, res.stats.changed, res.stderr)
            if why is None:
                t.carried_one()
                return res
            t.failed_one(why, self.clock())
            log.warning("tunnel.down dir=%s reason=%s note=the pass goes by ssh", root, why)
        res = await run_rsync(argv, listed, keep_deleted=keep_deleted, renamed=renamed, pin=pin)
        if t is not None and peer is not None and res.rc == 0 and t.forward_due(self.clock()):
            t.forwarding()
            try:
                error = await add_forward(peer)
            except asyncio.CancelledError:
                t.forwarded("the pass was stopped while the forward was added", self.clock())
                raise
            t.forwarded(error, self.clock())
            if error is None:
                log.info("tunnel.up port=%d", peer.tunnel_port)
            else:
                log.warning("tunnel.forward_failed port=%d error=%s", peer.local_port, error)
        return res

    def _skip(self, root: str, paths: Sequence[str], why: str = UNBACKABLE) -> None:
        """Leave `paths` of `root` (and what lies below them) out of every pass from now on,
        and name them."""
        for p in paths:
            if p not in self._not_mirrored[root]:
                self._not_mirrored[root][p] = why
                log.error("pass.not_mirrored dir=%s path=%s why=%s", root, p, why)

    @staticmethod
    def _outcome(res: TransferResult, prefix: str = "") -> PassOutcome:
        # The reason names the cause and the line that shows it (mirrord.outcome).
        return PassOutcome(
            result=res.outcome.result,
            detail=prefix + res.outcome.reason,
            rc=res.rc,
            changed=res.stats.changed,
            deleted=res.stats.deleted,
            bytes_sent=res.stats.bytes_sent,
            files=res.stats.files or None,
            created=res.stats.created,
            renamed=res.stats.renamed,
            full=res.outcome.full,
        )

    def _finish(self, done: PassDone, now: float) -> None:
        assert self.journal is not None
        plan, out = done.plan, done.outcome
        root = plan.directory
        self._tasks.pop(root, None)
        # A refusal only a full pass mends: the planner owes it (and starts it at once), the
        # journal keeps it across a restart.
        self.planner.pass_finished(root, out.result, now, detail=out.detail, redirect=out.full)
        wall = self.wall()
        if out.full is not None:
            self.journal.need_full(root, out.full, wall)
        self.journal.pass_finished(
            done.pass_id, wall, out.result.value,
            rc=out.rc, files=out.files, nbytes=out.bytes_sent, detail=out.detail,
        )  # fmt: skip
        if out.deleted > out.renamed:
            self._deleted[root].append((now, out.deleted - out.renamed))
        if out.result is Result.OK:
            self._ok_start[root] = done.started
            self.journal.clear_synced(root, plan.paths, done.mark)
            self._departures[root].forget(plan.paths)
            if plan.kind is PassKind.FULL:
                self.journal.full_done(root, done.started_wall, wall)
                self._tree_size[root] = out.files
            else:
                size = self._tree_size.get(root)
                self._tree_size[root] = deletions.grown(size, out.created, out.deleted)
        self._tally.record(root, out.result.value, now - done.started, out.bytes_sent)
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
        """Arm the loop's timer for the planner's next deadline (monotonic, as the planner)."""
        # Not pushing: nothing is due until a role record arrives (no wake-ups in the past).
        deadline = self.planner.next_deadline() if self._direction.push else None
        if deadline == self._wake_at and self._wake is not None:
            return  # the timer already set for this deadline has not fired yet
        if self._wake is not None:
            self._wake.cancel()
            self._wake = None
        self._wake_at = deadline
        if deadline is None:
            return
        delay = max(0.0, deadline - self.clock())
        self._wake = asyncio.get_running_loop().call_later(delay, self._woken)

    def _woken(self) -> None:
        self._wake = None
        self._q.put_nowait(Tick())

    # -- following takeover ---------------------------------------------------------------

    def _follow(self, rec: RoleSeen | PeerSeen, now: float) -> None:
        """Apply a role or peer record: recompute the direction and act on the change."""
        assert self.journal is not None
        before, peer_before = self._direction, self.peer_state
        epochs = (self._epoch, self._peer_epoch)
        if isinstance(rec, RoleSeen):
            if rec.role != self.role:
                log.info("role.seen role=%s old=%s reason=%s", rec.role, self.role, rec.reason)
            self.role, self.role_reason = rec.role, rec.reason
            if rec.epoch is not None:
                self._epoch = rec.epoch
            if rec.role != "RELEASING":
                self._released = False
        else:
            self.peer_state = rec.peer
            if rec.peer is not None and rec.peer.epoch is not None:
                self._peer_epoch = rec.peer.epoch
        # What to do is decided in one place (mirrord.roles.follow); here it is done.
        step = roles.follow(
            self.role, peer_before, self.peer_state, before,
            marked=self._marked, node=self.node, peer_name=self.peer_name,
            gap=self._gap, epoch=self._epoch, peer_epoch=self._peer_epoch,
        )  # fmt: skip
        d = step.direction
        self._gap = step.gap
        if step.open_gap:
            self._open_gap()
        if step.end_gap is not None:
            self._end_gap(step.end_gap)
        if step.full_pass is not None:
            for root in self.dirs:
                self._need_full(root, step.full_pass, now)
        if d != before:
            log.info("role.direction push=%s receiving=%s why=%s", d.push, d.receiving, d.why)
        if before.receiving and not d.receiving:
            self.journal.clear_receiving()
        elif d.receiving and epochs != (self._epoch, self._peer_epoch):
            self.journal.note_epochs((self._epoch, self._peer_epoch))
        if step.set_aside:
            self._quarantine_due = True
            self._catch_up = {}
        if step.catch_up:
            self._start_catch_up()
        if step.mark_source:
            for root in self.dirs:
                orphans.set_source(root, self.node, self.wall())
            self._marked = self._marked_here = True
        self._direction = d
        # Also when still pushing: a final flush that is over stops them (mirrord.stopping).
        self._stop_passes()
        self._write_status()

    def _open_gap(self) -> None:
        """takeover is lost while receiving: refuse the peer's pushes until it is back and
        what this node may have served meanwhile is sent or set aside (mirrord.roles)."""
        wall = self.wall()
        for root in self.dirs:
            orphans.set_source(root, self.node, wall, gap=True)
        self._marked = self._marked_here = True
        log.warning("gap.begins dirs=%d why=takeover lost while receiving: pushes wait",
                    len(self.dirs))  # fmt: skip

    def _end_gap(self, how: str) -> None:
        """takeover told a role that settles the gap: send, set aside, or only unmark."""
        log.warning("gap.ends how=%s role=%s epoch=%s", how, self.role, self._epoch)
        if how == roles.GAP_SEND:
            # The walk comes back as a GapWalked record; a final flush waits for it.
            self._walks_pending += 1
            self._background(self._walk_gap, list(self.dirs))
            return
        # The set-aside walks (or not) from the marker, then removes it: pushes resume.
        self._gap_walk = how == roles.GAP_SET_ASIDE
        self._quarantine_due = True

    @staticmethod
    def _walk_gap(roots: list[str]) -> GapWalked:
        """In a worker thread: what changed in each root since its gap marker was written."""
        found: dict[str, Changed] = {}
        for root in roots:
            began = orphans.gap_began(root)
            if began is None:
                continue
            try:
                # From the marker's own change time, no margin: the writes sought came after
                # it by the kernel's clock; a margin would only catch the peer's last pushes.
                found[root] = changed_since(root, began)
            except Exception:
                log.exception("gap.walk_failed dir=%s", root)
                found[root] = Changed(directories=["."])
        return GapWalked(found)

    def _gap_walked(self, rec: GapWalked, now: float) -> None:
        """Journal what changed in the gap: the node's own writes (sent, or set aside if it
        receives by now: the set-aside waits for this record); then it is the source."""
        assert self.journal is not None
        self._walks_pending -= 1
        for root, found in rec.found.items():
            if root not in self.dirs:
                continue
            log.info("gap.walked dir=%s changed=%d directories=%d", root, len(found.paths),
                     len(found.directories))  # fmt: skip
            if found.paths:
                self.journal.record_changes(root, found.paths, self.wall())
                self.planner.changes(root, found.paths, now)
            if found.directories and not self._direction.receiving:
                why = f"changed while takeover was away: directory {found.directories[0]}"
                self._need_full(root, why, now)
        if self._direction.receiving:
            return  # the gap markers stay for the set-aside
        for root in self.dirs:
            # The gap is over and this node is the source (also where no marker could be
            # written as the gap began).
            orphans.set_source(root, self.node, self.wall())

    def _running(self) -> list[str]:
        return [root for root, (task, _id) in self._tasks.items() if not task.done()]

    def _stop_passes(self) -> list[asyncio.Task[PassDone]]:
        """Stop the passes mirrord.stopping says must stop; return their tasks (each ends once
        its rsync is reaped, as a RETRY: the snapshot goes back to the dirty set)."""
        stop = stopping.passes_to_stop(
            self._running(), self._direction.push, self._released, self._direction.why
        )
        tasks = []
        for root in stop.roots:
            task = self._tasks[root][0]
            self._stop_why[root] = stop.why
            task.cancel()
            tasks.append(task)
            log.warning("pass.stopping dir=%s why=%s", root, stop.why)
        return tasks

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
            self.journal.record_changes(rec.root, rec.paths, self.wall())
            self.planner.changes(rec.root, rec.paths, now)

    def _quarantine(self) -> None:
        """Set aside what the journal holds that the peer never confirmed; then accept pushes.

        The journal is read here; the walk and the moves run in a worker thread (_move_aside)
        and come back as a SetAside record, applied by _set_aside.
        """
        assert self.journal is not None
        self._quarantine_due = False
        self._marked = False
        jobs: list[tuple[str, set[str], float | None, bool]] = []
        for root in self.dirs:
            candidates = set(self.journal.dirty(root))
            crashed = self._vouch.get(root) != "clean shutdown" and not self._marked_here
            since = None
            if crashed and orphans.has_source(root):
                # The last run crashed as the source: changes between inotify and the journal
                # died with it. Whatever changed since the last confirmed pass began is kept.
                confirmed = [p.started for p in self.journal.history(root, 200)
                             if p.result == "ok"]  # fmt: skip
                since = confirmed[0] - SET_ASIDE_MARGIN if confirmed else 0.0
            jobs.append((root, candidates, since, self._gap_walk))
        self._gap_walk = True
        self._setting_aside = True
        self._background(self._move_aside, jobs, self.wall(), f"role {self.role}")

    @staticmethod
    def _move_aside(jobs: list[tuple[str, set[str], float | None, bool]], wall: float,
                    reason: str) -> SetAside:  # fmt: skip
        """In a worker thread: walk for what a crash or a gap left unjournaled, move the
        orphans."""
        moved: dict[str, list[orphans.Orphan]] = {}
        failed: dict[str, int] = {}
        for root, dirty, since, walk_gap in jobs:
            candidates = set(dirty)
            try:
                began = orphans.gap_began(root)
                if began is not None:
                    # A gap's marker, not a crashed source's: what changed since takeover was
                    # lost is this node's (unless it served nobody meanwhile).
                    if walk_gap:
                        candidates |= changed_since(root, began).paths
                elif since is not None:
                    candidates |= changed_since(root, since).paths
                # What moves, the peer may hold: the set-aside asks it for a full pass.
                moved[root], unmovable = orphans.quarantine(root, candidates, wall, reason)
            except Exception:
                # The marker stays: the peer's pushes are refused until a later set-aside.
                log.exception("orphans.failed dir=%s", root)
                moved[root], unmovable = [], [root]
            failed[root] = len(unmovable)
        return SetAside(moved, failed)

    def _set_aside(self, rec: SetAside) -> None:
        """Apply a set-aside: the journal forgets what moved, then pushes are accepted."""
        assert self.journal is not None
        self._setting_aside = False
        found: list[orphans.Orphan] = []
        for root, moved in rec.moved.items():
            found += moved
            done = [o.path for o in moved]
            # The journal first: a crash after the marker is gone must not push those paths
            # as deletions.
            self.journal.clear_synced(root, done, self.journal.mark())
            self.planner.forget(root, done)
            if rec.failed.get(root):
                log.error("orphans.kept_marker dir=%s unmovable=%d", root, rec.failed[root])
                continue
            orphans.clear_source(root)
            if self._direction.receiving:
                # A restart now resumes receiving (mirrord.roles, "across a restart").
                self.journal.set_receiving([root], self.wall(), (self._epoch, self._peer_epoch))
        if found:
            orphans.record(self.state_dir, found)
            log.warning("orphans.found count=%d list=mirrord-orphans", len(found))

    async def final_flush(self) -> dict[str, Any]:
        """Push every directory until a pass that began after the flush did succeed (bounded by
        flush_timeout); return (and keep, for status) the report with any unsynced paths."""
        start = self.clock()
        report: dict[str, Any] = {"started": self.wall(), "ended": None, "ok": False,
                                  "unsynced": {}}  # fmt: skip
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
        # takeover hands over once the inhibitor is dropped: no pass of ours may outlive it.
        self._released = True
        stopped = self._stop_passes()
        if stopped:
            await asyncio.wait(stopped)
        report["ended"] = self.wall()
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
        log.info("flush.end ok=%s took=%.3f", report["ok"], self.clock() - start)
        self._write_status()
        return report

    def _flushed(self, root: str, mark: float) -> bool:
        """Whether everything seen before `mark` is on the peer."""
        if self._walks_pending:
            return False  # a walk's findings are not in the planner yet
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
                    # A gone filesystem is an alarm at once, before any pass is refused.
                    "alarm": st["alarm"] or self._mount_alarm.get(root),
                    # The planner's times are monotonic; the file speaks wall-clock time.
                    "last_finished": self._wall_of(st["last_finished"]),
                    "next_due": self._wall_of(st["next_due"]),
                    "schedule": d.schedule,
                    "class": d.volatility,
                    "watched": root not in self._unwatched,
                    "startup": self._vouch.get(root, ""),
                    "last": asdict(self._last[root]),
                    "not_mirrored": sorted(self._not_mirrored[root])[:FLUSH_REPORT],
                    "not_mirrored_why": {
                        p: self._not_mirrored[root][p]
                        for p in sorted(self._not_mirrored[root])[:FLUSH_REPORT]
                    },
                    "backup_bytes": self._backup_size[root],
                    "max_interval": d.cadence.max_interval,
                    "totals": self._tally.of(root),
                }
            )
            dirs.append(st)
        return {
            "pid": os.getpid(),
            "pid_start": self._pid_start,
            "node": self.node,
            "peer": None if self.peer is None else self.peer.login,
            "tunnel": (
                None
                if self._tunnel is None or self.peer is None
                else self._tunnel.status(self.peer.tunnel_port)
            ),
            "started": self._started,
            "updated": self.wall(),
            "status_interval": STATUS_INTERVAL,
            "stopped": self._stopping,
            "directories": dirs,
            "reload": self.last_reload,
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
                # takeover was lost while receiving: the peer's pushes wait (mirrord.roles).
                "gap": self._gap is not None,
                "last_flush": self._flush,
            },
        }

    def _write_status(self) -> None:
        try:
            self.last_status = doc = self.status()
            write_json_atomic(self.run_dir / STATUS_NAME, doc)
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
        for timer in self._timers:
            timer.cancel()
        if self._wake is not None:
            self._wake.cancel()
        server.close()
        # Changes from here on are the next run's walk's (mirrord.scan): the journal keeps
        # this moment as the stop.
        unwatched_from = self.wall()
        if self._bg:
            # A worker thread cannot be cancelled (a re-watch may be adding watches): its
            # record is applied below.
            await asyncio.wait(set(self._bg))
        if self._mount_watch is not None:
            await asyncio.to_thread(self._mount_watch.stop)
        if self._watcher is not None:
            await asyncio.to_thread(self._watcher.stop)
        now = self.wall()
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
        # Whatever the watcher queued before it stopped still goes into the journal (with
        # what the walks of new directories find, and a set-aside in progress), and a pass
        # that ended meanwhile is recorded as it ended.
        while True:
            leftovers = []
            while not self._q.empty():
                leftovers.append(self._q.get_nowait())
            self._apply(
                [r for r in leftovers if isinstance(
                    r, RawEvent | Overflow | RootGone | PassDone | CatchUp | Walked | SetAside)]
            )  # fmt: skip
            if not self._bg:
                break
            await asyncio.wait(set(self._bg))
        self._tasks.clear()
        for root in list(self._waiters):
            self._resolve(root, {"result": "stopped"})
        assert self.journal is not None
        for root in self.dirs:
            # A walk not applied yet: the next run walks from the older stop.
            self.journal.close_clean(
                [root], min(unwatched_from, self._catch_up.get(root, math.inf))
            )
        if self._commit_at is not None:
            self._commit_at.cancel()
        self.journal.close()
        self._write_status()
        with contextlib.suppress(OSError):
            os.unlink(self.run_dir / SOCKET_NAME)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
        sdnotify.notify("STOPPING=1")
        log.info("daemon.stopped")
