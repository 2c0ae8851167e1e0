"""The daemon's timers and decisions follow the monotonic clock: a wall-clock step moves nothing."""

from __future__ import annotations

import asyncio
import glob
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mirrord.daemon import Daemon, MirrorDir
from mirrord.journal import Journal
from mirrord.planner import Cadence
from mirrord.transfer import TransferOptions
from tests.lab.lab import wait_until

WALL = 1_796_000_000.0

# Debian's faketime package (scripts/bootstrap.sh installs it).
LIBFAKETIME = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))

DAEMON = """
import asyncio, sys, logging
logging.basicConfig(level=logging.INFO, format="%(relativeCreated)d %(name)s %(message)s")
from pathlib import Path
from mirrord.daemon import Daemon, MirrorDir
from mirrord.planner import Cadence
from mirrord.transfer import TransferOptions

src, dest, state, run = sys.argv[1:5]
d = MirrorDir(root=src, volatility="hot", options=TransferOptions(),
              cadence=Cadence(interval=0.2, min_interval=0.1, max_interval=1.0))
asyncio.run(Daemon([d], peer=None, state_dir=Path(state), run_dir=Path(run),
                   local_dest=Path(dest)).run())
"""


class Notifications:
    """The NOTIFY_SOCKET end systemd would hold: a thread reads what the daemon sends (a full
    socket queue, 10 datagrams here, would block the sender) and keeps when each arrived."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.seen: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.seen.append((time.monotonic(), data.decode()))

    def count(self, state: str, since: float) -> int:
        """Return how many datagrams with `state` arrived after `since` (monotonic)."""
        return sum(1 for t, text in list(self.seen) if t > since and state in text.split("\n"))

    def close(self) -> None:
        """Stop reading and close the socket."""
        self._stop.set()
        self._reader.join(5)
        self.sock.close()


@pytest.fixture
def stepped_daemon(tmp_path: Path) -> Iterator[tuple[Path, Path, Path, Notifications]]:
    """mirrord (local destination) under libfaketime, its wall clock read from a file the test
    rewrites (the monotonic clock stays real, as under a real clock step); WATCHDOG_USEC asks
    for a ping every 0.5 s."""
    assert LIBFAKETIME, "libfaketime is missing: apt-get install faketime"
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    (src / "seed").write_text("s")
    spec = tmp_path / "faketime"
    spec.write_text("+0\n")
    notes = Notifications(tmp_path / "notify")
    env = {
        **os.environ,
        "LD_PRELOAD": LIBFAKETIME[0],
        "FAKETIME_TIMESTAMP_FILE": str(spec),
        "FAKETIME_NO_CACHE": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "NOTIFY_SOCKET": str(notes.path),
        "WATCHDOG_USEC": "1000000",
    }
    env.pop("WATCHDOG_PID", None)
    argv = [sys.executable, "-c", DAEMON, str(src), str(dest), str(tmp_path / "state"),
            str(tmp_path / "run")]  # fmt: skip
    log = tmp_path / "mirrord.log"
    with log.open("w") as out:
        proc = subprocess.Popen(argv, env=env, stderr=out)
    try:
        ready = wait_until(lambda: notes.count("READY=1", 0.0) > 0 or proc.poll() is not None, 30)
        assert ready and proc.poll() is None, "mirrord did not start"
        yield src, dest / str(src).lstrip("/"), spec, notes
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        notes.close()
        err = log.read_text()
        print(err)
        assert "Traceback" not in err, err


def test_a_backward_clock_step_does_not_delay_the_next_pass(
    stepped_daemon: tuple[Path, Path, Path, Notifications],
) -> None:
    """After the wall clock steps back one hour, a change still reaches the peer at once (the
    planner's deadline is not an hour out)."""
    src, mirror, spec, _notes = stepped_daemon
    assert wait_until((mirror / "seed").exists, 30), "the start-up pass never came"
    (src / "before").write_text("1")
    assert wait_until((mirror / "before").exists, 30)
    spec.write_text("-3600\n")
    (src / "after").write_text("2")
    # A pass takes well under a second here; the wall-clock deadline was an hour out.
    assert wait_until((mirror / "after").exists, 30), "the pass waits for the wall clock"


def test_a_backward_clock_step_does_not_stop_the_watchdog(
    stepped_daemon: tuple[Path, Path, Path, Notifications],
) -> None:
    """After the wall clock steps back one hour, WATCHDOG=1 keeps coming every half
    WatchdogSec (systemd would otherwise kill a healthy mirrord)."""
    _src, _mirror, spec, notes = stepped_daemon
    spec.write_text("-3600\n")
    stepped = time.monotonic()
    time.sleep(4.0)
    # Eight pings are due in these four seconds; none came on wall-clock interval jobs.
    assert notes.count("WATCHDOG=1", stepped) >= 3


def test_journal_times_become_planner_times(tmp_path: Path) -> None:
    """Dirty paths the journal kept (wall-clock times) reach the monotonic planner with their
    age intact: the RPO is the same whatever the two clocks read."""
    root = tmp_path / "src"
    root.mkdir()
    journal = Journal(tmp_path / "state")
    journal.open_directory(str(root), WALL - 60)
    journal.record_changes(str(root), {"a"}, WALL - 10)
    journal.close()
    d = MirrorDir(root=str(root), volatility="hot", options=TransferOptions(),
                  cadence=Cadence(interval=1.0, min_interval=0.5, max_interval=5.0))  # fmt: skip
    daemon = Daemon([d], peer=None, state_dir=tmp_path / "state", run_dir=tmp_path / "run",
                    local_dest=tmp_path / "dest", clock=lambda: 100.0,
                    wall=lambda: WALL)  # fmt: skip
    daemon.journal = daemon._open_journal(100.0)
    assert daemon.planner.rpo(str(root), 100.0) == pytest.approx(10.0)
    assert daemon.status()["updated"] == WALL


def test_a_cron_schedule_fires_an_audit_of_its_directory(tmp_path: Path) -> None:
    """A directory's `schedule` is an APScheduler cron job (calendar time); when it fires, the
    directory's next pass is a full audit."""
    root = tmp_path / "src"
    root.mkdir()
    d = MirrorDir(root=str(root), volatility="static", options=TransferOptions(),
                  cadence=Cadence(interval=1.0, min_interval=0.5, max_interval=5.0),
                  schedule="30 3 * * *")  # fmt: skip
    daemon = Daemon([d], peer=None, state_dir=tmp_path / "state", run_dir=tmp_path / "run",
                    local_dest=tmp_path / "dest")  # fmt: skip
    daemon.journal = daemon._open_journal(daemon.clock())

    async def body() -> None:
        sched = daemon._start_schedules(asyncio.get_running_loop())
        assert sched is not None
        try:
            job = sched.get_job(f"schedule:{root}")
            assert (job.next_run_time.hour, job.next_run_time.minute) == (3, 30)
            await job.func()
        finally:
            sched.shutdown(wait=False)
        daemon._apply([daemon._q.get_nowait()])

    asyncio.run(body())
    # The start-up full pass (a new journal) is owed too: it serves as the audit.
    (plan,) = daemon.planner.due(daemon.clock())
    assert plan.audit
