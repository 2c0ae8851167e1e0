"""mirrord and a source root that is unmounted and mounted again (a real tmpfs, in a private
mount namespace of its own: the host's mounts are never touched)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from mirrord.daemon import Daemon, MirrorDir
from mirrord.planner import Cadence
from mirrord.transfer import TransferOptions
from tests.unit.test_daemon_local import Env, request, with_daemon

FAST = Cadence(interval=0.2, min_interval=0.1, max_interval=1.0)


def _mount(where: Path) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "hapair-lab", str(where)], check=True)


async def _until(check: Any, tries: int = 400) -> bool:
    """Poll `check()` every 0.05 s; return whether it came true (bounded, generously)."""
    for _ in range(tries):
        if await check():
            return True
        await asyncio.sleep(0.05)
    return False


def child(tmp: str) -> None:
    """Run inside `unshare --mount`: mirror a tmpfs root, unmount it, mount a new one; print
    what was seen as one JSON line."""
    env = Env(Path(tmp))
    _mount(env.src)
    (env.src / "a").write_text("a")
    d = MirrorDir(root=str(env.src), volatility="hot", cadence=FAST, options=TransferOptions())
    daemon = Daemon([d], peer=None, state_dir=env.state, run_dir=env.run, local_dest=env.dest)
    seen: dict[str, Any] = {}

    async def directory() -> dict[str, Any]:
        (st,) = (await request(env.run, {"cmd": "status"}))["directories"]
        assert isinstance(st, dict)
        return st

    async def arrived(name: str) -> bool:
        return (env.mirror / name).exists()

    async def body() -> None:
        seen["first"] = await _until(lambda: arrived("a"))
        # Lazy: a pass may still be reading the tree (the mount goes from the namespace now).
        subprocess.run(["umount", "--lazy", str(env.src)], check=True)

        async def alarmed() -> bool:
            st = await directory()
            seen["alarm"], seen["watched"] = st["alarm"], st["watched"]
            return bool(st["alarm"]) and "not mounted" in st["alarm"]

        seen["alarmed"] = await _until(alarmed)
        _mount(env.src)
        (env.src / "b").write_text("b")
        seen["b"] = await _until(lambda: arrived("b"))

        async def clear() -> bool:
            st = await directory()
            seen["after"] = {k: st[k] for k in ("alarm", "watched", "last_result")}
            return st["watched"] and not st["alarm"] and not st["running"] and not st["dirty"]

        seen["clear"] = await _until(clear)
        # Written once the new mount is watched: only its watches can tell the planner.
        (env.src / "c").write_text("c")
        seen["c"] = await _until(lambda: arrived("c"))

    try:
        asyncio.run(with_daemon(daemon, body))
    finally:
        subprocess.run(["umount", "--lazy", str(env.src)], check=False, capture_output=True)
    print(json.dumps(seen))


def test_an_unmounted_root_is_an_alarm_and_a_new_mount_is_watched_and_mirrored(
    tmp_path: Path,
) -> None:
    """Unmounting the root raises an alarm naming it in status at once (no pass needed); once
    mounted again, what is written in the new mount reaches the peer."""
    code = "import sys; from tests.lab.test_mirrord_mounts import child; child(sys.argv[1])"
    run_env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    out = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "--", sys.executable, "-c", code,
         str(tmp_path)],
        check=False, capture_output=True, text=True, timeout=300, env=run_env,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["first"], seen
    assert seen["alarmed"], seen
    assert seen["watched"] is False
    assert seen["b"] and seen["clear"], seen
    assert seen["c"], seen
