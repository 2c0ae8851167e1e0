"""Fakes for tests: a settable clock and small recording stand-ins (like structlog.testing)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from takeover.arbitration import Outcome


@dataclass
class FakeClock:
    """A clock that moves only when told to."""

    now: float = 1000.0

    def __call__(self) -> float:
        """Return the current fake time."""
        return self.now

    def advance(self, seconds: float) -> float:
        """Move time forward and return the new time."""
        self.now += seconds
        return self.now


@dataclass
class Recorder:
    """Record every call as (name, args); `names()` lists just the names in order."""

    calls: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)

    def record(self, name: str, *args: Any) -> None:
        """Append one call."""
        self.calls.append((name, args))

    def names(self) -> list[str]:
        """Return the names of the recorded calls, in order."""
        return [name for name, _ in self.calls]


class FakeNetwork:
    """In-memory heartbeat links between fake nodes; links can be cut per name or all at once."""

    def __init__(self) -> None:
        """Start with every link up."""
        self.nodes: dict[str, FakeLinks] = {}
        self.cut: set[str] = set()
        self.all_cut = False

    def carries(self, link: str) -> bool:
        """Return whether `link` currently delivers."""
        return not self.all_cut and link not in self.cut


class FakeLinks:
    """Heartbeat links of one node on a FakeNetwork; `sent` records (link, bytes)."""

    def __init__(self, network: FakeNetwork, node: str, peer: str, links: Sequence[str]) -> None:
        """Join `network` as `node`, sending to `peer` on `links`."""
        self.network = network
        self.node = node
        self.peer = peer
        self._names = tuple(links)
        self.sent: list[tuple[str, bytes]] = []
        self.deliver: Callable[[str, bytes], None] | None = None
        self.alive = True
        network.nodes[node] = self

    def names(self) -> Sequence[str]:
        """Return the link names."""
        return self._names

    async def open(self, deliver: Callable[[str, bytes], None]) -> None:
        """Start delivering received datagrams to `deliver`."""
        self.deliver = deliver

    def send(self, link: str, data: bytes) -> None:
        """Record and deliver (asynchronously, like a socket) if the link and peer are up."""
        self.sent.append((link, data))
        other = self.network.nodes.get(self.peer)
        if not (self.alive and other and other.alive and self.network.carries(link)):
            return
        if other.deliver is not None:
            asyncio.get_running_loop().call_soon(other.deliver, link, data)

    def inject(self, link: str, data: bytes) -> None:
        """Deliver a datagram as if it arrived on `link` (forged or replayed packets)."""
        assert self.deliver is not None
        self.deliver(link, data)

    def close(self) -> None:
        """Stop delivering."""
        self.deliver = None


@dataclass
class FakeResources:
    """Recording resources; `fail_acquire`/`fail_release` make the next calls raise."""

    calls: list[str] = field(default_factory=list)
    held: bool = False
    fail_acquire: str = ""
    fail_release: str = ""
    vip: str = "192.0.2.100/24"

    async def acquire(self) -> None:
        """Record; raise if told to, else hold."""
        self.calls.append("acquire")
        if self.fail_acquire:
            raise RuntimeError(self.fail_acquire)
        self.held = True

    async def release(self) -> None:
        """Record; raise if told to, else hold nothing."""
        self.calls.append("release")
        if self.fail_release:
            raise RuntimeError(self.fail_release)
        self.held = False

    async def announce(self) -> None:
        """Record an announcement."""
        self.calls.append("announce")

    def describe(self) -> list[dict[str, Any]]:
        """Return the single fake VIP."""
        return [{"address": self.vip, "interface": "lan0", "held": self.held}]


@dataclass
class FakeProber:
    """Ping list whose outcome per target is set by the test (default: every target replies)."""

    targets: Sequence[str] = ("192.0.2.1", "192.0.2.2", "192.0.2.3")
    down: set[str] = field(default_factory=set)
    rounds: int = 0

    async def probe(self) -> dict[str, list[Outcome]]:
        """Return one try per target: TIMEOUT for those in `down`, REPLY otherwise."""
        self.rounds += 1
        return {t: [Outcome.TIMEOUT if t in self.down else Outcome.REPLY] for t in self.targets}


@dataclass
class FakeGuard:
    """VIP guard whose answer is set by the test (None: nobody answers)."""

    answer: str | None = None
    calls: int = 0

    async def probe(self) -> str | None:
        """Return the configured answering MAC."""
        self.calls += 1
        return self.answer


@dataclass
class FakeFencer:
    """Fencer that records its calls and returns a set result."""

    ok: bool = True
    detail: str = "powered off"
    calls: list[str] = field(default_factory=list)

    async def fence(self, peer: str) -> tuple[bool, str]:
        """Record and return the configured result."""
        self.calls.append(peer)
        return self.ok, self.detail


@dataclass
class RecordingNotifier:
    """sd_notify stand-in keeping every message."""

    messages: list[str] = field(default_factory=list)

    def notify(self, message: str) -> None:
        """Keep the message."""
        self.messages.append(message)
