"""A storage + VIP + web service group moving with the pair, against the real Filesystem agent.

The shared disk is an ext4 image on a loop device created here (detached in teardown); the
`ocf:heartbeat:Filesystem` agent mounts it on the active node only (each daemon runs in its
node's own mount namespace, so a mount is seen by that node alone). The web server is a
`command` resource (tests.lab.webres) serving a file from that file system; the client
fetches it through the VIP. The group's order: data, vips, web.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab.disk import ext4_loop
from tests.lab.lab import VIP4, Lab, wait_until
from tests.lab.pair import HapairPair, PairConfig, takeover_argv
from tests.lab.vm_pair import start_bmcs

pytestmark = [pytest.mark.netns, pytest.mark.e2e]

PORT = 8080
PAGE = "served from the shared disk\n"


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[str]:
    """An ext4 image holding index.html, on a loop device detached in teardown."""
    with ext4_loop(tmp_path / "shared.img", {"index.html": PAGE}) as device:
        yield device


def group_toml(mnt: Path, device: str, monitor: str = "1s", max_restarts: int = 2) -> str:
    """Return the [[resource]] tables and [group] order of the lab's web group."""
    web = [sys.executable, "-m", "tests.lab.webres"]
    cwd = str(Path(__file__).resolve().parents[2])

    def argv(action: str) -> str:
        # The command runs from the daemon's cwd; PYTHONPATH is the daemon's too.
        return json.dumps(["/usr/bin/env", f"PYTHONPATH={cwd}", *web, action, str(mnt), str(PORT)])

    return f"""
[[resource]]
name = "data"
type = "ocf"
agent = "heartbeat:Filesystem"
monitor_interval = "{monitor}"
[resource.params]
device = "{device}"
directory = "{mnt}"
fstype = "ext4"

[[resource]]
name = "web"
type = "command"
start = {argv("start")}
stop = {argv("stop")}
status = {argv("status")}
monitor_interval = "{monitor}"
start_timeout = "15s"
max_restarts = {max_restarts}

[group]
order = ["data", "vips", "web"]
"""


def web_pair(lab: Lab, device: str, **kw: object) -> tuple[HapairPair, Path]:
    """Start the pair with the web group (a preferred); wait until a serves; return it."""
    mnt = lab.workdir / "mnt"
    mnt.mkdir()
    pair = HapairPair(lab, PairConfig(extra=group_toml(mnt, device, **kw)))  # type: ignore[arg-type]
    pair.start()
    assert pair.wait_role("a", "ACTIVE", 60), pair.log("a")
    assert pair.wait_role("b", "STANDBY", 30), pair.log("b")
    assert wait_until(lambda: fetch(lab) == PAGE, timeout=30, interval=0.2), pair.log("a")
    # The client is served as soon as the server answers, before the monitor confirming the
    # start: a kill before that would be a failed start, not a failure of a running service.
    assert wait_until(lambda: group_running(pair, "a"), timeout=30, interval=0.2), pair.log("a")
    return pair, mnt


def group_running(pair: HapairPair, node: str) -> bool:
    """Return whether node's status shows every resource of the group confirmed running."""
    services = pair.status(node).get("services")
    if not isinstance(services, list) or len(services) != 2:
        return False
    return all(s.get("state") == "running" and s.get("held") for s in services)


def fetch(lab: Lab) -> str | None:
    """Return the page the client gets through the VIP, or None."""
    code = (
        "import sys, urllib.request\n"
        f"sys.stdout.write(urllib.request.urlopen('http://{VIP4}:{PORT}/index.html', timeout=1)"
        ".read().decode())"
    )
    p = lab.run("client", [sys.executable, "-c", code], check=False, timeout=10)
    return p.stdout if p.returncode == 0 else None


def mounted_on(pair: HapairPair, node: str, mnt: Path) -> bool:
    """Return whether node's daemon sees the shared disk mounted (its own mount namespace)."""
    proc = pair.procs.get(node)
    if proc is None or not proc.alive:
        return False
    try:
        info = Path(f"/proc/{proc.pid}/mountinfo").read_text()
    except OSError:
        return False
    return any(line.split()[4] == str(mnt) for line in info.splitlines())


class MountWatch:
    """Samples both nodes' mounts every 20 ms; records any instant both had the disk."""

    def __init__(self, pair: HapairPair, mnt: Path) -> None:
        """Watch `mnt` on both nodes of `pair`."""
        self.pair, self.mnt = pair, mnt
        self.both = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.samples += 1
            if all(mounted_on(self.pair, n, self.mnt) for n in ("a", "b")):
                self.both += 1

    def stop(self) -> None:
        """Stop sampling."""
        self._stop.set()
        self._thread.join()


def order_in_log(text: str) -> list[str]:
    """Return the group's acquisition steps in the order a log shows them."""
    marks = {"resource.start name=data": "data", "vip.added": "vip",
             "resource.start name=web": "web"}  # fmt: skip
    out = []
    for line in text.splitlines():
        for mark, step in marks.items():
            if mark in line:
                out.append(step)
    return out


def test_group_moves_in_order_on_crash_and_back(lab: Lab, disk: str) -> None:
    """Storage, VIP and web move together in order on a crash, and back on a standby; the
    disk is never mounted on both nodes; the client is served again each time."""
    pair, mnt = web_pair(lab, disk)
    assert mounted_on(pair, "a", mnt) and not mounted_on(pair, "b", mnt)
    # The start is logged once the agent returns, which may be after the page is served.
    group = ["data", "vip", "web"]
    assert wait_until(lambda: order_in_log(pair.log("a")) == group, timeout=30), pair.log("a")
    watch = MountWatch(pair, mnt)
    lab.kill_node("a")
    assert pair.wait_role("b", "ACTIVE", 30), pair.log("b")
    assert wait_until(lambda: fetch(lab) == PAGE, timeout=30, interval=0.2), pair.log("b")
    assert mounted_on(pair, "b", mnt)
    assert wait_until(lambda: order_in_log(pair.log("b")) == group, timeout=30), pair.log("b")
    # Back: a returns standby, the operator hands the service back to it.
    lab.revive_node("a")
    pair.start("a")
    assert pair.wait_role("a", "STANDBY", 30), pair.log("a")
    p = lab.run("b", takeover_argv(pair.cluster, "b", "standby"), check=False)
    assert p.returncode == 0, p.stderr
    assert pair.wait_role("a", "ACTIVE", 60), pair.log("a")
    assert wait_until(lambda: fetch(lab) == PAGE, timeout=30, interval=0.2), pair.log("a")
    watch.stop()
    assert mounted_on(pair, "a", mnt) and not mounted_on(pair, "b", mnt)
    assert watch.samples > 50 and watch.both == 0
    b_log = pair.log("b")
    # b released in reverse: web stopped before the disk.
    assert b_log.index("resource.stop name=web") < b_log.index("resource.stop name=data")
    doc = pair.status("a")
    services = {s["name"]: s for s in doc["services"]}  # type: ignore[union-attr]
    assert services["data"]["agent"] == "ocf:heartbeat:Filesystem"
    assert services["web"]["state"] == "running" and services["web"]["holder"] == "a"


def web_pid(pair: HapairPair, node: str, mnt: Path) -> int:
    """Return the web server's pid on node, read from the pid file on its mounted disk."""
    proc = pair.procs[node]
    return int(Path(f"/proc/{proc.pid}/root{mnt}/.web.pid").read_text())


def test_web_killed_is_restarted_in_place_then_fails_over(lab: Lab, disk: str) -> None:
    """A killed web server is restarted in place (no failover); killed again past its budget,
    the group fails over to b."""
    pair, mnt = web_pair(lab, disk, max_restarts=1)
    first = web_pid(pair, "a", mnt)
    os.kill(first, signal.SIGKILL)

    def restarted() -> bool:
        try:
            return web_pid(pair, "a", mnt) != first and fetch(lab) == PAGE
        except (OSError, ValueError):
            return False

    assert wait_until(restarted, timeout=30, interval=0.2), pair.log("a")
    assert pair.role("a") == "ACTIVE" and pair.role("b") == "STANDBY"
    assert "resource.restart name=web restarts=1" in pair.log("a")
    os.kill(web_pid(pair, "a", mnt), signal.SIGKILL)
    assert pair.wait_role("b", "ACTIVE", 60), pair.log("a")[-3000:]
    assert wait_until(lambda: fetch(lab) == PAGE, timeout=30, interval=0.2), pair.log("b")
    assert "resource.failover name=web" in pair.log("a")
    assert mounted_on(pair, "b", mnt) and not mounted_on(pair, "a", mnt)


def flag_toml(flags: Path) -> str:
    """Return a `command` resource "svc" whose state is a file per node (named after the node's
    network namespace), whose stop fails while flags/fail-stop exists, and whose start exits 6
    (LSB "not configured") while flags/misconfigured exists."""
    here = f"{flags}/svc-$(ip netns identify)"

    def sh(script: str) -> str:
        return json.dumps(["/bin/sh", "-c", script])

    return f"""
[[resource]]
name = "svc"
type = "command"
start = {sh(f"test ! -e {flags}/misconfigured || exit 6; touch {here}")}
stop = {sh(f"test ! -e {flags}/fail-stop || exit 1; rm -f {here}")}
status = {sh(f"test -e {here} || exit 3")}
monitor_interval = "1s"
stop_timeout = "5s"

[group]
order = ["vips", "svc"]
"""


def flag_pair(lab: Lab, node_extra: dict[str, str] | None = None) -> tuple[HapairPair, Path]:
    """Start the pair with the "svc" group (a preferred) and wait until a runs it."""
    flags = lab.workdir / "flags"
    flags.mkdir()
    cfg = PairConfig(extra=flag_toml(flags), node_extra=node_extra or {})
    pair = HapairPair(lab, cfg)
    pair.start()
    assert pair.wait_role("a", "ACTIVE", 60), pair.log("a")
    assert pair.wait_role("b", "STANDBY", 30), pair.log("b")
    assert wait_until(lambda: svc_runs(lab, flags) == ["a"], timeout=30), pair.log("a")
    return pair, flags


def svc_runs(lab: Lab, flags: Path) -> list[str]:
    """Return the nodes whose "svc" state file exists."""
    return [n for n in ("a", "b") if (flags / f"svc-{lab.ns(n)}").exists()]


def test_daemon_restart_on_the_active_stops_and_moves_nothing(lab: Lab) -> None:
    """A killed and restarted daemon on the active finds the service running and keeps it:
    never stopped, never moved, the peer stays standby."""
    pair, flags = flag_pair(lab)
    pair.procs["a"].signal(signal.SIGKILL)
    pair.procs["a"].wait(10)
    before = len(pair.log("a"))
    seen: list[list[str]] = []
    pair.start("a")

    def settled() -> bool:
        seen.append(svc_runs(lab, flags))
        return pair.role("a") == "ACTIVE" and "resources.acquired" in pair.log("a")[before:]

    assert wait_until(settled, timeout=30, interval=0.05), pair.log("a")
    after = pair.log("a")[before:]
    assert "resource.probed name=svc outcome=running" in after
    assert "resource.adopted name=svc" in after and "resource.stop" not in after
    assert all(s == ["a"] for s in seen), seen
    assert pair.role("b") == "STANDBY" and pair.holds("a")


def test_a_failed_stop_faults_and_the_peer_fences_before_taking_over(lab: Lab) -> None:
    """A stop that fails leaves a in FAULT still holding; b fences it through its BMC, then
    runs the service; the service never ran on both."""
    bmcs = start_bmcs(lab)
    try:
        fencing = {
            n: f'[node.fencing]\ntype = "ipmi"\naddress = "{b.address}"\nport = {b.port}\n'
            f'user = "{b.user}"\npassword_file = "{b.write_password_file()}"\ntimeout = "8s"\n'
            for n, b in bmcs.items()
        }
        pair, flags = flag_pair(lab, fencing)
        (flags / "fail-stop").touch()
        p = lab.run("a", takeover_argv(pair.cluster, "a", "standby"), check=False)
        assert p.returncode == 0, p.stderr

        def served_by_b() -> bool:
            return pair.role("b") == "ACTIVE" and "b" in svc_runs(lab, flags)

        assert wait_until(served_by_b, timeout=60, interval=0.1), pair.log("b")[-4000:]
        assert "stop: exit 1" in pair.log("a")
        assert "transition from=RELEASING to=FAULT" in pair.log("a")
        assert bmcs["a"].power() == "off" and "set power 0" in bmcs["a"].calls()
        # b started the service only once a was powered off (a's file stays: it died holding).
        b_log = pair.log("b")
        assert b_log.index("to=FENCING") < b_log.index("resource.start name=svc"), b_log
    finally:
        for bmc in bmcs.values():
            bmc.stop()


def test_a_failed_stop_without_fencing_the_peer_refuses(lab: Lab) -> None:
    """Without fencing, a peer FAULT still holding after a failed stop is never taken over."""
    pair, flags = flag_pair(lab)
    (flags / "fail-stop").touch()
    lab.run("a", takeover_argv(pair.cluster, "a", "standby"), check=False)
    assert pair.wait_role("a", "FAULT", 30), pair.log("a")[-3000:]
    assert not wait_until(lambda: pair.role("b") == "ACTIVE", timeout=8, interval=0.1)
    assert svc_runs(lab, flags) == ["a"]


def test_a_configuration_error_is_not_retried_on_the_peer(lab: Lab) -> None:
    """A start exiting 6 on the active blocks the pair: the peer never starts the service, both
    statuses say blocked (naming the resource where it failed); cleanup after the fix serves."""
    flags = lab.workdir / "flags"
    flags.mkdir()
    (flags / "misconfigured").touch()
    pair = HapairPair(lab, PairConfig(extra=flag_toml(flags)))
    pair.start()
    assert wait_until(lambda: "not configured" in pair.log("a"), timeout=60), pair.log("a")

    def both_blocked() -> bool:
        texts = [
            lab.run(n, takeover_argv(pair.cluster, n, "status"), check=False).stdout
            for n in ("a", "b")
        ]
        return "blocked: configuration error (resource svc)" in texts[0] and (
            "blocked: configuration error" in texts[1]
        )

    assert wait_until(both_blocked, timeout=30, interval=0.2), pair.log("b")[-3000:]
    # Past a's fault_hold (10 s): nobody retries, the peer never starts it.
    assert not wait_until(lambda: pair.role("b") == "ACTIVE", timeout=12, interval=0.2)
    assert "resource.start name=svc" not in pair.log("b")
    assert pair.log("a").count("resource.start name=svc") == 1
    assert svc_runs(lab, flags) == []
    # Each node's Resources section shows the peer's claim too: b sees a blocked, holding none.
    text_b = lab.run("b", takeover_argv(pair.cluster, "b", "status"), check=False).stdout
    assert "b (here): stopped" in text_b and "holds nothing, BLOCKED" in text_b, text_b
    refused = lab.run("b", takeover_argv(pair.cluster, "b", "cleanup"), check=False)
    assert refused.returncode != 0 and "run takeover cleanup on a" in refused.stderr
    (flags / "misconfigured").unlink()
    done = lab.run("a", takeover_argv(pair.cluster, "a", "cleanup", "svc"), check=False)
    assert done.returncode == 0, done.stderr
    assert wait_until(lambda: len(svc_runs(lab, flags)) == 1, timeout=30), pair.log("a")[-3000:]
