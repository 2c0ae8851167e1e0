"""A witness for the lab pair, in its own namespace behind a router, apart from the heartbeat link.

    <prefix>-wr (router, forwarding)
      wa  <-veth-> a:wit0       203.0.113.1/30  - 203.0.113.2/30
      wb  <-veth-> b:wit0       203.0.113.5/30  - 203.0.113.6/30
      wc  <-veth-> client:wit0  203.0.113.13/30 - 203.0.113.14/30
      ww  <-veth-> <prefix>-w:wit0   203.0.113.9/30 - 203.0.113.10/30 (the witness)

Each of a, b and the client reaches only the witness's address through the router (a host
route), so the witness path shares nothing with the direct heartbeat link or the LAN.
`cut(node)` sets the router's end of that node's link down. The namespaces carry the lab's
prefix: the lab's teardown kills whatever still runs in them and deletes them; the witness
process is started and stopped here by PID.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Final

from tests.lab.lab import Lab, LabProcess, wait_until

WITNESS_ADDRESS: Final = "203.0.113.10"
WITNESS_PORT: Final = 7406
IFACE: Final = "wit0"
# Router side name, router address, node address (/30 each), by node.
LINKS: Final = {
    "a": ("wa", "203.0.113.1", "203.0.113.2"),
    "b": ("wb", "203.0.113.5", "203.0.113.6"),
    "client": ("wc", "203.0.113.13", "203.0.113.14"),
}
ROUTER_TO_WITNESS: Final = ("ww", "203.0.113.9")
SYSCTLS: Final = [
    "net.ipv4.conf.all.rp_filter=0",
    "net.ipv4.conf.default.rp_filter=0",
    "net.ipv6.conf.all.disable_ipv6=1",
    "net.ipv6.conf.default.disable_ipv6=1",
]


def _ip(*args: str) -> None:
    p = subprocess.run(["ip", *args], capture_output=True, text=True, check=False, timeout=30)
    if p.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {p.stderr.strip()}")


class WitnessLab:
    """The witness namespace, its router, the witness file and the witness process."""

    def __init__(self, lab: Lab, *, max_lease: float = 3.0) -> None:
        self.lab = lab
        self.router = f"{lab.prefix}-wr"
        self.ns = f"{lab.prefix}-w"
        self.max_lease = max_lease
        self.etc = lab.workdir / "etc"
        self.etc.mkdir(exist_ok=True)
        self.key = self.etc / "witness.key"
        self.run_dir = lab.workdir / "witness-run"
        self.config = self.etc / "witness.toml"
        self.proc: LabProcess | None = None
        self._starts = 0
        self._build()
        self._files()

    # -- set-up ---------------------------------------------------------------------------

    def _build(self) -> None:
        for ns in (self.router, self.ns):
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", *SYSCTLS], check=True)
        subprocess.run(
            ["ip", "netns", "exec", self.router, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"],
            check=True,
        )
        for node, (port, router_ip, node_ip) in LINKS.items():
            ns = self.lab.ns(node)
            _ip("-n", self.router, "link", "add", port, "type", "veth", "peer", "name", IFACE,
                "netns", ns)  # fmt: skip
            _ip("-n", self.router, "addr", "add", f"{router_ip}/30", "dev", port)
            _ip("-n", self.router, "link", "set", port, "up")
            _ip("-n", ns, "addr", "add", f"{node_ip}/30", "dev", IFACE)
            _ip("-n", ns, "link", "set", IFACE, "up")
            _ip("-n", ns, "route", "add", f"{WITNESS_ADDRESS}/32", "via", router_ip)
        port, router_ip = ROUTER_TO_WITNESS
        _ip("-n", self.router, "link", "add", port, "type", "veth", "peer", "name", IFACE,
            "netns", self.ns)  # fmt: skip
        _ip("-n", self.router, "addr", "add", f"{router_ip}/30", "dev", port)
        _ip("-n", self.router, "link", "set", port, "up")
        _ip("-n", self.ns, "addr", "add", f"{WITNESS_ADDRESS}/30", "dev", IFACE)
        _ip("-n", self.ns, "link", "set", IFACE, "up")
        _ip("-n", self.ns, "route", "add", "default", "via", router_ip)

    def _files(self) -> None:
        if not self.key.exists():
            self.key.write_bytes(os.urandom(32).hex().encode() + b"\n")
            self.key.chmod(0o600)
        self.config.write_text(
            "[witness]\n"
            f'address = "{WITNESS_ADDRESS}"\nport = {WITNESS_PORT}\nrun_dir = "{self.run_dir}"\n\n'
            "[[cluster]]\n"
            f'name = "lab"\nnodes = ["a", "b"]\nkey_file = "{self.key}"\n'
            f'max_lease = "{self.max_lease:g}s"\n'
        )

    def cluster_section(self, lease: float) -> str:
        """Return the cluster file's [witness] table for the lab pair."""
        return (
            f'\n[witness]\naddress = "{WITNESS_ADDRESS}"\nport = {WITNESS_PORT}\n'
            f'key_file = "{self.key}"\nlease = "{lease:g}s"\n'
        )

    # -- the witness process --------------------------------------------------------------

    def start(self) -> None:
        """Start `takeover witness run` in the witness namespace; wait for its status file."""
        self._starts += 1
        log_path = self.lab.workdir / f"witness-{self._starts}.log"
        argv = [sys.executable, "-m", "takeover", "witness", "-c", str(self.config), "run"]
        log_file = open(log_path, "ab")  # noqa: SIM115  closed by LabProcess.stop
        popen = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, *argv],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )
        self.proc = LabProcess("witness", argv, popen, log_path, log_file)
        if not wait_until(lambda: self.status() is not None, 15, 0.05):
            raise RuntimeError(f"witness did not start: {self.proc.output()}")

    def kill(self) -> None:
        """SIGKILL the witness by PID (a crash: its status file stays behind)."""
        assert self.proc is not None
        self.proc.signal(9)
        self.proc.wait(10)
        self.proc.stop()
        (self.run_dir / "witness.json").unlink(missing_ok=True)

    def stop(self) -> None:
        """Stop the witness by PID if it runs."""
        if self.proc is not None and self.proc.alive():
            self.proc.stop()

    def status(self) -> dict[str, Any] | None:
        """`takeover witness status --json` as a dict, or None when it is not running."""
        argv = [sys.executable, "-m", "takeover", "witness", "-c", str(self.config), "status",
                "--json"]  # fmt: skip
        p = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
        if p.returncode != 0:
            return None
        import json  # noqa: PLC0415

        doc: dict[str, Any] = json.loads(p.stdout)
        return doc

    def log(self) -> str:
        """Everything every witness run logged."""
        return "".join(
            p.read_text(errors="replace") for p in sorted(self.lab.workdir.glob("witness-*.log"))
        )

    # -- faults ---------------------------------------------------------------------------

    def cut(self, node: str, up: bool = False) -> None:
        """Cut (or with up=True restore) node's path to the witness at the router."""
        _ip("-n", self.router, "link", "set", LINKS[node][0], "up" if up else "down")

    def capture_request(self, source: str, timeout: float = 10.0) -> bytes:
        """Return one witness request as it arrived from `source` (a raw copy, read in the
        witness namespace: the witness still gets the original)."""
        script = (
            "import socket,sys,time\n"
            "s=socket.socket(socket.AF_INET,socket.SOCK_RAW,socket.IPPROTO_UDP)\n"
            f"s.settimeout({timeout})\n"
            "while True:\n"
            "    d,a=s.recvfrom(4096)\n"
            "    h=(d[0]&15)*4\n"
            f"    if a[0]=={source!r} and int.from_bytes(d[h+2:h+4],'big')=={WITNESS_PORT}:\n"
            "        print(d[h+8:].hex()); break\n"
        )
        p = subprocess.run(
            ["ip", "netns", "exec", self.ns, sys.executable, "-c", script],
            capture_output=True, text=True, check=True, timeout=timeout + 10,
        )  # fmt: skip
        return bytes.fromhex(p.stdout.strip())

    def send_from(self, node: str, payloads: list[bytes]) -> None:
        """Send each payload to the witness from a lab node (UDP, its witness link)."""
        script = (
            "import socket,sys\n"
            "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
            "for h in sys.argv[1:]:\n"
            f"    s.sendto(bytes.fromhex(h),({WITNESS_ADDRESS!r},{WITNESS_PORT}))\n"
        )
        self.lab.run(node, [sys.executable, "-c", script, *(p.hex() for p in payloads)])


def read_key(path: Path) -> bytes:
    """The witness key as the daemons read it."""
    return path.read_bytes().strip()
