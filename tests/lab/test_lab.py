"""Tests of the lab itself: topology, faults, the VIP probe and teardown."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.lab import faults
from tests.lab.lab import HB4, IPV4, IPV6, TARGETS, VIP4, VIP6, Lab, LabError, wait_until
from tests.lab.probe import AGENT, DUAL_WINDOW, Reply, VipProbe, analyse

netns = pytest.mark.netns

# A UDP receiver printing each datagram on its own line, and a sender of one datagram per arg.
UDP_RECV = """
import socket, select, sys
socks = []
for port in sys.argv[1:]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", int(port)))
    socks.append(s)
print("ready", flush=True)
while True:
    for s in select.select(socks, [], [])[0]:
        print(s.recv(100).decode(), flush=True)
"""
UDP_SEND = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for item in sys.argv[2:]:
    port, text = item.split(":", 1)
    s.sendto(text.encode(), (sys.argv[1], int(port)))
"""


def _alive(pid: int) -> bool:
    """True if pid runs (a zombie waiting for its reaper counts as ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat[stat.rindex(")") + 2] != "Z"


# -- topology ----------------------------------------------------------------------------------


@netns
def test_a_and_b_reach_each_other_over_lan_and_hb(lab: Lab) -> None:
    """a and b answer each other's pings over the LAN and over the direct heartbeat link."""
    assert lab.ping("a", IPV4["b"])
    assert lab.ping("b", IPV4["a"])
    assert lab.ping("a", HB4["b"])
    assert lab.ping("b", HB4["a"])


@netns
def test_client_reaches_every_target_and_node(lab: Lab) -> None:
    """The client reaches the three ping targets and both nodes over IPv4."""
    for node in (*TARGETS, "a", "b"):
        assert lab.ping("client", IPV4[node]), node


@netns
def test_ipv6_works_without_waiting_for_dad(lab: Lab) -> None:
    """IPv6 addresses are usable right after set-up: client->targets and a<->b answer."""
    for node in (*TARGETS, "a", "b"):
        assert lab.ping("client", IPV6[node]), node
    assert lab.ping("a", IPV6["b"])
    out = lab.run("a", ["ip", "-6", "addr", "show", "dev", "lan0"]).stdout
    assert "tentative" not in out


@netns
def test_macs_recorded_match_the_interfaces(lab: Lab) -> None:
    """The MAC the lab records for each node is the one its lan0 has, and all differ."""
    macs = {lab.mac(n) for n in lab.nodes}
    assert len(macs) == len(lab.nodes)
    out = lab.run("b", ["cat", "/sys/class/net/lan0/address"]).stdout.strip()
    assert out == lab.mac("b")


@netns
def test_lab_has_no_route_out(lab: Lab) -> None:
    """Nodes have no default route and cannot reach an address outside the lab's nets."""
    for node in lab.nodes:
        routes = lab.run(node, ["ip", "route", "show", "default"]).stdout
        assert routes.strip() == "", node
    p = lab.run("a", ["ip", "route", "get", "203.0.113.1"], check=False)
    assert p.returncode != 0


# -- faults ------------------------------------------------------------------------------------


@netns
def test_cut_hb_stops_traffic_and_heal_restores_it(lab: Lab) -> None:
    """With hb down a cannot reach b's hb address; up again, it can."""
    lab.set_link("hb", False)
    assert not lab.ping("a", HB4["b"], timeout=0.5)
    assert lab.ping("a", IPV4["b"])  # the LAN is unaffected
    lab.set_link("hb", True)
    assert wait_until(lambda: lab.ping("a", HB4["b"], timeout=0.5), timeout=5)


@netns
def test_cut_lan_port_isolates_the_node(lab: Lab) -> None:
    """With a's switch port down the client cannot reach a; heal restores it."""
    lab.set_link("lan-a", False)
    assert not lab.ping("client", IPV4["a"], timeout=0.5)
    lab.set_link("lan-a", True)
    assert wait_until(lambda: lab.ping("client", IPV4["a"], timeout=0.5), timeout=5)


@netns
def test_block_udp_port_drops_silently(lab: Lab) -> None:
    """A blocked UDP port loses datagrams without an error for the sender; other ports pass."""
    recv = lab.spawn("b", [lab.python, "-c", UDP_RECV, "7405", "7406"])
    assert wait_until(lambda: "ready" in recv.output(), timeout=10)

    def send(*items: str) -> None:
        p = lab.run("a", [lab.python, "-c", UDP_SEND, IPV4["b"], *items])
        assert p.returncode == 0 and p.stderr == ""

    send("7405:before")
    assert wait_until(lambda: "before" in recv.output(), timeout=5)
    fault = lab.block("b", proto="udp", port=7405)
    # The sentinel on the other port is sent after the blocked one and arrives; so the blocked
    # datagram was dropped, not merely late.
    send("7405:blocked", "7406:sentinel")
    assert wait_until(lambda: "sentinel" in recv.output(), timeout=5)
    assert "blocked" not in recv.output()
    lab.unblock(fault)
    send("7405:after")
    assert wait_until(lambda: "after" in recv.output(), timeout=5)


@netns
def test_block_arp_and_source(lab: Lab) -> None:
    """Blocking ARP at b cuts a client with no neighbour entry; blocking a source cuts only it."""
    fault = lab.block("b", arp=True)
    assert not lab.ping("client", IPV4["b"], timeout=0.5)
    lab.unblock(fault)
    assert lab.ping("client", IPV4["b"])
    fault = lab.block("b", proto=None, src=IPV4["client"])
    assert not lab.ping("client", IPV4["b"], timeout=0.5)
    assert lab.ping("a", IPV4["b"])
    lab.unblock(fault)
    assert lab.ping("client", IPV4["b"])


@netns
def test_loss_drops_about_the_set_percent(lab: Lab) -> None:
    """30% random loss on b's ingress loses roughly 30% of 300 pings (15..45%)."""
    assert lab.ping("a", IPV4["b"])  # neighbour resolved before loss starts
    lab.loss("b", 30, proto="icmp", iface="lan0")
    p = lab.run(
        "a", ["ping", "-n", "-q", "-c", "300", "-i", "0.005", "-W", "1", IPV4["b"]], check=False
    )
    m = re.search(r"(\d+) packets transmitted, (\d+) received", p.stdout)
    assert m, p.stdout
    sent, received = int(m.group(1)), int(m.group(2))
    lost = 100 * (sent - received) / sent
    assert 15 <= lost <= 45, p.stdout


@netns
def test_kill_node_makes_it_unreachable_and_ends_its_processes(lab: Lab) -> None:
    """kill_node ends a's processes (spawned or not), cuts its LAN and hb; revive restores links."""
    proc = lab.spawn("a", ["sleep", "300"])
    other = int(lab.run("a", ["sh", "-c", "sleep 300 >/dev/null 2>&1 & echo $!"]).stdout)
    assert proc.alive() and _alive(other)
    lab.kill_node("a")
    assert not proc.alive()
    assert proc.returncode == -signal.SIGKILL
    assert not _alive(other)
    assert lab.pids("a") == []
    assert not lab.ping("client", IPV4["a"], timeout=0.5)
    assert not lab.ping("b", HB4["a"], timeout=0.5)
    lab.revive_node("a")
    assert wait_until(lambda: lab.ping("client", IPV4["a"], timeout=0.5), timeout=5)
    assert wait_until(lambda: lab.ping("b", HB4["a"], timeout=0.5), timeout=5)


@netns
def test_kill_node_takes_the_links_down_before_any_process_dies(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash looks like a power loss: the node's own links are down before its processes
    are stopped and killed (looked at the moment kill_node starts stopping them)."""
    watcher = lab.spawn("a", ["sleep", "60"])
    real_freeze = lab.freeze
    seen: list[tuple[str, str]] = []

    def look_then_freeze(node: str) -> list[int]:
        # The administrative flag (IFF_UP), set at once by `ip link set down`; operstate
        # follows it through the kernel's linkwatch, up to a second late on a busy host.
        flags = lab.run(node, ["cat", "/sys/class/net/lan0/flags", "/sys/class/net/hb0/flags"])
        links = " ".join("up" if int(f, 16) & 1 else "down" for f in flags.stdout.split())
        seen.append((links, _state(watcher.pid)))
        return real_freeze(node)

    monkeypatch.setattr(lab, "freeze", look_then_freeze)
    lab.kill_node("a")
    assert seen == [("down down", "S")], seen
    assert wait_until(lambda: not watcher.alive(), timeout=5)
    own = lab.run("a", ["ip", "-o", "link", "show", "lan0"]).stdout
    assert "state DOWN" in own, own
    lab.revive_node("a")
    assert wait_until(lambda: lab.ping("client", IPV4["a"], timeout=0.5), timeout=5)


def _state(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2]


def _kids(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@netns
def test_freeze_stops_every_process_of_the_node_and_its_children_and_thaw_resumes(
    lab: Lab,
) -> None:
    """freeze stops a node's processes and their children (found by PID), not other nodes'."""
    parent = lab.spawn("a", ["sh", "-c", "sleep 60 & wait"])
    other = lab.spawn("b", ["sleep", "60"])
    assert wait_until(lambda: bool(_kids(parent.pid)), 5)
    stopped = lab.freeze("a")
    child = _kids(parent.pid)[0]
    assert sorted(stopped) == sorted([parent.pid, child])
    assert wait_until(lambda: _state(parent.pid) == "T" and _state(child) == "T", 5)
    assert _state(other.pid) != "T"
    assert lab.ping("client", IPV4["a"])  # the kernel still answers
    lab.thaw(stopped)
    assert wait_until(lambda: _state(parent.pid) != "T" and _state(child) != "T", 5)


@netns
def test_spawn_with_binds_sees_its_own_dir(lab: Lab, tmp_path: Path) -> None:
    """Processes in a and b given different binds for one path each see their own files."""
    for node in ("a", "b"):
        (tmp_path / node).mkdir()
        (tmp_path / node / "who").write_text(f"node-{node}\n")
    procs = {
        node: lab.spawn(node, ["cat", "/srv/who"], binds={"/srv": tmp_path / node})
        for node in ("a", "b")
    }
    for node, proc in procs.items():
        assert proc.wait(10) == 0, proc.output()
        assert proc.output() == f"node-{node}\n"
    # The host's view of the mount point is untouched.
    assert not Path("/srv/who").exists() or Path("/srv/who").read_text() != "node-a\n"


# -- the VIP probe -----------------------------------------------------------------------------


@netns
def test_probe_follows_a_vip_moved_from_a_to_b(lab: Lab, vip_probe: VipProbe) -> None:
    """The probe sees a's MAC, then a gap while nobody holds the VIP, then b's MAC."""
    lab.run("a", ["ip", "addr", "add", f"{VIP4}/24", "dev", "lan0"])
    vip_probe.start(VIP4)
    assert vip_probe.wait_for(lab.mac("a"), 10)
    t_del = time.monotonic()
    lab.run("a", ["ip", "addr", "del", f"{VIP4}/24", "dev", "lan0"])
    time.sleep(0.3)  # the outage the probe must measure
    lab.run("b", ["ip", "addr", "add", f"{VIP4}/24", "dev", "lan0"])
    lab.garp("b", VIP4)
    t_add = time.monotonic()
    assert vip_probe.wait_for(lab.mac("b"), 10)
    res = vip_probe.stop()

    assert set(res.replies_per_mac) == {lab.mac("a"), lab.mac("b")}
    assert res.last_reply[lab.mac("a")] < res.first_reply[lab.mac("b")]
    assert res.mac_changes == 1
    assert res.dual_time == 0
    assert res.outage >= 0.3
    gap_start, gap_end = res.outage_span
    assert t_del - 0.1 <= gap_start and gap_end <= t_add + 2.0
    assert res.sent >= len(res.replies)


@netns
def test_probe_ipv6_vip_answered_by_owner(lab: Lab, vip_probe: VipProbe) -> None:
    """An IPv6 VIP on b is answered by b's MAC over ICMPv6."""
    lab.run("b", ["ip", "addr", "add", f"{VIP6}/64", "dev", "lan0", "nodad"])
    vip_probe.start(VIP6)
    assert vip_probe.wait_for(lab.mac("b"), 10)
    res = vip_probe.stop()
    assert set(res.replies_per_mac) == {lab.mac("b")}
    assert res.outage < 1.0  # generous: nothing moved


@pytest.mark.netns
def test_arp_census_sees_two_owners_only_while_both_hold_the_vip(
    lab: Lab, vip_probe: VipProbe
) -> None:
    """The probe's ARP census counts rounds answered by two MACs, and none with one owner."""
    lab.run("a", ["ip", "addr", "add", f"{VIP4}/24", "dev", "lan0"])
    vip_probe.start(VIP4)
    assert vip_probe.wait_for(lab.mac("a"), 20)
    single = vip_probe.snapshot()
    assert single.arp_rounds, "the census sent no ARP request or saw no reply"
    assert single.owner_rounds == 0
    lab.run("b", ["ip", "addr", "add", f"{VIP4}/24", "dev", "lan0"])
    assert wait_until(lambda: vip_probe.snapshot().owner_rounds >= 3, 5.0)
    res = vip_probe.stop()
    assert {lab.mac("a"), lab.mac("b")} in [m for m in res.arp_rounds.values() if len(m) > 1]
    assert res.dual_owner_time >= 3 * res.arp_every


@netns
def test_udp_probe_sees_a_frozen_service_dark_while_the_kernel_still_pings(lab: Lab) -> None:
    """The service probe gets no reply while a's echo service is stopped; ICMP still does."""
    lab.run("a", ["ip", "addr", "add", f"{VIP4}/24", "dev", "lan0"])
    service = lab.spawn("a", [lab.python, str(AGENT), "echo", VIP4, "7407"])
    udp, icmp = VipProbe(lab, udp=7407), VipProbe(lab)
    udp.start(VIP4)
    icmp.start(VIP4)
    assert udp.wait_for(lab.mac("a"), 10)
    service.signal(signal.SIGSTOP)
    t_stop = time.monotonic()
    time.sleep(1.0)
    service.signal(signal.SIGCONT)
    t_cont = time.monotonic()
    assert udp.wait_for(lab.mac("a"), udp.snapshot().replies_per_mac[lab.mac("a")] + 10)
    served, pinged = udp.stop(), icmp.stop()
    assert served.outage >= 0.9
    gap_start, gap_end = served.outage_span
    assert t_stop - 0.1 <= gap_start and gap_end >= t_cont - 0.1
    assert pinged.outage < 0.6  # generous: the kernel answered throughout


def test_analyse_clean_handover_is_not_dual() -> None:
    """A then B with a gap: one MAC change, no dual ownership, the gap is the outage."""
    replies = [Reply(0.01 * i, "aa", i) for i in range(1, 11)]
    replies += [Reply(0.5 + 0.01 * i, "bb", 100 + i) for i in range(10)]
    res = analyse("v", 0.0, 0.7, 70, replies)
    assert res.mac_changes == 1
    assert res.dual_time == 0
    assert res.outage == pytest.approx(0.4)
    assert res.outage_span[0] == pytest.approx(0.1)
    assert res.outage_span[1] == pytest.approx(0.5)


def test_analyse_interleaved_macs_count_as_dual() -> None:
    """Replies alternating between two MACs for 100 ms count as ~100 ms of dual ownership."""
    replies = [Reply(0.01 * i, "aa" if i % 2 else "bb", i) for i in range(11)]
    res = analyse("v", 0.0, 0.1, 11, replies)
    assert res.dual_time == pytest.approx(0.09, abs=0.011)
    assert res.mac_changes == 10


def test_analyse_trailing_silence_is_an_outage() -> None:
    """If replies stop and never resume, the time until the probe stops is the outage."""
    replies = [Reply(0.01 * i, "aa", i) for i in range(5)]
    res = analyse("v", 0.0, 2.0, 200, replies)
    assert res.outage == pytest.approx(1.96)
    gaps = res.gaps(DUAL_WINDOW)
    assert len(gaps) == 1
    assert gaps[0][0] == pytest.approx(0.04)
    assert gaps[0][1] == 2.0


def test_fault_match_rejects_port_without_transport() -> None:
    """A port with proto icmp or arp with selectors is refused instead of matching everything."""
    with pytest.raises(ValueError, match="port needs proto"):
        faults.match(proto="icmp", port=1)
    with pytest.raises(ValueError, match="arp=True"):
        faults.match(arp=True, port=7405, proto="udp")
    assert faults.match(proto="udp", port=7405, src="2001:db8::11") == (
        "ip6 saddr 2001:db8::11 udp dport 7405"
    )
    assert faults.drop_rule("meta l4proto udp", 30) == (
        "meta l4proto udp numgen random mod 100 < 30 drop"
    )


# -- teardown ----------------------------------------------------------------------------------


def _netns_names() -> list[str]:
    out = subprocess.run(
        ["ip", "netns", "list"], check=False, capture_output=True, text=True
    ).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


@netns
def test_teardown_removes_namespaces_processes_and_made_dirs(tmp_path: Path) -> None:
    """After teardown no prefixed namespace, lab process or created mount point is left."""
    lab = Lab().up()
    try:
        spawned = lab.spawn("a", ["sleep", "300"])
        # A process the lab did not start (a daemon's child): found by `ip netns pids`.
        stray = int(lab.run("b", ["sh", "-c", "sleep 300 >/dev/null 2>&1 & echo $!"]).stdout)
        mount_point = Path(f"/var/lib/hapair-lab-test-{lab.prefix}")
        bound = lab.spawn("b", ["sleep", "300"], binds={str(mount_point): tmp_path})
        assert mount_point.is_dir()
        workdir = lab.workdir
        assert any(n.startswith(lab.prefix) for n in _netns_names())
    finally:
        lab.teardown()
    assert not [n for n in _netns_names() if n.startswith(f"{lab.prefix}-")]
    assert not _alive(spawned.pid) and not _alive(bound.pid)
    assert wait_until(lambda: not _alive(stray), timeout=5)
    assert not mount_point.exists()
    assert not workdir.exists()
    # A caller looking for a node's log or status file after teardown gets its path, and the
    # work dir is not made again (before: empty /tmp/hapair-lab-*/a dirs were left behind).
    assert lab.node_dir("a", "run") == workdir / "a" / "run"
    assert not workdir.exists()
    lab.teardown()  # idempotent


@netns
def test_exception_in_with_body_still_tears_down() -> None:
    """An exception inside `with Lab()` propagates and the lab is gone afterwards."""
    holder: list[Lab] = []
    with pytest.raises(ZeroDivisionError), Lab() as lab:
        holder.append(lab)
        proc = lab.spawn("client", ["sleep", "300"])
        _ = 1 / 0
    assert holder[0].namespaces() == []
    assert not _alive(proc.pid)


@netns
def test_sweep_removes_a_lab_whose_owner_died() -> None:
    """A lab left by a killed owner (its PID gone) is removed by the next lab's start-up."""
    script = (
        "import os, sys; sys.path.insert(0, sys.argv[1]);"
        "from tests.lab.lab import Lab; lab = Lab().up();"
        "p = lab.spawn('a', ['sleep', '300']); print(lab.prefix, p.pid, flush=True);"
        "os.kill(os.getpid(), 9)"
    )
    repo = str(Path(__file__).resolve().parents[2])
    out = subprocess.run(
        [sys.executable, "-c", script, repo], capture_output=True, text=True, check=False
    )
    assert out.returncode == -signal.SIGKILL, out.stderr
    prefix, pid = out.stdout.split()
    assert any(n.startswith(f"{prefix}-") for n in _netns_names())
    with Lab():
        assert not [n for n in _netns_names() if n.startswith(f"{prefix}-")]
        assert wait_until(lambda: not _alive(int(pid)), timeout=5)
        assert not Path(f"/tmp/hapair-lab-{prefix}").exists()


class _FailingLab(Lab):
    """A lab whose set-up fails after the namespaces exist (at the first veth)."""

    def _ip(self, node: str, *args: str) -> None:
        if "veth" in args:
            raise LabError("injected failure")
        super()._ip(node, *args)


@netns
def test_half_built_lab_is_torn_down() -> None:
    """A set-up failing half-way raises LabError and leaves no namespace behind."""
    lab = _FailingLab()
    with pytest.raises(LabError, match="injected failure"):
        lab.up()
    assert lab.namespaces() == []
    assert not lab.workdir.exists()


@netns
def test_a_prefix_in_use_is_drawn_again_and_its_dir_left_alone() -> None:
    """A lab whose random prefix another lab holds (its work dir) draws another and never
    touches that dir; an explicit prefix in use is refused, the dir left as it was."""
    taken = Lab()
    taken.workdir.mkdir(mode=0o755)
    (taken.workdir / "theirs").write_text("x")
    try:
        lab = Lab()
        lab.prefix, lab.workdir = taken.prefix, taken.workdir
        with lab:
            assert lab.prefix != taken.prefix and lab.workdir.is_dir()
            assert all(not n.startswith(f"{taken.prefix}-") for n in _netns_names())
        assert (taken.workdir / "theirs").read_text() == "x"
        with pytest.raises(LabError, match="in use"):
            Lab(prefix=taken.prefix).up()
        assert (taken.workdir / "theirs").read_text() == "x"
    finally:
        shutil.rmtree(taken.workdir, ignore_errors=True)
