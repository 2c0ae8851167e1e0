"""`mirrord` subcommands that need no running daemon: authorize, sync/status without one."""

from __future__ import annotations

import shlex
import stat
from pathlib import Path

import pytest

from mirrord.cli import main
from mirrord.rsyncd import conf_roots, render_secrets
from takeover.exits import Exit, StatusExit


@pytest.fixture
def cluster(tmp_path: Path) -> Path:
    """A two-node cluster file with one mirror policy (directories need not exist)."""
    (tmp_path / "mirror.d").mkdir()
    (tmp_path / "mirror.d" / "mail.toml").write_text(
        '[[directory]]\npath = "/var/mail"\nclass = "hot"\n\n'
        '[[directory]]\npath = "/srv/www"\nclass = "static"\n'
    )
    nodes = ""
    for name, hb, lan in (("a", "198.51.100.1", "192.0.2.11"), ("b", "198.51.100.2", "192.0.2.12")):
        nodes += (
            f'[[node]]\nname = "{name}"\ninterface = "lan0"\nmirror_address = "{lan}"\n'
            f'run_dir = "{tmp_path / name / "run"}"\n'
            f'[node.heartbeat]\nhb = "{hb}"\nlan = "{lan}"\n\n'
        )
    path = tmp_path / "cluster.toml"
    path.write_text(
        f'[cluster]\nname = "t"\n\n{nodes}'
        f'[heartbeat]\nlinks = ["hb", "lan"]\nkey_file = "/etc/hapair/authkey"\n\n'
        f'[mirror]\nbackup_retention = "2d"\n'
    )
    return path


def test_authorize_writes_the_modules_and_prints_a_restricted_line(
    cluster: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """authorize writes rsyncd.conf (one module per root) and prints the forced-daemon line."""
    pub = tmp_path / "k.pub"
    pub.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA mirrord@a\n")
    conf = tmp_path / "out" / "rsyncd.conf"
    conf.parent.mkdir()
    code = main(["-c", str(cluster), "--node", "b", "authorize", str(pub),
                 "--rsyncd-conf", str(conf), "--rsync", "/usr/bin/rsync"])  # fmt: skip
    assert code == Exit.OK
    line = capsys.readouterr().out.strip()
    assert line.startswith('restrict,command="') and line.endswith("mirrord@a")
    argv = shlex.split(line.split('"')[1])
    assert argv == ["/usr/bin/rsync", "--server", "--daemon", f"--config={conf}", "."]
    assert sorted(conf_roots(conf.read_text()).values()) == ["/srv/www", "/var/mail"]


def test_authorize_refuses_a_non_key(
    cluster: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file that is not an ssh public key is refused with its name in the error."""
    pub = tmp_path / "empty.pub"
    pub.write_text("\n")
    assert main(["-c", str(cluster), "--node", "b", "authorize", str(pub)]) == Exit.FAILURE
    assert "empty.pub: not an ssh public key" in capsys.readouterr().err


def test_sync_without_daemon_fails_clearly(
    cluster: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """sync with no daemon running exits FAILURE naming the control socket."""
    assert main(["-c", str(cluster), "--node", "a", "sync"]) == Exit.FAILURE
    assert "mirrord.sock" in capsys.readouterr().err


def test_status_without_daemon_is_not_running(
    cluster: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """status with no status file exits NOT_RUNNING (3) and says so."""
    assert main(["-c", str(cluster), "--node", "a", "status"]) == StatusExit.NOT_RUNNING
    assert "not running" in capsys.readouterr().err


def test_run_with_missing_cluster_file_is_not_configured(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """run with no cluster file exits NOT_CONFIGURED (6) naming the file."""
    code = main(["-c", str(tmp_path / "nope.toml"), "--node", "a", "run"])
    assert code == Exit.NOT_CONFIGURED
    assert "nope.toml" in capsys.readouterr().err


def test_check_reports_an_rsyncd_conf_older_than_the_policies(
    cluster: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A root added after `authorize` is named by `check` (exit 2) until authorize runs again."""
    for d in ("/var/mail", "/srv/www"):
        (tmp_path / "fs" / d.strip("/")).mkdir(parents=True)
    text = (cluster.parent / "mirror.d" / "mail.toml").read_text()
    text = text.replace('"/var/mail"', f'"{tmp_path}/fs/var/mail"')
    (cluster.parent / "mirror.d" / "mail.toml").write_text(
        text.replace('"/srv/www"', f'"{tmp_path}/fs/srv/www"'))  # fmt: skip
    key = tmp_path / "mirror_key"
    key.write_text("k")
    cluster.write_text(cluster.read_text() + f'ssh_key = "{key}"\n')
    pub = tmp_path / "k.pub"
    pub.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA mirrord@a\n")
    argv = ["-c", str(cluster), "--node", "b"]
    assert main([*argv, "authorize", str(pub)]) == Exit.OK
    assert main([*argv, "check"]) == Exit.OK
    (tmp_path / "fs" / "srv" / "new").mkdir()
    with (cluster.parent / "mirror.d" / "mail.toml").open("a") as f:
        f.write(f'\n[[directory]]\npath = "{tmp_path}/fs/srv/new"\n')
    capsys.readouterr()
    assert main([*argv, "check"]) == Exit.CONFIG
    err = capsys.readouterr().err
    assert (
        f"rsyncd.conf: out of date with the mirror policies (not served: {tmp_path}/fs/srv/new)"
        in err
    )
    assert main([*argv, "authorize", str(pub)]) == Exit.OK
    assert main([*argv, "check"]) == Exit.OK


def test_authorize_with_a_tunnel_port_writes_the_standing_daemons_files(
    cluster: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With tunnel_port, authorize also writes rsyncd-tunnel.conf and its secrets (0600, the
    password derived from the cluster key) and lets the key open that one forward; check names
    a tunnel file that no longer matches; a bad cluster key is named, and nothing is written."""
    for d in ("var/mail", "srv/www"):
        (tmp_path / "fs" / d).mkdir(parents=True)
    text = (cluster.parent / "mirror.d" / "mail.toml").read_text()
    (cluster.parent / "mirror.d" / "mail.toml").write_text(
        text.replace('"/var/mail"', f'"{tmp_path}/fs/var/mail"')
        .replace('"/srv/www"', f'"{tmp_path}/fs/srv/www"'))  # fmt: skip
    authkey = tmp_path / "authkey"
    authkey.write_bytes(b"x" * 48)
    authkey.chmod(0o600)
    key = tmp_path / "mirror_key"
    key.write_text("k")
    body = cluster.read_text().replace('"/etc/hapair/authkey"', f'"{authkey}"')
    cluster.write_text(body + f'ssh_key = "{key}"\ntunnel_port = 873\n')
    pub = tmp_path / "k.pub"
    pub.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA mirrord@a\n")
    argv = ["-c", str(cluster), "--node", "b"]
    assert main([*argv, "authorize", str(pub)]) == Exit.OK
    line = capsys.readouterr().out
    assert line.startswith('restrict,port-forwarding,permitopen="127.0.0.1:873",')
    secrets = tmp_path / "rsyncd-tunnel.secrets"
    assert secrets.read_text() == render_secrets(b"x" * 48)
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600
    tunnel_conf = (tmp_path / "rsyncd-tunnel.conf").read_text()
    assert "port = 873" in tunnel_conf and f"secrets file = {secrets}" in tunnel_conf
    assert conf_roots(tunnel_conf) == conf_roots((tmp_path / "rsyncd.conf").read_text())
    assert main([*argv, "check"]) == Exit.OK
    cluster.write_text(cluster.read_text().replace("tunnel_port = 873", "tunnel_port = 700"))
    capsys.readouterr()
    assert main([*argv, "check"]) == Exit.CONFIG
    assert "rsyncd-tunnel.conf: out of date with the mirror policies" in capsys.readouterr().err
    authkey.chmod(0o644)
    (tmp_path / "rsyncd-tunnel.conf").unlink()
    assert main([*argv, "authorize", str(pub)]) == Exit.FAILURE
    assert f"heartbeat.key_file: {authkey}" in capsys.readouterr().err
    assert not (tmp_path / "rsyncd-tunnel.conf").exists()


def test_run_refuses_what_check_refuses_before_starting(
    cluster: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """run with the mirror key missing exits CONFIG (2) naming mirror.ssh_key, as check does:
    under systemd that is the main process's exit, which RestartPreventExitStatus covers."""
    text = (cluster.parent / "mirror.d" / "mail.toml").read_text()
    for d in ("var/mail", "srv/www"):
        (tmp_path / "fs" / d).mkdir(parents=True)
        text = text.replace(f'"/{d}"', f'"{tmp_path}/fs/{d}"')
    (cluster.parent / "mirror.d" / "mail.toml").write_text(text)
    cluster.write_text(cluster.read_text() + f'ssh_key = "{tmp_path}/no_key"\n')
    code = main(["-c", str(cluster), "--node", "a", "run", "--standalone"])
    assert code == Exit.CONFIG
    assert f"mirror.ssh_key: {tmp_path}/no_key: no such file" in capsys.readouterr().err
