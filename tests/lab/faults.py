"""nftables rule text for the lab's silent drops and random loss (netem is not in this kernel).

Every fault is its own base chain on the netdev ingress hook of the node's interfaces, so it
drops frames before the node's stack sees them: silent (no ENOBUFS for the sender, which a drop
on egress would cause) and removable by deleting that one chain. Rules live in table
`netdev lab` inside the lab node's namespace only.
"""

from __future__ import annotations

from dataclasses import dataclass

TABLE = "lab"
# Before anything a daemon might install on ingress.
PRIORITY = -500

_PROTOS = {
    "udp": "meta l4proto udp",
    "tcp": "meta l4proto tcp",
    "icmp": "meta l4proto { icmp, ipv6-icmp }",
    # VRRP (IP protocol 112): keepalived's adverts, for the comparison benchmark.
    "vrrp": "meta l4proto 112",
}


@dataclass(frozen=True)
class Fault:
    """A handle for one installed fault: pass it to `Lab.unblock`."""

    # Lab node whose namespace holds the chain.
    node: str
    # Chain name inside table netdev lab.
    chain: str
    # The rule, for messages.
    rule: str


def match(
    *, proto: str | None = None, port: int | None = None, src: str | None = None, arp: bool = False
) -> str:
    """Return the nft match expression for the given selectors ("" matches every frame)."""
    if arp:
        if proto is not None or port is not None or src is not None:
            raise ValueError("arp=True takes no proto, port or src")
        return "ether type arp"
    parts: list[str] = []
    if src is not None:
        parts.append(f"ip6 saddr {src}" if ":" in src else f"ip saddr {src}")
    if port is not None:
        if proto not in ("udp", "tcp"):
            raise ValueError(f"port needs proto udp or tcp, got {proto!r}")
        parts.append(f"{proto} dport {port}")
    elif proto is not None:
        if proto not in _PROTOS:
            raise ValueError(f"proto must be one of {sorted(_PROTOS)} or None, got {proto!r}")
        parts.append(_PROTOS[proto])
    return " ".join(parts)


def drop_rule(expr: str, percent: int | None = None) -> str:
    """Return a rule dropping frames that match expr, all of them or percent% at random."""
    if percent is not None:
        if not 0 <= percent <= 100:
            raise ValueError(f"loss percent must be 0..100, got {percent}")
        expr = f"{expr} numgen random mod 100 < {percent}".strip()
    return f"{expr} drop".strip()


def chain_script(chain: str, devices: list[str], rule: str) -> str:
    """Return an `nft -f` script adding table netdev lab and one ingress chain holding rule."""
    devs = ", ".join(f'"{d}"' for d in devices)
    return (
        f"add table netdev {TABLE}\n"
        f"add chain netdev {TABLE} {chain} "
        f"{{ type filter hook ingress devices = {{ {devs} }} priority {PRIORITY}; }}\n"
        f"add rule netdev {TABLE} {chain} {rule}\n"
    )
