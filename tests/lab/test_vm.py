"""The VM resource against two real libvirtd hosts (QEMU/TCG) with a tiny BIOS-only guest."""

from __future__ import annotations

import logging
import os
import signal
import uuid
from collections.abc import Callable, Iterator

import libvirt
import pytest

from takeover.backends.libvirt import VmResource, VmSpec
from takeover.fencing.ipmi import IpmiFencer
from tests.lab import fixtures
from tests.lab.bmc import SimBmc, power_off_node_argv
from tests.lab.fixtures import require_root
from tests.lab.lab import Lab, wait_until
from tests.lab.libvirt_hosts import LibvirtPair, alive

pytestmark = pytest.mark.netns

# Generous bound for waits that normally take 1-3 s (QEMU crash is reported ~1.8 s later).
WAIT = 60.0


def wait_for(pred: Callable[[], object], what: str, timeout: float = WAIT) -> None:
    """Poll `pred` until true, failing after WAIT seconds by default."""
    fixtures.wait_for(pred, what, timeout)


@pytest.fixture(scope="module")
def pair() -> Iterator[LibvirtPair]:
    """A lab whose nodes a and b each run a real libvirtd, shared by the module's tests."""
    require_root()
    with Lab() as lab, LibvirtPair(lab) as p:
        yield p


class Vm:
    """One guest name with its VmResource on each host; closes and clears them after use."""

    def __init__(self, pair: LibvirtPair, **spec: object) -> None:
        self.pair = pair
        self.name = f"g-{uuid.uuid4().hex[:8]}"
        self.xml = pair.write_guest(self.name)
        self.failovers: list[tuple[str, str]] = []
        self.res = {
            h: VmResource(
                VmSpec(self.name, self.xml, pair[h].uri, **spec),  # type: ignore[arg-type]
                on_failover=lambda n, r: self.failovers.append((n, r)),
            )
            for h in ("a", "b")
        }

    def __getitem__(self, host: str) -> VmResource:
        return self.res[host]

    def state(self, host: str) -> str | None:
        """ "running", "defined" or None (unknown) for this guest on `host`."""
        return self.pair[host].domains().get(self.name)

    def running_copies(self) -> int:
        """How many hosts run this guest."""
        return sum(self.state(h) == "running" for h in ("a", "b"))

    def close(self) -> None:
        """Close both resources, bring back a crashed host, remove the guest everywhere."""
        for r in self.res.values():
            r.close()
        for h in ("a", "b"):
            host = self.pair[h]
            if not host.running():
                # A test that crashed this node failed before reviving it: the next test
                # still gets two hosts.
                self.pair.lab.revive_node(h)
                host.stop()
                host.start()
            host.clear()


@pytest.fixture
def vm(pair: LibvirtPair) -> Iterator[Vm]:
    """A fresh guest (short stop timeout: the BIOS-only guest ignores ACPI shutdown)."""
    v = Vm(pair, stop_timeout=1.0, check_interval=1.0, max_restarts=2, restart_window=600.0)
    yield v
    v.close()


def test_acquire_defines_and_starts_on_host_a(vm: Vm, pair: LibvirtPair) -> None:
    """acquire() defines the guest from the shared XML and leaves it running on a only."""
    vm["a"].acquire()
    assert vm.state("a") == "running"
    assert vm.state("b") is None
    assert pair["a"].qemu_pid(vm.name) is not None
    info = vm["a"].describe()
    assert info["where"] == "here"
    assert info["state"] == "running"
    assert info["persistent"] is True


def test_acquire_adopts_a_copy_already_running(vm: Vm, pair: LibvirtPair) -> None:
    """A second acquire() keeps the running QEMU rather than starting another."""
    vm["a"].acquire()
    pid = pair["a"].qemu_pid(vm.name)
    vm["a"].acquire()
    assert pair["a"].qemu_pid(vm.name) == pid


def test_killed_qemu_is_restarted_in_place(
    vm: Vm, pair: LibvirtPair, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGKILL of the guest's QEMU: the monitor sees the event and starts it again on a."""
    caplog.set_level(logging.INFO, logger="takeover.backends.libvirt")
    vm["a"].acquire()
    vm["a"].start_monitor()
    pid = pair["a"].qemu_pid(vm.name)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: pair["a"].qemu_pid(vm.name) not in (None, pid), "a new QEMU on a")
    wait_for(lambda: vm["a"].describe()["state"] == "running", "guest running again")
    assert vm["a"].describe()["restarts"] == 1
    assert vm.state("b") is None
    assert vm.failovers == []
    assert any("vm.restart " in r.message for r in caplog.records)


def test_crashes_beyond_the_budget_ask_for_failover(vm: Vm, pair: LibvirtPair) -> None:
    """Three crashes with max_restarts=2: two restarts in place, then "failover needed"."""
    vm["a"].acquire()
    vm["a"].start_monitor()
    for crash in range(3):
        pid = pair["a"].qemu_pid(vm.name)
        assert pid is not None, f"no QEMU before crash {crash}"
        os.kill(pid, signal.SIGKILL)
        if crash < 2:
            wait_for(lambda p=pid: pair["a"].qemu_pid(vm.name) not in (None, p), "restart")
    wait_for(lambda: vm.failovers, "the failover callback")
    assert vm.failovers[0][0] == vm.name
    assert vm["a"].describe()["failed"]
    # Given up here: the guest stays down until the pair decides.
    assert vm.state("a") != "running"


def test_live_migration_a_to_b_keeps_the_guest_running(vm: Vm, pair: LibvirtPair) -> None:
    """Live p2p migration: the guest runs on b afterwards and a keeps no definition."""
    vm["a"].acquire()
    vm["a"].start_monitor()
    result = vm["a"].migrate(pair["b"].tcp_uri)
    assert result.method == "live" and result.ok, result
    assert vm.state("a") is None
    assert vm.state("b") == "running"
    # Running, not merely "running" on paper: the guest's vCPU keeps consuming time on b.
    conn = libvirt.open(pair["b"].uri)
    try:
        dom = conn.lookupByName(vm.name)
        assert dom.isPersistent()
        first = dom.info()[4]
        wait_for(lambda: dom.info()[4] > first, "guest CPU time to advance on b")
    finally:
        conn.close()
    # The migration's stop on a is not taken for a crash.
    assert vm["a"].check() == "idle"
    assert vm.failovers == []


def test_failed_migration_falls_back_to_stop_start(vm: Vm, pair: LibvirtPair) -> None:
    """Migration to a libvirtd that is not there: stopped on a, started on b instead."""
    vm["a"].acquire()
    bogus = f"qemu+tcp://{pair['b'].address}:1/system"
    result = vm["a"].migrate(bogus, fallback=vm["b"])
    assert result.method == "stop-start" and result.ok, result
    assert result.error
    assert vm.state("a") is None
    assert vm.state("b") == "running"


def test_returning_node_with_running_copy_reconciles(vm: Vm) -> None:
    """a comes back still running the guest while b owns it: a destroys and undefines first."""
    vm["a"].acquire()
    vm["b"].acquire()
    assert vm.running_copies() == 2  # the split brain a returning node must clear
    steps = vm["a"].reconcile(owner_elsewhere=True)
    assert steps == ["destroy", "undefine"]
    assert vm.state("a") is None
    assert vm.running_copies() == 1
    assert vm.state("b") == "running"


def test_returning_node_with_stale_definition_reconciles(vm: Vm, pair: LibvirtPair) -> None:
    """A stale shut-off definition on a returning node is undefined; the owner is untouched."""
    conn = libvirt.open(pair["a"].uri)
    try:
        conn.defineXML(vm.xml.read_text())
    finally:
        conn.close()
    vm["b"].acquire()
    assert vm.state("a") == "defined"
    assert vm["a"].reconcile(owner_elsewhere=True) == ["undefine"]
    assert vm.state("a") is None
    assert vm.state("b") == "running"


def test_reconcile_keeps_the_copy_of_the_owner(vm: Vm) -> None:
    """A node that is to own the VM keeps its running copy on reconcile."""
    vm["a"].acquire()
    assert vm["a"].reconcile(owner_elsewhere=False) == []
    assert vm.state("a") == "running"


def test_release_stops_and_undefines(vm: Vm, caplog: pytest.LogCaptureFixture) -> None:
    """release(): graceful shutdown, destroyed after stop_timeout, definition removed."""
    caplog.set_level(logging.INFO, logger="takeover.backends.libvirt")
    vm["a"].acquire()
    vm["a"].start_monitor()
    vm["a"].release()
    assert vm.state("a") is None
    assert vm["a"].describe()["where"] == "absent"
    assert any("reason=stop-timeout" in r.message for r in caplog.records)
    # A released VM is not restarted by the monitor.
    assert vm["a"].check() == "idle"


def test_crashed_owner_is_fenced_then_survivor_starts_and_returner_reconciles(
    vm: Vm, pair: LibvirtPair
) -> None:
    """b runs the VM; a powers b off via its BMC (b's processes die), starts the VM; b comes
    back with a stale definition and undefines it, so exactly one copy runs."""
    lab = pair.lab
    vm["b"].acquire()
    qemu_b = pair["b"].qemu_pid(vm.name)
    assert qemu_b is not None
    with SimBmc(on_power_off=power_off_node_argv(lab, "b")) as bmc:
        fencer = IpmiFencer(bmc.address, bmc.port, bmc.user, bmc.write_password_file(), 10.0)
        fenced = fencer.power_off_and_confirm()
    assert fenced.ok and fenced.power == "off", fenced
    # Powered off for real: b's QEMU and libvirtd are gone before anything is acquired (the
    # power-off waits up to 4 s for the node to empty; a loaded host may reap them later).
    assert wait_until(lambda: not alive(qemu_b) and lab.pids("b") == [], timeout=30)
    vm["a"].acquire()
    assert vm.state("a") == "running"
    # b returns: links up, libvirtd restarted; its persistent definition survived the crash.
    lab.revive_node("b")
    pair["b"].start()
    # libvirtd reconnects to its old QEMUs in the background: for a moment the dead copy may
    # still show as running. Either way it is a stale copy, and reconcile clears it.
    assert vm.state("b") in ("defined", "running")
    steps = vm["b"].reconcile(owner_elsewhere=True)
    assert steps in (["undefine"], ["destroy", "undefine"])
    assert vm.state("b") is None
    assert vm.running_copies() == 1
