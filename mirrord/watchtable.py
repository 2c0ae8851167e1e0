"""What inotify events mean for the mirror: the watch table and the records it yields.

Pure: no inotify, no file system, no clock; callers pass the parsed events and `now`.
`mirrord.changes.Watcher` reads the kernel's queue, asks `WatchTable.feed` what the events
mean, and does what it answers: put records on the daemon's queue, add watches below a
directory that appeared, remove those of a directory that left the tree.

The table keeps one small entry per watched directory, (parent watch, name): a directory's
path is its parent's path and its name, so a directory renamed inside the tree moves its
whole subtree by changing one entry, and the table costs about 55 bytes per directory
(watchdog's emitter kept 534, and ran every event through three threads).

Meanings, in the order the kernel queued them:
- create, modify, attribute change, close-after-write, delete of an entry: a `RawEvent` of
  that kind (`created`, `modified`, `attrib`, `closed`, `deleted`); a directory created asks
  for its watches (`WatchBelow`). Within one read a file's first change stands for the ones
  after it until the file is deleted or moved (a new file's created, modified and closed are
  one record: the daemon marks paths dirty, whatever the kind).
- A rename is two events with one cookie: moved-from waits for its moved-to (at most
  `PAIR_WAIT`), which makes one `moved` event with both paths. Alone, moved-from is a
  deletion (the entry left the tree; a directory's watches are removed, `Unwatch`), and
  moved-to a creation (it came from outside; a directory is watched).
- A root's own attribute change is an `attrib` of the root. A root deleted, moved away or
  unmounted is `RootGone` (its watch has ended, or watches a tree under another name).
- Overflow: the kernel dropped events: an `Overflow` for every root, and the watches are
  reconciled (`Reconcile`: directories created meanwhile were never watched).
"""

from __future__ import annotations

import os
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

# inotify(7) event bits.
IN_MODIFY: Final = 0x00000002
IN_ATTRIB: Final = 0x00000004
IN_CLOSE_WRITE: Final = 0x00000008
IN_MOVED_FROM: Final = 0x00000040
IN_MOVED_TO: Final = 0x00000080
IN_CREATE: Final = 0x00000100
IN_DELETE: Final = 0x00000200
IN_DELETE_SELF: Final = 0x00000400
IN_MOVE_SELF: Final = 0x00000800
IN_UNMOUNT: Final = 0x00002000
IN_Q_OVERFLOW: Final = 0x00004000
IN_IGNORED: Final = 0x00008000
IN_ISDIR: Final = 0x40000000

# What mirrord watches: every change to what the mirror must hold, and nothing a reader (rsync
# among them) causes: no open, access or close-nowrite.
WATCH_MASK: Final = (
    IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
    | IN_DELETE_SELF | IN_MOVE_SELF
)  # fmt: skip

# How long a moved-from waits for its moved-to. The kernel queues the two one after the other;
# they are apart only when a read ends between them, or another process's event slips in.
PAIR_WAIT: Final = 0.05
# Directories whose located path is kept (a few KiB at most; the table itself stays dense).
LOCATED_KEEP: Final = 64

# The kinds a RawEvent can have, by the inotify bit that makes it.
KINDS: Final = {
    IN_CREATE: "created",
    IN_MODIFY: "modified",
    IN_ATTRIB: "attrib",
    IN_CLOSE_WRITE: "closed",
    IN_DELETE: "deleted",
}


@dataclass(frozen=True)
class RawEvent:
    """One change, as the watcher's thread puts it on the queue."""

    directory: str
    # created, modified, attrib, deleted, moved, closed.
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
    """A watched root itself was deleted, moved away or unmounted; its watch has ended."""

    directory: str


Record = RawEvent | Overflow | RootGone


@dataclass(frozen=True)
class WatchBelow:
    """Watch the directory `path` (watch `parent`, `name`) and every directory below it."""

    path: bytes
    parent: int
    name: bytes


@dataclass(frozen=True)
class Unwatch:
    """Remove these watches (a directory and its subtree left the tree)."""

    wds: tuple[int, ...]


@dataclass(frozen=True)
class Reconcile:
    """Walk every root again and watch the directories that are not watched."""


Action = Record | WatchBelow | Unwatch | Reconcile


@dataclass(frozen=True)
class _Pending:
    wd: int
    name: bytes
    is_dir: bool
    root: str
    src: bytes
    deadline: float


class _Entries:
    """wd -> (parent wd, name), stored densely: the kernel numbers a process's watches 1, 2,
    3, ... (inotify_add_watch), so a slot per wd costs a 4-byte parent and a name pointer,
    where a dict of tuples cost about 0.1 KiB more per directory. Watches removed leave holes;
    when holes make up most of the slots (after a root is watched again, its old numbers are
    all holes) the leading ones are dropped."""

    _ABSENT: Final = -2

    def __init__(self) -> None:
        self._base = 0
        self._parent = array("i")
        self._name: list[bytes | None] = []
        self._live = 0
        # Counts the changes of the tree (for the paths cached from it).
        self.version = 0

    def _slot(self, wd: int) -> int | None:
        i = wd - self._base
        if 0 <= i < len(self._parent) and self._parent[i] != self._ABSENT:
            return i
        return None

    def get(self, wd: int) -> tuple[int, bytes] | None:
        i = self._slot(wd)
        if i is None:
            return None
        name = self._name[i]
        assert name is not None
        return self._parent[i], name

    def __contains__(self, wd: object) -> bool:
        return isinstance(wd, int) and self._slot(wd) is not None

    def __len__(self) -> int:
        return self._live

    def __setitem__(self, wd: int, entry: tuple[int, bytes]) -> None:
        if not self._parent:
            self._base = wd
        if wd < self._base:
            holes = self._base - wd
            self._parent[0:0] = array("i", [self._ABSENT]) * holes
            self._name[0:0] = [None] * holes
            self._base = wd
        i = wd - self._base
        if i >= len(self._parent):
            more = i + 1 - len(self._parent)
            self._parent.extend(array("i", [self._ABSENT]) * more)
            self._name.extend([None] * more)
        if self._parent[i] == self._ABSENT:
            self._live += 1
        self._parent[i], self._name[i] = entry
        self.version += 1

    def pop(self, wd: int) -> None:
        i = self._slot(wd)
        if i is None:
            return
        self._parent[i], self._name[i] = self._ABSENT, None
        self._live -= 1
        self.version += 1
        if not self._live:
            self._parent, self._name = array("i"), []
        elif len(self._parent) > 2 * self._live + 1024:
            self._drop_leading_holes()

    def _drop_leading_holes(self) -> None:
        lead = next((i for i, p in enumerate(self._parent) if p != self._ABSENT), len(self._parent))
        del self._parent[:lead]
        del self._name[:lead]
        self._base += lead

    def items(self) -> Iterator[tuple[int, tuple[int, bytes]]]:
        for i, parent in enumerate(self._parent):
            name = self._name[i]
            if parent != self._ABSENT and name is not None:
                yield self._base + i, (parent, name)


class WatchTable:
    """Watched directories, and the meaning of the events their watches report."""

    def __init__(self, unwatched: bytes = b"") -> None:
        """Start with nothing watched; `unwatched`: a name never watched in a root's first level
        (mirrord's backup area)."""
        self._unwatched = unwatched
        # wd -> (parent wd, name); a root's parent is -1 and its name its absolute path.
        self._dirs = _Entries()
        self._roots: dict[int, str] = {}
        # Moved-from events waiting for their moved-to, by cookie.
        self._pending: dict[int, _Pending] = {}
        # Files with a change already said in this read (`feed`).
        self._seen: set[bytes] = set()
        # The last directories located, as of the tree's version: a burst of events falls in
        # a few directories, and a walk up the parents per event cost more than the rest of
        # the event.
        self._located: dict[int, tuple[bytes, str | None]] = {}
        self._located_version = -1

    # -- the table ---------------------------------------------------------------------

    def add_root(self, wd: int, root: str) -> None:
        """Record the watch of a root."""
        self._dirs[wd] = (-1, os.fsencode(root))
        self._roots[wd] = root

    def add_dir(self, wd: int, parent: int, name: bytes) -> None:
        """Record the watch of directory `name` in the directory watched by `parent` (the
        kernel gives a directory one watch: a second add moves the entry)."""
        if parent in self._dirs and wd not in self._roots:
            self._dirs[wd] = (parent, name)

    def forget(self, wd: int) -> None:
        """Drop a watch that has ended."""
        self._dirs.pop(wd)
        self._roots.pop(wd, None)

    def drop(self, top: int) -> tuple[int, ...]:
        """Forget `top` and every watch below it; return them (the caller removes them)."""
        wds = self.subtree(top)
        for wd in wds:
            self.forget(wd)
        return wds

    def watches_name(self, parent: int, name: bytes) -> bool:
        """Whether directory `name` in the directory `parent` watches is to be watched (not
        a root's backup area)."""
        return not (name == self._unwatched and parent in self._roots)

    def __len__(self) -> int:
        """The number of watches."""
        return len(self._dirs)

    def __contains__(self, wd: object) -> bool:
        """Whether `wd` is a watch of the table."""
        return wd in self._dirs

    def path(self, wd: int) -> bytes | None:
        """The absolute path of the directory watched by `wd` (None: not a watch)."""
        located = self._locate(wd)
        return None if located is None else located[0]

    def root_of(self, wd: int) -> str | None:
        """The root whose tree holds the watch `wd`."""
        located = self._locate(wd)
        return None if located is None else located[1]

    def _locate(self, wd: int) -> tuple[bytes, str | None] | None:
        """The path of the directory watched by `wd` and its root, in one walk up the parents
        (every event needs both)."""
        if self._located_version != self._dirs.version or len(self._located) >= LOCATED_KEEP:
            self._located.clear()
            self._located_version = self._dirs.version
        if (hit := self._located.get(wd)) is not None:
            return hit
        found = self._walk_up(wd)
        if found is not None:
            self._located[wd] = found
        return found

    def _walk_up(self, wd: int) -> tuple[bytes, str | None] | None:
        parts: list[bytes] = []
        for _ in range(len(self._dirs) + 1):
            entry = self._dirs.get(wd)
            if entry is None:
                return None
            parent, name = entry
            parts.append(name)
            if parent == -1:
                return b"/".join(reversed(parts)), self._roots.get(wd)
            wd = parent
        return None  # a cycle cannot be built through add_dir; never loop on one

    def root_wd(self, root: str) -> int | None:
        """The watch of `root` (None: not watched)."""
        return next((wd for wd, r in self._roots.items() if r == root), None)

    def subtree(self, top: int) -> tuple[int, ...]:
        """`top` and every watch below it (one pass over the table: directories leave the
        tree rarely, files often)."""
        inside = {top}
        changed = True
        rest = {wd: p for wd, (p, _) in self._dirs.items() if wd != top}
        while changed:
            changed = False
            for wd, parent in list(rest.items()):
                if parent in inside:
                    inside.add(wd)
                    del rest[wd]
                    changed = True
        return (top, *sorted(inside - {top}))

    def child(self, parent: int, name: bytes) -> int | None:
        """The watch of directory `name` in the directory watched by `parent`."""
        return next((wd for wd, e in self._dirs.items() if e == (parent, name)), None)

    # -- events ------------------------------------------------------------------------

    def feed(self, events: list[tuple[int, int, int, bytes]], now: float) -> list[Action]:
        """Return what `events` (wd, mask, cookie, name), read at `now`, mean, in order."""
        out: list[Action] = []
        self._seen.clear()
        for ev in events:
            self._one(ev, now, out)
        return out

    def expire(self, now: float) -> list[Action]:
        """Moved-from events whose moved-to did not come by their deadline: deletions."""
        out: list[Action] = []
        for cookie, p in list(self._pending.items()):
            if p.deadline <= now:
                del self._pending[cookie]
                self._left(p, out)
        return out

    def next_deadline(self) -> float | None:
        """When the oldest moved-from expires (None: none waits)."""
        return min((p.deadline for p in self._pending.values()), default=None)

    def _one(self, ev: tuple[int, int, int, bytes], now: float, out: list[Action]) -> None:
        wd, mask, cookie, name = ev
        if mask & IN_Q_OVERFLOW:
            out += [Overflow(None), Reconcile()]
            return
        if mask & IN_IGNORED:
            # The watch ended (its directory deleted, unmounted, or removed by us). A root
            # whose watch ends without a delete or move said so first is gone too.
            root = self._roots.get(wd)
            self.forget(wd)
            if root is not None:
                out.append(RootGone(root))
            return
        located = self._locate(wd)
        if located is None:
            return  # a watch already forgotten: its events mean nothing any more
        if not name:
            self._self_event(wd, mask, out)
            return
        base, root = located
        assert root is not None
        is_dir = bool(mask & IN_ISDIR)
        full = base + b"/" + name
        if mask & (IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE):
            self._seen.discard(full)
        if mask & IN_MOVED_FROM:
            self._pending[cookie] = _Pending(wd, name, is_dir, root, full, now + PAIR_WAIT)
            return
        if mask & IN_MOVED_TO:
            self._moved_to(ev, root, full, out)
            return
        if not is_dir and not mask & IN_DELETE:
            # A file written shows created, modified (per write) and closed: the first says
            # it all, until the path is deleted or moved (the daemon marks paths dirty).
            if full in self._seen:
                return
            self._seen.add(full)
        for bit, kind in KINDS.items():
            if mask & bit:
                out.append(RawEvent(root, kind, _s(full), "", is_dir))
        if is_dir and mask & IN_CREATE and self.watches_name(wd, name):
            out.append(WatchBelow(full, wd, name))

    def _self_event(self, wd: int, mask: int, out: list[Action]) -> None:
        root = self._roots.get(wd)
        if root is None:
            # A directory's own events repeat what its parent's watch reports by name.
            return
        if mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT):
            out.append(RootGone(root))
            wds = self.drop(wd)
            if mask & IN_MOVE_SELF:
                # The watches follow the tree to its new name: end them.
                out.append(Unwatch(wds))
        elif mask & IN_ATTRIB:
            out.append(RawEvent(root, "attrib", root, "", True))

    def _moved_to(
        self, ev: tuple[int, int, int, bytes], root: str, full: bytes, out: list[Action]
    ) -> None:
        wd, mask, cookie, name = ev
        is_dir = bool(mask & IN_ISDIR)
        p = self._pending.pop(cookie, None)
        if p is None:
            out.append(RawEvent(root, "created", _s(full), "", is_dir))
            if is_dir and self.watches_name(wd, name):
                out.append(WatchBelow(full, wd, name))
            return
        if p.root == root:
            out.append(RawEvent(root, "moved", _s(p.src), _s(full), is_dir))
        else:
            out.append(RawEvent(p.root, "deleted", _s(p.src), "", is_dir))
            out.append(RawEvent(root, "created", _s(full), "", is_dir))
        if is_dir:
            moved = self.child(p.wd, p.name)
            if moved is not None:
                self._dirs[moved] = (wd, name)
            elif self.watches_name(wd, name):
                out.append(WatchBelow(full, wd, name))

    def _left(self, p: _Pending, out: list[Action]) -> None:
        out.append(RawEvent(p.root, "deleted", _s(p.src), "", p.is_dir))
        if p.is_dir:
            gone = self.child(p.wd, p.name)
            if gone is not None:
                out.append(Unwatch(self.drop(gone)))


def _s(path: bytes) -> str:
    return os.fsdecode(path)
