"""mirrord's reload: the directory plan (pure), the planner's side, and a real daemon
mirroring locally that is told to add, drop and re-pace directories by SIGHUP."""

from __future__ import annotations

import asyncio
import os
import signal
from dataclasses import replace
from pathlib import Path

import pytest

from mirrord.daemon import Daemon, MirrorDir, Reloaded
from mirrord.planner import Cadence, Planner
from mirrord.reloadplan import RESTART, plan, restart_only
from mirrord.transfer import TransferOptions
from takeover.config import load_cluster
from takeover.reloadplan import ReloadRefused
from tests.unit.test_daemon_local import FAST, converge, request, tree, with_daemon

ROOT = Path(__file__).resolve().parents[2]
MINIMAL = (ROOT / "tests" / "configs" / "valid-minimal.toml").read_text()


def mdir(root: str, cadence: Cadence = FAST, excludes: tuple[str, ...] = ()) -> MirrorDir:
    """Return a directory mirrored with `cadence` and `excludes`."""
    return MirrorDir(root=root, volatility="hot", cadence=cadence,
                     options=TransferOptions(excludes=excludes))  # fmt: skip


SLOW = Cadence(interval=5.0, min_interval=1.0, max_interval=10.0)
PLANS = [
    # (old roots, new directories, added, removed, changed)
    (["/a"], [mdir("/a")], [], [], []),
    (["/a"], [mdir("/a"), mdir("/b")], ["/b"], [], []),
    (["/a", "/b"], [mdir("/b")], [], ["/a"], []),
    (["/a"], [mdir("/a", SLOW)], [], [], ["/a"]),
    (["/a"], [mdir("/a", excludes=("*.tmp",))], [], [], ["/a"]),
    (["/a", "/b"], [mdir("/c"), mdir("/b", SLOW)], ["/c"], ["/a"], ["/b"]),
]


@pytest.mark.parametrize("old, new, added, removed, changed", PLANS)
def test_plan_names_what_changed_and_only_that(
    old: list[str], new: list[MirrorDir], added: list[str], removed: list[str], changed: list[str]
) -> None:
    """Added, removed and changed directories are told apart; the rest is untouched."""
    p = plan({r: mdir(r) for r in old}, new, lambda d: d.root)
    assert [d.root for d in p.added] == added
    assert list(p.removed) == removed
    assert [d.root for d in p.changed] == changed


MIRROR = '\n[mirror]\nssh_user = "root"\n'
ADDRS = ('[[node]]\nname = "a"\n', '[[node]]\nname = "a"\nmirror_address = "192.0.2.11"\n')
ADDRS_B = ('[[node]]\nname = "b"\n', '[[node]]\nname = "b"\nmirror_address = "192.0.2.12"\n')


def with_mirror(text: str) -> str:
    """Return the minimal file with mirror addresses and a [mirror] table."""
    return text.replace(*ADDRS).replace(*ADDRS_B) + MIRROR


@pytest.mark.parametrize(
    "old_text, new_text, key",
    [
        ('ssh_user = "root"', 'ssh_user = "mirror"', "mirror.ssh_user"),
        ('mirror_address = "192.0.2.12"', 'mirror_address = "192.0.2.13"',
         "node[1].mirror_address"),
    ],
)  # fmt: skip
def test_restart_only_settings_are_refused(
    old_text: str, new_text: str, key: str, tmp_path: Path
) -> None:
    """How mirrord reaches the peer cannot change live: refused, naming the key."""
    (tmp_path / "old.toml").write_text(with_mirror(MINIMAL))
    (tmp_path / "cluster.toml").write_text(with_mirror(MINIMAL).replace(old_text, new_text))
    old, new = load_cluster(tmp_path / "old.toml"), load_cluster(tmp_path / "cluster.toml")
    (problem,) = restart_only(old, new, "a")
    assert problem.startswith(f"cluster.toml: {key}: ") and RESTART in problem
    assert restart_only(old, old, "a") == []


def test_planner_removes_and_repaces_a_directory() -> None:
    """A removed directory is planned no more; a new cadence sets the interval afresh."""
    planner = Planner()
    planner.add_directory("/a", FAST, 0.0)
    planner.add_directory("/b", FAST, 0.0)
    planner.set_cadence("/a", SLOW)
    assert planner.status("/a", 0.0).interval == SLOW.interval
    planner.remove_directory("/b")
    assert planner.directories() == ["/a"]


def test_sighup_adds_drops_and_repaces_directories(tmp_path: Path) -> None:
    """A new directory gets its first full pass; a dropped one is pushed no more and its
    mirror is left as it is; a refused reload changes nothing and says why."""
    src, src2, dest = tmp_path / "src", tmp_path / "src2", tmp_path / "dest"
    for d in (src, src2):
        d.mkdir()
    (src / "one").write_text("1")
    (src2 / "two").write_text("2")
    answer: list[Reloaded | ReloadRefused] = []

    def reloader() -> Reloaded:
        got = answer.pop(0)
        if isinstance(got, ReloadRefused):
            raise got
        return got

    first = mdir(str(src))
    daemon = Daemon([first], peer=None, state_dir=tmp_path / "state", run_dir=tmp_path / "run",
                    local_dest=dest, reloader=reloader)  # fmt: skip
    mirror = dest / str(src).lstrip("/")
    mirror2 = dest / str(src2).lstrip("/")

    async def hup_until(cond: str) -> dict[str, object]:
        os.kill(os.getpid(), signal.SIGHUP)
        for _ in range(200):
            status = await request(daemon.run_dir, {"cmd": "status"})
            if cond in str(status.get("reload")):
                return status
            await asyncio.sleep(0.02)
        raise AssertionError(status.get("reload"))

    async def body() -> None:
        env = type("E", (), {"run": daemon.run_dir, "mirror": mirror, "src": src})
        await converge(env)  # type: ignore[arg-type]
        answer.append(ReloadRefused(["cluster.toml: mirror.ssh_user: changed: restart to apply"]))
        status = await hup_until("restart to apply")
        assert [d["directory"] for d in status["directories"]] == [str(src)]  # type: ignore[union-attr, index]
        answer.append(Reloaded((mdir(str(src2)),), 20.0, None))
        status = await hup_until("'ok': True")
        assert [d["directory"] for d in status["directories"]] == [str(src2)]  # type: ignore[union-attr, index]
        for _ in range(200):
            if (mirror2 / "two").exists():
                break
            await asyncio.sleep(0.05)
        assert tree(mirror2) == tree(src2)
        # The dropped directory: changes are not pushed, its mirror stays as it was.
        (src / "late").write_text("x")
        (src2 / "three").write_text("3")
        for _ in range(200):
            if (mirror2 / "three").exists():
                break
            await asyncio.sleep(0.05)
        assert (mirror2 / "three").exists()
        assert tree(mirror) == {"one": tree(mirror)["one"]}
        # A new cadence applies to the directory that stays.
        answer.append(Reloaded((replace(mdir(str(src2)), cadence=SLOW),), 20.0, None))
        status = await hup_until(f"~{src2}")
        (d,) = status["directories"]  # type: ignore[misc]
        assert d["max_interval"] == SLOW.max_interval

    asyncio.run(with_daemon(daemon, body))
