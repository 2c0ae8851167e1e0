"""The lab's shared disk: an ext4 image on a loop device, detached when done."""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path


@contextlib.contextmanager
def ext4_loop(image: Path, files: Mapping[str, str] | None = None) -> Iterator[str]:
    """Make a 16 MiB ext4 `image` holding `files`, attach it; yield the device, then detach.

    The files are written by mkfs itself (-d), never through a mount on the host: a mount in
    the host's namespace is copied into every mount namespace created meanwhile (another
    lab's `unshare --mount`), which would hold the loop device busy long after its umount.
    """
    with tempfile.TemporaryDirectory() as seed:
        for name, text in (files or {}).items():
            (Path(seed) / name).write_text(text)
        with image.open("wb") as f:
            f.truncate(16 * 1024 * 1024)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-d", seed, str(image)], check=True)
    device = subprocess.run(
        ["losetup", "--find", "--show", str(image)], check=True, capture_output=True, text=True
    ).stdout.strip()
    try:
        yield device
    finally:
        subprocess.run(["losetup", "-d", device], check=False)


def private_mounts(argv: list[str]) -> list[str]:
    """Return `argv` run in its own mount namespace (slave: nothing it mounts leaks out)."""
    return ["unshare", "--mount", "--propagation", "slave", "--", *argv]
