"""takeover.announce in a lab node: the client follows a VIP to its new node at once."""

from __future__ import annotations

import logging

import pytest

from tests.lab.effects import VMAC, addresses_on, effect, neigh_mac
from tests.lab.lab import VIP4, VIP6, Lab
from tests.lab.probe import VipProbe

pytestmark = pytest.mark.netns
log = logging.getLogger(__name__)


def _move(lab: Lab, vip: str, prefix: int, src: str, dst: str) -> None:
    """Take the VIP off src and put it on dst, with no announcement at all."""
    effect(lab, src, "addresses", "remove", "--interface", "lan0", f"{vip}/{prefix}")
    effect(lab, dst, "addresses", "add", "--interface", "lan0", f"{vip}/{prefix}")


def _point_client(lab: Lab, vip: str, mac: str) -> None:
    """Give the client a (non-permanent) neighbour entry for vip naming mac."""
    argv = ["ip", "neigh", "replace", vip, "lladdr", mac, "dev", "lan0", "nud", "stale"]
    lab.run("client", argv)


@pytest.mark.parametrize(("vip", "prefix"), [(VIP4, 24), (VIP6, 64)], ids=["ipv4", "ipv6"])
def test_announcement_moves_the_client_to_the_new_mac(
    lab: Lab, vip_probe: VipProbe, vip: str, prefix: int
) -> None:
    """Moved silently the client keeps the old MAC; once b announces, b answers the client."""
    # The client's entry must stay REACHABLE for the whole test (15-45 s by default): on a slow
    # machine it could go STALE, be re-resolved by broadcast and find b without any announcement.
    family = "ipv6" if ":" in vip else "ipv4"
    lab.run("client", ["sysctl", "-qw", f"net.{family}.neigh.lan0.base_reachable_time_ms=600000"])
    effect(lab, "a", "addresses", "add", "--interface", "lan0", f"{vip}/{prefix}")
    # No ARP census: b's answers to it would move the client's entry once a's stop (1 s
    # locktime), an announcement of sorts that this test must not have.
    vip_probe.start(vip, arp_every=0)
    assert vip_probe.wait_for(lab.mac("a"), 5)
    _move(lab, vip, prefix, "a", "b")
    assert f"{vip}/{prefix}" in addresses_on(lab, "b")
    # Without an announcement nothing tells the client: its entry still names a.
    assert neigh_mac(lab, "client", vip) == lab.mac("a")
    out = effect(
        lab, "b", "announce", "--interface", "lan0", "--count", "3", "--interval", "0.05", vip
    )
    assert out["frames"] == (6 if ":" not in vip else 3) and out["errors"] == 0
    assert vip_probe.wait_for(lab.mac("b"), 10)
    seen = vip_probe.stop()
    first_b = seen.first_reply[lab.mac("b")]
    log.info(
        "announce.measured vip=%s announce_to_first_reply_ms=%.1f",
        vip, (first_b - out["started"]) * 1000,
    )  # fmt: skip
    # Generous bound: the client moved because of the announcement, not an ARP timeout (26 s).
    assert first_b - out["started"] < 2.0
    assert seen.mac_changes == 1
    assert neigh_mac(lab, "client", vip) == lab.mac("b")


def test_announcement_overrides_a_freshly_learned_entry(lab: Lab) -> None:
    """Within the client's 1 s locktime the request form still moves its entry to b."""
    lab.run("a", ["ip", "addr", "add", f"{VIP4}/24", "dev", "lan0"])
    assert lab.ping("client", VIP4)
    lab.run("a", ["ip", "addr", "del", f"{VIP4}/24", "dev", "lan0"])
    lab.run("b", ["ip", "addr", "add", f"{VIP4}/24", "dev", "lan0"])
    assert neigh_mac(lab, "client", VIP4) == lab.mac("a")
    effect(lab, "b", "announce", "--interface", "lan0", "--count", "1", VIP4)
    assert neigh_mac(lab, "client", VIP4) == lab.mac("b")


def test_announce_with_a_virtual_mac_names_that_mac(lab: Lab) -> None:
    """--mac makes the frames carry the virtual MAC, whatever the sending interface's MAC is."""
    vmac = "02:00:5e:10:00:07"
    _point_client(lab, VIP4, lab.mac("a"))
    _point_client(lab, VIP6, lab.mac("a"))
    effect(lab, "b", "announce", "--interface", "lan0", "--mac", vmac, "--count", "1", VIP4, VIP6)
    assert neigh_mac(lab, "client", VIP4) == vmac
    assert neigh_mac(lab, "client", VIP6) == vmac


def test_periodic_refresh_repairs_a_wrong_entry(lab: Lab) -> None:
    """refresh_forever re-announces held VIPs: a client entry pointed elsewhere comes back."""
    lab.run("b", ["ip", "addr", "add", f"{VIP4}/24", "dev", "lan0"])
    _point_client(lab, VIP4, lab.mac("a"))
    script = (
        "import asyncio, ipaddress\n"
        "from takeover.announce import Announcer, refresh_forever\n"
        "async def main():\n"
        "    a = Announcer('lan0')\n"
        f"    held = lambda: [(ipaddress.ip_address('{VIP4}'), None)]\n"
        "    task = asyncio.create_task(refresh_forever(a, held, 0.05))\n"
        "    await asyncio.sleep(0.3)\n"
        "    task.cancel()\n"
        "    print(a.sent)\n"
        "asyncio.run(main())\n"
    )
    sent = int(lab.run("b", [lab.python, "-c", script]).stdout)
    # 0.3 s at 0.05 s: about 5 rounds of 2 frames; at least 2 rounds even on a loaded machine.
    assert sent >= 4
    assert neigh_mac(lab, "client", VIP4) == lab.mac("b")


@pytest.mark.parametrize("mac", [None, VMAC], ids=["node-mac", "virtual-mac"])
def test_acquire_and_announce_reaches_the_client_at_once(
    lab: Lab, vip_probe: VipProbe, mac: str | None
) -> None:
    """add_vip + announce on b (all opened beforehand): the client's next replies come from b."""
    extra = ["--mac", mac] if mac else []
    args = ["--interface", "lan0", *extra, f"{VIP4}/24"]
    effect(lab, "a", "addresses", "add", *args)
    vip_probe.start(VIP4)
    old = mac or lab.mac("a")
    new = mac or lab.mac("b")
    assert vip_probe.wait_for(old, 5)
    effect(lab, "a", "addresses", "remove", *args)
    out = effect(lab, "b", "addresses", "add", "--announce", "5", *args)
    assert vip_probe.wait_for(new, vip_probe.snapshot().replies_per_mac.get(new, 0) + 5)
    seen = vip_probe.stop()
    after = [r.t for r in seen.replies if r.t > out["started"] and r.mac == new]
    log.info(
        "announce.measured acquire mac=%s add_vip_to_first_reply_ms=%.1f",
        mac or "node", (after[0] - out["started"]) * 1000,
    )  # fmt: skip
    assert after[0] - out["started"] < 2.0
    assert all(r.mac == new for r in seen.replies if r.t > out["started"])
