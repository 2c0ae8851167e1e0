"""Addresses over a fake netlink socket: what a VIP's add asks of the kernel."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
from collections.abc import AsyncIterator
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from takeover.addresses import Addresses, VipPlacement

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
