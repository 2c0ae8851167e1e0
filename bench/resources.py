"""`make bench-resources`: a service group moving on a crash, hapair against Pacemaker.

    python -m bench.resources [--runs N] [--tools hapair,pacemaker]

One lab per run. Both tools run the same group with the same Debian agents, in the same
order: `ocf:heartbeat:Filesystem` (an ext4 image on a loop device, the lab's stand-in for
shared storage: attached once on the host, mounted by the active node only), the VIP, and a
web server (`ocf:heartbeat:anything` running `python3 -m http.server`) serving index.html from
that file system. hapair moves the VIP itself; Pacemaker 2.1 runs `ocf:heartbeat:IPaddr2` on
Corosync 3 (knet over the LAN and the direct link, `two_node`). Each node's daemons run in a
private mount namespace (never the host's mounts): the Filesystem mount is seen by that node
alone, and each has its own /run/resource-agents (the web server's pid file), as on two
machines; Pacemaker also gets its own /etc/corosync, /var/lib/pacemaker, /var/lib/corosync and
logs per node.

Fencing, on both tools, through the same lab BMCs (one ipmi_sim per node in the client
namespace; a is already crashed when fenced, so a power-off only records "off"): hapair's IPMI
fencing ([node.fencing]), Pacemaker's `stonith:fence_ipmilan` (lanplus, cipher 3: without it
ipmitool first asks for the cipher suites, which ipmi_sim leaves unanswered, ~15 s per call;
stonith-action=off as hapair powers off; each device runs on the other node). Both fence the
crashed node before taking the group over; a run where a's BMC was never powered off does not
count.

Detection: hapair's deadtime and Corosync's token are both TOKEN_S; Corosync then waits its
consensus timeout (1.2 x token) before the new membership, as it always does.

The client fetches http://VIP:8080/index.html every 20 ms (250 ms timeout); node a is crashed
(every process SIGKILLed, its LAN port and direct link down); the outage is the time from the
last answer before the crash to the first after it.

Prints a table (median/min/max outage) and, last, one JSON line:
{"bench": "resources", "outage_s": {"hapair": X, "pacemaker": Y}, "ratio": R}.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import pwd
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.lab.bmc import SimBmc
from tests.lab.disk import ext4_loop
from tests.lab.lab import HB4, IPV4, VIP4, Lab, LabError, wait_until
from tests.lab.pair import HapairPair, PairConfig, takeover_argv
from tests.lab.vm_pair import start_bmcs

log = logging.getLogger("bench.resources")

PORT = 8080
# hapair's deadtime and Corosync's token timeout, seconds.
TOKEN_S = 1.0
HB_INTERVAL_S = 0.2
RA_TMP = "/run/resource-agents"
PAGE = "served by the group\n"

PROBE = r"""
import sys, time, urllib.request
url = sys.argv[1]
while True:
    t = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=0.25) as r:
            ok = r.status == 200
    except Exception:
        ok = False
    print(f"{t:.4f} {time.monotonic():.4f} {int(ok)}", flush=True)
    time.sleep(0.02)
"""


@dataclass
class Shared:
    """What both tools' groups use: the shared disk, its mount point and the nodes' BMCs."""

    device: str
    mnt: Path
    bmcs: dict[str, SimBmc]


def fs_params(shared: Shared) -> dict[str, str]:
    """Return the Filesystem agent's params mounting the shared disk."""
    return {"device": shared.device, "directory": str(shared.mnt), "fstype": "ext4"}


def web_params(www: Path) -> dict[str, str]:
    """Return the `anything` agent's params running the web server on www."""
    return {
        "binfile": "/usr/bin/python3",
        "cmdline_options": f"-m http.server {PORT} --directory {www}",
        "pidfile": f"{RA_TMP}/web.pid",
    }


class HapairGroup:
    """hapair's takeover with the Filesystem + VIP + web group, fencing through the BMCs."""

    name = "hapair"

    def __init__(self, lab: Lab, shared: Shared) -> None:
        self.lab = lab
        params = "\n".join(f'{k} = "{v}"' for k, v in web_params(shared.mnt).items())
        fs = "\n".join(f'{k} = "{v}"' for k, v in fs_params(shared).items())
        extra = f"""
[[resource]]
name = "data"
type = "ocf"
agent = "heartbeat:Filesystem"
monitor_interval = "2s"
[resource.params]
{fs}

[[resource]]
name = "web"
type = "ocf"
agent = "heartbeat:anything"
monitor_interval = "2s"
[resource.params]
{params}

[group]
order = ["data", "vips", "web"]
"""
        factor = round(TOKEN_S / HB_INTERVAL_S)
        fencing = {
            n: f'[node.fencing]\ntype = "ipmi"\naddress = "{b.address}"\nport = {b.port}\n'
            f'user = "{b.user}"\npassword_file = "{b.write_password_file()}"\ntimeout = "8s"\n'
            for n, b in shared.bmcs.items()
        }
        cfg = PairConfig(
            interval=HB_INTERVAL_S, deadtime_factor=factor, extra=extra, node_extra=fencing
        )
        self.pair = HapairPair(lab, cfg)

    def start(self) -> None:
        """Start both daemons, each with its own /run/resource-agents."""
        for node in ("a", "b"):
            self.lab.spawn(
                node,
                takeover_argv(self.pair.cluster, node, "run"),
                log_path=self.lab.workdir / f"takeover-{node}.log",
                env={"PYTHONUNBUFFERED": "1"},
                binds={RA_TMP: self.lab.node_dir(node, "ra")},
            )

    def settled(self) -> bool:
        """Return whether a is active and runs the whole group, b standby."""
        return self.pair.role("a") == "ACTIVE" and self.pair.role("b") == "STANDBY"


def corosync_conf() -> str:
    """Return the lab's corosync.conf: knet on both links, two_node quorum, no crypto."""
    nodes = "".join(
        f"    node {{\n        ring0_addr: {IPV4[n]}\n        ring1_addr: {HB4[n]}\n"
        f"        name: {n}\n        nodeid: {i}\n    }}\n"
        for i, n in ((1, "a"), (2, "b"))
    )
    return (
        "totem {\n    version: 2\n    cluster_name: hapairbench\n    transport: knet\n"
        f"    token: {round(TOKEN_S * 1000)}\n    crypto_cipher: none\n    crypto_hash: none\n}}\n"
        f"nodelist {{\n{nodes}}}\n"
        "quorum {\n    provider: corosync_votequorum\n    two_node: 1\n}\n"
        "logging {\n    to_stderr: yes\n    to_syslog: no\n    to_logfile: no\n"
        "    timestamp: on\n}\n"
        "uidgid {\n    uid: hacluster\n    gid: haclient\n}\n"
        # No realtime scheduling: the machine is shared.
        "system {\n    sched_rr: no\n}\n"
    )


def primitive(rid: str, kind: str, params: dict[str, str], interval: str = "2s") -> str:
    """Return a CIB <primitive>: `ocf:heartbeat:KIND`, or `stonith:KIND` for fence_*."""
    pairs = "".join(f'<nvpair id="{rid}-{k}" name="{k}" value="{v}"/>' for k, v in params.items())
    cls = 'class="stonith"' if kind.startswith("fence_") else 'class="ocf" provider="heartbeat"'
    return (
        f'<primitive id="{rid}" {cls} type="{kind}">'
        f'<instance_attributes id="{rid}-ia">{pairs}</instance_attributes>'
        f'<operations><op id="{rid}-mon" name="monitor" interval="{interval}" timeout="20s"/>'
        "</operations></primitive>"
    )


def pacemaker_resources(shared: Shared) -> str:
    """Return the CIB <resources>: the group (Filesystem, IPaddr2, web server, monitored every
    2 s) and one fence_ipmilan device per node, on its BMC."""
    vip = {"ip": VIP4, "cidr_netmask": "24", "nic": "lan0"}
    group = (
        '<group id="grp">'
        + primitive("data", "Filesystem", fs_params(shared))
        + primitive("vip", "IPaddr2", vip)
        + primitive("web", "anything", web_params(shared.mnt))
        + "</group>"
    )
    fences = ""
    for n, b in shared.bmcs.items():
        ipmi = {"ip": b.address, "ipport": str(b.port), "username": b.user}
        ipmi |= {"password": b.password, "lanplus": "1", "cipher": "3", "pcmk_host_list": n}
        fences += primitive(f"fence-{n}", "fence_ipmilan", ipmi, interval="60s")
    return f"<resources>{group}{fences}</resources>"


def pacemaker_constraints() -> str:
    """Return the CIB <constraints>: the group prefers a, each fence device avoids its node."""
    avoid = "".join(
        f'<rsc_location id="fence-{n}-avoid" rsc="fence-{n}" node="{n}" score="-INFINITY"/>'
        for n in ("a", "b")
    )
    prefer = '<rsc_location id="prefer-a" rsc="grp" node="a" score="100"/>'
    return f"<constraints>{prefer}{avoid}</constraints>"


class PacemakerGroup:
    """Pacemaker 2.1 + Corosync 3 with the same group, a preferred, fence_ipmilan stonith."""

    name = "pacemaker"

    def __init__(self, lab: Lab, shared: Shared) -> None:
        self.lab = lab
        self.shared = shared

    def _dirs(self, node: str) -> dict[str, Path]:
        """Make the node's private copies of the paths Corosync and Pacemaker write."""
        hacluster = pwd.getpwnam("hacluster")
        etc = self.lab.node_dir(node, "pcmk", "etc-corosync")
        (etc / "corosync.conf").write_text(corosync_conf())
        lib = self.lab.node_dir(node, "pcmk", "lib-pacemaker")
        for sub in ("cib", "pengine", "blackbox", "cores"):
            d = lib / sub
            d.mkdir(exist_ok=True)
            shutil.chown(d, hacluster.pw_uid, hacluster.pw_gid)
            d.chmod(0o750)
        shutil.chown(lib, hacluster.pw_uid, hacluster.pw_gid)
        logs = self.lab.node_dir(node, "pcmk", "log")
        shutil.chown(logs, hacluster.pw_uid, hacluster.pw_gid)
        return {
            "/etc/corosync": etc,
            "/var/lib/pacemaker": lib,
            "/var/lib/corosync": self.lab.node_dir(node, "pcmk", "lib-corosync"),
            "/var/log/pacemaker": logs,
        }

    def start(self) -> None:
        """Start Corosync and Pacemaker on both nodes, then configure the cluster from a."""
        for node in ("a", "b"):
            binds = self._dirs(node)
            logfile = binds["/var/log/pacemaker"] / "pacemaker.log"
            # One mount namespace for both, with its own /run (corosync.pid, /run/crm, the
            # agents' /run/resource-agents); IPC goes over abstract sockets (per network
            # namespace) and /dev/shm (names carry pids).
            script = (
                "set -e; mount -t tmpfs -o mode=755 lab-run /run; "
                f"mkdir -p /run/crm {RA_TMP}; chown hacluster:haclient /run/crm; "
                "corosync -f & sleep 1; exec pacemakerd"
            )
            self.lab.spawn(
                node,
                ["sh", "-c", script],
                log_path=self.lab.workdir / f"pacemaker-{node}.log",
                env={"PCMK_logfile": str(logfile)},
                binds=binds,
            )
        if not wait_until(self._both_online, timeout=120, interval=1.0):
            raise LabError(f"pacemaker: both nodes never online: {self._crm_mon()[-2000:]}")
        for argv in (
            ["crm_attribute", "-t", "crm_config", "-n", "no-quorum-policy", "-v", "ignore"],
            # hapair powers the peer off; Pacemaker's default would be a reboot (off, then on).
            ["crm_attribute", "-t", "crm_config", "-n", "stonith-action", "-v", "off"],
            ["cibadmin", "--replace", "-o", "resources", "--xml-text",
             pacemaker_resources(self.shared)],
            ["cibadmin", "--replace", "-o", "constraints", "--xml-text",
             pacemaker_constraints()],
            ["crm_attribute", "-t", "crm_config", "-n", "stonith-enabled", "-v", "true"],
        ):  # fmt: skip
            self.lab.run("a", argv, timeout=60)

    def _crm_mon(self) -> str:
        return self.lab.run("a", ["crm_mon", "-1", "-r"], check=False, timeout=20).stdout

    def _both_online(self) -> bool:
        return bool(re.search(r"Online:\s*\[\s*a\s+b\s*\]", self._crm_mon()))

    def settled(self) -> bool:
        """Return whether the whole group is started on a."""
        text = self._crm_mon()
        started = {"data": "a", "vip": "a", "web": "a", "fence-a": "b", "fence-b": "a"}
        return all(re.search(rf"\b{r}\b.*Started {n}\b", text) for r, n in started.items())


TOOLS: dict[str, Callable[[Lab, Shared], HapairGroup | PacemakerGroup]] = {
    "hapair": HapairGroup,
    "pacemaker": PacemakerGroup,
}


@dataclass
class Sample:
    """One run's result."""

    tool: str
    outage_s: float
    converged: bool
    note: str = ""


def probe_answers(path: Path) -> list[tuple[float, float, bool]]:
    """Return the probe's (request sent, request ended, answered) lines so far (monotonic)."""
    out = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3:
            out.append((float(parts[0]), float(parts[1]), parts[2] == "1"))
    return out


def outage(answers: list[tuple[float, float, bool]], crashed: float) -> tuple[float, bool]:
    """Return (last answer from before the crash to the first of a request sent after it,
    whether one came); `crashed`: when the crash was complete."""
    before = [end for _, end, ok in answers if ok and end <= crashed]
    after = [end for sent, end, ok in answers if ok and sent > crashed]
    if not before or not after:
        return float("nan"), False
    return after[0] - before[-1], True


def one_run(tool: str) -> Sample:
    """Build a lab with a fresh shared disk and BMCs, start the group on a, crash a, return
    what the client saw."""
    # The disk outlives the lab: the lab's teardown ends every process (so every mount
    # namespace holding it) before the loop device is detached.
    with (
        tempfile.TemporaryDirectory(prefix="hapair-bench-disk-") as tmp,
        ext4_loop(Path(tmp) / "shared.img", {"index.html": PAGE}) as device,
        Lab() as lab,
    ):
        # a is already crashed when it is fenced: its BMC only records "off" (the lab's
        # power-off action, killing a node and waiting for it, holds ipmi_sim meanwhile).
        bmcs = start_bmcs(lab, crash_on_off=False)
        try:
            mnt = lab.workdir / "mnt"
            mnt.mkdir()
            return crash_run(tool, lab, Shared(device, mnt, bmcs))
        finally:
            for bmc in bmcs.values():
                bmc.stop()


def crash_run(tool: str, lab: Lab, shared: Shared) -> Sample:
    """Start the tool's group on a, wait for a steady client, crash a; return the outage."""
    group = TOOLS[tool](lab, shared)
    group.start()
    if not wait_until(group.settled, timeout=120, interval=0.5):
        return Sample(tool, float("nan"), False, "the group never settled on a")
    probe_log = lab.workdir / "probe.log"
    url = f"http://{VIP4}:{PORT}/index.html"
    lab.spawn("client", [sys.executable, "-c", PROBE, url], log_path=probe_log)

    def steady() -> bool:
        recent = probe_answers(probe_log)[-25:]
        return len(recent) == 25 and all(ok for _, _, ok in recent)

    if not wait_until(steady, timeout=30, interval=0.1):
        return Sample(tool, float("nan"), False, "the client was never served steadily")
    lab.kill_node("a")
    fault = time.monotonic()
    wait_until(lambda: outage(probe_answers(probe_log), fault)[1], timeout=60, interval=0.1)
    time.sleep(0.5)
    gap, converged = outage(probe_answers(probe_log), fault)
    fenced = shared.bmcs["a"].power() == "off"
    return Sample(tool, gap, converged and fenced, "" if fenced else "a was never fenced")


def load() -> str:
    """Return the load averages (other work shares the machine)."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table and the JSON line."""
    p = argparse.ArgumentParser(prog="python -m bench.resources")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--tools", default="hapair,pacemaker")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    tools = a.tools.split(",")
    samples: list[Sample] = []
    for i in range(a.runs):
        for tool in tools:
            try:
                s = one_run(tool)
            except LabError as err:
                s = Sample(tool, float("nan"), False, str(err))
            samples.append(s)
            print(
                f"  {tool:<10} run {i + 1}/{a.runs}: outage {s.outage_s * 1000:7.0f} ms"
                f"{'' if s.converged else '  NOT CONVERGED ' + s.note}  load {load()}",
                flush=True,
            )
    print()
    print("| tool | outage median | min | max | not converged |")
    print("|---|---|---|---|---|")
    medians: dict[str, float | None] = {}
    for tool in tools:
        outs = [s.outage_s for s in samples if s.tool == tool and not math.isnan(s.outage_s)]
        bad = sum(not s.converged for s in samples if s.tool == tool)
        medians[tool] = statistics.median(outs) if outs else None
        if outs:
            print(
                f"| {tool} | {statistics.median(outs):.2f} s | {min(outs):.2f} s | "
                f"{max(outs):.2f} s | {bad}/{a.runs} |"
            )
        else:
            print(f"| {tool} | - | - | - | {bad}/{a.runs} |")
    h, k = medians.get("hapair"), medians.get("pacemaker")
    ratio = round(h / k, 3) if h is not None and k else None
    summary = {
        "bench": "resources",
        "runs": a.runs,
        "outage_s": {t: (round(m, 3) if m is not None else None) for t, m in medians.items()},
        "ratio": ratio,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
