"""The watch table: what inotify events mean for the mirror, table-tested without inotify."""

from __future__ import annotations

from typing import Any

import pytest

from mirrord.watchtable import (
    IN_ATTRIB,
    IN_CLOSE_WRITE,
    IN_CREATE,
    IN_DELETE,
    IN_DELETE_SELF,
    IN_IGNORED,
    IN_ISDIR,
    IN_MODIFY,
    IN_MOVE_SELF,
    IN_MOVED_FROM,
    IN_MOVED_TO,
    IN_Q_OVERFLOW,
    IN_UNMOUNT,
    LOCATED_KEEP,
    PAIR_WAIT,
    Overflow,
    RawEvent,
    Reconcile,
    RootGone,
    Unwatch,
    WatchBelow,
    WatchTable,
)

R, W = "/srv/mail", "/srv/www"
# Watch descriptors: 1 = R, 2 = R/cur, 3 = R/cur/sub, 9 = W.
ROOT, CUR, SUB, WWW = 1, 2, 3, 9


def table() -> WatchTable:
    """R with cur/ and cur/sub/ watched, and the root W."""
    t = WatchTable()
    t.add_root(ROOT, R)
    t.add_dir(CUR, ROOT, b"cur")
    t.add_dir(SUB, CUR, b"sub")
    t.add_root(WWW, W)
    return t


def ev(kind: str, src: str, dest: str = "", is_dir: bool = False, root: str = R) -> RawEvent:
    """The record expected."""
    return RawEvent(root, kind, src, dest, is_dir)


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        ([(CUR, IN_CREATE, 0, b"m1")], [ev("created", f"{R}/cur/m1")]),
        ([(CUR, IN_MODIFY, 0, b"m1")], [ev("modified", f"{R}/cur/m1")]),
        ([(SUB, IN_ATTRIB, 0, b"m1")], [ev("attrib", f"{R}/cur/sub/m1")]),
        ([(ROOT, IN_CLOSE_WRITE, 0, b"m1")], [ev("closed", f"{R}/m1")]),
        ([(CUR, IN_DELETE, 0, b"m1")], [ev("deleted", f"{R}/cur/m1")]),
        ([(WWW, IN_CREATE, 0, b"i.html")], [ev("created", f"{W}/i.html", root=W)]),
        (
            [(CUR, IN_CREATE | IN_ISDIR, 0, b"new")],
            [
                ev("created", f"{R}/cur/new", is_dir=True),
                WatchBelow(b"/srv/mail/cur/new", CUR, b"new"),
            ],
        ),
        (
            [(CUR, IN_MOVED_FROM, 7, b"a"), (SUB, IN_MOVED_TO, 7, b"b")],
            [ev("moved", f"{R}/cur/a", f"{R}/cur/sub/b")],
        ),
        (
            [(CUR, IN_MOVED_FROM, 7, b"a"), (WWW, IN_MOVED_TO, 7, b"a")],
            [ev("deleted", f"{R}/cur/a"), ev("created", f"{W}/a", root=W)],
        ),
        (
            [(CUR, IN_MOVED_TO | IN_ISDIR, 5, b"in")],
            [
                ev("created", f"{R}/cur/in", is_dir=True),
                WatchBelow(b"/srv/mail/cur/in", CUR, b"in"),
            ],
        ),
        ([(ROOT, IN_ATTRIB | IN_ISDIR, 0, b"")], [ev("attrib", R, is_dir=True)]),
        # A directory's own events repeat its parent's: nothing.
        ([(CUR, IN_ATTRIB | IN_ISDIR, 0, b"")], []),
        ([(CUR, IN_DELETE_SELF, 0, b"")], []),
        ([(-1, IN_Q_OVERFLOW, 0, b"")], [Overflow(None), Reconcile()]),
        ([(ROOT, IN_DELETE_SELF, 0, b""), (ROOT, IN_IGNORED, 0, b"")], [RootGone(R)]),
        ([(ROOT, IN_UNMOUNT, 0, b""), (ROOT, IN_IGNORED, 0, b"")], [RootGone(R)]),
        # A root's watch that ends without saying why (removed by the kernel) is gone too.
        ([(WWW, IN_IGNORED, 0, b"")], [RootGone(W)]),
        # A watch unknown (ended, or removed by us) means nothing.
        ([(42, IN_CREATE, 0, b"x")], []),
    ],
)
def test_events_mean(events: list[tuple[int, int, int, bytes]], expected: list[Any]) -> None:
    """Each inotify event, or pair of events, becomes these records and actions."""
    assert table().feed(events, 100.0) == expected


def test_a_file_written_is_one_record_per_read_until_it_is_deleted_or_moved() -> None:
    """created, modified, closed of one file in one read: one record (created, which the guard
    needs); a delete or move in between starts over; the next read says the file again."""
    t = table()
    new_file = [
        (CUR, IN_CREATE, 0, b"m"),
        (CUR, IN_MODIFY, 0, b"m"),
        (CUR, IN_CLOSE_WRITE, 0, b"m"),
    ]
    assert t.feed(new_file, 1.0) == [ev("created", f"{R}/cur/m")]
    again = [(CUR, IN_MODIFY, 0, b"m"), (CUR, IN_ATTRIB, 0, b"m"), (CUR, IN_DELETE, 0, b"m")]
    assert t.feed(again + new_file, 2.0) == [
        ev("modified", f"{R}/cur/m"),
        ev("deleted", f"{R}/cur/m"),
        ev("created", f"{R}/cur/m"),
    ]
    renamed = [
        (CUR, IN_MODIFY, 0, b"m"),
        (CUR, IN_MOVED_FROM, 6, b"m"),
        (CUR, IN_MOVED_TO, 6, b"n"),
    ]
    assert t.feed([*renamed, (CUR, IN_MODIFY, 0, b"n"), (CUR, IN_CREATE, 0, b"m")], 3.0) == [
        ev("modified", f"{R}/cur/m"),
        ev("moved", f"{R}/cur/m", f"{R}/cur/n"),
        ev("modified", f"{R}/cur/n"),
        ev("created", f"{R}/cur/m"),
    ]


def test_a_root_moved_away_is_gone_and_its_watches_end() -> None:
    """A root renamed away would be watched under its new name: RootGone, every watch ends."""
    t = table()
    assert t.feed([(ROOT, IN_MOVE_SELF, 0, b"")], 1.0) == [RootGone(R), Unwatch((ROOT, CUR, SUB))]
    assert t.feed([(CUR, IN_CREATE, 0, b"x")], 1.0) == []
    assert t.root_wd(R) is None and t.root_wd(W) == WWW


def test_a_rename_split_across_reads_is_still_one_move() -> None:
    """Moved-from at the end of one read pairs with the moved-to of the next, within the wait."""
    t = table()
    assert t.feed([(CUR, IN_MOVED_FROM, 3, b"a")], 10.0) == []
    assert t.next_deadline() == 10.0 + PAIR_WAIT
    assert t.expire(10.0 + PAIR_WAIT / 2) == []
    assert t.feed([(CUR, IN_MOVED_TO, 3, b"b")], 10.0 + PAIR_WAIT / 2) == [
        ev("moved", f"{R}/cur/a", f"{R}/cur/b")
    ]
    assert t.next_deadline() is None


def test_a_file_moved_out_is_deleted_when_the_wait_ends() -> None:
    """Moved-from without a moved-to: the entry left the tree, a deletion, after PAIR_WAIT."""
    t = table()
    t.feed([(CUR, IN_MOVED_FROM, 3, b"a")], 10.0)
    assert t.expire(10.0 + PAIR_WAIT) == [ev("deleted", f"{R}/cur/a")]
    assert t.expire(20.0) == []


def test_a_directory_moved_out_takes_its_watches_along() -> None:
    """A directory that left the tree: a deletion, and its subtree's watches end."""
    t = table()
    t.feed([(ROOT, IN_MOVED_FROM | IN_ISDIR, 3, b"cur")], 10.0)
    assert t.expire(11.0) == [ev("deleted", f"{R}/cur", is_dir=True), Unwatch((CUR, SUB))]
    assert CUR not in t and SUB not in t and len(t) == 2
    assert t.feed([(SUB, IN_CREATE, 0, b"late")], 11.0) == []


def test_a_directory_renamed_inside_the_tree_moves_its_subtree() -> None:
    """After `mv cur new`, events under the old watches name the new paths."""
    t = table()
    out = t.feed(
        [(ROOT, IN_MOVED_FROM | IN_ISDIR, 4, b"cur"), (ROOT, IN_MOVED_TO | IN_ISDIR, 4, b"new")],
        1.0,
    )
    assert out == [ev("moved", f"{R}/cur", f"{R}/new", is_dir=True)]
    assert t.feed([(SUB, IN_CREATE, 0, b"m")], 1.0) == [ev("created", f"{R}/new/sub/m")]
    assert t.path(SUB) == b"/srv/mail/new/sub"


def test_paths_located_before_a_move_or_an_end_are_not_reused() -> None:
    """The located paths are kept only while the tree stays as it was: after a rename, a move
    between roots, or an ended watch, events name the new path (or nothing)."""
    t = table()
    for wd in (CUR, SUB, ROOT, WWW):
        t.path(wd)  # every path located once, and kept
    t.feed([(ROOT, IN_MOVED_FROM | IN_ISDIR, 4, b"cur"), (ROOT, IN_MOVED_TO | IN_ISDIR, 4, b"new")],
           1.0)  # fmt: skip
    assert t.feed([(SUB, IN_CREATE, 0, b"m")], 1.0) == [ev("created", f"{R}/new/sub/m")]
    assert t.path(CUR) == b"/srv/mail/new"
    t.feed([(ROOT, IN_MOVED_FROM | IN_ISDIR, 5, b"new"), (WWW, IN_MOVED_TO | IN_ISDIR, 5, b"c")],
           2.0)  # fmt: skip
    assert t.feed([(SUB, IN_MODIFY, 0, b"x")], 2.0) == [ev("modified", f"{W}/c/sub/x", root=W)]
    t.forget(SUB)
    assert t.path(SUB) is None
    assert t.feed([(SUB, IN_CREATE, 0, b"late")], 3.0) == []


def test_many_directories_are_located_alike_beyond_the_kept_few() -> None:
    """More directories than LOCATED_KEEP: every one is still located right."""
    t = WatchTable()
    t.add_root(1, R)
    for i in range(2, LOCATED_KEEP * 3):
        t.add_dir(i, 1, b"d%d" % i)
    for _ in range(2):
        for i in range(2, LOCATED_KEEP * 3):
            assert t.path(i) == b"%s/d%d" % (R.encode(), i)
            assert t.root_of(i) == R


def test_a_directory_moved_between_roots_changes_root() -> None:
    """A directory moved from R to W: deleted in R, created in W, its watches now W's."""
    t = table()
    out = t.feed(
        [(ROOT, IN_MOVED_FROM | IN_ISDIR, 4, b"cur"), (WWW, IN_MOVED_TO | IN_ISDIR, 4, b"c")], 1.0
    )
    assert out == [
        ev("deleted", f"{R}/cur", is_dir=True),
        ev("created", f"{W}/c", is_dir=True, root=W),
    ]
    assert t.feed([(SUB, IN_MODIFY, 0, b"m")], 1.0) == [ev("modified", f"{W}/c/sub/m", root=W)]


def test_a_subtree_is_found_whatever_the_order_of_the_watches() -> None:
    """Watches added deepest first (a walk that raced) still form one subtree."""
    t = WatchTable()
    t.add_root(10, R)
    t.add_dir(5, 10, b"a")
    t.add_dir(3, 5, b"b")
    t.add_dir(7, 3, b"c")
    t.add_dir(8, 10, b"other")
    assert t.subtree(5) == (5, 3, 7)
    assert t.root_of(7) == R and t.path(7) == b"/srv/mail/a/b/c"


def test_a_watch_below_a_forgotten_directory_is_not_recorded() -> None:
    """add_dir under a parent no longer watched records nothing (the caller removes it)."""
    t = table()
    t.forget(CUR)
    t.add_dir(20, CUR, b"late")
    assert 20 not in t


def test_watches_numbered_anyhow_keep_their_entries() -> None:
    """Entries stay right through holes, a watch numbered below the others, and a root watched
    again under new numbers (its old slots are dropped, not kept as holes forever)."""
    t = WatchTable()
    t.add_root(100, R)
    for wd in range(101, 3101):
        t.add_dir(wd, 100, b"d%d" % wd)
    t.add_dir(50, 3100, b"low")
    assert t.path(50) == b"/srv/mail/d3100/low" and len(t) == 3002
    for wd in t.subtree(100):
        t.forget(wd)
    assert len(t) == 0 and t.path(101) is None
    t.add_root(9000, R)
    t.add_dir(9001, 9000, b"cur")
    assert t.path(9001) == b"/srv/mail/cur" and t.subtree(9000) == (9000, 9001)
    assert len(t._dirs._parent) < 3000  # the old numbers' slots went


def test_a_roots_backup_area_is_never_watched_a_deeper_namesake_is() -> None:
    """The name the table leaves unwatched is left so in a root's first level only, whether the
    directory is created or moved in."""
    t = WatchTable(unwatched=b".hapair-backup")
    t.add_root(ROOT, R)
    t.add_dir(CUR, ROOT, b"cur")
    made = IN_CREATE | IN_ISDIR
    assert t.feed([(ROOT, made, 0, b".hapair-backup")], 1.0) == [
        ev("created", f"{R}/.hapair-backup", is_dir=True)
    ]
    assert t.feed([(ROOT, IN_MOVED_TO | IN_ISDIR, 8, b".hapair-backup")], 1.0) == [
        ev("created", f"{R}/.hapair-backup", is_dir=True)
    ]
    assert t.feed([(CUR, made, 0, b".hapair-backup")], 1.0)[1] == WatchBelow(
        b"/srv/mail/cur/.hapair-backup", CUR, b".hapair-backup"
    )
    assert not t.watches_name(ROOT, b".hapair-backup") and t.watches_name(CUR, b".hapair-backup")
