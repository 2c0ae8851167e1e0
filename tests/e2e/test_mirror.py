"""mirrord between the lab's two nodes: real inotify, rsync over ssh into node b, whose key
only starts rsync's daemon on the mirror modules; faults injected. Trees are compared
independently (diff -r + lstat)."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import time
from pathlib import Path

import pytest

from mirrord import orphans
from mirrord.daemon import CATCH_UP_MARGIN
from mirrord.journal import Journal
from mirrord.rsyncd import module_name
from tests.e2e.mirrorlab import MirrorPair, diff_r, lab_ssh, nsenter_mount, snapshot
from tests.lab.lab import IPV4, Lab, wait_until

pytestmark = [pytest.mark.netns, pytest.mark.e2e]

FAST = {"interval": "500ms", "min_interval": "200ms", "max_interval": "3s"}


def write(root: Path, rel: str, data: bytes | str = "x") -> Path:
    """Create root/rel (parents too) with data."""
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    p.write_bytes(data)
    return p


def assert_identical(a: Path, b: Path) -> None:
    """Both trees hold the same entries, content and metadata."""
    d = diff_r(a, b)
    assert d.returncode == 0, d.stdout + d.stderr
    sa, sb = snapshot(a), snapshot(b)
    assert sa.keys() == sb.keys()
    different = {k: (sa[k], sb[k]) for k in sa if sa[k] != sb[k]}
    assert not different


def test_churn_leaves_identical_trees(lab: Lab) -> None:
    """Creates, edits, renames, deletes, chmod, symlinks, hard links and a large file's small
    change all reach the peer, and the trees end identical."""
    pair = MirrorPair(lab, [{"path": "/srv/mail", "hard_links": True, **FAST}])
    src = pair.src("mail")
    for i in range(40):
        write(src, f"cur/{i:03d}", f"message {i}\n" * (i + 1))
    write(src, "big.img", os.urandom(16 << 20))
    os.symlink("cur/001", src / "latest")
    os.link(src / "cur/002", src / "cur/002.hard")
    pair.start()
    assert pair.converge("mail")

    # Churn.
    for i in range(40, 70):
        write(src, f"new/{i:03d}", f"new {i}\n")
    for i in range(0, 10):
        write(src, f"cur/{i:03d}", f"edited {i}\n")
    for i in range(10, 15):
        (src / f"cur/{i:03d}").rename(src / f"cur/{i:03d}.renamed")
    (src / "new").rename(src / "moved")
    for i in range(15, 20):
        (src / f"cur/{i:03d}").unlink()
    write(src, "trash/a/b/c", "deep")
    subprocess.run(["rm", "-rf", str(src / "trash")], check=True)
    for i in range(20, 25):
        os.chmod(src / f"cur/{i:03d}", 0o600)
    os.symlink("nowhere", src / "dangling")
    os.symlink("../moved", src / "cur/link-to-moved")
    os.link(src / "cur/030", src / "moved/030.hard")
    with open(src / "big.img", "r+b") as f:
        f.seek(8 << 20)
        f.write(os.urandom(4096))
    write(src, "deep/x/y/z/file", "deep file")
    (src / "cur/031").write_text("")
    os.utime(src / "cur/032", (1_600_000_000, 1_600_000_000))

    assert pair.converge("mail")
    assert_identical(src, pair.dst("mail"))
    # What the passes overwrote or deleted is kept on the receiver.
    kept = [p for p in (pair.dst("mail") / ".hapair-backup").rglob("015") if p.parent.name == "cur"]
    assert kept, "deleted file cur/015 was not kept in the backup area"
    code = pair.cli("status").returncode
    assert code == 0


def test_sigkill_mid_pass_then_restart_loses_nothing(lab: Lab) -> None:
    """mirrord killed with SIGKILL while a pass runs: restarted, it owes the tree a full pass
    (its last changes may not be in the journal: mirrord.journal) and delivers every change."""
    pair = MirrorPair(lab, [{"path": "/srv/big", "bwlimit": 2000, **FAST}])
    src = pair.src("big")
    write(src, "seed", "s")
    pair.start()
    assert pair.converge("big")
    write(src, "blob", os.urandom(12 << 20))  # 12 MiB at 2000 KiB/s: a 6 s pass
    for i in range(10):
        write(src, f"small/{i}", f"{i}")

    # Killed once the pass runs and the daemon has seen every change (the files of the new
    # directory come from its walk, which may end after the pass began: the pass is no longer
    # held back by the start-up full pass's cost).
    def mid_pass() -> bool:
        st = pair.dir_status("big")
        return bool(st["running"]) and st["dirty"] >= 12

    assert wait_until(mid_pass, timeout=20)
    proc = pair.mirrord
    assert proc is not None
    proc.signal(signal.SIGKILL)
    proc.wait(10)
    # rsync died with mirrord (no orphan keeps writing to the peer).
    assert wait_until(lambda: not any(comm(p) == "rsync" for p in lab.pids("a")), timeout=10)
    write(src, "after-kill", "written while mirrord was down")
    pair.start()
    assert pair.converge("big")
    assert_identical(src, pair.dst("big"))
    history = Journal(pair.a_state).history("/srv/big")
    assert "interrupted" in [r.result for r in history]
    assert any(r.kind == "full" and r.result == "ok" and "did not shut down cleanly" in r.reason
               for r in history)  # fmt: skip


def comm(pid: int) -> str:
    """The command name of pid ('' if gone)."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


QUEUE = Path("/proc/sys/fs/inotify/max_queued_events")


def test_inotify_overflow_still_converges(lab: Lab) -> None:
    """A burst that overflows the inotify queue triggers a full pass, and the mirror converges."""
    pair = MirrorPair(lab, [{"path": "/srv/mail", **FAST}])
    src = pair.src("mail")
    write(src, "seed", "s")
    for d in range(30):
        (src / "burst" / str(d)).mkdir(parents=True)
    old = QUEUE.read_text()
    try:
        # The limit is global but read when an inotify instance is created: only mirrord's
        # instance, created in this window, gets the tiny queue.
        QUEUE.write_text("32\n")
        pair.start()
    finally:
        QUEUE.write_text(old)
    assert pair.converge("mail")
    # Into directories already watched, with mirrord frozen so that nothing drains the queue:
    # every event lands in the kernel's queue of 32, which overflows. (Files in a directory
    # that is new are found by the daemon's walk of it, not queued: no overflow there.)
    assert pair.mirrord is not None
    os.kill(pair.mirrord.pid, signal.SIGSTOP)
    try:
        for i in range(3000):
            write(src, f"burst/{i // 100}/{i}", str(i))
    finally:
        os.kill(pair.mirrord.pid, signal.SIGCONT)
    assert pair.converge("mail")
    assert_identical(src, pair.dst("mail"))
    reasons = [(r.kind, r.reason) for r in Journal(pair.a_state).history("/srv/mail", 100)]
    assert ("full", "overflow") in reasons


def test_guard_refuses_unmounted_and_empty_mount(lab: Lab) -> None:
    """A root that was a mount point and is unmounted, or remounted empty, is refused and
    the mirror keeps its files."""
    pair = MirrorPair(lab, [{"path": "/srv/data", **FAST}])
    pair.start(wrapper='mount -t tmpfs -o size=16m hapair-test /srv/data && exec "$@"')
    assert pair.mirrord is not None
    pid = pair.mirrord.pid
    inside = Path(f"/proc/{pid}/root/srv/data")
    for i in range(20):
        write(inside, f"f{i}", str(i))
    assert pair.converge("data", src=inside)

    # A pass pins its root: while one runs, umount says busy, as for any reader of the tree;
    # the administrator tries again.
    for _ in range(200):
        umount = subprocess.run(
            ["nsenter", f"--mount=/proc/{pid}/ns/mnt", "umount", "/srv/data"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if umount.returncode == 0 or "busy" not in umount.stderr:
            break
        time.sleep(0.05)
    assert umount.returncode == 0, umount.stderr
    reply = pair.sync("data", full=True)
    (result,) = reply["results"].values()
    assert result["result"] == "alarm"
    assert "should be a mount point" in result["detail"]
    assert len(list(pair.dst("data").glob("f*"))) == 20

    nsenter_mount(pid, "mount", "-t", "tmpfs", "hapair-empty", "/srv/data")
    reply = pair.sync("data", full=True)
    (result,) = reply["results"].values()
    assert result["result"] == "alarm"
    assert "empty mount point" in result["detail"]
    assert len(list(pair.dst("data").glob("f*"))) == 20
    assert "mount point" in pair.dir_status("data")["alarm"]


def test_guard_refuses_mass_deletion(lab: Lab) -> None:
    """Deleting more than max_delete entries is refused; the peer keeps the files."""
    pair = MirrorPair(lab, [{"path": "/srv/mail", "max_delete": 20, **FAST}])
    src = pair.src("mail")
    for i in range(100):
        write(src, f"cur/{i}", str(i))
    pair.start()
    assert pair.converge("mail")
    subprocess.run(["rm", "-rf", str(src / "cur")], check=True)
    assert wait_until(lambda: bool(pair.dir_status("mail")["alarm"]), timeout=30)
    assert "max_delete 20" in pair.dir_status("mail")["alarm"]
    # rsync's --max-delete backstop may have let a few through; never the whole tree.
    assert len(list((pair.dst("mail") / "cur").iterdir())) >= 80
    status = pair.cli("status", check=False)
    assert "max_delete" in status.stdout


def test_peer_unreachable_then_back_sends_backlog_once(lab: Lab) -> None:
    """While the peer is cut off passes fail and retry; once it is back the backlog arrives in
    one pass, and nothing is sent twice."""
    pair = MirrorPair(lab, [{"path": "/srv/mail", **FAST}])
    src = pair.src("mail")
    write(src, "seed", "s")
    pair.start()
    assert pair.converge("mail")
    cut = lab.block("b", proto="tcp", port=22, src=IPV4["a"])
    for i in range(50):
        write(src, f"backlog/{i}", str(i))
    assert wait_until(lambda: pair.dir_status("mail")["failures"] >= 1, timeout=90)
    assert not (pair.dst("mail") / "backlog").exists()
    st = pair.dir_status("mail")
    assert st["dirty"] >= 50 and st["rpo"] > 0
    lab.unblock(cut)
    assert pair.converge("mail", timeout=120)
    assert_identical(src, pair.dst("mail"))
    history = Journal(pair.a_state).history("/srv/mail", 100)
    ok_after = [r for r in reversed(history) if r.result == "ok"]
    backlog_passes = [r for r in ok_after if (r.files or 0) >= 50]
    assert len(backlog_passes) == 1, [(r.kind, r.result, r.files) for r in history]
    assert time.time() - backlog_passes[0].started < 600


def test_the_mirror_key_only_writes_into_the_modules(lab: Lab) -> None:
    """With the key `mirrord authorize` restricts, a client gets rsync's daemon and nothing
    else: no shell, no reading back, no unknown module, and no way out of a root through a
    symlink it planted there."""
    pair = MirrorPair(lab, [{"path": "/srv/data", **FAST}])
    outside = lab.node_dir("b", "outside")
    ssh = lab_ssh(pair.key, pair.ssh_options())
    login = f"root@{IPV4['b']}"
    module = module_name("/srv/data")

    def rsync(*args: str) -> subprocess.CompletedProcess[str]:
        argv = ["rsync", "-a", "-e", " ".join(ssh), *args]
        return lab.run("a", ["sh", "-c", 'mount --bind "$0" /srv && exec "$@"', str(pair.a_srv),
                             *argv], check=False, timeout=60)  # fmt: skip

    shell = lab.run("a", [*ssh, login, f"touch {outside}/shell"], check=False, input="")
    assert shell.stdout.startswith("@RSYNCD:") and not (outside / "shell").exists()
    write(pair.dst("data"), "secret", "kept on b")
    pull = rsync(f"{login}::{module}/", str(lab.node_dir("a", "pulled")))
    assert pull.returncode != 0 and not (lab.node_dir("a", "pulled") / "secret").exists()
    write(pair.src("data"), "f", "x")
    unknown = rsync("/srv/data/", f"{login}::nosuch/")
    assert unknown.returncode != 0 and "Unknown module" in unknown.stderr
    # A symlink to a directory outside the root, planted by one push, then used by another.
    (pair.src("data") / "out").symlink_to(outside)
    assert rsync("/srv/data/", f"{login}::{module}/").returncode == 0
    assert os.readlink(pair.dst("data") / "out") == str(outside)
    write(pair.src("data"), "via/escape", "x")
    escape = rsync("--relative", "/srv/data/./via/escape", f"{login}::{module}/out/")
    assert escape.returncode != 0, escape  # chrooted: the link leads nowhere, nothing is made
    assert not (outside / "via").exists() and not (outside / "escape").exists(), escape


@pytest.mark.parametrize("receiver", ["rsyncd", "rrsync"])
def test_a_peer_that_is_the_source_refuses_pushes_until_released(lab: Lab, receiver: str) -> None:
    """With either receiver, passes converge (symlinks kept as they are); while b's root holds
    the source marker (b was the active and has not set its orphans aside) the pushes are
    refused, retried and reported with the peer's reason; once it is gone they go through."""
    pair = MirrorPair(lab, [{"path": "/srv/data", **FAST}], receiver=receiver)
    src, dst = pair.src("data"), pair.dst("data")
    write(src, "a/b", "1")
    (src / "ln").symlink_to("a/b")
    pair.start()
    assert pair.converge("data")
    assert_identical(src, dst)
    assert orphans.set_source(str(dst), "b", time.time())
    write(src, "later", "2")
    assert wait_until(lambda: pair.dir_status("data")["failures"] >= 2, timeout=60)
    last = pair.dir_status("data")["last"]
    assert last["result"] == "retry", last
    assert "this node is (or was, until it stopped) the source of this root" in last["detail"]
    assert not (dst / "later").exists()
    orphans.clear_source(str(dst))
    assert pair.converge("data", timeout=60)
    assert_identical(src, dst)


def test_excludes_hold_on_incremental_passes_and_a_missing_peer_root_is_named(lab: Lab) -> None:
    """Directories the policy excludes, made after the start-up full pass, never reach the peer
    on the incremental passes that follow (their neighbours do); a root missing on the peer is
    an alarm that says so, in status and in the pass's result."""
    policy = {"path": "/srv/data", "exclude": ["cache/", "/local-only/"], **FAST}
    pair = MirrorPair(lab, [policy])
    src, dst = pair.src("data"), pair.dst("data")
    write(src, "keep", "1")
    pair.start()
    assert pair.converge("data")
    for rel in ("cache/c", "a/cache/x", "local-only/l", "a/local-only/kept", "a/new"):
        write(src, rel, rel)

    def arrived() -> bool:
        pair.sync("data")
        st = pair.dir_status("data")
        return (
            (dst / "a/new").exists()
            and (dst / "a/local-only/kept").exists()
            and (st["dirty"] == 0 and not st["running"])
        )

    assert wait_until(arrived, timeout=60)
    for rel in ("cache", "a/cache", "local-only"):
        assert not (dst / rel).exists(), rel
    kinds = [r.kind for r in Journal(pair.a_state).history("/srv/data")]
    assert kinds[0] == "incremental" and kinds[-1] == "full", kinds

    dst.rename(dst.with_name("data.away"))
    write(src, "later", "2")
    assert wait_until(lambda: pair.dir_status("data")["alarm"] is not None, timeout=60)
    alarm = pair.dir_status("data")["alarm"]
    assert "the root is missing on the peer" in alarm and "chroot failed" in alarm, alarm
    status = pair.cli("status", check=False)
    assert "the root is missing on the peer" in status.stdout, status.stdout
    dst.with_name("data.away").rename(dst)


def test_changes_made_while_mirrord_was_stopped_reach_the_peer(lab: Lab) -> None:
    """After a clean stop, a file edited while mirrord was stopped is sent by the next run in
    an incremental pass (the walk found it); a file deleted while stopped makes the next run
    pass the root in full, which deletes it on the peer."""
    pair = MirrorPair(lab, [{"path": "/srv/data", **FAST}])
    src, dst = pair.src("data"), pair.dst("data")
    write(src, "keep", "1")
    write(src, "sub/gone", "2")
    write(src, "sub/edit", "3")
    pair.start()
    assert pair.converge("data")
    time.sleep(CATCH_UP_MARGIN + 0.5)  # the set-up is older than the stop by more than the margin
    assert pair.stop() == 0
    restart = time.time()
    write(src, "sub/edit", "edited while stopped")
    pair.start()
    assert wait_until(lambda: (dst / "sub/edit").read_text() == "edited while stopped", 60)
    runs = [r for r in Journal(pair.a_state).history("/srv/data", 20) if r.started >= restart]
    assert runs and all(r.kind == "incremental" for r in runs), runs
    assert pair.stop() == 0
    restart = time.time()
    (src / "sub" / "gone").unlink()
    pair.start()
    assert wait_until(lambda: not (dst / "sub" / "gone").exists(), 60)
    runs = [r for r in Journal(pair.a_state).history("/srv/data", 20) if r.started >= restart]
    assert any(r.kind == "full" and "changed while mirrord was stopped" in r.reason
               for r in runs), runs  # fmt: skip
    assert_identical(src, dst)


def posix_acl(user_id: int) -> bytes:
    """An access ACL (system.posix_acl_access, version 2) granting `user_id` read access."""
    undefined = 0xFFFFFFFF
    entries = [(0x01, 6, undefined), (0x02, 4, user_id), (0x04, 4, undefined),
               (0x10, 4, undefined), (0x20, 4, undefined)]  # fmt: skip
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)


def test_acls_and_xattrs_arrive_through_the_receiver(lab: Lab) -> None:
    """With acls and xattrs in the policy, a file's access ACL and its user and trusted
    extended attributes are the same on the peer (root in a chrooted module keeps them all)."""
    pair = MirrorPair(lab, [{"path": "/srv/data", "acls": True, "xattrs": True, **FAST}])
    src, dst = pair.src("data"), pair.dst("data")
    f = write(src, "doc", "x")
    os.setxattr(f, "user.hapair", b"user value")
    os.setxattr(f, "trusted.hapair", b"trusted value")
    os.setxattr(f, "system.posix_acl_access", posix_acl(1234))
    pair.start()
    assert pair.converge("data")
    copy = dst / "doc"
    assert wait_until(copy.exists, 30)
    for name in ("user.hapair", "trusted.hapair", "system.posix_acl_access"):
        assert os.getxattr(copy, name) == os.getxattr(f, name), name


def test_a_255_byte_name_is_updated_and_backed_up_under_its_own_name(lab: Lab) -> None:
    """Through ssh and the chrooted rsync daemon, a file whose name is 255 bytes long (the most
    the file system accepts) is updated on the peer, its old copy kept under the same name."""
    pair = MirrorPair(lab, [{"path": "/srv/data", **FAST}])
    src, dst = pair.src("data"), pair.dst("data")
    name = "n" * 255
    write(src, name, "first")
    write(src, "plain", "first")
    pair.start()
    assert pair.converge("data")
    write(src, name, "second, longer")
    write(src, "plain", "second, longer")
    assert pair.converge("data", timeout=60)
    assert (dst / name).read_text() == "second, longer"
    kept = [p for p in (dst / ".hapair-backup").rglob(name) if p.is_file()]
    assert [p.read_text() for p in kept] == ["first"]
    assert pair.dir_status("data")["last"]["result"] == "ok"


def test_incremental_passes_leave_the_peers_backup_area_in_place(lab: Lab) -> None:
    """Through ssh and the rsync daemon, incremental passes delete nothing on the peer (before
    the fix each deleted the backup area, and max_delete refused them): what an earlier pass
    kept stays where it was put, never moved into a later pass's backup dir."""
    pair = MirrorPair(lab, [{"path": "/srv/data", **FAST}])
    src, dst = pair.src("data"), pair.dst("data")
    write(src, "a", "0")
    pair.start()
    assert pair.converge("data")
    write(src, "a", "1")
    assert wait_until(lambda: (dst / "a").read_text() == "1", timeout=30)
    (kept,) = [p for p in (dst / ".hapair-backup").rglob("a") if p.is_file()]
    for i in range(2, 5):
        write(src, "a", str(i))
        assert wait_until(lambda i=i: (dst / "a").read_text() == str(i), timeout=30)
        assert wait_until(lambda: not pair.dir_status("data")["running"], timeout=30)
        last = pair.dir_status("data")["last"]
        assert (last["result"], last["deleted"]) == ("ok", 0), last
    assert kept.read_text() == "0"
    assert not list((dst / ".hapair-backup").rglob("*/.hapair-backup"))


def test_the_daemon_mirrors_without_openssl_loaded(lab: Lab) -> None:
    """mirrord run maps neither libssl nor libcrypto (mirrord.lean: asyncio without ssl,
    hashlib's own SHA-2), and mirrors as before: the daemon's resident set stays small."""
    pair = MirrorPair(lab, [{"path": "/srv/data", **FAST}])
    src, dst = pair.src("data"), pair.dst("data")
    write(src, "a", "0")
    proc = pair.start()
    assert pair.converge("data")
    write(src, "b", "1")
    assert wait_until((dst / "b").exists, timeout=30)
    assert "mirrord" in Path(f"/proc/{proc.pid}/cmdline").read_text()
    maps = Path(f"/proc/{proc.pid}/maps").read_text()
    assert "libssl" not in maps and "libcrypto" not in maps
