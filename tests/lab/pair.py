"""Run hapair on the lab's two nodes: the cluster file, the key, and the daemons.

Shared by the end-to-end tests, the benchmarks and the demo, so all three run the pair the
same way. Each node gets its own run and state directory under the lab's work dir.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.lab.lab import HB4, IPV4, TARGETS, VIP4, Lab, LabProcess, wait_until

HB_PORT = 7405


def fmt_duration(seconds: float) -> str:
    """Write seconds the way the cluster file wants them ("100ms", "2s")."""
    ms = round(seconds * 1000)
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


@dataclass
class PairConfig:
    """What a lab pair is configured with (the rest comes from the lab's fixed addresses)."""

    # Heartbeat interval in seconds; deadtime is deadtime_factor times that.
    interval: float = 0.1
    deadtime_factor: int = 3
    # How long a starting daemon listens before acting.
    initdead: float = 1.0
    vips: Sequence[str] = (f"{VIP4}/24",)
    # Per-VIP virtual MAC (same order as vips; None = no MAC takeover).
    vip_macs: Sequence[str | None] = ()
    priorities: dict[str, int] = field(default_factory=lambda: {"a": 150, "b": 100})
    auto_failback: bool = False
    max_unreachable: int = 1
    # Extra TOML appended verbatim (hooks, checks, mirror section ...).
    extra: str = ""
    # Extra TOML inside each node's [[node]] table, by node name (e.g. its [node.fencing]).
    node_extra: dict[str, str] = field(default_factory=dict)
    # [cluster] inhibit_timeout in seconds (None: the default).
    inhibit_timeout: float | None = None


def cluster_toml(lab: Lab, cfg: PairConfig, key_file: Path) -> str:
    """Return the text of the lab's cluster file."""
    interval = cfg.interval
    lines = [
        "[cluster]",
        'name = "lab"',
        f"auto_failback = {str(cfg.auto_failback).lower()}",
    ]
    if cfg.inhibit_timeout is not None:
        lines.append(f'inhibit_timeout = "{fmt_duration(cfg.inhibit_timeout)}"')
    lines.append("")
    for node in ("a", "b"):
        lines += [
            "[[node]]",
            f'name = "{node}"',
            f"priority = {cfg.priorities[node]}",
            'interface = "lan0"',
            f'mirror_address = "{IPV4[node]}"',
            f'run_dir = "{lab.node_dir(node, "run")}"',
            f'state_dir = "{lab.node_dir(node, "state")}"',
            "[node.heartbeat]",
            f'direct = "{HB4[node]}"',
            f'lan = "{IPV4[node]}"',
            cfg.node_extra.get(node, ""),
            "",
        ]
    targets = ", ".join(f'"{IPV4[t]}"' for t in TARGETS)
    lines += [
        "[heartbeat]",
        'links = ["direct", "lan"]',
        f"port = {HB_PORT}",
        f'interval = "{fmt_duration(interval)}"',
        f'deadtime = "{fmt_duration(interval * cfg.deadtime_factor)}"',
        f'initdead = "{fmt_duration(max(cfg.initdead, interval * cfg.deadtime_factor))}"',
        f'key_file = "{key_file}"',
        "",
        "[arbitration]",
        f"targets = [{targets}]",
        f"max_unreachable = {cfg.max_unreachable}",
        "",
    ]
    macs = list(cfg.vip_macs) + [None] * (len(cfg.vips) - len(cfg.vip_macs))
    for vip, mac in zip(cfg.vips, macs, strict=True):
        lines += ["[[vip]]", f'address = "{vip}"']
        if mac:
            lines.append(f'mac = "{mac}"')
        lines.append("")
    return "\n".join(lines) + cfg.extra


def write_cluster(lab: Lab, cfg: PairConfig | None = None) -> Path:
    """Write the key file and cluster file into the lab's work dir; return the cluster path."""
    cfg = cfg or PairConfig()
    conf_dir = lab.workdir / "etc"
    conf_dir.mkdir(exist_ok=True)
    key = conf_dir / "authkey"
    if not key.exists():
        key.write_bytes(os.urandom(32).hex().encode() + b"\n")
        key.chmod(0o600)
    path = conf_dir / "cluster.toml"
    path.write_text(cluster_toml(lab, cfg, key))
    return path


def takeover_argv(cluster: Path, node: str, *args: str) -> list[str]:
    """Return the argv running `takeover` from this interpreter's environment."""
    return [sys.executable, "-m", "takeover", "-c", str(cluster), "--node", node, *args]


class HapairPair:
    """takeover running on lab nodes a and b from one cluster file."""

    def __init__(self, lab: Lab, cfg: PairConfig | None = None) -> None:
        self.lab = lab
        self.cfg = cfg or PairConfig()
        self.cluster = write_cluster(lab, self.cfg)
        self.procs: dict[str, LabProcess] = {}

    def start(self, *nodes: str) -> None:
        """Start takeover on the given nodes (default both)."""
        for node in nodes or ("a", "b"):
            self.procs[node] = self.lab.spawn(
                node,
                takeover_argv(self.cluster, node, "run"),
                log_path=self.lab.workdir / f"takeover-{node}.log",
                env={"PYTHONUNBUFFERED": "1"},
            )

    def status(self, node: str) -> dict[str, object]:
        """Return `takeover status --json` of node as a dict ({} if it is not running)."""
        p = self.lab.run(node, takeover_argv(self.cluster, node, "status", "--json"), check=False)
        try:
            doc = json.loads(p.stdout)
        except json.JSONDecodeError:
            return {}
        return doc if isinstance(doc, dict) else {}

    def role(self, node: str) -> str | None:
        """Return node's own role as its status reports it, or None."""
        local = self.status(node).get("local")
        if isinstance(local, dict):
            role = local.get("role")
            return str(role) if role is not None else None
        return None

    def wait_role(self, node: str, role: str, timeout: float = 15.0) -> bool:
        """Wait until node reports role."""
        return wait_until(lambda: self.role(node) == role, timeout, interval=0.1)

    def holds(self, node: str, address: str = VIP4) -> bool:
        """True if node has address configured on any interface."""
        p = self.lab.run(node, ["ip", "-o", "addr", "show"], check=False)
        return f" {address}/" in p.stdout

    def log(self, node: str) -> str:
        """Return what takeover on node has logged so far."""
        path = self.lab.workdir / f"takeover-{node}.log"
        return path.read_text(errors="replace") if path.exists() else ""
