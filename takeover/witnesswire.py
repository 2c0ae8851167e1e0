"""Witness messages: requests from nodes, answers from the witness, in the heartbeat's framing.

Pure: bytes in, messages or drop reasons out; no sockets, no clock (hmac and hashlib only).

Same framing as heartbeats (takeover.wire): a fixed header in network byte order, the names,
then an HMAC-SHA256 tag over every byte before it, keyed with the cluster's witness key.
The magic differs ("HAPW"), so neither kind is ever taken for the other.

Request (node -> witness), 37-byte header:

    0  magic      4s  b"HAPW"
    4  version    B   1
    5  kind       B   1 (request)
    6  op         B   takeover.lease.Op
    7  cluster    B   length of the cluster name
    8  node       B   length of the node name
    9  boot id    16s random per daemon start
   25  sequence   Q   strictly increasing per sender, across boots (as heartbeats')
   33  lease      I   requested lease, milliseconds
   37  names      n   cluster name, node name
 37+n  tag        32s HMAC-SHA256 over every byte before it

Answer (witness -> node): the same first five fields, kind 2, the verdict instead of the op,
the holder's name length, the witness's boot id and sequence, the request's sequence it
answers (`echo`), the holder's remaining lease and the granted lease in milliseconds, then
cluster, node and holder names and the tag.

Replays. The witness keeps a `takeover.wire.ReplayWindow` per cluster, keyed by node: the
heartbeat's rules (a new boot only with a higher sequence; each sequence once within the
window). A node accepts an answer only for a request it sent in this boot and has not had
answered yet (`Pending`): a captured answer, replayed, answers nothing.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import struct
from collections import Counter, OrderedDict
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from takeover.lease import Op, Verdict
from takeover.wire import MAX_NAME, TAG_SIZE, ReplayWindow

MAGIC = b"HAPW"
VERSION = 1
KIND_REQUEST = 1
KIND_ANSWER = 2
BOOT_ID_SIZE = 16
_REQUEST = struct.Struct("!4sBBBBB16sQI")
_ANSWER = struct.Struct("!4sBBBBBB16sQQII")
# Leases and remaining times travel in milliseconds (an unsigned 32-bit field: 49 days).
MAX_MS = 2**32 - 1
# Requests a node remembers while waiting for their answers (a few seconds' worth).
PENDING = 64


class WitnessDrop(enum.Enum):
    """Why a witness message was not accepted (each reason has its own counter)."""

    TRUNCATED = "truncated"
    OVERSIZED = "oversized"
    BAD_MAGIC = "bad_magic"
    BAD_VERSION = "bad_version"
    BAD_KIND = "bad_kind"
    UNKNOWN_CLUSTER = "unknown_cluster"
    BAD_MAC = "bad_mac"
    # Authentic but nonsensical (unknown op or verdict, a name not UTF-8): a sender bug.
    MALFORMED = "malformed"
    UNKNOWN_NODE = "unknown_node"
    REPLAY = "replay"
    STALE_BOOT = "stale_boot"
    # An answer to no request of ours (replayed, or to a request already answered).
    UNSOLICITED = "unsolicited"


@dataclass(frozen=True)
class Request:
    """One decoded request."""

    cluster: str
    node: str
    op: Op
    boot_id: bytes
    sequence: int
    # Requested lease, seconds.
    lease: float


@dataclass(frozen=True)
class Reply:
    """One decoded answer."""

    cluster: str
    node: str
    verdict: Verdict
    holder: str
    boot_id: bytes
    sequence: int
    # The request's sequence this answers.
    echo: int
    # Seconds the holder's lease still runs at the witness (QUIET: quiet seconds left).
    remaining: float
    # The lease granted (seconds), as requested.
    lease: float


def _ms(seconds: float) -> int:
    return max(0, min(MAX_MS, round(seconds * 1000)))


def _names(*names: str) -> bytes:
    out = b""
    for name in names:
        raw = name.encode()
        if len(raw) > MAX_NAME:
            raise ValueError(f"name must be at most {MAX_NAME} bytes, got {len(raw)}")
        out += raw
    return out


def encode_request(r: Request, key: bytes) -> bytes:
    """Return the signed datagram for `r`; raise ValueError on a field that cannot be sent."""
    if len(r.boot_id) != BOOT_ID_SIZE or not r.cluster or not r.node:
        raise ValueError("request needs a 16-byte boot id, a cluster and a node name")
    names = _names(r.cluster, r.node)
    head = _REQUEST.pack(
        MAGIC, VERSION, KIND_REQUEST, r.op.value, len(r.cluster.encode()),
        len(r.node.encode()), r.boot_id, r.sequence, _ms(r.lease),
    )  # fmt: skip
    body = head + names
    return body + hmac.new(key, body, hashlib.sha256).digest()


def encode_reply(r: Reply, key: bytes) -> bytes:
    """Return the signed datagram for `r`."""
    names = _names(r.cluster, r.node, r.holder)
    head = _ANSWER.pack(
        MAGIC, VERSION, KIND_ANSWER, r.verdict.value, len(r.cluster.encode()),
        len(r.node.encode()), len(r.holder.encode()), r.boot_id, r.sequence, r.echo,
        _ms(r.remaining), _ms(r.lease),
    )  # fmt: skip
    body = head + names
    return body + hmac.new(key, body, hashlib.sha256).digest()


def _frame(data: bytes, kind: int) -> WitnessDrop | None:
    """Check size, magic, version and kind: the cheap checks before any key is looked up."""
    head = _REQUEST if kind == KIND_REQUEST else _ANSWER
    if len(data) < head.size + 2 + TAG_SIZE:
        return WitnessDrop.TRUNCATED
    if len(data) > head.size + 3 * MAX_NAME + TAG_SIZE:
        return WitnessDrop.OVERSIZED
    if data[:4] != MAGIC:
        return WitnessDrop.BAD_MAGIC
    if data[4] != VERSION:
        return WitnessDrop.BAD_VERSION
    if data[5] != kind:
        return WitnessDrop.BAD_KIND
    return None


def _split(data: bytes, start: int, lengths: tuple[int, ...]) -> tuple[list[str], bytes] | None:
    """Return the names and the tag after the header, or None if the lengths do not fit."""
    end = start + sum(lengths)
    if len(data) != end + TAG_SIZE:
        return None
    names, at = [], start
    for n in lengths:
        try:
            names.append(data[at : at + n].decode())
        except UnicodeDecodeError:
            names.append("\0")
        at += n
    return names, data[end:]


def _authentic(data: bytes, key: bytes) -> bool:
    body, tag = data[:-TAG_SIZE], data[-TAG_SIZE:]
    return hmac.compare_digest(tag, hmac.new(key, body, hashlib.sha256).digest())


def decode_request(
    data: bytes, keys: Mapping[str, bytes], nodes: Mapping[str, Collection[str]]
) -> Request | WitnessDrop:
    """Return the request in `data`, or why it must be dropped; never raise on any input.

    `keys` and `nodes` map each served cluster to its key and its two node names. The
    cluster name is read (unauthenticated) only to pick the key; the tag is checked before
    anything else is trusted.
    """
    bad = _frame(data, KIND_REQUEST)
    if bad is not None:
        return bad
    _, _, _, op, cl, nl, boot, seq, lease_ms = _REQUEST.unpack_from(data)
    parts = _split(data, _REQUEST.size, (cl, nl))
    if parts is None:
        return WitnessDrop.TRUNCATED
    (cluster, node), _tag = parts
    key = keys.get(cluster)
    if key is None:
        return WitnessDrop.UNKNOWN_CLUSTER
    if not _authentic(data, key):
        return WitnessDrop.BAD_MAC
    if op not in {o.value for o in Op} or "\0" in node:
        return WitnessDrop.MALFORMED
    if node not in nodes.get(cluster, ()):
        return WitnessDrop.UNKNOWN_NODE
    return Request(cluster, node, Op(op), boot, seq, lease_ms / 1000)


def decode_reply(data: bytes, key: bytes, cluster: str, node: str) -> Reply | WitnessDrop:
    """Return the answer in `data` for `node` of `cluster`, or why it must be dropped."""
    bad = _frame(data, KIND_ANSWER)
    if bad is not None:
        return bad
    _, _, _, verdict, cl, nl, hl, boot, seq, echo, rem_ms, lease_ms = _ANSWER.unpack_from(data)
    parts = _split(data, _ANSWER.size, (cl, nl, hl))
    if parts is None:
        return WitnessDrop.TRUNCATED
    (got_cluster, got_node, holder), _tag = parts
    if got_cluster != cluster:
        return WitnessDrop.UNKNOWN_CLUSTER
    if not _authentic(data, key):
        return WitnessDrop.BAD_MAC
    if verdict not in {v.value for v in Verdict} or "\0" in holder:
        return WitnessDrop.MALFORMED
    if got_node != node:
        return WitnessDrop.UNKNOWN_NODE
    return Reply(
        got_cluster, got_node, Verdict(verdict), holder, boot, seq, echo, rem_ms / 1000,
        lease_ms / 1000,
    )  # fmt: skip


class Pending:
    """The requests a node sent and awaits answers to: each answered at most once."""

    def __init__(self, size: int = PENDING) -> None:
        """Remember up to `size` outstanding requests (older ones are forgotten)."""
        self.size = size
        self._sent: OrderedDict[int, tuple[float, Op, float]] = OrderedDict()

    def add(self, seq: int, sent_at: float, op: Op, lease: float) -> None:
        """Remember request `seq`, sent at `sent_at` (node clock)."""
        self._sent[seq] = (sent_at, op, lease)
        while len(self._sent) > self.size:
            self._sent.popitem(last=False)

    def take(self, echo: int) -> tuple[float, Op, float] | None:
        """Return (sent_at, op, lease) of the request `echo` answers, once; else None."""
        return self._sent.pop(echo, None)


class WitnessReceiver:
    """The witness's intake: decode, authenticate and de-duplicate, counting every outcome."""

    def __init__(self, keys: Mapping[str, bytes], nodes: Mapping[str, Collection[str]]) -> None:
        """Serve the clusters in `keys` (cluster -> key), with `nodes` (cluster -> names)."""
        self.keys = dict(keys)
        self.nodes = {k: frozenset(v) for k, v in nodes.items()}
        self.windows = {name: ReplayWindow() for name in self.keys}
        self.dropped: Counter[WitnessDrop] = Counter()
        self.accepted: Counter[str] = Counter()

    def receive(self, data: bytes) -> Request | WitnessDrop:
        """Return the request if it is authentic and fresh; else count and return the reason."""
        got = decode_request(data, self.keys, self.nodes)
        if isinstance(got, Request):
            stale = self.windows[got.cluster].check(got.node, got.boot_id, got.sequence)
            if stale is not None:
                reason = WitnessDrop(stale.value)
                self.dropped[reason] += 1
                return reason
            self.accepted[got.cluster] += 1
            return got
        self.dropped[got] += 1
        return got

    def counters(self) -> dict[str, int]:
        """Return accepted (all clusters) and every drop reason's count (zeros included)."""
        out = {"accepted": sum(self.accepted.values())}
        out.update({r.value: self.dropped[r] for r in WitnessDrop})
        return out


__all__ = [
    "Pending",
    "Reply",
    "Request",
    "WitnessDrop",
    "WitnessReceiver",
    "decode_reply",
    "decode_request",
    "encode_reply",
    "encode_request",
]
