"""Two real libvirtd "hosts" for VM tests, one in each lab node (namespaces a and b).

Each host runs `libvirtd --listen` inside its lab node's network namespace (a = 192.0.2.11,
b = 192.0.2.12 on lan0), started through `Lab.spawn`, in a private mount namespace in which:
- /var is an overlay whose upper layer is the host's private directory (so /var/lib/libvirt,
  /var/log/libvirt exist without touching the machine's /var),
- /var/cache/libvirt is one directory shared by both hosts (QEMU's capability probe, ~8 s, is
  paid once),
- /run is a scratch tmpfs with the host's private directory bound at /run/libvirt (the test
  process reaches each libvirtd through that directory's unix socket),
- /etc/libvirt holds a generated libvirtd.conf (tcp, no auth, distinct host_uuid) and qemu.conf
  (root, no security driver, no namespaces/cgroups, file stdio handler, migration_host),
- /etc/passwd and /etc/group are copies that add libvirt-qemu (the qemu driver looks it up).

libvirtd runs under tests/lab/reaper.py, a child subreaper that reaps the daemonized QEMUs at
once (this machine's init takes ~1.8 s, which libvirt waits for on every stop).

Migration goes libvirtd to libvirtd over tcp on the lab LAN. libvirtd is ended by PID, QEMUs it
left by the PIDs in its pid files; the lab's teardown removes the rest (namespaces, work dir).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
import uuid
from pathlib import Path

import libvirt

from tests.lab.lab import HA_NODES, IPV4, Lab, LabProcess
from tests.lab.managed import Managed

log = logging.getLogger(__name__)

# libvirtd's default tcp port (listen_tcp).
LIBVIRTD_PORT = 16509
# Subreaper around libvirtd: without it, stopping a QEMU costs ~1.5 s here (see reaper.py).
REAPER = Path(__file__).with_name("reaper.py")

GUEST_XML = """\
<domain type='qemu'>
  <name>{name}</name>
  <uuid>{uuid}</uuid>
  <memory unit='MiB'>{memory}</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <video><model type='none'/></video>
    <memballoon model='none'/>
  </devices>
</domain>
"""


def alive(pid: int) -> bool:
    """True if `pid` runs (a zombie does not: QEMU's reparented corpse may linger here)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def guest_xml(name: str, memory_mib: int = 16) -> str:
    """XML of a tiny BIOS-only TCG guest: no disk, no kernel, `memory_mib` MiB."""
    return GUEST_XML.format(name=name, uuid=uuid.uuid4(), memory=memory_mib)


class LibvirtHost:
    """One libvirtd in its own namespaces."""

    def __init__(self, lab: Lab, name: str, root: Path, cache: Path) -> None:
        self.lab = lab
        self.name = name
        self.address = IPV4[name]
        self.root = root
        self.cache = cache
        self.host_uuid = str(uuid.uuid4())
        self.proc: LabProcess | None = None

    @property
    def uri(self) -> str:
        """URI the test process (outside the namespaces) uses: the unix socket."""
        return f"qemu+unix:///system?socket={self.root}/run/libvirt-sock"

    @property
    def tcp_uri(self) -> str:
        """URI the other host's libvirtd uses to reach this one (migration destination)."""
        return f"qemu+tcp://{self.address}/system"

    def _write_config(self) -> None:
        r = self.root
        for d in ("etc", "run", "var", "varwork"):
            (r / d).mkdir(parents=True, exist_ok=True)
        (r / "etc" / "libvirtd.conf").write_text(
            "listen_tls = 0\n"
            "listen_tcp = 1\n"
            f'listen_addr = "{self.address}"\n'
            'auth_tcp = "none"\n'
            'auth_unix_rw = "none"\n'
            f'host_uuid = "{self.host_uuid}"\n'
            'log_outputs = "3:stderr"\n'
        )
        (r / "etc" / "qemu.conf").write_text(
            'user = "root"\n'
            'group = "root"\n'
            'security_driver = "none"\n'
            "namespaces = [ ]\n"
            "cgroup_controllers = [ ]\n"
            # Without virtlogd (not running here) QEMU's output goes straight to a file.
            'stdio_handler = "file"\n'
            f'migration_host = "{self.address}"\n'
        )
        passwd = Path("/etc/passwd").read_text()
        group = Path("/etc/group").read_text()
        if "\nlibvirt-qemu:" not in "\n" + passwd:
            passwd += "libvirt-qemu:x:64055:64055:Libvirt Qemu:/var/lib/libvirt:/usr/sbin/nologin\n"
        if "\nlibvirt-qemu:" not in "\n" + group:
            group += "libvirt-qemu:x:64055:\n"
        (r / "passwd").write_text(passwd)
        (r / "group").write_text(group)

    def _port_busy(self) -> bool:
        """True while something in the node still listens on libvirtd's tcp port."""
        out = self.lab.run(
            self.name, ["ss", "-Hltn", f"sport = :{LIBVIRTD_PORT}"], check=False
        ).stdout
        return bool(out.strip())

    def start(self, timeout: float = 30.0) -> None:
        """Start libvirtd and wait until it answers on its socket."""
        self._write_config()
        r = self.root
        # After a crash the killed libvirtd's threads may still be closing its listening
        # socket for a few ms after its PID left the namespace; binding then fails.
        deadline = time.monotonic() + timeout
        while self._port_busy():
            if time.monotonic() > deadline:
                raise RuntimeError(f"libvirtd {self.name}: port {LIBVIRTD_PORT} stays busy")
            time.sleep(0.02)
        setup = " && ".join(
            [
                f"mount -t overlay overlay -o lowerdir=/var,upperdir={r}/var,workdir={r}/varwork"
                " /var",
                "mkdir -p /var/lib/libvirt /var/log/libvirt /var/cache/libvirt",
                f"mount --bind {self.cache} /var/cache/libvirt",
                "mount -t tmpfs -o mode=755 tmpfs /run",
                "mkdir /run/libvirt",
                f"mount --bind {r}/run /run/libvirt",
                f"mount --bind {r}/etc /etc/libvirt",
                f"mount --bind {r}/passwd /etc/passwd",
                f"mount --bind {r}/group /etc/group",
                f"exec {sys.executable} {REAPER} "
                f"libvirtd --listen -p {r}/libvirtd.pid -f /etc/libvirt/libvirtd.conf",
            ]
        )
        argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", setup]
        # ip netns exec and unshare (without --fork) exec in place: the recorded PID is the
        # reaper's, libvirtd its child (SIGTERM is passed on; kill_node kills both).
        self.proc = self.lab.spawn(self.name, argv, log_path=r / "libvirtd.log")
        while True:
            if not self.proc.alive():
                if "Address already in use" in self.log_tail(1) and time.monotonic() < deadline:
                    # The port freed only now (see above): try again.
                    time.sleep(0.1)
                    self.proc = self.lab.spawn(self.name, argv, log_path=r / "libvirtd.log")
                    continue
                raise RuntimeError(f"libvirtd {self.name} exited: {self.log_tail()}")
            if (r / "run" / "libvirt-sock").exists():
                try:
                    libvirt.open(self.uri).close()
                    break
                except libvirt.libvirtError:
                    pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"libvirtd {self.name} not answering: {self.log_tail()}")
            time.sleep(0.05)
        log.info("libvirtd.started host=%s pid=%d", self.name, self.proc.pid)

    def running(self) -> bool:
        """True while this host's libvirtd runs."""
        return self.proc is not None and self.proc.alive()

    def log_tail(self, lines: int = 5) -> str:
        """The last lines libvirtd wrote."""
        path = self.root / "libvirtd.log"
        return " | ".join(path.read_text().splitlines()[-lines:]) if path.exists() else ""

    def qemu_pid(self, domain: str) -> int | None:
        """PID of the QEMU process running `domain` on this host, if any."""
        path = self.root / "run" / "qemu" / f"{domain}.pid"
        try:
            pid = int(path.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if alive(pid) else None

    def domains(self) -> dict[str, str]:
        """Every domain this host knows: name -> "running" / "defined"."""
        conn = libvirt.open(self.uri)
        try:
            return {
                d.name(): ("running" if d.isActive() else "defined") for d in conn.listAllDomains()
            }
        finally:
            conn.close()

    def clear(self) -> None:
        """Destroy and undefine every domain on this host."""
        conn = libvirt.open(self.uri)
        try:
            for d in conn.listAllDomains():
                with contextlib.suppress(libvirt.libvirtError):
                    if d.isActive():
                        d.destroy()
                with contextlib.suppress(libvirt.libvirtError):
                    if d.isPersistent():
                        d.undefine()
        finally:
            conn.close()

    def stop(self) -> None:
        """Clear domains, end libvirtd by PID, and kill any QEMU it left (by PID)."""
        if self.proc is None:
            return
        with contextlib.suppress(libvirt.libvirtError, OSError):
            if self.proc.alive():
                self.clear()
        proc, self.proc = self.proc, None
        proc.stop(grace=10)
        qemu_dir = self.root / "run" / "qemu"
        for pidfile in qemu_dir.glob("*.pid") if qemu_dir.exists() else []:
            # Only a QEMU of this host: a stale pid file may name a recycled PID.
            with contextlib.suppress(OSError, ValueError):
                pid = int(pidfile.read_text().strip())
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                if b"qemu-system" in cmdline and f"guest={pidfile.stem},".encode() in cmdline:
                    os.kill(pid, signal.SIGKILL)


class LibvirtPair(Managed):
    """libvirtd hosts "a" and "b" in the lab's nodes a and b."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.dir = lab.workdir / "libvirt"
        self.cache = self.dir / "cache"
        self.shared = self.dir / "shared"
        self.hosts: dict[str, LibvirtHost] = {}

    def __getitem__(self, name: str) -> LibvirtHost:
        return self.hosts[name]

    def start(self) -> LibvirtPair:
        """Start both libvirtd (a first: it pays the QEMU capability probe for both)."""
        try:
            self.cache.mkdir(parents=True)
            self.shared.mkdir()
            for name in HA_NODES:
                host = LibvirtHost(self.lab, name, self.dir / name, self.cache)
                self.hosts[name] = host
                host.start()
                # Pay the QEMU capability probe now, once, into the shared cache.
                conn = libvirt.open(host.uri)
                try:
                    conn.getDomainCapabilities(None, "x86_64", None, "qemu")
                finally:
                    conn.close()
        except BaseException:
            self.stop()
            raise
        return self

    def write_guest(self, name: str, memory_mib: int = 16) -> Path:
        """Write a tiny guest's XML to the pair's "shared storage" and return its path."""
        path = self.shared / f"{name}.xml"
        path.write_text(guest_xml(name, memory_mib))
        return path

    def stop(self) -> None:
        """End both libvirtd and their QEMUs (the lab removes namespaces and files)."""
        for host in self.hosts.values():
            try:
                host.stop()
            except Exception as exc:
                log.warning("libvirtd.stop_failed host=%s error=%s", host.name, exc)
