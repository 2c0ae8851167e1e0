"""VM resource decisions: the restart-in-place budget and reconcile steps."""

from __future__ import annotations

import pytest

from takeover.backends.vmpolicy import CrashVerdict, RestartBudget, Undo, reconcile_steps


def test_crashes_within_budget_restart_in_place() -> None:
    """Up to max_restarts crashes inside the window are each answered with a restart."""
    budget = RestartBudget(max_restarts=3, window=300.0)
    for now in (10.0, 20.0, 30.0):
        verdict, budget = budget.on_crash(now)
        assert verdict is CrashVerdict.RESTART
    assert budget.restarts == (10.0, 20.0, 30.0)


def test_crash_beyond_budget_fails_over() -> None:
    """The crash after max_restarts restarts within the window asks for failover."""
    budget = RestartBudget(max_restarts=2, window=300.0, restarts=(10.0, 20.0))
    verdict, after = budget.on_crash(30.0)
    assert verdict is CrashVerdict.FAILOVER
    assert after.restarts == (10.0, 20.0)


def test_old_restarts_leave_the_window() -> None:
    """Restarts older than the window no longer count, so a slow crasher keeps restarting."""
    budget = RestartBudget(max_restarts=2, window=60.0, restarts=(0.0, 30.0))
    verdict, after = budget.on_crash(61.0)
    assert verdict is CrashVerdict.RESTART
    assert after.restarts == (30.0, 61.0)


def test_window_edge_is_exclusive() -> None:
    """A restart exactly one window ago no longer counts."""
    budget = RestartBudget(max_restarts=1, window=60.0, restarts=(0.0,))
    assert budget.recent(60.0) == ()
    assert budget.on_crash(60.0)[0] is CrashVerdict.RESTART
    assert budget.on_crash(59.9)[0] is CrashVerdict.FAILOVER


def test_zero_restarts_fails_over_at_first_crash() -> None:
    """max_restarts = 0 hands the pair over on the first crash."""
    assert RestartBudget(0, 300.0).on_crash(1.0)[0] is CrashVerdict.FAILOVER


def test_reset_forgets_restarts() -> None:
    """A new acquire starts with a full budget."""
    budget = RestartBudget(1, 300.0, restarts=(5.0,))
    assert budget.reset().restarts == ()
    assert budget.reset().max_restarts == 1


@pytest.mark.parametrize(
    ("active", "persistent", "owner_elsewhere", "steps"),
    [
        (True, True, True, [Undo.DESTROY, Undo.UNDEFINE]),
        (True, False, True, [Undo.DESTROY]),
        (False, True, True, [Undo.UNDEFINE]),
        (False, False, True, []),
        (True, True, False, []),
        (False, True, False, []),
    ],
)
def test_reconcile_steps(
    active: bool, persistent: bool, owner_elsewhere: bool, steps: list[Undo]
) -> None:
    """Only a node whose peer owns the VM clears its copy: destroy first, then undefine."""
    assert (
        reconcile_steps(active=active, persistent=persistent, owner_elsewhere=owner_elsewhere)
        == steps
    )
