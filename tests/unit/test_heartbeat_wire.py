"""Heartbeat wire format: round trip, every drop reason, the replay window, random bytes."""

from __future__ import annotations

import hashlib
import hmac
import random
import struct
from dataclasses import replace

import pytest

from takeover.machine import Role
from takeover.wire import (
    MAX_SIZE,
    MIN_SIZE,
    WINDOW,
    DropReason,
    Heartbeat,
    Receiver,
    ReplayWindow,
    config_digest,
    decode,
    encode,
)

KEY = b"k" * 32
NODES = ("alpha", "beta")
DIGEST = config_digest(b"cluster v1")
BOOT = bytes(range(16))
HB = Heartbeat(
    node="beta",
    boot_id=BOOT,
    sequence=7,
    role=Role.ACTIVE,
    priority=100,
    score=2,
    epoch=41,
    digest=DIGEST,
    healthy=False,
    promote=True,
    hold_standby=False,
    holding=True,
)


def resign(data: bytes, key: bytes = KEY) -> bytes:
    """Return `data` with its tag recomputed, so a field change passes authentication."""
    body = data[:-32]
    return body + hmac.new(key, body, hashlib.sha256).digest()


def test_round_trip_preserves_every_field() -> None:
    """Encoding then decoding returns the same heartbeat, flags included."""
    assert decode(encode(HB, KEY), KEY, NODES, own="alpha") == HB


@pytest.mark.parametrize("role", list(Role))
def test_round_trip_every_role(role: Role) -> None:
    """Every role survives the wire."""
    hb = replace(HB, role=role)
    assert decode(encode(hb, KEY), KEY, NODES) == hb


def test_score_saturates_at_255() -> None:
    """A score above one byte is sent as 255 rather than failing the heartbeat."""
    out = decode(encode(replace(HB, score=1000), KEY), KEY, NODES)
    assert isinstance(out, Heartbeat) and out.score == 255


def test_encode_rejects_bad_fields() -> None:
    """An empty node name or a wrong-sized boot id cannot be encoded."""
    with pytest.raises(ValueError, match="node name"):
        encode(replace(HB, node=""), KEY)
    with pytest.raises(ValueError, match="boot id"):
        encode(replace(HB, boot_id=b"short"), KEY)


def _bad_version() -> bytes:
    data = bytearray(encode(HB, KEY))
    data[4] = 9
    return resign(bytes(data))


def _bad_role() -> bytes:
    data = bytearray(encode(HB, KEY))
    data[6] = 200
    return resign(bytes(data))


def _bad_utf8() -> bytes:
    data = bytearray(encode(replace(HB, node="beta"), KEY))
    data[50] = 0xFF
    return resign(bytes(data))


def _name_len_too_long() -> bytes:
    data = bytearray(encode(HB, KEY))
    data[9] = 60
    return bytes(data)


DROPS = [
    ("truncated_short", encode(HB, KEY)[: MIN_SIZE - 1], DropReason.TRUNCATED),
    ("truncated_name_len", _name_len_too_long(), DropReason.TRUNCATED),
    ("oversized", encode(HB, KEY) + b"x" * MAX_SIZE, DropReason.OVERSIZED),
    ("oversized_trailing", encode(HB, KEY) + b"x", DropReason.OVERSIZED),
    ("bad_magic", b"XXXX" + encode(HB, KEY)[4:], DropReason.BAD_MAGIC),
    ("bad_version", _bad_version(), DropReason.BAD_VERSION),
    ("bad_mac_wrong_key", encode(HB, b"x" * 32), DropReason.BAD_MAC),
    ("bad_mac_flipped_bit", encode(HB, KEY)[:-1] + b"\0", DropReason.BAD_MAC),
    (
        "bad_mac_forged_field",
        encode(replace(HB, epoch=99), KEY)[:-32] + encode(HB, KEY)[-32:],
        DropReason.BAD_MAC,
    ),
    ("malformed_role", _bad_role(), DropReason.MALFORMED),
    ("malformed_name", _bad_utf8(), DropReason.MALFORMED),
    ("unknown_node", encode(replace(HB, node="mallory"), KEY), DropReason.UNKNOWN_NODE),
    ("own_node", encode(replace(HB, node="alpha"), KEY), DropReason.OWN_NODE),
]


@pytest.mark.parametrize(("data", "reason"), [pytest.param(d, r, id=i) for i, d, r in DROPS])
def test_decode_drop_reason(data: bytes, reason: DropReason) -> None:
    """Each malformed or hostile datagram is dropped with its own reason."""
    assert decode(data, KEY, NODES, own="alpha") is reason


def test_receiver_counts_every_drop_reason() -> None:
    """The receiver counts each drop under its reason and still accepts good heartbeats."""
    rx = Receiver(KEY, NODES, own="alpha")
    for _, data, reason in DROPS:
        assert rx.receive(data) is reason
    assert isinstance(rx.receive(encode(HB, KEY)), Heartbeat)
    counters = rx.counters()
    assert counters["accepted"] == 1
    for _, _, reason in DROPS:
        assert counters[reason.value] >= 1
    assert sum(counters[r.value] for r in DropReason) == len(DROPS)


def test_receiver_drops_replayed_datagram() -> None:
    """The same datagram twice: the second is a replay."""
    rx = Receiver(KEY, NODES, own="alpha")
    data = encode(HB, KEY)
    assert isinstance(rx.receive(data), Heartbeat)
    assert rx.receive(data) is DropReason.REPLAY
    assert rx.counters()["replay"] == 1


def test_receiver_digest_mismatch_counted_not_dropped_by_default() -> None:
    """Another config digest is counted but accepted unless strict."""
    other = encode(replace(HB, digest=config_digest(b"cluster v2")), KEY)
    lenient = Receiver(KEY, NODES, own="alpha", digest=DIGEST)
    assert isinstance(lenient.receive(other), Heartbeat)
    assert lenient.mismatched == 1
    strict = Receiver(KEY, NODES, own="alpha", digest=DIGEST, strict_digest=True)
    assert strict.receive(other) is DropReason.DIGEST_MISMATCH
    assert strict.counters()["digest_mismatch"] == 1


def test_window_accepts_reordered_within_window_once() -> None:
    """Sequences arriving out of order within the window are accepted exactly once."""
    w = ReplayWindow()
    assert w.check("beta", BOOT, 100) is None
    assert w.check("beta", BOOT, 98) is None
    assert w.check("beta", BOOT, 99) is None
    assert w.check("beta", BOOT, 98) is DropReason.REPLAY
    assert w.check("beta", BOOT, 101) is None
    assert w.check("beta", BOOT, 100) is DropReason.REPLAY


def test_window_rejects_too_old_sequence() -> None:
    """A sequence WINDOW or more behind the newest is a replay even if never seen."""
    w = ReplayWindow()
    assert w.check("beta", BOOT, 1000) is None
    assert w.check("beta", BOOT, 1000 - WINDOW) is DropReason.REPLAY
    assert w.check("beta", BOOT, 1000 - WINDOW + 1) is None


def test_window_big_jump_forgets_old_bits() -> None:
    """After a jump past the window, only the new top counts as seen."""
    w = ReplayWindow()
    assert w.check("beta", BOOT, 5) is None
    assert w.check("beta", BOOT, 5 + 10 * WINDOW) is None
    assert w.check("beta", BOOT, 5 + 10 * WINDOW - 1) is None


def test_new_boot_id_resets_and_old_boot_is_stale() -> None:
    """A restarted sender (a higher seed) starts a new boot; its previous boot is stale after."""
    w = ReplayWindow()
    new_boot = bytes(16)
    assert w.check("beta", BOOT, 500) is None
    assert w.check("beta", new_boot, 10_000) is None
    assert w.check("beta", new_boot, 10_001) is None
    assert w.check("beta", BOOT, 501) is DropReason.STALE_BOOT


# Sequences as senders seed them: wall-clock microseconds at start-up, then one per datagram.
OLD_BOOT, LIVE_BOOT, OTHER_BOOT = b"\x01" * 16, b"\x02" * 16, b"\x03" * 16
OLD_SEQ = 1_700_000_000_000_000  # a boot of an hour ago
LIVE_SEQ = OLD_SEQ + 3_600_000_000  # the live boot, seeded an hour later

# (name, datagrams as (boot, seq) in arrival order, expected outcome of each)
BOOT_TABLE = [
    (
        "old_boot_replayed_after_live_one",
        [(LIVE_BOOT, LIVE_SEQ), (OLD_BOOT, OLD_SEQ + 5), (LIVE_BOOT, LIVE_SEQ + 1)],
        [None, DropReason.STALE_BOOT, None],
    ),
    (
        "old_boot_replayed_many_times_never_takes_over",
        [(LIVE_BOOT, LIVE_SEQ)]
        + [(OLD_BOOT, OLD_SEQ + i) for i in range(5)]
        + [(LIVE_BOOT, LIVE_SEQ + 1)],
        [None] + [DropReason.STALE_BOOT] * 5 + [None],
    ),
    (
        "unseen_old_boot_with_a_lower_sequence_is_stale",
        [(LIVE_BOOT, LIVE_SEQ), (LIVE_BOOT, LIVE_SEQ + 1), (OTHER_BOOT, LIVE_SEQ + 1)],
        [None, None, DropReason.STALE_BOOT],
    ),
    (
        "restarted_sender_seeded_later_replaces_the_boot",
        [(OLD_BOOT, OLD_SEQ), (LIVE_BOOT, LIVE_SEQ), (OLD_BOOT, OLD_SEQ + 1)],
        [None, None, DropReason.STALE_BOOT],
    ),
    (
        "first_datagram_a_replay_then_genuine_ones_win",
        [
            (OLD_BOOT, OLD_SEQ),
            (LIVE_BOOT, LIVE_SEQ),
            (LIVE_BOOT, LIVE_SEQ + 1),
            (OLD_BOOT, OLD_SEQ),
        ],
        [None, None, None, DropReason.STALE_BOOT],
    ),
]


@pytest.mark.parametrize(
    ("datagrams", "expected"), [pytest.param(d, e, id=n) for n, d, e in BOOT_TABLE]
)
def test_new_boot_needs_a_higher_sequence(
    datagrams: list[tuple[bytes, int]], expected: list[DropReason | None]
) -> None:
    """A boot id replaces the live one only with a sequence above the live boot's newest."""
    w = ReplayWindow()
    assert [w.check("beta", boot, seq) for boot, seq in datagrams] == expected


def _beat(boot: bytes, seq: int, role: Role = Role.STANDBY, epoch: int = 9) -> bytes:
    return encode(replace(HB, boot_id=boot, sequence=seq, role=role, epoch=epoch), KEY)


def test_replay_from_previous_boot_after_receiver_restart_is_dropped() -> None:
    """A capture of the peer's previous boot, replayed after our restart, is dropped and counted;
    the genuine heartbeats that follow are all accepted."""
    captured = _beat(OLD_BOOT, OLD_SEQ + 40, role=Role.ACTIVE, epoch=3)
    before = Receiver(KEY, NODES, own="alpha")
    for i in range(3):
        assert isinstance(before.receive(_beat(LIVE_BOOT, LIVE_SEQ + i)), Heartbeat)
    record = before.window.record("beta")
    assert record == (LIVE_BOOT, LIVE_SEQ + 2)
    # The receiver restarts, starting from the record the daemon kept on disk.
    after = Receiver(KEY, NODES, own="alpha")
    after.window.restore("beta", *record)
    assert after.receive(captured) is DropReason.STALE_BOOT
    for i in range(3, 10):
        out = after.receive(_beat(LIVE_BOOT, LIVE_SEQ + i))
        assert isinstance(out, Heartbeat) and out.role is Role.STANDBY and out.epoch == 9
    assert after.receive(captured) is DropReason.STALE_BOOT
    counters = after.counters()
    assert counters["stale_boot"] == 2 and counters["accepted"] == 7


def test_replay_from_previous_boot_after_restart_without_record_cannot_silence_peer() -> None:
    """Without a kept record the replay lands only before the first genuine heartbeat: once the
    live boot is heard, the replay is stale and every genuine heartbeat is accepted."""
    captured = _beat(OLD_BOOT, OLD_SEQ + 40, role=Role.ACTIVE, epoch=3)
    rx = Receiver(KEY, NODES, own="alpha")
    assert isinstance(rx.receive(_beat(LIVE_BOOT, LIVE_SEQ)), Heartbeat)
    assert rx.receive(captured) is DropReason.STALE_BOOT
    for i in range(1, 8):
        assert isinstance(rx.receive(_beat(LIVE_BOOT, LIVE_SEQ + i)), Heartbeat)
    assert rx.counters()["stale_boot"] == 1


def test_restored_window_treats_the_recorded_top_as_seen() -> None:
    """After restore, the recorded sequence and those below it are replays; above are fresh."""
    w = ReplayWindow()
    w.restore("beta", LIVE_BOOT, LIVE_SEQ)
    assert w.check("beta", LIVE_BOOT, LIVE_SEQ) is DropReason.REPLAY
    assert w.check("beta", LIVE_BOOT, LIVE_SEQ - 3) is DropReason.REPLAY
    assert w.check("beta", LIVE_BOOT, LIVE_SEQ + 1) is None
    assert w.check("beta", OTHER_BOOT, LIVE_SEQ + 100) is None


def test_windows_are_per_sender() -> None:
    """One sender's sequence does not affect another's."""
    w = ReplayWindow()
    assert w.check("alpha", BOOT, 10) is None
    assert w.check("beta", BOOT, 10) is None


def test_random_bytes_never_raise() -> None:
    """Random datagrams and mutations of a valid one decode to a reason, never raise."""
    rng = random.Random(1234)
    rx = Receiver(KEY, NODES, own="alpha")
    valid = encode(HB, KEY)
    for _ in range(3000):
        n = rng.randrange(0, 300)
        rx.receive(bytes(rng.randrange(256) for _ in range(n)))
    for _ in range(3000):
        data = bytearray(valid)
        for _ in range(rng.randrange(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        out = rx.receive(bytes(data[: rng.randrange(len(data) + 1)]))
        assert isinstance(out, DropReason | Heartbeat)
    # A mutated copy must never authenticate as something else.
    assert rx.accepted <= 1


def test_header_layout_is_stable() -> None:
    """The documented offsets hold: magic, version, name length, sequence, epoch."""
    data = encode(HB, KEY)
    assert data[:4] == b"HAPR" and data[4] == 1 and data[9] == len("beta")
    assert struct.unpack_from("!Q", data, 26)[0] == 7
    assert struct.unpack_from("!Q", data, 34)[0] == 41
    assert len(data) == 50 + 4 + 32
