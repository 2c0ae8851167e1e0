"""Small stand-alone helpers the lab runs inside a namespace (stdlib only, started by path).

    agent.py probe VIP OUT [--interval 0.01] [--iface lan0]
        Send an ICMP (or ICMPv6) echo to VIP every interval and record each reply read on an
        AF_PACKET socket as a JSON line {"t": monotonic, "mac": source MAC, "seq": n} in OUT.
        The first line {"event": "ready", ...} appears once the sockets are open; SIGTERM ends
        the run with {"event": "stop", "t": ..., "sent": n}.
        For an IPv4 VIP it also broadcasts an ARP request for VIP every --arp-every seconds
        (0 = off) and records every ARP reply for VIP as {"arp": round, "t": .., "mac": ..}: two
        MACs answering one round means two nodes hold the address at once, whichever one the
        client's own neighbour entry happens to point at.
        With --udp PORT it probes a service instead of the kernel: each echo is a UDP datagram
        to VIP:PORT carrying the sequence number, and a reply is the datagram `agent.py echo`
        sends back (a kernel whose processes are frozen still answers pings, not this).
    agent.py echo ADDRESS PORT
        A UDP echo service bound to ADDRESS even while the node does not hold it (IP_FREEBIND):
        it answers from the node that holds ADDRESS, and only while it runs.
    agent.py garp IFACE ADDRESS [--count 1]
        Announce ADDRESS from IFACE's MAC: the ARP request form (sender IP = target IP,
        broadcast), which a Linux neighbour in its locktime still accepts.

It is run with the venv's python via `ip netns exec` and imports nothing from the repo, so the
namespace needs no sys.path setup and start-up stays near the 14 ms of a bare interpreter.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import select
import signal
import socket
import struct
import sys
import time

ETH_P_ARP = 0x0806
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
PACKET_OUTGOING = 4
SOL_RAW = 255  # linux/socket.h; Python does not export it
ICMP_FILTER = 1  # linux/icmp.h: SOL_RAW option, bitmask of ICMP types to drop
ICMP6_FILTER = 1  # linux/icmpv6.h
IP_FREEBIND = 15  # linux/in.h; Python exports it only from 3.12


def _checksum(data: bytes) -> int:
    """Return the Internet checksum of data."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def _echo(v6: bool, ident: int, seq: int) -> bytes:
    """Build an ICMP(v6) echo request; the kernel fills the ICMPv6 checksum itself."""
    kind = 128 if v6 else 8
    payload = b"hapair-lab-probe"
    header = struct.pack("!BBHHH", kind, 0, 0, ident, seq)
    if v6:
        return header + payload
    csum = _checksum(header + payload)
    return struct.pack("!BBHHH", kind, 0, csum, ident, seq) + payload


def _parse_udp_reply(frame: bytes, vip: bytes, port: int) -> int | None:
    """Return the sequence number if frame is an IPv4 UDP reply from vip:port, else None."""
    if len(frame) < 14 + 20 + 8 + 4 or struct.unpack("!H", frame[12:14])[0] != ETH_P_IP:
        return None
    ip = frame[14:]
    ihl = (ip[0] & 0x0F) * 4
    if ip[9] != 17 or ip[12:16] != vip or len(ip) < ihl + 8 + 4:
        return None
    udp = ip[ihl:]
    if struct.unpack("!H", udp[0:2])[0] != port:
        return None
    seq: int = struct.unpack("!I", udp[8:12])[0]
    return seq & 0xFFFF


def _parse_reply(frame: bytes, v6: bool, vip: bytes, ident: int) -> int | None:
    """Return the echo sequence number if frame is an echo reply from vip to us, else None."""
    if len(frame) < 14:
        return None
    ethertype = struct.unpack("!H", frame[12:14])[0]
    if v6:
        if ethertype != ETH_P_IPV6 or len(frame) < 14 + 40 + 8:
            return None
        ip = frame[14:]
        # Next header must be ICMPv6 directly (the lab sends no extension headers).
        if ip[6] != 58 or ip[8:24] != vip:
            return None
        icmp = ip[40:]
        kind = 129
    else:
        if ethertype != ETH_P_IP or len(frame) < 14 + 20 + 8:
            return None
        ip = frame[14:]
        ihl = (ip[0] & 0x0F) * 4
        if ip[9] != 1 or ip[12:16] != vip or len(ip) < ihl + 8:
            return None
        icmp = ip[ihl:]
        kind = 0
    if icmp[0] != kind:
        return None
    rid, seq = struct.unpack("!HH", icmp[4:8])
    return seq if rid == ident else None


def _arp_request(mac: bytes, ip: bytes, vip: bytes) -> bytes:
    """Build a broadcast ARP who-has vip from (mac, ip)."""
    arp = struct.pack("!HHBBH", 1, ETH_P_IP, 6, 4, 1) + mac + ip + b"\0" * 6 + vip
    return b"\xff" * 6 + mac + struct.pack("!H", ETH_P_ARP) + arp


def _arp_reply_sender(frame: bytes, vip: bytes, own_ip: bytes) -> str | None:
    """Return the sender MAC if frame answers our who-has for vip, else None.

    Only replies addressed to us count: a gratuitous ARP in reply form (target IP = VIP) is an
    announcement, not an answer, and counting it would see two owners in the round in which
    the VIP moves.
    """
    if len(frame) < 42 or struct.unpack("!H", frame[12:14])[0] != ETH_P_ARP:
        return None
    arp = frame[14:]
    if struct.unpack("!H", arp[6:8])[0] != 2 or arp[14:18] != vip or arp[24:28] != own_ip:
        return None
    return arp[8:14].hex(":")


def _own_ipv4(iface: str) -> bytes:
    """Return the first IPv4 address of iface (SIOCGIFADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        import fcntl  # noqa: PLC0415  Linux-only, used here only

        req = struct.pack("256s", iface.encode())
        return fcntl.ioctl(s.fileno(), 0x8915, req)[20:24]


def probe(
    vip_text: str, out_path: str, interval: float, iface: str, arp_every: float, *, udp: int = 0
) -> int:
    """Ping vip (or its UDP echo service) every interval until SIGTERM, one JSON line a reply."""
    vip = ipaddress.ip_address(vip_text)
    v6 = vip.version == 6
    if udp and v6:
        raise SystemExit("agent.py probe: --udp is for an IPv4 VIP")
    ident = os.getpid() & 0xFFFF
    stop = False

    def on_term(_signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)

    if udp:
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    elif v6:
        tx = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        # Block every ICMPv6 type on the send socket: replies are read on the packet socket.
        tx.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, b"\xff" * 32)
    else:
        tx = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        tx.setsockopt(SOL_RAW, ICMP_FILTER, struct.pack("I", 0xFFFFFFFF))
    rx = socket.socket(
        socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IPV6 if v6 else ETH_P_IP)
    )
    rx.bind((iface, 0))
    dest = (vip_text, 0, 0, 0) if v6 else (vip_text, udp)
    arp_sock: socket.socket | None = None
    arp_frame = b""
    arp_round = 0
    arp_deadline = float("inf")
    own_ip = b""
    if arp_every > 0 and not v6:
        arp_sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
        arp_sock.bind((iface, 0))
        with open(f"/sys/class/net/{iface}/address") as f:
            own_mac = bytes.fromhex(f.read().strip().replace(":", ""))
        own_ip = _own_ipv4(iface)
        arp_frame = _arp_request(own_mac, own_ip, vip.packed)
        arp_deadline = time.monotonic()
    socks = [rx] if arp_sock is None else [rx, arp_sock]

    sent = 0
    with open(out_path, "w", buffering=1) as out:
        start = time.monotonic()
        out.write(
            json.dumps(
                {
                    "event": "ready",
                    "t": start,
                    "vip": vip_text,
                    "interval": interval,
                    "arp_every": arp_every if arp_sock is not None else 0.0,
                }
            )
            + "\n"
        )
        deadline = start
        while not stop:
            now = time.monotonic()
            if now >= deadline:
                # No route or neighbour failure while the VIP moves: it counts as a lost echo.
                msg = struct.pack("!I", sent) if udp else _echo(v6, ident, sent & 0xFFFF)
                with contextlib.suppress(OSError):
                    tx.sendto(msg, dest)
                sent += 1
                deadline += interval
                if deadline < now:
                    deadline = now + interval  # fell behind (CPU contention): do not burst
            if arp_sock is not None and now >= arp_deadline:
                arp_round += 1
                with contextlib.suppress(OSError):
                    arp_sock.send(arp_frame)
                arp_deadline = max(arp_deadline + arp_every, now)
            wake = min(deadline, arp_deadline)
            try:
                ready, _, _ = select.select(socks, [], [], max(0.0, wake - time.monotonic()))
            except InterruptedError:
                continue
            if arp_sock is not None and arp_sock in ready:
                frame = arp_sock.recv(65535)
                owner = _arp_reply_sender(frame, vip.packed, own_ip)
                if owner is not None:
                    rec = {"arp": arp_round, "t": time.monotonic(), "mac": owner}
                    out.write(json.dumps(rec) + "\n")
            if rx not in ready:
                continue
            frame, addr = rx.recvfrom(65535)
            t = time.monotonic()
            if addr[2] == PACKET_OUTGOING:
                continue
            if udp:
                seq = _parse_udp_reply(frame, vip.packed, udp)
            else:
                seq = _parse_reply(frame, v6, vip.packed, ident)
            if seq is None:
                continue
            mac = frame[6:12].hex(":")
            out.write(json.dumps({"t": t, "mac": mac, "seq": seq}) + "\n")
        out.write(json.dumps({"event": "stop", "t": time.monotonic(), "sent": sent}) + "\n")
    return 0


def echo(address: str, port: int) -> int:
    """Send every datagram arriving at address:port back to its sender, until SIGTERM."""
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(0))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
        s.bind((address, port))
        while True:
            data, peer = s.recvfrom(2048)
            with contextlib.suppress(OSError):
                s.sendto(data, peer)


def garp(iface: str, address: str, count: int) -> int:
    """Send count gratuitous ARP requests for address from iface's own MAC."""
    with open(f"/sys/class/net/{iface}/address") as f:
        mac = bytes.fromhex(f.read().strip().replace(":", ""))
    ip = ipaddress.IPv4Address(address).packed
    bcast = b"\xff" * 6
    arp = struct.pack("!HHBBH", 1, ETH_P_IP, 6, 4, 1) + mac + ip + b"\0" * 6 + ip
    frame = bcast + mac + struct.pack("!H", ETH_P_ARP) + arp
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
        s.bind((iface, 0))
        for i in range(count):
            if i:
                time.sleep(0.05)
            s.send(frame)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse the sub-command and run it."""
    parser = argparse.ArgumentParser(prog="agent.py")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("probe")
    p.add_argument("vip")
    p.add_argument("out")
    p.add_argument("--interval", type=float, default=0.01)
    p.add_argument("--iface", default="lan0")
    p.add_argument("--arp-every", type=float, default=0.05)
    p.add_argument("--udp", type=int, default=0, metavar="PORT")
    e = sub.add_parser("echo")
    e.add_argument("address")
    e.add_argument("port", type=int)
    g = sub.add_parser("garp")
    g.add_argument("iface")
    g.add_argument("address")
    g.add_argument("--count", type=int, default=1)
    args = parser.parse_args(argv)
    if args.cmd == "probe":
        return probe(args.vip, args.out, args.interval, args.iface, args.arp_every, udp=args.udp)
    if args.cmd == "echo":
        return echo(args.address, args.port)
    return garp(args.iface, args.address, args.count)


if __name__ == "__main__":
    sys.exit(main())
