"""`status --brief`: one line and a Nagios/Icinga plugin exit code from a status document.

Pure: no clock, no I/O; callers pass the document, whether its writer still runs (the
verdict `takeover.status.classify` gives) and `wall_now`. The line follows the plugin
convention, `SERVICE STATE - what | perfdata`, and the worst problem found sets the code:
0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from typing import Any

from takeover.exits import StatusExit


class Plugin(enum.IntEnum):
    """Nagios/Icinga plugin exit codes (the monitoring-plugins guidelines)."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3


# Roles that are on their way somewhere: worth a look if they last, not an outage yet.
PASSING_ROLES = frozenset({"STARTING", "ARBITRATING", "FENCING", "RELEASING"})
# Roles in which this node cannot serve and will not take over.
BROKEN_ROLES = frozenset({"ISOLATED", "FAULT"})

Problem = tuple[Plugin, str]


def plugin_line(
    service: str, problems: Iterable[Problem], ok_text: str, perf: Mapping[str, str] | None = None
) -> tuple[int, str]:
    """Return (exit code, line): the worst problem's state, problems worst first."""
    found = sorted(problems, key=lambda p: -p[0])
    code = max((p[0] for p in found), default=Plugin.OK)
    text = "; ".join(t for _, t in found) or ok_text
    line = f"{service} {code.name} - {text}"
    if perf:
        line += " | " + " ".join(f"{k}={v}" for k, v in perf.items())
    return int(code), line


def _secs(value: object) -> str:
    return f"{float(value):.1f}s" if isinstance(value, int | float) else "never"


def takeover_brief(
    doc: Mapping[str, Any] | None, verdict: StatusExit, wall_now: float
) -> tuple[int, str]:
    """Return `takeover status --brief`'s exit code and line for one status document.

    CRITICAL: the daemon is not running, the peer is lost, this node cannot serve (ISOLATED,
    FAULT), or no node / both nodes are ACTIVE. WARNING: maintenance mode, a condition of
    `takeover status` (heartbeats rejected, configuration drift, a failed reload), a
    heartbeat link down, a failing health check, a transitional role. UNKNOWN: the status
    is stale (the daemon may be hung).
    """
    if doc is None or verdict is StatusExit.NOT_RUNNING:
        return plugin_line("TAKEOVER", [(Plugin.CRITICAL, "daemon not running")], "")
    if verdict is StatusExit.UNKNOWN:
        age = wall_now - float(doc.get("written", 0.0))
        return plugin_line("TAKEOVER", [(Plugin.UNKNOWN, f"status {age:.0f}s old: hung?")], "")
    local, peer = doc.get("local") or {}, doc.get("peer") or {}
    me, role = local.get("name", "?"), local.get("role", "?")
    peer_name, peer_role = peer.get("name", "peer"), peer.get("role")
    problems: list[Problem] = []
    alive = bool(peer.get("alive"))
    if local.get("maintenance"):
        problems.append((Plugin.WARNING, "maintenance mode: no failover"))
    if role in BROKEN_ROLES:
        reason = local.get("reason") or local.get("condition") or ""
        problems.append((Plugin.CRITICAL, f"{me} {role}" + (f": {reason}" if reason else "")))
    elif role in PASSING_ROLES:
        problems.append((Plugin.WARNING, f"{me} {role}"))
    if not alive and role != "STARTING":
        heard = peer.get("last_heard_age")
        lost = f"lost (last heard {_secs(heard)} ago)" if heard is not None else "never heard"
        problems.append((Plugin.CRITICAL, f"peer {peer_name} {lost}"))
    if alive and role == "ACTIVE" and peer_role == "ACTIVE":
        problems.append((Plugin.CRITICAL, f"both {me} and {peer_name} ACTIVE"))
    if alive and role == "STANDBY" and peer_role == "STANDBY":
        problems.append((Plugin.CRITICAL, f"no node ACTIVE ({me} and {peer_name} STANDBY)"))
    if alive:
        down = sorted(k for k, v in (doc.get("links") or {}).items() if not v.get("up"))
        if down:
            problems.append((Plugin.WARNING, f"heartbeat link {', '.join(down)} down"))
    failing = sorted(k for k, v in (doc.get("checks") or {}).items() if not v.get("ok"))
    if failing:
        problems.append((Plugin.WARNING, f"check {', '.join(failing)} failing"))
    problems += [(Plugin.WARNING, str(c)) for c in doc.get("conditions") or []]
    peer_text = f"{peer_role} heard {_secs(peer.get('last_heard_age'))} ago" if alive else "lost"
    ok_text = f"{me} {role}, peer {peer_name} {peer_text}"
    perf = {"score": str(local.get("score", 0))}
    if isinstance(peer.get("last_heard_age"), int | float):
        perf["peer_heard"] = f"{float(peer['last_heard_age']):.3f}s"
    return plugin_line("TAKEOVER", problems, ok_text, perf)
