"""The daemon with a witness on fakes: what it asks every interval, what its answers change,
and what status shows."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from takeover import machine as m
from takeover.daemon import Daemon, DaemonConfig, Effects, WitnessLink
from takeover.lease import Op, Verdict
from takeover.status import read_status, render, status_path
from takeover.testing import (
    FakeClock,
    FakeGuard,
    FakeNetwork,
    FakeProber,
    FakeResources,
    RecordingNotifier,
    drive,
)
from tests.unit.test_daemon import DIGEST, KEY, LINKS, params


class FakeWitness:
    """A witness link that records requests and answers them as told."""

    def __init__(self, emit: Callable[[m.Event], None]) -> None:
        self.emit = emit
        self.asked: list[tuple[Op, float]] = []
        # (verdict, holder) to answer with; None: silent (unreachable).
        self.answer: tuple[Verdict, str] | None = None

    def start(self) -> None:
        """Nothing to open."""

    def close(self) -> None:
        """Nothing to close."""

    def request(self, op: Op, now: float) -> None:
        """Record, then answer at once as told."""
        self.asked.append((op, now))
        if self.answer is not None:
            verdict, holder = self.answer
            if verdict is Verdict.GRANTED:
                holder = "alpha"
            self.emit(m.WitnessAnswer(now, verdict, holder, 2.0, 3.0))

    def stats(self) -> dict[str, Any]:
        """Return what status shows of the link."""
        last = self.asked[-1][0].name.lower() if self.asked else None
        return {"address": "203.0.113.10:7406", "asking": last, "on_unreachable": "ping-list"}


def rig(tmp: Path) -> tuple[Daemon, FakeClock, FakeResources, list[FakeWitness]]:
    """One daemon alone (no peer) with a fake witness."""
    clock = FakeClock()
    p = params("alpha", "beta", 100)
    p = replace(p, witness_lease=3.0, witness_margin=0.5)
    cfg = DaemonConfig(p, "mail", KEY, DIGEST, tmp / "run", tmp / "state")
    resources = FakeResources()
    made: list[FakeWitness] = []

    def witness(
        boot: bytes, seq: Callable[[], int], emit: Callable[[m.Event], None]
    ) -> WitnessLink:
        made.append(FakeWitness(emit))
        return made[0]

    links = FakeNetwork().links("alpha", "beta", LINKS, clock=clock)
    fx = Effects(links, resources, FakeProber(), FakeGuard(), None, RecordingNotifier())
    fx.witness = witness
    daemon = Daemon(cfg, fx, clock=clock, wall=lambda: 1.7e9 + clock())
    return daemon, clock, resources, made


async def advance(daemon: Daemon, clock: FakeClock, seconds: float, step: float = 0.1) -> None:
    """Move the fake clock in steps, pumping the daemon and letting its tasks run."""
    end = clock() + seconds
    while clock() < end - 1e-9:
        clock.advance(step)
        daemon.pump()
        for _ in range(5):
            await asyncio.sleep(0)
            daemon.pump()


def test_alone_node_waits_for_the_grant_then_takes_over_and_renews(tmp_path: Path) -> None:
    """Alone after initdead, a node whose witness names another holder stays standby and claims
    every interval (status shows the witness); once granted it takes over and then renews."""
    daemon, clock, resources, made = rig(tmp_path)

    async def body() -> None:
        witness = made[0]
        witness.answer = (Verdict.HELD, "beta")
        await advance(daemon, clock, 2.0)
        assert daemon.state.role is m.Role.STANDBY
        assert daemon.state.condition == "witness: lease held by beta"
        assert resources.calls in ([], ["release"])
        assert {op for op, _ in witness.asked[-5:]} == {Op.CLAIM}
        doc = read_status(status_path(tmp_path / "run"))
        assert doc is not None
        w = doc["witness"]
        assert (w["reachable"], w["holder"], w["verdict"]) == (True, "beta", "HELD")
        text = render(doc, 1.7e9 + clock())
        assert "Witness: 203.0.113.10:7406  reachable" in text
        assert "lease held by beta" in text
        witness.answer = (Verdict.GRANTED, "alpha")
        await advance(daemon, clock, 1.0)
        assert daemon.state.role is m.Role.ACTIVE
        assert "acquire" in resources.calls
        assert witness.asked[-1][0] is Op.RENEW

    drive(daemon, body)


def test_silent_witness_is_a_warning_in_status(tmp_path: Path) -> None:
    """A witness that never answers shows as a condition; a node alone falls back to the ping
    list (never answered: not lost together with a peer) and takes over."""
    daemon, clock, _resources, made = rig(tmp_path)

    async def body() -> None:
        await advance(daemon, clock, 2.0)
        doc = read_status(status_path(tmp_path / "run"))
        assert doc is not None
        assert any("witness 203.0.113.10:7406 unreachable" in c for c in doc["conditions"])
        assert doc["witness"]["reachable"] is False
        assert daemon.state.role is m.Role.ACTIVE
        assert made[0].asked[-1][0] is Op.RENEW

    drive(daemon, body)
