"""Filesystem-agent scenarios for tests/lab/test_services.py, run in their own mount namespace.

    unshare --mount --propagation slave -- python -m tests.lab.fs_scenarios NAME DEVICE DIR

Each prints one JSON object of what it saw. Run this way, nothing the agent mounts is seen
from the host (or copied into another lab's mount namespace created meanwhile).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from types import MappingProxyType
from typing import Any

from takeover.backends.services import service_items
from takeover.resources import ResourceError, ResourceList
from takeover.svcconfig import ResourceConfig


def filesystem(workdir: Path, device: str) -> ResourceConfig:
    """An ocf:heartbeat:Filesystem mounting `device` (ext4) on workdir/mnt."""
    (workdir / "mnt").mkdir(exist_ok=True)
    params = {"device": device, "directory": str(workdir / "mnt"), "fstype": "ext4"}
    return ResourceConfig(
        name="data", type="ocf", agent="heartbeat:Filesystem", params=MappingProxyType(params)
    )


def mounted(path: Path) -> bool:
    """Return whether `path` is a mount point now."""
    return subprocess.run(["mountpoint", "-q", str(path)], check=False).returncode == 0


async def mount_cycle(device: str, workdir: Path) -> dict[str, Any]:
    """Probe, start (mount), write, monitor, stop (unmount) the Filesystem resource."""
    (svc,) = await service_items([filesystem(workdir, device)], lambda n, r: None)
    mnt = workdir / "mnt"
    seen: dict[str, Any] = {"start_timeout": svc.cfg.start_timeout, "probed": svc.runs_here()}
    await svc.acquire()
    seen["mounted"] = mounted(mnt)
    (mnt / "index.html").write_text("from the shared disk\n")
    seen["check"] = await svc.check()
    await svc.release()
    seen["mounted_after"] = mounted(mnt)
    return seen


async def rollback(device: str, workdir: Path) -> dict[str, Any]:
    """Storage, then a service that fails to start: the acquisition is rolled back."""
    mnt = workdir / "mnt"
    web = ResourceConfig(
        name="web",
        type="command",
        start=("/bin/sh", "-c", f"test -f {mnt}/index.html"),
        stop=("/bin/true",),
        status=("/bin/sh", "-c", "exit 3"),
    )
    items = await service_items([filesystem(workdir, device), web], lambda n, r: None)
    error = ""
    try:
        await ResourceList(items).acquire()
    except ResourceError as err:
        error = str(err)
    return {"error": error, "mounted_after": mounted(mnt)}


SCENARIOS = {"mount_cycle": mount_cycle, "rollback": rollback}


def main(argv: list[str]) -> int:
    """Run one scenario and print what it saw."""
    name, device, workdir = argv
    print(json.dumps(asyncio.run(SCENARIOS[name](device, Path(workdir)))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
