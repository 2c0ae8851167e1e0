"""Checker 3 (--vms), the judgement: from samples of the guest on each node, the times each
node's MAC answered the VIP, and the campaign's fault history, which violations.

Pure: no clock, no process, no libvirt; the sampler (tests/campaign/guestwatch.py) observes.

Violations:
(a) the guest runs on both nodes in one sample (a QEMU on each, not stopped, and libvirt says
    running where libvirtd answered: during a live migration the destination is paused);
(b) the guest is destroyed on a node (its QEMU PID gone, or replaced) while that node keeps
    serving: its MAC answers the VIP within HOLD seconds after the guest was seen gone, and the
    node was neither crashed nor fenced nor told to release (a planned `standby` on it or
    `promote` on its peer) around that time;
after quiesce: exactly one node runs the guest, the active (the node answering the VIP).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

# Seconds after the guest was seen gone in which an answer from the node's MAC means it kept
# serving without it.
HOLD = 1.0
# Seconds a crash or fence is excused before it is recorded: the BMC kills the node, the
# supervisor notices within a tick and records "fenced".
OFF_SLACK = 2.0
# Seconds a planned standby / promote may take to move the guest (a final flush, then a live
# migration or a stop and a start).
PLANNED = 40.0

_INJECT = re.compile(r"#\d+ (?P<kind>\w+)(?P<params>.*?) -> node=(?P<node>\S+)")
_NODE = re.compile(r"node=(?P<node>\w+)")


class HistoryEvent(Protocol):
    """One line of the campaign's history (tests/campaign/lab.Event)."""

    t: float
    what: str
    detail: str


@dataclass(frozen=True)
class NodeSample:
    """The guest on one node at one instant."""

    # QEMU PID of the guest (alive), None if no QEMU runs it there.
    pid: int | None = None
    # It runs: QEMU alive, not stopped, and libvirt says running (or libvirtd did not answer).
    running: bool = False
    # What libvirt said ("running", "paused", "shutoff", "absent"), "?" if it did not answer.
    state: str = "absent"


@dataclass(frozen=True)
class Sample:
    """Both nodes at one instant (monotonic seconds)."""

    t: float
    nodes: Mapping[str, NodeSample]


@dataclass(frozen=True)
class Span:
    """A span in which node may lose its guest (it was off, or was told to release)."""

    node: str
    start: float
    end: float
    why: str


def _peer(node: str, nodes: Sequence[str]) -> str:
    return next(n for n in nodes if n != node)


def excuses(
    history: Iterable[HistoryEvent], end: float, nodes: Sequence[str] = ("a", "b")
) -> list[Span]:
    """The spans in which each node may lose its guest, from the campaign's own records:
    a crash (inject) or a fence ("fenced") until the node's "power.on"; a planned standby on
    the node or promote of its peer, for PLANNED seconds."""
    spans: list[Span] = []
    off: dict[str, tuple[float, str]] = {}
    for ev in history:
        if ev.what == "inject":
            m = _INJECT.match(ev.detail)
            if m is None or m["node"] not in nodes:
                continue
            node, kind = m["node"], m["kind"]
            if kind == "crash":
                off.setdefault(node, (ev.t - OFF_SLACK, "crash"))
            elif kind == "planned" and "op=standby" in m["params"]:
                spans.append(Span(node, ev.t, ev.t + PLANNED, "planned standby"))
            elif kind == "planned" and "op=promote" in m["params"]:
                spans.append(Span(_peer(node, nodes), ev.t, ev.t + PLANNED, f"promote of {node}"))
        elif ev.what in ("fenced", "power.on"):
            m = _NODE.search(ev.detail)
            if m is None or m["node"] not in nodes:
                continue
            node = m["node"]
            if ev.what == "fenced":
                off.setdefault(node, (ev.t - OFF_SLACK, "fenced"))
            elif node in off:
                start, why = off.pop(node)
                spans.append(Span(node, start, ev.t, why))
    spans += [Span(n, start, end, why) for n, (start, why) in off.items()]
    return sorted(spans, key=lambda s: s.start)


def _ends(samples: Sequence[Sample]) -> Iterator[tuple[Sample, Sample, str, int]]:
    """Each end of a QEMU seen: (sample before, sample after, node, its PID)."""
    for s0, s1 in itertools.pairwise(samples):
        for n, ns0 in s0.nodes.items():
            if ns0.pid is not None and s1.nodes.get(n, NodeSample()).pid != ns0.pid:
                yield s0, s1, n, ns0.pid


def _excused(spans: Sequence[Span], node: str, t0: float, t1: float) -> bool:
    return any(sp.node == node and sp.start <= t1 and t0 <= sp.end for sp in spans)


def _fmt(s: Sample, origin: float) -> str:
    return (
        ", ".join(
            f"{n}: pid={ns.pid} {ns.state}{' running' if ns.running else ''}"
            for n, ns in sorted(s.nodes.items())
        )
        + f" (at {s.t - origin:.2f})"
    )


def judge(
    samples: Sequence[Sample],
    answered: Mapping[str, Sequence[float]],
    spans: Sequence[Span],
    origin: float = 0.0,
    hold: float = HOLD,
) -> list[str]:
    """Violations (a) and (b) over the samples, oldest first; answered[node]: the times (sorted)
    its MAC answered the VIP."""
    out: list[str] = []
    both: list[Sample] = []
    for s in [*samples, None]:
        if s is not None and sum(ns.running for ns in s.nodes.values()) > 1:
            both.append(s)
            continue
        if both:
            out.append(
                f"(a) the guest runs on both nodes from {both[0].t - origin:.2f} to "
                f"{both[-1].t - origin:.2f} ({len(both)} samples): {_fmt(both[0], origin)}"
            )
            both = []
    for s0, s1, n, pid in _ends(samples):
        seen = [t for t in answered.get(n, ()) if s1.t <= t <= s1.t + hold]
        if not seen or _excused(spans, n, s0.t, s1.t):
            continue
        out.append(
            f"(b) the guest's QEMU (pid {pid}) on {n} is gone between "
            f"{s0.t - origin:.2f} and {s1.t - origin:.2f} while {n} keeps serving "
            f"({n}'s MAC answered the VIP at {seen[0] - origin:.2f}; no crash, fence or "
            f"planned release of {n}): before {_fmt(s0, origin)}; after {_fmt(s1, origin)}"
        )
    return out


def summary(
    samples: Sequence[Sample], answered: Mapping[str, Sequence[float]], spans: Sequence[Span]
) -> str:
    """What checker 3 saw, in one line: the QEMU ends per node, how many fell in an excused
    span, and the samples with a QEMU on both nodes (a migration's paused destination)."""
    ends: dict[str, int] = {}
    excused = 0
    for s0, s1, n, _pid in _ends(samples):
        ends[n] = ends.get(n, 0) + 1
        excused += _excused(spans, n, s0.t, s1.t)
    two = [s for s in samples if all(ns.pid is not None for ns in s.nodes.values())]
    # The other copy in those samples: paused (migration), stopped (a frozen node), or running.
    other: dict[str, int] = {}
    for s in two:
        for ns in s.nodes.values():
            if not ns.running:
                what = "stopped" if ns.state in ("running", "?") else ns.state
                other[what] = other.get(what, 0) + 1
    per_node = ", ".join(f"{n} {c}" for n, c in sorted(ends.items())) or "none"
    answers = ", ".join(f"{n} {len(t)}" for n, t in sorted(answered.items()))
    return (
        f"{len(samples)} samples; QEMU ends: {per_node} ({excused} in an excused span); "
        f"samples with a QEMU on both nodes: {len(two)} (the other copy: "
        f"{', '.join(f'{k} {v}' for k, v in sorted(other.items())) or 'none'}); "
        f"VIP answers per node: {answers}"
    )


def final(sample: Sample | None, active: str | None, origin: float = 0.0) -> list[str]:
    """After quiesce: exactly one node runs the guest, the active (if the pair serves)."""
    if active is None:
        return []
    if sample is None:
        return ["no sample of the guest after quiesce"]
    running = sorted(n for n, ns in sample.nodes.items() if ns.running)
    if running != [active]:
        return [f"after quiesce the guest runs on {running or 'no node'}, the active is {active}: "
                + _fmt(sample, origin)]  # fmt: skip
    return []
