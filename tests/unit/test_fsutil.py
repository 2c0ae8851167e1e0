"""The one atomic file replacement the daemons use (status files, markers, manifests, epoch)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from takeover.fsutil import write_atomic


def test_replaces_the_file_with_the_asked_mode(tmp_path: Path) -> None:
    """The new content replaces the old one, with the mode asked for, and no temp is left."""
    path = tmp_path / "status.json"
    path.write_text("old")
    write_atomic(path, "new", mode=0o640, durable=True)
    assert path.read_text() == "new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert os.listdir(tmp_path) == ["status.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    """Text that cannot be encoded fails the write: the old file stays whole, the temp goes."""
    path = tmp_path / "manifest.json"
    path.write_text("old")
    with pytest.raises(UnicodeEncodeError):
        write_atomic(path, "\udcff")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["manifest.json"]
