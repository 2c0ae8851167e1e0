"""`make bench-pair`: what the pair loses at a crash, and what a planned switchover costs.

takeover, mirrord and sshd run on both lab nodes (tests/e2e/pairlab.py); a `hot` directory
(class defaults: interval 5 s, min 1 s, max 30 s) takes a steady churn of new files written
straight into the active's tree, each acknowledged write recorded with its time.

1. RPO at the moment of crash (N rounds): at a random moment of steady churn (after --churn
   seconds, so the planner has measured the rate: the first pass after a quiet spell is spaced
   by the class interval, 5 s for hot, until it has) the active is crashed
   (every process SIGKILLed, links down). RPO = age, at the crash, of the oldest acknowledged
   write not on the survivor (0 if all arrived); mirrord's own RPO read just before is shown
   too. The crashed node then returns: every write missing on the survivor must be on its
   orphan list (`mirrord orphans`), else it counts as lost. The roles alternate.
2. Planned switchover (N rounds): under the same churn, `takeover standby` on the active, timed
   until the peer is ACTIVE (the final flush included); lost = acknowledged before the command
   and not on the new active.

Prints a table, then one JSON line (last). Options: --rounds 5 --rate 50 --churn 10 --seed 6.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from typing import Any

from mirrord.cli import control_request
from tests.e2e.pairlab import PairLab, Writer, peer_of, present
from tests.lab.lab import Lab, wait_until

HOT = {"path": "/srv/hot", "class": "hot"}
# The crash comes at churn + uniform(0, CRASH_SPREAD) seconds (seeded: --seed).
CRASH_SPREAD = 4.0


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank)."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(p / 100 * len(s)) - 1))]


def settled(pair: PairLab, node: str) -> bool:
    """Whether node's mirrord pushes and owes nothing."""
    try:
        doc = control_request(pair.lab.node_dir(node, "run"), {"cmd": "status"}, 10)
    except OSError:
        return False
    follow = doc.get("follow", {})
    return bool(follow.get("pushing")) and all(
        not d["running"] and not d["dirty"] and d["full_needed"] is None for d in doc["directories"]
    )


def mirrord_rpo(pair: PairLab, node: str) -> float:
    """mirrord's RPO of the hot directory on node."""
    doc = control_request(pair.lab.node_dir(node, "run"), {"cmd": "status"}, 10)
    return float(doc["directories"][0]["rpo"])


def crash_round(pair: PairLab, active: str, rate: float, churn: float, n: int) -> dict[str, Any]:
    """One crash of `active` under churn, and its return; returns the round's numbers."""
    standby = peer_of(active)
    writer = Writer(pair.tree(active, "hot"), every=1.0 / rate, prefix=f"c{n}").start()
    # A random moment of steady churn (the first pass after a quiet spell is not the case).
    time.sleep(churn + random.uniform(0.0, CRASH_SPREAD))
    reported = mirrord_rpo(pair, active)
    acked = writer.stop()
    pair.crash(active)
    crashed = time.time()
    if not wait_until(lambda: pair.takeover.role(standby) == "ACTIVE", 20, 0.05):
        raise RuntimeError(f"round {n}: {standby} did not take over")
    names = [name for name, _ in acked]
    on_survivor = present(pair.tree(standby, "hot"), names)
    missing = [(name, t) for name, t in acked if name not in on_survivor]
    rpo = max((crashed - t for _, t in missing), default=0.0)
    pair.revive(active)
    if not wait_until(lambda: pair.takeover.role(active) == "STANDBY", 30, 0.1):
        raise RuntimeError(f"round {n}: {active} did not come back as standby")
    wanted = {name for name, _ in missing}
    # takeover may report STANDBY a moment before mirrord (restarted too) has set them aside.
    wait_until(lambda: wanted <= {o["path"] for o in pair.orphans(active)}, 30, 0.2)
    orphaned = {o["path"] for o in pair.orphans(active)}
    lost = [name for name, _ in missing if name not in orphaned]
    if not wait_until(lambda: settled(pair, standby), 60, 0.1):
        raise RuntimeError(f"round {n}: {standby} did not settle after {active} returned")
    return {"writes": len(acked), "missing": len(missing), "rpo_s": rpo,
            "mirrord_rpo_s": reported, "lost": len(lost)}  # fmt: skip


def switchover_round(
    pair: PairLab, active: str, rate: float, churn: float, n: int
) -> dict[str, Any]:
    """One `takeover standby` under churn; returns its duration and losses."""
    standby = peer_of(active)
    writer = Writer(pair.tree(active, "hot"), every=1.0 / rate, prefix=f"s{n}").start()
    time.sleep(churn)
    argv = [sys.executable, "-m", "takeover", "-c", str(pair.cluster), "--node", active,
            "standby"]  # fmt: skip
    began = time.time()
    t0 = time.monotonic()
    pair.lab.run(active, argv)
    acked = writer.stop()
    if not wait_until(lambda: pair.takeover.role(standby) == "ACTIVE", 60, 0.02):
        raise RuntimeError(f"round {n}: {standby} did not become active")
    took = time.monotonic() - t0
    before = [name for name, t in acked if t < began]
    lost = len(before) - len(present(pair.tree(standby, "hot"), before))
    flush = (pair.mirror_status(active) or {}).get("follow", {}).get("last_flush") or {}
    flush_s = float(flush.get("ended") or 0) - float(flush.get("started") or 0)
    if not wait_until(lambda: settled(pair, standby), 60, 0.1):
        raise RuntimeError(f"round {n}: {standby} did not settle")
    return {"writes": len(acked), "switchover_s": took, "flush_s": flush_s,
            "flush_ok": bool(flush.get("ok")), "lost": lost}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Run both measurements on one lab; print the table and the JSON line."""
    parser = argparse.ArgumentParser(prog="python -m bench.pair")
    parser.add_argument("--rounds", type=int, default=5, help="crashes and switchovers each")
    parser.add_argument("--rate", type=float, default=50.0, help="new files per second")
    parser.add_argument("--churn", type=float, default=10.0,
                        help="seconds of churn before a switchover; a crash comes up to "
                        f"{CRASH_SPREAD:.0f} s later")  # fmt: skip
    parser.add_argument("--seed", type=int, default=6, help="seed of the crash moments")
    parser.add_argument("--keep", action="store_true", help="keep the lab's work dir (logs)")
    args = parser.parse_args(argv)
    random.seed(args.seed)
    crashes: list[dict[str, Any]] = []
    switches: list[dict[str, Any]] = []
    with Lab(keep=args.keep) as lab:
        print(f"lab work dir {lab.workdir}", flush=True)
        pair = PairLab(lab, [HOT])
        pair.start()
        if not wait_until(lambda: pair.active() is not None, 30, 0.1):
            raise RuntimeError("no active node")
        active = pair.active() or "a"
        if not wait_until(lambda: settled(pair, active), 60, 0.1):
            raise RuntimeError("first pass did not finish")
        for n in range(args.rounds):
            r = crash_round(pair, active, args.rate, args.churn, n)
            crashes.append(r)
            print(f"crash {n} of {active}: {r}", flush=True)
            active = peer_of(active)
        for n in range(args.rounds):
            r = switchover_round(pair, active, args.rate, args.churn, n)
            switches.append(r)
            print(f"switchover {n} from {active}: {r}", flush=True)
            active = peer_of(active)
    rpos = [r["rpo_s"] for r in crashes]
    reported = [r["mirrord_rpo_s"] for r in crashes]
    took = [r["switchover_s"] for r in switches]
    flushes = [r["flush_s"] for r in switches]
    lost = sum(r["lost"] for r in crashes) + sum(r["lost"] for r in switches)
    print()
    print(f"hot directory, {args.rate:.0f} new files/s, {args.churn:.0f} s churn per round, "
          f"{args.rounds} rounds each")  # fmt: skip
    print(f"{'measure':<40} {'p50':>8} {'p99':>8} {'max':>8}")
    rows = [
        ("RPO at crash (oldest write missing), s", rpos),
        ("mirrord's RPO just before the crash, s", reported),
        ("planned switchover (standby -> peer ACTIVE), s", took),
        ("  of which final flush, s", flushes),
    ]
    for name, vals in rows:
        print(f"{name:<40} {pct(vals, 50):>8.3f} {pct(vals, 99):>8.3f} {max(vals):>8.3f}")
    print(
        f"writes missing on the survivor at a crash: {sum(r['missing'] for r in crashes)}, "
        f"all on the returning node's orphan list: {all(r['lost'] == 0 for r in crashes)}"
    )
    print(f"lost writes (neither mirrored nor listed): {lost}")
    print(json.dumps({
        "bench": "pair",
        "rounds": args.rounds,
        "rate": args.rate,
        "rpo_at_crash_p50_s": round(pct(rpos, 50), 3),
        "rpo_at_crash_p99_s": round(pct(rpos, 99), 3),
        "mirrord_rpo_p99_s": round(pct(reported, 99), 3),
        "switchover_s": round(pct(took, 50), 3),
        "switchover_p99_s": round(pct(took, 99), 3),
        "flush_s": round(pct(flushes, 50), 3),
        "lost_writes": lost,
    }))  # fmt: skip
    return 0 if lost == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
