"""When each mirrored directory is synced. Pure: no I/O, no clock; callers pass `now`.

The planner keeps, per directory, the dirty set (relative path -> time of its first unsynced
change), whether a full pass is needed and why, whether a pass is running, the cost of recent
passes and the current adaptive interval. The daemon feeds it events (changes, overflow, pass
started/finished, operator requests) and asks `due(now)` which passes to start and
`next_deadline()` when to ask again.

Rules, in the order they matter:
- a directory never runs two passes at once;
- a directory with nothing dirty (and no full pass or audit due) costs nothing;
- passes of one directory start at least the rate spacing apart, and after each pass the
  directory idles for cost * (1 - max_duty) / max_duty, where cost is a moving average of the
  recent passes' durations, so syncing takes at most `max_duty` of the wall time on average;
  full and incremental passes are averaged apart and the idle before a pass is judged on the
  cost of its own kind: a 25 s start-up full pass or audit does not space out the 0.2 s
  incremental passes after it (the first change after it waits as in the steady state);
  one slow pass spreads its idle time over the next passes instead of owing it at once, so
  the idle exceeds the nominal interval only while the average cost itself would break the
  duty at that interval; however late the daemon asks, one plan comes out (missed runs
  coalesce);
- changes that arrive while a pass runs stay dirty for the next pass: only the snapshot taken
  when the pass started is cleared when it succeeds, and it goes back on retry or alarm;
- the interval adapts between `min_interval` and `max_interval`: busier directories sync more
  often, and a burst counts from its first changes, not from the next pass's rate sample;
- a change after a quiet spell (no change for `min_interval`) is sent at once, without the
  rate spacing, and so are its companions (the changes seen while that pass ran: the writer
  that ended the quiet spell is usually still at it), in one more pass; the rate spacing
  batches changes that come closer together than that. Waiting for the rate spacing there
  batches nothing: a directory quiet for min_interval has fewer than one change per
  min_interval to gather, and its passes cost one per change either way. `settle` and the
  back-off still apply, and the duty gap too, but the companions' pass counts the quiet
  spell's idle time (beyond the gap the first pass owed) against its own gap: the duty holds
  over the spell and both passes, and ten files written at once after a quiet spell reach the
  peer in two passes back to back, not two passes and a gap;
- a scheduled audit (the policy's cron `schedule`, fired by the daemon at calendar times) is
  due at once and makes the next full pass an audit.

`now` is the monotonic clock (the daemon converts the journal's wall-clock times on the way
in): a step of the wall clock moves no deadline.
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

log = logging.getLogger(__name__)

# Weight of the newest change-rate sample in the moving average.
RATE_ALPHA: Final = 0.3
# Weight of the newest pass duration in the moving average of pass cost. The weights of one
# pass over all later averages sum to 1, so the idle time it owes is paid in full, spread over
# the next few gaps (0.3: mostly within ten passes).
COST_ALPHA: Final = 0.3
# Consecutive failed passes after which a retrying directory also reports an alarm.
ALARM_AFTER_FAILURES: Final = 5


class PassKind(enum.Enum):
    """What a pass sends."""

    # Only the snapshot of dirty paths (rsync --files-from).
    INCREMENTAL = "incremental"
    # The whole tree (rsync --delete), optionally with --checksum as an audit.
    FULL = "full"


class Prompt(enum.Enum):
    """Why the next pass skips the rate spacing."""

    # Its first change ended a quiet spell (no change for min_interval).
    QUIET = "quiet"
    # Its changes came while a QUIET pass ran (the rest of that burst): one pass, no more.
    COMPANION = "companion"


class Result(enum.Enum):
    """How a pass ended, as the transfer's exit-code table classifies it."""

    OK = "ok"
    # Transient (peer unreachable, timeout): put the snapshot back and back off.
    RETRY = "retry"
    # Needs an operator (guard refused, max-delete hit, protocol error): keep the snapshot
    # and retry only at max_interval so the directory does not hammer the peer.
    ALARM = "alarm"


@dataclass(frozen=True)
class Cadence:
    """The timing policy of one directory (built from its mirror policy)."""

    # Nominal seconds between passes of a directory that changes about once per interval.
    interval: float
    # Busier directories never sync more often than this.
    min_interval: float
    # Quieter or costlier directories never wait longer than this while dirty.
    max_interval: float
    # Largest share of wall time the directory may spend in passes (0..1].
    max_duty: float = 0.1
    # Seconds between audit (full) passes; 0 disables them.
    verify_every: float = 0.0
    # Seconds a change waits for companions before a pass; 0 sends the first change at once.
    settle: float = 0.0

    def __post_init__(self) -> None:
        if not 0 < self.min_interval <= self.interval <= self.max_interval:
            raise ValueError(
                f"cadence: need 0 < min_interval <= interval <= max_interval, got "
                f"{self.min_interval} {self.interval} {self.max_interval}"
            )
        if not 0 < self.max_duty <= 1:
            raise ValueError(f"cadence: max_duty must be in (0, 1], got {self.max_duty}")


@dataclass(frozen=True)
class PassPlan:
    """One pass the daemon should start now."""

    # The directory's key (its absolute path).
    directory: str
    kind: PassKind
    # The dirty paths this pass covers (relative to the directory). A full pass covers them
    # too, which is why it carries them: success clears exactly these.
    paths: frozenset[str]
    # Why this pass: "changes", "overflow", "startup", "verify", "requested", ...
    reason: str
    # True for a scheduled audit: the transfer may add --checksum.
    audit: bool = False


@dataclass(frozen=True)
class DirStatus:
    """What `mirrord status` shows about one directory."""

    directory: str
    interval: float
    dirty: int
    rpo: float
    running: bool
    full_needed: str | None
    last_result: str | None
    last_duration: float | None
    last_finished: float | None
    next_due: float | None
    failures: int
    alarm: str | None
    change_rate: float


@dataclass
class _Dir:
    """Mutable per-directory state; only the Planner touches it."""

    cadence: Cadence
    created: float
    dirty: dict[str, float] = field(default_factory=dict)
    # The snapshot of the running pass (path -> first change time), returned on failure.
    in_flight: dict[str, float] = field(default_factory=dict)
    running: PassPlan | None = None
    started_at: float | None = None
    # Reason a full pass is needed, and since when (an overflow lost changes from that moment).
    full_reason: str | None = None
    full_since: float | None = None
    # The full-pass need that the running pass is resolving, restored if it fails.
    in_flight_full: tuple[str, float] | None = None
    rate: float = 0.0
    rate_count: int = 0
    rate_since: float = 0.0
    interval: float = 0.0
    last_start: float | None = None
    last_finish: float | None = None
    last_result: Result | None = None
    last_duration: float | None = None
    # Moving averages of pass durations (COST_ALPHA), incremental and full apart; None before
    # the first pass of that kind.
    cost: float | None = None
    full_cost: float | None = None
    last_full_ok: float | None = None
    failures: int = 0
    alarm: str | None = None
    forced_at: float | None = None
    # The last pass was refused for a cause only a full pass mends, and that was let go
    # without counting a failure (at most once between successes: no loop of refusals).
    redirected: bool = False
    forced_full: bool = False
    # Since when a scheduled audit is owed (the policy's cron schedule fired).
    audit_at: float | None = None
    # Time of the latest change recorded (a quiet spell is measured from it).
    last_change: float | None = None
    # Why the next pass skips the rate spacing; None: it is spaced.
    prompt: Prompt | None = None
    # Whether the running pass is a QUIET one (changes meanwhile are its companions).
    quiet_running: bool = False
    # Idle time before the last QUIET pass beyond the duty gap it owed: its companions' pass
    # spends it instead of waiting out a duty gap of its own.
    quiet_credit: float = 0.0


def _average(average: float | None, duration: float) -> float:
    """Return the moving average of pass cost with `duration` added (COST_ALPHA)."""
    return duration if average is None else COST_ALPHA * duration + (1 - COST_ALPHA) * average


class Planner:
    """Per-directory sync decisions; every method takes `now` and does no I/O."""

    def __init__(self) -> None:
        self._dirs: dict[str, _Dir] = {}

    # -- configuration -------------------------------------------------------------------

    def add_directory(
        self, directory: str, cadence: Cadence, now: float, last_full_ok: float | None = None
    ) -> None:
        """Start planning `directory`; `last_full_ok` (from the journal) anchors the audits."""
        if directory in self._dirs:
            raise ValueError(f"planner: directory already added: {directory}")
        self._dirs[directory] = _Dir(
            cadence=cadence,
            created=now,
            rate_since=now,
            interval=cadence.interval,
            last_full_ok=last_full_ok,
        )

    def remove_directory(self, directory: str) -> None:
        """Stop planning `directory` (a reload dropped it); nothing may be running there."""
        if self._get(directory).running is not None:
            raise ValueError(f"planner: a pass is running in {directory}")
        del self._dirs[directory]

    def set_cadence(self, directory: str, cadence: Cadence) -> None:
        """Plan `directory` with a new cadence from now on (a reload changed its policy)."""
        d = self._get(directory)
        d.cadence = cadence
        d.interval = cadence.interval

    def directories(self) -> list[str]:
        """Return the planned directories in the order they were added."""
        return list(self._dirs)

    def _get(self, directory: str) -> _Dir:
        try:
            return self._dirs[directory]
        except KeyError:
            raise KeyError(f"planner: unknown directory: {directory}") from None

    # -- events --------------------------------------------------------------------------

    def changes(self, directory: str, paths: Iterable[str], now: float) -> None:
        """Record changed relative paths (first change time is kept for the RPO)."""
        d = self._get(directory)
        paths = list(paths)
        if not paths:
            return
        quiet = d.last_change is None or now - d.last_change >= d.cadence.min_interval
        if quiet:
            # quiet spell -> QUIET: the pass goes without the rate spacing
            d.prompt = Prompt.QUIET
        elif d.running is not None and d.quiet_running and d.prompt is None:
            # during a QUIET pass -> COMPANION: one more pass right after it
            d.prompt = Prompt.COMPANION
        d.last_change = now
        for p in paths:
            d.dirty.setdefault(p, now)
            d.rate_count += 1

    def restore(self, directory: str, dirty: Mapping[str, float]) -> None:
        """Reload journaled dirty paths with their original first-change times."""
        d = self._get(directory)
        for p, t in dirty.items():
            d.dirty[p] = min(t, d.dirty.get(p, t))

    def forget(self, directory: str, paths: Iterable[str]) -> None:
        """Drop dirty paths that will never be sent (orphans set aside on becoming passive)."""
        d = self._get(directory)
        for p in paths:
            d.dirty.pop(p, None)

    def need_full(self, directory: str, reason: str, now: float) -> None:
        """Mark that only a full pass can make the mirror right (overflow, start-up, ...)."""
        d = self._get(directory)
        if d.full_reason is None:
            d.full_reason, d.full_since = reason, now
            log.info("plan.full_needed dir=%s reason=%s", directory, reason)

    def overflow(self, directory: str, now: float) -> None:
        """The watcher lost events: changes since now are unknown until a full pass."""
        self.need_full(directory, "overflow", now)

    def schedule_audit(self, directory: str, now: float) -> None:
        """The directory's cron schedule fired: an audit (full pass) is owed from `now`."""
        d = self._get(directory)
        if d.audit_at is None:
            d.audit_at = now
            log.info("plan.audit_scheduled dir=%s", directory)

    def request(self, directory: str, now: float, full: bool = False) -> None:
        """An operator asked for a pass now (`mirrord sync`), ignoring spacing and back-off."""
        d = self._get(directory)
        d.forced_at = now
        d.forced_full = d.forced_full or full

    def pass_started(self, plan: PassPlan, now: float) -> None:
        """The daemon launched `plan`: its snapshot leaves the dirty set."""
        d = self._get(plan.directory)
        if d.running is not None:
            raise RuntimeError(f"planner: a pass of {plan.directory} is already running")
        d.running, d.started_at = plan, now
        d.in_flight = {p: d.dirty.pop(p) for p in plan.paths if p in d.dirty}
        if d.prompt is Prompt.QUIET:
            idle = math.inf if d.last_finish is None else now - d.last_finish
            d.quiet_credit = max(0.0, idle - self._duty_gap(d))
        d.quiet_running, d.prompt = d.prompt is Prompt.QUIET, None
        if plan.kind is PassKind.FULL:
            if d.full_reason is not None and d.full_since is not None:
                d.in_flight_full = (d.full_reason, d.full_since)
            d.full_reason = d.full_since = None
            if plan.audit:
                d.audit_at = None
        d.forced_at, d.forced_full = None, False
        # Change rate: changes per second since the previous pass started.
        span = now - d.rate_since
        if span > 0:
            sample = d.rate_count / span
            d.rate = (
                sample
                if d.last_start is None
                else (RATE_ALPHA * sample + (1 - RATE_ALPHA) * d.rate)
            )
        d.rate_count, d.rate_since = 0, now
        d.last_start = now

    def pass_finished(
        self,
        directory: str,
        result: Result,
        now: float,
        detail: str | None = None,
        redirect: str | None = None,
    ) -> None:
        """The running pass ended with `result` after running since `pass_started`.

        `redirect`: the peer refused the pass for a cause only a full pass mends (its reason,
        mirrord.outcome's `full`: Debian 12's rsync refusing a deleted path, a peer that set
        aside files a push may have written). The full pass is owed for that reason, and the
        refusal is no failure: it starts at once, without the backoff or the spacing. Only
        once between successes: a pass refused the same way again backs off as any failure.
        """
        d = self._get(directory)
        plan = d.running
        if plan is None or d.started_at is None:
            raise RuntimeError(f"planner: no pass of {directory} is running")
        duration = max(0.0, now - d.started_at)
        d.running = d.started_at = None
        d.quiet_running = False
        d.last_finish, d.last_result, d.last_duration = now, result, duration
        if plan.kind is PassKind.FULL:
            d.full_cost = _average(d.full_cost, duration)
        else:
            d.cost = _average(d.cost, duration)
        if result is Result.OK:
            # Only the snapshot is done; whatever changed meanwhile is already back in `dirty`.
            d.in_flight = {}
            d.in_flight_full = None
            d.failures = 0
            d.alarm = None
            d.redirected = False
            if plan.kind is PassKind.FULL:
                d.last_full_ok = now
        else:
            for p, t in d.in_flight.items():
                d.dirty[p] = min(t, d.dirty.get(p, t))
            d.in_flight = {}
            if d.in_flight_full is not None and d.full_reason is None:
                d.full_reason, d.full_since = d.in_flight_full
            d.in_flight_full = None
            if plan.kind is PassKind.FULL and d.full_reason is None:
                # A failed audit or requested full pass is still owed.
                d.full_reason, d.full_since = plan.reason, d.last_start or now
            if redirect is not None and result is Result.RETRY:
                self.need_full(directory, redirect, d.last_start or now)
            if redirect is not None and result is Result.RETRY and not d.redirected:
                d.redirected = True
                d.forced_at = now
            else:
                d.failures += 1
                if result is Result.ALARM:
                    d.alarm = detail or "alarm"
                elif d.failures >= ALARM_AFTER_FAILURES:
                    d.alarm = f"{d.failures} consecutive failures: {detail or 'retry'}"
        d.interval = self._adapt(d)
        log.info(
            "plan.pass_finished dir=%s kind=%s result=%s duration=%.3f interval=%.3f",
            directory,
            plan.kind.value,
            result.value,
            duration,
            d.interval,
        )

    # -- decisions -----------------------------------------------------------------------

    @staticmethod
    def _by_rate(d: _Dir) -> float:
        """Return the spacing of pass starts that the change rate asks for.

        Expected changes per nominal interval n = rate * interval; the spacing shrinks as
        interval / sqrt(n), so a directory 100x busier syncs 10x more often: every pass has a
        fixed floor (ssh session, rsync start), and larger batches amortise it.
        """
        c = d.cadence
        n = d.rate * c.interval
        by_rate = c.interval / math.sqrt(n) if n > 1 else c.interval
        return min(c.max_interval, max(c.min_interval, by_rate))

    def _spacing(self, d: _Dir) -> float:
        """Return the spacing of pass starts, counting the changes since the last start too.

        The average rate only moves when a pass starts, so a burst after a quiet spell would
        wait a whole nominal interval behind the first pass. k changes seen since the last
        start, s seconds ago, are a rate of k / s: the rate spacing interval / sqrt(rate *
        interval) is reached once s >= interval / k, the same spacing at a steady rate, but
        known as soon as the changes are.
        """
        c = d.cadence
        by_rate = self._by_rate(d)
        if d.rate_count > 0:
            by_count = min(c.max_interval, max(c.min_interval, c.interval / d.rate_count))
            return min(by_rate, by_count)
        return by_rate

    @staticmethod
    def _duty_gap(d: _Dir, full: bool = False) -> float:
        """Return the idle time owed after the last pass before a pass of the given kind.

        The gap is cost * (1 - duty) / duty, with the cost averaged over passes of that kind
        only: incremental passes are judged on incremental cost, so a full pass or an audit
        (which runs at most every few minutes) does not make the next changes wait for it.

        `cost` is the moving average of pass durations, not the last one: back-to-back passes
        then spend max_duty of the wall time syncing on average, one slow pass among cheap ones
        does not stop the directory for nine times its length (at 0.1), and a change after a
        quiet spell (the idle time already paid) is sent at once. The gap exceeds the nominal
        interval only when cost / (cost + interval) > max_duty, that is when syncing at the
        interval would break the duty on average; it never exceeds max_interval: the RPO bound
        wins over the duty goal.
        """
        c = d.cadence
        cost = (d.full_cost if full else d.cost) or 0.0
        return min(c.max_interval, cost * (1 - c.max_duty) / c.max_duty)

    def _adapt(self, d: _Dir) -> float:
        """Return the interval `status` reports: the larger of the rate and duty spacings.

        The duty spacing is the incremental passes' (the spacing changes see).
        """
        c = d.cadence
        by_duty = (d.cost or 0.0) / c.max_duty
        return min(c.max_interval, max(self._by_rate(d), by_duty))

    def _backoff(self, d: _Dir) -> float:
        """Seconds to wait after the latest failure before trying again."""
        c = d.cadence
        if d.last_result is Result.ALARM:
            return c.max_interval
        return min(c.max_interval, c.min_interval * 2.0 ** max(0, d.failures - 1))

    def _oldest(self, d: _Dir) -> float | None:
        """Time of the oldest change not yet on the peer (pending or in flight)."""
        times = [*d.dirty.values(), *d.in_flight.values()]
        if d.full_since is not None:
            times.append(d.full_since)
        if d.in_flight_full is not None:
            times.append(d.in_flight_full[1])
        return min(times) if times else None

    def _verify_at(self, d: _Dir) -> float | None:
        if d.cadence.verify_every <= 0:
            return None
        anchor = d.last_full_ok if d.last_full_ok is not None else d.created
        return anchor + d.cadence.verify_every

    def _due_at(self, d: _Dir) -> float | None:
        """When the next pass of `d` may start, or None if nothing is owed."""
        if d.running is not None:
            return None
        if d.forced_at is not None:
            return d.forced_at
        candidates: list[float] = []
        pending = [*d.dirty.values()]
        if d.full_since is not None:
            pending.append(d.full_since)
        if pending:
            spaced = -math.inf
            if d.last_start is not None and d.prompt is None:
                spaced = d.last_start + self._spacing(d)
            if d.last_finish is not None:
                full = d.full_reason is not None or d.forced_full
                gap = self._duty_gap(d, full)
                if d.prompt is Prompt.COMPANION and not full:
                    gap = max(0.0, gap - d.quiet_credit)
                spaced = max(spaced, d.last_finish + gap)
            candidates.append(max(spaced, min(pending) + d.cadence.settle))
        verify = self._verify_at(d)
        if verify is not None:
            candidates.append(verify)
        if d.audit_at is not None:
            candidates.append(d.audit_at)
        if not candidates:
            return None
        at = min(candidates)
        if d.failures and d.last_finish is not None:
            at = max(at, d.last_finish + self._backoff(d))
        return at

    def _plan(self, directory: str, d: _Dir, now: float) -> PassPlan:
        snapshot = frozenset(d.dirty)
        # A full pass owed anyway serves as the scheduled audit too.
        scheduled = d.audit_at is not None
        if d.full_reason is not None:
            return PassPlan(directory, PassKind.FULL, snapshot, d.full_reason, audit=scheduled)
        if d.forced_full:
            return PassPlan(directory, PassKind.FULL, snapshot, "requested", audit=scheduled)
        if scheduled:
            return PassPlan(directory, PassKind.FULL, snapshot, "schedule", audit=True)
        verify = self._verify_at(d)
        if verify is not None and now >= verify:
            return PassPlan(directory, PassKind.FULL, snapshot, "verify", audit=True)
        reason = "requested" if d.forced_at is not None else "changes"
        return PassPlan(directory, PassKind.INCREMENTAL, snapshot, reason)

    def due(self, now: float) -> list[PassPlan]:
        """Return the passes to start now: at most one per directory, none while one runs."""
        plans: list[PassPlan] = []
        for directory, d in self._dirs.items():
            at = self._due_at(d)
            if at is None or at > now:
                continue
            plan = self._plan(directory, d, now)
            if plan.kind is PassKind.INCREMENTAL and not plan.paths:
                # A requested pass with nothing dirty: nothing to send, nothing to pay.
                d.forced_at = None
                continue
            plans.append(plan)
        return plans

    def next_deadline(self) -> float | None:
        """Return the earliest time a directory becomes due, or None if none is owed."""
        times = [t for d in self._dirs.values() if (t := self._due_at(d)) is not None]
        return min(times) if times else None

    # -- observation ---------------------------------------------------------------------

    def rpo(self, directory: str, now: float) -> float:
        """Return the age of the oldest change not yet on the peer (0 when in sync)."""
        oldest = self._oldest(self._get(directory))
        return 0.0 if oldest is None else max(0.0, now - oldest)

    def is_running(self, directory: str) -> bool:
        """Return whether a pass of `directory` is running."""
        return self._get(directory).running is not None

    def status(self, directory: str, now: float) -> DirStatus:
        """Return the status snapshot of one directory."""
        d = self._get(directory)
        return DirStatus(
            directory=directory,
            interval=d.interval,
            dirty=len(d.dirty) + len(d.in_flight),
            rpo=self.rpo(directory, now),
            running=d.running is not None,
            full_needed=d.full_reason,
            last_result=d.last_result.value if d.last_result else None,
            last_duration=d.last_duration,
            last_finished=d.last_finish,
            next_due=self._due_at(d),
            failures=d.failures,
            alarm=d.alarm,
            change_rate=d.rate,
        )
