"""Mirror policy files: frozen typed model, loading and validation.

The cluster file's `[mirror] policies` globs (relative to the cluster file's directory) name TOML
files with one or more `[[directory]]` tables. Problems in every file are collected into one
`ConfigError`, each line naming the file and key (`mirror.d/www.toml: directory[0].path: ...`).

Volatility classes give a directory its interval and the range the planner may adapt it in:

    class    interval   min_interval   max_interval   max_duty   meant for
    hot      5s         1s             30s            0.5        mail spools, queues
    warm     1m         10s            10m            0.2        home directories, uploads
    static   1h         5m             6h             0.1        web roots, software trees

Explicit `interval`, `min_interval`, `max_interval` and `max_duty` override the class's values.
Without a class, a policy that sets `interval` gets a fixed interval (min = max = interval unless
given); a policy with neither is "warm". A policy without a class takes warm's `max_duty`.

`schedule` is a crontab line (minute hour day month weekday, the node's local time) at which the
directory gets an audit pass, e.g. "0 3 * * *" at a quiet hour; with it, `verify_every` defaults
to 0 (the schedule replaces the periodic audit).
"""

from __future__ import annotations

import glob
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from mirrord import excludes
from takeover.config import Cluster
from takeover.configparse import (
    ConfigError,
    Problems,
    Table,
    format_seconds,
    read_toml,
)

log = logging.getLogger(__name__)

__all__ = ["CLASS_DEFAULTS", "ConfigError", "Policy", "load_policies", "load_policy_file"]


@dataclass(frozen=True)
class ClassDefaults:
    """Interval and adaptive range of one volatility class (seconds)."""

    # Starting interval between two passes.
    interval: float
    # Fastest the planner may go.
    min_interval: float
    # Slowest the planner may go.
    max_interval: float
    # Largest share of wall time spent syncing. A hot directory is meant to reach the peer
    # within seconds, so it may sync half the time; a static one rarely changes, and a pass
    # over a large tree is costly, so it stays at a tenth.
    max_duty: float


CLASS_DEFAULTS: Final[dict[str, ClassDefaults]] = {
    "hot": ClassDefaults(5.0, 1.0, 30.0, 0.5),
    "warm": ClassDefaults(60.0, 10.0, 600.0, 0.2),
    "static": ClassDefaults(3600.0, 300.0, 6 * 3600.0, 0.1),
}
DEFAULT_MAX_DELETE: Final = "50%"
# Class of a policy that sets only interval/min_interval/max_interval.
CUSTOM: Final = "custom"


@dataclass(frozen=True)
class Policy:
    """How one directory is mirrored."""

    # Absolute, normalized directory (no trailing slash), the same path on both nodes.
    path: Path
    # "<file>: directory[i]", for messages and status.
    source: str
    # "hot", "warm", "static", or "custom" when only explicit intervals were given.
    volatility: str
    # Starting interval between two passes (seconds).
    interval: float
    # The adaptive interval stays within [min_interval, max_interval] (seconds).
    min_interval: float
    max_interval: float
    # rsync exclude patterns.
    exclude: tuple[str, ...] = ()
    # Propagate deletions to the peer.
    delete: bool = True
    # Guard: refuse a pass deleting more entries than this count...
    max_delete_count: int | None = None
    # ...or than this percentage of the tree (exactly one of the two is set).
    max_delete_percent: float | None = 50.0
    # Bandwidth limit in KiB/s; 0 = none.
    bwlimit: int = 0
    # Seconds between full audit passes; 0 = never.
    verify_every: float = 86400.0
    # Audit passes compare checksums (rsync --checksum), not size and time.
    verify_checksum: bool = False
    # rsync -H, -A, -X, --sparse.
    hard_links: bool = False
    acls: bool = False
    xattrs: bool = False
    sparse: bool = False
    # Largest share of wall time this directory may spend syncing, in (0, 1] (default: the
    # class's, CLASS_DEFAULTS).
    max_duty: float = 0.1
    # Crontab line (local time) of the audit passes, or None.
    schedule: str | None = None


def load_policies(cluster: Cluster, *, check_fs: bool = True) -> list[Policy]:
    """Load every policy file the cluster's `[mirror] policies` globs match.

    Raises ConfigError listing every problem in every file: a glob matching nothing, a path
    listed twice or nested in another (also across files), and, with `check_fs`, a directory
    that does not exist on this machine.
    """
    problems = Problems(cluster.label)
    if cluster.mirror is None:
        problems.add("mirror", "no [mirror] table: mirrord has no policies to load")
        problems.raise_if_any()
    assert cluster.mirror is not None
    base = cluster.source.parent
    files: list[Path] = []
    for i, pattern in enumerate(cluster.mirror.policies):
        matches = sorted(Path(m) for m in glob.glob(str(base / pattern)))
        matches = [m for m in matches if m.is_file()]
        if not matches:
            problems.add(f"mirror.policies[{i}]", f'"{pattern}" matches no file in {base}')
        files.extend(m for m in matches if m not in files)
    policies: list[Policy] = []
    for path in files:
        policies.extend(_read_file(path, _label(path, base), problems, check_fs=check_fs))
    _check_overlaps(policies, problems, check_fs=check_fs)
    problems.raise_if_any()
    log.debug("policies.loaded files=%d directories=%d", len(files), len(policies))
    return policies


def load_policy_file(path: str | os.PathLike[str], *, check_fs: bool = True) -> list[Policy]:
    """Load one policy file on its own; raise ConfigError listing every problem."""
    file = Path(path).absolute()
    problems = Problems(file.name)
    policies = _read_file(file, file.name, problems, check_fs=check_fs)
    _check_overlaps(policies, problems, check_fs=check_fs)
    problems.raise_if_any()
    return policies


def _label(path: Path, base: Path) -> str:
    # "mirror.d/www.toml" when under the cluster file's directory, else the full path.
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)


def _read_file(path: Path, label: str, problems: Problems, *, check_fs: bool) -> list[Policy]:
    own = problems.for_file(label)
    try:
        data = read_toml(path, label)
    except ConfigError as err:
        problems.lines.extend(err.problems)
        return []
    root = Table(data, "", own)
    tables = root.tables("directory")
    if not tables and not root.bad("directory"):
        own.add("directory", "no [[directory]] table: the file mirrors nothing")
    policies = [_policy(t, label, check_fs=check_fs) for t in tables]
    root.finish()
    return [p for p in policies if p is not None]


def _policy(t: Table, label: str, *, check_fs: bool) -> Policy | None:
    path = t.path("path")
    if not t.bad("path") and path == Path("/"):
        t.problem("path", 'refusing to mirror "/": name the directories to mirror')
    elif not t.bad("path") and check_fs:
        if not path.exists():
            t.problem("path", f"{path}: no such directory on this node")
        elif not path.is_dir():
            t.problem("path", f"{path}: not a directory")
    volatility = t.string("class", "", choices=list(CLASS_DEFAULTS))
    interval, low, high, volatility = _intervals(t, volatility)
    duty = CLASS_DEFAULTS.get(volatility, CLASS_DEFAULTS["warm"]).max_duty
    count, percent = _max_delete(t)
    schedule = _schedule(t)
    policy = Policy(
        path=path,
        source=f"{label}: {t.prefix}",
        volatility=volatility,
        interval=interval,
        min_interval=low,
        max_interval=high,
        exclude=_excludes(t),
        delete=t.boolean("delete", True),
        max_delete_count=count,
        max_delete_percent=percent,
        bwlimit=t.integer("bwlimit", 0, lo=0),
        verify_every=t.duration("verify_every", 0.0 if schedule else 86400.0),
        verify_checksum=t.boolean("verify_checksum", False),
        hard_links=t.boolean("hard_links", False),
        acls=t.boolean("acls", False),
        xattrs=t.boolean("xattrs", False),
        sparse=t.boolean("sparse", False),
        max_duty=t.number("max_duty", duty, above=0.0, hi=1.0),
        schedule=schedule,
    )
    t.finish()
    return None if t.bad("path") else policy


def _excludes(t: Table) -> tuple[str, ...]:
    # rsync patterns in the forms mirrord.excludes applies to incremental passes as well.
    patterns = t.strings("exclude", ())
    for i, pattern in enumerate(patterns):
        if (why := excludes.problem(pattern)) is not None:
            t.problem(f"exclude[{i}]", f"{why}, got {pattern!r}")
    return patterns


def _intervals(t: Table, volatility: str) -> tuple[float, float, float, str]:
    # (interval, min_interval, max_interval, class) from the class and explicit overrides.
    explicit = {k: t.has(k) for k in ("interval", "min_interval", "max_interval")}
    if volatility:
        base = CLASS_DEFAULTS[volatility]
        interval = t.duration("interval", base.interval, positive=True)
    elif explicit["interval"]:
        volatility = CUSTOM
        interval = t.duration("interval", positive=True)
        base = ClassDefaults(interval, interval, interval, CLASS_DEFAULTS["warm"].max_duty)
    else:
        volatility = "warm" if not any(explicit.values()) else CUSTOM
        base = CLASS_DEFAULTS["warm"]
        interval = base.interval
    low = t.duration("min_interval", base.min_interval, positive=True)
    high = t.duration("max_interval", base.max_interval, positive=True)
    if t.bad("interval", "min_interval", "max_interval"):
        return interval, low, high, volatility
    if low > high:
        t.problem(
            "min_interval",
            f"must not exceed max_interval ({format_seconds(high)}), got {format_seconds(low)}",
        )
    elif not low <= interval <= high:
        t.problem(
            "interval",
            f"must be within [min_interval, max_interval] = "
            f"[{format_seconds(low)}, {format_seconds(high)}], got {format_seconds(interval)}",
        )
    return interval, low, high, volatility


def _schedule(t: Table) -> str | None:
    # A crontab line, checked by the scheduler that will run it (APScheduler's cron trigger).
    value = t.string("schedule", "")
    if not value:
        return None
    # Imported only for a policy that has a schedule: APScheduler costs the daemon 3.5 MiB
    # of resident memory, which most trees never use.
    from apscheduler.triggers.cron import CronTrigger  # noqa: PLC0415

    try:
        CronTrigger.from_crontab(value)
    except ValueError as exc:
        t.problem(
            "schedule",
            f'must be a crontab line "minute hour day month weekday" (e.g. "0 3 * * *"), '
            f'got "{value}": {exc}',
        )
        return None
    return value


def _max_delete(t: Table) -> tuple[int | None, float | None]:
    # An entry count (int >= 0) or a share of the tree ("12%", more than 0, at most 100).
    value = t.raw("max_delete")
    if value is None:
        value = DEFAULT_MAX_DELETE
    if isinstance(value, int) and not isinstance(value, bool):
        if value >= 0:
            return value, None
    elif isinstance(value, str):
        match = re.fullmatch(r"(\d+(?:\.\d+)?)%", value.strip())
        if match and 0 < float(match.group(1)) <= 100:
            return None, float(match.group(1))
    t.problem(
        "max_delete",
        f'must be an entry count (an integer >= 0) or a percentage such as "10%" '
        f"(more than 0, at most 100), got {value!r}",
    )
    return None, None


def _check_overlaps(policies: list[Policy], problems: Problems, *, check_fs: bool) -> None:
    # Two policies over one tree would race each other's passes and deletions. With check_fs,
    # the trees are compared where they really are: a root that is a symlink into another
    # root (or reached through one) overlaps it as much as a nested path does.
    real = {p.path: Path(os.path.realpath(p.path)) if check_fs else p.path for p in policies}

    def shown(path: Path) -> str:
        return str(path) if real[path] == path else f"{path} (really {real[path]})"

    for i, later in enumerate(policies):
        for earlier in policies[:i]:
            where = f"{later.source}.path: {shown(later.path)}"
            a, b = real[later.path], real[earlier.path]
            if a == b:
                problems.lines.append(
                    f"{where} is already mirrored by {earlier.source}"
                    + ("" if later.path == earlier.path else f" as {shown(earlier.path)}")
                )
            elif a.is_relative_to(b):
                problems.lines.append(
                    f"{where} is inside {shown(earlier.path)} ({earlier.source}): "
                    "nested directories are not allowed"
                )
            elif b.is_relative_to(a):
                problems.lines.append(
                    f"{where} contains {shown(earlier.path)} ({earlier.source}): "
                    "nested directories are not allowed"
                )
