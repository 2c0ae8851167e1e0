"""Heartbeat wire format: encode, authenticate, decode, and the per-sender replay window.

Pure: bytes in, packets or drop reasons out; no sockets, no clock (hmac and hashlib only).

Layout, network byte order (50-byte header, the sender's name, then the tag):

    0  magic     4s  b"HAPR"
    4  version   B   1
    5  flags     B   bit 0 healthy, bit 1 promote, bit 2 hold standby, bit 3 holding,
                     bit 4 maintenance, bit 5 a resource blocked by a configuration error
                     (a receiver ignores bits it does not know)
    6  role      B   index into ROLE_CODES
    7  priority  B   0..255
    8  score     B   targets the sender sees down (saturates at 255)
    9  name len  B   1..MAX_NAME
   10  boot id   16s random per daemon start
   26  sequence  Q   per datagram, strictly increasing within a boot
   34  epoch     Q   the sender's latest takeover epoch
   42  digest    8s  truncated SHA-256 of the sender's cluster configuration
   50  name      n   UTF-8 node name
 50+n  tag       32s HMAC-SHA256 over every byte before it

Each datagram gets its own sequence number, also when one round goes out on several links,
so a copy arriving on the second link is not mistaken for a replay of the first.

Boots and replays. A sender seeds its sequence at start-up from the wall clock in
microseconds, and never below the high-water mark it reserved on disk before its last stop
(`takeover.heartbeat.SequenceFloor`); it sends at most a few hundred datagrams a second. So the
first sequence of a boot is above every sequence of every earlier boot of that sender, even
after the clock was stepped back. The receiver relies on exactly that and nothing else:

- a datagram with the current boot id is fresh if its sequence is new within WINDOW of the
  newest seen (IPsec's anti-replay bitmap);
- a datagram with another boot id replaces the current boot only if its sequence is above
  the newest sequence seen from the current boot. A datagram captured from an earlier boot
  carries a lower one (it was seeded earlier) and is dropped as STALE_BOOT, however often it
  is replayed and whatever boot id it carries: one datagram can never retire the live boot;
- a restarted receiver starts from the record it kept of each sender (boot id and newest
  sequence, `ReplayWindow.restore`), so a datagram captured before the restart is dropped
  too, and the replayed role, epoch and flags never reach the state machine. Without a
  record (first start, lost state) the first authentic datagram is taken as is, and the next
  genuine heartbeat (a higher sequence) replaces it within one interval.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import struct
from collections import Counter, deque
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Final

from takeover.machine import Role

MAGIC = b"HAPR"
VERSION = 1
MAX_NAME = 64
TAG_SIZE = 32
DIGEST_SIZE = 8
BOOT_ID_SIZE = 16
_HEADER = struct.Struct("!4sBBBBBB16sQQ8s")
MIN_SIZE = _HEADER.size + 1 + TAG_SIZE
MAX_SIZE = _HEADER.size + MAX_NAME + TAG_SIZE
# Replay window width: a datagram up to this many sequence numbers behind the newest is still
# accepted once (links reorder relative to each other), like IPsec's anti-replay bitmap.
WINDOW = 64
# How many superseded boot ids per sender are remembered, so old captures stay rejected.
RETIRED_BOOTS = 8

ROLE_CODES: tuple[Role, ...] = (
    Role.STARTING,
    Role.STANDBY,
    Role.ACTIVE,
    Role.ARBITRATING,
    Role.FENCING,
    Role.RELEASING,
    Role.ISOLATED,
    Role.FAULT,
)
_FLAG_HEALTHY = 0x01
_FLAG_PROMOTE = 0x02
_FLAG_HOLD_STANDBY = 0x04
# The sender may still hold resources (active, releasing, or stale ones found at start-up).
_FLAG_HOLDING = 0x08
# The pair is in maintenance mode; an older receiver ignores the bit (and goes on deciding).
_FLAG_MAINTENANCE = 0x10
# A resource is blocked on the sender by a configuration error (OCF_ERR_CONFIGURED): the
# receiver does not take over for it. An older receiver ignores the bit.
_FLAG_BLOCKED = 0x20


class DropReason(enum.Enum):
    """Why a datagram was not accepted as a heartbeat (each reason has its own counter)."""

    TRUNCATED = "truncated"
    OVERSIZED = "oversized"
    BAD_MAGIC = "bad_magic"
    BAD_VERSION = "bad_version"
    BAD_MAC = "bad_mac"
    # Authentic but nonsensical (unknown role code, name not UTF-8): a sender bug.
    MALFORMED = "malformed"
    UNKNOWN_NODE = "unknown_node"
    # Our own heartbeat sent back to us: a reflection, never a peer.
    OWN_NODE = "own_node"
    REPLAY = "replay"
    # From a boot id the sender has since replaced: an old capture.
    STALE_BOOT = "stale_boot"
    DIGEST_MISMATCH = "digest_mismatch"
    # Not from the peer's address on the link it arrived on: dropped unread, before any MAC.
    WRONG_SOURCE = "wrong_source"


# Datagrams from the peer's address that were still refused, and what `takeover status` and
# the log tell the operator about each: the reasons a misconfigured or replaying peer produces.
REJECTION_HINTS: Final = {
    DropReason.BAD_MAC: "authentication failed: different key?",
    DropReason.BAD_VERSION: "another wire version: upgrade both nodes",
    DropReason.UNKNOWN_NODE: "unknown node name: another cluster on this address?",
    DropReason.STALE_BOOT: "from an older boot: replayed, or its sequence went back?",
}


@dataclass(frozen=True)
class Heartbeat:
    """One decoded heartbeat."""

    node: str
    boot_id: bytes
    sequence: int
    role: Role
    priority: int
    score: int
    epoch: int
    digest: bytes
    healthy: bool = True
    promote: bool = False
    hold_standby: bool = False
    holding: bool = False
    maintenance: bool = False
    blocked: bool = False


def config_digest(text: bytes) -> bytes:
    """Return the truncated digest of a configuration, as carried in heartbeats."""
    return hashlib.sha256(text).digest()[:DIGEST_SIZE]


def encode(hb: Heartbeat, key: bytes) -> bytes:
    """Return the signed datagram for `hb`; raise ValueError on a field that cannot be sent."""
    name = hb.node.encode()
    if not 1 <= len(name) <= MAX_NAME:
        raise ValueError(f"node name must be 1..{MAX_NAME} bytes, got {len(name)}")
    if len(hb.boot_id) != BOOT_ID_SIZE:
        raise ValueError(f"boot id must be {BOOT_ID_SIZE} bytes")
    flags = (
        (_FLAG_HEALTHY if hb.healthy else 0)
        | (_FLAG_PROMOTE if hb.promote else 0)
        | (_FLAG_HOLD_STANDBY if hb.hold_standby else 0)
        | (_FLAG_HOLDING if hb.holding else 0)
        | (_FLAG_MAINTENANCE if hb.maintenance else 0)
        | (_FLAG_BLOCKED if hb.blocked else 0)
    )
    head = _HEADER.pack(
        MAGIC,
        VERSION,
        flags,
        ROLE_CODES.index(hb.role),
        hb.priority,
        min(hb.score, 255),
        len(name),
        hb.boot_id,
        hb.sequence,
        hb.epoch,
        hb.digest[:DIGEST_SIZE].ljust(DIGEST_SIZE, b"\0"),
    )
    body = head + name
    return body + hmac.new(key, body, hashlib.sha256).digest()


def decode(
    data: bytes, key: bytes, known: Collection[str], own: str | None = None
) -> Heartbeat | DropReason:
    """Return the heartbeat in `data`, or why it must be dropped; never raise on any input.

    `known` are the node names of the cluster; `own` is this node's (its reflection is dropped).
    The tag is checked before any field is trusted, but after the cheap size and magic checks.
    """
    if len(data) < MIN_SIZE:
        return DropReason.TRUNCATED
    if len(data) > MAX_SIZE:
        return DropReason.OVERSIZED
    magic, version, flags, role_code, priority, score, name_len, boot, seq, epoch, digest = (
        _HEADER.unpack_from(data)
    )
    if magic != MAGIC:
        return DropReason.BAD_MAGIC
    if version != VERSION:
        return DropReason.BAD_VERSION
    end = _HEADER.size + name_len
    if len(data) < end + TAG_SIZE:
        return DropReason.TRUNCATED
    if len(data) > end + TAG_SIZE:
        return DropReason.OVERSIZED
    body, tag = data[:end], data[end:]
    if not hmac.compare_digest(tag, hmac.new(key, body, hashlib.sha256).digest()):
        return DropReason.BAD_MAC
    if name_len == 0 or role_code >= len(ROLE_CODES):
        return DropReason.MALFORMED
    try:
        node = data[_HEADER.size : end].decode()
    except UnicodeDecodeError:
        return DropReason.MALFORMED
    if own is not None and node == own:
        return DropReason.OWN_NODE
    if node not in known:
        return DropReason.UNKNOWN_NODE
    return Heartbeat(
        node=node,
        boot_id=boot,
        sequence=seq,
        role=ROLE_CODES[role_code],
        priority=priority,
        score=score,
        epoch=epoch,
        digest=digest,
        healthy=bool(flags & _FLAG_HEALTHY),
        promote=bool(flags & _FLAG_PROMOTE),
        hold_standby=bool(flags & _FLAG_HOLD_STANDBY),
        holding=bool(flags & _FLAG_HOLDING),
        maintenance=bool(flags & _FLAG_MAINTENANCE),
        blocked=bool(flags & _FLAG_BLOCKED),
    )


@dataclass
class _Window:
    """Anti-replay state for one sender."""

    boot_id: bytes
    top: int
    # Bit i set: sequence top - i was accepted.
    seen: int
    retired: deque[bytes] = field(default_factory=lambda: deque(maxlen=RETIRED_BOOTS))


class ReplayWindow:
    """Accept each (sender, boot id, sequence) at most once, tolerating reorder within WINDOW.

    A new boot id is believed only with a sequence above the newest of the current boot.
    """

    def __init__(self) -> None:
        """Start with no sender known."""
        self._senders: dict[str, _Window] = {}

    def restore(self, node: str, boot_id: bytes, top: int) -> None:
        """Start `node`'s window from a kept record: everything up to `top` counts as seen."""
        self._senders[node] = _Window(boot_id, top, (1 << WINDOW) - 1)

    def record(self, node: str) -> tuple[bytes, int] | None:
        """Return `node`'s current boot id and newest sequence (what `restore` takes), or None."""
        w = self._senders.get(node)
        return None if w is None else (w.boot_id, w.top)

    def check(self, node: str, boot_id: bytes, seq: int) -> DropReason | None:
        """Return None and remember the datagram if it is fresh; else why it is not."""
        w = self._senders.get(node)
        if w is None:
            self._senders[node] = _Window(boot_id, seq, 1)
            return None
        if boot_id != w.boot_id:
            if boot_id in w.retired or seq <= w.top:
                # Seeded before the current boot's newest datagram: an earlier boot, replayed.
                return DropReason.STALE_BOOT
            # The sender restarted: a new boot id starts a new sequence space.
            w.retired.append(w.boot_id)
            w.boot_id, w.top, w.seen = boot_id, seq, 1
            return None
        if seq > w.top:
            shift = seq - w.top
            w.seen = ((w.seen << shift) | 1) & ((1 << WINDOW) - 1) if shift < WINDOW else 1
            w.top = seq
            return None
        behind = w.top - seq
        if behind >= WINDOW or w.seen & (1 << behind):
            return DropReason.REPLAY
        w.seen |= 1 << behind
        return None


class Receiver:
    """Decode, authenticate and de-duplicate incoming datagrams, counting every outcome."""

    def __init__(
        self,
        key: bytes,
        known: Collection[str],
        own: str,
        digest: bytes | None = None,
        strict_digest: bool = False,
    ) -> None:
        """Accept heartbeats signed with `key` from `known` nodes other than `own`.

        With `digest` set, a heartbeat carrying another configuration digest is counted in
        `mismatched`; with `strict_digest` it is also dropped. Not dropping is the default:
        during a rolling configuration change, a pair that stopped hearing each other over
        a digest would split its brain.
        """
        self.key = key
        self.known = frozenset(known)
        self.own = own
        self.digest = digest
        self.strict_digest = strict_digest
        self.window = ReplayWindow()
        self.dropped: Counter[DropReason] = Counter()
        self.accepted = 0
        self.mismatched = 0

    def receive(self, data: bytes) -> Heartbeat | DropReason:
        """Return the heartbeat if it is authentic and fresh; else count and return the reason."""
        result = decode(data, self.key, self.known, self.own)
        if isinstance(result, Heartbeat):
            if self.digest_differs(result):
                self.mismatched += 1
                if self.strict_digest:
                    self.dropped[DropReason.DIGEST_MISMATCH] += 1
                    return DropReason.DIGEST_MISMATCH
            stale = self.window.check(result.node, result.boot_id, result.sequence)
            if stale is not None:
                self.dropped[stale] += 1
                return stale
            self.accepted += 1
            return result
        self.dropped[result] += 1
        return result

    def digest_differs(self, hb: Heartbeat) -> bool:
        """Return whether `hb` carries another configuration digest than ours."""
        return self.digest is not None and hb.digest != self.digest[:DIGEST_SIZE]

    def count(self, reason: DropReason) -> None:
        """Count a datagram dropped before it reached `receive` (by its source address)."""
        self.dropped[reason] += 1

    def counters(self) -> dict[str, int]:
        """Return accepted, mismatched and every drop reason's count (zeros included)."""
        out = {"accepted": self.accepted, "digest_mismatched": self.mismatched}
        out.update({r.value: self.dropped[r] for r in DropReason})
        return out
