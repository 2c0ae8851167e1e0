"""Has a source root's filesystem gone, or changed under its watches? Pure: callers look.

inotify watches follow inodes, not paths: when the filesystem under a root is unmounted, its
watches end, and when one is mounted there again, nothing watches the new one; a pass would
then see the bare mount point, or the new tree, while changes in it never reach the peer. The
daemon looks at each watched root (its device, and whether it is a mount point) whenever
/proc/self/mountinfo signals a change and on its re-watch timer, and asks `judge`:

- the root missing, or no longer the mount point it was when mirrord started: GONE, an alarm in
  status at once, the watches dropped; no pass may run (the guard refuses it too);
- the root on another device than when it was watched (mounted again, or another filesystem
  mounted over it): CHANGED, the root is watched again and a full pass is owed;
- otherwise SAME.

A root that is not watched is watched again only once `absent` finds nothing missing.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


@dataclass(frozen=True)
class RootMount:
    """What a source root is on: its device (None: the root is missing), and whether it is a
    mount point."""

    dev: int | None
    is_mount: bool


class Change(enum.Enum):
    """What became of a watched root's filesystem."""

    SAME = "same"
    GONE = "gone"
    CHANGED = "changed"


def absent(root: str, expect_mount: bool, now: RootMount) -> str | None:
    """Return why `root` cannot be watched now (missing, or not mounted), or None."""
    if now.dev is None:
        return f"source root {root} is missing"
    if expect_mount and not now.is_mount:
        return f"source root {root} is not mounted (it was a mount point when mirrord started)"
    return None


def judge(root: str, expect_mount: bool, watched: RootMount, now: RootMount) -> tuple[Change, str]:
    """Compare a watched root now with what it was when its watches were set; say why."""
    why = absent(root, expect_mount, now)
    if why is not None:
        return Change.GONE, why
    if now.dev != watched.dev:
        return Change.CHANGED, f"source root {root} is on another filesystem (mounted again)"
    return Change.SAME, "ok"
