"""`takeover witness -c witness.toml run|status|check`: the witness's command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

from takeover.cliutil import Subcommands, config_exit, print_problems, report_check
from takeover.cliutil import setup_daemon_logging as setup_logging
from takeover.configparse import ConfigError, ConfigMissing
from takeover.exits import Exit, StatusExit
from takeover.status import classify, read_status
from takeover.witness import (
    DEFAULT_RUN_DIR,
    DEFAULT_WITNESS_CONFIG,
    STATUS_NAME,
    Witness,
    WitnessFile,
    load_keys,
    load_witness,
    render,
)

PROG = "takeover witness"


def add_witness_command(sub: Subcommands[argparse.ArgumentParser]) -> None:
    """Register `witness` and its own subcommands (run, status, check)."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "-c",
        "--config",
        dest="witness_config",
        type=Path,
        metavar="FILE",
        default=argparse.SUPPRESS,
        help=f"witness file (default: {DEFAULT_WITNESS_CONFIG})",
    )
    parent.add_argument(
        "--run-dir", dest="witness_run_dir", type=Path, default=argparse.SUPPRESS,
        help="override the witness file's run_dir (status file)",
    )  # fmt: skip
    help_text = "the third vote: grant one node of each pair the active lease"
    witness = sub.add_parser("witness", parents=[parent], help=help_text, description=help_text)
    inner = witness.add_subparsers(dest="witness_command", required=True, metavar="COMMAND")
    run = inner.add_parser("run", parents=[parent], help="serve in the foreground (systemd)")
    run.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    run.set_defaults(func=cmd_witness_run)
    status = inner.add_parser("status", parents=[parent], help="show the leases and counters")
    status.add_argument("--json", action="store_true", help="print one JSON document")
    status.set_defaults(func=cmd_witness_status)
    check = inner.add_parser("check", parents=[parent], help="validate the witness file, keys")
    check.add_argument("--json", action="store_true", help="print one JSON document")
    check.add_argument("--no-fs", action="store_true", help="skip reading the key files")
    check.set_defaults(func=cmd_witness_check)


def _path(args: argparse.Namespace) -> Path:
    return Path(getattr(args, "witness_config", DEFAULT_WITNESS_CONFIG))


def _load(args: argparse.Namespace) -> tuple[WitnessFile, dict[str, bytes]]:
    w = load_witness(_path(args))
    return w, load_keys(w)


def cmd_witness_check(args: argparse.Namespace) -> int:
    """Validate the witness file and its key files; exit 0, 2 (invalid) or 6 (missing)."""
    try:
        w = load_witness(_path(args))
        if not args.no_fs:
            load_keys(w)
    except ConfigError as err:
        return report_check(PROG, args, "", err.problems, config_exit(err))
    summary = f"{w.source.name}: ok: witness on {w.address}:{w.port}, clusters " + ", ".join(
        c.name for c in w.clusters
    )
    return report_check(PROG, args, summary, [], Exit.OK)


def cmd_witness_run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM; exit 2/6 on configuration problems, 4 without permission."""
    setup_logging(args.log_level)
    try:
        w, keys = _load(args)
    except ConfigError as err:
        print_problems(PROG, err.problems)
        return config_exit(err)
    run_dir = getattr(args, "witness_run_dir", None)
    if run_dir is not None:
        w = WitnessFile(w.source, w.address, w.port, Path(run_dir).absolute(), w.clusters)
    try:
        return asyncio.run(Witness(w, keys).run())
    except PermissionError as err:
        print_problems(PROG, [str(err)])
        return int(Exit.NO_PERMISSION)
    except OSError as err:
        print_problems(PROG, [f"{w.address}:{w.port}: {err.strerror or err}"])
        return int(Exit.FAILURE)


def cmd_witness_status(args: argparse.Namespace) -> int:
    """Print the witness's status; exit 0 (running), 3 (not running) or 4 (unknown/stale)."""
    run_dir = getattr(args, "witness_run_dir", None)
    if run_dir is None:
        try:
            run_dir = load_witness(_path(args)).run_dir
        except (ConfigError, ConfigMissing):
            run_dir = Path(DEFAULT_RUN_DIR)
    path = Path(run_dir) / STATUS_NAME
    try:
        doc = read_status(path)
    except (OSError, ValueError) as err:
        print_problems(PROG, [f"{path}: {err}"])
        return int(StatusExit.UNKNOWN)
    verdict = classify(doc, time.time())
    words = {
        StatusExit.ACTIVE_OR_STANDBY: "running",
        StatusExit.NOT_RUNNING: "NOT RUNNING",
        StatusExit.UNKNOWN: "STALE (hung?)",
    }
    if args.json:
        out = dict(doc or {})
        out["verdict"] = (
            "running" if verdict is StatusExit.ACTIVE_OR_STANDBY else verdict.name.lower()
        )
        print(json.dumps(out, indent=2, sort_keys=True))
    elif doc is None:
        print(f"takeover witness is not running (no {path})")
    else:
        print(render(doc, words[verdict]), end="")
    return int(verdict)
