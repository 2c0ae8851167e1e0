"""`mirrord status --brief`: one plugin line and a Nagios/Icinga exit code.

Pure: no clock, no I/O; callers pass the status document, the verdict of
`mirrord.cli.read_status` (running, not running, stale) and `wall_now`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from takeover.brief import Plugin, Problem, plugin_line
from takeover.exits import StatusExit


def mirrord_brief(doc: Mapping[str, Any] | None, verdict: int, why: str) -> tuple[int, str]:
    """Return `mirrord status --brief`'s exit code and line for one status document.

    CRITICAL: mirrord is not running, or a directory is in alarm (the guard refused a pass,
    rsync needs an operator). WARNING: a pushed directory's RPO over its max_interval, passes
    failing, a directory not watched, paths left out (`not_mirrored`), the last final flush
    incomplete, the last reload refused. UNKNOWN: the status is stale or unreadable.
    """
    if verdict == StatusExit.NOT_RUNNING:
        return plugin_line("MIRRORD", [(Plugin.CRITICAL, "mirrord not running")], "")
    if verdict != StatusExit.ACTIVE_OR_STANDBY or doc is None:
        return plugin_line("MIRRORD", [(Plugin.UNKNOWN, why)], "")
    follow = doc.get("follow") or {}
    pushing = bool(follow.get("pushing"))
    dirs = [d for d in doc.get("directories") or [] if isinstance(d, dict)]
    problems: list[Problem] = []
    worst_rpo = 0.0
    for d in dirs:
        name = d.get("directory", "?")
        rpo, limit = d.get("rpo"), d.get("max_interval")
        if d.get("alarm"):
            problems.append((Plugin.CRITICAL, f"{name} in alarm: {d['alarm']}"))
        elif d.get("failures"):
            problems.append((Plugin.WARNING, f"{name} failing ({d['failures']} in a row)"))
        if pushing and isinstance(rpo, int | float):
            worst_rpo = max(worst_rpo, float(rpo))
            if isinstance(limit, int | float) and rpo > limit:
                problems.append(
                    (Plugin.WARNING, f"{name} RPO {rpo:.0f}s over max_interval {limit:g}s")
                )
        if not d.get("watched", True):
            problems.append((Plugin.WARNING, f"{name} not watched (full passes only)"))
        left = d.get("not_mirrored") or []
        if left:
            problems.append(
                (Plugin.WARNING, f"{name}: {len(left)} paths not mirrored, e.g. {left[0]}")
            )
    flush = follow.get("last_flush")
    if isinstance(flush, dict) and flush.get("ended") and not flush.get("ok"):
        problems.append((Plugin.WARNING, "last final flush incomplete"))
    reload = doc.get("reload")
    if isinstance(reload, dict) and reload.get("ok") is False:
        problems.append(
            (Plugin.WARNING, "reload failed: " + "; ".join(map(str, reload.get("problems") or [])))
        )
    peer = follow.get("peer") or doc.get("peer") or "peer"
    if pushing:
        ok_text = f"pushing {len(dirs)} directories to {peer}, max RPO {worst_rpo:.1f}s"
    elif follow.get("receiving"):
        ok_text = f"receiving {len(dirs)} directories from {peer}"
    else:
        ok_text = str(follow.get("why") or "holding")
    perf = {"rpo_max": f"{worst_rpo:.3f}s"} if pushing else {}
    return plugin_line("MIRRORD", problems, ok_text, perf)
