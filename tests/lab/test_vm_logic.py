"""VmResource logic against libvirt's in-process test driver (no daemon, no root, no QEMU)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from takeover.backends.libvirt import VmError, VmResource, VmSpec
from takeover.config import VmConfig

URI = "test:///default"


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.now += seconds


@pytest.fixture
def xml(tmp_path: Path) -> Path:
    """A domain XML for the test driver, with a unique name."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    path = tmp_path / f"{name}.xml"
    path.write_text(
        f"<domain type='test'><name>{name}</name><memory unit='MiB'>16</memory>"
        "<os><type arch='x86_64'>hvm</type></os></domain>"
    )
    return path


@pytest.fixture
def conn() -> Iterator[libvirt.virConnect]:
    """A second connection to the test driver, to play the outside world."""
    c = libvirt.open(URI)
    yield c
    c.close()


def resource(
    xml: Path, clock: FakeClock, failovers: list[str] | None = None, **kw: object
) -> VmResource:
    """A VmResource for `xml` on the test driver."""
    spec = VmSpec(xml.stem, xml, URI, **kw)  # type: ignore[arg-type]
    sink = failovers if failovers is not None else []
    return VmResource(spec, on_failover=lambda name, reason: sink.append(reason), clock=clock)


def test_acquire_defines_and_starts(xml: Path, conn: libvirt.virConnect) -> None:
    """acquire() defines the domain from the XML file and leaves it running and persistent."""
    r = resource(xml, FakeClock())
    r.acquire()
    dom = conn.lookupByName(xml.stem)
    assert dom.isActive() and dom.isPersistent()
    assert r.describe()["where"] == "here"
    r.release()
    r.close()


def test_release_undefines(xml: Path, conn: libvirt.virConnect) -> None:
    """release() leaves no domain behind, and a second release is a no-op."""
    r = resource(xml, FakeClock())
    r.acquire()
    r.release()
    assert xml.stem not in [d.name() for d in conn.listAllDomains()]
    r.release()
    assert r.describe()["where"] == "absent"
    r.close()


def test_acquire_with_unreadable_xml_names_the_file(tmp_path: Path) -> None:
    """A missing XML file fails acquire with a VmError naming the domain and the file."""
    r = resource(tmp_path / "missing.xml", FakeClock())
    with pytest.raises(VmError, match=r"missing\.xml"):
        r.acquire()
    # A failed acquire is not held: the monitor will not keep trying to start it.
    assert r.check() == "idle"
    r.close()


def test_acquire_resumes_a_paused_copy(xml: Path, conn: libvirt.virConnect) -> None:
    """A copy found paused (say, by an interrupted migration) is adopted and resumed."""
    r = resource(xml, FakeClock())
    r.acquire()
    conn.lookupByName(xml.stem).suspend()
    r.acquire()
    assert conn.lookupByName(xml.stem).state()[0] == libvirt.VIR_DOMAIN_RUNNING
    r.release()
    r.close()


def test_xml_naming_another_domain_is_refused(
    xml: Path, tmp_path: Path, conn: libvirt.virConnect
) -> None:
    """An XML whose <name> differs from the [[vm]] name fails and defines nothing."""
    other = tmp_path / "other.xml"
    other.write_text(xml.read_text())
    r = resource(other, FakeClock())
    with pytest.raises(VmError, match="defines domain"):
        r.acquire()
    r.close()
    assert xml.stem not in [d.name() for d in conn.listAllDomains()]


def test_malformed_xml_is_refused(tmp_path: Path) -> None:
    """A broken XML file fails acquire with a VmError naming the file."""
    bad = tmp_path / "bad.xml"
    bad.write_text("<domain><name>bad</name>")
    r = resource(bad, FakeClock())
    with pytest.raises(VmError, match=r"bad\.xml: not valid XML"):
        r.acquire()
    r.close()


def test_check_restarts_a_stopped_domain_then_asks_for_failover(
    xml: Path, conn: libvirt.virConnect
) -> None:
    """Stops beyond max_restarts within the window call on_failover once, then stay "failed"."""
    clock = FakeClock()
    failovers: list[str] = []
    r = resource(xml, clock, failovers, max_restarts=2, restart_window=60.0)
    r.acquire()
    assert r.check() == "ok"
    for _ in range(2):
        conn.lookupByName(xml.stem).destroy()
        clock.advance(1.0)
        assert r.check() == "restarted"
        assert conn.lookupByName(xml.stem).isActive()
    conn.lookupByName(xml.stem).destroy()
    assert r.check() == "failover"
    assert len(failovers) == 1
    assert r.check() == "failed"
    assert len(failovers) == 1
    assert r.describe()["failed"]
    r.release()
    r.close()


def test_restarts_outside_the_window_do_not_count(xml: Path, conn: libvirt.virConnect) -> None:
    """A crash every window length keeps restarting in place with max_restarts = 1."""
    clock = FakeClock()
    failovers: list[str] = []
    r = resource(xml, clock, failovers, max_restarts=1, restart_window=60.0)
    r.acquire()
    for _ in range(3):
        conn.lookupByName(xml.stem).destroy()
        assert r.check() == "restarted"
        clock.advance(61.0)
    assert failovers == []
    r.release()
    r.close()


def test_check_after_release_is_idle(xml: Path) -> None:
    """A released domain is not watched: check() reports idle and starts nothing."""
    r = resource(xml, FakeClock())
    r.acquire()
    r.release()
    assert r.check() == "idle"
    r.close()


def test_reconcile_destroys_and_undefines_when_peer_owns(
    xml: Path, conn: libvirt.virConnect
) -> None:
    """A copy running here while the peer owns the VM is destroyed, then undefined."""
    r = resource(xml, FakeClock())
    r.acquire()
    assert r.reconcile(owner_elsewhere=True) == ["destroy", "undefine"]
    assert xml.stem not in [d.name() for d in conn.listAllDomains()]
    # Reconciled, not crashed: the monitor must not start it again.
    assert r.check() == "idle"
    r.close()


def test_failed_migration_falls_back_to_stop_start(xml: Path, conn: libvirt.virConnect) -> None:
    """The test driver cannot migrate: the domain is stopped here and the fallback acquires."""
    here = resource(xml, FakeClock())
    there = resource(xml, FakeClock())
    here.acquire()
    result = here.migrate("test:///default", fallback=there)
    assert result.method == "stop-start" and result.ok
    assert result.error
    assert conn.lookupByName(xml.stem).isActive()
    there.release()
    here.close()
    there.close()


def test_migrate_of_a_domain_not_running_is_an_error(xml: Path) -> None:
    """Migrating a VM that does not run here raises VmError instead of pretending."""
    r = resource(xml, FakeClock())
    with pytest.raises(VmError, match="nothing to migrate"):
        r.migrate("test:///default")
    r.close()


def test_spec_from_config_uses_the_node_uri(tmp_path: Path) -> None:
    """VmSpec.from_config picks the node's URI and falls back to qemu:///system."""
    cfg = VmConfig(
        name="web",
        xml=tmp_path / "web.xml",
        uri={"alpha": "qemu+tcp://192.0.2.11/system"},
        start_timeout=5.0,
        max_restarts=1,
    )
    assert VmSpec.from_config(cfg, "alpha").uri == "qemu+tcp://192.0.2.11/system"
    beta = VmSpec.from_config(cfg, "beta")
    assert beta.uri == "qemu:///system"
    assert (beta.start_timeout, beta.max_restarts) == (5.0, 1)


def test_monitor_restarts_on_the_lifecycle_event(xml: Path, conn: libvirt.virConnect) -> None:
    """With the periodic check an hour away, the stop event alone gets the domain restarted."""
    r = resource(xml, FakeClock(), check_interval=3600.0)
    r.acquire()
    r.start_monitor()
    try:
        conn.lookupByName(xml.stem).destroy()
        deadline = time.monotonic() + 30
        while r.describe()["restarts"] < 1 or not conn.lookupByName(xml.stem).isActive():
            assert time.monotonic() < deadline, "no restart after the stop event"
            time.sleep(0.02)
        assert r.describe()["last_event"] is not None
    finally:
        r.release()
        r.close()


class HangingMigration:
    """A domain whose migration hangs until aborted (a stuck hypervisor or network)."""

    def __init__(self, dom: libvirt.virDomain) -> None:
        self.dom = dom
        self.aborted = threading.Event()

    def migrateToURI3(self, uri: str, params: dict[str, object], flags: int) -> None:
        """Block until abortJob(), then fail as libvirt does for an aborted job."""
        self.aborted.wait(60)
        raise libvirt.libvirtError("operation aborted: migration out job: canceled by client")

    def abortJob(self) -> int:
        """Abort the migration in progress."""
        self.aborted.set()
        return 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.dom, name)


class HangingVm(VmResource):
    """A VmResource whose domain migrates through HangingMigration."""

    proxy: HangingMigration | None = None

    def _lookup(self) -> object | None:
        dom = super()._lookup()
        if dom is None:
            return None
        if self.proxy is None or self.proxy.dom.UUID() != dom.UUID():
            self.proxy = HangingMigration(dom)
        return self.proxy


def test_migration_past_its_budget_is_aborted_and_falls_back(
    xml: Path, conn: libvirt.virConnect
) -> None:
    """A migration that hangs is aborted after migrate_timeout; the VM is stopped here instead."""
    spec = VmSpec(xml.stem, xml, URI, migrate_timeout=0.2)
    here = HangingVm(spec, clock=FakeClock())
    here.acquire()
    result = here.migrate("qemu+tcp://192.0.2.12/system")
    assert here.proxy is not None and here.proxy.aborted.is_set()
    assert result.method == "stop-start" and result.ok
    assert result.error is not None and "past its budget of 0.2 s, aborted" in result.error
    with pytest.raises(libvirt.libvirtError):
        conn.lookupByName(xml.stem)
    here.close()
