"""The mirror's ssh trust as text: fingerprints, pinned host keys, authorized keys."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from mirrord.pairing import (
    KeyFormatError,
    authorize,
    known_hosts_name,
    parse_key,
    parse_keyscan,
    pin,
    read_write_dropin,
)
from mirrord.pairsetup import choose, pinned_options

# Two real ed25519 public keys (made with ssh-keygen for these tests).
KEY_A = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK4ohuuSQkW5hPDqkZybxCytxaV4A0YLC4Toewq2j/hJ a@x"
KEY_B = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM5hDSTP+UitjMDfu9a2YyCR7t90V44D9w0Qo8GhwRhn b@y"


def test_fingerprint_is_what_ssh_keygen_prints(tmp_path: Path) -> None:
    """The SHA256 fingerprint equals `ssh-keygen -lf`'s, so an admin can compare the two."""
    pub = tmp_path / "k.pub"
    pub.write_text(KEY_A + "\n")
    out = subprocess.run(
        ["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    assert parse_key(KEY_A).fingerprint == out.split()[1]


@pytest.mark.parametrize(
    "text",
    ["", "ssh-ed25519", "hello world", "ssh-ed25519 not-base64!",
     "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIK4ohuuSQkW5hPDqkZybxCytxaV4A0YLC4Toewq2j/hJ"],
)  # fmt: skip
def test_a_non_key_is_refused(text: str) -> None:
    """Garbage, a truncated paste or a blob of another type is not a public key."""
    with pytest.raises(KeyFormatError):
        parse_key(text)


def test_known_hosts_name_brackets_a_non_default_port() -> None:
    """Port 22 is the bare address; another port is [address]:port, as ssh looks it up."""
    assert known_hosts_name("192.0.2.12", 22) == "192.0.2.12"
    assert known_hosts_name("192.0.2.12", 2222) == "[192.0.2.12]:2222"


def test_keyscan_output_is_parsed_and_comments_skipped() -> None:
    """ssh-keyscan's `# host:port SSH-2.0-...` banners are skipped, keys are kept."""
    text = "# 192.0.2.12:22 SSH-2.0-OpenSSH_9.2\n192.0.2.12 " + KEY_B.rsplit(" ", 1)[0] + "\n"
    assert [k.blob for k in parse_keyscan(text)] == [parse_key(KEY_B).blob]


def test_pin_replaces_the_hosts_old_key_and_keeps_others() -> None:
    """Pinning again replaces the host's entry; other hosts and comments stay."""
    old = f"# mine\n192.0.2.12 {parse_key(KEY_A).line()}\n192.0.2.99 {parse_key(KEY_A).line()}\n"
    new = pin(old, "192.0.2.12", [parse_key(KEY_B)])
    assert new.splitlines() == [
        "# mine",
        f"192.0.2.99 {parse_key(KEY_A).line()}",
        f"192.0.2.12 {parse_key(KEY_B).line()}",
    ]


def test_authorize_keeps_one_entry_per_key() -> None:
    """Authorizing a key twice leaves one restricted line for it; other keys stay."""
    key = parse_key(KEY_B)
    text = f'{KEY_A}\ncommand="old" {key.line()}\n'
    once = authorize(text, key, f'command="new" {key.line()}')
    assert authorize(once, key, f'command="new" {key.line()}') == once
    assert once.splitlines() == [KEY_A, f'command="new" {key.line()}']


def test_choose_needs_a_matching_fingerprint_or_a_yes() -> None:
    """No key is pinned without the admin's confirmation: a wrong fingerprint or a "no"."""
    keys = [parse_key(KEY_A), parse_key(KEY_B)]
    assert choose(keys, keys[1].fingerprint, None) == keys[1]
    assert choose(keys, "SHA256:wrong", None) is None
    assert choose(keys, None, None) is None
    assert choose(keys, None, lambda _q: "yes") == keys[0]
    assert choose(keys, None, lambda _q: "no") is None


def test_mirrord_trusts_the_pinned_file_once_it_exists(tmp_path: Path) -> None:
    """Once pair-setup wrote known_hosts beside the cluster file, ssh checks strictly with it."""
    config = tmp_path / "cluster.toml"
    assert pinned_options(config) == []
    (tmp_path / "known_hosts").write_text("")
    assert pinned_options(config) == [
        "-o", f"UserKnownHostsFile={tmp_path}/known_hosts", "-o", "StrictHostKeyChecking=yes",
    ]  # fmt: skip


def test_the_dropin_makes_every_root_writable_and_tolerates_a_missing_one() -> None:
    """One ReadWritePaths=- line per root, sorted: a root under /etc is writable under
    ProtectSystem=full, and an unmounted root does not stop the unit."""
    text = read_write_dropin(["/srv/www", "/etc/mirrored"])
    assert text.splitlines()[1:] == [
        "[Service]",
        "ReadWritePaths=-/etc/mirrored",
        "ReadWritePaths=-/srv/www",
    ]
