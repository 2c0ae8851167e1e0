"""The text of the mirror's ssh trust: fingerprints, pinned host keys, authorized keys.

Pure: no I/O; `mirrord pair-setup` (mirrord/pairsetup.py) reads and writes the files.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

# The pinned host keys mirrord's ssh trusts, beside the cluster file (/etc/hapair/known_hosts).
KNOWN_HOSTS_NAME = "known_hosts"


class KeyFormatError(ValueError):
    """A line that is not an OpenSSH public key ("TYPE BASE64 [COMMENT]")."""


@dataclass(frozen=True)
class PublicKey:
    """One OpenSSH public key."""

    # e.g. "ssh-ed25519".
    type: str
    # The base64 blob, as written in the file.
    blob: str
    comment: str = ""

    @property
    def fingerprint(self) -> str:
        """Return the key's SHA256 fingerprint as `ssh-keygen -l` prints it."""
        digest = hashlib.sha256(base64.b64decode(self.blob)).digest()
        return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")

    def line(self) -> str:
        """Return the key as one authorized_keys/known_hosts field pair (type and blob)."""
        return f"{self.type} {self.blob}"


def parse_key(text: str) -> PublicKey:
    """Parse "TYPE BASE64 [COMMENT]" (a .pub file's line); raise KeyFormatError otherwise."""
    fields = text.strip().split(maxsplit=2)
    if len(fields) < 2 or not (fields[0].startswith(("ssh-", "ecdsa-", "sk-"))):
        raise KeyFormatError("not an ssh public key")
    try:
        raw = base64.b64decode(fields[1], validate=True)
    except binascii.Error as exc:
        raise KeyFormatError(f"not an ssh public key: {exc}") from None
    # The blob starts with its own type, length-prefixed: a truncated paste is caught here.
    name = fields[0].encode()
    if raw[4 : 4 + len(name)] != name:
        raise KeyFormatError("not an ssh public key: the blob does not match its type")
    return PublicKey(fields[0], fields[1], fields[2] if len(fields) > 2 else "")


def known_hosts_name(address: str, port: int) -> str:
    """Return how ssh names the host in known_hosts: the address, or [address]:port."""
    return address if port == 22 else f"[{address}]:{port}"


def parse_keyscan(text: str) -> list[PublicKey]:
    """Return the keys of `ssh-keyscan` output ("HOST TYPE BASE64" lines; # lines skipped)."""
    keys = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split(maxsplit=1)
        if len(fields) == 2:
            keys.append(parse_key(fields[1]))
    return keys


def pin(known_hosts: str, host: str, keys: list[PublicKey]) -> str:
    """Return known_hosts text with `host`'s entries replaced by `keys` (other hosts kept)."""
    kept = [
        line
        for line in known_hosts.splitlines()
        if line.strip() and (line.startswith("#") or line.split(maxsplit=1)[0] != host)
    ]
    return "\n".join([*kept, *(f"{host} {k.line()}" for k in keys)]) + "\n"


def authorize(authorized_keys: str, key: PublicKey, line: str) -> str:
    """Return authorized_keys text where `key` appears once, as `line` (the restricted entry
    `mirrord authorize` builds); every other key is kept as it was."""
    kept = [
        existing
        for existing in authorized_keys.splitlines()
        if existing.strip() and key.blob not in existing.split()
    ]
    return "\n".join([*kept, line]) + "\n"


def read_write_dropin(roots: list[str]) -> str:
    """Return the mirrord.service drop-in that makes every mirrored root writable under the
    unit's ProtectSystem=full (which keeps /usr, /boot and /etc read-only); `-`: a root that
    is missing (an unmounted disk) does not stop the unit from starting."""
    lines = [
        "# Written by `mirrord pair-setup` from the mirror policies: run it again after a change.",
        "[Service]",
        *(f"ReadWritePaths=-{root}" for root in sorted(roots)),
    ]
    return "\n".join(lines) + "\n"
