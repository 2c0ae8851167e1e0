"""rsync command lines, exit-code classes, stats parsing, and real local passes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mirrord.backups import BACKUP_DIR, find_unbackable, unbackable
from mirrord.daemon import _keep_carrier
from mirrord.planner import Result
from mirrord.rsyncd import module_name
from mirrord.transfer import (
    RSYNC_OUTCOME,
    SETPRIV,
    Lines,
    Peer,
    Stats,
    TransferOptions,
    TransferResult,
    classify,
    files_from,
    full_argv,
    incremental_argv,
    literal_pattern,
    nul_chunks,
    parse_line,
    run_rsync,
    use_pidfd_watcher,
    with_parent_death,
)
from tests.lab.lab import wait_until

NOW = 1_795_000_000.0  # 2026-11-18T11:06:40Z
PEER = Peer(user="hapair", address="192.0.2.12", key="/etc/hapair/mirror_key",
            control_path="/run/hapair/ssh-%C")  # fmt: skip


def test_incremental_argv_has_the_files_from_set() -> None:
    """An incremental pass reads NUL paths from stdin, relative, deleting missing args."""
    argv = incremental_argv("/srv/mail", PEER, TransferOptions(), NOW)
    for flag in ("-a", "-I", "--files-from=-", "--from0", "--relative",
                 "--delete-missing-args", "--force", "--numeric-ids"):  # fmt: skip
        assert flag in argv
    assert "--delete" not in argv
    assert argv[-2:] == ["/srv/mail/", f"hapair@192.0.2.12::{module_name('/srv/mail')}/"]


def test_incremental_without_delete_ignores_missing() -> None:
    """With delete = false a vanished path is ignored, never deleted."""
    argv = incremental_argv("/srv/mail", PEER, TransferOptions(delete=False), NOW)
    assert "--ignore-missing-args" in argv
    assert "--delete-missing-args" not in argv


def test_full_argv_deletes_and_audits_with_checksum() -> None:
    """A full pass uses --delete; an audit adds --checksum only if the policy asks."""
    opts = TransferOptions(verify_checksum=True)
    plain = full_argv("/srv/www", PEER, opts, NOW)
    audit = full_argv("/srv/www", PEER, opts, NOW, audit=True)
    assert "--delete" in plain and "--checksum" not in plain
    assert "--checksum" in audit
    assert "--files-from=-" not in plain
    assert "--dry-run" in full_argv("/srv/www", PEER, opts, NOW, dry_run=True)


def test_policy_options_map_to_flags() -> None:
    """Hard links, ACLs, xattrs, sparse, excludes, bwlimit and max-delete become flags."""
    opts = TransferOptions(hard_links=True, acls=True, xattrs=True, sparse=True,
                           excludes=("*.tmp", "/cache/"), bwlimit=500, max_delete=100)  # fmt: skip
    argv = full_argv("/srv/www", PEER, opts, NOW)
    for flag in ("-H", "-A", "-X", "-S", "--exclude=*.tmp", "--exclude=/cache/",
                 "--bwlimit=500", "--max-delete=100"):  # fmt: skip
        assert flag in argv
    assert "--bwlimit=0" not in full_argv("/srv/www", PEER, TransferOptions(), NOW)


def test_backup_dir_is_relative_dated_and_excluded() -> None:
    """Backups go to a relative dir per pass below its UTC hour, with no suffix (a name is
    never lengthened), excluded from passes."""
    argv = full_argv("/srv/www", PEER, TransferOptions(), NOW + 0.25)
    assert "--backup" in argv
    assert f"--backup-dir={BACKUP_DIR}/2026-11-18T11Z/0640.250" in argv
    assert "--suffix=" in argv
    assert f"--exclude=/{BACKUP_DIR}" in argv


def test_ssh_uses_one_control_master_per_peer() -> None:
    """The -e command carries the key, batch mode and the ControlMaster settings."""
    argv = incremental_argv("/srv/mail", PEER, TransferOptions(), NOW)
    ssh = shlex.split(argv[argv.index("-e") + 1])
    assert ssh[0] == "ssh"
    assert "ControlMaster=auto" in ssh and "ControlPath=/run/hapair/ssh-%C" in ssh
    assert "BatchMode=yes" in ssh
    assert ssh[ssh.index("-i") + 1] == "/etc/hapair/mirror_key"


def test_a_pinned_pass_reads_its_pin_and_starts_ssh_in_the_root_directory(tmp_path: Path) -> None:
    """rsync reads the pinned root through its inherited descriptor and starts in /: the ssh
    it forks (and a ControlMaster that ssh may fork, which outlives the pass) never holds the
    root's filesystem busy. Here the "ssh" records its directory and fails."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("f")
    seen = tmp_path / "ssh-cwd"
    pin = os.open(src, os.O_RDONLY | os.O_DIRECTORY)
    try:
        argv = incremental_argv(str(src), PEER, TransferOptions(), NOW, pin=pin)
        assert argv[-2] == f"/proc/self/fd/{pin}/"
        argv[argv.index("-e") + 1] = shlex.join(["sh", "-c", f'pwd > "{seen}"; exit 1'])
        res = asyncio.run(run_rsync(argv, ["f"], pin=pin))
    finally:
        os.close(pin)
    assert res.rc != 0
    assert seen.read_text().strip() == "/"


def test_ipv6_peer_is_bracketed() -> None:
    """An IPv6 mirror address is written in brackets in the rsync target."""
    assert Peer("u", "2001:db8::12").target("/srv/a").startswith("u@[2001:db8::12]::srv-a-")


def test_every_outcome_row_has_a_reason() -> None:
    """Each row of the exit-code table explains itself."""
    assert all(len(o.reason.split()) >= 1 and o.reason for o in RSYNC_OUTCOME.values())
    assert {0, 23, 24, 25, 30, 35, 255} <= set(RSYNC_OUTCOME)


@pytest.mark.parametrize(
    ("rc", "result"),
    [(0, Result.OK), (24, Result.OK), (23, Result.RETRY), (25, Result.ALARM),
     (30, Result.RETRY), (35, Result.RETRY), (255, Result.RETRY), (10, Result.RETRY),
     (12, Result.RETRY), (1, Result.ALARM), (2, Result.ALARM), (3, Result.ALARM),
     (4, Result.ALARM), (-9, Result.RETRY), (99, Result.ALARM)],
)  # fmt: skip
def test_classify(rc: int, result: Result) -> None:
    """Exit codes map to OK, RETRY or ALARM as the table says."""
    assert classify(rc).result is result


def test_parse_itemize_and_stats() -> None:
    """Itemized changes, deletions and the --stats totals are counted."""
    s = Stats()
    for line in [
        ">f+++++++++ new.txt",
        ">f.st...... edited.txt",
        "cd+++++++++ dir/",
        "cL+++++++++ link -> target",
        "*deleting   old.txt",
        "*deleting   olddir/",
        "Number of files: 1,234 (reg: 1,000, dir: 234)",
        "Total bytes sent: 5,678",
        "sent 5,678 bytes  received 35 bytes",
    ]:
        parse_line(line, s, keep_deleted=1)
    assert (s.changed, s.deleted, s.files, s.bytes_sent) == (4, 2, 1234, 5678)
    assert s.deleted_paths == ["old.txt"]


# -- real local rsync --------------------------------------------------------------------


def tree(root: Path, files: dict[str, str]) -> None:
    """Create `files` (relative path -> content) under root."""
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def run(argv: list[str], paths: list[str] | None = None) -> TransferResult:
    """Run rsync to completion."""
    return asyncio.run(run_rsync(argv, paths, keep_deleted=10))


def listing(root: Path) -> set[str]:
    """Return every path below root, relative, without the backup area."""
    return {str(p.relative_to(root)) for p in root.rglob("*")
            if not str(p.relative_to(root)).startswith(BACKUP_DIR)}  # fmt: skip


def test_incremental_pass_sends_only_listed_paths(tmp_path: Path) -> None:
    """A files-from pass copies the listed paths and leaves unlisted changes alone."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    tree(src, {"a": "1", "d/b": "2", "c": "3"})
    dst.mkdir()
    res = run(incremental_argv(str(src), None, TransferOptions(), NOW, dest=str(dst)), ["d/b"])
    assert res.outcome.result is Result.OK
    assert listing(dst) == {"d", "d/b"}
    assert res.stats.changed >= 1


def test_incremental_pass_deletes_missing_and_backs_up(tmp_path: Path) -> None:
    """A listed path that vanished is deleted on the receiver and kept in the backup area."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    tree(src, {"a": "1", "d/b": "2", "d/e/f": "3"})
    dst.mkdir()
    run(full_argv(str(src), None, TransferOptions(), NOW, dest=str(dst)))
    (src / "a").unlink()
    (src / "d/e/f").unlink()
    (src / "d/e").rmdir()
    (src / "d/b").write_text("22")
    res = run(incremental_argv(str(src), None, TransferOptions(), NOW + 1, dest=str(dst)),
              ["a", "d/e", "d/b"])  # fmt: skip
    assert res.outcome.result is Result.OK, res.stderr
    assert listing(dst) == {"d", "d/b"}
    assert (dst / "d/b").read_text() == "22"
    area = dst / BACKUP_DIR / "2026-11-18T11Z" / "0641.000"
    backups = {str(p.relative_to(area)) for p in area.rglob("*") if p.is_file()}
    assert backups == {"a", "d/b", "d/e/f"}
    # a, d/e/f and d/e: the --force deletion of a directory lists its contents too.
    assert res.stats.deleted == 3


def test_same_size_rewrite_in_the_same_second_is_sent(tmp_path: Path) -> None:
    """An incremental pass sends a listed file even when size and mtime look unchanged."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    tree(src, {"a": "one"})
    dst.mkdir()
    run(full_argv(str(src), None, TransferOptions(), NOW, dest=str(dst)))
    st = os.stat(src / "a")
    (src / "a").write_text("two")
    os.utime(src / "a", ns=(st.st_atime_ns, st.st_mtime_ns))
    run(incremental_argv(str(src), None, TransferOptions(), NOW, dest=str(dst)), ["a"])
    assert (dst / "a").read_text() == "two"


def differences(src: Path, dst: Path) -> list[str]:
    """Return what `rsync -anci` still lists between the trees, times to the nanosecond."""
    out = subprocess.run(
        ["rsync", "-anci", "--modify-window=-1", f"--exclude=/{BACKUP_DIR}", f"{src}/", f"{dst}/"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return out.splitlines()


def start_of_a_second() -> None:
    """Sleep until just after a whole second: what follows shares that second."""
    time.sleep(1.0 - time.time() % 1.0 + 0.01)


def test_paths_are_fed_in_chunks_of_whole_paths() -> None:
    """The path list goes to rsync a chunk at a time; a chunk ends after a whole path, and
    the chunks together are every path NUL-terminated, in order."""
    paths = [f"dir/{'n' * (i % 200)}-{i}" for i in range(3000)]
    chunks = list(nul_chunks(paths, size=4096))
    assert len(chunks) > 10
    assert all(c.endswith(b"\0") for c in chunks)
    assert b"".join(chunks) == b"".join(p.encode() + b"\0" for p in paths)
    assert list(nul_chunks(["\udcff-undecodable"])) == [b"\xff-undecodable\0"]
    assert list(nul_chunks([])) == []


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        ([b"a\nb\n"], ["a", "b"]),
        ([b"a", b"b\nc", b"\n"], ["ab", "c"]),
        ([b"a\n", b"last"], ["a", "last"]),
        ([b"\n\n"], ["", ""]),
        ([b"caf\xc3", b"\xa9\n"], ["caf\u00e9"]),  # a character split between reads
        ([b"\xff\n"], ["\ufffd"]),
        ([], []),
    ],
)
def test_rsyncs_output_read_in_chunks_is_the_same_lines(
    chunks: list[bytes], expected: list[str]
) -> None:
    """Lines split across reads come out whole, as a line-by-line read gave them."""
    lines = Lines()
    out = [line for c in chunks for line in lines.feed(c)]
    assert out + lines.end() == expected


def test_a_pass_of_thousands_of_paths_sends_and_counts_them_all(tmp_path: Path) -> None:
    """A path list far longer than a pipe's buffer reaches rsync whole, and every itemized
    line of its output is counted (the list and the output both span many reads)."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    names = [f"{'x' * 120}-{i:05d}" for i in range(3000)]
    tree(src, dict.fromkeys(names, "1"))
    dst.mkdir()
    res = run(incremental_argv(str(src), None, TransferOptions(), NOW, dest=str(dst)), names)
    assert res.outcome.result is Result.OK, res.stderr
    assert (res.stats.changed, res.stats.created) == (3000, 3000)
    assert sorted(os.listdir(dst)) == sorted(names)


def test_an_incremental_pass_leaves_every_time_as_the_sources(tmp_path: Path) -> None:
    """After deletions, creations and renames in and below the root, an incremental pass over
    the paths the watcher lists leaves no difference, directory and root times included."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    tree(src, {"top": "1", "gone": "2", "d/x": "3", "d/y": "4", "d/e/z": "5"})
    (src / BACKUP_DIR).mkdir(mode=0o700)  # a pushing node keeps its source marker there
    dst.mkdir()
    run(full_argv(str(src), None, TransferOptions(), NOW, dest=str(dst)))
    assert differences(src, dst) == []
    # The peer's deletions land in the same second as the source's: a whole-second
    # comparison takes the directories' times for equal.
    start_of_a_second()
    (src / "gone").unlink()
    (src / "d/x").unlink()
    (src / "d/y").rename(src / "d/e/y")
    (src / "new").write_text("6")
    listed = files_from({"gone", "d/x", "d/y", "d/e/y", "new"}, _keep_carrier(str(src)))
    res = run(incremental_argv(str(src), None, TransferOptions(), NOW + 1, dest=str(dst)),
              listed)  # fmt: skip
    assert res.outcome.result is Result.OK, res.stderr
    assert differences(src, dst) == []
    for rel in (".", "d", "d/e"):
        assert os.stat(dst / rel).st_mtime_ns == os.stat(src / rel).st_mtime_ns, rel


def test_only_the_roots_own_times_change_send_it_alone(tmp_path: Path) -> None:
    """A root whose own mode and times changed is sent as one entry: its files stay as they
    are (listing `.` would resend the whole first level)."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    tree(src, {"a": "1", "b": "2"})
    dst.mkdir()
    run(full_argv(str(src), None, TransferOptions(), NOW, dest=str(dst)))
    for side in (src, dst):
        (side / BACKUP_DIR).mkdir(mode=0o700)
        os.utime(side / BACKUP_DIR, ns=(0, 1_500_000_000_000_000_000))
    os.chmod(src, 0o750)
    os.utime(src, ns=(0, 1_600_000_000_123_456_789))
    res = run(incremental_argv(str(src), None, TransferOptions(), NOW + 1, dest=str(dst)),
              files_from({"."}, _keep_carrier(str(src))))  # fmt: skip
    assert res.outcome.result is Result.OK, res.stderr
    assert res.stats.changed == 1
    assert os.stat(dst).st_mtime_ns == 1_600_000_000_123_456_789
    assert os.stat(dst).st_mode & 0o777 == 0o750
    assert list((dst / BACKUP_DIR).iterdir()) == []


def test_a_full_pass_fixes_sub_second_drift(tmp_path: Path) -> None:
    """A full pass sets file, directory and root times that differ by less than a second."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    tree(src, {"a": "1", "d/b": "2"})
    dst.mkdir()
    run(full_argv(str(src), None, TransferOptions(), NOW, dest=str(dst)))
    second = 1_700_000_000_000_000_000
    for rel in ("d/b", "a", "d", "."):
        os.utime(src / rel, ns=(second, second + 100_000_000))
        os.utime(dst / rel, ns=(second, second + 700_000_000))
    res = run(full_argv(str(src), None, TransferOptions(), NOW + 1, dest=str(dst)))
    assert res.outcome.result is Result.OK, res.stderr
    assert differences(src, dst) == []
    for rel in ("d/b", "a", "d", "."):
        assert os.stat(dst / rel).st_mtime_ns == second + 100_000_000, rel


def test_the_carrier_of_the_roots_times_is_never_sent_nor_deleted(tmp_path: Path) -> None:
    """The backup area stays out of an incremental pass on both sides, whether it is a
    directory, a symlink or missing on the source."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    tree(dst, {f"{BACKUP_DIR}/2026-11-18T11Z/kept~": "old"})
    src.mkdir()
    os.symlink("/", src / BACKUP_DIR)
    assert not _keep_carrier(str(src)) and (src / BACKUP_DIR).is_symlink()
    res = run(incremental_argv(str(src), None, TransferOptions(), NOW, dest=str(dst)),
              files_from({"."}, False))  # fmt: skip
    assert res.outcome.result is Result.OK, res.stderr
    assert (dst / BACKUP_DIR).is_dir() and not (dst / BACKUP_DIR).is_symlink()
    assert (dst / f"{BACKUP_DIR}/2026-11-18T11Z/kept~").read_text() == "old"
    (src / BACKUP_DIR).unlink()
    assert files_from({"."}, False) == []
    res = run(incremental_argv(str(src), None, TransferOptions(), NOW, dest=str(dst)),
              files_from({"."}, False))  # fmt: skip
    assert res.outcome.result is Result.OK, res.stderr
    assert (dst / f"{BACKUP_DIR}/2026-11-18T11Z/kept~").read_text() == "old"
    (src / BACKUP_DIR).mkdir(mode=0o700)
    res = run(incremental_argv(str(src), None, TransferOptions(), NOW, dest=str(dst)),
              files_from({"."}, _keep_carrier(str(src))))  # fmt: skip
    assert res.outcome.result is Result.OK, res.stderr
    assert (dst / f"{BACKUP_DIR}/2026-11-18T11Z/kept~").read_text() == "old"


def through_an_rsync_daemon(argv: list[str], tmp_path: Path, dst: Path) -> list[str]:
    """Return `argv` pushing into `dst` as a module of rsync's daemon over a remote shell (the
    real peers' receiver: it is not sent the sender's excludes), not as a local copy."""
    conf = tmp_path / "rsyncd.conf"
    conf.write_text(f"use chroot = no\nuid = {os.getuid()}\ngid = {os.getgid()}\n"
                    f"read only = no\nlog file = /dev/null\n[m]\npath = {dst}\n")  # fmt: skip
    rsh = tmp_path / "rsh"
    rsh.write_text(f"#!/bin/sh\nexec rsync --server --daemon --config={conf} .\n")
    rsh.chmod(0o755)
    return [*argv[:-1], "-e", str(rsh), "x::m/"]


def test_incremental_passes_leave_the_peers_backup_area_alone(tmp_path: Path) -> None:
    """Through rsync's daemon, an incremental pass deletes nothing and leaves what earlier
    passes kept where it is (the old carrier, the backup area, was deleted at every pass)."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    tree(src, {"a": "1", f"{BACKUP_DIR}/source": "a pushing node's marker"})
    tree(dst, {"a": "1", f"{BACKUP_DIR}/2026-11-18T11Z/0640.000/old": "kept"})
    for when in (NOW, NOW + 1):
        (src / "a").write_text(f"edited at {when}")
        argv = incremental_argv(str(src), None, TransferOptions(), when, dest=str(dst))
        listed = files_from({"a"}, _keep_carrier(str(src)))
        res = run(through_an_rsync_daemon(argv, tmp_path, dst), listed)
        assert res.outcome.result is Result.OK, res.stderr
        assert res.stats.deleted == 0
        assert (dst / "a").read_text() == f"edited at {when}"
    assert (dst / f"{BACKUP_DIR}/2026-11-18T11Z/0640.000/old").read_text() == "kept"
    assert not list((dst / BACKUP_DIR).rglob(f"*/{BACKUP_DIR}"))
    assert os.stat(dst).st_mtime_ns == os.stat(src).st_mtime_ns


def test_full_pass_keeps_the_backup_area(tmp_path: Path) -> None:
    """A later --delete pass never deletes what earlier passes backed up."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    tree(src, {"a": "1", "b": "2"})
    dst.mkdir()
    run(full_argv(str(src), None, TransferOptions(), NOW, dest=str(dst)))
    (src / "a").unlink()
    run(full_argv(str(src), None, TransferOptions(), NOW + 1, dest=str(dst)))
    run(full_argv(str(src), None, TransferOptions(), NOW + 2, dest=str(dst)))
    assert listing(dst) == {"b"}
    assert [str(p.relative_to(dst / BACKUP_DIR)) for p in (dst / BACKUP_DIR).rglob("a")] == [
        "2026-11-18T11Z/0641.000/a"
    ]


def test_dry_run_counts_deletions_without_deleting(tmp_path: Path) -> None:
    """A dry-run full pass reports the deletions it would make and changes nothing."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    tree(dst, {f"f{i}": "x" for i in range(7)})
    src.mkdir()
    res = run(full_argv(str(src), None, TransferOptions(), NOW, dry_run=True, dest=str(dst)))
    assert res.outcome.result is Result.OK
    assert res.stats.deleted == 7
    assert len(listing(dst)) == 7


def test_max_delete_backstop_is_an_alarm(tmp_path: Path) -> None:
    """rsync's --max-delete stops a mass deletion with exit 25, classed ALARM."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    tree(dst, {f"f{i}": "x" for i in range(7)})
    tree(src, {"keep": "y"})
    res = run(full_argv(str(src), None, TransferOptions(max_delete=2), NOW, dest=str(dst)))
    assert res.rc == 25
    assert res.outcome.result is Result.ALARM
    assert len(listing(dst)) >= 5


def test_a_refusal_by_the_peers_push_check_is_retried_not_alarmed() -> None:
    """Exit 4 from the peer's push check is a refusal to retry; any other exit 4 an alarm."""
    refused = "pre-xfer exec returned failure (256):\nmirrord: /srv/a: this node is ...\n"
    assert classify(4, refused).result is Result.RETRY
    assert classify(4, "rsync: [receiver] ACLs are not supported").result is Result.ALARM


def test_rsync_dies_with_a_killed_daemon(tmp_path: Path) -> None:
    """A process run_rsync started gets SIGTERM when mirrord is SIGKILLed (no orphan keeps
    writing to the peer beside the restarted daemon's pass)."""
    pidfile = tmp_path / "child.pid"
    script = (
        "import asyncio, sys\n"
        "from mirrord.transfer import run_rsync\n"
        f"argv = ['sh', '-c', 'echo $$ > {pidfile}; exec sleep 60']\n"
        "asyncio.run(run_rsync(argv))\n"
    )
    daemon = subprocess.Popen([sys.executable, "-c", script])
    try:
        assert wait_until(lambda: pidfile.exists() and bool(pidfile.read_text().strip()), 10)
        child = int(pidfile.read_text())
        os.kill(daemon.pid, signal.SIGKILL)
        daemon.wait(10)
        assert wait_until(lambda: not alive(child), 10), "the transfer outlived mirrord"
    finally:
        daemon.kill()
        daemon.wait(10)


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie reaped by init counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_the_parent_death_signal_needs_no_fork_of_the_daemon() -> None:
    """With setpriv the spawn uses no preexec_fn (Python can vfork); without, the fallback."""
    argv, preexec = with_parent_death(["rsync", "-a"])
    if SETPRIV:
        assert argv == [SETPRIV, "--pdeathsig", "TERM", "--", "rsync", "-a"] and preexec is None
    else:
        assert argv == ["rsync", "-a"] and preexec is not None


# -- names and depths the file system accepts ------------------------------------------------


def make_at(base: Path, rel: str, content: bytes, mtime: float | None = None) -> None:
    """Create file `rel` below `base` by descriptors (its absolute path may pass PATH_MAX)."""
    *dirs, leaf = rel.split("/")
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    for part in dirs:
        with contextlib.suppress(FileExistsError):
            os.mkdir(part, dir_fd=fd)
        nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nxt
    out = os.open(leaf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644, dir_fd=fd)
    os.write(out, content)
    os.close(out)
    if mtime is not None:
        os.utime(leaf, (mtime, mtime), dir_fd=fd)
    os.close(fd)


def read_at(base: Path, rel: str) -> bytes:
    """Return the content of `rel` below `base`, opened by descriptors."""
    *dirs, leaf = rel.split("/")
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    for part in dirs:
        nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nxt
    f = os.open(leaf, os.O_RDONLY, dir_fd=fd)
    os.close(fd)
    with open(f, "rb") as fh:
        return fh.read()


def deep(length: int) -> str:
    """Return a relative path of exactly `length` bytes, in 200-byte directories."""
    dirs = "/".join(["d" * 200] * 19)
    return f"{dirs}/{'f' * (length - len(dirs) - 1)}"


@pytest.mark.parametrize(
    ("length", "too_long"), [(255, False), (4055, False), (4056, True), (4094, True)]
)
def test_unbackable_paths_are_those_rsync_cannot_name_in_the_backup_dir(
    length: int, too_long: bool
) -> None:
    """A path whose backup path would pass 4094 bytes is named; a 255-byte name is not."""
    rel = "n" * length if length <= 255 else deep(length)
    assert unbackable(["short", rel], NOW) == ([rel] if too_long else [])


def test_literal_pattern_escapes_wildcards_only_when_there_are_some() -> None:
    """rsync reads backslashes as escapes only in a pattern with a wildcard."""
    assert literal_pattern("a/b c\\d") == "/a/b c\\d"
    assert literal_pattern("x*y[1]\\z") == "/x\\*y\\[1]\\\\z"


def test_long_names_mirror_with_their_backups_and_too_deep_ones_are_found(tmp_path: Path) -> None:
    """A 255-byte name and a path 39 bytes below PATH_MAX are updated, backed up under their
    own names; one byte deeper is what find_unbackable names (rsync would abort on it)."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    long_name, ok_deep, too_deep = "n" * 255, deep(4055), deep(4056).replace("d" * 200, "e" * 200)
    for rel in (long_name, ok_deep, too_deep):
        make_at_parents(src, dst, rel)
    opts = TransferOptions()
    res = run(incremental_argv(str(src), None, opts, NOW, dest=str(dst)),
              [long_name, ok_deep])  # fmt: skip
    assert res.outcome.result is Result.OK, res.stderr
    assert read_at(dst, long_name) == read_at(dst, ok_deep) == b"new"
    area = f"{BACKUP_DIR}/2026-11-18T11Z/0640.000"
    assert read_at(dst, f"{area}/{long_name}") == read_at(dst, f"{area}/{ok_deep}") == b"old"
    assert find_unbackable(str(src), NOW) == [too_deep]
    failed = run(incremental_argv(str(src), None, opts, NOW, dest=str(dst)), [too_deep])
    assert failed.rc != 0 and "too long" in failed.stderr


def make_at_parents(src: Path, dst: Path, rel: str) -> None:
    """Create `rel` as new content in src and old content (older mtime) in dst."""
    src.mkdir(exist_ok=True)
    dst.mkdir(exist_ok=True)
    make_at(src, rel, b"new")
    make_at(dst, rel, b"old", mtime=NOW - 3600)


def test_a_pass_killed_mid_file_leaves_the_old_or_the_new_file_never_a_torn_one(
    tmp_path: Path,
) -> None:
    """SIGKILL of every rsync of an incremental pass halfway through a large file (the active
    crashing mid-pass) leaves the peer's copy whole: the old content, or the new."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    old, new = b"o" * (4 << 20), os.urandom(4 << 20)
    src.mkdir()
    dst.mkdir()
    (src / "big").write_bytes(new)
    (dst / "big").write_bytes(old)
    os.utime(dst / "big", (NOW, NOW))
    argv = incremental_argv(str(src), None, TransferOptions(bwlimit=512), NOW, dest=str(dst))
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    assert proc.stdin is not None
    proc.stdin.write(b"big\0")
    proc.stdin.close()

    def started() -> bool:
        """Whether new content reached the receiver (in a temp file, or in place)."""
        if any(p.stat().st_size for p in dst.glob(".big.*")):
            return True
        with open(dst / "big", "rb") as f:
            return f.read(4096) != old[:4096]

    assert wait_until(started, timeout=30)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (dst / "big").read_bytes() in (old, new)


def test_a_carrier_missing_on_the_source_is_never_listed(tmp_path: Path) -> None:
    """An incremental pass lists no path the source lacks for the root's times: Debian 12's
    rsync 3.2.7 refuses any missing argument ("invalid file mode 00", protocol
    incompatibility), which failed every pass while the carrier was a name missing here."""
    root = tmp_path / "src"
    root.mkdir()
    assert files_from({"b", "a", "."}, False) == ["a", "b"]
    assert files_from({"b", "a", "."}, True) == [f"./{BACKUP_DIR}", "a", "b"]
    assert files_from({"a"}) == ["a"]
    # The daemon lists it only once the source has it: made here (0700) if missing.
    assert _keep_carrier(str(root)) and (root / BACKUP_DIR).is_dir()
    assert stat.S_IMODE(os.lstat(root / BACKUP_DIR).st_mode) == 0o700


def test_a_childs_exit_is_learned_without_a_thread_per_child() -> None:
    """With the pidfd watcher asyncio reaps rsync through the loop: no waitpid thread per
    child (the default watcher of Python 3.11 started one per spawn, 1-1.5 ms each; 3.12+
    reaps through pidfds by itself)."""
    use_pidfd_watcher()

    async def spawn() -> tuple[int | None, list[str]]:
        proc = await asyncio.create_subprocess_exec("sleep", "0.2")
        names = [t.name for t in threading.enumerate()]
        return await proc.wait(), names

    rc, names = asyncio.run(spawn())
    assert rc == 0
    assert not [n for n in names if "waitpid" in n]
