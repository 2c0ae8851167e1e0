"""Command line of `takeover` (subcommands grow with the issues that bring them)."""

from __future__ import annotations

import argparse
import sys

from takeover.exits import Exit


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="takeover")
    parser.add_subparsers(dest="command", required=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand and return its exit status."""
    build_parser().parse_args(argv)
    return int(Exit.FAILURE)


if __name__ == "__main__":
    sys.exit(main())
