"""Role state machine of one node. Pure: no I/O, no clock; callers pass `now`, get actions back.

The daemon folds every fact (a heartbeat, a probe result, an effect's completion, an operator
command, a timer tick) into `step()`, which returns the next `State` and the `Action`s to carry
out. Effects report back as events. Nothing here sleeps, sends or reads a clock, so every edge is
tested with plain numbers (tests/unit/test_machine.py).

Roles and who may enter them are in `TRANSITIONS`; `State.to()` refuses any other edge.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from typing import Final

from takeover import lease
from takeover.arbitration import should_hand_over, should_surrender
from takeover.lease import Op, Verdict


class Role(enum.Enum):
    """What this node is doing for the pair."""

    STARTING = "STARTING"  # initdead: listening before acting
    STANDBY = "STANDBY"  # holds nothing, ready to take over
    ACTIVE = "ACTIVE"  # holds (or is acquiring) the resources
    ARBITRATING = "ARBITRATING"  # peer lost: probing targets and the VIP before deciding
    FENCING = "FENCING"  # powering the peer off before taking over
    RELEASING = "RELEASING"  # giving the resources up, then waiting for release inhibitors
    ISOLATED = "ISOLATED"  # this node lost the LAN: holds nothing until its score recovers
    FAULT = "FAULT"  # an action failed: holds nothing, retries after a pause


# to: allowed from   [exabgp bgp/fsm.py, pyroute2 dhcp/fsm.py]
TRANSITIONS: Final[dict[Role, frozenset[Role]]] = {
    # Only the initial state; nothing returns to it (a restart is a new process).
    Role.STARTING: frozenset(),
    Role.STANDBY: frozenset(
        {Role.STARTING, Role.ARBITRATING, Role.FENCING, Role.RELEASING, Role.ISOLATED, Role.FAULT}
    ),
    Role.ACTIVE: frozenset({Role.STARTING, Role.STANDBY, Role.ARBITRATING, Role.FENCING}),
    Role.ARBITRATING: frozenset({Role.STARTING, Role.STANDBY}),
    Role.FENCING: frozenset({Role.ARBITRATING, Role.STANDBY}),
    Role.RELEASING: frozenset({Role.ACTIVE}),
    Role.ISOLATED: frozenset({Role.ARBITRATING, Role.RELEASING}),
    Role.FAULT: frozenset({Role.STANDBY, Role.ACTIVE, Role.RELEASING, Role.ISOLATED}),
}

# Roles in which a node holds nothing and may be elected active while both nodes see each other.
PASSIVE: Final[frozenset[Role]] = frozenset({Role.STARTING, Role.STANDBY})

# The score of a node whose service interface has no carrier: it sees nothing at all (the
# wire saturates at 255), so it loses every comparison at once, without dampening.
LAN_DOWN_SCORE: Final = 255

# The condition of the passive role a planned release entered without every inhibitor's say.
INHIBITORS_TIMED_OUT: Final = "release inhibitors timed out"

# Written into the STANDBY condition so `takeover status` and the lab can read it verbatim.
PEER_STILL_SERVING: Final = "heartbeat lost, peer still serving"


# The status condition while the peer is suspected (State.suspected).
PEER_SUSPECTED: Final = (
    "peer suspected: a heartbeat-only link lost carrier and nothing was heard since "
    "(lost after 2 intervals of silence, not deadtime)"
)


class IllegalTransition(RuntimeError):
    """An edge that TRANSITIONS does not allow: a bug in `step`, never an input error."""


@dataclass(frozen=True)
class MachineParams:
    """What the machine needs from the cluster file; the daemon maps the config onto it."""

    # This node's name; the lower name wins a tie of priorities.
    node: str
    # The peer's name, as given to Fence.
    peer: str
    # This node's priority, 0..255; higher wins an election.
    priority: int
    # Seconds between heartbeats; the daemon ticks the machine at least this often.
    interval: float
    # Seconds without a valid heartbeat on any link before the peer counts as lost.
    deadtime: float
    # Seconds to listen at start-up before acting.
    initdead: float
    # Hand back to a recovered higher-priority node; off by default: a recovered node stays standby.
    auto_failback: bool = False
    # Seconds a better peer must stay available before an automatic failback to it.
    failback_delay: float = 60.0
    # A node that lost its peer and sees more than this many targets down surrenders.
    max_unreachable: int = 0
    # The active hands over when it sees this many more targets down than the standby.
    switchover_margin: int = 1
    # Seconds the switchover condition must hold before the active hands over (dampening).
    switchover_hold: float = 0.0
    # Whether the peer can be powered off before a takeover.
    fencing: bool = False
    # What to do when fencing fails: "refuse" (stay standby) or "vip-guard" (re-probe, then decide).
    fencing_policy: str = "refuse"
    # Seconds a peer heard since our start may stay silent while its VIPs still answer (hung)
    # before it is fenced, with fencing only; 0: never, the guard alone decides.
    hung_after: float = 0.0
    # Probe the LAN for the VIPs before taking over after a peer loss.
    guard: bool = True
    # Seconds between re-arbitrations while the peer is lost but not taken over from.
    recheck: float = 1.0
    # Seconds ARBITRATING may wait for probe results before giving up for this round.
    arbitrate_timeout: float = 5.0
    # Seconds RELEASING waits for release inhibitors (mirrord's final flush) before going on.
    inhibit_timeout: float = 30.0
    # Seconds RELEASING waits for the release itself before entering FAULT, where the fencing
    # policy decides (takeover.deadlines derives it from the resources' limits); None: forever.
    release_timeout: float | None = None
    # Seconds FAULT pauses before retrying (release again, or back to STANDBY).
    fault_hold: float = 10.0
    # Seconds after a loop stall during which the peer is not declared lost; None = deadtime.
    stall_grace: float | None = None
    # Seconds before deadtime at which a silent peer's arbitration probes start; 0 = off.
    prearbitrate: float = 0.0
    # Seconds the service interfaces' carrier must stay back before it counts as up again: a
    # flapping port keeps this node at LAN_DOWN_SCORE, so it never wins the service back.
    carrier_hold: float = 0.0
    # The lease asked of the witness (seconds, witness clock); None: no witness configured.
    witness_lease: float | None = None
    # A node that lost its peer and cannot reach the witness stays put ("hold") instead of
    # arbitrating with the ping list.
    witness_hold: bool = False
    # Seconds before its lease surely ends at which an active that lost peer and witness
    # starts releasing (its release budget).
    witness_margin: float = 0.0

    def grace(self) -> float:
        """Return the stall grace in seconds."""
        return self.deadtime if self.stall_grace is None else self.stall_grace


@dataclass(frozen=True)
class PeerView:
    """The latest valid heartbeat from the peer, and when it arrived."""

    role: Role
    epoch: int
    priority: int
    score: int
    healthy: bool
    # The peer's operator asked it to become active.
    promote: bool
    # The peer's operator asked it to stay standby.
    hold_standby: bool
    boot_id: str
    heard_at: float
    # The peer may still hold resources: never acquire over it.
    holding: bool = False
    # The peer's heartbeats say the pair is in maintenance mode.
    maintenance: bool = False
    # The peer's heartbeats say one of its resources is blocked by a configuration error.
    blocked: bool = False


@dataclass(frozen=True)
class WitnessView:
    """The witness's latest answer, and until when this node surely holds the lease."""

    heard_at: float
    verdict: Verdict
    # Who holds the lease at the witness ("" if nobody), and for how long more (seconds).
    holder: str
    remaining: float
    # This node's clock: when the lease of the latest granted request surely ends
    # (takeover.lease.lease_end); None if the witness never granted it.
    lease_until: float | None = None
    # When the request that won that grant was sent (this node's clock).
    granted_sent: float | None = None


# ---------------------------------------------------------------------------------------------
# Events: facts that reach the machine.


@dataclass(frozen=True)
class Tick:
    """Time passed (the daemon ticks at least every interval and at `next_deadline`)."""


@dataclass(frozen=True)
class HeartbeatSeen:
    """A valid, authenticated, fresh heartbeat from the peer arrived on some link."""

    role: Role
    epoch: int
    priority: int
    score: int
    boot_id: str
    healthy: bool = True
    promote: bool = False
    hold_standby: bool = False
    # The peer may still hold resources (active, releasing, or stale after a restart).
    holding: bool = False
    # The peer says the pair is in maintenance mode (an older peer never says so).
    maintenance: bool = False
    # The peer says a resource is blocked there by a configuration error (an older peer never
    # says so).
    blocked: bool = False


@dataclass(frozen=True)
class ProbeResult:
    """The background (damped) ping score changed: number of targets considered down."""

    score: int


@dataclass(frozen=True)
class TargetsProbed:
    """A fresh probe round asked for by ARBITRATING finished: targets seen down right now."""

    down: int
    # The round it answers (ProbeTargets.round); None is taken as the current one.
    round: int | None = None


@dataclass(frozen=True)
class VipGuardResult:
    """The VIP guard probe finished: did another MAC answer for a VIP?"""

    answered: bool
    mac: str = ""
    # The round it answers (ProbeVipGuard.round); None is taken as the current one.
    round: int | None = None


@dataclass(frozen=True)
class FenceResult:
    """Fencing the peer finished; ok means the peer is confirmed off."""

    ok: bool
    detail: str = ""


@dataclass(frozen=True)
class AcquireDone:
    """Every resource is held."""


@dataclass(frozen=True)
class AcquireFailed:
    """A resource could not be acquired (the effect has rolled back what it could)."""

    detail: str


@dataclass(frozen=True)
class ReleaseDone:
    """Every resource is released."""


@dataclass(frozen=True)
class ReleaseFailed:
    """Some resource could not be released."""

    detail: str


@dataclass(frozen=True)
class InhibitorsReleased:
    """No release inhibitor is held any more."""


@dataclass(frozen=True)
class OperatorStandby:
    """`takeover standby`: hand over (if active) and stay standby until the peer took over.

    Until then the node neither wins elections nor takes over a lost peer; `promote` or the
    peer becoming active clears the hold.
    """

    force: bool = False


@dataclass(frozen=True)
class OperatorPromote:
    """`takeover promote`: become active (the active peer hands over)."""


@dataclass(frozen=True)
class HealthChanged:
    """The local service health verdict changed."""

    ok: bool


@dataclass(frozen=True)
class LinkState:
    """Carrier of the service (VIP) interfaces: up only if every one of them has carrier."""

    up: bool


@dataclass(frozen=True)
class HeartbeatCarrier:
    """Carrier of the heartbeat-only interfaces (a direct cable, no VIP on it): up only if
    every one of them has carrier. A loss makes a silent peer suspected (State.suspected)."""

    up: bool
    # The interfaces without carrier, for the log ("" when up).
    link: str = ""


@dataclass(frozen=True)
class LoopStalled:
    """The daemon's loop ran late by `lag` seconds: timers are stale, heartbeats may be queued."""

    lag: float


@dataclass(frozen=True)
class StartupDecided:
    """The start-up decision (takeover.startup) is carried out: go on as `role`.

    `clean`: nothing is held any more (everything found was released or destroyed).
    """

    role: Role
    reason: str
    clean: bool


@dataclass(frozen=True)
class MaintenanceSet:
    """`takeover maintenance on|off`: for the whole pair (carried in heartbeats)."""

    on: bool


@dataclass(frozen=True)
class WitnessAnswer:
    """The witness answered a request this node sent at `sent_at` (its own clock)."""

    sent_at: float
    verdict: Verdict
    holder: str
    # Seconds the holder's lease still runs at the witness (QUIET: quiet seconds left).
    remaining: float
    # The lease the request asked for, seconds.
    lease: float
    # The request asked for the lease (renew, claim): only then does GRANTED mean the lease
    # runs from that request's arrival; to a query it only says who holds it.
    asked: bool = True


@dataclass(frozen=True)
class ResourceBlocked:
    """A resource's agent said its configuration is wrong (OCF_ERR_CONFIGURED), or the
    operator cleared it (`takeover cleanup`): `resource` names the first one blocked here, or
    is "" when none is."""

    resource: str


@dataclass(frozen=True)
class EpochStored:
    """The daemon has stored `epoch` durably (or failed to and logged it: serving comes first)."""

    epoch: int


Event = (
    Tick
    | HeartbeatSeen
    | ProbeResult
    | TargetsProbed
    | VipGuardResult
    | FenceResult
    | AcquireDone
    | AcquireFailed
    | ReleaseDone
    | ReleaseFailed
    | InhibitorsReleased
    | OperatorStandby
    | OperatorPromote
    | HealthChanged
    | LinkState
    | HeartbeatCarrier
    | LoopStalled
    | StartupDecided
    | MaintenanceSet
    | WitnessAnswer
    | ResourceBlocked
    | EpochStored
)


# ---------------------------------------------------------------------------------------------
# Actions: what the daemon must do. Each executor is idempotent and reports back as an event.


@dataclass(frozen=True)
class Notify:
    """Tell hooks, subscribers and the status file about a transition."""

    old: Role
    new: Role
    reason: str


@dataclass(frozen=True)
class AcquireResources:
    """Acquire every resource in order (addresses + announcements, then VMs)."""

    reason: str


@dataclass(frozen=True)
class ReleaseResources:
    """Release every resource in reverse order; idempotent when nothing is held."""

    reason: str


@dataclass(frozen=True)
class Announce:
    """Announce the VIPs again (after a conflict was resolved in our favour)."""


@dataclass(frozen=True)
class ProbeTargets:
    """Run one fresh probe round of the ping list now; report TargetsProbed with `round`."""

    round: int = 0


@dataclass(frozen=True)
class ProbeVipGuard:
    """Probe the LAN for every VIP; report VipGuardResult with `round`."""

    round: int = 0


@dataclass(frozen=True)
class Fence:
    """Power the peer off and confirm; report FenceResult."""

    peer: str


@dataclass(frozen=True)
class WaitInhibitors:
    """Report InhibitorsReleased once no release inhibitor is held (the machine times out)."""


@dataclass(frozen=True)
class PersistEpoch:
    """Store the highest epoch known before acting on it (it must survive restarts)."""

    epoch: int


@dataclass(frozen=True)
class Refused:
    """An operator command was refused; tell the caller why."""

    command: str
    reason: str


@dataclass(frozen=True)
class PersistMaintenance:
    """Store whether the pair is in maintenance mode (a restart must not act either)."""

    on: bool


Action = (
    Notify
    | AcquireResources
    | ReleaseResources
    | Announce
    | ProbeTargets
    | ProbeVipGuard
    | Fence
    | WaitInhibitors
    | PersistEpoch
    | Refused
    | PersistMaintenance
)


# ---------------------------------------------------------------------------------------------
# State


@dataclass(frozen=True)
class State:
    """Everything the machine knows; immutable, replaced by every step."""

    params: MachineParams
    role: Role
    # When the current role was entered.
    since: float
    reason: str
    # When this process started (initdead runs from here).
    started: float
    # Epoch of this node's latest takeover (advertised; persisted by the daemon).
    epoch: int
    # Highest epoch seen from anyone: a new takeover numbers itself above it.
    seen_epoch: int = 0
    # Highest epoch the daemon has stored durably (EpochStored); see advertisable().
    stored_epoch: int = 0
    # Own damped ping score (see own_score() for the one that decides).
    score: int = 0
    healthy: bool = True
    # Every service interface has carrier, and has had it for carrier_hold (what counts).
    lan_up: bool = True
    # The raw carrier as last reported, and when it last came back (None: never lost). Peer
    # state heard before that moment is stale: it may predate everything the peer did while
    # this node could not hear it.
    carrier: bool = True
    carrier_back: float | None = None
    peer: PeerView | None = None
    # When a heartbeat-only interface last lost carrier; None while all have it (see suspected).
    hb_carrier_lost: float | None = None
    # When the daemon last reported a loop stall.
    last_stall: float | None = None
    # Operator flags, carried in our heartbeats.
    promote: bool = False
    hold_standby: bool = False
    # Human-readable condition shown by `takeover status` (why we are where we are).
    condition: str = ""
    # True once a release finished and nothing was acquired since: we hold nothing.
    clean: bool = False
    # ACTIVE: every resource is held.
    acquired: bool = False
    # ACTIVE: we won a both-active conflict and re-announce once the peer let go.
    conflict: bool = False
    # ARBITRATING/FENCING: results collected for this round.
    fresh_down: int | None = None
    guard_answered: bool | None = None
    # RELEASING: where to go afterwards, whether to skip inhibitors, progress.
    release_to: Role = Role.STANDBY
    urgent: bool = False
    released: bool = False
    # FENCING: the fence failed and policy vip-guard awaits a fresh VIP probe.
    fence_failed: bool = False
    # Number of the latest probe round; results carry it back.
    probe_round: int = 0
    # STANDBY with the peer lost: when to probe again, and since when a quiet round runs.
    recheck_at: float | None = None
    probing_since: float | None = None
    # ACTIVE: since when a handover (score) or failback (priority) condition has held.
    handover_since: float | None = None
    failback_since: float | None = None
    # STARTING: resources were found held; the daemon decides what to keep (StartupDecided).
    deciding: bool = False
    # Maintenance mode (the whole pair): nothing is acquired, released or failed over.
    maintenance: bool = False
    # The witness's latest answer; None without a witness or before its first answer.
    witness: WitnessView | None = None
    # The resource blocked here by a configuration error ("" none), carried in heartbeats.
    blocked: str = ""

    def to(self, role: Role, now: float, reason: str) -> State:
        """Return the state after the edge self.role -> role; raise if TRANSITIONS lacks it."""
        if self.role not in TRANSITIONS[role]:
            raise IllegalTransition(f"{self.role.value} -> {role.value} ({reason})")
        return replace(
            self,
            role=role,
            since=now,
            reason=reason,
            condition="",
            fresh_down=None,
            guard_answered=None,
            recheck_at=None,
            probing_since=None,
            handover_since=None,
            failback_since=None,
            conflict=False,
            released=False,
            fence_failed=False,
        )

    def suspected(self) -> bool:
        """Return whether the peer is suspected: a heartbeat-only interface lost carrier and
        nothing was heard from the peer since (a peer that lost power cuts the direct cable).

        The first heartbeat after the loss ends it (the cable alone is cut), and so does the
        carrier coming back: a cable left cut does not make the pair any jumpier.
        """
        lost = self.hb_carrier_lost
        return lost is not None and self.peer is not None and self.peer.heard_at <= lost

    def dead_after(self) -> float:
        """Return the silence after which the peer counts as lost: deadtime, or while it is
        suspected min(deadtime, 2 intervals) (one heartbeat lost on the remaining link)."""
        p = self.params
        return min(p.deadtime, 2 * p.interval) if self.suspected() else p.deadtime

    def peer_alive(self, now: float) -> bool:
        """Return whether a valid heartbeat arrived within dead_after()."""
        return self.peer is not None and now - self.peer.heard_at <= self.dead_after()

    def peer_lost(self, now: float) -> bool:
        """Return whether the peer counts as lost.

        Lost means silent for deadtime AND at least a stall grace since our own loop last
        stalled: after a stall, heartbeats queued in the sockets must be drained before a
        stale timer may declare the peer dead.
        """
        if self.peer_alive(now):
            return False
        if self.last_stall is not None and now - self.last_stall < self.params.grace():
            return False
        # A peer never heard counts as lost only once initdead has passed.
        return self.peer is not None or now - self.started >= self.params.initdead


def own_score(s: State) -> int:
    """Return the score this node decides and advertises with: LAN_DOWN_SCORE without carrier."""
    return s.score if s.lan_up else LAN_DOWN_SCORE


def initial_state(
    params: MachineParams,
    now: float,
    epoch: int = 0,
    healthy: bool = True,
    clean: bool = False,
    *,
    deciding: bool = False,
    maintenance: bool = False,
) -> State:
    """Return the STARTING state of a freshly started daemon.

    `epoch` is the persisted one; `clean` says start-up reconciliation found nothing held;
    `deciding`: something was found held and the daemon decides about it before any election.
    `maintenance`: the persisted maintenance mode; then nothing is decided until it is off.
    """
    return State(
        params=params,
        role=Role.STARTING,
        since=now,
        reason="start",
        started=now,
        epoch=epoch,
        stored_epoch=epoch,
        healthy=healthy,
        clean=clean,
        deciding=deciding,
        maintenance=maintenance,
        condition=(
            MAINTENANCE
            if maintenance
            else "deciding what to keep of what is held"
            if deciding
            else ""
        ),
    )


@dataclass(frozen=True)
class Candidate:
    """One node's claim in an election."""

    name: str
    priority: int
    score: int
    healthy: bool
    promote: bool
    hold_standby: bool


def prefer(me: Candidate, other: Candidate, margin: int) -> bool:
    """Return whether `me` should be active rather than `other` (antisymmetric, deterministic).

    Order: operator promote, operator standby, health, ping score (only a difference of at
    least `margin` counts, so damped jitter does not decide), priority, then the lower name.
    """
    if me.promote != other.promote:
        return me.promote
    if me.hold_standby != other.hold_standby:
        return other.hold_standby
    if me.healthy != other.healthy:
        return me.healthy
    if abs(me.score - other.score) >= max(1, margin):
        return me.score < other.score
    if me.priority != other.priority:
        return me.priority > other.priority
    return me.name < other.name


def me_candidate(s: State) -> Candidate:
    """Return this node's election claim."""
    p = s.params
    return Candidate(p.node, p.priority, own_score(s), s.healthy, s.promote, s.hold_standby)


def peer_candidate(s: State) -> Candidate:
    """Return the peer's election claim from its last heartbeat."""
    assert s.peer is not None
    v = s.peer
    return Candidate(s.params.peer, v.priority, v.score, v.healthy, v.promote, v.hold_standby)


# ---------------------------------------------------------------------------------------------
# step


def step(s: State, ev: Event, now: float) -> tuple[State, list[Action]]:
    """Fold one event into the state; return the new state and the actions to carry out."""
    before = s.seen_epoch
    was = s.maintenance
    s = _absorb(s, ev, now)
    if isinstance(ev, MaintenanceSet) or s.maintenance or was:
        new, actions = _maintenance(s, ev, now, was)
    else:
        new, actions = _HANDLERS[s.role](s, ev, now)
    if new.maintenance != was:
        actions.append(PersistMaintenance(new.maintenance))
    if new.role is not s.role:
        actions.insert(0, Notify(s.role, new.role, new.reason))
    if new.seen_epoch > before and new.seen_epoch > new.epoch:
        # Remember the highest epoch heard, so a takeover after our restart still numbers
        # itself above the peer's (a restarted node loads it as its own).
        actions.append(PersistEpoch(new.seen_epoch))
    return new, actions


def _absorb(s: State, ev: Event, now: float) -> State:
    """Record the facts an event carries, whatever the role."""
    if isinstance(ev, HeartbeatSeen):
        said = s.peer.maintenance if s.peer is not None else None
        if ev.maintenance != said and (said is not None or ev.maintenance):
            # The pair's mode follows the latest change either node announces; a peer first
            # heard in maintenance brings this node in (a mode left unseen is left again).
            s = replace(s, maintenance=ev.maintenance)
        peer = PeerView(
            role=ev.role,
            epoch=ev.epoch,
            priority=ev.priority,
            score=ev.score,
            healthy=ev.healthy,
            promote=ev.promote,
            hold_standby=ev.hold_standby,
            boot_id=ev.boot_id,
            heard_at=now,
            holding=ev.holding,
            maintenance=ev.maintenance,
            blocked=ev.blocked,
        )
        s = replace(s, peer=peer, seen_epoch=max(s.seen_epoch, ev.epoch))
        # Our planned switchover is complete once the peer is active: back to a normal standby.
        if ev.role is Role.ACTIVE and s.hold_standby and s.role is not Role.ACTIVE:
            s = replace(s, hold_standby=False)
    elif isinstance(ev, ProbeResult):
        s = replace(s, score=ev.score)
    elif isinstance(ev, HealthChanged):
        s = replace(s, healthy=ev.ok)
    elif isinstance(ev, LinkState) and not ev.up:
        # Carrier loss counts at once: a dead LAN port needs no confirmation.
        s = replace(s, lan_up=False, carrier=False)
    elif isinstance(ev, LinkState) and not s.carrier:
        s = replace(s, carrier=True, carrier_back=now)
    elif isinstance(ev, HeartbeatCarrier):
        # The first loss counts (an older loss is what the peer's silence is measured from).
        lost = None if ev.up else (s.hb_carrier_lost if s.hb_carrier_lost is not None else now)
        s = replace(s, hb_carrier_lost=lost)
    elif isinstance(ev, LoopStalled):
        s = replace(s, last_stall=now)
    elif isinstance(ev, ReleaseDone):
        s = replace(s, clean=True)
    elif isinstance(ev, WitnessAnswer):
        s = replace(s, witness=_witness_view(s, ev, now))
    elif isinstance(ev, ResourceBlocked):
        s = replace(s, blocked=ev.resource)
    elif isinstance(ev, EpochStored):
        s = replace(s, stored_epoch=max(s.stored_epoch, ev.epoch))
    if s.carrier and not s.lan_up and _carrier_settled(s, now):
        s = replace(s, lan_up=True)
    return s


def _carrier_settled(s: State, now: float) -> bool:
    """Return whether the carrier has been back for carrier_hold (hysteresis against flapping)."""
    return s.carrier_back is not None and now - s.carrier_back >= s.params.carrier_hold


def _peer_fresh(s: State) -> bool:
    """Return whether the peer's view was heard after this node's carrier last came back.

    A node whose links were down heard nothing meanwhile: the peer may have taken over in
    the dark. Its last heartbeat from before the loss must not elect this node; a fresh one
    (or a full deadtime of silence, then the normal arbitration) decides instead.
    """
    return s.peer is not None and (s.carrier_back is None or s.peer.heard_at >= s.carrier_back)


# ---------------------------------------------------------------------------------------------
# Configuration errors (OCF_ERR_CONFIGURED): fatal for the whole pair, as in Pacemaker

# How a condition caused by a configuration error starts (status and the tests look for it).
BLOCKED: Final = "blocked: configuration error"


def blocked_by_config(s: State, now: float) -> str | None:
    """Return why this node may not take over for a configuration error; None if none blocks.

    A resource blocked here would fail this node's acquire the same way again. One blocked on
    the peer (its heartbeat says so) would fail here too: both nodes read the same cluster
    file, so the peer's FAULT or failover request is no reason to take over. A peer that is
    lost is another reason: then the usual arbitration decides.
    """
    if s.blocked:
        return (
            f"{BLOCKED} (resource {s.blocked}) — fix and run "
            f"`takeover cleanup {s.blocked}` to clear"
        )
    if s.peer is not None and s.peer.blocked and s.peer_alive(now):
        return (
            f"{BLOCKED} (a resource on {s.params.peer}, its status names it) — fix and run "
            f"`takeover cleanup` on {s.params.peer} to clear"
        )
    return None


# ---------------------------------------------------------------------------------------------
# The witness (takeover.lease has the rules and the argument)

# Conditions of a node that lost its peer and waits for the witness.
WITNESS_UNREACHABLE_HOLD: Final = "witness unreachable: holding (on_unreachable = hold)"
WITNESS_LOST_TOGETHER: Final = "peer and witness lost together: holding"


def _witness_view(s: State, ev: WitnessAnswer, now: float) -> WitnessView:
    """Fold an answer: a grant to us extends what we surely hold, counted from its sending."""
    old = s.witness
    until = old.lease_until if old is not None else None
    sent = old.granted_sent if old is not None else None
    if ev.verdict is Verdict.GRANTED and ev.holder == s.params.node and ev.asked:
        end = lease.lease_end(ev.sent_at, ev.lease)
        until = end if until is None else max(until, end)
        sent = ev.sent_at if sent is None else max(sent, ev.sent_at)
    return WitnessView(now, ev.verdict, ev.holder, ev.remaining, until, sent)


def witness_reachable(s: State, now: float) -> bool:
    """Return whether the witness answered within deadtime."""
    w = s.witness
    return w is not None and now - w.heard_at <= s.params.deadtime


def witness_granted(s: State, now: float) -> bool:
    """Return whether the witness's latest answer grants us a lease we surely still hold."""
    w = s.witness
    return (
        w is not None
        and w.verdict is Verdict.GRANTED
        and w.lease_until is not None
        and now < w.lease_until
    )


def witness_op(s: State, now: float) -> Op:
    """Return what this node asks the witness now.

    The active renews, and so does a node still releasing or faulted while it may hold
    something; a node that lost its peer, or is taking over, claims; a passive node holding
    nothing that the witness still names as holder releases; everyone else only asks.
    """
    if s.role in {Role.ACTIVE, Role.RELEASING}:
        return Op.RENEW
    if s.role is Role.FAULT and not s.clean:
        # It may still hold what it failed to release: nobody is granted the lease over it.
        return Op.RENEW
    if s.role in {Role.ARBITRATING, Role.FENCING}:
        return Op.CLAIM
    lost = s.role in PASSIVE and not s.deciding and s.peer_lost(now)
    if lost and not s.hold_standby:
        return Op.CLAIM
    w = s.witness
    if s.clean and w is not None and w.holder == s.params.node:
        return Op.RELEASE
    return Op.QUERY


def _witness_gate(s: State, now: float) -> str | None:
    """Return why a node that lost its peer may not take over yet; None when it may.

    With a witness, only its grant lets a node go on to arbitrate (the ping list, the VIP
    guard and fencing still decide after it). A witness that cannot be reached is replaced
    by the ping list, unless the node was told to hold, or lost the witness together with
    the peer: then it is likely the isolated one, and the other node may hold the lease.
    """
    p, w = s.params, s.witness
    if p.witness_lease is None:
        return None
    # Only a grant asked for after the peer went silent: one left from an earlier term
    # (released since, the answer lost) says nothing of who holds the lease now.
    sent = w.granted_sent if w is not None else None
    if witness_granted(s, now) and sent is not None and (s.peer is None or sent > s.peer.heard_at):
        return None
    if witness_reachable(s, now):
        assert w is not None
        if w.verdict is Verdict.HELD:
            return f"witness: lease held by {w.holder}"
        if w.verdict is Verdict.QUIET:
            return "witness restarted: grants nothing for one lease"
        if w.verdict is Verdict.TOO_LONG:
            return "witness refuses the lease: longer than its max_lease"
        return "waiting for the witness's grant"
    if p.witness_hold:
        return WITNESS_UNREACHABLE_HOLD
    if w is not None and s.peer is not None and w.heard_at >= s.peer.heard_at - p.deadtime:
        return WITNESS_LOST_TOGETHER
    return None


def _lease_lapsing(s: State, now: float) -> str | None:
    """Return why an active that does not hear its peer must let go now; None to keep.

    It must hold nothing once its lease may have expired at the witness, where the standby
    is then granted it: it starts releasing `witness_margin` before the lease surely ends.
    That is owed for a lease still running after the peer was last heard; one that ran out
    while the peer was heard (the witness was lost first) binds nothing, and the pair
    arbitrates as without a witness. The witness naming the peer as holder: let go at once.
    """
    p, w = s.params, s.witness
    if p.witness_lease is None or w is None:
        return None
    if w.verdict is Verdict.HELD and w.holder != p.node and witness_reachable(s, now):
        return f"witness gave the lease to {w.holder}"
    if w.lease_until is None:
        return None
    due = w.lease_until - p.witness_margin
    last = s.peer.heard_at if s.peer is not None else float("-inf")
    if now >= due > last:
        return "peer and witness lost: lease ending"
    return None


def _take_over(s: State, now: float, reason: str) -> tuple[State, list[Action]]:
    """Enter ACTIVE with a new epoch: persist it, then acquire."""
    epoch = max(s.epoch, s.seen_epoch) + 1
    new = replace(
        s.to(Role.ACTIVE, now, reason), epoch=epoch, clean=False, acquired=False, promote=False
    )
    return new, [PersistEpoch(epoch), AcquireResources(reason)]


def _go_passive(s: State, role: Role, now: float, reason: str) -> tuple[State, list[Action]]:
    """Enter STANDBY or ISOLATED, releasing whatever may be left (a stale VIP at start-up)."""
    new = s.to(role, now, reason)
    return new, ([] if s.clean else [ReleaseResources(reason)])


def _start_releasing(
    s: State, now: float, reason: str, to: Role = Role.STANDBY, urgent: bool = False
) -> tuple[State, list[Action]]:
    """Enter RELEASING: give the resources up first, so nothing is written during the flush."""
    new = replace(s.to(Role.RELEASING, now, reason), release_to=to, urgent=urgent, acquired=False)
    return new, [ReleaseResources(reason)]


def _arbitrate(s: State, now: float, reason: str) -> tuple[State, list[Action]]:
    """Enter ARBITRATING: a fresh probe round, and the VIP guard in parallel."""
    return _probe_round(s.to(Role.ARBITRATING, now, reason))


def _probe_round(s: State, guard: bool = True) -> tuple[State, list[Action]]:
    """Start a new numbered probe round (targets, and the VIP guard if enabled)."""
    n = s.probe_round + 1
    s = replace(s, probe_round=n, fresh_down=None, guard_answered=None)
    actions: list[Action] = [ProbeTargets(n)]
    if s.params.guard and guard:
        actions.append(ProbeVipGuard(n))
    return s, actions


def _take_result(s: State, ev: Event) -> State:
    """Fold a probe result of the current round; results of abandoned rounds are ignored."""
    if isinstance(ev, TargetsProbed) and ev.round in (None, s.probe_round):
        return replace(s, fresh_down=ev.down)
    if isinstance(ev, VipGuardResult) and ev.round in (None, s.probe_round):
        return replace(s, guard_answered=ev.answered)
    return s


def _refuse(s: State, ev: Event) -> tuple[State, list[Action]]:
    """Refuse an operator command that this role cannot honour."""
    name = "standby" if isinstance(ev, OperatorStandby) else "promote"
    return s, [Refused(name, f"not possible while {s.role.value}")]


def _on_starting(s: State, ev: Event, now: float) -> tuple[State, list[Action]]:
    """STARTING: listen for initdead, then decide from what was heard."""
    if isinstance(ev, OperatorStandby | OperatorPromote):
        return _refuse(s, ev)
    if s.deciding:
        return _on_deciding(s, ev, now)
    if isinstance(ev, HeartbeatSeen) and ev.role is Role.ACTIVE:
        # STARTING -> STANDBY: the peer already serves; no need to wait out initdead.
        return _go_passive(s, Role.STANDBY, now, "peer is active")
    if now - s.started < s.params.initdead:
        return s, []
    if s.peer_alive(now) and not _peer_fresh(s):
        # Links came back moments ago: wait for a heartbeat the peer sent since.
        return s, []
    if s.peer_alive(now):
        assert s.peer is not None
        won = s.peer.role in PASSIVE and prefer(me_candidate(s), peer_candidate(s), _margin(s))
        unable = s.peer.role in {Role.ISOLATED, Role.FAULT}
        blocked = blocked_by_config(s, now)
        if (won or unable) and blocked is not None:
            # STARTING -> STANDBY: the same configuration error would fail our acquire.
            new, actions = _go_passive(s, Role.STANDBY, now, "start-up: configuration error")
            return replace(new, condition=blocked), actions
        if (won or unable) and s.peer.holding:
            # The peer still holds something (stale after its restart): let it release first.
            return replace(s, condition="waiting for the peer to release"), []
        if won:
            # STARTING -> ACTIVE: both idle at start-up and this node wins the election.
            return _take_over(s, now, "start-up election won")
        if unable:
            # STARTING -> ACTIVE: the peer is up but cannot serve.
            return _take_over(s, now, f"peer is {s.peer.role.value}")
        # STARTING -> STANDBY: the peer serves, is busy, or won the election.
        return _go_passive(s, Role.STANDBY, now, "start-up election lost")
    if s.peer_lost(now):
        gate = _witness_gate(s, now)
        if gate is not None:
            # STARTING -> STANDBY: nothing heard, and the witness grants us nothing (yet).
            new, actions = _go_passive(s, Role.STANDBY, now, "no peer heard during initdead")
            return replace(new, condition=gate), actions
        # STARTING -> ARBITRATING: nothing heard during initdead.
        return _arbitrate(s, now, "no peer heard during initdead")
    return s, []


def _on_deciding(s: State, ev: Event, now: float) -> tuple[State, list[Action]]:
    """STARTING with resources found held: nothing happens until the daemon has decided."""
    if not isinstance(ev, StartupDecided):
        return s, []
    s = replace(s, deciding=False, clean=ev.clean, condition="")
    if ev.role is Role.ACTIVE:
        # STARTING -> ACTIVE: what was held is kept (acquire adopts it and announces).
        return _take_over(s, now, ev.reason)
    if ev.role is Role.STANDBY:
        # STARTING -> STANDBY: the peer serves; whatever could not be let go is released.
        return _go_passive(s, Role.STANDBY, now, ev.reason)
    # STARTING: on with the usual election; what could not be let go is released by it.
    return s, []


def _margin(s: State) -> int:
    return s.params.switchover_margin


def _on_standby(s: State, ev: Event, now: float) -> tuple[State, list[Action]]:
    """STANDBY: take over when elected, when the peer cannot serve, or when the peer is lost."""
    if isinstance(ev, OperatorStandby):
        return replace(s, hold_standby=True, promote=False, condition="operator standby"), []
    if isinstance(ev, OperatorPromote):
        s = replace(s, promote=True, hold_standby=False, condition="operator promote")
    if isinstance(ev, ReleaseFailed):
        # STANDBY -> FAULT: a stale resource could not be removed; we might still hold it.
        new = replace(s.to(Role.FAULT, now, f"release failed: {ev.detail}"), clean=False)
        return new, [ReleaseResources("fault")]
    if s.probing_since is not None:
        s = _take_result(s, ev)
    if s.peer_alive(now):
        assert s.peer is not None
        peer = s.peer
        s = replace(s, recheck_at=None)
        # A peer stuck in FAULT still holding what it failed to release: fencing decides.
        faulted = peer.role is Role.FAULT and peer.holding and _peer_fresh(s)
        if faulted and s.condition in _BACKOFF_CONDITIONS:
            # Fenced once this fault already, in vain: wait for the peer's own retries.
            return s, []
        if s.condition in _BACKOFF_CONDITIONS or s.condition.startswith(BLOCKED):
            s = replace(s, condition="")
        blocked = blocked_by_config(s, now)
        if blocked is not None:
            # A configuration error here or on the peer: no fencing, no election, no takeover
            # (it would fail the same way) until `takeover cleanup` clears it.
            return replace(s, condition=blocked), []
        if faulted and s.params.fencing and not s.hold_standby:
            # STANDBY -> FENCING: the peer's release is past its budget (a hung VM may still
            # run there); only powered off may its resources be taken over.
            return s.to(Role.FENCING, now, "peer faulted holding resources"), [Fence(s.params.peer)]
        # Whatever the peer is, while it may hold a VIP acquiring would make two owners; and
        # a view of the peer from before our links came back says nothing of it now.
        if not peer.holding and _peer_fresh(s):
            if (
                not s.hold_standby
                and peer.role in PASSIVE
                and prefer(me_candidate(s), peer_candidate(s), _margin(s))
            ):
                # STANDBY -> ACTIVE: both idle and this node wins the election. A node held in
                # standby (operator, or stopping) is never elected, even when the peer is held
                # too: then nobody serves, which is what was asked.
                return _take_over(s, now, "operator promote" if s.promote else "elected")
            if peer.role in {Role.ISOLATED, Role.FAULT} and not s.hold_standby:
                # STANDBY -> ACTIVE: the peer is up but holds nothing and cannot serve.
                return _take_over(s, now, f"peer is {peer.role.value}")
        return _pre_probe(s, now)
    if not s.peer_lost(now):
        return s, []
    if s.hold_standby:
        # The operator said standby: even a lost peer does not bring us back (promote does).
        return replace(s, condition="operator standby: peer lost, not taking over"), []
    if s.blocked:
        # A resource blocked here fails our acquire before anything is taken: no takeover.
        return replace(s, condition=blocked_by_config(s, now) or BLOCKED), []
    gate = _witness_gate(s, now)
    if gate is not None:
        # The witness has not granted us the lease: no probe, no guard, no takeover yet.
        # Probes started before are dropped: once granted, a fresh round decides.
        s = replace(s, recheck_at=None, probing_since=None, fresh_down=None, guard_answered=None)
        return replace(s, condition=gate), []
    if s.recheck_at is None:
        if s.probing_since is not None and not s.guard_answered:
            # STANDBY -> ARBITRATING: the peer is lost, and the probes started while it was
            # already silent are in (or in flight): decide on them, do not probe again. A
            # pre-probe that saw the VIP answered is not used: the peer may have died right
            # after answering it, and backing off on it would cost a whole re-check.
            new = s.to(Role.ARBITRATING, now, "peer lost")
            new = replace(new, fresh_down=s.fresh_down, guard_answered=s.guard_answered)
            return _on_arbitrating(new, Tick(), now)
        # STANDBY -> ARBITRATING: no valid heartbeat on any link for deadtime.
        return _arbitrate(s, now, "peer lost")
    return _recheck(s, ev, now)


def _pre_probe(s: State, now: float) -> tuple[State, list[Action]]:
    """Start the arbitration probes a little before deadtime while the peer is silent.

    The VIP guard has to wait out its window when nobody answers; started `prearbitrate`
    seconds early, its verdict is ready when the peer is declared lost. A probe taken while
    the peer was already silent says no less than one taken a moment later; a heartbeat
    arriving meanwhile discards it (its results, numbered, are then ignored).
    """
    assert s.peer is not None
    heard_at = s.peer.heard_at
    lead = s.params.prearbitrate
    if s.probing_since is not None and s.probing_since < heard_at:
        # A heartbeat arrived after these probes started: they are moot.
        s = replace(s, probing_since=None, fresh_down=None, guard_answered=None)
    if s.probing_since is not None and s.suspected() and s.guard_answered:
        # Suspected, and a frame still in flight from the peer answered the round taken at
        # the carrier loss: probe again at once, back to back until the peer is lost or
        # heard, so the verdict at the shortened deadline is at most one guard window old.
        s, actions = _probe_round(s)
        return replace(s, probing_since=now), actions
    if s.probing_since is not None:
        return s, []
    if s.hold_standby:
        return s, []
    # Suspected (the direct cable died with no heartbeat since): the probes start at once,
    # so their verdict is in when the shortened deadline passes.
    if not s.suspected() and (lead <= 0 or now - heard_at < s.params.deadtime - lead):
        return s, []
    if _witness_gate(s, now) is not None:
        # The witness will decide first; the guard is asked only once it granted the lease.
        return s, []
    s, actions = _probe_round(s)
    return replace(s, probing_since=now), actions


_FENCE_REFUSED: Final = "fencing failed; not taking over"
_TIMED_OUT: Final = "arbitration timed out"
# Conditions under which STANDBY backed off from a takeover and re-checks quietly.
_BACKOFF_CONDITIONS: Final = frozenset({PEER_STILL_SERVING, _FENCE_REFUSED, _TIMED_OUT})


def _back_off(s: State, now: float, reason: str, condition: str) -> tuple[State, list[Action]]:
    """Enter STANDBY without taking over; re-check quietly, soon at first (see _recheck_delay)."""
    new, actions = _go_passive(s, Role.STANDBY, now, reason)
    return replace(new, condition=condition, recheck_at=now + s.params.interval), actions


def _recheck_delay(s: State, now: float) -> float:
    """Return the pause before the next quiet re-check: one interval, growing to `recheck`.

    A crashed host's kernel can answer ARP for its VIP a moment longer than its daemon lives,
    so the first looks come fast; a partition that lasts gets probed ever more rarely.
    """
    return min(s.params.recheck, max(s.params.interval, (now - s.since) / 2))


def _recheck(s: State, ev: Event, now: float) -> tuple[State, list[Action]]:
    """Re-run the arbitration probes from STANDBY without announcing a transition each time.

    A peer that is heard nowhere but still answers for the VIP may stay so for hours; hooks
    and subscribers must not see STANDBY -> ARBITRATING -> STANDBY every `recheck` seconds.
    Only a round that would change something enters ARBITRATING, with its results in hand.
    """
    assert s.recheck_at is not None
    started = s.probing_since
    if started is None:
        if now < s.recheck_at:
            return s, []
        s, actions = _probe_round(s)
        return replace(s, probing_since=now), actions
    complete = s.fresh_down is not None and (s.guard_answered is not None or not s.params.guard)
    if not complete:
        if now - started >= s.params.arbitrate_timeout:
            return replace(s, probing_since=None, recheck_at=now + _recheck_delay(s, now)), []
        return s, []
    down = max(s.fresh_down or 0, own_score(s))
    hung = _peer_hung(s, now) is not None
    if s.guard_answered and not hung and not should_surrender(down, s.params.max_unreachable):
        # Nothing changed: the VIP still answers. Stay, and look again later.
        return replace(s, probing_since=None, recheck_at=now + _recheck_delay(s, now)), []
    # STANDBY -> ARBITRATING: this round calls for a decision; make it with these results.
    new = s.to(Role.ARBITRATING, now, "peer lost, re-check")
    new = replace(new, fresh_down=s.fresh_down, guard_answered=s.guard_answered)
    return _on_arbitrating(new, Tick(), now)


def _peer_hung(s: State, now: float) -> float | None:
    """Return how long the peer has been silent if that makes it hung, else None.

    Hung: heard since our start, silent on every link for `hung_after` while its VIPs still
    answer (the caller's guard result), and fencing configured. A node that never heard its
    peer (it started while the heartbeats were cut) never calls it hung: two nodes that cannot
    hear each other then fence at most once, never in turn at every restart.
    """
    p = s.params
    if not p.fencing or p.hung_after <= 0 or s.peer is None or s.hold_standby:
        return None
    silent = now - s.peer.heard_at
    return silent if silent >= p.hung_after else None


def _on_arbitrating(s: State, ev: Event, now: float) -> tuple[State, list[Action]]:
    """ARBITRATING: surrender if we are the broken one, back off if the VIP answers, else go on."""
    if isinstance(ev, OperatorStandby | OperatorPromote):
        return _refuse(s, ev)
    if s.peer_alive(now):
        # ARBITRATING -> STANDBY: the peer spoke again; the loss was transient.
        return _go_passive(s, Role.STANDBY, now, "peer heard again")
    s = _take_result(s, ev)
    down = s.fresh_down
    if down is not None and should_surrender(max(down, own_score(s)), s.params.max_unreachable):
        # ARBITRATING -> ISOLATED: we see too many targets down: we are the broken one.
        new, actions = _go_passive(s, Role.ISOLATED, now, f"{max(down, own_score(s))} targets down")
        return replace(new, condition="surrendered: ping score too bad"), actions
    if s.guard_answered:
        silent = _peer_hung(s, now)
        if silent is not None:
            # ARBITRATING -> FENCING: silent for hung_after, yet its VIPs answer: its kernel
            # runs, its user space does not. Powered off, it answers nothing any more.
            reason = f"peer hung: silent {silent:.1f}s, its VIPs still answer"
            return s.to(Role.FENCING, now, reason), [Fence(s.params.peer)]
        # ARBITRATING -> STANDBY: another MAC answers for the VIP; only heartbeats are broken.
        return _back_off(s, now, PEER_STILL_SERVING, PEER_STILL_SERVING)
    guard_done = s.guard_answered is not None or not s.params.guard
    if down is not None and guard_done:
        if s.params.fencing:
            # ARBITRATING -> FENCING: make sure the peer is off before taking its resources.
            return s.to(Role.FENCING, now, "fencing peer"), [Fence(s.params.peer)]
        # ARBITRATING -> ACTIVE: peer lost, we are connected, nobody answers for the VIP.
        return _take_over(s, now, "peer lost")
    if now - s.since >= s.params.arbitrate_timeout:
        # ARBITRATING -> STANDBY: probes did not answer in time; try again after recheck.
        return _back_off(s, now, _TIMED_OUT, _TIMED_OUT)
    return s, []


def _on_fencing(s: State, ev: Event, now: float) -> tuple[State, list[Action]]:
    """FENCING: once the shot is fired, finish it: a peer heard now is about to go off."""
    if isinstance(ev, OperatorStandby | OperatorPromote):
        return _refuse(s, ev)
    if isinstance(ev, FenceResult):
        if ev.ok:
            # FENCING -> ACTIVE: the peer is confirmed off.
            return _take_over(s, now, "peer fenced")
        if s.params.fencing_policy == "vip-guard" and s.params.guard:
            # Policy vip-guard: fencing failed; decide on a fresh VIP probe instead.
            failed = replace(s, fence_failed=True, condition=f"fencing failed: {ev.detail}")
            n = s.probe_round + 1
            return replace(failed, probe_round=n, guard_answered=None), [ProbeVipGuard(n)]
        # FENCING -> STANDBY: policy refuse; never take over a peer that may still run.
        return _back_off(s, now, f"fencing failed: {ev.detail}", _FENCE_REFUSED)
    if isinstance(ev, VipGuardResult) and s.fence_failed and ev.round in (None, s.probe_round):
        if ev.answered:
            # FENCING -> STANDBY: fencing failed and the VIP still answers: the peer serves.
            return _back_off(s, now, PEER_STILL_SERVING, PEER_STILL_SERVING)
        # FENCING -> ACTIVE: fencing failed, but nobody answers for the VIP (policy vip-guard).
        return _take_over(s, now, "fencing failed, VIP unanswered")
    return s, []


def _on_active(s: State, ev: Event, now: float) -> tuple[State, list[Action]]:
    """ACTIVE: hold the resources; hand over, surrender or yield when the rules say so."""
    p = s.params
    if isinstance(ev, AcquireFailed):
        # ACTIVE -> FAULT: a resource could not be acquired; release the rest, hold nothing.
        return s.to(Role.FAULT, now, f"acquire failed: {ev.detail}"), [ReleaseResources("fault")]
    if isinstance(ev, AcquireDone):
        s = replace(s, acquired=True)
    if isinstance(ev, OperatorPromote):
        return s, []
    alive = s.peer_alive(now)
    peer = s.peer if alive else None
    lapsing = None if alive else _lease_lapsing(s, now)
    if lapsing is not None:
        # ACTIVE -> RELEASING: neither peer nor witness heard, and the lease is ending (or
        # is the peer's now): hold nothing once the witness may grant it to the standby.
        return _start_releasing(s, now, lapsing, urgent=True)
    if isinstance(ev, OperatorStandby):
        if ev.force or (peer is not None and peer.role is Role.STANDBY and not peer.hold_standby):
            # ACTIVE -> RELEASING: planned switchover asked by the operator.
            s = replace(s, hold_standby=True)
            return _start_releasing(s, now, "operator standby")
        return s, [Refused("standby", "the peer cannot take over (use --force)")]
    if peer is not None and peer.role is Role.ACTIVE:
        if _wins_conflict(s, peer):
            # Both active: we hold the newer epoch; the peer releases at once. Announce now, and
            # once more when the peer has let go (clients may have learned its MAC meanwhile).
            fresh = not s.conflict
            s = replace(s, conflict=True, condition="both active: peer yields")
            return s, ([Announce()] if fresh else [])
        # ACTIVE -> RELEASING: both active and the peer holds the newer takeover; yield at once.
        return _start_releasing(s, now, f"both active, peer epoch {peer.epoch}", urgent=True)
    if s.conflict and (peer is None or peer.role is not Role.RELEASING):
        # The conflict is over: announce again so every client points at us.
        s = replace(s, conflict=False, condition="")
        return s, [Announce()]
    if peer is None and s.peer_lost(now) and should_surrender(own_score(s), p.max_unreachable):
        # ACTIVE -> RELEASING(to ISOLATED): peer lost and we see too many targets down.
        return _start_releasing(
            s, now, f"{own_score(s)} targets down, peer lost", to=Role.ISOLATED, urgent=True
        )
    if peer is None or peer.role is not Role.STANDBY or peer.hold_standby:
        return replace(s, handover_since=None, failback_since=None), []
    if peer.promote:
        # ACTIVE -> RELEASING: the peer's operator asked it to become active.
        return _start_releasing(s, now, "peer promoted by operator")
    if not s.healthy and peer.healthy:
        # ACTIVE -> RELEASING: our service fails its health checks and the standby is healthy.
        return _start_releasing(s, now, "health check failed, peer healthy")
    if not s.lan_up and peer.score < LAN_DOWN_SCORE:
        # ACTIVE -> RELEASING: our service interface lost carrier; nobody reaches us. No flush
        # can cross a dead LAN either: release at once so the standby starts now.
        return _start_releasing(s, now, "service interface down", urgent=True)
    if should_hand_over(own_score(s), peer.score, p.switchover_margin):
        since = s.handover_since if s.handover_since is not None else now
        if now - since >= p.switchover_hold:
            # ACTIVE -> RELEASING: the standby is better connected by the margin, for long enough.
            return _start_releasing(s, now, f"ping score {own_score(s)} vs peer {peer.score}")
        s = replace(s, handover_since=since)
    else:
        s = replace(s, handover_since=None)
    if p.auto_failback and _failback_wanted(s, peer):
        since = s.failback_since if s.failback_since is not None else now
        if now - since >= p.failback_delay:
            # ACTIVE -> RELEASING: auto-failback to the higher-priority peer after the delay.
            return _start_releasing(s, now, "auto failback")
        s = replace(s, failback_since=since)
    else:
        s = replace(s, failback_since=None)
    return s, []


def _wins_conflict(s: State, peer: PeerView) -> bool:
    """Return whether we keep the resources when both nodes are active.

    The newer takeover epoch wins; on a tie, priority then the lower name, so both nodes
    reach the same verdict from the same two heartbeats.
    """
    if s.epoch != peer.epoch:
        return s.epoch > peer.epoch
    if s.params.priority != peer.priority:
        return s.params.priority > peer.priority
    return s.params.node < s.params.peer


def _failback_wanted(s: State, peer: PeerView) -> bool:
    """Return whether auto-failback prefers the peer: strictly higher priority, no worse link."""
    if peer.priority <= s.params.priority or not peer.healthy:
        return False
    return not should_hand_over(peer.score, own_score(s), s.params.switchover_margin)


def _on_releasing(s: State, ev: Event, now: float) -> tuple[State, list[Action]]:
    """RELEASING: release, then (planned only) wait for inhibitors, then go passive."""
    if isinstance(ev, OperatorStandby | OperatorPromote):
        return _refuse(s, ev)
    if isinstance(ev, ReleaseFailed):
        # RELEASING -> FAULT: something could not be let go.
        return replace(s.to(Role.FAULT, now, f"release failed: {ev.detail}"), clean=False), []
    if isinstance(ev, ReleaseDone) and not s.released:
        s = replace(s, released=True, since=now)
        if not s.urgent:
            return replace(s, condition="waiting for release inhibitors"), [WaitInhibitors()]
    if not s.released:
        limit = s.params.release_timeout
        if limit is not None and now - s.since >= limit:
            # RELEASING -> FAULT: the release is past its budget (a hung hypervisor); what it
            # still holds is unknown, so the peer must not count on it being let go.
            new = s.to(Role.FAULT, now, f"release past its budget of {limit:g} s")
            return replace(new, clean=False), []
        return s, []
    if s.urgent or isinstance(ev, InhibitorsReleased):
        # RELEASING -> STANDBY/ISOLATED: released, and nobody inhibits any more.
        return s.to(s.release_to, now, s.reason), []
    if now - s.since >= s.params.inhibit_timeout:
        # RELEASING -> STANDBY/ISOLATED: inhibitors held past the timeout; go on without them.
        new = s.to(s.release_to, now, s.reason)
        return replace(new, condition=INHIBITORS_TIMED_OUT), []
    return s, []


def _on_isolated(s: State, ev: Event, now: float) -> tuple[State, list[Action]]:
    """ISOLATED: hold nothing until the ping score is acceptable again."""
    if isinstance(ev, OperatorStandby | OperatorPromote):
        return _refuse(s, ev)
    if isinstance(ev, ReleaseFailed):
        # ISOLATED -> FAULT: a resource could not be let go.
        return replace(s.to(Role.FAULT, now, f"release failed: {ev.detail}"), clean=False), []
    if not should_surrender(own_score(s), s.params.max_unreachable):
        # ISOLATED -> STANDBY: the ping score recovered (and the service interface is up).
        return s.to(Role.STANDBY, now, "ping score recovered"), []
    return s, []


def _on_fault(s: State, ev: Event, now: float) -> tuple[State, list[Action]]:
    """FAULT: hold nothing; after fault_hold retry a failed release, or go back to STANDBY."""
    if isinstance(ev, OperatorStandby | OperatorPromote) and s.clean:
        # FAULT -> STANDBY: the operator clears the fault.
        new = s.to(Role.STANDBY, now, "operator cleared fault")
        return replace(new, promote=isinstance(ev, OperatorPromote)), []
    if isinstance(ev, OperatorStandby | OperatorPromote):
        return _refuse(s, ev)
    if now - s.since < s.params.fault_hold:
        return s, []
    if not s.clean:
        # Still holding something we could not release: try again, then wait another fault_hold.
        return replace(s, since=now), [ReleaseResources("fault retry")]
    # FAULT -> STANDBY: paused long enough, and nothing is held.
    return s.to(Role.STANDBY, now, "fault cleared"), []


# ---------------------------------------------------------------------------------------------
# Maintenance mode

# The condition status shows while in maintenance.
MAINTENANCE: Final = "maintenance mode: nothing is acquired, released, restarted or failed over"
# Roles in which a move is under way: maintenance waits until it has finished.
MOVING: Final = frozenset({Role.ARBITRATING, Role.FENCING, Role.RELEASING})


def _maintenance(s: State, ev: Event, now: float, was: bool) -> tuple[State, list[Action]]:
    """Maintenance mode: record facts, act on nothing; on leaving, re-check what is held."""
    if isinstance(ev, MaintenanceSet) and ev.on == was:
        # Already so: nothing changes (an "off" outside maintenance re-checks nothing).
        return _in_maintenance(s, ev) if was else (s, [])
    if isinstance(ev, MaintenanceSet) and ev.on and not was:
        peer_role = s.peer.role if s.peer is not None and s.peer_alive(now) else None
        if s.role in MOVING or peer_role in MOVING or s.deciding:
            busy = s.role if s.role in MOVING or s.deciding else peer_role
            assert busy is not None
            why = f"a move is under way ({busy.value}): try again when it has finished"
            return replace(s, maintenance=False), [Refused("maintenance", why)]
    if isinstance(ev, MaintenanceSet):
        s = replace(s, maintenance=ev.on)
    if s.maintenance:
        return _in_maintenance(s, ev)
    # Leaving maintenance: timers that ran meanwhile are stale; each node looks at what it
    # holds and the pair carries on from there, with no move.
    s = replace(
        s,
        condition="",
        handover_since=None,
        failback_since=None,
        recheck_at=None,
        probing_since=None,
    )
    if s.role is Role.ACTIVE:
        # ACTIVE: acquire is idempotent: what is held stays, what went missing comes back.
        return replace(s, acquired=False, clean=False), [
            AcquireResources("maintenance off: re-check what is held")
        ]
    if s.role in {Role.STANDBY, Role.ISOLATED} and not s.clean:
        # STANDBY: whatever a passive node still holds is let go (it is the peer's).
        return s, [ReleaseResources("maintenance off: a passive node holds nothing")]
    # STARTING (deciding: the daemon looks at what it holds, then decides) and the rest:
    # on from where they were.
    return s, []


def _in_maintenance(s: State, ev: Event) -> tuple[State, list[Action]]:
    """In maintenance: operator moves are refused; an effect already under way is recorded."""
    s = replace(s, condition=MAINTENANCE)
    if isinstance(ev, OperatorStandby | OperatorPromote):
        name = "standby" if isinstance(ev, OperatorStandby) else "promote"
        return s, [Refused(name, "the pair is in maintenance mode")]
    if isinstance(ev, AcquireDone) and s.role is Role.ACTIVE:
        return replace(s, acquired=True), []
    if isinstance(ev, ReleaseDone) and s.role is Role.RELEASING:
        return replace(s, released=True), []
    return s, []


_HANDLERS = {
    Role.STARTING: _on_starting,
    Role.STANDBY: _on_standby,
    Role.ARBITRATING: _on_arbitrating,
    Role.FENCING: _on_fencing,
    Role.ACTIVE: _on_active,
    Role.RELEASING: _on_releasing,
    Role.ISOLATED: _on_isolated,
    Role.FAULT: _on_fault,
}


def advertisable(s: State) -> bool:
    """Return whether a heartbeat may carry this state: only once its epoch is durable.

    A takeover adds its VIPs while the new epoch is being written; no heartbeat may carry
    the epoch before that, or a crash and restart here could number a later takeover at or
    below what the peer has already heard (the epoch settles who yields to whom).
    """
    return s.epoch <= s.stored_epoch


# How long after deadtime the loop wakes to declare the peer lost: it is alive up to and
# including heard_at + deadtime, so the wake-up must fall just after, not an interval later.
PAST_DEADTIME: Final = 0.001


def next_deadline(s: State, ticked: float | None = None) -> float | None:
    """Return when the machine next needs a Tick even if nothing else happens, if ever.

    `ticked`: when the machine was last stepped with a Tick. A deadline at or before it has
    had its Tick: what it called for is done, or waits on something else (a peer declared
    lost stays lost, a pre-probe the witness holds back), and waking for it again would
    spin the loop.
    """
    if s.maintenance:
        # No timer acts in maintenance: the daemon's heartbeat interval ticks us anyway.
        return None
    p = s.params
    times: list[float] = []
    if s.role is Role.STARTING:
        times.append(s.started + p.initdead)
    if s.peer is not None:
        times.append(s.peer.heard_at + s.dead_after() + PAST_DEADTIME)
        if p.prearbitrate > 0 and s.role is Role.STANDBY and s.probing_since is None:
            times.append(s.peer.heard_at + p.deadtime - p.prearbitrate)
    if s.last_stall is not None:
        times.append(s.last_stall + p.grace())
    if s.recheck_at is not None:
        times.append(s.recheck_at)
    if s.probing_since is not None:
        times.append(s.probing_since + p.arbitrate_timeout)
    if s.role is Role.ARBITRATING:
        times.append(s.since + p.arbitrate_timeout)
    if s.role is Role.RELEASING and s.released:
        times.append(s.since + p.inhibit_timeout)
    if s.role is Role.RELEASING and not s.released and p.release_timeout is not None:
        times.append(s.since + p.release_timeout)
    if s.role is Role.FAULT:
        times.append(s.since + p.fault_hold)
    if s.handover_since is not None:
        times.append(s.handover_since + p.switchover_hold)
    if s.carrier and not s.lan_up and s.carrier_back is not None:
        times.append(s.carrier_back + p.carrier_hold)
    if s.failback_since is not None:
        times.append(s.failback_since + p.failback_delay)
    w = s.witness
    if s.role is Role.ACTIVE and w is not None and w.lease_until is not None:
        due = w.lease_until - p.witness_margin
        # Only while it may still bind (see _lease_lapsing): a past one would spin the loop.
        if s.peer is None or due > s.peer.heard_at:
            times.append(due)
    if ticked is not None:
        times = [t for t in times if t > ticked]
    return min(times) if times else None


__all__ = [
    "BLOCKED",
    "INHIBITORS_TIMED_OUT",
    "MAINTENANCE",
    "PASSIVE",
    "PAST_DEADTIME",
    "PEER_STILL_SERVING",
    "PEER_SUSPECTED",
    "TRANSITIONS",
    "WITNESS_LOST_TOGETHER",
    "WITNESS_UNREACHABLE_HOLD",
    "Action",
    "Event",
    "IllegalTransition",
    "MachineParams",
    "Role",
    "State",
    "WitnessAnswer",
    "WitnessView",
    "advertisable",
    "blocked_by_config",
    "initial_state",
    "next_deadline",
    "own_score",
    "prefer",
    "step",
    "witness_granted",
    "witness_op",
    "witness_reachable",
]
