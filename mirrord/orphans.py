"""Orphans: changes a node journaled that never reached the peer, set aside, listed, restored.

A node that stops being the source (it crashed as the active and came back, or a planned
switchover's final flush missed late writes) may hold, in its journal, paths the peer never
received. Before the peer's pushes may overwrite or delete them, each such file is *moved* into
a dated recovery area inside its own root, `<root>/.hapair-backup/recovery-<UTC stamp>/<path>`
(same file system, so a rename; excluded from every pass, and not an hour directory, so the
backup pruning never removes it). Nothing is deleted. A path that no longer exists (deleted
locally, deletion never sent) is listed with no size.

Every orphan is also recorded in `<state_dir>/orphans.json`, which `mirrord orphans` lists;
`mirrord orphans --restore PATH` sends one back to the active as a conflict copy
(`NAME.orphan-<node>-<stamp>` beside the original) with `--ignore-existing`, so it can never
replace anything there.

The source marker: a node that pushes keeps `<root>/.hapair-backup/source` in each root, and
the receiving side (its rsync module's push check, mirrord/pushcheck.sh) refuses ordinary pushes
into a root that has it. A node that crashed as the active keeps the marker, so the new active's
pushes are refused until the returning node's mirrord has set its orphans aside and removed it:
the order is on disk, not a race. Two nodes that both believe they are active refuse each
other: no mirroring either way.

A receiving node whose takeover is lost writes the marker too, as a *gap* marker
(mirrord.roles, "the gap"): takeover may serve from this node before mirrord hears it again,
so the peer's pushes wait; the marker's own change time (the kernel's clock, not mirrord's)
dates the gap, and what changed in the root since then is sent or set aside when it ends.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from mirrord.backups import (
    BACKUP_DIR,
    RESEND_MARKER,
    SOURCE_MARKER,
    UnsafeArea,
    open_area,
    open_dirs,
)
from takeover.fsutil import write_atomic

log = logging.getLogger(__name__)

MANIFEST_NAME: Final = "orphans.json"
RECOVERY_PREFIX: Final = "recovery-"
STAMP_FORMAT: Final = "%Y%m%dT%H%M%SZ"


@dataclass(frozen=True)
class Orphan:
    """One path set aside."""

    # Mirrored root it belongs to.
    root: str
    # Path relative to the root.
    path: str
    # Where the file now is (None: the path did not exist, a deletion never sent).
    recovered: str | None
    # Size in bytes and modification time of what was set aside (None for a deletion).
    size: int | None
    mtime: float | None
    # When it was set aside, and why.
    when: float
    reason: str

    @property
    def original(self) -> str:
        """Return the absolute path the file had."""
        return os.path.join(self.root, self.path)


def marker_path(root: str) -> Path:
    """Return the source marker of `root`."""
    return Path(root) / BACKUP_DIR / SOURCE_MARKER


def _unsafe(root: str, exc: UnsafeArea) -> None:
    """Raise the alarm for a backup area that must not be used."""
    log.error("backups.unsafe_area dir=%s error=%s", root, exc)


def set_source(root: str, node: str, now: float, gap: bool = False) -> bool:
    """Mark `root` as pushed from this node (the peer's pushes are refused); return success.

    `gap`: takeover was lost while this node received (the marker dates the gap)."""
    try:
        if not Path(root).is_dir():
            return False
        area = open_area(root)
        try:
            doc: dict[str, Any] = {"node": node, "since": now}
            if gap:
                doc["gap"] = True
            text = json.dumps(doc) + "\n"
            write_atomic(SOURCE_MARKER, text, dir_fd=area)
        finally:
            os.close(area)
    except UnsafeArea as exc:
        _unsafe(root, exc)
        return False
    except OSError as exc:
        log.warning("source.mark_failed dir=%s error=%s", root, exc)
        return False
    return True


def ask_resend(root: str, now: float) -> None:
    """Have the push check refuse the next push into `root` once, asking the sender for a full
    pass: this node set aside files a push may have written, which the sender counts sent."""
    try:
        area = open_area(root)
        try:
            write_atomic(RESEND_MARKER, json.dumps({"since": now}) + "\n", dir_fd=area)
        finally:
            os.close(area)
    except UnsafeArea as exc:
        _unsafe(root, exc)
    except OSError as exc:
        log.warning("orphans.resend_failed dir=%s error=%s", root, exc)


def clear_source(root: str) -> None:
    """Remove the source marker of `root` (the peer's pushes are accepted again)."""
    try:
        area = open_area(root, create=False)
        try:
            os.unlink(SOURCE_MARKER, dir_fd=area)
        finally:
            os.close(area)
    except FileNotFoundError:
        pass
    except UnsafeArea as exc:
        _unsafe(root, exc)
    except OSError as exc:
        log.warning("source.unmark_failed dir=%s error=%s", root, exc)


def has_source(root: str) -> bool:
    """Return whether `root` carries the source marker (an unusable area counts as marked:
    the cautious side, it sets more aside)."""
    try:
        area = open_area(root, create=False)
    except FileNotFoundError:
        return False
    except UnsafeArea as exc:
        _unsafe(root, exc)
        return True
    try:
        os.stat(SOURCE_MARKER, dir_fd=area, follow_symlinks=False)
    except FileNotFoundError:
        return False
    finally:
        os.close(area)
    return True


def gap_began(root: str) -> float | None:
    """Return when the gap of `root` began (its gap marker's change time, by the kernel's
    clock), or None if its marker is none or not a gap's."""
    try:
        area = open_area(root, create=False)
    except (FileNotFoundError, UnsafeArea):
        return None
    try:
        fd = os.open(SOURCE_MARKER, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=area)
    except OSError:
        return None
    finally:
        os.close(area)
    try:
        with open(fd, "rb") as f:
            when = os.fstat(f.fileno()).st_ctime
            doc = json.loads(f.read(4096) or b"{}")
    except (OSError, ValueError):
        return None
    return when if isinstance(doc, dict) and doc.get("gap") is True else None


def quarantine(
    root: str, paths: Iterable[str], now: float, reason: str
) -> tuple[list[Orphan], list[str]]:
    """Move each of `paths` (relative to `root`) into a new recovery area; return what was set
    aside and the paths that could not be (those stay in place and in the journal).

    A set-aside that found anything asks the peer for a full pass (ask_resend): the peer may
    hold what moved or vanished here (a pass in flight at a crash, a walk that starts before
    the last confirmed pass, a push that landed as a gap began), counts it sent, and only a
    full pass makes this tree its copy again. Whether the peer saw this node come back (its
    own full pass) is no matter: its mirrord may have been away meanwhile."""
    stamp = datetime.fromtimestamp(now, UTC).strftime(STAMP_FORMAT)
    name = f"{RECOVERY_PREFIX}{stamp}"
    area = Path(root) / BACKUP_DIR / name
    todo = sorted(set(paths), key=lambda p: (-p.count("/"), p))
    if not todo:
        return [], []
    try:
        top = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        log.warning("orphans.root_failed dir=%s error=%s", root, exc)
        return [], todo
    try:
        area_fd = open_area(root)
        try:
            recovery = open_dirs(area_fd, [name], create=True)
        finally:
            os.close(area_fd)
    except OSError as exc:
        if isinstance(exc, UnsafeArea):
            _unsafe(root, exc)
        else:
            log.warning("orphans.area_failed dir=%s error=%s", root, exc)
        os.close(top)
        return [], todo
    moved: list[Orphan] = []
    failed: list[str] = []
    try:
        # Deepest first: a directory's children move before it is looked at.
        for rel in todo:
            orphan = _set_aside(top, recovery, rel, root=root, area=area, now=now, reason=reason)
            if orphan is None:
                failed.append(rel)
            elif orphan.path:
                moved.append(orphan)
    finally:
        os.close(top)
        os.close(recovery)
    if moved:
        ask_resend(root, now)
    return moved, failed


def _set_aside(
    top: int, recovery: int, rel: str, *, root: str, area: Path, now: float, reason: str
) -> Orphan | None:
    """Move `rel` from the root (`top`) into the recovery area (`recovery`), walking both by
    descriptors without following symlinks: a directory swapped for a link cannot redirect the
    move. Return its Orphan (path "" for a directory, which is not listed), None on failure."""
    *parents, leaf = rel.split("/")
    try:
        src_dir = open_dirs(top, parents)
    except FileNotFoundError:
        return Orphan(root, rel, None, None, None, now, reason)
    except OSError as exc:  # a parent that is now a symlink (ELOOP/ENOTDIR) is not followed
        log.warning("orphans.stat_failed dir=%s path=%s error=%s", root, rel, exc)
        return None
    try:
        try:
            st = os.stat(leaf, dir_fd=src_dir, follow_symlinks=False)
        except FileNotFoundError:
            return Orphan(root, rel, None, None, None, now, reason)
        if stat.S_ISDIR(st.st_mode):
            # A directory is only a container: its files are listed themselves when dirty.
            return Orphan(root, "", None, None, None, now, reason)
        dest_dir = open_dirs(recovery, parents, create=True)
        try:
            os.rename(leaf, leaf, src_dir_fd=src_dir, dst_dir_fd=dest_dir)
        finally:
            os.close(dest_dir)
    except OSError as exc:
        log.warning("orphans.move_failed dir=%s path=%s error=%s", root, rel, exc)
        return None
    finally:
        os.close(src_dir)
    dest = area / rel
    log.warning("orphans.set_aside dir=%s path=%s to=%s size=%d", root, rel, dest, st.st_size)
    return Orphan(root, rel, str(dest), st.st_size, st.st_mtime, now, reason)


def record(state_dir: Path, orphans: Iterable[Orphan]) -> None:
    """Append `orphans` to the manifest (rewritten atomically)."""
    new = [asdict(o) for o in orphans]
    if not new:
        return
    path = state_dir / MANIFEST_NAME
    entries = [asdict(o) for o in load(state_dir)] + new
    write_atomic(path, json.dumps(entries, indent=1) + "\n")


def load(state_dir: Path) -> list[Orphan]:
    """Return every orphan in the manifest (none if there is no manifest)."""
    try:
        raw = json.loads((state_dir / MANIFEST_NAME).read_text())
    except FileNotFoundError:
        return []
    if not isinstance(raw, list):
        raise ValueError(f"{state_dir / MANIFEST_NAME}: not a list")
    return [_orphan(e) for e in raw]


def _orphan(e: Mapping[str, Any]) -> Orphan:
    return Orphan(
        root=str(e["root"]),
        path=str(e["path"]),
        recovered=None if e.get("recovered") is None else str(e["recovered"]),
        size=None if e.get("size") is None else int(e["size"]),
        mtime=None if e.get("mtime") is None else float(e["mtime"]),
        when=float(e["when"]),
        reason=str(e.get("reason", "")),
    )


def find(orphans: Iterable[Orphan], path: str) -> Orphan | None:
    """Return the newest orphan whose original or recovered path is `path`."""
    norm = os.path.normpath(path)
    best: Orphan | None = None
    for o in orphans:
        if o.recovered is None:
            continue
        named = norm in (os.path.normpath(o.original), os.path.normpath(o.recovered))
        if named and (best is None or o.when >= best.when):
            best = o
    return best


def conflict_name(rel: str, node: str, when: float) -> str:
    """Return the conflict copy's relative path: beside the original, never the same name."""
    stamp = datetime.fromtimestamp(when, UTC).strftime(STAMP_FORMAT)
    return f"{rel}.orphan-{node}-{stamp}"


def stage_restore(orphan: Orphan, node: str) -> tuple[Path, str]:
    """Hard-link (or copy) the recovered file under a staging dir by its conflict name; return
    (staging dir, conflict relative path) for `rsync --relative staging/./REL`."""
    assert orphan.recovered is not None
    recovery = Path(orphan.recovered[: -len(orphan.path)].rstrip("/"))
    staging_name = f".restore-{recovery.name}"
    rel = conflict_name(orphan.path, node, orphan.when)
    *parents, leaf = orphan.path.split("/")
    *dest_parents, dest_leaf = rel.split("/")
    # Both ends are walked from the checked area by descriptors (no symlink is followed).
    area = open_area(orphan.root, create=False)
    try:
        src = open_dirs(area, [recovery.name, *parents])
        dest = open_dirs(area, [staging_name, *dest_parents], create=True)
    finally:
        os.close(area)
    try:
        try:
            os.stat(dest_leaf, dir_fd=dest, follow_symlinks=False)
        except FileNotFoundError:
            try:
                os.link(leaf, dest_leaf, src_dir_fd=src, dst_dir_fd=dest, follow_symlinks=False)
            except OSError:
                _copy_at(src, leaf, dest, dest_leaf)
    finally:
        os.close(src)
        os.close(dest)
    return recovery.parent / staging_name, rel


def _copy_at(src_dir: int, name: str, dest_dir: int, dest_name: str) -> None:
    """Copy regular file `name` (never through a symlink) with its mode and times."""
    fd_in = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src_dir)
    try:
        st = os.fstat(fd_in)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd_out = os.open(dest_name, flags, stat.S_IMODE(st.st_mode), dir_fd=dest_dir)
        with open(fd_in, "rb", closefd=False) as fin, open(fd_out, "wb") as fout:
            shutil.copyfileobj(fin, fout)
            os.utime(fout.fileno(), ns=(st.st_atime_ns, st.st_mtime_ns))
    finally:
        os.close(fd_in)
