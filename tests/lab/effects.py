"""Run one takeover effect inside a lab node and read its JSON result (for the lab tests)."""

from __future__ import annotations

import json
from typing import Any

from tests.lab.lab import Lab

VMAC = "02:00:5e:10:00:01"


def effect(lab: Lab, node: str, module: str, *args: str, check: bool = True) -> Any:
    """Run `python -m takeover.<module> args...` in `node` and return its parsed stdout."""
    p = lab.run(node, [lab.python, "-m", f"takeover.{module}", *args], check=check)
    return json.loads(p.stdout) if p.stdout.strip() else None


def neigh_mac(lab: Lab, node: str, address: str) -> str | None:
    """The MAC `node`'s neighbour table holds for `address`, or None."""
    out = lab.run(node, ["ip", "-j", "neigh", "show", address, "dev", "lan0"]).stdout
    entries = json.loads(out or "[]")
    return str(entries[0]["lladdr"]) if entries and "lladdr" in entries[0] else None


def addresses_on(lab: Lab, node: str, ifname: str = "lan0") -> dict[str, dict[str, Any]]:
    """Addresses on `ifname` in `node` as `ip -j addr` reports them, keyed "addr/prefix"."""
    out = lab.run(node, ["ip", "-j", "addr", "show", "dev", ifname], check=False).stdout
    links = json.loads(out or "[]")
    return {
        f"{a['local']}/{a['prefixlen']}": a for link in links for a in link.get("addr_info", [])
    }
