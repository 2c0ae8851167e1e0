"""Checker 3's judgement (tests/campaign/guests.py): given samples of the guest on each node,
the times each node's MAC answered the VIP and the fault history, which violations."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests.campaign.guests import (
    HOLD,
    NodeSample,
    Sample,
    Span,
    excuses,
    final,
    judge,
    summary,
)

RUN = NodeSample(pid=100, running=True, state="running")
RUN_B = NodeSample(pid=200, running=True, state="running")
PAUSED_B = NodeSample(pid=200, running=False, state="paused")
FROZEN = NodeSample(pid=100, running=False, state="?")
NONE = NodeSample()


@dataclass
class Ev:
    """A fake history event (tests/campaign/lab.Event)."""

    t: float
    what: str
    detail: str = ""


def timeline(*rows: tuple[NodeSample, NodeSample]) -> list[Sample]:
    """Samples 1 s apart from t=0: (a, b) per row."""
    return [Sample(float(i), {"a": a, "b": b}) for i, (a, b) in enumerate(rows)]


# The guest on a until t=1, gone from t=2.
GONE_ON_A = timeline((RUN, NONE), (RUN, NONE), (NONE, NONE), (NONE, RUN_B))


@pytest.mark.parametrize(
    ("samples", "answered", "history", "want"),
    [
        # (a): a and b both run the guest at t=1 and t=2: one violation for the run of samples.
        (timeline((RUN, NONE), (RUN, RUN_B), (RUN, RUN_B), (NONE, RUN_B)), {}, [], ["(a)"]),
        # A live migration: b's QEMU exists but is paused until a's is gone.
        (timeline((RUN, NONE), (RUN, PAUSED_B), (NONE, RUN_B)), {}, [], []),
        # A frozen node: its QEMU is stopped (not running) while the peer starts the guest.
        (timeline((RUN, NONE), (FROZEN, RUN_B), (FROZEN, RUN_B)), {}, [], []),
        # (b): the guest is gone on a, and a's MAC still answers the VIP right after.
        (GONE_ON_A, {"a": [0.5, 2.5]}, [], ["(b)"]),
        # (b): the guest restarted on a (a new QEMU PID) while a serves.
        (
            timeline((RUN, NONE), (NodeSample(101, True, "running"), NONE)),
            {"a": [1.2]},
            [],
            ["(b)"],
        ),
        # Gone on a, but a no longer answers (b took the VIP): a failover, not a violation.
        (GONE_ON_A, {"a": [0.5], "b": [2.5, 3.0]}, [], []),
        # a's MAC answers only after HOLD: it came back to serving later, not a violation here.
        (GONE_ON_A, {"a": [2.0 + HOLD + 0.5]}, [], []),
        # a crashed (the nemesis powered it off) until its power-on.
        (
            GONE_ON_A,
            {"a": [2.5]},
            [Ev(1.5, "inject", "#3 crash node=active -> node=a"), Ev(9, "power.on", "node=a")],
            [],
        ),
        # a fenced by its peer: recorded by the supervisor just after the BMC killed it.
        (GONE_ON_A, {"a": [2.5]}, [Ev(2.5, "fenced", "node=a (BMC powered it off)")], []),
        # A planned standby on a moves the guest while a still holds the VIP.
        (GONE_ON_A, {"a": [2.5]}, [Ev(0.5, "inject", "#4 planned op=standby -> node=a")], []),
        # A promote of b tells a to release.
        (GONE_ON_A, {"a": [2.5]}, [Ev(0.5, "inject", "#4 planned op=promote -> node=b")], []),
        # A promote of a tells b to release, not a: still a violation on a.
        (GONE_ON_A, {"a": [2.5]}, [Ev(0.5, "inject", "#4 planned op=promote -> node=a")], ["(b)"]),
        # a's crash ended (powered on) long before: no excuse any more.
        (
            GONE_ON_A,
            {"a": [2.5]},
            [Ev(-20, "inject", "#1 crash node=active -> node=a"), Ev(-10, "power.on", "node=a")],
            ["(b)"],
        ),
        # A takeover kill on a is no excuse for destroying the guest.
        (
            GONE_ON_A,
            {"a": [2.5]},
            [Ev(0.5, "inject", "#2 kill node=active daemon=takeover -> node=a daemon=takeover")],
            ["(b)"],
        ),
    ],
)
def test_judge(
    samples: list[Sample],
    answered: dict[str, list[float]],
    history: list[Ev],
    want: list[str],
) -> None:
    """Each timeline gives exactly the violations listed, by kind."""
    got = judge(samples, answered, excuses(history, end=100.0))
    assert [v[:3] for v in got] == want, got


def test_excuses_spans() -> None:
    """A crash or fence is excused until power-on (from OFF_SLACK before), an unhealed one to
    the end; planned operations excuse the node that releases."""
    history = [
        Ev(10, "inject", "#1 crash node=standby -> node=b"),
        Ev(15, "power.on", "node=b"),
        Ev(20, "inject", "#2 planned op=promote -> node=b"),
        Ev(30, "fenced", "node=b (BMC powered it off)"),
        Ev(31, "inject", "#3 planned op=standby -> node=a"),
    ]
    got = [(s.node, s.why) for s in excuses(history, end=99.0)]
    assert got == [("b", "crash"), ("a", "promote of b"), ("b", "fenced"), ("a", "planned standby")]
    fenced = next(s for s in excuses(history, end=99.0) if s.why == "fenced")
    assert fenced.end == 99.0 and fenced.start < 30
    assert isinstance(fenced, Span)


@pytest.mark.parametrize(
    ("row", "active", "violations"),
    [
        ((RUN, NONE), "a", 0),
        ((NONE, RUN_B), "a", 1),  # runs on the standby
        ((NONE, NONE), "a", 1),  # runs nowhere
        ((RUN, RUN_B), "a", 1),  # runs twice
        ((NONE, NONE), None, 0),  # the pair does not serve: checker 2 reports that
    ],
)
def test_final(row: tuple[NodeSample, NodeSample], active: str | None, violations: int) -> None:
    """After quiesce exactly one node runs the guest, the active one."""
    assert len(final(timeline(row)[0], active)) == violations


def test_summary_counts_ends_and_overlaps() -> None:
    """The summary counts a's QEMU end (excused by a planned standby) and the migration's
    overlap sample."""
    samples = timeline((RUN, NONE), (RUN, PAUSED_B), (NONE, RUN_B))
    spans = excuses([Ev(0.5, "inject", "#4 planned op=standby -> node=a")], end=9.0)
    line = summary(samples, {"a": [0.1], "b": [2.1]}, spans)
    assert "QEMU ends: a 1 (1 in an excused span)" in line
    assert "samples with a QEMU on both nodes: 1 (the other copy: paused 1)" in line
