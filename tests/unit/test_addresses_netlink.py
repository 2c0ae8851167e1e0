"""Addresses over a fake netlink socket: what a VIP's add asks of the kernel."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import struct
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pyroute2.netlink.exceptions import NetlinkError

from takeover.addresses import Addresses, VipPlacement, ack_errno, newaddr_request

VIP = VipPlacement(ipaddress.ip_interface("192.0.2.100/24"), "lan0")


class FakeIPRoute:
    """Records every request; holds addresses per interface index like the kernel."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.held: set[tuple[int, str]] = set()

    async def link_lookup(self, ifname: str) -> list[int]:
        self.calls.append(f"link_lookup {ifname}")
        return [2] if ifname == "lan0" else []

    async def addr(self, op: str, index: int, **kw: Any) -> Any:
        self.calls.append(f"addr {op}")
        if op == "dump":
            return self._dump(index)
        key = (index, str(kw["address"]))
        if op == "add":
            if key in self.held:
                raise NetlinkError(errno.EEXIST, "File exists")
            self.held.add(key)
        return []

    async def _dump(self, index: int) -> AsyncIterator[dict[str, str]]:
        for i, address in sorted(self.held):
            if i == index:
                yield {"address": address}


def test_add_vip_is_one_lookup_and_one_add_and_eexist_means_held() -> None:
    """A plain VIP is added with one lookup and one add (no dump); a second add changes nothing."""
    ipr = FakeIPRoute()
    addrs = Addresses(ipr)  # type: ignore[arg-type]

    async def go() -> tuple[bool, bool]:
        return await addrs.add_vip(VIP), await addrs.add_vip(VIP)

    first, again = asyncio.run(go())
    assert (first, again) == (True, False)
    assert ipr.calls == ["link_lookup lan0", "addr add"] * 2
    assert ipr.held == {(2, "192.0.2.100")}


# (address, interface index) -> the request's bytes after the 16-byte header.
NEWADDR = [
    (
        "192.0.2.100/24",
        7,
        # family 2, prefix 24, no flags, scope 0, index 7; IFA_LOCAL and IFA_ADDRESS.
        bytes([2, 24, 0, 0, 7, 0, 0, 0])
        + bytes([8, 0, 2, 0, 192, 0, 2, 100])
        + bytes([8, 0, 1, 0, 192, 0, 2, 100]),
    ),
    (
        "2001:db8::100/64",
        3,
        # family 10, prefix 64, IFA_F_NODAD, scope 0, index 3.
        bytes([10, 64, 2, 0, 3, 0, 0, 0])
        + bytes([20, 0, 2, 0])
        + ipaddress.ip_address("2001:db8::100").packed
        + bytes([20, 0, 1, 0])
        + ipaddress.ip_address("2001:db8::100").packed,
    ),
]


@pytest.mark.parametrize("address, index, body", NEWADDR)
def test_newaddr_request_is_what_ip_addr_add_sends(address: str, index: int, body: bytes) -> None:
    """The quick add's RTM_NEWADDR carries the VIP as local and address, asking for an ack."""
    data = newaddr_request(9, index, ipaddress.ip_interface(address))
    size, kind, flags, seq, pid = struct.unpack_from("=IHHII", data)
    assert (size, kind, seq, pid) == (len(data), 20, 9, 0)
    # REQUEST | ACK | CREATE | EXCL
    assert flags == 0x605
    assert data[16:] == body


def _ack(seq: int, err: int) -> bytes:
    return struct.pack("=IHHIIi", 20 + 16, 2, 0, seq, 0, -err) + bytes(16)


# (datagram, sequence asked for) -> errno, or None when no ack for it is there.
ACKS = [
    (_ack(5, 0), 5, 0),
    (_ack(5, errno.EEXIST), 5, errno.EEXIST),
    (_ack(4, 0), 5, None),
    (_ack(4, 0) + _ack(5, errno.ENODEV), 5, errno.ENODEV),
    (b"\x00" * 8, 5, None),
]


@pytest.mark.parametrize("data, seq, expected", ACKS)
def test_ack_errno_reads_the_answer_to_its_own_request(
    data: bytes, seq: int, expected: int | None
) -> None:
    """Only the ack with the request's sequence counts; a short or foreign datagram says nothing."""
    assert ack_errno(data, seq) == expected
