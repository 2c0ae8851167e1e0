"""Cumulative pass figures per directory, for the status document and so the metrics.

Pure: the daemon records each finished pass; `mirrord.metrics` maps the totals to Prometheus
families at a scrape. Apart from it so that the daemon does not load prometheus_client unless
its metrics are served.
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

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
