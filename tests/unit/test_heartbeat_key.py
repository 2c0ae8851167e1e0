"""The heartbeat key file is refused unless it exists, is long enough and is private."""

from __future__ import annotations

from pathlib import Path

import pytest

from takeover.heartbeat import KeyFileError, load_key

GOOD = b"k" * 32


def _key(tmp_path: Path, content: bytes, mode: int = 0o600) -> Path:
    path = tmp_path / "authkey"
    path.write_bytes(content)
    path.chmod(mode)
    return path


def test_load_key_strips_trailing_newline(tmp_path: Path) -> None:
    """A 0600 file of 32 bytes plus a newline loads as the 32 bytes."""
    assert load_key(_key(tmp_path, GOOD + b"\n")) == GOOD


def test_missing_key_file_is_named(tmp_path: Path) -> None:
    """A missing key file is refused with its path in the message."""
    path = tmp_path / "nope"
    with pytest.raises(KeyFileError, match=f"{path}: key file not found"):
        load_key(path)


def test_short_key_is_refused_after_stripping(tmp_path: Path) -> None:
    """31 bytes plus whitespace is too short: the count excludes the whitespace."""
    path = _key(tmp_path, b"  " + b"k" * 31 + b"\n\n")
    with pytest.raises(KeyFileError, match=r"too short: 31 bytes .* at least 32") as info:
        load_key(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o620])
def test_key_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    """Any group or other permission bit refuses the key and says how to fix it."""
    path = _key(tmp_path, GOOD, mode)
    with pytest.raises(KeyFileError, match=f"mode {mode:04o}.*chmod 600"):
        load_key(path)


def test_directory_is_not_a_key(tmp_path: Path) -> None:
    """A directory where the key should be is refused as not a regular file."""
    path = tmp_path / "dir"
    path.mkdir(mode=0o700)
    with pytest.raises(KeyFileError, match="not a regular file"):
        load_key(path)
