"""takeover status tells the operator what is wrong: a wrong key, a config drift, a dead daemon.

Both daemons run in the lab; each test reads `takeover status` (text and --json) and the log.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from tests.lab.lab import Lab, wait_until
from tests.lab.pair import HapairPair, PairConfig, cluster_toml, takeover_argv

pytestmark = pytest.mark.e2e


def status_of(lab: Lab, cluster: Path, node: str, *args: str) -> tuple[int, str]:
    """Run `takeover status` on node with `cluster`; return its exit status and stdout."""
    p = lab.run(node, takeover_argv(cluster, node, "status", *args), check=False)
    return p.returncode, p.stdout


def conditions(lab: Lab, cluster: Path, node: str) -> list[str]:
    """Return the conditions of node's `takeover status --json`."""
    _, out = status_of(lab, cluster, node, "--json")
    try:
        found = json.loads(out).get("conditions") or []
    except json.JSONDecodeError:
        return []
    return [str(c) for c in found]


def start_b_with(lab: Lab, pair: HapairPair, cfg: PairConfig, key: bytes | None) -> Path:
    """Write b its own cluster file (own key file when `key` is given) and start b on it."""
    etc = lab.workdir / "etc"
    key_file = etc / "authkey"
    if key is not None:
        key_file = etc / "authkey-b"
        key_file.write_bytes(key)
        key_file.chmod(0o600)
    cluster = etc / "cluster-b.toml"
    cluster.write_text(cluster_toml(lab, cfg, key_file))
    pair.procs["b"] = lab.spawn(
        "b",
        takeover_argv(cluster, "b", "run"),
        log_path=lab.workdir / "takeover-b.log",
        env={"PYTHONUNBUFFERED": "1"},
    )
    return cluster


def test_standby_with_a_wrong_key_says_so(lab: Lab) -> None:
    """b started with another key hears a's heartbeats rejected: a condition and a warning."""
    pair = HapairPair(lab, PairConfig())
    pair.start("a")
    cluster_b = start_b_with(lab, pair, PairConfig(), os.urandom(32).hex().encode())
    want = "heartbeats from a rejected: authentication failed: different key?"
    assert wait_until(
        lambda: any(c.startswith(want) for c in conditions(lab, cluster_b, "b")), 20, 0.3
    ), pair.log("b")[-3000:]
    _, text = status_of(lab, cluster_b, "b")
    assert f"WARNING: {want}" in text
    assert want in pair.log("b")


def test_config_drift_is_a_condition_on_both_nodes(lab: Lab) -> None:
    """b runs another cluster file: heartbeats flow, both nodes report the drift, not drops."""
    pair = HapairPair(lab, PairConfig())
    pair.start("a")
    drifted = PairConfig(priorities={"a": 150, "b": 90})
    cluster_b = start_b_with(lab, pair, drifted, None)
    assert pair.wait_role("a", "ACTIVE", 30), pair.log("a")
    for node, cluster in (("a", pair.cluster), ("b", cluster_b)):
        peer = "b" if node == "a" else "a"
        want = f"configuration differs from {peer}'s"
        assert wait_until(
            lambda n=node, c=cluster, w=want: any(w in x for x in conditions(lab, c, n)), 20, 0.3
        ), pair.log(node)[-3000:]
        _, text = status_of(lab, cluster, node)
        heartbeats = [line for line in text.splitlines() if line.startswith("Heartbeats:")]
        assert heartbeats and "with another configuration digest" in heartbeats[0], text
        assert "digest_mismatched" not in text


def test_status_of_a_killed_daemon_is_not_running(lab: Lab) -> None:
    """A daemon killed a moment ago: `takeover status` exits 3 and shows its last state."""
    pair = HapairPair(lab, PairConfig())
    pair.start()
    assert pair.wait_role("a", "ACTIVE", 30), pair.log("a")
    assert pair.wait_role("b", "STANDBY", 30), pair.log("b")
    pair.procs["b"].signal(signal.SIGKILL)
    pair.procs["b"].wait(10)
    code, text = status_of(lab, pair.cluster, "b")
    assert code == 3, text
    assert "NOT RUNNING: the daemon" in text and "STANDBY" in text
    code, out = status_of(lab, pair.cluster, "b", "--json")
    assert code == 3 and json.loads(out)["verdict"] == "not_running"
