"""The bash completion the package installs offers the commands' real subcommands and options."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "debian" / "bash-completion" / "hapair"


def complete(*words: str) -> set[str]:
    """Return what bash offers for the command line `words` (the last word being completed)."""
    bash = shutil.which("bash")
    assert bash is not None
    line = " ".join(f"'{w}'" for w in words)
    program = (
        f"source {SCRIPT}; COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; "
        '_hapair; printf "%s\\n" "${COMPREPLY[@]}"'
    )
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    out = subprocess.run(
        [bash, "-c", program], capture_output=True, text=True, check=True, env=env, timeout=60
    )
    return set(out.stdout.split())


@pytest.mark.parametrize(
    "prog, expected",
    [("takeover", {"check", "run", "status", "standby", "promote", "fence"}),
     ("mirrord", {"run", "status", "sync", "check", "orphans", "authorize", "receive"})],
)  # fmt: skip
def test_subcommands_complete(prog: str, expected: set[str]) -> None:
    """An empty word after the command offers every subcommand its --help lists."""
    assert complete(prog, "") >= expected


def test_subcommand_options_complete() -> None:
    """`takeover status --j` completes to the subcommand's --json."""
    assert complete("takeover", "-c", "x.toml", "status", "--j") == {"--json"}
