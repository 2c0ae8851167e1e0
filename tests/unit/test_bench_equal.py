"""bench.mirror reads "equal CPU" and "equal RPO" off two measured frontiers."""

from __future__ import annotations

import argparse
import types

import pytest

from bench.mirror import (
    Bench,
    equal_cpu_and_rpo,
    frontier,
    interpolate,
    ratio_at_equal,
    report,
)


def test_frontier_drops_points_beaten_on_both_axes() -> None:
    """A point with more CPU and no better RPO than another is not on the frontier."""
    pts = [(11.5, 2.37), (7.44, 1.46), (8.45, 2.40), (10.2, 3.10), (10.1, 10.6)]
    assert frontier(pts) == [(7.44, 1.46)]
    assert frontier([(3.0, 1.0), (1.0, 3.0), (2.0, 2.0)]) == [(1.0, 3.0), (2.0, 2.0), (3.0, 1.0)]


def test_interpolate_is_linear_between_neighbours_and_refuses_outside() -> None:
    """y at x comes from the two measured points around x, never from beyond the range."""
    curve = [(1.0, 4.0), (3.0, 2.0)]
    assert interpolate(curve, 2.0) == pytest.approx(3.0)
    assert interpolate(curve, 1.0) == 4.0
    with pytest.raises(ValueError):
        interpolate(curve, 3.5)


def test_ratio_at_equal_takes_worst_and_best_over_the_overlap() -> None:
    """The ratio is evaluated at every measured x in the overlap; no overlap gives None."""
    mine = [(1.0, 2.0), (3.0, 1.0)]
    theirs = [(2.0, 1.0), (4.0, 0.5)]
    # Overlap [2, 3]: at 2, 1.5 / 1.0; at 3, 1.0 / 0.75.
    worst, best = ratio_at_equal(mine, theirs) or (0.0, 0.0)
    assert worst == pytest.approx(1.5)
    assert best == pytest.approx(4 / 3)
    assert ratio_at_equal([(1.0, 1.0), (2.0, 0.5)], [(3.0, 1.0), (4.0, 0.5)]) is None


def test_equal_cpu_and_rpo_on_a_measured_run() -> None:
    """The 2026-12-02 run: RPO at equal CPU 1.47 times lsyncd's, no overlap in RPO."""
    m = [(9.36, 3.069), (7.61, 2.123), (7.76, 1.694), (6.64, 2.3), (6.65, 5.463)]
    ls = [(11.53, 2.374), (7.44, 1.465), (8.45, 2.399), (10.2, 3.104), (10.12, 10.64)]
    eq = equal_cpu_and_rpo(m, ls)
    rpo = eq["rpo_at_equal_cpu"]
    assert rpo is not None
    assert rpo[0] == pytest.approx(1.47, abs=0.01)
    assert eq["cpu_at_equal_rpo"] is None


def test_report_of_a_run_without_the_full_rsync() -> None:
    """A run with `--e2e-tools mirrord,lsyncd` is reported (it raised KeyError 'full'), with
    the 1M ratios it can give and none it cannot."""
    sample = {"s": [0.3, 0.4, 0.5], "cpu_s": [0.1, 0.2, 0.3]}
    results = {
        "sizes": {"1000000": {"mirrord": {**sample, "rss_mib": 30.0},
                              "lsyncd": {**sample, "s": [0.8], "rss_mib": 20.0}}},
        "tradeoff": {"mirrord": [], "lsyncd": []},
    }  # fmt: skip
    doc = report(results, argparse.Namespace(churn_rate=200, churn_seconds=30))
    assert doc["ratio"] == {"latency_vs_lsyncd_1m": 0.5, "rss_vs_lsyncd_1m": 1.5}
    assert "full_s" not in doc["e2e"]["1000k"]


def test_latency_samples_of_the_two_tools_alternate(monkeypatch: pytest.MonkeyPatch) -> None:
    """The quiet-spell latency runs mirrord and lsyncd at once and alternates their samples
    (one tool's samples all after the other's saw another load on the shared cores)."""
    order: list[str] = []
    bench = Bench.__new__(Bench)
    bench.args = argparse.Namespace(latency_samples=3)
    bench.results = {}
    bench.pair = types.SimpleNamespace(stop=lambda: order.append("stop mirrord"))
    monkeypatch.setattr(bench, "root", lambda name: None, raising=False)
    monkeypatch.setattr(bench, "mirrord", lambda p: order.append("mirrord"), raising=False)
    monkeypatch.setattr(bench, "lsyncd", lambda n, d: order.append("lsyncd"), raising=False)
    monkeypatch.setattr(bench, "stop_lsyncd", lambda p, n: order.append("stop lsyncd"),
                        raising=False)  # fmt: skip
    monkeypatch.setattr(bench, "save", lambda: None, raising=False)
    monkeypatch.setattr(bench, "latency_sample", lambda name: order.append(name) or 0.1,
                        raising=False)  # fmt: skip
    bench.latency()
    assert order == ["mirrord", "lsyncd", *["lat", "lat-lsyncd0"] * 3, "stop mirrord",
                     "stop lsyncd"]  # fmt: skip
    assert bench.results["lat_mirrord"] == bench.results["lat_lsyncd0"] == [0.1] * 3
