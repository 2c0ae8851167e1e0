"""mirrord's tunnel ([mirror] tunnel_port) between the lab's two nodes: pushes go to the
standing rsync daemon in b (run as systemd/mirrord-receiver.service runs it) through a forward
on mirrord's ControlMaster, not through an ssh session each; the push check holds there too;
without the daemon the pushes go by ssh, and the tunnel comes back with it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from mirrord import orphans
from mirrord.tunnel import RETRY
from tests.e2e.mirrorlab import MirrorPair, lab_ssh, snapshot
from tests.lab.lab import IPV4, Lab, wait_until

pytestmark = [pytest.mark.netns, pytest.mark.e2e]

FAST = {"interval": "500ms", "min_interval": "200ms", "max_interval": "3s"}
PORT = 873


def tunnel(pair: MirrorPair) -> dict[str, Any]:
    doc = pair.status_doc()
    assert doc is not None
    assert isinstance(doc["tunnel"], dict), doc.get("tunnel")
    return doc["tunnel"]


def arrives(pair: MirrorPair, name: str, rel: str, text: str, timeout: float = 30) -> bool:
    (pair.src(name) / rel).write_text(text)
    dst: Path = pair.dst(name) / rel
    return wait_until(lambda: dst.exists() and dst.read_text() == text, timeout, 0.05)


def test_pushes_go_through_the_tunnel_and_no_ssh_session_is_started(lab: Lab) -> None:
    """After the first pass (by ssh, which brings the ControlMaster up and the forward with
    it), every change reaches b through the standing daemon: sshd starts no session more."""
    pair = MirrorPair(lab, [{"path": "/srv/data", **FAST}], tunnel_port=PORT)
    (pair.src("data") / "seed").write_text("0")
    pair.start()
    assert pair.converge("data")
    assert wait_until(lambda: tunnel(pair)["up"] is True, timeout=30), tunnel(pair)
    before = pair.sessions()
    for i in range(5):
        time.sleep(0.5)
        assert arrives(pair, "data", f"f{i}", f"change {i}\n"), pair.dir_status("data")
    assert pair.converge("data")
    assert snapshot(pair.src("data")) == snapshot(pair.dst("data"))
    # The last file lands before its rsync exits; the pass is counted once it has.
    assert wait_until(lambda: tunnel(pair)["carried"] >= 5, timeout=10), tunnel(pair)
    state = tunnel(pair)
    assert state["up"] is True and state["failed"] == 0, state
    assert pair.sessions() == before, pair.sshd.output()[-2000:]


def test_the_push_check_refuses_through_the_tunnel_as_by_ssh(lab: Lab) -> None:
    """While b's root holds the source marker, pushes through the tunnel are refused with the
    peer's reason (the same check runs in the standing daemon); the tunnel stays up."""
    pair = MirrorPair(lab, [{"path": "/srv/data", **FAST}], tunnel_port=PORT)
    src, dst = pair.src("data"), pair.dst("data")
    (src / "seed").write_text("0")
    pair.start()
    assert pair.converge("data")
    assert wait_until(lambda: tunnel(pair)["up"] is True, timeout=30), tunnel(pair)
    assert orphans.set_source(str(dst), "b", time.time())
    failures = pair.dir_status("data")["failures"]
    (src / "later").write_text("2")
    assert wait_until(lambda: pair.dir_status("data")["failures"] >= failures + 2, timeout=60)
    last = pair.dir_status("data")["last"]
    assert "this node is (or was, until it stopped) the source of this root" in last["detail"]
    assert not (dst / "later").exists()
    state = tunnel(pair)
    assert state["up"] is True and state["failed"] == 0, state
    orphans.clear_source(str(dst))
    assert pair.converge("data", timeout=60)


def test_without_the_standing_daemon_pushes_go_by_ssh_and_the_tunnel_comes_back(
    lab: Lab,
) -> None:
    """The daemon in b stops: the next change still arrives (its pass is sent by ssh at once)
    and the tunnel is down with the reason; the daemon back, the tunnel is up again after its
    retry wait and carries the changes."""
    pair = MirrorPair(lab, [{"path": "/srv/data", **FAST}], tunnel_port=PORT)
    (pair.src("data") / "seed").write_text("0")
    pair.start()
    assert pair.converge("data")
    assert wait_until(lambda: tunnel(pair)["up"] is True, timeout=30), tunnel(pair)
    assert pair.receiver_daemon is not None
    pair.receiver_daemon.stop()
    sessions = pair.sessions()
    assert arrives(pair, "data", "while-down", "1\n"), pair.dir_status("data")
    assert wait_until(lambda: tunnel(pair)["failed"] == 1, timeout=10), tunnel(pair)
    state = tunnel(pair)
    assert state["up"] is False and isinstance(state["error"], str) and state["error"], state
    assert pair.sessions() > sessions
    # The pass the tunnel failed was sent by ssh at once: no failure, no retry.
    last = pair.dir_status("data")["last"]
    assert last["result"] == "ok" and pair.dir_status("data")["failures"] == 0, last
    pair.start_receiver()
    assert wait_until(lambda: arrives(pair, "data", "poke", str(time.time()), 10)
                      and tunnel(pair)["up"] is True, timeout=RETRY * 4), tunnel(pair)  # fmt: skip
    carried = tunnel(pair)["carried"]
    assert arrives(pair, "data", "after", "2\n")
    # The file lands before rsync exits; the pass is counted once it has.
    assert wait_until(lambda: tunnel(pair)["carried"] != carried, timeout=10), tunnel(pair)


def test_the_mirror_key_may_open_only_the_tunnel(lab: Lab) -> None:
    """The key that may forward to the standing daemon may forward nowhere else (sshd's own
    port), and may not listen on b (remote forwards) but on loopback port 1, nothing's port."""
    pair = MirrorPair(lab, [{"path": "/srv/data"}], tunnel_port=PORT)
    ssh = [*lab_ssh(pair.key, pair.ssh_options()), "-o", "ExitOnForwardFailure=yes", "-N"]
    for spec in ("127.0.0.1:2222:127.0.0.1:22", "127.0.0.1:600:127.0.0.1:22"):
        remote = lab.spawn("a", [*ssh, "-R", spec, f"root@{IPV4['b']}"])
        assert wait_until(lambda r=remote: not r.alive(), 15), spec
        assert "remote port forwarding failed" in remote.output(), remote.output()
    local = lab.spawn("a", [*ssh, "-L", "127.0.0.1:2200:127.0.0.1:22", f"root@{IPV4['b']}"])
    probe = ["ssh", "-p", "2200", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
             "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
             "root@127.0.0.1", "true"]  # fmt: skip
    assert wait_until(lambda: "2200" in lab.run("a", ["ss", "-ltn"]).stdout, 15)
    done = lab.run("a", probe, check=False, timeout=30)
    assert done.returncode != 0
    assert "administratively prohibited" in local.output(), local.output()
    local.stop()
