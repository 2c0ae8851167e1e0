"""The receiving side's rsync daemon set-up: module names, rsyncd.conf, the forced command, and
the push check (pushcheck.sh, run for real by /bin/sh with rsync's variables)."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

from mirrord import orphans
from mirrord.backups import BACKUP_DIR, backup_args
from mirrord.outcome import FULL_PASS_WANTED
from mirrord.receive import PUSHCHECK
from mirrord.rsyncd import (
    TUNNEL_USER,
    Tunnel,
    authorized_keys_line,
    conf_roots,
    module_name,
    render_conf,
    render_secrets,
    tunnel_secret,
)
from mirrord.transfer import (
    Peer,
    TransferOptions,
    classify,
    incremental_argv,
    tunnel_env,
    tunneled,
)

NOW = 1.8e9


def test_module_names_are_readable_distinct_and_stable() -> None:
    """Paths that one slug would merge get distinct modules; the same path, the same module."""
    a, b = module_name("/srv/a-b"), module_name("/srv/a/b")
    assert a.startswith("srv-a-b-") and b.startswith("srv-a-b-") and a != b
    assert module_name("/var/mail/") == module_name("/var/mail")
    assert all(c.isalnum() or c in "._-" for c in module_name("/srv/we ird]/x"))


def test_conf_serves_each_root_write_only_in_a_chroot() -> None:
    """Every root is a module with its path; the globals make it write-only and chrooted."""
    text = render_conf(["/var/mail", "/srv/www/"])
    assert conf_roots(text) == {module_name("/var/mail"): "/var/mail",
                                module_name("/srv/www"): "/srv/www"}  # fmt: skip
    lines = {line.partition("=")[0].strip(): line.partition("=")[2].strip()
             for line in text.splitlines() if "=" in line}  # fmt: skip
    assert lines["write only"] == "yes" and lines["read only"] == "no"
    assert lines["use chroot"] == "yes" and lines["munge symlinks"] == "no"
    assert lines["list"] == "no" and lines["reverse lookup"] == "no"
    assert lines["log file"] == "/dev/null"  # four lines a pass would flood the journal
    assert lines["pre-xfer exec"] == f". {PUSHCHECK}"


def test_authorized_keys_line_forces_the_daemon_on_the_conf() -> None:
    """The key may only start rsync's daemon mode on hapair's rsyncd.conf."""
    line = authorized_keys_line("ssh-ed25519 AAAAC3Nz alpha\n", Path("/etc/hapair/rsyncd.conf"))
    assert line.startswith('restrict,command="') and line.endswith(" ssh-ed25519 AAAAC3Nz alpha")
    assert shlex.split(line.split('"')[1]) == [
        "/usr/bin/rsync", "--server", "--daemon", "--config=/etc/hapair/rsyncd.conf", "."
    ]  # fmt: skip


def test_peer_target_is_the_roots_module() -> None:
    """The sender addresses a root as user@host::MODULE/ (IPv6 in brackets)."""
    assert Peer("root", "192.0.2.2").target("/srv/a") == f"root@192.0.2.2::{module_name('/srv/a')}/"
    assert Peer("u", "2001:db8::12").login == "u@[2001:db8::12]"


def test_the_tunnels_conf_serves_the_same_modules_on_the_loopback_with_authentication() -> None:
    """The standing daemon's file: the same modules and globals, plus where it listens, Nagle
    off, and rsync's authentication by the secrets file; its globals precede every module."""
    roots = ["/var/mail", "/srv/www"]
    plain = render_conf(roots)
    text = render_conf(roots, Tunnel(873, Path("/etc/hapair/rsyncd-tunnel.secrets")))
    assert conf_roots(text) == conf_roots(plain)
    head = text.split("\n[", 1)[0]
    assert plain.split("\n[", 1)[0].strip() in head
    globals_ = {line.partition("=")[0].strip(): line.partition("=")[2].strip()
                for line in head.splitlines() if "=" in line}  # fmt: skip
    assert (globals_["address"], globals_["port"]) == ("127.0.0.1", "873")
    assert globals_["socket options"] == "TCP_NODELAY"
    assert globals_["auth users"] == TUNNEL_USER
    assert globals_["secrets file"] == "/etc/hapair/rsyncd-tunnel.secrets"
    assert globals_["strict modes"] == "yes"
    assert "auth users" not in plain and "address" not in plain


def test_the_tunnels_secret_follows_the_cluster_key() -> None:
    """Both nodes derive the same password from the key they share; another key, another
    password; the secrets file pairs it with the tunnel's user."""
    a, b = b"k" * 32, b"j" * 32
    assert tunnel_secret(a) == tunnel_secret(a) != tunnel_secret(b)
    assert len(tunnel_secret(a)) == 64 and a.decode() not in tunnel_secret(a)
    assert render_secrets(a) == f"{TUNNEL_USER}:{tunnel_secret(a)}\n"
    assert tunnel_env(tunnel_secret(a)) == {"RSYNC_PASSWORD": tunnel_secret(a)}


def test_a_tunnel_port_lets_the_key_open_that_one_forward() -> None:
    """With a tunnel port the key may forward to the standing daemon's port on the loopback
    and nowhere else; its command stays forced."""
    line = authorized_keys_line("ssh-ed25519 AAAAC3Nz alpha", Path("/etc/hapair/rsyncd.conf"),
                                tunnel_port=873)  # fmt: skip
    options = line.split('command="')[0]
    assert options == (
        'restrict,port-forwarding,permitopen="127.0.0.1:873",permitlisten="127.0.0.1:1",'
    )
    assert "--config=/etc/hapair/rsyncd.conf" in line
    assert "permitopen" not in authorized_keys_line("k", Path("/etc/hapair/rsyncd.conf"))


def test_a_pass_through_the_tunnel_is_the_same_command_to_the_forwards_end() -> None:
    """The tunnel changes only where rsync connects: no ssh, the forward's port (the next one
    on this node, whose own daemon has the tunnel port), the root's module, Nagle off."""
    peer = Peer("root", "192.0.2.2", tunnel_port=873, control_path="/run/hapair/ssh-%C")
    argv = incremental_argv("/srv/a", peer, TransferOptions(), NOW, pin=7)
    out = tunneled(argv, peer, "/srv/a")
    assert out[:-3] == argv[:-4] and "-e" not in out
    url = f"rsync://{TUNNEL_USER}@127.0.0.1:874/{module_name('/srv/a')}/"
    assert out[-3:] == ["--sockopts=TCP_NODELAY", "/proc/self/fd/7/", url]
    assert peer.forward_argv()[-4:] == ["forward", "-L", "127.0.0.1:874:127.0.0.1:873",
                                        "root@192.0.2.2"]  # fmt: skip
    local = incremental_argv("/srv/a", None, TransferOptions(), NOW, dest="/tmp/x")
    with pytest.raises(ValueError, match="ssh session"):
        tunneled(local, peer, "/srv/a")


def pushcheck(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the push check as rsync's daemon would for a push of `args` into `root`."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "RSYNC_MODULE_PATH": str(root),
           "RSYNC_MODULE_NAME": module_name(str(root)), "RSYNC_ARG0": "rsyncd"}  # fmt: skip
    for i, arg in enumerate([*args, ".", "mod/"], start=1):
        env[f"RSYNC_ARG{i}"] = arg
    # As rsync runs it: `sh -c` with the conf's command, which sources the script.
    command = render_conf([str(root)]).split("pre-xfer exec = ", 1)[1].splitlines()[0]
    return subprocess.run(["/bin/sh", "-c", command], env=env, capture_output=True, text=True,
                          check=False)  # fmt: skip


PUSH = ("--server", "-logDtpre.iLsfxCIvu", "--delete-missing-args", "--force")
RESTORE = ("--server", "-logDtpre.iLsfxCIvu", "--ignore-existing")


def test_push_check_lets_pushes_in_until_the_node_is_the_source(tmp_path: Path) -> None:
    """With the source marker only a no-overwrite, no-delete push passes, and the refusal says
    why; without it everything passes."""
    root = tmp_path / "data"
    root.mkdir()
    assert pushcheck(root, *PUSH).returncode == 0
    assert orphans.set_source(str(root), "a", NOW) and orphans.has_source(str(root))
    refused = pushcheck(root, *PUSH)
    assert refused.returncode == 1
    assert refused.stdout.startswith(f"mirrord: {root}: this node is (or was")
    assert pushcheck(root, *RESTORE).returncode == 0
    assert pushcheck(root, "--server", "--delete-after", "--ignore-existing").returncode == 1
    assert pushcheck(root, "--server", "--ignore-existing", "--delete").returncode == 1
    orphans.clear_source(str(root))
    assert pushcheck(root, *PUSH).returncode == 0


def test_push_check_asks_once_for_a_full_pass_after_a_set_aside(tmp_path: Path) -> None:
    """After a set-aside that may have moved a push's files, the next push is refused once,
    saying the node wants a full pass; the one after passes. While the node is the source,
    that refusal comes first and the request waits."""
    root = tmp_path / "data"
    root.mkdir()
    assert pushcheck(root, *PUSH).returncode == 0
    orphans.ask_resend(str(root), NOW)
    assert orphans.set_source(str(root), "b", NOW)
    assert "this node is (or was" in pushcheck(root, *PUSH).stdout
    orphans.clear_source(str(root))
    refused = pushcheck(root, *PUSH)
    assert refused.returncode == 1 and "it wants a full pass" in refused.stdout
    assert classify(5, refused.stdout).reason.startswith(FULL_PASS_WANTED)
    assert pushcheck(root, *PUSH).returncode == 0


def test_push_check_refuses_a_missing_root(tmp_path: Path) -> None:
    """A root that does not exist on the receiver is refused, never created."""
    missing = tmp_path / "not-mounted"
    out = pushcheck(missing, *PUSH)
    assert out.returncode == 1 and "does not exist on this node" in out.stdout
    assert not missing.exists()


# -- a symlink planted as the backup area ---------------------------------------------------------


def plant(root: Path, outside: Path) -> None:
    """Make `root`'s backup area a symlink to `outside`, owned (as an attacker's) by nobody."""
    outside.mkdir(exist_ok=True)
    (root / ".hapair-backup").symlink_to(outside)
    os.lchown(root / ".hapair-backup", 65534, 65534)


def test_push_check_refuses_a_planted_backup_area_and_creates_a_missing_one(tmp_path: Path) -> None:
    """A symlink as the backup area refuses the push, naming it; a missing area is made 0700."""
    root = tmp_path / "data"
    root.mkdir()
    assert pushcheck(root, *PUSH).returncode == 0
    assert oct((root / ".hapair-backup").stat().st_mode & 0o777) == "0o700"
    (root / ".hapair-backup").rmdir()
    plant(root, tmp_path / "outside")
    out = pushcheck(root, *PUSH)
    assert out.returncode == 1
    assert f"mirrord: {root}/.hapair-backup is a symlink" in out.stdout
    assert list((tmp_path / "outside").iterdir()) == []


def daemon_push(tmp: Path, root: Path, conf_text: str) -> subprocess.CompletedProcess[str]:
    """Push src/ (one changed file, with the backup options) into `root` through rsync's real
    daemon over a stand-in remote shell, with `conf_text` as its rsyncd.conf."""
    conf = tmp / "rsyncd.conf"
    conf.write_text(conf_text)
    shell = tmp / "shell"
    shell.write_text(f"#!/bin/sh\nexec rsync --server --daemon --config={conf} .\n")
    shell.chmod(0o755)
    argv = ["rsync", "-a", "-I", *backup_args(NOW), f"--exclude=/{BACKUP_DIR}/", "-e",
            str(shell), f"{tmp / 'src'}/", f"x::{module_name(str(root))}/"]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def test_rsync_daemon_never_writes_backups_through_a_planted_symlink(tmp_path: Path) -> None:
    """Through the real rsync daemon, a planted backup area is refused by the push check; and
    even with no check at all (a swap after it) the chroot keeps backups inside the root."""
    root, outside = tmp_path / "data", tmp_path / "outside"
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f").write_text("new")
    root.mkdir()
    (root / "f").write_text("old")
    plant(root, outside)
    refused = daemon_push(tmp_path, root, render_conf([str(root)]))
    assert refused.returncode != 0 and ".hapair-backup is a symlink" in refused.stderr
    unchecked = "\n".join(line for line in render_conf([str(root)]).splitlines()
                          if not line.startswith("pre-xfer exec"))  # fmt: skip
    daemon_push(tmp_path, root, unchecked)
    assert list(outside.iterdir()) == []
