"""IPMI fencing against a real, independent BMC: OpenIPMI's ipmi_sim on loopback."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from takeover.fencing.ipmi import IpmiFencer
from takeover.fencing.policy import RetrySchedule
from tests.lab.bmc import SimBmc, free_udp_port

# Generous bound for "no hang": far below pyghmi's own 27 s for a frozen session.
NO_HANG = 15.0


@pytest.fixture
def bmc(victim: subprocess.Popen[bytes]) -> Iterator[SimBmc]:
    """A running ipmi_sim whose power-off SIGKILLs the victim process."""
    with SimBmc(on_power_off=["kill", "-KILL", str(victim.pid)]) as sim:
        yield sim


def fencer(sim: SimBmc, password_file: Path, timeout: float = 10.0, **kw: object) -> IpmiFencer:
    """An IpmiFencer pointed at `sim`."""
    return IpmiFencer(sim.address, sim.port, sim.user, password_file, timeout, node="b", **kw)  # type: ignore[arg-type]


def test_power_off_is_confirmed_and_the_action_happened(
    bmc: SimBmc, victim: subprocess.Popen[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    """Powering off through the BMC kills the victim and the result confirms power off."""
    caplog.set_level(logging.INFO, logger="takeover.fencing.ipmi")
    result = fencer(bmc, bmc.write_password_file()).power_off_and_confirm()
    assert result.ok, result
    assert result.power == "off"
    assert bmc.power() == "off"
    assert "set power 0" in bmc.calls()
    # The chassis action ran before the BMC reported off, so the victim is already dead.
    assert victim.wait(timeout=5) == -signal.SIGKILL
    assert any(
        "fence.attempt node=b" in r.message and "result=ok" in r.message for r in caplog.records
    )
    assert result.to_dict()["attempts"][0]["result"] == "ok"


def test_describe_shows_the_last_result(bmc: SimBmc) -> None:
    """describe() names the BMC and carries the last operation's attempts for status."""
    f = fencer(bmc, bmc.write_password_file("wrong"))
    assert f.describe()["last"] is None
    f.power_state()
    info = f.describe()
    assert info["bmc"] == f"{bmc.address}:{bmc.port}"
    assert info["last"]["error"] == "wrong-password"
    assert info["last"]["attempts"][0]["try"] == 1


def test_power_off_of_a_node_already_off_sends_nothing(bmc: SimBmc) -> None:
    """A node that is already off is confirmed off without a power command."""
    bmc.set_power(on=False)
    result = fencer(bmc, bmc.write_password_file()).power_off_and_confirm()
    assert result.ok and result.power == "off"
    assert not [c for c in bmc.calls() if c.startswith("set")]


def test_power_state_reads_without_changing(bmc: SimBmc, victim: subprocess.Popen[bytes]) -> None:
    """power_state() reports "on" and leaves the power and the workload untouched."""
    result = fencer(bmc, bmc.write_password_file()).power_state()
    assert result.ok and result.power == "on"
    assert bmc.power() == "on"
    assert all(c.startswith("get") for c in bmc.calls())
    assert victim.poll() is None


def test_wrong_password_is_classified_without_retry(
    bmc: SimBmc, victim: subprocess.Popen[bytes]
) -> None:
    """A wrong password fails at once as "wrong-password", one attempt, nothing powered off."""
    result = fencer(bmc, bmc.write_password_file("not-the-password")).power_off_and_confirm()
    assert not result.ok
    assert result.error == "wrong-password"
    assert len(result.attempts) == 1
    assert result.elapsed < NO_HANG
    assert bmc.power() == "on" and victim.poll() is None


def test_unknown_user_is_classified(bmc: SimBmc) -> None:
    """A user the BMC does not know fails as "unknown-user" after one attempt."""
    f = IpmiFencer(bmc.address, bmc.port, "nobody", bmc.write_password_file(), 10.0)
    result = f.power_state()
    assert not result.ok
    assert result.error == "unknown-user"
    assert len(result.attempts) == 1


def test_world_readable_password_file_is_refused(bmc: SimBmc) -> None:
    """A password file readable by everyone is refused before the BMC is contacted."""
    result = fencer(bmc, bmc.write_password_file(mode=0o644)).power_off_and_confirm()
    assert not result.ok
    assert result.error == "password-file"
    assert "chmod 600" in (result.detail or "")
    assert bmc.calls() == []


def test_unreachable_bmc_is_classified_within_the_budget(tmp_path: Path) -> None:
    """Nothing listening on the BMC port: "unreachable", retried with backoff, within budget."""
    password = tmp_path / "pw"
    password.write_text("x\n")
    password.chmod(0o600)
    schedule = RetrySchedule(attempt_timeout=1.0, base=0.1)
    f = IpmiFencer("127.0.0.1", free_udp_port(), "admin", password, 3.0, schedule=schedule)
    started = time.monotonic()
    result = f.power_off_and_confirm()
    took = time.monotonic() - started
    assert not result.ok
    assert result.error == "unreachable"
    assert len(result.attempts) >= 2
    assert {a.result for a in result.attempts} == {"unreachable"}
    assert took < 3.0 + NO_HANG


def test_bmc_frozen_mid_session_hits_the_hard_timeout(tmp_path: Path) -> None:
    """A BMC that freezes while powering off (SIGSTOP) ends in "timeout", killed, no hang."""
    with SimBmc(on_power_off=["sh", "-c", "kill -STOP $HAPAIR_BMC_PID"]) as sim:
        f = fencer(sim, sim.write_password_file(), timeout=3.0)
        started = time.monotonic()
        result = f.power_off_and_confirm()
        took = time.monotonic() - started
        assert not result.ok
        assert result.error == "timeout"
        assert "mid-session" in (result.detail or "")
        assert took < NO_HANG
        # The simulator really is frozen: state "T" (stopped) in /proc.
        stat = Path(f"/proc/{sim.pid}/stat").read_text()
        assert stat.split(")")[1].split()[0] == "T"


def test_no_worker_outlives_its_attempt(bmc: SimBmc) -> None:
    """After a frozen-BMC timeout, the killed worker process no longer exists."""
    bmc.freeze()
    f = fencer(bmc, bmc.write_password_file(), timeout=1.0)
    result = f.power_state()
    bmc.thaw()
    assert result.error == "unreachable"
    assert workers() == []


def test_prepared_worker_serves_the_next_attempt(bmc: SimBmc) -> None:
    """prepare() starts a waiting worker that the next attempt uses; close() ends the spare."""
    f = fencer(bmc, bmc.write_password_file())
    f.prepare()
    try:
        spare = workers()
        assert len(spare) == 1
        # The password travels on stdin, never on the command line that `ps` shows.
        assert bmc.password not in _cmdline(Path(f"/proc/{spare[0]}"))
        result = f.power_off_and_confirm()
        assert result.ok and result.power == "off"
        # The prepared worker did the job and exited; a new spare waits for the next one.
        after = workers()
        assert len(after) == 1 and after != spare
    finally:
        f.close()
    assert workers() == []


def workers() -> list[int]:
    """PIDs of fencing worker processes that are children of this test process."""
    me = os.getpid()
    return [
        int(p.name)
        for p in Path("/proc").iterdir()
        if p.name.isdigit() and _ppid(p) == me and "takeover.fencing.ipmi" in _cmdline(p)
    ]


def _ppid(proc_dir: Path) -> int:
    try:
        return int(proc_dir.joinpath("stat").read_text().split(")")[1].split()[1])
    except (OSError, ValueError, IndexError):
        return -1


def _cmdline(proc_dir: Path) -> str:
    try:
        return proc_dir.joinpath("cmdline").read_text().replace("\0", " ")
    except OSError:
        return ""
