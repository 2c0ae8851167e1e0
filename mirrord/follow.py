"""Following takeover: the role subscription, the peer's state, and the final flush's inhibitor.

`Follower.run()` keeps a subscription to takeover's control socket (reconnecting with a short
back-off while takeover is not running, and at once when its socket appears anew) and polls
takeover's status file for the peer's state.
It only *posts* records (`RoleSeen`, `PeerSeen`) to the daemon's queue: the daemon's consumer
decides what they mean (mirrord.roles). The subscription names the inhibitor "mirrord", so
takeover holds it on every move into RELEASING; the follower then runs the daemon's final
flush and releases it (the flush is bounded by its own timeout, below takeover's). A
subscription that begins while the node is RELEASING (takeover restarted, then served and is
handing over before mirrord was back) flushes and releases the same way: takeover waits for
it (takeover.deadlines.release_waits_for).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from mirrord.roles import Peer
from takeover.control import MIRROR_INHIBITOR, ControlError, Subscription, socket_path

log = logging.getLogger(__name__)

INHIBITOR: Final = MIRROR_INHIBITOR
# takeover's status file in the shared run dir (read as JSON: no import of its writer needed).
TAKEOVER_STATUS: Final = "takeover.json"
# Seconds between reads of takeover's status file (the peer's role and whether it is heard).
PEER_POLL: Final = 0.2
# Reconnect back-off while takeover is not running: first and longest wait, in seconds. Short:
# while mirrord is not subscribed, takeover may serve, and what the node writes meanwhile is
# only found by a walk (mirrord.roles, "takeover lost"). A new socket ends the wait at once.
BACKOFF_MIN: Final = 0.2
BACKOFF_MAX: Final = 1.0
# Seconds between looks at the socket's identity during a back-off.
SOCKET_LOOK: Final = 0.05


@dataclass(frozen=True)
class RoleSeen:
    """takeover's role for this node changed (None: takeover is not reachable)."""

    role: str | None
    reason: str
    # This node's takeover epoch as takeover told it (None: not told).
    epoch: int | None = None


@dataclass(frozen=True)
class PeerSeen:
    """takeover's view of the peer changed (None: no current status)."""

    peer: Peer | None


def read_peer(run_dir: Path, now: float) -> Peer | None:
    """Return the peer as takeover's status file describes it (None if missing or stale)."""
    try:
        doc = json.loads((run_dir / TAKEOVER_STATUS).read_text())
    except (OSError, ValueError):
        return None
    return peer_from_status(doc, now)


def peer_from_status(doc: Any, now: float) -> Peer | None:
    """Return the peer from a takeover status document (None if it is stale or malformed)."""
    if not isinstance(doc, dict):
        return None
    try:
        age = now - float(doc.get("written", 0))
        if age > 3 * float(doc.get("status_interval", 1.0)):
            return None
    except (TypeError, ValueError):
        return None
    peer = doc.get("peer")
    if not isinstance(peer, dict):
        return Peer(alive=False, role=None)
    role = peer.get("role")
    epoch = peer.get("epoch")
    return Peer(
        alive=bool(peer.get("alive")),
        role=role if isinstance(role, str) else None,
        epoch=epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None,
    )


def _epoch(doc: dict[str, Any]) -> int | None:
    """Return the epoch of a subscription reply or role event (None if missing or malformed)."""
    epoch = doc.get("epoch")
    return epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None


def _identity(path: Path) -> tuple[int, int, int] | None:
    """Return what tells one bind of the socket from the next (None: no socket)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_ctime_ns)


class Follower:
    """Subscribe to takeover and watch its status; post what changes."""

    def __init__(
        self,
        run_dir: Path,
        post: Callable[[Any], None],
        flush: Callable[[], Awaitable[object]],
        clock: Callable[[], float],
    ) -> None:
        """Follow the takeover whose run dir is `run_dir`; `flush` runs the final flush."""
        self.run_dir = run_dir
        self.post = post
        self.flush = flush
        self.clock = clock
        self._flushing: asyncio.Task[None] | None = None

    async def run(self) -> None:
        """Follow until cancelled."""
        await asyncio.gather(self._subscribe_loop(), self._peer_loop())

    async def _peer_loop(self) -> None:
        last: Peer | bool | None = False  # False: nothing posted yet
        while True:
            peer = await asyncio.to_thread(read_peer, self.run_dir, self.clock())
            if peer != last:
                self.post(PeerSeen(peer))
                last = peer
            await asyncio.sleep(PEER_POLL)

    async def _subscribe_loop(self) -> None:
        path = socket_path(self.run_dir)
        backoff = BACKOFF_MIN
        announced = False
        while True:
            try:
                sub = await Subscription.open(path, inhibitor=INHIBITOR)
            except (ControlError, OSError) as exc:
                if not announced:
                    log.warning("follow.unreachable error=%s", exc)
                    self.post(RoleSeen(None, "takeover not running"))
                    announced = True
                await self._back_off(path, backoff)
                backoff = min(BACKOFF_MAX, backoff * 2)
                continue
            backoff, announced = BACKOFF_MIN, False
            role = sub.first.get("role")
            log.info("follow.subscribed role=%s epoch=%s", role, sub.first.get("epoch"))
            role = role if isinstance(role, str) else None
            self.post(RoleSeen(role, "subscribed", _epoch(sub.first)))
            if role == "RELEASING":
                # takeover is handing over and waits for this flush (it held the inhibitor
                # for this subscription as it answered).
                self._flushing = asyncio.create_task(self._flush_then_release(sub))
            try:
                async for ev in sub.events():
                    new = ev.get("new")
                    if not isinstance(new, str):
                        continue
                    self.post(RoleSeen(new, str(ev.get("reason", "")), _epoch(ev)))
                    if new == "RELEASING":
                        self._flushing = asyncio.create_task(self._flush_then_release(sub))
            except (ConnectionError, ValueError) as exc:
                log.warning("follow.lost error=%s", exc)
            finally:
                sub.close()
            log.warning("follow.disconnected")
            self.post(RoleSeen(None, "takeover not running"))
            announced = True

    async def _back_off(self, path: Path, seconds: float) -> None:
        """Wait `seconds`, or less: until takeover binds its socket anew."""
        before = await asyncio.to_thread(_identity, path)
        # Counted in looks, not read off self.clock (the wall clock, which may step).
        for _ in range(max(1, round(seconds / SOCKET_LOOK))):
            await asyncio.sleep(SOCKET_LOOK)
            now = await asyncio.to_thread(_identity, path)
            if now is not None and now != before:
                return

    async def _flush_then_release(self, sub: Subscription) -> None:
        try:
            await self.flush()
        finally:
            with contextlib.suppress(ConnectionError, OSError, RuntimeError):
                await sub.release(INHIBITOR)
            log.info("follow.released name=%s", INHIBITOR)
