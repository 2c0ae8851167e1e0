"""`takeover fence` and `takeover check --fencing` against real ipmi_sim BMCs on loopback."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab.bmc import SimBmc

MINIMAL = (Path(__file__).resolve().parents[1] / "configs" / "valid-minimal.toml").read_text()


@pytest.fixture
def bmcs(victim: subprocess.Popen[bytes]) -> Iterator[dict[str, SimBmc]]:
    """One BMC per node; b's power-off kills the victim."""
    with SimBmc() as a, SimBmc(on_power_off=["kill", "-KILL", str(victim.pid)]) as b:
        yield {"a": a, "b": b}


def cluster_file(tmp_path: Path, bmcs: dict[str, SimBmc], passwords: dict[str, str]) -> Path:
    """Write a cluster file whose nodes a and b are fenced through `bmcs`."""
    key = tmp_path / "authkey"
    key.write_text("k" * 64 + "\n")
    key.chmod(0o600)
    text = MINIMAL.replace("/etc/hapair/authkey", str(key))
    # A generous attempt timeout: each attempt starts a fresh interpreter, slow on a busy machine.
    for name, lan in (("a", 'lan = "192.0.2.11"\n'), ("b", 'lan = "192.0.2.12"\n')):
        bmc = bmcs[name]
        pw = bmc.write_password_file(passwords.get(name))
        text = text.replace(
            lan,
            lan + "[node.fencing]\n"
            f'type = "ipmi"\naddress = "{bmc.address}"\nport = {bmc.port}\n'
            f'user = "{bmc.user}"\npassword_file = "{pw}"\ntimeout = "15s"\n',
        )
    path = tmp_path / "cluster.toml"
    path.write_text(text)
    return path


def takeover(cluster: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `takeover -c cluster --node a ARGS` and return what it did."""
    argv = [sys.executable, "-m", "takeover", "-c", str(cluster), "--node", "a", *args]
    return subprocess.run(
        argv, check=False, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )


def test_fence_powers_the_peer_off_and_exits_0(
    tmp_path: Path, bmcs: dict[str, SimBmc], victim: subprocess.Popen[bytes]
) -> None:
    """`takeover fence b --yes` powers b off through its BMC (its workload dies), exit 0."""
    p = takeover(cluster_file(tmp_path, bmcs, {}), "fence", "b", "--yes")
    assert p.returncode == 0, p.stderr
    assert "b: fenced via" in p.stdout and "power off" in p.stdout
    assert bmcs["b"].power() == "off" and "set power 0" in bmcs["b"].calls()
    assert victim.wait(timeout=5) == -signal.SIGKILL
    assert bmcs["a"].power() == "on"


def test_fence_with_wrong_password_exits_1_with_reason(
    tmp_path: Path, bmcs: dict[str, SimBmc], victim: subprocess.Popen[bytes]
) -> None:
    """A wrong password: exit 1, the reason "wrong-password" printed, nothing powered off."""
    cluster = cluster_file(tmp_path, bmcs, {"b": "not-it"})
    p = takeover(cluster, "fence", "b", "--yes", "--json")
    assert p.returncode == 1
    doc = json.loads(p.stdout)
    assert doc["ok"] is False and doc["error"] == "wrong-password"
    assert doc["attempts"][0]["result"] == "wrong-password"
    assert bmcs["b"].power() == "on" and victim.poll() is None


def test_fence_without_yes_off_a_terminal_touches_nothing(
    tmp_path: Path, bmcs: dict[str, SimBmc]
) -> None:
    """Without --yes and without a terminal to ask on, fence refuses and calls no BMC."""
    p = takeover(cluster_file(tmp_path, bmcs, {}), "fence", "b")
    assert p.returncode == 1 and "--yes" in p.stderr
    assert bmcs["b"].calls() == []


def test_fence_refuses_to_fence_itself(tmp_path: Path, bmcs: dict[str, SimBmc]) -> None:
    """Node a asked to fence a: refused, its BMC untouched."""
    p = takeover(cluster_file(tmp_path, bmcs, {}), "fence", "a", "--yes")
    assert p.returncode == 1 and "refusing to fence myself" in p.stderr
    assert bmcs["a"].calls() == []


def test_check_fencing_reads_every_bmc_without_changing_power(
    tmp_path: Path, bmcs: dict[str, SimBmc], victim: subprocess.Popen[bytes]
) -> None:
    """check --fencing logs into both BMCs, reads "on", changes nothing, exit 0."""
    p = takeover(cluster_file(tmp_path, bmcs, {}), "check", "--fencing")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("a: BMC 127.0.0.1:") and ": ok: power on" in lines[0]
    assert lines[1].startswith("b: BMC 127.0.0.1:") and ": ok: power on" in lines[1]
    for bmc in bmcs.values():
        assert bmc.power() == "on"
        assert bmc.calls() and all(c.startswith("get") for c in bmc.calls())
    assert victim.poll() is None


def test_check_fencing_exits_1_when_a_bmc_refuses(tmp_path: Path, bmcs: dict[str, SimBmc]) -> None:
    """One BMC with a wrong password: its line says why, exit 1."""
    p = takeover(cluster_file(tmp_path, bmcs, {"a": "nope"}), "check", "--fencing")
    assert p.returncode == 1
    line_a = next(x for x in p.stdout.splitlines() if x.startswith("a: "))
    assert "FAILED: wrong-password" in line_a
    assert any(x.startswith("b: ") and ": ok: power on" in x for x in p.stdout.splitlines())
