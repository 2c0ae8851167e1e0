"""Command-line plumbing shared by `takeover` and `mirrord`: common options, subcommand
registration, and printing configuration problems the same way in both tools."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Final

from takeover.config import Cluster, Node, load_cluster, resolve_node
from takeover.configparse import ConfigError, ConfigMissing
from takeover.exits import Exit

DEFAULT_CONFIG: Final = Path("/etc/hapair/cluster.toml")

Command = Callable[[argparse.Namespace], int]


def add_common_args(parser: argparse.ArgumentParser, *, suppress: bool = False) -> None:
    """Add -c/--config, --node, --run-dir and --state-dir to a parser.

    With `suppress`, the options leave the namespace alone when not given: subcommand parsers
    use that so `takeover check -c FILE` and `takeover -c FILE check` both work.
    """

    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument(
        "-c",
        "--config",
        type=Path,
        metavar="FILE",
        default=default(DEFAULT_CONFIG),
        help=f"cluster file (default: {DEFAULT_CONFIG})",
    )
    parser.add_argument(
        "--node",
        metavar="NAME",
        default=default(None),
        help="this node's name in the cluster file (default: the host name)",
    )
    parser.add_argument(
        "--run-dir",
        type=Path,
        metavar="DIR",
        default=default(None),
        help="override the node's run_dir (status files, control sockets)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        metavar="DIR",
        default=default(None),
        help="override the node's state_dir (journals)",
    )


Subcommands = argparse._SubParsersAction  # the object add_subparsers() returns


def new_parser(
    prog: str, description: str
) -> tuple[argparse.ArgumentParser, Subcommands[argparse.ArgumentParser]]:
    """Return a tool's parser with the common options, and the action to add subcommands to."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_common_args(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    return parser, sub


def add_command(
    subparsers: Subcommands[argparse.ArgumentParser],
    name: str,
    func: Command,
    help_text: str,
) -> argparse.ArgumentParser:
    """Register a subcommand that runs `func(args)`, accepting the common options too."""
    parent = argparse.ArgumentParser(add_help=False)
    add_common_args(parent, suppress=True)
    sub = subparsers.add_parser(name, parents=[parent], help=help_text, description=help_text)
    sub.set_defaults(func=func)
    return sub


def add_check_command(
    subparsers: Subcommands[argparse.ArgumentParser],
    func: Command,
    help_text: str,
    no_fs_help: str,
) -> argparse.ArgumentParser:
    """Register the `check` subcommand with its --json and --no-fs options."""
    check = add_command(subparsers, "check", func, help_text)
    check.add_argument("--json", action="store_true", help="print one JSON document")
    check.add_argument("--no-fs", action="store_true", help=no_fs_help)
    return check


def file_problem(label: str, key: str, path: Path) -> str | None:
    """Return the problem with a file the configuration names, or None when it is readable."""
    if not path.is_file():
        return f"{label}: {key}: {path}: no such file"
    if not os.access(path, os.R_OK):
        return f"{label}: {key}: {path}: not readable"
    return None


def load_local(args: argparse.Namespace) -> tuple[Cluster, Node]:
    """Load the cluster file and resolve this node from --node/--run-dir/--state-dir."""
    cluster = load_cluster(args.config)
    node = resolve_node(cluster, args.node, run_dir=args.run_dir, state_dir=args.state_dir)
    return cluster, node


def config_exit(err: ConfigError) -> int:
    """Return the exit status for a configuration problem (6: no file at all, else 2)."""
    return int(Exit.NOT_CONFIGURED if isinstance(err, ConfigMissing) else Exit.CONFIG)


def print_problems(prog: str, problems: list[str]) -> None:
    """Print each problem as `prog: error: ...` on stderr (at priority err in the journal)."""
    prefix = f"<{SYSLOG_PRIORITY[logging.ERROR]}>" if stderr_is_journal() else ""
    for line in problems:
        print(f"{prefix}{prog}: error: {line}", file=sys.stderr)


def print_json(document: object) -> None:
    """Print exactly one JSON document on stdout."""
    print(json.dumps(document, indent=2, sort_keys=True))


def report_check(
    prog: str, args: argparse.Namespace, summary: str, problems: list[str], code: int
) -> int:
    """Print the outcome of a `check` subcommand (text or --json) and return `code`."""
    if getattr(args, "json", False):
        print_json({"ok": code == 0, "summary": summary, "problems": problems})
    elif code == 0:
        print(summary)
    else:
        print_problems(prog, problems)
    return code


# Python level -> syslog priority, the `<N>` prefix journald reads on each stream line
# (sd-daemon(3)); without it every line of a service is stored at info.
SYSLOG_PRIORITY: Final[dict[int, int]] = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


def syslog_priority(levelno: int) -> int:
    """Return the syslog priority of a logging level (custom levels: the next standard one up)."""
    for level in sorted(SYSLOG_PRIORITY):
        if levelno <= level:
            return SYSLOG_PRIORITY[level]
    return SYSLOG_PRIORITY[logging.CRITICAL]


def stderr_is_journal(environ: dict[str, str] | None = None, fd: int = 2) -> bool:
    """Return whether `fd` is the stream systemd connected to journald.

    $JOURNAL_STREAM names the device and inode of that stream; a child whose stderr was
    redirected elsewhere inherits the variable, so the file itself is compared (systemd.exec(5)).
    """
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    try:
        dev, ino = (int(x) for x in value.split(":"))
        st = os.fstat(fd)
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


class JournalFormatter(logging.Formatter):
    """Prefix every line of a record with its syslog priority, so that a multi-line record
    (a traceback) stays at its level in the journal."""

    def format(self, record: logging.LogRecord) -> str:
        """Return the formatted record, each line starting with `<N>`."""
        prefix = f"<{syslog_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).split("\n"))


def setup_daemon_logging(level: str | int) -> None:
    """Log to stderr: under systemd bare with a `<N>` priority prefix (journald stamps each
    line and stores it at that priority), else with a clock. Both daemons start with this."""
    handler = logging.StreamHandler(sys.stderr)
    fmt = "%(levelname)s %(name)s %(message)s"
    if stderr_is_journal():
        handler.setFormatter(JournalFormatter(fmt))
    else:
        # In a terminal or the lab, millisecond times are what makes a failover readable.
        handler.setFormatter(logging.Formatter("%(asctime)s.%(msecs)03d " + fmt, "%H:%M:%S"))
    logging.basicConfig(
        level=level.upper() if isinstance(level, str) else level, handlers=[handler]
    )
