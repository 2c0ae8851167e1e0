"""The receiving side with `receiver = "rrsync"`: a forced ssh command that lets the peer's
mirrord write only the roots, through Debian's rrsync. (The default receiver is rsync's own
daemon, mirrord.rsyncd: no Python per pass, so about 50 ms less per pass; this one also works
for a non-root mirror account, which then cannot keep owners.)

With that receiver, `mirrord authorize` prints the authorized_keys line for the mirroring account:

    restrict,command="python3 -m mirrord.receive --retention 604800 --root /var/mail ..." KEY

sshd then runs it for every connection with that key, whatever the client asked.
It reads the rsync server command from $SSH_ORIGINAL_COMMAND, checks that the destination is
exactly one of the mirrored roots, runs the push check the rsync daemon runs for the default
receiver (pushcheck.sh: the root exists, this node is not its source), prunes that root's backup
area (what passes overwrote or deleted, kept for the retention), and execs Debian's rrsync
write-only, confined to that root.
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
# The push check both receivers run before a push (the rsync daemon as its pre-xfer exec),
# sourced by `sh -c` (one exec less than `/bin/sh FILE`, ~1 ms).
PUSHCHECK: Final = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pushcheck.sh")
PUSHCHECK_COMMAND: Final = ". " + shlex.quote(PUSHCHECK)
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
    # A missing root is never created (on a standby whose disk failed to mount, that would
    # fill the wrong file system), and a root this node is the source of is refused.
    refusal = push_check(root, command)
    if refusal:
        print(refusal, file=sys.stderr)
        return 1
    if retention > 0:
        try:
            maybe_prune(root, retention, time.time())
        except OSError as exc:  # UnsafeArea: pushcheck.sh refused it already; say why
            print(f"mirrord: {root}: {exc}", file=sys.stderr)
            return 1
    os.environ["SSH_ORIGINAL_COMMAND"] = for_rrsync(command)
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


def for_rrsync(command: str) -> str:
    """Return the rsync server command as rrsync accepts it.

    The sender writes --modify-window=-1 (times to the nanosecond, mirrord.transfer) as `-@-1`,
    which rrsync's check of numeric short options refuses; the long form is the same option.
    """
    return " ".join("--modify-window=-1" if w == "-@-1" else w for w in command.split(" "))


def push_check(root: str, command: str) -> str | None:
    """Run the push check (pushcheck.sh) on `root` as rsync's daemon runs it for the default
    receiver; return its reason if it refuses (root missing, or this node is its source).

    One rule for both receivers: the check reads the rsync server options as RSYNC_ARG1...
    """
    import subprocess  # noqa: PLC0415  rrsync, run next, imports it anyway

    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "RSYNC_MODULE_PATH": root,
           "RSYNC_ARG0": "rsyncd"}  # fmt: skip
    for i, arg in enumerate(shlex.split(command)[1:], start=1):
        env[f"RSYNC_ARG{i}"] = arg
    done = subprocess.run(["/bin/sh", "-c", PUSHCHECK_COMMAND], env=env, capture_output=True,
                          text=True, check=False)  # fmt: skip
    if done.returncode == 0:
        return None
    return done.stdout.strip() or f"mirrord: {root}: push check failed ({done.returncode})"


def _is_python_script(path: str) -> bool:
    """Return whether `path` starts with a python3 shebang."""
    try:
        with open(path, "rb") as f:
            first = f.readline(200)
    except OSError:
        return False
    return first.startswith(b"#!") and b"python3" in first


def maybe_prune(root: str, retention: float, now: float) -> bool:
    """Prune the backup area if the last pruning is older than PRUNE_EVERY; return whether.

    The stamp lives in the area, reached only through its checked descriptor (mirrord.backups:
    a planted symlink is refused, never followed).
    """
    from mirrord.backups import open_area, prune_backups  # noqa: PLC0415  rarely needed

    try:
        area = open_area(root, create=False)
    except FileNotFoundError:
        return False  # no pass has kept anything yet
    try:
        try:
            if (
                now - os.stat(PRUNE_STAMP, dir_fd=area, follow_symlinks=False).st_mtime
                < PRUNE_EVERY
            ):
                return False
        except FileNotFoundError:
            pass
        prune_backups(root, retention, now)
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        os.close(os.open(PRUNE_STAMP, flags, 0o600, dir_fd=area))
        os.utime(PRUNE_STAMP, dir_fd=area, follow_symlinks=False)
    finally:
        os.close(area)
    return True


def authorized_keys_line(
    public_key: str, roots: Sequence[str], retention: float, command: Sequence[str]
) -> str:
    """Return the authorized_keys line restricting `public_key` to receiving the roots."""
    argv = [*command, "--retention", str(int(retention))]
    for root in roots:
        argv += ["--root", root]
    return restricted_line(public_key, argv)


def restricted_line(public_key: str, forced: Sequence[str], allow: Sequence[str] = ()) -> str:
    """Return the authorized_keys line that lets `public_key` run only `forced` (and what
    `allow` adds back to `restrict`, e.g. one port forward)."""
    command = shlex.join(forced).replace('"', '\\"')
    options = ",".join(["restrict", *allow, f'command="{command}"'])
    return f"{options} {public_key.strip()}"


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
