"""One campaign: build the pair, run the workload and the nemesis, quiesce, check, report."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from tests.campaign import checks, guests
from tests.campaign.checks import Verdict
from tests.campaign.guestwatch import GuestWatch
from tests.campaign.lab import AGENTS, DAEMONS, SERVICE_PORT, CampaignLab, Event
from tests.campaign.nemesis import Nemesis
from tests.campaign.schedule import Fault, draw
from tests.lab.lab import HA_NODES, VIP4, Lab, wait_until
from tests.lab.libvirt_hosts import LibvirtPair
from tests.lab.probe import VipProbe

# Seconds the client keeps writing once the VIP answers after the last heal.
TAIL_WRITES = 5.0
# Seconds allowed for the trees to converge after the client stops.
QUIESCE = 120.0


@dataclass
class Result:
    """What a campaign found."""

    seed: int
    minutes: float
    faults: list[Fault]
    history: list[Event]
    verdicts: list[Verdict]
    acked_writes: int = 0
    lost_writes: int = 0
    dual_owner_ms: float = 0.0
    max_unavailable_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def violations(self) -> int:
        """Number of violations over every checker."""
        return sum(len(v.violations) for v in self.verdicts)

    def json_line(self) -> str:
        """The bench line the issue asks for."""
        return json.dumps({
            "bench": "campaign", "seed": self.seed, "minutes": self.minutes,
            "faults": len(self.faults), "violations": self.violations,
            "acked_writes": self.acked_writes, "lost_writes": self.lost_writes,
            "dual_owner_ms": round(self.dual_owner_ms, 1),
            "max_unavailable_s": round(self.max_unavailable_s, 3),
        })  # fmt: skip


def run(seed: int, minutes: float, out: IO[str] = sys.stdout, vms: bool = False) -> Result:
    """Run one campaign of `minutes` minutes of faults; print its report to out."""
    seconds = minutes * 60
    schedule = draw(seed, seconds)
    history: list[Event] = []
    origin = time.monotonic()

    def say(ev: Event) -> None:
        history.append(ev)
        print(f"  {ev.t - origin:8.2f}  {ev.what:<16} {ev.detail}", file=out, flush=True)

    print(f"campaign seed={seed} minutes={minutes} faults={len(schedule)}", file=out, flush=True)
    lab = Lab()
    lab.up()
    cl: CampaignLab | None = None
    lv: LibvirtPair | None = None
    watch: GuestWatch | None = None
    probe = VipProbe(lab)
    probing = False
    try:
        lv = LibvirtPair(lab).start() if vms else None
        cl = CampaignLab(lab, seed, say, libvirt=lv)
        cl.start_all()
        if not wait_until(lambda: len(cl.holders()) == 1, 60, 0.2):
            raise RuntimeError("no node took the VIP at start-up")
        active = cl.holders()[0]
        if not wait_until(lambda: cl.mirrord_answers(active), 60, 0.2):
            raise RuntimeError(f"mirrord on {active} did not answer at start-up")
        if lv is not None and cl.guest is not None:
            watch = GuestWatch(lv, cl.guest).start()
            if not wait_until(lambda: watch.running_on() == [active], 60, 0.2):
                raise RuntimeError(f"the guest does not run on {active} at start-up")
        probe.start(VIP4)
        probing = True
        client_log = lab.workdir / "client.jsonl"
        writer = lab.spawn("client", [lab.python, str(AGENTS), "write", VIP4, str(SERVICE_PORT),
                                      str(seed), str(client_log)])  # fmt: skip
        cl.supervise()
        nemesis = Nemesis(cl)
        start = time.monotonic()
        cl.event("nemesis.start", f"active={active}")
        steps = sorted(
            [(f.start, 1, "inject", f) for f in schedule]
            + [(f.end, 0, "heal", f) for f in schedule if f.kind != "planned"],
            key=lambda s: (s[0], s[1]),
        )
        in_force: set[int] = set()
        all_healed: list[float] = []
        injected_at: list[float] = []
        for at, _, what, f in steps:
            time.sleep(max(0.0, start + at - time.monotonic()))
            if what == "inject":
                injected_at.append(time.monotonic())
                did = nemesis.inject(f)
                cl.event("inject", f"{f.describe()} -> {did}")
                if f.kind != "planned":
                    in_force.add(f.n)
            else:
                nemesis.heal(f)
                cl.event("heal", f.describe())
                in_force.discard(f.n)
                if not in_force:
                    all_healed.append(time.monotonic())
        time.sleep(max(0.0, start + seconds - time.monotonic()))
        cl.event("nemesis.end")
        # A node fenced near the end is powered on by the supervisor: wait for it.
        wait_until(lambda: not any(cl.state[n].off for n in HA_NODES), 30, 0.2)
        last_heal = time.monotonic()
        all_healed.append(last_heal)
        bound = cl.heal_bound()
        vip_back = wait_until(lambda: _answered_since(probe, last_heal), bound, 0.5)
        time.sleep(TAIL_WRITES if vip_back else 0)
        writer.stop()
        cl.event("writer.stop")
        res = _quiesce_and_check(cl, seed, minutes, schedule, history, probe, client_log,
                                 all_healed, injected_at, bound, origin, watch)  # fmt: skip
        probing = False
        report(res, out, origin)
        return res
    finally:
        if probing:
            probe.stop()
        if watch is not None:
            watch.stop()
        if cl is not None:
            cl.close()
        if lv is not None:
            lv.stop()
        lab.teardown()
        if cl is not None:
            cl.unmount()


def _quiesce_and_check(  # noqa: PLR0917  one call site, every piece the checkers judge
    cl: CampaignLab,
    seed: int,
    minutes: float,
    schedule: list[Fault],
    history: list[Event],
    probe: VipProbe,
    client_log: Any,
    all_healed: list[float],
    injected_at: list[float],
    bound: float,
    origin: float,
    watch: GuestWatch | None = None,
) -> Result:
    lab = cl.lab
    macs = {lab.mac(n): n for n in HA_NODES}
    last = probe.snapshot()
    final_mac = last.replies[-1].mac if last.replies else None
    active = macs.get(final_mac) if final_mac else None
    trees = {n: cl.pair.tree(n, "hot") for n in HA_NODES}
    converged = False
    if active is not None:
        converged = wait_until(lambda: not checks.tree_diff(trees["a"], trees["b"]), QUIESCE, 1.0)
    if watch is not None and active is not None:
        # The guest follows the VIP (a start or a migration): give it the same time.
        wait_until(lambda: watch.running_on() == [active], bound, 0.5)
    cl.event("quiesce", f"active={active} converged={converged}")
    res_probe = probe.stop()
    samples = watch.stop() if watch is not None else []
    verdicts: list[Verdict] = []

    # 1. census
    v1 = Verdict("census", checked=len(res_probe.arp_rounds))
    for rnd, seen in sorted(res_probe.arp_rounds.items()):
        if len(seen) > 1:
            t = res_probe.started + rnd * res_probe.arp_every - origin
            names = sorted(macs.get(m, m) for m in seen)
            v1.violations.append(f"census round {rnd} at {t:.2f}: two MACs answer: {names}")
    verdicts.append(v1)

    # 2. writes
    records = checks.acked(client_log)
    active_tree = trees[active] if active else None
    others = [trees[n] for n in HA_NODES if n != active]
    v2, lost = checks.check_writes(seed, records, active_tree, others, origin)
    verdicts.append(v2)

    # 3. vms
    if watch is None:
        verdicts.append(Verdict("vms", notes=["not run (no --vms)"]))
    else:
        answered: dict[str, list[float]] = {n: [] for n in HA_NODES}
        for r in res_probe.replies:
            if r.mac in macs:
                answered[macs[r.mac]].append(r.t)
        spans = guests.excuses(history, time.monotonic())
        v3 = Verdict("vms", checked=len(samples))
        v3.violations += guests.judge(samples, answered, spans, origin)
        v3.violations += guests.final(samples[-1] if samples else None, active, origin)
        v3.notes.append(guests.summary(samples, answered, spans))
        v3.notes.append("excused spans: " + "; ".join(
            f"{sp.node} {sp.why} {sp.start - origin:.1f}-{sp.end - origin:.1f}" for sp in spans
        ))  # fmt: skip
        verdicts.append(v3)

    # 4. trees
    v4 = Verdict("trees", checked=1)
    diff = checks.tree_diff(trees["a"], trees["b"]) if active else ["no active"]
    if diff:
        v4.violations.append(f"trees differ after {QUIESCE:.0f} s of quiesce: " + "; ".join(diff))
    verdicts.append(v4)

    # 5. heal
    v5 = Verdict("heal", checked=len(all_healed))
    replies = [r.t for r in res_probe.replies]
    for h in all_healed:
        nxt = min((t for t in injected_at if t > h), default=float("inf"))
        first = next((t for t in replies if t > h), None)
        if first is not None and first - h <= bound and first < nxt:
            continue
        if first is not None and first < nxt and first - h > bound:
            v5.violations.append(f"VIP silent {first - h:.1f} s after the heal at {h - origin:.2f} "
                                 f"(bound {bound:.1f} s)")  # fmt: skip
        elif nxt - h >= bound:
            v5.violations.append(
                f"VIP silent after the heal at {h - origin:.2f} for over {bound:.1f} s"
            )
        else:
            v5.notes.append(f"heal at {h - origin:.2f}: next fault came {nxt - h:.1f} s "
                            "later, before the VIP answered (inside the bound)")  # fmt: skip
    verdicts.append(v5)

    # 6. daemons
    v6 = Verdict("daemons")
    for n in HA_NODES:
        for name in ("takeover", "mirrord", "service"):
            for tb in checks.tracebacks(lab.workdir / f"{name}-{n}.log"):
                v6.violations.append(f"{name} on {n} logged a traceback: {tb}")
    v6.violations += [f"unexpected exit: {u}" for u in cl.unexpected]
    for n in HA_NODES:
        for daemon in DAEMONS:
            v6.checked += 1
            proc = cl.procs[n].get(daemon)
            state = checks.proc_state(proc.pid) if proc else ""
            if state in ("", "Z", "T", "t"):
                v6.violations.append(f"{daemon} on {n} at the end: state {state or 'gone'!r}")
        if not cl.mirrord_answers(n):
            v6.violations.append(f"mirrord on {n} does not answer its control socket")
        proc = cl.procs[n].get("takeover")
        if proc and not _uses_cpu(proc.pid):
            v6.violations.append(f"takeover on {n} used no CPU for 3 s (hung?)")
    verdicts.append(v6)

    return Result(
        seed=seed, minutes=minutes, faults=schedule, history=history, verdicts=verdicts,
        acked_writes=len(records), lost_writes=lost,
        dual_owner_ms=res_probe.dual_owner_time * 1000, max_unavailable_s=res_probe.outage,
        extra={"active": active, "converged": converged, "bound": bound},
    )  # fmt: skip


def _answered_since(probe: VipProbe, t: float) -> bool:
    """Whether the VIP has answered the probe since monotonic time t."""
    replies = probe.snapshot().replies
    return bool(replies) and replies[-1].t > t


def _uses_cpu(pid: int, seconds: float = 3.0) -> bool:
    def ticks() -> int:
        try:
            text = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return -1
        fields = text[text.rindex(")") + 2 :].split()
        return int(fields[11]) + int(fields[12])

    before = ticks()
    time.sleep(seconds)
    after = ticks()
    return before >= 0 and after > before


def report(res: Result, out: IO[str], origin: float) -> None:
    """Print violations (with seed and history), the table, and the JSON line last."""
    if res.violations:
        print(f"\nVIOLATIONS (seed {res.seed}; replay: python -m tests.campaign --seed "
              f"{res.seed} --minutes {res.minutes:g})", file=out)  # fmt: skip
        print("fault history:", file=out)
        for ev in res.history:
            print(f"  {ev.t - origin:8.2f}  {ev.what:<16} {ev.detail}", file=out)
        print("what each checker saw:", file=out)
        for v in res.verdicts:
            print(f"  [{v.name}] checked={v.checked} violations={len(v.violations)}", file=out)
            for line in v.violations[:30]:
                print(f"     ! {line}", file=out)
            for line in v.notes[:10]:
                print(f"     - {line}", file=out)
    kinds = Counter(f.kind for f in res.faults)
    print("\nfaults injected by kind:", file=out)
    for kind, n in sorted(kinds.items()):
        print(f"  {kind:<10} {n:5d}", file=out)
    print(f"  {'total':<10} {len(res.faults):5d}", file=out)
    print("\nchecks:", file=out)
    print(f"  {'checker':<10} {'checked':>8} {'violations':>10}", file=out)
    for v in res.verdicts:
        print(f"  {v.name:<10} {v.checked:8d} {len(v.violations):10d}", file=out)
    for v in res.verdicts:
        if v.name == "vms" and v.checked:
            print(f"\nguests: {v.notes[0]}", file=out)
    print(f"\nacked writes {res.acked_writes}, lost {res.lost_writes}; two owners "
          f"{res.dual_owner_ms:.0f} ms; longest VIP silence {res.max_unavailable_s:.1f} s; "
          f"active at the end {res.extra.get('active')}", file=out)  # fmt: skip
    print(res.json_line(), file=out, flush=True)


def main(argv: list[str] | None = None) -> int:
    """`python -m tests.campaign --seed S --minutes M [--vms]`."""
    p = argparse.ArgumentParser(prog="python -m tests.campaign")
    p.add_argument("--seed", type=int, default=None, help="default: random (printed)")
    p.add_argument("--minutes", type=float, default=3.0)
    p.add_argument("--vms", action="store_true", help="also run a guest (checker 3)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(3))
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    res = run(seed, args.minutes, vms=args.vms)
    return 1 if res.violations else 0
