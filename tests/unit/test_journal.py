"""The sqlite journal: durable dirty set, exact snapshot clearing, history, vouch marker."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mirrord.journal import HISTORY_KEEP, Journal, JournalError

D = "/srv/mail"


def test_new_directory_is_not_vouched(tmp_path: Path) -> None:
    """A directory the journal has never seen cannot be vouched for."""
    j = Journal(tmp_path)
    v = j.open_directory(D, 1.0)
    assert not v.vouched
    assert "new" in v.reason


def test_clean_shutdown_vouches(tmp_path: Path) -> None:
    """After a clean shutdown the next run trusts the journal."""
    j = Journal(tmp_path)
    j.open_directory(D, 1.0)
    j.close_clean([D], 2.0)
    j.close()
    assert Journal(tmp_path).open_directory(D, 3.0).vouched


def test_unclean_stop_is_not_vouched(tmp_path: Path) -> None:
    """A run that never recorded a clean shutdown leaves the directory unvouched."""
    j = Journal(tmp_path)
    j.open_directory(D, 1.0)
    j.close()
    v = Journal(tmp_path).open_directory(D, 3.0)
    assert not v.vouched
    assert "cleanly" in v.reason


def test_owed_full_pass_survives_restart(tmp_path: Path) -> None:
    """An overflow recorded before a clean stop still denies the vouch until a full pass."""
    j = Journal(tmp_path)
    j.open_directory(D, 1.0)
    j.need_full(D, "overflow", 1.5)
    j.close_clean([D], 2.0)
    j.close()
    j2 = Journal(tmp_path)
    v = j2.open_directory(D, 3.0)
    assert not v.vouched and "overflow" in v.reason
    j2.full_done(D, started=3.0, now=4.0)
    j2.close_clean([D], 5.0)
    j2.close()
    assert Journal(tmp_path).open_directory(D, 6.0).vouched


def test_full_done_keeps_a_need_that_arose_during_the_pass(tmp_path: Path) -> None:
    """A full pass that started before an overflow does not clear that overflow's need."""
    j = Journal(tmp_path)
    j.open_directory(D, 0.0)
    j.need_full(D, "overflow", 5.0)
    j.full_done(D, started=4.0, now=6.0)
    j.close_clean([D], 7.0)
    assert not Journal(tmp_path).open_directory(D, 8.0).vouched


def test_dirty_set_keeps_first_change_time(tmp_path: Path) -> None:
    """Re-recording a path keeps its first-change time (the RPO anchor)."""
    j = Journal(tmp_path)
    j.record_changes(D, ["a", "b"], 1.0)
    j.record_changes(D, ["a"], 5.0)
    assert j.dirty(D) == {"a": 1.0, "b": 1.0}
    assert j.dirty("/other") == {}


def test_clear_synced_deletes_exactly_the_snapshot(tmp_path: Path) -> None:
    """Success clears the snapshot; a path re-changed after the mark and a new path stay."""
    j = Journal(tmp_path)
    j.record_changes(D, ["a", "b", "c"], 1.0)
    snapshot = set(j.dirty(D))
    mark = j.mark()
    j.record_changes(D, ["b", "d"], 2.0)
    j.clear_synced(D, snapshot, mark)
    assert set(j.dirty(D)) == {"b", "d"}


def test_sequence_survives_reopen(tmp_path: Path) -> None:
    """After a reopen new changes get higher sequence numbers than journaled ones."""
    j = Journal(tmp_path)
    j.record_changes(D, ["a"], 1.0)
    mark = j.mark()
    j.close()
    j2 = Journal(tmp_path)
    j2.record_changes(D, ["a"], 2.0)
    j2.clear_synced(D, ["a"], mark)
    assert "a" in j2.dirty(D)


def test_dirty_set_survives_sigkill(tmp_path: Path) -> None:
    """Changes committed by a process killed with SIGKILL are in the journal afterwards."""
    code = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from mirrord.journal import Journal
        j = Journal(Path({str(tmp_path)!r}))
        j.open_directory({D!r}, 1.0)
        j.record_changes({D!r}, ["x/1", "x/2"], 1.0)
        j.commit()  # the daemon's timer, once they are COMMIT_WITHIN old
        j.record_changes({D!r}, ["x/3"], 1.5)  # not committed: the crash's full pass sends it
        pid = j.pass_started({D!r}, "incremental", "changes", 2.0)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], check=False)
    assert proc.returncode == -9
    j = Journal(tmp_path)
    assert set(j.dirty(D)) == {"x/1", "x/2"}
    assert not j.open_directory(D, 3.0).vouched
    (rec,) = j.history(D)
    assert rec.result == "interrupted"


def test_history_records_and_orders_passes(tmp_path: Path) -> None:
    """Pass records carry result, rc, counts, and come back newest first."""
    j = Journal(tmp_path)
    a = j.pass_started(D, "full", "startup", 1.0)
    j.pass_finished(a, 3.0, "ok", rc=0, files=10, nbytes=1000)
    b = j.pass_started(D, "incremental", "changes", 4.0)
    j.pass_finished(b, 4.5, "retry", rc=255, detail="ssh: connection refused")
    recs = j.history(D)
    assert [r.id for r in recs] == [b, a]
    assert recs[0].rc == 255 and recs[0].detail == "ssh: connection refused"
    assert recs[1].files == 10 and recs[1].bytes == 1000
    assert j.last_full_ok(D) == 3.0


def test_history_is_pruned(tmp_path: Path) -> None:
    """Only the newest HISTORY_KEEP pass records per directory are kept."""
    j = Journal(tmp_path)
    for i in range(HISTORY_KEEP + 5):
        j.pass_started(D, "incremental", "changes", float(i))
    assert len(j.history(D, limit=HISTORY_KEEP * 2)) == HISTORY_KEEP


def test_last_full_ok_ignores_failures_and_incrementals(tmp_path: Path) -> None:
    """Only successful full passes anchor the audit schedule."""
    j = Journal(tmp_path)
    assert j.last_full_ok(D) is None
    a = j.pass_started(D, "full", "verify", 1.0)
    j.pass_finished(a, 2.0, "retry")
    b = j.pass_started(D, "incremental", "changes", 3.0)
    j.pass_finished(b, 4.0, "ok")
    assert j.last_full_ok(D) is None


def test_unwritable_state_dir_is_a_clear_error(tmp_path: Path) -> None:
    """A state directory that is a file raises JournalError naming the journal path."""
    blocker = tmp_path / "state"
    blocker.write_text("not a dir")
    with pytest.raises(JournalError, match="state"):
        Journal(blocker)


def test_non_utf8_names_round_trip(tmp_path: Path) -> None:
    """A file name that is not UTF-8 (surrogate-escaped) is stored and cleared exactly."""
    name = os.fsdecode(b"caf\xe9/mail")
    j = Journal(tmp_path)
    j.record_changes(D, [name], 1.0)
    assert list(j.dirty(D)) == [name]
    j.clear_synced(D, [name], j.mark())
    assert j.dirty(D) == {}


def committed(tmp: Path) -> set[str]:
    """The dirty paths on disk, read through a connection of its own (as a restart would)."""
    db = sqlite3.connect(tmp / "mirrord.journal")
    try:
        return {os.fsdecode(p) for (p,) in db.execute("SELECT path FROM dirty")}
    finally:
        db.close()


def test_a_change_is_written_only_if_still_dirty_once_old(tmp_path: Path) -> None:
    """A recorded change waits in memory: synced by a pass, it is dropped unwritten; still
    dirty COMMIT_WITHIN after it was recorded, it is committed (the daemon's timer); a read of
    the dirty set and a clean stop commit everything. A path changed again after a pass's mark
    stays dirty, with the time of that change."""
    j = Journal(tmp_path)
    j.open_directory(D, 1.0)
    mark = j.record_changes(D, ["a", "b"], 2.0)
    assert j.next_commit() is not None and committed(tmp_path) == set()
    j.pass_started(D, "incremental", "changes", 2.5)
    j.record_changes(D, ["b", "c"], 3.0)  # b changed again while the pass ran
    j.clear_synced(D, ["a", "b"], mark)
    assert committed(tmp_path) == {"b"}  # a never written
    j.commit(aged=3600.0)
    assert committed(tmp_path) == {"b"}  # c is not old enough
    j.commit(aged=0.0)
    assert committed(tmp_path) == {"b", "c"} and j.next_commit() is None
    assert j.dirty(D) == {"b": 3.0, "c": 3.0}
    j.record_changes(D, ["d"], 5.0)
    assert "d" in j.dirty(D) and committed(tmp_path) == {"b", "c", "d"}
    j.record_changes(D, ["e"], 6.0)
    j.close_clean([D], 7.0)
    assert committed(tmp_path) == {"b", "c", "d", "e"}
    j.close()
