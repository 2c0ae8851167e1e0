"""The status file: written atomically by the daemon, read and rendered by `takeover status`.

The daemon rewrites `<run_dir>/takeover.json` on every transition and every interval: a
temporary file in the same directory, then rename(2), so a reader sees the old document or
the new one, never half of one (keepalived's vrrp_json.c does the same). A document older
than 3 x its `status_interval` means the daemon is hung: `takeover status` says UNKNOWN.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from takeover.exits import StatusExit
from takeover.fsutil import write_atomic

log = logging.getLogger(__name__)

STATUS_NAME = "takeover.json"
# Readers consider a document this many status intervals old as stale.
STALE_FACTOR = 3


def status_path(run_dir: Path) -> Path:
    """Return the status file's path in a run directory."""
    return run_dir / STATUS_NAME


def write_status(path: Path, doc: dict[str, Any]) -> None:
    """Replace `path` with `doc` as JSON atomically (temp file in the same dir, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Status is not secret (no keys, no passwords); operators read it without root.
    write_atomic(path, json.dumps(doc, indent=1, sort_keys=True) + "\n", mode=0o644)


def read_status(path: Path) -> dict[str, Any] | None:
    """Return the status document, or None when there is none (daemon not running)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    doc = json.loads(text)
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: not a JSON object")
    return doc


def remove_status(path: Path) -> None:
    """Remove the status file (clean daemon exit)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _stat_fields(pid: int) -> list[str] | None:
    """Return the fields of /proc/PID/stat after the command name (field 3 on), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces.
    return text.rpartition(")")[2].split()


def process_start(pid: int) -> int | None:
    """Return the start time of process `pid` in clock ticks since boot (/proc), or None."""
    fields = _stat_fields(pid)
    try:
        return int(fields[19]) if fields is not None else None  # field 22
    except (ValueError, IndexError):
        return None


def pid_alive(pid: int, start: int | None = None) -> bool:
    """Return whether a process with this pid exists (signal 0 probes without sending) and,
    with `start`, is the one that started then (not a later process given the same pid).

    A zombie is not alive: it has exited, only its parent has not reaped it yet.
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    fields = _stat_fields(pid)
    if fields is not None and fields[:1] == ["Z"]:
        return False
    if start is None:
        return True
    now = process_start(pid)
    return now is None or now == start


def daemon_gone(doc: dict[str, Any]) -> bool:
    """Return whether the process that wrote `doc` has exited (killed, crashed)."""
    pid, start = doc.get("pid"), doc.get("pid_start")
    return isinstance(pid, int) and not pid_alive(pid, start if isinstance(start, int) else None)


def classify(doc: dict[str, Any] | None, wall_now: float) -> StatusExit:
    """Return the exit status `takeover status` reports for a document read at `wall_now`.

    A document whose writer is gone is NOT_RUNNING however fresh: a daemon killed a moment
    ago wrote it. One older than STALE_FACTOR intervals from a live writer is UNKNOWN (hung).
    """
    if doc is None or daemon_gone(doc):
        return StatusExit.NOT_RUNNING
    age = wall_now - float(doc.get("written", 0.0))
    interval = float(doc.get("status_interval", 1.0))
    if age > STALE_FACTOR * interval:
        return StatusExit.UNKNOWN
    return StatusExit.ACTIVE_OR_STANDBY


# Seconds a rejected heartbeat keeps its condition in the status (rejections repeat every
# interval while their cause lasts).
REJECTED_RECENT = 30.0


def reload_conditions(last: dict[str, Any] | None) -> list[str]:
    """Return the condition of a failed last reload: the old configuration still runs."""
    if not last or last.get("ok", True):
        return []
    problems = "; ".join(str(p) for p in last.get("problems") or [])
    return [f"reload failed, the previous configuration runs on: {problems}"]


def link_conditions(peer: str, links: dict[str, dict[str, Any]]) -> list[str]:
    """Return the heartbeat conditions an operator must see: datagrams from the peer's address
    rejected recently (a wrong key ...), and a peer running another configuration."""
    # Loaded here: mirrord reads status files with this module but never heartbeats (the wire
    # format pulls in the state machine).
    from takeover.wire import REJECTION_HINTS  # noqa: PLC0415

    out: list[str] = []
    for reason, hint in REJECTION_HINTS.items():
        ages = {
            name: float(age)
            for name, link in links.items()
            if (age := (link.get("rejected_age") or {}).get(reason.value)) is not None
            and float(age) <= REJECTED_RECENT
        }
        if ages:
            out.append(
                f"heartbeats from {peer} rejected: {hint} "
                f"(on {', '.join(sorted(ages))}; last {_age(min(ages.values()))})"
            )
    drift = sorted(name for name, link in links.items() if link.get("digest_differs"))
    if drift:
        out.append(
            f"configuration differs from {peer}'s (heartbeats accepted on {', '.join(drift)}, "
            "cluster file digest differs): compare the cluster files"
        )
    return out


def _age(value: float | None) -> str:
    if value is None:
        return "never"
    if value < 1.0:
        return f"{value * 1000:.0f}ms ago"
    if value < 120:
        return f"{value:.1f}s ago"
    return f"{value / 60:.0f}min ago"


def render(doc: dict[str, Any], wall_now: float) -> str:
    """Return the crm_mon-like human view of a status document."""
    verdict = classify(doc, wall_now)
    lines: list[str] = []
    age = wall_now - float(doc.get("written", wall_now))
    local = doc.get("local") or {}
    lines.append(
        f"Cluster: {doc.get('cluster', '?')}   node {local.get('name', '?')}   "
        f"epoch {doc.get('epoch', '?')}   status written {_age(age)}"
    )
    if local.get("maintenance"):
        lines.append(
            "MAINTENANCE MODE: nothing is acquired, released, restarted or failed over "
            "(takeover maintenance off)"
        )
    if verdict is StatusExit.UNKNOWN:
        lines.append("WARNING: status is stale: the daemon may be hung")
    if verdict is StatusExit.NOT_RUNNING:
        lines.append(
            f"NOT RUNNING: the daemon (pid {doc.get('pid', '?')}) is gone; below is the last "
            f"state it wrote, {_age(age)}: stale"
        )
    for condition in doc.get("conditions") or []:
        lines.append(f"WARNING: {condition}")
    lines.append("")
    lines.append("Nodes:")
    me_cond = local.get("condition") or ""
    health = "healthy" if local.get("healthy", True) else "UNHEALTHY"
    if local.get("lan_up") is False:
        health += "  LAN DOWN"
    lines.append(
        f"  * {local.get('name', '?'):<12} {local.get('role', '?'):<12} (this node) "
        f"prio {local.get('priority', '?')}  score {local.get('score', '?')}  {health}"
        + (f"  [{me_cond}]" if me_cond else "")
    )
    peer = doc.get("peer") or {}
    if peer.get("role"):
        alive = peer.get("alive")
        peer_role = peer["role"] if alive else f"{peer['role']}?"
        state = "" if alive else "  LOST"
        lines.append(
            f"  * {peer.get('name', '?'):<12} {peer_role:<12} (peer)      "
            f"prio {peer.get('priority', '?')}  score {peer.get('score', '?')}  "
            f"heard {_age(peer.get('last_heard_age'))}{state}"
        )
    else:
        lines.append(f"  * {peer.get('name', '?'):<12} {'UNKNOWN':<12} (peer)      never heard")
    links = doc.get("links") or {}
    if links:
        lines.append("")
        lines.append("Heartbeat links:")
        for name, link in links.items():
            up = "up" if link.get("up") else "DOWN"
            lines.append(f"  {name:<12} {up:<5} last heard {_age(link.get('last_seen_age'))}")
    lines += witness_lines(doc)
    targets = doc.get("targets") or {}
    if targets:
        lines.append("")
        lines.append("Ping targets:")
        for name, state in targets.items():
            lines.append(f"  {name:<40} {state}")
    vips = doc.get("vips") or []
    if vips:
        lines.append("")
        lines.append("Virtual IPs:")
        for vip in vips:
            holder = vip.get("holder") or vip.get("holder_seen") or "nobody"
            where = f"{vip.get('address', '?'):<28} on {vip.get('interface', '?'):<10}"
            lines.append(f"  {where} {holder}")
    lines += vm_lines(doc) + service_lines(doc, wall_now) + fencing_lines(doc, wall_now)
    checks = doc.get("checks") or {}
    if checks:
        lines.append("")
        lines.append("Health checks:")
        for name, check in checks.items():
            lines.append(f"  {name:<20} {'ok' if check.get('ok') else 'FAILING'}")
    inhibitors = doc.get("inhibitors") or []
    awaited = [n for n in doc.get("inhibitors_awaited") or [] if n not in inhibitors]
    timeouts = (doc.get("totals") or {}).get("inhibitor_timeouts") or {}
    if inhibitors or awaited or timeouts:
        lines.append("")
    if inhibitors or awaited:
        lines.append(
            "Release inhibitors: "
            + ", ".join([*inhibitors, *(f"{n} (not subscribed yet)" for n in awaited)])
        )
    if timeouts:
        told = ", ".join(f"{n} {c}x" for n, c in sorted(timeouts.items()))
        lines.append(f"Releases that went on without an inhibitor: {told}")
    counters = doc.get("heartbeat") or {}
    not_drops = ("accepted", "sent", "digest_mismatched")
    dropped = {k: v for k, v in counters.items() if k not in not_drops and v}
    if counters:
        lines.append("")
        other = counters.get("digest_mismatched", 0)
        lines.append(
            f"Heartbeats: {counters.get('accepted', 0)} accepted"
            + (f" ({other} with another configuration digest)" if other else "")
            + f", {counters.get('sent', 0)} sent"
            + ("; dropped " + ", ".join(f"{k}={v}" for k, v in dropped.items()) if dropped else "")
        )
    transitions = doc.get("transitions") or []
    if transitions:
        lines.append("")
        lines.append("Last transitions:")
        for tr in transitions[-10:]:
            ago = _age(wall_now - float(tr.get("time", wall_now)))
            lines.append(f"  {ago:>12}  {tr.get('old')} -> {tr.get('new')}: {tr.get('reason')}")
    return "\n".join(lines) + "\n"


def witness_lines(doc: dict[str, Any]) -> list[str]:
    """Return the witness section: reachable or not, last answer, lease holder, remaining."""
    w = doc.get("witness")
    if not w:
        return []
    reach = "reachable" if w.get("reachable") else "UNREACHABLE"
    verdict = w.get("verdict")
    if verdict is None:
        answer = "never answered"
    else:
        answer = f"last answer {verdict} {_age(w.get('last_answer_age'))}"
    holder = w.get("holder")
    if holder:
        lease = f"lease held by {holder}, {float(w.get('remaining') or 0):.1f}s left"
    elif verdict == "QUIET":
        lease = "witness restarted: grants nothing yet"
    else:
        lease = "lease free"
    held = w.get("lease_held_for")
    if held is not None:
        lease += f" (ours surely for {float(held):.1f}s)"
    return [
        "",
        f"Witness: {w.get('address', '?')}  {reach}  {answer}",
        f"  {lease}; asking {w.get('asking') or '-'}, on_unreachable {w.get('on_unreachable')}",
    ]


def vm_lines(doc: dict[str, Any]) -> list[str]:
    """Return the "Virtual machines" section: name, where it runs, its state here."""
    vms = doc.get("vms") or []
    if not vms:
        return []
    lines = ["", "Virtual machines:"]
    for vm in vms:
        runs_on = vm.get("holder") or vm.get("holder_seen") or "nobody"
        here = f"here: {vm.get('state', '?')}"
        extra = []
        if vm.get("restarts"):
            extra.append(f"restarts {vm['restarts']}/{vm.get('max_restarts', '?')}")
        if vm.get("failed"):
            extra.append(f"FAILED: {vm['failed']}")
        if vm.get("error"):
            extra.append(f"error: {vm['error']}")
        tail = ("  " + "; ".join(extra)) if extra else ""
        lines.append(f"  {vm.get('name', '?'):<20} runs on {runs_on:<12} {here}{tail}")
    return lines


def service_lines(doc: dict[str, Any], wall_now: float) -> list[str]:
    """Return the "Resources" section: each service's agent, holder, state here, monitor,
    restarts in the window, failures and the last error with the agent's output."""
    services = doc.get("services") or []
    if not services:
        return []
    lines = ["", "Resources:"]
    here = (doc.get("local") or {}).get("name", "?")
    for svc in services:
        runs_on = svc.get("holder") or svc.get("holder_seen") or "nobody"
        mon = svc.get("last_monitor") or {}
        seen = f", monitor {mon.get('result')} {_age(wall_now - mon['at'])}" if mon else ""
        lines.append(f"  {svc.get('name', '?'):<16} {svc.get('agent', '?'):<28} runs on {runs_on}")
        where = f"{here} (here): {svc.get('state', '?')}{seen}"
        if svc.get("peer"):
            where += f"; {peer_claim_text(svc['peer'])}"
        lines.append(f"    {where}")
        extra = [f"restarts {svc.get('restarts', 0)}/{svc.get('max_restarts', '?')}"]
        if svc.get("failures"):
            extra.append(f"failures {svc['failures']}")
        if svc.get("blocked"):
            extra.append(f"BLOCKED: {svc['blocked']}")
        lines.append("    " + "; ".join(extra))
        err = svc.get("last_error")
        if err:
            exit_ = "timeout" if err.get("exit") is None else f"exit {err.get('exit')}"
            lines.append(
                f"    last error {_age(wall_now - err.get('at', wall_now))}: {err.get('action')} "
                f"{err.get('result')} ({exit_}): {err.get('reason')}"
            )
            for out in (err.get("output") or "").splitlines()[-3:]:
                lines.append(f"      | {out}")
    return lines


def peer_claim_text(claim: dict[str, Any]) -> str:
    """Return what the peer advertises of a resource's group, as one clause."""
    name = f"{claim.get('name', '?')} (peer)"
    if not claim.get("heard"):
        return f"{name}: never heard"
    role, holding = claim.get("role", "?"), claim.get("holding")
    if not claim.get("alive"):
        held = "may still hold it" if holding else "held nothing"
        return f"{name}: LOST, last heard {role} {_age(claim.get('last_heard_age'))}, {held}"
    what = (
        "runs it"
        if holding and role == "ACTIVE"
        else "may still hold it"
        if holding
        else ("holds nothing")
    )
    blocked = ", BLOCKED by a configuration error" if claim.get("blocked") else ""
    return f"{name}: {role}, {what}{blocked}"


def fencing_lines(doc: dict[str, Any], wall_now: float) -> list[str]:
    """Return the "Fencing" section: the peer's BMC and each recent operation's attempts."""
    fencing = doc.get("fencing")
    if not fencing:
        return []
    lines = ["", f"Fencing: {fencing.get('node', '?')} via BMC {fencing.get('bmc', '?')}"]
    results = fencing.get("results") or []
    if not results:
        lines.append("  no fencing attempted")
    for res in results:
        ago = _age(wall_now - float(res.get("finished_at") or wall_now))
        outcome = (
            f"OK, power {res.get('power')}" if res.get("ok") else f"FAILED ({res.get('error')})"
        )
        lines.append(f"  {ago:>12}  {res.get('action', 'off')}: {outcome} in {res.get('elapsed')}s")
        for a in res.get("attempts") or []:
            detail = f"{a.get('result')} ({a.get('detail')})"
            lines.append(f"      try {a.get('try')}: {detail} {a.get('elapsed')}s")
    return lines


# mirrord's status file in the same run dir. Read as JSON: takeover never imports mirrord.
MIRROR_STATUS_NAME = "mirrord.json"


def read_mirror(run_dir: Path, wall_now: float) -> dict[str, Any]:
    """Return what `takeover status` shows of mirrord: its state and, per mirrored directory,
    direction, RPO and last pass ({"state": "not running"} without a status file)."""
    path = run_dir / MIRROR_STATUS_NAME
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return {"state": "not running", "directories": []}
    except (OSError, ValueError) as err:
        return {"state": f"unreadable: {err}", "directories": []}
    if not isinstance(doc, dict):
        return {"state": "unreadable: not a JSON object", "directories": []}
    age = wall_now - float(doc.get("updated", 0) or 0)
    if doc.get("stopped") or daemon_gone(doc):
        state = "not running (last status shown)"
    elif age > 3 * float(doc.get("status_interval", 1.0) or 1.0):
        state = f"status {age:.0f}s old: mirrord may be hung"
    else:
        state = "running"
    follow = doc.get("follow") or {}
    node, peer = doc.get("node") or "?", follow.get("peer") or "peer"
    if follow.get("pushing") or not follow.get("following", True):
        direction = f"{node} -> {peer}"
    elif follow.get("receiving"):
        direction = f"{peer} -> {node}"
    else:
        direction = "held"
    dirs = []
    for d in doc.get("directories") or []:
        if not isinstance(d, dict):
            continue
        last = d.get("last") or {}
        dirs.append(
            {
                "directory": d.get("directory"),
                "direction": direction,
                "rpo": d.get("rpo") if direction != f"{peer} -> {node}" else None,
                "dirty": d.get("dirty"),
                "last_result": last.get("result") or None,
                "last_kind": last.get("kind") or None,
                "last_finished": d.get("last_finished"),
            }
        )
    return {"state": state, "why": follow.get("why"), "directories": dirs,
            "last_flush": follow.get("last_flush")}  # fmt: skip


def render_mirror(mirror: dict[str, Any], wall_now: float) -> str:
    """Return the "Mirroring" section of `takeover status`."""
    lines = ["", f"Mirroring: mirrord {mirror.get('state')}"]
    if mirror.get("why"):
        lines[-1] += f"; {mirror['why']}"
    for d in mirror.get("directories") or []:
        rpo = d.get("rpo")
        rpo_s = "-" if rpo is None else f"{float(rpo):.1f}s"
        fin = d.get("last_finished")
        # The planner's clock is the wall clock (mirrord's default): an age, then.
        last = "never" if fin is None else _age(wall_now - float(fin))
        result = d.get("last_result") or "-"
        lines.append(
            f"  {d.get('directory', '?'):<28} {d.get('direction', '?'):<10} RPO {rpo_s:>6}  "
            f"dirty {d.get('dirty', 0):>4}  last pass {result} {last}"
        )
    flush = mirror.get("last_flush")
    if isinstance(flush, dict) and flush.get("ended"):
        took = float(flush["ended"]) - float(flush.get("started") or flush["ended"])
        verdict = "complete" if flush.get("ok") else f"INCOMPLETE ({flush.get('detail', '')})"
        lines.append(f"  last final flush: {verdict} in {took:.2f}s")
        for root, paths in (flush.get("unsynced") or {}).items():
            lines.append(f"    unsynced in {root}: {', '.join(paths[:5])}")
    return "\n".join(lines) + "\n"
