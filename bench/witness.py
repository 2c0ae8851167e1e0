"""`make bench-witness`: the active cut off from its peer and the witness, with the witness
and with the ping list alone.

    python -m bench.witness [--runs N] [--lease SECONDS] [--watch SECONDS]

One lab per run. Node a is active, the client pings the VIP every 10 ms and counts ARP
answers. The fault: the direct heartbeat link goes down, and a and b drop every frame from
each other on the LAN (heartbeats, the VIP guard's ARP probe and its answer) while both still
reach the client and the ping targets; with the witness, a's path to it is cut too. The
ping list alone sees nothing wrong on either side: b takes over while a keeps serving. With
the witness, a releases before its lease can have expired and b takes over only then.

Prints a table (median/max client-seen outage, longest time with two owners) and, last, one
JSON line: {"bench": "witness", "outage_s": {"witness": X, "ping_list": Y},
"dual_owner_ms_max": {"witness": X, "ping_list": Y}}.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from dataclasses import dataclass

from tests.e2e.witnesslab import WitnessLab
from tests.lab import faults
from tests.lab.lab import VIP4, Lab, LabError
from tests.lab.pair import HapairPair, PairConfig
from tests.lab.probe import VipProbe

log = logging.getLogger("bench.witness")

VARIANTS = ("witness", "ping_list")


@dataclass
class Sample:
    """One run's result."""

    variant: str
    outage_s: float
    dual_s: float
    moved: bool
    note: str = ""


def partition(lab: Lab) -> None:
    """Drop every frame a and b send each other on the LAN, and take the direct link down."""
    lab.set_link("hb", False)
    for node, other in (("a", "b"), ("b", "a")):
        chain = f"bw{node}"
        script = faults.chain_script(chain, ["lan0"], f"ether saddr {lab.mac(other)} drop")
        lab.run(node, ["nft", "-f", "-"], input=script)


def one_run(variant: str, lease: float, watch: float) -> Sample:
    """Build a lab, start the pair (with or without the witness), partition, observe."""
    with Lab() as lab:
        witness = WitnessLab(lab, max_lease=lease) if variant == "witness" else None
        extra = witness.cluster_section(lease) if witness is not None else ""
        pair = HapairPair(lab, PairConfig(extra=extra))
        if witness is not None:
            witness.start()
        pair.start()
        probe = VipProbe(lab)
        probe.start(VIP4)
        mac_a, mac_b = lab.mac("a"), lab.mac("b")
        if not probe.wait_for(mac_a, 50, timeout=30):
            return Sample(variant, 0, 0, False, f"a never served: {probe.stop().summary()}")
        # The witness grants nothing for one lease after its start: let it grant a first.
        time.sleep(2 * lease if witness is not None else 1.0)
        probe.stop()
        probe.start(VIP4)
        if not probe.wait_for(mac_a, 20, timeout=10):
            return Sample(variant, 0, 0, False, f"a stopped serving: {probe.stop().summary()}")
        partition(lab)
        if witness is not None:
            witness.cut("a")
        time.sleep(watch)
        res = probe.stop()
        moved = res.replies_per_mac.get(mac_b, 0) > 0
        if witness is not None:
            witness.stop()
        return Sample(
            variant, res.outage, max(res.dual_time, res.dual_owner_time), moved, res.summary()
        )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the table and the JSON line."""
    p = argparse.ArgumentParser(prog="python -m bench.witness")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--lease", type=float, default=3.0)
    p.add_argument("--watch", type=float, default=10.0)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    samples: list[Sample] = []
    for i in range(a.runs):
        for variant in VARIANTS:
            try:
                s = one_run(variant, a.lease, a.watch)
            except LabError as e:
                s = Sample(variant, float("nan"), 0, False, str(e))
            samples.append(s)
            print(
                f"  {variant:<10} run {i + 1}/{a.runs}: outage {s.outage_s * 1000:7.0f} ms  "
                f"two owners {s.dual_s * 1000:6.0f} ms  moved={s.moved}",
                flush=True,
            )
    print()
    print("| arbitration | outage median | outage max | two owners max | moved |")
    print("|---|---|---|---|---|")
    outage: dict[str, float] = {}
    dual: dict[str, int] = {}
    for variant in VARIANTS:
        ss = [s for s in samples if s.variant == variant]
        outs = [s.outage_s for s in ss if s.outage_s == s.outage_s]
        outage[variant] = round(statistics.median(outs), 3) if outs else float("nan")
        dual[variant] = round(max(s.dual_s for s in ss) * 1000)
        print(
            f"| {variant} | {outage[variant] * 1000:.0f} ms | "
            f"{max(outs, default=float('nan')) * 1000:.0f} ms | {dual[variant]} ms | "
            f"{sum(s.moved for s in ss)}/{len(ss)} |"
        )
    print(json.dumps({"bench": "witness", "outage_s": outage, "dual_owner_ms_max": dual}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
