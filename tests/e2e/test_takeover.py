"""takeover end to end: both daemons in the lab, faults injected, the client's view asserted.

Each test starts the pair (a preferred), lets the client ping the VIP every 10 ms, injects a
fault, and asserts who holds the VIP, that no two MACs ever answered for it, and that the
client-seen outage stays within a generous bound (the bench measures it precisely).
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator

import pytest

from takeover.machine import PEER_STILL_SERVING
from tests.lab.effects import neigh_mac
from tests.lab.lab import IPV4, VIP4, Lab, wait_until
from tests.lab.pair import HB_PORT, HapairPair, PairConfig
from tests.lab.probe import ProbeResult, VipProbe
from tests.lab.vm_pair import start_bmcs

pytestmark = pytest.mark.e2e

# Generous: deadtime is 0.3 s in the lab pair; a failover well under this is the norm.
OUTAGE_BOUND = 3.0


@pytest.fixture
def pair(lab: Lab) -> Iterator[HapairPair]:
    """Both daemons running, a active and b standby, before the test starts."""
    p = HapairPair(lab, PairConfig())
    p.start()
    assert p.wait_role("a", "ACTIVE", 30), p.log("a")
    assert p.wait_role("b", "STANDBY", 30), p.log("b")
    yield p


def serving(lab: Lab, probe: VipProbe, node: str) -> None:
    """Start the client probe and wait until `node` answers steadily for the VIP."""
    probe.start(VIP4)
    assert probe.wait_for(lab.mac(node), 30, timeout=15)


def single_owner(res: ProbeResult) -> bool:
    """Return whether no two MACs ever answered for the VIP at once."""
    return max(res.dual_time, res.dual_owner_time) == 0


def status(pair: HapairPair, node: str) -> dict[str, object]:
    """Return `takeover status --json` of node."""
    return pair.status(node)


def test_start_together_elects_exactly_one(pair: HapairPair, lab: Lab) -> None:
    """Both nodes started together: the higher priority holds the VIP, the other nothing."""
    assert pair.holds("a") and not pair.holds("b")
    doc = status(pair, "b")
    peer = doc["peer"]
    assert isinstance(peer, dict) and peer["role"] == "ACTIVE"
    links = doc["links"]
    assert isinstance(links, dict) and all(v["up"] for v in links.values())


def test_active_crash_standby_takes_over(pair: HapairPair, lab: Lab, vip_probe: VipProbe) -> None:
    """Killing the active node moves the VIP to the standby with a bounded outage."""
    serving(lab, vip_probe, "a")
    lab.kill_node("a")
    assert vip_probe.wait_for(lab.mac("b"), 30, timeout=15)
    res = vip_probe.stop()
    assert res.outage < OUTAGE_BOUND, f"{res.summary()}\n{pair.log('b')[-4000:]}"
    assert single_owner(res), res.summary()
    assert pair.holds("b") and pair.role("b") == "ACTIVE"


def test_sigstop_of_active_then_thaw(pair: HapairPair, lab: Lab, vip_probe: VipProbe) -> None:
    """A frozen active daemon still serves through its kernel: nobody else takes the VIP."""
    serving(lab, vip_probe, "a")
    pair.procs["a"].signal(signal.SIGSTOP)
    time.sleep(3.0)
    cond = status(pair, "b")["local"]
    assert isinstance(cond, dict) and cond["role"] == "STANDBY"
    assert cond["condition"] == PEER_STILL_SERVING
    pair.procs["a"].signal(signal.SIGCONT)
    assert wait_until(lambda: pair.role("a") == "ACTIVE", 10, 0.2)
    time.sleep(1.0)
    res = vip_probe.stop()
    assert single_owner(res), res.summary()
    assert res.outage < OUTAGE_BOUND and set(res.replies_per_mac) == {lab.mac("a")}
    assert pair.holds("a") and not pair.holds("b")


def test_lan_down_on_active(pair: HapairPair, lab: Lab, vip_probe: VipProbe) -> None:
    """The active's LAN port goes down: the standby takes over via the direct link's word."""
    serving(lab, vip_probe, "a")
    lab.set_link("lan-a", False)
    assert vip_probe.wait_for(lab.mac("b"), 30, timeout=15)
    res = vip_probe.stop()
    assert res.outage < OUTAGE_BOUND, res.summary()
    assert single_owner(res), res.summary()
    assert not pair.holds("a") and pair.holds("b")


def test_link_flapping_on_active_moves_the_service_once(
    pair: HapairPair, lab: Lab, vip_probe: VipProbe
) -> None:
    """The active's LAN port and direct link flap every 300 ms: one move, never two owners."""
    serving(lab, vip_probe, "a")
    up = True
    for _ in range(16):
        up = not up
        lab.set_link("lan-a", up)
        lab.set_link("hb", up)
        time.sleep(0.3)
    assert up
    assert vip_probe.wait_for(lab.mac("b"), 30, timeout=15)
    time.sleep(2.0)
    res = vip_probe.stop()
    assert single_owner(res), res.summary()
    assert res.mac_changes == 1, res.summary()
    b_moves = status(pair, "b")["transitions"]
    assert isinstance(b_moves, list)
    assert len([t for t in b_moves if t["new"] == "ACTIVE"]) == 1, b_moves
    assert pair.holds("b") and not pair.holds("a")


def test_lan_down_on_standby_moves_nothing(pair: HapairPair, lab: Lab, vip_probe: VipProbe) -> None:
    """The standby losing its LAN changes nothing for the client."""
    serving(lab, vip_probe, "a")
    lab.set_link("lan-b", False)
    time.sleep(3.0)
    lab.set_link("lan-b", True)
    time.sleep(1.0)
    res = vip_probe.stop()
    assert set(res.replies_per_mac) == {lab.mac("a")} and res.outage < 0.5, res.summary()
    assert pair.role("a") == "ACTIVE" and pair.role("b") == "STANDBY"


def test_direct_link_cut_keeps_pair(pair: HapairPair, lab: Lab, vip_probe: VipProbe) -> None:
    """With the direct link cut, heartbeats over the LAN keep the pair together."""
    serving(lab, vip_probe, "a")
    lab.set_link("hb", False)
    time.sleep(2.0)
    doc = status(pair, "b")
    links = doc["links"]
    assert isinstance(links, dict) and links["lan"]["up"] and not links["direct"]["up"]
    lab.set_link("hb", True)
    res = vip_probe.stop()
    assert set(res.replies_per_mac) == {lab.mac("a")} and res.outage < 0.5, res.summary()
    assert pair.role("b") == "STANDBY"


def test_all_heartbeats_dropped_vip_guard(pair: HapairPair, lab: Lab, vip_probe: VipProbe) -> None:
    """Every heartbeat path silently dropped while both reach the LAN: still one owner."""
    serving(lab, vip_probe, "a")
    faults = [lab.block(n, proto="udp", port=HB_PORT) for n in ("a", "b")]

    def backed_off() -> bool:
        local = status(pair, "b").get("local")
        return isinstance(local, dict) and local.get("condition") == PEER_STILL_SERVING

    assert wait_until(backed_off, 10, 0.2), pair.log("b")[-3000:]
    vips = status(pair, "b")["vips"]
    assert isinstance(vips, list) and vips[0]["holder_seen"].startswith("a? (answers on the LAN")
    time.sleep(2.0)
    for f in faults:
        lab.unblock(f)
    time.sleep(1.5)
    res = vip_probe.stop()
    assert single_owner(res), res.summary()
    assert set(res.replies_per_mac) == {lab.mac("a")} and res.outage < 0.5, res.summary()
    assert pair.role("a") == "ACTIVE" and pair.role("b") == "STANDBY"


def test_heartbeat_loss_does_not_flap(pair: HapairPair, lab: Lab, vip_probe: VipProbe) -> None:
    """30% loss on every heartbeat link for several seconds moves nothing."""
    serving(lab, vip_probe, "a")
    faults = [lab.loss(n, 30, port=HB_PORT) for n in ("a", "b")]
    time.sleep(6.0)
    for f in faults:
        lab.unblock(f)
    res = vip_probe.stop()
    assert res.mac_changes == 0 and single_owner(res), res.summary()
    # a never left ACTIVE; b may, rarely, miss three heartbeats in a row on both links (about
    # 0.09^3 per window at 30% loss each) and arbitrate, but the VIP guard keeps it standby.
    a_moves = status(pair, "a")["transitions"]
    assert isinstance(a_moves, list) and len(a_moves) == 1, a_moves
    b_moves = status(pair, "b")["transitions"]
    assert isinstance(b_moves, list), b_moves
    assert not [t for t in b_moves if t["new"] == "ACTIVE"], b_moves
    assert pair.holds("a") and not pair.holds("b")
    assert pair.role("a") == "ACTIVE" and pair.role("b") == "STANDBY"


CAPTURE = """
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
s.bind(("lan0", 0))
s.settimeout(5)
while True:
    frame = s.recv(4096)
    ip = frame[14:]
    ihl = (ip[0] & 15) * 4
    if ip[9] == 17 and ip[12:16] == socket.inet_aton(sys.argv[1]):
        udp = ip[ihl:]
        if int.from_bytes(udp[2:4], "big") == int(sys.argv[2]):
            print(udp[8:].hex())
            break
"""

SEND = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for hexdata in sys.argv[3:]:
    s.sendto(bytes.fromhex(hexdata), (sys.argv[1], int(sys.argv[2])))
"""


def test_forged_and_replayed_heartbeats_are_counted(pair: HapairPair, lab: Lab) -> None:
    """Garbage, forged and replayed datagrams from a's address are dropped and counted per
    reason; the same from the client are dropped unread as wrong_source."""
    captured = lab.run("b", [lab.python, "-c", CAPTURE, IPV4["a"], str(HB_PORT)]).stdout.strip()
    assert captured, "no heartbeat from a captured on b's LAN"
    forged = bytearray(bytes.fromhex(captured))
    forged[-1] ^= 0xFF
    before = status(pair, "b")["heartbeat"]
    assert isinstance(before, dict)
    datagrams = ["00" * 10, "48415052" + "00" * 100, forged.hex(), captured, captured]
    for sender in ("a", "client"):
        lab.run(sender, [lab.python, "-c", SEND, IPV4["b"], str(HB_PORT), *datagrams])
    # The status file is rewritten once a second: wait for the counts, do not sleep and hope.
    seen: dict[str, object] = {}

    def counted() -> bool:
        doc = status(pair, "b").get("heartbeat")
        if not isinstance(doc, dict):
            return False
        seen.clear()
        seen.update(doc)
        grown = doc.get("wrong_source", 0) - before.get("wrong_source", 0)
        return grown >= len(datagrams) and doc.get("replay", 0) - before["replay"] >= 2

    wait_until(counted, 10, 0.2)
    after = dict(seen)
    grew = {k for k in after if isinstance(after[k], int) and after[k] > before.get(k, 0)}
    assert {"truncated", "bad_mac", "replay"} <= grew, json.dumps([before, after])
    assert after["wrong_source"] - before.get("wrong_source", 0) == len(datagrams)
    assert after["replay"] - before["replay"] >= 2
    assert pair.role("a") == "ACTIVE" and pair.role("b") == "STANDBY"


def test_sigkill_restart_reconciles_stale_vip(
    pair: HapairPair, lab: Lab, vip_probe: VipProbe
) -> None:
    """A daemon killed with SIGKILL leaves its VIP; after its restart exactly one node holds it."""
    serving(lab, vip_probe, "a")
    pair.procs["a"].signal(signal.SIGKILL)
    pair.procs["a"].wait(10)
    time.sleep(1.5)
    assert pair.holds("a") and not pair.holds("b")
    pair.start("a")
    assert wait_until(lambda: pair.role("a") in ("ACTIVE", "STANDBY"), 15, 0.2)
    time.sleep(2.0)
    res = vip_probe.stop()
    assert single_owner(res), res.summary()
    assert pair.holds("a") != pair.holds("b")
    assert {pair.role("a"), pair.role("b")} == {"ACTIVE", "STANDBY"}


def test_sigkill_restart_of_the_active_keeps_the_vip_even_when_the_peer_is_preferred(
    lab: Lab, vip_probe: VipProbe
) -> None:
    """The active (a, lower priority) killed and restarted at once keeps serving: no removal.

    b is preferred by priority, so the old start-up election handed the service to b (a gap and
    a release); probe first, then decide keeps what a holds while b is heard as a clean standby.
    """
    pair = HapairPair(lab, PairConfig(priorities={"a": 100, "b": 150}))
    pair.start("a")
    assert pair.wait_role("a", "ACTIVE", 30), pair.log("a")
    pair.start("b")
    assert pair.wait_role("b", "STANDBY", 30), pair.log("b")
    serving(lab, vip_probe, "a")
    pair.procs["a"].signal(signal.SIGKILL)
    pair.procs["a"].wait(10)
    pair.start("a")
    assert wait_until(lambda: pair.role("a") in ("ACTIVE", "STANDBY"), 15, 0.1), pair.log("a")
    time.sleep(1.0)
    res = vip_probe.stop()
    assert pair.role("a") == "ACTIVE", pair.log("a")
    assert "vip.removed" not in pair.log("a")
    assert pair.holds("a") and not pair.holds("b") and pair.role("b") == "STANDBY"
    assert single_owner(res), res.summary()
    assert set(res.replies_per_mac) == {lab.mac("a")}, res.summary()
    # Generous: the restart itself takes about a second of Python start-up, in which the
    # kernel keeps answering; what must not happen is a release and a failover.
    assert res.outage < 1.0, res.summary()


def test_returning_node_restarted_while_cut_off_never_answers_for_the_vip(
    lab: Lab, vip_probe: VipProbe
) -> None:
    """a crashes with its links down, b takes over, a's takeover starts again while cut off (the
    VIP still on a); when a's cables come back the client stays on b and a never answers."""
    pair = HapairPair(lab, PairConfig(initdead=3.0))
    pair.start()
    assert pair.wait_role("a", "ACTIVE", 30), pair.log("a")
    assert pair.wait_role("b", "STANDBY", 30), pair.log("b")
    vip_probe.start(VIP4)
    # a's daemon dies and its cables go: the VIP stays on a's interface, b takes over.
    lab.kill_node("a")
    assert pair.wait_role("b", "ACTIVE", 15), pair.log("b")
    assert vip_probe.wait_for(lab.mac("b"), 20, timeout=10)
    assert pair.holds("a"), "the killed daemon should have left its VIP"
    starts = pair.log("a").count("daemon.start ")
    pair.start("a")
    assert wait_until(lambda: pair.log("a").count("daemon.start ") > starts, 15, 0.02)
    # Cables back while a's new daemon is still in its start-up (initdead 3 s).
    lab.revive_node("a")
    back = time.monotonic()
    assert pair.wait_role("a", "STANDBY", 15), pair.log("a")
    time.sleep(2.0)
    res = vip_probe.stop()
    a_mac, b_mac = lab.mac("a"), lab.mac("b")
    late = [r for r in res.replies if r.t >= back]
    assert late and all(r.mac == b_mac for r in late), res.summary()
    # Census rounds are numbered from the probe's start, one every arp_every seconds.
    first_round = int((back - res.started) / res.arp_every)
    answered_a = [n for n, macs in res.arp_rounds.items() if n > first_round and a_mac in macs]
    assert not answered_a, (answered_a, res.summary())
    assert res.gaps(1.0) == [] or all(b < back for _, b in res.gaps(1.0)), res.summary()
    assert not pair.holds("a") and pair.holds("b")


def test_owner_reannounces_when_another_mac_claims_its_vip(
    pair: HapairPair, lab: Lab, vip_probe: VipProbe
) -> None:
    """A gratuitous ARP for the VIP from b's MAC repoints the client; a re-announces at once."""
    serving(lab, vip_probe, "a")
    claimed = time.monotonic()
    lab.garp("b", VIP4)
    # Generous: the client points at a again within a second (one GARP round away).
    assert wait_until(lambda: neigh_mac(lab, "client", VIP4) == lab.mac("a"), 1.0, 0.01)
    assert "vip.conflict" in pair.log("a"), pair.log("a")
    time.sleep(0.5)
    res = vip_probe.stop()
    assert res.gaps(1.0) == [], res.summary()
    assert all(r.mac == lab.mac("a") for r in res.replies if r.t >= claimed), res.summary()

    def counted() -> bool:
        vips = status(pair, "a")["vips"]
        return isinstance(vips, list) and vips[0]["conflicts"] >= 1

    # The status file is rewritten every status_interval (1 s here).
    assert wait_until(counted, 5, 0.2), status(pair, "a")
    assert pair.role("a") == "ACTIVE" and pair.role("b") == "STANDBY"


def test_a_hung_active_is_fenced_after_hung_after_and_the_standby_serves(
    lab: Lab, vip_probe: VipProbe
) -> None:
    """Every process of a frozen (its kernel still answers for the VIP): b waits hung_after,
    fences a through its BMC, and serves; the VIP never had two owners."""
    bmcs = start_bmcs(lab)
    try:
        fencing = {
            n: f'[node.fencing]\ntype = "ipmi"\naddress = "{b.address}"\nport = {b.port}\n'
            f'user = "{b.user}"\npassword_file = "{b.write_password_file()}"\n'
            'timeout = "8s"\nhung_after = "2s"\n'
            for n, b in bmcs.items()
        }
        pair = HapairPair(lab, PairConfig(node_extra=fencing))
        pair.start()
        assert pair.wait_role("a", "ACTIVE", 30), pair.log("a")
        assert pair.wait_role("b", "STANDBY", 30), pair.log("b")
        serving(lab, vip_probe, "a")
        frozen = lab.freeze("a")
        frozen_at = time.monotonic()
        assert vip_probe.wait_for(lab.mac("b"), 30, timeout=20), pair.log("b")[-4000:]
        waited = time.monotonic() - frozen_at
        lab.thaw(frozen)
        res = vip_probe.stop()
        assert single_owner(res), res.summary()
        assert bmcs["a"].power() == "off" and "set power 0" in bmcs["a"].calls()
        assert pair.role("b") == "ACTIVE" and pair.holds("b")
        log_b = pair.log("b")
        assert "peer hung: silent" in log_b, log_b[-4000:]
        # Not before hung_after: a short pause is not a hang.
        assert waited >= 2.0, waited
    finally:
        for bmc in bmcs.values():
            bmc.stop()
