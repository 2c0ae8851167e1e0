"""Fencing decisions: error classes, retry schedule and the policy when fencing fails."""

from __future__ import annotations

import pytest

from takeover.fencing.policy import (
    PERMANENT,
    FailurePolicy,
    FenceErrorKind,
    RetrySchedule,
    classify_hard_timeout,
    classify_ipmi_message,
    may_take_over_unfenced,
)

K = FenceErrorKind


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ("Incorrect password provided", K.WRONG_PASSWORD),
        ("Unauthorized name in RAKP2", K.UNKNOWN_USER),
        (None, K.UNREACHABLE),
        ("", K.UNREACHABLE),
        ("Session no longer connected", K.TIMEOUT),
        ("Insufficient privilege level", K.BMC_ERROR),
    ],
)
def test_pyghmi_messages_map_to_kinds(message: str | None, kind: FenceErrorKind) -> None:
    """Each pyghmi exception text seen against ipmi_sim maps to its operator-facing kind."""
    assert classify_ipmi_message(message) is kind


@pytest.mark.parametrize(
    ("last_event", "kind"),
    [
        (None, K.UNREACHABLE),
        ("start", K.UNREACHABLE),
        ("session", K.UNREACHABLE),
        ("connected", K.TIMEOUT),
        ("read", K.TIMEOUT),
        ("off-sent", K.TIMEOUT),
        ("state", K.NOT_CONFIRMED),
    ],
)
def test_hard_timeout_kind_follows_worker_progress(last_event: str | None, kind: K) -> None:
    """A killed attempt is unreachable before a session, timeout within one, unconfirmed after."""
    assert classify_hard_timeout(last_event) is kind


def test_backoff_doubles_then_caps() -> None:
    """Pauses grow 0.25, 0.5, 1, 2 and then stay at the cap."""
    s = RetrySchedule(base=0.25, factor=2.0, cap=2.0)
    assert [s.delay(n) for n in range(1, 7)] == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]


def test_permanent_errors_are_not_retried() -> None:
    """Wrong password, unknown user and a bad password file stop the attempts at once."""
    s = RetrySchedule()
    for kind in PERMANENT:
        assert s.next_delay(kind, failures=1, elapsed=0.1, budget=60.0) is None


def test_transient_error_retried_while_budget_allows() -> None:
    """An unreachable BMC is retried when a pause plus a useful attempt still fit the budget."""
    s = RetrySchedule(base=0.5, min_attempt=0.5)
    assert s.next_delay(K.UNREACHABLE, failures=1, elapsed=1.0, budget=10.0) == 0.5
    assert s.next_delay(K.UNREACHABLE, failures=1, elapsed=9.1, budget=10.0) is None


def test_attempt_limit_never_exceeds_remaining_budget() -> None:
    """An attempt's hard timeout is the per-attempt cap or what is left, whichever is less."""
    s = RetrySchedule(attempt_timeout=6.0)
    assert s.attempt_limit(0.0, 10.0) == 6.0
    assert s.attempt_limit(7.0, 10.0) == 3.0
    assert s.attempt_limit(11.0, 10.0) == 0.0


def test_plan_fits_inside_the_budget() -> None:
    """Every planned attempt ends by the budget, and a 10 s budget buys two 6 s-capped tries."""
    s = RetrySchedule()
    plan = s.plan(budget=10.0, attempt_cost=6.0)
    assert len(plan) == 2
    assert all(start + limit <= 10.0 for start, limit in plan)
    fast = s.plan(budget=10.0, attempt_cost=0.2)
    starts = [start for start, _ in fast]
    assert starts == sorted(starts) and len(fast) >= 5
    assert all(start + limit <= 10.0 for start, limit in fast)


@pytest.mark.parametrize(
    ("policy", "vip_answered", "take_over"),
    [
        (FailurePolicy.REFUSE, False, False),
        (FailurePolicy.REFUSE, True, False),
        (FailurePolicy.REFUSE, None, False),
        (FailurePolicy.VIP_GUARD, False, True),
        (FailurePolicy.VIP_GUARD, True, False),
        (FailurePolicy.VIP_GUARD, None, False),
    ],
)
def test_failure_policy(policy: FailurePolicy, vip_answered: bool | None, take_over: bool) -> None:
    """Only vip-guard with a VIP nobody answers allows taking over without a confirmed fence."""
    assert may_take_over_unfenced(policy, vip_answered) is take_over


def test_failure_policy_values_match_config_strings() -> None:
    """The config strings "refuse" and "vip-guard" name the two policies."""
    assert FailurePolicy("refuse") is FailurePolicy.REFUSE
    assert FailurePolicy("vip-guard") is FailurePolicy.VIP_GUARD
