"""The receiving side: root selection, backup retention, the authorized_keys line, status."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from mirrord.backups import BACKUP_DIR, expired_backups, prune_backups
from mirrord.cli import format_status, read_status
from mirrord.receive import (
    PRUNE_EVERY,
    ReceiveError,
    authorized_keys_line,
    for_rrsync,
    maybe_prune,
    parse_args,
    pick_root,
)
from takeover.exits import StatusExit

ROOTS = ["/var/mail", "/srv/www"]
PUSH = "rsync --server -logDtpre.iLsfxCIvu --delete-missing-args --force . "


@pytest.mark.parametrize(
    ("command", "root"),
    [(PUSH + "/var/mail/", "/var/mail"), (PUSH + "/srv/www", "/srv/www")],
)
def test_pick_root_accepts_a_mirrored_root(command: str, root: str) -> None:
    """A push to exactly one of the roots is confined to that root."""
    assert pick_root(command, ROOTS) == root


@pytest.mark.parametrize(
    ("command", "words"),
    [
        (PUSH + "/etc/", "not a mirrored root"),
        (PUSH + "/var/mail/../../etc", "not a mirrored root"),
        (PUSH + "/var", "not a mirrored root"),
        ("rsync --server --sender -logDtpre.iLsfxCIvu . /var/mail/", "only write"),
        ("sh -c id", "only an rsync server"),
    ],
)
def test_pick_root_refuses(command: str, words: str) -> None:
    """Other paths, reads and other commands are refused with a reason."""
    with pytest.raises(ReceiveError, match=words):
        pick_root(command, ROOTS)


def test_receive_refuses_outside_paths_end_to_end(tmp_path: Path) -> None:
    """The forced command exits 1 with a message for a path outside the roots."""
    env = {**os.environ, "SSH_ORIGINAL_COMMAND": PUSH + "/etc/"}
    proc = subprocess.run(
        [sys.executable, "-m", "mirrord.receive", "--root", str(tmp_path)],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "not a mirrored root" in proc.stderr


def test_rrsync_takes_times_to_the_nanosecond(tmp_path: Path) -> None:
    """A push with --modify-window=-1 passes rrsync's option check through the forced command
    and sets a sub-second time difference right."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    (src / "a").write_text("1")
    os.utime(src / "a", ns=(0, 1_600_000_000_700_000_000))
    (dst / "a").write_text("1")
    os.utime(dst / "a", ns=(0, 1_600_000_000_200_000_000))
    ssh = tmp_path / "ssh"
    receive = shlex.join([sys.executable, "-m", "mirrord.receive", "--root", str(dst)])
    ssh.write_text(f'#!/bin/sh\nshift\nSSH_ORIGINAL_COMMAND="$*" exec {receive}\n')
    ssh.chmod(0o755)
    argv = ["rsync", "-a", "--modify-window=-1", "-e", str(ssh), f"{src}/", f"peer:{dst}/"]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert os.stat(dst / "a").st_mtime_ns == 1_600_000_000_700_000_000


def test_for_rrsync_rewrites_only_the_nanosecond_window() -> None:
    """Only the `-@-1` word becomes its long form; every other word is kept as it was."""
    command = "rsync --server -logDtpre.iLsfxCIvu -@-1 --backup-dir=a\\ b . /srv/www/"
    assert for_rrsync(command) == (
        "rsync --server -logDtpre.iLsfxCIvu --modify-window=-1 --backup-dir=a\\ b . /srv/www/"
    )


def test_expired_backups_by_whole_hour() -> None:
    """An hour directory expires once its whole hour is older than the retention."""
    now = 1_795_000_000.0  # 2026-11-18T11:06:40Z
    names = ["2026-11-18T09Z", "2026-11-18T10Z", "2026-11-18T11Z", "notes", "2026-13-01T00Z"]
    assert expired_backups(names, 3600.0, now) == ["2026-11-18T09Z"]
    assert expired_backups(names, 0.0, now) == ["2026-11-18T09Z", "2026-11-18T10Z"]


def test_prune_backups_removes_only_expired_hours(tmp_path: Path) -> None:
    """Pruning deletes expired hour dirs and leaves recent and foreign ones."""
    area = tmp_path / BACKUP_DIR
    for name in ("2026-11-18T09Z", "2026-11-18T11Z", "keep-me"):
        (area / name / "sub").mkdir(parents=True)
    assert prune_backups(str(tmp_path), 3600.0, 1_795_000_000.0).expired == ["2026-11-18T09Z"]
    assert sorted(p.name for p in area.iterdir()) == ["2026-11-18T11Z", "keep-me"]
    assert prune_backups(str(tmp_path / "none"), 1.0, 0.0).expired == []


def test_authorized_keys_line_forces_the_receive_command() -> None:
    """The line restricts the key and forces receive with every root and the retention."""
    line = authorized_keys_line(
        "ssh-ed25519 AAAAC3Nz alpha", ROOTS, 604800.0, ["/usr/bin/python3", "-m", "mirrord.receive"]
    )
    assert line.startswith('restrict,command="')
    assert line.endswith(" ssh-ed25519 AAAAC3Nz alpha")
    forced = line.split('"')[1]
    assert shlex.split(forced) == [
        "/usr/bin/python3", "-m", "mirrord.receive", "--retention", "604800",
        "--root", "/var/mail", "--root", "/srv/www",
    ]  # fmt: skip


def status_doc(pid: int, updated: float, **extra: object) -> dict[str, object]:
    """Return a minimal status document."""
    return {"pid": pid, "updated": updated, "status_interval": 1.0, "stopped": False,
            "node": "alpha", "peer": "hapair@192.0.2.12", "directories": [], **extra}  # fmt: skip


@pytest.mark.parametrize(
    ("doc", "age", "code"),
    [
        (None, 0.0, StatusExit.NOT_RUNNING),
        (status_doc(os.getpid(), 0.0), 0.5, StatusExit.ACTIVE_OR_STANDBY),
        (status_doc(os.getpid(), 0.0), 10.0, StatusExit.UNKNOWN),
        (status_doc(os.getpid(), 0.0, stopped=True), 0.5, StatusExit.NOT_RUNNING),
        (status_doc(2**22 + 12345, 0.0), 0.5, StatusExit.NOT_RUNNING),
    ],
)
def test_read_status_exit_codes(
    tmp_path: Path, doc: dict[str, object] | None, age: float, code: int
) -> None:
    """Missing, fresh, stale, stopped and dead-pid status files map to LSB status codes."""
    if doc is not None:
        (tmp_path / "mirrord.json").write_text(json.dumps(doc))
    got, _doc, why = read_status(tmp_path, age)
    assert got == code, why


def test_format_status_shows_each_directory() -> None:
    """The table shows class, interval, dirty count, RPO, last result and the alarm."""
    doc = status_doc(1, 0.0, directories=[{
        "directory": "/var/mail", "class": "hot", "interval": 5.0, "dirty": 3, "rpo": 2.5,
        "running": False, "full_needed": None, "last_duration": 0.04, "next_due": 102.0,
        "alarm": "guard: source root /var/mail is missing", "watched": True,
        "last": {"kind": "incremental", "result": "alarm"},
    }])  # fmt: skip
    text = format_status(doc, 100.0)
    row = text.splitlines()[2]
    for part in ("/var/mail", "hot", "5.0s", "3", "2.5s", "alarm/incr", "2.0s", "missing"):
        assert part in row


def test_format_status_names_paths_not_mirrored() -> None:
    """A directory whose passes leave paths out says how many and names the first."""
    doc = status_doc(1, 0.0, directories=[{
        "directory": "/var/mail", "class": "hot", "interval": 5.0, "dirty": 0, "rpo": 0.0,
        "running": False, "full_needed": None, "last_duration": 0.04, "next_due": None,
        "alarm": None, "watched": True, "last": {"kind": "full", "result": "ok"},
        "not_mirrored": ["deep/x", "deep/y"],
    }])  # fmt: skip
    row = format_status(doc, 100.0).splitlines()[2]
    assert "ok/full" in row and "2 not mirrored: deep/x" in row


def test_parse_args() -> None:
    """Roots repeat, retention is seconds; anything else is a usage error."""
    assert parse_args(["--root", "/a/", "--root", "/b", "--retention", "60"]) == (
        ["/a", "/b"],
        60.0,
    )
    for bad in (["--root"], ["--retention", "5"], ["--frob", "x"]):
        with pytest.raises(ReceiveError):
            parse_args(bad)


def test_maybe_prune_runs_at_most_hourly(tmp_path: Path) -> None:
    """Pruning happens on the first pass and then only after PRUNE_EVERY seconds."""
    area = tmp_path / BACKUP_DIR
    (area / "2026-11-18T09Z").mkdir(parents=True)
    now = 1_795_000_000.0
    assert maybe_prune(str(tmp_path), 3600.0, now)
    assert not (area / "2026-11-18T09Z").exists()
    stamp_time = (area / ".pruned").stat().st_mtime
    assert not maybe_prune(str(tmp_path), 3600.0, stamp_time + 10)
    assert maybe_prune(str(tmp_path), 3600.0, stamp_time + PRUNE_EVERY + 1)


@pytest.mark.parametrize(
    ("tunnel", "shown"),
    [
        (None, None),
        ({"port": 873, "up": True, "error": None, "carried": 4, "failed": 0}, "(tunnel 873: up)"),
        ({"port": 873, "up": False, "error": "rsync: failed to connect to 127.0.0.1", "carried": 0,
          "failed": 1}, "(tunnel 873: down, by ssh: rsync: failed to connect to 127.0.0.1)"),
        ({"port": 873, "up": False, "error": None, "carried": 0, "failed": 0},
         "(tunnel 873: down, by ssh: not yet)"),
    ],
)  # fmt: skip
def test_format_status_says_how_the_pushes_go(tunnel: object, shown: str | None) -> None:
    """With a tunnel port the first line says whether pushes go through the tunnel, or by ssh
    and why; without one it says nothing of it."""
    doc = {**status_doc(1, 0.0, directories=[]), "peer": "root@192.0.2.12", "tunnel": tunnel}
    first = format_status(doc, 100.0).splitlines()[0]
    if shown is None:
        assert "tunnel" not in first
    else:
        assert f"root@192.0.2.12 {shown}" in first
