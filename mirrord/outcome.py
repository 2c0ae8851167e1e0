"""Why an rsync run failed, from everything it printed. Pure: no I/O.

rsync's exit code says how a run ended, not why: a full disk on the peer, a root missing there
and an unknown host key all end in codes that name a symptom (file I/O error, "error starting
client-server protocol"), and the last line rsync prints is its own summary of that symptom.
The cause is in an earlier line, printed by the peer's rsync, its rsync daemon, ssh, or the
peer's push check (mirrord/pushcheck.sh). `Messages` reads every line of stderr as it comes
and keeps the first line of each known cause (and the last lines, for the log); `explain`
then gives the pass the cause's class and words, with the line that shows it.

The class follows the cause: what an operator must fix (a full disk, a missing root or module,
a rejected key or host key) is an alarm at once; what passes by itself (the peer unreachable,
the peer still setting its orphans aside) is retried. A success, a vanished file (24) and an
interrupted or killed rsync keep their exit code's meaning whatever was printed.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Final

from mirrord.planner import Result


@dataclass(frozen=True)
class Outcome:
    """What a pass's end means: its class, and the reason shown in status and the log."""

    result: Result
    reason: str
    # The next pass is a full one, for this reason (what this pass could not carry, a full
    # pass does); None: nothing is owed.
    full: str | None = None


@dataclass(frozen=True)
class Cause:
    """A line fragment that names why a run failed."""

    # Fragment of a stderr line (rsync's, its daemon's, ssh's, or the push check's words).
    marker: str
    outcome: Outcome


def _alarm(reason: str) -> Outcome:
    return Outcome(Result.ALARM, reason)


def _retry(reason: str) -> Outcome:
    return Outcome(Result.RETRY, reason)


def _full_pass(reason: str) -> Outcome:
    """Retried, as a full pass: it carries what this run could not."""
    return Outcome(Result.RETRY, reason, full=reason)


# Debian 12's rsync 3.2.7 (with its 2025 security fixes) refuses a listed path missing on the
# source ("invalid file mode 00 for NAME [Receiver]", protocol incompatibility): every deletion
# an incremental pass sends with --delete-missing-args. A full pass (--delete over the walked
# tree, no missing argument) carries the same deletions.
MISSING_ARGS_REFUSED: Final = (
    "the peer's rsync refuses deleted paths in an incremental pass (Debian 12's rsync 3.2.7): "
    "a full pass carries them"
)

# The receiving node set aside files a push may have written (mirrord.orphans.ask_resend).
FULL_PASS_WANTED: Final = "the peer set aside files a push may have written: a full pass sends them"

# What every refusal of the peer's push check (mirrord/pushcheck.sh) begins with.
PUSHCHECK_MARKER: Final = "mirrord: "

# First match in this order wins: the more specific and the more decisive come first (a full
# disk also breaks the pipe; a refusal by the push check also fails the pre-xfer exec).
CAUSES: Final[tuple[Cause, ...]] = (
    Cause("invalid file mode 00", _full_pass(MISSING_ARGS_REFUSED)),
    # The peer's push check (mirrord/pushcheck.sh, for both receivers).
    Cause(
        "does not exist on this node",
        _alarm("the root is missing on the peer: create it there, or mount its disk"),
    ),
    Cause(
        "it accepts pushes once its mirrord",
        _retry(
            "the peer is still the source of this root: it accepts pushes once its mirrord has "
            "set its unsynced changes aside"
        ),
    ),
    Cause("it wants a full pass", _full_pass(FULL_PASS_WANTED)),
    Cause(
        "is not a mirrored root",
        _alarm(
            "the peer does not mirror this root: add it to the peer's policies and run "
            "`mirrord authorize` there"
        ),
    ),
    # The peer's disk.
    Cause("No space left on device", _alarm("the peer's disk is full")),
    Cause("Disk quota exceeded", _alarm("the peer's disk quota is exhausted")),
    Cause("Read-only file system", _alarm("the root is read-only on the peer")),
    # The peer's rsync daemon (mirrord.rsyncd), before any transfer.
    Cause(
        "@ERROR: chroot failed",
        _alarm(
            "the root is missing on the peer (its rsync module cannot enter it): create it "
            "there, or mount its disk"
        ),
    ),
    Cause(
        "@ERROR: Unknown module",
        _alarm(
            "the peer's rsync daemon has no module for this root: run `mirrord authorize` on "
            "the peer"
        ),
    ),
    Cause("@ERROR: max connections", _retry("the peer's rsync daemon is at its connection limit")),
    Cause("@ERROR:", _alarm("the peer's rsync daemon refused the push")),
    Cause(PUSHCHECK_MARKER, _retry("the peer's push check refused the push")),
    Cause("pre-xfer exec returned failure", _retry("the peer's push check refused the push")),
    # ssh.
    Cause(
        "Host key verification failed",
        _alarm("the peer's ssh host key is unknown or changed: check known_hosts on this node"),
    ),
    Cause(
        "Permission denied (publickey",
        _alarm("the peer refused the mirror key: install it there with `mirrord authorize`"),
    ),
    Cause("Could not resolve hostname", _retry("the peer's name does not resolve")),
    Cause("Connection refused", _retry("the peer refused the ssh connection (sshd down?)")),
    Cause("No route to host", _retry("no route to the peer")),
    Cause("Network is unreachable", _retry("no route to the peer")),
    Cause("Connection timed out", _retry("the peer did not answer")),
    # rsync itself.
    Cause(
        "protocol version mismatch",
        _alarm("protocol incompatibility: the peer's rsync must be upgraded"),
    ),
)

# How many of the last lines `Messages` keeps for the log.
TAIL_LINES: Final = 20
# Exit codes whose meaning no message changes: success, files vanished mid-pass (already
# dirty again), rsync interrupted (we were stopping).
KEEP_MEANING: Final = frozenset({0, 20, 24})


@dataclass
class Messages:
    """What one run printed on stderr: the first line of each known cause, and the last lines."""

    # CAUSES index -> the first line that showed it.
    found: dict[int, str] = field(default_factory=dict)
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))

    def feed(self, line: str) -> None:
        """Read one line of stderr."""
        line = line.rstrip("\r\n")
        if not line.strip():
            return
        self.tail.append(line)
        for i, cause in enumerate(CAUSES):
            if i not in self.found and cause.marker in line:
                self.found[i] = line

    def cause(self) -> tuple[Cause, str] | None:
        """Return the most decisive cause seen and its line (None: nothing known)."""
        if not self.found:
            return None
        i = min(self.found)
        return CAUSES[i], self.found[i]

    @classmethod
    def of(cls, text: str) -> Messages:
        """Return the messages of a whole stderr text."""
        m = cls()
        for line in text.splitlines():
            m.feed(line)
        return m


def explain(rc: int, by_code: Outcome, messages: Messages) -> Outcome:
    """Return the outcome of a run that exited `rc` (`by_code`: the exit-code table's row).

    A known cause decides the class and the words; without one, the exit code's row stands,
    with the last line rsync printed.
    """
    if rc < 0 or rc in KEEP_MEANING:
        return by_code
    found = messages.cause()
    if found is not None:
        cause, line = found
        return Outcome(cause.outcome.result, f"{cause.outcome.reason} (rc {rc}): {line.strip()}",
                       cause.outcome.full)  # fmt: skip
    if messages.tail:
        return Outcome(by_code.result, f"{by_code.reason}: {messages.tail[-1].strip()}")
    return by_code
