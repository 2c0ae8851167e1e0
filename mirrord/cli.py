"""Command line of `mirrord` (subcommands grow with the issues that bring them)."""

from __future__ import annotations

import argparse
import sys

from mirrord.policy import load_policies
from takeover.cliutil import (
    add_check_command,
    config_exit,
    file_problem,
    load_local,
    new_parser,
    report_check,
)
from takeover.configparse import ConfigError
from takeover.exits import Exit

PROG = "mirrord"


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser with every subcommand."""
    parser, sub = new_parser(PROG, "Mirror each configured directory from the active node.")
    add_check_command(
        sub,
        cmd_check,
        "validate the cluster file and mirror policies; exit 0 or 2",
        "skip checks of the file system (mirrored directories exist, ssh key readable)",
    )
    return parser


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
    if cluster.mirror is not None and not args.no_fs:
        key = file_problem(cluster.label, "mirror.ssh_key", cluster.mirror.ssh_key)
        problems += [key] if key else []
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


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand and return its exit status."""
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
