"""Notify hooks (ordered, never concurrent, timeout) and health checks (fall/rise, tcp, command)."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path

import pytest

from takeover.health import CheckSpec, Counter, HealthMonitor, command_check, tcp_check
from takeover.hooks import Hook, HookRunner

RECORD = """
import os, sys
path = sys.argv[1]
with open(path, "a") as f:
    f.write("start %s %s %s\\n" % (os.environ["HAPAIR_OLD_STATE"], os.environ["HAPAIR_NEW_STATE"],
                                   os.environ["HAPAIR_REASON"]))
    f.write("end\\n")
"""


def test_hooks_run_in_order_with_environment(tmp_path: Path) -> None:
    """Each transition runs every hook in turn; the file shows no interleaving and the env."""
    out = tmp_path / "log"
    hooks = [Hook((sys.executable, "-c", RECORD, str(out)), timeout=30)] * 2

    async def main() -> None:
        runner = HookRunner(hooks, node="alpha", peer="beta")
        runner.start()
        runner.submit("STARTING", "STANDBY", "peer is active", 1)
        runner.submit("STANDBY", "ACTIVE", "peer lost", 2)
        await runner.close()
        assert [r.returncode for r in runner.results] == [0, 0, 0, 0]

    asyncio.run(main())
    lines = out.read_text().splitlines()
    assert lines == [
        "start STARTING STANDBY peer is active",
        "end",
        "start STARTING STANDBY peer is active",
        "end",
        "start STANDBY ACTIVE peer lost",
        "end",
        "start STANDBY ACTIVE peer lost",
        "end",
    ]


def test_hook_timeout_kills_and_next_hook_runs(tmp_path: Path) -> None:
    """A hook exceeding its timeout is killed and reported; the following hook still runs."""
    out = tmp_path / "log"
    slow = Hook((sys.executable, "-c", "import time; time.sleep(60)"), timeout=0.3)
    fast = Hook((sys.executable, "-c", RECORD, str(out)), timeout=30)

    async def main() -> None:
        runner = HookRunner([slow, fast])
        runner.start()
        runner.submit("STANDBY", "ACTIVE", "peer lost")
        await asyncio.wait_for(runner.close(), 30)
        assert runner.results[0].timed_out and runner.results[0].returncode is None
        assert runner.results[1].returncode == 0

    asyncio.run(main())
    assert out.read_text().startswith("start STANDBY ACTIVE")


def test_missing_hook_command_is_reported_not_raised(tmp_path: Path) -> None:
    """A hook that cannot start is recorded with its error and does not stop the runner."""

    async def main() -> None:
        runner = HookRunner([Hook((str(tmp_path / "nope"),))])
        runner.start()
        runner.submit("STANDBY", "ACTIVE", "x")
        await runner.close()
        assert runner.results[0].returncode is None and runner.results[0].error

    asyncio.run(main())


@pytest.mark.parametrize(
    ("results", "verdicts"),
    [
        ([False, False, False], [True, True, False]),
        ([False, True, False, False, False], [True, True, True, True, False]),
        ([False] * 3 + [True, True], [True, True, False, False, True]),
        ([False] * 3 + [True, False, True], [True, True, False, False, False, False]),
    ],
    ids=["falls_after_three", "success_resets_fall", "rises_after_two", "failure_resets_rise"],
)
def test_counter_fall_rise(results: list[bool], verdicts: list[bool]) -> None:
    """The verdict changes only after `fall` consecutive failures or `rise` successes."""
    c = Counter(fall=3, rise=2)
    seen = []
    for r in results:
        c.record(r)
        seen.append(c.ok)
    assert seen == verdicts


def test_monitor_reports_overall_change_once() -> None:
    """The monitor calls back when the overall verdict flips, not on every failing run."""
    changes: list[bool] = []
    outcomes = {"a": True, "b": True}

    async def runner(spec: CheckSpec) -> bool:
        return outcomes[spec.name]

    async def main() -> None:
        specs = [CheckSpec("a", "tcp", fall=1, rise=1), CheckSpec("b", "tcp", fall=2, rise=1)]
        mon = HealthMonitor(specs, changes.append, runner=runner)
        outcomes["b"] = False
        await mon.run_check(specs[1])
        assert changes == []
        await mon.run_check(specs[1])
        await mon.run_check(specs[1])
        assert changes == [False] and not mon.healthy
        outcomes["b"] = True
        await mon.run_check(specs[1])
        assert changes == [False, True]
        assert mon.states() == {"a": {"ok": True}, "b": {"ok": True}}

    asyncio.run(main())


def test_tcp_check_against_loopback_listener() -> None:
    """A listening loopback port passes the TCP check; a closed one fails it."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    try:
        assert asyncio.run(tcp_check("127.0.0.1", port, 5.0))
        assert not asyncio.run(tcp_check("127.0.0.1", closed_port, 5.0))
    finally:
        listener.close()
        closed.close()


def test_command_check_exit_status_and_timeout() -> None:
    """Exit 0 is healthy, non-zero is not, and a command beyond its timeout fails."""
    assert asyncio.run(command_check([sys.executable, "-c", "pass"], 30))
    assert not asyncio.run(command_check([sys.executable, "-c", "raise SystemExit(3)"], 30))
    assert not asyncio.run(
        command_check([sys.executable, "-c", "import time; time.sleep(60)"], 0.3)
    )
    assert not asyncio.run(command_check(["/nonexistent/check"], 1))
