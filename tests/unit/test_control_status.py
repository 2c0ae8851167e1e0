"""Control socket protocol, inhibitors, and the atomic status file with its rendering."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from takeover import control
from takeover.exits import StatusExit
from takeover.status import (
    classify,
    daemon_gone,
    link_conditions,
    process_start,
    read_status,
    render,
    status_path,
    write_status,
)


class FakeHandler:
    """Control handler that records commands and refuses standby when told to."""

    def __init__(self) -> None:
        self.commands: list[tuple[str, dict[str, Any]]] = []
        self.refuse = ""

    def status(self) -> dict[str, Any]:
        return {"local": {"role": "ACTIVE"}, "epoch": 3}

    def command(self, cmd: str, args: dict[str, Any]) -> str | None:
        self.commands.append((cmd, args))
        return self.refuse or None


def serve(tmp: Path, body: Callable[[control.ControlServer, Path], Awaitable[None]]) -> None:
    """Run a control server in `tmp` around `body`."""

    async def main() -> None:
        path = control.socket_path(tmp)
        server = control.ControlServer(path, FakeHandler())
        await server.start()
        try:
            await body(server, path)
        finally:
            await server.close()
        assert not path.exists()

    asyncio.run(main())


async def raw(path: Path, payload: bytes) -> list[dict[str, Any]]:
    """Send raw bytes, return every reply line until the server answers them."""
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(payload)
    await writer.drain()
    writer.write_eof()
    out = []
    while line := await reader.readline():
        out.append(json.loads(line))
    writer.close()
    return out


def test_socket_is_root_only_and_answers_status(tmp_path: Path) -> None:
    """The socket has mode 0600 and a status request returns the handler's document."""

    async def body(server: control.ControlServer, path: Path) -> None:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        reply = await asyncio.to_thread(control.call, path, {"cmd": "status"})
        assert reply["status"] == {"local": {"role": "ACTIVE"}, "epoch": 3}

    serve(tmp_path, body)


def test_bad_requests_get_errors_not_crashes(tmp_path: Path) -> None:
    """Garbage, non-objects, unknown commands and missing names each get an error reply."""

    async def body(server: control.ControlServer, path: Path) -> None:
        replies = await raw(
            path,
            b'not json\n[1]\n{"cmd": "reboot"}\n{"cmd": "inhibit"}\n'
            b'{"cmd": "subscribe", "inhibitor": 5}\n{"cmd": "status"}\n',
        )
        assert [r["ok"] for r in replies] == [False, False, False, False, False, True]
        assert "unknown command 'reboot'" in replies[2]["error"]

    serve(tmp_path, body)


def test_overlong_line_closes_connection_with_error(tmp_path: Path) -> None:
    """A request line beyond MAX_LINE gets one error reply and the connection ends."""

    async def body(server: control.ControlServer, path: Path) -> None:
        replies = await raw(path, b"x" * (control.MAX_LINE + 10) + b"\n")
        assert replies == [{"ok": False, "error": "request line too long"}]

    serve(tmp_path, body)


def test_standby_refusal_is_reported(tmp_path: Path) -> None:
    """A refused standby raises ControlError carrying the handler's reason."""

    async def body(server: control.ControlServer, path: Path) -> None:
        handler = server.handler
        assert isinstance(handler, FakeHandler)
        handler.refuse = "the peer cannot take over"
        with pytest.raises(control.ControlError, match="peer cannot take over"):
            await asyncio.to_thread(control.call, path, {"cmd": "standby"})
        handler.refuse = ""
        await asyncio.to_thread(control.call, path, {"cmd": "standby", "force": True})
        assert handler.commands[-1] == ("standby", {"cmd": "standby", "force": True})

    serve(tmp_path, body)


def test_inhibitor_dropped_when_connection_closes(tmp_path: Path) -> None:
    """An inhibitor lives as long as its connection; wait_clear returns after the close."""

    async def body(server: control.ControlServer, path: Path) -> None:
        reader, writer = await asyncio.open_unix_connection(str(path))
        writer.write(b'{"cmd": "inhibit", "name": "flush"}\n')
        reply = json.loads(await reader.readline())
        assert reply == {"ok": True, "inhibitors": ["flush"]}
        waiter = asyncio.ensure_future(server.inhibitors.wait_clear())
        await asyncio.sleep(0)
        assert not waiter.done()
        writer.close()
        await asyncio.wait_for(waiter, 5)
        assert server.inhibitors.names() == []

    serve(tmp_path, body)


def test_subscribers_get_events_and_auto_inhibitor(tmp_path: Path) -> None:
    """Subscribers receive role events; one with an inhibitor holds it on RELEASING."""

    async def body(server: control.ControlServer, path: Path) -> None:
        sub = await control.Subscription.open(path, inhibitor="mirrord")
        plain = await control.Subscription.open(path)
        assert sub.first["role"] == "ACTIVE" and server.subscribers() == 2
        server.publish(control.role_event("ACTIVE", "RELEASING", "operator standby", 3, 1.0))
        ev = await asyncio.wait_for(sub.events().__anext__(), 5)
        ev2 = await asyncio.wait_for(plain.events().__anext__(), 5)
        assert ev["new"] == ev2["new"] == "RELEASING"
        assert server.inhibitors.names() == ["mirrord"]
        await sub.release("mirrord")
        await asyncio.wait_for(server.inhibitors.wait_clear(), 5)
        sub.close()
        plain.close()

    serve(tmp_path, body)


def test_call_reports_missing_daemon(tmp_path: Path) -> None:
    """Calling a socket that does not exist names it and hints that takeover is not running."""
    with pytest.raises(control.ControlError, match="is takeover running"):
        control.call(tmp_path / "takeover.sock", {"cmd": "status"})


def test_call_reports_refused_connection(tmp_path: Path) -> None:
    """A stale socket file with no listener is reported as not running."""
    path = tmp_path / "takeover.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.close()
    with pytest.raises(control.ControlError, match="refused"):
        control.call(path, {"cmd": "status"})


def test_sync_subscribe_yields_events(tmp_path: Path) -> None:
    """The blocking subscribe() client yields the first reply, then events as published."""

    async def body(server: control.ControlServer, path: Path) -> None:
        def client() -> list[dict[str, Any]]:
            gen = control.subscribe(path, timeout=5)
            return [next(gen), next(gen)]

        fut = asyncio.ensure_future(asyncio.to_thread(client))
        for _ in range(200):
            if server.subscribers():
                break
            await asyncio.sleep(0.01)
        server.publish(control.role_event("STANDBY", "ACTIVE", "peer lost", 4, 2.0))
        first, ev = await asyncio.wait_for(fut, 5)
        assert first["ok"] and ev["new"] == "ACTIVE" and ev["epoch"] == 4

    serve(tmp_path, body)


# ---------------------------------------------------------------------------------------------
# status file


DOC: dict[str, Any] = {
    "written": 1000.0,
    "status_interval": 1.0,
    "pid": os.getpid(),
    "cluster": "mail",
    "epoch": 7,
    "local": {
        "name": "alpha",
        "priority": 100,
        "role": "ACTIVE",
        "healthy": True,
        "score": 0,
        "condition": "",
    },
    "peer": {
        "name": "beta",
        "role": "STANDBY",
        "alive": True,
        "priority": 50,
        "score": 1,
        "last_heard_age": 0.05,
    },
    "links": {
        "direct": {"up": True, "last_seen_age": 0.05},
        "lan": {"up": False, "last_seen_age": 9.0},
    },
    "targets": {"192.0.2.1": "up", "192.0.2.2": "down"},
    "vips": [{"address": "192.0.2.100/24", "interface": "lan0", "holder": "alpha"}],
    "checks": {"smtp": {"ok": False}},
    "inhibitors": ["mirrord"],
    "heartbeat": {"accepted": 10, "sent": 12, "bad_mac": 3, "replay": 0},
    "transitions": [{"time": 990.0, "old": "STANDBY", "new": "ACTIVE", "reason": "peer lost"}],
}


def test_write_status_is_atomic_and_readable(tmp_path: Path) -> None:
    """write_status leaves only the final file (no temp), mode 0644, and read_status returns it."""
    path = status_path(tmp_path)
    write_status(path, DOC)
    write_status(path, {**DOC, "epoch": 8})
    assert os.listdir(tmp_path) == ["takeover.json"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    doc = read_status(path)
    assert doc is not None and doc["epoch"] == 8


def test_read_status_missing_is_none(tmp_path: Path) -> None:
    """No status file reads as None (not running)."""
    assert read_status(tmp_path / "takeover.json") is None


@pytest.mark.parametrize(
    ("doc", "now", "expected"),
    [
        (None, 1000.0, StatusExit.NOT_RUNNING),
        (DOC, 1001.0, StatusExit.ACTIVE_OR_STANDBY),
        (DOC, 1010.0, StatusExit.UNKNOWN),
        ({**DOC, "pid": 2**22 + 12345}, 1010.0, StatusExit.NOT_RUNNING),
        ({**DOC, "pid": 2**22 + 12345}, 1000.5, StatusExit.NOT_RUNNING),
        ({**DOC, "pid_start": process_start(os.getpid())}, 1000.5, StatusExit.ACTIVE_OR_STANDBY),
        ({**DOC, "pid_start": -1}, 1000.5, StatusExit.NOT_RUNNING),
    ],
    ids=[
        "missing",
        "fresh",
        "stale_live_pid",
        "stale_dead_pid",
        "fresh_dead_pid",
        "fresh_same_process",
        "fresh_pid_reused",
    ],
)
def test_classify(doc: dict[str, Any] | None, now: float, expected: StatusExit) -> None:
    """Missing or written by a process that is gone (even a moment ago, even if its pid was
    reused) -> not running; fresh -> 0; stale from a live process -> unknown."""
    assert classify(doc, now) is expected


def test_render_shows_nodes_links_targets_vips_and_transitions() -> None:
    """The human view names both nodes, each link, each target, the VIP holder and reasons."""
    text = render(DOC, 1000.5)
    for needle in (
        "alpha",
        "ACTIVE",
        "beta",
        "STANDBY",
        "direct",
        "DOWN",
        "192.0.2.2",
        "down",
        "192.0.2.100/24",
        "FAILING",
        "mirrord",
        "bad_mac=3",
        "peer lost",
        "epoch 7",
    ):
        assert needle in text, needle
    assert "stale" not in text and "LAN DOWN" not in text
    down = {**DOC, "local": {**DOC["local"], "lan_up": False}}
    assert "LAN DOWN" in render(down, 1000.5)
    assert "stale" in render(DOC, 1100.0)


def test_link_conditions_name_rejections_and_config_drift() -> None:
    """Recent rejections from the peer's address and a differing digest become conditions."""
    links: dict[str, dict[str, Any]] = {
        "direct": {"rejected_age": {"bad_mac": 0.2}, "digest_differs": False},
        "lan": {"rejected_age": {"bad_mac": 0.1, "stale_boot": 300.0}, "digest_differs": True},
    }
    assert link_conditions("beta", links) == [
        "heartbeats from beta rejected: authentication failed: different key? "
        "(on direct, lan; last 100ms ago)",
        "configuration differs from beta's (heartbeats accepted on lan, cluster file digest "
        "differs): compare the cluster files",
    ]
    assert link_conditions("beta", {"lan": {"last_seen_age": 0.1}}) == []


def test_render_warns_of_conditions_and_lists_drift_apart_from_drops() -> None:
    """Conditions show as warnings; accepted heartbeats with another digest are not drops."""
    doc = {
        **DOC,
        "conditions": ["heartbeats from beta rejected: authentication failed: different key?"],
        "heartbeat": {"accepted": 10, "sent": 12, "digest_mismatched": 10, "bad_mac": 3},
    }
    text = render(doc, 1000.5)
    assert "WARNING: heartbeats from beta rejected: authentication failed: different key?" in text
    assert "10 accepted (10 with another configuration digest), 12 sent; dropped bad_mac=3" in text
    assert "digest_mismatched" not in text


def test_render_of_a_dead_daemon_says_not_running_and_shows_the_last_state() -> None:
    """A status file whose writer is gone renders as NOT RUNNING, with its last state below."""
    text = render({**DOC, "pid": 2**22 + 12345}, 1000.5)
    assert text.splitlines()[1].startswith("NOT RUNNING: the daemon (pid 4206649) is gone")
    assert "stale" in text.splitlines()[1]
    assert "ACTIVE" in text and "192.0.2.100/24" in text


def test_a_zombie_or_a_reused_pid_is_not_the_daemon() -> None:
    """A writer that exited but is not reaped yet, or a later process given its pid, counts as
    gone: `status` says NOT RUNNING, not the last state as current."""
    child = subprocess.Popen(["true"])
    try:
        # Wait for the exit without reaping it (WNOWAIT): the child stays a zombie.
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
        assert os.path.exists(f"/proc/{child.pid}")
        assert daemon_gone({"pid": child.pid})
    finally:
        child.wait()
    me = os.getpid()
    start = process_start(me)
    assert start is not None
    assert not daemon_gone({"pid": me, "pid_start": start})
    assert daemon_gone({"pid": me, "pid_start": start + 1})
