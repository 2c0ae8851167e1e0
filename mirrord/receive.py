"""The receiving side: a forced ssh command that lets the peer's mirrord write only the roots.

`mirrord authorize` prints the authorized_keys line for the mirroring account:

    restrict,command="python3 -m mirrord.receive --retention 604800 --root /var/mail ..." KEY

sshd then runs it for every connection with that key, whatever the client asked.
It reads the rsync server command from $SSH_ORIGINAL_COMMAND, checks that the destination is
exactly one of the mirrored roots, prunes that root's backup area (what passes overwrote or
deleted, kept for the retention), and execs Debian's rrsync write-only, confined to that root.
rrsync validates every rsync option and path; we only choose which root it is confined to.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
import time
from collections.abc import Sequence
from typing import Final

from mirrord.backups import prune_backups

log = logging.getLogger(__name__)

RRSYNC: Final = "/usr/bin/rrsync"


class ReceiveError(Exception):
    """The connection asked for something the key does not allow."""


def pick_root(command: str, roots: Sequence[str]) -> str:
    """Return the root the rsync server command writes to, or raise ReceiveError."""
    argv = shlex.split(command)
    if argv[:2] != ["rsync", "--server"]:
        raise ReceiveError("receive: only an rsync server command is allowed")
    if "--sender" in argv:
        raise ReceiveError("receive: the mirror account may only write, not read")
    dest = os.path.normpath(argv[-1]) if argv[-1] else ""
    for root in roots:
        if dest == os.path.normpath(root):
            return root
    raise ReceiveError(f"receive: {argv[-1]!r} is not a mirrored root")


def receive(roots: Sequence[str], retention: float, rrsync: str = RRSYNC) -> int:
    """Run as the forced command: check, prune, then exec rrsync (returns only on refusal)."""
    command = os.environ.get("SSH_ORIGINAL_COMMAND", "")
    if command == "true":
        return 0  # `ssh peer true`: a connectivity check
    try:
        root = pick_root(command, roots)
    except (ReceiveError, ValueError) as exc:
        print(f"mirrord: error: {exc}", file=sys.stderr)
        return 1
    if not os.path.isdir(root):
        # Never create it: on a standby whose disk failed to mount, that would fill the
        # wrong file system. The operator creates each root on both nodes.
        print(f"mirrord: error: receive: {root} does not exist on this node", file=sys.stderr)
        return 1
    if retention > 0:
        prune_backups(root, retention, time.time())
    # -wo: write only; -absolute: the client names the root by its absolute path.
    os.execv(rrsync, [rrsync, "-wo", "-absolute", root])
    return 1  # not reached


def authorized_keys_line(
    public_key: str, roots: Sequence[str], retention: float, command: Sequence[str]
) -> str:
    """Return the authorized_keys line restricting `public_key` to receiving the roots."""
    argv = [*command, "--retention", str(int(retention))]
    for root in roots:
        argv += ["--root", root]
    forced = shlex.join(argv).replace('"', '\\"')
    return f'restrict,command="{forced}" {public_key.strip()}'


def main(argv: Sequence[str] | None = None) -> int:
    """`python3 -m mirrord.receive --root R [--root R2] [--retention SECONDS]`."""
    import argparse  # noqa: PLC0415  only this entry point needs it

    parser = argparse.ArgumentParser(prog="mirrord-receive", description=__doc__)
    parser.add_argument("--root", action="append", required=True, help="a mirrored root")
    parser.add_argument("--retention", type=float, default=7 * 86400.0)
    args = parser.parse_args(argv)
    return receive([r.rstrip("/") or "/" for r in args.root], args.retention)


if __name__ == "__main__":
    sys.exit(main())
