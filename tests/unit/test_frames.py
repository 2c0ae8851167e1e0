"""Hand-built frames checked against scapy's dissection of the same bytes."""

from __future__ import annotations

import ipaddress

import pytest
from scapy.layers.inet import ICMP, IP
from scapy.layers.inet6 import (
    ICMPv6EchoReply,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6NDOptDstLLAddr,
    IPv6,
)
from scapy.layers.l2 import ARP, Ether

from takeover import frames

MAC = "02:00:5e:10:00:01"
VIP4 = "192.0.2.100"
VIP6 = "2001:db8::100"


def _rebuilt_checksum(pkt: Ether, layer: type) -> int:
    """Scapy's own checksum for `layer` once the field is cleared and the packet rebuilt."""
    clone = Ether(bytes(pkt))
    del clone[layer].cksum
    return int(Ether(bytes(clone))[layer].cksum)


def test_garp_request_fields() -> None:
    """The request form is a broadcast ARP request with sender IP = target IP."""
    pkt = Ether(frames.garp_request(MAC, VIP4))
    assert pkt.dst == "ff:ff:ff:ff:ff:ff"
    assert pkt.src == MAC
    arp = pkt[ARP]
    assert (arp.op, arp.hwsrc, arp.psrc, arp.pdst) == (1, MAC, VIP4, VIP4)
    assert arp.hwdst == "00:00:00:00:00:00"
    assert (arp.hwtype, arp.ptype, arp.hwlen, arp.plen) == (1, 0x0800, 6, 4)


def test_garp_reply_target_mac_is_sender_mac() -> None:
    """The reply form carries target MAC = sender MAC so a locked Linux entry still updates."""
    arp = Ether(frames.garp_reply(MAC, VIP4))[ARP]
    assert (arp.op, arp.hwsrc, arp.hwdst, arp.psrc, arp.pdst) == (2, MAC, MAC, VIP4, VIP4)


def test_arp_probe_has_zero_sender_ip() -> None:
    """An RFC 5227 probe asks for the VIP with sender IP 0.0.0.0."""
    pkt = Ether(frames.arp_probe(MAC, VIP4))
    assert pkt.dst == "ff:ff:ff:ff:ff:ff"
    arp = pkt[ARP]
    assert (arp.op, arp.psrc, arp.pdst, arp.hwsrc) == (1, "0.0.0.0", VIP4, MAC)


def test_unsolicited_na_fields_and_checksum() -> None:
    """The NA goes to ff02::1 with hop limit 255, override flag, target option and a valid sum."""
    pkt = Ether(frames.unsolicited_na(MAC, VIP6))
    assert pkt.dst == "33:33:00:00:00:01"
    assert pkt.src == MAC
    ip6 = pkt[IPv6]
    assert (ip6.src, ip6.dst, ip6.hlim, ip6.nh) == (VIP6, "ff02::1", 255, 58)
    na = pkt[ICMPv6ND_NA]
    assert (na.R, na.S, na.O, na.tgt) == (0, 0, 1, VIP6)
    assert pkt[ICMPv6NDOptDstLLAddr].lladdr == MAC
    assert na.cksum == _rebuilt_checksum(pkt, ICMPv6ND_NA)
    assert ip6.plen == len(bytes(na))


def test_dad_solicitation_fields_and_checksum() -> None:
    """The DAD-style NS comes from :: to the solicited-node group, with no options."""
    pkt = Ether(frames.dad_solicitation(MAC, VIP6))
    assert pkt.dst == "33:33:ff:00:01:00"
    ip6 = pkt[IPv6]
    assert (ip6.src, ip6.dst, ip6.hlim) == ("::", "ff02::1:ff00:100", 255)
    ns = pkt[ICMPv6ND_NS]
    assert ns.tgt == VIP6
    assert ns.cksum == _rebuilt_checksum(pkt, ICMPv6ND_NS)
    assert bytes(ns.payload) == b""


@pytest.mark.parametrize("builder", [frames.garp_request, frames.garp_reply])
def test_parse_arp_reads_what_scapy_builds(builder: object) -> None:
    """parse_arp returns the fields of an ARP reply that scapy built."""
    raw = bytes(
        Ether(src="02:00:00:00:00:0b", dst=MAC)
        / ARP(op=2, hwsrc="02:00:00:00:00:0b", psrc=VIP4, hwdst=MAC, pdst="192.0.2.11")
    )
    got = frames.parse_arp(raw)
    assert got is not None
    assert got.op == 2
    assert frames.mac_str(got.sender_mac) == "02:00:00:00:00:0b"
    assert got.sender_ip == ipaddress.IPv4Address(VIP4)
    assert got.target_ip == ipaddress.IPv4Address("192.0.2.11")
    assert frames.mac_str(got.eth_src) == "02:00:00:00:00:0b"


def test_parse_arp_rejects_truncated_and_foreign() -> None:
    """Truncated frames and non-ARP ethertypes parse to None rather than raising."""
    raw = frames.garp_request(MAC, VIP4)
    assert frames.parse_arp(raw[:30]) is None
    assert frames.parse_arp(frames.unsolicited_na(MAC, VIP6)) is None
    bad_htype = raw[:14] + b"\x00\x06" + raw[16:]
    assert frames.parse_arp(bad_htype) is None


def test_parse_neighbor_advert_of_scapy_na() -> None:
    """parse_neighbor_advert reads flags, target and TLL option from a scapy-built NA."""
    other = "02:00:00:00:00:0b"
    raw = bytes(
        Ether(src=other, dst="33:33:00:00:00:01")
        / IPv6(src="2001:db8::12", dst="ff02::1", hlim=255)
        / ICMPv6ND_NA(tgt=VIP6, R=0, S=0, O=1)
        / ICMPv6NDOptDstLLAddr(lladdr=other)
    )
    got = frames.parse_neighbor_advert(raw)
    assert got is not None
    assert got.target == ipaddress.IPv6Address(VIP6)
    assert got.target_mac is not None and frames.mac_str(got.target_mac) == other
    assert got.flags & frames.NA_FLAG_OVERRIDE
    assert not got.flags & frames.NA_FLAG_SOLICITED


def test_parse_neighbor_advert_round_trip() -> None:
    """Our own unsolicited NA parses back to the same target and MAC."""
    got = frames.parse_neighbor_advert(frames.unsolicited_na(MAC, VIP6))
    assert got is not None
    assert got.target == ipaddress.IPv6Address(VIP6)
    assert got.target_mac == frames.mac_bytes(MAC)


def test_parse_neighbor_advert_drops_bad_checksum_and_hop_limit() -> None:
    """An NA with a wrong checksum or a hop limit below 255 is rejected."""
    raw = bytearray(frames.unsolicited_na(MAC, VIP6))
    bad_sum = bytes(raw[:56]) + bytes([raw[56] ^ 0xFF]) + bytes(raw[57:])
    assert frames.parse_neighbor_advert(bad_sum) is None
    raw[21] = 64  # hop limit byte of the IPv6 header
    assert frames.parse_neighbor_advert(bytes(raw)) is None
    assert frames.parse_neighbor_advert(bytes(raw[:40])) is None


def test_parse_neighbor_advert_drops_zero_length_option() -> None:
    """An option with length 0 (a classic parser loop) makes the NA invalid."""
    body = frames.unsolicited_na(MAC, VIP6)
    # Rebuild with a zero-length option and a recomputed checksum so only the option is wrong.
    icmp = bytearray(body[54:])
    icmp[25] = 0
    icmp[2:4] = b"\x00\x00"
    csum = frames.icmpv6_checksum(ipaddress.IPv6Address(VIP6), frames.ALL_NODES, bytes(icmp))
    icmp[2:4] = csum.to_bytes(2, "big")
    assert frames.parse_neighbor_advert(body[:54] + bytes(icmp)) is None


def test_icmp_echo_v4_checksum_matches_scapy() -> None:
    """The IPv4 echo request carries the checksum scapy computes for it."""
    msg = frames.icmp_echo(0x1234, 7, b"hapair")
    icmp = ICMP(msg)
    assert (icmp.type, icmp.id, icmp.seq, bytes(icmp.payload)) == (8, 0x1234, 7, b"hapair")
    clone = ICMP(msg)
    del clone.chksum
    assert icmp.chksum == ICMP(bytes(clone)).chksum


def test_parse_icmp_echo_reply_v4_and_v6() -> None:
    """Echo replies from scapy parse to their ident and sequence; requests do not."""
    v4 = bytes(IP(src="192.0.2.1", dst="192.0.2.11") / ICMP(type=0, id=9, seq=3))
    assert frames.parse_icmp_echo_reply(v4) == frames.EchoReply(9, 3)
    v6 = bytes(ICMPv6EchoReply(id=9, seq=4))
    assert frames.parse_icmp_echo_reply(v6, v6=True) == frames.EchoReply(9, 4)
    assert frames.parse_icmp_echo_reply(frames.icmp_echo(9, 4, v6=True), v6=True) is None
    assert frames.parse_icmp_echo_reply(b"\x45\x00") is None


@pytest.mark.parametrize("bad", ["02:00:5e:10:00", "zz:00:5e:10:00:01", "0200.5e10.0001"])
def test_mac_bytes_rejects_malformed(bad: str) -> None:
    """A malformed MAC raises FrameError naming the value."""
    with pytest.raises(frames.FrameError, match="MAC"):
        frames.mac_bytes(bad)


def test_solicited_node_group() -> None:
    """The solicited-node group keeps the low 24 bits of the address."""
    got = frames.solicited_node(ipaddress.IPv6Address("2001:db8::12:3456"))
    assert got == ipaddress.IPv6Address("ff02::1:ff12:3456")
