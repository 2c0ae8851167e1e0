"""The daemon end to end on one machine: real inotify and rsync to a local destination."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from mirrord import daemon as daemon_module
from mirrord import guard
from mirrord.backups import BACKUP_DIR
from mirrord.daemon import SOCKET_NAME, STATUS_NAME, Daemon, MirrorDir
from mirrord.journal import Journal
from mirrord.planner import Cadence
from mirrord.transfer import TransferOptions
from tests.unit.test_transfer import deep, make_at, read_at

FAST = Cadence(interval=0.2, min_interval=0.1, max_interval=1.0)


class Env:
    """Paths of one local mirror setup: source root, destination, state and run dirs."""

    def __init__(self, tmp: Path) -> None:
        self.src = tmp / "src"
        self.dest = tmp / "dest"
        self.state = tmp / "state"
        self.run = tmp / "run"
        self.src.mkdir()

    @property
    def mirror(self) -> Path:
        """Where the daemon mirrors src to."""
        return self.dest / str(self.src).lstrip("/")

    def daemon(self, **kw: Any) -> Daemon:
        """Return a daemon mirroring src locally."""
        d = MirrorDir(root=str(self.src), volatility="hot", cadence=kw.pop("cadence", FAST),
                      options=TransferOptions(), **kw)  # fmt: skip
        return Daemon([d], peer=None, state_dir=self.state, run_dir=self.run, local_dest=self.dest)


async def request(run: Path, req: dict[str, Any]) -> dict[str, Any]:
    """Send one control request and return the reply."""
    reader, writer = await asyncio.open_unix_connection(str(run / SOCKET_NAME))
    writer.write(json.dumps(req).encode() + b"\n")
    await writer.drain()
    line = await asyncio.wait_for(reader.readline(), 60)
    writer.close()
    reply: dict[str, Any] = json.loads(line)
    return reply


async def with_daemon(daemon: Daemon, body: Callable[[], Awaitable[None]]) -> None:
    """Run `daemon` around `body`, then stop it cleanly."""
    task = asyncio.ensure_future(daemon.run())
    sock = daemon.run_dir / SOCKET_NAME
    for _ in range(500):
        if sock.exists() or task.done():
            break
        await asyncio.sleep(0.01)
    try:
        await body()
    finally:
        daemon.stop()
        await asyncio.wait_for(task, 30)


def tree(root: Path) -> dict[str, tuple[int, str]]:
    """Map each path below root (without the backup area) to (mode, content or link)."""
    out: dict[str, tuple[int, str]] = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if rel.startswith(".hapair-backup"):
            continue
        st = os.lstat(p)
        if p.is_symlink():
            out[rel] = (st.st_mode, os.readlink(p))
        elif p.is_file():
            out[rel] = (st.st_mode, p.read_text())
        else:
            out[rel] = (st.st_mode, "")
    return out


async def converge(env: Env) -> None:
    """Request passes until the mirror equals the source (events arrive asynchronously)."""
    for _ in range(100):
        await request(env.run, {"cmd": "sync", "wait": True})
        if tree(env.mirror) == tree(env.src):
            return
        await asyncio.sleep(0.05)
    assert tree(env.mirror) == tree(env.src)


async def until_dirty(env: Env, n: int) -> None:
    """Wait until the daemon has seen at least n dirty paths (a pass may start meanwhile)."""
    for _ in range(200):
        status = await request(env.run, {"cmd": "status"})
        (d,) = status["directories"]
        if d["dirty"] >= n:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"daemon saw only {d['dirty']} of {n} changes")


async def until_clean(env: Env) -> None:
    """Wait until the daemon reports nothing dirty and an RPO of zero, without requests."""
    for _ in range(200):
        status = await request(env.run, {"cmd": "status"})
        (d,) = status["directories"]
        if d["dirty"] == 0 and d["rpo"] == 0.0 and not d["running"]:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"daemon never got clean: {d}")


def test_startup_full_pass_then_incremental_changes(tmp_path: Path) -> None:
    """A new journal starts with a full pass; later edits, renames and deletes follow."""
    env = Env(tmp_path)
    (env.src / "old").write_text("x")
    (env.src / "d").mkdir()
    (env.src / "d/keep").write_text("k")

    async def body() -> None:
        await converge(env)
        (env.src / "old").rename(env.src / "new")
        (env.src / "d/keep").write_text("changed")
        os.chmod(env.src / "d/keep", 0o600)
        os.symlink("new", env.src / "link")
        (env.src / "e/f").mkdir(parents=True)
        (env.src / "e/f/g").write_text("g")
        await converge(env)
        # Late events (close-write, parent dir) are sent by the daemon's own timer.
        await until_clean(env)
        status = json.loads((env.run / STATUS_NAME).read_text())
        assert [d["directory"] for d in status["directories"]] == [str(env.src)]

    asyncio.run(with_daemon(env.daemon(), body))
    j = Journal(env.state)
    kinds = [r.kind for r in reversed(j.history(str(env.src)))]
    assert kinds[0] == "full"
    assert "incremental" in kinds


def test_startup_full_pass_begins_without_any_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The start-up full pass starts as soon as the daemon is ready: no event, request or
    re-watch tick is needed to wake the planner (the re-watch is an hour away here)."""
    monkeypatch.setattr(daemon_module, "REWATCH_INTERVAL", 3600.0)
    env = Env(tmp_path)
    (env.src / "a").write_text("1")

    async def body() -> None:
        # Only the file system is watched: a control request would wake the consumer.
        for _ in range(600):
            if (env.mirror / "a").exists():
                return
            await asyncio.sleep(0.05)
        raise AssertionError("no start-up pass within 30 s")

    asyncio.run(with_daemon(env.daemon(), body))
    assert [r.kind for r in Journal(env.state).history(str(env.src))] == ["full"]


def mirrored_then_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Env:
    """A source with one file `a` mirrored by a run that then stopped cleanly (the walk for
    changes made while stopped gets no margin for coarse file times here)."""
    monkeypatch.setattr(daemon_module, "CATCH_UP_MARGIN", 0.0)
    env = Env(tmp_path)
    (env.src / "a").write_text("1")

    async def first() -> None:
        await converge(env)

    asyncio.run(with_daemon(env.daemon(), first))
    return env


def test_clean_restart_is_vouched_and_skips_the_full_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a clean stop the next start trusts the journal: no full pass at start-up (the
    walk for changes made while stopped finds none)."""
    env = mirrored_then_stopped(tmp_path, monkeypatch)
    passes_before = len(Journal(env.state).history(str(env.src)))

    async def second() -> None:
        # An edit, not a new entry: a directory changed since the stop costs a full pass.
        (env.src / "a").write_text("2")
        await converge(env)
        assert (env.mirror / "a").read_text() == "2"

    asyncio.run(with_daemon(env.daemon(), second))
    recs = Journal(env.state).history(str(env.src))
    new = recs[: len(recs) - passes_before]
    assert new and all(r.kind == "incremental" for r in new)
    assert (env.mirror / "a").read_text() == "2"


def test_guard_refuses_mass_deletion_until_allowed(tmp_path: Path) -> None:
    """Deleting more entries than max_delete is refused and the mirror keeps them, until the
    operator allows the deletions for one pass."""
    env = Env(tmp_path)
    for i in range(10):
        (env.src / f"f{i}").write_text(str(i))

    async def body() -> None:
        await converge(env)
        for i in range(10):
            (env.src / f"f{i}").unlink()
        await until_dirty(env, 10)
        reply = await request(env.run, {"cmd": "sync", "wait": True})
        (result,) = reply["results"].values()
        assert result["result"] == "alarm"
        assert "max_delete 3" in result["detail"]
        full = await request(env.run, {"cmd": "sync", "wait": True, "full": True})
        (result,) = full["results"].values()
        assert result["result"] == "alarm" and result["kind"] == "full"
        assert len(list(env.mirror.glob("f*"))) == 10
        status = await request(env.run, {"cmd": "status"})
        assert "max_delete" in status["directories"][0]["alarm"]
        # The operator confirms: the next pass deletes, and the alarm clears.
        ok = await request(env.run, {"cmd": "sync", "wait": True, "allow_deletions": True})
        (result,) = ok["results"].values()
        assert result["result"] == "ok"
        assert list(env.mirror.glob("f*")) == []
        status = await request(env.run, {"cmd": "status"})
        assert status["directories"][0]["alarm"] is None

    # A settle time keeps the first deletion from starting a pass before the others arrive.
    slow = Cadence(interval=0.2, min_interval=0.1, max_interval=1.0, settle=5.0)
    asyncio.run(with_daemon(env.daemon(max_delete_count=3, cadence=slow), body))


def test_incremental_passes_never_send_excluded_directories(tmp_path: Path) -> None:
    """Directories the policy excludes, created after the start-up full pass, never reach the
    mirror on the incremental passes that follow; their neighbours do."""
    env = Env(tmp_path)
    (env.src / "first").write_text("1")
    d = MirrorDir(root=str(env.src), volatility="hot", cadence=FAST,
                  options=TransferOptions(excludes=("cache/", "/local-only/")))  # fmt: skip
    daemon = Daemon([d], peer=None, state_dir=env.state, run_dir=env.run, local_dest=env.dest)

    async def body() -> None:
        await converge(env)
        for sub in ("cache", "a/cache", "local-only"):
            (env.src / sub).mkdir(parents=True)
            (env.src / sub / "f").write_text("x")
        (env.src / "a/kept").write_text("k")
        await until_dirty(env, 1)
        for _ in range(100):
            await request(env.run, {"cmd": "sync", "wait": True})
            if (env.mirror / "a/kept").exists():
                break
            await asyncio.sleep(0.05)
        await until_clean(env)

        # Changes only below excluded directories cost no rsync at all.
        (env.src / "cache" / "g").write_text("y")
        for _ in range(600):
            (d,) = (await request(env.run, {"cmd": "status"}))["directories"]
            if "every dirty path is excluded" in d["last"]["detail"]:
                break
            await asyncio.sleep(0.05)
        assert d["last"]["result"] == "ok" and d["last"]["rc"] is None, d["last"]

    asyncio.run(with_daemon(daemon, body))
    assert sorted(tree(env.mirror)) == ["a", "a/kept", "first"]
    assert Journal(env.state).history(str(env.src))[0].kind == "incremental"


def test_guard_refuses_missing_root(tmp_path: Path) -> None:
    """A source root that vanished is refused with an alarm; the mirror stays intact."""
    env = Env(tmp_path)
    (env.src / "a").write_text("1")

    async def body() -> None:
        await converge(env)
        (env.src / "a").unlink()
        env.src.rmdir()
        reply = await request(env.run, {"cmd": "sync", "wait": True, "full": True})
        (result,) = reply["results"].values()
        assert result["result"] == "alarm"
        assert "missing" in result["detail"]
        assert (env.mirror / "a").exists()

    asyncio.run(with_daemon(env.daemon(), body))


def test_unknown_directory_request_is_an_error(tmp_path: Path) -> None:
    """A sync request for a directory that is not mirrored gets an error reply."""
    env = Env(tmp_path)

    async def body() -> None:
        reply = await request(env.run, {"cmd": "sync", "directory": "/nope", "wait": True})
        assert "not a mirrored directory" in reply["error"]
        bad = await request(env.run, {"cmd": "frobnicate"})
        assert "unknown command" in bad["error"]

    asyncio.run(with_daemon(env.daemon(), body))


def test_second_daemon_on_the_same_state_dir_is_refused(tmp_path: Path) -> None:
    """Two daemons never share a journal: the second fails to start."""
    env = Env(tmp_path)

    async def body() -> None:
        other = env.daemon()
        try:
            await other.run()
        except Exception as exc:
            assert "another mirrord" in str(exc)
        else:
            raise AssertionError("second daemon started")

    asyncio.run(with_daemon(env.daemon(), body))


def test_new_hard_link_arrives_as_a_link(tmp_path: Path) -> None:
    """With hard_links, a new name for an existing file is mirrored as a link, not a copy."""
    env = Env(tmp_path)
    (env.src / "a").write_text("shared")

    async def body() -> None:
        await converge(env)
        os.link(env.src / "a", env.src / "b")
        await converge(env)
        for _ in range(100):
            if os.lstat(env.mirror / "b").st_nlink == 2:
                break
            await request(env.run, {"cmd": "sync", "wait": True})
        assert os.lstat(env.mirror / "a").st_ino == os.lstat(env.mirror / "b").st_ino

    d = MirrorDir(root=str(env.src), volatility="static", cadence=FAST,
                  options=TransferOptions(hard_links=True))  # fmt: skip
    daemon = Daemon([d], peer=None, state_dir=env.state, run_dir=env.run, local_dest=env.dest)
    asyncio.run(with_daemon(daemon, body))


def test_deletions_spread_over_passes_still_count(tmp_path: Path) -> None:
    """Deletions sent one pass at a time are refused once the window's total passes max_delete."""
    env = Env(tmp_path)
    for i in range(10):
        (env.src / f"f{i}").write_text(str(i))

    async def body() -> None:
        await converge(env)
        for i in range(5):
            (env.src / f"f{i}").unlink()
            for _ in range(200):
                (d,) = (await request(env.run, {"cmd": "status"}))["directories"]
                if d["alarm"] or not (env.mirror / f"f{i}").exists():
                    break
                await asyncio.sleep(0.02)
        assert "max_delete 3" in d["alarm"]
        left = sorted(p.name for p in env.mirror.glob("f*"))
        assert left == [f"f{i}" for i in range(3, 10)]

    asyncio.run(with_daemon(env.daemon(max_delete_count=3), body))


def test_sync_wait_is_answered_by_a_pass_started_after_the_request(tmp_path: Path) -> None:
    """A sync request made while a pass runs waits for the next pass, which has its changes."""
    env = Env(tmp_path)

    async def body() -> None:
        await converge(env)
        (env.src / "blob").write_bytes(os.urandom(1 << 20))  # ~1 s at 1000 KiB/s
        for _ in range(200):
            if (await request(env.run, {"cmd": "status"}))["directories"][0]["running"]:
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("no pass started")
        (env.src / "late").write_text("written during the pass")
        await until_dirty(env, 1)
        reply = await request(env.run, {"cmd": "sync", "wait": True})
        assert next(iter(reply["results"].values()))["result"] == "ok"
        assert (env.mirror / "late").read_text() == "written during the pass"

    d = MirrorDir(root=str(env.src), volatility="hot", cadence=FAST,
                  options=TransferOptions(bwlimit=1000))  # fmt: skip
    daemon = Daemon([d], peer=None, state_dir=env.state, run_dir=env.run, local_dest=env.dest)
    asyncio.run(with_daemon(daemon, body))


def test_the_daemon_prunes_expired_backup_hours_of_every_root(tmp_path: Path) -> None:
    """The receiving node's mirrord prunes what the peer's passes replaced: backup hours older
    than the retention go, newer ones, recovered orphans and unknown names stay."""
    env = Env(tmp_path)
    area = env.src / BACKUP_DIR
    now = 1_795_000_000.0  # 2026-11-18T11:06:40Z
    for name in ("2026-11-10T08Z", "2026-11-18T10Z", "recovery-20261101T000000Z", "notes"):
        (area / name).mkdir(parents=True)
        (area / name / "f").write_text("kept?")
    d = MirrorDir(root=str(env.src), volatility="hot", cadence=FAST, options=TransferOptions())
    daemon = Daemon([d], peer=None, state_dir=env.state, run_dir=env.run, local_dest=env.dest,
                    backup_retention=7 * 86400.0)  # fmt: skip
    env.state.mkdir()
    daemon.journal = daemon._open_journal(now)  # for status(), without running the daemon
    assert daemon.status()["directories"][0]["backup_bytes"] is None  # not measured yet
    daemon.prune_backups(now)
    assert sorted(p.name for p in area.iterdir()) == [
        "2026-11-18T10Z", "notes", "recovery-20261101T000000Z"
    ]  # fmt: skip
    # What the kept hour takes is in status (recovery areas and unknown names not counted).
    assert 0 < daemon.status()["directories"][0]["backup_bytes"] <= 64 << 10


def test_a_run_that_never_pushed_keeps_the_older_stop_for_the_walk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An edit made while mirrord was stopped, then a run that never pushed (following, no
    takeover), then a pushing run: the last run's walk starts at the first stop and sends it."""
    env = mirrored_then_stopped(tmp_path, monkeypatch)
    (env.src / "a").write_text("edited while stopped")
    d = MirrorDir(root=str(env.src), volatility="hot", cadence=FAST, options=TransferOptions())
    held = Daemon([d], peer=None, state_dir=env.state, run_dir=env.run, local_dest=env.dest,
                  follow=True, node="a", peer_name="b")  # fmt: skip

    async def not_pushing() -> None:
        await asyncio.sleep(0.3)

    asyncio.run(with_daemon(held, not_pushing))
    assert (env.mirror / "a").read_text() == "1"

    async def third() -> None:
        for _ in range(200):
            if (env.mirror / "a").read_text() == "edited while stopped":
                return
            await asyncio.sleep(0.05)

    asyncio.run(with_daemon(env.daemon(), third))
    assert (env.mirror / "a").read_text() == "edited while stopped"


def test_long_names_mirror_and_a_path_too_deep_to_back_up_is_named_not_retried(
    tmp_path: Path,
) -> None:
    """A 255-byte name is updated on the peer; a path too deep for its backup copy is left out
    of the passes and named in status, while the rest of the directory converges."""
    env = Env(tmp_path)
    long_name, too_deep = "n" * 255, deep(4060)
    (env.src / long_name).write_text("v1")
    (env.src / "plain").write_text("v1")
    make_at(env.src, too_deep, b"v1")
    d = MirrorDir(root=str(env.src), volatility="hot", cadence=FAST,
                  options=TransferOptions())  # fmt: skip
    daemon = Daemon([d], peer=None, state_dir=env.state, run_dir=env.run, local_dest=env.dest)

    async def body() -> None:
        await request(env.run, {"cmd": "sync", "wait": True})
        assert read_at(env.mirror, too_deep) == b"v1"  # created: no backup needed
        # Another size: a full pass's quick check would miss a same-second, same-size rewrite.
        for rel in (long_name, "plain"):
            (env.src / rel).write_text("v2 longer")
        make_at(env.src, too_deep, b"v2 longer")
        for _ in range(20):
            reply = await request(env.run, {"cmd": "sync", "full": True, "wait": True})
            if reply["results"][str(env.src)]["result"] == "ok":
                break
        assert reply["results"][str(env.src)]["result"] == "ok"
        assert (
            (env.mirror / long_name).read_text()
            == (env.mirror / "plain").read_text()
            == ("v2 longer")
        )
        assert read_at(env.mirror, too_deep) == b"v1"
        kept = [p.name for p in (env.mirror / BACKUP_DIR).rglob(long_name)]
        assert kept == [long_name]
        (status,) = (await request(env.run, {"cmd": "status"}))["directories"]
        assert status["not_mirrored"] == [too_deep]
        assert not status["alarm"]

    asyncio.run(with_daemon(daemon, body))


async def pass_result(env: Env, dirty: int) -> dict[str, Any]:
    """Wait until the daemon has seen `dirty` changes, ask for a pass and return its result."""
    await until_dirty(env, dirty)
    reply = await request(env.run, {"cmd": "sync", "wait": True})
    (result,) = reply["results"].values()
    assert isinstance(result, dict)
    return result


def test_a_percentage_follows_a_tree_that_grew_from_empty(tmp_path: Path) -> None:
    """A "60%" limit measured on an empty root at start-up grows with the tree the incremental
    passes build: deleting a few of many files later is not refused."""
    env = Env(tmp_path)

    async def body() -> None:
        await converge(env)  # the start-up full pass counts the empty root
        for i in range(20):
            (env.src / f"f{i}").write_text(str(i))
        await until_dirty(env, 20)
        await converge(env)
        await until_clean(env)
        for i in range(5):
            (env.src / f"f{i}").unlink()
        result = await pass_result(env, 5)
        assert result["result"] == "ok", result
        await converge(env)

    slow = Cadence(interval=0.2, min_interval=0.1, max_interval=1.0, settle=5.0)
    asyncio.run(with_daemon(env.daemon(max_delete_percent=60.0, cadence=slow), body))


def test_renames_are_not_deletions(tmp_path: Path) -> None:
    """Renaming more entries than max_delete (files and a directory) is mirrored without an
    alarm, and does not use up the deletion window either."""
    env = Env(tmp_path)
    (env.src / "d").mkdir()
    for i in range(6):
        (env.src / f"f{i}").write_text(str(i))
        (env.src / "d" / f"g{i}").write_text(str(i))

    async def body() -> None:
        await converge(env)
        for i in range(6):
            (env.src / f"f{i}").rename(env.src / f"h{i}")
        (env.src / "d").rename(env.src / "e")
        result = await pass_result(env, 7)
        assert result["result"] == "ok", result
        await converge(env)
        (env.src / "h0").unlink()
        (env.src / "h1").unlink()
        result = await pass_result(env, 2)
        assert result["result"] == "ok", result
        await converge(env)

    slow = Cadence(interval=0.2, min_interval=0.1, max_interval=1.0, settle=5.0)
    asyncio.run(with_daemon(env.daemon(max_delete_count=2, cadence=slow), body))


def test_a_directory_moved_out_counts_its_subtree_before_anything_is_deleted(
    tmp_path: Path,
) -> None:
    """A directory moved out of the tree counts as every entry the peer would remove, and the
    pass is refused whole: the mirror keeps all of it."""
    env = Env(tmp_path)
    (env.src / "d").mkdir()
    for i in range(10):
        (env.src / "d" / f"f{i}").write_text(str(i))

    async def body() -> None:
        await converge(env)
        (env.src / "d").rename(tmp_path / "outside")
        result = await pass_result(env, 1)
        assert result["result"] == "alarm", result
        assert "would delete 11 entries (max_delete 5)" in result["detail"]
        assert len(list((env.mirror / "d").iterdir())) == 10

    slow = Cadence(interval=0.2, min_interval=0.1, max_interval=1.0, settle=5.0)
    asyncio.run(with_daemon(env.daemon(max_delete_count=5, cadence=slow), body))


def test_a_full_pass_sends_its_dirty_paths_even_when_size_and_mtime_match(
    tmp_path: Path,
) -> None:
    """A same-size rewrite whose mtime is put back (to the nanosecond) reaches the peer on a
    full pass that carries it as dirty: rsync's quick check would skip it and clear it."""
    env = Env(tmp_path)
    (env.src / "a").write_text("AAAA")
    daemon = env.daemon()

    async def body() -> None:
        await converge(env)
        before = os.stat(env.src / "a").st_mtime_ns
        (env.src / "a").write_text("BBBB")
        os.utime(env.src / "a", ns=(before, before))
        await until_dirty(env, 1)
        reply = await request(env.run, {"cmd": "sync", "full": True, "wait": True})
        assert reply["results"][str(env.src)]["result"] == "ok"
        assert (env.mirror / "a").read_text() == "BBBB"
        await until_clean(env)

    asyncio.run(with_daemon(daemon, body))


def test_directories_too_deep_to_watch_are_named_and_the_rest_converges(
    tmp_path: Path,
) -> None:
    """A directory whose absolute path passes PATH_MAX (inotify cannot watch it, rsync cannot
    read it) is left out and named in status, found at start or as it appears; every other
    change keeps reaching the peer and the passes succeed."""
    env = Env(tmp_path)
    fits = 4095 - len(str(env.src)) - 1
    parts = ["d" * 200] * ((fits - 2) // 201)
    blind = "/".join([*parts, "b" * (fits - len("/".join(parts)))])
    late = blind[:-1] + "c"
    assert len(str(env.src)) + 1 + len(blind) == 4096
    make_at(env.src, f"{blind}/f", b"v1")
    (env.src / "plain").write_text("v1")
    d = MirrorDir(root=str(env.src), volatility="hot", cadence=FAST,
                  options=TransferOptions(backup=False))  # fmt: skip
    daemon = Daemon([d], peer=None, state_dir=env.state, run_dir=env.run, local_dest=env.dest)

    async def body() -> None:
        reply = await request(env.run, {"cmd": "sync", "wait": True})
        assert reply["results"][str(env.src)]["result"] in ("ok", "in sync"), reply
        assert (env.mirror / "plain").read_text() == "v1"
        make_at(env.src, f"{late}/f", b"late")
        (env.src / "plain").write_text("v2")
        await until_dirty(env, 2)
        for full in (False, True):
            reply = await request(env.run, {"cmd": "sync", "full": full, "wait": True})
            assert reply["results"][str(env.src)]["result"] in ("ok", "in sync"), reply
        assert "not mirrored (2, see status)" in reply["results"][str(env.src)]["detail"]
        assert (env.mirror / "plain").read_text() == "v2"
        (status,) = (await request(env.run, {"cmd": "status"}))["directories"]
        assert status["not_mirrored"] == [blind, late]
        assert set(status["not_mirrored_why"].values()) == {daemon_module.UNWATCHABLE}
        assert status["last_result"] == "ok"

    asyncio.run(with_daemon(daemon, body))


class Unmount:
    """Emulates an unmount of a root's filesystem at one moment: the root's path then leads to
    a new empty directory (the bare mount point; the old tree stays, under another name), and
    the guard, as it does for a root that should be a mount point and is not, refuses it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.armed = False
        self.done = False
        self._inspect = guard.inspect_root

    def now(self) -> None:
        """Unmount, if armed."""
        if self.armed and not self.done:
            os.rename(self.root, self.root.with_name(self.root.name + ".old"))
            self.root.mkdir()
            self.done = True

    def inspect_root(self, root: str) -> guard.RootFacts:
        """The guard's look: refused (as missing) once unmounted."""
        if self.done and root == str(self.root):
            return guard.RootFacts(exists=False, is_dir=False, is_mount=False, empty=True)
        return self._inspect(root)


async def change_and_sync(env: Env, unmount: Unmount) -> None:
    """Arm the unmount, change a and b, and wait until the pass that met the unmount ended."""
    await converge(env)
    await until_clean(env)
    unmount.armed = True
    for name in ("a", "b"):
        (env.src / name).write_text("2")
    for _ in range(500):
        if unmount.done:
            break
        await asyncio.sleep(0.02)
    assert unmount.done, "no pass looked at the root"
    # A pass started now is refused: the one that met the unmount has ended.
    await request(env.run, {"cmd": "sync", "wait": True})


def test_a_root_unmounted_after_the_guards_look_is_not_mirrored_empty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unmount right after the guard looked at the root: the pass is retried, and nothing
    is deleted on the peer (before the fix rsync read the bare mount point and
    --delete-missing-args deleted the pass's paths there)."""
    env = Env(tmp_path)
    for name in ("a", "b"):
        (env.src / name).write_text("1")
    unmount = Unmount(env.src)

    def inspect_then_unmount(root: str) -> guard.RootFacts:
        facts = unmount.inspect_root(root)
        unmount.now()
        return facts

    monkeypatch.setattr(guard, "inspect_root", inspect_then_unmount)
    asyncio.run(with_daemon(env.daemon(), lambda: change_and_sync(env, unmount)))
    assert [(env.mirror / n).read_text() for n in ("a", "b")] == ["1", "1"]
    met = [r for r in Journal(env.state).history(str(env.src)) if r.result == "retry"]
    assert "changed while it was checked" in (met[0].detail or "")


def test_rsync_reads_the_pinned_root_when_the_path_moves_under_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unmount after every check (a lazy one, as rsync starts): rsync, started in the
    pinned directory, reads the tree the guard passed, and the peer gets its contents."""
    env = Env(tmp_path)
    for name in ("a", "b"):
        (env.src / name).write_text("1")
    unmount = Unmount(env.src)
    real = guard.pinned_is

    def check_then_unmount(fd: int, root: str) -> bool:
        same = real(fd, root)
        unmount.now()
        return same

    monkeypatch.setattr(guard, "inspect_root", unmount.inspect_root)
    monkeypatch.setattr(guard, "pinned_is", check_then_unmount)
    asyncio.run(with_daemon(env.daemon(), lambda: change_and_sync(env, unmount)))
    assert [(env.mirror / n).read_text() for n in ("a", "b")] == ["2", "2"]
