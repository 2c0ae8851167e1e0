"""The fault campaign's schedule (tests/campaign/schedule.py): drawn from the seed alone."""

from __future__ import annotations

import pytest

from tests.campaign.schedule import KINDS, draw


def test_same_seed_same_schedule() -> None:
    """A seed replays the same faults at the same times; another seed draws others."""
    assert draw(7, 600) == draw(7, 600)
    assert draw(7, 600) != draw(8, 600)


@pytest.mark.parametrize("seed", range(20))
def test_every_fault_heals_in_time_and_at_most_two_overlap(seed: int) -> None:
    """Every fault ends before the campaign does, and no instant has more than two in force."""
    faults = draw(seed, 300)
    assert faults
    for f in faults:
        assert f.start <= f.end <= 300
        assert f.kind in KINDS
        assert (f.start == f.end) == (f.kind == "planned")
        overlapping = [g for g in faults if g.start <= f.start <= g.end]
        assert len(overlapping) <= 2, [g.describe() for g in overlapping]


def test_a_long_campaign_draws_every_kind_and_300_faults_in_30_minutes() -> None:
    """30 minutes of faults hold at least 300 of them, of every kind."""
    faults = draw(1, 1800)
    assert len(faults) >= 300
    assert {f.kind for f in faults} == set(KINDS)
