"""The metrics mapping: status documents in, Prometheus samples out (through the exposition)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

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
        },  # fmt: skip
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
        },  # fmt: skip
        "totals": {
            "transitions": {
                "STARTING->STANDBY": 1,
                "STANDBY->ARBITRATING": 1,
                "ARBITRATING->ACTIVE": 1,
            },
            "fence_attempts": {"ok": 1, "failed": 2},
        },  # fmt: skip
    }
    doc.update(over)
    return doc


def scrape(families: Callable[[Mapping[str, Any], float], list[Any]], doc: Any) -> dict[str, Any]:
    """Expose `doc` through a registry as a scrape would; return {(name, labels): value}."""
    registry = CollectorRegistry()
    registry.register(SnapshotCollector(families, lambda: doc, lambda: WALL))
    text = generate_latest(registry).decode()
    out: dict[Any, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            labels = {k: v for k, v in s.labels.items() if k not in BASE}
            assert {k: s.labels[k] for k in BASE} == BASE, s
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
    ({}, "hapair_takeover_heartbeats_accepted_total", {}, 40.0),
    ({}, "hapair_takeover_heartbeats_dropped_total", {"reason": "bad_mac"}, 3.0),
    ({}, "hapair_takeover_heartbeats_dropped_total", {"reason": "accepted"}, None),
    # The peer lost: not up; its last role stays known.
    (
        {"peer": {"name": "b", "role": "ACTIVE", "alive": False, "last_heard_age": 9.0}},
        "hapair_takeover_peer_up",
        {},
        0.0,
    ),  # fmt: skip
    # Never heard: no age, no role, no digest verdict.
    (
        {"peer": {"name": "b"}, "links": {"lan": {"up": False, "last_seen_age": None}}},
        "hapair_takeover_peer_last_heard_seconds",
        {},
        None,
    ),  # fmt: skip
    (
        {"peer": {"name": "b"}, "links": {"lan": {"up": False, "last_seen_age": None}}},
        "hapair_takeover_config_digest_match",
        {},
        None,
    ),  # fmt: skip
    # Drift: the last valid heartbeat on some link carried another digest.
    (
        {"links": {"lan": {"up": True, "last_seen_age": 0.1, "digest_differs": True}}},
        "hapair_takeover_config_digest_match",
        {},
        0.0,
    ),  # fmt: skip
    ({"conditions": ["x", "y"]}, "hapair_takeover_conditions", {}, 2.0),
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
