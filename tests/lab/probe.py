"""Client-side VIP probe: who answers the VIP, every 10 ms, and for how long nobody did.

`VipProbe` runs tests/lab/agent.py inside the client namespace; `analyse` turns its reply log
into a `ProbeResult`. Times are CLOCK_MONOTONIC seconds, the same clock as the test's
`time.monotonic()`, so a test can relate a fault it injected to what the client saw.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.lab.lab import Lab, LabProcess

AGENT = Path(__file__).with_name("agent.py")
# Two MACs whose replies come within this long of each other both "own" the VIP at that time.
DUAL_WINDOW = 0.05


@dataclass(frozen=True)
class Reply:
    """One echo reply as the client saw it."""

    # Monotonic receive time.
    t: float
    # Source MAC of the frame carrying the reply.
    mac: str
    # Echo sequence number (wraps at 65536).
    seq: int


@dataclass(frozen=True)
class Run:
    """Consecutive replies from one MAC."""

    mac: str
    first: float
    last: float
    count: int


@dataclass(frozen=True)
class ProbeResult:
    """What the client saw between `start()` and `stop()`."""

    vip: str
    # Monotonic times of the first and last echo sent.
    started: float
    stopped: float
    # Echo requests sent.
    sent: int
    replies: list[Reply]
    # Longest time without any reply, counted from the first echo to the last one sent.
    outage: float
    # Where that longest gap lies (start, end).
    outage_span: tuple[float, float]
    # Total time during which two or more MACs answered within DUAL_WINDOW of each other.
    dual_time: float
    runs: list[Run] = field(default_factory=list)
    # ARP census (IPv4): for each who-has round, the MACs that answered for the VIP.
    arp_rounds: dict[int, set[str]] = field(default_factory=dict)
    # Seconds between census rounds.
    arp_every: float = 0.0

    @property
    def owner_rounds(self) -> int:
        """How many census rounds saw two or more MACs claim the VIP."""
        return sum(len(macs) > 1 for macs in self.arp_rounds.values())

    @property
    def dual_owner_time(self) -> float:
        """Time during which two nodes held the VIP at once, as the ARP census saw it."""
        return self.owner_rounds * self.arp_every

    @property
    def replies_per_mac(self) -> dict[str, int]:
        """Number of replies from each MAC."""
        counts: dict[str, int] = {}
        for r in self.replies:
            counts[r.mac] = counts.get(r.mac, 0) + 1
        return counts

    @property
    def first_reply(self) -> dict[str, float]:
        """Time of each MAC's first reply."""
        out: dict[str, float] = {}
        for r in self.replies:
            out.setdefault(r.mac, r.t)
        return out

    @property
    def last_reply(self) -> dict[str, float]:
        """Time of each MAC's last reply."""
        return {r.mac: r.t for r in self.replies}

    @property
    def mac_changes(self) -> int:
        """How often the answering MAC changed: 1 for a clean failover, more means flapping."""
        return max(0, len(self.runs) - 1)

    def gaps(self, longer_than: float) -> list[tuple[float, float]]:
        """Return every span without replies longer than longer_than seconds."""
        return [(a, b) for a, b in _spans(self) if b - a > longer_than]

    def summary(self) -> str:
        """One line for logs and the demo."""
        per_mac = " ".join(f"{m}={n}" for m, n in self.replies_per_mac.items())
        return (
            f"probe vip={self.vip} sent={self.sent} replies={len(self.replies)} {per_mac} "
            f"outage={self.outage * 1000:.0f}ms dual={self.dual_time * 1000:.0f}ms "
            f"mac_changes={self.mac_changes} two_owners={self.dual_owner_time * 1000:.0f}ms"
        )


def _spans(res: ProbeResult) -> list[tuple[float, float]]:
    """Consecutive time points (first send, each reply, last send) as spans."""
    points = [res.started, *(r.t for r in res.replies), res.stopped]
    return list(itertools.pairwise(points))


def _union_length(intervals: Iterable[tuple[float, float]]) -> float:
    """Total length covered by the intervals."""
    total = 0.0
    end = float("-inf")
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def analyse(
    vip: str,
    started: float,
    stopped: float,
    sent: int,
    replies: list[Reply],
    *,
    arp_rounds: dict[int, set[str]] | None = None,
    arp_every: float = 0.0,
) -> ProbeResult:
    """Compute outage, dual ownership and runs from the raw replies."""
    replies = sorted(replies, key=lambda r: r.t)
    points = [started, *(r.t for r in replies), stopped]
    outage, span = 0.0, (started, started)
    for a, b in itertools.pairwise(points):
        if b - a > outage:
            outage, span = b - a, (a, b)
    # Dual ownership: a reply from X and one from Y != X within DUAL_WINDOW. A clean handover
    # (X's last reply, then Y's first) must not count, so only spans where X answers again
    # after Y (or Y before X) overlap: build each MAC's presence intervals by joining its
    # replies that are within DUAL_WINDOW of each other, then add up pairwise overlaps.
    presence: dict[str, list[list[float]]] = {}
    for r in replies:
        spans = presence.setdefault(r.mac, [])
        if spans and r.t - spans[-1][1] <= DUAL_WINDOW:
            spans[-1][1] = r.t
        else:
            spans.append([r.t, r.t])
    overlaps: list[tuple[float, float]] = []
    macs = list(presence)
    for i, x in enumerate(macs):
        for y in macs[i + 1 :]:
            for xa, xb in presence[x]:
                for ya, yb in presence[y]:
                    a, b = max(xa, ya), min(xb, yb)
                    if b > a:
                        overlaps.append((a, b))
    runs: list[Run] = []
    for r in replies:
        if runs and runs[-1].mac == r.mac:
            last = runs[-1]
            runs[-1] = Run(r.mac, last.first, r.t, last.count + 1)
        else:
            runs.append(Run(r.mac, r.t, r.t, 1))
    return ProbeResult(
        vip=vip,
        started=started,
        stopped=stopped,
        sent=sent,
        replies=replies,
        outage=outage,
        outage_span=span,
        dual_time=_union_length(overlaps),
        runs=runs,
        arp_rounds=arp_rounds or {},
        arp_every=arp_every,
    )


def read_log(path: Path) -> ProbeResult:
    """Parse an agent probe log into a ProbeResult (a run cut short has no stop line)."""
    vip, started, stopped, sent, arp_every = "", 0.0, 0.0, 0, 0.0
    replies: list[Reply] = []
    arp_rounds: dict[int, set[str]] = {}
    for line in path.read_text().splitlines():
        try:
            rec: dict[str, Any] = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line torn by SIGKILL
        event = rec.get("event")
        if event == "ready":
            vip, started = str(rec["vip"]), float(rec["t"])
            arp_every = float(rec.get("arp_every", 0.0))
        elif event == "stop":
            stopped, sent = float(rec["t"]), int(rec["sent"])
        elif "arp" in rec:
            arp_rounds.setdefault(int(rec["arp"]), set()).add(str(rec["mac"]))
        else:
            replies.append(Reply(float(rec["t"]), str(rec["mac"]), int(rec["seq"])))
    if not stopped:
        stopped = max([started, *(r.t for r in replies)])
    return analyse(vip, started, stopped, sent, replies, arp_rounds=arp_rounds, arp_every=arp_every)


class VipProbe:
    """Ping a VIP from the client namespace every `interval` and record which MAC answers.

    With `udp` (a port) it probes the VIP's UDP echo service (`agent.py echo`) instead of the
    kernel's ICMP: what a client of a frozen service sees, although the kernel still answers.
    """

    def __init__(
        self, lab: Lab, *, node: str = "client", interval: float = 0.01, udp: int = 0
    ) -> None:
        self.lab = lab
        self.node = node
        self.interval = interval
        self.udp = udp
        self._proc: LabProcess | None = None
        self._log: Path | None = None
        self._count = 0

    def start(
        self, vip: str, *, ready_timeout: float = 5.0, arp_every: float | None = None
    ) -> None:
        """Start probing vip (an address without prefix); returns once the agent is sending.

        `arp_every`: seconds between ARP census rounds (None: the agent's default; 0: none).
        The census asks with the client's own addresses, so the answers also refresh the
        client's neighbour entry: a test of what moves that entry turns it off.
        """
        if self._proc is not None:
            raise RuntimeError("probe already running")
        self._count += 1
        # Named per instance too: two probes in one lab must not share (and truncate) a log.
        self._log = self.lab.workdir / f"probe-{self.node}-{id(self):x}-{self._count}.jsonl"
        argv = [
            self.lab.python, str(AGENT), "probe", vip, str(self._log),
            "--interval", str(self.interval),
        ]  # fmt: skip
        if arp_every is not None:
            argv += ["--arp-every", str(arp_every)]
        if self.udp:
            argv += ["--udp", str(self.udp)]
        self._proc = self.lab.spawn(self.node, argv)
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self._log.exists() and self._log.stat().st_size > 0:
                return
            if not self._proc.alive():
                break
            time.sleep(0.005)
        log = self._proc.log_path.read_text() if self._proc.log_path.exists() else ""
        self._proc.stop()
        self._proc = None
        raise RuntimeError(f"probe agent did not start for vip={vip}: {log.strip()}")

    def snapshot(self) -> ProbeResult:
        """What the client saw so far, while the probe keeps running."""
        if self._log is None:
            raise RuntimeError("probe never started")
        return read_log(self._log)

    def wait_for(self, mac: str, count: int = 1, *, timeout: float = 5.0) -> bool:
        """Wait until mac has sent count replies (in total); False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.snapshot().replies_per_mac.get(mac, 0) >= count:
                return True
            time.sleep(0.02)
        return False

    def stop(self) -> ProbeResult:
        """Stop probing and return what the client saw."""
        if self._proc is None or self._log is None:
            raise RuntimeError("probe not running")
        self._proc.stop()
        self._proc = None
        return read_log(self._log)
