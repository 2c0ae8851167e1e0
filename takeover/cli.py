"""Command line of `takeover` (subcommands grow with the issues that bring them)."""

from __future__ import annotations

import argparse
import sys

from takeover.cliutil import (
    add_check_command,
    config_exit,
    file_problem,
    load_local,
    new_parser,
    report_check,
)
from takeover.config import Cluster, Node
from takeover.configparse import ConfigError
from takeover.exits import Exit

PROG = "takeover"


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser with every subcommand."""
    parser, sub = new_parser(PROG, "Decide which node of the pair is active and move the service.")
    add_check_command(
        sub,
        cmd_check,
        "validate the cluster file and exit 0 or 2",
        "skip checks of files the configuration names (key file, password files)",
    )
    return parser


def file_problems(cluster: Cluster, node: Node) -> list[str]:
    """Return problems with the files this node will read at run time (missing, unreadable)."""
    wanted = [("heartbeat.key_file", cluster.heartbeat.key_file)]
    peer = cluster.peer_of(node.name)
    if peer.fencing is not None:
        index = cluster.nodes.index(peer)
        wanted.append((f"node[{index}].fencing.password_file", peer.fencing.password_file))
    found = (file_problem(cluster.label, key, path) for key, path in wanted)
    return [p for p in found if p is not None]


def cmd_check(args: argparse.Namespace) -> int:
    """Validate the cluster file for this node; exit 0 (valid), 2 (invalid) or 6 (missing)."""
    try:
        cluster, node = load_local(args)
    except ConfigError as err:
        return report_check(PROG, args, "", err.problems, config_exit(err))
    problems = [] if args.no_fs else file_problems(cluster, node)
    peer = cluster.peer_of(node.name)
    summary = (
        f'{cluster.label}: ok: cluster "{cluster.name}", node {node.name} (peer {peer.name}), '
        f"{len(cluster.heartbeat.links)} heartbeat links, {len(cluster.vips)} VIPs, "
        f"{len(cluster.vms)} VMs, {len(cluster.checks)} checks, {len(cluster.hooks)} hooks"
    )
    if problems:
        return report_check(PROG, args, "", problems, Exit.CONFIG)
    return report_check(PROG, args, summary, problems, Exit.OK)


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand and return its exit status."""
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
