"""The whole pair on the lab: takeover, mirrord and sshd (forced rsync daemon) on both a and b.

Either node may be the active, so both run sshd with the mirror key authorized through
`mirrord authorize`, and both run mirrord following their takeover. Each node sees its own
/srv (`tree(node, name)` is the host path of /srv/NAME as that node sees it). One key pair
serves both directions (the cluster file names one `mirror.ssh_key` path for both nodes).
Used by tests/e2e/test_pair.py, bench/pair.py and the demo.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.e2e.mirrorlab import rsync_daemon_answers, spawn_sshd, write_policies
from tests.lab.lab import IPV4, Lab, LabProcess, wait_until
from tests.lab.pair import HapairPair, PairConfig, fmt_duration

NODES = ("a", "b")


def peer_of(node: str) -> str:
    """Return the other lab node."""
    return "b" if node == "a" else "a"


class PairLab:
    """takeover + mirrord + sshd on both lab nodes, from one cluster file."""

    def __init__(
        self,
        lab: Lab,
        policies: Sequence[Mapping[str, object]],
        cfg: PairConfig | None = None,
        flush_timeout: float = 20.0,
    ) -> None:
        self.lab = lab
        self.policies = list(policies)
        self.flush_timeout = flush_timeout
        self.etc = lab.workdir / "etc"
        self.etc.mkdir(exist_ok=True)
        self.srv = {n: lab.node_dir(n, "srv") for n in NODES}
        for p in self.policies:
            name = str(p["path"]).removeprefix("/srv/")
            for n in NODES:
                (self.srv[n] / name).mkdir(parents=True, exist_ok=True)
        self._keys()
        cfg = cfg or PairConfig()
        cfg.extra += (
            '\n[mirror]\npolicies = ["mirror.d/*.toml"]\nssh_user = "root"\n'
            f'ssh_key = "{self.key}"\nbackup_retention = "1d"\n'
            f'flush_timeout = "{fmt_duration(flush_timeout)}"\n'
        )
        write_policies(self.etc, self.policies)
        self.takeover = HapairPair(lab, cfg)
        self.cluster = self.takeover.cluster
        self.sshd: dict[str, LabProcess] = {}
        self.mirrord: dict[str, LabProcess] = {}

    # -- set-up ---------------------------------------------------------------------------

    def _keys(self) -> None:
        self.key = self.etc / "mirror_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "hapair-lab",
                        "-f", str(self.key)], check=True)  # fmt: skip
        self.known_hosts = self.etc / "known_hosts"
        lines = []
        for n in NODES:
            host_key = self.lab.node_dir(n, "etc") / "ssh_host_ed25519_key"
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"host-{n}",
                            "-f", str(host_key)], check=True)  # fmt: skip
            kind, blob = Path(f"{host_key}.pub").read_text().split()[:2]
            lines.append(f"{IPV4[n]} {kind} {blob}\n")
        self.known_hosts.write_text("".join(lines))

    def ssh_options(self) -> list[str]:
        """ssh -o options mirrord gets in the lab (host keys pinned)."""
        return [f"UserKnownHostsFile={self.known_hosts}", "StrictHostKeyChecking=yes"]

    def start_sshd(self, node: str) -> None:
        """Start sshd in node with the mirror key restricted to the roots (mirrord authorize)."""
        etc = self.lab.node_dir(node, "etc")
        line = self.mirrord_cli(node, "authorize", f"{self.key}.pub",
                                "--rsyncd-conf", str(etc / "rsyncd.conf")).stdout  # fmt: skip
        self.sshd[node] = spawn_sshd(
            self.lab, node, etc, host_key=etc / "ssh_host_ed25519_key", authorized_line=line,
            srv=self.srv[node], log_path=self.lab.workdir / f"sshd-{node}.log",
        )  # fmt: skip
        other = peer_of(node)
        if not wait_until(lambda: self._daemon_answers(other, node), timeout=15, interval=0.1):
            raise RuntimeError(f"sshd in {node} did not come up: {self.sshd[node].output()}")

    def _daemon_answers(self, src: str, dst: str) -> bool:
        return rsync_daemon_answers(self.lab, src, self.key, self.ssh_options(), IPV4[dst])

    def mirrord_argv(self, node: str, *args: str) -> list[str]:
        """Return `mirrord -c cluster --node NODE ARGS` for this interpreter."""
        return [sys.executable, "-m", "mirrord", "-c", str(self.cluster), "--node", node, *args]

    def mirrord_cli(self, node: str, *args: str) -> subprocess.CompletedProcess[str]:
        """Run a mirrord subcommand from the host (status, authorize, orphans listing)."""
        return subprocess.run(self.mirrord_argv(node, *args), capture_output=True, text=True,
                              check=False, timeout=120)  # fmt: skip

    def mirrord_in(self, node: str, *args: str, timeout: float = 60) -> tuple[int, str]:
        """Run a mirrord subcommand inside node with its /srv (orphans --restore); rc, output."""
        proc = self.lab.spawn(node, self.mirrord_argv(node, *args, *self._ssh_args()),
                              binds={"/srv": self.srv[node]})  # fmt: skip
        rc = proc.wait(timeout)
        return rc, proc.output()

    def _ssh_args(self) -> list[str]:
        out: list[str] = []
        for o in self.ssh_options():
            out += ["--ssh-option", o]
        return out

    def start_mirrord(self, node: str) -> None:
        """Start mirrord in node, following its takeover."""
        (self.lab.node_dir(node, "run") / "mirrord.json").unlink(missing_ok=True)
        argv = self.mirrord_argv(node, "run", "--flush-timeout", str(self.flush_timeout),
                                 *self._ssh_args())  # fmt: skip
        self.mirrord[node] = self.lab.spawn(
            node, argv, binds={"/srv": self.srv[node]},
            log_path=self.lab.workdir / f"mirrord-{node}.log", env={"PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        up = wait_until(lambda: self.mirror_status(node) is not None, timeout=30, interval=0.05)
        if not up:
            raise RuntimeError(f"mirrord in {node} did not start: {self.mirrord[node].output()}")

    def start(self, *nodes: str) -> None:
        """Start sshd, takeover and mirrord on the nodes (default both)."""
        for n in nodes or NODES:
            self.start_sshd(n)
        self.takeover.start(*(nodes or NODES))
        for n in nodes or NODES:
            self.start_mirrord(n)

    def crash(self, node: str) -> None:
        """Crash node: every process SIGKILLed, its links down."""
        self.lab.kill_node(node)

    def revive(self, node: str) -> None:
        """Bring a crashed node back: links up, then sshd, takeover and mirrord again."""
        self.lab.revive_node(node)
        self.start(node)

    # -- observation ----------------------------------------------------------------------

    def mirror_status(self, node: str) -> dict[str, Any] | None:
        """mirrord's status file on node, or None."""
        try:
            doc: dict[str, Any] = json.loads(
                (self.lab.node_dir(node, "run") / "mirrord.json").read_text()
            )
        except (OSError, ValueError):
            return None
        return doc

    def pushing(self, node: str) -> bool:
        """Whether node's mirrord says it pushes."""
        doc = self.mirror_status(node)
        return bool(doc and doc.get("follow", {}).get("pushing"))

    def active(self) -> str | None:
        """The node whose takeover says ACTIVE (None if neither)."""
        for n in NODES:
            if self.takeover.role(n) == "ACTIVE":
                return n
        return None

    def tree(self, node: str, name: str) -> Path:
        """Host path of /srv/NAME as node sees it."""
        return self.srv[node] / name

    def takeover_status_text(self, node: str) -> str:
        """`takeover status` of node, as an operator sees it."""
        argv = [sys.executable, "-m", "takeover", "-c", str(self.cluster), "--node", node,
                "status"]  # fmt: skip
        return self.lab.run(node, argv, check=False).stdout

    def orphans(self, node: str) -> list[dict[str, Any]]:
        """`mirrord orphans --json` of node."""
        p = self.mirrord_cli(node, "orphans", "--json")
        if p.returncode != 0:
            raise RuntimeError(p.stderr)
        return list(json.loads(p.stdout)["orphans"])

    def log(self, node: str) -> str:
        """What mirrord on node has logged."""
        path = self.lab.workdir / f"mirrord-{node}.log"
        return path.read_text(errors="replace") if path.exists() else ""


class Writer:
    """Writes a new file into a directory every `every` seconds from a thread and records each
    acknowledged write (its name and the wall time the write returned)."""

    def __init__(self, root: Path, every: float = 0.02, prefix: str = "w") -> None:
        self.root = root
        self.every = every
        self.prefix = prefix
        self.acked: list[tuple[str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Writer:
        """Start writing."""
        self._thread.start()
        return self

    def _run(self) -> None:
        seq = 0
        while not self._stop.is_set():
            seq += 1
            name = f"{self.prefix}-{seq:06d}"
            try:
                with open(self.root / name, "w") as f:
                    f.write(f"{name}\n")
            except OSError:
                return
            self.acked.append((name, time.time()))
            self._stop.wait(self.every)

    def stop(self) -> list[tuple[str, float]]:
        """Stop writing; return every acknowledged write."""
        self._stop.set()
        self._thread.join()
        return list(self.acked)


def present(root: Path, names: Sequence[str]) -> set[str]:
    """Return which of `names` exist under root with the content the writer gave them."""
    out = set()
    for name in names:
        try:
            if (root / name).read_text() == f"{name}\n":
                out.add(name)
        except OSError:
            pass
    return out
