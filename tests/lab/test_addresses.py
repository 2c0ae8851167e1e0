"""takeover.addresses in a lab node: VIPs and the virtual MAC, as `ip` and the client see them."""

from __future__ import annotations

import json

import pytest

from takeover.addresses import RULE_PRIORITY, macvlan_name
from tests.lab.effects import VMAC, addresses_on, effect, neigh_mac
from tests.lab.lab import VIP4, VIP6, Lab, wait_until
from tests.lab.probe import VipProbe

pytestmark = pytest.mark.netns

V4 = f"{VIP4}/24"
V6 = f"{VIP6}/64"


def _rules(lab: Lab, node: str, family: str) -> list[dict[str, object]]:
    out = lab.run(node, ["ip", family, "-j", "rule", "show"]).stdout
    return [r for r in json.loads(out) if r.get("priority") == RULE_PRIORITY]


def test_add_vip_appears_in_ip_addr_and_answers(lab: Lab) -> None:
    """add puts both VIPs on lan0 (IPv6 nodad); the client reaches them; a second add is a no-op."""
    assert effect(lab, "a", "addresses", "add", "--interface", "lan0", V4, V6)["changed"] == [
        True,
        True,
    ]
    held = addresses_on(lab, "a")
    assert V4 in held and V6 in held
    assert held[V6].get("nodad") is True
    assert lab.ping("client", VIP4) and lab.ping("client", VIP6)
    assert effect(lab, "a", "addresses", "add", "--interface", "lan0", V4, V6)["changed"] == [
        False,
        False,
    ]


def test_remove_vip_is_idempotent(lab: Lab) -> None:
    """remove takes both VIPs off lan0, the client loses them; removing again changes nothing."""
    effect(lab, "a", "addresses", "add", "--interface", "lan0", V4, V6)
    assert effect(lab, "a", "addresses", "remove", "--interface", "lan0", V4, V6)["changed"] == [
        True,
        True,
    ]
    held = addresses_on(lab, "a")
    assert V4 not in held and V6 not in held
    assert f"{lab.nodes['a'].ipv4}/24" in held
    assert not lab.ping("client", VIP4, timeout=0.3)
    assert effect(lab, "a", "addresses", "remove", "--interface", "lan0", V4, V6)["changed"] == [
        False,
        False,
    ]


def test_held_vips_finds_a_leftover_address(lab: Lab) -> None:
    """A VIP left behind (added by hand, as by a killed daemon) is reported held; others not."""
    lab.run("b", ["ip", "addr", "add", V4, "dev", "lan0"])
    assert effect(lab, "b", "addresses", "held", "--interface", "lan0", V4, V6) == {"held": [V4]}
    assert effect(lab, "a", "addresses", "held", "--interface", "lan0", V4, V6) == {"held": []}


def test_missing_interface_is_a_clear_error(lab: Lab) -> None:
    """A VIP on an interface the node lacks fails with the interface named, changing nothing."""
    p = lab.run(
        "a",
        [lab.python, "-m", "takeover.addresses", "add", "--interface", "eth9", V4],
        check=False,
    )
    assert p.returncode != 0
    assert "interface eth9 not found" in p.stderr
    assert V4 not in addresses_on(lab, "a")


def test_mac_takeover_client_sees_only_the_virtual_mac(lab: Lab, vip_probe: VipProbe) -> None:
    """With a virtual MAC, ARP and echo replies for the VIP come from that MAC and no other."""
    args = ["--interface", "lan0", "--mac", VMAC, V4, V6]
    assert effect(lab, "a", "addresses", "add", *args)["changed"] == [True, True]
    dev = macvlan_name(VMAC)
    assert V4 in addresses_on(lab, "a", dev) and V6 in addresses_on(lab, "a", dev)
    assert V4 not in addresses_on(lab, "a")
    # ARP: one answer, from the virtual MAC; the node's own address still answers as lan0.
    own = lab.nodes["a"].ipv4
    guard = effect(lab, "client", "probe", "guard", "--interface", "lan0", VIP4, VIP6, own)
    assert guard == {VIP4: VMAC, VIP6: VMAC, own: lab.mac("a")}
    vip_probe.start(VIP4)
    assert vip_probe.wait_for(VMAC, 20)
    seen = vip_probe.stop()
    assert set(seen.replies_per_mac) == {VMAC}
    # The client's ARP census: every who-has round answered by the virtual MAC alone.
    assert seen.arp_rounds
    assert all(macs == {VMAC} for macs in seen.arp_rounds.values()), seen.arp_rounds
    assert neigh_mac(lab, "client", VIP4) == VMAC


def test_mac_takeover_release_removes_macvlan_and_rules(lab: Lab) -> None:
    """Releasing the last VIP on the virtual MAC deletes the macvlan and its policy rules."""
    args = ["--interface", "lan0", "--mac", VMAC, V4, V6]
    effect(lab, "a", "addresses", "add", *args)
    assert len(_rules(lab, "a", "-4")) == 1 and len(_rules(lab, "a", "-6")) == 1
    assert effect(lab, "a", "addresses", "remove", *args)["changed"] == [True, True]
    links = lab.run("a", ["ip", "-j", "link", "show"]).stdout
    assert macvlan_name(VMAC) not in {link["ifname"] for link in json.loads(links)}
    assert _rules(lab, "a", "-4") == [] and _rules(lab, "a", "-6") == []
    assert effect(lab, "a", "addresses", "remove", *args)["changed"] == [False, False]


def test_virtual_mac_moves_to_the_other_node(lab: Lab, vip_probe: VipProbe) -> None:
    """After release on a and acquire+announce on b, the switch sends the virtual MAC to b."""
    args = ["--interface", "lan0", "--mac", VMAC, V4]
    effect(lab, "a", "addresses", "add", *args)
    vip_probe.start(VIP4)
    assert vip_probe.wait_for(VMAC, 5)
    effect(lab, "a", "addresses", "remove", *args)
    effect(lab, "b", "addresses", "add", *args)
    effect(lab, "b", "announce", "--interface", "lan0", "--mac", VMAC, "--count", "2", VIP4)

    def fdb_port() -> str | None:
        out = lab.run("sw", ["bridge", "-j", "fdb", "show", "br", lab.bridge]).stdout
        ports = [e["ifname"] for e in json.loads(out) if e.get("mac") == VMAC]
        return ports[0] if ports else None

    assert wait_until(lambda: fdb_port() == lab.port("b"), 5)
    before = vip_probe.snapshot().replies_per_mac.get(VMAC, 0)
    assert vip_probe.wait_for(VMAC, before + 10)
    per_mac = vip_probe.stop().replies_per_mac
    assert set(per_mac) == {VMAC}, (per_mac, lab.mac("a"), lab.mac("b"))


def test_muted_vip_is_not_answered_but_cached_clients_keep_reaching_it(lab: Lab) -> None:
    """While muted, no ARP reply or NA for the VIPs leaves; a client with an entry still pings."""
    effect(lab, "a", "addresses", "add", "--interface", "lan0", V4, V6)
    assert lab.ping("client", VIP4) and lab.ping("client", VIP6)
    assert effect(lab, "a", "addresses", "mute", "--interface", "lan0", V4, V6)["ok"]
    # The cached entries still carry traffic: the mute only silences ARP and ND.
    assert lab.ping("client", VIP4) and lab.ping("client", VIP6)
    lab.flush_neigh("client")
    assert not lab.ping("client", VIP4, timeout=0.5)
    assert not lab.ping("client", VIP6, timeout=0.5)
    assert neigh_mac(lab, "client", VIP4) is None
    assert effect(lab, "a", "addresses", "unmute", "--interface", "lan0", V4)["ok"]
    assert lab.ping("client", VIP4) and lab.ping("client", VIP6)
    assert neigh_mac(lab, "client", VIP4) == lab.mac("a")


# Adds V4 and V6 to lan0 with QuickAdder, twice; prints what each add returned.
QUICK_ADD = """
import ipaddress, json, socket, sys
from takeover.addresses import QuickAdder
q = QuickAdder()
index = socket.if_nametoindex("lan0")
vips = [ipaddress.ip_interface(a) for a in sys.argv[1:]]
print(json.dumps([q.add(index, v) for v in vips] + [q.add(index, v) for v in vips]
                 + [q.add(999999, vips[0])]))
"""


def test_quick_add_puts_the_vip_on_at_once_and_eexist_counts_as_held(lab: Lab) -> None:
    """The takeover's quick add (one blocking RTM_NEWADDR) places both VIPs as add_vip does;
    a second add finds them held; a missing interface is a failure, not an exception."""
    out = lab.run("a", [lab.python, "-c", QUICK_ADD, V4, V6]).stdout
    assert json.loads(out) == [True, True, True, True, False]
    held = addresses_on(lab, "a")
    assert V4 in held and V6 in held
    assert held[V6].get("nodad") is True
    assert lab.ping("client", VIP4) and lab.ping("client", VIP6)
