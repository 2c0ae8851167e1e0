"""`status --brief`: each state of a status document gives its plugin exit code and line."""

from __future__ import annotations

from typing import Any

import pytest

from mirrord.brief import mirrord_brief
from takeover.brief import Plugin, takeover_brief
from takeover.exits import StatusExit

WALL = 1_000_000.0
RUNNING, GONE, STALE = StatusExit.ACTIVE_OR_STANDBY, StatusExit.NOT_RUNNING, StatusExit.UNKNOWN


def takeover_doc(**over: Any) -> dict[str, Any]:
    """Return the status of a healthy ACTIVE node whose STANDBY peer is heard on both links."""
    doc: dict[str, Any] = {
        "written": WALL - 0.5,
        "local": {"name": "a", "role": "ACTIVE", "score": 0},
        "peer": {"name": "b", "role": "STANDBY", "alive": True, "last_heard_age": 0.1},
        "links": {"direct": {"up": True}, "lan": {"up": True}},
        "checks": {"smtp": {"ok": True}},
        "conditions": [],
    }
    doc.update(over)
    return doc


LOST = {"name": "b", "role": "ACTIVE", "alive": False, "last_heard_age": 4.2}
TAKEOVER_CASES = [
    # (document changes, verdict, exit code, text the line contains)
    ({}, RUNNING, Plugin.OK, "TAKEOVER OK - a ACTIVE, peer b STANDBY heard 0.1s ago | score=0"),
    ({}, GONE, Plugin.CRITICAL, "TAKEOVER CRITICAL - daemon not running"),
    ({}, STALE, Plugin.UNKNOWN, "TAKEOVER UNKNOWN - status 0s old: hung?"),
    ({"peer": LOST}, RUNNING, Plugin.CRITICAL, "peer b lost (last heard 4.2s ago)"),
    ({"peer": {"name": "b"}}, RUNNING, Plugin.CRITICAL, "peer b never heard"),
    # Still listening (initdead): a peer not heard yet is no outage.
    (
        {"local": {"name": "a", "role": "STARTING"}, "peer": {"name": "b"}},
        RUNNING,
        Plugin.WARNING,
        "TAKEOVER WARNING - a STARTING",
    ),
    (
        {"local": {"name": "a", "role": "ISOLATED", "reason": "LAN lost"}},
        RUNNING,
        Plugin.CRITICAL,
        "a ISOLATED: LAN lost",
    ),
    ({"peer": {**LOST, "alive": True}}, RUNNING, Plugin.CRITICAL, "both a and b ACTIVE"),
    ({"local": {"name": "a", "role": "STANDBY"}}, RUNNING, Plugin.CRITICAL, "no node ACTIVE"),
    (
        {"links": {"direct": {"up": False}, "lan": {"up": True}}},
        RUNNING,
        Plugin.WARNING,
        "TAKEOVER WARNING - heartbeat link direct down",
    ),
    ({"checks": {"smtp": {"ok": False}}}, RUNNING, Plugin.WARNING, "check smtp failing"),
    (
        {"conditions": ["configuration differs from b's"]},
        RUNNING,
        Plugin.WARNING,
        "TAKEOVER WARNING - configuration differs from b's",
    ),
    (
        {"conditions": ["heartbeats from b rejected: authentication failed"]},
        RUNNING,
        Plugin.WARNING,
        "heartbeats from b rejected",
    ),
    (
        {"local": {"name": "a", "role": "ACTIVE", "score": 0, "maintenance": True}},
        RUNNING,
        Plugin.WARNING,
        "TAKEOVER WARNING - maintenance mode: no failover",
    ),
    # The worst decides the code; every problem is on the line, the worst first.
    (
        {"peer": LOST, "conditions": ["configuration differs"]},
        RUNNING,
        Plugin.CRITICAL,
        "TAKEOVER CRITICAL - peer b lost (last heard 4.2s ago); configuration differs",
    ),
]


@pytest.mark.parametrize("over, verdict, code, text", TAKEOVER_CASES)
def test_takeover_brief(over: dict[str, Any], verdict: StatusExit, code: Plugin, text: str) -> None:
    """The status document's worst problem sets the plugin code; the line says what it is."""
    got_code, line = takeover_brief(takeover_doc(**over), verdict, WALL)
    assert (got_code, text in line) == (int(code), True), line
    assert "\n" not in line


def test_takeover_brief_without_a_document_is_critical() -> None:
    """No status file at all: the daemon is not running."""
    assert takeover_brief(None, GONE, WALL) == (2, "TAKEOVER CRITICAL - daemon not running")


def mirror_doc(**over: Any) -> dict[str, Any]:
    """Return the status of a mirrord pushing one healthy directory."""
    mail = {
        "directory": "/srv/mail",
        "rpo": 1.5,
        "max_interval": 30.0,
        "failures": 0,
        "alarm": None,
        "watched": True,
        "not_mirrored": [],
    }
    doc: dict[str, Any] = {"follow": {"pushing": True, "peer": "b"}, "directories": [mail]}
    for key, value in over.items():
        if key in mail:
            mail[key] = value
        else:
            doc[key] = value
    return doc


OK, NOT_RUNNING = int(StatusExit.ACTIVE_OR_STANDBY), int(StatusExit.NOT_RUNNING)
MIRROR_CASES = [
    ({}, OK, Plugin.OK, "MIRRORD OK - pushing 1 directories to b, max RPO 1.5s | rpo_max=1.500s"),
    ({}, NOT_RUNNING, Plugin.CRITICAL, "MIRRORD CRITICAL - mirrord not running"),
    (
        {"reload": {"ok": False, "problems": ["cluster.toml: mirror.ssh_user: restart to apply"]}},
        OK,
        Plugin.WARNING,
        "MIRRORD WARNING - reload failed: cluster.toml: mirror.ssh_user: restart to apply",
    ),
    ({"reload": {"ok": True, "changes": ["+/srv/x"]}}, OK, Plugin.OK, "MIRRORD OK"),
    ({}, int(StatusExit.UNKNOWN), Plugin.UNKNOWN, "MIRRORD UNKNOWN - status is 9s old"),
    (
        {"alarm": "guard: source missing"},
        OK,
        Plugin.CRITICAL,
        "/srv/mail in alarm: guard: source missing",
    ),
    ({"rpo": 45.0}, OK, Plugin.WARNING, "/srv/mail RPO 45s over max_interval 30s"),
    ({"failures": 2}, OK, Plugin.WARNING, "/srv/mail failing (2 in a row)"),
    ({"watched": False}, OK, Plugin.WARNING, "/srv/mail not watched"),
    (
        {"not_mirrored": ["deep/x", "deep/y"]},
        OK,
        Plugin.WARNING,
        "/srv/mail: 2 paths not mirrored, e.g. deep/x",
    ),
    # Receiving: the planner's RPO is not this node's to report.
    (
        {"rpo": 45.0, "follow": {"pushing": False, "receiving": True, "peer": "b"}},
        OK,
        Plugin.OK,
        "MIRRORD OK - receiving 1 directories from b",
    ),
    (
        {"follow": {"pushing": True, "peer": "b", "last_flush": {"ended": 5.0, "ok": False}}},
        OK,
        Plugin.WARNING,
        "last final flush incomplete",
    ),
]


@pytest.mark.parametrize("over, verdict, code, text", MIRROR_CASES)
def test_mirrord_brief(over: dict[str, Any], verdict: int, code: Plugin, text: str) -> None:
    """A directory in alarm is CRITICAL, RPO over max_interval a WARNING, and so on."""
    got_code, line = mirrord_brief(mirror_doc(**over), verdict, "status is 9s old: hung?")
    assert (got_code, text in line) == (int(code), True), line
