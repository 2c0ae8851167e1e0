"""Daemon log lines carry their syslog priority when stderr is the journal (sd-daemon(3))."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from takeover.cliutil import stderr_is_journal, syslog_priority

SCRIPT = """
import logging, sys
from takeover.cliutil import print_problems, setup_daemon_logging
setup_daemon_logging("info")
log = logging.getLogger("takeover.x")
log.info("plain.event a=1")
log.warning("odd.event b=2")
try:
    raise ValueError("boom")
except ValueError:
    log.exception("failed.event")
print_problems("takeover", ["cluster.toml: node[0].name: missing"])
"""


def run_daemon_logging(tmp_path: Path, journal: bool) -> list[str]:
    """Run the shared logging set-up in a child with stderr in a file; return its lines."""
    out = tmp_path / "stderr"
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    with out.open("wb") as f:
        st = os.fstat(f.fileno())
        if journal:
            env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        subprocess.run([sys.executable, "-c", SCRIPT], stderr=f, env=env, check=True, timeout=60)
    return out.read_text().splitlines()


def test_journal_lines_carry_their_level_as_priority(tmp_path: Path) -> None:
    """Under journald, info is <6>, warning <4>, a traceback's every line <3>, problems <3>."""
    lines = run_daemon_logging(tmp_path, journal=True)
    assert lines[0] == "<6>INFO takeover.x plain.event a=1"
    assert lines[1] == "<4>WARNING takeover.x odd.event b=2"
    assert lines[2] == "<3>ERROR takeover.x failed.event"
    assert lines[-2] == "<3>ValueError: boom"
    assert all(line.startswith("<3>") for line in lines[2:])
    assert lines[-1] == "<3>takeover: error: cluster.toml: node[0].name: missing"


def test_terminal_lines_have_no_priority_prefix(tmp_path: Path) -> None:
    """Outside the journal a line starts with its time, not with `<N>`."""
    lines = run_daemon_logging(tmp_path, journal=False)
    assert "WARNING takeover.x odd.event b=2" in lines[1]
    assert not any(line.startswith("<") for line in lines)


def test_an_inherited_journal_stream_for_another_file_is_not_trusted(tmp_path: Path) -> None:
    """JOURNAL_STREAM naming another file (stderr redirected by a parent) means no prefix."""
    other = tmp_path / "other"
    other.write_text("")
    st = other.stat()
    with (tmp_path / "stderr").open("wb") as f:
        assert not stderr_is_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}, f.fileno())
        mine = os.fstat(f.fileno())
        assert stderr_is_journal({"JOURNAL_STREAM": f"{mine.st_dev}:{mine.st_ino}"}, f.fileno())
        assert not stderr_is_journal({"JOURNAL_STREAM": "junk"}, f.fileno())


@pytest.mark.parametrize(
    "level, priority",
    [(logging.DEBUG, 7), (logging.INFO, 6), (25, 4), (logging.WARNING, 4),
     (logging.ERROR, 3), (logging.CRITICAL, 2), (60, 2)],
)  # fmt: skip
def test_syslog_priority_of_each_level(level: int, priority: int) -> None:
    """Standard levels map to syslog's; a custom level takes the next standard one up."""
    assert syslog_priority(level) == priority
