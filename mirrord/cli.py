"""Command line of `mirrord`: run, status, sync, check, orphans, authorize, pair-setup,
receive."""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import logging
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mirrord import lean, orphans, reloadplan
from mirrord.brief import mirrord_brief
from mirrord.daemon import Daemon, DaemonError, Reloaded, mirror_dir
from mirrord.journal import JournalError
from mirrord.orphans import Orphan
from mirrord.pairsetup import DROPIN, pinned_options, run_pair_setup
from mirrord.policy import Policy, load_policies
from mirrord.receive import authorized_keys_line as rrsync_keys_line
from mirrord.receive import receive
from mirrord.rsyncd import (
    CONF_NAME,
    Tunnel,
    authorized_keys_line,
    conf_roots,
    module_name,
    render_conf,
    render_secrets,
    tunnel_files,
    tunnel_secret,
)
from mirrord.transfer import Peer
from takeover.brief import Plugin
from takeover.cliutil import (
    add_command,
    add_common_args,
    config_exit,
    load_local,
    print_json,
    print_problems,
    report_check,
    setup_daemon_logging,
)
from takeover.config import Cluster, MetricsConfig, Node
from takeover.configparse import ConfigError
from takeover.exits import Exit, StatusExit
from takeover.fsutil import write_atomic
from takeover.reloadplan import ReloadRefused
from takeover.status import daemon_gone

PROG = "mirrord"
# Names shared with the daemon (kept here so `status` and `sync` need not import it).
STATUS_NAME = "mirrord.json"
SOCKET_NAME = "mirrord.sock"


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="Mirror each configured directory from the active node."
    )
    add_common_args(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = add_command(sub, "run", cmd_run, "run the daemon in the foreground (systemd)")
    run.add_argument(
        "--ssh-option",
        action="append",
        default=[],
        metavar="OPT",
        help="extra ssh -o option for the peer, e.g. UserKnownHostsFile=/etc/hapair/known_hosts",
    )
    run.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    run.add_argument(
        "--standalone",
        action="store_true",
        help="push always, without following takeover's role (a one-way mirror)",
    )
    run.add_argument(
        "--flush-timeout",
        type=float,
        default=None,
        help="seconds a planned switchover waits for the final flush "
        "(default: [mirror] flush_timeout, 20 s)",
    )

    status = add_command(sub, "status", cmd_status, "show each directory's mirroring state")
    status.add_argument("--json", action="store_true", help="print one JSON document")
    status.add_argument(
        "--brief",
        action="store_true",
        help="print one line and exit as a Nagios/Icinga plugin (0 OK, 1 WARNING, "
        "2 CRITICAL, 3 UNKNOWN)",
    )

    sync = add_command(sub, "sync", cmd_sync, "pass now (one directory or all) and wait")
    sync.add_argument("directory", nargs="?", help="a mirrored directory (default: all)")
    sync.add_argument("--full", action="store_true", help="a full pass, not only dirty paths")
    sync.add_argument("--no-wait", action="store_true", help="queue the request and return")
    sync.add_argument(
        "--allow-deletions",
        action="store_true",
        help="the deletions are intended: the next pass skips the max_delete guard",
    )
    sync.add_argument(
        "--timeout", type=float, default=3600.0, help="seconds to wait (default 3600)"
    )
    sync.add_argument("--json", action="store_true", help="print one JSON document")

    check = add_command(
        sub, "check", cmd_check, "validate the cluster file and mirror policies; exit 0 or 2"
    )
    check.add_argument("--json", action="store_true", help="print one JSON document")
    check.add_argument(
        "--no-fs",
        action="store_true",
        help="skip checks of the file system (mirrored directories exist, ssh key readable)",
    )

    orph = add_command(
        sub, "orphans", cmd_orphans, "list changes set aside after this node stopped pushing"
    )
    orph.add_argument("--json", action="store_true", help="print one JSON document")
    orph.add_argument(
        "--restore",
        metavar="PATH",
        help="send one orphan (its original or recovered path) to the peer as a conflict copy",
    )
    orph.add_argument("--ssh-option", action="append", default=[], metavar="OPT",
                      help="extra ssh -o option for the peer (as for run)")  # fmt: skip

    auth = add_command(
        sub,
        "authorize",
        cmd_authorize,
        "print the authorized_keys line that lets the peer's key write only the mirrored roots",
    )
    auth.add_argument(
        "public_key", type=Path, help="the peer's mirror public key (e.g. mirror_key.pub)"
    )
    auth.add_argument(
        "--rsyncd-conf",
        type=Path,
        default=None,
        help=f"where to write the receiving rsync daemon's modules (default: {CONF_NAME} "
        "beside the cluster file)",
    )
    auth.add_argument("--rsync", default=None, help="rsync on this node (default: the one on PATH)")

    pair = add_command(
        sub,
        "pair-setup",
        cmd_pair_setup,
        "create this node's mirror key, pin the peer's host key, authorize the peer's key",
    )
    pair.add_argument(
        "--peer-fingerprint",
        metavar="SHA256:...",
        default=None,
        help="the peer's ssh host key fingerprint, as `ssh-keygen -lf` prints it on the peer",
    )
    pair.add_argument(
        "--peer-public-key",
        type=Path,
        default=None,
        metavar="FILE",
        help="the peer's mirror_key.pub: allow it to write the mirrored roots here",
    )
    pair.add_argument("--rsync", default=None, help="rsync on this node (default: the one on PATH)")

    recv = add_command(
        sub, "receive", cmd_receive, "forced ssh command of the mirror key (receiver = rrsync)"
    )
    recv.add_argument("--root", action="append", required=True, help="a mirrored root")
    recv.add_argument(
        "--retention", type=float, default=7 * 86400.0, help="seconds backups are kept"
    )
    return parser


def _load(args: argparse.Namespace) -> tuple[Cluster, Node, list[Policy]]:
    cluster, node = load_local(args)
    policies = load_policies(cluster, check_fs=False)
    return cluster, node, policies


def _peer(cluster: Cluster, node: Node, ssh_options: list[str]) -> Peer:
    """Return how this node reaches its peer's receiving account."""
    assert cluster.mirror is not None
    peer_node = cluster.peer_of(node.name)
    assert peer_node.mirror_address is not None
    options: list[str] = []
    for opt in ssh_options:
        options += ["-o", opt]
    return Peer(
        user=cluster.mirror.ssh_user,
        address=peer_node.mirror_address,
        port=cluster.mirror.ssh_port,
        key=str(cluster.mirror.ssh_key),
        control_path=str(node.run_dir / "mirrord-ssh-%C"),
        # The pinned host keys come last: ssh keeps the first value of an option, so an
        # --ssh-option naming another known_hosts still wins.
        ssh_options=(*options, *pinned_options(cluster.source)),
        daemon=cluster.mirror.receiver == "rsyncd",
        tunnel_port=cluster.mirror.tunnel_port,
        # The tunnel's forward lives on the ControlMaster: kept while mirrord runs (its unit
        # ends it with the rest of its processes), so a quiet spell does not end the tunnel.
        control_persist="yes" if cluster.mirror.tunnel_port else Peer.control_persist,
    )


def cluster_key(cluster: Cluster) -> bytes:
    """Read the cluster (heartbeat) key by its rules; ValueError names the file and key."""
    from takeover import heartbeat  # noqa: PLC0415  the tunnel's only: the daemon stays lean

    try:
        return heartbeat.load_key(cluster.heartbeat.key_file)
    except heartbeat.KeyFileError as err:
        raise ValueError(f"{cluster.label}: heartbeat.key_file: {err}") from None


def cmd_run(args: argparse.Namespace) -> int:
    """Run the daemon until SIGTERM."""
    setup_daemon_logging(args.log_level)
    # APScheduler logs every job run at INFO (a status write each second): keep its warnings.
    logging.getLogger("apscheduler").setLevel(max(logging.WARNING, logging.root.level))
    # As takeover run: the main process applies every rule of `check` (RestartPreventExitStatus).
    checked = cmd_check(argparse.Namespace(**{**vars(args), "no_fs": False}))
    if checked != Exit.OK:
        return checked
    try:
        cluster, node, policies = _load(args)
    except ConfigError as err:
        print_problems(PROG, err.problems)
        return config_exit(err)
    assert cluster.mirror is not None  # load_policies refuses a cluster without [mirror]
    peer_node = cluster.peer_of(node.name)
    if peer_node.mirror_address is None:
        print_problems(PROG, [f"{cluster.label}: node.mirror_address: not set for the peer"])
        return int(Exit.CONFIG)

    def reloader() -> Reloaded:
        """Read the cluster file and the policies again (SIGHUP); refuse naming file and key."""
        try:
            new, new_node, new_policies = _load(args)
        except ConfigError as err:
            raise ReloadRefused(err.problems) from err
        problems = reloadplan.restart_only(cluster, new, new_node.name)
        if problems:
            raise ReloadRefused(problems)
        assert new.mirror is not None
        flush = new.mirror.flush_timeout if args.flush_timeout is None else args.flush_timeout
        dirs = tuple(mirror_dir(p) for p in new_policies)
        return Reloaded(dirs, flush, new.mirror.backup_budget)

    password = None
    if cluster.mirror.tunnel_port:
        try:
            password = tunnel_secret(cluster_key(cluster))
        except ValueError as err:
            print_problems(PROG, [f"{err} (the mirror tunnel's password is derived from it)"])
            return int(Exit.CONFIG)
    daemon = Daemon(
        [mirror_dir(p) for p in policies],
        peer=_peer(cluster, node, args.ssh_option),
        state_dir=node.state_dir,
        run_dir=node.run_dir,
        node=node.name,
        follow=not args.standalone,
        peer_name=peer_node.name,
        flush_timeout=(
            cluster.mirror.flush_timeout if args.flush_timeout is None else args.flush_timeout
        ),
        backup_retention=cluster.mirror.backup_retention,
        backup_budget=cluster.mirror.backup_budget,
        reloader=reloader,
        tunnel_password=password,
    )
    stop_metrics = None
    try:
        if cluster.mirror.metrics is not None:
            stop_metrics = serve_metrics(cluster.mirror.metrics, daemon, node.state_dir)
        asyncio.run(daemon.run())
    except (DaemonError, JournalError, OSError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return int(Exit.FAILURE)
    finally:
        if stop_metrics is not None:
            stop_metrics()
    return int(Exit.OK)


def serve_metrics(config: MetricsConfig, daemon: Daemon, state_dir: Path) -> Callable[[], None]:
    """Serve the daemon's metrics; return what stops it. prometheus_client (and with it
    OpenSSL, `mirrord.lean`) is loaded only here: a daemon without metrics never holds it."""
    lean.allow_openssl()
    from mirrord.metrics import mirrord_families  # noqa: PLC0415  see the docstring
    from takeover.exporter import serve  # noqa: PLC0415
    from takeover.metrics import SnapshotCollector  # noqa: PLC0415

    snapshot = functools.partial(metrics_snapshot, daemon, state_dir)
    return serve(config, SnapshotCollector(mirrord_families, snapshot, time.time), "mirrord")


def metrics_snapshot(daemon: Daemon, state_dir: Path) -> dict[str, Any] | None:
    """Return the daemon's last status with the orphan count per directory (from the
    manifest `mirrord orphans` reads; None when it cannot be read)."""
    doc = daemon.last_status
    if doc is None:
        return None
    try:
        found: dict[str, int] | None = dict(Counter(o.root for o in orphans.load(state_dir)))
    except (OSError, ValueError, KeyError, TypeError):
        found = None
    return {**doc, "orphans": found}


def read_status(run_dir: Path, now: float) -> tuple[int, dict[str, Any] | None, str]:
    """Return (exit status, document, why) for the daemon whose run dir is `run_dir`."""
    path = run_dir / STATUS_NAME
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return int(StatusExit.NOT_RUNNING), None, f"{path}: no status file: mirrord not running"
    except (OSError, ValueError) as exc:
        return int(StatusExit.UNKNOWN), None, f"{path}: unreadable: {exc}"
    if doc.get("stopped") or daemon_gone(doc):
        return int(StatusExit.NOT_RUNNING), doc, "mirrord is not running (last status shown)"
    age = now - float(doc.get("updated", 0))
    if age > 3 * float(doc.get("status_interval", 1.0)):
        return int(StatusExit.UNKNOWN), doc, f"status is {age:.0f}s old: mirrord may be hung"
    return int(StatusExit.ACTIVE_OR_STANDBY), doc, "running"


def _secs(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 10:
        return f"{value:.1f}s"
    if value < 3600:
        return f"{value:.0f}s"
    return f"{value / 3600:.1f}h"


def format_status(doc: dict[str, Any], now: float) -> str:
    """Render the status document as a table."""
    follow = doc.get("follow") or {}
    tunnel = doc.get("tunnel")
    via = ""
    if isinstance(tunnel, dict):
        # mirrord.tunnel: the pushes go through the peer's standing daemon, or by ssh and why.
        via = (
            f" (tunnel {tunnel.get('port')}: up)"
            if tunnel.get("up")
            else f" (tunnel {tunnel.get('port')}: down, by ssh: {tunnel.get('error') or 'not yet'})"
        )
    lines = [
        f"node {doc.get('node') or '-'} -> {doc.get('peer') or '-'}{via}   "
        + (
            f"follows takeover: {follow.get('why', '-')}"
            if follow.get("following")
            else str(follow.get("why", "standalone"))
        ),
        f"{'DIRECTORY':<28} {'CLASS':<7} {'INTERVAL':>8} {'DIRTY':>6} {'RPO':>7} "
        f"{'LAST':<11} {'TOOK':>6} {'NEXT':>6}  NOTE",
    ]
    for d in doc.get("directories", []):
        last = d.get("last", {})
        result = last.get("result") or "-"
        if last.get("kind"):
            result = f"{result}/{last['kind'][:4]}"
        due = d.get("next_due")
        nxt = "run" if d.get("running") else ("-" if due is None else _secs(max(0.0, due - now)))
        note = d.get("alarm") or ""
        if not note and last.get("result") == "retry":
            # The cause the last pass failed on (mirrord.outcome), before it becomes an alarm.
            note = f"retrying: {last.get('detail') or '-'}"
        if not note and d.get("full_needed"):
            note = f"full pass: {d['full_needed']}"
        if not d.get("watched", True):
            note = (note + "; " if note else "") + "not watched"
        left = d.get("not_mirrored") or []
        if left:
            # Never silently: ok holds for all but these (why: --json, not_mirrored_why).
            note = (note + "; " if note else "") + f"{len(left)} not mirrored: {left[0]}"
        lines.append(
            f"{d['directory']:<28} {d.get('class', '-'):<7} {_secs(d.get('interval')):>8} "
            f"{d.get('dirty', 0):>6} {_secs(d.get('rpo')):>7} {result:<11} "
            f"{_secs(d.get('last_duration')):>6} {nxt:>6}  {note}"
        )
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace) -> int:
    """Print each directory's state from the daemon's status file."""
    try:
        _cluster, node = load_local(args)
    except ConfigError as err:
        if args.brief:
            print(f"MIRRORD UNKNOWN - {err.problems[0] if err.problems else err}")
            return int(Plugin.UNKNOWN)
        print_problems(PROG, err.problems)
        return int(StatusExit.UNKNOWN)
    now = time.time()
    code, doc, why = read_status(node.run_dir, now)
    if args.brief:
        code, line = mirrord_brief(doc, code, why)
        print(line)
        return code
    if args.json:
        print_json({"state": why, "exit": code, "status": doc})
        return code
    if doc is not None:
        print(format_status(doc, now))
    if code != 0:
        print(f"{PROG}: {why}", file=sys.stderr)
    return code


def control_request(run_dir: Path, request: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Send one request to the daemon's control socket and return its reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(run_dir / SOCKET_NAME))
        sock.sendall(json.dumps(request).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    reply: dict[str, Any] = json.loads(data)
    return reply


def cmd_sync(args: argparse.Namespace) -> int:
    """Ask the daemon for a pass now and (by default) wait for its result."""
    try:
        _cluster, node = load_local(args)
    except ConfigError as err:
        print_problems(PROG, err.problems)
        return config_exit(err)
    directory = os.path.abspath(args.directory).rstrip("/") if args.directory else None
    request = {
        "cmd": "sync",
        "directory": directory,
        "full": args.full,
        "wait": not args.no_wait,
        "allow_deletions": args.allow_deletions,
    }
    try:
        reply = control_request(node.run_dir, request, args.timeout)
    except (OSError, ValueError) as exc:
        print(f"{PROG}: error: cannot reach mirrord at {node.run_dir / SOCKET_NAME}: {exc}",
              file=sys.stderr)  # fmt: skip
        return int(Exit.FAILURE)
    if args.json:
        print_json(reply)
    if "error" in reply:
        print(f"{PROG}: error: {reply['error']}", file=sys.stderr)
        return int(Exit.FAILURE)
    results: dict[str, Any] = reply.get("results", {})
    bad = [d for d, r in results.items() if r.get("result") not in ("ok", "in sync")]
    if not args.json:
        for d, r in sorted(results.items()):
            print(f"{d}: {r.get('result')} {r.get('kind', '')} {r.get('detail', '')}".rstrip())
        if not results:
            print("queued")
    return int(Exit.FAILURE if bad else Exit.OK)


def format_orphans(entries: list[Orphan]) -> str:
    """Render orphans as a table: original path, size, mtime, where it is now."""
    lines = [f"{'PATH':<40} {'SIZE':>10} {'MTIME (UTC)':<20} RECOVERED"]
    for o in entries:
        size = "deleted" if o.size is None else str(o.size)
        when = "-" if o.mtime is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(o.mtime))
        lines.append(f"{o.original:<40} {size:>10} {when:<20} {o.recovered or '-'}")
    return "\n".join(lines)


def cmd_orphans(args: argparse.Namespace) -> int:
    """List the orphans set aside on this node, or send one back to the peer."""
    try:
        cluster, node, _policies = _load(args)
    except ConfigError as err:
        print_problems(PROG, err.problems)
        return config_exit(err)
    try:
        entries = orphans.load(node.state_dir)
    except (OSError, ValueError, KeyError) as exc:
        print(f"{PROG}: error: {node.state_dir / orphans.MANIFEST_NAME}: {exc}", file=sys.stderr)
        return int(Exit.FAILURE)
    if args.restore is None:
        if args.json:
            print_json({"orphans": [asdict(o) | {"original": o.original} for o in entries]})
        elif entries:
            print(format_orphans(entries))
        else:
            print("no orphans")
        return int(Exit.OK)
    orphan = orphans.find(entries, os.path.abspath(args.restore))
    if orphan is None or orphan.recovered is None:
        print(f"{PROG}: error: {args.restore}: not a recovered orphan (see `mirrord orphans`)",
              file=sys.stderr)  # fmt: skip
        return int(Exit.FAILURE)
    if not os.path.lexists(orphan.recovered):
        print(f"{PROG}: error: {orphan.recovered}: no longer there", file=sys.stderr)
        return int(Exit.FAILURE)
    peer = _peer(cluster, node, args.ssh_option)
    staging, rel = orphans.stage_restore(orphan, node.name)
    # --ignore-existing: the copy never replaces anything on the peer (its push check lets only
    # such a transfer into a root whose node is the source).
    argv = ["rsync", "-a", "--relative", "--ignore-existing", "-e", shlex.join(peer.ssh_argv()),
            f"{staging}/./{rel}", peer.target(orphan.root)]  # fmt: skip
    p = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=600)
    if p.returncode != 0:
        print(f"{PROG}: error: restore failed (rsync rc {p.returncode}): {p.stderr.strip()}",
              file=sys.stderr)  # fmt: skip
        return int(Exit.FAILURE)
    print(f"restored {orphan.original} to {peer.address}:{os.path.join(orphan.root, rel)}")
    return int(Exit.OK)


def cmd_check(args: argparse.Namespace) -> int:
    """Validate the cluster file and every policy file; exit 0 (valid), 2 or 6 (missing)."""
    try:
        cluster, node = load_local(args)
    except ConfigError as err:
        return report_check(PROG, args, "", err.problems, config_exit(err))
    problems: list[str] = []
    try:
        policies = load_policies(cluster, check_fs=not args.no_fs)
    except ConfigError as err:
        policies, problems = [], err.problems
    if cluster.mirror is not None and not args.no_fs and not cluster.mirror.ssh_key.is_file():
        key = cluster.mirror.ssh_key
        problems.append(f"{cluster.label}: mirror.ssh_key: {key}: no such file")
    if not args.no_fs:
        problems += read_only_roots(policies)
    if (not args.no_fs and not problems and cluster.mirror is not None
            and cluster.mirror.receiver == "rsyncd"):  # fmt: skip
        conf = args.config.parent / CONF_NAME
        problems += rsyncd_conf_problems(conf, policies)
        if cluster.mirror.tunnel_port:
            tunnel_conf, tunnel = tunnel_files(conf, cluster.mirror.tunnel_port)
            problems += rsyncd_conf_problems(tunnel_conf, policies, tunnel)
    if problems or cluster.mirror is None:
        return report_check(PROG, args, "", problems, Exit.CONFIG)
    peer = cluster.peer_of(node.name)
    files = len({p.source.split(": ", 1)[0] for p in policies})
    summary = (
        f"{cluster.label}: ok: {len(policies)} directories from {files} policy files, "
        f"node {node.name} mirrors to {cluster.mirror.ssh_user}@{peer.mirror_address} "
        f"when active"
    )
    return report_check(PROG, args, summary, [], Exit.OK)


def read_only_roots(policies: list[Policy]) -> list[str]:
    """Return a problem for each mirrored root this process cannot write (EROFS under the
    unit's ProtectSystem=full, for a root under /etc or /usr): its source marker, backups and
    recovery areas could not be written, and the guard against two pushing nodes would be off."""
    return [
        f"{p.source}.path: {p.path}: read-only for mirrord here (mirrord.service keeps /usr, "
        f"/boot and /etc read-only): run `mirrord pair-setup`, which writes the ReadWritePaths= "
        f"drop-in {DROPIN}, then `systemctl restart mirrord`"
        for p in policies
        if p.path.is_dir() and not os.access(p.path, os.W_OK)
    ]


def rsyncd_conf_problems(
    conf: Path, policies: list[Policy], tunnel: Tunnel | None = None
) -> list[str]:
    """Return why the receiving side's rsyncd.conf (if this node has one; the standing
    daemon's with `tunnel`) no longer serves exactly the policies' roots as `authorize` writes
    them: a root added since `authorize` would be refused as unknown."""
    try:
        text = conf.read_text()
    except FileNotFoundError:
        return []
    except OSError as exc:
        return [f"{conf}: {exc.strerror or exc}"]
    roots = [str(p.path) for p in policies]
    if text == render_conf(roots, tunnel):
        return []
    served = conf_roots(text)
    wanted = {module_name(r): r for r in roots}
    missing = sorted(set(wanted.values()) - set(served.values()))
    extra = sorted(set(served.values()) - set(wanted.values()))
    what = "; ".join(x for x in (
        f"not served: {', '.join(missing)}" if missing else "",
        f"no longer mirrored: {', '.join(extra)}" if extra else "",
    ) if x) or "other settings, e.g. the push check of another installation"  # fmt: skip
    return [f"{conf}: out of date with the mirror policies ({what}): run `mirrord authorize` again"]


def cmd_authorize(args: argparse.Namespace) -> int:
    """Write rsyncd.conf; print the restricted authorized_keys line for the peer's mirror key."""
    try:
        cluster, _node, policies = _load(args)
    except ConfigError as err:
        print_problems(PROG, err.problems)
        return config_exit(err)
    try:
        key = args.public_key.read_text().strip()
    except OSError as exc:
        print(f"{PROG}: error: {args.public_key}: {exc}", file=sys.stderr)
        return int(Exit.FAILURE)
    if not key or len(key.split()) < 2:
        print(f"{PROG}: error: {args.public_key}: not an ssh public key", file=sys.stderr)
        return int(Exit.FAILURE)
    line = authorized_line(args, cluster, policies, key)
    if line is None:
        return int(Exit.FAILURE)
    print(line)
    return int(Exit.OK)


def authorized_line(
    args: argparse.Namespace, cluster: Cluster, policies: list[Policy], key: str
) -> str | None:
    """Return the restricted authorized_keys line for the peer's key (writing rsyncd.conf for
    the rsyncd receiver), or None after printing why it could not be made."""
    assert cluster.mirror is not None
    roots = [str(p.path) for p in policies]
    if cluster.mirror.receiver == "rrsync":
        # The light entry point: it runs once per pass, before rrsync (`mirrord receive` would
        # import the whole daemon first).
        command = [sys.executable, "-m", "mirrord.receive"]
        return rrsync_keys_line(key, roots, cluster.mirror.backup_retention, command)
    conf = getattr(args, "rsyncd_conf", None) or args.config.parent / CONF_NAME
    port = cluster.mirror.tunnel_port
    tunnel_conf, tunnel = tunnel_files(conf, port)
    shared = b""
    if port:
        try:
            shared = cluster_key(cluster)
        except ValueError as err:
            print(f"{PROG}: error: {err}", file=sys.stderr)
            return None
    try:
        if port:
            # The secret first: a daemon never starts on a configuration without its secret.
            write_atomic(tunnel.secrets, render_secrets(shared), mode=0o600)
            write_atomic(tunnel_conf, render_conf(roots, tunnel), mode=0o644)
        write_atomic(conf, render_conf(roots), mode=0o644)
    except OSError as exc:
        print(f"{PROG}: error: {exc.filename or conf}: {exc.strerror or exc}", file=sys.stderr)
        return None
    rsync = args.rsync or shutil.which("rsync") or "/usr/bin/rsync"
    print(f"{PROG}: wrote {conf}: {len(roots)} modules", file=sys.stderr)
    if port:
        print(f"{PROG}: wrote {tunnel_conf} and {tunnel.secrets}: the standing daemon on "
              f"127.0.0.1:{port} (systemctl enable --now mirrord-receiver)",
              file=sys.stderr)  # fmt: skip
    return authorized_keys_line(key, conf.resolve(), rsync, tunnel_port=port)


def cmd_pair_setup(args: argparse.Namespace) -> int:
    """Set up this node's side of the mirror's ssh trust (mirrord/pairsetup.py); exit 0 once
    ssh to the peer works, 1 with the step still missing named."""
    try:
        cluster, node, policies = _load(args)
    except ConfigError as err:
        print_problems(PROG, err.problems)
        return config_exit(err)
    if cluster.mirror is None:
        print_problems(PROG, [f"{cluster.label}: mirror: no [mirror] table: nothing to set up"])
        return int(Exit.CONFIG)
    peer_node = cluster.peer_of(node.name)
    if peer_node.mirror_address is None:
        print_problems(PROG, [f"{cluster.label}: node.mirror_address: not set for the peer"])
        return int(Exit.CONFIG)
    return run_pair_setup(
        args,
        roots=[str(p.path) for p in policies],
        node=node.name,
        peer_name=peer_node.name,
        peer=_peer(cluster, node, []),
        ssh_key=cluster.mirror.ssh_key,
        authorized_line=lambda key: authorized_line(args, cluster, policies, key),
    )


def cmd_receive(args: argparse.Namespace) -> int:
    """Be the forced command of the mirror key (receiver = "rrsync"; never returns on success)."""
    return receive([r.rstrip("/") or "/" for r in args.root], args.retention)


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand and return its exit status."""
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
