"""A suspected peer in the lab: the direct cable's carrier dies with a crashed active.

The pair runs at a 0.5 s interval (deadtime 1.5 s): a suspected peer counts as lost after
2 intervals (1 s), far enough from deadtime that a loaded machine cannot blur the two.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest

from tests.lab.lab import VIP4, Lab, wait_until
from tests.lab.pair import HapairPair, PairConfig
from tests.lab.probe import VipProbe

pytestmark = pytest.mark.e2e

INTERVAL = 0.5
DEADTIME = 3 * INTERVAL


@pytest.fixture
def pair(lab: Lab) -> Iterator[HapairPair]:
    """Both daemons running at a 0.5 s interval, a active and b standby."""
    p = HapairPair(lab, PairConfig(interval=INTERVAL))
    p.start()
    assert p.wait_role("a", "ACTIVE", 30), p.log("a")
    assert p.wait_role("b", "STANDBY", 30), p.log("b")
    yield p


def transitions(log: str) -> list[tuple[str, str, str, float | None]]:
    """Return (from, to, reason, silent seconds) of every transition in a daemon's log."""
    out = []
    pattern = r"transition from=(\w+) to=(\w+) reason=(.*?) epoch=\d+ silent=([\d.]+|-)"
    for m in re.finditer(pattern, log):
        silent = None if m.group(4) == "-" else float(m.group(4))
        out.append((m.group(1), m.group(2), m.group(3), silent))
    return out


def test_crash_of_the_active_is_detected_in_two_intervals(
    pair: HapairPair, lab: Lab, vip_probe: VipProbe
) -> None:
    """A crashed active's direct cable loses carrier: b declares it lost well under deadtime."""
    vip_probe.start(VIP4)
    assert vip_probe.wait_for(lab.mac("a"), 30, timeout=15)
    lab.kill_node("a")
    assert vip_probe.wait_for(lab.mac("b"), 30, timeout=15)
    vip_probe.stop()
    assert pair.role("b") == "ACTIVE"
    log = pair.log("b")
    assert "peer.suspected link=hb0 reason=carrier" in log, log[-4000:]
    lost = [t for t in transitions(log) if t[0] == "STANDBY" and t[2] == "peer lost"]
    assert lost, log[-4000:]
    silent = lost[0][3]
    # Expected about 2 intervals (1.0 s); deadtime is 1.5 s.
    assert silent is not None and silent < DEADTIME - 0.1, log[-4000:]


def test_direct_cable_cut_alone_moves_nothing(
    pair: HapairPair, lab: Lab, vip_probe: VipProbe
) -> None:
    """Only the direct cable cut: the LAN heartbeats end the suspicion; b never arbitrates."""
    vip_probe.start(VIP4)
    assert vip_probe.wait_for(lab.mac("a"), 30, timeout=15)
    lab.set_link("hb", False)
    time.sleep(2 * DEADTIME)
    log = pair.log("b")
    assert wait_until(lambda: "peer.unsuspected reason=heartbeat" in pair.log("b"), 5), log[-4000:]
    assert pair.role("b") == "STANDBY" and pair.role("a") == "ACTIVE"
    assert not [t for t in transitions(pair.log("b")) if t[1] == "ARBITRATING"], log[-4000:]
    lab.set_link("hb", True)
    res = vip_probe.stop()
    assert set(res.replies_per_mac) == {lab.mac("a")}, res.summary()
