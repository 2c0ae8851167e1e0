"""`make bench-failover`: client-seen outage of hapair and keepalived through the same faults.

    python -m bench.failover [--runs N] [--intervals 0.1,1] [--faults crash,lan_down,hb_cut]
                             [--tools hapair,keepalived]

One lab per run (0.2 s to build): the pair starts with node a active, the client pings the VIP
every 10 ms, a fault is injected on the active, and the probe records who answered and for how
long nobody did. Faults:

- crash     every process of the active SIGKILLed, its switch port and heartbeat link down;
- lan_down  the active's switch port down (the heartbeat link stays up);
- hb_cut    every heartbeat path silently dropped on both nodes for HB_CUT_S seconds while both
            still reach the LAN, then healed; the right answer is that nothing moves.

Prints a table (median/min/max outage, worst time with two owners) and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tests.lab.lab import VIP4, Lab, LabError
from tests.lab.pair import HB_PORT, HapairPair, PairConfig
from tests.lab.probe import ProbeResult, VipProbe

log = logging.getLogger("bench.failover")

FAULTS = ("crash", "lan_down", "hb_cut")
HB_CUT_S = 4.0
# After the hb_cut heal: long enough to see a pair that fails to reconverge.
HEAL_WATCH_S = 3.0


class Pair(Protocol):
    """Two HA daemons on lab nodes a and b serving VIP4, a preferred."""

    def start(self) -> None: ...
    def cut_heartbeat(self) -> Callable[[], None]: ...


class Hapair:
    """hapair's takeover on both nodes."""

    name = "hapair"

    def __init__(self, lab: Lab, interval: float) -> None:
        self.lab = lab
        self.pair = HapairPair(lab, PairConfig(interval=interval))

    def start(self) -> None:
        """Start both daemons."""
        self.pair.start()

    def cut_heartbeat(self) -> Callable[[], None]:
        """Drop the heartbeat port on every link of both nodes; return the heal."""
        faults = [self.lab.block(n, proto="udp", port=HB_PORT) for n in ("a", "b")]
        return lambda: [self.lab.unblock(f) for f in faults] and None


class Keepalived:
    """keepalived 2.x VRRPv3 on lan0 of both nodes, a at higher priority."""

    name = "keepalived"

    def __init__(self, lab: Lab, interval: float) -> None:
        self.lab = lab
        self.interval = interval

    def _conf(self, node: str, priority: int) -> Path:
        d = self.lab.node_dir(node, "keepalived")
        d.mkdir(parents=True, exist_ok=True)
        conf = d / "keepalived.conf"
        conf.write_text(
            "global_defs {\n"
            f"  router_id lab_{node}\n"
            "  vrrp_version 3\n"
            "  vrrp_garp_master_delay 0\n"
            "  script_user root\n"
            "}\n"
            "vrrp_instance VI_1 {\n"
            "  state BACKUP\n"
            "  interface lan0\n"
            "  virtual_router_id 51\n"
            f"  priority {priority}\n"
            f"  advert_int {self.interval:g}\n"
            "  virtual_ipaddress {\n"
            f"    {VIP4}/24 dev lan0\n"
            "  }\n"
            "}\n"
        )
        return conf

    def start(self) -> None:
        """Start keepalived in both nodes (distinct pid files, logs to stderr)."""
        for node, prio in (("a", 150), ("b", 100)):
            conf = self._conf(node, prio)
            d = conf.parent
            self.lab.spawn(
                node,
                ["keepalived", "-n", "-l", "-D", "-G", "-P", "-f", str(conf),
                 "-p", str(d / "k.pid"), "-r", str(d / "vrrp.pid"), "-c", str(d / "chk.pid")],
                log_path=self.lab.workdir / f"keepalived-{node}.log",
            )  # fmt: skip

    def cut_heartbeat(self) -> Callable[[], None]:
        """Drop VRRP adverts arriving at both nodes; return the heal."""
        faults = [self.lab.block(n, proto="vrrp") for n in ("a", "b")]
        return lambda: [self.lab.unblock(f) for f in faults] and None


TOOLS: dict[str, Callable[[Lab, float], Pair]] = {"hapair": Hapair, "keepalived": Keepalived}


@dataclass
class Sample:
    """One run's result."""

    tool: str
    interval: float
    fault: str
    outage_s: float
    dual_s: float
    converged: bool
    note: str = ""


def one_run(tool: str, interval: float, fault: str) -> Sample:
    """Build a lab, start the pair, inject fault, return what the client saw."""
    with Lab() as lab:
        pair = TOOLS[tool](lab, interval)
        pair.start()
        probe = VipProbe(lab)
        probe.start(VIP4)
        mac_a, mac_b = lab.mac("a"), lab.mac("b")
        # a must serve steadily before the fault (initdead, election).
        if not probe.wait_for(mac_a, 50, timeout=30):
            res = probe.stop()
            return Sample(tool, interval, fault, 0, 0, False, f"a never served: {res.summary()}")
        # Measure the fault only: a fresh probe, a steady second of a serving, then the fault.
        probe.stop()
        probe.start(VIP4)
        if not probe.wait_for(mac_a, 20, timeout=10):
            res = probe.stop()
            return Sample(tool, interval, fault, 0, 0, False, f"a stopped serving: {res.summary()}")
        time.sleep(1.0)
        if fault == "crash":
            lab.kill_node("a")
        elif fault == "lan_down":
            lab.set_link("lan-a", False)
        elif fault == "hb_cut":
            heal = pair.cut_heartbeat()
            time.sleep(HB_CUT_S)
            heal()
            time.sleep(HEAL_WATCH_S)
        if fault in ("crash", "lan_down"):
            converged = probe.wait_for(mac_b, 30, timeout=30)
        else:
            converged = True
        res: ProbeResult = probe.stop()
        if fault == "hb_cut":
            # Nothing should move: the outage is the longest gap, whoever answers.
            converged = res.outage < 1.0
        dual = max(res.dual_time, res.dual_owner_time)
        return Sample(tool, interval, fault, res.outage, dual, converged, res.summary())


def run(tools: list[str], intervals: list[float], faults: list[str], runs: int) -> list[Sample]:
    """Run every combination runs times, interleaving tools so drift hits both alike."""
    samples: list[Sample] = []
    for interval in intervals:
        for fault in faults:
            for i in range(runs):
                for tool in tools:
                    try:
                        s = one_run(tool, interval, fault)
                    except LabError as e:
                        s = Sample(tool, interval, fault, float("nan"), 0, False, str(e))
                    samples.append(s)
                    print(
                        f"  {tool:<10} interval={interval:g}s {fault:<8} run {i + 1}/{runs}: "
                        f"outage {s.outage_s * 1000:7.0f} ms  dual {s.dual_s * 1000:5.0f} ms"
                        f"{'' if s.converged else '  NOT CONVERGED'}",
                        flush=True,
                    )
    return samples


def summarize(samples: list[Sample], runs: int) -> dict[str, object]:
    """Print the table; return the JSON summary."""
    groups: dict[tuple[str, float, str], list[Sample]] = {}
    for s in samples:
        groups.setdefault((s.tool, s.interval, s.fault), []).append(s)
    print()
    print(
        "| tool | interval | fault | outage median | min | max | two owners max | not converged |"
    )
    print("|---|---|---|---|---|---|---|---|")
    medians: dict[tuple[str, float, str], float] = {}
    dual_max: dict[str, float] = {}
    for (tool, interval, fault), ss in sorted(groups.items()):
        outs = [s.outage_s for s in ss if not math.isnan(s.outage_s)]
        med = statistics.median(outs) if outs else float("nan")
        medians[(tool, interval, fault)] = med
        dmax = max(s.dual_s for s in ss)
        dual_max[tool] = max(dual_max.get(tool, 0.0), dmax)
        bad = sum(not s.converged for s in ss)
        print(
            f"| {tool} | {interval:g} s | {fault} | {med * 1000:.0f} ms | "
            f"{min(outs, default=float('nan')) * 1000:.0f} ms | "
            f"{max(outs, default=float('nan')) * 1000:.0f} ms | {dmax * 1000:.0f} ms | "
            f"{bad}/{len(ss)} |"
        )
    ratio: dict[str, float | None] = {}
    for interval, tag in ((0.1, "100ms"), (1.0, "1s")):
        for fault in ("crash", "lan_down"):
            h = medians.get(("hapair", interval, fault))
            k = medians.get(("keepalived", interval, fault))
            ratio[f"{fault}_{tag}"] = round(h / k, 3) if h is not None and k else None
    return {
        "bench": "failover",
        "runs": runs,
        "ratio": ratio,
        "dual_owner_ms_max": {t: round(v * 1000) for t, v in dual_max.items()},
        "outage_ms_median": {
            f"{t}_{f}_{i:g}s": round(m * 1000)
            for (t, i, f), m in medians.items()
            if not math.isnan(m)
        },
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table and the JSON line."""
    p = argparse.ArgumentParser(prog="python -m bench.failover")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--intervals", default="0.1,1")
    p.add_argument("--faults", default=",".join(FAULTS))
    p.add_argument("--tools", default="hapair,keepalived")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    tools = a.tools.split(",")
    faults = a.faults.split(",")
    for name in tools:
        if name not in TOOLS:
            p.error(f"unknown tool {name!r}")
    for f in faults:
        if f not in FAULTS:
            p.error(f"unknown fault {f!r}")
    intervals = [float(x) for x in a.intervals.split(",")]
    samples = run(tools, intervals, faults, a.runs)
    print(json.dumps(summarize(samples, a.runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
