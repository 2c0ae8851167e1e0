"""`takeover status --brief` in the lab: the plugin exit code of each state of the pair."""

from __future__ import annotations

import signal

import pytest

from tests.lab.lab import Lab, wait_until
from tests.lab.pair import HapairPair, PairConfig, cluster_toml, takeover_argv

pytestmark = pytest.mark.e2e


def brief(lab: Lab, pair: HapairPair, node: str) -> tuple[int, str]:
    """Run `takeover status --brief` on node; return its exit code and its one line."""
    argv = takeover_argv(pair.cluster, node, "status", "--brief")
    p = lab.run(node, argv, check=False)
    assert p.stdout.count("\n") == 1, p.stdout
    return p.returncode, p.stdout.strip()


def test_brief_exit_codes_follow_the_pair(lab: Lab) -> None:
    """OK while both run, WARNING on drift, CRITICAL for a lost peer and a dead daemon."""
    pair = HapairPair(lab, PairConfig())
    pair.start()
    assert pair.wait_role("a", "ACTIVE", 30), pair.log("a")
    assert pair.wait_role("b", "STANDBY", 30), pair.log("b")
    assert wait_until(lambda: brief(lab, pair, "a")[0] == 0, 15, 0.2), brief(lab, pair, "a")
    code, line = brief(lab, pair, "b")
    assert code == 0 and line.startswith("TAKEOVER OK - b STANDBY, peer a ACTIVE"), line

    pair.procs["b"].signal(signal.SIGKILL)
    pair.procs["b"].wait(10)
    code, line = brief(lab, pair, "b")
    assert (code, line) == (2, "TAKEOVER CRITICAL - daemon not running")
    assert wait_until(lambda: brief(lab, pair, "a")[0] == 2, 15, 0.2), brief(lab, pair, "a")
    assert "peer b lost" in brief(lab, pair, "a")[1]

    # b comes back on a cluster file that differs (its own priority): a warns of drift.
    drifted = lab.workdir / "etc" / "cluster-b.toml"
    drifted.write_text(
        cluster_toml(
            lab, PairConfig(priorities={"a": 150, "b": 90}), lab.workdir / "etc" / "authkey"
        )
    )
    pair.procs["b"] = lab.spawn(
        "b", takeover_argv(drifted, "b", "run"), log_path=lab.workdir / "takeover-b2.log"
    )
    assert wait_until(lambda: brief(lab, pair, "a")[0] == 1, 20, 0.3), brief(lab, pair, "a")
    assert "configuration differs from b's" in brief(lab, pair, "a")[1]
