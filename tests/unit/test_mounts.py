"""Mount changes under a watched root: gone (alarm), changed (watch again), same."""

from __future__ import annotations

import pytest

from mirrord.mounts import Change, RootMount, absent, judge

R = "/srv/mail"
MOUNTED = RootMount(dev=50, is_mount=True)


@pytest.mark.parametrize(
    ("expect_mount", "now", "change", "words"),
    [
        (True, MOUNTED, Change.SAME, "ok"),
        # Unmounted: the bare mount point on the parent's filesystem.
        (True, RootMount(dev=8, is_mount=False), Change.GONE, "not mounted"),
        (True, RootMount(dev=None, is_mount=False), Change.GONE, "missing"),
        (False, RootMount(dev=None, is_mount=False), Change.GONE, "missing"),
        # Mounted again (a new tmpfs, another device): the old watches see nothing of it.
        (True, RootMount(dev=51, is_mount=True), Change.CHANGED, "mounted again"),
        # A root that never was a mount point, its containing filesystem replaced.
        (False, RootMount(dev=9, is_mount=False), Change.CHANGED, "another filesystem"),
    ],
)
def test_judge(expect_mount: bool, now: RootMount, change: Change, words: str) -> None:
    """Each state of a watched root maps to what the daemon does, with a reason naming it."""
    got, why = judge(R, expect_mount, MOUNTED, now)
    assert got is change
    assert words in why
    if change is not Change.SAME:
        assert R in why


def test_absent_lets_a_root_be_watched_again_only_when_it_is_back() -> None:
    """An unmounted root is not watched again (its bare mount point would be); a mounted one is."""
    assert absent(R, True, RootMount(dev=8, is_mount=False)) is not None
    assert absent(R, True, RootMount(dev=52, is_mount=True)) is None
    assert absent(R, False, RootMount(dev=8, is_mount=False)) is None
