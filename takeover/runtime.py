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
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from pyroute2 import AsyncIPRoute

from takeover.addresses import Addresses, VipPlacement
from takeover.announce import Announcer
from takeover.arbitration import Outcome
from takeover.config import Cluster, Node, config_digest, config_sections
from takeover.daemon import Daemon, DaemonConfig, Effects, Links, Watcher
from takeover.drift import section_digests
from takeover.exporter import serve
from takeover.heartbeat import HeartbeatLinks, LinkSpec, load_key
from takeover.hooks import Hook
from takeover.machine import Event, LinkState, MachineParams, OperatorStandby
from takeover.metrics import SnapshotCollector, takeover_families
from takeover.probe import PingProber, VipGuard
from takeover.resources import ResourceList, VipResource, VmItem
from takeover.wire import Heartbeat, Receiver

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
        guard=bool(cluster.vips),
        # Longest pause between looks while the peer is silent but its VIP still answers.
        recheck=max(arb.probe_interval, hb.deadtime),
        # Start the guard early enough that its window has passed when the peer is lost, but
        # only once a heartbeat is missed by half an interval: a merely late one must not send
        # ARP probes and pings every interval.
        prearbitrate=max(
            0.0, min(guard_window(cluster) + hb.interval / 2, hb.deadtime - 1.5 * hb.interval)
        ),
        arbitrate_timeout=max(5.0, 4 * (arb.probe_timeout + hb.deadtime)),
    )


def guard_window(cluster: Cluster) -> float:
    """Return how long the VIP guard listens for an answer.

    A holder on the same LAN answers an ARP probe within milliseconds; the window is the
    probe timeout, but at most half a deadtime so it fits before the peer counts as lost.
    """
    return min(cluster.arbitration.probe_timeout, cluster.heartbeat.deadtime / 2)


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


class CarrierWatch:
    """Poll the carrier of the service interfaces; report LinkState when it changes.

    A node whose LAN port died cannot serve, and its ping score would only say so after the
    dampening: carrier is certain at once, and one netlink request per interval is cheap.
    """

    def __init__(self, interfaces: Sequence[str], interval: float) -> None:
        """Watch `interfaces` every `interval` seconds."""
        self.interfaces = tuple(dict.fromkeys(interfaces))
        self.interval = interval

    async def __call__(self, emit: Callable[[Event], None]) -> None:
        """Run until cancelled."""
        ipr = AsyncIPRoute()
        await ipr.setup_endpoint()
        last: bool | None = None
        try:
            while True:
                states = [await self._carrier(ipr, name) for name in self.interfaces]
                up = all(states)
                if up != last:
                    log.info(
                        "carrier.changed up=%s interfaces=%s",
                        up,
                        ",".join(
                            f"{n}:{int(s)}" for n, s in zip(self.interfaces, states, strict=True)
                        ),
                    )
                    emit(LinkState(up))
                    last = up
                await asyncio.sleep(self.interval)
        finally:
            ipr.close()

    @staticmethod
    async def _carrier(ipr: AsyncIPRoute, name: str) -> bool:
        try:
            links = await ipr.link("get", ifname=name)
        except Exception:
            # Gone (renamed, deleted): as good as no carrier.
            return False
        return bool(links and links[0].get("IFLA_CARRIER"))


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
    for vm in cluster.vms:
        spec = backend.VmSpec.from_config(vm, node.name, peer)
        res = backend.VmResource(spec, on_failover=on_failover)
        out.append(VmItem(f"vm {vm.name}", res))
    return out


async def reconcile_vms(vms: Sequence[VmItem]) -> None:
    """Clear every VM copy this node still has, before anything else runs.

    At start-up this node cannot know yet who owns a VM, and a copy running here that no
    daemon watched (left by a crash, started by autostart) may be the second one while the
    peer serves: both writing one disk. Two copies are worse than a restart, so every copy
    goes (destroy, undefine); if this node is elected, acquire starts the VM again.
    """
    for vm in vms:
        steps = await vm.reconcile(owner_elsewhere=True)
        if steps:
            log.info("reconcile.vm name=%s steps=%s", vm.name, ",".join(steps))


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
        for vm in vms:
            closers.append(getattr(vm.inner, "close", lambda: None))
        # Before the daemon says anything: a returning node never runs a second copy.
        await reconcile_vms(vms)
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
        # Start-up reconciliation: know what a killed predecessor left behind. The machine
        # releases it unless this node is to be active.
        held = {str(v.address) for v in await addresses.held_vips(vips)}
        for item in items:
            item.held = str(item.placement.address) in held
        if held:
            log.info("reconcile.found_held vips=%s", ",".join(sorted(held)))
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

        watchers: list[Watcher] = [failover_watch, vm_refresh(vms)] if vms else []
        if vips:
            # Carrier is polled every 50 ms at most whatever the interval: it is one netlink
            # request, and a dead LAN port is the one failure that needs no confirmation.
            watchers.append(CarrierWatch([v.interface for v in vips], min(hb.interval, 0.05)))
        fencer = ipmi_fencer(cluster, node)
        if fencer is not None:
            # A worker waits ready: fencing skips the interpreter's start-up on the way.
            fencer.prepare()
            closers.append(fencer.close)
        effects = Effects(
            links=links,
            resources=ResourceList([*items, *vms]),
            prober=PingAdapter(prober, cluster.arbitration.probe_timeout),
            guard=GuardAdapter(guards, guard_window(cluster)),
            fencer=fencer,
            watchers=watchers,
        )
        daemon = Daemon(daemon_config(cluster, node, key), effects)
        if cluster.metrics is not None:
            collector = SnapshotCollector(takeover_families, lambda: daemon.last_status, time.time)
            closers.append(serve(cluster.metrics, collector, "takeover"))
        return await daemon.run()
    finally:
        for close in reversed(closers):
            with contextlib.suppress(Exception):
                close()
