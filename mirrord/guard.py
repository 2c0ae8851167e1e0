"""Refuse catastrophic passes: a missing or unmounted source root, or a mass deletion.

An rsync with --delete from an empty directory faithfully empties the mirror; a disk that failed
to mount looks exactly like that. The guard looks before each pass:

- the source root must exist and be a directory;
- a root that is a mount point must not be empty, and a root expected to be a mount point
  (the policy says so, or it was one when mirrord started) must still be one;
- passes must not delete more than `max_delete` entries (a count, or a percentage of the peer's
  tree before the deletions) within a sliding window (the daemon adds what recent passes
  deleted, so an `rm -rf` spread over several passes is still one mass deletion). The verdict is
  on the whole pass before anything is deleted: full passes are measured with an rsync
  `--dry-run` first; incremental passes count the listed paths that vanished, and dry-run too
  when one may be a directory (its whole subtree goes on the peer). A rename is not a deletion
  (mirrord.deletions). rsync's own `--max-delete` is only the backstop.

`judge_root` and `judge_deletions` decide from plain facts and are unit-tested; `inspect_root`
and `count_missing` gather the facts.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass

from mirrord.mounts import RootMount

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verdict:
    """Whether a pass may run, and why not."""

    ok: bool
    reason: str


ALLOW = Verdict(True, "ok")


@dataclass(frozen=True)
class RootFacts:
    """What the guard needs to know about a source root."""

    exists: bool
    is_dir: bool
    is_mount: bool
    empty: bool


def judge_root(root: str, facts: RootFacts, expect_mount: bool) -> Verdict:
    """Decide whether `root` may be the source of a pass."""
    if not facts.exists:
        return Verdict(False, f"guard: source root {root} is missing")
    if not facts.is_dir:
        return Verdict(False, f"guard: source root {root} is not a directory")
    if expect_mount and not facts.is_mount:
        return Verdict(False, f"guard: source root {root} should be a mount point and is not")
    if facts.is_mount and facts.empty:
        return Verdict(False, f"guard: source root {root} is an empty mount point")
    return ALLOW


def resolve_max_delete(spec: int | str | None, total: int | None) -> int | None:
    """Turn a policy `max_delete` (count, "N%", or None) into a count; None means no limit.

    A percentage of an unknown tree size (no full pass measured yet) gives no limit here;
    full passes always know the size from their dry run.
    """
    if spec is None:
        return None
    if isinstance(spec, int):
        return spec
    text = spec.strip()
    if not text.endswith("%"):
        return int(text)
    if total is None:
        return None
    return int(float(text[:-1]) / 100.0 * total)


def judge_deletions(root: str, deletions: int, limit: int | None) -> Verdict:
    """Decide whether a pass that deletes `deletions` entries may run."""
    if limit is not None and deletions > limit:
        return Verdict(
            False, f"guard: pass of {root} would delete {deletions} entries (max_delete {limit})"
        )
    return ALLOW


def inspect_root(root: str) -> RootFacts:
    """Gather the facts about `root` (does not follow a symlinked root's target for is_dir)."""
    if not os.path.lexists(root):
        return RootFacts(exists=False, is_dir=False, is_mount=False, empty=True)
    if not os.path.isdir(root):
        return RootFacts(exists=True, is_dir=False, is_mount=False, empty=True)
    try:
        with os.scandir(root) as it:
            empty = next(it, None) is None
    except OSError:
        # Unreadable counts as empty: never mirror what cannot be seen.
        empty = True
    return RootFacts(exists=True, is_dir=True, is_mount=os.path.ismount(root), empty=empty)


def pin_root(root: str) -> int | None:
    """Open `root` (a directory) and return the descriptor that pins it for a pass: while it
    is open an unmount of its filesystem fails (busy), and rsync, started in it, reads this
    directory even if the path comes to lead elsewhere (a lazy unmount, a rename). None when
    it cannot be opened: the guard refuses the root, or `Look.same` is False (retried)."""
    try:
        return os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None


def pinned_is(fd: int, root: str) -> bool:
    """Whether `root` still leads to the directory pinned by `fd` (same device and inode)."""
    try:
        pinned, now = os.fstat(fd), os.stat(root)
    except OSError:
        return False
    return (pinned.st_dev, pinned.st_ino) == (now.st_dev, now.st_ino)


@dataclass(frozen=True)
class Look:
    """The guard's look at a root before a pass: the pin, the facts, and whether the root's
    path still led to the pinned directory once the facts were in."""

    pin: int | None
    facts: RootFacts
    same: bool


def look_at_root(root: str) -> Look:
    """Pin `root`, gather its facts, then check that the path still leads to the pinned
    directory (one trip to a worker thread for the three)."""
    pin = pin_root(root)
    facts = inspect_root(root)
    return Look(pin, facts, pin is not None and pinned_is(pin, root))


def root_mount(root: str) -> RootMount:
    """Look at what `root` is on (mirrord.mounts judges it)."""
    try:
        dev = os.stat(root).st_dev
    except OSError:
        return RootMount(dev=None, is_mount=False)
    return RootMount(dev=dev, is_mount=os.path.ismount(root))


def missing_paths(root: str, paths: Iterable[str]) -> list[str]:
    """Return the listed paths that no longer exist (each a deletion on the peer, or the old
    name of a rename: mirrord.deletions tells them apart)."""
    return [p for p in paths if not os.path.lexists(os.path.join(root, p))]


def count_missing(root: str, paths: Iterable[str]) -> int:
    """Count listed paths that no longer exist."""
    return len(missing_paths(root, paths))


def check_root(root: str, expect_mount: bool) -> Verdict:
    """Inspect and judge `root`, logging a refusal."""
    verdict = judge_root(root, inspect_root(root), expect_mount)
    if not verdict.ok:
        log.warning("guard.refused root=%s reason=%s", root, verdict.reason)
    return verdict


def any_hard_linked(root: str, paths: Iterable[str]) -> bool:
    """Return whether a listed regular file has more than one name (rsync -H needs them all)."""
    for p in paths:
        try:
            st = os.lstat(os.path.join(root, p))
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
            return True
    return False
