"""The metrics mapping: status documents in, Prometheus samples out (through the exposition)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mirrord.metrics import mirrord_families
from mirrord.tally import DURATION_BUCKETS, PassTally
from takeover.metrics import SnapshotCollector, takeover_families

WALL = 1_000_000.0
BASE = {"cluster": "lab", "node": "a"}


def takeover_doc(**over: Any) -> dict[str, Any]:
    """Return a status document like the daemon writes for an ACTIVE node with a live peer."""
    doc: dict[str, Any] = {
        "written": WALL - 0.5,
        "cluster": "lab",
        "epoch": 7,
        "local": {"name": "a", "role": "ACTIVE", "score": 1, "healthy": True, "lan_up": True},
        "peer": {
            "name": "b",
            "role": "STANDBY",
            "alive": True,
            "last_heard_age": 0.12,
            "score": 0,
        },
        "links": {
            "direct": {"up": True, "last_seen_age": 0.1, "digest_differs": False},
            "lan": {"up": False, "last_seen_age": None},
        },
        "targets": {"192.0.2.1": "up", "192.0.2.2": "down", "192.0.2.3": "unknown"},
        "vips": [{"address": "192.0.2.100/24", "interface": "lan0", "held": True}],
        "vms": [{"name": "web", "held": True, "state": "running", "restarts": 1, "failed": None}],
        "checks": {"smtp": {"ok": False}},
        "conditions": [],
        "heartbeat": {
            "accepted": 40,
            "sent": 80,
            "digest_mismatched": 0,
            "bad_mac": 3,
            "replayed": 0,
        },
        "totals": {
            "transitions": {
                "STARTING->STANDBY": 1,
                "STANDBY->ARBITRATING": 1,
                "ARBITRATING->ACTIVE": 1,
            },
            "fence_attempts": {"ok": 1, "failed": 2},
            "inhibitor_timeouts": {"mirrord": 1},
        },
    }
    doc.update(over)
    return doc


def scrape(
    families: Callable[[Mapping[str, Any], float], list[Any]],
    doc: Any,
    base: Mapping[str, str] = BASE,
) -> dict[str, Any]:
    """Expose `doc` through a registry as a scrape would; return {(name, labels): value}."""
    registry = CollectorRegistry()
    registry.register(SnapshotCollector(families, lambda: doc, lambda: WALL))
    text = generate_latest(registry).decode()
    out: dict[Any, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            labels = {k: v for k, v in s.labels.items() if k not in base}
            assert {k: s.labels[k] for k in base} == base, s
            out[(s.name, tuple(sorted(labels.items())))] = s.value
    return out


def value(samples: dict[Any, float], name: str, **labels: str) -> float | None:
    """Return one sample's value, or None when it is absent."""
    return samples.get((name, tuple(sorted(labels.items()))))


TAKEOVER_CASES = [
    # (what the document says, metric, labels, expected value; None = absent)
    ({}, "hapair_takeover_role", {"role": "ACTIVE"}, 1.0),
    ({}, "hapair_takeover_role", {"role": "STANDBY"}, 0.0),
    ({}, "hapair_takeover_status_age_seconds", {}, 0.5),
    ({}, "hapair_takeover_epoch", {}, 7.0),
    ({}, "hapair_takeover_peer_up", {}, 1.0),
    ({}, "hapair_takeover_peer_last_heard_seconds", {}, 0.12),
    ({}, "hapair_takeover_peer_role", {"role": "STANDBY"}, 1.0),
    ({}, "hapair_takeover_link_up", {"link": "lan"}, 0.0),
    ({}, "hapair_takeover_link_last_heard_seconds", {"link": "direct"}, 0.1),
    ({}, "hapair_takeover_link_last_heard_seconds", {"link": "lan"}, None),
    ({}, "hapair_takeover_ping_score", {}, 1.0),
    ({}, "hapair_takeover_ping_target_up", {"target": "192.0.2.2"}, 0.0),
    ({}, "hapair_takeover_ping_target_up", {"target": "192.0.2.3"}, None),
    ({}, "hapair_takeover_ping_targets_up", {}, 1.0),
    ({}, "hapair_takeover_vip_held", {"address": "192.0.2.100/24", "interface": "lan0"}, 1.0),
    ({}, "hapair_takeover_vm_held", {"vm": "web"}, 1.0),
    ({}, "hapair_takeover_vm_state", {"vm": "web", "state": "running"}, 1.0),
    ({}, "hapair_takeover_vm_restarts", {"vm": "web"}, 1.0),
    ({}, "hapair_takeover_check_ok", {"check": "smtp"}, 0.0),
    ({}, "hapair_takeover_config_digest_match", {}, 1.0),
    ({}, "hapair_takeover_transitions_total", {"from": "ARBITRATING", "to": "ACTIVE"}, 1.0),
    ({}, "hapair_takeover_fence_attempts_total", {"outcome": "failed"}, 2.0),
    ({}, "hapair_takeover_inhibitor_timeouts_total", {"inhibitor": "mirrord"}, 1.0),
    ({}, "hapair_takeover_inhibitor_timeouts_total", {"inhibitor": "other"}, None),
    ({}, "hapair_takeover_heartbeats_accepted_total", {}, 40.0),
    ({}, "hapair_takeover_heartbeats_dropped_total", {"reason": "bad_mac"}, 3.0),
    ({}, "hapair_takeover_heartbeats_dropped_total", {"reason": "accepted"}, None),
    # The peer lost: not up; its last role stays known.
    (
        {"peer": {"name": "b", "role": "ACTIVE", "alive": False, "last_heard_age": 9.0}},
        "hapair_takeover_peer_up",
        {},
        0.0,
    ),
    # Never heard: no age, no role, no digest verdict.
    (
        {"peer": {"name": "b"}, "links": {"lan": {"up": False, "last_seen_age": None}}},
        "hapair_takeover_peer_last_heard_seconds",
        {},
        None,
    ),
    (
        {"peer": {"name": "b"}, "links": {"lan": {"up": False, "last_seen_age": None}}},
        "hapair_takeover_config_digest_match",
        {},
        None,
    ),
    # Drift: the last valid heartbeat on some link carried another digest.
    (
        {"links": {"lan": {"up": True, "last_seen_age": 0.1, "digest_differs": True}}},
        "hapair_takeover_config_digest_match",
        {},
        0.0,
    ),
    ({"conditions": ["x", "y"]}, "hapair_takeover_conditions", {}, 2.0),
    # The peer told which sections differ (takeover.drift): one sample each.
    (
        {"drift": {"digest_differs": True, "sections": ["announce", "node.b"]}},
        "hapair_takeover_config_section_differs",
        {"section": "node.b"},
        1.0,
    ),
    ({}, "hapair_takeover_config_section_differs", {"section": "node.b"}, None),
    # Maintenance mode and the last reload.
    ({}, "hapair_takeover_maintenance", {}, None),
    (
        {"local": {"name": "a", "role": "ACTIVE", "maintenance": True}},
        "hapair_takeover_maintenance",
        {},
        1.0,
    ),
    ({}, "hapair_takeover_reload_ok", {}, None),
    ({"reload": {"ok": False, "problems": ["x"]}}, "hapair_takeover_reload_ok", {}, 0.0),
    ({"reload": {"ok": True, "changes": ["timings"]}}, "hapair_takeover_reload_ok", {}, 1.0),
]


@pytest.mark.parametrize("over, name, labels, expected", TAKEOVER_CASES)
def test_takeover_document_maps_to_samples(
    over: dict[str, Any], name: str, labels: dict[str, str], expected: float | None
) -> None:
    """Each fact of the status document is one sample with the base labels cluster and node."""
    samples = scrape(takeover_families, takeover_doc(**over))
    got = value(samples, name, **labels)
    assert got == pytest.approx(expected) if expected is not None else got is None


def test_every_role_has_a_sample_and_one_is_set() -> None:
    """The role is a state set: one sample per role of the machine, exactly one of them 1."""
    samples = scrape(takeover_families, takeover_doc())
    roles = {k[1][0][1]: v for k, v in samples.items() if k[0] == "hapair_takeover_role"}
    assert len(roles) == 8 and sum(roles.values()) == 1.0


def test_nothing_is_exposed_before_the_first_snapshot() -> None:
    """Before the daemon wrote its first status a scrape is empty, not an error."""
    assert scrape(takeover_families, None) == {}


def mirrord_doc(**over: Any) -> dict[str, Any]:
    """Return a mirrord status document of a pushing node with two directories."""
    tally = PassTally()
    tally.record("/srv/mail", "ok", 0.04, 1000)
    tally.record("/srv/mail", "ok", 0.3, 500)
    tally.record("/srv/mail", "retry", 2000.0, 0)
    doc: dict[str, Any] = {
        "node": "a",
        "updated": WALL - 2.0,
        "follow": {"pushing": True, "receiving": False},
        "directories": [
            {
                "directory": "/srv/mail",
                "dirty": 3,
                "rpo": 4.5,
                "alarm": None,
                "interval": 5.0,
                "max_interval": 30.0,
                "failures": 1,
                "full_needed": None,
                "totals": tally.of("/srv/mail"),
            },
            {
                "directory": "/srv/www",
                "dirty": 0,
                "rpo": 0.0,
                "alarm": "guard: source missing",
                "interval": 3600.0,
                "max_interval": 3600.0,
                "failures": 0,
                "full_needed": "startup",
                "totals": tally.of("/srv/www"),
            },
        ],
        "orphans": {"/srv/www": 2},
    }
    doc.update(over)
    return doc


MAIL, WWW = {"directory": "/srv/mail"}, {"directory": "/srv/www"}
MIRRORD_CASES = [
    ({}, "hapair_mirrord_pushing", {}, 1.0),
    ({}, "hapair_mirrord_status_age_seconds", {}, 2.0),
    ({}, "hapair_mirrord_rpo_seconds", MAIL, 4.5),
    ({}, "hapair_mirrord_dirty_paths", MAIL, 3.0),
    ({}, "hapair_mirrord_alarm", MAIL, 0.0),
    ({}, "hapair_mirrord_alarm", WWW, 1.0),
    ({}, "hapair_mirrord_full_pass_needed", WWW, 1.0),
    ({}, "hapair_mirrord_max_interval_seconds", MAIL, 30.0),
    ({}, "hapair_mirrord_consecutive_failures", MAIL, 1.0),
    ({}, "hapair_mirrord_orphans", WWW, 2.0),
    ({}, "hapair_mirrord_orphans", MAIL, 0.0),
    ({}, "hapair_mirrord_passes_total", {**MAIL, "result": "ok"}, 2.0),
    ({}, "hapair_mirrord_passes_total", {**MAIL, "result": "retry"}, 1.0),
    ({}, "hapair_mirrord_passes_total", {**WWW, "result": "ok"}, None),
    ({}, "hapair_mirrord_sent_bytes_total", MAIL, 1500.0),
    ({}, "hapair_mirrord_sent_bytes_total", WWW, 0.0),
    # The histogram: cumulative buckets, +Inf holds the 2000 s pass, sum and count.
    ({}, "hapair_mirrord_pass_duration_seconds_bucket", {**MAIL, "le": "0.05"}, 1.0),
    ({}, "hapair_mirrord_pass_duration_seconds_bucket", {**MAIL, "le": "0.5"}, 2.0),
    ({}, "hapair_mirrord_pass_duration_seconds_bucket", {**MAIL, "le": "900.0"}, 2.0),
    ({}, "hapair_mirrord_pass_duration_seconds_bucket", {**MAIL, "le": "+Inf"}, 3.0),
    ({}, "hapair_mirrord_pass_duration_seconds_count", MAIL, 3.0),
    ({}, "hapair_mirrord_pass_duration_seconds_sum", MAIL, 2000.34),
    # Receiving: the planner's RPO means nothing there, so there is none.
    ({"follow": {"pushing": False, "receiving": True}}, "hapair_mirrord_rpo_seconds", MAIL, None),
    ({"follow": {"pushing": False, "receiving": True}}, "hapair_mirrord_receiving", {}, 1.0),
    # The orphan manifest unreadable: no orphan samples rather than false zeros.
    ({"orphans": None}, "hapair_mirrord_orphans", WWW, None),
]


@pytest.mark.parametrize("over, name, labels, expected", MIRRORD_CASES)
def test_mirrord_document_maps_to_samples(
    over: dict[str, Any], name: str, labels: dict[str, str], expected: float | None
) -> None:
    """Each directory's figures are samples labelled with the directory (and the node)."""
    samples = scrape(mirrord_families, mirrord_doc(**over), base={"node": "a"})
    got = value(samples, name, **labels)
    assert got == pytest.approx(expected) if expected is not None else got is None


def test_tally_starts_at_zero_and_counts_each_pass() -> None:
    """A directory without passes has zero totals; each pass lands in one bucket."""
    tally = PassTally()
    assert tally.of("/x") == {
        "passes": {},
        "bytes_sent": 0,
        "duration": {"buckets": [0] * (len(DURATION_BUCKETS) + 1), "sum": 0.0},
    }
    tally.record("/x", "ok", 0.1, 10)
    buckets = tally.of("/x")["duration"]["buckets"]
    assert buckets[DURATION_BUCKETS.index(0.1)] == 1 and sum(buckets) == 1
