"""takeover.heartbeat between a and b: signed heartbeats on both links, forgeries dropped."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.lab.lab import HB4, IPV4, Lab, LabProcess, wait_until

pytestmark = pytest.mark.netns

PORT = 7405
DURATION = 1.5
INTERVAL = 0.05


def _key(lab: Lab) -> Path:
    path = lab.workdir / "authkey"
    path.write_bytes(os.urandom(24).hex().encode() + b"\n")
    path.chmod(0o600)
    return path


def _start(lab: Lab, key: Path, node: str, peer: str) -> LabProcess:
    argv = [
        lab.python, "-m", "takeover.heartbeat", "--key", str(key), "--node", node,
        "--peer", peer, "--port", str(PORT), "--interval", str(INTERVAL),
        "--duration", str(DURATION),
        "--link", f"direct={HB4[node]},{HB4[peer]}",
        "--link", f"lan={IPV4[node]},{IPV4[peer]},lan0",
    ]  # fmt: skip
    return lab.spawn(node, argv)


def _bound(lab: Lab, node: str) -> bool:
    out = lab.run(node, ["ss", "-H", "-uln", f"sport = :{PORT}"]).stdout
    return out.count(f":{PORT}") == 2


def _result(proc: LabProcess) -> dict[str, Any]:
    assert proc.wait(DURATION + 20) == 0, proc.output()
    last = [line for line in proc.output().splitlines() if line.startswith("{")][-1]
    result: dict[str, Any] = json.loads(last)
    return result


def _send_from_client(lab: Lab, payloads: str, ns: str = "client") -> None:
    """Send the datagrams the Python expression `payloads` yields to a's LAN address."""
    script = (
        "import os, socket\n"
        "from takeover import wire\n"
        "from takeover.machine import Role\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        f"for p in {payloads}:\n"
        f"    s.sendto(p, ('{IPV4['a']}', {PORT}))\n"
    )
    lab.run(ns, [lab.python, "-c", script])


def test_heartbeats_flow_on_both_links_and_forgeries_are_counted(lab: Lab) -> None:
    """a and b hear each other on direct and lan; a forged and a truncated datagram from b's
    address are dropped per reason, the same from the client as wrong_source."""
    key = _key(lab)
    a, b = _start(lab, key, "a", "b"), _start(lab, key, "b", "a")
    assert wait_until(lambda: _bound(lab, "a"), 5)
    forged = (
        "[wire.encode(wire.Heartbeat('b', os.urandom(16), 10**9, Role.ACTIVE, 255, 0, 99,"
        " b'\\0' * 8), b'not the key' * 4), b'HAPR\\x01']"
    )
    _send_from_client(lab, forged, ns="b")
    _send_from_client(lab, forged)
    ra, rb = _result(a), _result(b)
    for res in (ra, rb):
        for link in ("direct", "lan"):
            stats = res["links"][link]
            # 1.5 s at 50 ms is 30 heartbeats; half is plenty on a loaded machine.
            assert stats["received"] >= 10, res
            assert stats["send_errors"] == 0
    assert ra["links"]["lan"]["dropped"] == {"bad_mac": 1, "truncated": 1, "wrong_source": 2}
    assert ra["links"]["direct"]["dropped"] == {}
    assert rb["links"]["lan"]["dropped"] == {} and rb["links"]["direct"]["dropped"] == {}
    assert set(ra["heard"]) == {"direct:b", "lan:b"}


def test_a_cut_direct_link_leaves_the_lan_link_working(lab: Lab) -> None:
    """With hb0 down the direct link counts send errors and hears nothing; the LAN still works."""
    key = _key(lab)
    lab.set_link("hb", False)
    a, b = _start(lab, key, "a", "b"), _start(lab, key, "b", "a")
    ra, rb = _result(a), _result(b)
    for res in (ra, rb):
        assert res["links"]["direct"]["received"] == 0
        assert res["links"]["direct"]["last_seen_age"] is None
        assert res["links"]["direct"]["send_errors"] > 0
        assert res["links"]["lan"]["received"] >= 10
    assert set(ra["heard"]) == {"lan:b"}


def test_a_key_readable_by_others_is_refused(lab: Lab) -> None:
    """The link entry refuses a group-readable key file, naming it, and opens nothing."""
    key = _key(lab)
    key.chmod(0o640)
    p = lab.run(
        "a",
        [lab.python, "-m", "takeover.heartbeat", "--key", str(key), "--node", "a",
         "--peer", "b", "--link", f"lan={IPV4['a']},{IPV4['b']}"],
        check=False,
    )  # fmt: skip
    assert p.returncode != 0
    assert f"{key}: key file is accessible by group or others" in p.stderr
