"""`mirrord pair-setup`: the mirror's ssh trust for one node, in one guided step.

Run on each node. It creates this node's mirror key if it has none, pins the peer's ssh host
key (shown with its fingerprint, confirmed against the one the peer's admin reads) into the
known_hosts file mirrord's ssh uses, authorizes the peer's mirror key for the mirrored roots
only (given its public key), and then tries the connection and says what is still missing.
"""

from __future__ import annotations

import argparse
import os
import pwd
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from mirrord.pairing import (
    KNOWN_HOSTS_NAME,
    KeyFormatError,
    PublicKey,
    authorize,
    known_hosts_name,
    parse_key,
    parse_keyscan,
    pin,
    read_write_dropin,
)
from mirrord.transfer import Peer
from takeover.exits import Exit
from takeover.fsutil import write_atomic

PROG = "mirrord"
HOST_KEYS = Path("/etc/ssh")
# The unit drop-in that lets mirrord write the mirrored roots (read_write_dropin).
DROPIN = Path("/etc/systemd/system/mirrord.service.d/hapair-roots.conf")
# Seconds for each ssh-keyscan / ssh attempt to the peer.
TIMEOUT = 15


def known_hosts_path(config: Path) -> Path:
    """Return the pinned host keys file that belongs to this cluster file."""
    return config.parent / KNOWN_HOSTS_NAME


def pinned_options(config: Path) -> list[str]:
    """Return the ssh options that make mirrord trust only the pinned host keys, once
    pair-setup has written them (before that, ssh's own defaults apply)."""
    path = known_hosts_path(config)
    if not path.is_file():
        return []
    return ["-o", f"UserKnownHostsFile={path}", "-o", "StrictHostKeyChecking=yes"]


def say(text: str) -> None:
    """Print one step's outcome for the administrator (a failed step on stderr)."""
    print(f"{PROG}: {text}", file=sys.stderr if text.startswith("error:") else sys.stdout)


def ensure_key(key: Path, node: str) -> PublicKey:
    """Create this node's mirror key pair if missing; return its public half."""
    pub = Path(f"{key}.pub")
    if not key.exists():
        subprocess.run(
            [
                "ssh-keygen",
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                f"mirrord@{node}",
                "-f",
                str(key),
            ],
            check=True,
            timeout=60,
        )
        say(f"created this node's mirror key {key}")
    return parse_key(pub.read_text())


def own_host_keys(directory: Path = HOST_KEYS) -> list[PublicKey]:
    """Return this node's ssh host keys (ed25519 first)."""
    found = []
    for path in sorted(directory.glob("ssh_host_*_key.pub"), key=lambda p: "ed25519" not in p.name):
        try:
            found.append(parse_key(path.read_text()))
        except (OSError, KeyFormatError):
            continue
    return found


def scan(address: str, port: int) -> tuple[list[PublicKey], str]:
    """Return the host keys the peer's sshd offers, and ssh-keyscan's complaints."""
    p = subprocess.run(
        ["ssh-keyscan", "-T", str(TIMEOUT), "-p", str(port), address],
        capture_output=True,
        text=True,
        check=False,
        timeout=TIMEOUT * 4,
    )
    errors = "\n".join(line for line in p.stderr.splitlines() if not line.startswith("#"))
    return parse_keyscan(p.stdout), errors.strip()


def choose(
    keys: list[PublicKey], fingerprint: str | None, ask: Callable[[str], str] | None
) -> PublicKey | None:
    """Return the scanned key the administrator vouches for: the one matching `fingerprint`,
    or the one they confirm when asked; None when nothing was confirmed."""
    if fingerprint is not None:
        return next((k for k in keys if k.fingerprint == fingerprint), None)
    if ask is None:
        return None
    key = keys[0]
    answer = ask(f"is {key.fingerprint} ({key.type}) the peer's host key? [yes/no] ")
    return key if answer.strip().lower() in ("y", "yes") else None


def install_authorized(user: str, line: str, key: PublicKey) -> Path:
    """Put `line` for `key` into `user`'s authorized_keys (replacing an older entry)."""
    account = pwd.getpwnam(user)
    ssh_dir = Path(account.pw_dir) / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    path = ssh_dir / "authorized_keys"
    old = path.read_text() if path.exists() else ""
    write_atomic(path, authorize(old, key, line), mode=0o600)
    os.chown(ssh_dir, account.pw_uid, account.pw_gid)
    os.chown(path, account.pw_uid, account.pw_gid)
    return path


def write_dropin(roots: list[str], path: Path = DROPIN) -> bool:
    """Write the ReadWritePaths= drop-in for the mirrored roots; return whether it changed
    (systemd then reloads its units, if it runs here)."""
    text = read_write_dropin(roots)
    if path.exists() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text, mode=0o644)
    if Path("/run/systemd/system").is_dir():
        subprocess.run(["systemctl", "daemon-reload"], check=False, timeout=120)
    return True


def try_connect(peer: Peer, config: Path) -> tuple[bool, str]:
    """Log into the peer as mirrord will; return (ssh got in, ssh's own complaint).

    The peer's forced command (rsync's daemon) decides the exit status, so whether ssh itself
    got in is read from its VERBOSE log ("Authenticated to ..."); when it did not, its last
    lines are the real cause ("Host key verification failed.", "Permission denied ...").
    """
    # No ControlMaster: a master started here would outlive this command by ControlPersist.
    argv = [*replace(peer, control_path=None).ssh_argv(), *pinned_options(config),
            "-o", "LogLevel=VERBOSE", peer.login, "true"]  # fmt: skip
    p = subprocess.run(
        argv, capture_output=True, text=True, check=False, timeout=TIMEOUT * 2,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    if "Authenticated to " in p.stderr:
        return True, ""
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    return False, " ".join(lines[-2:]) or f"ssh exited {p.returncode}"


def run_pair_setup(
    args: argparse.Namespace,
    *,
    roots: list[str],
    node: str,
    peer_name: str,
    peer: Peer,
    ssh_key: Path,
    authorized_line: Callable[[str], str | None],
) -> int:
    """Do every step that can be done on this node; return 0 once ssh to the peer works."""
    if write_dropin(roots):
        say(f"wrote {DROPIN}: mirrord.service may write the {len(roots)} mirrored roots")
    own = ensure_key(ssh_key, node)
    hosts = own_host_keys()
    say(f"this node ({node}): mirror public key {ssh_key}.pub:\n  {own.line()} {own.comment}")
    if hosts:
        say(f"this node's ssh host key fingerprint: {hosts[0].fingerprint} ({hosts[0].type})")
    known = known_hosts_path(args.config)
    host = known_hosts_name(peer.address, peer.port)
    keys, errors = scan(peer.address, peer.port)
    if not keys:
        say(f"error: cannot read {peer_name}'s host key from {host}: {errors or 'no answer'}")
        return int(Exit.FAILURE)
    old = known.read_text() if known.exists() else ""
    pinned = {k.blob for k in keys} & set(old.split())
    if pinned and args.peer_fingerprint is None:
        say(f"{peer_name}'s host key is already pinned in {known}")
    else:
        ask = input if sys.stdin.isatty() and not args.peer_fingerprint else None
        chosen = choose(keys, args.peer_fingerprint, ask)
        if chosen is None:
            offered = ", ".join(f"{k.fingerprint} ({k.type})" for k in keys)
            say(
                f"error: {peer_name}'s host key not confirmed; {host} offers {offered}. On "
                f"{peer_name}, `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` prints the true "
                "one: pass it as --peer-fingerprint"
            )
            return int(Exit.FAILURE)
        write_atomic(known, pin(old, host, [chosen]), mode=0o644)
        say(f"pinned {peer_name}'s host key {chosen.fingerprint} for {host} in {known}")
    if args.peer_public_key is not None:
        try:
            theirs = parse_key(args.peer_public_key.read_text())
        except (OSError, KeyFormatError) as exc:
            say(f"error: {args.peer_public_key}: {exc}")
            return int(Exit.FAILURE)
        line = authorized_line(theirs.line() + (f" {theirs.comment}" if theirs.comment else ""))
        if line is None:
            return int(Exit.FAILURE)
        path = install_authorized(peer.user, line, theirs)
        say(
            f"authorized {peer_name}'s mirror key {theirs.fingerprint} in {path} "
            "(the mirrored roots only)"
        )
    ok, complaint = try_connect(peer, args.config)
    if ok:
        say(f"ssh to {peer.login} works: this direction is ready")
        return int(Exit.OK)
    say(f"error: ssh to {peer.login} fails: {complaint}")
    fp = f" --peer-fingerprint {hosts[0].fingerprint}" if hosts else ""
    say(
        f"next: copy {ssh_key}.pub to {peer_name} and run there: "
        f"mirrord pair-setup --peer-public-key FILE{fp}"
    )
    return int(Exit.FAILURE)
