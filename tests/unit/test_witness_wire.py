"""Witness requests and answers: round trips, forgeries, replays and unknown clusters."""

from __future__ import annotations

import pytest

from takeover.lease import Op, Verdict
from takeover.witnesswire import (
    Pending,
    Reply,
    Request,
    WitnessDrop,
    WitnessReceiver,
    decode_reply,
    decode_request,
    encode_reply,
    encode_request,
)

KEY = b"k" * 32
OTHER = b"o" * 32
BOOT = b"B" * 16
KEYS = {"lab": KEY}
NODES = {"lab": ("a", "b")}


def req(seq: int = 1, node: str = "a", cluster: str = "lab", boot: bytes = BOOT) -> Request:
    return Request(cluster, node, Op.RENEW, boot, seq, 5.0)


def test_request_round_trip() -> None:
    """A signed request decodes to the same fields."""
    assert decode_request(encode_request(req(7), KEY), KEYS, NODES) == req(7)


def test_reply_round_trip() -> None:
    """A signed answer decodes to the same fields for its node."""
    r = Reply("lab", "a", Verdict.HELD, "b", BOOT, 3, 7, 1.25, 5.0)
    assert decode_reply(encode_reply(r, KEY), KEY, "lab", "a") == r


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", WitnessDrop.TRUNCATED),
        (b"HAPW" + b"\0" * 500, WitnessDrop.OVERSIZED),
        (b"XXXX" + encode_request(req(), KEY)[4:], WitnessDrop.BAD_MAGIC),
        (encode_request(req(), KEY)[:4] + b"\x09" + encode_request(req(), KEY)[5:],
         WitnessDrop.BAD_VERSION),
        (encode_request(req(), OTHER), WitnessDrop.BAD_MAC),
        (encode_request(req(cluster="other"), KEY), WitnessDrop.UNKNOWN_CLUSTER),
        (encode_request(req(node="c"), KEY), WitnessDrop.UNKNOWN_NODE),
        (encode_request(req(), KEY)[:-1], WitnessDrop.TRUNCATED),
        (encode_reply(Reply("lab", "a", Verdict.FREE, "", BOOT, 1, 1, 0, 5), KEY),
         WitnessDrop.BAD_KIND),
    ],
    ids=["empty", "oversized", "magic", "version", "forged", "cluster", "node", "cut", "kind"],
)  # fmt: skip
def test_witness_drops_bad_requests(data: bytes, reason: WitnessDrop) -> None:
    """Every malformed, forged or foreign request is dropped with its reason, never raised."""
    assert decode_request(data, KEYS, NODES) is reason


def test_receiver_counts_replays_and_stale_boots() -> None:
    """A request seen before is a replay; one from an older boot is stale; both counted."""
    rx = WitnessReceiver(KEYS, NODES)
    first = encode_request(req(100), KEY)
    assert isinstance(rx.receive(first), Request)
    assert rx.receive(first) is WitnessDrop.REPLAY
    assert isinstance(rx.receive(encode_request(req(101), KEY)), Request)
    old_boot = encode_request(req(50, boot=b"O" * 16), KEY)
    assert rx.receive(old_boot) is WitnessDrop.STALE_BOOT
    assert rx.receive(encode_request(req(1), OTHER)) is WitnessDrop.BAD_MAC
    counters = rx.counters()
    assert counters["accepted"] == 2
    assert counters["replay"] == 1 and counters["stale_boot"] == 1 and counters["bad_mac"] == 1


def test_node_drops_answers_for_other_nodes_and_forged_ones() -> None:
    """An answer for another node, another cluster or under another key is dropped."""
    r = Reply("lab", "b", Verdict.GRANTED, "b", BOOT, 3, 7, 5.0, 5.0)
    assert decode_reply(encode_reply(r, KEY), KEY, "lab", "a") is WitnessDrop.UNKNOWN_NODE
    assert decode_reply(encode_reply(r, KEY), KEY, "x", "b") is WitnessDrop.UNKNOWN_CLUSTER
    assert decode_reply(encode_reply(r, OTHER), KEY, "lab", "b") is WitnessDrop.BAD_MAC


def test_pending_answers_each_request_once() -> None:
    """An answer is matched to its request once; a replayed answer matches nothing."""
    p = Pending(size=2)
    p.add(1, 10.0, Op.RENEW, 5.0)
    p.add(2, 10.2, Op.RENEW, 5.0)
    p.add(3, 10.4, Op.CLAIM, 5.0)
    assert p.take(1) is None  # forgotten: only the newest two are kept
    assert p.take(2) == (10.2, Op.RENEW, 5.0)
    assert p.take(2) is None
