"""What changed in a tree since a moment: the walk behind the start-up catch-up and orphans.

Inotify sees nothing while mirrord is stopped. After a clean stop the journal vouches for what
mirrord saw, and a walk of the tree finds what it did not: every entry whose status changed
(ctime: any write, chmod, chown, link or rename; users cannot set it back) at or after the
stop. Only files changed: those paths go into the dirty set. A directory changed (an entry was
added, removed or renamed in it): a deletion cannot be named from this side, so the root
needs one full pass.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field

from mirrord.backups import BACKUP_DIR


@dataclass
class Changed:
    """Entries of a root changed since a moment (paths relative to the root)."""

    paths: set[str] = field(default_factory=set)
    # Some directory changed: entries may have been deleted or renamed away.
    directories: list[str] = field(default_factory=list)


def changed_since(root: str, since: float) -> Changed:
    """Walk `root` (not its backup area) for entries changed at or after `since` (by ctime:
    a file moved in keeps its old mtime, and a set-aside walk by mtimes missed it)."""
    out = Changed()
    stack = [root]
    while stack:
        top = stack.pop()
        try:
            entries = list(os.scandir(top))
        except OSError:
            continue  # vanished or unreadable: its own parent changed, or rsync will say
        for entry in entries:
            if top == root and entry.name == BACKUP_DIR:
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            rel = os.path.relpath(entry.path, root)
            if stat.S_ISDIR(st.st_mode):
                stack.append(entry.path)
                if st.st_ctime >= since:
                    out.directories.append(rel)
                continue
            if max(st.st_mtime, st.st_ctime) >= since:
                out.paths.add(rel)
    try:
        if os.lstat(root).st_ctime >= since:
            out.directories.append(".")
    except OSError:
        pass
    return out
