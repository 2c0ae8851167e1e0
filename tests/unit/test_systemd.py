"""The systemd units verify cleanly and carry the contract the daemons rely on.

`systemd-analyze verify` exits 0 even when it prints a parse warning (LAB-NOTES), so the tests
assert that it prints nothing at all. The units name /usr/local/bin/...; the copies verified
here point ExecStart at this checkout's console scripts, which exist.
"""

from __future__ import annotations

import configparser
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
        text = text.replace(f"/usr/local/bin/{prog}", str(BIN / prog))
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
        [tool, "verify", *map(str, paths)],
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


def service_section(unit: str) -> dict[str, str]:
    """Return the [Service] keys of a unit (repeated keys: the last value)."""
    parser = configparser.ConfigParser(strict=False, interpolation=None, comment_prefixes="#")
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((ROOT / "systemd" / unit).read_text())
    return dict(parser["Service"])


@pytest.mark.parametrize("unit", UNITS)
def test_unit_contract(unit: str) -> None:
    """Each unit is Type=notify with a watchdog, a check before start, no restart on bad config."""
    prog = unit.removesuffix(".service")
    service = service_section(unit)
    assert service["Type"] == "notify"
    assert service["WatchdogSec"]
    assert service["ExecStartPre"].endswith(f"{prog} --config /etc/hapair/cluster.toml check")
    assert service["ExecStart"].endswith(" run")
    assert service["Restart"] == "on-failure"
    assert service["RestartPreventExitStatus"].split() == ["2", "6"]
    assert service["RuntimeDirectory"] == "hapair"
    assert service["NoNewPrivileges"] == "yes"


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
