"""Deadlines derived from the resources' own limits, and the rules `check` applies to them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from takeover import deadlines as d
from takeover.config import cluster_deadlines, load_cluster
from takeover.configparse import ConfigError
from takeover.resources import ResourceError, ResourceList

ROOT = Path(__file__).resolve().parents[2]
MINIMAL = ROOT / "tests" / "configs" / "valid-minimal.toml"

VM_DEFAULT = d.VmLimits("mail", start_timeout=60.0, stop_timeout=120.0)
VM_MIGRATING = d.VmLimits("db", start_timeout=30.0, stop_timeout=60.0, migrate_timeout=90.0)


def test_vm_budgets_add_their_margins() -> None:
    """A stop is shutdown plus destroy; a handover adds the migration and its abort first."""
    assert VM_DEFAULT.stop_budget() == 120.0 + d.DESTROY_MARGIN
    assert VM_DEFAULT.handover_budget() == VM_DEFAULT.stop_budget()
    assert VM_MIGRATING.handover_budget() == 90.0 + d.ABORT_MARGIN + 60.0 + d.DESTROY_MARGIN
    assert VM_MIGRATING.start_budget() == d.DEFINE_MARGIN + 30.0


def test_release_budget_is_the_sum_of_the_vms_and_the_vips() -> None:
    """VMs are released one after another, then the VIPs: the budgets add up."""
    got = d.derive(30.0, [VM_DEFAULT, VM_MIGRATING])
    assert got.release_budget == (
        VM_DEFAULT.handover_budget() + VM_MIGRATING.handover_budget() + d.VIP_MARGIN
    )
    assert got.acquire_budget == VM_DEFAULT.start_budget() + VM_MIGRATING.start_budget() + 5.0
    # A release may wait behind an acquire in progress before it starts.
    assert got.release_timeout == got.acquire_budget + got.release_budget


def test_stop_deadline_outlasts_a_vm_stop() -> None:
    """The stop deadline covers the VM's stop_timeout, the inhibitors and the exit (not 35 s)."""
    got = d.derive(30.0, [VM_DEFAULT])
    assert got.stop_deadline == got.release_timeout + 30.0 + d.EXIT_MARGIN
    assert got.stop_deadline > VM_DEFAULT.stop_timeout + 30.0 + d.EXIT_MARGIN


def test_without_vms_the_stop_deadline_is_the_vips_and_the_inhibitors() -> None:
    """A VIP-only cluster stops within the VIP margins, the inhibitor timeout and the exit."""
    got = d.derive(30.0, [])
    assert got.stop_deadline == 2 * d.VIP_MARGIN + 30.0 + d.EXIT_MARGIN


@pytest.mark.parametrize(
    ("expected", "held", "said", "waits"),
    [
        # Nothing expected: only what is held (the behaviour without [mirror]).
        ((), (), (), set()),
        ((), ("flush",), (), {"flush"}),
        # mirrord expected and not subscribed as RELEASING began: waited for.
        (("mirrord",), (), (), {"mirrord"}),
        # It subscribed and holds it: still waited for, until it releases.
        (("mirrord",), ("mirrord",), (), {"mirrord"}),
        # It released it: done.
        (("mirrord",), (), ("mirrord",), set()),
        # Another holder keeps the release waiting after mirrord's say.
        (("mirrord",), ("flush",), ("mirrord",), {"flush"}),
    ],
)
def test_release_waits_for_held_and_expected_not_yet_said(
    expected: tuple[str, ...], held: tuple[str, ...], said: tuple[str, ...], waits: set[str]
) -> None:
    """A planned release waits for every held inhibitor and every expected one without its say."""
    assert d.release_waits_for(expected, held, said) == waits


@pytest.mark.parametrize(
    ("inhibit", "flush", "keys"),
    [
        (30.0, 20.0, []),
        (30.0, None, []),
        (30.0, 30.0, ["mirror.flush_timeout"]),
        (10.0, 20.0, ["mirror.flush_timeout"]),
    ],
)
def test_problems_need_the_flush_below_the_inhibitor(
    inhibit: float, flush: float | None, keys: list[str]
) -> None:
    """The final flush must end before the release stops waiting for it."""
    assert [k for k, _ in d.problems(inhibit, flush, [VM_DEFAULT])] == keys


def test_extend_timeout_is_in_microseconds() -> None:
    """sd_notify's EXTEND_TIMEOUT_USEC takes whole microseconds."""
    assert d.extend_timeout_usec(245.5) == 245_500_000


VM_TABLE = """
[[vm]]
name = "mail"
xml = "/srv/vm/mail.xml"
stop_timeout = "3m"
migrate = true
migrate_timeout = "45s"
[vm.migrate_uri]
a = "qemu+tcp://192.0.2.11/system"
b = "qemu+tcp://192.0.2.12/system"
"""


def test_cluster_deadlines_follow_the_file(tmp_path: Path) -> None:
    """inhibit_timeout and the VM's stop and migration limits reach the derived deadlines."""
    text = MINIMAL.read_text().replace("[cluster]\n", '[cluster]\ninhibit_timeout = "40s"\n', 1)
    path = tmp_path / "cluster.toml"
    path.write_text(text + VM_TABLE)
    cluster = load_cluster(path)
    got = cluster_deadlines(cluster)
    assert got.inhibit_timeout == 40.0
    handover = 45.0 + d.ABORT_MARGIN + 180.0 + d.DESTROY_MARGIN
    assert got.release_budget == handover + d.VIP_MARGIN
    assert got.stop_deadline == got.release_timeout + 40.0 + d.EXIT_MARGIN


def test_flush_not_below_inhibit_is_refused_naming_the_key(tmp_path: Path) -> None:
    """load_cluster names mirror.flush_timeout when it does not end before the inhibitor."""
    text = MINIMAL.read_text().replace("[cluster]\n", '[cluster]\ninhibit_timeout = "5s"\n', 1)
    path = tmp_path / "cluster.toml"
    path.write_text(text + '\n[mirror]\nflush_timeout = "20s"\n')
    with pytest.raises(ConfigError) as info:
        load_cluster(path)
    assert any(
        p.startswith("cluster.toml: mirror.flush_timeout: must be below")
        for p in info.value.problems
    )


class Hung:
    """A VM-like item whose release never returns, with a budget."""

    name = "vm mail"

    def __init__(self, budget: float) -> None:
        self.release_budget = budget
        self.handover_budget = budget

    async def acquire(self) -> None:
        """Never used."""

    async def release(self) -> None:
        """Hang, as a hypervisor that does not answer."""
        await asyncio.Event().wait()

    async def announce(self) -> None:
        """Nothing to announce."""

    def describe(self) -> dict[str, object]:
        """Held."""
        return {"held": True}


class Vip:
    """A VIP-like item recording its release."""

    name = "vip 192.0.2.100/24"

    def __init__(self) -> None:
        self.released = False

    async def acquire(self) -> None:
        """Never used."""

    async def release(self) -> None:
        """Let go at once."""
        self.released = True

    async def announce(self) -> None:
        """Nothing to announce."""

    def describe(self) -> dict[str, object]:
        """Held unless released."""
        return {"held": not self.released}


@pytest.mark.parametrize("handover", [False, True])
def test_vips_are_released_when_a_vm_is_past_its_budget(handover: bool) -> None:
    """A VM release past its budget fails the release, but the VIPs are let go all the same."""
    vip = Vip()
    resources = ResourceList([vip, Hung(0.05)])

    async def main() -> None:
        with pytest.raises(ResourceError, match=r"vm mail: past its budget of 0\.05 s"):
            await asyncio.wait_for(resources.release(handover=handover), 30)

    asyncio.run(main())
    assert vip.released


# (interval, deadtime, probe_timeout) -> (prearbitrate lead, guard window)
GUARD_TIMING = [
    # The lab's and the bench's 3 x interval: the window ends a fifth of the lead early.
    ((0.1, 0.3, 0.3), (0.15, 0.12)),
    ((1.0, 3.0, 0.3), (0.8, 0.3)),
    ((0.05, 0.15, 0.3), (0.075, 0.06)),
    # The defaults (200 ms, 3 x): a 240 ms window from 300 ms before deadtime.
    ((0.2, 0.6, 0.3), (0.3, 0.24)),
    # A long deadtime: the probe timeout sets both.
    ((0.1, 0.4, 0.3), (0.25, 0.2)),
    # Deadtime too short for an early start: the probes start at deadtime, as before.
    ((0.1, 0.12, 0.3), (0.0, 0.06)),
]


@pytest.mark.parametrize("given, expected", GUARD_TIMING)
def test_guard_timing_from_interval_deadtime_and_probe_timeout(
    given: tuple[float, float, float], expected: tuple[float, float]
) -> None:
    """The probes start before deadtime and the guard's verdict is due before it, with room."""
    lead, window = d.prearbitrate(*given), d.guard_window(*given)
    assert (lead, window) == pytest.approx(expected)
    interval, deadtime, _ = given
    if lead > 0:
        # Not before a heartbeat is missed by half an interval; the verdict in before deadtime.
        assert deadtime - lead >= 1.5 * interval - 1e-9
        assert lead - window >= (1 - d.GUARD_SHARE) * lead - 1e-9
