"""The receiving side with `receiver = "rrsync"`: a forced ssh command that lets the peer's
mirrord write only the roots, through Debian's rrsync. (The default receiver is rsync's own
daemon, mirrord.rsyncd: no Python per pass, so about 50 ms less per pass; this one also works
for a non-root mirror account, which then cannot keep owners.)

With that receiver, `mirrord authorize` prints the authorized_keys line for the mirroring account:

    restrict,command="python3 -m mirrord.receive --retention 604800 --root /var/mail ..." KEY

sshd then runs it for every connection with that key, whatever the client asked.
It reads the rsync server command from $SSH_ORIGINAL_COMMAND, checks that the destination is
exactly one of the mirrored roots, prunes that root's backup area (what passes overwrote or
deleted, kept for the retention), and execs Debian's rrsync write-only, confined to that root.
rrsync validates every rsync option and path; we only choose which root it is confined to.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from collections.abc import Sequence
from typing import Final

# Imports are kept to the minimum: this runs for every pass, before rrsync, on the receiver
# (no logging: stderr reaches the sending rsync, whose log shows it).

RRSYNC: Final = "/usr/bin/rrsync"
# Prune a root's backup area at most this often (seconds), not on every pass.
PRUNE_EVERY: Final = 3600.0
PRUNE_STAMP: Final = ".pruned"


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
    refusal = source_refusal(root, command)
    if refusal:
        print(f"mirrord: error: receive: {refusal}", file=sys.stderr)
        return 1
    if retention > 0:
        maybe_prune(root, retention, time.time())
    # -wo: write only; -absolute: the client names the root by its absolute path.
    argv = [rrsync, "-wo", "-absolute", root]
    if _is_python_script(rrsync):
        # Debian's rrsync is a Python script: run it in this interpreter rather than start a
        # second one (~50-80 ms per pass). It validates, then execs rsync, as it would alone.
        import runpy  # noqa: PLC0415  only on this path

        sys.argv = argv
        runpy.run_path(rrsync, run_name="__main__")
        return 0
    os.execv(rrsync, argv)
    return 1  # not reached


def source_refusal(root: str, command: str) -> str | None:
    """Return why a push into `root` is refused while this node is marked as its source.

    The marker (mirrord.orphans) is set while this node pushes, and stays after a crash until
    its mirrord has set its orphans aside. Only a transfer that can replace or delete nothing
    (--ignore-existing, no --delete*: an orphan's conflict copy) is let through meanwhile.
    """
    marker = os.path.join(root, ".hapair-backup", "source")
    if not os.path.exists(marker):
        return None
    argv = shlex.split(command)
    harmless = "--ignore-existing" in argv and not any(a.startswith("--delete") for a in argv)
    if harmless:
        return None
    return (
        f"{root}: this node is (or was, until it stopped) the source of this root; it accepts "
        "pushes once its mirrord has set its unsynced changes aside"
    )


def _is_python_script(path: str) -> bool:
    """Return whether `path` starts with a python3 shebang."""
    try:
        with open(path, "rb") as f:
            first = f.readline(200)
    except OSError:
        return False
    return first.startswith(b"#!") and b"python3" in first


def maybe_prune(root: str, retention: float, now: float) -> bool:
    """Prune the backup area if the last pruning is older than PRUNE_EVERY; return whether."""
    from mirrord.backups import BACKUP_DIR, prune_backups  # noqa: PLC0415  rarely needed

    stamp = os.path.join(root, BACKUP_DIR, PRUNE_STAMP)
    try:
        if now - os.stat(stamp).st_mtime < PRUNE_EVERY:
            return False
    except FileNotFoundError:
        pass
    prune_backups(root, retention, now)
    if os.path.isdir(os.path.dirname(stamp)):
        with open(stamp, "w"):
            pass
    return True


def authorized_keys_line(
    public_key: str, roots: Sequence[str], retention: float, command: Sequence[str]
) -> str:
    """Return the authorized_keys line restricting `public_key` to receiving the roots."""
    argv = [*command, "--retention", str(int(retention))]
    for root in roots:
        argv += ["--root", root]
    forced = shlex.join(argv).replace('"', '\\"')
    return f'restrict,command="{forced}" {public_key.strip()}'


def parse_args(argv: Sequence[str]) -> tuple[list[str], float]:
    """Parse `--root R` (repeatable) and `--retention SECONDS` (argparse costs a start-up)."""
    roots: list[str] = []
    retention = 7 * 86400.0
    it = iter(argv)
    for arg in it:
        value = next(it, None)
        if value is None or arg not in ("--root", "--retention"):
            raise ReceiveError(
                f"receive: usage: --root DIR [--root DIR] [--retention S], got {arg}"
            )
        if arg == "--root":
            roots.append(value.rstrip("/") or "/")
        else:
            retention = float(value)
    if not roots:
        raise ReceiveError("receive: at least one --root is required")
    return roots, retention


def main(argv: Sequence[str] | None = None) -> int:
    """`python3 -m mirrord.receive --root R [--root R2] [--retention SECONDS]`."""
    try:
        roots, retention = parse_args(sys.argv[1:] if argv is None else argv)
    except (ReceiveError, ValueError) as exc:
        print(f"mirrord: error: {exc}", file=sys.stderr)
        return 2
    return receive(roots, retention)


if __name__ == "__main__":
    sys.exit(main())
