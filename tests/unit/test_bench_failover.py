"""bench.failover: where the fault falls in the heartbeat cycle."""

from __future__ import annotations

import pytest

from bench.failover import steady_delay

# (interval, u in 0..1) -> seconds a serves before the fault.
DELAYS = [(0.1, 0.0, 1.0), (0.1, 0.5, 1.05), (0.1, 1.0, 1.1), (1.0, 0.25, 1.25), (1.0, 1.0, 2.0)]


@pytest.mark.parametrize("interval, u, expected", DELAYS)
def test_steady_delay_spreads_the_fault_over_one_interval(
    interval: float, u: float, expected: float
) -> None:
    """The fault comes a second after steady serving plus up to one interval, never less or more."""
    assert steady_delay(interval, u) == pytest.approx(expected)
