"""Ethernet frames that announce and probe addresses. Pure: bytes in, bytes out.

Built by hand with `struct` so the failover path never waits for scapy: a frame is a few bytes
prepared at start-up and handed to a raw AF_PACKET socket.

- `garp_request` / `garp_reply`: gratuitous ARP (RFC 5227 "ARP announcement" and the reply form).
  Linux clients ignore ARP replies whose target MAC differs from the sender MAC for `locktime`
  (1 s) after learning an entry; the request form and the reply form with target MAC = sender
  MAC always override, so both are sent, the request first.
- `arp_probe`: RFC 5227 probe (sender IP 0.0.0.0) asking who holds an address.
- `unsolicited_na`: IPv6 neighbour advertisement to all-nodes with the override flag.
- `dad_solicitation`: IPv6 neighbour solicitation from :: to the solicited-node group (DAD style).
- `icmp_echo` / `parse_icmp_echo_reply`: ICMP(v6) echo payloads for raw IP sockets.
- `parse_arp` / `parse_neighbor_advert`: read answers; malformed input yields None.
- `parse_claim`: who says an address lives at which MAC (an ARP packet with a sender IP, or an
  NA), for the owner of a VIP that must notice another MAC answering for it.
- `NA_FILTER`: a classic BPF program passing only ICMPv6 neighbour advertisements, so a packet
  socket listening for them is not handed every IPv6 frame of a busy server.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Final

ETH_P_ARP: Final = 0x0806
ETH_P_IPV6: Final = 0x86DD
ETH_HEADER_LEN: Final = 14
BROADCAST_MAC: Final = b"\xff" * 6
ZERO_MAC: Final = b"\x00" * 6
ARP_REQUEST: Final = 1
ARP_REPLY: Final = 2
ICMPV6_NS: Final = 135
ICMPV6_NA: Final = 136
ICMPV6_ECHO_REQUEST: Final = 128
ICMPV6_ECHO_REPLY: Final = 129
ICMP_ECHO_REQUEST: Final = 8
ICMP_ECHO_REPLY: Final = 0
IPPROTO_ICMPV6: Final = 58
# NA flags byte: Router, Solicited, Override in the top three bits.
NA_FLAG_ROUTER: Final = 0x80
NA_FLAG_SOLICITED: Final = 0x40
NA_FLAG_OVERRIDE: Final = 0x20
ND_OPT_SOURCE_LL: Final = 1
ND_OPT_TARGET_LL: Final = 2
ALL_NODES: Final = ipaddress.IPv6Address("ff02::1")
UNSPECIFIED_V6: Final = ipaddress.IPv6Address("::")

_ETH = struct.Struct("!6s6sH")
# htype, ptype, hlen, plen, op, sha, spa, tha, tpa
_ARP = struct.Struct("!HHBBH6s4s6s4s")
# version/class/flow, payload length, next header, hop limit, src, dst
_IPV6 = struct.Struct("!IHBB16s16s")
# type, code, checksum, flags(32 bits incl. reserved), target
_ND = struct.Struct("!BBHI16s")
_ECHO = struct.Struct("!BBHHH")


class FrameError(ValueError):
    """An address or MAC given to a frame builder is not usable."""


@dataclass(frozen=True)
class ArpPacket:
    """The fields of an ARP packet read off the wire."""

    eth_src: bytes
    op: int
    sender_mac: bytes
    sender_ip: ipaddress.IPv4Address
    target_mac: bytes
    target_ip: ipaddress.IPv4Address


@dataclass(frozen=True)
class NeighborAdvert:
    """The fields of an IPv6 neighbour advertisement read off the wire."""

    eth_src: bytes
    src: ipaddress.IPv6Address
    dst: ipaddress.IPv6Address
    target: ipaddress.IPv6Address
    flags: int
    # The target link-layer address option, if the sender included one.
    target_mac: bytes | None


@dataclass(frozen=True)
class Claim:
    """A host telling the LAN that `ip` lives at `mac`."""

    ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    mac: bytes


@dataclass(frozen=True)
class EchoReply:
    """An ICMP or ICMPv6 echo reply: who answered which probe."""

    ident: int
    seq: int


def mac_bytes(mac: str | bytes) -> bytes:
    """Return the 6 raw bytes of a MAC written as "02:00:5e:10:00:01" (or already raw)."""
    if isinstance(mac, bytes):
        if len(mac) != 6:
            raise FrameError(f"MAC must be 6 bytes, got {len(mac)}")
        return mac
    parts = mac.replace("-", ":").split(":")
    if len(parts) != 6 or not all(len(p) == 2 for p in parts):
        raise FrameError(f"MAC must look like 02:00:5e:10:00:01, got {mac!r}")
    try:
        return bytes(int(p, 16) for p in parts)
    except ValueError:
        raise FrameError(f"MAC must be hexadecimal, got {mac!r}") from None


def mac_str(raw: bytes) -> str:
    """Return a MAC in the usual lower-case colon form."""
    return ":".join(f"{b:02x}" for b in raw)


def _ipv4(ip: str | ipaddress.IPv4Address) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(ip)
    except ValueError as e:
        raise FrameError(str(e)) from None


def _ipv6(ip: str | ipaddress.IPv6Address) -> ipaddress.IPv6Address:
    try:
        return ipaddress.IPv6Address(ip)
    except ValueError as e:
        raise FrameError(str(e)) from None


def _arp_frame(eth_dst: bytes, op: int, *, sha: bytes, spa: bytes, tha: bytes, tpa: bytes) -> bytes:
    arp = _ARP.pack(1, 0x0800, 6, 4, op, sha, spa, tha, tpa)
    return _ETH.pack(eth_dst, sha, ETH_P_ARP) + arp


def garp_request(mac: str | bytes, ip: str | ipaddress.IPv4Address) -> bytes:
    """Gratuitous ARP, request form: broadcast, sender IP = target IP, target MAC zero."""
    m, a = mac_bytes(mac), _ipv4(ip).packed
    return _arp_frame(BROADCAST_MAC, ARP_REQUEST, sha=m, spa=a, tha=ZERO_MAC, tpa=a)


def garp_reply(mac: str | bytes, ip: str | ipaddress.IPv4Address) -> bytes:
    """Gratuitous ARP, reply form: broadcast, target MAC = sender MAC, target IP = sender IP."""
    m, a = mac_bytes(mac), _ipv4(ip).packed
    return _arp_frame(BROADCAST_MAC, ARP_REPLY, sha=m, spa=a, tha=m, tpa=a)


def arp_probe(mac: str | bytes, ip: str | ipaddress.IPv4Address) -> bytes:
    """RFC 5227 ARP probe for `ip`: sender IP 0.0.0.0 so no cache learns anything from it."""
    m = mac_bytes(mac)
    zero_ip = b"\x00" * 4
    return _arp_frame(
        BROADCAST_MAC, ARP_REQUEST, sha=m, spa=zero_ip, tha=ZERO_MAC, tpa=_ipv4(ip).packed
    )


def inet_checksum(data: bytes) -> int:
    """The 16-bit one's complement Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\x00"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def icmpv6_checksum(src: ipaddress.IPv6Address, dst: ipaddress.IPv6Address, message: bytes) -> int:
    """The ICMPv6 checksum of `message` (checksum field zeroed) over the IPv6 pseudo-header."""
    pseudo = src.packed + dst.packed + struct.pack("!I3xB", len(message), IPPROTO_ICMPV6)
    return inet_checksum(pseudo + message)


def multicast_mac(group: ipaddress.IPv6Address) -> bytes:
    """The Ethernet address an IPv6 multicast group maps to (RFC 2464: 33:33 + low 32 bits)."""
    return b"\x33\x33" + group.packed[-4:]


def solicited_node(ip: ipaddress.IPv6Address) -> ipaddress.IPv6Address:
    """The solicited-node multicast group of `ip` (ff02::1:ffXX:XXXX)."""
    return ipaddress.IPv6Address(b"\xff\x02" + b"\x00" * 9 + b"\x01\xff" + ip.packed[-3:])


def _icmpv6_frame(
    eth_src: bytes,
    src: ipaddress.IPv6Address,
    dst: ipaddress.IPv6Address,
    *,
    icmp_type: int,
    flags: int,
    target: ipaddress.IPv6Address,
    options: bytes,
) -> bytes:
    body = _ND.pack(icmp_type, 0, 0, flags, target.packed) + options
    csum = icmpv6_checksum(src, dst, body)
    body = body[:2] + struct.pack("!H", csum) + body[4:]
    # Hop limit 255: receivers drop neighbour discovery that may have crossed a router.
    ip6 = _IPV6.pack(6 << 28, len(body), IPPROTO_ICMPV6, 255, src.packed, dst.packed)
    return _ETH.pack(multicast_mac(dst), eth_src, ETH_P_IPV6) + ip6 + body


def unsolicited_na(mac: str | bytes, ip: str | ipaddress.IPv6Address) -> bytes:
    """Unsolicited NA for `ip` to ff02::1: override set, solicited clear, target LL option."""
    m, target = mac_bytes(mac), _ipv6(ip)
    option = struct.pack("!BB6s", ND_OPT_TARGET_LL, 1, m)
    flags = NA_FLAG_OVERRIDE << 24
    return _icmpv6_frame(
        m, target, ALL_NODES, icmp_type=ICMPV6_NA, flags=flags, target=target, options=option
    )


def dad_solicitation(mac: str | bytes, ip: str | ipaddress.IPv6Address) -> bytes:
    """DAD-style NS for `ip`: from :: to its solicited-node group, no source LL option.

    A holder answers with an NA to all-nodes, so the answer reaches us without our having an
    address; RFC 4861 forbids the source link-layer option when the source is unspecified.
    """
    m, target = mac_bytes(mac), _ipv6(ip)
    group = solicited_node(target)
    return _icmpv6_frame(
        m, UNSPECIFIED_V6, group, icmp_type=ICMPV6_NS, flags=0, target=target, options=b""
    )


def parse_arp(frame: bytes) -> ArpPacket | None:
    """Read an Ethernet/IPv4 ARP packet; anything else or anything malformed yields None."""
    if len(frame) < ETH_HEADER_LEN + _ARP.size:
        return None
    _, eth_src, ethertype = _ETH.unpack_from(frame)
    if ethertype != ETH_P_ARP:
        return None
    htype, ptype, hlen, plen, op, sha, spa, tha, tpa = _ARP.unpack_from(frame, ETH_HEADER_LEN)
    if (htype, ptype, hlen, plen) != (1, 0x0800, 6, 4) or op not in (ARP_REQUEST, ARP_REPLY):
        return None
    return ArpPacket(eth_src, op, sha, ipaddress.IPv4Address(spa), tha, ipaddress.IPv4Address(tpa))


def parse_neighbor_advert(frame: bytes) -> NeighborAdvert | None:
    """Read an Ethernet/IPv6 NA with a valid checksum and hop limit 255; else None."""
    if len(frame) < ETH_HEADER_LEN + _IPV6.size + _ND.size:
        return None
    _, eth_src, ethertype = _ETH.unpack_from(frame)
    if ethertype != ETH_P_IPV6:
        return None
    vtf, plen, nxt, hops, src_b, dst_b = _IPV6.unpack_from(frame, ETH_HEADER_LEN)
    start = ETH_HEADER_LEN + _IPV6.size
    body = frame[start : start + plen]
    if vtf >> 28 != 6 or nxt != IPPROTO_ICMPV6 or hops != 255 or len(body) != plen:
        return None
    if plen < _ND.size:
        return None
    icmp_type, code, _, flags, target_b = _ND.unpack_from(body)
    if icmp_type != ICMPV6_NA or code != 0:
        return None
    src, dst = ipaddress.IPv6Address(src_b), ipaddress.IPv6Address(dst_b)
    # A correct checksum sums to zero when computed over the message including the field.
    if icmpv6_checksum(src, dst, body) != 0:
        return None
    target_mac = None
    pos = _ND.size
    while pos + 2 <= len(body):
        opt_type, opt_len = body[pos], body[pos + 1]
        if opt_len == 0 or pos + 8 * opt_len > len(body):
            return None
        if opt_type == ND_OPT_TARGET_LL and opt_len == 1:
            target_mac = body[pos + 2 : pos + 8]
        pos += 8 * opt_len
    return NeighborAdvert(
        eth_src, src, dst, ipaddress.IPv6Address(target_b), flags >> 24, target_mac
    )


def parse_claim(frame: bytes) -> Claim | None:
    """Read the address claim a frame makes, if any; None for anything else or malformed.

    Every ARP packet with a sender IP claims it for its sender MAC: a reply, a gratuitous ARP in
    either form, and a request (its receivers update their entry for the sender). An ARP probe
    (sender IP 0.0.0.0) claims nothing. A valid NA claims its target for the MAC in its target
    link-layer option, or else for the frame's source.
    """
    arp = parse_arp(frame)
    if arp is not None:
        if arp.sender_ip.packed == b"\x00" * 4:
            return None
        return Claim(arp.sender_ip, arp.sender_mac)
    na = parse_neighbor_advert(frame)
    if na is not None:
        return Claim(na.target, na.target_mac or na.eth_src)
    return None


def _bpf(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


_BPF_LDH_ABS, _BPF_LDB_ABS, _BPF_JEQ_K, _BPF_RET_K = 0x28, 0x30, 0x15, 0x06
# ethertype IPv6 -> next header ICMPv6 (offset 14 + 6) -> ICMPv6 type NA (offset 14 + 40).
NA_FILTER: Final = b"".join(
    (
        _bpf(_BPF_LDH_ABS, 0, 0, 12),
        _bpf(_BPF_JEQ_K, 0, 5, ETH_P_IPV6),
        _bpf(_BPF_LDB_ABS, 0, 0, ETH_HEADER_LEN + 6),
        _bpf(_BPF_JEQ_K, 0, 3, IPPROTO_ICMPV6),
        _bpf(_BPF_LDB_ABS, 0, 0, ETH_HEADER_LEN + 40),
        _bpf(_BPF_JEQ_K, 0, 1, ICMPV6_NA),
        _bpf(_BPF_RET_K, 0, 0, 0xFFFF),
        _bpf(_BPF_RET_K, 0, 0, 0),
    )
)


def icmp_echo(ident: int, seq: int, payload: bytes = b"", *, v6: bool = False) -> bytes:
    """An ICMP (or ICMPv6) echo request message, for a raw IP socket.

    The IPv4 checksum is filled in here; for ICMPv6 the kernel fills it in on raw sockets
    (RFC 3542), since it needs the source address the route lookup picks.
    """
    icmp_type = ICMPV6_ECHO_REQUEST if v6 else ICMP_ECHO_REQUEST
    msg = _ECHO.pack(icmp_type, 0, 0, ident & 0xFFFF, seq & 0xFFFF) + payload
    if v6:
        return msg
    return msg[:2] + struct.pack("!H", inet_checksum(msg)) + msg[4:]


def parse_icmp_echo_reply(data: bytes, *, v6: bool = False) -> EchoReply | None:
    """Read an echo reply as a raw socket returns it (IPv4: with the IP header; IPv6: without)."""
    if not v6:
        if len(data) < 20 or data[0] >> 4 != 4:
            return None
        data = data[(data[0] & 0x0F) * 4 :]
    if len(data) < _ECHO.size:
        return None
    icmp_type, code, _, ident, seq = _ECHO.unpack_from(data)
    expected = ICMPV6_ECHO_REPLY if v6 else ICMP_ECHO_REPLY
    if icmp_type != expected or code != 0:
        return None
    return EchoReply(ident, seq)
