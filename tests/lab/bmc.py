"""A lab BMC: OpenIPMI's ipmi_sim on loopback whose power-off runs an action the test supplies.

`SimBmc` writes a lan.conf, a cmds.emu and a chassis-control script into a private directory,
starts `ipmi_sim` on 127.0.0.1 with a free UDP port, and ends it by PID. The chassis script keeps
the power state in a file, logs every call, and on "set power 0" runs the given command (with
HAPAIR_BMC_PID set to the simulator's PID, so an action can freeze the BMC mid-session).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.lab.lab import Lab
from tests.lab.managed import Managed

log = logging.getLogger(__name__)

IPMI_SIM = "ipmi_sim"

# Runs under the simulator; argv is "get power" or "set power 0|1". ipmi_sim parses "power:N".
CHASSIS_SCRIPT = """\
import json, os, subprocess, sys
here = os.path.dirname(os.path.abspath(__file__))
cfg = json.load(open(os.path.join(here, "chassis.json")))
state = os.path.join(here, "power")
with open(os.path.join(here, "calls.log"), "a") as f:
    f.write(" ".join(sys.argv[1:]) + "\\n")
args = sys.argv[1:]
if args[:1] == ["get"]:
    try:
        value = open(state).read().strip() or "1"
    except FileNotFoundError:
        value = "1"
    print("power:" + value)
elif args[:2] == ["set", "power"] and len(args) > 2:
    with open(state, "w") as f:
        f.write(args[2])
    cmd = cfg.get("on_power_off") if args[2] == "0" else cfg.get("on_power_on")
    if cmd:
        # ipmi_sim runs this through a shell, so the parent is not the simulator.
        bmc_pid = open(os.path.join(here, "bmc.pid")).read().strip()
        env = dict(os.environ, HAPAIR_BMC_PID=bmc_pid)
        subprocess.run(cmd, env=env, timeout=30, check=False)
"""


def power_off_node_argv(lab: Lab, node: str) -> list[str]:
    """A power-off action that crashes a lab node as Lab.kill_node does, and waits for it.

    Its LAN and heartbeat links go down first (one `ip -batch`), then every process in the
    node is SIGKILLed and its switch port goes down; the command returns only once no process
    is left in the node (a BMC reports "off" after that).
    """
    ns = lab.ns(node)
    script = (
        f"printf 'link set lan0 down\\nlink set hb0 down\\n' | ip -n {ns} -batch -; "
        f"for p in $(ip netns pids {ns}); do kill -KILL $p; done; "
        f"ip -n {lab.ns('sw')} link set {lab.port(node)} down; "
        f'i=0; while [ -n "$(ip netns pids {ns})" ] && [ $i -lt 200 ]; do '
        "sleep 0.02; i=$((i+1)); done"
    )
    return ["sh", "-c", script]


def free_udp_port() -> int:
    """Return a UDP port on 127.0.0.1 that nothing is bound to right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _udp_bound(port: int, pid: int | str = "self") -> bool:
    """True if some socket is bound to UDP `port` in the network namespace of `pid`."""
    want = f":{port:04X}"
    for line in Path(f"/proc/{pid}/net/udp").read_text().splitlines()[1:]:
        local = line.split()[1]
        if local.endswith(want):
            return True
    return False


class SimBmc(Managed):
    """One ipmi_sim BMC on loopback; a context manager that always cleans up."""

    def __init__(
        self,
        *,
        user: str = "admin",
        password: str = "lab-secret",
        on_power_off: list[str] | None = None,
        on_power_on: list[str] | None = None,
        power_on: bool = True,
        netns: str | None = None,
        address: str = "127.0.0.1",
    ) -> None:
        # netns/address: run the simulator in a lab namespace on one of its addresses, so
        # daemons inside the lab nodes reach it over the lab LAN (loopback is per namespace).
        self.netns = netns
        self.address = address
        self.port = free_udp_port()
        self.user = user
        self.password = password
        self.dir = Path(tempfile.mkdtemp(prefix="hapair-bmc-"))
        self._on_off = on_power_off
        self._on_on = on_power_on
        self._initial = "1" if power_on else "0"
        self.proc: subprocess.Popen[bytes] | None = None

    # -- files ---------------------------------------------------------------------------
    def _write_files(self) -> None:
        d = self.dir
        (d / "state").mkdir()
        (d / "chassis.json").write_text(
            json.dumps({"on_power_off": self._on_off, "on_power_on": self._on_on})
        )
        script = d / "chassis"
        script.write_text(f"#!{sys.executable}\n" + CHASSIS_SCRIPT)
        script.chmod(0o755)
        (d / "power").write_text(self._initial)
        auths = "none md2 md5 straight"
        (d / "lan.conf").write_text(
            f'name "hapair-lab"\n'
            f"set_working_mc 0x20\n"
            f"  startlan 1\n"
            f"    addr {self.address} {self.port}\n"
            f"    priv_limit admin\n"
            f"    allowed_auths_callback {auths}\n"
            f"    allowed_auths_user {auths}\n"
            f"    allowed_auths_operator {auths}\n"
            f"    allowed_auths_admin {auths}\n"
            f"    guid a123456789abcdefa123456789abcdef\n"
            f"  endlan\n"
            f'  chassis_control "{script}"\n'
            f'  user 2 true "{self.user}" "{self.password}" admin 10 {auths}\n'
        )
        # mc_setbmc first: without it ipmi_sim exits 1 with "No bmc_ipmb specified".
        (d / "cmds.emu").write_text(
            "mc_setbmc 0x20\n"
            "mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\n"
            "sel_enable 0x20 1000 0x0a\n"
            "mc_enable 0x20\n"
        )

    # -- lifecycle ----------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> SimBmc:
        """Start ipmi_sim and wait until its LAN port is bound."""
        self._write_files()
        out = (self.dir / "ipmi_sim.log").open("wb")
        # `ip netns exec` execs in place: the PID stays the simulator's.
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        self.proc = subprocess.Popen(
            [*prefix, IPMI_SIM, "-c", "lan.conf", "-f", "cmds.emu", "-s", "state", "-n"],
            cwd=self.dir,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        out.close()
        (self.dir / "bmc.pid").write_text(str(self.proc.pid))
        deadline = time.monotonic() + timeout
        while not _udp_bound(self.port, self.proc.pid):
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"ipmi_sim exited {self.proc.returncode}: "
                    + (self.dir / "ipmi_sim.log").read_text()
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"ipmi_sim did not bind 127.0.0.1:{self.port}")
            time.sleep(0.02)
        log.info("bmc.started pid=%d port=%d dir=%s", self.proc.pid, self.port, self.dir)
        return self

    @property
    def pid(self) -> int:
        """PID of the running simulator."""
        assert self.proc is not None
        return self.proc.pid

    def freeze(self) -> None:
        """Stop the simulator (SIGSTOP): it keeps its port but answers nothing."""
        os.kill(self.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        """Let a frozen simulator run again."""
        os.kill(self.pid, signal.SIGCONT)

    def stop(self) -> None:
        """End the simulator by PID and remove every file it used."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            # A stopped process does not act on SIGTERM until continued.
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGCONT)
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- what happened ------------------------------------------------------------------
    def power(self) -> str:
        """The simulated chassis power: "on" or "off"."""
        return "off" if (self.dir / "power").read_text().strip() == "0" else "on"

    def set_power(self, on: bool) -> None:
        """Set the simulated power directly, as if someone pressed the button."""
        (self.dir / "power").write_text("1" if on else "0")

    def calls(self) -> list[str]:
        """Every chassis-control call the BMC made, oldest first ("get power", "set power 0")."""
        path = self.dir / "calls.log"
        return path.read_text().splitlines() if path.exists() else []

    def write_password_file(self, password: str | None = None, mode: int = 0o600) -> Path:
        """Write a password file for this BMC (its own password unless given) and return it."""
        path = self.dir / f"password-{mode:o}"
        path.write_text((self.password if password is None else password) + "\n")
        path.chmod(mode)
        return path
