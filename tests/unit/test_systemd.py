"""The systemd units verify cleanly and carry the contract the daemons rely on.

`systemd-analyze verify` exits 0 even when it prints a parse warning (LAB-NOTES), so the tests
assert that it prints nothing at all. The units name /usr/bin/... (the package's paths); the
copies verified here point them at this checkout's console scripts, which exist. The man pages
named in Documentation= are checked against debian/ (what the package installs), not against
this machine's man database (`--man=no`).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNITS = ["takeover.service", "mirrord.service"]
BIN = Path(sys.executable).parent


def installable_copy(tmp_path: Path, unit: str, mangle: tuple[str, str] | None = None) -> Path:
    """Copy a unit into tmp_path with its binaries pointing at this venv's console scripts."""
    text = (ROOT / "systemd" / unit).read_text()
    for prog in ("takeover", "mirrord"):
        assert (BIN / prog).exists(), f"{prog} console script missing: run make deps"
        text = text.replace(f"/usr/bin/{prog}", str(BIN / prog))
    if mangle is not None:
        assert mangle[0] in text
        text = text.replace(*mangle)
    path = tmp_path / unit
    path.write_text(text)
    return path


def verify(*paths: Path) -> subprocess.CompletedProcess[str]:
    """Run `systemd-analyze verify` on unit files and return the finished process."""
    tool = shutil.which("systemd-analyze")
    assert tool is not None, "systemd-analyze missing: the systemd package is in bootstrap.sh"
    return subprocess.run(
        [tool, "verify", "--man=no", *map(str, paths)],
        capture_output=True,
        text=True,
        check=False,
        cwd=paths[0].parent,
        timeout=120,
    )


def test_units_verify_without_any_output(tmp_path: Path) -> None:
    """Both units pass `systemd-analyze verify` with no warning at all."""
    result = verify(*(installable_copy(tmp_path, u) for u in UNITS))
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_verify_would_catch_a_broken_unit(tmp_path: Path) -> None:
    """A unit with a misspelt value makes verify print a warning (so the test above can fail)."""
    broken = installable_copy(tmp_path, "takeover.service", ("Type=notify", "Type=notifyy"))
    result = verify(broken)
    assert "notifyy" in result.stdout + result.stderr


def unit_section(unit: str, section: str) -> dict[str, list[str]]:
    """Return the keys of one section of a unit, each with every value it is given, in order."""
    found: dict[str, list[str]] = {}
    current = ""
    for raw in (ROOT / "systemd" / unit).read_text().splitlines():
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
        elif current == section and line and not line.startswith("#"):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def service_section(unit: str) -> dict[str, str]:
    """Return the [Service] keys of a unit (repeated keys: the last value)."""
    return {k: v[-1] for k, v in unit_section(unit, "Service").items()}


@pytest.mark.parametrize("unit", UNITS)
def test_unit_contract(unit: str) -> None:
    """Each unit is Type=notify with a watchdog, no restart on bad config, reload validated."""
    prog = unit.removesuffix(".service")
    service = service_section(unit)
    assert service["Type"] == "notify"
    assert service["WatchdogSec"]
    assert service["ExecStart"] == f"/usr/bin/{prog} --config /etc/hapair/cluster.toml run"
    assert service["Restart"] == "on-failure"
    assert service["RestartPreventExitStatus"].split() == ["2", "6"]
    assert service["RuntimeDirectory"] == "hapair"
    assert service["NoNewPrivileges"] == "yes"


@pytest.mark.parametrize("unit", UNITS)
def test_config_check_is_judged_by_restart_prevent_exit_status(unit: str) -> None:
    """No ExecStartPre=: its exit 2 is not the main process's, so systemd would restart it
    until the start limit locks the unit out (`run` applies every rule of `check` itself)."""
    service = unit_section(unit, "Service")
    assert "ExecStartPre" not in service
    assert "ExecCondition" not in service


@pytest.mark.parametrize("unit", UNITS)
def test_reload_checks_before_it_signals(unit: str) -> None:
    """`systemctl reload` runs `check` first: a broken file fails the reload, never the daemon."""
    prog = unit.removesuffix(".service")
    reload = unit_section(unit, "Service")["ExecReload"]
    assert reload == [f"/usr/bin/{prog} --config /etc/hapair/cluster.toml check",
                      "/bin/kill -HUP $MAINPID"]  # fmt: skip


@pytest.mark.parametrize("unit", UNITS)
def test_unit_waits_for_the_cluster_file(unit: str) -> None:
    """Installed but unconfigured, the unit is skipped by a condition rather than failing."""
    assert unit_section(unit, "Unit")["ConditionPathExists"] == ["/etc/hapair/cluster.toml"]


@pytest.mark.parametrize("unit", UNITS)
def test_documentation_is_what_the_package_installs(unit: str) -> None:
    """Every Documentation= target is a man page built from debian/man or a file in debian/docs."""
    docs = (ROOT / "debian" / "docs").read_text().split()
    for url in unit_section(unit, "Unit")["Documentation"][-1].split():
        if url.startswith("man:"):
            name, _, section = url.removeprefix("man:").rstrip(")").partition("(")
            assert (ROOT / "debian" / "man" / f"{name}.{section}").is_file(), url
        else:
            assert url.startswith("file:///usr/share/doc/hapair/"), url
            assert url.rsplit("/", 1)[1] in docs, url


def test_takeover_is_bounded_to_network_capabilities() -> None:
    """takeover keeps only CAP_NET_ADMIN and CAP_NET_RAW, on a read-only file system."""
    service = service_section("takeover.service")
    assert set(service["CapabilityBoundingSet"].split()) == {"CAP_NET_ADMIN", "CAP_NET_RAW"}
    assert service["ProtectSystem"] == "strict"


def test_mirrord_has_no_network_admin_capabilities() -> None:
    """mirrord may read and re-own files but not change the network."""
    caps = set(service_section("mirrord.service")["CapabilityBoundingSet"].split())
    assert "CAP_DAC_READ_SEARCH" in caps
    assert not caps & {"CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_SYS_ADMIN"}


@pytest.mark.parametrize("unit", UNITS)
def test_reload_validates_before_it_signals(unit: str) -> None:
    """ExecReload runs `check` first (a bad file fails the reload), then sends SIGHUP."""
    prog = unit.removesuffix(".service")
    text = (ROOT / "systemd" / unit).read_text()
    reloads = [
        line.split("=", 1)[1] for line in text.splitlines() if line.startswith("ExecReload=")
    ]
    assert len(reloads) == 2
    assert reloads[0].endswith(f"{prog} --config /etc/hapair/cluster.toml check")
    assert reloads[1] == "/bin/kill -HUP $MAINPID"


def test_the_receiver_unit_verifies_and_runs_the_tunnels_daemon(tmp_path: Path) -> None:
    """systemd/mirrord-receiver.service passes `systemd-analyze verify` with no output, runs
    rsync's daemon in the foreground on the file `mirrord authorize` writes, and waits for it."""
    unit = installable_copy(tmp_path, "mirrord-receiver.service")
    result = verify(unit)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
    service = service_section("mirrord-receiver.service")
    assert service["ExecStart"] == (
        "/usr/bin/rsync --daemon --no-detach --config=/etc/hapair/rsyncd-tunnel.conf"
    )
    text = unit.read_text()
    assert "ConditionPathExists=/etc/hapair/rsyncd-tunnel.conf" in text
    caps = set(service["CapabilityBoundingSet"].split())
    assert "CAP_SYS_CHROOT" in caps and not caps & {"CAP_NET_ADMIN", "CAP_SYS_ADMIN"}
