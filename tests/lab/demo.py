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

from tests.lab.lab import HB4, IPV4, IPV6, TARGETS, VIP4, Lab, LabError
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


STEPS: list[tuple[str, Step]] = [
    ("the lab", step_topology),
    ("connectivity", step_connectivity),
    ("who answers the VIP", step_vip_probe),
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
