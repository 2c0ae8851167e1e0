"""The walk for what changed while mirrord was stopped (mirrord.scan), on a real tree."""

from __future__ import annotations

import os
import time
from pathlib import Path

from mirrord.scan import changed_since


def tree(root: Path) -> None:
    """A small tree: files at two depths, a symlink, the backup area."""
    (root / "d" / "e").mkdir(parents=True)
    (root / "top").write_text("t")
    (root / "d" / "e" / "deep").write_text("x")
    (root / "ln").symlink_to("top")
    (root / ".hapair-backup" / "2026-11-23T05Z").mkdir(parents=True)


def stopped_now() -> float:
    """The stop moment: after it, every change has a later ctime."""
    t = time.time()
    time.sleep(0.02)
    return t


def test_nothing_changed_finds_nothing(tmp_path: Path) -> None:
    """An untouched tree gives no path and no directory."""
    tree(tmp_path)
    since = stopped_now()
    found = changed_since(str(tmp_path), since)
    assert found.paths == set() and found.directories == []


def test_edits_chmod_and_a_new_link_target_are_files_only(tmp_path: Path) -> None:
    """Writing a file and changing another's mode name those files; no directory changed."""
    tree(tmp_path)
    since = stopped_now()
    (tmp_path / "d" / "e" / "deep").write_text("changed")
    os.chmod(tmp_path / "top", 0o600)
    (tmp_path / ".hapair-backup" / "2026-11-23T05Z" / "kept").write_text("b")
    found = changed_since(str(tmp_path), since)
    assert found.paths == {"d/e/deep", "top"} and found.directories == []


def test_a_deletion_or_a_new_entry_shows_as_a_changed_directory(tmp_path: Path) -> None:
    """A deleted file cannot be named, but its directory changed; so does a new one's."""
    tree(tmp_path)
    since = stopped_now()
    (tmp_path / "d" / "e" / "deep").unlink()
    assert changed_since(str(tmp_path), since).directories == ["d/e"]
    since = stopped_now()
    (tmp_path / "new").write_text("n")
    found = changed_since(str(tmp_path), since)
    assert found.directories == ["."] and found.paths == {"new"}


def test_a_file_moved_in_with_an_old_mtime_is_a_change(tmp_path: Path) -> None:
    """`mv` keeps a file's mtime: its ctime says when it arrived (the set-aside walk of a node
    that crashed as the source once compared mtimes only, and missed it)."""
    tree(tmp_path)
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    (outside / "old").write_text("old")
    os.utime(outside / "old", (1e9, 1e9))
    since = stopped_now()
    os.rename(outside / "old", tmp_path / "d" / "old")
    found = changed_since(str(tmp_path), since)
    assert found.paths == {"d/old"}
