"""Which sections of the cluster file differ between the two nodes (`takeover check --peer`).

Pure: bytes and digests in, decisions out; no sockets, no clock (callers pass `now`).

Heartbeats carry one digest of the whole configuration. When the peer's differs from ours,
each node also sends, at most every RESEND seconds while the difference lasts, one *sections
datagram* on every heartbeat link: its per-section digests (`takeover.config.config_sections`,
one per table of the file). Each digest is an HMAC of the section's text under the heartbeat
key, truncated: the peer, which holds the key, can compare; anyone else on the link learns
nothing, not even a small value by trying them all. The key file's contents and the BMC
passwords are never part of the configuration text (only their paths are). The receiving
daemon keeps the latest datagram it accepted and writes which sections differ into its
status; `takeover check --peer` reads them there.

Layout, network byte order (the heartbeat's conventions):

    0  magic     4s  b"HAPS"
    4  version   B   1
    5  count     B   number of sections
    6  name len  B   1..MAX_NAME
    7  boot id   16s the sender's heartbeat boot id
   23  sequence  Q   from the sender's heartbeat sequence (strictly increasing)
   31  name      n   UTF-8 node name
       count x (name len B, section name, digest 8s)
       tag       32s HMAC-SHA256 over every byte before it

A datagram is accepted only from the peer's current heartbeat boot and above the sequence of
the last one accepted: a replayed capture cannot bring back an older answer.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from takeover.wire import BOOT_ID_SIZE, MAX_NAME, TAG_SIZE

MAGIC = b"HAPS"
VERSION = 1
SECTION_DIGEST_SIZE = 8
_HEADER = struct.Struct("!4sBBB16sQ")
# Seconds between two sections datagrams while the peer's digest differs.
RESEND = 5.0


def section_digests(sections: Mapping[str, str], key: bytes) -> dict[str, bytes]:
    """Return each section's keyed, truncated digest (HMAC-SHA256 of its name and text)."""
    return {
        name: hmac.new(key, f"{name}\0{text}".encode(), hashlib.sha256).digest()[
            :SECTION_DIGEST_SIZE
        ]
        for name, text in sections.items()
    }


@dataclass(frozen=True)
class Sections:
    """One decoded sections datagram."""

    node: str
    boot_id: bytes
    sequence: int
    digests: dict[str, bytes]


def encode(
    node: str, boot_id: bytes, sequence: int, digests: Mapping[str, bytes], key: bytes
) -> bytes:
    """Return the signed sections datagram of `node`."""
    name = node.encode()
    body = _HEADER.pack(MAGIC, VERSION, len(digests), len(name), boot_id, sequence) + name
    for section, digest in sorted(digests.items()):
        raw = section.encode()
        body += bytes([len(raw)]) + raw + digest[:SECTION_DIGEST_SIZE]
    return body + hmac.new(key, body, hashlib.sha256).digest()


def is_sections(data: bytes) -> bool:
    """Tell a sections datagram from a heartbeat by its magic (nothing is trusted yet)."""
    return data[:4] == MAGIC


def decode(data: bytes, key: bytes, peer: str) -> Sections | str:
    """Return the sections in `data`, or why it is refused; never raise on any input."""
    if len(data) < _HEADER.size + 1 + TAG_SIZE:
        return "truncated"
    body, tag = data[:-TAG_SIZE], data[-TAG_SIZE:]
    if not hmac.compare_digest(tag, hmac.new(key, body, hashlib.sha256).digest()):
        return "bad_mac"
    magic, version, count, name_len, boot, seq = _HEADER.unpack_from(body)
    if magic != MAGIC or version != VERSION or not 0 < name_len <= MAX_NAME:
        return "malformed"
    at = _HEADER.size + name_len
    try:
        node = body[_HEADER.size : at].decode()
        digests: dict[str, bytes] = {}
        for _ in range(count):
            size = body[at]
            section = body[at + 1 : at + 1 + size].decode()
            digest = body[at + 1 + size : at + 1 + size + SECTION_DIGEST_SIZE]
            if len(digest) != SECTION_DIGEST_SIZE:
                return "malformed"
            digests[section] = digest
            at += 1 + size + SECTION_DIGEST_SIZE
    except (IndexError, UnicodeDecodeError):
        return "malformed"
    if at != len(body) or len(boot) != BOOT_ID_SIZE:
        return "malformed"
    if node != peer:
        return "unknown_node"
    return Sections(node=node, boot_id=boot, sequence=seq, digests=digests)


def differing(ours: Mapping[str, bytes], theirs: Mapping[str, bytes]) -> list[str]:
    """Return the sections whose digests differ, or that only one side has, sorted."""
    return sorted(s for s in ours.keys() | theirs.keys() if ours.get(s) != theirs.get(s))


class DriftExchange:
    """What one node knows of the configuration drift with its peer, and when to speak."""

    def __init__(self, ours: Mapping[str, bytes], resend: float = RESEND) -> None:
        """Start knowing nothing of the peer; `ours` are this node's section digests."""
        self.ours = dict(ours)
        self.resend = resend
        # The last valid heartbeat carried another configuration digest than ours.
        self.digest_differs = False
        self.peer: Sections | None = None
        self.received_at: float | None = None
        self._next = 0.0

    def heard(self, digest_differs: bool) -> None:
        """Note what the peer's last valid heartbeat said; agreement forgets its sections."""
        if self.digest_differs and not digest_differs:
            self._next = 0.0
        self.digest_differs = digest_differs
        if not digest_differs:
            self.peer, self.received_at = None, None

    def due(self, now: float) -> bool:
        """Return whether to send our sections now (drift seen, RESEND since the last)."""
        if not self.digest_differs or now < self._next:
            return False
        self._next = now + self.resend
        return True

    def accept(self, got: Sections, current: tuple[bytes, int] | None, now: float) -> str | None:
        """Keep `got` unless it is not from the peer's current boot (`current`: its boot id
        and newest heartbeat sequence) or not newer than the last kept; return why not."""
        if current is None or got.boot_id != current[0]:
            return "stale_boot"
        last = self.peer
        if last is not None and last.boot_id == got.boot_id and got.sequence <= last.sequence:
            return "replay"
        self.peer, self.received_at = got, now
        return None

    def describe(self, now: float) -> dict[str, Any] | None:
        """Return the status view: None without drift; else the differing sections (None
        while the peer has not told them) and how old what it told is."""
        if not self.digest_differs:
            return None
        if self.peer is None or self.received_at is None:
            return {"digest_differs": True, "sections": None, "peer_sections_age": None}
        return {
            "digest_differs": True,
            "sections": differing(self.ours, self.peer.digests),
            "peer_sections_age": round(now - self.received_at, 3),
        }
