"""The guard: refusals for missing, unmounted or empty roots and for mass deletions."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mirrord.guard import (
    RootFacts,
    any_hard_linked,
    count_missing,
    inspect_root,
    judge_deletions,
    judge_root,
    resolve_max_delete,
)

R = "/srv/mail"
FULL_DIR = RootFacts(exists=True, is_dir=True, is_mount=False, empty=False)


@pytest.mark.parametrize(
    ("facts", "expect_mount", "ok", "words"),
    [
        (FULL_DIR, False, True, "ok"),
        (RootFacts(False, False, False, True), False, False, "missing"),
        (RootFacts(True, False, False, True), False, False, "not a directory"),
        (RootFacts(True, True, True, True), False, False, "empty mount point"),
        (RootFacts(True, True, True, False), True, True, "ok"),
        (RootFacts(True, True, False, False), True, False, "should be a mount point"),
        # An empty plain directory is allowed here; max_delete stops it emptying the mirror.
        (RootFacts(True, True, False, True), False, True, "ok"),
    ],
)
def test_judge_root(facts: RootFacts, expect_mount: bool, ok: bool, words: str) -> None:
    """Each root condition yields the expected verdict and names the problem."""
    v = judge_root(R, facts, expect_mount)
    assert v.ok is ok
    assert words in v.reason


@pytest.mark.parametrize(
    ("spec", "total", "expected"),
    [
        (None, 100, None),
        (50, None, 50),
        ("50", None, 50),
        ("10%", 1000, 100),
        ("0.5%", 1000, 5),
        ("10%", None, None),
    ],
)
def test_resolve_max_delete(
    spec: int | str | None, total: int | None, expected: int | None
) -> None:
    """Counts pass through; percentages scale by the tree size when it is known."""
    assert resolve_max_delete(spec, total) == expected


@pytest.mark.parametrize(
    ("deletions", "limit", "ok"),
    [(0, 0, True), (10, 10, True), (11, 10, False), (10**6, None, True)],
)
def test_judge_deletions(deletions: int, limit: int | None, ok: bool) -> None:
    """A pass deleting more than the limit is refused with the counts in the reason."""
    v = judge_deletions(R, deletions, limit)
    assert v.ok is ok
    if not ok:
        assert str(deletions) in v.reason and str(limit) in v.reason


def test_inspect_root_facts(tmp_path: Path) -> None:
    """inspect_root sees missing, file, empty and populated directories as they are."""
    assert not inspect_root(str(tmp_path / "nope")).exists
    (tmp_path / "f").write_text("x")
    assert not inspect_root(str(tmp_path / "f")).is_dir
    (tmp_path / "e").mkdir()
    facts = inspect_root(str(tmp_path / "e"))
    assert facts.is_dir and facts.empty and not facts.is_mount
    assert not inspect_root(str(tmp_path)).empty


def test_root_of_filesystem_is_a_mount() -> None:
    """The file system root is recognised as a (non-empty) mount point."""
    facts = inspect_root("/")
    assert facts.is_mount and not facts.empty


def test_count_missing_counts_vanished_paths(tmp_path: Path) -> None:
    """Listed paths that no longer exist (dangling symlinks do exist) are counted."""
    (tmp_path / "a").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "gone")
    assert count_missing(str(tmp_path), ["a", "b", "c/d", "link"]) == 2


def test_any_hard_linked(tmp_path: Path) -> None:
    """Only a listed regular file with several names counts as hard-linked."""
    (tmp_path / "a").write_text("x")
    (tmp_path / "single").write_text("y")
    os.link(tmp_path / "a", tmp_path / "b")
    (tmp_path / "d").mkdir()
    assert any_hard_linked(str(tmp_path), ["b"])
    assert not any_hard_linked(str(tmp_path), ["single", "d", "gone"])
