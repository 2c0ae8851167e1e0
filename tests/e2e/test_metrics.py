"""Prometheus metrics of a running pair, scraped from inside the lab nodes.

Both daemons serve `/metrics` on the node's own loopback (each lab node is a network
namespace); the test scrapes with urllib run in the node, before and after a failover, and
checks the samples against what happened.
"""

from __future__ import annotations

import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.pairlab import PairLab
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
    to_active = [
        k
        for k in before
        if k[0] == "hapair_takeover_transitions_total" and ("to", "ACTIVE") in k[1]
    ]
    assert to_active == [], to_active
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
    assert history[-1]["new"] == "ACTIVE", history
    for (old, new), n in seen.items():
        assert get(after, "hapair_takeover_transitions_total", **{"from": old, "to": new}) == n
    accepted = get(after, "hapair_takeover_heartbeats_accepted_total") or 0
    assert accepted >= (get(before, "hapair_takeover_heartbeats_accepted_total") or 0)


MIRRORD_METRICS = "127.0.0.1:9406"
DATA = {"path": "/srv/data", "interval": "500ms", "min_interval": "200ms", "max_interval": "3s"}


def test_mirrord_metrics_count_passes_and_follow_the_role(lab: Lab) -> None:
    """A write on the active is one more ok pass with bytes sent; after a crash of the active
    the survivor's mirrord metrics say it no longer receives."""
    listen = f'\n[metrics]\nlisten = "{TAKEOVER_METRICS}"\n'
    listen += f'\n[mirror.metrics]\nlisten = "{MIRRORD_METRICS}"\n'
    pair = PairLab(lab, [DATA], PairConfig(extra=listen))
    pair.start()
    assert wait_until(lambda: pair.active() == "a" and pair.pushing("a"), 30, 0.1)
    data = {"directory": "/srv/data"}
    before: Samples = {}

    def idle() -> bool:
        nonlocal before
        before = scrape(lab, "a", MIRRORD_METRICS)
        return (
            get(before, "hapair_mirrord_passes_total", **data, result="ok") is not None
            and get(before, "hapair_mirrord_dirty_paths", **data) == 0.0
            and get(before, "hapair_mirrord_full_pass_needed", **data) == 0.0
        )

    assert wait_until(idle, 30, 0.2), (before, pair.log("a")[-2000:])
    assert get(before, "hapair_mirrord_pushing") == 1.0
    assert get(before, "hapair_mirrord_alarm", **data) == 0.0
    b_side = scrape(lab, "b", MIRRORD_METRICS)
    assert get(b_side, "hapair_mirrord_receiving") == 1.0
    assert get(b_side, "hapair_mirrord_rpo_seconds", **data) is None
    (pair.tree("a", "data") / "f").write_text("x" * 5000)
    assert wait_until((pair.tree("b", "data") / "f").exists, 30, 0.1)
    after: Samples = {}

    def counted() -> bool:
        nonlocal after
        after = scrape(lab, "a", MIRRORD_METRICS)
        ok = get(after, "hapair_mirrord_passes_total", **data, result="ok") or 0
        return ok > (get(before, "hapair_mirrord_passes_total", **data, result="ok") or 0)

    assert wait_until(counted, 15, 0.2), after
    sent = get(after, "hapair_mirrord_sent_bytes_total", **data) or 0
    assert sent >= (get(before, "hapair_mirrord_sent_bytes_total", **data) or 0) + 5000
    count = get(after, "hapair_mirrord_pass_duration_seconds_count", **data) or 0
    passes = sum(v for (n, labels), v in after.items() if n == "hapair_mirrord_passes_total")
    assert count == passes

    p = pair.mirrord_cli("a", "status", "--brief")
    assert p.returncode == 0 and p.stdout.startswith("MIRRORD OK - pushing 1 directories"), p

    pair.crash("a")
    pair.mirrord["a"].wait(10)  # reaped, as systemd would: a zombie's pid still answers
    p = pair.mirrord_cli("a", "status", "--brief")
    assert (p.returncode, p.stdout) == (2, "MIRRORD CRITICAL - mirrord not running\n"), p
    # b holds its changes while a is not heard (a may come back with orphans): it neither
    # receives nor pushes, and its metrics say so.
    assert pair.takeover.wait_role("b", "ACTIVE", 30), pair.takeover.log("b")[-2000:]

    def holding() -> bool:
        s = scrape(lab, "b", MIRRORD_METRICS)
        return get(s, "hapair_mirrord_receiving") == 0.0 and get(s, "hapair_mirrord_pushing") == 0.0

    assert wait_until(holding, 15, 0.2), pair.log("b")[-2000:]
    assert get(scrape(lab, "b", TAKEOVER_METRICS), "hapair_takeover_role", role="ACTIVE") == 1.0
