"""Fencing decisions: error classes, the retry schedule, and what to do when fencing fails.

Pure: no I/O and no clock; callers pass elapsed times and budgets in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class FenceErrorKind(StrEnum):
    """Why one fencing attempt failed, in words an operator can act on."""

    # The BMC rejected the password: retrying cannot help, fix the password file.
    WRONG_PASSWORD = "wrong-password"
    # The BMC does not know the user name.
    UNKNOWN_USER = "unknown-user"
    # The password file is missing, unreadable, empty or readable by everyone.
    PASSWORD_FILE = "password-file"
    # Nothing answered the session setup: wrong address/port, BMC down or the path to it cut.
    UNREACHABLE = "unreachable"
    # A session was open and the BMC stopped answering (frozen BMC): killed at the hard timeout.
    TIMEOUT = "timeout"
    # The BMC answers but never reported the power as off within the attempt.
    NOT_CONFIRMED = "not-confirmed"
    # The BMC answered the command with an error of its own.
    BMC_ERROR = "bmc-error"
    # The attempt's worker process failed without saying why (crash, bad output).
    WORKER = "worker"


# Errors that the same credentials will reproduce on every try: stop at once, report clearly.
PERMANENT: frozenset[FenceErrorKind] = frozenset(
    {FenceErrorKind.WRONG_PASSWORD, FenceErrorKind.UNKNOWN_USER, FenceErrorKind.PASSWORD_FILE}
)


def classify_ipmi_message(message: str | None) -> FenceErrorKind:
    """Map the text of a pyghmi IpmiException to an error kind."""
    # pyghmi raises IpmiException(None) when its own retries of the session setup all went
    # unanswered: nothing is listening there.
    if not message:
        return FenceErrorKind.UNREACHABLE
    text = message.lower()
    if "incorrect password" in text or "integrity check" in text:
        return FenceErrorKind.WRONG_PASSWORD
    if "unauthorized name" in text or "invalid user" in text or "unknown user" in text:
        return FenceErrorKind.UNKNOWN_USER
    if "session no longer connected" in text or "timeout" in text or "timed out" in text:
        return FenceErrorKind.TIMEOUT
    if "unreachable" in text or "no route" in text or "refused" in text:
        return FenceErrorKind.UNREACHABLE
    return FenceErrorKind.BMC_ERROR


def classify_hard_timeout(last_event: str | None) -> FenceErrorKind:
    """Classify an attempt killed at its hard timeout by how far its worker had got."""
    # The worker reports its progress as it goes; where it stopped tells a BMC that never
    # answered from one that froze mid-session or one that keeps saying "on".
    if last_event in (None, "start", "session"):
        return FenceErrorKind.UNREACHABLE
    if last_event == "state":
        return FenceErrorKind.NOT_CONFIRMED
    return FenceErrorKind.TIMEOUT


@dataclass(frozen=True)
class RetrySchedule:
    """Exponential backoff between fencing attempts, bounded by the configured budget."""

    # Pause after the first failed attempt, seconds.
    base: float = 0.25
    # Each further failure multiplies the pause by this.
    factor: float = 2.0
    # Longest pause between attempts, seconds.
    cap: float = 2.0
    # Hard limit of one attempt, seconds: pyghmi gives up on a silent BMC after about 5 s, so
    # 6 s lets it say "unreachable" itself while a frozen session is still cut short.
    attempt_timeout: float = 6.0
    # An attempt with less time than this left in the budget is not worth starting, seconds.
    min_attempt: float = 0.5

    def delay(self, failures: int) -> float:
        """Pause before the next attempt after `failures` (>= 1) failed attempts."""
        return min(self.cap, self.base * self.factor ** max(0, failures - 1))

    def attempt_limit(self, elapsed: float, budget: float) -> float:
        """Hard timeout for an attempt that starts `elapsed` seconds into `budget`."""
        return max(0.0, min(self.attempt_timeout, budget - elapsed))

    def next_delay(
        self, kind: FenceErrorKind, failures: int, elapsed: float, budget: float
    ) -> float | None:
        """Pause before retrying after a failure, or None when the attempts should stop."""
        if kind in PERMANENT:
            return None
        pause = self.delay(failures)
        if elapsed + pause + self.min_attempt > budget:
            return None
        return pause

    def plan(self, budget: float, attempt_cost: float) -> list[tuple[float, float]]:
        """(start, hard timeout) of each attempt if every one fails after `attempt_cost` s."""
        # Used by `takeover check` to show what a budget buys, and by the unit tests.
        starts: list[tuple[float, float]] = []
        elapsed = 0.0
        while True:
            limit = self.attempt_limit(elapsed, budget)
            starts.append((elapsed, limit))
            elapsed += min(attempt_cost, limit)
            pause = self.next_delay(FenceErrorKind.UNREACHABLE, len(starts), elapsed, budget)
            if pause is None:
                return starts
            elapsed += pause


class FailurePolicy(StrEnum):
    """What a survivor does when it could not confirm the peer powered off."""

    # Do not take over: a peer that may still run the service must not be joined by a second.
    REFUSE = "refuse"
    # Take over only if the VIP guard found nobody answering for the VIP.
    VIP_GUARD = "vip-guard"


def may_take_over_unfenced(policy: FailurePolicy, vip_answered: bool | None) -> bool:
    """Decide whether to acquire resources although fencing failed.

    `vip_answered` is the VIP guard's finding: True if some other MAC answered for the VIP,
    False if nobody did, None if the guard could not tell.
    """
    if policy is FailurePolicy.REFUSE:
        return False
    # vip-guard: only a clear "nobody answers" lets us in; an unknown is treated as answered.
    return vip_answered is False
