"""`make bench-failover`: client-seen outage of hapair and keepalived through the same faults.

    python -m bench.failover [--runs N] [--intervals 0.1,1] [--faults crash,lan_down,hb_cut,hang]
                             [--tools hapair,keepalived,keepalived-100] [--plot PNG]

One lab per run (0.2 s to build): the pair starts with node a active, the client pings the VIP
every 10 ms, a fault is injected on the active, and the probe records who answered and for how
long nobody did. Faults:

- crash     the active's LAN and heartbeat links down at one instant (one `ip -batch` inside
            it), then every process of it stopped and SIGKILLed, its switch port down too;
- lan_down  the active's switch port down (the heartbeat link stays up);
- hb_cut    every heartbeat path silently dropped on both nodes for HB_CUT_S seconds while both
            still reach the LAN, then healed; the right answer is that nothing moves;
- hang      every process the bench started on the active (the HA daemon and its children, and
            a UDP echo service standing for what the pair serves) frozen with SIGSTOP, found by
            PID, for hang_seconds(); links and kernel stay up, so the frozen node's kernel still
            answers pings and ARP for the VIP. The client probes the service instead of the
            kernel; then everything is thawed (SIGCONT) and watched for HEAL_WATCH_S.

Tools: hapair; keepalived at its fastest honest setting (VRRPv3, advert_int = hapair's interval,
backup priority 253 under a master at 254: the master-down timer is 3 adverts plus a skew of
3/256 advert, the least VRRP allows; no second GARP burst; GARP refreshed every second while
master, and an advert sent before yielding to a higher priority, so two masters resolve fast);
keepalived-100, the earlier setting (backup 100 under 150: a skew of 156/256 advert), run on
OLD_SETTING_FAULTS only, for comparison. The ratios compare hapair with the fastest setting.

Prints a table (median/min/max outage, worst time with two owners), what each tool did in the
hang, draws the outages (one strip per tool, per fault and interval) to --plot, keeps every
run's numbers in --samples (bench/results/), and prints, last, one JSON line.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import math
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tests.lab.lab import VIP4, Lab, LabError
from tests.lab.pair import HB_PORT, HapairPair, PairConfig
from tests.lab.probe import AGENT, ProbeResult, VipProbe

log = logging.getLogger("bench.failover")

FAULTS = ("crash", "lan_down", "hb_cut", "hang")
HB_CUT_S = 4.0
# After the hb_cut heal or the hang's thaw: long enough to see a pair that fails to reconverge.
HEAL_WATCH_S = 3.0
# The UDP echo service on both nodes that the hang's client probes (agent.py echo).
SERVICE_PORT = 7407
# Gaps longer than this count as dark time (five echoes lost in a row).
DARK_GAP_S = 0.05
# The outage of a run whose set-up failed: no measurement, left out of every median.
NAN = float("nan")
# The standby's own view is read this long before the hang ends.
VIEW_BEFORE_THAW_S = 1.5
# keepalived's fastest honest setting: the highest priorities a non-owner may take.
FAST_MASTER, FAST_BACKUP = 254, 253
# The earlier setting, kept for comparison on the faults where the priority sets the time.
OLD_MASTER, OLD_BACKUP = 150, 100
OLD_SETTING_FAULTS = ("crash", "lan_down")
DEFAULT_PLOT = Path(__file__).resolve().parent.parent / "docs" / "bench-failover.png"
# Every run's numbers, kept out of git (bench/results/ is ignored); {time} is the UTC time.
DEFAULT_SAMPLES = Path(__file__).resolve().parent / "results" / "failover-{time}.json"


def steady_delay(interval: float, u: float) -> float:
    """How long a serves steadily before the fault: a second, plus `u` (0..1) of an interval.

    A fixed delay after the pair came up puts the fault at much the same point of each tool's
    heartbeat cycle in every run, and at a different point per tool (seen: hapair's crash
    outages at 1 s spread over 2469-2714 ms, not the 2000-3000 ms the deadtime allows): the
    random part spreads it over the whole interval for both tools alike.
    """
    return 1.0 + u * interval


def hang_seconds(interval: float) -> float:
    """How long the hang lasts: six intervals (both tools' deadtime twice), at least 3 s."""
    return max(3.0, 6 * interval)


class Pair(Protocol):
    """Two HA daemons on lab nodes a and b serving VIP4, a preferred."""

    def start(self) -> None: ...
    def cut_heartbeat(self) -> Callable[[], None]: ...
    def view(self, node: str) -> str: ...


def holds(lab: Lab, node: str, address: str = VIP4) -> bool:
    """True if node has address configured on any interface."""
    p = lab.run(node, ["ip", "-o", "addr", "show"], check=False)
    return f" {address}/" in p.stdout


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

    def view(self, node: str) -> str:
        """Node's role and condition as its `takeover status` says."""
        local = self.pair.status(node).get("local")
        if not isinstance(local, dict):
            return "no status"
        cond = local.get("condition") or ""
        return f"{local.get('role')}" + (f" ({cond})" if cond else "")


class Keepalived:
    """keepalived 2.x VRRPv3 on lan0 of both nodes, a at higher priority."""

    name = "keepalived"

    def __init__(self, lab: Lab, interval: float, backup_priority: int = FAST_BACKUP) -> None:
        self.lab = lab
        self.interval = interval
        self.fast = backup_priority == FAST_BACKUP
        master = FAST_MASTER if self.fast else OLD_MASTER
        self.priorities = {"a": master, "b": backup_priority}

    def _conf(self, node: str, priority: int) -> Path:
        d = self.lab.node_dir(node, "keepalived")
        d.mkdir(parents=True, exist_ok=True)
        conf = d / "keepalived.conf"
        # The fastest setting also heals two masters as well as keepalived can: a GARP refresh
        # every second (its resolution), and an advert before yielding to a higher priority.
        fast = "  vrrp_garp_master_refresh 1\n  vrrp_higher_prio_send_advert\n" if self.fast else ""
        conf.write_text(
            "global_defs {\n"
            f"  router_id lab_{node}\n"
            "  vrrp_version 3\n"
            "  vrrp_garp_master_delay 0\n"
            f"{fast}"
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
        for node, prio in self.priorities.items():
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

    def view(self, node: str) -> str:
        """MASTER if node holds the VIP, else BACKUP (what keepalived does with the address)."""
        return "MASTER" if holds(self.lab, node) else "BACKUP"


TOOLS: dict[str, Callable[[Lab, float], Pair]] = {
    "hapair": Hapair,
    "keepalived": Keepalived,
    "keepalived-100": lambda lab, interval: Keepalived(lab, interval, OLD_BACKUP),
}


def crash(lab: Lab, node: str) -> None:
    """Make node vanish at one instant, as a power loss does, then end its processes.

    Lab.kill_node: both links down first, from inside the node in one `ip -batch`, so that
    whatever its processes do next reaches nobody; then they are stopped and SIGKILLed, and its
    switch port goes down. Stopping or killing them first would leave the kernel answering
    pings and ARP for the VIP, with the daemons silent, for as long as the link commands take
    (100-300 ms on a loaded machine): a short hang, which the peer's VIP guard rightly reads as
    "still served", and which shortens VRRP's outage by as much.
    """
    lab.kill_node(node)


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
    # hang only: did the standby hold the VIP at the end of the hang; its own view then; the
    # longest gap in the kernel's ping replies (the service's is outage_s); PIDs frozen.
    took_over: bool | None = None
    standby_view: str = ""
    ping_outage_s: float = float("nan")
    frozen: int = 0
    # Where the client's longest gap began, counted from the fault (seconds); hang: how long
    # the active stayed frozen.
    gap_at_s: float = float("nan")
    hang_s: float = float("nan")
    # All the time the client went unanswered, in gaps over DARK_GAP_S (a client sent back and
    # forth between two owners is dark more than once).
    dark_s: float = float("nan")
    # Which node answered last ("a", "b"; "" if nobody).
    last_owner: str = ""
    # How long a served steadily before the fault (steady_delay).
    delay_s: float = float("nan")


def one_run(tool: str, interval: float, fault: str) -> Sample:
    """Build a lab, start the pair, inject fault, return what the client saw."""
    with Lab() as lab:
        pair = TOOLS[tool](lab, interval)
        if fault == "hang":
            for node in ("a", "b"):
                lab.spawn(node, [lab.python, str(AGENT), "echo", VIP4, str(SERVICE_PORT)])
        pair.start()
        # The hang's client talks to the service: a frozen node's kernel still answers pings.
        probe = VipProbe(lab, udp=SERVICE_PORT if fault == "hang" else 0)
        probe.start(VIP4)
        mac_a, mac_b = lab.mac("a"), lab.mac("b")
        # a must serve steadily before the fault (initdead, election).
        if not probe.wait_for(mac_a, 50, timeout=30):
            res = probe.stop()
            return Sample(tool, interval, fault, NAN, 0, False, f"a never served: {res.summary()}")
        # Measure the fault only: a fresh probe, a steady second of a serving (and a random part
        # of an interval: steady_delay), then the fault.
        probe.stop()
        probe.start(VIP4)
        pings: VipProbe | None = None
        if fault == "hang":
            pings = VipProbe(lab)
            pings.start(VIP4)
        if not probe.wait_for(mac_a, 20, timeout=10):
            res = probe.stop()
            return Sample(
                tool, interval, fault, NAN, 0, False, f"a stopped serving: {res.summary()}"
            )
        delay = steady_delay(interval, random.random())
        time.sleep(delay)
        sample = Sample(tool, interval, fault, 0, 0, True, delay_s=delay)
        t_fault = time.monotonic()
        if fault == "crash":
            crash(lab, "a")
        elif fault == "lan_down":
            lab.set_link("lan-a", False)
        elif fault == "hb_cut":
            heal = pair.cut_heartbeat()
            time.sleep(HB_CUT_S)
            heal()
            time.sleep(HEAL_WATCH_S)
        elif fault == "hang":
            frozen = lab.freeze("a")
            try:
                # The standby's view is read before the end (`takeover status` takes a while
                # under load), so that the hang lasts the same for every tool.
                end = t_fault + hang_seconds(interval)
                time.sleep(max(0.0, end - VIEW_BEFORE_THAW_S - time.monotonic()))
                sample.took_over = holds(lab, "b")
                sample.standby_view = pair.view("b")
                time.sleep(max(0.0, end - time.monotonic()))
            finally:
                lab.thaw(frozen)
                sample.hang_s = time.monotonic() - t_fault
            sample.frozen = len(frozen)
            time.sleep(HEAL_WATCH_S)
        if fault in ("crash", "lan_down"):
            converged = probe.wait_for(mac_b, 30, timeout=30)
        else:
            converged = True
        res: ProbeResult = probe.stop()
        if fault == "hb_cut":
            # Nothing should move: the outage is the longest gap, whoever answers.
            converged = res.outage < 1.0
        if pings is not None:
            ping_res = pings.stop()
            sample.ping_outage_s = ping_res.outage
            # The service must answer again once thawed, whoever serves it.
            converged = bool(res.replies) and res.replies[-1].t > res.stopped - 0.5
        sample.outage_s = res.outage
        sample.gap_at_s = res.outage_span[0] - t_fault
        sample.dark_s = sum(b - a for a, b in res.gaps(DARK_GAP_S))
        if res.replies:
            sample.last_owner = {mac_a: "a", mac_b: "b"}.get(res.replies[-1].mac, "?")
        sample.dual_s = max(res.dual_time, res.dual_owner_time)
        sample.converged = converged
        sample.note = res.summary()
        return sample


def run(tools: list[str], intervals: list[float], faults: list[str], runs: int) -> list[Sample]:
    """Run every combination runs times, interleaving tools so drift hits both alike."""
    samples: list[Sample] = []
    for interval in intervals:
        for fault in faults:
            these = [t for t in tools if t != "keepalived-100" or fault in OLD_SETTING_FAULTS]
            for i in range(runs):
                for tool in these:
                    try:
                        s = one_run(tool, interval, fault)
                    except LabError as e:
                        s = Sample(tool, interval, fault, float("nan"), 0, False, str(e))
                    samples.append(s)
                    extra = ""
                    if fault == "hang":
                        extra = (
                            f"  dark in all {s.dark_s * 1000:5.0f} ms"
                            f"  ping {s.ping_outage_s * 1000:5.0f} ms  gap at "
                            f"{s.gap_at_s:.2f} s of a {s.hang_s:.2f} s hang"
                            f"  b took over: {s.took_over}  last served by {s.last_owner}"
                            f"  b: {s.standby_view}  ({s.frozen} PIDs frozen)"
                        )
                    print(
                        f"  {tool:<14} interval={interval:g}s {fault:<8} run {i + 1}/{runs}: "
                        f"outage {s.outage_s * 1000:7.0f} ms  dual {s.dual_s * 1000:5.0f} ms"
                        f"{'' if s.converged else '  NOT CONVERGED'}{extra}",
                        flush=True,
                    )
    return samples


def describe_hang(samples: list[Sample], tool: str) -> str:
    """What tool did in the hang, in one sentence built from its samples."""
    ss = [s for s in samples if s.tool == tool and s.fault == "hang" and not math.isnan(s.outage_s)]
    if not ss:
        return "not run"
    took = sum(bool(s.took_over) for s in ss)
    views = Counter(s.standby_view for s in ss).most_common(1)[0][0]
    per_interval = []
    for interval in sorted({s.interval for s in ss}):
        outs = [s.outage_s for s in ss if s.interval == interval and not math.isnan(s.outage_s)]
        pings = [s.ping_outage_s for s in ss if s.interval == interval]
        if not outs:
            per_interval.append(f"{interval:g} s: no result")
            continue
        frozen = [s.hang_s for s in ss if s.interval == interval and not math.isnan(s.hang_s)]
        dark = [s.dark_s for s in ss if s.interval == interval and not math.isnan(s.dark_s)]
        per_interval.append(
            f"at {interval:g} s the service's longest gap was "
            f"{statistics.median(outs) * 1000:.0f} ms and it was dark "
            f"{statistics.median(dark) * 1000:.0f} ms in all, in a "
            f"{statistics.median(frozen) * 1000:.0f} ms freeze (pings: longest gap "
            f"{statistics.median(pings) * 1000:.0f} ms)"
        )
    dual = max(s.dual_s for s in ss)
    back = sum(s.converged for s in ss)
    owners = Counter(s.last_owner for s in ss if s.converged)
    back_by = ", ".join(f"{n} by {o}" for o, n in sorted(owners.items()))
    return (
        f"standby took over in {took}/{len(ss)} runs (its view at the end: {views}); "
        f"{'; '.join(per_interval)} (medians); two owners up to {dual * 1000:.0f} ms; "
        f"service answering after the thaw in {back}/{len(ss)} ({back_by})"
    )


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
    order = {f: n for n, f in enumerate(FAULTS)}
    for (tool, interval, fault), ss in sorted(
        groups.items(), key=lambda kv: (kv[0][1], order[kv[0][2]], kv[0][0])
    ):
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

    def ratios(keepalived: str) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for interval, tag in ((0.1, "100ms"), (1.0, "1s")):
            for fault in ("crash", "lan_down"):
                h = medians.get(("hapair", interval, fault))
                k = medians.get((keepalived, interval, fault))
                out[f"{fault}_{tag}"] = round(h / k, 3) if h is not None and k else None
        return out

    ratio = ratios("keepalived")
    hang = {t: describe_hang(samples, t) for t in ("hapair", "keepalived")}
    print()
    for tool, text in hang.items():
        print(f"hang, {tool}: {text}")
    goal_ratio = all(r is not None and r <= 1.0 for r in ratio.values())
    goal_dual = dual_max.get("hapair", 1.0) == 0
    print(
        f"goal: hapair/keepalived <= 1.0 on crash and LAN-down at 100 ms and 1 s against "
        f"priority {FAST_BACKUP}: {'met' if goal_ratio else 'NOT MET'}; hapair never two "
        f"owners: {'met' if goal_dual else 'NOT MET'}"
    )
    return {
        "bench": "failover",
        "runs": runs,
        "keepalived_backup_priority": FAST_BACKUP,
        "ratio": ratio,
        f"ratio_keepalived_backup_priority_{OLD_BACKUP}": ratios("keepalived-100"),
        "dual_owner_ms_max": {t: round(v * 1000) for t, v in dual_max.items()},
        "hang": hang,
        "outage_ms_median": {
            f"{t}_{f}_{i:g}s": round(m * 1000)
            for (t, i, f), m in medians.items()
            if not math.isnan(m)
        },
    }


def plot(samples: list[Sample], runs: int, path: Path) -> None:
    """Draw each run's client-seen outage: a strip per tool, a panel per fault and interval."""
    import matplotlib  # noqa: PLC0415  the bench group only; never needed to run hapair

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    intervals = sorted({s.interval for s in samples})
    faults = [f for f in FAULTS if any(s.fault == f for s in samples)]
    tools = list(dict.fromkeys(s.tool for s in samples))
    colours = {"hapair": "tab:blue", "keepalived": "tab:orange", "keepalived-100": "tab:gray"}
    fig, axes = plt.subplots(
        len(intervals), len(faults), figsize=(3.4 * len(faults), 3.2 * len(intervals)),
        squeeze=False,
    )  # fmt: skip
    for row, interval in enumerate(intervals):
        for col, fault in enumerate(faults):
            ax = axes[row][col]
            shown = [t for t in tools if any(s.tool == t and s.fault == fault for s in samples)]
            for x, tool in enumerate(shown):
                key = (tool, interval, fault)
                ss = [s for s in samples if (s.tool, s.interval, s.fault) == key]
                ys = [s.outage_s * 1000 for s in ss if not math.isnan(s.outage_s)]
                if not ys:
                    continue
                xs = [x + (k - (len(ys) - 1) / 2) * 0.07 for k in range(len(ys))]
                ax.scatter(xs, ys, s=18, color=colours.get(tool, "black"), zorder=3)
                med = statistics.median(ys)
                ax.hlines(med, x - 0.3, x + 0.3, color="black", linewidth=1, zorder=2)
                dual = max(s.dual_s for s in ss)
                if dual > 0:
                    # Along the top of the panel, clear of the dots.
                    ax.text(
                        x, 0.97, f"two owners\nup to {dual * 1000:.0f} ms", ha="center", va="top",
                        fontsize=7, color="red", transform=ax.get_xaxis_transform(),
                    )  # fmt: skip
            frozen = [
                s.hang_s * 1000
                for s in samples
                if (s.interval, s.fault) == (interval, fault) and not math.isnan(s.hang_s)
            ]
            if frozen:
                # The hang's own length: an outage up to it means nobody took over.
                ax.axhline(statistics.median(frozen), color="gray", linestyle="--", linewidth=0.8)
                ax.text(len(shown) - 0.45, statistics.median(frozen), "freeze", ha="right",
                        va="bottom", fontsize=7, color="gray")  # fmt: skip
            ax.set_xticks(range(len(shown)), shown, fontsize=8)
            ax.set_xlim(-0.6, len(shown) - 0.4)
            ax.set_ylim(bottom=0, top=max(ax.get_ylim()[1] * 1.3, 50))
            ax.set_title(f"{fault.replace('_', ' ')}, interval {interval:g} s", fontsize=9)
            ax.grid(axis="y", alpha=0.3)
            if col == 0:
                ax.set_ylabel("client-seen outage (ms)")
    day = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    fig.suptitle(
        f"make bench-failover, {day}: each dot one run ({runs} per cell), bar = median\n"
        f"keepalived: backup priority {FAST_BACKUP} under {FAST_MASTER}; keepalived-100: "
        f"{OLD_BACKUP} under {OLD_MASTER}; hang: outage of a UDP service, the kernel still pings",
        fontsize=9,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the table and the JSON line; draw the picture."""
    p = argparse.ArgumentParser(prog="python -m bench.failover")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--intervals", default="0.1,1")
    p.add_argument("--faults", default=",".join(FAULTS))
    p.add_argument("--tools", default=",".join(TOOLS))
    p.add_argument("--plot", default=str(DEFAULT_PLOT), help="PNG to draw ('' for none)")
    p.add_argument("--samples", default=str(DEFAULT_SAMPLES),
                   help="write every run's result here (JSON; '' for nowhere)")  # fmt: skip
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
    if a.samples:
        path = Path(a.samples.replace("{time}", time.strftime("%Y%m%d-%H%M%S", time.gmtime())))
        path.parent.mkdir(parents=True, exist_ok=True)
        print(f"samples: {path}")
        path.write_text(json.dumps([s.__dict__ for s in samples], indent=1) + "\n")
    summary = summarize(samples, a.runs)
    drawn = True
    if a.plot:
        try:
            plot(samples, a.runs, Path(a.plot))
            print(f"picture: {a.plot}")
        except ImportError as e:
            drawn = False
            print(f"bench.failover: no picture ({e}): `make bench-failover` installs "
                  "matplotlib (pip group bench)", file=sys.stderr)  # fmt: skip
    print(json.dumps(summary))
    return 0 if drawn else 1


if __name__ == "__main__":
    sys.exit(main())
