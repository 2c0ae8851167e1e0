"""Every deadline that must relate to another, derived in one place. Pure: plain numbers in and out.

What waits for what, from the resources' own limits:

- a VM stops within its `stop_timeout` (graceful shutdown), then is destroyed and undefined
  (DESTROY_MARGIN); a planned handover first tries a live migration, aborted after its
  `migrate_timeout`, then falls back to that stop;
- a service or storage resource (`[[resource]]`) starts within its `start_timeout` and
  stops within its `stop_timeout` (from the file, else the agent's meta-data), each action
  plus SERVICE_MARGIN (spawning the agent, the confirming monitor after a start);
- a release goes resource by resource in reverse order (VIPs within VIP_MARGIN): its budget
  is the sum; each VM and service is bounded on its own, so the VIPs are let go even when
  one of them is past its budget;
- a release may have to wait for an acquire still in progress (the resource lock): the
  machine's RELEASING gives up after both budgets and enters FAULT, where the fencing
  policy decides;
- after the release, a planned switchover waits for the release inhibitors (mirrord's final
  flush, which must end before `inhibit_timeout`): each one held, and each one *expected*
  (mirrord, when the cluster file has a `[mirror]` table) that has not had its say since the
  release began, even if it is not subscribed (yet) when RELEASING starts
  (`release_waits_for`);
- `systemctl stop` ends the daemon after all of it plus EXIT_MARGIN: the stop deadline, which
  the daemon hands to systemd (EXTEND_TIMEOUT_USEC) so that systemd does not kill it sooner.

`check` reports what does not fit together (`problems()`), naming the file's keys.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

# Seconds for destroying and undefining a VM once its graceful shutdown timed out.
DESTROY_MARGIN: Final = 10.0
# Seconds for libvirt to act on a migration abort before the fallback stop starts.
ABORT_MARGIN: Final = 5.0
# Seconds for defining a VM before its start_timeout runs.
DEFINE_MARGIN: Final = 10.0
# Seconds for removing (or adding) every VIP: netlink requests, a macvlan at most.
VIP_MARGIN: Final = 5.0
# Seconds for running a service's agent beyond its action's timeout: the process's start, and
# after a start the monitor that confirms it (bounded by its own timeout, added separately).
SERVICE_MARGIN: Final = 2.0
# Seconds between the end of the release and inhibitors and the daemon's exit: last heartbeats,
# status file, closing sockets.
EXIT_MARGIN: Final = 5.0


@dataclass(frozen=True)
class VmLimits:
    """The limits of one `[[vm]]` that deadlines are derived from."""

    name: str
    start_timeout: float
    stop_timeout: float
    # Seconds a live migration may run before it is aborted; None: the VM never migrates.
    migrate_timeout: float | None = None

    def stop_budget(self) -> float:
        """Return the seconds a release of this VM may take: shutdown, then destroy."""
        return self.stop_timeout + DESTROY_MARGIN

    def handover_budget(self) -> float:
        """Return the seconds a planned handover may take: migration, abort, fallback stop."""
        if self.migrate_timeout is None:
            return self.stop_budget()
        return self.migrate_timeout + ABORT_MARGIN + self.stop_budget()

    def start_budget(self) -> float:
        """Return the seconds an acquire of this VM may take: define, start, wait running."""
        return DEFINE_MARGIN + self.start_timeout


@dataclass(frozen=True)
class ServiceLimits:
    """The limits of one `[[resource]]` that deadlines are derived from (timeouts resolved)."""

    name: str
    start_timeout: float
    stop_timeout: float
    monitor_timeout: float

    def stop_budget(self) -> float:
        """Return the seconds a release of this resource may take: its stop."""
        return self.stop_timeout + SERVICE_MARGIN

    def start_budget(self) -> float:
        """Return the seconds an acquire may take: a probe, the start, the confirming monitor."""
        return self.start_timeout + 2 * self.monitor_timeout + SERVICE_MARGIN


@dataclass(frozen=True)
class Deadlines:
    """The derived deadlines of one node (both nodes share the cluster file, hence the values)."""

    # Seconds RELEASING waits for release inhibitors after the release.
    inhibit_timeout: float
    # Seconds every resource together may take to be released (handover or stop).
    release_budget: float
    # Seconds every resource together may take to be acquired.
    acquire_budget: float
    # Seconds RELEASING waits for the release (behind an acquire in progress, at worst)
    # before it gives up and enters FAULT.
    release_timeout: float
    # Seconds from `systemctl stop` to the daemon's exit, at the latest.
    stop_deadline: float


def derive(
    inhibit_timeout: float, vms: Sequence[VmLimits], services: Sequence[ServiceLimits] = ()
) -> Deadlines:
    """Return the deadlines for these release inhibitors, VMs and services."""
    release = sum(vm.handover_budget() for vm in vms) + VIP_MARGIN
    release += sum(svc.stop_budget() for svc in services)
    acquire = sum(vm.start_budget() for vm in vms) + VIP_MARGIN
    acquire += sum(svc.start_budget() for svc in services)
    release_timeout = acquire + release
    return Deadlines(
        inhibit_timeout=inhibit_timeout,
        release_budget=release,
        acquire_budget=acquire,
        release_timeout=release_timeout,
        stop_deadline=stop_deadline(release_timeout, inhibit_timeout),
    )


# Seconds for removing every VIP when an active lets go at once (a few netlink requests).
VIP_RELEASE: Final = 1.0


def demote_margin(vms: Sequence[VmLimits]) -> float:
    """Return the seconds an active needs to let go of everything at once (no migration).

    A witness lease's holder starts releasing this long before its lease surely ends
    (takeover.lease): every VM's stop budget, then the VIPs.
    """
    return sum(vm.stop_budget() for vm in vms) + VIP_RELEASE


# The share of the pre-probe's lead during which the VIP guard listens; the rest is how much
# earlier than deadtime its verdict is in. The loop wakes and schedules a few ms late under
# load (4-8 ms seen at 0.1 s): a verdict due exactly at deadtime delays every takeover by that.
GUARD_SHARE: Final = 0.8


def prearbitrate(interval: float, deadtime: float, probe_timeout: float) -> float:
    """Return how long before deadtime a silent peer's arbitration probes start (0: at it).

    Early enough for the guard's window to pass before the peer is lost, but only once a
    heartbeat is missed by half an interval: a merely late one must not send ARP probes and
    pings every interval.
    """
    window = min(probe_timeout, deadtime / 2)
    return max(0.0, min(window + interval / 2, deadtime - 1.5 * interval))


def guard_window(interval: float, deadtime: float, probe_timeout: float) -> float:
    """Return how long the VIP guard listens for an answer.

    A holder on the same LAN answers an ARP probe within milliseconds; the window is the
    probe timeout, at most half a deadtime, and, when the probes start before deadtime, at
    most GUARD_SHARE of that lead, so the verdict is in before the peer counts as lost.
    """
    window = min(probe_timeout, deadtime / 2)
    lead = prearbitrate(interval, deadtime, probe_timeout)
    return min(window, GUARD_SHARE * lead) if lead > 0 else window


def stop_deadline(release_timeout: float | None, inhibit_timeout: float) -> float:
    """Return the seconds from a stop request to the exit: release, inhibitors, exit margin."""
    return (release_timeout or 0.0) + inhibit_timeout + EXIT_MARGIN


def problems(
    inhibit_timeout: float, flush_timeout: float | None, vms: Sequence[VmLimits]
) -> list[tuple[str, str]]:
    """Return (key path, message) for every limit that does not fit with another.

    The final flush must end before the inhibitor times out, or a planned switchover goes on
    without it and loses what it was sending. The VMs take part in the signature: every rule
    that relates their limits to another belongs here.
    """
    out: list[tuple[str, str]] = []
    if flush_timeout is not None and flush_timeout >= inhibit_timeout:
        out.append(
            (
                "mirror.flush_timeout",
                f"must be below cluster.inhibit_timeout ({inhibit_timeout:g} s), so the final "
                f"flush ends before the handover stops waiting for it, got {flush_timeout:g} s",
            )
        )
    return out


def release_waits_for(
    expected: Iterable[str], held: Iterable[str], said: Iterable[str]
) -> frozenset[str]:
    """Return the inhibitors a planned release still waits for (until `inhibit_timeout`).

    `held`: the inhibitors held now; `said`: those released by their holder since RELEASING
    began (a holder whose connection closed has not had its say). An expected inhibitor whose
    daemon is not subscribed (restarting, or reconnecting after takeover itself restarted) is
    waited for all the same: it holds the mirror's last changes, and it flushes them when it
    subscribes and learns the node is RELEASING.
    """
    return frozenset(held) | (frozenset(expected) - frozenset(said))


def extend_timeout_usec(seconds: float) -> int:
    """Return `seconds` as sd_notify's EXTEND_TIMEOUT_USEC value (whole microseconds)."""
    return int(seconds * 1_000_000)


__all__ = [
    "ABORT_MARGIN",
    "DEFINE_MARGIN",
    "DESTROY_MARGIN",
    "EXIT_MARGIN",
    "GUARD_SHARE",
    "SERVICE_MARGIN",
    "VIP_MARGIN",
    "VIP_RELEASE",
    "Deadlines",
    "ServiceLimits",
    "VmLimits",
    "derive",
    "extend_timeout_usec",
    "guard_window",
    "prearbitrate",
    "problems",
    "release_waits_for",
    "stop_deadline",
]
