"""The backup area is used only as this account's own directory: a planted symlink (at the area,
a directory on a set-aside path, or a temp name) is refused and nothing is written outside."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from mirrord import orphans
from mirrord.backups import (
    BACKUP_DIR,
    UnsafeArea,
    open_area,
    over_budget,
    prune_backups,
    resolve_budget,
)
from mirrord.receive import maybe_prune
from takeover.fsutil import write_atomic

NOW = 1_795_000_000.0  # 2026-11-18T11:06:40Z


def outside_with_victims(tmp: Path) -> Path:
    """Return a directory outside the root holding files an attacker would like touched."""
    out = tmp / "outside"
    (out / "2026-11-18T09Z").mkdir(parents=True)
    (out / "2026-11-18T09Z" / "keep").write_text("victim")
    (out / "source").write_text("victim")
    return out


def snapshot(d: Path) -> dict[str, str]:
    """Map each file below `d` to its content."""
    return {str(p.relative_to(d)): p.read_text() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture
def planted(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    """Return (root, outside, outside's content) with ROOT/.hapair-backup -> outside."""
    root = tmp_path / "data"
    root.mkdir()
    (root / "late").write_text("unsynced")
    out = outside_with_victims(tmp_path)
    (root / BACKUP_DIR).symlink_to(out)
    return root, out, snapshot(out)


def test_open_area_refuses_a_symlink_and_makes_a_new_one_private(tmp_path: Path) -> None:
    """A missing area is created 0700; a looser own one is tightened; a symlink is refused."""
    fd = open_area(str(tmp_path))
    os.close(fd)
    assert stat.S_IMODE((tmp_path / BACKUP_DIR).stat().st_mode) == 0o700
    (tmp_path / BACKUP_DIR).chmod(0o755)
    os.close(open_area(str(tmp_path)))
    assert stat.S_IMODE((tmp_path / BACKUP_DIR).stat().st_mode) == 0o700
    (tmp_path / BACKUP_DIR).rmdir()
    (tmp_path / BACKUP_DIR).symlink_to(tmp_path)
    with pytest.raises(UnsafeArea, match=f"{tmp_path}/{BACKUP_DIR} is a symlink"):
        open_area(str(tmp_path))


def test_source_marker_never_written_or_removed_through_a_planted_area(
    planted: tuple[Path, Path, dict[str, str]], caplog: pytest.LogCaptureFixture
) -> None:
    """Marking, unmarking and asking for the marker leave the symlink's target untouched."""
    root, out, before = planted
    assert not orphans.set_source(str(root), "a", NOW)
    orphans.clear_source(str(root))
    assert orphans.has_source(str(root))  # the cautious answer
    assert snapshot(out) == before
    assert f"backups.unsafe_area dir={root}" in caplog.text and "is a symlink" in caplog.text


def test_quarantine_refuses_a_planted_area_and_keeps_the_file(
    planted: tuple[Path, Path, dict[str, str]],
) -> None:
    """Nothing is moved through a planted area: the file stays in place and in the journal."""
    root, out, before = planted
    moved, failed = orphans.quarantine(str(root), ["late"], NOW, "test")
    assert (moved, failed) == ([], ["late"])
    assert (root / "late").read_text() == "unsynced"
    assert snapshot(out) == before


def test_quarantine_does_not_follow_a_directory_swapped_for_a_symlink(tmp_path: Path) -> None:
    """A dirty path whose directory became a symlink out of the root is not moved."""
    root = tmp_path / "data"
    root.mkdir()
    out = outside_with_victims(tmp_path)
    (root / "sub").symlink_to(out)
    moved, failed = orphans.quarantine(str(root), ["sub/source"], NOW, "test")
    assert (moved, failed) == ([], ["sub/source"])
    assert (out / "source").read_text() == "victim"


def test_pruning_never_deletes_through_a_planted_area(
    planted: tuple[Path, Path, dict[str, str]],
) -> None:
    """Pruning (daemon or rrsync receiver) refuses the area: the expired-looking hour outside
    stays, and no stamp is created there."""
    root, out, before = planted
    with pytest.raises(UnsafeArea):
        prune_backups(str(root), 3600.0, NOW)
    with pytest.raises(UnsafeArea):
        maybe_prune(str(root), 3600.0, NOW)
    assert snapshot(out) == before


def test_write_atomic_never_truncates_through_a_link_at_its_temp_name(tmp_path: Path) -> None:
    """A symlink planted at the temp file's name is replaced, not written through."""
    victim = tmp_path / "victim"
    victim.write_text("victim")
    (tmp_path / f".status.json.{os.getpid()}.tmp").symlink_to(victim)
    write_atomic(tmp_path / "status.json", "new")
    assert victim.read_text() == "victim"
    assert (tmp_path / "status.json").read_text() == "new"


# -- the backup budget ---------------------------------------------------------------------------

UNITS = [("2026-11-18T10Z/0500.000", 40), ("2026-11-18T09Z/5900.000", 30),
         ("2026-11-18T10Z/0100.000", 20), ("2026-11-18T11Z/0000.000", 10)]  # fmt: skip


@pytest.mark.parametrize(
    ("budget", "gone"),
    [
        (100, []),
        (99, ["2026-11-18T09Z/5900.000"]),
        (70, ["2026-11-18T09Z/5900.000"]),
        (50, ["2026-11-18T09Z/5900.000", "2026-11-18T10Z/0100.000"]),
        (10, ["2026-11-18T09Z/5900.000", "2026-11-18T10Z/0100.000", "2026-11-18T10Z/0500.000"]),
        (0, sorted(u for u, _n in UNITS)),
    ],
)
def test_over_budget_prunes_the_oldest_passes_first(budget: int, gone: list[str]) -> None:
    """Passes go oldest first (by hour, then time in the hour) until the rest fits."""
    assert over_budget(UNITS, budget) == gone


@pytest.mark.parametrize(
    ("spec", "size"),
    [("10%", 100_000), ("2.5%", 25_000), ("100", 100), ("20GiB", 20 << 30), ("1.5 KiB", 1536)],
)
def test_resolve_budget_reads_shares_and_sizes(spec: str, size: int) -> None:
    """A share is of the file system's size; a size has binary units or is bytes."""
    assert resolve_budget(spec, 1_000_000) == size


def test_pruning_keeps_the_newest_backups_within_the_budget(tmp_path: Path) -> None:
    """A budget of 150 KiB keeps the newest passes' backups (blocks counted), deletes the oldest
    first, leaves recovery areas alone, and reports what is left."""
    area = tmp_path / BACKUP_DIR
    for unit in ("2026-11-18T10Z/0500.000", "2026-11-18T10Z/0100.000", "2026-11-18T11Z/0000.000",
                 "2026-11-18T09Z/5900.000", "recovery-20261118T000000Z"):  # fmt: skip
        (area / unit / "sub").mkdir(parents=True)
        (area / unit / "sub" / "f").write_bytes(os.urandom(64 << 10))
    sparse = area / "2026-11-18T11Z/0000.000/sparse"
    with open(sparse, "wb") as f:
        f.truncate(1 << 30)  # 1 GiB apparent, no blocks: must not count
    done = prune_backups(str(tmp_path), 86400.0, NOW, "150KiB")
    assert done.over_budget == ["2026-11-18T09Z/5900.000", "2026-11-18T10Z/0100.000"]
    assert done.budget == 150 << 10 and 128 << 10 <= done.size <= 150 << 10
    left = sorted(str(p.relative_to(area)) for p in area.glob("*/*"))
    assert left == ["2026-11-18T10Z/0500.000", "2026-11-18T11Z/0000.000",
                    "recovery-20261118T000000Z/sub"]  # fmt: skip
