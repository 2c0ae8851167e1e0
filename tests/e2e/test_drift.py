"""`takeover check --peer` in the lab: the sections where the two nodes' files differ."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from tests.e2e.test_metrics import TAKEOVER_METRICS, get, scrape
from tests.lab.lab import Lab, wait_until
from tests.lab.pair import HapairPair, PairConfig, cluster_toml, takeover_argv

pytestmark = pytest.mark.e2e


def check_peer(lab: Lab, cluster: Path, node: str) -> tuple[int, dict[str, object]]:
    """Run `takeover check --peer --json --no-fs` on node; return its exit code and document."""
    p = lab.run(
        node,
        takeover_argv(cluster, node, "check", "--peer", "--json", "--no-fs"),
        check=False,
    )
    return p.returncode, json.loads(p.stdout)


def test_check_peer_names_the_sections_that_differ(lab: Lab) -> None:
    """b runs a file with its own priority and another GARP count: both nodes name
    exactly node.b and announce, in check --peer and in the metrics; one file says ok."""
    metrics = f'\n[metrics]\nlisten = "{TAKEOVER_METRICS}"\n'
    pair = HapairPair(lab, PairConfig(extra=metrics))
    pair.start()
    assert pair.wait_role("a", "ACTIVE", 30), pair.log("a")
    assert wait_until(lambda: check_peer(lab, pair.cluster, "a")[0] == 0, 15, 0.3)
    assert "runs the same configuration" in str(check_peer(lab, pair.cluster, "a")[1]["summary"])

    pair.procs["b"].signal(signal.SIGTERM)
    pair.procs["b"].wait(15)
    drifted = PairConfig(
        priorities={"a": 150, "b": 90}, extra=metrics + "\n[announce]\ngarp_count = 2\n"
    )
    cluster_b = lab.workdir / "etc" / "cluster-b.toml"
    cluster_b.write_text(cluster_toml(lab, drifted, lab.workdir / "etc" / "authkey"))
    pair.procs["b"] = lab.spawn(
        "b", takeover_argv(cluster_b, "b", "run"), log_path=lab.workdir / "takeover-b2.log"
    )
    want = "configuration differs from b's in: announce, node.b"
    assert wait_until(
        lambda: want in str(check_peer(lab, pair.cluster, "a")[1]["problems"]), 20, 0.3
    ), (check_peer(lab, pair.cluster, "a"), pair.log("a")[-2000:])
    code, doc = check_peer(lab, pair.cluster, "a")
    assert code == 1 and doc["problems"] == [want]
    other = "configuration differs from a's in: announce, node.b"
    assert wait_until(lambda: check_peer(lab, cluster_b, "b")[1]["problems"] == [other], 20, 0.3)
    assert "drift.sections peer=b differ=announce,node.b" in pair.log("a")
    samples = scrape(lab, "a", TAKEOVER_METRICS)
    assert get(samples, "hapair_takeover_config_digest_match") == 0.0
    differs = {dict(k[1])["section"] for k in samples if k[0].endswith("section_differs")}
    assert differs == {"announce", "node.b"}
