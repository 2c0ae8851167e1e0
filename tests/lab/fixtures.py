"""pytest fixtures for the lab, registered for the whole suite by tests/conftest.py.

Root-only tests FAIL without root, with a message saying why: in CI (root) a skipped lab test
would count as missing, so a skip would hide that the suite did not run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

from tests.lab.lab import Lab, wait_until
from tests.lab.probe import VipProbe

ROOT_MESSAGE = (
    "this test needs root: it builds network namespaces (the lab). "
    "Run `sudo make test`; lab tests fail rather than skip without root."
)


def require_root() -> None:
    """Fail the current test unless running as root."""
    if os.geteuid() != 0:
        pytest.fail(ROOT_MESSAGE, pytrace=False)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Fail tests marked netns or e2e up front when not root."""
    if any(item.iter_markers("netns")) or any(item.iter_markers("e2e")):
        require_root()


@pytest.fixture
def lab() -> Iterator[Lab]:
    """A fresh lab for one test, torn down afterwards even when the test fails."""
    require_root()
    with Lab() as the_lab:
        yield the_lab


@pytest.fixture
def vip_probe(lab: Lab) -> VipProbe:
    """A VIP probe from the lab's client; the lab's teardown ends it if still running."""
    return VipProbe(lab)


@pytest.fixture
def victim() -> Iterator[subprocess.Popen[bytes]]:
    """A stand-in for a node's workload: a process a BMC's power-off must kill."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def wait_for(
    pred: Callable[[], object],
    what: str,
    timeout: float,
    context: Callable[[], str] = str,
) -> None:
    """Poll `pred` until it is true; fail naming `what` (and `context()`) after `timeout` s."""
    if not wait_until(lambda: bool(pred()), timeout, interval=0.1):
        pytest.fail(f"timed out waiting for {what}\n{context()}")
