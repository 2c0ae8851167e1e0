"""The network-namespace lab: two HA nodes, a client and ping targets on one bridge.

    switch ns "<prefix>-sw": bridge "<prefix>-br" (no STP, no forward delay, no mcast snooping)
      port "<prefix>-<node>" <-veth-> lan0 in "<prefix>-<node>" for a, b, client, t1, t2, t3
    a:hb0 <-veth-> b:hb0 (198.51.100.1/30, .2/30): the direct heartbeat link

Nothing is connected to the host's network and nothing on a host interface changes. Every
process the lab starts is recorded by PID and ended at teardown (SIGTERM, then SIGKILL); then any
other process still inside a lab namespace is killed by PID and the namespaces are deleted.
Teardown also runs from `atexit` and on SIGTERM, is idempotent, and copes with a half-built lab.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Final

from tests.lab import faults
from tests.lab.faults import Fault
from tests.lab.managed import Managed

log = logging.getLogger(__name__)

NODES: Final = ("a", "b", "client", "t1", "t2", "t3")
HA_NODES: Final = ("a", "b")
SWITCH: Final = "sw"
LAN_IFACE: Final = "lan0"
HB_IFACE: Final = "hb0"
IPV4: Final = {
    "a": "192.0.2.11", "b": "192.0.2.12", "client": "192.0.2.50",
    "t1": "192.0.2.1", "t2": "192.0.2.2", "t3": "192.0.2.3",
}  # fmt: skip
IPV6: Final = {
    "a": "2001:db8::11", "b": "2001:db8::12", "client": "2001:db8::50",
    "t1": "2001:db8::1", "t2": "2001:db8::2", "t3": "2001:db8::3",
}  # fmt: skip
LAN4_PREFIX: Final = 24
LAN6_PREFIX: Final = 64
HB4: Final = {"a": "198.51.100.1", "b": "198.51.100.2"}
HB4_PREFIX: Final = 30
VIP4: Final = "192.0.2.100"
VIP6: Final = "2001:db8::100"
TARGETS: Final = ("t1", "t2", "t3")

# Namespaces copy the host's conf/all and conf/default, so set what the lab relies on.
_SYSCTL_NODE: Final = [
    "net.ipv4.conf.all.rp_filter=0",
    "net.ipv4.conf.default.rp_filter=0",
    "net.ipv4.conf.all.arp_accept=0",
    "net.ipv4.conf.default.arp_accept=0",
    "net.ipv4.conf.all.arp_ignore=0",
    "net.ipv4.conf.default.arp_ignore=0",
    "net.ipv4.conf.all.arp_announce=0",
    "net.ipv4.conf.default.arp_announce=0",
    "net.ipv6.conf.all.disable_ipv6=0",
    "net.ipv6.conf.default.disable_ipv6=0",
    # No duplicate address detection: addresses (link-local too) are usable at once.
    "net.ipv6.conf.all.accept_dad=0",
    "net.ipv6.conf.default.accept_dad=0",
    "net.ipv6.conf.all.accept_ra=0",
    "net.ipv6.conf.default.accept_ra=0",
    "net.ipv6.conf.default.router_solicitations=0",
    # A link set down by a fault keeps its IPv6 addresses, as IPv4 does.
    "net.ipv6.conf.all.keep_addr_on_down=1",
    "net.ipv6.conf.default.keep_addr_on_down=1",
]
# The switch only bridges; IPv6 on its ports would only add NDP/MLD chatter to the LAN.
_SYSCTL_SWITCH: Final = [
    "net.ipv6.conf.all.disable_ipv6=1",
    "net.ipv6.conf.default.disable_ipv6=1",
]
WORK_ROOT: Final = Path("/tmp")
STOP_GRACE: Final = 3.0


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    """Poll predicate until it is true (return True) or timeout seconds pass (return False)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


class LabError(RuntimeError):
    """The lab could not be built or a lab command failed."""


class LabCommandError(LabError):
    """A command run in a lab namespace exited non-zero."""

    def __init__(self, node: str, argv: Sequence[str], proc: subprocess.CompletedProcess[str]):
        self.node = node
        self.argv = list(argv)
        self.returncode = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        super().__init__(
            f"lab.run.failed node={node} rc={proc.returncode} argv={' '.join(argv)} "
            f"stderr={(proc.stderr or '').strip()!r}"
        )


@dataclass(frozen=True)
class Node:
    """One lab host: its namespace and LAN addresses."""

    # Short lab name: "a", "b", "client", "t1".."t3".
    name: str
    # Network namespace name ("<prefix>-<name>").
    ns: str
    # Switch-side veth name of its LAN port, in the switch namespace.
    port: str
    # IPv4 and IPv6 address on lan0 (no prefix length).
    ipv4: str
    ipv6: str
    # MAC address of lan0 (kernel-chosen, recorded at set-up).
    mac: str
    # Address on hb0, only for a and b.
    hb: str | None = None


def _alive(pid: int) -> bool:
    """True if pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # The state follows the parenthesised command name, which may itself contain ") ".
    return stat[stat.rindex(")") + 2] != "Z"


def _children(pid: int) -> list[int]:
    """Direct children of pid, from /proc (every thread's list)."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            out += [int(c) for c in (task / "children").read_text().split()]
    return out


class LabProcess:
    """A process the lab started in a node; `stop()` ends it by PID."""

    def __init__(
        self,
        node: str,
        argv: Sequence[str],
        popen: subprocess.Popen[bytes],
        log_path: Path,
        log_file: IO[bytes],
    ) -> None:
        self.node = node
        self.argv = list(argv)
        self.popen = popen
        self.pid = popen.pid
        self.log_path = log_path
        self._log_file = log_file

    def __repr__(self) -> str:
        return f"LabProcess(node={self.node!r}, pid={self.pid}, argv={self.argv!r})"

    @property
    def returncode(self) -> int | None:
        """Exit status once it ended (negative: killed by that signal), else None."""
        return self.popen.poll()

    def alive(self) -> bool:
        """True while the process runs."""
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        """Send sig to the process by PID (no-op once it has ended)."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the process to end and return its status (TimeoutExpired on timeout)."""
        return self.popen.wait(timeout)

    def stop(self, grace: float = STOP_GRACE) -> int:
        """End the process: SIGTERM, then SIGKILL after grace seconds; return its status."""
        self.signal(signal.SIGTERM)
        try:
            rc = self.popen.wait(grace)
        except subprocess.TimeoutExpired:
            log.warning(
                "lab.process.kill node=%s pid=%d argv0=%s", self.node, self.pid, self.argv[0]
            )
            self.signal(signal.SIGKILL)
            rc = self.popen.wait()
        self._log_file.close()
        return rc

    def output(self) -> str:
        """The process's stdout and stderr so far."""
        self._log_file.flush()
        return self.log_path.read_text(errors="replace")


_LIVE: dict[int, Lab] = {}
_LIVE_LOCK = threading.Lock()


def _teardown_live() -> None:
    """Tear down every lab still up (atexit)."""
    with _LIVE_LOCK:
        labs = list(_LIVE.values())
    for lab in labs:
        lab.teardown()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    """Turn SIGTERM into KeyboardInterrupt so `with Lab()`/fixtures unwind and tear down."""
    raise KeyboardInterrupt(f"signal {signum}")


atexit.register(_teardown_live)


def sweep_stale() -> list[str]:
    """Tear down labs whose owning process died without teardown (SIGKILL, OOM); return prefixes.

    Only labs whose work dir names an owner PID that no longer runs are touched, so labs of
    other test runs on the same machine are safe.
    """
    swept: list[str] = []
    for meta in WORK_ROOT.glob("hapair-lab-*/lab.json"):
        try:
            info = json.loads(meta.read_text())
            prefix, owner = str(info["prefix"]), int(info["owner_pid"])
        except (OSError, ValueError, KeyError):
            continue
        if info.get("kept") or _alive(owner):
            continue
        stale = Lab(prefix=prefix)
        stale._up = True  # adopt it: teardown works from the namespace names alone
        stale.teardown()
        swept.append(prefix)
        log.warning("lab.sweep prefix=%s owner_pid=%d", prefix, owner)
    return swept


def _random_prefix() -> str:
    """Return "hp" + 5 hex digits: "<prefix>-client" stays within 15 characters."""
    return "hp" + secrets.token_hex(3)[:5]


class Lab(Managed):
    """The two-node lab. Use as `with Lab() as lab:` or call `up()` and `teardown()`."""

    def __init__(self, *, prefix: str | None = None, keep: bool | None = None) -> None:
        # "hp" + 5 hex: the longest interface name, "<prefix>-client", stays within 15 chars.
        self.prefix = prefix or _random_prefix()
        self._prefix_given = prefix is not None
        if len(f"{self.prefix}-client") > 15:
            raise LabError(f"lab prefix too long for interface names: {self.prefix!r}")
        # Keep the work dir (logs, probe output) after teardown; HAPAIR_LAB_KEEP=1 sets it.
        self.keep = keep if keep is not None else os.environ.get("HAPAIR_LAB_KEEP") == "1"
        self.workdir = WORK_ROOT / f"hapair-lab-{self.prefix}"
        self.python = sys.executable
        self.nodes: dict[str, Node] = {}
        self.processes: list[LabProcess] = []
        self._faults: list[Fault] = []
        self._made_dirs: list[Path] = []
        self._fault_seq = 0
        self._up = False
        # Set by teardown (unless kept): the work dir is gone and is not made again; the lock
        # keeps a thread's node_dir from racing the removal.
        self._torn_down = False
        self._dirs_lock = threading.Lock()
        self.up_seconds = 0.0
        self.down_seconds = 0.0

    # -- names -------------------------------------------------------------------------------

    def ns(self, node: str) -> str:
        """Namespace name of a node ("a", "b", "client", "t1".."t3" or "sw")."""
        if node != SWITCH and node not in NODES:
            raise LabError(f"unknown lab node {node!r}; nodes are {', '.join((*NODES, SWITCH))}")
        return f"{self.prefix}-{node}"

    @property
    def bridge(self) -> str:
        """Bridge name inside the switch namespace."""
        return f"{self.prefix}-br"

    def port(self, node: str) -> str:
        """Switch-side veth name of node's LAN port."""
        self.ns(node)
        return f"{self.prefix}-{node}"

    def mac(self, node: str) -> str:
        """MAC of node's lan0."""
        return self.nodes[node].mac

    def namespaces(self) -> list[str]:
        """Lab namespaces that exist now (also those of a half-built lab)."""
        out = subprocess.run(
            ["ip", "netns", "list"], capture_output=True, text=True, check=False
        ).stdout
        names = [line.split()[0] for line in out.splitlines() if line.strip()]
        return [n for n in names if n.startswith(f"{self.prefix}-")]

    # -- life cycle --------------------------------------------------------------------------

    def start(self) -> Lab:
        """Managed's name for up()."""
        return self.up()

    def stop(self) -> None:
        """Managed's name for teardown()."""
        self.teardown()

    def up(self) -> Lab:
        """Build the lab; on any failure tear down what was built and raise LabError."""
        if self._up:
            return self
        if os.geteuid() != 0:
            raise LabError("the lab needs root (network namespaces, nftables, raw sockets)")
        sweep_stale()
        self._claim()
        t0 = time.monotonic()
        with _LIVE_LOCK:
            _LIVE[id(self)] = self
        self._up = True
        main = threading.current_thread() is threading.main_thread()
        if main and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _on_sigterm)
        try:
            self._build()
        except BaseException as e:
            self.teardown()
            if isinstance(e, LabError | subprocess.SubprocessError | OSError):
                raise LabError(f"lab.up.failed prefix={self.prefix}: {e}") from e
            raise
        self.up_seconds = time.monotonic() - t0
        log.info("lab.up prefix=%s seconds=%.3f", self.prefix, self.up_seconds)
        return self

    def _ip(self, node: str, *args: str) -> None:
        """Run `ip -n NS args`, raising LabError on failure."""
        self._host(["ip", "-n", self.ns(node), *args])

    def _host(self, argv: Sequence[str]) -> str:
        """Run a host command (ip/nft/sysctl) and return stdout; raise LabError on failure."""
        p = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
        if p.returncode != 0:
            raise LabError(f"lab.cmd.failed argv={' '.join(argv)} stderr={p.stderr.strip()!r}")
        return p.stdout

    def _claim(self) -> None:
        """Create the work dir, exclusively: it is this lab's claim on its prefix. A random
        prefix another lab holds (its dir or its namespaces) is drawn again; nothing is built
        or torn down before the claim, so another lab's dir is never touched."""
        for _ in range(8):
            if not any(self.namespaces()):
                try:
                    self.workdir.mkdir(mode=0o755)
                    return
                except FileExistsError:
                    pass
            if self._prefix_given:
                raise LabError(f"lab prefix {self.prefix} is in use (its dir or namespaces)")
            self.prefix = _random_prefix()
            self.workdir = WORK_ROOT / f"hapair-lab-{self.prefix}"
        raise LabError("no free lab prefix after 8 draws")

    def _build(self) -> None:
        (self.workdir / "lab.json").write_text(
            json.dumps({"prefix": self.prefix, "owner_pid": os.getpid()}) + "\n"
        )
        for node in (SWITCH, *NODES):
            self._host(["ip", "netns", "add", self.ns(node)])
            sysctls = _SYSCTL_SWITCH if node == SWITCH else _SYSCTL_NODE
            self._host(["ip", "netns", "exec", self.ns(node), "sysctl", "-q", "-w", *sysctls])
            self._ip(node, "link", "set", "lo", "up")
        self._ip(
            SWITCH, "link", "add", self.bridge, "type", "bridge",
            "stp_state", "0", "forward_delay", "0", "mcast_snooping", "0",
        )  # fmt: skip
        self._ip(SWITCH, "link", "set", self.bridge, "up")
        for node in NODES:
            port = self.port(node)
            # Both ends are created inside namespaces: nothing ever appears on the host.
            self._ip(
                SWITCH, "link", "add", port, "type", "veth",
                "peer", "name", LAN_IFACE, "netns", self.ns(node),
            )  # fmt: skip
            self._ip(SWITCH, "link", "set", port, "master", self.bridge, "up")
            self._ip(node, "addr", "add", f"{IPV4[node]}/{LAN4_PREFIX}", "dev", LAN_IFACE)
            self._ip(node, "addr", "add", f"{IPV6[node]}/{LAN6_PREFIX}", "dev", LAN_IFACE, "nodad")
            self._ip(node, "link", "set", LAN_IFACE, "up")
        self._ip("a", "link", "add", HB_IFACE, "type", "veth", "peer", "name", HB_IFACE,
                 "netns", self.ns("b"))  # fmt: skip
        for node in HA_NODES:
            self._ip(node, "addr", "add", f"{HB4[node]}/{HB4_PREFIX}", "dev", HB_IFACE)
            self._ip(node, "link", "set", HB_IFACE, "up")
        for node in NODES:
            info = json.loads(
                self._host(["ip", "-n", self.ns(node), "-j", "link", "show", LAN_IFACE])
            )
            self.nodes[node] = Node(
                name=node,
                ns=self.ns(node),
                port=self.port(node),
                ipv4=IPV4[node],
                ipv6=IPV6[node],
                mac=info[0]["address"],
                hb=HB4.get(node),
            )

    def teardown(self) -> None:
        """End every lab process by PID and delete the namespaces; safe to call again."""
        if not self._up:
            return
        t0 = time.monotonic()
        self._stop_processes()
        for ns in self.namespaces():
            self._kill_ns(ns)
        for ns in self.namespaces():
            p = subprocess.run(
                ["ip", "netns", "del", ns], check=False, capture_output=True, text=True
            )
            if p.returncode != 0:
                log.error("lab.teardown.netns_del_failed ns=%s stderr=%s", ns, p.stderr.strip())
        self._remove_made_dirs()
        if not self.keep:
            # A checker thread still polling a node's status must not make the dir again.
            with self._dirs_lock:
                self._torn_down = True
                shutil.rmtree(self.workdir, ignore_errors=True)
        elif self.workdir.is_dir():
            meta = {"prefix": self.prefix, "owner_pid": os.getpid(), "kept": True}
            (self.workdir / "lab.json").write_text(json.dumps(meta) + "\n")
        with _LIVE_LOCK:
            _LIVE.pop(id(self), None)
        self._up = False
        self.down_seconds = time.monotonic() - t0
        left = self.namespaces()
        log.info(
            "lab.down prefix=%s seconds=%.3f left=%s", self.prefix, self.down_seconds, left or "-"
        )

    def _stop_processes(self, grace: float = STOP_GRACE) -> None:
        """SIGTERM every lab process at once, then SIGKILL what outlives grace."""
        for p in self.processes:
            p.signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for p in self.processes:
            try:
                p.popen.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("lab.process.kill node=%s pid=%d argv0=%s", p.node, p.pid, p.argv[0])
                p.signal(signal.SIGKILL)
                p.popen.wait()
            p.stop(0)  # closes the log file; the process has ended

    def _ns_pids(self, ns: str) -> list[int]:
        out = subprocess.run(
            ["ip", "netns", "pids", ns], capture_output=True, text=True, check=False
        ).stdout
        return [int(x) for x in out.split() if x.isdigit()]

    def _kill_ns(self, ns: str, timeout: float = 5.0) -> None:
        """SIGKILL every process inside ns by PID and wait until they are gone."""
        pids = self._ns_pids(ns)
        for pid in pids:
            log.info("lab.kill ns=%s pid=%d", ns, pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for p in self.processes:
                p.popen.poll()  # reap our own children so they stop counting as alive
            if not any(_alive(pid) for pid in pids):
                return
            time.sleep(0.01)
        log.error("lab.kill.timeout ns=%s pids=%s", ns, [p for p in pids if _alive(p)])

    def _remove_made_dirs(self) -> None:
        """Remove bind-mount targets the lab had to create, if empty and mounted nowhere."""
        mounted: set[str] = set()
        for info in Path("/proc").glob("[0-9]*/mountinfo"):
            with contextlib.suppress(OSError):
                mounted.update(line.split()[4] for line in info.read_text().splitlines())
        for d in reversed(self._made_dirs):
            if str(d) not in mounted:
                with contextlib.suppress(OSError):
                    d.rmdir()
        self._made_dirs.clear()

    # -- running things ----------------------------------------------------------------------

    def run(
        self,
        node: str,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float = 30.0,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run argv inside node's namespace and return its result (text, captured)."""
        p = subprocess.run(
            ["ip", "netns", "exec", self.ns(node), *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            check=False,
        )
        if check and p.returncode != 0:
            raise LabCommandError(node, argv, p)
        return p

    def spawn(
        self,
        node: str,
        argv: Sequence[str],
        *,
        log_path: Path | str | None = None,
        env: Mapping[str, str] | None = None,
        binds: Mapping[str, Path | str] | None = None,
        cwd: Path | str | None = None,
    ) -> LabProcess:
        """Start argv in node (background); teardown ends it by PID.

        stdout and stderr go to log_path (default: a file in the work dir). env is merged over
        this process's environment. binds maps a path the process sees to a host directory:
        the process then runs in its own mount namespace with those bind mounts, so two nodes
        can each have their own /srv. A missing mount point is created, and removed at teardown.
        """
        if not self._up:
            raise LabError("lab is not up")
        ns = self.ns(node)
        wrapped: list[str] = ["ip", "netns", "exec", ns]
        if binds:
            pairs: list[str] = []
            for target, source in binds.items():
                src, dst = Path(source), Path(target)
                if not src.is_dir():
                    raise LabError(f"bind source is not a directory: {src}")
                if not dst.is_absolute():
                    raise LabError(f"bind target must be absolute: {dst}")
                self._make_mount_point(dst)
                pairs += [str(src), str(dst)]
            # `ip netns exec` and `unshare` both exec, so the recorded PID is argv's own.
            script = (
                'set -e; while [ "$1" != -- ]; do mount --bind "$1" "$2"; shift 2; done; '
                'shift; exec "$@"'
            )
            wrapped += [
                "unshare", "--mount", "--propagation", "private", "--",
                "sh", "-c", script, "lab-binds", *pairs, "--",
            ]  # fmt: skip
        wrapped += list(argv)
        n = len(self.processes) + 1
        path = Path(log_path) if log_path else self.workdir / f"{node}-{n}-{Path(argv[0]).name}.log"
        log_file = open(path, "ab")  # noqa: SIM115  closed by LabProcess.stop
        full_env = {**os.environ, **env} if env else None
        popen = subprocess.Popen(
            wrapped,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=cwd,
            # Own session: a ^C on the test's terminal reaches the test, which tears down.
            start_new_session=True,
        )
        proc = LabProcess(node, argv, popen, path, log_file)
        self.processes.append(proc)
        log.info("lab.spawn node=%s pid=%d argv=%s log=%s", node, proc.pid, " ".join(argv), path)
        return proc

    def _make_mount_point(self, dst: Path) -> None:
        missing: list[Path] = []
        p = dst
        while not p.exists():
            missing.append(p)
            p = p.parent
        for d in reversed(missing):
            d.mkdir()
            self._made_dirs.append(d)

    def node_dir(self, node: str, *parts: str) -> Path:
        """A directory for node under the work dir (created), e.g. its run_dir or state_dir.
        After teardown only the path: a caller looking for a log or a status file then must
        not leave an empty work dir behind in /tmp."""
        self.ns(node)
        d = self.workdir.joinpath(node, *parts)
        with self._dirs_lock:
            if not self._torn_down:
                d.mkdir(parents=True, exist_ok=True)
        return d

    def ping(self, src: str, dst: str, *, count: int = 1, timeout: float = 1.0) -> bool:
        """True if dst (address) answers an ICMP echo from node src within timeout."""
        p = self.run(
            src,
            ["ping", "-n", "-q", "-c", str(count), "-i", "0.05", "-W", str(timeout), dst],
            check=False,
            timeout=timeout * count + 10,
        )
        return p.returncode == 0

    def pids(self, node: str) -> list[int]:
        """PIDs of every process inside node's namespace."""
        return self._ns_pids(self.ns(node))

    def garp(self, node: str, address: str, *, iface: str = LAN_IFACE, count: int = 1) -> None:
        """Announce an IPv4 address from node's iface MAC (gratuitous ARP, request form)."""
        agent = str(Path(__file__).with_name("agent.py"))
        self.run(node, [self.python, agent, "garp", iface, address, "--count", str(count)])

    def flush_neigh(self, node: str, iface: str = LAN_IFACE) -> None:
        """Forget node's neighbour (ARP/NDP) entries on iface."""
        self.run(node, ["ip", "neigh", "flush", "dev", iface])

    # -- faults ------------------------------------------------------------------------------

    def set_link(self, link: str, up: bool) -> None:
        """Set a link up or down: "hb" (both ends of hb0) or "lan-<node>" (its switch port)."""
        state = "up" if up else "down"
        if link == "hb":
            for node in HA_NODES:
                self._ip(node, "link", "set", HB_IFACE, state)
        elif link.startswith("lan-"):
            self._ip(SWITCH, "link", "set", self.port(link[4:]), state)
        else:
            raise LabError(f"unknown link {link!r}; links are 'hb' and 'lan-<node>'")
        log.info("lab.link link=%s state=%s", link, state)

    def kill_node(self, node: str) -> None:
        """Crash node as a power loss looks from the LAN, then end every process in it.

        Its links go down first, at one instant, from inside it (one `ip -batch`): whatever
        its processes do next reaches nobody. Killing them first would leave its kernel
        answering pings and ARP for a VIP, with the daemons dead, for as long as the link
        commands take (100-300 ms under load): a short hang, which the peer's VIP guard
        rightly reads as "still served". Then every process is stopped (parents first, so
        none sees another die and says goodbye) and SIGKILLed, and its switch port goes down.
        """
        links = [LAN_IFACE, HB_IFACE] if node in HA_NODES else [LAN_IFACE]
        self.run(node, ["ip", "-batch", "-"], input="".join(f"link set {i} down\n" for i in links))
        self.freeze(node)
        self._kill_ns(self.ns(node))
        self._ip(SWITCH, "link", "set", self.port(node), "down")
        log.info("lab.kill_node node=%s", node)

    def freeze(self, node: str) -> list[int]:
        """SIGSTOP every process the lab started in node and all their descendants, by PID.

        Parents first, then the children found under each: a process cannot start a child it
        is not yet stopped to miss. Links and kernel stay up (a hung node). Returns the PIDs
        stopped, for thaw().
        """
        stopped: list[int] = []
        todo = [p.pid for p in self.processes if p.node == node and p.alive()]
        while todo:
            pid = todo.pop(0)
            if pid in stopped:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)
                todo += _children(pid)
        log.info("lab.freeze node=%s pids=%s", node, stopped)
        return stopped

    def thaw(self, pids: Sequence[int]) -> None:
        """SIGCONT the PIDs freeze() stopped."""
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        log.info("lab.thaw pids=%s", list(pids))

    def revive_node(self, node: str) -> None:
        """Undo kill_node's links (processes stay dead: start them again)."""
        self._ip(SWITCH, "link", "set", self.port(node), "up")
        self._ip(node, "link", "set", LAN_IFACE, "up")
        if node in HA_NODES:
            self._ip(node, "link", "set", HB_IFACE, "up")
        log.info("lab.revive_node node=%s", node)

    def _add_fault(self, node: str, rule: str, iface: str | None) -> Fault:
        self._fault_seq += 1
        chain = f"f{self._fault_seq}"
        if iface is not None:
            devices = [iface]
        else:
            devices = [LAN_IFACE, HB_IFACE] if node in HA_NODES else [LAN_IFACE]
        script = faults.chain_script(chain, devices, rule)
        p = self.run(node, ["nft", "-f", "-"], input=script, check=False)
        if p.returncode != 0:
            raise LabError(f"lab.fault.failed node={node} rule={rule!r}: {p.stderr.strip()}")
        fault = Fault(node=node, chain=chain, rule=rule)
        self._faults.append(fault)
        log.info("lab.fault.add node=%s devices=%s rule=%r", node, ",".join(devices), rule)
        return fault

    def block(
        self,
        node: str,
        *,
        proto: str | None = "udp",
        port: int | None = None,
        src: str | None = None,
        arp: bool = False,
        iface: str | None = None,
    ) -> Fault:
        """Silently drop matching frames arriving at node (all its links, or only iface).

        proto "udp"/"tcp"/"icmp" or None (any); port (destination); src (IPv4/IPv6 source);
        arp=True drops all ARP instead. Drops on ingress only: block both nodes for a
        symmetric partition.
        """
        expr = faults.match(proto=None if arp else proto, port=port, src=src, arp=arp)
        return self._add_fault(node, faults.drop_rule(expr), iface)

    def loss(
        self,
        node: str,
        percent: int,
        *,
        iface: str | None = None,
        proto: str | None = "udp",
        port: int | None = None,
    ) -> Fault:
        """Drop percent% of matching frames arriving at node, at random."""
        expr = faults.match(proto=proto, port=port)
        return self._add_fault(node, faults.drop_rule(expr, percent), iface)

    def unblock(self, fault: Fault) -> None:
        """Remove a fault installed by block() or loss()."""
        self.run(fault.node, ["nft", "delete", "chain", "netdev", faults.TABLE, fault.chain])
        self._faults.remove(fault)
        log.info("lab.fault.remove node=%s rule=%r", fault.node, fault.rule)

    # -- description -------------------------------------------------------------------------

    def topology(self) -> str:
        """A human-readable table of the lab: namespaces, addresses, MACs, links."""
        lines = [f"lab {self.prefix}: switch ns {self.ns(SWITCH)} bridge {self.bridge}"]
        for n in self.nodes.values():
            hb = f"  {HB_IFACE} {n.hb}/{HB4_PREFIX}" if n.hb else ""
            lines.append(
                f"  {n.name:<6} ns={n.ns:<14} {LAN_IFACE} {n.ipv4}/{LAN4_PREFIX} "
                f"{n.ipv6}/{LAN6_PREFIX} mac={n.mac} port={n.port}{hb}"
            )
        lines.append(f"  work dir {self.workdir}")
        return "\n".join(lines)
