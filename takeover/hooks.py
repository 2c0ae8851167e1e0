"""Notify hooks: commands run on every transition, one at a time, in order, with a timeout.

Each transition is queued; a single worker runs every configured command for it before
taking the next transition, so hooks never run concurrently and always see transitions in
the order they happened. The environment carries HAPAIR_OLD_STATE, HAPAIR_NEW_STATE,
HAPAIR_REASON (plus HAPAIR_NODE, HAPAIR_PEER, HAPAIR_EPOCH). A hook that outlives its
timeout is killed with its whole process group; its failure is logged, never fatal: a hook
must not be able to stop a failover.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Hook:
    """One notify command."""

    # argv; no shell.
    command: tuple[str, ...]
    # Seconds before the command (and its process group) is killed.
    timeout: float = 10.0


@dataclass(frozen=True)
class HookResult:
    """How one hook run ended."""

    command: tuple[str, ...]
    # Exit status; None when it could not start or was killed on timeout.
    returncode: int | None
    timed_out: bool = False
    error: str = ""


@dataclass(frozen=True)
class _Job:
    old: str
    new: str
    reason: str
    epoch: int


class HookRunner:
    """Queue transitions and run the hooks for each, strictly one after another."""

    def __init__(self, hooks: Sequence[Hook], node: str = "", peer: str = "") -> None:
        """Run `hooks` for every submitted transition once `start()` was called."""
        self.hooks = tuple(hooks)
        self.node = node
        self.peer = peer
        self.results: list[HookResult] = []
        self._queue: asyncio.Queue[_Job | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the worker."""
        self._task = asyncio.get_running_loop().create_task(self._work())

    def submit(self, old: str, new: str, reason: str, epoch: int = 0) -> None:
        """Queue one transition (returns at once)."""
        if self.hooks:
            self._queue.put_nowait(_Job(old, new, reason, epoch))

    async def drain(self) -> None:
        """Return once every queued transition has been handled."""
        await self._queue.join()

    async def close(self) -> None:
        """Finish the queued transitions, then stop the worker."""
        if self._task is None:
            return
        self._queue.put_nowait(None)
        await self._task
        self._task = None

    async def _work(self) -> None:
        while True:
            job = await self._queue.get()
            try:
                if job is None:
                    return
                for hook in self.hooks:
                    result = await self._run(hook, job)
                    self.results.append(result)
            finally:
                self._queue.task_done()

    async def _run(self, hook: Hook, job: _Job) -> HookResult:
        env = dict(os.environ)
        env.update(
            HAPAIR_OLD_STATE=job.old,
            HAPAIR_NEW_STATE=job.new,
            HAPAIR_REASON=job.reason,
            HAPAIR_NODE=self.node,
            HAPAIR_PEER=self.peer,
            HAPAIR_EPOCH=str(job.epoch),
        )
        try:
            proc = await asyncio.create_subprocess_exec(
                *hook.command,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                # Own session: on timeout the whole group goes, not just the first process.
                start_new_session=True,
            )
        except OSError as err:
            log.warning("hook.failed command=%s error=%s", hook.command[0], err)
            return HookResult(hook.command, None, error=str(err))
        try:
            rc = await asyncio.wait_for(proc.wait(), hook.timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            log.warning("hook.timeout command=%s timeout=%s", hook.command[0], hook.timeout)
            return HookResult(hook.command, None, timed_out=True)
        level = logging.INFO if rc == 0 else logging.WARNING
        log.log(level, "hook.done command=%s rc=%s new=%s", hook.command[0], rc, job.new)
        return HookResult(hook.command, rc)
