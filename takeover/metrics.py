"""Prometheus metrics of takeover: the status document mapped to metric families.

Pure: no clock, no I/O; callers pass the document and `wall_now`. The daemon already builds
that document on every transition and every status interval; `SnapshotCollector` maps the
latest one at scrape time (takeover.exporter serves it), so a scrape never sees half of an
update and costs the daemon's loop nothing. Counters come from the document's cumulative
`totals` and heartbeat counters, which start at zero with each daemon process, as Prometheus
counters may.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from takeover.machine import Role

Families = Callable[[Mapping[str, Any], float], list[Metric]]

ROLES = tuple(r.value for r in Role)
# Heartbeat counters of the status document that are not drops.
NOT_DROPS = frozenset({"accepted", "sent", "digest_mismatched"})


class Builder:
    """Make metric families whose every sample carries the same base labels (cluster, node)."""

    def __init__(self, base: Mapping[str, str]) -> None:
        """Start with no families; `base` labels go first on every sample."""
        self.base = dict(base)
        self.families: list[Metric] = []

    def gauge(
        self, name: str, doc: str, value: object, labels: Mapping[str, str] | None = None
    ) -> None:
        """Add one gauge sample; a value that is not a number (None: unknown) adds nothing."""
        self.gauges(name, doc, [(labels or {}, value)])

    def gauges(
        self, name: str, doc: str, samples: Iterable[tuple[Mapping[str, str], object]]
    ) -> None:
        """Add a gauge family with one sample per (labels, value) that has a number."""
        self._add(GaugeMetricFamily, name, doc, samples)

    def counters(
        self, name: str, doc: str, samples: Iterable[tuple[Mapping[str, str], object]]
    ) -> None:
        """Add a counter family (`name` without `_total`; the library appends it)."""
        self._add(CounterMetricFamily, name, doc, samples)

    def age(self, name: str, written: object, wall_now: float) -> None:
        """Add how old the snapshot is (a hung daemon's keeps growing); nothing without a time."""
        then = as_number(written)
        if then is not None:
            doc = "Seconds since the daemon built the status these metrics show."
            self.gauge(name, doc, max(0.0, wall_now - then))

    def states(
        self, name: str, doc: str, label: str, choices: Iterable[str], current: object
    ) -> None:
        """Add one 0/1 gauge per choice, 1 for `current` (nothing when current is unknown)."""
        if current is None:
            return
        self.gauges(name, doc, (({label: c}, c == current) for c in choices))

    def _add(
        self,
        kind: type[GaugeMetricFamily] | type[CounterMetricFamily],
        name: str,
        doc: str,
        samples: Iterable[tuple[Mapping[str, str], object]],
    ) -> None:
        family: GaugeMetricFamily | CounterMetricFamily | None = None
        for labels, value in samples:
            number = as_number(value)
            if number is None:
                continue
            names = [*self.base, *labels]
            if family is None:
                family = kind(name, doc, labels=names)
            values = [*self.base.values(), *(str(v) for v in labels.values())]
            family.add_metric(values, number)
        if family is not None:
            self.families.append(family)


def as_number(value: object) -> float | None:
    """Return a sample value: booleans are 1/0, numbers as they are, anything else None."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float) and not math.isnan(value):
        return float(value)
    return None


def takeover_families(doc: Mapping[str, Any], wall_now: float) -> list[Metric]:
    """Return takeover's metric families for one status document read at `wall_now`."""
    local = doc.get("local") or {}
    f = Builder({"cluster": str(doc.get("cluster", "")), "node": str(local.get("name", ""))})
    f.age("hapair_takeover_status_age_seconds", doc.get("written"), wall_now)
    f.states(
        "hapair_takeover_role",
        "This node's role (1 for the current one).",
        "role",
        ROLES,
        local.get("role"),
    )
    f.gauge("hapair_takeover_epoch", "The pair's epoch as this node knows it.", doc.get("epoch"))
    f.gauge(
        "hapair_takeover_healthy", "1 while the local health checks pass.", local.get("healthy")
    )
    f.gauge("hapair_takeover_lan_up", "1 while the LAN interface has carrier.", local.get("lan_up"))
    f.gauge(
        "hapair_takeover_maintenance",
        "1 while the pair is in maintenance mode (nothing acquired, released or failed over).",
        local.get("maintenance"),
    )
    reload = doc.get("reload")
    if isinstance(reload, Mapping):
        f.gauge(
            "hapair_takeover_reload_ok",
            "1 if the last reload was applied, 0 if it failed (the old configuration runs).",
            reload.get("ok"),
        )
    f.gauge(
        "hapair_takeover_ping_score",
        "Ping targets this node counts down (its arbitration score; lower is better).",
        local.get("score"),
    )
    _peer(f, doc.get("peer") or {})
    links: Mapping[str, Mapping[str, Any]] = doc.get("links") or {}
    f.gauges(
        "hapair_takeover_link_up",
        "1 while a valid heartbeat arrived within deadtime.",
        (({"link": k}, v.get("up")) for k, v in links.items()),
    )
    f.gauges(
        "hapair_takeover_link_last_heard_seconds",
        "Seconds since the last valid heartbeat on this link (absent: never).",
        (({"link": k}, v.get("last_seen_age")) for k, v in links.items()),
    )
    heard = [k for k, v in links.items() if as_number(v.get("last_seen_age")) is not None]
    if heard:
        f.gauge(
            "hapair_takeover_config_digest_match",
            "1 when the peer's heartbeats carry this node's configuration digest, 0 on drift.",
            not any(links[k].get("digest_differs") for k in heard),
        )
    told = (doc.get("drift") or {}).get("sections") or []
    f.gauges(
        "hapair_takeover_config_section_differs",
        "1 for each section of the cluster file that differs from the peer's (check --peer).",
        [({"section": str(name)}, 1) for name in told],
    )
    targets: Mapping[str, str] = doc.get("targets") or {}
    known = {t: s == "up" for t, s in targets.items() if s in ("up", "down")}
    f.gauges(
        "hapair_takeover_ping_target_up",
        "1 up, 0 down (damped; absent: not yet known).",
        (({"target": t}, up) for t, up in known.items()),
    )
    if targets:
        f.gauge(
            "hapair_takeover_ping_targets_up", "Ping targets currently up.", sum(known.values())
        )
    f.gauges(
        "hapair_takeover_vip_held",
        "1 while this node holds the VIP.",
        (
            (
                {"address": str(v.get("address", "")), "interface": str(v.get("interface", ""))},
                bool(v.get("held")),
            )
            for v in doc.get("vips") or []
        ),
    )
    _vms(f, doc.get("vms") or [])
    checks: Mapping[str, Mapping[str, Any]] = doc.get("checks") or {}
    f.gauges(
        "hapair_takeover_check_ok",
        "1 while the health check passes.",
        (({"check": k}, bool(v.get("ok"))) for k, v in checks.items()),
    )
    f.gauge(
        "hapair_takeover_conditions",
        "Warnings `takeover status` shows (drift, rejections).",
        len(doc.get("conditions") or []),
    )
    _counters(f, doc)
    return f.families


def _peer(f: Builder, peer: Mapping[str, Any]) -> None:
    f.gauge(
        "hapair_takeover_peer_up",
        "1 while heartbeats from the peer arrive within deadtime.",
        bool(peer.get("alive")),
    )
    f.gauge(
        "hapair_takeover_peer_last_heard_seconds",
        "Seconds since the last valid heartbeat from the peer (absent: never heard).",
        peer.get("last_heard_age"),
    )
    f.states(
        "hapair_takeover_peer_role",
        "The peer's role as last heard (1 for that one).",
        "role",
        ROLES,
        peer.get("role"),
    )
    f.gauge("hapair_takeover_peer_ping_score", "The peer's score as last heard.", peer.get("score"))


def _vms(f: Builder, vms: Iterable[Mapping[str, Any]]) -> None:
    vms = list(vms)
    f.gauges(
        "hapair_takeover_vm_held",
        "1 while this node holds the VM.",
        (({"vm": str(v.get("name", ""))}, bool(v.get("held"))) for v in vms),
    )
    f.gauges(
        "hapair_takeover_vm_state",
        "The VM's libvirt state on this node (1 for that one).",
        (({"vm": str(v.get("name", "")), "state": str(v.get("state", "unknown"))}, 1) for v in vms),
    )
    f.gauges(
        "hapair_takeover_vm_restarts",
        "Restarts in place within the restart window.",
        (({"vm": str(v.get("name", ""))}, v.get("restarts")) for v in vms),
    )
    f.gauges(
        "hapair_takeover_vm_failed",
        "1 when the VM failed here past its restart budget.",
        (({"vm": str(v.get("name", ""))}, bool(v.get("failed"))) for v in vms),
    )


def _counters(f: Builder, doc: Mapping[str, Any]) -> None:
    totals = doc.get("totals") or {}
    edges = [(e.split("->", 1), n) for e, n in (totals.get("transitions") or {}).items()]
    f.counters(
        "hapair_takeover_transitions",
        "Role transitions of this daemon, by edge.",
        [({"from": e[0], "to": e[1]}, n) for e, n in edges if len(e) == 2],
    )
    f.counters(
        "hapair_takeover_fence_attempts",
        "Fencing operations on the peer, by outcome.",
        (({"outcome": k}, n) for k, n in (totals.get("fence_attempts") or {}).items()),
    )
    f.counters(
        "hapair_takeover_inhibitor_timeouts",
        "Releases that went on without a release inhibitor's word (inhibit_timeout), by name.",
        (({"inhibitor": k}, n) for k, n in (totals.get("inhibitor_timeouts") or {}).items()),
    )
    hb: Mapping[str, object] = doc.get("heartbeat") or {}
    f.counters(
        "hapair_takeover_heartbeats_accepted",
        "Valid heartbeats from the peer.",
        [({}, hb.get("accepted"))],
    )
    f.counters(
        "hapair_takeover_heartbeats_sent",
        "Heartbeat datagrams sent (all links).",
        [({}, hb.get("sent"))],
    )
    f.counters(
        "hapair_takeover_heartbeats_digest_mismatched",
        "Valid heartbeats carrying another configuration digest.",
        [({}, hb.get("digest_mismatched"))],
    )
    f.counters(
        "hapair_takeover_heartbeats_dropped",
        "Datagrams dropped, by reason.",
        (({"reason": k}, v) for k, v in hb.items() if k not in NOT_DROPS),
    )


class SnapshotCollector:
    """A custom Collector: maps the latest snapshot with `families` at each scrape."""

    def __init__(
        self,
        families: Families,
        snapshot: Callable[[], Mapping[str, Any] | None],
        wall: Callable[[], float],
    ) -> None:
        """Map what `snapshot()` returns (None: nothing yet) at `wall()`."""
        self.families = families
        self.snapshot = snapshot
        self.wall = wall

    def collect(self) -> Iterator[Metric]:
        """Yield the families of the latest snapshot (none before the first)."""
        doc = self.snapshot()
        if doc is not None:
            yield from self.families(doc, self.wall())
