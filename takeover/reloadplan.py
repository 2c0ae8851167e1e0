"""What a reload changes: old cluster file, new cluster file -> a plan. Pure: no I/O, no clock.

A reload (SIGHUP, `systemctl reload`) applies the difference between the running
configuration and the file as it is now, without touching what did not change: a VIP in both
is never removed and added again (keepalived users were burned by reloads that dropped VIPs).
Some things cannot change under a running daemon: the node names, the links and their
addresses, the key, the directories, the fencing device and the metrics endpoint. A file that
changes one of them is refused as a whole, with one problem per key, each saying "restart to
apply"; the daemon keeps running the old configuration unchanged.

| what changed                                  | applied live                                 |
|-----------------------------------------------|----------------------------------------------|
| [[vip]] added / removed                       | added (acquired and announced on the active) |
|                                               | / released; the others untouched             |
| [[vip]] interface or mac of an address        | released, then added as new (that VIP only)  |
| [[vm]] added / removed                        | started on the active / stopped              |
| [heartbeat] interval, deadtime, initdead,     | the machine's parameters                     |
| [arbitration], auto_failback, failback_delay, |                                              |
| inhibit_timeout, a node's priority            |                                              |
| [arbitration] targets                         | the ping list (probed afresh)                |
| [announce]                                    | the next announcement uses it                |
| [[check]], [[hook]]                           | restarted with the new list                  |
| [group] order                                 | the next acquisition / release follows it    |
| [mirror]                                      | mirrord's own reload                         |
| names, links, addresses, port, key, dirs,     | refused: restart to apply                    |
| fencing, [metrics], a [[vm]]'s settings,      |                                              |
| [[resource]], [witness]                       |                                              |

In maintenance mode nothing is acquired or released, so a plan that adds or removes a
resource is refused there too ("turn maintenance off first").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from takeover.config import Cluster, Vip, VmConfig

RESTART = "restart to apply"


class ReloadRefused(Exception):
    """A reload that changes nothing: each problem names file and key."""

    def __init__(self, problems: Sequence[str]) -> None:
        """Refuse for `problems` (at least one)."""
        super().__init__("; ".join(problems))
        self.problems = tuple(problems)


@dataclass(frozen=True)
class Plan:
    """The difference to apply; `refused` non-empty means nothing is applied."""

    # Problems naming file and key; any of them refuses the whole reload.
    refused: tuple[str, ...] = ()
    # VIPs to add (acquire and announce on the active) and to release, by the new/old entry.
    vips_added: tuple[Vip, ...] = ()
    vips_removed: tuple[Vip, ...] = ()
    vms_added: tuple[VmConfig, ...] = ()
    vms_removed: tuple[VmConfig, ...] = ()
    # The machine's parameters (timings, election, arbitration) differ.
    timings: bool = False
    # The ping list differs.
    targets: bool = False
    # The announcement settings differ.
    announce: bool = False
    checks: bool = False
    hooks: bool = False
    # [mirror] differs (mirrord reloads it; takeover only carries the new digest).
    mirror: bool = False

    @property
    def resources(self) -> bool:
        """Return whether a resource is added or removed."""
        return bool(self.vips_added or self.vips_removed or self.vms_added or self.vms_removed)

    def changes(self) -> list[str]:
        """Return a short word for each change, for the log and status ("nothing" when none)."""
        words = [f"vip+{v.address}" for v in self.vips_added]
        words += [f"vip-{v.address}" for v in self.vips_removed]
        words += [f"vm+{v.name}" for v in self.vms_added]
        words += [f"vm-{v.name}" for v in self.vms_removed]
        for flag in ("timings", "targets", "announce", "checks", "hooks", "mirror"):
            if getattr(self, flag):
                words.append(flag)
        return words or ["nothing"]


def _vip_key(v: Vip) -> str:
    return str(v.address)


def _vips(old: Sequence[Vip], new: Sequence[Vip]) -> tuple[tuple[Vip, ...], tuple[Vip, ...]]:
    """Return (added, removed): same address and placement is unchanged, whatever the order."""
    before = {_vip_key(v): v for v in old}
    after = {_vip_key(v): v for v in new}
    added = tuple(v for k, v in after.items() if before.get(k) != v)
    removed = tuple(v for k, v in before.items() if after.get(k) != v)
    return added, removed


def _restart_only(old: Cluster, new: Cluster, node: str) -> list[str]:
    """Return one problem per key that cannot change under a running daemon."""
    label = new.label
    problems: list[str] = []

    def differs(key: str, a: object, b: object) -> None:
        if a != b:
            problems.append(f"{label}: {key}: changed ({a} -> {b}): {RESTART}")

    differs("cluster.name", old.name, new.name)
    differs("node names", sorted(n.name for n in old.nodes), sorted(n.name for n in new.nodes))
    if problems:
        # Another pair altogether: comparing node by node says nothing more.
        return problems
    hb_old, hb_new = old.heartbeat, new.heartbeat
    differs("heartbeat.links", hb_old.links, hb_new.links)
    differs("heartbeat.port", hb_old.port, hb_new.port)
    differs("heartbeat.key_file", hb_old.key_file, hb_new.key_file)
    differs("run_dir", old.run_dir, new.run_dir)
    differs("state_dir", old.state_dir, new.state_dir)
    differs("metrics", old.metrics, new.metrics)
    differs("resource", old.resources, new.resources)
    differs("witness", old.witness, new.witness)
    for index, n_new in enumerate(new.nodes):
        n_old = old.node(n_new.name)
        where = f"node[{index}]"
        for link in hb_new.links:
            differs(
                f"{where}.heartbeat.{link}",
                n_old.heartbeat.get(link),
                n_new.heartbeat.get(link),
            )
        differs(f"{where}.interface", n_old.interface, n_new.interface)
        differs(f"{where}.run_dir", n_old.run_dir, n_new.run_dir)
        differs(f"{where}.state_dir", n_old.state_dir, n_new.state_dir)
        if n_new.name != node:
            # The fencer of this node's peer is set up at start-up (a worker waits ready).
            differs(f"{where}.fencing", n_old.fencing, n_new.fencing)
    before = {v.name: v for v in old.vms}
    for index, vm in enumerate(new.vms):
        if vm.name in before and before[vm.name] != vm:
            problems.append(f"{label}: vm[{index}] ({vm.name}): settings changed: {RESTART}")
    return problems


def plan(
    old: Cluster, new: Cluster, node: str, *, key_changed: bool = False, maintenance: bool = False
) -> Plan:
    """Return what reloading from `old` to `new` does on `node`.

    `key_changed`: the key file's content differs from the running key (the caller reads it).
    `maintenance`: the pair is in maintenance mode, where no resource may come or go.
    """
    refused = _restart_only(old, new, node)
    if key_changed:
        refused.append(f"{new.label}: heartbeat.key_file: the key changed: {RESTART}")
    if refused:
        return Plan(refused=tuple(refused))
    vips_added, vips_removed = _vips(old.vips, new.vips)
    old_vms, new_vms = {v.name for v in old.vms}, {v.name for v in new.vms}
    vms_added = tuple(v for v in new.vms if v.name not in old_vms)
    vms_removed = tuple(v for v in old.vms if v.name not in new_vms)
    o_arb, n_arb = old.arbitration, new.arbitration
    result = Plan(
        vips_added=vips_added,
        vips_removed=vips_removed,
        vms_added=vms_added,
        vms_removed=vms_removed,
        timings=(
            old.heartbeat != new.heartbeat
            or o_arb != n_arb
            or old.auto_failback != new.auto_failback
            or old.failback_delay != new.failback_delay
            or old.inhibit_timeout != new.inhibit_timeout
            or old.vms != new.vms
            or any(old.node(n.name).priority != n.priority for n in new.nodes)
        ),
        targets=o_arb.targets != n_arb.targets,
        announce=old.announce != new.announce,
        checks=old.checks != new.checks,
        hooks=old.hooks != new.hooks,
        mirror=old.mirror != new.mirror,
    )
    if maintenance and result.resources:
        problem = (
            f"{new.label}: vip/vm: resources added or removed ({', '.join(result.changes())}) "
            "while in maintenance mode: turn maintenance off first"
        )
        return Plan(refused=(problem,))
    return result


__all__ = ["RESTART", "Plan", "ReloadRefused", "plan"]
