"""takeover.probe in a lab node: the ping list and the VIP guard against real neighbours."""

from __future__ import annotations

import json

import pytest

from tests.lab.effects import VMAC, effect
from tests.lab.lab import IPV4, IPV6, VIP4, VIP6, Lab, wait_until

pytestmark = pytest.mark.netns

TARGETS = [IPV4["t1"], IPV4["t2"], IPV4["t3"], IPV6["t1"], IPV6["t3"]]


def _ping(lab: Lab, node: str, *targets: str) -> dict[str, bool]:
    result: dict[str, bool] = effect(lab, node, "probe", "ping", *targets)
    return result


def test_ping_sees_every_target(lab: Lab) -> None:
    """From a node, every IPv4 and IPv6 target on the LAN answers."""
    assert _ping(lab, "a", *TARGETS) == dict.fromkeys(TARGETS, True)


def test_ping_sees_a_blocked_target_down_and_back(lab: Lab) -> None:
    """A target whose ICMP is dropped is down, the others stay up; unblocked it is back."""
    fault = lab.block("t2", proto="icmp")
    result = _ping(lab, "a", *TARGETS)
    assert result == {**dict.fromkeys(TARGETS, True), IPV4["t2"]: False}
    lab.unblock(fault)
    assert _ping(lab, "a", *TARGETS) == dict.fromkeys(TARGETS, True)


def test_ping_with_the_lan_down_sees_everything_down(lab: Lab) -> None:
    """A node whose switch port is down sees every target unreachable."""
    lab.set_link("lan-a", False)
    assert _ping(lab, "a", *TARGETS) == dict.fromkeys(TARGETS, False)


def test_ping_without_a_route_counts_unreachable(lab: Lab) -> None:
    """A target with no route (ENETUNREACH on send) is unreachable, not a timeout or error."""
    result = _ping(lab, "client", "198.51.100.77", IPV4["t1"])
    assert result == {"198.51.100.77": False, IPV4["t1"]: True}
    why = effect(
        lab, "client", "probe", "ping", "--outcomes", "198.51.100.77", IPV4["t1"], IPV4["t2"]
    )
    assert why == {"198.51.100.77": "unreachable", IPV4["t1"]: "reply", IPV4["t2"]: "reply"}


def test_ping_of_a_silent_target_times_out(lab: Lab) -> None:
    """A target on the LAN that drops echoes is a timeout, not unreachable."""
    lab.block("t3", proto="icmp")
    assert effect(lab, "a", "probe", "ping", "--outcomes", IPV4["t3"]) == {IPV4["t3"]: "timeout"}


def _guard(lab: Lab, node: str, *vips: str) -> dict[str, str | None]:
    result: dict[str, str | None] = effect(
        lab, node, "probe", "guard", "--interface", "lan0", *vips
    )
    return result


@pytest.mark.parametrize(("vip", "prefix"), [(VIP4, 24), (VIP6, 64)], ids=["ipv4", "ipv6"])
def test_guard_finds_the_vip_held_by_the_other_node(lab: Lab, vip: str, prefix: int) -> None:
    """When b holds the VIP, a's guard reports b's MAC; when nobody does, it reports none."""
    assert _guard(lab, "a", vip) == {vip: None}
    lab.run("b", ["ip", "addr", "add", f"{vip}/{prefix}", "dev", "lan0", "nodad"])
    assert _guard(lab, "a", vip) == {vip: lab.mac("b")}


def test_guard_counts_a_holder_on_the_shared_virtual_mac(lab: Lab) -> None:
    """A peer holding the VIP on the virtual MAC this node would use is still found."""
    effect(lab, "b", "addresses", "add", "--interface", "lan0", "--mac", VMAC, f"{VIP4}/24")
    assert _guard(lab, "a", VIP4) == {VIP4: VMAC}


def test_guard_probes_several_vips_in_one_window(lab: Lab) -> None:
    """One guard call over an IPv4 and two IPv6 VIPs reports each holder separately."""
    other6 = "2001:db8::101"
    lab.run("b", ["ip", "addr", "add", f"{VIP4}/24", "dev", "lan0"])
    lab.run("client", ["ip", "addr", "add", f"{other6}/64", "dev", "lan0", "nodad"])
    assert _guard(lab, "a", VIP4, VIP6, other6) == {
        VIP4: lab.mac("b"),
        VIP6: None,
        other6: lab.mac("client"),
    }


def test_claim_listener_hears_garps_and_only_the_nas_of_ipv6(lab: Lab) -> None:
    """a hears b's gratuitous ARP and unsolicited NA as claims; other IPv6 never reaches it."""
    argv = [lab.python, "-m", "takeover.probe", "claims", "--interface", "lan0", "--v6"]
    listener = lab.spawn("a", [*argv, "--seconds", "2.5"])
    assert wait_until(lambda: "listening" in listener.output(), 10, 0.02), listener.output()
    lab.ping("client", IPV6["b"])
    lab.ping("client", IPV6["b"])
    lab.garp("b", VIP4)
    announce = ["--interface", "lan0", "--count", "1", VIP6]
    lab.run("b", [lab.python, "-m", "takeover.announce", *announce])
    listener.wait(10)
    doc = json.loads(listener.output().splitlines()[-1])
    b_mac = lab.mac("b")
    assert [VIP4, b_mac] in doc["claims"] and [VIP6, b_mac] in doc["claims"], doc
    # The client's neighbour solicitations for b are flooded to a's port too, but the kernel
    # filter keeps them out: every frame that reaches the listener is a claim.
    assert doc["frames"] == len(doc["claims"]), doc
