"""Health checks of the local service: TCP connect and command, with fall/rise counters.

A check turns unhealthy after `fall` consecutive failures and healthy again after `rise`
consecutive successes (keepalived's vrrp_script weight/fall/rise). The node is healthy when
every check is. The daemon feeds the verdict to the machine as HealthChanged; a failing
active demotes itself only when the standby is healthy (machine.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Sequence

from takeover.config import CheckConfig

log = logging.getLogger(__name__)


# The cluster file's [[check]] table is the spec a check runs from.
CheckSpec = CheckConfig


class Counter:
    """Fall/rise hysteresis of one check; starts healthy (a fresh daemon must not demote)."""

    def __init__(self, fall: int, rise: int) -> None:
        """Count `fall` failures to go unhealthy, `rise` successes to recover."""
        self.fall = fall
        self.rise = rise
        self.ok = True
        self._streak = 0

    def record(self, success: bool) -> bool:
        """Fold one run's result; return whether the verdict changed."""
        if success == self.ok:
            self._streak = 0
            return False
        self._streak += 1
        if self._streak >= (self.rise if success else self.fall):
            self.ok = success
            self._streak = 0
            return True
        return False


async def tcp_check(host: str, port: int, timeout: float) -> bool:
    """Return whether a TCP connection to host:port opens within `timeout`."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def command_check(argv: Sequence[str], timeout: float) -> bool:
    """Return whether `argv` exits 0 within `timeout` (killed with its group otherwise)."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError:
        return False
    try:
        return await asyncio.wait_for(proc.wait(), timeout) == 0
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        return False


def run_once(spec: CheckSpec) -> Awaitable[bool]:
    """Return the awaitable that runs `spec` once."""
    if spec.type == "tcp":
        assert spec.target is not None
        return tcp_check(spec.target[0], spec.target[1], spec.timeout)
    return command_check(spec.command, spec.timeout)


class HealthMonitor:
    """Run every check at its interval; call `on_change(healthy)` when the overall verdict flips."""

    def __init__(
        self,
        specs: Sequence[CheckSpec],
        on_change: Callable[[bool], None],
        runner: Callable[[CheckSpec], Awaitable[bool]] = run_once,
    ) -> None:
        """Monitor `specs`; `runner` runs one check (injectable for tests)."""
        self.specs = tuple(specs)
        self.on_change = on_change
        self.runner = runner
        self.counters = {s.name: Counter(s.fall, s.rise) for s in self.specs}
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def healthy(self) -> bool:
        """Return whether every check currently counts as healthy."""
        return all(c.ok for c in self.counters.values())

    def states(self) -> dict[str, dict[str, bool]]:
        """Return check name -> {"ok": bool}, for status."""
        return {name: {"ok": c.ok} for name, c in self.counters.items()}

    async def run_check(self, spec: CheckSpec) -> None:
        """Run one check once and fold its result (notifying on an overall change)."""
        before = self.healthy
        success = await self.runner(spec)
        if self.counters[spec.name].record(success):
            log.info("health.check name=%s ok=%s", spec.name, success)
        if self.healthy != before:
            log.info("health.changed healthy=%s", self.healthy)
            self.on_change(self.healthy)

    def start(self) -> None:
        """Start one periodic task per check."""
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._loop(s)) for s in self.specs]

    async def _loop(self, spec: CheckSpec) -> None:
        while True:
            await self.run_check(spec)
            await asyncio.sleep(spec.interval)

    async def close(self) -> None:
        """Stop every check task."""
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks = []
