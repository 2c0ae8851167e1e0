"""Whole-VM failover end to end: takeover daemons on both lab nodes, a real libvirtd in each,
and BMCs (ipmi_sim on the lab LAN) whose power-off really crashes the node.

The guest is the tiny BIOS-only TCG domain (16 MiB) on the pair's "shared storage". One lab,
both libvirtd and both BMCs serve the whole module (QEMU's capability probe is paid once);
each test starts both daemons with a fresh guest and stops them afterwards.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from dataclasses import replace

import libvirt
import pytest

from tests.lab import fixtures
from tests.lab.fixtures import require_root
from tests.lab.lab import Lab
from tests.lab.libvirt_hosts import LibvirtPair
from tests.lab.pair import PairConfig, cluster_toml, takeover_argv
from tests.lab.vm_pair import VmLab, VmPair, start_bmcs

pytestmark = [pytest.mark.netns, pytest.mark.e2e]

# Generous bound for waits that normally take 1-3 s.
WAIT = 40.0


def wait_for(
    pred: Callable[[], object], what: str, timeout: float = WAIT, context: Callable[[], str] = str
) -> None:
    """Poll `pred` until true, failing after WAIT seconds by default."""
    fixtures.wait_for(pred, what, timeout, context)


@pytest.fixture(scope="module")
def vmlab() -> Iterator[VmLab]:
    """A lab with libvirtd in nodes a and b, and a BMC per node that crashes it on power-off."""
    require_root()
    with Lab() as lab, LibvirtPair(lab) as lv:
        bmcs = start_bmcs(lab)
        try:
            yield VmLab(lab, lv, bmcs)
        finally:
            for bmc in bmcs.values():
                bmc.stop()


@pytest.fixture
def vmpair(vmlab: VmLab) -> Iterator[VmPair]:
    """Both daemons running, a active with the guest running on a, b standby."""
    vp = VmPair(vmlab)
    try:
        vp.pair.start()
        assert vp.pair.wait_role("a", "ACTIVE", 30), vp.pair.log("a")[-3000:]
        assert vp.pair.wait_role("b", "STANDBY", 30), vp.pair.log("b")[-3000:]
        # Held per a's status: acquire is over (the domain shows running while QEMU starts).
        wait_for(
            lambda: vp.vm_status("a").get("holder") == "a",
            "a to hold the guest",
            context=lambda: vp.pair.log("a")[-3000:],
        )
        assert vp.running_on() == ["a"]
        yield vp
    finally:
        vp.close()


def test_active_crash_survivor_fences_then_starts_the_vm_once(vmpair: VmPair) -> None:
    """a crashes: b fences it through its BMC (shown in status), starts the guest; a comes
    back with its stale definition and never runs a second copy."""
    vp, lab = vmpair, vmpair.vl.lab
    lab.kill_node("a")
    assert vp.pair.wait_role("b", "ACTIVE", WAIT), vp.pair.log("b")[-4000:]
    wait_for(lambda: vp.vm_status("b").get("holder") == "b", "b's status to hold the guest")
    assert vp.state("b") == "running"
    assert vp.vl.bmcs["a"].power() == "off" and "set power 0" in vp.vl.bmcs["a"].calls()
    doc = vp.pair.status("b")
    fencing = doc["fencing"]
    assert isinstance(fencing, dict)
    last = fencing["results"][-1]
    assert last["ok"] and last["power"] == "off" and last["node"] == "a"
    assert last["attempts"] and last["attempts"][-1]["result"] == "ok"
    transitions = [t["new"] for t in doc["transitions"]]  # type: ignore[union-attr]
    assert transitions.index("FENCING") < transitions.index("ACTIVE", 1)
    text = lab.run("b", takeover_argv(vp.pair.cluster, "b", "status")).stdout
    assert "Fencing: a via BMC" in text and "off: OK, power off" in text
    assert any(vp.name in line and "runs on b" in line for line in text.splitlines()), text
    # a returns: power on, links up, libvirtd again with the definition from before the crash.
    vp.restart_node("a")
    vp.pair.start("a")
    copies: list[list[str]] = []

    def settled() -> bool:
        copies.append(vp.running_on())
        return vp.pair.role("a") == "STANDBY"

    wait_for(settled, "a standby again")
    assert all(c == ["b"] for c in copies), copies
    assert vp.state("a") is None
    assert f"vm.reconciled name={vp.name}" in vp.pair.log("a")
    assert vp.pair.role("b") == "ACTIVE" and vp.running_on() == ["b"]


def test_standby_live_migrates_and_the_guest_keeps_running(vmpair: VmPair) -> None:
    """`takeover standby` on a live-migrates the guest to b, which adopts the running copy."""
    vp, lab = vmpair, vmpair.vl.lab
    lab.run("a", takeover_argv(vp.pair.cluster, "a", "standby"))
    assert vp.pair.wait_role("b", "ACTIVE", WAIT), vp.pair.log("b")[-4000:]
    assert vp.pair.wait_role("a", "STANDBY", WAIT)
    wait_for(lambda: vp.vm_status("b").get("held"), "b to hold the guest")
    assert vp.running_on() == ["b"] and vp.state("a") is None
    # The daemon logs are appended to across the module's tests: look at this guest's lines.
    migrated = [x for x in vp.pair.log("a").splitlines() if f"vm.migrated name={vp.name}" in x]
    assert len(migrated) == 1 and "method=live" in migrated[0], migrated
    assert f"vm.adopt name={vp.name}" in vp.pair.log("b")
    assert f"vm.started name={vp.name}" not in vp.pair.log("b")
    # The guest runs on b for real: its vCPU keeps consuming time.
    conn = libvirt.open(vp.vl.libvirt["b"].uri)
    try:
        dom = conn.lookupByName(vp.name)
        first = dom.info()[4]
        wait_for(lambda: dom.info()[4] > first, "guest CPU time to advance on b")
    finally:
        conn.close()


def test_killed_qemu_is_restarted_in_place_by_the_active(vmpair: VmPair) -> None:
    """SIGKILL of the guest's QEMU on a: a restarts it in place; b stays standby."""
    vp = vmpair
    host = vp.vl.libvirt["a"]
    pid = host.qemu_pid(vp.name)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_for(
        lambda: host.qemu_pid(vp.name) not in (None, pid),
        "a new QEMU on a",
        context=lambda: vp.pair.log("a")[-5000:],
    )
    wait_for(lambda: vp.vm_status("a").get("restarts") == 1, "status to count the restart")
    assert vp.vm_status("a")["state"] == "running" and vp.vm_status("a")["holder"] == "a"
    assert vp.running_on() == ["a"]
    assert vp.pair.role("a") == "ACTIVE" and vp.pair.role("b") == "STANDBY"
    assert f"vm.restart name={vp.name}" in vp.pair.log("a")


def test_takeover_restart_on_the_active_keeps_the_guest_running(vmpair: VmPair) -> None:
    """SIGKILL of a's takeover (the guest untouched), then a restart: the same QEMU runs on."""
    vp = vmpair
    host = vp.vl.libvirt["a"]
    pid = host.qemu_pid(vp.name)
    assert pid is not None
    proc = vp.pair.procs["a"]
    proc.signal(signal.SIGKILL)
    proc.wait(10)
    vp.pair.start("a")
    # Acquire adopts the running copy (it logs vm.adopt) instead of starting one.
    wait_for(
        lambda: vp.pair.role("a") == "ACTIVE" and f"vm.adopt name={vp.name}" in vp.pair.log("a"),
        "a to adopt the running guest",
        context=lambda: vp.pair.log("a")[-5000:],
    )
    assert host.qemu_pid(vp.name) == pid, vp.pair.log("a")[-5000:]
    assert vp.running_on() == ["a"]
    assert vp.pair.role("b") == "STANDBY"


def test_reload_removes_then_adds_the_vm_on_the_active_only(vmpair: VmPair) -> None:
    """A reload without the [[vm]] stops the guest on the active (b never starts it); a reload
    with it again starts it on the active only, the VIP held throughout."""
    vp, lab = vmpair, vmpair.vl.lab
    pair = vp.pair
    key = pair.cluster.parent / "authkey"

    def reload_with(cfg: PairConfig) -> None:
        pair.cluster.write_text(cluster_toml(lab, cfg, key))
        for node in ("a", "b"):
            p = lab.run(node, takeover_argv(pair.cluster, node, "check"), check=False)
            assert p.returncode == 0, p.stderr
            pair.procs[node].signal(signal.SIGHUP)

    reload_with(replace(pair.cfg, extra=""))
    wait_for(
        lambda: vp.running_on() == [] and "reload.applied" in pair.log("b"),
        "the guest to stop on a",
        context=lambda: pair.log("a")[-4000:],
    )
    assert f"reload.vm_removed name=vm {vp.name} held=True" in pair.log("a"), pair.log("a")
    assert vp.vm_status("a") == {} and vp.vm_status("b") == {}
    assert pair.role("a") == "ACTIVE" and pair.role("b") == "STANDBY" and pair.holds("a")

    reload_with(pair.cfg)
    wait_for(
        lambda: vp.vm_status("a").get("holder") == "a",
        "a to start the guest again",
        context=lambda: pair.log("a")[-4000:],
    )
    assert vp.running_on() == ["a"] and vp.state("b") != "running"
    assert pair.role("a") == "ACTIVE" and pair.role("b") == "STANDBY" and pair.holds("a")
    assert not pair.holds("b")
