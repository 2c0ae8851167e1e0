"""A short fault campaign (tests/campaign) so CI keeps it alive: a few fixed seeds, ~3 minutes."""

from __future__ import annotations

import io
import os

import pytest

from tests.campaign.run import run
from tests.lab.lab import WORK_ROOT

pytestmark = [pytest.mark.netns, pytest.mark.e2e]

# Each seed: about 36 s of faults, plus start-up, quiesce and checks.
SEEDS = (11, 12, 13)
MINUTES = 0.6


@pytest.mark.parametrize("seed", SEEDS)
def test_short_campaign_finds_no_violation(seed: int) -> None:
    """The pair under the seed's faults keeps every promise the six checkers audit."""
    out = io.StringIO()
    before = set(WORK_ROOT.glob("hapair-lab-*"))
    res = run(seed, MINUTES, out=out)
    if os.environ.get("HAPAIR_LAB_KEEP") != "1":
        # The tmpfs mount points held teardown's removal: nothing is left behind.
        assert set(WORK_ROOT.glob("hapair-lab-*")) <= before
    assert res.faults, out.getvalue()
    assert res.acked_writes > 0, out.getvalue()
    assert res.violations == 0, out.getvalue()
