"""The campaign's pair: the lab, both BMCs, every daemon kept running as systemd would, and the
nemesis's effects (inject and heal each fault kind).

`CampaignLab.supervise()` runs in a thread: a daemon that died is started again after
RESTART_SEC unless the nemesis holds it down (a kill fault, sshd down) or its node is powered
off; a death the nemesis did not cause is recorded (`unexpected`). A node the BMC powered off
(fencing) is powered on again after a delay drawn from the seed. Each node's /srv is a small
tmpfs mounted under the lab's work dir (never a host path), so "disk full" fills that.

With --vms a real libvirtd runs in nodes a and b (tests/lab/libvirt_hosts.py) and takeover
manages one tiny guest (tests/lab/vm_pair.vm_toml); a node powered on again (after a crash or a
fence) starts its libvirtd before its daemons, as a boot would.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mirrord.cli import control_request
from tests.e2e.mirrorlab import spawn_sshd
from tests.e2e.pairlab import PairLab, peer_of
from tests.lab.bmc import SimBmc, power_off_node_argv
from tests.lab.faults import Fault as NftFault
from tests.lab.lab import HA_NODES, IPV4, LAN_IFACE, VIP4, Lab, LabProcess
from tests.lab.libvirt_hosts import LibvirtPair
from tests.lab.pair import PairConfig, takeover_argv
from tests.lab.vm_pair import vm_toml

log = logging.getLogger(__name__)

AGENTS = Path(__file__).with_name("agents.py")
SERVICE_PORT = 7600
DAEMONS = ("sshd", "takeover", "mirrord", "service")
# As systemd's Restart=always, RestartSec=1.
RESTART_SEC = 1.0
# Size of each node's /srv (tmpfs).
SRV_SIZE = "256m"
# Seconds a fenced node stays off before it is powered on again.
FENCED_OFF = (2.0, 8.0)
FENCE_TIMEOUT = 5.0
FLUSH_TIMEOUT = 10.0
# libfaketime (Debian's faketime package), preloaded for a clock fault.
FAKETIME_LIB = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"
HOT = {"path": "/srv/hot", "class": "hot", "interval": "1s", "min_interval": "200ms",
       "max_interval": "5s"}  # fmt: skip


@dataclass
class Event:
    """One line of the history: what happened, when (monotonic), and to what."""

    t: float
    what: str
    detail: str = ""


@dataclass
class NodeState:
    """What the nemesis has done to one node."""

    # Powered off (our crash, or a fence through its BMC).
    off: bool = False
    # Daemons held down (not restarted) by a fault.
    held: set[str] = field(default_factory=set)
    # faketime spec per daemon ("+300s"), for a clock fault.
    clock: dict[str, str] = field(default_factory=dict)
    # Carrier cuts in force on its links ("lan", "hb"), counted (overlapping faults).
    cut: dict[str, int] = field(default_factory=dict)
    # When a fenced node is powered on again (monotonic), if it was fenced.
    power_on_at: float | None = None


class CampaignLab:
    """takeover, mirrord, sshd and the service on both nodes, with fencing through ipmi_sim."""

    def __init__(
        self,
        lab: Lab,
        seed: int,
        on_event: Callable[[Event], None],
        libvirt: LibvirtPair | None = None,
    ) -> None:
        self.lab = lab
        self.libvirt = libvirt
        # The guest takeover manages (--vms), named by the seed.
        self.guest = f"g-campaign-{seed}" if libvirt is not None else None
        self.seed = seed
        self.rng = random.Random(seed ^ 0x5EED)
        self.on_event = on_event
        self.mu = threading.RLock()
        self.state = {n: NodeState() for n in HA_NODES}
        self.procs: dict[str, dict[str, LabProcess]] = {n: {} for n in HA_NODES}
        self.killed: set[int] = set()
        self.unexpected: list[str] = []
        self.died_at: dict[tuple[str, str], float] = {}
        self.drops: dict[int, list[NftFault]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.mounted: list[Path] = []
        for n in HA_NODES:
            srv = lab.node_dir(n, "srv")
            subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SRV_SIZE},mode=0755",
                            f"hapair-{lab.prefix}-{n}", str(srv)], check=True)  # fmt: skip
            self.mounted.append(srv)
        self.bmcs: dict[str, SimBmc] = {}
        for n in HA_NODES:
            bmc = SimBmc(
                on_power_off=power_off_node_argv(lab, n),
                netns=lab.ns("client"),
                address=IPV4["client"],
            )
            self.bmcs[n] = bmc.start()
        fencing = {
            n: f'[node.fencing]\ntype = "ipmi"\naddress = "{b.address}"\nport = {b.port}\n'
            f'user = "{b.user}"\npassword_file = "{b.write_password_file()}"\n'
            f'timeout = "{FENCE_TIMEOUT:.0f}s"\n'
            for n, b in self.bmcs.items()
        }
        vm = vm_toml(libvirt, self.guest) if libvirt is not None and self.guest else ""
        self.cfg = PairConfig(
            interval=0.2, deadtime_factor=5, initdead=2.0, node_extra=fencing, extra=vm
        )
        self.pair = PairLab(lab, [HOT], self.cfg, flush_timeout=FLUSH_TIMEOUT)
        self.authorized = {
            n: self.pair.mirrord_cli(n, "authorize", f"{self.pair.key}.pub", "--rsyncd-conf",
                                     str(lab.node_dir(n, "etc") / "rsyncd.conf")).stdout
            for n in HA_NODES
        }  # fmt: skip

    # -- bounds -----------------------------------------------------------------------------

    def heal_bound(self) -> float:
        """Seconds within which the VIP must answer once every fault is healed: a start-up
        (initdead, then one deadtime listening), the carrier hold, one fence, one final flush,
        and RESTART_SEC + 10 s for restarting Python daemons on a loaded machine."""
        deadtime = self.cfg.interval * self.cfg.deadtime_factor
        initdead = max(self.cfg.initdead, deadtime)
        carrier_hold = max(1.0, 2 * deadtime)
        return initdead + deadtime + carrier_hold + FENCE_TIMEOUT + FLUSH_TIMEOUT + RESTART_SEC + 10

    # -- daemons ----------------------------------------------------------------------------

    def _argv(self, node: str, daemon: str) -> list[str]:
        if daemon == "takeover":
            return takeover_argv(self.pair.cluster, node, "run")
        return self.pair.mirrord_argv(node, "run", "--flush-timeout", str(FLUSH_TIMEOUT),
                                      *self.pair._ssh_args())  # fmt: skip

    def _env(self, node: str, daemon: str) -> dict[str, str]:
        """PYTHONUNBUFFERED, and libfaketime as `faketime -f SPEC` sets it up when a clock
        fault holds the daemon (set directly: the faketime command forks, and the PID the lab
        records must be the daemon's own)."""
        env = {"PYTHONUNBUFFERED": "1"}
        spec = self.state[node].clock.get(daemon)
        if spec:
            env |= {"LD_PRELOAD": FAKETIME_LIB, "FAKETIME": spec}
        return env

    def start(self, node: str, daemon: str) -> None:
        """Start one daemon of node (no waiting)."""
        lab, wd = self.lab, self.lab.workdir
        env = self._env(node, daemon)
        if daemon == "sshd":
            etc = lab.node_dir(node, "etc")
            proc = spawn_sshd(lab, node, etc, host_key=etc / "ssh_host_ed25519_key",
                              authorized_line=self.authorized[node], srv=self.pair.srv[node],
                              log_path=wd / f"sshd-{node}.log")  # fmt: skip
        elif daemon == "takeover":
            proc = lab.spawn(node, self._argv(node, daemon), log_path=wd / f"takeover-{node}.log",
                             env=env)  # fmt: skip
        elif daemon == "mirrord":
            proc = lab.spawn(node, self._argv(node, daemon), binds={"/srv": self.pair.srv[node]},
                             log_path=wd / f"mirrord-{node}.log", env=env)  # fmt: skip
        else:
            argv = [lab.python, str(AGENTS), "serve", node, "/srv/hot", str(SERVICE_PORT)]
            proc = lab.spawn(node, argv, binds={"/srv": self.pair.srv[node]},
                             log_path=wd / f"service-{node}.log")  # fmt: skip
        self.procs[node][daemon] = proc

    def start_all(self) -> None:
        """Start everything on both nodes (sshd first, so the first pushes find a receiver)."""
        for daemon in DAEMONS:
            for n in HA_NODES:
                self.start(n, daemon)
                if daemon == "sshd":
                    time.sleep(0.3)

    def kill(self, node: str, daemon: str, sig: int = signal.SIGKILL) -> None:
        """Signal one daemon; a kill is recorded as ours."""
        proc = self.procs[node].get(daemon)
        if proc is None or not proc.alive():
            return
        if sig in (signal.SIGKILL, signal.SIGTERM):
            self.killed.add(proc.pid)
        proc.signal(sig)

    def supervise(self) -> None:
        """Start the supervisor thread."""
        self._thread = threading.Thread(target=self._supervise, daemon=True, name="supervisor")
        self._thread.start()

    def stop_supervising(self) -> None:
        """Stop the supervisor thread."""
        self._stop.set()
        if self._thread:
            self._thread.join()

    def _supervise(self) -> None:
        while not self._stop.wait(0.2):
            try:
                with self.mu:
                    self._tick()
            except Exception as e:  # the campaign must notice, not stop supervising
                log.exception("supervisor")
                self.event("supervisor.error", repr(e))

    def _tick(self) -> None:
        now = time.monotonic()
        for n in HA_NODES:
            st = self.state[n]
            if not st.off and self.bmcs[n].power() == "off":
                st.off = True
                st.power_on_at = now + self.rng.uniform(*FENCED_OFF)
                self.event("fenced", f"node={n} (BMC powered it off)")
                for p in self.procs[n].values():
                    self.killed.add(p.pid)
            if st.off:
                if st.power_on_at is not None and now >= st.power_on_at:
                    self.power_on(n)
                continue
            for daemon in DAEMONS:
                proc = self.procs[n].get(daemon)
                if daemon in st.held or (proc is not None and proc.alive()):
                    continue
                if proc is not None and proc.pid not in self.killed:
                    key = (n, daemon)
                    if key not in self.died_at:
                        self.died_at[key] = now
                        rc = proc.returncode
                        self.unexpected.append(f"{daemon} on {n} pid={proc.pid} exited rc={rc}")
                        self.event("exit.unexpected", f"{daemon} on {n} rc={rc}")
                    if now - self.died_at[key] < RESTART_SEC:
                        continue
                self.died_at.pop((n, daemon), None)
                self.start(n, daemon)

    def event(self, what: str, detail: str = "") -> None:
        """Record an event in the history."""
        self.on_event(Event(time.monotonic(), what, detail))

    # -- links ------------------------------------------------------------------------------

    def apply_links(self) -> None:
        """Set every link of a and b to what the faults in force say (down if off or cut)."""
        sw = self.lab.ns("sw")
        for n in HA_NODES:
            st = self.state[n]
            lan = "down" if st.off or st.cut.get("lan") else "up"
            hb = "down" if st.off or st.cut.get("hb") else "up"
            subprocess.run(["ip", "-n", sw, "link", "set", self.lab.port(n), lan], check=False)
            subprocess.run(["ip", "-n", self.lab.ns(n), "link", "set", "hb0", hb], check=False)
            # Lab.kill_node takes the node's own LAN interface down too; power brings it back.
            own = "down" if st.off else "up"
            subprocess.run(["ip", "-n", self.lab.ns(n), "link", "set", LAN_IFACE, own], check=False)

    # -- power ------------------------------------------------------------------------------

    def power_off(self, node: str) -> None:
        """Crash node: power off (every process killed, links down)."""
        st = self.state[node]
        self.bmcs[node].set_power(on=False)
        st.off = True
        st.power_on_at = None
        for p in self.procs[node].values():
            self.killed.add(p.pid)
        for p in self.procs[node].values():
            p.signal(signal.SIGCONT)
        self.lab.kill_node(node)
        self.apply_links()

    def power_on(self, node: str) -> None:
        """Power node on as a boot would find it: no VIP on its interfaces (the lab's namespace
        kept them, a real machine does not), then links back (unless cut) and every daemon
        started again."""
        st = self.state[node]
        self.bmcs[node].set_power(on=True)
        for vip in self.cfg.vips:
            subprocess.run(["ip", "-n", self.lab.ns(node), "addr", "del", vip, "dev", LAN_IFACE],
                           capture_output=True, check=False)  # fmt: skip
        st.off = False
        st.power_on_at = None
        self.apply_links()
        if self.libvirt is not None:
            self.libvirt[node].start()
            self.event("libvirtd.start", f"node={node}")
        for daemon in DAEMONS:
            if daemon not in st.held:
                self.start(node, daemon)
        self.event("power.on", f"node={node}")

    # -- observation (independent of hapair's own files) --------------------------------------

    def holders(self) -> list[str]:
        """The nodes that have the VIP on an interface (`ip addr` in their namespace)."""
        return [n for n in HA_NODES if not self.state[n].off and self.pair.takeover.holds(n, VIP4)]

    def resolve(self, role: str) -> str:
        """ "active" is the node holding the VIP (a if none or both), "standby" the other."""
        held = self.holders()
        active = held[0] if len(held) == 1 else "a"
        if role == "active":
            return active
        if role == "standby":
            return peer_of(active)
        return role

    def mirrord_answers(self, node: str) -> bool:
        """Whether node's mirrord answers on its control socket."""
        try:
            control_request(self.lab.node_dir(node, "run"), {"cmd": "status"}, 10)
        except (OSError, ValueError):
            return False
        return True

    # -- clean-up ---------------------------------------------------------------------------

    def close(self) -> None:
        """Stop supervising, continue what is stopped, stop the BMCs, and the tmpfs mounts
        after the lab's processes are gone (the caller tears the lab down, then calls
        unmount())."""
        self.stop_supervising()
        for procs in self.procs.values():
            for p in procs.values():
                p.signal(signal.SIGCONT)
        for n in HA_NODES:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                for pid in self.lab.pids(n):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGCONT)
        for b in self.bmcs.values():
            b.stop()

    def unmount(self) -> None:
        """Unmount the nodes' /srv tmpfs (after the lab is torn down), then remove the mount
        points and what teardown could not remove because of them: the node dirs and the
        work dir, each only if empty (a kept lab keeps its files)."""
        for d in self.mounted:
            subprocess.run(["umount", "-l", str(d)], check=False)
            with contextlib.suppress(OSError):
                d.rmdir()
        for d in [*{m.parent for m in self.mounted}, self.lab.workdir]:
            with contextlib.suppress(OSError):
                d.rmdir()


def ballast_path(cl: CampaignLab, node: str) -> Path:
    """Where disk-full's ballast file goes: node's /srv, outside the mirrored root."""
    return cl.pair.srv[node] / "ballast"


def fill(path: Path) -> int:
    """Fill the file system of path's directory; return the bytes written."""
    vfs = os.statvfs(path.parent)
    size = vfs.f_bavail * vfs.f_frsize
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with contextlib.suppress(OSError):
            os.posix_fallocate(fd, 0, size)
    finally:
        os.close(fd)
    return size


def takeover_cmd(cl: CampaignLab, node: str, *args: str) -> LabProcess:
    """Run `takeover ARGS` on node in the background (a frozen daemon must not block us)."""
    return cl.lab.spawn(node, takeover_argv(cl.pair.cluster, node, *args),
                        log_path=cl.lab.workdir / f"cmd-{node}.log")  # fmt: skip
