"""Configuration drift by section: section texts, keyed digests, the datagram, the exchange."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import replace
from pathlib import Path

import pytest

from takeover import drift
from takeover.config import config_digest, config_sections, load_cluster

ROOT = Path(__file__).resolve().parents[2]
MINIMAL = ROOT / "tests" / "configs" / "valid-minimal.toml"
KEY = b"k" * 32
BOOT = b"b" * 16


def sections_after(edit: str, tmp_path: Path) -> tuple[dict[str, str], bytes]:
    """Return the section texts and the digest of the minimal file with `edit` applied."""
    path = tmp_path / "cluster.toml"
    path.write_text(MINIMAL.read_text() + edit)
    cluster = load_cluster(path)
    return config_sections(cluster), config_digest(cluster)


EDITS = [
    # (TOML appended to the minimal file, the sections it changes)
    ("\n[announce]\ngarp_count = 3\n", ["announce"]),
    ('\n[[vip]]\naddress = "192.0.2.100/24"\n', ["vip"]),
    ('\n[arbitration]\ntargets = ["192.0.2.1"]\n', ["arbitration"]),
    ('\n[metrics]\nlisten = "127.0.0.1:9405"\n', ["metrics"]),
    ('\n[[check]]\nname = "x"\ntype = "tcp"\ntarget = "127.0.0.1:25"\n', ["check"]),
]


@pytest.mark.parametrize("edit, changed", EDITS)
def test_an_edit_changes_its_section_and_the_digest(
    edit: str, changed: list[str], tmp_path: Path
) -> None:
    """Editing one table changes that table's section only, and the whole digest too."""
    base, base_digest = sections_after("", tmp_path)
    edited, digest = sections_after(edit, tmp_path)
    assert (
        drift.differing(drift.section_digests(base, KEY), drift.section_digests(edited, KEY))
        == changed
    )
    assert digest != base_digest


def test_node_and_top_level_edits_name_their_section(tmp_path: Path) -> None:
    """A node's priority is its node section; auto_failback is the "cluster" section."""
    base, _ = sections_after("", tmp_path)
    cluster = load_cluster(MINIMAL)
    nodes = (replace(cluster.nodes[0], priority=7), cluster.nodes[1])
    edited = config_sections(replace(cluster, nodes=nodes, auto_failback=True))
    ours, theirs = drift.section_digests(base, KEY), drift.section_digests(edited, KEY)
    assert drift.differing(ours, theirs) == ["cluster", "node.a"]


def test_digests_are_keyed() -> None:
    """Another key gives other digests: without the key nothing can be tried against them."""
    texts = config_sections(load_cluster(MINIMAL))
    a, b = drift.section_digests(texts, KEY), drift.section_digests(texts, b"x" * 32)
    assert a.keys() == b.keys() and all(a[s] != b[s] for s in a)


def test_datagram_round_trip_and_carries_no_section_text() -> None:
    """What is encoded decodes the same with the key; no section's text travels."""
    texts = config_sections(load_cluster(MINIMAL))
    digests = drift.section_digests(texts, KEY)
    data = drift.encode("a", BOOT, 42, digests, KEY)
    assert drift.is_sections(data)
    got = drift.decode(data, KEY, peer="a")
    assert got == drift.Sections("a", BOOT, 42, digests)
    assert b"/etc/hapair/authkey" not in data and b"lan0" not in data


def forged(data: bytes) -> list[tuple[bytes, str]]:
    """Return tampered copies of a valid datagram with the reason each must give."""
    flipped = bytearray(data)
    flipped[10] ^= 1
    return [
        (bytes(flipped), "bad_mac"),
        (data[:20], "truncated"),
        (data[:-1], "bad_mac"),
        (data + b"x", "bad_mac"),
    ]


def test_forged_or_foreign_datagrams_are_refused() -> None:
    """Tampered, truncated, wrongly keyed or other-node datagrams never decode."""
    data = drift.encode("a", BOOT, 1, {"heartbeat": b"12345678"}, KEY)
    for bad, reason in forged(data):
        assert drift.decode(bad, KEY, "a") == reason
    assert drift.decode(data, b"x" * 32, "a") == "bad_mac"
    assert drift.decode(data, KEY, "b") == "unknown_node"
    # Authentic but inconsistent (a count larger than what follows): malformed, no exception.
    lying = drift.encode("a", BOOT, 1, {"x": b"12345678"}, KEY)[:-32]
    lying = lying[:5] + bytes([9]) + lying[6:]
    resigned = lying + hmac.new(KEY, lying, hashlib.sha256).digest()
    assert drift.decode(resigned, KEY, "a") == "malformed"


def test_exchange_speaks_only_while_digests_differ() -> None:
    """No drift: nothing is sent; drift: at once, then every RESEND seconds."""
    ex = drift.DriftExchange({"heartbeat": b"1" * 8}, resend=5.0)
    assert not ex.due(0.0) and ex.describe(0.0) is None
    ex.heard(digest_differs=True)
    assert ex.due(0.0) and not ex.due(4.9) and ex.due(5.0)
    assert ex.describe(5.0) == {"digest_differs": True, "sections": None, "peer_sections_age": None}


def test_exchange_keeps_the_newest_of_the_current_boot_only() -> None:
    """A datagram of another boot or not newer than the last kept is refused (replay)."""
    ex = drift.DriftExchange({"heartbeat": b"1" * 8, "vip": b"2" * 8})
    ex.heard(digest_differs=True)
    told = drift.Sections("b", BOOT, 10, {"heartbeat": b"1" * 8, "vip": b"X" * 8})
    assert ex.accept(told, None, 1.0) == "stale_boot"
    assert ex.accept(told, (b"o" * 16, 99), 1.0) == "stale_boot"
    assert ex.accept(told, (BOOT, 11), 1.0) is None
    assert ex.describe(3.0) == {
        "digest_differs": True,
        "sections": ["vip"],
        "peer_sections_age": 2.0,
    }
    older = replace(told, sequence=9, digests={})
    assert ex.accept(older, (BOOT, 11), 4.0) == "replay"
    assert (ex.describe(4.0) or {})["sections"] == ["vip"]
    # The files agree again: the old answer is forgotten.
    ex.heard(digest_differs=False)
    assert ex.describe(5.0) is None
