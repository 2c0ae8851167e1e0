"""Prometheus metrics of mirrord: its status document mapped to metric families.

Pure: no clock, no I/O; callers pass the document and `wall_now`. `PassTally` keeps the
cumulative figures the document carries for the counters and the pass-duration histogram
(passes by result, bytes sent, durations in buckets), since the planner keeps only the last
pass. takeover.exporter serves the families of the daemon's latest document.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import HistogramMetricFamily
from prometheus_client.metrics_core import Metric

from takeover.metrics import Builder

# Upper bounds of the pass-duration buckets, seconds: a dirty-path pass over ssh takes tens of
# milliseconds, a full pass of a large tree minutes.
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)


@dataclass
class _Tally:
    passes: Counter[str] = field(default_factory=Counter)
    bytes_sent: int = 0
    # Passes per bucket (not cumulative); the last one is +Inf.
    buckets: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS) + 1))
    seconds: float = 0.0


class PassTally:
    """Cumulative pass figures per directory since the daemon started."""

    def __init__(self) -> None:
        """Start every directory at zero."""
        self._dirs: dict[str, _Tally] = {}

    def record(self, root: str, result: str, duration: float, bytes_sent: int) -> None:
        """Count one finished pass of `root`."""
        t = self._dirs.setdefault(root, _Tally())
        t.passes[result] += 1
        t.bytes_sent += max(0, bytes_sent)
        t.buckets[bisect.bisect_left(DURATION_BUCKETS, duration)] += 1
        t.seconds += max(0.0, duration)

    def of(self, root: str) -> dict[str, Any]:
        """Return the JSON-ready totals of `root` (zeros before its first pass)."""
        t = self._dirs.get(root) or _Tally()
        return {
            "passes": dict(t.passes),
            "bytes_sent": t.bytes_sent,
            "duration": {"buckets": list(t.buckets), "sum": round(t.seconds, 6)},
        }


def mirrord_families(doc: Mapping[str, Any], wall_now: float) -> list[Metric]:
    """Return mirrord's metric families for one status document read at `wall_now`."""
    f = Builder({"node": str(doc.get("node") or "")})
    f.age("hapair_mirrord_status_age_seconds", doc.get("updated"), wall_now)
    follow = doc.get("follow") or {}
    pushing = bool(follow.get("pushing"))
    f.gauge("hapair_mirrord_pushing", "1 while this node pushes its directories.", pushing)
    f.gauge(
        "hapair_mirrord_receiving", "1 while the peer pushes to this node.", follow.get("receiving")
    )
    dirs: list[Mapping[str, Any]] = [d for d in doc.get("directories") or [] if isinstance(d, dict)]

    def each(key: str) -> list[tuple[dict[str, str], object]]:
        return [({"directory": str(d.get("directory"))}, d.get(key)) for d in dirs]

    if pushing:
        # A receiving node's planner RPO means nothing: the peer's is the one that counts.
        f.gauges(
            "hapair_mirrord_rpo_seconds",
            "Age of the oldest change not yet on the peer (0: nothing pending).",
            each("rpo"),
        )
    f.gauges("hapair_mirrord_dirty_paths", "Paths changed and not yet sent.", each("dirty"))
    f.gauges(
        "hapair_mirrord_alarm",
        "1 while the directory is in alarm (needs an operator).",
        [(k, bool(v)) for k, v in each("alarm")],
    )
    f.gauges(
        "hapair_mirrord_full_pass_needed",
        "1 while a full pass is pending (start-up, overflow, unwatched).",
        [(k, bool(v)) for k, v in each("full_needed")],
    )
    f.gauges("hapair_mirrord_interval_seconds", "Current adaptive interval.", each("interval"))
    f.gauges(
        "hapair_mirrord_max_interval_seconds", "The policy's max_interval.", each("max_interval")
    )
    f.gauges("hapair_mirrord_consecutive_failures", "Passes failed in a row.", each("failures"))
    f.gauges(
        "hapair_mirrord_last_pass_timestamp_seconds",
        "Wall-clock time the last pass ended.",
        each("last_finished"),
    )
    orphans = doc.get("orphans")
    if isinstance(orphans, Mapping):
        f.gauges(
            "hapair_mirrord_orphans",
            "Changes set aside on this node that never reached the peer (`mirrord orphans`).",
            [(k, orphans.get(k["directory"], 0)) for k, _ in each("directory")],
        )
    totals = [({"directory": str(d.get("directory"))}, d.get("totals") or {}) for d in dirs]
    f.counters(
        "hapair_mirrord_passes",
        "Passes ended, by result (ok, retry, alarm).",
        [({**k, "result": r}, n) for k, t in totals for r, n in (t.get("passes") or {}).items()],
    )
    f.counters(
        "hapair_mirrord_sent_bytes",
        "Bytes rsync sent.",
        [(k, t.get("bytes_sent")) for k, t in totals],
    )
    hist = HistogramMetricFamily(
        "hapair_mirrord_pass_duration_seconds",
        "How long passes took.",
        labels=[*f.base, "directory"],
    )
    for k, t in totals:
        d = t.get("duration") or {}
        counts = d.get("buckets")
        if not isinstance(counts, list) or len(counts) != len(DURATION_BUCKETS) + 1:
            continue
        cumulative, running = [], 0
        for bound, n in zip([*map(str, DURATION_BUCKETS), "+Inf"], counts, strict=True):
            running += int(n)
            cumulative.append((bound, float(running)))
        hist.add_metric([*f.base.values(), k["directory"]], cumulative, float(d.get("sum") or 0))
    if hist.samples:
        f.families.append(hist)
    return f.families
