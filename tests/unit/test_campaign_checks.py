"""The fault campaign's checkers (tests/campaign/checks.py) on hand-made trees."""

from __future__ import annotations

import os
from pathlib import Path

from tests.campaign.agents import payload, record_name
from tests.campaign.checks import check_writes, tracebacks, tree_diff

SEED = 5


def put(root: Path, rid: int, data: bytes | None = None) -> Path:
    """Write record rid (its true bytes unless data) under root."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / record_name(rid)
    path.write_bytes(payload(SEED, rid) if data is None else data)
    return path


def test_writes_found_on_the_active_or_in_a_recovery_area_pass(tmp_path: Path) -> None:
    """Records on the active's tree or in either node's recovery area count as kept."""
    a, b = tmp_path / "a" / "hot", tmp_path / "b" / "hot"
    put(a, 1)
    put(b / ".hapair-backup" / "recovery-20261201T000000Z", 2)
    put(a / ".hapair-backup" / "recovery-20261201T000001Z", 3)
    records = [{"id": i, "t": 0.0, "m": 0.0, "node": "a"} for i in (1, 2, 3)]
    v, lost = check_writes(SEED, records, a, [b])
    assert v.ok and lost == 0 and v.checked == 3


def test_a_write_only_in_a_pass_backup_or_with_other_bytes_is_lost(tmp_path: Path) -> None:
    """A record only in a per-pass backup, or on the tree with other bytes, is a lost write."""
    a, b = tmp_path / "a" / "hot", tmp_path / "b" / "hot"
    put(a, 1, b"something else\n")
    put(b / ".hapair-backup" / "2026-12-01T23Z" / "5420.439", 2)
    records = [{"id": i, "t": 0.0, "m": 0.0, "node": "b"} for i in (1, 2)]
    v, lost = check_writes(SEED, records, a, [b])
    assert lost == 2 and len(v.violations) == 2
    assert "5420.439" in v.violations[1]


def test_tree_diff_sees_content_behind_equal_size_and_mtime(tmp_path: Path) -> None:
    """Two files of the same size and mtime but other bytes make the trees differ; the backup
    area does not."""
    a, b = tmp_path / "a" / "srv" / "hot", tmp_path / "b" / "srv" / "hot"
    for root, data in ((a, b"aaaa"), (b, b"bbbb")):
        (root / ".hapair-backup").mkdir(parents=True)
        (root / ".hapair-backup" / "only-here").write_text(str(root))
        (root / "f").write_bytes(data)
        os.utime(root / "f", ns=(1_000_000_000, 1_000_000_000))
        os.utime(root, ns=(2_000_000_000, 2_000_000_000))  # the roots' own times are compared
    diff = tree_diff(a, b)
    assert len(diff) == 1 and diff[0].startswith("f:")
    (b / "f").write_bytes(b"aaaa")
    os.utime(b / "f", ns=(1_000_000_000, 1_000_000_000))
    os.utime(b, ns=(2_000_000_000, 2_000_000_000))
    assert tree_diff(a, b) == []


def test_tracebacks_are_found_with_their_last_line(tmp_path: Path) -> None:
    """A traceback in a log is reported with the exception line."""
    log = tmp_path / "takeover-a.log"
    log.write_text("ok\nTraceback (most recent call last):\n  File \"x\", line 1\nKeyError: 'k'\n")
    found = tracebacks(log)
    assert len(found) == 1 and "KeyError" in found[0]
    assert tracebacks(tmp_path / "missing.log") == []
