"""Per-link accounting of HeartbeatLinks, fed datagrams directly (no sockets opened)."""

from __future__ import annotations

from dataclasses import dataclass, field

from takeover import wire
from takeover.heartbeat import INTERNAL_ERROR, HeartbeatLinks, LinkStats
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
