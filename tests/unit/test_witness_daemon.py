"""The witness daemon: its file, its answers on a fake clock, a loopback round trip, its unit."""

from __future__ import annotations

import asyncio
import ipaddress
import json
from dataclasses import replace
from pathlib import Path

import pytest

from takeover import cli as takeover_cli
from takeover import machine as m
from takeover.config import WitnessConfig
from takeover.configparse import ConfigError
from takeover.lease import Op, Verdict
from takeover.witness import STATUS_NAME, Witness, load_keys, load_witness, render
from takeover.witnessclient import WitnessClient
from takeover.witnesswire import Request, decode_reply, encode_request
from tests.unit.test_systemd import installable_copy, verify

KEY = b"k" * 32
BOOT = b"N" * 16


def witness_file(tmp_path: Path, body: str) -> Path:
    """Write a witness file with a valid key beside it; return its path."""
    key = tmp_path / "lab.key"
    key.write_bytes(KEY)
    key.chmod(0o600)
    path = tmp_path / "witness.toml"
    path.write_text(body.replace("KEY", str(key)).replace("RUN", str(tmp_path / "run")))
    return path


GOOD = """
[witness]
address = "127.0.0.1"
port = 7406
run_dir = "RUN"

[[cluster]]
name = "lab"
nodes = ["a", "b"]
key_file = "KEY"
max_lease = "10s"
"""


@pytest.mark.parametrize(
    "body, problem",
    [
        ("[witness]\n", "witness.toml: cluster: at least one [[cluster]] is required"),
        (GOOD.replace('["a", "b"]', '["a"]'), "cluster[0].nodes: must be the pair's two node"),
        (GOOD.replace('["a", "b"]', '["a", "a"]'), "cluster[0].nodes: must be the pair's two"),
        (GOOD.replace('"10s"', '"ten"'), "witness.toml: cluster[0].max_lease: "),
        (GOOD.replace("port = 7406", "port = 70000"), "witness.toml: witness.port: "),
        (GOOD + GOOD.split("\n\n", 2)[-1], 'cluster[1].name: cluster "lab" is served twice'),
        (GOOD.replace("max_lease", "max_lase"), "cluster[0].max_lase: unknown key"),
        (GOOD.replace('"KEY"', '"lab.key"'), "cluster[0].key_file: must be an absolute path"),
    ],
    ids=["no-cluster", "one-node", "same-node", "duration", "port", "twice", "unknown", "rel"],
)
def test_witness_file_problems_name_file_and_key(tmp_path: Path, body: str, problem: str) -> None:
    """Each bad witness file is refused with a problem naming the file and the key."""
    with pytest.raises(ConfigError) as info:
        load_witness(witness_file(tmp_path, body))
    assert any(problem in line for line in info.value.problems), info.value.problems


def test_witness_check_refuses_a_key_open_to_others(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`takeover witness check` exits 2 naming cluster[0].key_file when its mode is too open."""
    path = witness_file(tmp_path, GOOD)
    (tmp_path / "lab.key").chmod(0o644)
    assert takeover_cli.main(["witness", "-c", str(path), "check"]) == 2
    assert "witness.toml: cluster[0].key_file: " in capsys.readouterr().err
    (tmp_path / "lab.key").chmod(0o600)
    assert takeover_cli.main(["witness", "-c", str(path), "check"]) == 0


class Clock:
    """A fake monotonic clock."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def request(seq: int, op: Op = Op.RENEW, node: str = "a", key: bytes = KEY) -> bytes:
    """A signed request from node."""
    return encode_request(
        Request("lab", node, op, BOOT if node == "a" else b"M" * 16, seq, 5.0), key
    )


def test_witness_answers_by_the_lease_rules_and_counts_drops(tmp_path: Path) -> None:
    """Quiet after start, then a grant; forged, replayed and foreign requests get no answer."""
    w = load_witness(witness_file(tmp_path, GOOD))
    clock = Clock(500.0)
    wit = Witness(w, load_keys(w), clock=clock)
    quiet = decode_reply(wit.handle(request(1), "src") or b"", KEY, "lab", "a")
    assert not isinstance(quiet, type(None)) and getattr(quiet, "verdict", None) is Verdict.QUIET
    clock.now += 10.0
    granted = decode_reply(wit.handle(request(2), "src") or b"", KEY, "lab", "a")
    assert getattr(granted, "verdict", None) is Verdict.GRANTED
    assert getattr(granted, "echo", None) == 2
    held = decode_reply(wit.handle(request(1, Op.CLAIM, "b"), "src") or b"", KEY, "lab", "b")
    assert getattr(held, "verdict", None) is Verdict.HELD and getattr(held, "holder", "") == "a"
    assert wit.handle(request(2), "src") is None  # replayed
    assert wit.handle(request(3, key=b"x" * 32), "src") is None  # forged
    other = encode_request(Request("other", "a", Op.RENEW, BOOT, 9, 5.0), KEY)
    assert wit.handle(other, "src") is None
    counters = wit.status()["counters"]
    assert (counters["replay"], counters["bad_mac"], counters["unknown_cluster"]) == (1, 1, 1)
    assert wit.status()["clusters"]["lab"]["holder"] == "a"
    text = render(wit.status(), "running")
    assert "cluster lab" in text and "lease held by a" in text
    assert "dropped bad_mac=1, replay=1, unknown_cluster=1" in text


def test_node_and_witness_round_trip_on_loopback(tmp_path: Path) -> None:
    """A node's WitnessClient gets a grant from a real Witness over UDP on 127.0.0.1, matched
    to its request's sending time; the status file says who holds the lease."""
    w = replace(load_witness(witness_file(tmp_path, GOOD)), port=0)

    async def main() -> list[m.Event]:
        loop = asyncio.get_running_loop()
        # The witness started long enough ago that its restart quiet period is over.
        skip = [0.0]
        wit = Witness(w, load_keys(w), clock=lambda: skip[0] + loop.time())
        skip[0] = 100.0
        wit.open()
        assert wit.sock is not None
        port = wit.sock.getsockname()[1]
        task = asyncio.create_task(wit.run())
        events: list[m.Event] = []
        seqs = iter(range(100, 200))
        cfg = WitnessConfig(ipaddress.ip_address("127.0.0.1"), Path("/k"), port, 5.0)
        client = WitnessClient(
            cfg, "lab", "a", key=KEY, boot_id=BOOT, next_seq=lambda: next(seqs), emit=events.append
        )
        client.start()
        client.request(Op.RENEW, 42.0)
        for _ in range(200):
            if events:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(1.2)
        status = json.loads((tmp_path / "run" / STATUS_NAME).read_text())
        assert status["clusters"]["lab"]["holder"] == "a"
        client.close()
        wit.stop.set()
        await task
        return events

    events = asyncio.run(main())
    assert events == [m.WitnessAnswer(42.0, Verdict.GRANTED, "a", 5.0, 5.0)]
    assert not (tmp_path / "run" / STATUS_NAME).exists()


def test_witness_unit_verifies(tmp_path: Path) -> None:
    """systemd/takeover-witness.service passes `systemd-analyze verify` with no output."""
    unit = installable_copy(tmp_path, "takeover-witness.service")
    result = verify(unit)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
    assert "witness --config /etc/hapair/witness.toml run" in unit.read_text()


def test_example_witness_file_passes_check(capsys: pytest.CaptureFixture[str]) -> None:
    """conf/witness.toml is valid (its key file is not read with --no-fs)."""
    path = Path(__file__).resolve().parents[2] / "conf" / "witness.toml"
    assert takeover_cli.main(["witness", "-c", str(path), "check", "--no-fs"]) == 0
    assert "clusters mail" in capsys.readouterr().out
