"""`make bench-resources`: a service group moving on a crash, hapair against Pacemaker.

    python -m bench.resources [--runs N] [--tools hapair,pacemaker]

One lab per run. Both tools run the same group with the same Debian agents, in the same
order: `ocf:heartbeat:Dummy` (the storage's stand-in), the VIP, and a web server
(`ocf:heartbeat:anything` running `python3 -m http.server`). hapair moves the VIP itself;
Pacemaker 2.1 runs `ocf:heartbeat:IPaddr2` on Corosync 3 (knet over the LAN and the direct
link, `two_node`). Each node's agents see their own /run/resource-agents (a bind mount in a
private mount namespace), so the Dummy state and the web server's pid file are per node, as on
two machines; Pacemaker also gets its own /etc/corosync, /var/lib/pacemaker, /var/lib/corosync
and logs per node. Neither tool fences (Pacemaker: stonith-enabled=false).

Detection: hapair's deadtime and Corosync's token are both TOKEN_S; Corosync then waits its
consensus timeout (1.2 x token) before the new membership, as it always does.

The client fetches http://VIP:8080/ every 20 ms (250 ms timeout); node a is crashed (every
process SIGKILLed, its LAN port and direct link down); the outage is the time from the last
answer before the crash to the first after it.

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
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.lab.lab import HB4, IPV4, VIP4, Lab, LabError, wait_until
from tests.lab.pair import HapairPair, PairConfig, takeover_argv

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


def web_params(www: Path) -> dict[str, str]:
    """Return the `anything` agent's params running the web server on www."""
    return {
        "binfile": "/usr/bin/python3",
        "cmdline_options": f"-m http.server {PORT} --directory {www}",
        "pidfile": f"{RA_TMP}/web.pid",
    }


class HapairGroup:
    """hapair's takeover with the Dummy + VIP + web group."""

    name = "hapair"

    def __init__(self, lab: Lab, www: Path) -> None:
        self.lab = lab
        params = "\n".join(f'{k} = "{v}"' for k, v in web_params(www).items())
        extra = f"""
[[resource]]
name = "data"
type = "ocf"
agent = "heartbeat:Dummy"
monitor_interval = "2s"

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
        cfg = PairConfig(interval=HB_INTERVAL_S, deadtime_factor=factor, extra=extra)
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


def pacemaker_group(www: Path) -> str:
    """Return the CIB <group> of Dummy, IPaddr2 and the web server, monitored every 2 s."""

    def prim(rid: str, kind: str, params: dict[str, str]) -> str:
        pairs = "".join(
            f'<nvpair id="{rid}-{k}" name="{k}" value="{v}"/>' for k, v in params.items()
        )
        return (
            f'<primitive id="{rid}" class="ocf" provider="heartbeat" type="{kind}">'
            f'<instance_attributes id="{rid}-ia">{pairs}</instance_attributes>'
            f'<operations><op id="{rid}-mon" name="monitor" interval="2s" timeout="20s"/>'
            "</operations></primitive>"
        )

    vip = {"ip": VIP4, "cidr_netmask": "24", "nic": "lan0"}
    return (
        '<group id="grp">'
        + prim("data", "Dummy", {})
        + prim("vip", "IPaddr2", vip)
        + prim("web", "anything", web_params(www))
        + "</group>"
    )


class PacemakerGroup:
    """Pacemaker 2.1 + Corosync 3 with the same group, a preferred."""

    name = "pacemaker"

    def __init__(self, lab: Lab, www: Path) -> None:
        self.lab = lab
        self.www = www

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
            ["crm_attribute", "-t", "crm_config", "-n", "stonith-enabled", "-v", "false"],
            ["crm_attribute", "-t", "crm_config", "-n", "no-quorum-policy", "-v", "ignore"],
            ["cibadmin", "--create", "-o", "resources", "--xml-text", pacemaker_group(self.www)],
            ["cibadmin", "--create", "-o", "constraints", "--xml-text",
             '<rsc_location id="prefer-a" rsc="grp" node="a" score="100"/>'],
        ):  # fmt: skip
            self.lab.run("a", argv, timeout=60)

    def _crm_mon(self) -> str:
        return self.lab.run("a", ["crm_mon", "-1", "-r"], check=False, timeout=20).stdout

    def _both_online(self) -> bool:
        return bool(re.search(r"Online:\s*\[\s*a\s+b\s*\]", self._crm_mon()))

    def settled(self) -> bool:
        """Return whether the whole group is started on a."""
        text = self._crm_mon()
        return all(re.search(rf"\b{r}\b.*Started a\b", text) for r in ("data", "vip", "web"))


TOOLS: dict[str, Callable[[Lab, Path], HapairGroup | PacemakerGroup]] = {
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
    """Build a lab, start the group on a, crash a, return what the client saw."""
    with Lab() as lab:
        www = lab.workdir / "www"
        www.mkdir()
        (www / "index.html").write_text(PAGE)
        group = TOOLS[tool](lab, www)
        group.start()
        if not wait_until(group.settled, timeout=120, interval=0.5):
            return Sample(tool, float("nan"), False, "the group never settled on a")
        probe_log = lab.workdir / "probe.log"
        lab.spawn(
            "client", [sys.executable, "-c", PROBE, f"http://{VIP4}:{PORT}/"], log_path=probe_log
        )

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
        return Sample(tool, gap, converged)


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
