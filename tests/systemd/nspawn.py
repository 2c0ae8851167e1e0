"""Debian 12 containers booted with systemd as PID 1 (systemd-nspawn), inside lab namespaces.

Each container is a copy of one cached debootstrap tree (scripts/systemd-rootfs.sh) with its
own host name, machine-id and ssh host keys, booted with `systemd-nspawn --boot` in its own
cgroup and in a lab node's network namespace (LAB-NOTES, "systemd in containers"): its only
links are the lab's lan0 and hb0, no route leads out. Commands run inside with nsenter into the
container's init. A power cut is SIGKILL to that init, by PID; teardown does the same for every
container still running, waits for nspawn to exit, and removes the cgroups and the tree.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parents[2]
WORK_ROOT: Final = Path("/var/tmp")
# Both cgroup hierarchies this host mounts: nspawn sets the container up under its own cgroup,
# and two containers sharing one break each other's service cgroups (LAB-NOTES).
CGROUP_ROOTS: Final = (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup/systemd"))
BOOT_TIMEOUT: Final = 120.0


class ContainerError(RuntimeError):
    """A container could not be made, booted or reached."""


def rootfs() -> Path:
    """Return the cached Debian tree, building it first if this machine has none."""
    p = subprocess.run(
        [str(ROOT / "scripts" / "systemd-rootfs.sh")],
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    if p.returncode != 0:
        raise ContainerError(f"systemd-rootfs.sh failed: {p.stderr.strip()}")
    return Path(p.stdout.strip().splitlines()[-1])


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    """Poll `predicate` until it is true or `timeout` seconds passed; return its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


class Container:
    """One booted Debian 12 node."""

    def __init__(self, name: str, netns: str, workdir: Path, tag: str) -> None:
        # Host name inside the container: the node's name in the cluster file.
        self.name = name
        self.netns = netns
        self.root = workdir / name
        self.log_path = workdir / f"{name}.console"
        self.cgroups = [base / f"hapair-{tag}-{name}" for base in CGROUP_ROOTS]
        self.proc: subprocess.Popen[bytes] | None = None

    def create(self, tree: Path) -> None:
        """Copy the tree and give it this container's identity."""
        subprocess.run(["cp", "-a", "--reflink=auto", str(tree), str(self.root)], check=True)
        (self.root / "etc" / "hostname").write_text(f"{self.name}\n")
        (self.root / "etc" / "hosts").write_text(f"127.0.0.1 localhost\n127.0.1.1 {self.name}\n")
        (self.root / "etc" / "machine-id").write_text(secrets.token_hex(16) + "\n")
        subprocess.run(
            ["ssh-keygen", "-q", "-A", "-f", str(self.root)],
            check=True,
            capture_output=True,
            timeout=60,
        )

    def path(self, inside: str) -> Path:
        """Return the host path of a path inside the container."""
        return self.root / inside.lstrip("/")

    def boot(self) -> None:
        """Start systemd-nspawn --boot in its own cgroup and wait until systemd is up."""
        for cg in self.cgroups:
            cg.mkdir(exist_ok=True)
        # The shell moves itself into the cgroups, then becomes nspawn.
        enter = 'for f; do [ "$f" = -- ] && break; echo $$ > "$f"; shift; done; shift; exec "$@"'
        argv = [
            "/bin/sh", "-c", enter, "sh", *(str(cg / "cgroup.procs") for cg in self.cgroups), "--",
            "systemd-nspawn", "--boot", "--register=no", "--keep-unit", "--private-network",
            f"--network-namespace-path=/run/netns/{self.netns}", "-D", str(self.root),
        ]  # fmt: skip
        env = {**os.environ, "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1", "SYSTEMD_COLORS": "0"}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                start_new_session=True,
            )  # fmt: skip
        if not wait_for(self._booted, BOOT_TIMEOUT, 0.5):
            raise ContainerError(f"{self.name}: systemd did not finish booting: {self.log_path}")

    def _booted(self) -> bool:
        if self.init_pid() is None:
            return False
        state = self.run("systemctl is-system-running", check=False, timeout=30).stdout.strip()
        return state in ("running", "degraded")

    def init_pid(self) -> int | None:
        """Return the host PID of the container's systemd, or None if it is not running."""
        if self.proc is None or self.proc.poll() is not None:
            return None
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        with contextlib.suppress(OSError):
            for pid in children.read_text().split():
                if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                    return int(pid)
        return None

    def run(
        self, command: str, *, check: bool = True, timeout: float = 180
    ) -> subprocess.CompletedProcess[str]:
        """Run a shell command inside the container as root; raise on failure with `check`."""
        pid = self.init_pid()
        if pid is None:
            raise ContainerError(f"{self.name}: not running")
        p = subprocess.run(
            ["nsenter", "-t", str(pid), "-m", "-u", "-i", "-n", "-p", "--",
             "/usr/bin/env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root",
             "LANG=C.UTF-8", "/bin/sh", "-c", command],
            capture_output=True, text=True, check=False, timeout=timeout,
        )  # fmt: skip
        if check and p.returncode != 0:
            raise ContainerError(
                f"{self.name}: `{command}` exited {p.returncode}:\n{p.stdout}{p.stderr}"
            )
        return p

    def power_off(self) -> None:
        """Cut the power: SIGKILL the container's init by PID (every process in it dies)."""
        pid = self.init_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.proc is not None:
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        self.proc = None
        self._remove_cgroups()

    def _remove_cgroups(self) -> None:
        """Remove this container's cgroup trees (empty once it ended; a moment's retry)."""
        for cg in self.cgroups:
            for _ in range(50):
                if remove_cgroup(cg):
                    break
                time.sleep(0.1)

    def destroy(self) -> None:
        """Power off if running and delete the tree."""
        self.power_off()
        shutil.rmtree(self.root, ignore_errors=True)


def sweep_stale(live_prefixes: set[str]) -> list[Path]:
    """Remove the trees and cgroups of runs whose lab is gone (a test run that was SIGKILLed:
    its lab's own sweep already ended the containers' processes); return what was removed."""
    removed = []
    for workdir in WORK_ROOT.glob("hapair-systemd-*"):
        tag = workdir.name.removeprefix("hapair-systemd-")
        if tag in live_prefixes:
            continue
        for base in CGROUP_ROOTS:
            for cg in base.glob(f"hapair-{tag}-*"):
                remove_cgroup(cg)
        shutil.rmtree(workdir, ignore_errors=True)
        removed.append(workdir)
    return removed


def remove_cgroup(cg: Path) -> bool:
    """Remove a cgroup and its children, deepest first; return whether it is gone."""
    with contextlib.suppress(OSError):
        for d in sorted((p for p in cg.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            d.rmdir()
        cg.rmdir()
    return not cg.exists()
