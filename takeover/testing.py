"""Fakes for tests: a settable clock and small recording stand-ins (like structlog.testing)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from takeover.arbitration import Outcome
from takeover.startup import Decision, Held
from takeover.wire import Heartbeat, Receiver


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

    def links(
        self,
        node: str,
        peer: str,
        names: Sequence[str],
        clock: Callable[[], float] | None = None,
    ) -> Callable[[Receiver, Callable[[str, Heartbeat], None]], FakeLinks]:
        """Return a links factory (as the daemon takes) for `node` on this network."""

        def factory(
            receiver: Receiver, on_heartbeat: Callable[[str, Heartbeat], None]
        ) -> FakeLinks:
            return FakeLinks(
                self, node, peer, names, receiver=receiver, on_heartbeat=on_heartbeat, clock=clock
            )

        return factory


@dataclass
class _FakeLinkStats:
    last_seen: float | None = None
    received: int = 0
    sent: int = 0
    dropped: int = 0


class FakeLinks:
    """Heartbeat links of one node on a FakeNetwork; `sent` records (link, bytes)."""

    def __init__(
        self,
        network: FakeNetwork,
        node: str,
        peer: str,
        names: Sequence[str],
        *,
        receiver: Receiver,
        on_heartbeat: Callable[[str, Heartbeat], None],
        clock: Callable[[], float] | None = None,
    ) -> None:
        """Join `network` as `node`, sending to `peer` on `names`."""
        self.network = network
        self.node = node
        self.peer = peer
        self.names = tuple(names)
        self.receiver = receiver
        self.on_heartbeat = on_heartbeat
        self.clock = clock
        self.sent: list[tuple[str, bytes]] = []
        self.stats_by_link = {n: _FakeLinkStats() for n in self.names}
        self.pending: list[tuple[str, bytes]] = []
        self.started = False
        # False: the node is "crashed": it neither sends nor receives.
        self.alive = True
        network.nodes[node] = self

    def start(self) -> None:
        """Start receiving."""
        self.started = True

    def send(self, make: Callable[[], bytes]) -> int:
        """Send one datagram per link; deliver it (on the next loop turn) where the link is up."""
        ok = 0
        for name in self.names:
            data = make()
            self.sent.append((name, data))
            self.stats_by_link[name].sent += 1
            ok += 1
            other = self.network.nodes.get(self.peer)
            if self.alive and other and other.alive and self.network.carries(name):
                asyncio.get_running_loop().call_soon(other.inject, name, data)
        return ok

    def inject(self, link: str, data: bytes) -> None:
        """Handle a datagram as if it arrived on `link` (also for forged or replayed ones)."""
        if not self.started or not self.alive:
            return
        result = self.receiver.receive(data)
        stats = self.stats_by_link.setdefault(link, _FakeLinkStats())
        if not isinstance(result, Heartbeat):
            stats.dropped += 1
            return
        stats.received += 1
        stats.last_seen = self.clock() if self.clock else None
        self.on_heartbeat(link, result)

    def drain(self) -> int:
        """Nothing queues in memory: delivery is immediate."""
        return 0

    def stats(self) -> dict[str, dict[str, object]]:
        """Per link counters; last_seen_age needs `clock`."""
        out: dict[str, dict[str, object]] = {}
        for name, s in self.stats_by_link.items():
            age = None
            if s.last_seen is not None and self.clock is not None:
                age = round(self.clock() - s.last_seen, 3)
            out[name] = {
                "last_seen_age": age,
                "received": s.received,
                "sent": s.sent,
                "dropped": s.dropped,
            }
        return out

    def close(self) -> None:
        """Stop receiving."""
        self.started = False


@dataclass
class FakeResources:
    """Recording resources; `fail_acquire`/`fail_release` make the next calls raise."""

    calls: list[str] = field(default_factory=list)
    # The `handover` flag of every release, in order.
    handovers: list[bool] = field(default_factory=list)
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

    async def release(self, handover: bool = False) -> None:
        """Record; raise if told to, else hold nothing."""
        self.calls.append("release")
        self.handovers.append(handover)
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
class FakeStartup:
    """What a node found held at start-up (the daemon's Startup effect), recording calls.

    `settle` lets go of the fake VIP in `resources` unless the decision keeps something.
    """

    found: Held = field(default_factory=Held)
    resources: FakeResources | None = None
    calls: list[str] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    fail_settle: str = ""

    def held(self) -> Held:
        """Return what was found."""
        return self.found

    async def mute(self) -> None:
        """Record the mute."""
        self.calls.append("mute")

    async def settle(self, decision: Decision) -> bool:
        """Record the decision; raise if told to; return whether nothing is held."""
        self.calls.append("settle")
        self.decisions.append(decision)
        if self.fail_settle:
            raise RuntimeError(self.fail_settle)
        if not decision.keeps and self.resources is not None:
            self.resources.held = False
        return not decision.keeps


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

    def describe(self) -> dict[str, Any]:
        """Return one result per call, as ThreadFencer does."""
        return {
            "node": self.calls[-1] if self.calls else None,
            "results": [{"ok": self.ok, "detail": self.detail} for _ in self.calls],
        }


@dataclass
class RecordingNotifier:
    """sd_notify stand-in keeping every message."""

    messages: list[str] = field(default_factory=list)

    def notify(self, message: str) -> None:
        """Keep the message."""
        self.messages.append(message)


class Startable(Protocol):
    """Anything started and closed asynchronously (the daemon)."""

    async def start(self) -> None: ...
    async def close(self) -> None: ...


def drive(daemon: Startable, body: Callable[[], Awaitable[None]]) -> None:
    """Start daemon, await body(), close the daemon whatever happens (one event loop)."""

    async def main() -> None:
        await daemon.start()
        try:
            await body()
        finally:
            await daemon.close()

    asyncio.run(main())
