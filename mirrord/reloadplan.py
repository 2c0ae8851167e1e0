"""What a mirrord reload changes: the directories before and after. Pure: no I/O, no clock.

A reload (SIGHUP, `systemctl reload mirrord`) re-reads the cluster file and the policy files.
A directory only in the new set is watched and gets its first full pass; one only in the old
set stops being pushed (its data, here and on the peer, is left as it is); one in both whose
policy changed runs on with the new cadence, excludes and options; the others are untouched.
How mirrord reaches the peer (its address, the ssh account, port and key, the receiver), the
metrics endpoint and the directories of the node cannot change under a running daemon: a
file that changes them is refused as a whole, "restart to apply".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from takeover.config import Cluster

RESTART = "restart to apply"

D = TypeVar("D")


@dataclass(frozen=True)
class DirPlan(Generic[D]):
    """The directories to add, drop and update (by the new policy)."""

    added: tuple[D, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[D, ...] = ()

    def changes(self) -> list[str]:
        """Return a word per change for the log and status ("nothing" when none)."""
        return (
            [f"+{r}" for r in self.roots(self.added)]
            + [f"-{r}" for r in self.removed]
            + [f"~{r}" for r in self.roots(self.changed)]
        ) or ["nothing"]

    @staticmethod
    def roots(dirs: Sequence[D]) -> list[str]:
        """Return the roots of `dirs` (each has a `root`)."""
        return [str(getattr(d, "root", d)) for d in dirs]


def plan(old: Mapping[str, D], new: Sequence[D], root: Callable[[D], str]) -> DirPlan[D]:
    """Return the difference from the running directories `old` (by root) to `new`."""
    after = {root(d): d for d in new}
    return DirPlan(
        added=tuple(d for r, d in after.items() if r not in old),
        removed=tuple(r for r in old if r not in after),
        changed=tuple(d for r, d in after.items() if r in old and old[r] != d),
    )


def restart_only(old: Cluster, new: Cluster, node: str) -> list[str]:
    """Return one problem per setting mirrord cannot change while it runs, naming the key."""
    problems: list[str] = []
    label = new.label

    def differs(key: str, a: object, b: object) -> None:
        if a != b:
            problems.append(f"{label}: {key}: changed ({a} -> {b}): {RESTART}")

    if old.mirror is None or new.mirror is None:
        differs("mirror", old.mirror is not None, new.mirror is not None)
        return problems
    for key in ("ssh_user", "ssh_port", "ssh_key", "receiver", "tunnel_port", "metrics",
                "backup_retention"):  # fmt: skip
        differs(f"mirror.{key}", getattr(old.mirror, key), getattr(new.mirror, key))
    names = [n.name for n in new.nodes]
    if sorted(n.name for n in old.nodes) != sorted(names):
        differs("node names", sorted(n.name for n in old.nodes), sorted(names))
        return problems
    for index, n_new in enumerate(new.nodes):
        n_old = old.node(n_new.name)
        differs(f"node[{index}].mirror_address", n_old.mirror_address, n_new.mirror_address)
        if n_new.name == node:
            differs(f"node[{index}].run_dir", n_old.run_dir, n_new.run_dir)
            differs(f"node[{index}].state_dir", n_old.state_dir, n_new.state_dir)
    return problems


__all__ = ["RESTART", "DirPlan", "plan", "restart_only"]
