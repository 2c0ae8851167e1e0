"""Another MAC claiming our VIP: claims read off crafted frames, and the defender's answer."""

from __future__ import annotations

import asyncio
import ipaddress
import struct
from typing import Any

import pytest

from takeover import frames
from takeover.addresses import VipPlacement
from takeover.resources import VipDefender, VipResource
from tests.unit.test_runtime_cli import FakeAddresses, FakeAnnouncer

OURS = "02:00:00:00:00:0a"
OTHER = "02:00:00:00:00:0b"
VIP4 = ipaddress.IPv4Address("192.0.2.100")
VIP6 = ipaddress.IPv6Address("2001:db8::100")
HOST = ipaddress.IPv4Address("192.0.2.50")


def arp_request_from(
    mac: str, sender: ipaddress.IPv4Address, target: ipaddress.IPv4Address
) -> bytes:
    """An ordinary who-has from `sender` (a client resolving `target`)."""
    m = frames.mac_bytes(mac)
    arp = struct.pack(
        "!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, m, sender.packed, b"\0" * 6, target.packed
    )
    return frames.BROADCAST_MAC + m + struct.pack("!H", frames.ETH_P_ARP) + arp


CLAIMS = [
    ("garp_request", frames.garp_request(OTHER, VIP4), frames.Claim(VIP4, frames.mac_bytes(OTHER))),
    ("garp_reply", frames.garp_reply(OTHER, VIP4), frames.Claim(VIP4, frames.mac_bytes(OTHER))),
    (
        "who_has_claims_its_sender",
        arp_request_from(OTHER, HOST, VIP4),
        frames.Claim(HOST, frames.mac_bytes(OTHER)),
    ),
    (
        "unsolicited_na",
        frames.unsolicited_na(OTHER, VIP6),
        frames.Claim(VIP6, frames.mac_bytes(OTHER)),
    ),
    ("arp_probe_claims_nothing", frames.arp_probe(OTHER, VIP4), None),
    ("dad_ns_claims_nothing", frames.dad_solicitation(OTHER, VIP6), None),
    ("truncated_arp", frames.garp_reply(OTHER, VIP4)[:30], None),
    ("na_with_bad_checksum", frames.unsolicited_na(OTHER, VIP6)[:-1] + b"\x00", None),
    ("not_arp_or_ipv6", b"\xff" * 12 + b"\x08\x00" + b"\x00" * 40, None),
]


@pytest.mark.parametrize(("frame", "claim"), [pytest.param(f, c, id=name) for name, f, c in CLAIMS])
def test_parse_claim(frame: bytes, claim: frames.Claim | None) -> None:
    """Each crafted frame yields the address claim it makes, or none."""
    assert frames.parse_claim(frame) == claim


def test_na_filter_is_eight_instructions_ending_in_accept_and_drop() -> None:
    """The NA socket filter is a well-formed classic BPF program: accept, then drop."""
    assert len(frames.NA_FILTER) == 8 * 8
    assert struct.unpack_from("=HBBI", frames.NA_FILTER, 6 * 8) == (0x06, 0, 0, 0xFFFF)
    assert struct.unpack_from("=HBBI", frames.NA_FILTER, 7 * 8) == (0x06, 0, 0, 0)


class Rig:
    """One IPv4 VIP on fakes behind a defender with a 0.2 s gap."""

    def __init__(self, mac: str | None = None) -> None:
        self.log: list[str] = []
        announcer: Any = FakeAnnouncer(self.log)
        announcer.mac = OURS
        self.vip = VipResource(
            VipPlacement(ipaddress.ip_interface(f"{VIP4}/24"), "lan0", mac),
            FakeAddresses(self.log),  # type: ignore[arg-type]
            announcer,
            count=1,
        )
        self.defender = VipDefender([self.vip], gap=0.2)

    def garps(self) -> int:
        return sum(line.startswith("garp") for line in self.log)


def run(body: Any) -> None:
    """Run `body` in an event loop (VipResource schedules its bursts there)."""
    asyncio.run(body())


def test_a_foreign_claim_on_a_served_vip_is_answered_at_once_then_rate_limited() -> None:
    """Another MAC's GARP makes the owner announce at once; more within the gap are counted."""

    async def body() -> None:
        rig = Rig()
        await rig.vip.acquire()
        before = rig.garps()
        claim = frames.garp_reply(OTHER, VIP4)
        assert rig.defender.on_frame(claim, 10.0)
        assert rig.garps() == before + 1
        assert not rig.defender.on_frame(claim, 10.1)
        assert rig.garps() == before + 1
        assert rig.defender.on_frame(claim, 10.25)
        assert rig.vip.describe()["conflicts"] == 3

    run(body)


@pytest.mark.parametrize(
    ("frame", "acquired"),
    [
        pytest.param(frames.garp_reply(OURS, VIP4), True, id="our_own_mac"),
        pytest.param(frames.garp_reply(OTHER, "192.0.2.101"), True, id="another_address"),
        pytest.param(frames.arp_probe(OTHER, VIP4), True, id="a_probe"),
        pytest.param(frames.garp_reply(OTHER, VIP4), False, id="found_held_undecided"),
    ],
)
def test_what_is_no_conflict_changes_nothing(frame: bytes, acquired: bool) -> None:
    """Our own MAC, other addresses, probes and VIPs not acquired by us are left alone."""

    async def body() -> None:
        rig = Rig()
        if acquired:
            await rig.vip.acquire()
        else:
            rig.vip.held = True
        before = rig.garps()
        assert not rig.defender.on_frame(frame, 10.0)
        assert rig.garps() == before and rig.vip.conflicts == 0

    run(body)


def test_released_vip_is_not_defended() -> None:
    """After release, another MAC claiming the address is the new owner, not a conflict."""

    async def body() -> None:
        rig = Rig()
        await rig.vip.acquire()
        await rig.vip.release()
        assert not rig.defender.on_frame(frames.garp_request(OTHER, VIP4), 10.0)

    run(body)


def test_virtual_mac_is_our_own() -> None:
    """With MAC takeover, a claim from the virtual MAC is ours; the interface MAC is foreign."""

    async def body() -> None:
        rig = Rig(mac=OTHER)
        await rig.vip.acquire()
        assert not rig.defender.on_frame(frames.garp_request(OTHER, VIP4), 10.0)
        assert rig.defender.on_frame(frames.garp_request(OURS, VIP4), 10.0)

    run(body)
