"""The policy's `exclude` patterns, with rsync's meaning, for the dirty list. Pure: no I/O.

A full pass gives the patterns to rsync, which applies them while it recurses: an excluded
directory is never entered, so nothing below it is sent. An incremental pass lists its paths
with --files-from, and rsync sends a listed path whatever the excludes say (`cache` and
`cache/c` both arrive with `--exclude=cache/`). So the dirty list is filtered here first, with
the same meaning, and what the policy excludes never reaches the peer on any kind of pass.

The pattern forms (rsync's FILTER RULES, for --exclude):

    /x        anchored: matches `x` at the root only
    x/        matches only a directory
    x         no slash: matches the last component of any path (`x`, `a/x`)
    a/x       a slash inside: matches the end of the path at a component boundary (`a/x`, `b/a/x`)
    *  ?      any characters / one character, never a slash
    **        anything, slashes included (and, like a slash, makes the pattern match whole paths)
    [a-z]     one character of a class (`[!...]` negates), never a slash
    \\*       a backslash takes the next wildcard character literally
    x/***     the directory `x` and everything below it

rsync applies a pattern at every level as it recurses: a path is excluded when the pattern
matches the path itself or any directory on the way to it. The kind of the path itself (a
directory-only pattern needs it) comes from the caller; a path that no longer exists (a
deletion to send) counts as a directory, so a dir-only pattern keeps it too: nothing excluded
is ever deleted on the peer, and a full pass still deletes a vanished plain file of that name.
rsync's rule prefixes (`+ `, `- `) are refused by the policy (`problem`), not interpreted here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache, partial

_WILD = frozenset("*?[")


@dataclass(frozen=True)
class Rule:
    """One exclude pattern, parsed."""

    # As the policy wrote it (for messages).
    pattern: str
    # Matches at the root only ("/x").
    anchored: bool
    # Matches only a directory ("x/", "x/***").
    dir_only: bool
    # Matched against the whole path (a slash inside, or "**"); else the last component only.
    whole_path: bool
    # The match, anchored at both ends (against the whole path or the last component).
    regex: re.Pattern[str]

    def matches(self, path: str, is_dir: Callable[[], bool]) -> bool:
        """Return whether this rule matches `path` itself (`is_dir` is asked only if needed)."""
        if self.whole_path:
            hit = self.regex.search(path) is not None
        else:
            hit = self.regex.fullmatch(path.rpartition("/")[2]) is not None
        return hit and (not self.dir_only or is_dir())


def problem(pattern: str) -> str | None:
    """Return why `pattern` is not an exclude pattern mirrord can apply, or None."""
    if not pattern or pattern.strip("/") == "":
        return "an empty pattern (or only slashes) would exclude nothing or everything"
    if pattern[:2] in ("+ ", "- ", "+,", "-,"):
        return "rsync rule prefixes (+ or -) are not supported: give the pattern alone"
    if "\n" in pattern or "\0" in pattern:
        return "a pattern cannot hold a newline or a NUL"
    return None


def _translate(body: str) -> str:
    """Return a regex for rsync's wildcard `body` (no anchors)."""
    if not _WILD & set(body):
        return re.escape(body)  # a simple string match: backslashes are literal
    out: list[str] = []
    i, n = 0, len(body)
    while i < n:
        c = body[i]
        if c == "\\" and i + 1 < n:
            out.append(re.escape(body[i + 1]))
            i += 2
            continue
        if c == "*":
            if body.startswith("**", i):
                out.append(".*")
                i += 2
                while i < n and body[i] == "*":
                    i += 1
            else:
                out.append("[^/]*")
                i += 1
            continue
        if c == "?":
            out.append("[^/]")
        elif c == "[" and (end := _class_end(body, i)) > 0:
            inner = body[i + 1 : end]
            negate = inner[:1] in ("!", "^")
            if negate:
                inner = inner[1:]
            chars = inner.replace("\\", "\\\\").replace("]", "\\]").replace("[", "\\[")
            out.append(f"[^/{chars}]" if negate else f"(?!/)[{chars}]")
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def _class_end(body: str, start: int) -> int:
    """Return the index of the `]` closing the class opened at `start` (-1: none)."""
    j = start + 1
    if j < len(body) and body[j] in "!^":
        j += 1
    if j < len(body) and body[j] == "]":
        j += 1  # a leading ] is a member
    end = body.find("]", j)
    return end


def parse(pattern: str) -> Rule:
    """Parse one exclude pattern (see the module docstring for the forms)."""
    body = pattern
    dir_only = False
    if body.endswith("/***"):
        body, dir_only = body[:-4], True
    elif body.endswith("/"):
        body, dir_only = body.rstrip("/"), True
    anchored = body.startswith("/")
    body = body.lstrip("/")
    whole = anchored or "/" in body or "**" in body
    if not anchored and body.startswith("**/"):
        # rsync lets an unanchored leading "**/" match no directory at all ("**/x" matches "x").
        rx = "(?:.*/)?" + _translate(body[3:])
    else:
        rx = _translate(body)
    if anchored:
        regex = re.compile(f"^{rx}$", re.S)
    elif whole:
        regex = re.compile(f"(?:^|/){rx}$", re.S)
    else:
        regex = re.compile(f"^{rx}$", re.S)
    return Rule(pattern, anchored, dir_only, whole, regex)


def _dir_or_gone(is_dir: Callable[[str], bool | None], path: str) -> bool:
    # A path that no longer exists may have been a directory: count it as one.
    return is_dir(path) is not False


@lru_cache(maxsize=64)
def parse_all(patterns: tuple[str, ...]) -> tuple[Rule, ...]:
    """Parse a policy's patterns (cached: the same tuple every pass)."""
    return tuple(parse(p) for p in patterns)


def keep(
    patterns: tuple[str, ...], paths: Iterable[str], is_dir: Callable[[str], bool | None]
) -> list[str]:
    """Return the paths no pattern excludes, in order.

    `is_dir(path)` says whether a path is a directory (None: it no longer exists); it is asked
    only when a directory-only pattern matches the path's own name.
    """
    rules = parse_all(patterns)
    if not rules:
        return list(paths)
    # Directories on the way, shared by many paths of one pass.
    seen: dict[str, bool] = {}

    def dir_excluded(d: str) -> bool:
        if d not in seen:
            parent = d.rpartition("/")[0]
            seen[d] = (bool(parent) and dir_excluded(parent)) or any(
                r.matches(d, lambda: True) for r in rules
            )
        return seen[d]

    out = []
    for path in paths:
        p = path.strip("/")
        if p in ("", "."):
            out.append(path)
            continue
        parent = p.rpartition("/")[0]
        if parent and dir_excluded(parent):
            continue
        if any(r.matches(p, partial(_dir_or_gone, is_dir, p)) for r in rules):
            continue
        out.append(path)
    return out
