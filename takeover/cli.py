"""Command line of `takeover`: run, status, standby, promote, fence, check."""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import sys
import time
from pathlib import Path

from takeover import control
from takeover.brief import Plugin, takeover_brief
from takeover.cliutil import (
    add_check_command,
    add_command,
    config_exit,
    file_problem,
    load_local,
    new_parser,
    print_problems,
    report_check,
    setup_daemon_logging,
)
from takeover.config import DEFAULT_RUN_DIR, Cluster, Node
from takeover.configparse import ConfigError
from takeover.exits import Exit, StatusExit
from takeover.fencecli import add_fence_command, check_fencing, run_fence
from takeover.heartbeat import KeyFileError, load_key
from takeover.status import (
    classify,
    read_mirror,
    read_status,
    render,
    render_mirror,
    status_path,
)
from takeover.witnesscli import add_witness_command

PROG = "takeover"


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser with every subcommand."""
    parser, sub = new_parser(PROG, "Decide which node of the pair is active and move the service.")
    check = add_check_command(
        sub,
        cmd_check,
        "validate the cluster file and exit 0 or 2",
        "skip checks of files the configuration names (key file, password files)",
    )
    check.add_argument(
        "--fencing",
        action="store_true",
        help="also log into every BMC and read its power state (changes nothing); exit 1 "
        "if one does not answer",
    )
    check.add_argument(
        "--peer",
        action="store_true",
        help="also show which sections of the cluster file differ from the peer's (as the "
        "running daemon learned them over the heartbeat links); exit 1 if any",
    )
    run = add_command(sub, "run", cmd_run, "run the daemon in the foreground (systemd's ExecStart)")
    run.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    status = add_command(sub, "status", cmd_status, "show both nodes, links, targets and VIPs")
    status.add_argument("--json", action="store_true", help="print one JSON document")
    status.add_argument(
        "--brief",
        action="store_true",
        help="print one line and exit as a Nagios/Icinga plugin (0 OK, 1 WARNING, "
        "2 CRITICAL, 3 UNKNOWN)",
    )
    standby = add_command(sub, "standby", cmd_standby, "hand the service to the peer (planned)")
    standby.add_argument(
        "--force", action="store_true", help="release even when the peer cannot take over"
    )
    add_command(sub, "promote", cmd_promote, "make this node active (the peer hands over)")
    maint = add_command(
        sub,
        "maintenance",
        cmd_maintenance,
        "maintenance mode for the pair: nothing is acquired, released or failed over",
    )
    maint.add_argument("mode", choices=["on", "off"], help="on, or off (each node re-checks)")
    cleanup = add_command(
        sub,
        "cleanup",
        cmd_cleanup,
        "clear a resource blocked by a configuration error once it is fixed (crm_resource "
        "--cleanup): the pair may take over again",
    )
    cleanup.add_argument("resource", nargs="?", help="the [[resource]] name (default: all)")
    add_fence_command(sub, cmd_fence)
    add_witness_command(sub)
    return parser


def key_problem(cluster: Cluster, err: KeyFileError) -> str:
    """Return how `check` and `run` both report a key file that `load_key` refused."""
    return f"{cluster.label}: heartbeat.key_file: {err}"


def witness_key_problems(cluster: Cluster) -> list[str]:
    """Return what is wrong with the witness key file (the heartbeat key's rules), if any."""
    if cluster.witness is None:
        return []
    try:
        load_key(cluster.witness.key_file)
    except KeyFileError as err:
        return [f"{cluster.label}: witness.key_file: {err}"]
    return []


def file_problems(cluster: Cluster, node: Node) -> list[str]:
    """Return problems with the files this node will read at run time: the key file by the
    very rules `run` applies (load_key), the peer's BMC password file missing or unreadable."""
    problems = []
    try:
        load_key(cluster.heartbeat.key_file)
    except KeyFileError as err:
        problems.append(key_problem(cluster, err))
    problems += witness_key_problems(cluster)
    peer = cluster.peer_of(node.name)
    if peer.fencing is not None:
        index = cluster.nodes.index(peer)
        key = f"node[{index}].fencing.password_file"
        found = file_problem(cluster.label, key, peer.fencing.password_file)
        if found is not None:
            problems.append(found)
    return problems


def cmd_check(args: argparse.Namespace) -> int:
    """Validate the cluster file for this node; exit 0 (valid), 2 (invalid) or 6 (missing)."""
    try:
        cluster, node = load_local(args)
    except ConfigError as err:
        return report_check(PROG, args, "", err.problems, config_exit(err))
    problems = [] if args.no_fs else file_problems(cluster, node)
    if cluster.resources and not args.no_fs:
        # Runs each agent's meta-data and validate-all (takeover.backends.services).
        from takeover.backends.services import check_resources  # noqa: PLC0415

        problems += asyncio.run(check_resources(cluster.resources, cluster.label))
    peer = cluster.peer_of(node.name)
    summary = (
        f'{cluster.label}: ok: cluster "{cluster.name}", node {node.name} (peer {peer.name}), '
        f"{len(cluster.heartbeat.links)} heartbeat links, {len(cluster.vips)} VIPs, "
        f"{len(cluster.vms)} VMs, {len(cluster.resources)} resources, "
        f"{len(cluster.checks)} checks, {len(cluster.hooks)} hooks"
        + (f", witness {cluster.witness.address}" if cluster.witness is not None else "")
    )
    if problems:
        return report_check(PROG, args, "", problems, Exit.CONFIG)
    if args.fencing:
        return check_fencing(cluster, args.json)
    if args.peer:
        return check_peer(args, node)
    return report_check(PROG, args, summary, problems, Exit.OK)


def check_peer(args: argparse.Namespace, node: Node) -> int:
    """Report the configuration drift the running daemon sees: which sections differ from
    the peer's (takeover.drift); exit 0 (same), 1 (differs, or nothing to compare yet)."""
    path = status_path(node.run_dir)
    try:
        doc = read_status(path)
    except (OSError, ValueError) as err:
        return report_check(PROG, args, "", [f"{path}: {err}"], Exit.FAILURE)
    if classify(doc, time.time()) is not StatusExit.ACTIVE_OR_STANDBY or doc is None:
        problem = f"takeover is not running here ({path}): the peer's sections come through it"
        return report_check(PROG, args, "", [problem], Exit.FAILURE)
    peer = doc.get("peer") or {}
    name = peer.get("name", "the peer")
    if not peer.get("role"):
        return report_check(
            PROG, args, "", [f"peer {name} not heard yet: nothing to compare"], Exit.FAILURE
        )
    found = doc.get("drift")
    if not found:
        return report_check(PROG, args, f"ok: {name} runs the same configuration", [], Exit.OK)
    sections = found.get("sections")
    if sections is None:
        problem = (
            f"configuration differs from {name}'s; {name} has not told which sections "
            "(not yet, or a version without takeover check --peer)"
        )
    else:
        problem = f"configuration differs from {name}'s in: {', '.join(sections)}"
    return report_check(PROG, args, "", [problem], Exit.FAILURE)


def cmd_fence(args: argparse.Namespace) -> int:
    """Power a node off through its BMC; exit 0 (confirmed off) or 1 (failed, refused)."""
    return run_fence(args)


def cmd_run(args: argparse.Namespace) -> int:
    """Run the daemon until SIGTERM; exit 2/6 on configuration problems, 1 on set-up failures."""
    setup_daemon_logging(args.log_level)
    # Every rule `check` applies, applied by the main process: its exit 2 or 6 is what
    # RestartPreventExitStatus= sees (an ExecStartPre='s exit status it never does).
    only = {"no_fs": False, "fencing": False, "peer": False}
    checked = cmd_check(argparse.Namespace(**{**vars(args), **only}))
    if checked != Exit.OK:
        return checked
    try:
        cluster, node = load_local(args)
    except ConfigError as err:
        print_problems(PROG, err.problems)
        return config_exit(err)
    # Imported here: the effect modules pull in pyroute2, which `status` does not need.
    from takeover import runtime  # noqa: PLC0415

    try:
        return asyncio.run(runtime.run(cluster, node))
    except KeyFileError as err:
        print_problems(PROG, [key_problem(cluster, err)])
        return int(Exit.CONFIG)
    except PermissionError as err:
        print_problems(PROG, [str(err)])
        return int(Exit.NO_PERMISSION)
    except Exception as err:
        # Set-up failures (an interface missing, a socket refused) name what failed.
        if "Operation not permitted" in str(err):
            print_problems(PROG, [f"{err} (needs CAP_NET_ADMIN and CAP_NET_RAW)"])
            return int(Exit.NO_PERMISSION)
        print_problems(PROG, [str(err) or type(err).__name__])
        return int(Exit.FAILURE)


def _run_dir(args: argparse.Namespace) -> Path:
    """Return this node's run dir: --run-dir, else the cluster file's, else the default."""
    if args.run_dir is not None:
        return Path(args.run_dir)
    try:
        _, node = load_local(args)
    except ConfigError:
        return Path(DEFAULT_RUN_DIR)
    return node.run_dir


def cmd_status(args: argparse.Namespace) -> int:
    """Print the node's status; exit 0 (running), 3 (not running) or 4 (unknown/stale);
    with --brief one line and a plugin's exit code."""
    path = status_path(_run_dir(args))
    try:
        doc = read_status(path)
    except (OSError, ValueError) as err:
        if args.brief:
            print(f"TAKEOVER UNKNOWN - {path}: {err}")
            return int(Plugin.UNKNOWN)
        print_problems(PROG, [f"{path}: {err}"])
        return int(StatusExit.UNKNOWN)
    now = time.time()
    verdict = classify(doc, now)
    if args.brief:
        code, line = takeover_brief(doc, verdict, now)
        print(line)
        return code
    mirror = read_mirror(path.parent, now)
    if args.json:
        out = dict(doc or {})
        out["verdict"] = verdict.name.lower()
        out["mirror"] = mirror
        print(json.dumps(out, indent=2, sort_keys=True))
    elif doc is None:
        print(f"takeover is not running (no {path})")
        sys.stdout.write(render_mirror(mirror, now))
    else:
        sys.stdout.write(render(doc, now) + render_mirror(mirror, now))
    return int(verdict)


def _command(args: argparse.Namespace, request: dict[str, object]) -> int:
    path = control.socket_path(_run_dir(args))
    try:
        control.call(path, request)
    except control.ControlError as err:
        print_problems(PROG, [str(err)])
        cause = err.__cause__
        if isinstance(cause, PermissionError) or getattr(cause, "errno", None) == errno.EACCES:
            return int(Exit.NO_PERMISSION)
        return int(Exit.FAILURE)
    return int(Exit.OK)


def cmd_standby(args: argparse.Namespace) -> int:
    """Ask the daemon to hand the service to the peer."""
    return _command(args, {"cmd": "standby", "force": bool(args.force)})


def cmd_promote(args: argparse.Namespace) -> int:
    """Ask the daemon to make this node active."""
    return _command(args, {"cmd": "promote"})


def cmd_maintenance(args: argparse.Namespace) -> int:
    """Turn maintenance mode on or off for the pair (the peer follows through heartbeats)."""
    return _command(args, {"cmd": "maintenance", "on": args.mode == "on"})


def cmd_cleanup(args: argparse.Namespace) -> int:
    """Clear a configuration error of one resource (or all) on this node."""
    return _command(args, {"cmd": "cleanup", "resource": args.resource})


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand and return its exit status."""
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
