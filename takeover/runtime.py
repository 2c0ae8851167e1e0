"""Build a running daemon from the cluster file: real effects behind the daemon's protocols.

Everything slow or privileged happens here, once, at start-up: the key file is read and
checked, heartbeat sockets bound, raw sockets for pings, the VIP guard and announcements
opened, frames prepared, the netlink socket opened. A failure names what could not be set up,
and nothing is left half-open.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import ipaddress
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Protocol

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.rtnl import RTMGRP_LINK

from takeover import deadlines
from takeover.addresses import Addresses, Muter, VipPlacement
from takeover.announce import Announcer
from takeover.arbitration import Outcome
from takeover.backends.services import ServiceItem, service_items
from takeover.config import (
    Cluster,
    Node,
    cluster_deadlines,
    config_digest,
    config_sections,
    load_cluster,
    resolve_node,
    vm_limits,
)
from takeover.configparse import ConfigError
from takeover.control import MIRROR_INHIBITOR
from takeover.daemon import (
    Daemon,
    DaemonConfig,
    Effects,
    Links,
    Watcher,
    WitnessFactory,
    WitnessLink,
    load_maintenance,
)
from takeover.drift import section_digests
from takeover.exporter import serve
from takeover.heartbeat import HeartbeatLinks, KeyFileError, LinkSpec, load_key
from takeover.hooks import Hook
from takeover.machine import Event, HeartbeatCarrier, LinkState, MachineParams, OperatorStandby
from takeover.metrics import SnapshotCollector, takeover_families
from takeover.probe import ClaimListener, PingProber, VipGuard
from takeover.reloadplan import Plan, ReloadRefused, plan
from takeover.resources import (
    FoundHeld,
    Resource,
    ResourceError,
    ResourceList,
    VipDefender,
    VipResource,
    VmItem,
    arrange,
)
from takeover.svcconfig import VIPS, VMS, ResourceConfig
from takeover.wire import Heartbeat, Receiver
from takeover.witnessclient import WitnessClient

log = logging.getLogger(__name__)

# Tries per target in one round of pings (a reply to any counts).
PING_TRIES = 3
# Tries of the VIP guard's ARP probe / NS per VIP.
GUARD_TRIES = 2


def machine_params(cluster: Cluster, node: Node) -> MachineParams:
    """Map the cluster file onto the machine's parameters for `node`."""
    hb, arb = cluster.heartbeat, cluster.arbitration
    peer = cluster.peer_of(node.name)
    fencing = peer.fencing
    limits = cluster_deadlines(cluster)
    return MachineParams(
        node=node.name,
        peer=peer.name,
        priority=node.priority,
        interval=hb.interval,
        deadtime=hb.deadtime,
        initdead=hb.initdead,
        auto_failback=cluster.auto_failback,
        failback_delay=cluster.failback_delay,
        max_unreachable=arb.max_unreachable,
        switchover_margin=arb.switchover_margin,
        # Per-target dampening already smooths the score; holding one deadtime more keeps a
        # single heartbeat carrying a passing value from moving the service.
        switchover_hold=hb.deadtime,
        # A configured but unavailable fencer still counts as fencing: it fails, and the
        # on_failure policy decides, which is the safe reading of the operator's intent.
        fencing=fencing is not None,
        fencing_policy=fencing.on_failure if fencing is not None else "refuse",
        hung_after=fencing.hung_after if fencing is not None else 0.0,
        guard=bool(cluster.vips),
        # Longest pause between looks while the peer is silent but its VIP still answers.
        recheck=max(arb.probe_interval, hb.deadtime),
        # The guard's window has passed when the peer is lost (takeover.deadlines).
        prearbitrate=deadlines.prearbitrate(hb.interval, hb.deadtime, arb.probe_timeout),
        arbitrate_timeout=max(5.0, 4 * (arb.probe_timeout + hb.deadtime)),
        # A carrier back for less than this does not count: a flapping port keeps this node at
        # the worst score, so the peer takes over once and the service stays there.
        carrier_hold=carrier_hold(cluster),
        inhibit_timeout=limits.inhibit_timeout,
        release_timeout=limits.release_timeout,
        **witness_params(cluster),
    )


def witness_params(cluster: Cluster) -> dict[str, Any]:
    """Return the machine's witness parameters (none without a [witness] table)."""
    w = cluster.witness
    if w is None:
        return {}
    return {
        "witness_lease": w.lease,
        "witness_hold": w.on_unreachable == "hold",
        "witness_margin": deadlines.demote_margin(vm_limits(cluster.vms)),
    }


def witness_link(cluster: Cluster, node: Node, closers: list[Callable[[], Any]]) -> WitnessFactory:
    """Return the factory of this node's link to the witness (its key read now)."""
    w = cluster.witness
    assert w is not None
    key = load_key(w.key_file)

    def make(
        boot_id: bytes, next_seq: Callable[[], int], emit: Callable[[Event], None]
    ) -> WitnessLink:
        client = WitnessClient(
            w, cluster.name, node.name, key=key, boot_id=boot_id, next_seq=next_seq, emit=emit
        )
        closers.append(client.close)
        return client

    return make


def carrier_hold(cluster: Cluster) -> float:
    """Return how long carrier must stay back before it counts: 2 deadtimes, at least 1 s.

    Longer than a deadtime, so the peer has heard this node advertise the worst score (and
    taken over) before this node could win an election again; a real outage that ends pays
    only this much more before the node counts as a candidate again.
    """
    return max(1.0, 2 * cluster.heartbeat.deadtime)


def guard_window(cluster: Cluster) -> float:
    """Return how long the VIP guard listens for an answer (takeover.deadlines.guard_window)."""
    hb = cluster.heartbeat
    return deadlines.guard_window(hb.interval, hb.deadtime, cluster.arbitration.probe_timeout)


def placements(cluster: Cluster, node: Node) -> list[VipPlacement]:
    """Return the VIPs as this node places them."""
    return [
        VipPlacement(address=v.address, interface=v.interface_for(node), mac=v.mac)
        for v in cluster.vips
    ]


class PingAdapter:
    """PingProber behind the daemon's TargetProber protocol."""

    def __init__(self, prober: PingProber, window: float) -> None:
        """Probe with `PING_TRIES` tries within `window` seconds per round."""
        self.prober = prober
        self.window = window
        self.targets = [str(t) for t in prober.targets]

    async def probe(self) -> dict[str, list[Outcome]]:
        """Return one outcome per target (the prober already folds its tries).

        ENETUNREACH and friends come back as UNREACHABLE (down), a local error as ERROR
        (says nothing), so a permission problem cannot make this node surrender.
        """
        got = await self.prober.probe_outcomes(tries=PING_TRIES, window=self.window)
        return {str(t): [outcome] for t, outcome in got.items()}


# How many fencing operations status keeps (each with its attempts).
FENCE_HISTORY = 5
# Seconds between re-reads of the VMs' state for status (restarts happen in between).
VM_REFRESH = 2.0


class BlockingFencer(Protocol):
    """A fencing agent whose call blocks (takeover.fencing.ipmi.IpmiFencer)."""

    def power_off_and_confirm(self) -> Any:
        """Power the peer off; return a result with `.ok` and `.detail` (and `.to_dict()`)."""
        ...


class ThreadFencer:
    """Run a blocking fencing agent in a worker thread, behind the daemon's Fencer protocol.

    Keeps the last few results with their attempts for `takeover status`.
    """

    def __init__(self, agent: BlockingFencer) -> None:
        """Wrap `agent`."""
        self.agent = agent
        self.history: deque[dict[str, Any]] = deque(maxlen=FENCE_HISTORY)

    def prepare(self) -> None:
        """Let the agent get ready ahead of time (a spare IPMI worker), if it can."""
        prepare = getattr(self.agent, "prepare", None)
        if prepare is not None:
            prepare()

    def close(self) -> None:
        """End whatever the agent keeps ready."""
        close = getattr(self.agent, "close", None)
        if close is not None:
            close()

    async def fence(self, peer: str) -> tuple[bool, str]:
        """Power `peer` off and confirm; return (ok, detail)."""
        result = await asyncio.to_thread(self.agent.power_off_and_confirm)
        to_dict = getattr(result, "to_dict", None)
        self.history.append(to_dict() if to_dict is not None else {"ok": bool(result.ok)})
        detail = getattr(result, "detail", None) or ("powered off" if result.ok else "failed")
        return bool(result.ok), str(detail)

    def describe(self) -> dict[str, Any]:
        """Return the device (when the agent says) and the recent results, newest last."""
        describe = getattr(self.agent, "describe", None)
        info: dict[str, Any] = dict(describe()) if describe is not None else {}
        info.pop("last", None)
        info["results"] = list(self.history)
        return info


def ipmi_fencer(cluster: Cluster, node: Node) -> ThreadFencer | None:
    """Return a fencer for `node`'s peer, or None when none is configured or available.

    The IPMI agent lives in takeover.fencing.ipmi (the fencing issue); it is looked up at run
    time so this module also works in builds without it: then fencing fails and the peer's
    `on_failure` policy decides.
    """
    cfg = cluster.peer_of(node.name).fencing
    if cfg is None:
        return None
    try:
        ipmi = importlib.import_module("takeover.fencing.ipmi")
    except ImportError:
        log.warning(
            "fencing.unavailable peer=%s policy=%s", cluster.peer_of(node.name).name, cfg.on_failure
        )
        return None
    agent = ipmi.IpmiFencer(
        str(cfg.address),
        cfg.port,
        cfg.user,
        cfg.password_file,
        cfg.timeout,
        node=cluster.peer_of(node.name).name,
    )
    return ThreadFencer(agent)


# errno of a netlink request for an interface that does not exist (renamed, deleted).
ENODEV = 19
# Seconds between safety-net reads of the carrier while kernel link events are received.
CARRIER_RESYNC = 1.0


def carrier_verdict(carrier: int | None, error: int | None) -> bool | None:
    """Return what one netlink reading says of an interface's carrier; None: nothing.

    Only a missing interface or a real carrier loss counts as down. Any other error (a busy
    socket, ENOBUFS, an interrupted call) says nothing: taking it for a dead LAN would make
    an active release at once, with no final flush, over one spurious error.
    """
    if error is not None:
        return False if error == ENODEV else None
    if carrier is None:
        return None
    return bool(carrier)


def carrier_of_all(known: Mapping[str, bool | None]) -> bool | None:
    """Return whether every interface has carrier: False if one has none, None if unknown."""
    values = list(known.values())
    if False in values:
        return False
    if None in values:
        return None
    return True


def heartbeat_only(
    address_interfaces: Mapping[str, str], locals_: Sequence[object], service: Sequence[str]
) -> list[str]:
    """Return the interfaces carrying a heartbeat link's local address and no VIP.

    `address_interfaces` maps each local address (as text) to its interface. A heartbeat
    link sharing the LAN with the VIPs says nothing of the peer when its carrier drops (this
    node's own port may have died); a direct cable does: its carrier dies with the peer.
    """
    found = [address_interfaces.get(ipaddress.ip_address(str(a)).compressed) for a in locals_]
    return list(dict.fromkeys(i for i in found if i is not None and i not in service))


async def address_interfaces(
    open_netlink: Callable[[], Awaitable[Any]] | None = None,
) -> dict[str, str]:
    """Return every local address (as text) with the name of the interface that carries it."""
    ipr = await (open_netlink or _open_netlink)()
    try:
        names = {link["index"]: link.get("IFLA_IFNAME") async for link in await ipr.link("dump")}
        out: dict[str, str] = {}
        async for msg in await ipr.addr("dump"):
            addr, name = msg.get("IFA_ADDRESS"), names.get(msg["index"])
            if addr is not None and name is not None:
                out[ipaddress.ip_address(addr).compressed] = name
        return out
    finally:
        with contextlib.suppress(Exception):
            ipr.close()


class CarrierWatch:
    """Watch the carrier of the service interfaces; report LinkState when it changes.

    A node whose LAN port died cannot serve, and its ping score would only say so after the
    dampening: carrier is certain at once. The kernel's link events (RTM_NEWLINK on the
    RTMGRP_LINK group) wake the watch; a read every CARRIER_RESYNC seconds covers a lost
    event, and without events the watch falls back to polling every `interval`.

    With `heartbeat=True` it watches the heartbeat-only interfaces (a direct cable) and
    reports HeartbeatCarrier instead: their carrier dies with a peer that loses power.
    """

    def __init__(
        self,
        interfaces: Sequence[str],
        interval: float,
        open_netlink: Callable[[], Awaitable[Any]] | None = None,
        open_events: Callable[[], Awaitable[Any]] | None = None,
        resync: float = CARRIER_RESYNC,
        *,
        heartbeat: bool = False,
    ) -> None:
        """Watch `interfaces`; poll every `interval` seconds when link events are unavailable."""
        self.interfaces = tuple(dict.fromkeys(interfaces))
        self.heartbeat = heartbeat
        self.interval = interval
        self.resync = resync
        self._open_netlink = open_netlink or _open_netlink
        self._open_events = open_events if open_events is not None else _open_link_events
        self.known: dict[str, bool | None] = dict.fromkeys(self.interfaces)

    async def __call__(self, emit: Callable[[Event], None]) -> None:
        """Run until cancelled."""
        ipr = await self._open_netlink()
        woken = asyncio.Event()
        listener: asyncio.Task[None] | None = None
        period = self.interval
        try:
            # Subscribed before the first read: a change in between still wakes us.
            events = await self._open_events()
        except Exception as err:
            log.warning("carrier.events_unavailable error=%s poll=%.3f", err, self.interval)
            events = None
        if events is not None:
            listener = asyncio.ensure_future(self._listen(events, woken))
            period = self.resync
        last: bool | None = None
        try:
            while True:
                woken.clear()
                for name in self.interfaces:
                    verdict = await self._read(ipr, name)
                    if verdict is not None:
                        self.known[name] = verdict
                up = carrier_of_all(self.known)
                if up is not None and up != last:
                    log.info(
                        "carrier.changed up=%s interfaces=%s heartbeat_only=%s",
                        up,
                        ",".join(f"{n}:{v}" for n, v in self.known.items()),
                        self.heartbeat,
                    )
                    emit(self._event(up))
                    last = up
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), period)
        finally:
            if listener is not None:
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await listener
            for sock in (ipr, events):
                if sock is not None:
                    with contextlib.suppress(Exception):
                        sock.close()

    def _event(self, up: bool) -> Event:
        if not self.heartbeat:
            return LinkState(up)
        down = ",".join(n for n, v in self.known.items() if v is False)
        return HeartbeatCarrier(up, "" if up else down)

    async def _listen(self, events: Any, woken: asyncio.Event) -> None:
        names = set(self.interfaces)
        while True:
            try:
                async for msg in events.get():
                    if msg.get("IFLA_IFNAME") in names:
                        woken.set()
            except asyncio.CancelledError:
                raise
            except Exception as err:
                # An overrun (ENOBUFS) loses events: read everything again.
                log.warning("carrier.events_error error=%s", err)
                woken.set()
                await asyncio.sleep(self.interval)

    async def _read(self, ipr: Any, name: str) -> bool | None:
        try:
            links = await ipr.link("get", ifname=name)
        except Exception as err:
            code = getattr(err, "code", None)
            code = code if isinstance(code, int) else getattr(err, "errno", None)
            verdict = carrier_verdict(None, code if isinstance(code, int) else -1)
            if verdict is None:
                log.warning("carrier.read_failed interface=%s error=%s", name, err)
            return verdict
        return carrier_verdict(links[0].get("IFLA_CARRIER") if links else None, None)


async def _open_netlink() -> Any:
    ipr = AsyncIPRoute()
    await ipr.setup_endpoint()
    return ipr


async def _open_link_events() -> Any:
    ipr = AsyncIPRoute()
    await ipr.bind(groups=RTMGRP_LINK)
    return ipr


def vm_resources(
    cluster: Cluster, node: Node, on_failover: Callable[[str, str], None]
) -> list[VmItem]:
    """Return a resource per `[[vm]]`, acquired after the VIPs; [] when there are none.

    The libvirt backend (takeover.backends.libvirt) is looked up at run time: a cluster
    with VMs on a build without it fails to start with an error naming the VM.
    """
    if not cluster.vms:
        return []
    backend = importlib.import_module("takeover.backends.libvirt")
    peer = cluster.peer_of(node.name).name
    out = []
    for vm, limits in zip(cluster.vms, vm_limits(cluster.vms), strict=True):
        spec = backend.VmSpec.from_config(vm, node.name, peer)
        res = backend.VmResource(spec, on_failover=on_failover)
        budgets = (limits.stop_budget(), limits.handover_budget())
        out.append(VmItem(f"vm {vm.name}", res, *budgets))
    return out


def by_name(services: Sequence[ServiceItem]) -> dict[str, list[ServiceItem]]:
    """Return each service under its `[[resource]]` name, as `[group] order` names it."""
    return {svc.cfg.name: [svc] for svc in services}


# Seconds between two re-announcements of one VIP claimed by another MAC, at the least.
CONFLICT_GAP = 0.2


def claim_watches(
    items: Sequence[VipResource], gap: float, closers: list[Callable[[], Any]]
) -> list[Watcher]:
    """Return one watcher per LAN interface re-announcing VIPs another MAC claims.

    The sockets are opened now (their closers join `closers`); they hear frames only while
    the watchers run, and act only on VIPs this daemon has acquired (VipResource.defended).
    """
    defender = VipDefender(items, gap)
    watches: list[Watcher] = []
    for interface in dict.fromkeys(v.placement.interface for v in items):
        v6 = any(
            v.placement.address.version == 6 and v.placement.interface == interface for v in items
        )
        listener = ClaimListener(interface, v6)
        closers.append(listener.close)

        async def watch(_emit: Callable[[Event], None], listener: ClaimListener = listener) -> None:
            await listener.listen(defender.on_frame)

        watches.append(watch)
    return watches


def vm_refresh(vms: Sequence[VmItem], period: float = VM_REFRESH) -> Watcher:
    """Return a watcher re-reading the VMs' state for status every `period` seconds."""

    async def watch(_emit: Callable[[Event], None]) -> None:
        while True:
            await asyncio.sleep(period)
            for vm in vms:
                try:
                    await vm.refresh()
                except Exception as err:
                    log.warning("vm.refresh_failed name=%s error=%s", vm.name, err)

    return watch


class GuardAdapter:
    """One VipGuard per VIP, probed in parallel: the first MAC found answers for all."""

    def __init__(self, guards: Sequence[tuple[VipPlacement, VipGuard]], timeout: float) -> None:
        """Probe each (placement, guard) pair within `timeout`."""
        self.guards = tuple(guards)
        self.timeout = timeout

    async def probe(self) -> str | None:
        """Return the MAC of another host answering for any VIP, or None."""
        found = await asyncio.gather(
            *(g.probe(p.address.ip, self.timeout, GUARD_TRIES) for p, g in self.guards)
        )
        return next((mac for mac in found if mac is not None), None)


class Reloader:
    """Re-read the cluster file and the key on a reload, and carry the plan out.

    `load` reads and validates, as `takeover check` does, and diffs (takeover.reloadplan);
    `apply` then touches only what the plan names: a removed VIP or VM is released, a new one
    prepared and, on the active, acquired and announced; the ping list is probed afresh.
    """

    def __init__(
        self,
        cluster: Cluster,
        node: Node,
        key: bytes,
        *,
        addresses: Addresses,
        announcers: dict[str, Announcer],
        items: list[VipResource],
        vms: list[VmItem],
        resources: ResourceList,
        found: FoundHeld,
        pings: PingAdapter,
        guard: GuardAdapter,
        closers: list[Callable[[], Any]],
        on_vm_failover: Callable[[str, str], None],
        services: Sequence[ServiceItem] = (),
        raw_resources: tuple[ResourceConfig, ...] = (),
    ) -> None:
        """Reload `cluster` as `node` runs it, over the effects run() built.

        `raw_resources`: the `[[resource]]` entries as the file gave them (`cluster` holds them
        with the agents' meta-data timeouts filled in): a reload compares the file with those.
        """
        self.cluster, self.node, self.key = cluster, node, key
        self.services = list(services)
        self.raw_resources = raw_resources
        self.addresses = addresses
        self.announcers = announcers
        self.items = items
        self.vms = vms
        self.resources = resources
        self.found = found
        self.pings = pings
        self.guard = guard
        self.closers = closers
        self.on_vm_failover = on_vm_failover
        self._pending: tuple[Cluster, Node, Plan] | None = None

    def load(self, maintenance: bool) -> tuple[Plan, DaemonConfig]:
        """Read and validate every file; return the plan and the new daemon configuration."""
        # Imported here: cli imports this module lazily (pyroute2 is not for `status`).
        from takeover.cli import file_problems, key_problem  # noqa: PLC0415

        try:
            new = load_cluster(self.cluster.source)
            node = resolve_node(
                new, self.node.name, run_dir=self.node.run_dir, state_dir=self.node.state_dir
            )
        except ConfigError as err:
            raise ReloadRefused(err.problems) from err
        problems = file_problems(new, node)
        if problems:
            raise ReloadRefused(problems)
        try:
            key = load_key(new.heartbeat.key_file)
        except KeyFileError as err:
            raise ReloadRefused([key_problem(new, err)]) from err
        # The node as it runs: --run-dir/--state-dir given at start-up still hold.
        as_read = replace(self.cluster, resources=self.raw_resources)
        got = plan(as_read, new, node.name, key_changed=key != self.key,
                   maintenance=maintenance)  # fmt: skip
        if got.refused:
            raise ReloadRefused(got.refused)
        # Resources cannot change live (refused above): keep them as probed, timeouts filled.
        new = replace(new, resources=self.cluster.resources)
        self._pending = (new, node, got)
        return got, daemon_config(new, node, key)

    async def apply(self, acquire: bool) -> None:
        """Carry out the plan `load` returned; with `acquire`, take and announce what is new."""
        assert self._pending is not None
        new, node, p = self._pending
        self._pending = None
        gone = {str(v.address) for v in p.vips_removed}
        gone_vms = {f"vm {v.name}" for v in p.vms_removed}
        fresh_places = placements(replace(new, vips=p.vips_added), node)
        try:
            # First, before anything changes: an interface that is not there refuses it all.
            await self.addresses.prepare(fresh_places)
        except Exception as err:
            raise ReloadRefused([f"{new.label}: vip: {err}"]) from err
        self.guard.guards = tuple(g for g in self.guard.guards if str(g[0].address) not in gone)
        for vm in [v for v in self.vms if v.name in gone_vms]:
            log.info("reload.vm_removed name=%s held=%s", vm.name, vm.runs_here())
            await vm.release()
            self.vms.remove(vm)
        for item in [i for i in self.items if str(i.placement.address) in gone]:
            log.info("reload.vip_removed vip=%s held=%s", item.placement.address, item.held)
            await item.release()
            self.items.remove(item)
        added = []
        for placement in fresh_places:
            if placement.interface not in self.announcers:
                self.announcers[placement.interface] = Announcer(placement.interface)
                self.closers.append(self.announcers[placement.interface].close)
            announcer = self.announcers[placement.interface]
            announcer.prepare([(placement.address.ip, placement.mac)])
            added.append(VipResource(placement, self.addresses, announcer))
            guard = VipGuard(placement.interface)
            self.closers.append(guard.close)
            self.guard.guards += ((placement, guard),)
        ann = new.announce
        order = {str(v.address): i for i, v in enumerate(new.vips)}
        self.items[:] = sorted([*self.items, *added], key=lambda i: order[str(i.placement.address)])
        for item in self.items:
            item.count, item.interval, item.refresh = ann.garp_count, ann.garp_interval, ann.refresh
        new_vms = vm_resources(replace(new, vms=p.vms_added), node, self.on_vm_failover)
        self.vms.extend(new_vms)
        groups: dict[str, Sequence[Resource]] = {VIPS: self.items, VMS: self.vms}
        groups.update(by_name(self.services))
        self.resources.items = tuple(arrange(new.order, groups))
        self.found.vips, self.found.vms = tuple(self.items), tuple(self.vms)
        if p.targets:
            old = self.pings.prober
            self.pings.prober = PingProber(new.arbitration.targets)
            self.pings.targets = [str(t) for t in new.arbitration.targets]
            self.closers.append(self.pings.prober.close)
            old.close()
        self.pings.window = new.arbitration.probe_timeout
        self.guard.timeout = guard_window(new)
        self.cluster, self.node = new, node
        if acquire:
            # Only what is new: a VIP held all along is not added or announced again.
            failed = []
            fresh: list[Resource] = [*added, *new_vms]
            for res in fresh:
                log.info("reload.acquire name=%s", res.name)
                try:
                    await res.acquire()
                except Exception as err:
                    log.error("reload.acquire_failed name=%s error=%s", res.name, err)
                    failed.append(f"{res.name}: {err}")
            if failed:
                raise ResourceError("; ".join(failed))


def daemon_config(cluster: Cluster, node: Node, key: bytes) -> DaemonConfig:
    """Return the daemon's own configuration for `node`."""
    arb = cluster.arbitration
    return DaemonConfig(
        params=machine_params(cluster, node),
        cluster=cluster.name,
        key=key,
        digest=config_digest(cluster),
        run_dir=node.run_dir,
        state_dir=node.state_dir,
        probe_interval=arb.probe_interval,
        dampen=arb.dampen,
        status_interval=max(1.0, cluster.heartbeat.interval),
        hooks=tuple(Hook(h.command, h.timeout) for h in cluster.hooks),
        checks=cluster.checks,
        sections=section_digests(config_sections(cluster), key),
        # With [mirror], mirrord is part of the pair: a planned release waits for its final
        # flush even when it is not subscribed as RELEASING starts (takeover just restarted).
        expected_inhibitors=(MIRROR_INHIBITOR,) if cluster.mirror is not None else (),
    )


async def run(cluster: Cluster, node: Node) -> int:
    """Open every effect for `node`, run the daemon until it stops, close everything."""
    key = load_key(cluster.heartbeat.key_file)
    peer = cluster.peer_of(node.name)
    hb = cluster.heartbeat
    specs = [
        LinkSpec(
            name=link,
            local=ipaddress.ip_address(node.heartbeat[link]),
            peer=ipaddress.ip_address(peer.heartbeat[link]),
        )
        for link in hb.links
    ]
    closers: list[Callable[[], Any]] = []
    try:
        loop = asyncio.get_running_loop()
        failover_requests: list[Callable[[Event], None]] = []

        def on_vm_failover(name: str, reason: str) -> None:
            # From the VM monitor thread: past its restart budget the VM asks for a planned
            # switchover, which the machine grants only if the peer can take over.
            log.warning("vm.failover_requested name=%s reason=%s", name, reason)
            for emit in failover_requests:
                loop.call_soon_threadsafe(emit, OperatorStandby())

        async def failover_watch(emit: Callable[[Event], None]) -> None:
            failover_requests.append(emit)
            await asyncio.Event().wait()

        vms = vm_resources(cluster, node, on_vm_failover)
        # Services and storage, probed now (probe first, then decide); their timeouts come
        # from the agents' meta-data where the file sets none, and the deadlines follow them.
        raw_resources = cluster.resources
        services = await service_items(cluster.resources, on_vm_failover)
        cluster = replace(cluster, resources=tuple(svc.cfg for svc in services))
        for vm in vms:
            closers.append(getattr(vm.inner, "close", lambda: None))
        addresses = await Addresses.open()
        closers.append(addresses.close)
        vips = placements(cluster, node)
        await addresses.prepare(vips)
        announcers: dict[str, Announcer] = {}
        for vip in vips:
            if vip.interface not in announcers:
                announcers[vip.interface] = Announcer(vip.interface)
                closers.append(announcers[vip.interface].close)
            announcers[vip.interface].prepare([(vip.address.ip, vip.mac)])
        ann = cluster.announce
        items = [
            VipResource(
                v,
                addresses,
                announcers[v.interface],
                count=ann.garp_count,
                interval=ann.garp_interval,
                refresh=ann.refresh,
            )
            for v in vips
        ]
        # Know what a killed predecessor left behind: VIPs still on the interfaces, guests
        # still running. Nothing of it is destroyed or announced before the daemon has heard
        # the peer and asked the LAN (takeover.startup decides; FoundHeld carries it out).
        held = {str(v.address) for v in await addresses.held_vips(vips)}
        for item in items:
            item.held = str(item.placement.address) in held
        found = FoundHeld(items, vms, Muter(), arrange(cluster.order, by_name(services)))
        if load_maintenance(node.state_dir):
            # Maintenance: nothing is touched, not even a guest defined but stopped.
            log.warning("startup.maintenance note=nothing_cleared")
        else:
            await found.clear_stale()
        prober = PingProber(cluster.arbitration.targets)
        closers.append(prober.close)
        guards = []
        for vip in vips:
            guard = VipGuard(vip.interface)
            closers.append(guard.close)
            guards.append((vip, guard))

        def links(receiver: Receiver, on_heartbeat: Callable[[str, Heartbeat], None]) -> Links:
            hl = HeartbeatLinks(specs, hb.port, receiver, on_heartbeat)
            closers.append(hl.close)
            return hl

        # Always: a reload may add the first VM.
        watchers: list[Watcher] = [failover_watch, vm_refresh(vms)]
        if vips:
            watchers += claim_watches(items, max(ann.garp_interval, CONFLICT_GAP), closers)
            # Kernel link events wake the watch; without them carrier is polled every 50 ms at
            # most: a dead LAN port is the one failure that needs no confirmation.
            watchers.append(CarrierWatch([v.interface for v in vips], min(hb.interval, 0.05)))
        # The heartbeat-only interfaces (a direct cable): found once, as links and addresses
        # cannot change on reload. A carrier loss there makes a silent peer suspected.
        direct = heartbeat_only(
            await address_interfaces(), [node.heartbeat[link] for link in hb.links],
            [v.interface for v in vips],
        )  # fmt: skip
        log.info("carrier.heartbeat_only interfaces=%s", ",".join(direct) or "-")
        if direct:
            # Read every quarter interval (50 ms at most) besides the link events: the kernel
            # flags carrier loss at once, but sends its event through linkwatch, which holds a
            # carrier-down back for up to 1 s after any other link event on the host (650 ms
            # seen in the lab); one read of one interface costs a netlink round trip.
            poll = min(hb.interval / 4, 0.05)
            watchers.append(CarrierWatch(direct, poll, resync=poll, heartbeat=True))
        fencer = ipmi_fencer(cluster, node)
        if fencer is not None:
            # A worker waits ready: fencing skips the interpreter's start-up on the way.
            fencer.prepare()
            closers.append(fencer.close)
        resources = ResourceList(
            arrange(cluster.order, {VIPS: items, VMS: vms, **by_name(services)})
        )
        pings = PingAdapter(prober, cluster.arbitration.probe_timeout)
        guard_adapter = GuardAdapter(guards, guard_window(cluster))
        reloader = Reloader(
            cluster,
            node,
            key,
            addresses=addresses,
            announcers=announcers,
            items=items,
            vms=vms,
            resources=resources,
            found=found,
            pings=pings,
            guard=guard_adapter,
            closers=closers,
            on_vm_failover=on_vm_failover,
            services=services,
            raw_resources=raw_resources,
        )
        effects = Effects(
            links=links,
            resources=resources,
            prober=pings,
            guard=guard_adapter,
            fencer=fencer,
            watchers=watchers,
            startup=found,
            reloader=reloader,
        )
        if cluster.witness is not None:
            effects.witness = witness_link(cluster, node, closers)
        daemon = Daemon(daemon_config(cluster, node, key), effects)
        if cluster.metrics is not None:
            collector = SnapshotCollector(takeover_families, lambda: daemon.last_status, time.time)
            closers.append(serve(cluster.metrics, collector, "takeover"))
        return await daemon.run()
    finally:
        for close in reversed(closers):
            with contextlib.suppress(Exception):
                close()
