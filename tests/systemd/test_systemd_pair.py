"""The package on a real two-server pair: two Debian 12 containers with systemd as PID 1.

The .deb (`make deb`) is installed in both with `apt-get install ./hapair_*.deb`, without
network; then the README's "Installing on a real pair of servers" is followed step by step
(install_pair below names each step), and what an administrator relies on is checked on the
real systemd: readiness, the VIP and a unit that moves with it (a `systemd` resource),
mirroring, stop as a handover, the watchdog, a crash, a power cut, a broken cluster file, and
journal priorities. `make test-systemd` runs it (a few minutes: each
container boots a full systemd); the containers' tree is built once and cached.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab.lab import HB4, IPV4, VIP4, Lab
from tests.systemd.nspawn import ROOT, WORK_ROOT, Container, rootfs, sweep_stale, wait_for

pytestmark = [pytest.mark.netns, pytest.mark.e2e]

NAMES = {"a": "alpha", "b": "beta"}
DATA = "/srv/data"
WEB_UNIT = "hapair-web.service"
WEB_PORT = 8080
# The administrator's own unit, not enabled: only takeover starts it, after the VIP it binds.
WEB_SERVICE = f"""\
[Unit]
Description=lab web server, a hapair systemd resource

[Service]
ExecStart=/usr/bin/python3 -m http.server {WEB_PORT} --bind {VIP4} --directory /srv/web
"""
CLUSTER = f"""\
[cluster]
name = "pair"

[[node]]
name = "alpha"
interface = "lan0"
mirror_address = "{IPV4["a"]}"
[node.heartbeat]
hb = "{HB4["a"]}"
lan = "{IPV4["a"]}"

[[node]]
name = "beta"
interface = "lan0"
mirror_address = "{IPV4["b"]}"
[node.heartbeat]
hb = "{HB4["b"]}"
lan = "{IPV4["b"]}"

[heartbeat]
links = ["hb", "lan"]
key_file = "/etc/hapair/authkey"

[[vip]]
address = "{VIP4}/24"

# A service that moves with the VIP: a unit of its own, started and watched through systemd.
[[resource]]
name = "web"
type = "systemd"
unit = "{WEB_UNIT}"
monitor_interval = "1s"

[group]
order = ["vips", "web"]

# A notify script that fails: the daemon logs it at warning on every transition.
[[hook]]
command = ["/bin/false"]

[mirror]
policies = ["mirror.d/*.toml"]
ssh_user = "root"
ssh_key = "/etc/hapair/mirror_key"
"""
POLICY = f'[[directory]]\npath = "{DATA}"\nclass = "hot"\nmin_interval = "1s"\n'


def deb() -> Path:
    """Return the package `make deb` built (the test-systemd target builds it first)."""
    found = sorted((ROOT / "build").glob("hapair_*_amd64.deb"))
    assert found, "no build/hapair_*_amd64.deb: run `make deb` (make test-systemd does)"
    return found[-1]


def copy(src: Container, dst: Container, path: str, mode: int = 0o600) -> None:
    """Copy a file between the two servers (the administrator's scp)."""
    target = dst.path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(src.path(path).read_bytes())
    target.chmod(mode)


def host_key_fingerprint(node: Container) -> str:
    """Return what `ssh-keygen -lf` prints on the node for its ed25519 host key."""
    out = node.run("ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub").stdout
    return out.split()[1]


def install_pair(a: Container, b: Container, package: Path) -> None:
    """Follow the README's install steps on both servers."""
    for node in (a, b):
        # 1. Install the package (no network: every Depends is already in the tree).
        node.path(f"/root/{package.name}").write_bytes(package.read_bytes())
        node.run(f"cd /root && apt-get install -y ./{package.name}", timeout=600)
        node.run(f"mkdir -p {DATA} /srv/web")
        # The service the group moves: its unit, and a page naming the node that serves it.
        node.path(f"/etc/systemd/system/{WEB_UNIT}").write_text(WEB_SERVICE)
        node.path("/srv/web/name.txt").write_text(f"{node.name}\n")
        node.run("systemctl daemon-reload")
    # 2. On one server: the cluster key, the cluster file, the mirror policies; check.
    a.run("head -c 48 /dev/urandom | base64 > /etc/hapair/authkey; chmod 600 /etc/hapair/authkey")
    a.path("/etc/hapair/cluster.toml").write_text(CLUSTER)
    a.path("/etc/hapair/mirror.d").mkdir(mode=0o700)
    a.path("/etc/hapair/mirror.d/data.toml").write_text(POLICY)
    a.run("takeover check")
    # ... copied to the other server, same paths and modes, and checked there too.
    for path in ("/etc/hapair/authkey", "/etc/hapair/cluster.toml",
                 "/etc/hapair/mirror.d/data.toml"):  # fmt: skip
        copy(a, b, path)
    b.run("takeover check")
    # 3. The mirror's ssh trust, one step per server (mirrord pair-setup).
    fp = {node.name: host_key_fingerprint(node) for node in (a, b)}
    first = a.run(f"mirrord pair-setup --peer-fingerprint {fp['beta']}", check=False)
    assert first.returncode == 1, first.stdout + first.stderr
    assert "Permission denied" in first.stderr, first.stderr
    copy(a, b, "/etc/hapair/mirror_key.pub", 0o644)
    b.run("cp /etc/hapair/mirror_key.pub /root/alpha.pub")
    b.run(f"mirrord pair-setup --peer-fingerprint {fp['alpha']} --peer-public-key /root/alpha.pub",
          check=False)  # fmt: skip
    a.path("/root/beta.pub").write_bytes(b.path("/etc/hapair/mirror_key.pub").read_bytes())
    done = a.run("mirrord pair-setup --peer-public-key /root/beta.pub").stdout
    assert f"ssh to root@{IPV4['b']} works" in done, done
    done = b.run("mirrord pair-setup").stdout
    assert f"ssh to root@{IPV4['a']} works" in done, done
    for node in (a, b):
        node.run("mirrord check")
    # 4. Start (the units are enabled by the package: from now on they start at boot too).
    for node in (a, b):
        node.run("systemctl start takeover mirrord", timeout=120)


@pytest.fixture(scope="module")
def pair() -> Iterator[dict[str, Container]]:
    """Two booted containers on the lab's LAN and heartbeat link, with hapair installed."""
    package = deb()
    tree = rootfs()
    lab = Lab().up()
    live = {ns.split("-", 1)[0] for ns in all_namespaces()}
    sweep_stale(live)
    workdir = WORK_ROOT / f"hapair-systemd-{lab.prefix}"
    workdir.mkdir()
    nodes = {NAMES[n]: Container(NAMES[n], lab.ns(n), workdir, lab.prefix) for n in ("a", "b")}
    try:
        for node in nodes.values():
            node.create(tree)
            node.boot()
        install_pair(nodes["alpha"], nodes["beta"], package)
        yield nodes
    finally:
        for node in nodes.values():
            node.destroy()
        lab.teardown()
        shutil.rmtree(workdir, ignore_errors=True)


def all_namespaces() -> list[str]:
    """Return every network namespace on the machine (other runs' labs included)."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    return [line.split()[0] for line in out.stdout.splitlines() if line.strip()]


def holds_vip(node: Container) -> bool:
    """Return whether the VIP is on the node's lan0."""
    out = node.run("ip -4 -o addr show dev lan0").stdout
    return f" {VIP4}/" in out


def holders(pair: dict[str, Container]) -> list[str]:
    """Return the nodes holding the VIP."""
    return [name for name, node in pair.items() if node.init_pid() and holds_vip(node)]


def show(node: Container, unit: str, prop: str) -> str:
    """Return one property of a unit as systemd sees it."""
    return node.run(f"systemctl show -P {prop} {unit}").stdout.strip()


def web_runs(node: Container) -> bool:
    """Return whether the web unit is active on the node (systemd's ActiveState)."""
    return node.init_pid() is not None and show(node, WEB_UNIT, "ActiveState") == "active"


def web_runners(pair: dict[str, Container]) -> list[str]:
    """Return the nodes on which the web unit is active."""
    return [name for name, node in pair.items() if web_runs(node)]


def fetch(pair: dict[str, Container]) -> str:
    """Fetch the page through the VIP from the lab's client namespace; return its text ("" on
    failure)."""
    client = pair["alpha"].netns.rsplit("-", 1)[0] + "-client"
    url = f"http://{VIP4}:{WEB_PORT}/name.txt"
    code = (
        f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=3).read().decode())"
    )
    argv = ["ip", "netns", "exec", client, sys.executable, "-c", code]
    res = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
    return res.stdout.strip() if res.returncode == 0 else ""


def serving(pair: dict[str, Container], name: str) -> bool:
    """Return whether `name` alone holds the VIP and runs the web unit, and serves the page."""
    return holders(pair) == web_runners(pair) == [name] and fetch(pair) == name


def active_pair(pair: dict[str, Container]) -> tuple[Container, Container]:
    """Wait for exactly one VIP holder; return (active, standby)."""
    assert wait_for(lambda: len(holders(pair)) == 1, 60, 0.5), holders(pair)
    active = pair[holders(pair)[0]]
    standby = next(n for n in pair.values() if n is not active)
    return active, standby


def test_both_units_active_and_ready(pair: dict[str, Container]) -> None:
    """After the README's steps both units run on both nodes, READY sent (Type=notify) once
    the role is decided."""
    for node in pair.values():
        for unit in ("takeover", "mirrord"):
            # A notify unit is "active (running)" only once READY=1 arrived.
            assert wait_for(lambda n=node, u=unit: show(n, u, "SubState") == "running", 60)
            assert show(node, unit, "ActiveState") == "active"
            assert show(node, unit, "NRestarts") == "0"
        # READY came after the first role decision: status reports a role (exit 0), not STARTING.
        assert node.run("takeover status", check=False).returncode == 0
        assert node.run("mirrord status", check=False).returncode == 0


def test_the_vip_is_on_exactly_one_node(pair: dict[str, Container]) -> None:
    """One node holds the VIP, and the other does not."""
    active_pair(pair)
    time.sleep(2)
    assert len(holders(pair)) == 1


def test_the_web_unit_runs_on_the_active_only(pair: dict[str, Container]) -> None:
    """The group's systemd resource runs on the active only (started after the VIP it binds),
    and the page is served through the VIP."""
    active, standby = active_pair(pair)
    assert wait_for(lambda: serving(pair, active.name), 60, 0.5), web_runners(pair)
    # The server binds the VIP itself: it could not run had the VIP not come first.
    assert show(standby, WEB_UNIT, "ActiveState") == "inactive"


def test_a_file_written_on_the_active_reaches_the_standby(pair: dict[str, Container]) -> None:
    """mirrord pushes a new file from the active to the standby over the pinned ssh."""
    active, standby = active_pair(pair)
    active.run(f"echo hello-from-{active.name} > {DATA}/hello.txt")
    target = standby.path(f"{DATA}/hello.txt")
    assert wait_for(lambda: target.exists() and target.read_text() == f"hello-from-{active.name}\n",
                    60, 0.5), active.run("mirrord status", check=False).stdout  # fmt: skip


def test_systemctl_stop_hands_over(pair: dict[str, Container]) -> None:
    """`systemctl stop takeover` on the active moves the VIP and the web unit to the peer (the
    unit stopped here); restarted, the old active comes back as standby (auto_failback = false)."""
    active, standby = active_pair(pair)
    assert wait_for(lambda: serving(pair, active.name), 60, 0.5), web_runners(pair)
    active.run("systemctl stop takeover", timeout=200)
    assert show(active, WEB_UNIT, "ActiveState") == "inactive"
    assert wait_for(lambda: serving(pair, standby.name), 30, 0.2), web_runners(pair)
    active.run("systemctl start takeover", timeout=120)
    assert show(active, "takeover", "SubState") == "running"
    time.sleep(3)
    assert serving(pair, standby.name), web_runners(pair)


def test_the_watchdog_restarts_a_frozen_takeover(pair: dict[str, Container]) -> None:
    """A SIGSTOPped takeover stops sending WATCHDOG=1: systemd kills and restarts it."""
    _active, standby = active_pair(pair)
    pid = show(standby, "takeover", "MainPID")
    restarts = int(show(standby, "takeover", "NRestarts"))
    standby.run(f"kill -STOP {pid}")
    assert wait_for(lambda: int(show(standby, "takeover", "NRestarts")) == restarts + 1, 60, 0.5)
    assert wait_for(lambda: show(standby, "takeover", "SubState") == "running", 60, 0.5)
    assert show(standby, "takeover", "MainPID") != pid
    log = standby.run("journalctl -u takeover --no-pager -o cat").stdout
    assert "Watchdog timeout" in log


def test_a_takeover_crash_on_the_active_leaves_the_web_unit_running(
    pair: dict[str, Container],
) -> None:
    """takeover SIGKILLed on the active (a crash; systemd restarts it) stops nothing: the web
    unit, in its own cgroup, keeps its process, and the VIP and the service stay here."""
    active, standby = active_pair(pair)
    assert wait_for(lambda: serving(pair, active.name), 60, 0.5), web_runners(pair)
    web_pid = show(active, WEB_UNIT, "MainPID")
    restarts = int(show(active, "takeover", "NRestarts"))
    active.run("systemctl kill --signal=SIGKILL takeover")
    assert wait_for(lambda: int(show(active, "takeover", "NRestarts")) == restarts + 1, 60, 0.5)
    assert wait_for(lambda: show(active, "takeover", "SubState") == "running", 60, 0.5)
    time.sleep(3)
    assert show(active, WEB_UNIT, "MainPID") == web_pid
    assert serving(pair, active.name), web_runners(pair)
    assert show(standby, WEB_UNIT, "ActiveState") == "inactive"


def test_power_cut_of_the_active(pair: dict[str, Container]) -> None:
    """The active loses power: the peer takes the VIP and starts the web unit; booted again, the
    old active comes back as standby by itself (units enabled, cluster file present), its web
    unit stays inactive and the VIP and the service stay on the peer."""
    active, standby = active_pair(pair)
    assert wait_for(lambda: serving(pair, active.name), 60, 0.5), web_runners(pair)
    active.power_off()
    # A real power cut also loses the addresses; the node's own are restored by its "boot".
    subprocess_ip(active.netns, "addr", "del", f"{VIP4}/24", "dev", "lan0")
    assert wait_for(lambda: serving(pair, standby.name), 30, 0.2), web_runners(pair)
    active.boot()
    assert wait_for(lambda: show(active, "takeover", "SubState") == "running", 120, 0.5)
    assert wait_for(lambda: show(active, "mirrord", "SubState") == "running", 120, 0.5)
    time.sleep(3)
    assert serving(pair, standby.name), web_runners(pair)
    assert show(active, WEB_UNIT, "ActiveState") == "inactive"


def subprocess_ip(netns: str, *args: str) -> None:
    """Run `ip -n NETNS ARGS` on the host (the lab's side of a node)."""
    subprocess.run(["ip", "-n", netns, *args], check=False, capture_output=True, timeout=30)


def test_a_broken_cluster_file_is_one_clear_failure(pair: dict[str, Container]) -> None:
    """A broken file fails the start once, naming file and key, with no restart loop; fixed,
    the unit starts again without `systemctl reset-failed`; reload refuses it meanwhile."""
    _active, node = active_pair(pair)
    good = node.path("/etc/hapair/cluster.toml").read_text()
    broken = good.replace('name = "pair"', 'name = "pair"\ncolour = "blue"')
    node.path("/etc/hapair/cluster.toml").write_text(broken)
    # reload validates first: it fails and the running daemon never sees the file.
    pid = show(node, "takeover", "MainPID")
    assert node.run("systemctl reload takeover", check=False).returncode != 0
    assert show(node, "takeover", "MainPID") == pid
    assert show(node, "takeover", "SubState") == "running"
    node.run("systemctl stop takeover", timeout=200)
    assert node.run("systemctl start takeover", check=False, timeout=120).returncode != 0
    time.sleep(8)  # longer than RestartSec: a restart would have happened by now
    assert show(node, "takeover", "ActiveState") == "failed"
    assert show(node, "takeover", "NRestarts") == "0"
    assert show(node, "takeover", "ExecMainStatus") == "2"
    text = node.run("systemctl status takeover --no-pager -n 20", check=False).stdout
    assert "cluster.toml: cluster.colour" in text, text
    assert "status=2/INVALIDARGUMENT" in text, text
    errors = node.run("journalctl -u takeover -p err --no-pager -o cat").stdout
    assert "cluster.toml: cluster.colour" in errors, errors
    node.path("/etc/hapair/cluster.toml").write_text(good)
    node.run("systemctl start takeover", timeout=120)
    assert show(node, "takeover", "SubState") == "running"


def test_warnings_are_found_by_journal_priority(pair: dict[str, Container]) -> None:
    """A warning the daemon logged (the failing hook) is found by `journalctl -p warning`,
    and info lines are not."""
    node = pair["alpha"]
    out = node.run("journalctl -u takeover -p warning --no-pager -o cat").stdout
    assert re.search(r"^WARNING takeover\.hooks hook\.done command=/bin/false rc=1", out, re.M), out
    assert "INFO " not in out


def test_a_root_under_etc_is_refused_until_the_dropin_makes_it_writable(
    pair: dict[str, Container],
) -> None:
    """A mirrored root under /etc, read-only under the unit's ProtectSystem=full, fails
    mirrord's start once, naming the policy file and key; `mirrord pair-setup` writes the
    ReadWritePaths= drop-in, and then the root is mirrored with its source marker written."""
    active, standby = active_pair(pair)
    for node in (active, standby):
        node.run("mkdir -p /etc/mirrored")
        node.path("/etc/hapair/mirror.d/etc.toml").write_text(
            '[[directory]]\npath = "/etc/mirrored"\nclass = "hot"\nmin_interval = "1s"\n'
        )
    assert active.run("systemctl restart mirrord", check=False, timeout=120).returncode != 0
    text = active.run("systemctl status mirrord --no-pager -n 20", check=False).stdout
    assert "mirror.d/etc.toml: directory[0].path: /etc/mirrored: read-only" in text, text
    assert show(active, "mirrord", "ExecMainStatus") == "2"
    assert show(active, "mirrord", "NRestarts") == "0"
    for node, peer in ((active, standby), (standby, active)):
        node.run(f"mirrord pair-setup --peer-public-key /root/{peer.name}.pub")
    for node in (active, standby):
        node.run("systemctl restart mirrord", timeout=120)
    active.run("echo etc > /etc/mirrored/x")
    target = standby.path("/etc/mirrored/x")
    assert wait_for(target.exists, 60, 0.5), active.run("mirrord status").stdout
    assert active.path("/etc/mirrored/.hapair-backup/source").exists()


def test_a_wrong_host_key_shows_its_real_cause(pair: dict[str, Container]) -> None:
    """With a wrong host key pinned for the peer, `mirrord status` says "Host key
    verification failed" (ssh's own words), not only rsync's exit code."""
    active, standby = active_pair(pair)
    known = active.path("/etc/hapair/known_hosts")
    good = known.read_text()
    address = IPV4[next(k for k, v in NAMES.items() if v == standby.name)]
    wrong = active.path("/etc/ssh/ssh_host_ed25519_key.pub").read_text().split()[:2]
    known.write_text(f"{address} {wrong[0]} {wrong[1]}\n")
    try:
        # A restart also ends the ssh ControlMaster, which would skip the host key check.
        active.run("systemctl restart mirrord", timeout=120)
        active.run(f"echo again > {DATA}/again.txt")
        assert wait_for(
            lambda: "Host key verification failed" in active.run("mirrord status").stdout, 60, 1
        ), active.run("mirrord status", check=False).stdout
        log = active.run("journalctl -u mirrord --no-pager -o cat -p warning").stdout
        assert "Host key verification failed" in log, log
    finally:
        known.write_text(good)
        active.run("systemctl restart mirrord", timeout=120)


def test_the_tunnel_carries_pushes_through_the_receiver_unit(pair: dict[str, Container]) -> None:
    """With `tunnel_port` on both servers, `mirrord pair-setup` again and the packaged
    mirrord-receiver unit started, the active's pushes go through the tunnel (mirrord's unit
    may listen on the privileged forward port; the receiver's may chroot and re-own): a file
    reaches the standby and `mirrord status` says the tunnel is up."""
    active, standby = active_pair(pair)
    for node in (active, standby):
        cluster = node.path("/etc/hapair/cluster.toml")
        text = cluster.read_text()
        assert "\n[mirror]\n" in text
        cluster.write_text(text.replace("\n[mirror]\n", "\n[mirror]\ntunnel_port = 873\n", 1))
    for node, peer in ((active, standby), (standby, active)):
        node.run(f"mirrord pair-setup --peer-public-key /root/{peer.name}.pub")
        assert node.path("/etc/hapair/rsyncd-tunnel.conf").exists()
    for node in (active, standby):
        node.run("systemctl start mirrord-receiver", timeout=60)
        assert show(node, "mirrord-receiver", "ActiveState") == "active"
        node.run("systemctl restart mirrord", timeout=120)
    for i in range(3):
        active.run(f"echo tunnel-{i} > {DATA}/tunnel-{i}.txt")
        target = standby.path(f"{DATA}/tunnel-{i}.txt")
        assert wait_for(lambda t=target, i=i: t.exists() and t.read_text() == f"tunnel-{i}\n",
                        60, 0.5), active.run("mirrord status", check=False).stdout  # fmt: skip
        time.sleep(1)
    status = active.run("mirrord status").stdout
    assert "(tunnel 873: up)" in status, status
    tunnel = json.loads(active.run("mirrord status --json").stdout)["status"]["tunnel"]
    assert tunnel["carried"] >= 1 and tunnel["failed"] == 0, tunnel
