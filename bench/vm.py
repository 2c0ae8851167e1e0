"""`make bench-vm`: fence time, VM start time on takeover, live-migration time.

    python -m bench.vm [--runs N] [--memory MIB]

One lab with a real libvirtd in nodes a and b (tests.lab.libvirt_hosts) and an OpenIPMI
ipmi_sim BMC for b whose power-off crashes lab node b (every process SIGKILLed, links down).
Each run:

1. b runs a tiny BIOS-only TCG guest; a fences b through the BMC (power off, confirmed off):
   `fence_s`; then a starts the guest (define from the shared XML, start, running): `start_s`;
   the two back to back are `fence_and_start_s` (the takeover path of a crashed VM host).
2. b comes back (links up, libvirtd restarted) and reconciles its stale definition.
3. the guest is live-migrated a -> b and back (p2p, PERSIST_DEST|UNDEFINE_SOURCE): `migrate_s`
   (each direction is one sample).
4. the guest's QEMU on a is SIGKILLed; the monitor restarts it in place: `restart_s` (kill to
   a new QEMU running, as libvirt reports it).

Then, as many runs with the takeover daemons on both nodes (tests.lab.vm_pair: BMCs on the lab
LAN, a active with the guest): node a is crashed; b's daemon notices, arbitrates, fences a
through its BMC and starts the guest. `daemon_failover_s` is crash to the guest running on b
(libvirt's view); `daemon_fence_and_start_s` is b's own FENCING transition to its
`vm.acquired` line (both from b's log), the daemon's share of the fence + start path.

Prints a table (median/min/max) and, last, one JSON line with the medians.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import statistics
import sys
import time
import uuid
from collections.abc import Callable

from takeover.backends.libvirt import VmResource, VmSpec
from takeover.fencing.ipmi import IpmiFencer
from tests.lab.bmc import SimBmc, power_off_node_argv
from tests.lab.lab import Lab
from tests.lab.libvirt_hosts import LibvirtPair
from tests.lab.vm_pair import VmLab, VmPair, start_bmcs

log = logging.getLogger("bench.vm")

METRICS = (
    "fence_s",
    "start_s",
    "fence_and_start_s",
    "migrate_s",
    "restart_s",
    "daemon_failover_s",
    "daemon_fence_and_start_s",
)
# Generous bound for one wait in the daemon runs, seconds.
DAEMON_WAIT = 60.0


def one_run(lab: Lab, pair: LibvirtPair, memory: int, samples: dict[str, list[float]]) -> None:
    """Fence + start, reconcile, two migrations; append each measurement to `samples`."""
    name = f"bench-{uuid.uuid4().hex[:6]}"
    xml = pair.write_guest(name, memory)
    res = {h: VmResource(VmSpec(name, xml, pair[h].uri, stop_timeout=1.0)) for h in ("a", "b")}
    try:
        with SimBmc(on_power_off=power_off_node_argv(lab, "b")) as bmc:
            fencer = IpmiFencer(bmc.address, bmc.port, bmc.user, bmc.write_password_file(), 10.0)
            # As the daemon does at start-up: a worker is ready before the peer is lost.
            fencer.prepare()
            try:
                res["b"].acquire()
                t0 = time.monotonic()
                fenced = fencer.power_off_and_confirm()
                t1 = time.monotonic()
            finally:
                fencer.close()
        if not fenced.ok:
            raise RuntimeError(f"fencing failed: {fenced.error}: {fenced.detail}")
        t2 = time.monotonic()
        res["a"].acquire()
        t3 = time.monotonic()
        samples["fence_s"].append(t1 - t0)
        samples["start_s"].append(t3 - t2)
        samples["fence_and_start_s"].append((t1 - t0) + (t3 - t2))
        lab.revive_node("b")
        pair["b"].start()
        res["b"].reconcile(owner_elsewhere=True)
        for src, dst in (("a", "b"), ("b", "a")):
            result = res[src].migrate(pair[dst].tcp_uri)
            if result.method != "live":
                raise RuntimeError(f"live migration {src}->{dst} failed: {result.error}")
            samples["migrate_s"].append(result.elapsed)
            res[dst].acquire()  # adopts the migrated guest: the destination now holds it
        samples["restart_s"].append(crash_and_restart(pair, res["a"], name))
    finally:
        for r in res.values():
            r.close()
        for h in ("a", "b"):
            if pair[h].running():
                pair[h].clear()


def crash_and_restart(pair: LibvirtPair, vm: VmResource, name: str) -> float:
    """SIGKILL the guest's QEMU on a; seconds until the monitor has a new one running."""
    vm.start_monitor()
    pid = pair["a"].qemu_pid(name)
    if pid is None:
        raise RuntimeError("no QEMU on a to kill")
    t0 = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    while True:
        new = pair["a"].qemu_pid(name)
        if new not in (None, pid) and vm.describe()["state"] == "running":
            return time.monotonic() - t0
        if time.monotonic() - t0 > 60:
            raise RuntimeError("guest not restarted within 60 s")
        time.sleep(0.02)


def wait(pred: Callable[[], object], what: str, interval: float = 0.02) -> None:
    """Poll `pred` until true; raise naming `what` after DAEMON_WAIT seconds."""
    deadline = time.monotonic() + DAEMON_WAIT
    while not pred():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(interval)


def log_time(line: str) -> float:
    """Seconds since midnight of a daemon log line ("HH:MM:SS.mmm ...")."""
    hh, mm, ss = line.split(" ", 1)[0].split(":")
    return int(hh) * 3600 + int(mm) * 60 + float(ss)


def fence_to_acquired(text: str, name: str) -> float:
    """Seconds from the last FENCING transition before `name` was acquired to that line.

    The daemon log is appended to across runs: only the latest takeover counts.
    """
    lines = text.splitlines()
    done = next(i for i, line in enumerate(lines) if f"vm.acquired name={name}" in line)
    fencing = next(i for i in range(done, -1, -1) if "to=FENCING" in lines[i])
    return (log_time(lines[done]) - log_time(lines[fencing])) % 86400


def daemon_failover(vl: VmLab, samples: dict[str, list[float]]) -> None:
    """Crash the active node under the daemons; time b's fence + start of the guest."""
    vp = VmPair(vl)
    try:
        vp.pair.start()
        wait(lambda: vp.vm_status("a").get("holder") == "a", "a to hold the guest", 0.1)
        wait(lambda: vp.pair.role("b") == "STANDBY", "b standby", 0.1)
        t0 = time.monotonic()
        vl.lab.kill_node("a")
        wait(lambda: vp.state("b") == "running", "the guest running on b")
        samples["daemon_failover_s"].append(time.monotonic() - t0)
        wait(lambda: f"vm.acquired name={vp.name}" in vp.pair.log("b"), "b's vm.acquired")
        took = fence_to_acquired(vp.pair.log("b"), vp.name)
        samples["daemon_fence_and_start_s"].append(took)
    finally:
        vp.close()


def summarize(samples: dict[str, list[float]], runs: int, memory: int) -> dict[str, object]:
    """The JSON summary: medians of every metric."""
    out: dict[str, object] = {"bench": "vm", "runs": runs, "guest_mib": memory}
    for m in METRICS:
        out[m] = round(statistics.median(samples[m]), 3) if samples[m] else None
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table and the JSON line."""
    ap = argparse.ArgumentParser(prog="python -m bench.vm", description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5, help="runs (default 5)")
    ap.add_argument("--memory", type=int, default=16, help="guest memory in MiB (default 16)")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s %(message)s")
    samples: dict[str, list[float]] = {m: [] for m in METRICS}
    with Lab() as lab, LibvirtPair(lab) as pair:
        bmcs = start_bmcs(lab)
        try:
            for i in range(a.runs):
                daemon_failover(VmLab(lab, pair, bmcs), samples)
                print(
                    f"daemon run {i + 1}/{a.runs}: crash to guest on b "
                    f"{samples['daemon_failover_s'][-1]:.3f}s, fence+start "
                    f"{samples['daemon_fence_and_start_s'][-1]:.3f}s",
                    file=sys.stderr,
                )
        finally:
            for bmc in bmcs.values():
                bmc.stop()
        for i in range(a.runs):
            one_run(lab, pair, a.memory, samples)
            print(
                f"run {i + 1}/{a.runs}: fence {samples['fence_s'][-1]:.3f}s "
                f"start {samples['start_s'][-1]:.3f}s "
                f"migrate {samples['migrate_s'][-2]:.3f}s/{samples['migrate_s'][-1]:.3f}s "
                f"restart {samples['restart_s'][-1]:.3f}s",
                file=sys.stderr,
            )
    print()
    print(f"VM benchmark: {a.runs} runs, {a.memory} MiB BIOS-only TCG guest, ipmi_sim BMC")
    print()
    print("| metric | median | min | max | n |")
    print("|---|---|---|---|---|")
    for m in METRICS:
        v = samples[m]
        print(f"| {m} | {statistics.median(v):.3f} | {min(v):.3f} | {max(v):.3f} | {len(v)} |")
    print()
    print(json.dumps(summarize(samples, a.runs, a.memory)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
