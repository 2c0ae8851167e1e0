"""Walks and moves of whole trees run off the daemon's event loop: its timers keep firing."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from pathlib import Path

import pytest

from mirrord import daemon as daemon_module
from mirrord import orphans
from mirrord.daemon import Daemon, MountsMoved, Reloaded, Rewatch
from mirrord.follow import PeerSeen, RoleSeen
from mirrord.planner import Result
from mirrord.roles import Peer
from mirrord.scan import Changed
from mirrord.watchtable import RawEvent
from tests.unit.test_daemon_local import Env, converge, with_daemon
from tests.unit.test_pair_follow import follower

# A walk this slow on the loop would hold every timer (the watchdog's, the flush's) as long.
SLOW = 1.5
# Generous: the loop's own timers fire every 20 ms; a blocked loop shows a gap of SLOW.
MAX_GAP = 1.0


async def loop_gaps(body: Callable[[], Awaitable[None]]) -> float:
    """Run `body` while a 20 ms timer ticks on the same loop; return the longest gap seen."""
    loop = asyncio.get_running_loop()
    ticks = [loop.time()]

    async def tick() -> None:
        while True:
            await asyncio.sleep(0.02)
            ticks.append(loop.time())

    ticker = asyncio.ensure_future(tick())
    try:
        await body()
    finally:
        ticker.cancel()
    ticks.append(loop.time())
    return max(b - a for a, b in itertools.pairwise(ticks))


def test_a_new_directorys_walk_does_not_hold_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The walk of a directory that appeared (its contents must be listed) runs in a thread:
    the loop keeps ticking, and the contents still reach the peer."""
    real = daemon_module.coalesce

    def slow(events: Iterable[RawEvent], walk: bool = True) -> dict[str, set[str]]:
        events = list(events)
        if walk and any(ev.is_dir for ev in events):
            time.sleep(SLOW)
        return real(events, walk)

    monkeypatch.setattr(daemon_module, "coalesce", slow)
    env = Env(tmp_path)
    gaps: list[float] = []

    async def body() -> None:
        await converge(env)

        async def new_tree() -> None:
            (env.src / "d/e").mkdir(parents=True)
            (env.src / "d/e/f").write_text("f")
            await asyncio.sleep(SLOW + 0.5)

        gaps.append(await loop_gaps(new_tree))
        await converge(env)
        assert (env.mirror / "d/e/f").read_text() == "f"

    asyncio.run(with_daemon(env.daemon(), body))
    assert gaps[0] < MAX_GAP


async def settle(daemon: Daemon) -> None:
    """Give the worker threads time to finish, then apply the records they queued."""
    await asyncio.sleep(SLOW + 0.5)
    while not daemon._q.empty():
        daemon._apply([daemon._q.get_nowait()])


def test_the_set_aside_walk_does_not_hold_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On becoming standby after a crash as the source, the walk for unjournaled changes and
    the moves run in a thread: the loop keeps ticking, and the orphan is set aside."""
    real = daemon_module.changed_since

    def slow(root: str, since: float) -> Changed:
        time.sleep(SLOW)
        return real(root, since)

    monkeypatch.setattr(daemon_module, "changed_since", slow)
    daemon, root = follower(tmp_path)
    # The last run crashed while it was the source, after writing `lost` (never journaled).
    orphans.set_source(str(root), "a", time.time())
    (root / "lost").write_text("x")

    async def body() -> None:
        daemon._apply([RoleSeen("STANDBY", "takeover says so"),
                       PeerSeen(Peer(alive=True, role="ACTIVE"))])  # fmt: skip
        daemon._start_due()
        await settle(daemon)

    gap = asyncio.run(loop_gaps(body))
    assert gap < MAX_GAP
    assert not (root / "lost").exists()
    assert [o.path for o in orphans.load(daemon.state_dir)] == ["lost"]
    assert not orphans.has_source(str(root))


def test_re_watching_a_root_does_not_hold_the_loop(tmp_path: Path) -> None:
    """Watching a root again (inotify watches for its whole tree) runs in a thread: the loop
    keeps ticking, and the root is watched and owes a full pass."""
    daemon, root = follower(tmp_path)

    class SlowWatcher:
        """Adds a watch as slowly as a large tree does."""

        unwatchable: dict[str, tuple[str, ...]] = {}

        def watch(self, path: str) -> bool:
            time.sleep(SLOW)
            return True

    daemon._watcher = SlowWatcher()  # type: ignore[assignment]
    daemon._unwatched = {str(root)}

    async def body() -> None:
        daemon._apply([Rewatch()])
        await settle(daemon)

    gap = asyncio.run(loop_gaps(body))
    assert gap < MAX_GAP
    assert not daemon._unwatched
    assert daemon.planner.status(str(root), daemon.clock()).full_needed is not None


def test_a_failed_walk_owes_a_full_pass_and_blocks_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A walk of a new directory that raises leaves no walk pending (the flush and the
    set-aside would wait for ever) and owes its root a full pass."""
    real = daemon_module.coalesce

    def broken(events: Iterable[RawEvent], walk: bool = True) -> dict[str, set[str]]:
        if walk:
            raise RuntimeError("walk broke")
        return real(events, walk)

    monkeypatch.setattr(daemon_module, "coalesce", broken)
    daemon, root = follower(tmp_path)
    # The start-up full pass (a new journal) is done.
    now = daemon.clock()
    (plan,) = daemon.planner.due(now)
    daemon.planner.pass_started(plan, now)
    daemon.planner.pass_finished(str(root), Result.OK, now)
    (root / "d").mkdir()

    async def body() -> None:
        daemon._apply([RawEvent(str(root), "created", str(root / "d"), "", True)])
        await settle(daemon)

    asyncio.run(body())
    assert daemon._walks_pending == 0
    assert daemon.planner.status(str(root), daemon.clock()).full_needed == (
        "the walk of a new directory failed"
    )


def test_a_mount_elsewhere_looks_at_the_roots_and_walks_none(tmp_path: Path) -> None:
    """A mount or unmount signalled on this host stats the watched roots (in a thread) and
    tries again at once only roots whose filesystem is gone, never an unwatched tree's walk."""
    daemon, root = follower(tmp_path)
    walked: list[str] = []

    class CountingWatcher:
        """Records each root it is asked to watch."""

        unwatchable: dict[str, tuple[str, ...]] = {}

        def watch(self, path: str) -> bool:
            walked.append(path)
            return True

        def unwatch(self, path: str) -> None:
            """Nothing to drop."""

    daemon._watcher = CountingWatcher()  # type: ignore[assignment]
    daemon._unwatched = {str(root)}

    async def body() -> None:
        daemon._apply([MountsMoved()])
        await settle(daemon)
        assert walked == []
        # Its filesystem gone, then back: tried at once on the next mount change.
        daemon._mount_alarm[str(root)] = "source root is not mounted"
        daemon._apply([MountsMoved()])
        await settle(daemon)

    asyncio.run(body())
    assert walked == [str(root)]
    assert not daemon._unwatched and not daemon._mount_alarm


def test_a_directory_added_by_a_reload_is_watched_off_the_loop(tmp_path: Path) -> None:
    """A reload adding a directory (its watch walks the whole tree) keeps the loop ticking;
    the new root ends up watched and owes a full pass."""
    daemon, _root = follower(tmp_path)
    new = tmp_path / "new"
    new.mkdir()
    watched: list[str] = []

    class SlowWatcher:
        """Adds a watch as slowly as a large tree does."""

        unwatchable: dict[str, tuple[str, ...]] = {}

        def watch(self, path: str) -> bool:
            time.sleep(SLOW)
            watched.append(path)
            return True

    daemon._watcher = SlowWatcher()  # type: ignore[assignment]
    (d,) = daemon.dirs.values()
    daemon.reloader = lambda: Reloaded((d, replace(d, root=str(new))), 20.0, None)

    async def body() -> None:
        daemon._reload(daemon.clock())
        await settle(daemon)

    gap = asyncio.run(loop_gaps(body))
    assert gap < MAX_GAP
    assert watched == [str(new)] and str(new) not in daemon._unwatched
    assert daemon.planner.status(str(new), daemon.clock()).full_needed is not None
