"""Prometheus metrics of a running pair, scraped from inside the lab nodes.

Both daemons serve `/metrics` on the node's own loopback (each lab node is a network
namespace); the test scrapes with urllib run in the node, before and after a failover, and
checks the samples against what happened.
"""

from __future__ import annotations

import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.lab.lab import VIP4, Lab, wait_until
from tests.lab.pair import HapairPair, PairConfig

pytestmark = pytest.mark.e2e

TAKEOVER_METRICS = "127.0.0.1:9405"
FETCH = (
    "import sys, urllib.request\n"
    "sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())\n"
)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(lab: Lab, node: str, address: str) -> Samples:
    """GET http://ADDRESS/metrics from inside node; return {(name, labels): value} ({} if down)."""
    p = lab.run(node, [sys.executable, "-c", FETCH, f"http://{address}/metrics"], check=False)
    if p.returncode != 0:
        return {}
    out: Samples = {}
    for fam in text_string_to_metric_families(p.stdout):
        for s in fam.samples:
            labels = {k: v for k, v in s.labels.items() if k not in ("cluster", "node")}
            out[(s.name, tuple(sorted(labels.items())))] = s.value
    return out


def get(samples: Samples, name: str, **labels: str) -> float | None:
    """Return one sample's value, or None when absent."""
    return samples.get((name, tuple(sorted(labels.items()))))


def test_metrics_follow_a_failover(lab: Lab) -> None:
    """b's metrics say STANDBY with a live peer, then ACTIVE with the VIP after a crashes."""
    pair = HapairPair(lab, PairConfig(extra=f'\n[metrics]\nlisten = "{TAKEOVER_METRICS}"\n'))
    pair.start()
    assert pair.wait_role("a", "ACTIVE", 30), pair.log("a")
    assert pair.wait_role("b", "STANDBY", 30), pair.log("b")
    vip = {"address": f"{VIP4}/24", "interface": "lan0"}
    before: Samples = {}

    def settled() -> bool:
        nonlocal before
        before = scrape(lab, "b", TAKEOVER_METRICS)
        return get(before, "hapair_takeover_peer_up") == 1.0

    assert wait_until(settled, 15, 0.2), before
    assert get(before, "hapair_takeover_role", role="STANDBY") == 1.0
    assert get(before, "hapair_takeover_role", role="ACTIVE") == 0.0
    assert get(before, "hapair_takeover_peer_role", role="ACTIVE") == 1.0
    assert get(before, "hapair_takeover_vip_held", **vip) == 0.0
    assert get(before, "hapair_takeover_config_digest_match") == 1.0
    assert get(before, "hapair_takeover_link_up", link="direct") == 1.0
    assert (get(before, "hapair_takeover_heartbeats_accepted_total") or 0) > 0
    edge = {"from": "ARBITRATING", "to": "ACTIVE"}
    assert get(before, "hapair_takeover_transitions_total", **edge) is None
    a_side = scrape(lab, "a", TAKEOVER_METRICS)
    assert get(a_side, "hapair_takeover_vip_held", **vip) == 1.0

    pair.lab.kill_node("a")
    assert pair.wait_role("b", "ACTIVE", 30), pair.log("b")
    after: Samples = {}

    def failed_over() -> bool:
        nonlocal after
        after = scrape(lab, "b", TAKEOVER_METRICS)
        return get(after, "hapair_takeover_vip_held", **vip) == 1.0

    assert wait_until(failed_over, 15, 0.2), after
    assert get(after, "hapair_takeover_role", role="ACTIVE") == 1.0
    assert get(after, "hapair_takeover_peer_up") == 0.0
    assert (get(after, "hapair_takeover_peer_last_heard_seconds") or 0) > 0.2
    assert get(after, "hapair_takeover_link_up", link="direct") == 0.0
    # The transitions the status file recorded are the counters, edge by edge.
    history = pair.status("b").get("transitions")
    assert isinstance(history, list)
    seen: dict[tuple[str, str], int] = {}
    for tr in history:
        key = (str(tr["old"]), str(tr["new"]))
        seen[key] = seen.get(key, 0) + 1
    assert ("ARBITRATING", "ACTIVE") in seen, history
    for (old, new), n in seen.items():
        assert get(after, "hapair_takeover_transitions_total", **{"from": old, "to": new}) == n
    accepted = get(after, "hapair_takeover_heartbeats_accepted_total") or 0
    assert accepted >= (get(before, "hapair_takeover_heartbeats_accepted_total") or 0)
