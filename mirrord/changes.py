"""Watch the mirrored roots with inotify and turn events into dirty paths.

Threads: one reader thread reads the kernel's inotify queue, asks the pure
`mirrord.watchtable.WatchTable` what the events mean, and only puts small records
(`RawEvent`, `Overflow`, `RootGone`) on the daemon's queue, and adds or removes watches; the
daemon's consumer turns records into relative paths with `paths_of` and feeds the planner and
the journal.

- The mask subscribes to creations, modifications, attribute changes, deletions, moves and
  close-after-write only: no open or close-nowrite events, so mirrord's own rsync reading the
  tree makes no noise. Symlinks are never followed (IN_DONT_FOLLOW), and a file deleted while
  still open reports nothing more (IN_EXCL_UNLINK).
- A rename records both paths (the old one is deleted on the peer by --delete-missing-args).
  A directory that appears (created, or moved in) is watched, and walked by the daemon: with
  --files-from rsync sends a listed directory without its contents.
- Inotify overflow: the kernel dropped events. The `Overflow` record makes the daemon schedule
  a full pass of every root (all watches share one inotify queue), and the reader watches the
  directories created meanwhile.
- Watch budget: one inotify watch per directory; the directory count is checked against
  /proc/sys/fs/inotify/max_user_watches at start and reported.
- Blind spots: inotify takes a path shorter than PATH_MAX, so a directory whose absolute path
  is 4,096 bytes or longer cannot be watched, nor anything below it. The walk that counts the
  watches names the topmost such directories, and a directory that appears that deep is named
  as it appears; the daemon shows them in status and covers them with full passes.

Why not watchdog's observer (which mirrord used until 2026-12): it handed every event through
three threads (its reader, its emitter's move grouper, its dispatcher), 89 us of CPU per event
against 8 us read directly (`bench/mirror.py`'s churn: 18,000 events cost it 1.6 CPU s), and
kept about 0.5 KiB per watched directory.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import select
import struct
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from mirrord.backups import BACKUP_DIR
from mirrord.watchtable import (
    WATCH_MASK,
    Action,
    Overflow,
    RawEvent,
    Reconcile,
    Unwatch,
    WatchBelow,
    WatchTable,
)

log = logging.getLogger(__name__)

# inotify_add_watch flags besides the events: directories only, never through a symlink, and
# no events about a child already unlinked.
IN_ONLYDIR: Final = 0x01000000
IN_DONT_FOLLOW: Final = 0x02000000
IN_EXCL_UNLINK: Final = 0x04000000
# One read takes this much of the queue (an event is 16 bytes and a name of at most 256).
READ_SIZE: Final = 64 * 1024
# Under a stream of changes (reads less than STREAM_WITHIN apart) the reader lets the next
# events gather in the kernel's queue for GATHER before it reads again: one read, one hand-over
# and one wake-up of the daemon's loop for many events instead of one per file written. After
# a quiet spell the first event is read and handed over at once.
STREAM_WITHIN: Final = 0.05
GATHER: Final = 0.02
# After a read that failed, the reader waits this long before it reads again.
READ_RETRY: Final = 1.0
_HEADER = struct.Struct("iIII")
BACKUP_NAME: Final = os.fsencode(BACKUP_DIR)
MAX_USER_WATCHES: Final = Path("/proc/sys/fs/inotify/max_user_watches")
# The kernel marks this file POLLPRI when a filesystem is mounted or unmounted (proc(5)).
MOUNTINFO: Final = Path("/proc/self/mountinfo")
# Warn when the roots need more than this share of the per-user watch limit.
WATCH_WARN_SHARE: Final = 0.8
# inotify_add_watch copies at most PATH_MAX bytes of path, its NUL included (ENAMETOOLONG).
PATH_MAX: Final = 4096


class Sink(Protocol):
    """Where the reader thread puts records: a queue.Queue, or the daemon's loop bridge."""

    def put(self, item: Any) -> None:
        """Accept one record; called from the reader thread."""


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
    inotify refuses their paths, so nothing below them is seen."""
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


def _is_dir(entry: os.DirEntry[Any]) -> bool:
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


class Inotify:
    """An inotify instance (libc's inotify_init1, inotify_add_watch, inotify_rm_watch)."""

    def __init__(self) -> None:
        """Open the instance (non-blocking, closed on exec); OSError when the kernel refuses."""
        self._libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self._call(self._libc.inotify_init1, os.O_NONBLOCK | os.O_CLOEXEC)

    def add(self, path: bytes) -> int:
        """Watch directory `path` (never a symlink's target); return its watch descriptor."""
        flags = WATCH_MASK | IN_ONLYDIR | IN_DONT_FOLLOW | IN_EXCL_UNLINK
        return self._call(self._libc.inotify_add_watch, self.fd, path, flags, path=path)

    def remove(self, wd: int) -> None:
        """End a watch (gone already: nothing to do)."""
        self._libc.inotify_rm_watch(self.fd, wd)

    def read(self) -> list[tuple[int, int, int, bytes]]:
        """Return the queued events as (wd, mask, cookie, name); [] when none are queued."""
        try:
            buf = os.read(self.fd, READ_SIZE)
        except BlockingIOError:
            return []
        return parse(buf)

    def close(self) -> None:
        """Close the instance (every watch ends)."""
        os.close(self.fd)

    @staticmethod
    def _call(fn: Any, *args: Any, path: bytes | None = None) -> int:
        result = int(fn(*args))
        if result < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), os.fsdecode(path) if path else None)
        return result


def parse(buf: bytes) -> list[tuple[int, int, int, bytes]]:
    """Split a read of the inotify queue into (wd, mask, cookie, name) events."""
    out: list[tuple[int, int, int, bytes]] = []
    at, size = 0, len(buf)
    while at + _HEADER.size <= size:
        wd, mask, cookie, length = _HEADER.unpack_from(buf, at)
        at += _HEADER.size
        name = buf[at : at + length].split(b"\0", 1)[0]
        at += length
        out.append((wd, mask, cookie, name))
    return out


class Watcher:
    """Watch all roots through one inotify instance, feeding `sink` from one reader thread."""

    def __init__(self, roots: Sequence[str], sink: Sink) -> None:
        """Nothing is watched before `start`."""
        self.roots = list(roots)
        self.sink = sink
        self._inotify: Inotify | None = None
        self._table = WatchTable(unwatched=BACKUP_NAME)
        # Held while the table changes: by the reader, and by watch()/unwatch() callers.
        self._lock = threading.Lock()
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name="inotify", daemon=True)
        # Per root, the topmost directories too deep to watch (as of its last (re)watch).
        self.unwatchable: dict[str, tuple[str, ...]] = {}

    def start(self) -> list[str]:
        """Start watching; return the roots that could not be watched."""
        surveys = {r: survey(r) for r in self.roots}
        count = sum(s.directories for s in surveys.values())
        budget = judge_watch_budget(count, read_max_user_watches())
        (log.info if budget.ok else log.error)(budget.message)
        try:
            self._inotify = Inotify()
        except OSError as exc:
            log.error("watch.failed error=%s", exc)
            return list(self.roots)
        self._thread.start()
        return [r for r in self.roots if not self.watch(r, surveys[r])]

    def watch(self, root: str, known: Survey | None = None) -> bool:
        """(Re)watch one root and every directory below it (`known`: its survey, if just
        taken); return whether it is watched."""
        found = known if known is not None else survey(root)
        self.unwatchable[root] = found.unwatchable
        for rel in found.unwatchable:
            log.error("watch.unwatchable root=%s path=%s why=path_max", root, rel)
        if self._inotify is None:
            return False
        with self._lock:
            self._unwatch(root)
            try:
                wd = self._inotify.add(os.fsencode(root))
                self._table.add_root(wd, root)
                self._watch_below(os.fsencode(root), wd)
            except OSError as exc:
                self._unwatch(root)
                log.error("watch.failed root=%s error=%s", root, exc)
                return False
        log.info("watch.started root=%s", root)
        return True

    def unwatch(self, root: str) -> None:
        """Stop watching one root (a reload dropped it)."""
        self.unwatchable.pop(root, None)
        with self._lock:
            if self._unwatch(root):
                log.info("watch.stopped root=%s", root)

    def stop(self) -> None:
        """End the reader thread and the inotify instance."""
        os.write(self._stop_w, b"x")
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        if self._inotify is not None:
            self._inotify.close()
            self._inotify = None
        os.close(self._stop_r)
        os.close(self._stop_w)

    @property
    def watches(self) -> int:
        """The number of directories watched."""
        return len(self._table)

    # -- with the lock held ---------------------------------------------------------------

    def _unwatch(self, root: str) -> bool:
        wd = self._table.root_wd(root)
        if wd is None:
            return False
        self._remove(self._table.drop(wd))
        return True

    def _remove(self, wds: Iterable[int]) -> None:
        assert self._inotify is not None
        for w in wds:
            self._inotify.remove(w)

    def _add(self, path: bytes, parent: int, name: bytes) -> int | None:
        """Watch directory `path` (`name` in the directory `parent` watches) and record it;
        return its watch, or None when it is not to be watched (a root's backup area, a path
        too long for inotify) or cannot be (vanished, not a directory). OSError only when the
        kernel's watch limit is reached."""
        assert self._inotify is not None
        if not self._table.watches_name(parent, name) or len(path) >= PATH_MAX:
            return None  # too deep: the daemon names it (blind_spots)
        try:
            wd = self._inotify.add(path)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise
            return None
        self._table.add_dir(wd, parent, name)
        if wd not in self._table:
            self._inotify.remove(wd)  # its parent left meanwhile
            return None
        return wd

    def _watch_below(self, top: bytes, top_wd: int) -> None:
        """Watch every directory below `top` (watched by `top_wd`) that is to be watched,
        without following symlinks (OSError only when the kernel's watch limit is reached)."""
        stack = [(top, top_wd)]
        while stack:
            path, wd = stack.pop()
            try:
                with os.scandir(path) as it:
                    names = [e.name for e in it if _is_dir(e)]
            except OSError:
                continue
            for name in names:
                child = path + b"/" + name
                cwd = self._add(child, wd, name)
                if cwd is not None:
                    stack.append((child, cwd))

    def _execute(self, actions: list[Action]) -> None:
        for a in actions:
            if isinstance(a, WatchBelow):
                self._watch_new(a)
            elif isinstance(a, Unwatch):
                self._remove(a.wds)
            elif isinstance(a, Reconcile):
                self._reconcile()
            else:
                self.sink.put(a)

    def _watch_new(self, a: WatchBelow) -> None:
        try:
            wd = self._add(a.path, a.parent, a.name)
            if wd is not None:
                self._watch_below(a.path, wd)
        except OSError as exc:  # the watch limit
            log.error("watch.limit path=%s error=%s", os.fsdecode(a.path), exc)
            self.sink.put(Overflow(None))

    def _reconcile(self) -> None:
        for root in self.roots:
            wd = self._table.root_wd(root)
            if wd is not None:
                try:
                    self._watch_below(os.fsencode(root), wd)
                except OSError as exc:
                    log.error("watch.limit root=%s error=%s", root, exc)

    # -- the reader thread ----------------------------------------------------------------

    def _run(self) -> None:
        assert self._inotify is not None
        poller = select.poll()
        poller.register(self._inotify.fd, select.POLLIN)
        poller.register(self._stop_r, select.POLLIN)
        stop = select.poll()
        stop.register(self._stop_r, select.POLLIN)
        streaming_until = -1.0
        while True:
            with self._lock:
                deadline = self._table.next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic()) * 1000
            fds = {fd for fd, _ in poller.poll(timeout)}
            if self._stop_r in fds:
                return
            try:
                events = self._inotify.read() if self._inotify.fd in fds else []
                with self._lock:
                    now = time.monotonic()
                    self._execute(self._table.feed(events, now) + self._table.expire(now))
            except Exception:
                # Never a silent end: a reader that died would leave the roots unwatched while
                # the daemon counts on their events. What this read held is lost: full passes.
                log.exception("watch.read_failed note=every root gets a full pass")
                self.sink.put(Overflow(None))
                if stop.poll(READ_RETRY * 1000):
                    return
                continue
            if events:
                if now < streaming_until and stop.poll(GATHER * 1000):
                    return
                streaming_until = now + STREAM_WITHIN


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
