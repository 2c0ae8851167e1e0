"""Ping-list arbitration: damped per-target reachability and the decision helpers."""

from __future__ import annotations

import errno

import pytest

from takeover.arbitration import (
    Outcome,
    Reachability,
    classify_errno,
    fresh_down,
    should_hand_over,
    should_surrender,
)
from takeover.testing import FakeClock

TARGETS = ["192.0.2.1", "192.0.2.2", "192.0.2.3"]


def test_first_result_counts_at_once() -> None:
    """With no history, the first verdict of a target counts without dampening."""
    clock = FakeClock()
    r = Reachability(TARGETS, dampen=3.0)
    r.record("192.0.2.1", Outcome.TIMEOUT, clock())
    r.record("192.0.2.2", Outcome.REPLY, clock())
    assert r.score(clock()) == 1
    assert r.states(clock()) == {"192.0.2.1": "down", "192.0.2.2": "up", "192.0.2.3": "unknown"}


def test_change_must_hold_dampen_seconds() -> None:
    """A target going down moves the score only once it has stayed down for dampen seconds."""
    clock = FakeClock()
    r = Reachability(TARGETS, dampen=3.0)
    for t in TARGETS:
        r.record(t, Outcome.REPLY, clock())
    r.record("192.0.2.1", Outcome.TIMEOUT, clock.advance(1.0))
    assert r.score(clock.advance(2.9)) == 0
    assert r.next_change() == pytest.approx(clock() + 0.1)
    assert r.score(clock.advance(0.1)) == 1
    assert r.down_targets(clock()) == ["192.0.2.1"]
    assert r.next_change() is None


def test_flapping_target_never_counts() -> None:
    """A target alternating faster than dampen keeps its old damped state."""
    clock = FakeClock()
    r = Reachability(TARGETS[:1], dampen=3.0)
    r.record(TARGETS[0], Outcome.REPLY, clock())
    for i in range(20):
        outcome = Outcome.TIMEOUT if i % 2 == 0 else Outcome.REPLY
        r.record(TARGETS[0], outcome, clock.advance(1.0))
        assert r.score(clock()) == 0


def test_recovery_is_dampened_too() -> None:
    """A down target must reply for dampen seconds before it counts as up again."""
    clock = FakeClock()
    r = Reachability(TARGETS[:1], dampen=2.0)
    r.record(TARGETS[0], Outcome.UNREACHABLE, clock())
    r.record(TARGETS[0], Outcome.REPLY, clock.advance(1.0))
    assert r.score(clock.advance(1.0)) == 1
    assert r.score(clock.advance(1.0)) == 0


def test_error_outcome_says_nothing() -> None:
    """A local error (no permission) leaves the target's state untouched."""
    clock = FakeClock()
    r = Reachability(TARGETS[:1], dampen=0.0)
    r.record(TARGETS[0], Outcome.REPLY, clock())
    r.record(TARGETS[0], Outcome.ERROR, clock.advance(5.0))
    assert r.score(clock()) == 0


@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        (errno.ENETUNREACH, Outcome.UNREACHABLE),
        (errno.EHOSTUNREACH, Outcome.UNREACHABLE),
        (errno.ENETDOWN, Outcome.UNREACHABLE),
        (errno.EPERM, Outcome.ERROR),
        (errno.EACCES, Outcome.ERROR),
    ],
)
def test_classify_errno(code: int, outcome: Outcome) -> None:
    """ENETUNREACH and friends count as unreachable; permission errors say nothing."""
    assert classify_errno(code) is outcome


def test_enetunreach_counts_as_down_in_score() -> None:
    """A probe whose send failed with ENETUNREACH makes its target count as down."""
    r = Reachability(TARGETS[:1], dampen=1.0)
    r.record(TARGETS[0], classify_errno(errno.ENETUNREACH), 0.0)
    assert r.score(0.0) == 1


def test_fresh_down_counts_targets_with_no_reply() -> None:
    """A target is up if any try replied; all-error targets are not counted."""
    results = {
        "192.0.2.1": [Outcome.TIMEOUT, Outcome.REPLY],
        "192.0.2.2": [Outcome.TIMEOUT, Outcome.UNREACHABLE],
        "192.0.2.3": [Outcome.ERROR, Outcome.ERROR],
    }
    assert fresh_down(results) == 1


@pytest.mark.parametrize(
    ("score", "max_unreachable", "expected"),
    [(0, 0, False), (1, 0, True), (1, 1, False), (3, 1, True)],
)
def test_should_surrender(score: int, max_unreachable: int, expected: bool) -> None:
    """A lost-peer node surrenders when it sees more than max_unreachable targets down."""
    assert should_surrender(score, max_unreachable) is expected


@pytest.mark.parametrize(
    ("active", "standby", "margin", "expected"),
    [
        (1, 0, 1, True),
        (1, 1, 1, False),
        (2, 1, 2, False),
        (3, 1, 2, True),
        (1, 0, 0, True),
        (0, 0, 0, False),
        (0, 2, 1, False),
    ],
)
def test_should_hand_over(active: int, standby: int, margin: int, expected: bool) -> None:
    """The active hands over only when worse than the standby by the margin (at least 1)."""
    assert should_hand_over(active, standby, margin) is expected
