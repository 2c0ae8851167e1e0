"""Tell the LAN where a VIP lives now: gratuitous ARP (IPv4) and unsolicited NA (IPv6).

One raw AF_PACKET socket per LAN interface, opened at start-up, sends frames built once by
`takeover.frames`: a round costs two `send` calls, about 10 µs, where scapy's `sendp` costs
20-50 ms. The socket is bound with protocol 0, so it receives nothing and never fills up.

A VIP with a virtual MAC is announced through its parent interface with the virtual MAC as
source: the switch learns the new port from that frame, and the macvlan need not exist yet when
the announcer is opened.

Run as `python -m takeover.announce --interface lan0 [--mac MAC] VIP...` to send once by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import socket
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Final

from takeover import frames
from takeover.entry import run_json

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# A VIP as the announcer needs it: the bare address (a prefix is ignored) and its MAC, if virtual.
Target = tuple[IPAddress, str | None]
DEFAULT_COUNT: Final = 5
DEFAULT_INTERVAL: Final = 0.1


class AnnounceError(Exception):
    """The announcer could not be opened on its interface."""


def _address(vip: IPAddress | ipaddress.IPv4Interface | ipaddress.IPv6Interface | str) -> IPAddress:
    if isinstance(vip, ipaddress.IPv4Interface | ipaddress.IPv6Interface):
        return vip.ip
    if isinstance(vip, str):
        return ipaddress.ip_interface(vip).ip
    return vip


class Announcer:
    """Sends prepared announcement frames on one interface."""

    def __init__(self, interface: str) -> None:
        """Open and bind the raw socket on `interface` (needs CAP_NET_RAW)."""
        self.interface = interface
        try:
            self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        except OSError as e:
            raise AnnounceError(f"announce on {interface}: raw socket: {e.strerror}") from None
        try:
            self._sock.bind((interface, 0))
        except OSError as e:
            self._sock.close()
            raise AnnounceError(f"announce on {interface}: {e.strerror}") from None
        self._sock.setblocking(False)
        # getsockname() of a bound packet socket carries the interface's hardware address.
        self.mac = frames.mac_str(self._sock.getsockname()[4])
        self._frames: dict[tuple[IPAddress, str], tuple[bytes, ...]] = {}
        # Frames handed to the kernel, and sends that failed (link down, queue full).
        self.sent = 0
        self.errors = 0
        log.info("announce.opened interface=%s mac=%s", interface, self.mac)

    def close(self) -> None:
        """Close the socket."""
        self._sock.close()

    def frames_for(self, vip: IPAddress | str, mac: str | None = None) -> tuple[bytes, ...]:
        """The frames of one round for `vip` from `mac` (default: the interface's), cached.

        IPv4: the request form first, then the reply form (see `takeover.frames`).
        IPv6: one unsolicited NA with the override flag.
        """
        address, source = _address(vip), frames.mac_str(frames.mac_bytes(mac or self.mac))
        key = (address, source)
        cached = self._frames.get(key)
        if cached is None:
            if address.version == 4:
                cached = (frames.garp_request(source, address), frames.garp_reply(source, address))
            else:
                cached = (frames.unsolicited_na(source, address),)
            self._frames[key] = cached
        return cached

    def prepare(self, targets: Iterable[Target]) -> None:
        """Build the frames for `targets` now, at start-up, not on the failover path."""
        for vip, mac in targets:
            self.frames_for(vip, mac)

    def send_round(self, vip: IPAddress | str, mac: str | None = None) -> int:
        """Send one round for `vip` without blocking; return how many frames left."""
        sent = 0
        for frame in self.frames_for(vip, mac):
            try:
                self._sock.send(frame)
            except OSError as e:
                # Link down or queue full: the next round (or the refresh) tries again.
                self.errors += 1
                log.warning(
                    "announce.send_failed interface=%s vip=%s error=%s",
                    self.interface,
                    vip,
                    e.strerror,
                )
                break
            sent += 1
        self.sent += sent
        return sent

    async def announce(
        self,
        vip: IPAddress | str,
        mac: str | None = None,
        count: int = DEFAULT_COUNT,
        interval: float = DEFAULT_INTERVAL,
    ) -> int:
        """Send `count` rounds for `vip`, `interval` seconds apart; return frames sent."""
        sent = 0
        for i in range(count):
            if i:
                await asyncio.sleep(interval)
            sent += self.send_round(vip, mac)
        log.info(
            "announce.sent interface=%s vip=%s mac=%s rounds=%d frames=%d",
            self.interface,
            _address(vip),
            mac or self.mac,
            count,
            sent,
        )
        return sent


async def refresh_forever(
    announcer: Announcer, held: Callable[[], Iterable[Target]], period: float
) -> None:
    """Send one round for every VIP `held()` returns, every `period` seconds, until cancelled.

    `period <= 0` means refresh is off and returns at once. `held` is asked each time, so a VIP
    released in between is no longer announced.
    """
    if period <= 0:
        return
    while True:
        await asyncio.sleep(period)
        for vip, mac in held():
            announcer.send_round(vip, mac)


def main(argv: Sequence[str] | None = None) -> int:
    """Announce VIPs by hand (also the lab tests' entry point inside a node)."""
    parser = argparse.ArgumentParser(prog="python -m takeover.announce")
    parser.add_argument("--interface", required=True)
    parser.add_argument("--mac", default=None, help="source MAC (default: the interface's)")
    parser.add_argument("--count", type=int, default=DEFAULT_COUNT)
    parser.add_argument("--interval", type=float, default=DEFAULT_INTERVAL)
    parser.add_argument("vips", nargs="+", type=ipaddress.ip_address)
    args = parser.parse_args(argv)

    async def run() -> dict[str, float]:
        announcer = Announcer(args.interface)
        # CLOCK_MONOTONIC is shared by every namespace: tests relate it to what the client saw.
        started = time.monotonic()
        try:
            counts = await asyncio.gather(
                *(announcer.announce(v, args.mac, args.count, args.interval) for v in args.vips)
            )
        finally:
            announcer.close()
        return {"frames": sum(counts), "errors": announcer.errors, "started": started}

    return run_json(run, (AnnounceError,))


if __name__ == "__main__":
    sys.exit(main())
