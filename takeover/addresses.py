"""Service addresses on this node: add and remove VIPs, and the virtual-MAC interface.

One netlink socket (pyroute2's AsyncIPRoute) is opened at start-up and reused: adding a VIP is
one netlink round trip, well under a millisecond. Every method is idempotent and logs what it
changed, so the daemon can call them again after a restart or a half-finished release.

MAC takeover puts the VIP on a macvlan (mode bridge) named after its MAC, on the LAN interface.
Measured in the lab, three settings make the client see exactly the virtual MAC:

- `arp_ignore=1` on the parent and on the macvlan. Both receive every broadcast ARP request and
  Linux by default answers for any local address on any interface: without it the client gets
  two replies for the VIP (parent MAC and virtual MAC) and one for the node's own address from
  the virtual MAC.
- `arp_announce=2` on both, so an ARP request the node sends never carries the VIP as sender
  IP next to the parent's MAC (that would repoint every client's entry).
- A policy rule `from VIP lookup <table>` whose table routes the VIP's subnet out of the macvlan.
  Both interfaces own a connected route to the same subnet and the parent's route comes first,
  so without the rule replies from the VIP leave with the parent's MAC and the switch forgets
  the virtual MAC. The rule also keeps strict `rp_filter` happy for traffic to the VIP.

`arp_notify=1` on the macvlan makes the kernel announce its addresses the instant it comes up;
the announcer's own GARPs follow. IPv6 addresses are added with IFA_F_NODAD: a VIP moving to
this node must answer at once, and DAD would fail anyway while the peer still holds it.

A takeover adds a plain VIP (no virtual MAC) first through `QuickAdder`: one RTM_NEWADDR on a
plain blocking netlink socket, sent the moment the decision is made, without waiting for the
loop to come round to the acquire task (5-25 ms under load, measured); the acquire then finds
the address held.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import ipaddress
import logging
import os
import socket
import struct
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl.ifaddrmsg import IFA_F_NODAD

from takeover.announce import AnnounceError, Announcer
from takeover.entry import run_json
from takeover.frames import FrameError, mac_bytes, mac_str

log = logging.getLogger(__name__)

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

# Policy rules for VIP-sourced traffic sit before the main table (32766), after local (0).
RULE_PRIORITY: Final = 3210
# Per-macvlan routing tables: TABLE_BASE + the macvlan's ifindex.
TABLE_BASE: Final = 3210000
MACVLAN_MODE: Final = "bridge"
SYSCTL_ROOT: Final = Path("/proc/sys/net")
# What the parent of a macvlan and the macvlan itself need (see the module docstring).
PARENT_SYSCTLS: Final = {"ipv4/conf/{}/arp_ignore": "1", "ipv4/conf/{}/arp_announce": "2"}
MACVLAN_SYSCTLS: Final = {
    "ipv4/conf/{}/arp_ignore": "1",
    "ipv4/conf/{}/arp_announce": "2",
    "ipv4/conf/{}/arp_notify": "1",
    # The virtual MAC's link-local address moves between nodes too: DAD on it would fail
    # while the old owner is still releasing, and a failed DAD disables IPv6 on the link.
    "ipv6/conf/{}/accept_dad": "0",
}
_RT_SCOPE_LINK: Final = 253


class AddressError(Exception):
    """Adding or removing a VIP failed; the message names the VIP, the device and the cause."""


@dataclass(frozen=True)
class VipPlacement:
    """One VIP as this node places it."""

    # Address with its prefix length (192.0.2.100/24, 2001:db8::100/64).
    address: IPInterface
    # LAN interface that carries it, or the macvlan's parent when `mac` is set.
    interface: str
    # Locally administered MAC for MAC takeover, or None to use `interface` directly.
    mac: str | None = None

    @property
    def device(self) -> str:
        """The interface the address itself lives on."""
        return macvlan_name(self.mac) if self.mac else self.interface

    @property
    def family(self) -> int:
        """AF_INET or AF_INET6."""
        return socket.AF_INET if self.address.version == 4 else socket.AF_INET6

    def __str__(self) -> str:
        suffix = f" mac {self.mac}" if self.mac else ""
        return f"{self.address} on {self.interface}{suffix}"


def macvlan_name(mac: str) -> str:
    """The macvlan name for a virtual MAC: "hv" + 12 hex digits (fits IFNAMSIZ)."""
    try:
        return "hv" + mac_bytes(mac).hex()
    except FrameError as e:
        raise AddressError(str(e)) from None


def write_sysctl(key: str, value: str) -> bool:
    """Set /proc/sys/net/<key> in this network namespace if it differs; return True if changed."""
    path = SYSCTL_ROOT / key
    if key.startswith("ipv6/") and not (SYSCTL_ROOT / "ipv6").exists():
        # IPv6 disabled on this host (ipv6.disable=1): nothing to tune, no IPv6 VIP can exist.
        log.debug("sysctl.skipped key=net/%s reason=no_ipv6", key)
        return False
    try:
        old = path.read_text().strip()
        if old == value:
            return False
        path.write_text(value)
    except OSError as e:
        raise AddressError(f"sysctl net/{key}: cannot set to {value}: {e.strerror}") from None
    log.info("sysctl.set key=net/%s value=%s was=%s", key, value, old)
    return True


def _set_sysctls(table: dict[str, str], ifname: str) -> None:
    for pattern, value in table.items():
        write_sysctl(pattern.format(ifname), value)


# nftables table (in the arp and ip6 families) that mutes held VIPs while undecided.
MUTE_TABLE: Final = "takeover_mute"
NFT: Final = "nft"


def mute_script(addresses: Iterable[ipaddress.IPv4Address | ipaddress.IPv6Address]) -> str:
    """Return the nft script that mutes `addresses` (replacing any earlier mute).

    IPv4: every ARP packet this node's kernel sends with a VIP as sender IP is dropped (its
    replies, and requests that would teach a neighbour the VIP's MAC). IPv6: every neighbour
    advertisement for a VIP (the target at offset 8 of the ICMPv6 message). Only the kernel's
    own ARP and ND pass these output hooks; established traffic flows on, and clients with a
    cached entry keep reaching the node. The announcer's AF_PACKET frames bypass them.
    """
    v4 = sorted({a for a in addresses if a.version == 4})
    v6 = sorted({a for a in addresses if a.version == 6})
    lines = [unmute_script()]
    if v4:
        lines += [
            f"table arp {MUTE_TABLE} {{",
            "  chain out {",
            "    type filter hook output priority 0; policy accept;",
            f"    arp saddr ip {{ {', '.join(map(str, v4))} }} drop",
            "  }",
            "}",
        ]
    if v6:
        lines += [
            f"table ip6 {MUTE_TABLE} {{",
            "  chain out {",
            "    type filter hook output priority 0; policy accept;",
            *(f"    icmpv6 type nd-neighbor-advert @th,64,128 0x{a.packed.hex()} drop" for a in v6),
            "  }",
            "}",
        ]
    return "\n".join(lines) + "\n"


def unmute_script() -> str:
    """Return the nft script that removes every mute (creating the tables first: no error)."""
    return "".join(
        f"table {family} {MUTE_TABLE}\ndelete table {family} {MUTE_TABLE}\n"
        for family in ("arp", "ip6")
    ).rstrip("\n")


class Muter:
    """Keeps held VIPs from being answered or announced by this node's kernel (nftables).

    A starting daemon that finds VIPs held has not decided yet whether to keep them; until it
    has, answering an ARP request would repoint a client at a node that may let go the next
    moment (takeover.startup). A missing `nft` is logged, not fatal: the decision still stands.
    """

    def __init__(self, nft: str = NFT) -> None:
        """Use the `nft` command found as `nft`."""
        self.nft = nft

    async def mute(
        self, addresses: Iterable[ipaddress.IPv4Address | ipaddress.IPv6Address]
    ) -> bool:
        """Mute `addresses`; return whether the rules are in place."""
        vips = list(addresses)
        ok = await self._run(mute_script(vips))
        if ok:
            log.info("vip.muted vips=%s", ",".join(map(str, vips)))
        return ok

    async def unmute(self) -> bool:
        """Remove every mute; return whether that worked."""
        ok = await self._run(unmute_script() + "\n")
        if ok:
            log.info("vip.unmuted")
        return ok

    async def _run(self, script: str) -> bool:
        try:
            proc = await asyncio.create_subprocess_exec(
                self.nft,
                "-f",
                "-",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as e:
            log.error("mute.failed error=%s", e.strerror or e)
            return False
        _, err = await proc.communicate(script.encode())
        if proc.returncode != 0:
            log.error("mute.failed rc=%s error=%s", proc.returncode, err.decode().strip())
            return False
        return True


# The one request sent without pyroute2 (linux/rtnetlink.h, linux/netlink.h, if_addr.h).
_RTM_NEWADDR: Final = 20
_NLMSG_ERROR: Final = 2
_NLM_F_NEWADDR: Final = 0x1 | 0x4 | 0x400 | 0x200  # REQUEST | ACK | CREATE | EXCL
_IFA_ADDRESS: Final = 1
_IFA_LOCAL: Final = 2
_NLMSG_HEADER: Final = struct.Struct("=IHHII")
# Seconds a quick add may block the loop waiting for the kernel's answer (it answers at once).
QUICK_TIMEOUT: Final = 0.05


def _rtattr(kind: int, data: bytes) -> bytes:
    size = 4 + len(data)
    return struct.pack("=HH", size, kind) + data + b"\0" * (-size % 4)


def newaddr_request(seq: int, index: int, address: IPInterface) -> bytes:
    """Return the RTM_NEWADDR request for `address` on interface `index`, as `ip addr add`
    sends it (local and address both the VIP; IPv6 without DAD), asking for an ack."""
    ip = address.ip.packed
    v6 = address.version == 6
    head = struct.pack(
        "=BBBBI",
        socket.AF_INET6 if v6 else socket.AF_INET,
        address.network.prefixlen,
        IFA_F_NODAD if v6 else 0,
        0,  # RT_SCOPE_UNIVERSE
        index,
    )
    body = head + _rtattr(_IFA_LOCAL, ip) + _rtattr(_IFA_ADDRESS, ip)
    return (
        _NLMSG_HEADER.pack(_NLMSG_HEADER.size + len(body), _RTM_NEWADDR, _NLM_F_NEWADDR, seq, 0)
        + body
    )


def ack_errno(data: bytes, seq: int) -> int | None:
    """Return the errno the kernel's ack for request `seq` carries (0: done), or None if
    `data` holds no ack for it."""
    at = 0
    while at + _NLMSG_HEADER.size <= len(data):
        size, kind, _, got, _ = _NLMSG_HEADER.unpack_from(data, at)
        if size < _NLMSG_HEADER.size:
            return None
        if kind == _NLMSG_ERROR and got == seq and size >= _NLMSG_HEADER.size + 4:
            return -int(struct.unpack_from("=i", data, at + _NLMSG_HEADER.size)[0])
        at += (size + 3) & ~3
    return None


class QuickAdder:
    """Adds an address with one blocking netlink request, answered before the call returns."""

    def __init__(self) -> None:
        """Open a plain rtnetlink socket in the current network namespace."""
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self.sock.settimeout(QUICK_TIMEOUT)
        self.seq = 0

    def add(self, index: int, address: IPInterface) -> bool:
        """Add `address` to interface `index`; return whether it is there now (added or held)."""
        self.seq += 1
        try:
            self.sock.send(newaddr_request(self.seq, index, address))
            while True:
                err = ack_errno(self.sock.recv(65536), self.seq)
                if err is not None:
                    break
        except OSError as e:
            log.warning("vip.quick_add_failed vip=%s error=%s", address, e)
            return False
        if err not in (0, errno.EEXIST):
            log.warning("vip.quick_add_failed vip=%s error=%s", address, os.strerror(err))
            return False
        return True

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()


class Addresses:
    """Adds and removes VIPs through one netlink socket opened at start-up."""

    def __init__(self, ipr: AsyncIPRoute, quick: QuickAdder | None = None) -> None:
        """Wrap an open AsyncIPRoute; prefer `Addresses.open()`."""
        self._ipr = ipr
        self._quick = quick
        # Interface indexes as last looked up, by name: the quick add goes by index.
        self._indexes: dict[str, int] = {}

    @classmethod
    async def open(cls) -> Addresses:
        """Open the netlink sockets in the current network namespace."""
        ipr = AsyncIPRoute()
        await ipr.setup_endpoint()
        return cls(ipr, QuickAdder())

    def close(self) -> None:
        """Close the netlink sockets."""
        self._ipr.close()
        if self._quick is not None:
            self._quick.close()

    def add_now(self, vip: VipPlacement) -> bool:
        """Add a plain VIP at once, blocking (a takeover's first step); return whether it is
        held now. A virtual MAC, an interface never looked up or any error: False, and the
        acquire's own add_vip does it all."""
        index = self._indexes.get(vip.device)
        if vip.mac or self._quick is None or index is None:
            return False
        if not self._quick.add(index, vip.address):
            return False
        log.info("vip.added vip=%s device=%s quick=yes", vip.address, vip.device)
        return True

    async def prepare(self, vips: Iterable[VipPlacement]) -> None:
        """Check every interface exists and set the ARP sysctls MAC takeover needs, at start-up."""
        for vip in vips:
            await self._ifindex(vip.interface, vip)
            if vip.mac:
                macvlan_name(vip.mac)
                _set_sysctls(PARENT_SYSCTLS, vip.interface)

    async def add_vip(self, vip: VipPlacement) -> bool:
        """Make this node hold `vip`; return True if anything changed."""
        changed = False
        if vip.mac:
            _set_sysctls(PARENT_SYSCTLS, vip.interface)
            changed = await self._ensure_macvlan(vip)
        index = await self._ifindex(vip.device, vip)
        if vip.mac:
            # Route before address: the first echo the VIP answers must already leave through
            # the macvlan, or the client sees the parent's MAC answer once.
            changed |= await self._ensure_source_route(vip, index)
        # No dump first: on the takeover's path every netlink round trip delays the VIP, and
        # the kernel's EEXIST says "already held" as well.
        flags = IFA_F_NODAD if vip.address.version == 6 else 0
        changed |= await self._change_address("add", vip, index, errno.EEXIST, flags=flags)
        return changed

    async def remove_vip(self, vip: VipPlacement) -> bool:
        """Make this node hold `vip` no more (and drop its macvlan); return True if it changed."""
        changed = False
        index = await self._lookup(vip.device)
        if index is not None:
            changed |= await self._change_address("del", vip, index, errno.EADDRNOTAVAIL)
        if vip.mac:
            # Rule after address, the mirror of add_vip: no reply may leave by the parent.
            changed |= await self._drop_source_rules(vip)
        if vip.mac and index is not None and not await self._global_addresses(index):
            try:
                await self._ipr.link("del", index=index)
            except NetlinkError as e:
                if e.code != errno.ENODEV:
                    raise AddressError(f"remove macvlan {vip.device}: {e.args[-1]}") from None
            else:
                changed = True
                log.info("macvlan.removed name=%s mac=%s", vip.device, vip.mac)
        return changed

    async def _change_address(
        self, op: str, vip: VipPlacement, index: int, harmless: int, **extra: Any
    ) -> bool:
        """Add or delete the address; `harmless` is the errno meaning "already so"."""
        try:
            await self._ipr.addr(
                op,
                index=index,
                address=str(vip.address.ip),
                prefixlen=vip.address.network.prefixlen,
                **extra,
            )
        except NetlinkError as e:
            if e.code == harmless:
                log.debug("vip.already_%s vip=%s device=%s", op, vip.address, vip.device)
                return False
            raise AddressError(f"{op} {vip}: {e.args[-1]}") from None
        log.info(
            "vip.%s vip=%s device=%s",
            "added" if op == "add" else "removed",
            vip.address,
            vip.device,
        )
        return True

    async def held_vips(self, vips: Iterable[VipPlacement]) -> list[VipPlacement]:
        """Return those of `vips` this node's interfaces hold now (start-up reconciliation)."""
        held = []
        for vip in vips:
            index = await self._lookup(vip.device)
            if index is not None and await self._has_address(index, vip):
                held.append(vip)
        return held

    async def link_mac(self, ifname: str) -> str | None:
        """The MAC of `ifname`, or None if there is no such interface."""
        links = await self._ipr.link("get", ifname=ifname) if await self._lookup(ifname) else []
        return str(links[0].get("address")) if links else None

    async def _lookup(self, ifname: str) -> int | None:
        found = await self._ipr.link_lookup(ifname=ifname)
        if not found:
            self._indexes.pop(ifname, None)
            return None
        self._indexes[ifname] = index = int(found[0])
        return index

    async def _ifindex(self, ifname: str, vip: VipPlacement) -> int:
        index = await self._lookup(ifname)
        if index is None:
            raise AddressError(f"{vip}: interface {ifname} not found")
        return index

    async def _addresses(self, index: int, family: int) -> list[Any]:
        return [a async for a in await self._ipr.addr("dump", index=index, family=family)]

    async def _has_address(self, index: int, vip: VipPlacement) -> bool:
        for a in await self._addresses(index, vip.family):
            if a.get("address") and ipaddress.ip_address(a.get("address")) == vip.address.ip:
                return True
        return False

    async def _global_addresses(self, index: int) -> list[str]:
        found = []
        for family in (socket.AF_INET, socket.AF_INET6):
            for a in await self._addresses(index, family):
                ip = ipaddress.ip_address(a.get("address"))
                if not ip.is_link_local:
                    found.append(str(ip))
        return found

    async def _ensure_macvlan(self, vip: VipPlacement) -> bool:
        """Create (or fix) the macvlan carrying `vip.mac`, up; return True if created."""
        assert vip.mac is not None
        name, want = vip.device, mac_str(mac_bytes(vip.mac))
        parent = await self._ifindex(vip.interface, vip)
        existing = await self._lookup(name)
        if existing is not None:
            link = (await self._ipr.link("get", index=existing))[0]
            if link.get("address") == want and link.get("link") == parent:
                if link.get("state") != "up":
                    await self._ipr.link("set", index=existing, state="up")
                return False
            log.warning(
                "macvlan.mismatch name=%s mac=%s parent=%s",
                name,
                link.get("address"),
                link.get("link"),
            )
            await self._ipr.link("del", index=existing)
        try:
            await self._ipr.link(
                "add",
                ifname=name,
                kind="macvlan",
                link=parent,
                address=want,
                macvlan_mode=MACVLAN_MODE,
            )
            _set_sysctls(MACVLAN_SYSCTLS, name)
            await self._ipr.link("set", ifname=name, state="up")
        except NetlinkError as e:
            raise AddressError(f"create macvlan {name} for {vip}: {e.args[-1]}") from None
        log.info("macvlan.created name=%s parent=%s mac=%s", name, vip.interface, want)
        return True

    async def _source_rules(self, vip: VipPlacement) -> list[Any]:
        rules = [r async for r in await self._ipr.rule("dump", family=vip.family)]
        return [
            r
            for r in rules
            if r.get("priority") == RULE_PRIORITY
            and r.get("src") is not None
            and ipaddress.ip_address(r.get("src")) == vip.address.ip
        ]

    async def _ensure_source_route(self, vip: VipPlacement, index: int) -> bool:
        """Route traffic sourced from the VIP out of its macvlan (see the module docstring)."""
        table = TABLE_BASE + index
        try:
            await self._ipr.route(
                "replace",
                dst=str(vip.address.network),
                oif=index,
                table=table,
                scope=_RT_SCOPE_LINK,
                family=vip.family,
            )
        except NetlinkError as e:
            raise AddressError(f"route for {vip} via {vip.device}: {e.args[-1]}") from None
        rules = await self._source_rules(vip)
        if len(rules) == 1 and rules[0].get("table") == table:
            return False
        await self._drop_source_rules(vip)
        try:
            await self._ipr.rule(
                "add",
                family=vip.family,
                priority=RULE_PRIORITY,
                table=table,
                src=str(vip.address.ip),
                src_len=vip.address.max_prefixlen,
            )
        except NetlinkError as e:
            raise AddressError(f"rule for {vip}: {e.args[-1]}") from None
        log.info("vip.source_rule vip=%s table=%d device=%s", vip.address, table, vip.device)
        return True

    async def _drop_source_rules(self, vip: VipPlacement) -> bool:
        rules = await self._source_rules(vip)
        for r in rules:
            try:
                await self._ipr.rule(
                    "del",
                    family=vip.family,
                    priority=RULE_PRIORITY,
                    table=r.get("table"),
                    src=str(vip.address.ip),
                    src_len=vip.address.max_prefixlen,
                )
            except NetlinkError as e:
                if e.code != errno.ENOENT:
                    raise AddressError(f"drop rule for {vip}: {e.args[-1]}") from None
            log.info("vip.source_rule_removed vip=%s table=%s", vip.address, r.get("table"))
        return bool(rules)


def main(argv: Sequence[str] | None = None) -> int:
    """Add, remove or look for VIPs by hand and print the outcome as JSON (lab tests' entry)."""
    parser = argparse.ArgumentParser(prog="python -m takeover.addresses")
    parser.add_argument("op", choices=("add", "remove", "held", "mute", "unmute"))
    parser.add_argument("--interface", required=True)
    parser.add_argument("--mac", default=None, help="MAC takeover through a macvlan")
    parser.add_argument(
        "--announce", type=int, default=0, metavar="COUNT",
        help="after add, announce COUNT rounds 100 ms apart, as the daemon does on acquire",
    )  # fmt: skip
    parser.add_argument("vips", nargs="+", type=ipaddress.ip_interface)
    args = parser.parse_args(argv)
    vips = [VipPlacement(v, args.interface, args.mac) for v in args.vips]

    async def run() -> dict[str, object]:
        # Everything opened and prepared first, as at daemon start-up; "started" is the
        # CLOCK_MONOTONIC time the failover path itself began.
        addresses = await Addresses.open()
        announcer = Announcer(args.interface) if args.announce else None
        try:
            if args.op in ("mute", "unmute"):
                muter = Muter()
                ok = await (
                    muter.mute([v.address.ip for v in vips])
                    if args.op == "mute"
                    else muter.unmute()
                )
                return {"ok": ok}
            await addresses.prepare(vips)
            if announcer:
                announcer.prepare((v.address.ip, v.mac) for v in vips)
            if args.op == "held":
                return {"held": [str(v.address) for v in await addresses.held_vips(vips)]}
            started = time.monotonic()
            change = addresses.add_vip if args.op == "add" else addresses.remove_vip
            changed = [await change(v) for v in vips]
            if announcer and args.op == "add":
                await asyncio.gather(
                    *(announcer.announce(v.address.ip, v.mac, args.announce) for v in vips)
                )
            return {"changed": changed, "started": started}
        finally:
            addresses.close()
            if announcer:
                announcer.close()

    return run_json(run, (AddressError, AnnounceError))


if __name__ == "__main__":
    sys.exit(main())
