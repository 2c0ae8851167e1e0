"""The receiving side: rsync's own daemon, started by sshd for each push, one module per root.

`mirrord authorize KEY` (on the receiving node) writes `rsyncd.conf` and prints the
authorized_keys line for the sending node's key:

    restrict,command="/usr/bin/rsync --server --daemon --config=/etc/hapair/rsyncd.conf ." KEY

Whatever the client asks, sshd starts rsync in daemon mode on the session (rsync's "daemon over
a remote shell"), which serves only the modules of that file: one per mirrored root, write-only,
chrooted into the root, with numeric ids. The sender addresses a root as `user@peer::MODULE/`.
Before each push the module's `pre-xfer exec` (pushcheck.sh, POSIX sh) refuses a root that
is missing or that this node is the source of (mirrord.orphans).

Nothing of Python runs on the receiving side per pass: what the pass costs there is sshd's
session and rsync itself (the backup area is pruned by the receiving node's mirrord daemon).

With `[mirror] tunnel_port`, the same modules are also served by a standing rsync daemon
(mirrord-receiver.service, `rsyncd-tunnel.conf`) on the loopback at that port, which asks
for rsync's own authentication (a user and a secret both nodes derive from the cluster key): the
sending mirrord reaches it through a forward on its ssh connection, which the key may open to
that port only (`permitopen`). A push then costs a fork of that daemon instead of an ssh
session, a shell and rsync's start (README, "Measured"); the push check runs all the same.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from mirrord.receive import PUSHCHECK_COMMAND, restricted_line

CONF_NAME: Final = "rsyncd.conf"
# The standing daemon's configuration and secrets, beside CONF_NAME.
TUNNEL_CONF_NAME: Final = "rsyncd-tunnel.conf"
TUNNEL_SECRETS_NAME: Final = "rsyncd-tunnel.secrets"
# rsync's user name for the tunnel's authentication (no system account).
TUNNEL_USER: Final = "hapair-mirror"
# The loopback address the standing daemon listens on and the forward opens.
TUNNEL_HOST: Final = "127.0.0.1"
# The receiving rsync gives up on a silent sender after this many seconds.
SERVER_TIMEOUT: Final = 600

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def module_name(root: str) -> str:
    """Return the rsync module of `root`: readable, and unique by a hash of the whole path."""
    clean = root.rstrip("/") or "/"
    slug = _UNSAFE.sub("_", clean.strip("/").replace("/", "-"))[:40] or "root"
    return f"{slug}-{hashlib.sha256(clean.encode()).hexdigest()[:8]}"


@dataclass(frozen=True)
class Tunnel:
    """The standing daemon's listening port and secrets file."""

    port: int
    secrets: Path


def tunnel_files(conf: Path, port: int) -> tuple[Path, Tunnel]:
    """Return the standing daemon's configuration file beside `conf` (rsyncd.conf), and its
    port and secrets file (absolute, as the configuration names it)."""
    secrets = conf.with_name(TUNNEL_SECRETS_NAME).resolve()
    return conf.with_name(TUNNEL_CONF_NAME), Tunnel(port, secrets)


def tunnel_secret(cluster_key: bytes) -> str:
    """Return the tunnel's rsync password, derived from the cluster key both nodes hold (so
    that it needs no copying, and changes when the key does)."""
    return hmac.new(cluster_key, b"hapair mirror tunnel 1", hashlib.sha256).hexdigest()


def render_secrets(cluster_key: bytes) -> str:
    """Return the standing daemon's secrets file (`user:password`)."""
    return f"{TUNNEL_USER}:{tunnel_secret(cluster_key)}\n"


def render_conf(roots: Sequence[str], tunnel: Tunnel | None = None) -> str:
    """Return rsyncd.conf text serving each root as a write-only module (for the standing
    daemon, with `tunnel`: where it listens, and rsync's authentication)."""
    lines = [
        "# Written by `mirrord authorize` from the mirror policies: rewrite it the same way",
        "# after changing them. sshd starts rsync with it for the sending node's mirror key.",
        "use chroot = yes",
        "numeric ids = yes",
        "munge symlinks = no",
        "read only = no",
        "write only = yes",
        "list = no",
        "uid = 0",
        "gid = 0",
        "reverse lookup = no",
        f"timeout = {SERVER_TIMEOUT}",
        # rsync's daemon logs four lines per connection, a pass a second on a busy `hot`
        # directory; its errors reach the sending mirrord, which logs them with the pass.
        "log file = /dev/null",
        f"pre-xfer exec = {PUSHCHECK_COMMAND}",
    ]
    if tunnel is not None:
        lines += [
            f"address = {TUNNEL_HOST}",
            f"port = {tunnel.port}",
            # Small writes both ways: Nagle's algorithm with delayed acks cost 40 ms a push.
            "socket options = TCP_NODELAY",
            f"auth users = {TUNNEL_USER}",
            f"secrets file = {tunnel.secrets}",
            "strict modes = yes",
        ]
    lines.append("")
    for root in sorted({r.rstrip("/") or "/" for r in roots}):
        if "\n" in root:
            raise ValueError(f"rsyncd: root {root!r} contains a newline")
        lines += [f"[{module_name(root)}]", f"path = {root}", f"comment = hapair mirror of {root}",
                  ""]  # fmt: skip
    return "\n".join(lines)


def conf_roots(text: str) -> dict[str, str]:
    """Return {module: path} of an rsyncd.conf text (for `mirrord check`)."""
    out: dict[str, str] = {}
    module = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            module = line[1:-1].strip()
        elif module and line.partition("=")[0].strip() == "path":
            out[module] = line.partition("=")[2].strip()
    return out


def forced_argv(conf: Path, rsync: str = "/usr/bin/rsync") -> list[str]:
    """Return the command sshd runs for the mirror key."""
    return [rsync, "--server", "--daemon", f"--config={conf}", "."]


def authorized_keys_line(
    public_key: str, conf: Path, rsync: str = "/usr/bin/rsync", tunnel_port: int = 0
) -> str:
    """Return the authorized_keys line restricting `public_key` to the mirror modules (and,
    with a tunnel port, to one forward: to the standing daemon's port on the loopback).

    `port-forwarding` gives back remote forwards too, and authorized_keys has no way to refuse
    them all: `permitlisten` confines them to loopback port 1 (tcpmux, which nothing serves),
    where sshd would otherwise let the key listen on any loopback port, as root."""
    allow: tuple[str, ...] = ()
    if tunnel_port:
        allow = ("port-forwarding", f'permitopen="{TUNNEL_HOST}:{tunnel_port}"',
                 f'permitlisten="{TUNNEL_HOST}:1"')  # fmt: skip
    return restricted_line(public_key, forced_argv(conf, rsync), allow)
