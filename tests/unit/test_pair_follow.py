"""Following takeover's role: the direction rules, orphans, the receive-side marker, status."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from mirrord import orphans
from mirrord.daemon import Daemon, MirrorDir, PassDone
from mirrord.follow import Follower, PeerSeen, RoleSeen, peer_from_status
from mirrord.outcome import FULL_PASS_WANTED, MISSING_ARGS_REFUSED
from mirrord.planner import Cadence, Result
from mirrord.roles import Peer, direction, peer_returned
from mirrord.transfer import Stats, TransferOptions, TransferResult, classify
from mirrord.watchtable import RawEvent
from takeover import control
from takeover.status import read_mirror, render_mirror

STANDBY_PEER = Peer(alive=True, role="STANDBY")
NOW = 1.8e9


# -- direction rules ---------------------------------------------------------------------------


def test_unknown_role_never_pushes_and_says_why() -> None:
    """Without takeover the node neither pushes nor treats changes as received."""
    d = direction(None, STANDBY_PEER, "a", "b")
    assert (d.push, d.receiving) == (False, False)
    assert d.why == "role unknown: takeover not running"


def test_only_active_toward_a_heard_standby_pushes() -> None:
    """ACTIVE (or RELEASING) pushes only to a peer takeover hears as STANDBY."""
    assert direction("ACTIVE", STANDBY_PEER, "a", "b").push
    assert direction("RELEASING", STANDBY_PEER, "a", "b").push
    assert not direction("ACTIVE", Peer(alive=False, role="STANDBY"), "a", "b").push
    assert not direction("ACTIVE", Peer(alive=True, role="STARTING"), "a", "b").push
    assert not direction("ACTIVE", None, "a", "b").push
    assert not direction("ACQUIRING", STANDBY_PEER, "a", "b").push


ACTIVE_PEER = Peer(alive=True, role="ACTIVE")
LOST_ACTIVE = Peer(alive=False, role="ACTIVE")
PASSIVE = ("STANDBY", "STARTING", "ARBITRATING", "FENCING", "ISOLATED", "FAULT")

# role, peer, was receiving -> push, receiving   (the table in mirrord.roles)
DIRECTIONS = [
    *[(r, ACTIVE_PEER, False, False, True) for r in PASSIVE],
    *[(r, Peer(alive=True, role="RELEASING"), False, False, True) for r in PASSIVE],
    # Unknown is not receiving: a passive role with the peer not heard as the source keeps
    # what the node did.
    *[(r, p, False, False, False) for r in PASSIVE for p in (None, STANDBY_PEER, LOST_ACTIVE)],
    *[(r, p, True, False, True) for r in PASSIVE for p in (None, STANDBY_PEER, LOST_ACTIVE)],
    (None, ACTIVE_PEER, False, False, False),
    (None, None, True, False, True),
    ("ACQUIRING", ACTIVE_PEER, False, False, False),
    ("ACQUIRING", None, True, False, True),
    # The source never receives, whatever it did before.
    ("ACTIVE", STANDBY_PEER, True, True, False),
    ("RELEASING", STANDBY_PEER, True, True, False),
    ("ACTIVE", ACTIVE_PEER, True, False, False),
    ("ACTIVE", None, True, False, False),
]


@pytest.mark.parametrize("role, peer, was, push, receiving", DIRECTIONS)
def test_direction_table(
    role: str | None, peer: Peer | None, was: bool, push: bool, receiving: bool
) -> None:
    """A node receives only once the peer is heard as the source, and keeps receiving until it
    becomes the source itself; an unknown or passive reading changes nothing."""
    d = direction(role, peer, "a", "b", was)
    assert (d.push, d.receiving) == (push, receiving)


def test_takeover_restart_on_the_active_keeps_journaling(tmp_path: Path) -> None:
    """An active whose takeover restarts (no role, then STARTING) sets nothing aside and keeps
    journaling its live writes."""
    daemon, root = follower(tmp_path)
    assert daemon.journal is not None
    daemon._apply([RoleSeen("ACTIVE", "t"), PeerSeen(STANDBY_PEER), created(root, "live")])
    daemon._apply([RoleSeen(None, "takeover not running"), created(root, "during")])
    daemon._apply([RoleSeen("STARTING", "subscribed"), created(root, "after")])
    daemon._start_due()
    assert (root / "live").exists() and orphans.load(daemon.state_dir) == []
    assert set(daemon.journal.dirty(str(root))) == {"live", "during", "after"}
    assert not daemon._direction.receiving
    daemon._apply([RoleSeen("ACTIVE", "t")])
    assert daemon._direction.push


def test_takeover_restart_on_the_standby_keeps_receiving(tmp_path: Path) -> None:
    """A standby whose takeover restarts keeps receiving: nothing journaled, no second
    quarantine while takeover is STARTING."""
    daemon, root = follower(tmp_path)
    assert daemon.journal is not None
    daemon._apply([RoleSeen("STANDBY", "t"), PeerSeen(ACTIVE_PEER)])

    async def set_aside() -> None:
        # The (empty) set-aside runs in a worker thread; its record is applied on the loop.
        daemon._start_due()
        daemon._apply([await asyncio.wait_for(daemon._q.get(), 10)])

    asyncio.run(set_aside())
    daemon._apply([RoleSeen(None, "takeover not running"), PeerSeen(None), created(root, "x")])
    daemon._apply([RoleSeen("STARTING", "subscribed"), created(root, "y")])
    assert daemon._direction.receiving and not daemon._quarantine_due
    assert daemon.journal.dirty(str(root)) == {}
    assert (root / "x").exists() and (root / "y").exists()


async def receiving_standby(tmp: Path, epoch: int) -> tuple[Daemon, Path]:
    """Return a daemon receiving as STANDBY under an active peer (its set-aside done)."""
    daemon, root = follower(tmp)
    daemon._apply([RoleSeen("STANDBY", "t", epoch), PeerSeen(ACTIVE_PEER)])
    await run_records(daemon)
    assert daemon._direction.receiving and not orphans.has_source(str(root))
    return daemon, root


async def run_records(daemon: Daemon) -> None:
    """Start what is due and apply the records worker threads send back until none is owed."""
    daemon._start_due()
    while daemon._bg or not daemon._q.empty():
        daemon._apply([await asyncio.wait_for(daemon._q.get(), 10)])
        daemon._start_due()


def test_takeover_lost_on_the_standby_refuses_pushes_until_it_is_back(tmp_path: Path) -> None:
    """takeover lost while receiving: the roots get the gap marker (the peer's pushes are
    refused); back STANDBY with the same epoch, it served nobody: nothing is set aside and
    the marker goes."""

    async def main() -> None:
        daemon, root = await receiving_standby(tmp_path, epoch=3)
        daemon._apply([RoleSeen(None, "takeover not running"), PeerSeen(None)])
        assert orphans.has_source(str(root)) and orphans.gap_began(str(root)) is not None
        assert daemon.status()["follow"]["gap"]
        daemon._apply([RoleSeen("STARTING", "subscribed", 3), created(root, "pushed-before")])
        assert orphans.has_source(str(root))  # STARTING: it may still take over
        daemon._apply([RoleSeen("STANDBY", "start-up election lost", 3), PeerSeen(ACTIVE_PEER)])
        await run_records(daemon)
        assert not orphans.has_source(str(root))
        assert (root / "pushed-before").exists() and orphans.load(daemon.state_dir) == []
        assert not (root / ".hapair-backup" / "resend").exists()
        assert not daemon.status()["follow"]["gap"]

    asyncio.run(main())


def test_standby_that_served_while_mirrord_was_away_sets_its_writes_aside(tmp_path: Path) -> None:
    """Seed 7, ending STANDBY: takeover died on the standby, came back, served (a new epoch)
    and handed over before mirrord heard it; the writes of that time are set aside (listed
    by `mirrord orphans`) before the marker lets the peer's pushes in."""

    async def main() -> None:
        daemon, root = await receiving_standby(tmp_path, epoch=3)
        daemon._apply([RoleSeen(None, "takeover not running"), PeerSeen(None)])
        # Served while mirrord was away: inotify saw it as received, nothing journaled.
        daemon._apply([created(root, "acked-1"), created(root, "acked-2")])
        assert daemon.journal is not None and daemon.journal.dirty(str(root)) == {}
        daemon._apply([RoleSeen("STANDBY", "subscribed", 4), PeerSeen(ACTIVE_PEER)])
        assert orphans.has_source(str(root))  # pushes still refused until the set-aside is done
        await run_records(daemon)
        assert sorted(o.path for o in orphans.load(daemon.state_dir)) == ["acked-1", "acked-2"]
        assert not (root / "acked-1").exists()
        assert not orphans.has_source(str(root))
        # A push in flight as the gap began may be among them: the peer is asked for a full
        # pass (its next push is refused once, mirrord/pushcheck.sh).
        assert (root / ".hapair-backup" / "resend").exists()

    asyncio.run(main())


def test_node_releasing_after_the_gap_journals_its_writes_for_the_flush(tmp_path: Path) -> None:
    """Seed 7, ending RELEASING: the writes made while mirrord was away are walked and
    journaled (the final flush waits for the walk), and the marker becomes this node's."""

    async def main() -> None:
        daemon, root = await receiving_standby(tmp_path, epoch=3)
        daemon._apply([RoleSeen(None, "takeover not running"), PeerSeen(None)])
        daemon._apply([created(root, "acked")])
        daemon._apply([RoleSeen("RELEASING", "subscribed", 4), PeerSeen(STANDBY_PEER)])
        assert daemon._direction.push and daemon._walks_pending == 1
        assert not daemon._flushed(str(root), NOW)  # the flush waits for the walk
        await run_records(daemon)
        assert daemon.journal is not None and "acked" in daemon.journal.dirty(str(root))
        assert orphans.has_source(str(root)) and orphans.gap_began(str(root)) is None
        await stop_passes(daemon)

    asyncio.run(main())


async def stop_passes(daemon: Daemon) -> None:
    """Stop the passes still running and wait until their rsync is reaped, as the daemon's
    shutdown does. Left to asyncio.run's exit, a pass whose rsync was still connecting its
    pipes hung the test (Python 3.11: the exit cancels asyncio's own pipe-connecting task too,
    CPython gh-125502; seen with test_rsyncd run first, 2 runs in 3)."""
    tasks = [task for task, _id in daemon._tasks.values() if not task.done()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def restarted(daemon: Daemon, root: Path) -> Daemon:
    """Return a new daemon on the same state dir and root, as a restart of mirrord (killed:
    its journal closed as a crash leaves it), its journal open."""
    assert daemon.journal is not None
    daemon.journal.close()
    again, _ = follower(daemon.state_dir.parent, root=root)
    return again


def test_restarted_standby_keeps_the_pushes_that_land_before_it_hears_takeover(
    tmp_path: Path,
) -> None:
    """Campaign seed 11 (CI, stop 18): mirrord on the standby was killed and restarted; the
    active's pushes went on (rsync needs only sshd), and those landing between the restart and
    takeover's answer were journaled, then set aside as orphans: the active counted them sent
    and the trees stayed apart. A standby whose last run received starts receiving."""

    async def main() -> None:
        daemon, root = await receiving_standby(tmp_path, epoch=3)
        again = restarted(daemon, root)
        # The peer's push lands before takeover is heard.
        again._apply([created(root, "r0000434")])
        again._apply([RoleSeen("STANDBY", "subscribed", 3), PeerSeen(ACTIVE_PEER)])
        await run_records(again)
        assert (root / "r0000434").exists() and orphans.load(again.state_dir) == []
        assert again.journal is not None and again.journal.dirty(str(root)) == {}
        assert again._direction.receiving and not again._direction.push

    asyncio.run(main())


def test_restarted_standby_without_takeover_yet_ends_its_gap_by_the_epochs_it_knew(
    tmp_path: Path,
) -> None:
    """Restarted before takeover answers (a reboot): receiving, the gap opens (pushes refused),
    and takeover back STANDBY at the epoch the last run knew sets nothing aside: a push that
    was landing as the marker went down stays (the epoch unknown, the gap would walk and set
    it aside, and the peer would count it sent)."""

    async def main() -> None:
        daemon, root = await receiving_standby(tmp_path, epoch=3)
        again = restarted(daemon, root)
        again._apply([RoleSeen(None, "takeover not running"), PeerSeen(None)])
        assert orphans.has_source(str(root))  # the gap: pushes refused
        again._apply([created(root, "landing")])
        again._apply([RoleSeen("STANDBY", "subscribed", 3), PeerSeen(ACTIVE_PEER)])
        await run_records(again)
        assert (root / "landing").exists() and orphans.load(again.state_dir) == []
        assert not orphans.has_source(str(root))

    asyncio.run(main())


def test_restarted_standby_that_served_meanwhile_sets_its_writes_aside(tmp_path: Path) -> None:
    """... but back STANDBY at a higher epoch (it served after mirrord restarted, before
    takeover was heard), what changed since the marker is set aside."""

    async def main() -> None:
        daemon, root = await receiving_standby(tmp_path, epoch=3)
        again = restarted(daemon, root)
        again._apply([RoleSeen(None, "takeover not running"), PeerSeen(None)])
        again._apply([created(root, "served")])
        again._apply([RoleSeen("STANDBY", "subscribed", 5), PeerSeen(ACTIVE_PEER)])
        await run_records(again)
        assert [o.path for o in orphans.load(again.state_dir)] == ["served"]
        assert not orphans.has_source(str(root))

    asyncio.run(main())


def test_restart_after_the_node_was_the_source_journals_again(tmp_path: Path) -> None:
    """A node that became the source since it last set orphans aside (the receiving record is
    dropped as it stops receiving) starts journaling, its writes kept."""

    async def main() -> None:
        daemon, root = await receiving_standby(tmp_path, epoch=3)
        daemon._apply([RoleSeen("ACTIVE", "takeover", 4), PeerSeen(STANDBY_PEER)])
        assert daemon.journal is not None and not daemon.journal.received(str(root))
        again = restarted(daemon, root)
        assert not again._direction.receiving
        again._apply([created(root, "live")])
        assert again.journal is not None and "live" in again.journal.dirty(str(root))

    asyncio.run(main())


def test_restart_with_the_marker_or_dirty_paths_left_journals(tmp_path: Path) -> None:
    """The receiving record alone does not resume receiving: a root still marked (a gap the
    last run did not settle), or dirty paths, start journaling, and the record is dropped."""

    async def main() -> None:
        daemon, root = await receiving_standby(tmp_path, epoch=3)
        daemon._apply([RoleSeen(None, "takeover not running"), PeerSeen(None)])
        assert orphans.has_source(str(root))
        again = restarted(daemon, root)
        assert not again._direction.receiving
        assert again.journal is not None and not again.journal.received(str(root))

    asyncio.run(main())


def test_crashed_source_sets_aside_a_file_moved_in_after_its_last_confirmed_pass(
    tmp_path: Path,
) -> None:
    """A node that crashed as the source sets aside what changed since its last confirmed
    pass began, found by ctime: a file moved in keeps its old mtime (the walk compared mtimes
    and missed it, and the peer's full pass then deleted it here, kept only in the backup
    area). The journal may not hold it: its last changes are committed together, later."""

    async def main() -> None:
        daemon, root = follower(tmp_path)
        assert daemon.journal is not None
        began = time.time() - 5
        pid = daemon.journal.pass_started(str(root), "incremental", "changes", began)
        daemon.journal.pass_finished(pid, began + 0.1, "ok")
        orphans.set_source(str(root), "a", began - 60)
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        (elsewhere / "moved").write_text("kept")
        os.utime(elsewhere / "moved", (began - 3600, began - 3600))
        os.rename(elsewhere / "moved", root / "moved")
        daemon._apply([RoleSeen("STANDBY", "t", 2), PeerSeen(ACTIVE_PEER)])
        await run_records(daemon)
        assert [o.path for o in orphans.load(daemon.state_dir)] == ["moved"]
        assert not (root / "moved").exists()

    asyncio.run(main())


def test_crashed_source_sets_aside_a_write_its_last_pass_began_too_soon_to_list(
    tmp_path: Path,
) -> None:
    """A write made just before the last confirmed pass began, whose event reached mirrord
    after that pass took its snapshot, was never sent: the crash lost it from memory (the
    journal writes a change only once it is 2 s old), and the walk from the pass's start
    missed it. The walk starts SET_ASIDE_MARGIN earlier."""

    async def main() -> None:
        daemon, root = follower(tmp_path)
        assert daemon.journal is not None
        (root / "late").write_text("acknowledged")
        began = os.stat(root / "late").st_ctime + 0.3
        pid = daemon.journal.pass_started(str(root), "incremental", "changes", began)
        daemon.journal.pass_finished(pid, began + 0.1, "ok")
        orphans.set_source(str(root), "a", began - 60)
        daemon._apply([RoleSeen("STANDBY", "t", 2), PeerSeen(ACTIVE_PEER)])
        await run_records(daemon)
        assert [o.path for o in orphans.load(daemon.state_dir)] == ["late"]

    asyncio.run(main())


def test_peer_returned_only_after_it_was_lost() -> None:
    """A peer heard again after being lost has returned; first sight and steady state have not."""
    lost = Peer(alive=False, role="ACTIVE")
    assert peer_returned(lost, STANDBY_PEER)
    assert not peer_returned(None, STANDBY_PEER)
    assert not peer_returned(STANDBY_PEER, STANDBY_PEER)
    assert not peer_returned(lost, lost)


def test_peer_from_status_ignores_stale_documents() -> None:
    """A status document older than three intervals says nothing about the peer."""
    doc = {"written": NOW, "status_interval": 1.0, "peer": {"role": "STANDBY", "alive": True}}
    assert peer_from_status(doc, NOW + 0.5) == STANDBY_PEER
    assert peer_from_status(doc, NOW + 10) is None
    assert peer_from_status({"written": NOW}, NOW) == Peer(alive=False, role=None)
    assert peer_from_status(["not", "a", "dict"], NOW) is None


# -- orphans and the source marker ---------------------------------------------------------------


def test_quarantine_moves_files_and_lists_deletions(tmp_path: Path) -> None:
    """Dirty files move into a dated recovery area; a vanished path is listed with no size."""
    root = tmp_path / "data"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "x").write_text("xx")
    moved, failed = orphans.quarantine(str(root), ["sub/x", "gone", "sub"], NOW, "test")
    assert failed == []
    assert not (root / "sub" / "x").exists()
    by_path = {o.path: o for o in moved}
    assert set(by_path) == {"sub/x", "gone"}
    x = by_path["sub/x"]
    assert x.recovered is not None and Path(x.recovered).read_text() == "xx" and x.size == 2
    assert "/.hapair-backup/recovery-" in x.recovered
    assert by_path["gone"].recovered is None and by_path["gone"].size is None
    # The peer may hold what moved: the next push is refused once, asking for a full pass.
    assert (root / ".hapair-backup" / "resend").exists()


def test_quarantine_of_nothing_asks_for_no_full_pass(tmp_path: Path) -> None:
    """A set-aside that finds nothing to move (no paths, or only a directory, which is a
    container) leaves the peer's next push alone."""
    root = tmp_path / "data"
    (root / "sub").mkdir(parents=True)
    assert orphans.quarantine(str(root), [], NOW, "test") == ([], [])
    assert orphans.quarantine(str(root), ["sub"], NOW, "test") == ([], [])
    assert (root / "sub").is_dir()
    assert not (root / ".hapair-backup" / "resend").exists()


def test_manifest_round_trip_and_find(tmp_path: Path) -> None:
    """Recorded orphans load back, and are found by original or recovered path."""
    root = tmp_path / "data"
    root.mkdir()
    (root / "f").write_text("f")
    moved, _ = orphans.quarantine(str(root), ["f"], NOW, "test")
    orphans.record(tmp_path, moved)
    loaded = orphans.load(tmp_path)
    assert loaded == moved
    assert orphans.find(loaded, str(root / "f")) == moved[0]
    assert orphans.find(loaded, str(moved[0].recovered)) == moved[0]
    assert orphans.find(loaded, str(root / "other")) is None


def test_stage_restore_uses_a_conflict_name(tmp_path: Path) -> None:
    """A restore stages the file under a name that never equals the original."""
    root = tmp_path / "data"
    root.mkdir()
    (root / "f").write_text("orphan")
    moved, _ = orphans.quarantine(str(root), ["f"], NOW, "test")
    staging, rel = orphans.stage_restore(moved[0], "a")
    assert rel.startswith("f.orphan-a-") and rel != "f"
    assert (staging / rel).read_text() == "orphan"


# -- the daemon's role handling ------------------------------------------------------------------


def follower(tmp: Path, root: Path | None = None) -> tuple[Daemon, Path]:
    """Return a following daemon with its journal open (no loop), and its root (made, unless
    given)."""
    if root is None:
        root = tmp / "data"
        root.mkdir()
    d = MirrorDir(root=str(root), volatility="hot", cadence=Cadence(1.0, 0.5, 5.0),
                  options=TransferOptions())  # fmt: skip
    daemon = Daemon([d], peer=None, state_dir=tmp / "state", run_dir=tmp / "run",
                    local_dest=tmp / "dest", follow=True, node="a", peer_name="b",
                    clock=lambda: NOW)  # fmt: skip
    daemon.run_dir.mkdir(exist_ok=True)
    daemon.journal = daemon._open_journal(NOW)
    return daemon, root


def created(root: Path, name: str) -> RawEvent:
    """Return the event of `name` created under root (and create it)."""
    (root / name).write_text(name)
    return RawEvent(str(root), "created", str(root / name), "", False)


def test_received_changes_are_not_journaled(tmp_path: Path) -> None:
    """Changes seen while STANDBY under an active peer are the peer's writes: not journaled;
    after ACTIVE they are."""
    daemon, root = follower(tmp_path)
    assert daemon.journal is not None
    daemon._apply([RoleSeen("STANDBY", "test"), PeerSeen(ACTIVE_PEER), created(root, "in")])
    assert daemon.journal.dirty(str(root)) == {}
    daemon._apply([RoleSeen("ACTIVE", "test"), PeerSeen(STANDBY_PEER), created(root, "local")])
    assert set(daemon.journal.dirty(str(root))) == {"local"}
    assert orphans.has_source(str(root))


def test_becoming_standby_sets_orphans_aside_then_accepts_pushes(tmp_path: Path) -> None:
    """Unconfirmed changes move to recovery and the manifest on entering STANDBY; then the
    marker is gone (pushes accepted) and the journal is empty."""
    daemon, root = follower(tmp_path)
    assert daemon.journal is not None
    daemon._apply([RoleSeen("ACTIVE", "test"), PeerSeen(STANDBY_PEER), created(root, "late")])
    assert daemon._direction.push
    daemon._apply([RoleSeen("STANDBY", "operator standby")])

    async def set_aside() -> None:
        daemon._start_due()
        assert (root / "late").exists()  # the peer is not the source yet
        daemon._apply([PeerSeen(ACTIVE_PEER)])
        # The moves run in a worker thread; their record is applied on the loop.
        daemon._start_due()
        daemon._apply([await asyncio.wait_for(daemon._q.get(), 10)])

    asyncio.run(set_aside())
    assert not (root / "late").exists()
    assert [o.path for o in orphans.load(daemon.state_dir)] == ["late"]
    assert daemon.journal.dirty(str(root)) == {}
    assert not orphans.has_source(str(root))
    follow = daemon.status()["follow"]
    assert follow["role"] == "STANDBY" and not follow["pushing"] and follow["receiving"]


def test_peer_return_owes_a_full_pass(tmp_path: Path) -> None:
    """An active whose peer comes back after being lost owes it a full pass."""
    daemon, root = follower(tmp_path)
    daemon._apply([RoleSeen("ACTIVE", "t"), PeerSeen(STANDBY_PEER)])
    plan = daemon.planner.due(NOW)[0]  # the start-up full pass (the journal is new)
    daemon.planner.pass_started(plan, NOW)
    daemon.planner.pass_finished(str(root), Result.OK, NOW)

    def owed() -> str | None:
        return daemon.planner.status(str(root), NOW).full_needed

    assert owed() is None
    daemon._apply([PeerSeen(Peer(alive=False, role="STANDBY"))])
    assert owed() is None
    daemon._apply([PeerSeen(STANDBY_PEER)])
    assert owed() == "peer b returned"


# -- takeover status ---------------------------------------------------------------------------


def test_takeover_status_shows_mirroring(tmp_path: Path) -> None:
    """`takeover status` reads mirrord's status file: direction, RPO, last pass, last flush."""
    doc = {
        "pid": os.getpid(), "node": "a", "updated": NOW, "status_interval": 1.0,
        "directories": [{"directory": "/srv/data", "rpo": 1.25, "dirty": 3,
                         "last_finished": NOW - 2, "last": {"result": "ok", "kind": "incr"}}],
        "follow": {"following": True, "pushing": True, "receiving": False, "peer": "b",
                   "why": "role ACTIVE: pushing a -> b",
                   "last_flush": {"started": NOW - 5, "ended": NOW - 4.5, "ok": True}},
    }  # fmt: skip
    (tmp_path / "mirrord.json").write_text(json.dumps(doc))
    mirror = read_mirror(tmp_path, NOW)
    assert mirror["state"] == "running"
    assert mirror["directories"][0]["direction"] == "a -> b"
    text = render_mirror(mirror, NOW)
    assert "/srv/data" in text and "a -> b" in text and "RPO   1.2s" in text
    assert "last final flush: complete in 0.50s" in text
    assert read_mirror(tmp_path / "none", NOW)["state"] == "not running"


# -- the follower against takeover's real control server ---------------------------------------


class StatusHandler:
    """A control handler whose node is ACTIVE."""

    def status(self) -> dict[str, Any]:
        """Return a minimal status document."""
        return {"local": {"role": "ACTIVE"}, "epoch": 1}

    def command(self, cmd: str, args: dict[str, Any]) -> str | None:
        """Accept every command."""
        return None


class GatedFlush:
    """A final flush that says it began and returns only once `proceed` is set."""

    def __init__(self) -> None:
        self.flushed = asyncio.Event()
        self.proceed = asyncio.Event()

    async def __call__(self) -> None:
        """Run the flush."""
        self.flushed.set()
        await self.proceed.wait()


def test_follower_flushes_under_the_inhibitor_and_sees_takeover_go(tmp_path: Path) -> None:
    """The follower posts the role, holds takeover's release until its flush returned, and
    posts "takeover not running" when the control server goes away."""

    async def main() -> None:
        server = control.ControlServer(control.socket_path(tmp_path), StatusHandler())
        await server.start()
        posted: asyncio.Queue[Any] = asyncio.Queue()
        flush = GatedFlush()
        follower = Follower(tmp_path, posted.put_nowait, flush, lambda: NOW)
        task = asyncio.ensure_future(follower.run())

        async def next_role() -> RoleSeen:
            while True:
                rec = await asyncio.wait_for(posted.get(), 10)
                if isinstance(rec, RoleSeen):
                    return rec

        assert (await next_role()).role == "ACTIVE"
        server.publish(control.role_event("ACTIVE", "RELEASING", "operator standby", 1, NOW))
        assert (await next_role()).role == "RELEASING"
        await asyncio.wait_for(flush.flushed.wait(), 10)
        assert server.inhibitors.names() == ["mirrord"]  # held while the flush runs
        flush.proceed.set()
        await asyncio.wait_for(server.inhibitors.wait_clear(), 10)
        await server.close()
        gone = await next_role()
        assert gone.role is None and gone.reason == "takeover not running"
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())


class ReleasingHandler(StatusHandler):
    """A control handler whose node is RELEASING (takeover restarted, served, hands over)."""

    def status(self) -> dict[str, Any]:
        """Return a minimal status document."""
        return {"local": {"role": "RELEASING"}, "epoch": 4}


def test_follower_subscribing_during_releasing_flushes_then_releases(tmp_path: Path) -> None:
    """A follower that subscribes while takeover already waits in RELEASING (it was not
    subscribed as the release began) holds the inhibitor, flushes, then releases it."""

    async def main() -> None:
        server = control.ControlServer(
            control.socket_path(tmp_path), ReleasingHandler(), expected=["mirrord"]
        )
        await server.start()
        server.publish(control.role_event("ACTIVE", "RELEASING", "operator standby", 4, NOW))
        assert server.inhibitors.awaited() == ["mirrord"]
        posted: asyncio.Queue[Any] = asyncio.Queue()
        flush = GatedFlush()
        task = asyncio.ensure_future(Follower(tmp_path, posted.put_nowait, flush, time.time).run())
        await asyncio.wait_for(flush.flushed.wait(), 10)
        assert server.inhibitors.names() == ["mirrord"]
        seen = [r for r in [posted.get_nowait() for _ in range(posted.qsize())]
                if isinstance(r, RoleSeen)]  # fmt: skip
        assert seen[0] == RoleSeen("RELEASING", "subscribed", 4)
        flush.proceed.set()
        await asyncio.wait_for(server.inhibitors.wait_clear(), 10)
        assert server.inhibitors.awaited() == []
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await server.close()

    asyncio.run(main())


# -- passes stop when the node stops pushing -------------------------------------------------


def rsync_of(root: Path) -> list[int]:
    """Return the pids of processes whose command line names `root` (its rsync passes)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(str(root).encode() in a for a in argv):
            pids.append(int(entry.name))
    return pids


async def slow_pass_under_takeover(
    tmp: Path, flush_timeout: float
) -> tuple[control.ControlServer, Daemon, Path, asyncio.Task[None]]:
    """Start takeover's control server (ACTIVE, peer STANDBY) and a following daemon whose
    start-up full pass sends a 4 MiB file at 16 KiB/s; return once that rsync runs."""
    run = tmp / "run"
    run.mkdir()
    (run / "takeover.json").write_text(json.dumps(
        {"written": time.time(), "status_interval": 3600.0,
         "peer": {"role": "STANDBY", "alive": True}}
    ))  # fmt: skip
    server = control.ControlServer(control.socket_path(run), StatusHandler())
    await server.start()
    root = tmp / "data"
    root.mkdir()
    (root / "big").write_bytes(os.urandom(4 << 20))
    d = MirrorDir(root=str(root), volatility="hot", cadence=Cadence(1.0, 0.5, 5.0),
                  options=TransferOptions(bwlimit=16))  # fmt: skip
    daemon = Daemon([d], peer=None, state_dir=tmp / "state", run_dir=run, local_dest=tmp / "dest",
                    follow=True, node="a", peer_name="b", flush_timeout=flush_timeout)  # fmt: skip
    task = asyncio.ensure_future(daemon.run())
    for _ in range(3000):  # generous: 60 s on a loaded host
        if rsync_of(root) or task.done():
            break
        await asyncio.sleep(0.02)
    if not rsync_of(root):
        await server.close()
    assert rsync_of(root), "the start-up full pass never started"
    return server, daemon, root, task


async def stop_daemon(
    server: control.ControlServer, daemon: Daemon, task: asyncio.Task[None]
) -> None:
    """Stop the daemon, then the control server."""
    daemon.stop()
    await asyncio.wait_for(task, 60)
    await server.close()


def test_release_inhibitor_dropped_only_after_the_running_pass_is_reaped(tmp_path: Path) -> None:
    """A final flush that times out stops the running pass and reaps its rsync before takeover
    may hand over; no pass starts afterwards while the role still says RELEASING."""

    async def main() -> None:
        server, daemon, root, task = await slow_pass_under_takeover(tmp_path, 0.5)
        try:
            server.publish(control.role_event("ACTIVE", "RELEASING", "operator standby", 1, NOW))
            for _ in range(500):
                if server.inhibitors.names():
                    break
                await asyncio.sleep(0.01)
            assert server.inhibitors.names() == ["mirrord"]
            await asyncio.wait_for(server.inhibitors.wait_clear(), 60)
            assert rsync_of(root) == []
            await asyncio.sleep(0.5)  # the planner retries the pass soon: it must not start
            assert rsync_of(root) == []
            flush = daemon.status()["follow"]["last_flush"]
            assert not flush["ok"] and str(root) in flush["unsynced"]
            (last,) = daemon.status()["directories"]
            assert last["last"]["result"] == "retry"
            assert last["last"]["detail"].startswith("stopped: final flush over")
        finally:
            await stop_daemon(server, daemon, task)

    asyncio.run(main())


def test_a_pass_stops_when_the_node_stops_pushing_without_a_flush(tmp_path: Path) -> None:
    """An urgent move away from ACTIVE (no inhibitor to wait for) stops the running pass: its
    rsync is reaped long before it could have finished, and its paths stay owed."""

    async def main() -> None:
        server, daemon, root, task = await slow_pass_under_takeover(tmp_path, 20.0)
        try:
            server.publish(control.role_event("ACTIVE", "FAULT", "resource failed", 1, NOW))
            for _ in range(1000):  # the pass alone would take over four minutes
                if not rsync_of(root):
                    break
                await asyncio.sleep(0.02)
            assert rsync_of(root) == []
            for _ in range(500):
                (st,) = daemon.status()["directories"]
                if st["last"]["result"]:
                    break
                await asyncio.sleep(0.01)
            assert st["last"]["result"] == "retry" and st["full_needed"] is not None
        finally:
            await stop_daemon(server, daemon, task)

    asyncio.run(main())


def test_a_pass_refused_for_a_deleted_path_owes_a_full_pass(tmp_path: Path) -> None:
    """The peer's rsync refusing a deleted path (Debian 12's 3.2.7) makes the next pass a full
    one, which carries the deletion without listing it; other failures do not."""
    daemon, root = follower(tmp_path)

    def result(stderr: str) -> TransferResult:
        return TransferResult(rc=2, outcome=classify(2, stderr), stats=Stats(), duration=0.1,
                              stderr=stderr)  # fmt: skip

    assert daemon.journal is not None
    owed: list[tuple[str, str]] = []
    daemon.journal.need_full = lambda r, why, _wall: owed.append((r, why))  # type: ignore[method-assign]

    def refuse(stderr: str) -> None:
        """An incremental pass of one dirty path ends with this rsync error (the daemon's
        _finish: the planner and the journal learn what it owes)."""
        daemon.planner.changes(str(root), ["x"], NOW)
        daemon.planner.request(str(root), NOW)  # despite the backoff of the one before
        (plan,) = daemon.planner.due(NOW)
        daemon.planner.pass_started(plan, NOW)
        out = daemon._outcome(result(stderr))
        daemon._finish(PassDone(plan, 0, 0, NOW, NOW, out), NOW)

    refuse("rsync error: protocol version mismatch\n")
    assert owed == []
    refused = "invalid file mode 00 for gone [Receiver]\nrsync error: protocol incompatibility\n"
    refuse(refused)
    assert owed == [(str(root), MISSING_ARGS_REFUSED)]
    # The push check's request after a set-aside (mirrord/pushcheck.sh, step 4).
    wanted = (f"mirrord: {root}: this node set aside files a push may have written; it wants a "
              "full pass\n@ERROR: pre-xfer exec returned failure (1)\n")  # fmt: skip
    refuse(wanted)
    assert owed[-1] == (str(root), FULL_PASS_WANTED)
