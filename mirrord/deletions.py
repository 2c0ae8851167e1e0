"""What a pass would really delete on the peer, for the guard. Pure: no I/O; callers pass facts.

The guard refuses a pass that would delete more than `max_delete` entries (mirrord.guard). Three
things make a plain count of vanished paths wrong, and are decided here:

- A rename is not a deletion. `mv a b` lists `a` (gone: the peer deletes it) and `b` (sent in
  full): the peer loses nothing. `Departures` remembers, from the watcher's events, which paths
  left by a rename inside the root, which were deleted or moved out, and whether each was a
  directory; their deletions on the peer (a renamed directory's whole subtree included) are not
  counted. A path renamed away, then its new name deleted, counts once: the new name is gone.
- A vanished directory takes its whole subtree from the peer (--delete-missing-args --force),
  while the dirty list names only the directory. When a gone path is a directory, or its kind
  is unknown (it left before this run started), only a dry run of the same pass knows how many
  entries the peer would delete: `tally` says when one is needed, and `covered` tells the
  renames among the entries it lists.
  So the verdict is on the whole pass, before anything is deleted; rsync's --max-delete is only
  the backstop (it let 104 of 512 deletions through before stopping).
- A percentage is of the peer's tree as it was before the deletions being judged: what the last
  full pass counted, grown and shrunk by the passes since (`grown`), plus what the window
  already deleted. A tree measured empty at start-up no longer makes `"60%"` mean 0 forever,
  and deleting 40% of a tree is 40%, not 40/60 of what is left.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Left:
    """How a path left the tree, as the watcher saw it."""

    # Moved to another path inside the same root (its content is still in the tree).
    renamed: bool
    # It was a directory (its subtree on the peer goes with it).
    was_dir: bool


@dataclass
class Departures:
    """Paths that left one root since they were last sent (relative to the root)."""

    left: dict[str, Left] = field(default_factory=dict)

    def moved(self, src: str, dest: str | None, is_dir: bool) -> None:
        """`src` was renamed to `dest` (None: moved out of the root, a deletion there)."""
        self.left[src] = Left(renamed=dest is not None, was_dir=is_dir)
        if dest is not None:
            self.left.pop(dest, None)

    def deleted(self, path: str, is_dir: bool) -> None:
        """`path` was deleted."""
        self.left[path] = Left(renamed=False, was_dir=is_dir)

    def created(self, path: str) -> None:
        """`path` exists again: whatever it was, it did not leave."""
        self.left.pop(path, None)

    def forget(self, paths: Iterable[str]) -> None:
        """A pass that sent `paths` succeeded: their departures are on the peer."""
        for p in paths:
            self.left.pop(p, None)

    def renamed_away(self) -> frozenset[str]:
        """Return the paths that left by a rename inside the root."""
        return frozenset(p for p, how in self.left.items() if how.renamed)


@dataclass(frozen=True)
class Tally:
    """A pass's vanished paths, sorted by how they left."""

    # Deletions the peer will make for these paths, as far as known without a dry run.
    deletions: int
    # Renamed-away paths: deleted on the peer, not counted (rsync's --max-delete counts them).
    renamed: int
    # Some path may take a subtree with it (a directory, or of unknown kind): dry-run it.
    unsure: bool


def tally(missing: Iterable[str], dep: Departures) -> Tally:
    """Sort the listed paths that no longer exist into deletions and renames."""
    deletions = renamed = 0
    unsure = False
    for path in missing:
        how = dep.left.get(path)
        if how is None:
            # Left before this run, or below a directory that left: kind unknown.
            deletions += 1
            unsure = True
        elif how.renamed:
            renamed += 1
            unsure = unsure or how.was_dir
        else:
            deletions += 1
            unsure = unsure or how.was_dir
    return Tally(deletions, renamed, unsure)


def covered(path: str, renamed: frozenset[str]) -> bool:
    """Return whether deleting `path` on the peer is part of a rename (it or a parent left by
    one); `path` is as rsync itemizes it (a directory with a trailing slash)."""
    p = path.strip().rstrip("/")
    while p:
        if p in renamed:
            return True
        p = p.rpartition("/")[0]
    return False


def grown(entries: int | None, created: int, deleted: int) -> int | None:
    """Return the peer's tree size after a successful pass (None stays unknown)."""
    if entries is None:
        return None
    return max(1, entries + created - deleted)


def tree_before(entries_now: int | None, already: int) -> int | None:
    """Return the peer's tree size before the window's deletions (the base of a percentage)."""
    return None if entries_now is None else entries_now + already
