"""Ping-list arbitration: damped per-target reachability and the decisions made from it.

Pure: no sockets, no clock; probe results and `now` come in as arguments. The ICMP probes
themselves live with the effects (takeover/probe.py).

A target's *considered* state changes only after its raw state has held `dampen` seconds, so
one lost echo does not move the score, and the score carried in heartbeats does not jitter.
The score is the number of targets currently considered down.
"""

from __future__ import annotations

import enum
import errno
from collections.abc import Iterable
from dataclasses import dataclass


class Outcome(enum.Enum):
    """What one probe of one target found."""

    REPLY = "reply"
    # No reply within the probe timeout.
    TIMEOUT = "timeout"
    # The kernel refused to send: no route, interface down. Counts as down, like a timeout.
    UNREACHABLE = "unreachable"
    # A local problem (no permission, bad socket): says nothing about the target.
    ERROR = "error"


# Send errors that say the target cannot be reached from here (the kernel knows already).
_UNREACHABLE_ERRNOS = frozenset(
    {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.EHOSTDOWN}
)


def classify_errno(code: int) -> Outcome:
    """Return the outcome of a probe whose send or receive failed with errno `code`."""
    return Outcome.UNREACHABLE if code in _UNREACHABLE_ERRNOS else Outcome.ERROR


def is_down(outcome: Outcome) -> bool | None:
    """Return whether an outcome says the target is down; None when it says nothing."""
    if outcome is Outcome.ERROR:
        return None
    return outcome is not Outcome.REPLY


@dataclass
class _Target:
    """Raw and damped state of one target."""

    # The damped verdict the score counts; None until the first result.
    considered_down: bool | None = None
    # The latest raw verdict, and since when it has held.
    raw_down: bool | None = None
    raw_since: float = 0.0


class Reachability:
    """Damped reachability of every ping target; `score()` counts those considered down."""

    def __init__(self, targets: Iterable[str], dampen: float) -> None:
        """Track `targets`; a raw state must hold `dampen` seconds before it counts."""
        self.dampen = dampen
        self._targets: dict[str, _Target] = {t: _Target() for t in targets}

    def retarget(self, targets: Iterable[str], dampen: float) -> None:
        """Track `targets` from now on (a reload): kept targets keep their damped state."""
        self.dampen = dampen
        self._targets = {t: self._targets.get(t) or _Target() for t in targets}

    def record(self, target: str, outcome: Outcome, now: float) -> None:
        """Fold one probe outcome of `target` observed at `now`."""
        t = self._targets.get(target)
        if t is None:
            # A round started before a reload removed the target: its answer counts no more.
            return
        down = is_down(outcome)
        if down is None:
            return
        if t.considered_down is None:
            # Nothing to damp against at start-up: the first verdict counts at once.
            t.considered_down = down
        if down != t.raw_down:
            t.raw_down = down
            t.raw_since = now
        self._settle(t, now)

    def _settle(self, t: _Target, now: float) -> None:
        if t.raw_down is not None and now - t.raw_since >= self.dampen:
            t.considered_down = t.raw_down

    def score(self, now: float) -> int:
        """Return how many targets are considered down at `now`."""
        for t in self._targets.values():
            self._settle(t, now)
        return sum(1 for t in self._targets.values() if t.considered_down)

    def down_targets(self, now: float) -> list[str]:
        """Return the names of the targets considered down at `now`, in configured order."""
        self.score(now)
        return [name for name, t in self._targets.items() if t.considered_down]

    def states(self, now: float) -> dict[str, str]:
        """Return target -> "up" | "down" | "unknown" (damped), for status output."""
        self.score(now)
        words = {None: "unknown", True: "down", False: "up"}
        return {name: words[t.considered_down] for name, t in self._targets.items()}

    def next_change(self) -> float | None:
        """Return when a pending raw change will start to count, if one is pending."""
        pending = [
            t.raw_since + self.dampen
            for t in self._targets.values()
            if t.raw_down is not None and t.raw_down != t.considered_down
        ]
        return min(pending) if pending else None


def fresh_down(results: dict[str, list[Outcome]]) -> int:
    """Return how many targets a fresh (undamped) round saw down.

    A target is up if any of its tries replied; down if at least one try says down and none
    replied; a target whose every try was a local error is not counted either way.
    """
    down = 0
    for outcomes in results.values():
        verdicts = [is_down(o) for o in outcomes]
        if False in verdicts:
            continue
        if True in verdicts:
            down += 1
    return down


def should_surrender(score: int, max_unreachable: int) -> bool:
    """Return whether a node that lost its peer is the broken one and must hold nothing."""
    return score > max_unreachable


def should_hand_over(active_score: int, standby_score: int, margin: int) -> bool:
    """Return whether the active is worse connected than the standby by at least `margin`."""
    return active_score - standby_score >= max(1, margin)
