"""What a starting daemon does with what it finds held. Pure: no I/O, no clock.

A daemon restarts (a watchdog kill, an upgrade, a crash) while its node may still hold VIPs
and run guests. Destroying them all at once would pull the power on every guest of a healthy
active; keeping them all would make two owners after a partition. So the daemon first looks
(heartbeats for one deadtime, the VIP guard), with its held VIPs muted (see
`takeover.addresses.Muter`), and then `decide()` says, per resource, whether to keep, release
or destroy it, and which role to start in:

| peer                          | VIP guard           | VIPs    | guests  | role          |
|-------------------------------|---------------------|---------|---------|---------------|
| heard, holds nothing          | -                   | keep    | keep    | ACTIVE        |
| heard holding, both starting, | -                   | keep    | keep    | ACTIVE        |
|   this node preferred         |                     |         |         |               |
| heard holding                 | -                   | release | destroy | STANDBY if it |
|                               |                     |         |         | is ACTIVE,    |
|                               |                     |         |         | else STARTING |
| silent for one deadtime       | nobody else answers | keep    | keep    | ACTIVE        |
| silent                        | another MAC answers | release | release | STARTING      |
| silent, service LAN down      | (cannot see)        | release | release | STARTING      |

A guest is destroyed (power pulled) only when the peer is heard holding: then the peer runs
the real one. When the peer is silent but someone answers for the VIPs, the guest is stopped
in order: probably a second copy, but nobody said so.

A service or storage resource (`[[resource]]`) whose start-up monitor finds it running here
(or failed, which leaves something to clean up) follows the guests' column: kept, or stopped
(for a service, DESTROY and RELEASE are both its stop: an agent has no harder way).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field

from takeover.machine import Role


class Verdict(enum.Enum):
    """What to do with one resource found held at start-up."""

    KEEP = "keep"  # go on holding it (unmute and announce a VIP; adopt a guest)
    RELEASE = "release"  # give it up in order (remove the VIP; shut the guest down)
    DESTROY = "destroy"  # a guest the peer runs: stop this copy at once, no shutdown


@dataclass(frozen=True)
class Held:
    """What this node holds at start-up: VIP addresses, running guests and services, by name."""

    vips: tuple[str, ...] = ()
    guests: tuple[str, ...] = ()
    services: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        """Return whether anything is held (only then is there something to decide)."""
        return bool(self.vips or self.guests or self.services)


@dataclass(frozen=True)
class PeerAdvert:
    """What the peer's latest heartbeat (within deadtime) says."""

    role: Role
    # It may still hold resources (its heartbeat's holding flag).
    holding: bool
    # This node would win an election against it (machine.prefer on both claims).
    we_win: bool = False


@dataclass(frozen=True)
class Decision:
    """The verdict per resource, the role to start in, and why."""

    role: Role
    reason: str
    vips: dict[str, Verdict] = field(default_factory=dict)
    guests: dict[str, Verdict] = field(default_factory=dict)
    services: dict[str, Verdict] = field(default_factory=dict)

    @property
    def keeps(self) -> bool:
        """Return whether anything is kept (then the node starts ACTIVE)."""
        verdicts = (*self.vips.values(), *self.guests.values(), *self.services.values())
        return any(v is Verdict.KEEP for v in verdicts)


def _all(names: Sequence[str], verdict: Verdict) -> dict[str, Verdict]:
    return dict.fromkeys(names, verdict)


def decide(
    held: Held,
    peer: PeerAdvert | None,
    *,
    listened: bool,
    answered: bool | None,
    lan_up: bool = True,
) -> Decision | None:
    """Return the start-up decision, or None while it cannot be made yet.

    `peer` is the peer's advert when heard within deadtime, else None. `listened`: the listen
    window (one deadtime) has passed. `answered`: the VIP guard saw another MAC answer for a
    VIP (None while its probe is out; a failed probe counts as answered; False when there are
    no VIPs to ask about). `lan_up`: every service interface has carrier.
    """
    if not held:
        # STARTING: nothing to decide; the usual initdead election follows.
        return Decision(Role.STARTING, "nothing held")
    keep = (
        _all(held.vips, Verdict.KEEP),
        _all(held.guests, Verdict.KEEP),
        _all(held.services, Verdict.KEEP),
    )
    if peer is not None:
        # An active or releasing peer holds, whatever its flag says (an older peer sets none).
        holds = peer.holding or peer.role in {Role.ACTIVE, Role.RELEASING}
        if not holds:
            # STARTING -> ACTIVE: the peer is heard and holds nothing: we serve on, no gap.
            return Decision(Role.ACTIVE, f"kept: peer {peer.role.value} holds nothing", *keep)
        if peer.role is Role.STARTING and peer.we_win:
            # STARTING -> ACTIVE: both restarted holding; the election says this node keeps,
            # the peer (deciding the same from the same two claims) lets go.
            return Decision(Role.ACTIVE, "kept: both restarted holding, this node preferred", *keep)
        # STARTING -> STANDBY (or on with the election): the peer holds it; ours goes.
        role = Role.STANDBY if peer.role is Role.ACTIVE else Role.STARTING
        return Decision(
            role,
            f"released: peer {peer.role.value} holds the resources",
            _all(held.vips, Verdict.RELEASE),
            _all(held.guests, Verdict.DESTROY),
            _all(held.services, Verdict.DESTROY),
        )
    if not listened:
        return None
    let_go = (
        _all(held.vips, Verdict.RELEASE),
        _all(held.guests, Verdict.RELEASE),
        _all(held.services, Verdict.RELEASE),
    )
    if not lan_up:
        # STARTING: no carrier on the service LAN: the guard cannot see, and nobody reaches us.
        return Decision(Role.STARTING, "released: peer silent and the service LAN is down", *let_go)
    if answered is None:
        return None
    if answered:
        # STARTING: the peer is not heard, but someone serves the VIPs: heartbeats are cut.
        return Decision(
            Role.STARTING, "released: peer silent, another MAC answers for a VIP", *let_go
        )
    # STARTING -> ACTIVE: nobody else answers; this node is the one that serves.
    return Decision(Role.ACTIVE, "kept: peer silent, nobody else answers for the VIPs", *keep)


__all__ = ["Decision", "Held", "PeerAdvert", "Verdict", "decide"]
