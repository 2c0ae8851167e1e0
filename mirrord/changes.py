"""Watch the mirrored roots with watchdog (inotify) and turn events into dirty paths.

Threads: watchdog's threads only `queue.put()` small records (`RawEvent`, `Overflow`,
`RootGone`); the daemon's consumer turns them into relative paths with `paths_of` and feeds the
planner and the journal.

- The event filter subscribes to creations, modifications, attribute changes, deletions, moves and
  close-after-write only: no open or close-nowrite events, so mirrord's own rsync reading the
  tree makes no noise.
- A rename records both paths (the old one is deleted on the peer by --delete-missing-args).
  A directory that appears (created, or moved in) is walked: with --files-from rsync sends a
  listed directory without its contents.
- Inotify overflow: the kernel dropped events, and watchdog only logs it. A logging handler on
  watchdog's inotify loggers turns that message into an `Overflow` record, and the daemon
  schedules a full pass of every root (all watches share one inotify queue).
- Watch budget: one inotify watch per directory; the directory count is checked against
  /proc/sys/fs/inotify/max_user_watches at start and reported.
- Blind spots: inotify takes a path shorter than PATH_MAX, so a directory whose absolute path
  is 4,096 bytes or longer cannot be watched, nor anything below it (watchdog skips it
  silently). The walk that counts the watches names the topmost such directories, and a
  directory that appears that deep is named as it appears; the daemon shows them in status
  and covers them with full passes.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from watchdog.events import (
    DirAttribEvent,
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.inotify import InotifyObserver

from mirrord.backups import BACKUP_DIR

log = logging.getLogger(__name__)

# The events that can change what the mirror must hold. Left out: open and close-nowrite (reads,
# rsync's own included), and DirModifiedEvent, which watchdog synthesises for the parent of every
# create/delete/move/close-write (the entry's own event names the path; --relative sends the
# parents along).
EVENT_FILTER: Final[list[type[FileSystemEvent]]] = [
    FileCreatedEvent, FileModifiedEvent, FileAttribEvent, FileDeletedEvent, FileMovedEvent,
    FileClosedEvent, DirCreatedEvent, DirAttribEvent, DirDeletedEvent, DirMovedEvent,
]  # fmt: skip
# watchdog's loggers that report a kernel queue overflow, and the text they use.
OVERFLOW_LOGGERS: Final = ("watchdog.observers.inotify_c", "watchdog.observers.inotify")
OVERFLOW_TEXT: Final = "Inotify queue overflowed"
MAX_USER_WATCHES: Final = Path("/proc/sys/fs/inotify/max_user_watches")
# The kernel marks this file POLLPRI when a filesystem is mounted or unmounted (proc(5)).
MOUNTINFO: Final = Path("/proc/self/mountinfo")
# Warn when the roots need more than this share of the per-user watch limit.
WATCH_WARN_SHARE: Final = 0.8
# inotify_add_watch copies at most PATH_MAX bytes of path, its NUL included (ENAMETOOLONG).
PATH_MAX: Final = 4096


@dataclass(frozen=True)
class RawEvent:
    """One watchdog event, as put on the queue by watchdog's thread."""

    directory: str
    # watchdog's event_type: created, modified, attrib, deleted, moved, closed.
    kind: str
    src: str
    # The destination of a move ("" otherwise).
    dest: str
    is_dir: bool


@dataclass(frozen=True)
class Overflow:
    """The kernel dropped events; None means every watched root is affected."""

    directory: str | None


@dataclass(frozen=True)
class RootGone:
    """A watched root itself was deleted or moved away; its watch has ended."""

    directory: str


Record = RawEvent | Overflow | RootGone


class Sink(Protocol):
    """Where watchdog's threads put records: a queue.Queue, or the daemon's loop bridge."""

    def put(self, item: Any) -> None:
        """Accept one record; called from watchdog's threads."""


def relative(root: str, path: str) -> str | None:
    """Return `path` relative to `root`, or None if outside it or in the backup area."""
    if path == root:
        return "."
    prefix = root.rstrip("/") + "/"
    if not path.startswith(prefix):
        return None
    rel = path[len(prefix) :]
    if rel == BACKUP_DIR or rel.startswith(BACKUP_DIR + "/"):
        return None
    return rel


def _walk(root: str, rel: str) -> list[str]:
    """Return `rel` and everything below it (relative), for a directory that appeared."""
    out = [rel]
    top = os.path.join(root, rel)
    for dirpath, dirnames, filenames in os.walk(top):
        base = os.path.relpath(dirpath, root)
        out += [os.path.join(base, n) for n in (*dirnames, *filenames)]
    return out


def paths_of(ev: RawEvent, walk: bool = True) -> list[str]:
    """Return the relative paths an event makes dirty (consumer side; may walk new dirs)."""
    out: list[str] = []
    src = relative(ev.directory, ev.src) if ev.src else None
    if src is not None:
        out.append(src)
    if ev.kind == "moved" and ev.dest:
        dest = relative(ev.directory, ev.dest)
        if dest is not None:
            out += _walk(ev.directory, dest) if ev.is_dir and walk else [dest]
    elif ev.kind == "created" and ev.is_dir and walk and src is not None:
        out = _walk(ev.directory, src)
    return out


def appeared(ev: RawEvent) -> bool:
    """Return whether the event brings a directory into the tree (its contents need a walk)."""
    return ev.is_dir and (ev.kind == "created" or (ev.kind == "moved" and bool(ev.dest)))


def blind_spots(events: Iterable[RawEvent]) -> dict[str, set[str]]:
    """Return, per root, the directories that appeared too deep to watch (relative paths):
    watchdog fails to watch them, silently."""
    out: dict[str, set[str]] = {}
    for ev in events:
        path = ev.dest if ev.kind == "moved" else ev.src
        if appeared(ev) and too_deep_to_watch(path):
            rel = relative(ev.directory, path)
            if rel is not None:
                out.setdefault(ev.directory, set()).add(rel)
    return out


def coalesce(events: Iterable[RawEvent], walk: bool = True) -> dict[str, set[str]]:
    """Group events into per-directory sets of dirty relative paths."""
    dirty: dict[str, set[str]] = {}
    for ev in events:
        paths = paths_of(ev, walk)
        if paths:
            dirty.setdefault(ev.directory, set()).update(paths)
    return dirty


class _Handler(FileSystemEventHandler):
    """Runs in watchdog's thread: only builds a record and puts it on the queue."""

    def __init__(self, directory: str, sink: Sink) -> None:
        super().__init__()
        self.directory = directory
        self.sink = sink

    def dispatch(self, event: FileSystemEvent) -> None:
        src = os.fsdecode(event.src_path)
        dest = os.fsdecode(event.dest_path)
        if event.event_type == "deleted" and src == self.directory:
            self.sink.put(RootGone(self.directory))
            return
        self.sink.put(RawEvent(self.directory, event.event_type, src, dest, event.is_directory))


class OverflowDetector(logging.Handler):
    """Turns watchdog's "Inotify queue overflowed" log message into an `Overflow` record."""

    def __init__(self, sink: Sink) -> None:
        super().__init__(level=logging.WARNING)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        if OVERFLOW_TEXT in str(record.msg):
            self.sink.put(Overflow(None))

    def attach(self) -> None:
        """Listen on watchdog's inotify loggers (making sure warnings reach us)."""
        for name in OVERFLOW_LOGGERS:
            lg = logging.getLogger(name)
            if not lg.isEnabledFor(logging.WARNING):
                lg.setLevel(logging.WARNING)
            lg.addHandler(self)

    def detach(self) -> None:
        """Stop listening."""
        for name in OVERFLOW_LOGGERS:
            logging.getLogger(name).removeHandler(self)


@dataclass(frozen=True)
class WatchBudget:
    """The inotify watches the roots need, against the per-user limit."""

    directories: int
    limit: int | None
    ok: bool
    message: str


def judge_watch_budget(directories: int, limit: int | None) -> WatchBudget:
    """Decide whether `directories` watches fit under `limit` with room to spare."""
    if limit is None:
        return WatchBudget(directories, None, True, "watch.budget limit=unknown")
    msg = f"watch.budget dirs={directories} max_user_watches={limit}"
    if directories >= limit:
        hint = " exceeded: raise fs.inotify.max_user_watches; unwatched roots get full passes"
        return WatchBudget(directories, limit, False, msg + hint)
    if directories >= limit * WATCH_WARN_SHARE:
        return WatchBudget(directories, limit, True, msg + " nearly exhausted")
    return WatchBudget(directories, limit, True, msg)


def too_deep_to_watch(path: str) -> bool:
    """Return whether inotify cannot watch the directory at absolute `path` (too long)."""
    return len(os.fsencode(path)) >= PATH_MAX


@dataclass(frozen=True)
class Survey:
    """What watching one root takes: its directories, and those that cannot be watched."""

    directories: int
    # The topmost directories (relative) too deep to watch; nothing below them is watched.
    unwatchable: tuple[str, ...] = ()


def survey(root: str) -> Survey:
    """Walk `root` (without following symlinks): count its directories (one inotify watch
    each) and name the topmost ones whose absolute path is too long to watch."""
    count, deep, stack = 0, [], [root]
    while stack:
        top = stack.pop()
        count += 1
        try:
            with os.scandir(top) as it:
                entries = [e for e in it if e.name != BACKUP_DIR and _is_dir(e)]
        except OSError:
            continue
        for e in entries:
            if too_deep_to_watch(e.path):
                deep.append(os.path.relpath(e.path, root))
            else:
                stack.append(e.path)
    return Survey(count, tuple(sorted(deep)))


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False


def read_max_user_watches(path: Path = MAX_USER_WATCHES) -> int | None:
    """Return the per-user inotify watch limit, or None if it cannot be read."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


class Watcher:
    """One watchdog observer over all roots, feeding `sink`."""

    def __init__(self, roots: Sequence[str], sink: Sink) -> None:
        self.roots = list(roots)
        self.sink = sink
        self._observer = InotifyObserver()
        self._detector = OverflowDetector(sink)
        self._watches: dict[str, Any] = {}
        # Per root, the topmost directories too deep to watch (as of its last (re)watch).
        self.unwatchable: dict[str, tuple[str, ...]] = {}

    def start(self) -> list[str]:
        """Start watching; return the roots that could not be watched."""
        # watchdog warns (RuntimeWarning, from its inotify thread) when `mkdir -p a/b` races its
        # recursive watch set-up. Harmless, but under `-W error` the warning would end that
        # thread and every change after it would go unseen.
        warnings.filterwarnings(
            "ignore", message="Callback with id .* already exists", category=RuntimeWarning
        )
        surveys = {r: survey(r) for r in self.roots}
        count = sum(s.directories for s in surveys.values())
        budget = judge_watch_budget(count, read_max_user_watches())
        (log.info if budget.ok else log.error)(budget.message)
        self._detector.attach()
        self._observer.start()
        return [r for r in self.roots if not self.watch(r, surveys[r])]

    def watch(self, root: str, known: Survey | None = None) -> bool:
        """(Re)schedule the watch of one root (`known`: its survey, if just taken); return
        whether it is watched."""
        found = known if known is not None else survey(root)
        self.unwatchable[root] = found.unwatchable
        for rel in found.unwatchable:
            log.error("watch.unwatchable root=%s path=%s why=path_max", root, rel)
        old = self._watches.pop(root, None)
        if old is not None:
            self._observer.unschedule(old)
        try:
            self._watches[root] = self._observer.schedule(
                _Handler(root, self.sink), root, recursive=True, event_filter=EVENT_FILTER
            )
        except OSError as exc:
            log.error("watch.failed root=%s error=%s", root, exc)
            return False
        log.info("watch.started root=%s", root)
        return True

    def unwatch(self, root: str) -> None:
        """Stop watching one root (a reload dropped it)."""
        self.unwatchable.pop(root, None)
        old = self._watches.pop(root, None)
        if old is not None:
            self._observer.unschedule(old)
            log.info("watch.stopped root=%s", root)

    def stop(self) -> None:
        """Stop the observer and detach the overflow detector."""
        self._detector.detach()
        self._observer.stop()
        self._observer.join(timeout=5)


class MountWatcher:
    """A thread that calls `changed()` whenever a filesystem is mounted or unmounted in this
    mount namespace (poll on /proc/self/mountinfo: POLLPRI), until `stop()`."""

    def __init__(self, changed: Any, path: Path = MOUNTINFO) -> None:
        self._changed = changed
        self._path = path
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name="mountinfo", daemon=True)

    def start(self) -> None:
        """Start the thread (an unreadable mountinfo leaves the re-watch timer alone to look)."""
        self._thread.start()

    def _run(self) -> None:
        try:
            with open(self._path, "rb") as f:
                poller = select.poll()
                poller.register(f.fileno(), select.POLLPRI | select.POLLERR)
                poller.register(self._stop_r, select.POLLIN)
                while True:
                    fds = {fd for fd, _ in poller.poll()}
                    if self._stop_r in fds:
                        return
                    log.info("mount.changed")
                    self._changed()
        except OSError as exc:
            log.warning("mount.unwatched error=%s note=the re-watch timer looks instead", exc)

    def stop(self) -> None:
        """End the thread and wait for it."""
        os.write(self._stop_w, b"x")
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        os.close(self._stop_r)
        os.close(self._stop_w)
