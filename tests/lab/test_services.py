"""Service resources against Debian's real OCF agents (resource-agents): Dummy, and Filesystem
on an ext4 image attached to a loop device created here and detached in teardown."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from takeover.backends.services import ServiceError, ServiceItem, check_resource, service_items
from takeover.svcconfig import ResourceConfig
from tests.lab.disk import ext4_loop, private_mounts

MINIMAL = (Path(__file__).resolve().parents[1] / "configs" / "valid-minimal.toml").read_text()
AGENTS = Path("/usr/lib/ocf/resource.d/heartbeat")


@pytest.fixture(autouse=True)
def _root() -> None:
    """The agents mount, attach loop devices and write under /run: they need root."""
    if os.geteuid() != 0:
        pytest.fail("tests/lab/test_services.py needs root (sudo make test)")
    assert (AGENTS / "Dummy").exists(), "resource-agents missing: scripts/bootstrap.sh resources"


def build(cfgs: list[ResourceConfig], failovers: list[str] | None = None) -> list[ServiceItem]:
    """Probe and return one item per config (timeouts from the agents' meta-data)."""
    sink = failovers if failovers is not None else []
    return asyncio.run(service_items(cfgs, lambda n, r: sink.append(f"{n}: {r}")))


def dummy(tmp_path: Path, name: str = "d1", **kw: Any) -> ResourceConfig:
    """An ocf:heartbeat:Dummy resource keeping its state file under tmp_path."""
    params = MappingProxyType({"state": str(tmp_path / f"{name}.state")})
    return ResourceConfig(name=name, type="ocf", agent="heartbeat:Dummy", params=params, **kw)


def test_dummy_starts_monitors_and_stops(tmp_path: Path) -> None:
    """The real Dummy agent: probe not running, start, monitor running, stop, not running."""
    (svc,) = build([dummy(tmp_path)])
    assert svc.cfg.start_timeout == 20.0  # from Dummy's meta-data
    assert not svc.runs_here() and svc.state == "stopped"

    async def body() -> None:
        await svc.acquire()
        assert (tmp_path / "d1.state").exists()
        assert await svc.check()
        await svc.release()

    asyncio.run(body())
    assert not (tmp_path / "d1.state").exists() and not svc.held
    assert asyncio.run(svc.probe()).value == "stopped"


def test_dummy_found_running_counts_as_held(tmp_path: Path) -> None:
    """A Dummy already running (its state file) is found by the start-up probe."""
    (tmp_path / "d1.state").write_text("")
    (svc,) = build([dummy(tmp_path)])
    assert svc.runs_here()


def test_dummy_killed_is_restarted_in_place(tmp_path: Path) -> None:
    """A Dummy whose state vanishes is restarted in place by the monitor, no failover."""
    failovers: list[str] = []
    (svc,) = build([dummy(tmp_path, max_restarts=1)], failovers)

    async def body() -> None:
        await svc.acquire()
        (tmp_path / "d1.state").unlink()
        assert await svc.check()
        assert (tmp_path / "d1.state").exists()
        (tmp_path / "d1.state").unlink()
        assert not await svc.check()
        await svc.release()

    asyncio.run(body())
    assert len(failovers) == 1 and "OCF_NOT_RUNNING" in failovers[0]
    assert svc.describe()["restarts"] == 1


@pytest.fixture
def loop_image(tmp_path: Path) -> Iterator[str]:
    """An ext4 image on a loop device created here, detached in teardown."""
    with ext4_loop(tmp_path / "disk.img") as device:
        yield device


def scenario(name: str, device: str, workdir: Path) -> dict[str, Any]:
    """Run a tests.lab.fs_scenarios scenario in its own mount namespace; return what it saw."""
    argv = private_mounts([sys.executable, "-m", "tests.lab.fs_scenarios", name, device,
                           str(workdir)])  # fmt: skip
    p = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    seen: dict[str, Any] = json.loads(p.stdout)
    return seen


def filesystem(tmp_path: Path, device: str, **kw: Any) -> ResourceConfig:
    """An ocf:heartbeat:Filesystem mounting `device` (ext4) on tmp_path/mnt."""
    params = {"device": device, "directory": str(tmp_path / "mnt"), "fstype": "ext4", **kw}
    return ResourceConfig(
        name="data", type="ocf", agent="heartbeat:Filesystem", params=MappingProxyType(params)
    )


def test_filesystem_on_a_loop_device(tmp_path: Path, loop_image: str) -> None:
    """The real Filesystem agent mounts the ext4 image, monitors it and unmounts it."""
    seen = scenario("mount_cycle", loop_image, tmp_path)
    assert seen == {
        "start_timeout": 60.0,  # from Filesystem's meta-data
        "probed": False,
        "mounted": True,
        "check": True,
        "mounted_after": False,
    }


def test_storage_before_service_and_rollback(tmp_path: Path, loop_image: str) -> None:
    """Storage first, then a service reading from it; a service that fails to start stops the
    acquisition and unmounts the storage again (release in reverse)."""
    seen = scenario("rollback", loop_image, tmp_path)
    assert seen["error"].startswith("resource web: resource web start: exit 1")
    assert seen["mounted_after"] is False


def test_check_accepts_a_good_group_and_names_a_bad_param(tmp_path: Path, loop_image: str) -> None:
    """check passes a good Filesystem and names the unknown param, the missing required one."""
    assert asyncio.run(check_resource(filesystem(tmp_path, loop_image), 0, "c.toml")) == []
    bad = filesystem(tmp_path, loop_image, fsopts="x")
    got = asyncio.run(check_resource(bad, 2, "c.toml"))
    assert got == [
        "c.toml: resource[2].params.fsopts: the agent Filesystem has no such parameter "
        "(it has: device, directory, fast_stop, force_clones, force_unmount, fstype, options, "
        "run_fsck, statusfile_prefix)"
    ]
    params = {"device": loop_image, "directory": str(tmp_path / "mnt")}
    missing = ResourceConfig(
        name="data", type="ocf", agent="heartbeat:Filesystem", params=MappingProxyType(params)
    )
    assert asyncio.run(check_resource(missing, 0, "c.toml")) == [
        "c.toml: resource[0].params.fstype: required by the agent Filesystem, missing"
    ]


def test_check_runs_validate_all() -> None:
    """validate-all catches what meta-data cannot: IPaddr2 with an address that is none."""
    cfg = ResourceConfig(
        name="ip",
        type="ocf",
        agent="heartbeat:IPaddr2",
        params=MappingProxyType({"ip": "999.1.2.3"}),
    )
    got = asyncio.run(check_resource(cfg, 0, "c.toml"))
    assert len(got) == 1, got
    assert got[0].startswith("c.toml: resource[0].params: validate-all failed: validate-all: ")
    assert "OCF_ERR_CONFIGURED (exit 6)" in got[0] and "[findif] failed" in got[0]


def test_takeover_check_cli_names_file_and_key(tmp_path: Path) -> None:
    """`takeover check` exits 2 naming the file and key of an agent that is not installed."""
    key = tmp_path / "authkey"
    key.write_text("k" * 64 + "\n")
    key.chmod(0o600)
    path = tmp_path / "cluster.toml"
    path.write_text(
        MINIMAL.replace("/etc/hapair/authkey", str(key))
        + '\n[[resource]]\nname = "web"\ntype = "ocf"\nagent = "heartbeat:NoSuchAgent"\n'
    )
    argv = [sys.executable, "-m", "takeover", "-c", str(path), "--node", "a", "check"]
    p = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2, p.stderr
    assert (
        "takeover: error: cluster.toml: resource[0].agent: no executable agent "
        "/usr/lib/ocf/resource.d/heartbeat/NoSuchAgent" in p.stderr
    )


def test_a_stop_that_fails_raises(tmp_path: Path) -> None:
    """A command whose stop fails leaves the resource held and raises (FAULT follows)."""
    cfg = ResourceConfig(
        name="stuck",
        type="command",
        start=("/bin/true",),
        stop=("/bin/false",),
        status=("/bin/true",),
    )
    (svc,) = build([cfg])
    assert svc.runs_here()
    with pytest.raises(ServiceError, match="stop: exit 1"):
        asyncio.run(svc.release())
    assert svc.held
