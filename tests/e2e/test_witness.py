"""The witness end to end: the lab pair plus `takeover witness` in its own namespace, reached
over a routed path apart from the direct heartbeat link; faults injected, the client's ARP
census and ping replies say who holds the VIP."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from takeover.lease import Op
from takeover.machine import WITNESS_LOST_TOGETHER
from takeover.witnesswire import Request, encode_request
from tests.e2e.witnesslab import WitnessLab
from tests.lab.lab import VIP4, Fault, Lab, wait_until
from tests.lab.pair import HB_PORT, HapairPair, PairConfig
from tests.lab.probe import ProbeResult, VipProbe

pytestmark = pytest.mark.e2e

LEASE = 3.0


@pytest.fixture
def witness(lab: Lab) -> Iterator[WitnessLab]:
    """The witness running before the pair starts (max_lease = LEASE)."""
    w = WitnessLab(lab, max_lease=LEASE)
    w.start()
    yield w
    w.stop()


@pytest.fixture
def pair(lab: Lab, witness: WitnessLab) -> HapairPair:
    """Both daemons with a [witness]: a active holding the lease, b standby."""
    p = HapairPair(lab, PairConfig(extra=witness.cluster_section(LEASE)))
    p.start()
    assert p.wait_role("a", "ACTIVE", 30), p.log("a")
    assert p.wait_role("b", "STANDBY", 30), p.log("b")
    # The witness was started moments ago: it grants a once its quiet period is over.
    assert wait_until(lambda: lease_holder(witness) == "a", 3 * LEASE, 0.2), witness.log()
    return p


def lease_holder(w: WitnessLab) -> str | None:
    """Who the witness says holds the lab cluster's lease."""
    doc = w.status() or {}
    holder = ((doc.get("clusters") or {}).get("lab") or {}).get("holder")
    return str(holder) if holder else None


def serving(lab: Lab, probe: VipProbe, node: str) -> None:
    """Start the client probe and wait until `node` answers steadily for the VIP."""
    probe.start(VIP4)
    assert probe.wait_for(lab.mac(node), 30, timeout=15)


def single_owner(res: ProbeResult) -> bool:
    """Whether no two MACs ever answered for the VIP at once (pings and ARP census)."""
    return max(res.dual_time, res.dual_owner_time) == 0


def cut_heartbeats(lab: Lab) -> list[Fault]:
    """Cut every heartbeat path: the direct link down, heartbeats on the LAN dropped both ways."""
    lab.set_link("hb", False)
    return [lab.block(n, proto="udp", port=HB_PORT, iface="lan0") for n in ("a", "b")]


def witness_of(pair: HapairPair, node: str) -> dict[str, object]:
    """The witness section of node's status."""
    doc = pair.status(node).get("witness")
    assert isinstance(doc, dict), pair.status(node)
    return doc


def condition(pair: HapairPair, node: str) -> str:
    """node's own condition as its status shows it."""
    local = pair.status(node).get("local")
    return str(local.get("condition")) if isinstance(local, dict) else ""


def test_active_cut_off_from_peer_and_witness_demotes_and_standby_takes_over_after_lease(
    pair: HapairPair, lab: Lab, witness: WitnessLab, vip_probe: VipProbe
) -> None:
    """The active loses its peer and the witness while its LAN port stays up to the client: it
    releases before its lease can have expired, b takes over only then, never two owners."""
    serving(lab, vip_probe, "a")
    cut_at = time.monotonic()
    cut_heartbeats(lab)
    witness.cut("a")
    assert vip_probe.wait_for(lab.mac("b"), 30, timeout=4 * LEASE), pair.log("b")[-3000:]
    took = time.monotonic() - cut_at
    time.sleep(2.0)
    res = vip_probe.stop()
    assert single_owner(res), res.summary()
    assert res.mac_changes == 1, res.summary()
    # b waited for the witness: not before a's lease (renewed every 0.1 s) ran out there.
    assert took >= LEASE - 0.5, (took, pair.log("b")[-3000:])
    assert pair.role("a") == "STANDBY" and not pair.holds("a")
    assert condition(pair, "a") == WITNESS_LOST_TOGETHER
    assert pair.role("b") == "ACTIVE" and pair.holds("b")
    assert lease_holder(witness) == "b"
    assert "peer and witness lost: lease ending" in pair.log("a")


def test_only_heartbeats_cut_the_witness_keeps_the_active(
    pair: HapairPair, lab: Lab, witness: WitnessLab, vip_probe: VipProbe
) -> None:
    """Every heartbeat path cut, the witness path intact: a keeps renewing, b waits for a grant
    that never comes and never probes the VIP; nothing moves."""
    serving(lab, vip_probe, "a")
    guard_before = pair.log("b").count("guard.result")
    cut_heartbeats(lab)
    time.sleep(3 * LEASE)
    res = vip_probe.stop()
    assert set(res.replies_per_mac) == {lab.mac("a")}, res.summary()
    assert single_owner(res) and res.mac_changes == 0, res.summary()
    assert pair.role("a") == "ACTIVE" and pair.role("b") == "STANDBY"
    assert condition(pair, "b") == "witness: lease held by a"
    assert pair.log("b").count("guard.result") == guard_before
    assert witness_of(pair, "b")["asking"] == "claim"
    assert lease_holder(witness) == "a"


def test_witness_killed_and_restarted_moves_nothing(
    pair: HapairPair, lab: Lab, witness: WitnessLab, vip_probe: VipProbe
) -> None:
    """The witness dies and comes back: a warning meanwhile, no move, no flap; after its quiet
    period the active holds the lease again."""
    serving(lab, vip_probe, "a")
    witness.kill()
    assert wait_until(lambda: witness_of(pair, "a")["reachable"] is False, 10, 0.2)
    conditions = pair.status("a").get("conditions")
    assert isinstance(conditions, list)
    assert any("witness 203.0.113.10:7406 unreachable" in str(c) for c in conditions)
    time.sleep(LEASE)
    witness.start()
    assert wait_until(lambda: lease_holder(witness) == "a", 3 * LEASE, 0.2), witness.log()
    time.sleep(1.0)
    res = vip_probe.stop()
    assert set(res.replies_per_mac) == {lab.mac("a")} and res.mac_changes == 0, res.summary()
    assert pair.role("a") == "ACTIVE" and pair.role("b") == "STANDBY"
    assert witness_of(pair, "a")["reachable"] is True
    transitions = pair.status("a").get("transitions")
    assert isinstance(transitions, list) and transitions[-1]["new"] == "ACTIVE"


def test_witness_cut_from_the_active_only_moves_nothing(
    pair: HapairPair, lab: Lab, witness: WitnessLab, vip_probe: VipProbe
) -> None:
    """The active loses the witness but still hears its peer: a warning, nothing moves."""
    serving(lab, vip_probe, "a")
    witness.cut("a")
    time.sleep(3 * LEASE)
    res = vip_probe.stop()
    assert set(res.replies_per_mac) == {lab.mac("a")} and res.mac_changes == 0, res.summary()
    assert pair.role("a") == "ACTIVE" and pair.role("b") == "STANDBY"
    assert witness_of(pair, "a")["reachable"] is False
    # Its lease has run out at the witness; b, hearing a, never claimed it.
    assert lease_holder(witness) is None


def test_forged_replayed_and_foreign_witness_requests_are_dropped_and_counted(
    pair: HapairPair, lab: Lab, witness: WitnessLab, vip_probe: VipProbe
) -> None:
    """From the client namespace: a captured request of a's sent again, a forged one and one
    for an unknown cluster; the witness drops and counts each, and nothing moves."""
    serving(lab, vip_probe, "a")
    captured = witness.capture_request("203.0.113.2")
    forged = encode_request(Request("lab", "b", Op.CLAIM, os.urandom(16), 2**62, LEASE), b"x" * 32)
    foreign = encode_request(Request("other", "b", Op.CLAIM, os.urandom(16), 1, LEASE), b"x" * 32)
    witness.send_from("client", [captured, captured, forged, foreign])

    def counted() -> bool:
        c = (witness.status() or {}).get("counters") or {}
        return (
            c.get("replay", 0) >= 2
            and c.get("bad_mac", 0) >= 1
            and c.get("unknown_cluster", 0) >= 1
        )

    assert wait_until(counted, 10, 0.2), witness.status()
    res = vip_probe.stop()
    assert set(res.replies_per_mac) == {lab.mac("a")} and single_owner(res), res.summary()
    assert lease_holder(witness) == "a"
    assert pair.role("a") == "ACTIVE" and pair.role("b") == "STANDBY"


def test_standby_cut_off_from_peer_and_witness_moves_nothing(
    pair: HapairPair, lab: Lab, witness: WitnessLab, vip_probe: VipProbe
) -> None:
    """The standby loses its peer and the witness together: it holds instead of arbitrating
    with the ping list, and the active keeps renewing; nothing moves."""
    serving(lab, vip_probe, "a")
    cut_heartbeats(lab)
    witness.cut("b")
    time.sleep(3 * LEASE)
    res = vip_probe.stop()
    assert set(res.replies_per_mac) == {lab.mac("a")} and res.mac_changes == 0, res.summary()
    assert pair.role("a") == "ACTIVE" and pair.role("b") == "STANDBY"
    assert condition(pair, "b") == WITNESS_LOST_TOGETHER
    assert lease_holder(witness) == "a"


def test_cold_start_of_both_nodes_and_the_witness_elects_exactly_one(
    lab: Lab, vip_probe: VipProbe
) -> None:
    """Witness and both nodes started together: exactly one active, one VIP owner, and the
    witness grants that node the lease once its quiet period is over."""
    w = WitnessLab(lab, max_lease=LEASE)
    p = HapairPair(lab, PairConfig(extra=w.cluster_section(LEASE)))
    try:
        p.start()
        w.start()
        assert wait_until(lambda: {p.role("a"), p.role("b")} == {"ACTIVE", "STANDBY"}, 30, 0.2)
        active = "a" if p.role("a") == "ACTIVE" else "b"
        vip_probe.start(VIP4)
        assert wait_until(lambda: lease_holder(w) == active, 3 * LEASE, 0.2), w.log()
        time.sleep(1.0)
        res = vip_probe.stop()
        assert set(res.replies_per_mac) == {lab.mac(active)} and single_owner(res), res.summary()
        assert [p.holds(n) for n in ("a", "b")].count(True) == 1
    finally:
        w.stop()
