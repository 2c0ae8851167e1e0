"""Day-two operations in the lab: a reload in place, a refused reload, maintenance mode.

The client pings the VIP every 10 ms throughout (the probe's resolution); a reload or a
restart in maintenance must not show as a gap or a MAC change there.
"""

from __future__ import annotations

import json
import signal
import time

import pytest

from tests.lab.lab import VIP4, Lab, wait_until
from tests.lab.pair import HapairPair, PairConfig, cluster_toml, takeover_argv
from tests.lab.probe import VipProbe

pytestmark = pytest.mark.e2e

VIP_NEW = "192.0.2.101"
# Generous: a reload or a restart in maintenance moves nothing, so the longest span without
# a reply is the probe's own jitter on a loaded machine, never a failover (which takes
# deadtime, 0.3 s, plus announcements).
NO_GAP = 0.25


def started(lab: Lab, cfg: PairConfig | None = None) -> HapairPair:
    """Start the pair (a preferred) and wait for a ACTIVE, b STANDBY."""
    pair = HapairPair(lab, cfg or PairConfig())
    pair.start()
    assert pair.wait_role("a", "ACTIVE", 30), pair.log("a")
    assert pair.wait_role("b", "STANDBY", 30), pair.log("b")
    return pair


def rewrite(pair: HapairPair, cfg: PairConfig) -> None:
    """Write the pair's cluster file anew from `cfg` (same key)."""
    key = pair.cluster.parent / "authkey"
    pair.cluster.write_text(cluster_toml(pair.lab, cfg, key))


def send_rate(pair: HapairPair, node: str, seconds: float = 2.5) -> float:
    """Return the heartbeats node sends per second, between two writes of its status file."""
    first = pair.status(node)
    time.sleep(seconds)
    last = pair.status(node)
    counts = [doc["heartbeat"]["sent"] for doc in (first, last)]  # type: ignore[index]
    return (counts[1] - counts[0]) / (float(last["written"]) - float(first["written"]))  # type: ignore[arg-type]


def check(pair: HapairPair, node: str) -> tuple[int, str]:
    """Run `takeover check` on node (as ExecReload does first); return exit code and stderr."""
    p = pair.lab.run(node, takeover_argv(pair.cluster, node, "check"), check=False)
    return p.returncode, p.stderr


def reload(pair: HapairPair, *nodes: str) -> None:
    """Do what `systemctl reload` does: validate, then SIGHUP (here: the check must pass)."""
    for node in nodes:
        code, err = check(pair, node)
        assert code == 0, err
        pair.procs[node].signal(signal.SIGHUP)


def test_reload_adds_a_vip_and_changes_the_interval_without_a_gap(
    lab: Lab, vip_probe: VipProbe
) -> None:
    """A reload adding a VIP and halving the interval: the held VIP never stops answering,
    the new one is held and answers on the active only, heartbeats go twice as often."""
    pair = started(lab)
    vip_probe.start(VIP4)
    assert vip_probe.wait_for(lab.mac("a"), 30, timeout=15)
    rate_before = send_rate(pair, "a")
    faster = PairConfig(interval=0.05, deadtime_factor=6, vips=(f"{VIP4}/24", f"{VIP_NEW}/24"))
    rewrite(pair, faster)
    reload(pair, "a", "b")
    assert wait_until(lambda: pair.holds("a", VIP_NEW), 10, 0.1), pair.log("a")[-3000:]
    assert "reload.applied changes=vip+192.0.2.101/24,timings" in pair.log("a")
    assert wait_until(lambda: "reload.applied" in pair.log("b"), 10, 0.1), pair.log("b")
    assert lab.ping("client", VIP_NEW)
    rate_after = send_rate(pair, "a")
    res = vip_probe.stop()
    assert res.mac_changes == 0 and set(res.replies_per_mac) == {lab.mac("a")}, res.summary()
    assert res.gaps(NO_GAP) == [], res.summary()
    assert rate_after > 1.5 * rate_before, (rate_before, rate_after)
    assert not pair.holds("b", VIP_NEW) and not pair.holds("b")
    assert pair.role("a") == "ACTIVE" and pair.role("b") == "STANDBY"
    # The VIP held all along was never released or added again.
    assert f"vip_removed vip={VIP4}" not in pair.log("a")
    assert f"reload.acquire name=vip {VIP4}" not in pair.log("a")

    # And a reload removing it releases it, the other untouched.
    rewrite(pair, PairConfig(interval=0.05, deadtime_factor=6, vips=(f"{VIP4}/24",)))
    reload(pair, "a", "b")
    assert wait_until(lambda: not pair.holds("a", VIP_NEW), 10, 0.1), pair.log("a")[-3000:]
    assert pair.holds("a") and pair.role("a") == "ACTIVE"


def test_reload_with_an_invalid_file_keeps_the_old_configuration(
    lab: Lab, vip_probe: VipProbe
) -> None:
    """An invalid file fails the check (exit 2, file and key named); a SIGHUP anyway keeps
    everything running as it was, says why in status and the log; a fixed file clears it."""
    pair = started(lab)
    vip_probe.start(VIP4)
    assert vip_probe.wait_for(lab.mac("a"), 30, timeout=15)
    good = pair.cluster.read_text()
    pair.cluster.write_text(
        good.replace('interval = "100ms"', "interval = 0.05")
        + f'\n[[vip]]\naddress = "{VIP_NEW}/24"\n'
    )
    code, err = check(pair, "a")
    assert code == 2 and "cluster.toml: heartbeat.interval:" in err, err
    pair.procs["a"].signal(signal.SIGHUP)
    assert wait_until(lambda: "reload.failed" in pair.log("a"), 10, 0.1), pair.log("a")
    assert "reload.failed problem=cluster.toml: heartbeat.interval:" in pair.log("a")
    # `status` finds the daemon through the file's run_dir; an invalid file needs --run-dir.
    run_dir = ["--run-dir", str(lab.node_dir("a", "run"))]
    p = lab.run("a", takeover_argv(pair.cluster, "a", *run_dir, "status", "--json"))
    doc = json.loads(p.stdout)
    conditions = doc.get("conditions")
    assert isinstance(conditions, list)
    assert any("reload failed" in c and "heartbeat.interval" in c for c in conditions), doc
    brief = lab.run("a", takeover_argv(pair.cluster, "a", *run_dir, "status", "--brief"),
                    check=False)  # fmt: skip
    assert brief.returncode == 1 and "reload failed" in brief.stdout, brief.stdout
    time.sleep(1.0)
    assert not pair.holds("a", VIP_NEW) and pair.holds("a") and doc["local"]["role"] == "ACTIVE"
    # A change that cannot be made live is refused too, and says to restart.
    pair.cluster.write_text(good.replace('name = "lab"', 'name = "lab2"'))
    pair.procs["a"].signal(signal.SIGHUP)
    assert wait_until(lambda: "restart to apply" in pair.log("a"), 10, 0.1), pair.log("a")
    # A VIP on an interface this node does not have: found out before anything changed.
    pair.cluster.write_text(good + f'\n[[vip]]\naddress = "{VIP_NEW}/24"\ninterface = "nosuch0"\n')
    assert check(pair, "a")[0] == 0
    pair.procs["a"].signal(signal.SIGHUP)
    assert wait_until(lambda: "interface nosuch0 not found" in pair.log("a"), 10, 0.1)
    assert "reload.failed problem=cluster.toml: vip: " in pair.log("a")
    assert pair.holds("a") and not pair.holds("a", VIP_NEW)
    pair.cluster.write_text(good)
    pair.procs["a"].signal(signal.SIGHUP)
    assert wait_until(lambda: pair.status("a").get("conditions") == [], 10, 0.1)
    res = vip_probe.stop()
    assert res.mac_changes == 0 and res.gaps(NO_GAP) == [], res.summary()


def test_maintenance_both_daemons_killed_and_restarted_nothing_moves(
    lab: Lab, vip_probe: VipProbe
) -> None:
    """Maintenance on at a, both daemons killed and restarted: the VIP stays on a with no
    gap, nothing acts; off at b: a keeps it (no move), b is standby again."""
    pair = started(lab)
    vip_probe.start(VIP4)
    assert vip_probe.wait_for(lab.mac("a"), 30, timeout=15)
    on = lab.run("a", takeover_argv(pair.cluster, "a", "maintenance", "on"), check=False)
    assert on.returncode == 0, on.stderr
    assert wait_until(lambda: pair.status("b")["local"]["maintenance"] is True, 10, 0.1)  # type: ignore[index]
    refused = lab.run("b", takeover_argv(pair.cluster, "b", "promote"), check=False)
    assert refused.returncode == 1 and "maintenance" in refused.stderr
    for node in ("a", "b"):
        pair.procs[node].signal(signal.SIGKILL)
        pair.procs[node].wait(10)
    time.sleep(1.0)
    pair.start()
    for node in ("a", "b"):
        assert wait_until(
            lambda node=node: pair.status(node).get("local", {}).get("maintenance") is True,  # type: ignore[union-attr]
            20,
            0.1,
        ), pair.log(node)
    # Many deadtimes with both restarted: nothing decided, nothing moved.
    time.sleep(3.0)
    assert pair.holds("a") and not pair.holds("b")
    text = lab.run("a", takeover_argv(pair.cluster, "a", "status"), check=False).stdout
    assert "MAINTENANCE MODE" in text.splitlines()[1], text
    off = lab.run("b", takeover_argv(pair.cluster, "b", "maintenance", "off"), check=False)
    assert off.returncode == 0, off.stderr
    assert pair.wait_role("a", "ACTIVE", 20), pair.log("a")[-3000:]
    assert pair.wait_role("b", "STANDBY", 20), pair.log("b")[-3000:]
    # a looked at what it holds once maintenance was off, and kept it.
    assert "startup.decided role=ACTIVE reason=kept" in pair.log("a"), pair.log("a")[-3000:]
    time.sleep(1.0)
    res = vip_probe.stop()
    assert res.mac_changes == 0 and set(res.replies_per_mac) == {lab.mac("a")}, res.summary()
    assert res.gaps(NO_GAP) == [], f"{res.summary()}\n{pair.log('a')[-3000:]}"
    assert pair.holds("a") and not pair.holds("b")
    assert pair.status("a")["local"]["maintenance"] is False  # type: ignore[index]
