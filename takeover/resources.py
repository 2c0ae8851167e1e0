"""The ordered resource list: acquire in order, release in reverse.

A resource is anything the active node holds: a VIP (address, optional virtual MAC, and its
announcements), a VM, a service or its storage (takeover.backends.services); `arrange()` puts
them in the group's order (`[group] order`). `ResourceList.acquire()` takes them in that
order and, if one fails, gives back what it took before raising: the machine's FAULT holds nothing.
`release()` goes in reverse and tries every resource even after a failure, so one stuck VIP
does not keep the others on a node that is giving up.

Announcements must not slow the failover: the first round goes out as soon as the address is
up, the remaining `garp_count - 1` rounds follow in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, TypeVar

from takeover.addresses import Addresses, VipPlacement
from takeover.announce import Announcer
from takeover.frames import mac_bytes, mac_str, parse_claim
from takeover.startup import Decision, Held, Verdict

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class Resource(Protocol):
    """One thing the active node holds."""

    name: str

    async def acquire(self) -> None:
        """Take it (idempotent)."""
        ...

    async def release(self) -> None:
        """Give it back (idempotent)."""
        ...

    async def announce(self) -> None:
        """Tell the network again where it lives (no-op for resources that need not)."""
        ...

    def describe(self) -> dict[str, Any]:
        """Return a JSON-ready view for status: at least "held"."""
        ...


T = TypeVar("T")


def arrange(order: Sequence[str], groups: Mapping[str, Sequence[T]]) -> list[T]:
    """Return the items of `groups` in `order` (names such as "vips", "vms" or a resource's)."""
    return [item for name in order for item in groups.get(name, ())]


class ResourceError(Exception):
    """Acquiring or releasing failed; the message names each resource that did."""


class ResourceList:
    """Resources acquired in order and released in reverse."""

    def __init__(self, items: Sequence[Resource]) -> None:
        """Hold `items` in acquisition order."""
        self.items = tuple(items)

    async def acquire(self) -> None:
        """Acquire each in order; on a failure release those taken, then raise ResourceError.

        A resource blocked by a configuration error (a service whose agent said
        OCF_ERR_CONFIGURED) fails the acquire before anything is taken: it would fail the
        same way after the others were started, only later.
        """
        for item in self.items:
            blocked = getattr(item, "blocked", "")
            if blocked:
                log.error("resource.blocked name=%s error=%s", item.name, blocked)
                raise ResourceError(f"{item.name}: blocked by a configuration error: {blocked}")
        taken: list[Resource] = []
        for item in self.items:
            try:
                await item.acquire()
            except Exception as err:
                log.error("resource.acquire_failed name=%s error=%s", item.name, err)
                for done in reversed(taken):
                    with contextlib.suppress(Exception):
                        await done.release()
                with contextlib.suppress(Exception):
                    await item.release()
                raise ResourceError(f"{item.name}: {err}") from err
            taken.append(item)

    def claim_now(self) -> list[str]:
        """Take the leading VIPs at once, synchronously (VipResource.claim_now); return them.

        A takeover's clients wait for the address and its announcement; the loop coming
        round to the acquire task takes 5-25 ms under load. Only the VIPs that come first in
        the order are claimed, so the order holds; nothing when a resource is blocked (the
        acquire fails before it takes anything). acquire() then goes through every item.
        """
        if any(getattr(item, "blocked", "") for item in self.items):
            return []
        claimed: list[str] = []
        for item in self.items:
            claim = getattr(item, "claim_now", None)
            if claim is None or not claim():
                break
            claimed.append(item.name)
        return claimed

    async def release(self, handover: bool = False) -> None:
        """Release each in reverse; try them all; raise ResourceError naming the failures.

        With `handover` (a planned switchover to a live peer), resources that can move
        themselves (a VM that live-migrates) are handed over instead of stopped.
        """
        failures = []
        for item in reversed(self.items):
            hand_over = getattr(item, "hand_over", None) if handover else None
            # A VM carries its own budget (takeover.deadlines): past it, the rest (the VIPs)
            # is released all the same, and the failure sends the machine to FAULT.
            budget = getattr(item, "handover_budget" if hand_over else "release_budget", None)
            try:
                await asyncio.wait_for(
                    hand_over() if hand_over is not None else item.release(), budget
                )
            except TimeoutError:
                log.error("resource.release_timeout name=%s budget=%s", item.name, budget)
                failures.append(f"{item.name}: past its budget of {budget:g} s")
            except Exception as err:
                log.error("resource.release_failed name=%s error=%s", item.name, err)
                failures.append(f"{item.name}: {err}")
        if failures:
            raise ResourceError("; ".join(failures))

    async def maintenance(self, on: bool) -> None:
        """Maintenance mode: stop watching every VM (no restart, no failover); on leaving,
        the active's acquire watches them again."""
        if not on:
            return
        for item in self.items:
            if isinstance(item, VmItem):
                try:
                    await asyncio.to_thread(item.inner.stop_monitor)
                except Exception as err:
                    log.error("resource.monitor_stop_failed name=%s error=%s", item.name, err)

    async def release_addresses(self) -> None:
        """Release only the VIPs, in reverse, whatever else is stuck: the daemon's last act."""
        for item in reversed(self.items):
            if isinstance(item, VipResource):
                await item.release()

    async def announce(self) -> None:
        """Announce every resource again."""
        for item in self.items:
            await item.announce()

    def describe(self) -> list[dict[str, Any]]:
        """Return one status entry per resource."""
        return [item.describe() for item in self.items]

    def blocked_resource(self) -> str:
        """Return the name of the first resource blocked by a configuration error, or ""."""
        for item in self.items:
            if getattr(item, "blocked", ""):
                return str(getattr(item, "resource", item.name))
        return ""

    def cleanup(self, name: str | None) -> list[str]:
        """Clear the configuration error and failure history of resource `name` (None: every
        one); return the names that were blocked. KeyError names an unknown resource."""
        services = [item for item in self.items if hasattr(item, "cleanup")]
        names = [str(getattr(item, "resource", item.name)) for item in services]
        if name is not None and name not in names:
            raise KeyError(f"no resource named {name!r} (known: {', '.join(names) or 'none'})")
        cleared = []
        for item, item_name in zip(services, names, strict=True):
            if name in (None, item_name):
                if getattr(item, "blocked", ""):
                    cleared.append(item_name)
                item.cleanup()
        return cleared


class VipResource:
    """One VIP: the address (and virtual MAC) via netlink, then GARP / unsolicited NA."""

    def __init__(
        self,
        placement: VipPlacement,
        addresses: Addresses,
        announcer: Announcer,
        *,
        count: int = 5,
        interval: float = 0.1,
        refresh: float = 0.0,
    ) -> None:
        """Place `placement` with `addresses`, announce through `announcer` (its interface)."""
        self.placement = placement
        self.name = f"vip {placement.address}"
        self.addresses = addresses
        self.announcer = announcer
        self.count = count
        self.interval = interval
        self.refresh = refresh
        self.held = False
        # Acquired by this daemon (ACTIVE): only then is another MAC claiming it a conflict to
        # answer; a VIP found held at start-up is undecided (muted) until acquired.
        self.defended = False
        # Times another MAC claimed it while defended (VipDefender).
        self.conflicts = 0
        self._burst: asyncio.Task[None] | None = None
        self._refresh: asyncio.Task[None] | None = None
        # claim_now() added it and announced: acquire() does the rest, not the burst again.
        self._claimed = False

    def claim_now(self) -> bool:
        """Add a plain VIP and send its first announcement round now, blocking; return whether
        it did (the addresses say whether they can: Addresses.add_now)."""
        add_now = getattr(self.addresses, "add_now", None)
        if self.held or add_now is None or not add_now(self.placement):
            return False
        self.held = self.defended = self._claimed = True
        self._announce_now()
        return True

    async def acquire(self) -> None:
        """Add the address, send the first announcement round now and the rest in background."""
        await self.addresses.add_vip(self.placement)
        self.held = self.defended = True
        if self._claimed:
            self._claimed = False
        else:
            self._announce_now()
        if self.refresh > 0 and self._refresh is None:
            self._refresh = asyncio.ensure_future(self._refresh_loop())

    async def release(self) -> None:
        """Stop announcing, then remove the address (and the virtual MAC's interface)."""
        for task in (self._burst, self._refresh):
            if task is not None:
                task.cancel()
        self._burst = self._refresh = None
        self.defended = self._claimed = False
        await self.addresses.remove_vip(self.placement)
        self.held = False

    async def announce(self) -> None:
        """Start a fresh burst (after a conflict was resolved in our favour)."""
        if self.held:
            self._announce_now()

    def reannounce(self) -> None:
        """Start a fresh burst now if this daemon serves the VIP (the conflict path)."""
        if self.defended:
            self._announce_now()

    @property
    def own_mac(self) -> str:
        """The MAC clients must use for this VIP: the virtual one, else the interface's."""
        return self.placement.mac or self.announcer.mac

    def _announce_now(self) -> None:
        vip, mac = self.placement.address.ip, self.placement.mac
        self.announcer.send_round(vip, mac)
        if self._burst is not None:
            self._burst.cancel()
        if self.count > 1:
            self._burst = asyncio.ensure_future(self._rest_of_burst())

    async def _rest_of_burst(self) -> None:
        vip, mac = self.placement.address.ip, self.placement.mac
        await asyncio.sleep(self.interval)
        await self.announcer.announce(vip, mac, count=self.count - 1, interval=self.interval)

    async def _refresh_loop(self) -> None:
        vip, mac = self.placement.address.ip, self.placement.mac
        while True:
            await asyncio.sleep(self.refresh)
            self.announcer.send_round(vip, mac)

    def describe(self) -> dict[str, Any]:
        """Return address, interface, mac and whether this node holds it."""
        return {
            "address": str(self.placement.address),
            "interface": self.placement.device,
            "mac": self.placement.mac,
            "held": self.held,
            "conflicts": self.conflicts,
        }


class VipDefender:
    """Re-announces a VIP this node serves as soon as another MAC claims it.

    Another node answering for our VIP (a returning node that still holds it, a stale kernel,
    a misconfigured host) repoints every client that hears it; one announcement round from us
    repoints them back. At most one burst per VIP every `gap` seconds: a host that keeps
    claiming is answered steadily, not flooded.
    """

    def __init__(self, vips: Sequence[VipResource], gap: float) -> None:
        """Defend `vips`; re-announce each at most once per `gap` seconds."""
        self.vips = tuple(vips)
        self.gap = gap
        self._last: dict[str, float] = {}

    def on_frame(self, frame: bytes, now: float) -> bool:
        """Look at one received frame; return whether it made us announce."""
        claim = parse_claim(frame)
        if claim is None:
            return False
        announced = False
        for vip in self.vips:
            if claim.ip != vip.placement.address.ip or not vip.defended:
                continue
            if claim.mac == mac_bytes(vip.own_mac):
                continue
            vip.conflicts += 1
            key = str(vip.placement.address)
            last = self._last.get(key)
            due = last is None or now - last >= self.gap
            log.warning(
                "vip.conflict vip=%s mac=%s action=%s count=%s",
                vip.placement.address,
                mac_str(claim.mac),
                "announce" if due else "suppressed",
                vip.conflicts,
            )
            if due:
                self._last[key] = now
                vip.reannounce()
                announced = True
        return announced


class BlockingResource(Protocol):
    """A resource whose calls block (takeover.backends.libvirt.VmResource)."""

    def acquire(self) -> None:
        """Take it."""
        ...

    def release(self) -> None:
        """Give it back."""
        ...

    def describe(self) -> dict[str, Any]:
        """Return its status view."""
        ...


class ThreadResource:
    """A blocking resource run in a worker thread, so the loop keeps beating meanwhile.

    `describe()` answers from a copy refreshed after each acquire and release: status is
    written often, and a slow hypervisor must not stall the heartbeats.
    """

    def __init__(self, name: str, inner: BlockingResource) -> None:
        """Wrap `inner`; read its state once now (start-up reconciliation needs it)."""
        self.name = name
        self.inner = inner
        self._view = self._read()

    def _read(self) -> dict[str, Any]:
        try:
            return dict(self.inner.describe())
        except Exception as err:
            return {"name": self.name, "held": False, "error": str(err)}

    async def acquire(self) -> None:
        """Acquire in a thread, then refresh the status view."""
        try:
            await asyncio.to_thread(self.inner.acquire)
        finally:
            self._view = await asyncio.to_thread(self._read)

    async def release(self) -> None:
        """Release in a thread, then refresh the status view."""
        try:
            await asyncio.to_thread(self.inner.release)
        finally:
            self._view = await asyncio.to_thread(self._read)

    async def announce(self) -> None:
        """Nothing to announce for a VM: its own guest stack does that."""

    def describe(self) -> dict[str, Any]:
        """Return the last status view; "held" is true when it runs here."""
        view = dict(self._view)
        view.setdefault("held", view.get("where") == "here")
        return view


class MonitoredResource(BlockingResource, Protocol):
    """A blocking resource that watches itself while held and can move to the peer itself."""

    def start_monitor(self) -> None:
        """Start watching (restart in place, or ask for a failover)."""
        ...

    def stop_monitor(self) -> None:
        """Stop watching."""
        ...

    def hand_over(self) -> object:
        """Release for a planned switchover (live-migrate when allowed)."""
        ...

    def reconcile(self, owner_elsewhere: bool) -> list[str]:
        """Clear a copy this node must not run; return the steps taken."""
        ...


class VmItem(ThreadResource):
    """A VM in the resource list: monitored while held, live-migrated on a planned handover."""

    inner: MonitoredResource

    def __init__(
        self,
        name: str,
        inner: MonitoredResource,
        release_budget: float | None = None,
        handover_budget: float | None = None,
    ) -> None:
        """Wrap `inner` (takeover.backends.libvirt.VmResource); budgets in seconds, None: none."""
        super().__init__(name, inner)
        self.inner = inner
        # Seconds a release (stop) and a handover (migration, then stop) may take.
        self.release_budget = release_budget
        self.handover_budget = handover_budget

    async def reconcile(self, owner_elsewhere: bool) -> list[str]:
        """Clear a stale copy (see VmResource.reconcile) and refresh the status view."""
        try:
            return await asyncio.to_thread(self.inner.reconcile, owner_elsewhere)
        finally:
            await self.refresh()

    async def acquire(self) -> None:
        """Acquire, then watch the domain (restart in place or ask for a failover)."""
        await super().acquire()
        await asyncio.to_thread(self.inner.start_monitor)

    async def release(self) -> None:
        """Stop watching first (a shutdown is no crash), then shut down and undefine."""
        await asyncio.to_thread(self.inner.stop_monitor)
        await super().release()

    async def hand_over(self) -> None:
        """Stop watching, then live-migrate to the peer (or stop when that is not possible)."""
        await asyncio.to_thread(self.inner.stop_monitor)
        try:
            await asyncio.to_thread(self.inner.hand_over)
        finally:
            await self.refresh()

    async def refresh(self) -> None:
        """Re-read the status view (restarts in place happen between acquire and release)."""
        self._view = await asyncio.to_thread(self._read)

    def describe(self) -> dict[str, Any]:
        """Return the last status view, marked as a VM."""
        return {**super().describe(), "kind": "vm"}

    def runs_here(self) -> bool:
        """Return whether a copy of the guest is active on this node (as last read)."""
        view = self._view
        return view.get("where") == "here" or view.get("state") in ACTIVE_GUEST_STATES


# libvirt states (as VmResource.describe names them) of a domain that is active but not
# "here" in its status view: it still is a copy of the guest on this node.
ACTIVE_GUEST_STATES = frozenset({"running", "blocked", "paused", "pmsuspended"})


class Mute(Protocol):
    """Keeps held VIPs from being answered or announced (takeover.addresses.Muter)."""

    async def mute(self, addresses: Sequence[IPAddress]) -> bool:
        """Mute `addresses`; return whether that worked."""
        ...

    async def unmute(self) -> bool:
        """Lift every mute; return whether that worked."""
        ...


class Service(Protocol):
    """A service or storage resource (takeover.backends.services.ServiceItem)."""

    name: str

    def runs_here(self) -> bool:
        """Return whether its start-up probe found it running (or failed) here."""
        ...

    async def release(self) -> None:
        """Stop it."""
        ...


class FoundHeld:
    """What a starting node holds, muted until the start-up decision is carried out.

    The daemon's `Startup` effect: VIPs found on the interfaces and guests found running are
    neither announced, answered for, nor destroyed until takeover.startup has decided.
    """

    def __init__(
        self,
        vips: Sequence[VipResource],
        vms: Sequence[VmItem],
        muter: Mute | None,
        services: Sequence[Service] = (),
    ) -> None:
        """Decide about `vips` (their `held` read at start-up), `vms` and `services` (probed
        already, in group order); mute with `muter`."""
        self.vips = tuple(vips)
        self.vms = tuple(vms)
        self.muter = muter
        self.services = tuple(services)

    def held(self) -> Held:
        """Return the held VIPs (by address), guests and services running here (by name)."""
        return Held(
            vips=tuple(str(v.placement.address) for v in self.vips if v.held),
            guests=tuple(vm.name for vm in self.vms if vm.runs_here()),
            services=tuple(svc.name for svc in self.services if svc.runs_here()),
        )

    async def look(self) -> Held:
        """Read afresh which VIPs are on the interfaces and which guests run here (maintenance
        ends on a node restarted during it: what it holds may have changed meanwhile)."""
        for vip in self.vips:
            try:
                vip.held = bool(await vip.addresses.held_vips([vip.placement]))
            except Exception as err:
                log.error("startup.look_failed vip=%s error=%s", vip.placement.address, err)
        for vm in self.vms:
            try:
                await vm.refresh()
            except Exception as err:
                log.error("startup.look_failed vm=%s error=%s", vm.name, err)
        return self.held()

    async def mute(self) -> None:
        """Mute every held VIP (see takeover.addresses.Muter)."""
        held = [v.placement.address.ip for v in self.vips if v.held]
        if held and self.muter is not None:
            await self.muter.mute(held)

    async def settle(self, decision: Decision) -> bool:
        """Release or destroy what the decision gives up, then unmute; True if nothing is held.

        Kept VIPs are announced by the acquire that follows (the machine starts ACTIVE).
        """
        ok = True
        for svc in reversed(self.services):
            # A service has no harder way than its stop: DESTROY and RELEASE both stop it.
            if decision.services.get(svc.name, Verdict.KEEP) is Verdict.KEEP:
                continue
            try:
                await svc.release()
                log.info("startup.service name=%s steps=stop", svc.name)
            except Exception as err:
                log.error("startup.service_failed name=%s error=%s", svc.name, err)
                ok = False
        for vm in reversed(self.vms):
            verdict = decision.guests.get(vm.name)
            try:
                if verdict is Verdict.DESTROY:
                    steps = await vm.reconcile(owner_elsewhere=True)
                    log.info("startup.vm name=%s steps=%s", vm.name, ",".join(steps) or "-")
                elif verdict is Verdict.RELEASE:
                    await vm.release()
                    log.info("startup.vm name=%s steps=release", vm.name)
            except Exception as err:
                log.error("startup.vm_failed name=%s verdict=%s error=%s", vm.name, verdict, err)
                ok = False
        for vip in self.vips:
            if decision.vips.get(str(vip.placement.address)) is Verdict.RELEASE:
                try:
                    await vip.release()
                except Exception as err:
                    log.error("startup.vip_failed vip=%s error=%s", vip.placement.address, err)
                    ok = False
        if self.muter is not None:
            await self.muter.unmute()
        return ok and not decision.keeps

    async def clear_stale(self) -> None:
        """Before the daemon starts: undefine guests defined but not running here, and lift a
        mute left by a predecessor killed mid-decision when nothing is held any more."""
        for vm in self.vms:
            if not vm.runs_here():
                steps = await vm.reconcile(owner_elsewhere=True)
                if steps:
                    log.info("startup.vm name=%s steps=%s", vm.name, ",".join(steps))
        if not self.held() and self.muter is not None:
            await self.muter.unmute()
