"""Look at the network: ICMP echo to the ping list, and the VIP guard's ARP probe / NS.

Both keep their sockets from start-up and use the running asyncio loop (`add_reader`), so a
probe costs a few `send` calls and a wait bounded by its window, and never blocks the loop.

- `PingProber.probe()` asks every target in parallel, a few tries within a short window, and
  returns per-target reachability. A send that fails with ENETUNREACH or EHOSTUNREACH counts as
  unreachable: that is what a node whose LAN is down sees.
- `VipGuard.probe(vip)` sends an RFC 5227 ARP probe (IPv4) or a DAD-style NS (IPv6) on the LAN
  interface and returns the MAC that answered, or None: a node that lost its peer's heartbeat
  must not take a VIP that somebody still serves.

Run `python -m takeover.probe ping 192.0.2.1 ...` or `python -m takeover.probe guard --interface
lan0 192.0.2.100 ...` to try them by hand (the lab tests do this inside a node).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import errno
import ipaddress
import json
import logging
import os
import socket
import struct
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Final

from takeover import frames
from takeover.arbitration import Outcome, classify_errno
from takeover.entry import run_json

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
UNREACHABLE_ERRNOS: Final = frozenset(
    {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.EHOSTDOWN}
)
_SOL_RAW: Final = 255
_ICMP_FILTER: Final = 1
_ICMPV6_FILTER: Final = 1
_PACKET_OUTGOING: Final = 4
_ETH_P_ALL: Final = 0x0003
_PAYLOAD: Final = b"hapair-probe"


class ProbeError(Exception):
    """A probe socket could not be opened."""


def _raw_socket(family: int, proto: int, what: str) -> socket.socket:
    try:
        sock = socket.socket(family, socket.SOCK_RAW, proto)
    except OSError as e:
        raise ProbeError(f"{what}: raw socket: {e.strerror}") from None
    sock.setblocking(False)
    return sock


async def _exchange(
    sockets: Sequence[socket.socket],
    send: Callable[[int], None],
    on_readable: Callable[[socket.socket], bool],
    tries: int,
    window: float,
) -> None:
    """Call `send(try)` `tries` times spread over `window`, reading until `on_readable` says done.

    `on_readable(sock)` drains what is queued on `sock` and returns True once nothing more is
    awaited; the wait ends then or when the window closes.
    """
    loop = asyncio.get_running_loop()
    done = asyncio.Event()

    def readable(sock: socket.socket) -> None:
        if on_readable(sock):
            done.set()

    for sock in sockets:
        loop.add_reader(sock, readable, sock)
    try:
        start = loop.time()
        for attempt in range(tries):
            if done.is_set():
                break
            send(attempt)
            deadline = start + window * (attempt + 1) / tries
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), max(0.0, deadline - loop.time()))
    finally:
        for sock in sockets:
            loop.remove_reader(sock)


def _drain(sock: socket.socket) -> Iterable[tuple[bytes, object]]:
    """Yield (data, address) for every datagram queued on the non-blocking `sock`."""
    while True:
        try:
            yield sock.recvfrom(65535)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            # Asynchronous errors (an ICMP error for an earlier send) surface here: skip them.
            log.debug("probe.recv_error error=%s", e.strerror)
            return


class PingProber:
    """ICMP echo to a fixed list of targets over raw sockets opened at start-up."""

    def __init__(self, targets: Iterable[IPAddress | str], ident: int | None = None) -> None:
        """Open a raw ICMP socket per address family in the list (needs CAP_NET_RAW)."""
        self.targets = [ipaddress.ip_address(t) for t in targets]
        # Echo identifier; raw sockets see every echo reply in the namespace, so filter on it.
        self.ident = ident if ident is not None else os.getpid() ^ int.from_bytes(os.urandom(2))
        self.ident &= 0xFFFF
        self._seq = 0
        # One probe at a time: a second reader on the same socket would replace the first.
        self._lock = asyncio.Lock()
        self._socks: dict[int, socket.socket] = {}
        try:
            if any(t.version == 4 for t in self.targets):
                s4 = _raw_socket(socket.AF_INET, socket.IPPROTO_ICMP, "ping")
                self._socks[4] = s4
                # Only echo replies (type 0) wake us: bit set = type dropped.
                s4.setsockopt(_SOL_RAW, _ICMP_FILTER, struct.pack("I", 0xFFFFFFFE))
            if any(t.version == 6 for t in self.targets):
                s6 = _raw_socket(socket.AF_INET6, socket.IPPROTO_ICMPV6, "ping")
                self._socks[6] = s6
                words = [0xFFFFFFFF] * 8
                words[frames.ICMPV6_ECHO_REPLY >> 5] &= ~(1 << (frames.ICMPV6_ECHO_REPLY & 31))
                s6.setsockopt(socket.IPPROTO_ICMPV6, _ICMPV6_FILTER, struct.pack("8I", *words))
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Close the sockets."""
        for sock in self._socks.values():
            sock.close()

    async def probe(self, tries: int = 3, window: float = 0.3) -> dict[IPAddress, bool]:
        """Ping every target `tries` times within `window` seconds; return who answered."""
        outcomes = await self.probe_outcomes(tries, window)
        return {t: o is Outcome.REPLY for t, o in outcomes.items()}

    async def probe_outcomes(self, tries: int = 3, window: float = 0.3) -> dict[IPAddress, Outcome]:
        """Like `probe`, with why a target did not answer (`takeover.arbitration.Outcome`).

        REPLY if any try was answered; else UNREACHABLE if the kernel refused the last send
        for lack of a route or link, ERROR if it refused for a local reason (that says nothing
        about the target), TIMEOUT otherwise.
        """
        outcome = dict.fromkeys(self.targets, Outcome.TIMEOUT)
        # Sequence number -> target, for this call only: a late reply to an earlier call
        # carries an old sequence number and is ignored.
        pending: dict[int, IPAddress] = {}

        def send(_attempt: int) -> None:
            for target in self.targets:
                if outcome[target] is Outcome.REPLY:
                    continue
                self._seq = (self._seq + 1) & 0xFFFF
                pending[self._seq] = target
                msg = frames.icmp_echo(self.ident, self._seq, _PAYLOAD, v6=target.version == 6)
                try:
                    self._socks[target.version].sendto(msg, (str(target), 0))
                except OSError as e:
                    outcome[target] = classify_errno(e.errno or 0)
                    level = logging.DEBUG if e.errno in UNREACHABLE_ERRNOS else logging.WARNING
                    log.log(level, "probe.ping_send_failed target=%s error=%s", target, e.strerror)
                else:
                    outcome[target] = Outcome.TIMEOUT

        def on_readable(sock: socket.socket) -> bool:
            v6 = sock.family == socket.AF_INET6
            for data, addr in _drain(sock):
                reply = frames.parse_icmp_echo_reply(data, v6=v6)
                if reply is None or reply.ident != self.ident:
                    continue
                target = pending.get(reply.seq)
                assert isinstance(addr, tuple)
                if target is not None and ipaddress.ip_address(addr[0].split("%")[0]) == target:
                    outcome[target] = Outcome.REPLY
            return all(o is Outcome.REPLY for o in outcome.values())

        if self.targets:
            async with self._lock:
                await _exchange(list(self._socks.values()), send, on_readable, tries, window)
        log.debug("probe.ping result=%s", {str(k): v.value for k, v in outcome.items()})
        return outcome


class VipGuard:
    """Asks the LAN whether anybody answers for a VIP, through one AF_PACKET socket."""

    def __init__(self, interface: str) -> None:
        """Open the socket on `interface`; it receives nothing until a probe runs."""
        self.interface = interface
        self._sock = _raw_socket(socket.AF_PACKET, 0, f"vip guard on {interface}")
        try:
            self._sock.bind((interface, 0))
        except OSError as e:
            self._sock.close()
            raise ProbeError(f"vip guard on {interface}: {e.strerror}") from None
        self.mac = frames.mac_bytes(self._sock.getsockname()[4])
        self._lock = asyncio.Lock()

    def close(self) -> None:
        """Close the socket."""
        self._sock.close()

    async def probe(self, vip: IPAddress | str, timeout: float = 0.3, tries: int = 2) -> str | None:
        """Return the MAC of a host answering for `vip` within `timeout`, or None."""
        address = ipaddress.ip_interface(vip).ip if isinstance(vip, str) else vip
        return (await self.probe_all([address], timeout, tries))[address]

    async def probe_all(
        self, vips: Sequence[IPAddress], timeout: float = 0.3, tries: int = 2
    ) -> dict[IPAddress, str | None]:
        """Probe every VIP in one window of `timeout`; map each to the MAC that answered.

        Our own outgoing frames are ignored, not our MACs: a peer holding the VIP on the
        shared virtual MAC answers with that same MAC and must still count. Calls are
        serialised: the socket has one receive binding at a time.
        """
        probes = [
            frames.arp_probe(self.mac, a)
            if isinstance(a, ipaddress.IPv4Address)
            else frames.dad_solicitation(self.mac, a)
            for a in vips
        ]
        answers: dict[IPAddress, bytes] = {}

        def send(_attempt: int) -> None:
            for vip, frame in zip(vips, probes, strict=True):
                if vip in answers:
                    continue
                try:
                    self._sock.send(frame)
                except OSError as e:
                    log.warning(
                        "guard.send_failed interface=%s vip=%s error=%s",
                        self.interface, vip, e.strerror,
                    )  # fmt: skip

        def on_readable(sock: socket.socket) -> bool:
            for data, addr in _drain(sock):
                assert isinstance(addr, tuple)
                if addr[2] == _PACKET_OUTGOING:
                    continue
                for vip in vips:
                    mac = self._answer_mac(data, vip)
                    if mac is not None and vip not in answers:
                        answers[vip] = mac
            return len(answers) == len(vips)

        versions = {a.version for a in vips}
        # Receive only what answers look like, only while probing: nothing queues in between.
        # Python converts the protocol of an AF_PACKET address to network order itself.
        if versions == {4}:
            ethertype = frames.ETH_P_ARP
        elif versions == {6}:
            ethertype = frames.ETH_P_IPV6
        else:
            ethertype = _ETH_P_ALL
        async with self._lock:
            self._sock.bind((self.interface, ethertype))
            try:
                if vips:
                    await _exchange([self._sock], send, on_readable, tries, timeout)
            finally:
                self._sock.bind((self.interface, 0))
                for _ in _drain(self._sock):
                    pass
        found = {vip: frames.mac_str(answers[vip]) if vip in answers else None for vip in vips}
        for vip, mac in found.items():
            log.info("guard.probe interface=%s vip=%s answered_by=%s", self.interface, vip, mac)
        return found

    @staticmethod
    def _answer_mac(data: bytes, address: IPAddress) -> bytes | None:
        if address.version == 4:
            arp = frames.parse_arp(data)
            # A reply, or the holder's own announcement (sender IP = the VIP).
            if arp is not None and arp.sender_ip == address:
                return arp.sender_mac
            return None
        na = frames.parse_neighbor_advert(data)
        if na is not None and na.target == address:
            return na.target_mac or na.eth_src
        return None


_SO_ATTACH_FILTER: Final = 26


class ClaimListener:
    """Hears ARP and neighbour advertisements arriving on one LAN interface.

    One packet socket for ARP (little traffic), and, when IPv6 VIPs exist, one for IPv6 with a
    kernel filter passing only NAs (frames.NA_FILTER). Frames this node sends are skipped.
    """

    def __init__(self, interface: str, v6: bool = False) -> None:
        """Open the sockets on `interface` (needs CAP_NET_RAW)."""
        self.interface = interface
        self._socks: list[socket.socket] = []
        try:
            self._socks.append(self._open(frames.ETH_P_ARP, None))
            if v6:
                self._socks.append(self._open(frames.ETH_P_IPV6, frames.NA_FILTER))
        except ProbeError:
            self.close()
            raise

    def _open(self, ethertype: int, program: bytes | None) -> socket.socket:
        sock = _raw_socket(socket.AF_PACKET, 0, f"claim listener on {self.interface}")
        try:
            if program is not None:
                # The filter goes on before the bind: nothing unfiltered queues in between.
                buf = ctypes.create_string_buffer(program)
                fprog = struct.pack("HL", len(program) // 8, ctypes.addressof(buf))
                sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)
            sock.bind((self.interface, ethertype))
        except OSError as e:
            sock.close()
            raise ProbeError(f"claim listener on {self.interface}: {e.strerror}") from None
        return sock

    def close(self) -> None:
        """Close the sockets."""
        for sock in self._socks:
            sock.close()
        self._socks = []

    async def listen(self, on_frame: Callable[[bytes, float], object]) -> None:
        """Hand every received frame to `on_frame(frame, loop_time)` until cancelled."""
        loop = asyncio.get_running_loop()

        def readable(sock: socket.socket) -> None:
            for data, addr in _drain(sock):
                assert isinstance(addr, tuple)
                if addr[2] != _PACKET_OUTGOING:
                    on_frame(data, loop.time())

        for sock in self._socks:
            loop.add_reader(sock, readable, sock)
        try:
            await asyncio.Event().wait()
        finally:
            for sock in self._socks:
                loop.remove_reader(sock)


async def _hear_claims(interface: str, v6: bool, seconds: float) -> dict[str, object]:
    """Listen for `seconds`; return the claims heard and how many frames reached us."""
    listener = ClaimListener(interface, v6)
    heard: list[list[str]] = []
    count = 0

    def on_frame(frame: bytes, _now: float) -> None:
        nonlocal count
        count += 1
        claim = frames.parse_claim(frame)
        if claim is not None:
            heard.append([str(claim.ip), frames.mac_str(claim.mac)])

    print(json.dumps({"listening": True}), file=sys.stderr, flush=True)
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(listener.listen(on_frame), seconds)
    finally:
        listener.close()
    return {"claims": heard, "frames": count}


def main(argv: Sequence[str] | None = None) -> int:
    """Run a probe by hand and print the result as JSON (the lab tests' entry point)."""
    parser = argparse.ArgumentParser(prog="python -m takeover.probe")
    sub = parser.add_subparsers(dest="cmd", required=True)
    ping = sub.add_parser("ping")
    ping.add_argument("--tries", type=int, default=3)
    ping.add_argument("--window", type=float, default=0.3)
    ping.add_argument("--outcomes", action="store_true", help="print why, not just whether")
    ping.add_argument("targets", nargs="+", type=ipaddress.ip_address)
    guard = sub.add_parser("guard")
    guard.add_argument("--interface", required=True)
    guard.add_argument("--timeout", type=float, default=0.3)
    guard.add_argument("vips", nargs="+", type=ipaddress.ip_address)
    claims = sub.add_parser("claims", help="list the address claims heard for a while")
    claims.add_argument("--interface", required=True)
    claims.add_argument("--seconds", type=float, default=1.0)
    claims.add_argument("--v6", action="store_true", help="also hear neighbour advertisements")
    args = parser.parse_args(argv)

    async def run() -> object:
        if args.cmd == "ping":
            prober = PingProber(args.targets)
            try:
                result = await prober.probe_outcomes(args.tries, args.window)
            finally:
                prober.close()
            if args.outcomes:
                return {str(k): v.value for k, v in result.items()}
            return {str(k): v is Outcome.REPLY for k, v in result.items()}
        if args.cmd == "claims":
            return await _hear_claims(args.interface, args.v6, args.seconds)
        vip_guard = VipGuard(args.interface)
        try:
            found = await vip_guard.probe_all(args.vips, args.timeout)
            return {str(k): v for k, v in found.items()}
        finally:
            vip_guard.close()

    return run_json(run, (ProbeError,))


if __name__ == "__main__":
    sys.exit(main())
