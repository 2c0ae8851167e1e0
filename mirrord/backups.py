"""The receiving side's backup area: what passes overwrite or delete, kept for a retention.

Passes fill it (--backup-dir); the receiving node's mirrord prunes it hourly (mirrord.daemon),
and with the rrsync receiver mirrord.receive prunes it too, at most hourly, before a pass.

The area lies inside a mirrored root, which others may write into (mail spools, uploads): one
of them could plant `.hapair-backup -> /etc` and have root create, truncate or move files
there. So the area is this account's own directory, mode 0700, checked on every use
(`open_area`: lstat, then an O_NOFOLLOW open), and everything in it is done relative to that
descriptor (dir_fd), never by a path a planted symlink could redirect. A symlink or a
directory owned by someone else is refused (`UnsafeArea`, naming it), and nothing is written.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

# Receiving-side directory (inside each root) that keeps what passes overwrite or delete.
BACKUP_DIR: Final = ".hapair-backup"
# File in BACKUP_DIR while this node is (or was, until it crashed) the source of the root: the
# receiving side refuses ordinary pushes into it (see mirrord.orphans).
SOURCE_MARKER: Final = "source"
# In a receiving root's backup area: this node set aside files a push may have written; the
# push check refuses the next push once, asking the sender for a full pass (mirrord.orphans).
RESEND_MARKER: Final = "resend"
# Timestamp format of the backup hour directory (UTC); each pass has its own directory below it.
BACKUP_HOUR_FORMAT: Final = "%Y-%m-%dT%HZ"
# rsync builds BACKUP_DIR/HOUR/PASS/PATH in a PATH_MAX buffer and needs a byte to spare beyond
# it (measured with rsync 3.5.0: 4094 bytes pass; 4095 fail with ENAMETOOLONG, 4096 with
# "backup filename too long", and either aborts the whole pass with exit 11 or 13).
MAX_BACKUP_PATH: Final = 4094


def backup_dir(now: float) -> str:
    """Return the backup dir of a pass starting at `now`: `BACKUP_DIR/<UTC hour>/<MMSS.mmm>`.

    One directory per pass and an empty suffix: a backup keeps the file's own name and path
    below it, so no name that the file system accepts is lengthened beyond what it accepts
    (a suffix made a 255-byte name unbackable: never updated, retried forever).
    """
    t = datetime.fromtimestamp(now, UTC)
    return f"{BACKUP_DIR}/{t.strftime(BACKUP_HOUR_FORMAT)}/{t:%M%S}.{t.microsecond // 1000:03d}"


def backup_args(now: float) -> list[str]:
    """Return the --backup options for a pass starting at `now`."""
    return ["--backup", f"--backup-dir={backup_dir(now)}", "--suffix="]


def unbackable(paths: Iterable[str], now: float) -> list[str]:
    """Return the paths (relative to the root) whose backup path, in the backup dir of a pass
    starting at `now`, would pass what rsync can name (sorted)."""
    room = MAX_BACKUP_PATH - len(backup_dir(now)) - 1
    return sorted(p for p in paths if len(p.encode("utf-8", "surrogateescape")) > room)


def find_unbackable(root: str, now: float) -> list[str]:
    """Walk `root` (not its backup area) for the paths `unbackable` would name."""
    room = MAX_BACKUP_PATH - len(backup_dir(now)) - 1
    found = []
    for top, dirs, files in os.walk(root):
        rel_top = os.path.relpath(top, root)
        if rel_top == ".":
            dirs[:] = [d for d in dirs if d != BACKUP_DIR]
            rel_top = ""
        for name in dirs + files:
            rel = f"{rel_top}/{name}" if rel_top else name
            if len(rel.encode("utf-8", "surrogateescape")) > room:
                found.append(rel)
    return sorted(found)


def _hour_start(name: str) -> float | None:
    """Return when backup hour directory `name` began (None: not an hour directory)."""
    try:
        return datetime.strptime(name, BACKUP_HOUR_FORMAT).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None  # not ours (a recovery area, the marker): leave it alone


def expired_backups(names: Sequence[str], retention: float, now: float) -> list[str]:
    """Return the backup hour directories whose whole hour is older than `retention`."""
    out = []
    for name in names:
        start = _hour_start(name)
        if start is not None and start + timedelta(hours=1).total_seconds() < now - retention:
            out.append(name)
    return out


# Units of a backup budget (takeover.config validates it: "N%" or a size such as "20GiB").
_UNITS: Final = {"": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}


def resolve_budget(spec: str, fs_size: int) -> int:
    """Return the byte budget `spec` ("10%" of a file system of `fs_size` bytes, or a size)."""
    spec = spec.strip()
    if spec.endswith("%"):
        return int(float(spec[:-1]) / 100 * fs_size)
    number = spec.rstrip("KMGTiB").strip()
    return int(float(number) * _UNITS[spec[len(number) :].strip()])


def over_budget(units: Sequence[tuple[str, int]], budget: int) -> list[str]:
    """Return the backup units ("HOUR/PASS", bytes) to delete, oldest first, until what is
    left fits `budget` bytes. Names sort by time (UTC hour, then the pass's MMSS.mmm)."""
    total = sum(size for _name, size in units)
    gone = []
    for name, size in sorted(units):
        if total <= budget:
            break
        gone.append(name)
        total -= size
    return gone


def _usage(fd: int) -> int:
    """Return the bytes allocated below directory `fd` (blocks, so sparse files count true)."""
    total = 0
    for _top, _dirs, files, dfd in os.fwalk(".", dir_fd=fd, follow_symlinks=False):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.stat(name, dir_fd=dfd, follow_symlinks=False).st_blocks * 512
    return total


def backup_units(area: int) -> list[tuple[str, int]]:
    """Return each pass's backup directory ("HOUR/PASS") in the area and its size."""
    units = []
    with os.scandir(area) as hours:
        names = [e.name for e in hours if e.is_dir(follow_symlinks=False)]
    for hour in sorted(n for n in names if _hour_start(n) is not None):
        hour_fd = open_dirs(area, [hour])
        try:
            with os.scandir(hour_fd) as passes:
                entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in passes]
            for name, is_dir in entries:
                if is_dir:
                    pass_fd = open_dirs(hour_fd, [name])
                    try:
                        size = _usage(pass_fd)
                    finally:
                        os.close(pass_fd)
                else:
                    size = os.stat(name, dir_fd=hour_fd, follow_symlinks=False).st_blocks * 512
                units.append((f"{hour}/{name}", size))
        finally:
            os.close(hour_fd)
    return units


@dataclass(frozen=True)
class Pruned:
    """What one pruning of a root's backup area did."""

    # Hour directories older than the retention, deleted.
    expired: list[str]
    # Pass directories ("HOUR/PASS") deleted, oldest first, to fit the budget.
    over_budget: list[str]
    # Bytes the backups still take (recovery areas of orphans not counted: never pruned).
    size: int
    # The budget in bytes (None: none).
    budget: int | None


def prune_backups(root: str, retention: float, now: float, budget: str | None = None) -> Pruned:
    """Delete expired backup hours under `root`, then the oldest passes' backups beyond
    `budget` (mirrord.backups.resolve_budget); return what was done and what is left."""
    try:
        area = open_area(root, create=False)
    except FileNotFoundError:
        return Pruned([], [], 0, None)
    try:
        with os.scandir(area) as it:
            names = [e.name for e in it if e.is_dir(follow_symlinks=False)]
        gone = expired_backups(names, retention, now)
        for name in gone:
            # rmtree with dir_fd walks by descriptors and never follows a symlink.
            shutil.rmtree(name, ignore_errors=True, dir_fd=area)
        units = backup_units(area)
        limit = None
        trimmed: list[str] = []
        if budget is not None:
            st = os.statvfs(area)
            limit = resolve_budget(budget, st.f_blocks * st.f_frsize)
            trimmed = over_budget(units, limit)
            for unit in trimmed:
                hour, name = unit.split("/")
                hour_fd = open_dirs(area, [hour])
                try:
                    mode = os.stat(name, dir_fd=hour_fd, follow_symlinks=False).st_mode
                    if stat.S_ISDIR(mode):
                        shutil.rmtree(name, ignore_errors=True, dir_fd=hour_fd)
                    else:
                        os.unlink(name, dir_fd=hour_fd)
                finally:
                    os.close(hour_fd)
        left = set(trimmed)
        size = sum(n for u, n in units if u not in left)
    finally:
        os.close(area)
    return Pruned(gone, trimmed, size, limit)


class UnsafeArea(OSError):
    """A root's backup area is a symlink, not a directory, or not this account's own."""


_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def open_area(root: str, *, create: bool = True) -> int:
    """Return a descriptor of `root`'s backup area (created mode 0700 if missing and `create`).

    Refuse (UnsafeArea, naming the path) a symlink or anything but a directory owned by this
    account; an own directory with a looser mode gets 0700. FileNotFoundError if it is missing
    and not to be created (or the root is missing).
    """
    path = os.path.join(root, BACKUP_DIR)
    top = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            st = os.stat(BACKUP_DIR, dir_fd=top, follow_symlinks=False)
        except FileNotFoundError:
            if not create:
                raise
            os.mkdir(BACKUP_DIR, 0o700, dir_fd=top)
            st = os.stat(BACKUP_DIR, dir_fd=top, follow_symlinks=False)
        if not stat.S_ISDIR(st.st_mode):
            kind = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a directory"
            raise UnsafeArea(f"backup area {path} is {kind}: refused (move it away)")
        try:
            fd = os.open(BACKUP_DIR, _DIR_FLAGS, dir_fd=top)
        except OSError as exc:  # swapped for a symlink since the lstat: ELOOP/ENOTDIR
            raise UnsafeArea(f"backup area {path} changed under us: refused ({exc})") from None
    finally:
        os.close(top)
    st = os.fstat(fd)
    if st.st_uid != os.geteuid():
        os.close(fd)
        raise UnsafeArea(f"backup area {path} is owned by uid {st.st_uid}: refused (move it away)")
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.fchmod(fd, 0o700)
    return fd


def open_dirs(fd: int, parts: Sequence[str], *, create: bool = False) -> int:
    """Return a new descriptor of the directory `parts` below `fd`, opening each component
    without following symlinks (and creating missing ones, mode 0700, if `create`)."""
    cur = os.dup(fd)
    try:
        for part in parts:
            if part in ("", ".", ".."):
                raise UnsafeArea(f"bad path component {part!r}")
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o700, dir_fd=cur)
            nxt = os.open(part, _DIR_FLAGS, dir_fd=cur)
            os.close(cur)
            cur = nxt
    except BaseException:
        os.close(cur)
        raise
    return cur
