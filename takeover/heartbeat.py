"""Heartbeat links: one UDP socket per configured link, and the shared key file.

Each link (the direct cable, the LAN, ...) has its own socket bound to this node's address on
that link, so a heartbeat's arrival says which path still works. Sockets are non-blocking and
read by the running asyncio loop (`add_reader`); `drain()` reads whatever is queued right now,
which the daemon calls after its own loop stalled, before it dares conclude the peer is dead.

Decoding, authentication and replay protection are `takeover.wire`'s (pure); this module counts
per link: last valid heartbeat, accepted, dropped per reason, sent, send errors. Nothing a
datagram contains can raise out of here: it is dropped and counted.

A send that would block is dropped, not queued: a heartbeat is only worth its freshness.

Run `python -m takeover.heartbeat --help` for a two-node exchange by hand (the lab tests' entry).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import socket
import stat
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from takeover import wire
from takeover.drift import is_sections
from takeover.entry import run_json
from takeover.fsutil import write_atomic
from takeover.machine import Role
from takeover.wire import REJECTION_HINTS, DropReason, Heartbeat, Receiver

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
MIN_KEY_BYTES: Final = 32
MAX_DATAGRAM: Final = 2048
# DSCP CS6 ("network control"): queued ahead of bulk traffic such as a running mirror pass.
TOS_CS6: Final = 0xC0
# Counter name for a datagram whose handling failed unexpectedly (a bug, not an attack).
INTERNAL_ERROR: Final = "internal_error"
# Datagrams read from one link per loop turn. The reader is level-triggered: what a flood
# leaves queued is read on the next turn, after the loop has sent, ticked and served status.
MAX_PER_TURN: Final = 64
# Seconds between two warnings of one kind on one link (rejected heartbeats, config drift):
# the first one tells, the rest would only fill the journal.
WARN_EVERY: Final = 60.0


class KeyFileError(Exception):
    """The heartbeat key file is missing, too short or not private; the message names it."""


class HeartbeatError(Exception):
    """A heartbeat socket could not be opened; the message names the link and address."""


def load_key(path: str | os.PathLike[str]) -> bytes:
    """Read the shared key: refuse a missing file, fewer than 32 bytes, or group/other access.

    Surrounding whitespace is stripped (a trailing newline from `echo` must not count).
    """
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise KeyFileError(f"{p}: key file not found") from None
    except OSError as e:
        raise KeyFileError(f"{p}: cannot read key file: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise KeyFileError(f"{p}: key file is not a regular file")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise KeyFileError(
            f"{p}: key file is accessible by group or others (mode {mode:04o}); run: chmod 600 {p}"
        )
    try:
        key = p.read_bytes().strip()
    except OSError as e:
        raise KeyFileError(f"{p}: cannot read key file: {e.strerror}") from None
    if len(key) < MIN_KEY_BYTES:
        raise KeyFileError(
            f"{p}: key too short: {len(key)} bytes after stripping whitespace, "
            f"need at least {MIN_KEY_BYTES}"
        )
    return key


# In the state dir: the sequence high-water mark this node reserved, and what it knows of the
# peer's boots (see "Boots and replays" in takeover.wire).
SEQUENCE_NAME: Final = "heartbeat-sequence"
PEER_RECORD_NAME: Final = "heartbeat-peer.json"
# Sequence numbers reserved on disk at a time: a day at a hundred datagrams a second.
SEQUENCE_RESERVE: Final = 10_000_000


class SequenceFloor:
    """This node's first heartbeat sequence, and the high-water mark kept on disk.

    The first sequence is the wall clock in microseconds, but never below the mark an
    earlier boot reserved: a receiver believes a new boot only with a higher sequence, so a
    clock stepped back between two starts must not make the new boot look older. A mark that
    cannot be written is logged; the wall clock alone then carries the promise.
    """

    def __init__(self, state_dir: Path, wall_us: int) -> None:
        """Read the mark in `state_dir` and reserve the first block."""
        self.path = state_dir / SEQUENCE_NAME
        try:
            floor = int(self.path.read_text().strip() or 0)
        except (OSError, ValueError):
            floor = 0
        self.first = max(wall_us, floor)
        self.reserved = 0
        self.cover(self.first)

    def cover(self, seq: int) -> None:
        """Make sure the mark on disk is above `seq` before it is sent."""
        if seq < self.reserved:
            return
        mark = seq + SEQUENCE_RESERVE
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path, f"{mark}\n", durable=True)
        except OSError as e:
            log.error("heartbeat.sequence_store_failed path=%s error=%s", self.path, e.strerror)
        # Even when the write failed: retrying on every datagram would not help.
        self.reserved = mark


class PeerRecord:
    """What this node keeps of the peer's boots in its state dir, so that a restart of this
    daemon does not reopen the replay window (see "Boots and replays" in takeover.wire)."""

    def __init__(self, state_dir: Path, peer: str) -> None:
        """Keep `peer`'s record in `state_dir`."""
        self.path = state_dir / PEER_RECORD_NAME
        self.peer = peer
        self._failing = False

    def load(self, receiver: Receiver) -> None:
        """Start `receiver`'s window for the peer from the kept record, if there is one."""
        try:
            doc = json.loads(self.path.read_text())
            node, boot, top = str(doc["node"]), bytes.fromhex(doc["boot_id"]), int(doc["top"])
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("heartbeat.peer_record_unreadable path=%s error=%s", self.path, e)
            return
        if node == self.peer and len(boot) == wire.BOOT_ID_SIZE:
            receiver.window.restore(node, boot, top)
            log.info("heartbeat.peer_record node=%s boot=%s top=%d", node, boot.hex(), top)

    def store(self, receiver: Receiver) -> None:
        """Keep the peer's current boot id and newest sequence (not fsynced: a restart of the
        daemon is what it is for); a failure is logged once until a write succeeds again."""
        record = receiver.window.record(self.peer)
        if record is None:
            return
        doc = {"node": self.peer, "boot_id": record[0].hex(), "top": record[1]}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path, json.dumps(doc) + "\n")
        except OSError as e:
            if not self._failing:
                log.error("heartbeat.peer_record_store_failed path=%s error=%s", self.path, e)
            self._failing = True
        else:
            self._failing = False


@dataclass(frozen=True)
class LinkSpec:
    """One heartbeat path as this node sees it."""

    # Link name from the cluster file ("direct", "lan").
    name: str
    # This node's address on the link; the socket binds to it.
    local: IPAddress
    # The peer's address on the link; heartbeats go there.
    peer: IPAddress
    # Bind to this interface too (SO_BINDTODEVICE), or None.
    device: str | None = None


@dataclass
class LinkStats:
    """What one link has seen since start-up."""

    # Clock time of the last valid heartbeat, or None.
    last_seen: float | None = None
    received: int = 0
    sent: int = 0
    send_errors: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    # Per REJECTION_HINTS reason: clock time of the last such datagram from the peer's address.
    rejected: dict[str, float] = field(default_factory=dict)
    # The last valid heartbeat carried another configuration digest than ours.
    digest_differs: bool = False
    # Per warning kind: when it was last logged, and how many were not logged since.
    warned: dict[str, float] = field(default_factory=dict)
    unwarned: Counter[str] = field(default_factory=Counter)

    def as_dict(self, now: float) -> dict[str, object]:
        """A JSON-friendly view, with the age of the last heartbeat in seconds."""
        age = None if self.last_seen is None else round(now - self.last_seen, 3)
        return {
            "last_seen_age": age,
            "received": self.received,
            "sent": self.sent,
            "send_errors": self.send_errors,
            "dropped": dict(self.dropped),
            "rejected_age": {r: round(now - t, 3) for r, t in self.rejected.items()},
            "digest_differs": self.digest_differs,
        }

    def should_warn(self, kind: str, now: float) -> int | None:
        """Return how many of `kind` went unlogged before this one if it is time to warn again,
        else None (and count it)."""
        last = self.warned.get(kind)
        if last is not None and now - last < WARN_EVERY:
            self.unwarned[kind] += 1
            return None
        self.warned[kind] = now
        return self.unwarned.pop(kind, 0)


class _Link:
    def __init__(self, spec: LinkSpec, port: int) -> None:
        self.spec = spec
        self.peer = (str(spec.peer), port)
        self.stats = LinkStats()
        family = socket.AF_INET if spec.local.version == 4 else socket.AF_INET6
        where = f"heartbeat link {spec.name}: {spec.local} port {port}"
        try:
            self.sock = socket.socket(family, socket.SOCK_DGRAM)
        except OSError as e:
            raise HeartbeatError(f"{where}: {e.strerror}") from None
        try:
            self.sock.setblocking(False)
            if family == socket.AF_INET:
                self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, TOS_CS6)
            else:
                self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, TOS_CS6)
            if spec.device:
                self.sock.setsockopt(
                    socket.SOL_SOCKET, socket.SO_BINDTODEVICE, spec.device.encode()
                )
            self.sock.bind((str(spec.local), port))
        except OSError as e:
            self.sock.close()
            raise HeartbeatError(f"{where}: {e.strerror}") from None


class HeartbeatLinks:
    """The UDP sockets of every heartbeat link, with per-link counters."""

    def __init__(
        self,
        links: Sequence[LinkSpec],
        port: int,
        receiver: Receiver,
        on_heartbeat: Callable[[str, Heartbeat], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Bind one socket per link now (start-up); nothing is read until `start()`."""
        self.receiver = receiver
        self.on_heartbeat = on_heartbeat
        self.clock = clock
        # The peer's name, for warnings about datagrams that do not authenticate as it.
        self.peer_name = ",".join(sorted(receiver.known - {receiver.own})) or "peer"
        self._links: dict[str, _Link] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_sections: Callable[[str, bytes], None] | None = None
        try:
            for spec in links:
                self._links[spec.name] = _Link(spec, port)
                log.info(
                    "heartbeat.link_open link=%s local=%s peer=%s port=%d",
                    spec.name,
                    spec.local,
                    spec.peer,
                    port,
                )
        except HeartbeatError:
            self.close()
            raise

    def start(self) -> None:
        """Read every link from the running loop from now on."""
        self._loop = asyncio.get_running_loop()
        for name, link in self._links.items():
            self._loop.add_reader(link.sock, self._read, name)

    def close(self) -> None:
        """Stop reading and close every socket."""
        for link in self._links.values():
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(link.sock)
            link.sock.close()
        self._loop = None

    def send(self, make: Callable[[], bytes]) -> int:
        """Send one datagram per link, each from a fresh `make()` (its own sequence number).

        Returns how many links took one. A failure (link down, no route, buffer full) is
        counted on the link and logged at debug: it repeats every interval while it lasts.
        """
        ok = 0
        for name, link in self._links.items():
            data = make()
            try:
                link.sock.sendto(data, link.peer)
            except OSError as e:
                link.stats.send_errors += 1
                log.debug("heartbeat.send_failed link=%s error=%s", name, e.strerror)
                continue
            link.stats.sent += 1
            ok += 1
        return ok

    def drain(self) -> int:
        """Read and handle the datagrams queued now (a bounded number per link); return how many."""
        return sum(self._read(name, 4 * MAX_PER_TURN) for name in self._links)

    def stats(self) -> dict[str, dict[str, object]]:
        """Per link: last-seen age, received, sent, send errors, drops per reason."""
        now = self.clock()
        return {name: link.stats.as_dict(now) for name, link in self._links.items()}

    def last_seen(self) -> float | None:
        """Clock time of the newest valid heartbeat on any link, or None."""
        seen = [lk.stats.last_seen for lk in self._links.values() if lk.stats.last_seen]
        return max(seen) if seen else None

    def _read(self, name: str, limit: int = MAX_PER_TURN) -> int:
        link = self._links[name]
        handled = 0
        while handled < limit:
            try:
                data, addr = link.sock.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return handled
            except OSError as e:
                # ICMP port unreachable from an earlier send: the peer's daemon is not there.
                # The error is cleared by reading it; queued data wakes the loop again.
                link.stats.send_errors += 1
                log.debug("heartbeat.socket_error link=%s error=%s", name, e.strerror)
                return handled
            handled += 1
            if not from_address(addr[0], link.spec.peer):
                # Cheap to refuse, dear to authenticate: a flood from elsewhere costs no HMAC.
                link.stats.dropped[DropReason.WRONG_SOURCE.value] += 1
                self.receiver.count(DropReason.WRONG_SOURCE)
                continue
            self._handle(name, link, data)
        return handled

    def listen_sections(self, callback: Callable[[str, bytes], None]) -> None:
        """Hand sections datagrams (takeover.drift) to `callback` instead of the receiver."""
        self._on_sections = callback

    def _handle(self, name: str, link: _Link, data: bytes) -> None:
        try:
            if self._on_sections is not None and is_sections(data):
                self._on_sections(name, data)
                return
            result = self.receiver.receive(data)
            if isinstance(result, DropReason):
                link.stats.dropped[result.value] += 1
                log.debug("heartbeat.dropped link=%s reason=%s", name, result.value)
                if result in REJECTION_HINTS:
                    self._rejected(name, link, result)
                return
            link.stats.received += 1
            link.stats.last_seen = self.clock()
            self._check_digest(name, link, result)
            self.on_heartbeat(name, result)
        except Exception:
            # Never let one datagram stop the daemon; count it so the bug is visible.
            link.stats.dropped[INTERNAL_ERROR] += 1
            log.exception("heartbeat.handle_failed link=%s", name)

    def _rejected(self, name: str, link: _Link, reason: DropReason) -> None:
        """A datagram from the peer's address was refused: remember it, warn now and then."""
        now = self.clock()
        link.stats.rejected[reason.value] = now
        skipped = link.stats.should_warn(reason.value, now)
        if skipped is not None:
            log.warning(
                "heartbeat.rejected link=%s reason=%s: heartbeats from %s rejected: %s "
                "(%d more since the last warning)",
                name,
                reason.value,
                self.peer_name,
                REJECTION_HINTS[reason],
                skipped,
            )

    def _check_digest(self, name: str, link: _Link, hb: Heartbeat) -> None:
        """Note and warn (now and then) when the peer runs another configuration."""
        differs = self.receiver.digest_differs(hb)
        link.stats.digest_differs = differs
        if differs and link.stats.should_warn("digest", self.clock()) is not None:
            log.warning(
                "heartbeat.config_drift link=%s peer=%s digest=%s ours=%s: heartbeats accepted, "
                "but the cluster files differ: compare them on both nodes",
                name,
                hb.node,
                hb.digest.hex(),
                (self.receiver.digest or b"").hex(),
            )


def from_address(source: str, peer: IPAddress) -> bool:
    """Return whether a datagram's source address (as recvfrom gives it) is `peer`."""
    if source == str(peer):
        return True
    try:
        return ipaddress.ip_address(source.partition("%")[0]) == peer
    except ValueError:
        return False


def _parse_link(text: str) -> LinkSpec:
    """NAME=LOCAL,PEER[,DEVICE] from the command line."""
    name, _, rest = text.partition("=")
    parts = rest.split(",")
    if not name or len(parts) not in (2, 3):
        raise argparse.ArgumentTypeError(f"expected NAME=LOCAL,PEER[,DEVICE], got {text!r}")
    device = parts[2] if len(parts) == 3 else None
    return LinkSpec(name, ipaddress.ip_address(parts[0]), ipaddress.ip_address(parts[1]), device)


def main(argv: Sequence[str] | None = None) -> int:
    """Exchange heartbeats with a peer for a while and print per-link counters as JSON."""
    parser = argparse.ArgumentParser(prog="python -m takeover.heartbeat")
    parser.add_argument("--key", required=True, help="key file")
    parser.add_argument("--node", required=True)
    parser.add_argument("--peer", required=True)
    parser.add_argument("--port", type=int, default=7405)
    parser.add_argument("--interval", type=float, default=0.05)
    parser.add_argument("--duration", type=float, default=1.0)
    parser.add_argument("--link", action="append", type=_parse_link, required=True)
    args = parser.parse_args(argv)
    boot_id = os.urandom(16)
    peers: Counter[str] = Counter()

    def on_heartbeat(link: str, hb: Heartbeat) -> None:
        peers[f"{link}:{hb.node}"] += 1

    async def run() -> dict[str, object]:
        key = load_key(args.key)
        receiver = Receiver(key, {args.node, args.peer}, args.node)
        links = HeartbeatLinks(args.link, args.port, receiver, on_heartbeat)
        links.start()
        seq = 0

        def make() -> bytes:
            nonlocal seq
            seq += 1
            hb = Heartbeat(args.node, boot_id, seq, Role.STANDBY, 100, 0, 0, b"\0" * 8)
            return wire.encode(hb, key)

        loop = asyncio.get_running_loop()
        end = loop.time() + args.duration
        with contextlib.closing(links):
            while loop.time() < end:
                links.send(make)
                await asyncio.sleep(args.interval)
            return {"links": links.stats(), "heard": dict(peers)}

    return run_json(run, (HeartbeatError, KeyFileError))


if __name__ == "__main__":
    sys.exit(main())
