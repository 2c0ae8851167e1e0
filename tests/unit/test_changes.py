"""Change tracking: event -> path coalescing, overflow detection, watch budget, real inotify."""

from __future__ import annotations

import os
import queue
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from mirrord import changes
from mirrord.changes import (
    PATH_MAX,
    Survey,
    Watcher,
    coalesce,
    judge_watch_budget,
    paths_of,
    read_max_user_watches,
    relative,
    survey,
    too_deep_to_watch,
)
from mirrord.watchtable import Overflow, RawEvent, RootGone, WatchTable
from tests.unit.test_transfer import make_at

R = "/srv/mail"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/srv/mail", "."),
        ("/srv/mail/a/b", "a/b"),
        ("/srv/mailbox/x", None),
        ("/etc/passwd", None),
        ("/srv/mail/.hapair-backup/2026-11-23T02Z/a", None),
        ("/srv/mail/.hapair-backup", None),
        ("/srv/mail/.hapair-backupx", ".hapair-backupx"),
    ],
)
def test_relative(path: str, expected: str | None) -> None:
    """Paths become root-relative; outside paths and the backup area are dropped."""
    assert relative(R, path) == expected


def test_rename_records_both_paths() -> None:
    """A file rename dirties the old and the new path."""
    ev = RawEvent(R, "moved", f"{R}/a", f"{R}/b", is_dir=False)
    assert paths_of(ev) == ["a", "b"]


def test_coalesce_groups_by_directory() -> None:
    """Repeated events for one path coalesce; directories stay apart."""
    evs = [
        RawEvent(R, "modified", f"{R}/a", "", False),
        RawEvent(R, "closed", f"{R}/a", "", False),
        RawEvent(R, "deleted", f"{R}/b", "", False),
        RawEvent("/srv/www", "created", "/srv/www/i.html", "", False),
    ]
    assert coalesce(evs, walk=False) == {R: {"a", "b"}, "/srv/www": {"i.html"}}


def test_moved_in_directory_is_walked(tmp_path: Path) -> None:
    """A directory renamed within the root dirties its old path and all of its new contents."""
    root = str(tmp_path)
    (tmp_path / "new/sub").mkdir(parents=True)
    (tmp_path / "new/sub/f").write_text("x")
    ev = RawEvent(root, "moved", f"{root}/old", f"{root}/new", is_dir=True)
    assert set(paths_of(ev)) == {"old", "new", "new/sub", "new/sub/f"}


def test_created_directory_is_walked(tmp_path: Path) -> None:
    """A created directory dirties its contents too (rsync --files-from does not recurse)."""
    root = str(tmp_path)
    (tmp_path / "d").mkdir()
    (tmp_path / "d/f").write_text("x")
    ev = RawEvent(root, "created", f"{root}/d", "", is_dir=True)
    assert set(paths_of(ev)) == {"d", "d/f"}


@pytest.mark.parametrize(
    ("dirs", "limit", "ok", "words"),
    [
        (100, 8192, True, "dirs=100"),
        (7000, 8192, True, "nearly exhausted"),
        (9000, 8192, False, "exceeded"),
        (5, None, True, "unknown"),
    ],
)
def test_watch_budget(dirs: int, limit: int | None, ok: bool, words: str) -> None:
    """The directory count is judged against max_user_watches with a warning margin."""
    b = judge_watch_budget(dirs, limit)
    assert b.ok is ok
    assert words in b.message


def test_survey_counts_directories_but_not_the_backup_area(tmp_path: Path) -> None:
    """Every directory needs a watch except those in the backup area."""
    (tmp_path / "a/b").mkdir(parents=True)
    (tmp_path / ".hapair-backup/x").mkdir(parents=True)
    assert survey(str(tmp_path)) == Survey(3, ())


def test_survey_names_the_topmost_directories_too_deep_to_watch(tmp_path: Path) -> None:
    """A directory whose absolute path is PATH_MAX bytes or longer is named (not what lies
    below it); one a byte shorter is watchable and counted."""
    root = str(tmp_path)
    fits = PATH_MAX - 1 - len(root) - 1  # relative length of the longest watchable path
    parts = ["d" * 200] * ((fits - 2) // 201)
    last = fits - len("/".join(parts)) - 1
    shallow = "/".join([*parts, "s" * last])
    assert len(root) + 1 + len(shallow) == PATH_MAX - 1
    make_at(tmp_path, f"{shallow}/f", b"x")
    deep = "/".join([*parts, "t" * (last + 1)])
    make_at(tmp_path, f"{deep}/below/f", b"x")
    assert not too_deep_to_watch(f"{root}/{shallow}") and too_deep_to_watch(f"{root}/{deep}")
    found = survey(root)
    assert found.unwatchable == (deep,)
    assert found.directories == 1 + len(parts) + 1


def test_read_max_user_watches(tmp_path: Path) -> None:
    """The limit is read from procfs; an unreadable file gives None."""
    f = tmp_path / "w"
    f.write_text("8192\n")
    assert read_max_user_watches(f) == 8192
    assert read_max_user_watches(tmp_path / "missing") is None


# -- real inotify ------------------------------------------------------------------------


def drain_until(sink: queue.Queue[Any], want: set[str], root: str) -> set[str]:
    """Collect dirty paths from the watcher until `want` is covered (5 s bound per record)."""
    seen: set[str] = set()
    while not want <= seen:
        rec = sink.get(timeout=5)
        if isinstance(rec, RawEvent):
            seen |= set(paths_of(rec))
    return seen


@pytest.fixture
def watched(tmp_path: Path) -> Any:
    """A watcher over tmp_path/root with its queue."""
    root = tmp_path / "root"
    root.mkdir()
    sink: queue.Queue[Any] = queue.Queue()
    w = Watcher([str(root)], sink)
    assert w.start() == []
    yield root, sink
    w.stop()


def test_watcher_reports_creates_edits_renames_chmod(watched: Any) -> None:
    """Real inotify events arrive as relative dirty paths, renames with both names."""
    root, sink = watched
    (root / "a").write_text("1")
    (root / "a").rename(root / "b")
    (root / "d").mkdir()
    (root / "d/f").write_text("2")
    os.chmod(root / "d/f", 0o600)
    os.symlink("b", root / "l")
    seen = drain_until(sink, {"a", "b", "d", "d/f", "l"}, str(root))
    assert not any(p.startswith(".hapair-backup") for p in seen)


def test_watcher_ignores_reads(watched: Any) -> None:
    """Reading files (as rsync does) puts nothing on the queue."""
    root, sink = watched
    (root / "r").write_text("x")
    drain_until(sink, {"r"}, str(root))
    while True:  # drain what the write produced (close-write, parent modified)
        try:
            sink.get(timeout=0.2)
        except queue.Empty:
            break
    for _ in range(5):
        (root / "r").read_text()
    os.listdir(root)
    (root / "marker").write_text("m")
    first = sink.get(timeout=5)
    assert isinstance(first, RawEvent)
    assert "r" not in paths_of(first)


def test_watcher_reports_root_deletion(tmp_path: Path) -> None:
    """Deleting the watched root itself yields a RootGone record."""
    root = tmp_path / "root"
    root.mkdir()
    sink: queue.Queue[Any] = queue.Queue()
    w = Watcher([str(root)], sink)
    w.start()
    try:
        root.rmdir()
        while not isinstance(rec := sink.get(timeout=5), RootGone):
            pass
        assert rec.directory == str(root)
    finally:
        w.stop()


def test_unwatchable_root_is_reported(tmp_path: Path) -> None:
    """A root that does not exist cannot be watched and is returned by start()."""
    sink: queue.Queue[Any] = queue.Queue()
    w = Watcher([str(tmp_path / "missing")], sink)
    try:
        assert w.start() == [str(tmp_path / "missing")]
    finally:
        w.stop()


def test_watching_costs_little_memory_per_directory(tmp_path: Path) -> None:
    """The watch table holds about 55 bytes per directory (watchdog's observer held 534, which at
    a million files in 20,000 directories was a quarter of mirrord's memory)."""
    root = tmp_path / "root"
    for i in range(40):
        for j in range(50):
            (root / f"d{i}" / f"e{j}").mkdir(parents=True)
    sink: queue.Queue[Any] = queue.Queue()
    w = Watcher([str(root)], sink)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        assert w.start() == []
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
        w.stop()
    assert w.watches == 1 + 40 + 40 * 50
    assert held / w.watches < 100, held / w.watches


def test_a_read_that_fails_is_an_overflow_and_the_reader_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure while reading events (a bug, an error) puts an Overflow (full passes) and the
    reader keeps reading: never a dead thread behind roots the daemon thinks watched."""
    root = tmp_path / "root"
    root.mkdir()
    feed = WatchTable.feed
    failures = [RuntimeError("bug")]

    def failing_once(self: WatchTable, events: Any, now: float) -> Any:
        if failures:
            raise failures.pop()
        return feed(self, events, now)

    monkeypatch.setattr(WatchTable, "feed", failing_once)
    monkeypatch.setattr(changes, "READ_RETRY", 0.05)
    sink: queue.Queue[Any] = queue.Queue()
    w = Watcher([str(root)], sink)
    assert w.start() == []
    try:
        (root / "lost").write_text("x")
        assert sink.get(timeout=5) == Overflow(None)
        (root / "after").write_text("y")
        drain_until(sink, {"after"}, str(root))
    finally:
        w.stop()
