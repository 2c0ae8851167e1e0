"""Per-link accounting of HeartbeatLinks, fed datagrams directly (no sockets opened)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from ipaddress import ip_address
from pathlib import Path

import pytest

from takeover import wire
from takeover.heartbeat import (
    INTERNAL_ERROR,
    MAX_PER_TURN,
    PEER_RECORD_NAME,
    SEQUENCE_NAME,
    HeartbeatLinks,
    LinkSpec,
    LinkStats,
    PeerRecord,
    SequenceFloor,
    from_address,
)
from takeover.machine import Role

KEY = b"k" * 32


@dataclass
class FakeLink:
    """Stands in for a bound link: only its counters are used when handling a datagram."""

    stats: LinkStats = field(default_factory=LinkStats)


class FakeClock:
    """A settable clock."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class ExplodingReceiver(wire.Receiver):
    """A receiver with a bug: every datagram raises."""

    def receive(self, data: bytes) -> wire.Heartbeat | wire.DropReason:
        raise RuntimeError("bug")


def _beat(seq: int, key: bytes = KEY) -> bytes:
    hb = wire.Heartbeat("b", b"\x01" * 16, seq, Role.ACTIVE, 100, 0, 1, b"\0" * 8)
    return wire.encode(hb, key)


def _links(receiver: wire.Receiver, clock: FakeClock) -> tuple[HeartbeatLinks, list[str]]:
    heard: list[str] = []
    links = HeartbeatLinks([], 7405, receiver, lambda name, hb: heard.append(f"{name}:{hb.node}"),
                           clock=clock)  # fmt: skip
    return links, heard


def test_valid_heartbeat_counts_and_stamps_last_seen() -> None:
    """A valid heartbeat is counted on its link, stamped with the clock and handed on."""
    clock = FakeClock()
    links, heard = _links(wire.Receiver(KEY, {"a", "b"}, "a"), clock)
    link = FakeLink()
    links._handle("lan", link, _beat(1))  # type: ignore[arg-type]
    assert (link.stats.received, link.stats.last_seen) == (1, 100.0)
    assert heard == ["lan:b"]
    assert link.stats.as_dict(100.25)["last_seen_age"] == 0.25


def test_forged_replayed_and_truncated_are_dropped_per_reason() -> None:
    """Wrong key, a replay and a truncated datagram each land in their own drop counter."""
    links, heard = _links(wire.Receiver(KEY, {"a", "b"}, "a"), FakeClock())
    link = FakeLink()
    for data in (_beat(1), _beat(1), _beat(2, b"x" * 32), b"HAPR"):
        links._handle("lan", link, data)  # type: ignore[arg-type]
    assert link.stats.received == 1
    assert dict(link.stats.dropped) == {"replay": 1, "bad_mac": 1, "truncated": 1}
    assert heard == ["lan:b"]


def test_a_receiver_bug_is_counted_not_raised() -> None:
    """An exception while handling a datagram is counted as internal_error, not propagated."""
    links, heard = _links(ExplodingReceiver(KEY, {"a", "b"}, "a"), FakeClock())
    link = FakeLink()
    links._handle("direct", link, _beat(1))  # type: ignore[arg-type]
    assert link.stats.dropped == {INTERNAL_ERROR: 1}
    assert heard == []


def test_no_links_means_nothing_seen() -> None:
    """Without links, last_seen is None and stats are empty."""
    links, _ = _links(wire.Receiver(KEY, {"a", "b"}, "a"), FakeClock())
    assert links.last_seen() is None
    assert links.stats() == {}
    assert links.send(lambda: b"") == 0


def test_peer_record_round_trip_and_corrupt_record(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The kept record restores the peer's window; an unreadable one is ignored, not fatal; a
    failing write is logged once."""
    rx = wire.Receiver(KEY, {"a", "b"}, "a")
    assert isinstance(rx.receive(_beat(41)), wire.Heartbeat)
    PeerRecord(tmp_path, "b").store(rx)
    again = wire.Receiver(KEY, {"a", "b"}, "a")
    PeerRecord(tmp_path, "b").load(again)
    assert again.window.record("b") == (b"\x01" * 16, 41)
    assert again.receive(_beat(41)) is wire.DropReason.REPLAY
    (tmp_path / PEER_RECORD_NAME).write_text("{not json")
    fresh = wire.Receiver(KEY, {"a", "b"}, "a")
    PeerRecord(tmp_path, "b").load(fresh)
    assert fresh.window.record("b") is None
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    record = PeerRecord(blocked, "b")
    with caplog.at_level(logging.ERROR, logger="takeover.heartbeat"):
        record.store(rx)
        record.store(rx)
    assert [r.levelno for r in caplog.records].count(logging.ERROR) == 1


def test_sequence_floor_reserves_ahead_of_what_is_sent(tmp_path: Path) -> None:
    """The mark on disk stays above every sequence handed out, and seeds the next start."""
    floor = SequenceFloor(tmp_path, 1000)
    assert floor.first == 1000
    mark = int((tmp_path / SEQUENCE_NAME).read_text())
    assert mark > 1000
    floor.cover(mark)
    assert int((tmp_path / SEQUENCE_NAME).read_text()) > mark
    assert SequenceFloor(tmp_path, 5).first > mark


class FakeSocket:
    """A socket with queued datagrams: `recvfrom` pops them, then would block."""

    def __init__(self, queued: list[tuple[bytes, tuple[str, int]]]) -> None:
        self.queued = list(queued)
        self.reads = 0

    def recvfrom(self, size: int) -> tuple[bytes, tuple[str, int]]:
        self.reads += 1
        if not self.queued:
            raise BlockingIOError
        return self.queued.pop(0)


LAN = LinkSpec("lan", ip_address("192.0.2.1"), ip_address("192.0.2.2"))


@dataclass
class FakeSocketLink:
    """A link with a spec and a fake socket, as `_read` uses it."""

    sock: FakeSocket
    spec: LinkSpec = field(default_factory=lambda: LAN)
    stats: LinkStats = field(default_factory=LinkStats)


class CountingReceiver(wire.Receiver):
    """A receiver that counts how many datagrams reached it (each costs an HMAC)."""

    calls = 0

    def receive(self, data: bytes) -> wire.Heartbeat | wire.DropReason:
        self.calls += 1
        return super().receive(data)


def test_flood_from_another_address_is_dropped_before_any_mac() -> None:
    """Datagrams not from the peer's address on the link are counted as wrong_source unread;
    the peer's own heartbeat among them is accepted."""
    rx = CountingReceiver(KEY, {"a", "b"}, "a")
    links, heard = _links(rx, FakeClock())
    flood = [(_beat(100 + i), ("192.0.2.99", 7405)) for i in range(10)]
    sock = FakeSocket([*flood, (_beat(1), ("192.0.2.2", 7405))])
    link = FakeSocketLink(sock)
    links._links["lan"] = link  # type: ignore[assignment]
    assert links._read("lan") == 11
    assert rx.calls == 1
    assert heard == ["lan:b"]
    assert link.stats.dropped == {"wrong_source": 10}
    assert rx.counters()["wrong_source"] == 10


def test_reads_per_turn_are_bounded() -> None:
    """One turn reads at most MAX_PER_TURN datagrams; the rest wait for the next turn."""
    rx = CountingReceiver(KEY, {"a", "b"}, "a")
    links, _ = _links(rx, FakeClock())
    queued = [(b"HAPR", ("192.0.2.2", 7405))] * (MAX_PER_TURN + 10)
    link = FakeSocketLink(FakeSocket(queued))
    links._links["lan"] = link  # type: ignore[assignment]
    assert links._read("lan") == MAX_PER_TURN
    assert len(link.sock.queued) == 10
    assert links._read("lan") == 10


@pytest.mark.parametrize(
    ("source", "peer", "same"),
    [
        ("192.0.2.2", "192.0.2.2", True),
        ("192.0.2.3", "192.0.2.2", False),
        ("2001:db8::2", "2001:db8:0::2", True),
        ("fe80::2%hb0", "fe80::2", True),
        ("garbage", "192.0.2.2", False),
    ],
)
def test_from_address(source: str, peer: str, same: bool) -> None:
    """A source matches the peer by address value, whatever its spelling or scope suffix."""
    assert from_address(source, ip_address(peer)) is same


def test_wrong_key_from_the_peer_is_a_rate_limited_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Heartbeats from the peer's address that fail authentication are remembered per link and
    warned about once a minute, naming the peer and the likely cause."""
    clock = FakeClock()
    links, heard = _links(wire.Receiver(KEY, {"a", "b"}, "a"), clock)
    link = FakeLink()
    with caplog.at_level(logging.WARNING, logger="takeover.heartbeat"):
        for seq in range(1, 6):
            links._handle("lan", link, _beat(seq, b"x" * 32))  # type: ignore[arg-type]
            clock.now += 0.2
        clock.now += 60.0
        links._handle("lan", link, _beat(9, b"x" * 32))  # type: ignore[arg-type]
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2
    assert "heartbeats from b rejected: authentication failed: different key?" in warnings[0]
    assert "(4 more since the last warning)" in warnings[1]
    assert heard == []
    assert link.stats.as_dict(clock.now)["rejected_age"] == {"bad_mac": 0.0}


def test_config_drift_is_noted_and_warned_while_heartbeats_are_accepted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A heartbeat with another config digest is accepted, flagged on its link and warned."""
    clock = FakeClock()
    rx = wire.Receiver(KEY, {"a", "b"}, "a", digest=b"\1" * 8)
    links, heard = _links(rx, clock)
    link = FakeLink()
    with caplog.at_level(logging.WARNING, logger="takeover.heartbeat"):
        links._handle("lan", link, _beat(1))  # type: ignore[arg-type]
        links._handle("lan", link, _beat(2))  # type: ignore[arg-type]
    assert heard == ["lan:b", "lan:b"]
    assert link.stats.as_dict(clock.now)["digest_differs"] is True
    assert len(caplog.records) == 1 and "cluster files differ" in caplog.records[0].getMessage()
    same = wire.Receiver(KEY, {"a", "b"}, "a", digest=b"\0" * 8)
    links2, _ = _links(same, clock)
    link2 = FakeLink()
    links2._handle("lan", link2, _beat(1))  # type: ignore[arg-type]
    assert link2.stats.digest_differs is False
