"""Replacing a small file atomically: what status files, markers and manifests are written with."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def write_atomic(path: Path, text: str, *, mode: int | None = None, durable: bool = False) -> None:
    """Replace `path` with `text` through a temp file beside it and a rename: a reader sees the
    old file or the new one, never a part.

    `mode`: the new file's permissions (default: as open() creates it, under the umask).
    `durable`: fsync the data before the rename, for state that must survive a power loss.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w") as f:
            f.write(text)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
