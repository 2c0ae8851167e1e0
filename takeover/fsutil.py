"""Replacing a small file atomically: what status files, markers and manifests are written with."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

_TMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def write_atomic(
    path: Path | str,
    text: str,
    *,
    mode: int | None = None,
    durable: bool = False,
    dir_fd: int | None = None,
) -> None:
    """Replace `path` with `text` through a temp file beside it and a rename: a reader sees the
    old file or the new one, never a part.

    `mode`: the new file's permissions (default: as open() creates it, under the umask).
    `durable`: fsync the data before the rename, for state that must survive a power loss.
    `dir_fd`: `path` is a name relative to this open directory (mirrord's backup area).
    The temp file is created anew and never through a symlink (O_EXCL|O_NOFOLLOW): a link
    planted at its name cannot make this truncate another file.
    """
    path = Path(path)
    tmp = str(path.with_name(f".{path.name}.{os.getpid()}.tmp"))
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp, dir_fd=dir_fd)  # left by a crash of an earlier process with this pid
    fd = os.open(tmp, _TMP_FLAGS, 0o666 if mode is None else mode, dir_fd=dir_fd)
    try:
        with open(fd, "w", closefd=True) as f:
            f.write(text)
            if durable:
                f.flush()
                os.fsync(f.fileno())
            if mode is not None:
                os.fchmod(f.fileno(), mode)
        os.replace(tmp, str(path), src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
