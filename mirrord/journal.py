"""Durable mirror state in sqlite: the dirty set, the pass history, the vouch marker, and the
roots this node receives into.

One database file in the state directory (`mirrord.journal`), in WAL mode, written only by the
daemon's consumer. A recorded change is kept in memory: a pass that syncs it drops it unwritten;
one still dirty COMMIT_WITHIN after it was recorded is committed (the daemon's timer), and all
are before a read of the dirty set and at a clean stop. A mirrord killed at any moment restarts
with every change committed still dirty; the last seconds' (what inotify had not handed over
yet, and what was not committed) are covered by the full pass a crash owes (the vouch marker,
below) and, on a node that crashed as the source, by the set-aside walk for what changed since
its last confirmed pass began (mirrord.daemon, by ctime).

Every recorded change gets a sequence number. A pass takes a `mark` (the highest sequence so far)
together with its snapshot; when the pass succeeds, exactly the snapshot's rows with a sequence
at or below the mark are deleted. A path changed again while the pass ran has a newer sequence
and stays dirty.

The vouch marker says whether the journal can speak for a directory at start-up: it cannot when
the directory is new to it, when the last run did not shut down cleanly (events between inotify
and the journal were lost with the process), or when a full pass was owed (an overflow) and never
completed. Such a directory gets one full pass. After a clean stop the marker keeps the stop
time: the daemon walks the tree for what changed while it was stopped (mirrord.scan) once it
pushes again.
"""

from __future__ import annotations

import bisect
import logging
import os
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

log = logging.getLogger(__name__)

JOURNAL_NAME: Final = "mirrord.journal"
# A recorded change is committed once it is this old (seconds) and still dirty: most are
# synced before, and never written (a write and a delete per change were a fifth of the
# daemon's CPU under a churn).
COMMIT_WITHIN: Final = 2.0
# A dirty row, written or given a newer sequence: its first change keeps its time.
_RECORD: Final = (
    "INSERT INTO dirty (directory, path, first_seen, seq) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (directory, path) DO UPDATE SET seq = excluded.seq"
)
# Pass records kept per directory; older ones are pruned as new ones are added.
HISTORY_KEEP: Final = 1000

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS dirty (
    directory  TEXT NOT NULL,
    path       BLOB NOT NULL,   -- os.fsencode(): file names need not be UTF-8
    first_seen REAL NOT NULL,
    seq        INTEGER NOT NULL,
    PRIMARY KEY (directory, path)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dirs (
    directory   TEXT PRIMARY KEY,
    state       TEXT NOT NULL,   -- 'running' while a daemon owns it, 'clean' after shutdown
    full_reason TEXT,            -- a full pass is owed, and why
    full_since  REAL,
    updated     REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS passes (
    id        INTEGER PRIMARY KEY,
    directory TEXT NOT NULL,
    kind      TEXT NOT NULL,
    reason    TEXT NOT NULL,
    started   REAL NOT NULL,
    ended     REAL,
    result    TEXT,
    rc        INTEGER,
    files     INTEGER,
    bytes     INTEGER,
    detail    TEXT
);
CREATE INDEX IF NOT EXISTS passes_dir ON passes (directory, id);
CREATE TABLE IF NOT EXISTS receiving (
    directory  TEXT PRIMARY KEY,  -- this node took the peer's pushes into it, orphans set aside
    since      REAL NOT NULL,
    epoch      INTEGER,           -- this node's takeover epoch, as last told
    peer_epoch INTEGER            -- the peer's, as last heard
);
"""


class JournalError(Exception):
    """The journal file cannot be opened or used."""


@dataclass(frozen=True)
class Vouch:
    """Whether the journal can speak for a directory at start-up."""

    vouched: bool
    # Why not (or "clean shutdown"), for the log and `mirrord status`.
    reason: str
    # When the last run stopped (clean shutdown only): what changed since then, inotify missed.
    stopped_at: float | None = None


@dataclass(frozen=True)
class PassRecord:
    """One row of the pass history."""

    id: int
    directory: str
    kind: str
    reason: str
    started: float
    ended: float | None
    result: str | None
    rc: int | None
    files: int | None
    bytes: int | None
    detail: str | None


class Journal:
    """The sqlite journal; one instance per daemon, used from one thread."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / JOURNAL_NAME
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode survives a crash of the process (what we guard against);
            # only a power loss may drop the last transactions.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise JournalError(f"{self.path}: cannot open journal: {exc}") from exc
        row = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM dirty").fetchone()
        self._seq: int = int(row[0])
        # Changes recorded and not committed yet, oldest first: (directory, path, first_seen,
        # seq) and when each was recorded (monotonic).
        self._pending: list[tuple[str, bytes, float, int]] = []
        self._recorded: list[float] = []

    def close(self) -> None:
        """Commit what is pending and close the database."""
        self.commit()
        self._db.close()

    def next_commit(self) -> float | None:
        """Return when (monotonic) the oldest change not committed is COMMIT_WITHIN old, or
        None when every change is committed."""
        return self._recorded[0] + COMMIT_WITHIN if self._recorded else None

    def commit(self, aged: float | None = None) -> None:
        """Commit the changes recorded and not committed (only those recorded at least `aged`
        seconds ago, if given), in one transaction."""
        n = len(self._pending)
        if aged is not None:
            cutoff = time.monotonic() - aged
            n = bisect.bisect_right(self._recorded, cutoff)
        if not n:
            return
        rows = self._pending[:n]
        del self._pending[:n], self._recorded[:n]
        self._write(rows)

    def _write(self, rows: list[tuple[str, bytes, float, int]]) -> None:
        with self._db:
            self._db.executemany(_RECORD, rows)

    # -- vouch marker --------------------------------------------------------------------

    def open_directory(self, directory: str, now: float) -> Vouch:
        """Read the marker left by the last run and claim the directory for this one."""
        row = self._db.execute(
            "SELECT state, full_reason, updated FROM dirs WHERE directory = ?", (directory,)
        ).fetchone()
        if row is None:
            vouch = Vouch(False, "journal is new for this directory")
        elif row[1] is not None:
            vouch = Vouch(False, f"full pass owed since last run: {row[1]}")
        elif row[0] != "clean":
            vouch = Vouch(False, "last run did not shut down cleanly")
        else:
            vouch = Vouch(True, "clean shutdown", stopped_at=float(row[2]))
        with self._db:
            self._db.execute(
                "INSERT INTO dirs (directory, state, updated) VALUES (?, 'running', ?) "
                "ON CONFLICT (directory) DO UPDATE SET state = 'running', updated = ?",
                (directory, now, now),
            )
            # Passes a crash interrupted stay in the history as such.
            self._db.execute(
                "UPDATE passes SET result = 'interrupted' WHERE directory = ? AND ended IS NULL",
                (directory,),
            )
        log.info("journal.open dir=%s vouched=%s reason=%s", directory, vouch.vouched, vouch.reason)
        return vouch

    def need_full(self, directory: str, reason: str, now: float) -> None:
        """Persist that a full pass is owed (it survives a restart until one succeeds)."""
        with self._db:
            self._db.execute(
                "UPDATE dirs SET full_reason = COALESCE(full_reason, ?), "
                "full_since = COALESCE(full_since, ?), updated = ? WHERE directory = ?",
                (reason, now, now, directory),
            )

    def full_done(self, directory: str, started: float, now: float) -> None:
        """Clear the owed full pass, unless a new need arose after the pass started."""
        with self._db:
            self._db.execute(
                "UPDATE dirs SET full_reason = NULL, full_since = NULL, updated = ? "
                "WHERE directory = ? AND (full_since IS NULL OR full_since <= ?)",
                (now, directory, started),
            )

    def close_clean(self, directories: Iterable[str], now: float) -> None:
        """Record a clean shutdown: every accepted change is in the journal."""
        self.commit()
        with self._db:
            self._db.executemany(
                "UPDATE dirs SET state = 'clean', updated = ? WHERE directory = ?",
                [(now, d) for d in directories],
            )

    # -- receiving (mirrord.roles: "across a restart") -------------------------------------

    def set_receiving(
        self, directories: Iterable[str], now: float, epochs: tuple[int | None, int | None]
    ) -> None:
        """Record that this node receives into `directories`, their orphans set aside, and the
        takeover epochs known (this node's, the peer's)."""
        with self._db:
            self._db.executemany(
                "INSERT INTO receiving (directory, since, epoch, peer_epoch) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (directory) DO UPDATE SET epoch = excluded.epoch, "
                "peer_epoch = excluded.peer_epoch",
                [(d, now, *epochs) for d in directories],
            )

    def note_epochs(self, epochs: tuple[int | None, int | None]) -> None:
        """Record the takeover epochs known now (this node's, the peer's) with the receiving
        record, if any."""
        with self._db:
            self._db.execute("UPDATE receiving SET epoch = ?, peer_epoch = ?", epochs)

    def received_epochs(self) -> tuple[int | None, int | None]:
        """Return the highest epochs the receiving record knows (this node's, the peer's)."""
        row = self._db.execute("SELECT MAX(epoch), MAX(peer_epoch) FROM receiving").fetchone()
        return (row[0], row[1]) if row is not None else (None, None)

    def clear_receiving(self) -> None:
        """Record that this node receives into none of its directories."""
        with self._db:
            self._db.execute("DELETE FROM receiving")

    def received(self, directory: str) -> bool:
        """Return whether the last record says this node receives into `directory`."""
        row = self._db.execute(
            "SELECT 1 FROM receiving WHERE directory = ?", (directory,)
        ).fetchone()
        return row is not None

    # -- dirty set -----------------------------------------------------------------------

    def record_changes(self, directory: str, paths: Iterable[str], now: float) -> int:
        """Record changed paths (each keeps its first-change time), committed by `commit`, at
        the latest before the next other use of the journal; return the new mark."""
        at = time.monotonic()
        for p in paths:
            self._seq += 1
            self._pending.append((directory, os.fsencode(p), now, self._seq))
            self._recorded.append(at)
        return self._seq

    def mark(self) -> int:
        """Return the current sequence mark; take it together with a pass's snapshot."""
        return self._seq

    def dirty(self, directory: str) -> dict[str, float]:
        """Return the journaled dirty paths of `directory` with their first-change times."""
        self.commit()
        cur = self._db.execute(
            "SELECT path, first_seen FROM dirty WHERE directory = ?", (directory,)
        )
        return {os.fsdecode(p): float(t) for p, t in cur}

    def clear_synced(self, directory: str, paths: Iterable[str], mark: int) -> None:
        """Clear exactly the synced snapshot: `paths` not changed again after `mark`. A change
        the pass covered that was never committed is dropped unwritten (under a churn most
        are: a change reaches the peer before it is COMMIT_WITHIN old)."""
        synced = {os.fsencode(p) for p in paths}
        again = []
        keep: list[int] = []
        for i, (d, path, _first, seq) in enumerate(self._pending):
            if d != directory or path not in synced:
                keep.append(i)
            elif seq > mark:
                again.append(self._pending[i])  # changed again after the mark: stays dirty
        self._pending = [self._pending[i] for i in keep]
        self._recorded = [self._recorded[i] for i in keep]
        with self._db:
            # The new sequence of a path changed again goes in first, as its own row's: that
            # row stays, with the time of its first change.
            if again:
                self._db.executemany(_RECORD, again)
            self._db.executemany(
                "DELETE FROM dirty WHERE directory = ? AND path = ? AND seq <= ?",
                [(directory, p, mark) for p in synced],
            )

    # -- pass history --------------------------------------------------------------------

    def pass_started(self, directory: str, kind: str, reason: str, now: float) -> int:
        """Record the start of a pass; return its id."""
        with self._db:
            cur = self._db.execute(
                "INSERT INTO passes (directory, kind, reason, started) VALUES (?, ?, ?, ?)",
                (directory, kind, reason, now),
            )
            self._db.execute(
                "DELETE FROM passes WHERE directory = ? AND id <= ("
                "SELECT id FROM passes WHERE directory = ? ORDER BY id DESC "
                "LIMIT 1 OFFSET ?)",
                (directory, directory, HISTORY_KEEP),
            )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def pass_finished(
        self,
        pass_id: int,
        now: float,
        result: str,
        *,
        rc: int | None = None,
        files: int | None = None,
        nbytes: int | None = None,
        detail: str | None = None,
    ) -> None:
        """Record how a pass ended."""
        with self._db:
            self._db.execute(
                "UPDATE passes SET ended = ?, result = ?, rc = ?, files = ?, bytes = ?, "
                "detail = ? WHERE id = ?",
                (now, result, rc, files, nbytes, detail, pass_id),
            )

    def history(self, directory: str, limit: int = 20) -> list[PassRecord]:
        """Return the latest passes of `directory`, newest first."""
        cur = self._db.execute(
            "SELECT id, directory, kind, reason, started, ended, result, rc, files, bytes, "
            "detail FROM passes WHERE directory = ? ORDER BY id DESC LIMIT ?",
            (directory, limit),
        )
        return [PassRecord(*row) for row in cur]

    def last_full(self, directory: str) -> PassRecord | None:
        """Return the last successful full pass of `directory` (its end and tree size)."""
        row = self._db.execute(
            "SELECT id, directory, kind, reason, started, ended, result, rc, files, bytes, "
            "detail FROM passes WHERE directory = ? AND kind = 'full' AND result = 'ok' "
            "ORDER BY id DESC LIMIT 1",
            (directory,),
        ).fetchone()
        return None if row is None else PassRecord(*row)

    def last_full_ok(self, directory: str) -> float | None:
        """Return when the last successful full pass of `directory` ended, if any."""
        rec = self.last_full(directory)
        return None if rec is None else rec.ended
