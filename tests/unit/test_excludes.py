"""The policy's exclude patterns keep excluded paths out of incremental passes, as rsync would."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from mirrord.excludes import keep, problem
from mirrord.transfer import TransferOptions, incremental_argv, sendable

DIRS = {"cache", "a", "a/cache", "a/b", "a/b/cache", "local-only", "x", "x/y"}


def kind(path: str) -> bool | None:
    """Say whether a path of the table's tree is a directory (None: not in the tree)."""
    return path in DIRS or (False if path in FILES else None)


FILES = {"cache/c", "a/cache/x", "a/b/cache/y", "local-only/l", "a/local-only", "keep",
         "a.log", "x/y/f", "cachefile", "b[1]"}  # fmt: skip

# patterns, path -> excluded
TABLE = [
    (("cache/",), "cache", True),
    (("cache/",), "cache/c", True),  # below an excluded directory
    (("cache/",), "a/b/cache/y", True),  # unanchored: at any depth
    (("cache/",), "cachefile", False),
    (("/local-only/",), "local-only/l", True),
    (("/local-only/",), "a/local-only", False),  # anchored: the root only (and a file here)
    (("local-only/",), "a/local-only", False),  # dir-only: a plain file of that name stays
    (("local-only",), "a/local-only", True),
    (("*.log",), "a.log", True),
    (("?ache",), "cache/c", True),
    (("a/cache",), "a/cache/x", True),
    (("a/cache",), "a/b/cache/y", False),
    (("**/cache",), "cache/c", True),  # a leading **/ may match no directory
    (("/**/cache",), "cache/c", False),
    (("/**/cache",), "a/b/cache/y", True),
    (("x/**",), "x/y/f", True),
    (("x/**",), "x", False),
    (("x/***",), "x", True),
    (("[ab].log",), "a.log", True),
    (("b\\[1\\]",), "b[1]", True),
    (("b[1]",), "b[1]", False),  # a class: matches "b1"
    (("*",), "keep", True),
    (("/*/",), "keep", False),
    (("/*/",), "a/cache/x", True),
    # A vanished path counts as a directory: a dir-only pattern keeps its deletion out too.
    (("gone/",), "gone", True),
    (("cache/", "*.log"), "keep", False),
]


@pytest.mark.parametrize("patterns, path, excluded", TABLE)
def test_exclude_table(patterns: tuple[str, ...], path: str, excluded: bool) -> None:
    """Each pattern form excludes the path itself or anything below a matching directory."""
    assert (keep(patterns, [path], kind) == []) is excluded


def test_root_and_order_are_kept() -> None:
    """The root itself is never excluded and the kept paths keep their order."""
    assert keep(("*",), [".", "a"], kind) == ["."]
    assert keep(("cache/",), ["keep", "cache/c", "a.log"], kind) == ["keep", "a.log"]


@pytest.mark.parametrize(
    "pattern, fragment",
    [("", "empty"), ("/", "empty"), ("+ keep", "prefixes"), ("- x", "prefixes"),
     ("a\nb", "newline"), ("cache/", None), ("/a/**/b[0-9]", None)],
)  # fmt: skip
def test_policy_pattern_problems(pattern: str, fragment: str | None) -> None:
    """Patterns mirrord cannot apply with rsync's meaning are refused, others accepted."""
    why = problem(pattern)
    assert (why is None) if fragment is None else (why is not None and fragment in why)


ORACLE = [["cache/"], ["/local-only/"], ["cache"], ["*.log"], ["a/cache"], ["/a/cache/"],
          ["**/cache"], ["x/**"], ["x/**/f"], ["**/z/*"], ["?ache"], ["[ab].log"],
          ["b\\[1\\]"], ["cache/***"], ["**/x"], ["/x/y/"], ["y/"], ["linkdir/"], ["linkdir"],
          ["*/cache"], ["a/*/cache"], ["[!a]*.log"], ["a/**/cache"], ["a**/cache"],
          ["/**/cache"], ["**/cache/"], ["**/x/y"], ["cache", "logs/"], ["[]a]*"], ["*"],
          ["**"], ["/*"], ["*/"]]  # fmt: skip


def test_the_filter_agrees_with_rsync(tmp_path: Path) -> None:
    """For every pattern form, the paths kept are exactly those rsync's own recursion sends."""
    root = tmp_path / "src"
    for d in ("cache/sub", "a/cache", "a/b/cache", "local-only/x", "logs", "x/y/z", "q"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for f in ("cache/c", "cache/sub/s", "a/cache/x", "a/b/cache/y", "local-only/x/l", "a.log",
              "a/local-only", "logs/a.log", "logs/b.txt", "x/y/z/f", "x/y/g", "keep", "b[1]",
              "cachefile", "a/cache2", "q/cache", "]x"):  # fmt: skip
        (root / f).write_text("1")
    os.symlink("a", root / "linkdir")
    every = [os.path.relpath(os.path.join(d, n), root)
             for d, dirs, files in os.walk(root) for n in dirs + files]  # fmt: skip

    def is_dir(p: str) -> bool | None:
        return stat.S_ISDIR(os.lstat(root / p).st_mode)

    for patterns in ORACLE:
        argv = ["rsync", "-a", "-n", "--out-format=%n", *[f"--exclude={p}" for p in patterns],
                f"{root}/", str(tmp_path / "none")]  # fmt: skip
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        sent = {line.rstrip("/") for line in out.splitlines() if line and line != "./"}
        assert set(keep(tuple(patterns), every, is_dir)) == sent, patterns


def test_incremental_rsync_never_sends_an_excluded_directory(tmp_path: Path) -> None:
    """An incremental pass over a dirty list naming excluded directories and their files
    sends none of them (rsync alone would: it sends what --files-from lists)."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    for d in ("cache", "local-only", "a/cache", "kept"):
        (src / d).mkdir(parents=True)
    for f in ("cache/c", "local-only/l", "a/cache/x", "kept/k", "top"):
        (src / f).write_text(f)
    dst.mkdir()
    patterns = ("cache/", "/local-only/")
    dirty = ["cache", "cache/c", "local-only", "local-only/l", "a", "a/cache", "a/cache/x",
             "kept", "kept/k", "top"]  # fmt: skip
    opts = TransferOptions(excludes=patterns, backup=False)
    argv = incremental_argv(str(src), None, opts, 0.0, dest=str(dst))
    listed = sendable(str(src), dirty, patterns)
    feed = b"".join(p.encode() + b"\0" for p in listed)
    subprocess.run(argv, input=feed, check=True, capture_output=True)
    got = sorted(str(p.relative_to(dst)) for p in dst.rglob("*"))
    assert got == ["a", "kept", "kept/k", "top"]
