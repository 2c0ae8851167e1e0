"""Prometheus metrics of mirrord: its status document mapped to metric families.

Pure: no clock, no I/O; callers pass the document and `wall_now`. The cumulative figures the
document carries for the counters and the pass-duration histogram come from
`mirrord.tally.PassTally`, since the planner keeps only the last pass. takeover.exporter serves
the families of the daemon's latest document.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client.core import HistogramMetricFamily
from prometheus_client.metrics_core import Metric

from mirrord.tally import DURATION_BUCKETS
from takeover.metrics import Builder


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
