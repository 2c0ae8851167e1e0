"""The nemesis schedule, drawn from the seed alone: which faults, when, against what.

Pure: no I/O, no clock. `draw(seed, seconds)` returns the same list for the same arguments, so
`--seed S` replays a campaign's schedule. Faults come in groups: a primary fault and, sometimes,
an overlay that starts while it lasts (often a planned `takeover standby` / `promote`). Groups
do not overlap, so at most two faults are active at once, and every fault ends (heals) before
`seconds`. Targets are roles ("active", "standby") resolved when the fault is injected.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Final

# kind: weight  (planned operations are mostly drawn as overlays, see OVERLAY_PLANNED)
KINDS: Final = {
    "crash": 3,  # node power off (processes killed, links down), power on at the end
    "kill": 3,  # takeover or mirrord SIGKILLed, restarted at the end (as systemd would)
    "freeze": 3,  # SIGSTOP of one daemon or of every process of a node, SIGCONT at the end
    "cut": 4,  # direct link, LAN or both: carrier down or frames silently dropped (nftables)
    "hb_loss": 2,  # heartbeat datagrams dropped on one node or both
    "sshd": 2,  # the receiving node's sshd stopped
    "disk_full": 2,  # the standby's mirrored root filled up
    "clock": 2,  # one daemon restarted with its wall clock stepped (faketime)
    "planned": 1,  # `takeover standby` on the active or `promote` on the standby
}
# Chance that a group has an overlay, and that the overlay is a planned operation.
OVERLAY_CHANCE: Final = 0.5
OVERLAY_PLANNED: Final = 0.5
# Seconds: quiet gap before a group, and how long a fault lasts.
GAP: Final = (0.5, 3.5)
DURATION: Final = (2.0, 10.0)
# Seconds of a clock step, either way.
CLOCK_STEP: Final = (5.0, 900.0)


@dataclass(frozen=True)
class Fault:
    """One scheduled fault."""

    # Position in the schedule (1-based).
    n: int
    kind: str
    # Seconds after the nemesis starts: inject, then heal (equal for a planned operation).
    start: float
    end: float
    # What it hits, e.g. {"node": "active", "daemon": "takeover"}.
    params: dict[str, str | float] = field(default_factory=dict)

    def describe(self) -> str:
        """One line: number, kind and parameters."""
        args = " ".join(f"{k}={v}" for k, v in self.params.items())
        return f"#{self.n} {self.kind} {args}".rstrip()


def _params(rng: random.Random, kind: str) -> dict[str, str | float]:
    node = rng.choice(("active", "standby"))
    if kind == "crash":
        return {"node": node}
    if kind == "kill":
        return {"node": node, "daemon": rng.choice(("takeover", "mirrord"))}
    if kind == "freeze":
        return {"node": node, "what": rng.choice(("takeover", "mirrord", "node"))}
    if kind == "cut":
        return {
            "node": node,
            "link": rng.choice(("hb", "lan", "both")),
            "how": rng.choice(("carrier", "drop")),
        }
    if kind == "hb_loss":
        return {"node": rng.choice(("active", "standby", "both"))}
    if kind in ("sshd", "disk_full"):
        return {"node": "standby"}
    if kind == "clock":
        step = round(rng.uniform(*CLOCK_STEP), 1) * rng.choice((1, -1))
        return {"node": node, "daemon": rng.choice(("takeover", "mirrord")), "step": step}
    if kind == "planned":
        return {"op": rng.choice(("standby", "promote"))}
    raise ValueError(f"unknown fault kind {kind!r}")


def _kind(rng: random.Random, exclude: str = "") -> str:
    kinds = [k for k in KINDS if k != exclude]
    return rng.choices(kinds, weights=[KINDS[k] for k in kinds])[0]


def draw(seed: int, seconds: float, warmup: float = 5.0) -> list[Fault]:
    """The schedule of a campaign of `seconds` seconds of faults for `seed`."""
    rng = random.Random(seed)
    faults: list[Fault] = []
    t = warmup
    while True:
        t += rng.uniform(*GAP)
        duration = rng.uniform(*DURATION)
        kind = _kind(rng)
        end = t if kind == "planned" else t + duration
        if end > seconds:
            return faults
        faults.append(Fault(len(faults) + 1, kind, round(t, 2), round(end, 2), _params(rng, kind)))
        group_end = end
        if rng.random() < OVERLAY_CHANCE and end > t:
            start = rng.uniform(t, end)
            over = "planned" if rng.random() < OVERLAY_PLANNED else _kind(rng, exclude=kind)
            o_end = start if over == "planned" else min(seconds, start + rng.uniform(*DURATION))
            faults.append(
                Fault(len(faults) + 1, over, round(start, 2), round(o_end, 2), _params(rng, over))
            )
            group_end = max(group_end, o_end)
        t = group_end
