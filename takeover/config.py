"""The cluster file: frozen typed model, loading and validation.

One TOML file, shared verbatim by both nodes, describes the pair. `load_cluster()` reads it with
the standard library's tomllib, rejects unknown keys and collects every problem into one
`ConfigError` whose lines read `cluster.toml: heartbeat.deadtime: must exceed interval (0.2 s),
got 0.1 s`. Nothing is returned half-validated: either the whole file is good or nothing is.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Final

from takeover import deadlines, lease, ocf
from takeover.configparse import (
    REQUIRED,
    ConfigError,
    ConfigMissing,
    IPAddress,
    IPInterface,
    Problems,
    Required,
    Table,
    describe,
    format_seconds,
    parse_address,
    read_toml,
)
from takeover.svcconfig import ResourceConfig, default_order, parse_group, parse_resources

__all__ = [
    "Announce",
    "Arbitration",
    "CheckConfig",
    "Cluster",
    "ConfigError",
    "ConfigMissing",
    "FencingConfig",
    "HeartbeatConfig",
    "HookConfig",
    "MetricsConfig",
    "MirrorConfig",
    "Node",
    "Vip",
    "VmConfig",
    "WitnessConfig",
    "config_digest",
    "load_cluster",
    "resolve_node",
]

log = logging.getLogger(__name__)

DEFAULT_RUN_DIR: Final = "/run/hapair"
DEFAULT_STATE_DIR: Final = "/var/lib/hapair"
DEFAULT_LIBVIRT_URI: Final = "qemu:///system"

# Cluster, node, VM and check names travel in heartbeats, file names and log lines.
NAME_RE: Final = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}"
NAME_WHAT: Final = "1-63 letters, digits, '_', '.' or '-', starting with a letter or digit"
# Linux interface names: at most IFNAMSIZ-1 = 15 bytes, no '/', ':' or whitespace.
IFNAME_RE: Final = r"(?!\.{1,2}$)[^/:\s]{1,15}"
IFNAME_WHAT: Final = "a Linux interface name (1-15 characters, no '/', ':' or spaces)"
LINK_RE: Final = r"[A-Za-z0-9_-]{1,32}"
MAC_RE: Final = r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}"


@dataclass(frozen=True)
class FencingConfig:
    """How to power one node off through its BMC (used by the node's peer)."""

    # Fencing agent; only IPMI over LAN exists.
    type: str
    # BMC address (IPv4 or IPv6) reached from the peer.
    address: IPAddress
    # User with the right to change the chassis power state.
    user: str
    # File holding the BMC password (absolute; read at fencing time, never logged).
    password_file: Path
    # RMCP+ UDP port of the BMC.
    port: int = 623
    # Budget for the whole fencing operation, retries included (seconds).
    timeout: float = 10.0
    # When fencing fails: "refuse" to take over, or take over only if the "vip-guard"
    # finds every VIP unanswered on the LAN.
    on_failure: str = "refuse"
    # Seconds this node may stay silent on every heartbeat link while its VIPs still answer
    # (a hung user space over a live kernel) before its peer fences it and takes over;
    # 0: never (the peer waits for it to thaw).
    hung_after: float = 10.0


@dataclass(frozen=True)
class Node:
    """One of the two nodes of the pair."""

    # Unique node name; the default identity is the host name.
    name: str
    # LAN interface: where VIPs live unless a VIP names another one.
    interface: str
    # Link name -> this node's address on that link (one per heartbeat link).
    heartbeat: Mapping[str, IPAddress]
    # Start-up tie-break and failback preference, 0..255; higher wins, then the lower name.
    priority: int = 100
    # Where the peer's mirrord reaches this node over ssh (address or host name); None when
    # the cluster has no [mirror] table.
    mirror_address: str | None = None
    # Status files and control sockets: the node's override, else the cluster's run_dir.
    run_dir: Path = Path(DEFAULT_RUN_DIR)
    # Journals: the node's override, else the cluster's state_dir.
    state_dir: Path = Path(DEFAULT_STATE_DIR)
    # How to power THIS node off (used by its peer); None = the peer cannot fence it.
    fencing: FencingConfig | None = None


@dataclass(frozen=True)
class HeartbeatConfig:
    """Heartbeat timing and transport, the same on both nodes."""

    # Link names, in order of preference; every node gives an address on each.
    links: tuple[str, ...]
    # Shared HMAC-SHA256 key (absolute path; the daemon checks its size and mode).
    key_file: Path
    # UDP port on every link.
    port: int = 7405
    # Seconds between two heartbeats on each link (at least 20 ms).
    interval: float = 0.2
    # Seconds without a valid heartbeat on any link before the peer counts as lost
    # (default 3 x interval; must exceed interval).
    deadtime: float = 0.6
    # Seconds to listen after start before acting (default max(2 s, 2 x deadtime)).
    initdead: float = 2.0


@dataclass(frozen=True)
class WitnessConfig:
    """The third vote: `takeover witness` on another host, granting the active lease."""

    # Where the witness listens (IPv4 or IPv6), reached from both nodes.
    address: IPAddress
    # Key shared with the witness for this cluster (absolute path; the heartbeat key's rules).
    key_file: Path
    # UDP port of the witness.
    port: int = 7406
    # The active lease, renewed every heartbeat interval (seconds on the witness's clock);
    # a standby takes over a lost peer this long after the active's last renewal at the
    # earliest. At least takeover.lease.min_lease; default max(5 s, that minimum).
    lease: float = 5.0
    # A node that lost its peer and cannot reach the witness: "ping-list" arbitrates as
    # without a witness, "hold" stays as it is.
    on_unreachable: str = "ping-list"


@dataclass(frozen=True)
class Arbitration:
    """The ping list that decides which node is broken when the heartbeat is lost."""

    # Devices to probe (IPv4 or IPv6), typically routers and switches.
    targets: tuple[IPAddress, ...] = ()
    # A lost-peer node seeing more than this many targets down surrenders.
    max_unreachable: int = 0
    # Seconds between two probes of the same target.
    probe_interval: float = 1.0
    # Seconds to wait for one probe's answer (at most probe_interval).
    probe_timeout: float = 0.3
    # Seconds a target's new state must hold before the score changes.
    dampen: float = 3.0
    # A connected pair hands over when the active sees this many more targets down.
    switchover_margin: int = 1


@dataclass(frozen=True)
class Announce:
    """Gratuitous ARP / unsolicited neighbour advertisement after acquiring a VIP."""

    # Announcements sent per VIP after acquiring it.
    garp_count: int = 5
    # Seconds between two announcements of one burst.
    garp_interval: float = 0.1
    # Seconds between periodic re-announcements of held VIPs; 0 = off.
    refresh: float = 0.0


@dataclass(frozen=True)
class Vip:
    """A service address that follows the active node."""

    # Address with its prefix length (192.0.2.100/24, 2001:db8::100/64).
    address: IPInterface
    # Interface to add it to; None = the holding node's `interface`.
    interface: str | None = None
    # Locally administered unicast MAC for MAC takeover via a macvlan (lower case), or None.
    mac: str | None = None

    def interface_for(self, node: Node) -> str:
        """Return the interface this VIP lives on when `node` holds it."""
        return self.interface or node.interface


@dataclass(frozen=True)
class VmConfig:
    """A libvirt domain that runs on the active node."""

    # Domain name, unique in the cluster.
    name: str
    # Domain XML on shared storage (absolute), defined on the node before starting.
    xml: Path
    # Node name -> libvirt URI; nodes not listed use qemu:///system.
    uri: Mapping[str, str]
    # Seconds to wait for the domain to run after start.
    start_timeout: float = 60.0
    # Seconds of graceful shutdown before the domain is destroyed.
    stop_timeout: float = 120.0
    # Live-migrate on planned switchover (falls back to stop/start).
    migrate: bool = False
    # Seconds a live migration may run before it is aborted (then stop here, start there).
    migrate_timeout: float = 120.0
    # Node name -> URI by which the PEER's libvirtd reaches that node's libvirtd (the live
    # migration destination, e.g. "qemu+tcp://192.0.2.12/system"); required with migrate.
    migrate_uri: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # Restarts in place within restart_window before the pair fails over.
    max_restarts: int = 3
    # Seconds over which max_restarts is counted.
    restart_window: float = 600.0

    def uri_for(self, node_name: str) -> str:
        """Return the libvirt URI to use on one node."""
        return self.uri.get(node_name, DEFAULT_LIBVIRT_URI)

    def migrate_uri_for(self, node_name: str) -> str | None:
        """Return where the peer migrates this VM to reach `node_name`, or None (no migration)."""
        return self.migrate_uri.get(node_name) if self.migrate else None


@dataclass(frozen=True)
class HookConfig:
    """A notify command run on every transition (old/new state in its environment)."""

    # argv of the command; no shell is involved.
    command: tuple[str, ...]
    # Seconds before the command is killed.
    timeout: float = 10.0


@dataclass(frozen=True)
class CheckConfig:
    """A health check of the local service."""

    # Check name, unique, shown in status.
    name: str
    # "tcp" (connect to target) or "command" (exit status 0 = healthy).
    type: str
    # tcp: (host, port) to connect to; None for command checks.
    target: tuple[str, int] | None = None
    # command: argv to run; () for tcp checks.
    command: tuple[str, ...] = ()
    # Seconds between two runs.
    interval: float = 5.0
    # Seconds one run may take (at most interval).
    timeout: float = 2.0
    # Consecutive failures before the service counts as unhealthy.
    fall: int = 3
    # Consecutive successes before it counts as healthy again.
    rise: int = 2


@dataclass(frozen=True)
class MetricsConfig:
    """Where a daemon serves its Prometheus metrics over HTTP (off without the table)."""

    # IP address to listen on (an address of this node, 0.0.0.0 / :: for all, 127.0.0.1).
    host: str
    # TCP port.
    port: int

    @property
    def listen(self) -> str:
        """The listen address as the file writes it ("127.0.0.1:9405", "[::]:9405")."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class MirrorConfig:
    """How mirrord finds its policies and reaches the peer."""

    # Globs of policy files, relative to the cluster file's directory.
    policies: tuple[str, ...] = ("mirror.d/*.toml",)
    # Account on the peer that receives the mirror: root, whose key may only start rsync's
    # daemon on the mirror modules (mirrord.rsyncd: chrooted, keeps owners).
    ssh_user: str = "root"
    # What the mirror key runs on the peer: "rsyncd" (rsync's daemon, one module per root) or
    # "rrsync" (mirrord.receive + Debian's rrsync per pass: slower, works for a non-root user).
    receiver: str = "rsyncd"
    # Port of the peer's sshd.
    ssh_port: int = 22
    # 0: every push is an ssh session that starts rsync's daemon on the peer. A port: pushes
    # go to the peer's standing rsync daemon (mirrord-receiver.service) on its loopback at this
    # port, through a forward on mirrord's ssh connection from the next port on this node's
    # loopback, and fall back to a session while the forward or the daemon is missing.
    # Privileged ports only: no other user may listen there in their place.
    tunnel_port: int = 0
    # Private key for that account (absolute).
    ssh_key: Path = Path("/etc/hapair/mirror_key")
    # Seconds the receiving side keeps what a pass overwrote or deleted.
    backup_retention: float = 7 * 86400.0
    # ...within this much per root, oldest passes pruned first: "N%" of the root's file system,
    # or a size ("20GiB"; units KiB, MiB, GiB, TiB; a bare number is bytes).
    backup_budget: str = "10%"
    # Seconds a planned switchover waits for mirrord's final flush (below inhibit_timeout).
    flush_timeout: float = 20.0
    # mirrord's Prometheus endpoint ([mirror.metrics]); None = off.
    metrics: MetricsConfig | None = None


# The highest tunnel port: it and the next must be privileged (below 1024).
TUNNEL_PORT_MAX: Final = 1022

# A backup budget: a share of the root's file system, or a size (mirrord.backups).
BACKUP_BUDGET: Final = r"(100|[1-9]?\d(\.\d+)?)%|\d+(\.\d+)?\s*([KMGT]iB)?"


@dataclass(frozen=True)
class Cluster:
    """The whole cluster file, validated."""

    # The file this was read from (absolute); policies are found relative to it.
    source: Path
    # Cluster name; heartbeats of another cluster are dropped.
    name: str
    # Exactly two nodes, in file order.
    nodes: tuple[Node, ...]
    heartbeat: HeartbeatConfig
    arbitration: Arbitration
    announce: Announce
    # Service addresses, acquired in this order and released in reverse.
    vips: tuple[Vip, ...] = ()
    # Virtual machines, started after the VIPs, in this order.
    vms: tuple[VmConfig, ...] = ()
    # Services and storage (takeover.svcconfig), placed in the group by `order`.
    resources: tuple[ResourceConfig, ...] = ()
    # The group: resource names, "vips" and "vms", acquired in this order, released in reverse.
    order: tuple[str, ...] = ()
    # Notify commands, run one after another on every transition.
    hooks: tuple[HookConfig, ...] = ()
    # Health checks of the local service.
    checks: tuple[CheckConfig, ...] = ()
    # mirrord's settings; None when the file has no [mirror] table.
    mirror: MirrorConfig | None = None
    # takeover's Prometheus endpoint ([metrics]); None = off.
    metrics: MetricsConfig | None = None
    # The witness; None when the file has no [witness] table.
    witness: WitnessConfig | None = None
    # A recovered node takes the service back from its peer (after failback_delay).
    auto_failback: bool = False
    # Seconds a recovered higher-priority node waits before failing back.
    failback_delay: float = 60.0
    # Seconds a planned switchover waits for release inhibitors (mirrord's final flush).
    inhibit_timeout: float = 30.0
    # Default run and state directories (nodes may override them).
    run_dir: Path = Path(DEFAULT_RUN_DIR)
    state_dir: Path = Path(DEFAULT_STATE_DIR)

    @property
    def label(self) -> str:
        """The file name problems are reported under."""
        return self.source.name

    def node(self, name: str) -> Node:
        """Return the node called `name` (KeyError if there is none)."""
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def peer_of(self, name: str) -> Node:
        """Return the other node of the pair (KeyError if `name` is not a node)."""
        self.node(name)
        return next(n for n in self.nodes if n.name != name)


def load_cluster(path: str | os.PathLike[str]) -> Cluster:
    """Read, parse and validate a cluster file; raise ConfigError listing every problem."""
    source = Path(path).absolute()
    label = source.name
    data = read_toml(source, label)
    problems = Problems(label)
    cluster = _parse(Table(data, "", problems), source)
    problems.raise_if_any()
    log.debug("config.loaded file=%s cluster=%s", source, cluster.name)
    return cluster


def vm_limits(vms: tuple[VmConfig, ...]) -> list[deadlines.VmLimits]:
    """Return the limits deadlines are derived from, one per VM."""
    return [
        deadlines.VmLimits(
            name=vm.name,
            start_timeout=vm.start_timeout,
            stop_timeout=vm.stop_timeout,
            migrate_timeout=vm.migrate_timeout if vm.migrate else None,
        )
        for vm in vms
    ]


def service_limits(resources: tuple[ResourceConfig, ...]) -> list[deadlines.ServiceLimits]:
    """Return the limits deadlines are derived from, one per resource (unset: the default;
    the daemon first fills them in from the agents' meta-data, takeover.backends.services)."""
    fallback = ocf.DEFAULT_TIMEOUT
    return [
        deadlines.ServiceLimits(
            name=r.name,
            start_timeout=r.start_timeout or fallback,
            stop_timeout=r.stop_timeout or fallback,
            monitor_timeout=r.monitor_timeout or fallback,
        )
        for r in resources
    ]


def cluster_deadlines(cluster: Cluster) -> deadlines.Deadlines:
    """Return the deadlines derived from the cluster file (takeover.deadlines)."""
    return deadlines.derive(
        cluster.inhibit_timeout, vm_limits(cluster.vms), service_limits(cluster.resources)
    )


def resolve_node(
    cluster: Cluster,
    name: str | None = None,
    *,
    run_dir: Path | None = None,
    state_dir: Path | None = None,
) -> Node:
    """Return this node: `name`, or the host name when None; directories overridden if given.

    A fully qualified host name also matches a node named after its first label.
    """
    wanted = [name] if name is not None else _host_names()
    for candidate in wanted:
        try:
            node = cluster.node(candidate)
        except KeyError:
            continue
        return replace(
            node,
            run_dir=Path(run_dir).absolute() if run_dir is not None else node.run_dir,
            state_dir=Path(state_dir).absolute() if state_dir is not None else node.state_dir,
        )
    names = ", ".join(n.name for n in cluster.nodes)
    if name is None:
        message = (
            f'this host\'s name "{wanted[0]}" is not a node of cluster "{cluster.name}" '
            f"({names}); pass --node NAME"
        )
    else:
        message = f'"{name}" is not a node of cluster "{cluster.name}" ({names})'
    raise ConfigError([f"{cluster.label}: node: {message}"])


def _host_names() -> list[str]:
    # os.uname().nodename is what socket.gethostname() returns on Linux, without importing
    # socket into a module that pure code may import for its types.
    host = os.uname().nodename
    short = host.split(".", 1)[0]
    return [host] if short == host else [host, short]


def config_digest(cluster: Cluster) -> bytes:
    """Return a SHA-256 digest of the configuration's meaning (not of its spelling).

    Key order, comments, defaults written out or left implicit, node order and where the
    file lives do not change it; any value that changes behaviour does. Heartbeats carry it
    so two nodes can notice they run different configurations.
    """
    document = _canonical(replace(cluster, nodes=tuple(sorted(cluster.nodes, key=_by_name))))
    assert isinstance(document, dict)
    document.pop("source", None)
    return hashlib.sha256(_text(document).encode("utf-8")).digest()


# Cluster fields whose section is named after the file's table, not the field.
_TABLE_NAMES: Final = {
    "vips": "vip",
    "vms": "vm",
    "hooks": "hook",
    "checks": "check",
    "resources": "resource",
    "order": "group",
}


def config_sections(cluster: Cluster) -> dict[str, str]:
    """Return the canonical text of each section of the configuration, by table name.

    "cluster" holds the top-level scalars, "node.NAME" each node, and every other table
    its own ("heartbeat", "vip", "mirror" ...), so `takeover check --peer` can say where two
    nodes' files differ. The texts are exactly what `config_digest` hashes, cut by table.
    """
    out: dict[str, str] = {}
    scalars: dict[str, object] = {}
    for f in fields(cluster):
        value = getattr(cluster, f.name)
        if f.name == "source":
            continue
        if f.name == "order" and value == default_order(
            cluster.resources, bool(cluster.vips), bool(cluster.vms)
        ):
            # Derived from the other tables, not written: not a section of its own.
            continue
        if f.name == "nodes":
            for node in value:
                out[f"node.{node.name}"] = _text(_canonical(node))
        elif is_dataclass(value) or isinstance(value, tuple) or value is None:
            out[_TABLE_NAMES.get(f.name, f.name)] = _text(_canonical(value))
        else:
            scalars[f.name] = _canonical(value)
    out["cluster"] = _text(scalars)
    return out


def _text(document: object) -> str:
    return json.dumps(document, sort_keys=True, separators=(",", ":"))


def _by_name(node: Node) -> str:
    return node.name


def _canonical(value: object) -> object:
    # JSON-able form of the model: dataclasses -> dicts, addresses and paths -> strings.
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _canonical(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_canonical(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


# --- parsing ---------------------------------------------------------------------------------


def _parse(root: Table, source: Path) -> Cluster:
    problems = root.problems
    section = root.table("cluster")
    if section is None:
        problems.add("cluster", "required table [cluster] is missing")
        section = _absent("cluster")
    name = section.string("name", pattern=NAME_RE, what=NAME_WHAT)
    run_dir = section.path("run_dir", DEFAULT_RUN_DIR)
    state_dir = section.path("state_dir", DEFAULT_STATE_DIR)
    auto_failback = section.boolean("auto_failback", False)
    failback_delay = section.duration("failback_delay", 60.0)
    inhibit_timeout = section.duration("inhibit_timeout", 30.0, positive=True)
    section.finish()

    heartbeat = _heartbeat(root)
    mirror_table = root.table("mirror")
    mirror = _mirror(mirror_table) if mirror_table is not None else None
    nodes = _nodes(
        root,
        heartbeat.links,
        run_dir,
        state_dir,
        needs_mirror=mirror is not None,
        deadtime=heartbeat.deadtime,
    )
    arbitration = _arbitration(root)
    announce = _announce(root)
    vips = _vips(root, nodes)
    vms = _vms(root, nodes)
    resources = parse_resources(root, (NAME_RE, NAME_WHAT), [v.name for v in vms])
    order = parse_group(root, resources, bool(vips), bool(vms))
    hooks = tuple(
        HookConfig(command=t.strings("command", nonempty=True), timeout=_finish_with(t))
        for t in root.tables("hook")
    )
    checks = _checks(root)
    metrics_table = root.table("metrics")
    metrics = _metrics(metrics_table) if metrics_table is not None else None
    if metrics and mirror and mirror.metrics and metrics.listen == mirror.metrics.listen:
        root.problem("mirror.metrics.listen", f"same address as metrics.listen ({metrics.listen})")
    witness_table = root.table("witness")
    witness = (
        _witness(witness_table, heartbeat, deadlines.demote_margin(vm_limits(vms)))
        if witness_table is not None
        else None
    )
    root.finish()
    if not problems.bad("cluster.inhibit_timeout", "mirror.flush_timeout", "vm"):
        flush = mirror.flush_timeout if mirror is not None else None
        for key, message in deadlines.problems(inhibit_timeout, flush, vm_limits(vms)):
            problems.add(key, message)
    return Cluster(
        source=source,
        name=name,
        nodes=nodes,
        heartbeat=heartbeat,
        arbitration=arbitration,
        announce=announce,
        vips=vips,
        vms=vms,
        resources=resources,
        order=order,
        hooks=hooks,
        checks=checks,
        mirror=mirror,
        metrics=metrics,
        witness=witness,
        auto_failback=auto_failback,
        failback_delay=failback_delay,
        inhibit_timeout=inhibit_timeout,
        run_dir=run_dir,
        state_dir=state_dir,
    )


def _absent(name: str) -> Table:
    # Stands in for a missing required table: its own "required key" complaints are dropped,
    # the one about the table itself says it all.
    return Table({}, name, Problems(""))


def _finish_with(hook: Table) -> float:
    # A hook's timeout, read last so finish() sees both keys.
    timeout = hook.duration("timeout", 10.0, positive=True)
    hook.finish()
    return timeout


def _heartbeat(root: Table) -> HeartbeatConfig:
    problems = root.problems
    t = root.table("heartbeat")
    if t is None:
        problems.add("heartbeat", "required table [heartbeat] is missing")
        t = _absent("heartbeat")
    links = t.strings("links", nonempty=True)
    for i, link in enumerate(links):
        if re.fullmatch(LINK_RE, link) is None:
            t.problem(f"links[{i}]", f'must be 1-32 letters, digits, "_" or "-", got "{link}"')
        elif links.index(link) != i:
            t.problem(f"links[{i}]", f'"{link}" is listed twice')
    port = t.integer("port", 7405, lo=1, hi=65535)
    interval = t.duration("interval", 0.2, minimum=0.02)
    deadtime = t.duration("deadtime", round(3 * interval, 9), positive=True)
    if not t.bad("interval", "deadtime") and deadtime <= interval:
        t.problem(
            "deadtime",
            f"must exceed interval ({format_seconds(interval)}), got {format_seconds(deadtime)}",
        )
    initdead = t.duration("initdead", max(2.0, 2 * deadtime), positive=True)
    if not t.bad("deadtime", "initdead") and initdead < deadtime:
        t.problem(
            "initdead",
            f"must be at least deadtime ({format_seconds(deadtime)}), "
            f"got {format_seconds(initdead)}",
        )
    key_file = t.path("key_file")
    t.finish()
    return HeartbeatConfig(
        links=links,
        key_file=key_file,
        port=port,
        interval=interval,
        deadtime=deadtime,
        initdead=initdead,
    )


def _nodes(
    root: Table,
    links: tuple[str, ...],
    run_dir: Path,
    state_dir: Path,
    *,
    needs_mirror: bool,
    deadtime: float,
) -> tuple[Node, ...]:
    tables = root.tables("node")
    if len(tables) != 2 and not root.bad("node"):
        root.problem("node", f"exactly two [[node]] tables are required, got {len(tables)}")
    nodes: list[Node] = []
    for t in tables:
        name = t.string("name", pattern=NAME_RE, what=NAME_WHAT)
        if name and any(n.name == name for n in nodes):
            t.problem("name", f'"{name}" is already the name of another node')
        priority = t.integer("priority", 100, lo=0, hi=255)
        interface = t.string("interface", pattern=IFNAME_RE, what=IFNAME_WHAT)
        # Required only when there is something to mirror.
        required: str | Required = REQUIRED if needs_mirror else ""
        mirror_address = t.string("mirror_address", required, pattern=r"[^\s/]+", what="a host")
        node_run = t.path("run_dir", str(run_dir))
        node_state = t.path("state_dir", str(state_dir))
        heartbeat = _node_heartbeat(t, links)
        fencing_table = t.table("fencing")
        fencing = _fencing(fencing_table, deadtime) if fencing_table is not None else None
        t.finish()
        nodes.append(
            Node(
                name=name,
                interface=interface,
                heartbeat=heartbeat,
                priority=priority,
                mirror_address=mirror_address or None,
                run_dir=node_run,
                state_dir=node_state,
                fencing=fencing,
            )
        )
    _cross_check_nodes(root, nodes, links)
    return tuple(nodes)


def _node_heartbeat(node: Table, links: tuple[str, ...]) -> Mapping[str, IPAddress]:
    t = node.table("heartbeat")
    if t is None:
        if not node.bad("heartbeat"):
            node.problem("heartbeat", "required table (link name -> address) is missing")
        return MappingProxyType({})
    addresses: dict[str, IPAddress] = {}
    for link in links:
        address = t.address(link)
        if address is not None:
            addresses[link] = address
    if node.problems.bad("heartbeat.links", "heartbeat"):
        return MappingProxyType(addresses)
    for extra in t.data:
        if extra not in links:
            t.problem(extra, f"link is not in heartbeat.links ({', '.join(links) or 'none'})")
    return MappingProxyType(addresses)


def _cross_check_nodes(root: Table, nodes: list[Node], links: tuple[str, ...]) -> None:
    # Two nodes on one link must be two different addresses of one family.
    if len(nodes) != 2:
        return
    a, b = nodes
    for link in links:
        x, y = a.heartbeat.get(link), b.heartbeat.get(link)
        if x is None or y is None:
            continue
        if x == y:
            root.problem(f"node[1].heartbeat.{link}", f"same address as node[0] ({x})")
        elif x.version != y.version:
            root.problem(
                f"node[1].heartbeat.{link}",
                f"IPv{y.version} address but node[0] uses IPv{x.version} on this link",
            )
    if a.mirror_address and a.mirror_address == b.mirror_address:
        root.problem("node[1].mirror_address", f"same address as node[0] ({a.mirror_address})")


def _fencing(t: Table, deadtime: float) -> FencingConfig:
    kind = t.string("type", choices=["ipmi"])
    address = t.address("address")
    # Past any pause a healthy node has (a stun, a slow disk) and past systemd's restart of
    # a hung takeover alone (WatchdogSec=5s): only a node that stays hung is fenced.
    hung_after = t.duration("hung_after", max(10.0, 2 * deadtime), minimum=0.0)
    if not t.bad("hung_after") and 0 < hung_after < deadtime:
        t.problem(
            "hung_after",
            f"must be 0 (never) or at least heartbeat.deadtime ({format_seconds(deadtime)}), "
            f"got {format_seconds(hung_after)}",
        )
    config = FencingConfig(
        type=kind,
        address=address or ipaddress.IPv4Address(0),
        user=t.string("user"),
        password_file=t.path("password_file"),
        port=t.integer("port", 623, lo=1, hi=65535),
        timeout=t.duration("timeout", 10.0, positive=True),
        on_failure=t.string("on_failure", "refuse", choices=["refuse", "vip-guard"]),
        hung_after=hung_after,
    )
    t.finish()
    return config


def _arbitration(root: Table) -> Arbitration:
    t = root.table("arbitration")
    if t is None:
        return Arbitration()
    targets: list[IPAddress] = []
    raw = t.raw("targets")
    if raw is not None and not isinstance(raw, list):
        t.problem("targets", "must be an array of IPv4 or IPv6 addresses")
    for i, value in enumerate(raw if isinstance(raw, list) else []):
        address = parse_address(value)
        if isinstance(address, str):
            t.problem(f"targets[{i}]", address)
        elif address in targets:
            t.problem(f"targets[{i}]", f"{address} is listed twice")
        else:
            targets.append(address)
    max_unreachable = t.integer("max_unreachable", 0, lo=0)
    if not t.bad("targets", "max_unreachable") and targets and max_unreachable >= len(targets):
        t.problem(
            "max_unreachable",
            f"must be less than the number of targets ({len(targets)}), got {max_unreachable}: "
            "a node could never tell it is the broken one",
        )
    probe_interval = t.duration("probe_interval", 1.0, minimum=0.01)
    probe_timeout = t.duration("probe_timeout", 0.3, minimum=0.001)
    if not t.bad("probe_interval", "probe_timeout") and probe_timeout > probe_interval:
        t.problem(
            "probe_timeout",
            f"must not exceed probe_interval ({format_seconds(probe_interval)}), "
            f"got {format_seconds(probe_timeout)}",
        )
    config = Arbitration(
        targets=tuple(targets),
        max_unreachable=max_unreachable,
        probe_interval=probe_interval,
        probe_timeout=probe_timeout,
        dampen=t.duration("dampen", 3.0),
        switchover_margin=t.integer("switchover_margin", 1, lo=1),
    )
    t.finish()
    return config


def _announce(root: Table) -> Announce:
    t = root.table("announce")
    if t is None:
        return Announce()
    config = Announce(
        garp_count=t.integer("garp_count", 5, lo=1, hi=100),
        garp_interval=t.duration("garp_interval", 0.1, minimum=0.001),
        refresh=t.duration("refresh", 0.0),
    )
    if not t.bad("refresh") and 0 < config.refresh < 1.0:
        t.problem("refresh", f"must be 0 (off) or at least 1 s, got {config.refresh:g} s")
    t.finish()
    return config


def _vips(root: Table, nodes: list[Node] | tuple[Node, ...]) -> tuple[Vip, ...]:
    vips: list[Vip] = []
    taken = {a: n.name for n in nodes for a in n.heartbeat.values()}
    for t in root.tables("vip"):
        interface = t.string("interface", "", pattern=IFNAME_RE, what=IFNAME_WHAT) or None
        mac = t.string("mac", "", pattern=MAC_RE, what="a MAC address like 02:00:5e:10:00:01")
        if mac and not t.bad("mac"):
            first = int(mac[:2], 16)
            if first & 1:
                t.problem("mac", f"must be a unicast MAC (first octet even), got {mac}")
            elif not first & 2:
                t.problem(
                    "mac",
                    f"must be locally administered (second bit of the first octet set, "
                    f"e.g. 02:...), got {mac}",
                )
        address = _vip_address(t)
        t.finish()
        if address is None:
            continue
        for other in vips:
            if other.address.ip == address.ip:
                t.problem("address", f"{address.ip} is already a VIP")
        if address.ip in taken:
            t.problem("address", f"{address.ip} is node {taken[address.ip]}'s heartbeat address")
        vips.append(Vip(address=address, interface=interface, mac=mac.lower() or None))
    return tuple(vips)


def _vip_address(t: Table) -> IPInterface | None:
    value = t.raw("address")
    if value is None:
        t.problem("address", "required key is missing")
        return None
    if not isinstance(value, str) or "/" not in value:
        t.problem(
            "address",
            f"must be an address with a prefix length, e.g. "
            f'"192.0.2.100/24" or "2001:db8::100/64", got {describe(value)}',
        )
        return None
    try:
        interface = ipaddress.ip_interface(value)
    except ValueError:
        t.problem("address", f'must be an IPv4 or IPv6 address with a prefix, got "{value}"')
        return None
    ip, net = interface.ip, interface.network
    if net.prefixlen == 0:
        t.problem("address", f"prefix length 0 is not a subnet, got {value}")
    elif ip.is_multicast or ip.is_unspecified or ip.is_loopback:
        t.problem("address", f"must be a unicast, non-loopback address, got {value}")
    elif (
        ip.version == 4
        and net.prefixlen <= 30
        and ip in (net.network_address, net.broadcast_address)
    ):
        t.problem("address", f"is the network or broadcast address of {net}, got {value}")
    else:
        return interface
    return None


def _node_uris(
    t: Table, key: str, node_names: list[str], pattern: str, what: str
) -> dict[str, str]:
    """Read a table node name -> libvirt URI; every key must be a node."""
    uris: dict[str, str] = {}
    table = t.table(key)
    if table is None:
        return uris
    for node_name in table.data:
        uri = table.string(node_name, pattern=pattern, what=what)
        if node_name not in node_names:
            table.problem(node_name, f"is not a node ({', '.join(node_names)})")
        uris[node_name] = uri
    return uris


# A migration destination names the host the source's libvirtd connects to (p2p migration).
REMOTE_URI_RE = r"[a-z0-9+]+://[^/\s]+/\S*"


def _vms(root: Table, nodes: list[Node] | tuple[Node, ...]) -> tuple[VmConfig, ...]:
    vms: list[VmConfig] = []
    node_names = [n.name for n in nodes]
    for t in root.tables("vm"):
        name = t.string("name", pattern=NAME_RE, what=NAME_WHAT)
        if name and any(v.name == name for v in vms):
            t.problem("name", f'"{name}" is already the name of another VM')
        uris = _node_uris(t, "uri", node_names, r"\S+://\S*", "a libvirt URI")
        migrate = t.boolean("migrate", False)
        migrate_uris = _node_uris(
            t,
            "migrate_uri",
            node_names,
            REMOTE_URI_RE,
            'a libvirt URI with a host, e.g. "qemu+tcp://192.0.2.12/system"',
        )
        missing = [n for n in node_names if n not in migrate_uris]
        if migrate and missing and not t.bad("migrate", "migrate_uri"):
            t.problem(
                "migrate_uri",
                "migrate = true needs the URI the peer's libvirtd reaches each node by; "
                f"missing: {', '.join(missing)}",
            )
        vms.append(
            VmConfig(
                name=name,
                xml=t.path("xml"),
                uri=MappingProxyType(uris),
                start_timeout=t.duration("start_timeout", 60.0, positive=True),
                stop_timeout=t.duration("stop_timeout", 120.0, positive=True),
                migrate=migrate,
                migrate_timeout=t.duration("migrate_timeout", 120.0, positive=True),
                migrate_uri=MappingProxyType(migrate_uris),
                max_restarts=t.integer("max_restarts", 3, lo=0),
                restart_window=t.duration("restart_window", 600.0, positive=True),
            )
        )
        t.finish()
    return tuple(vms)


def _checks(root: Table) -> tuple[CheckConfig, ...]:
    checks: list[CheckConfig] = []
    for t in root.tables("check"):
        name = t.string("name", pattern=NAME_RE, what=NAME_WHAT)
        if name and any(c.name == name for c in checks):
            t.problem("name", f'"{name}" is already the name of another check')
        kind = t.string("type", choices=["tcp", "command"])
        target: tuple[str, int] | None = None
        command: tuple[str, ...] = ()
        if kind == "tcp":
            target = _host_port(t, "target")
            if t.has("command"):
                t.problem("command", 'only for type = "command"')
        elif kind == "command":
            command = t.strings("command", nonempty=True)
            if t.has("target"):
                t.problem("target", 'only for type = "tcp"')
        interval = t.duration("interval", 5.0, positive=True)
        timeout = t.duration("timeout", 2.0, positive=True)
        if not t.bad("interval", "timeout") and timeout > interval:
            t.problem(
                "timeout",
                f"must not exceed interval ({format_seconds(interval)}), "
                f"got {format_seconds(timeout)}",
            )
        checks.append(
            CheckConfig(
                name=name,
                type=kind,
                target=target,
                command=command,
                interval=interval,
                timeout=timeout,
                fall=t.integer("fall", 3, lo=1),
                rise=t.integer("rise", 2, lo=1),
            )
        )
        t.finish()
    return tuple(checks)


def _host_port(t: Table, name: str) -> tuple[str, int] | None:
    # "127.0.0.1:25", "[2001:db8::1]:25" or "localhost:25".
    value = t.string(name)
    if not value:
        return None
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)|([^:\s\[\]]+):(\d+)", value)
    if match is None:
        t.problem(name, f'must be "host:port" or "[IPv6]:port", got "{value}"')
        return None
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if match.group(1) is not None and isinstance(parse_address(host), str):
        t.problem(name, f'"{host}" is not an IPv6 address')
        return None
    if not 1 <= port <= 65535:
        t.problem(name, f"port must be between 1 and 65535, got {port}")
        return None
    return host, port


def _mirror(t: Table) -> MirrorConfig:
    config = MirrorConfig(
        policies=t.strings("policies", ("mirror.d/*.toml",), nonempty=True),
        ssh_user=t.string(
            "ssh_user", "root", pattern=r"[a-z_][a-z0-9_-]{0,31}\$?", what="a user name"
        ),
        receiver=t.string("receiver", "rsyncd", choices=["rsyncd", "rrsync"]),
        ssh_port=t.integer("ssh_port", 22, lo=1, hi=65535),
        tunnel_port=t.integer("tunnel_port", 0, lo=0, hi=65535),
        ssh_key=t.path("ssh_key", "/etc/hapair/mirror_key"),
        backup_retention=t.duration("backup_retention", 7 * 86400.0),
        backup_budget=t.string(
            "backup_budget",
            "10%",
            pattern=BACKUP_BUDGET,
            what='a share such as "10%" or a size such as "20GiB"',
        ),
        flush_timeout=t.duration("flush_timeout", 20.0, positive=True),
    )
    if config.tunnel_port > TUNNEL_PORT_MAX:
        t.problem("tunnel_port", f"must be 0 (off) or a privileged port, 1-{TUNNEL_PORT_MAX}: it "
                  "and the next one are listened on, which only root may do there")  # fmt: skip
    elif config.tunnel_port and config.receiver != "rsyncd":
        t.problem("tunnel_port", 'needs receiver = "rsyncd" (the tunnel reaches its modules)')
    metrics_table = t.table("metrics")
    if metrics_table is not None:
        config = replace(config, metrics=_metrics(metrics_table))
    t.finish()
    return config


def _metrics(t: Table) -> MetricsConfig | None:
    # One endpoint per daemon; the address must be literal (binding waits on no resolver).
    found = _host_port(t, "listen")
    t.finish()
    if found is None:
        return None
    host, port = found
    try:
        ipaddress.ip_address(host)
    except ValueError:
        t.problem(
            "listen", f'must be an IP address and a port, e.g. "127.0.0.1:9405", got "{host}"'
        )
        return None
    return MetricsConfig(host=host, port=port)


def _witness(t: Table, hb: HeartbeatConfig, margin: float) -> WitnessConfig | None:
    address = t.address("address")
    key_file = t.path("key_file")
    port = t.integer("port", 7406, lo=1, hi=65535)
    # Rounded up to a tenth of a second: the value the operator would write.
    shortest = math.ceil(lease.min_lease(hb.deadtime, hb.interval, margin) * 10) / 10
    duration = t.duration("lease", max(5.0, shortest), positive=True)
    if not t.bad("lease") and duration < shortest:
        t.problem(
            "lease",
            f"must be at least {format_seconds(shortest)} (deadtime, two intervals and "
            f"{format_seconds(margin)} to release everything, grown by the clock drift "
            f"bound), got {format_seconds(duration)}",
        )
    on_unreachable = t.string("on_unreachable", "ping-list", choices=["ping-list", "hold"])
    t.finish()
    if address is None:
        return None
    return WitnessConfig(
        address=address,
        key_file=key_file,
        port=port,
        lease=duration,
        on_unreachable=on_unreachable,
    )
