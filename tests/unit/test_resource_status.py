"""`takeover status` per resource on both nodes: this node's state and last monitor, and what
the peer's heartbeats advertise (its role, whether it holds the group, blocked, lost)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from takeover import control
from takeover.machine import Role
from takeover.status import peer_claim_text, render
from takeover.testing import FakeResources
from tests.unit.test_daemon import Rig, run

NAME = {"name": "b", "heard": True, "alive": True, "last_heard_age": 0.1, "blocked": False}


@pytest.mark.parametrize(
    ("claim", "text"),
    [
        ({**NAME, "role": "ACTIVE", "holding": True}, "b (peer): ACTIVE, runs it"),
        ({**NAME, "role": "STANDBY", "holding": False}, "b (peer): STANDBY, holds nothing"),
        ({**NAME, "role": "FAULT", "holding": True}, "b (peer): FAULT, may still hold it"),
        (
            {**NAME, "role": "FAULT", "holding": False, "blocked": True},
            "b (peer): FAULT, holds nothing, BLOCKED by a configuration error",
        ),
        (
            {**NAME, "role": "ACTIVE", "holding": True, "alive": False, "last_heard_age": 4.0},
            "b (peer): LOST, last heard ACTIVE 4.0s ago, may still hold it",
        ),
        ({"name": "b", "heard": False}, "b (peer): never heard"),
    ],
)
def test_peer_claim_text(claim: dict[str, Any], text: str) -> None:
    """Each row: what the peer advertises reads as one clause naming the peer and its role."""
    assert peer_claim_text(claim) == text


def test_resource_line_shows_both_nodes() -> None:
    """A resource's second line names this node's state and monitor, then the peer's claim."""
    entry = {
        "kind": "service",
        "name": "web",
        "agent": "ocf:heartbeat:nginx",
        "holder": "b",
        "state": "stopped",
        "last_monitor": {"result": "OCF_NOT_RUNNING", "at": 1.7e9},
        "peer": {**NAME, "role": "ACTIVE", "holding": True},
    }
    doc = {"written": 1.7e9, "pid": 0, "services": [entry], "local": {"name": "a"}, "peer": {}}
    lines = render(doc, 1.7e9 + 2).splitlines()
    at = lines.index("Resources:")
    assert "web" in lines[at + 1] and "runs on b" in lines[at + 1]
    assert lines[at + 2].strip() == (
        "a (here): stopped, monitor OCF_NOT_RUNNING 2.0s ago; b (peer): ACTIVE, runs it"
    )


@dataclass
class OneService(FakeResources):
    """Fake resources with one service entry in their status view."""

    def describe(self) -> list[dict[str, Any]]:
        """Return the fake VIP and one service, held as the VIP is."""
        svc = {"kind": "service", "name": "web", "held": self.held, "state": "stopped"}
        return [*super().describe(), svc]


def test_daemon_status_carries_the_peers_claim_per_service(tmp_path: Path) -> None:
    """With an active peer heard, each service in status says the peer runs it."""

    async def body(rig: Rig) -> None:
        rig.daemon.fx.resources = OneService()
        for _ in range(6):
            rig.links.inject("lan", rig.peer_heartbeat(Role.ACTIVE, epoch=1))
            await rig.advance(0.2)
        assert rig.daemon.state.role is Role.STANDBY
        path = control.socket_path(rig.cfg.run_dir)
        doc = (await asyncio.to_thread(control.call, path, {"cmd": "status"}))["status"]
        (svc,) = doc["services"]
        assert svc["holder"] == "beta"
        assert svc["peer"]["role"] == "ACTIVE" and svc["peer"]["holding"] is True
        assert "beta (peer): ACTIVE, runs it" in render(doc, doc["written"])
        assert "peer" not in doc["vips"][0]

    run(tmp_path, body)
