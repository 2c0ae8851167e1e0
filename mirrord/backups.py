"""The receiving side's backup area: what passes overwrite or delete, kept for a retention.

Passes fill it (--backup-dir); the receiving node's mirrord prunes it hourly (mirrord.daemon),
and with the rrsync receiver mirrord.receive prunes it too, at most hourly, before a pass.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

# Receiving-side directory (inside each root) that keeps what passes overwrite or delete.
BACKUP_DIR: Final = ".hapair-backup"
# File in BACKUP_DIR while this node is (or was, until it crashed) the source of the root: the
# receiving side refuses ordinary pushes into it (see mirrord.orphans).
SOURCE_MARKER: Final = "source"
# Timestamp formats of the backup hour directory and of the per-pass suffix (UTC).
BACKUP_HOUR_FORMAT: Final = "%Y-%m-%dT%HZ"
BACKUP_SUFFIX_FORMAT: Final = "~%Y%m%dT%H%M%S~"


def backup_args(now: float) -> list[str]:
    """Return the --backup options for a pass starting at `now` (UTC hour dir + suffix)."""
    t = datetime.fromtimestamp(now, UTC)
    return [
        "--backup",
        f"--backup-dir={BACKUP_DIR}/{t.strftime(BACKUP_HOUR_FORMAT)}",
        f"--suffix={t.strftime(BACKUP_SUFFIX_FORMAT)}",
    ]


def expired_backups(names: Sequence[str], retention: float, now: float) -> list[str]:
    """Return the backup hour directories whose whole hour is older than `retention`."""
    out = []
    for name in names:
        try:
            start = datetime.strptime(name, BACKUP_HOUR_FORMAT).replace(tzinfo=UTC)
        except ValueError:
            continue  # not ours: leave it alone
        end = (start + timedelta(hours=1)).timestamp()
        if end < now - retention:
            out.append(name)
    return out


def prune_backups(root: str, retention: float, now: float) -> list[str]:
    """Delete expired backup hour directories under `root`; return their names."""
    area = Path(root) / BACKUP_DIR
    try:
        names = [p.name for p in area.iterdir() if p.is_dir() and not p.is_symlink()]
    except FileNotFoundError:
        return []
    gone = expired_backups(names, retention, now)
    for name in gone:
        shutil.rmtree(area / name, ignore_errors=True)
    return gone
