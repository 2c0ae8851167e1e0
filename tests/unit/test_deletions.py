"""What a pass really deletes on the peer: renames are not deletions, directories take their
subtree, and a percentage is of the tree before the deletions."""

from __future__ import annotations

import pytest

from mirrord.deletions import Departures, Tally, covered, grown, tally, tree_before
from mirrord.guard import judge_deletions, resolve_max_delete
from mirrord.transfer import Stats, parse_line


def departures(*events: tuple[str, str, str | None, bool]) -> Departures:
    """Return the departures after (kind, src, dest, is_dir) events."""
    dep = Departures()
    for kind, src, dest, is_dir in events:
        if kind == "moved":
            dep.moved(src, dest, is_dir)
        elif kind == "deleted":
            dep.deleted(src, is_dir)
        else:
            dep.created(src)
    return dep


# events, vanished listed paths -> tally
TALLIES = [
    # A rename inside the root: the old name vanishes, nothing is lost.
    ([("moved", "a", "b", False)], ["a"], Tally(0, 1, False)),
    # Renamed, then the new name deleted: one deletion.
    ([("moved", "a", "b", False), ("deleted", "b", None, False)], ["a", "b"], Tally(1, 1, False)),
    # A chain of renames loses nothing.
    ([("moved", "a", "b", False), ("moved", "b", "c", False)], ["a", "b"], Tally(0, 2, False)),
    ([("deleted", "a", None, False)], ["a"], Tally(1, 0, False)),
    # A directory deleted or moved out takes a subtree the dirty list does not name.
    ([("deleted", "d", None, True)], ["d"], Tally(1, 0, True)),
    ([("moved", "d", None, True)], ["d"], Tally(1, 0, True)),
    # A renamed directory: the peer deletes its old subtree, which rsync's backstop counts.
    ([("moved", "d", "e", True)], ["d"], Tally(0, 1, True)),
    # Gone before this run (no event seen): its kind is unknown.
    ([], ["x"], Tally(1, 0, True)),
    # Deleted, then created again (and vanished again with no event): unknown once more.
    ([("deleted", "a", None, False), ("created", "a", None, False)], ["a"], Tally(1, 0, True)),
    # A rename over a path that had left: the destination is back.
    ([("deleted", "b", None, False), ("moved", "a", "b", False)], ["a"], Tally(0, 1, False)),
]  # fmt: skip


@pytest.mark.parametrize("events, missing, expected", TALLIES)
def test_tally(
    events: list[tuple[str, str, str | None, bool]], missing: list[str], expected: Tally
) -> None:
    """Vanished paths are sorted into deletions and renames, and a possible subtree asks for a
    dry run."""
    assert tally(missing, departures(*events)) == expected


def test_a_successful_pass_forgets_its_departures() -> None:
    """Once a pass that sent a path succeeded, how it left no longer matters."""
    dep = departures(("moved", "a", "b", False), ("deleted", "c", None, False))
    dep.forget(["a", "b"])
    assert set(dep.left) == {"c"} and dep.renamed_away() == frozenset()


@pytest.mark.parametrize(
    "path, expected",
    [("d", True), ("d/", True), ("d/e/f", True), ("d/e/", True), ("dx", False),
     ("x/d", False), ("a", True), ("b", False)],
)  # fmt: skip
def test_covered_by_a_rename(path: str, expected: bool) -> None:
    """A deletion rsync itemizes is part of a rename when it or a parent was renamed away."""
    assert covered(path, frozenset({"d", "a"})) is expected


def test_parse_line_tells_renames_and_creations_apart() -> None:
    """Itemized deletions under a renamed-away path are counted apart; new entries count."""
    stats = Stats()
    lines = ["*deleting   d/e/", "*deleting   d/", "*deleting   gone", ">f+++++++++ e/x",
             "cd+++++++++ e/", ">f.st...... kept"]  # fmt: skip
    for line in lines:
        parse_line(line, stats, keep_deleted=5, renamed=frozenset({"d"}))
    assert (stats.deleted, stats.renamed, stats.created, stats.changed) == (3, 2, 2, 3)
    assert stats.deleted_paths == ["gone"]


# spec, peer tree after the last pass, created, deleted since, window, this pass -> ok
PERCENTAGES = [
    # Measured empty at start-up, then 20 files arrived: 5 deletions of 21 are 24%.
    ("60%", grown(1, 20, 0), 0, 5, True),
    ("60%", 1, 0, 5, False),  # what the old code judged on: the empty tree
    # 40% of a tree of 100 in one pass is under 50%.
    ("50%", 100, 0, 40, True),
    # The window's earlier deletions count, and so does the tree they came from.
    ("50%", 70, 30, 25, False),
    ("50%", 70, 30, 15, True),
    ("50%", None, 0, 10**6, True),  # an unmeasured tree: no percentage yet
    (3, 100, 0, 4, False),
]


@pytest.mark.parametrize("spec, peer, already, count, ok", PERCENTAGES)
def test_a_percentage_is_of_the_tree_before_the_deletions(
    spec: int | str, peer: int | None, already: int, count: int, ok: bool
) -> None:
    """The limit is a share of the peer's tree before the window's deletions."""
    limit = resolve_max_delete(spec, tree_before(peer, already))
    assert judge_deletions("/r", count + already, limit).ok is ok


def test_grown_tracks_the_tree_between_full_passes() -> None:
    """Creations grow and deletions shrink the tree; unknown stays unknown; never below 1."""
    assert grown(1, 20, 0) == 21
    assert grown(21, 0, 5) == 16
    assert grown(3, 0, 10) == 1
    assert grown(None, 5, 0) is None
