"""The cluster file's `[[resource]]` tables and `[group] order`: services and storage.

A resource is a service or its storage that moves with the VIPs: an OCF resource agent
(`type = "ocf"`), a systemd unit (`type = "systemd"`) or plain commands (`type = "command"`).
`[group] order` places every resource relative to the VIPs ("vips") and the VMs ("vms"):
acquired in that order, released in reverse. Without it the VIPs come first, then the VMs,
then the resources in file order.

Nothing here runs an agent: `takeover check` does that (takeover.backends.services).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Final

from takeover.configparse import Table, describe
from takeover.ocf import DEFAULT_OCF_ROOT, split_agent

# The group's place holders for every VIP and every VM (so no resource may take these names).
VIPS: Final = "vips"
VMS: Final = "vms"
EXAMPLE: Final = "heartbeat:Filesystem"
# OCF parameter names become environment variables: OCF_RESKEY_<name>.
PARAM_RE: Final = r"[A-Za-z_][A-Za-z0-9_]*"
# systemd unit names: name.type, with '@' instances; no '/' or spaces.
UNIT_RE: Final = r"[A-Za-z0-9:_.\\@-]+\.(service|mount|socket|target|timer|path|swap)"


@dataclass(frozen=True)
class ResourceConfig:
    """A service or storage resource in the group."""

    # Resource name, unique in the cluster (OCF_RESOURCE_INSTANCE for an OCF agent).
    name: str
    # "ocf", "systemd" or "command".
    type: str
    # ocf: "provider:type", e.g. "heartbeat:Filesystem" (a leading "ocf:" is allowed).
    agent: str = ""
    # ocf: where resource.d/PROVIDER/TYPE lives (OCF_ROOT).
    ocf_root: Path = Path(DEFAULT_OCF_ROOT)
    # ocf: the agent's parameters, passed as OCF_RESKEY_<name>.
    params: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # systemd: the unit, e.g. "nginx.service".
    unit: str = ""
    # command: argv of start, stop and status (status answers with LSB exit codes).
    start: tuple[str, ...] = ()
    stop: tuple[str, ...] = ()
    status: tuple[str, ...] = ()
    # Seconds start, stop and monitor may take; None: the agent's meta-data advice (ocf),
    # else 20 s.
    start_timeout: float | None = None
    stop_timeout: float | None = None
    monitor_timeout: float | None = None
    # Seconds between two monitors while this node holds it.
    monitor_interval: float = 10.0
    # Restarts in place within restart_window before the pair fails over.
    max_restarts: int = 3
    # Seconds over which max_restarts is counted.
    restart_window: float = 600.0

    @property
    def label(self) -> str:
        """Return what status and logs call it: the type and agent, unit or start command."""
        if self.type == "ocf":
            return f"ocf:{self.agent.removeprefix('ocf:')}"
        if self.type == "systemd":
            return f"systemd:{self.unit}"
        return f"command:{self.start[0] if self.start else '?'}"


def parse_resources(
    root: Table, name: tuple[str, str], names_taken: Sequence[str] = ()
) -> tuple[ResourceConfig, ...]:
    """Read every `[[resource]]`; record problems by key path.

    `name` is the (pattern, description) every name in the file follows; `names_taken` are
    the VMs' names, which a resource may not share (status and logs name both alike).
    """
    out: list[ResourceConfig] = []
    for t in root.tables("resource"):
        res = _resource(t, name)
        if res.name in (VIPS, VMS):
            t.problem("name", f'"{res.name}" names the group\'s {res.name} in [group] order')
        elif res.name and any(r.name == res.name for r in out):
            t.problem("name", f'"{res.name}" is already the name of another resource')
        elif res.name in names_taken:
            t.problem("name", f'"{res.name}" is already the name of a VM')
        out.append(res)
    return tuple(out)


def _resource(t: Table, name_rule: tuple[str, str]) -> ResourceConfig:
    name = t.string("name", pattern=name_rule[0], what=name_rule[1])
    kind = t.string("type", choices=["ocf", "systemd", "command"])
    only = {"ocf": ("agent", "ocf_root", "params"), "systemd": ("unit",)}
    only["command"] = ("start", "stop", "status")
    for other, keys in only.items():
        for key in keys:
            if kind and kind != other and t.has(key):
                t.problem(key, f'only for type = "{other}"')
    agent, unit = "", ""
    params: Mapping[str, str] = MappingProxyType({})
    ocf_root = Path(DEFAULT_OCF_ROOT)
    start: tuple[str, ...] = ()
    stop: tuple[str, ...] = ()
    status: tuple[str, ...] = ()
    if kind == "ocf":
        agent = t.string("agent")
        if agent and split_agent(agent) is None:
            t.problem("agent", f'must be "provider:type", e.g. "{EXAMPLE}", got "{agent}"')
        ocf_root = t.path("ocf_root", DEFAULT_OCF_ROOT)
        params = MappingProxyType(_params(t))
    elif kind == "systemd":
        unit = t.string("unit", pattern=UNIT_RE, what='a unit name such as "nginx.service"')
    elif kind == "command":
        start = t.strings("start", nonempty=True)
        stop = t.strings("stop", nonempty=True)
        status = t.strings("status", nonempty=True)
    timeouts = [t.duration(k, 0.0, positive=True) or None for k in _TIMEOUT_KEYS]
    config = ResourceConfig(
        name=name,
        type=kind,
        agent=agent,
        ocf_root=ocf_root,
        params=params,
        unit=unit,
        start=start,
        stop=stop,
        status=status,
        start_timeout=timeouts[0],
        stop_timeout=timeouts[1],
        monitor_timeout=timeouts[2],
        monitor_interval=t.duration("monitor_interval", 10.0, minimum=0.1),
        max_restarts=t.integer("max_restarts", 3, lo=0),
        restart_window=t.duration("restart_window", 600.0, positive=True),
    )
    if (
        config.monitor_timeout is not None
        and not t.bad("monitor_timeout", "monitor_interval")
        and config.monitor_timeout > config.monitor_interval
    ):
        t.problem(
            "monitor_timeout",
            f"must not exceed monitor_interval ({config.monitor_interval:g} s), "
            f"got {config.monitor_timeout:g} s",
        )
    t.finish()
    return config


_TIMEOUT_KEYS: Final = ("start_timeout", "stop_timeout", "monitor_timeout")


def _params(t: Table) -> dict[str, str]:
    # Values are strings, as the agent reads them; numbers and booleans are spelled for it.
    table = t.table("params")
    if table is None:
        return {}
    out: dict[str, str] = {}
    for key, value in table.data.items():
        table.raw(key)
        if re.fullmatch(PARAM_RE, key) is None:
            table.problem(key, "must be a parameter name (letters, digits, '_')")
        elif isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif isinstance(value, str | int | float):
            out[key] = str(value)
        else:
            table.problem(key, f"must be a string, number or boolean, got {describe(value)}")
    return out


def default_order(
    resources: Sequence[ResourceConfig], has_vips: bool, has_vms: bool
) -> tuple[str, ...]:
    """Return the order without `[group]`: the VIPs, then the VMs, then the resources."""
    return (
        *([VIPS] if has_vips else []),
        *([VMS] if has_vms else []),
        *(r.name for r in resources),
    )


def parse_group(
    root: Table, resources: Sequence[ResourceConfig], has_vips: bool, has_vms: bool
) -> tuple[str, ...]:
    """Read `[group] order`; return the whole order, with "vips" and "vms" as place holders."""
    default = default_order(resources, has_vips, has_vms)
    t = root.table("group")
    if t is None:
        return default
    order = t.strings("order", nonempty=True)
    t.finish()
    if t.bad("order"):
        return default
    for key, message in order_problems(order, [r.name for r in resources], has_vips, has_vms):
        t.problem(key, message)
    return order


def order_problems(
    order: Sequence[str], names: Sequence[str], has_vips: bool, has_vms: bool
) -> list[tuple[str, str]]:
    """Return (key, message) for what `order` lists twice, does not know, or leaves out."""
    out: list[tuple[str, str]] = []
    wanted = [*names, *([VIPS] if has_vips else []), *([VMS] if has_vms else [])]
    for i, name in enumerate(order):
        if order.index(name) != i:
            out.append((f"order[{i}]", f'"{name}" is listed twice'))
        elif name not in wanted:
            known = ", ".join(f'"{n}"' for n in wanted) or "nothing"
            out.append((f"order[{i}]", f'"{name}" is not a resource here (known: {known})'))
    missing = [n for n in wanted if n not in order]
    if missing:
        out.append(
            (
                "order",
                "must place every resource; missing: " + ", ".join(f'"{n}"' for n in missing),
            )
        )
    return out


__all__ = [
    "VIPS",
    "VMS",
    "ResourceConfig",
    "default_order",
    "order_problems",
    "parse_group",
    "parse_resources",
]
