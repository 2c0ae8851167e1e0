"""PURE modules import no effect: no sockets, processes, clocks, netlink, packets or watchers."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {
    "socket",
    "subprocess",
    "time",
    "asyncio",
    "select",
    "pyroute2",
    "scapy",
    "pyghmi",
    "libvirt",
    "ctypes",
    "apscheduler",
    "sqlite3",
    "threading",
}
# Modules DESIGN.md names as pure; any other module whose docstring says "Pure:" joins them.
REQUIRED_PURE = [
    "takeover/machine.py",
    "takeover/arbitration.py",
    "takeover/wire.py",
    "takeover/deadlines.py",
    "takeover/startup.py",
    "takeover/lease.py",
    "takeover/witnesswire.py",
    "takeover/ocf.py",
    "mirrord/planner.py",
    "mirrord/excludes.py",
    "mirrord/outcome.py",
    "mirrord/deletions.py",
    "mirrord/roles.py",
    "takeover/metrics.py",
    "mirrord/metrics.py",
    "takeover/brief.py",
    "mirrord/brief.py",
    "takeover/drift.py",
    "takeover/reloadplan.py",
    "mirrord/reloadplan.py",
    "mirrord/mounts.py",
    "tests/campaign/schedule.py",
    "tests/campaign/guests.py",
]


def _docstring_says_pure(path: Path) -> bool:
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    return "Pure:" in doc


def pure_modules() -> list[Path]:
    found = {
        p
        for pkg in ("takeover", "mirrord")
        for p in (ROOT / pkg).rglob("*.py")
        if _docstring_says_pure(p)
    }
    found |= {ROOT / r for r in REQUIRED_PURE if (ROOT / r).exists()}
    return sorted(found)


def imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("path", pure_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_pure_module_imports_no_effects(path: Path) -> None:
    """A PURE module imports none of the effect libraries."""
    assert not imported_roots(path) & FORBIDDEN


def test_required_pure_modules_say_so() -> None:
    """Every module DESIGN.md calls pure exists and declares itself pure in its docstring."""
    for rel in REQUIRED_PURE:
        path = ROOT / rel
        assert path.exists(), rel
        assert _docstring_says_pure(path), rel
