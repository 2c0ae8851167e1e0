"""The campaign's checkers, each from what it observes itself (never hapair's status files).

1. census: no ARP census round from the client saw two MACs answer for the VIP;
2. writes: every acknowledged record is, byte for byte, on the active's tree (the node whose MAC
   answers the VIP at the end) or in a recovery area (ROOT/.hapair-backup/recovery-*/);
3. vms: (only with --vms; not built yet);
4. trees: after quiesce both trees are identical (type, size, mode, owner, mtime, content, link
   targets, hard-link groups), mirrord's own .hapair-backup left out;
5. heal: each time the last fault in force is healed, the VIP answers again within the bound;
6. daemons: no traceback in any daemon's log, no exit the nemesis did not cause, and at the end
   every daemon runs, is not stopped, and answers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from mirrord.backups import BACKUP_DIR
from mirrord.orphans import RECOVERY_PREFIX
from tests.campaign.agents import payload, record_name
from tests.e2e.mirrorlab import snapshot


@dataclass
class Verdict:
    """What one checker saw."""

    name: str
    checked: int = 0
    violations: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No violation."""
        return not self.violations


def acked(log_path: Path) -> list[dict[str, object]]:
    """The client's acknowledged writes, oldest first."""
    out: list[dict[str, object]] = []
    if not log_path.exists():
        return out
    for line in log_path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "id" in rec:
            out.append(rec)
    return out


def recovery_dirs(root: Path) -> list[Path]:
    """The recovery areas of a mirrored root."""
    area = root / BACKUP_DIR
    if not area.is_dir():
        return []
    return sorted(p for p in area.iterdir() if p.name.startswith(RECOVERY_PREFIX))


def backup_copies(root: Path, name: str) -> list[Path]:
    """Copies of name anywhere in the backup area (per-pass backups too), for diagnosis."""
    area = root / BACKUP_DIR
    return list(area.rglob(name)) if area.is_dir() else []


def check_writes(
    seed: int,
    records: list[dict[str, object]],
    active: Path | None,
    others: list[Path],
    origin: float = 0.0,
) -> tuple[Verdict, int]:
    """Checker 2; returns the verdict and the number of lost writes."""
    v = Verdict("writes")
    recovery = [d for root in others for d in recovery_dirs(root)]
    if active is not None:
        recovery += recovery_dirs(active)
    lost = 0
    found_in_recovery = 0
    for rec in records:
        rid = int(str(rec["id"]))
        want = payload(seed, rid)
        name = record_name(rid)
        v.checked += 1
        places = ([active / name] if active is not None else []) + [d / name for d in recovery]
        hit = None
        for place in places:
            try:
                if place.read_bytes() == want:
                    hit = place
                    break
            except OSError:
                continue
        if hit is None:
            lost += 1
            elsewhere = [str(p) for root in [*(x for x in [active] if x), *others]
                         for p in backup_copies(root, name)]  # fmt: skip
            v.violations.append(
                f"record {rid} (acked at {float(str(rec['m'])) - origin:.2f} by {rec.get('node')}) "
                "is on neither the "
                f"active's tree nor in a recovery area; copies elsewhere: {elsewhere or 'none'}"
            )
        elif active is None or hit.parent != active:
            found_in_recovery += 1
    if found_in_recovery:
        v.notes.append(f"{found_in_recovery} acknowledged records found in a recovery area")
    if active is None:
        v.violations.append("no node answered the VIP at the end: no active tree to check")
    return v, lost


def tree_diff(a: Path, b: Path, limit: int = 20) -> list[str]:
    """How the trees differ (empty: identical), at most limit lines."""
    sa, sb = snapshot(a, content=True), snapshot(b, content=True)
    out: list[str] = []
    for rel in sorted(set(sa) | set(sb)):
        if sa.get(rel) != sb.get(rel):
            out.append(
                f"{rel}: {a.parent.parent.name}={sa.get(rel)} {b.parent.parent.name}={sb.get(rel)}"
            )
    if len(out) > limit:
        out = [*out[:limit], f"... and {len(out) - limit} more"]
    return out


def tracebacks(log_path: Path) -> list[str]:
    """Each traceback in a log: its last lines."""
    if not log_path.exists():
        return []
    lines = log_path.read_text(errors="replace").splitlines()
    out = []
    for i, line in enumerate(lines):
        if line.startswith("Traceback"):
            end = i + 1
            while end < len(lines) and (lines[end].startswith((" ", "\t")) or not lines[end]):
                end += 1
            out.append(" | ".join(lines[max(0, i - 1) : min(len(lines), end + 1)])[-1500:])
    return out


def proc_state(pid: int) -> str:
    """The process's state letter (R, S, D, T, Z), or "" if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return text[text.rindex(")") + 2]
