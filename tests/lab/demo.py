"""`make demo`: bring up the lab, show it, show that it works, tear it down.

    python -m tests.lab.demo [--keep]

Each step is a function taking the lab and returning True on success; later issues add steps
(start takeover on both nodes, show `takeover status`, fail over, mirror a change) to STEPS.
The exit status is non-zero if any step fails; the lab is torn down in every case.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

from tests.lab.lab import HB4, IPV4, IPV6, TARGETS, VIP4, Lab, LabError, wait_until
from tests.lab.probe import VipProbe

log = logging.getLogger(__name__)

Step = Callable[[Lab], bool]


def say(text: str) -> None:
    """Print a demo line (stdout, unbuffered)."""
    print(text, flush=True)


def step_topology(lab: Lab) -> bool:
    """Print namespaces, addresses and MACs."""
    say(lab.topology())
    return True


def step_connectivity(lab: Lab) -> bool:
    """Ping across the LAN (IPv4 and IPv6) and the heartbeat link."""
    checks = [
        ("a", IPV4["b"], "a -> b over the LAN"),
        ("a", HB4["b"], "a -> b over hb0"),
        ("b", IPV6["a"], "b -> a over the LAN (IPv6)"),
        *(("client", IPV4[t], f"client -> {t}") for t in TARGETS),
        ("client", IPV6["t1"], "client -> t1 (IPv6)"),
    ]
    ok = True
    for src, dst, what in checks:
        good = lab.ping(src, dst)
        ok &= good
        say(f"  {'ok  ' if good else 'FAIL'} {what} ({dst})")
    return ok


def step_vip_probe(lab: Lab) -> bool:
    """Put the VIP on a, move it to b by hand, and show what the client saw."""
    probe = VipProbe(lab)
    lab.run("a", ["ip", "addr", "add", f"{VIP4}/24", "dev", "lan0"])
    probe.start(VIP4)
    seen_a = probe.wait_for(lab.mac("a"), 20)
    lab.run("a", ["ip", "addr", "del", f"{VIP4}/24", "dev", "lan0"])
    lab.run("b", ["ip", "addr", "add", f"{VIP4}/24", "dev", "lan0"])
    lab.garp("b", VIP4)
    seen_b = probe.wait_for(lab.mac("b"), 20)
    res = probe.stop()
    lab.run("b", ["ip", "addr", "del", f"{VIP4}/24", "dev", "lan0"])
    say(f"  VIP {VIP4} moved a -> b by hand (with a gratuitous ARP from b):")
    say(f"  {res.summary()}")
    say(f"  a={lab.mac('a')} b={lab.mac('b')}")
    return seen_a and seen_b and res.mac_changes == 1


# -- the pair as one (takeover + mirrord on both nodes) --------------------------------------

DEMO_DIR = {"path": "/srv/data", "interval": "500ms", "min_interval": "200ms",
            "max_interval": "2s"}  # fmt: skip
_pair: dict[str, Any] = {}


def _status(pair: Any, node: str) -> None:
    say(f"  $ takeover status   (on {node})")
    for line in pair.takeover_status_text(node).rstrip().splitlines():
        say(f"    {line}")


def step_pair_up(lab: Lab) -> bool:
    """Start sshd, takeover and mirrord on a and b; a wins the election and pushes to b."""
    from tests.e2e.pairlab import PairLab  # noqa: PLC0415  the lab steps need none of it

    pair = PairLab(lab, [DEMO_DIR])
    _pair["pair"] = pair
    pair.start()
    ok = wait_until(lambda: pair.active() == "a" and pair.pushing("a"), 30, 0.1)
    say(f"  takeover + mirrord + sshd on a and b; active: {pair.active()}")
    _status(pair, "a")
    return ok


def step_pair_mirror(lab: Lab) -> bool:
    """A file written on the active appears on the standby."""
    pair = _pair["pair"]
    t0 = time.monotonic()
    (pair.tree("a", "data") / "from-a.txt").write_text("written on a\n")
    ok = wait_until((pair.tree("b", "data") / "from-a.txt").exists, 20, 0.05)
    say(f"  /srv/data/from-a.txt written on a, on b after {time.monotonic() - t0:.2f}s")
    # The journal confirms it (the pass that carried it is recorded): RPO back to 0.
    settled = wait_until(lambda: _dirty(pair, "a") == 0, 20, 0.05)
    return ok and settled


def _dirty(pair: Any, node: str) -> int:
    doc = pair.mirror_status(node) or {}
    return sum(int(d.get("dirty", 0)) + bool(d.get("full_needed")) for d in doc["directories"])


def step_pair_crash(lab: Lab) -> bool:
    """Kill the active; the VIP moves to b while the client keeps asking."""
    pair = _pair["pair"]
    probe = VipProbe(lab)
    probe.start(VIP4)
    seen_a = probe.wait_for(lab.mac("a"), 5, timeout=10)
    (pair.tree("a", "data") / "late.txt").write_text("written on a just before it died\n")
    pair.crash("a")
    say("  /srv/data/late.txt written on a, then at once node a killed (every process "
        "SIGKILLed, its links down): late.txt never reached b")  # fmt: skip
    moved = wait_until(lambda: pair.takeover.role("b") == "ACTIVE", 15, 0.05)
    seen_b = probe.wait_for(lab.mac("b"), 5, timeout=10)
    res = probe.stop()
    say(f"  client's view of {VIP4}: {res.summary()}")
    _status(pair, "b")
    return seen_a and moved and seen_b


def step_pair_return(lab: Lab) -> bool:
    """Write on the new active; bring a back: it becomes standby and receives the file."""
    pair = _pair["pair"]
    (pair.tree("b", "data") / "from-b.txt").write_text("written on b while a was down\n")
    say("  /srv/data/from-b.txt written on b (a is down: b holds it)")
    pair.revive("a")
    back = wait_until(lambda: pair.takeover.role("a") == "STANDBY", 20, 0.1)
    t0 = time.monotonic()
    ok = wait_until((pair.tree("a", "data") / "from-b.txt").exists, 30, 0.1)
    say("  a's mirrord set aside what its journal never saw confirmed, before accepting b's "
        "pushes")  # fmt: skip
    say(f"  a is back as {pair.takeover.role('a')}; from-b.txt on a after "
        f"{time.monotonic() - t0:.2f}s; a pushes: {pair.pushing('a')}")  # fmt: skip
    orphans = pair.mirrord_cli("a", "orphans").stdout.rstrip()
    say("  $ mirrord orphans   (on a)")
    for line in orphans.splitlines():
        say(f"    {line}")
    _status(pair, "a")
    late = [o for o in pair.orphans("a") if o["path"] == "late.txt"]
    return back and ok and not pair.pushing("a") and len(late) == 1


STEPS: list[tuple[str, Step]] = [
    ("the lab", step_topology),
    ("connectivity", step_connectivity),
    ("who answers the VIP", step_vip_probe),
    ("the pair: takeover and mirrord on both nodes", step_pair_up),
    ("a file written on the active reaches the standby", step_pair_mirror),
    ("the active dies: the VIP and the data direction move to b", step_pair_crash),
    ("a returns: it receives what b wrote meanwhile", step_pair_return),
]


def main(argv: list[str] | None = None) -> int:
    """Run every step in a fresh lab; return 0 if all succeed."""
    parser = argparse.ArgumentParser(prog="python -m tests.lab.demo")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    failed: list[str] = []
    t0 = time.monotonic()
    try:
        with Lab(keep=args.keep) as lab:
            say(f"== lab {lab.prefix} up in {lab.up_seconds:.2f}s")
            for title, step in STEPS:
                say(f"== {title}")
                try:
                    ok = step(lab)
                except (LabError, OSError, RuntimeError) as e:
                    say(f"  error: {e}")
                    ok = False
                if not ok:
                    failed.append(title)
        say(f"== lab torn down in {lab.down_seconds:.2f}s; left: {lab.namespaces() or 'nothing'}")
    except LabError as e:
        print(f"demo: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("demo: interrupted; lab torn down", file=sys.stderr)
        return 130
    if failed:
        print(f"demo: failed steps: {', '.join(failed)}", file=sys.stderr)
        return 1
    say(f"== demo ok in {time.monotonic() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
