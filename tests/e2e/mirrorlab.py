"""A mirrord pair on the lab: sshd with a restricted key in node b, mirrord in node a.

Each node sees its own /srv (a bind mount in a private mount namespace), so "/srv/mail" on a
and on b are different host directories (`pair.src(name)`, `pair.dst(name)`). The receiving
key is installed with `mirrord authorize` (a forced rsync daemon serving the roots), exactly as
the README tells an operator to do. Also used by bench/mirror.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import stat
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mirrord.backups import BACKUP_DIR
from mirrord.cli import control_request
from tests.lab.lab import IPV4, Lab, LabProcess, wait_until

SSHD = "/usr/sbin/sshd"


def toml_value(v: object) -> str:
    """Render a TOML scalar or list."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return str(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return json.dumps(str(v))


class MirrorPair:
    """sshd on b, configuration and keys on a; start/stop mirrord on a."""

    def __init__(
        self,
        lab: Lab,
        policies: Sequence[Mapping[str, object]],
        receiver: str = "rsyncd",
        tunnel_port: int = 0,
    ) -> None:
        """`receiver`: what the mirror key runs on b ([mirror] receiver); `tunnel_port`: its
        [mirror] tunnel_port (b then runs the standing daemon, `start_receiver`)."""
        self.lab = lab
        self.receiver = receiver
        self.tunnel_port = tunnel_port
        self.receiver_daemon: LabProcess | None = None
        self.policies = list(policies)
        self.a_srv = lab.node_dir("a", "srv")
        self.b_srv = lab.node_dir("b", "srv")
        self.a_run = lab.node_dir("a", "run")
        self.a_state = lab.node_dir("a", "state")
        self.etc = lab.node_dir("a", "etc")
        self.b_etc = lab.node_dir("b", "etc")
        self.mirrord: LabProcess | None = None
        self.extra_binds: dict[str, Path] = {}
        for p in self.policies:
            name = str(p["path"]).removeprefix("/srv/")
            # Each root exists on both nodes, as the operator's set-up makes it.
            (self.a_srv / name).mkdir(parents=True, exist_ok=True)
            (self.b_srv / name).mkdir(parents=True, exist_ok=True)
        self._keys()
        self._config()
        self._sshd()

    # -- set-up ---------------------------------------------------------------------------

    def _keys(self) -> None:
        self.key = self.etc / "mirror_key"
        self.host_key = self.b_etc / "ssh_host_ed25519_key"
        for path in (self.key, self.host_key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "hapair-lab",
                            "-f", str(path)], check=True)  # fmt: skip
        host_pub = (self.b_etc / "ssh_host_ed25519_key.pub").read_text().split()
        self.known_hosts = self.etc / "known_hosts"
        self.known_hosts.write_text(f"{IPV4['b']} {host_pub[0]} {host_pub[1]}\n")

    def _config(self) -> None:
        authkey = self.etc / "authkey"
        # Printable: the key file is read stripped, and a random edge byte could be whitespace.
        authkey.write_bytes(os.urandom(32).hex().encode())
        authkey.chmod(0o600)
        nodes = []
        for n, hb in (("a", "198.51.100.1"), ("b", "198.51.100.2")):
            nodes.append(
                f'[[node]]\nname = "{n}"\ninterface = "lan0"\nmirror_address = "{IPV4[n]}"\n'
                f'run_dir = "{self.lab.node_dir(n, "run")}"\n'
                f'state_dir = "{self.lab.node_dir(n, "state")}"\n'
                f'[node.heartbeat]\nhb = "{hb}"\nlan = "{IPV4[n]}"\n'
            )
        self.cluster = self.etc / "cluster.toml"
        self.cluster.write_text(
            '[cluster]\nname = "lab"\n\n' + "\n".join(nodes)
            + f'\n[heartbeat]\nlinks = ["hb", "lan"]\nkey_file = "{authkey}"\n\n'
            + '[mirror]\npolicies = ["mirror.d/*.toml"]\nssh_user = "root"\n'
            + f'receiver = "{self.receiver}"\ntunnel_port = {self.tunnel_port}\n'
            + f'ssh_key = "{self.key}"\nbackup_retention = "1d"\n'
        )  # fmt: skip
        write_policies(self.etc, self.policies)

    def cli(
        self, *args: str, check: bool = True, node: str = "a"
    ) -> subprocess.CompletedProcess[str]:
        """Run `mirrord -c cluster --node NODE ARGS` from the host (status, sync, authorize)."""
        argv = [sys.executable, "-m", "mirrord", "-c", str(self.cluster), "--node", node, *args]
        return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=600)

    def _sshd(self) -> None:
        # Authorized as on b, the receiving node (b's rsyncd.conf).
        line = self.cli("authorize", f"{self.key}.pub", "--rsyncd-conf",
                        str(self.b_etc / "rsyncd.conf"), node="b").stdout  # fmt: skip
        self.authorized_keys = self.b_etc / "authorized_keys"
        self.sshd = spawn_sshd(self.lab, "b", self.b_etc, host_key=self.host_key,
                               authorized_line=line, srv=self.b_srv)  # fmt: skip
        ok = wait_until(self._daemon_answers, timeout=15, interval=0.1)
        if not ok:
            raise RuntimeError(f"sshd in b did not come up: {self.sshd.output()}")
        if self.tunnel_port:
            self.start_receiver()

    def start_receiver(self) -> LabProcess:
        """Start the standing daemon in b as its unit does (systemd/mirrord-receiver.service's
        command, on the files `mirrord authorize` wrote in b's etc)."""
        unit = Path(__file__).resolve().parents[2] / "systemd" / "mirrord-receiver.service"
        command = next(line.split("=", 1)[1] for line in unit.read_text().splitlines()
                       if line.startswith("ExecStart="))  # fmt: skip
        argv = shlex.split(command.replace("/etc/hapair/", f"{self.b_etc}/"))
        self.receiver_daemon = self.lab.spawn("b", argv, binds={"/srv": self.b_srv})
        probe = [
            sys.executable,
            "-c",
            f"import socket; socket.create_connection(('127.0.0.1', {self.tunnel_port}), 1)",
        ]
        if not wait_until(lambda: self.lab.run("b", probe, check=False).returncode == 0, 15, 0.1):
            raise RuntimeError(f"the receiver did not listen: {self.receiver_daemon.output()}")
        return self.receiver_daemon

    def sessions(self) -> int:
        """How many ssh sessions sshd in b has started (each push without the tunnel is one)."""
        return self.sshd.output().count("Starting session:")

    def ssh_options(self) -> list[str]:
        """ssh -o options mirrord gets in the lab (host key pinned)."""
        return [f"UserKnownHostsFile={self.known_hosts}", "StrictHostKeyChecking=yes"]

    def _daemon_answers(self) -> bool:
        if self.receiver == "rsyncd":
            return rsync_daemon_answers(self.lab, "a", self.key, self.ssh_options(), IPV4["b"])
        # mirrord.receive answers `true` with exit 0 (a connectivity check).
        argv = [*lab_ssh(self.key, self.ssh_options()), f"root@{IPV4['b']}", "true"]
        return self.lab.run("a", argv, check=False).returncode == 0

    # -- mirrord --------------------------------------------------------------------------

    def start(self, wrapper: str | None = None, env: Mapping[str, str] | None = None) -> LabProcess:
        """Start mirrord in a (optionally through a shell `wrapper` that ends in exec "$@")."""
        argv = [sys.executable, "-m", "mirrord", "-c", str(self.cluster), "--node", "a", "run",
                "--standalone"]  # fmt: skip
        for o in self.ssh_options():
            argv += ["--ssh-option", o]
        if wrapper:
            argv = ["sh", "-c", wrapper, "sh", *argv]
        with_status = self.a_run / "mirrord.json"
        with_status.unlink(missing_ok=True)
        self.mirrord = self.lab.spawn(
            "a", argv, binds={"/srv": self.a_srv, **self.extra_binds}, env=env
        )
        up = wait_until(lambda: self.status_doc() is not None or not self.mirrord_alive(),
                        timeout=30, interval=0.05)  # fmt: skip
        if not up or not self.mirrord_alive():
            raise RuntimeError(f"mirrord did not start: {self.mirrord.output()}")
        return self.mirrord

    def mirrord_alive(self) -> bool:
        """Whether the mirrord process runs."""
        return self.mirrord is not None and self.mirrord.alive()

    def stop(self) -> int:
        """Stop mirrord with SIGTERM (a clean shutdown)."""
        assert self.mirrord is not None
        return self.mirrord.stop(grace=30)

    def status_doc(self) -> dict[str, Any] | None:
        """The daemon's status file, or None."""
        try:
            doc: dict[str, Any] = json.loads((self.a_run / "mirrord.json").read_text())
        except (OSError, ValueError):
            return None
        return doc

    def dir_status(self, name: str) -> dict[str, Any]:
        """Live status of /srv/NAME from the control socket."""
        doc = control_request(self.a_run, {"cmd": "status"}, 30)
        for d in doc["directories"]:
            if d["directory"] == f"/srv/{name}":
                return dict(d)
        raise KeyError(name)

    def sync(self, name: str | None = None, full: bool = False) -> dict[str, Any]:
        """Request a pass and wait for its result."""
        req = {"cmd": "sync", "directory": f"/srv/{name}" if name else None, "full": full,
               "wait": True}  # fmt: skip
        reply: dict[str, Any] = control_request(self.a_run, req, 600)
        return reply

    # -- trees ----------------------------------------------------------------------------

    def src(self, name: str) -> Path:
        """/srv/NAME as node a sees it (host path)."""
        return self.a_srv / name

    def dst(self, name: str) -> Path:
        """/srv/NAME as node b sees it (host path)."""
        return self.b_srv / name

    def converge(self, name: str, timeout: float = 120.0, src: Path | None = None) -> bool:
        """Request passes until /srv/NAME on b matches a (metadata included)."""
        source = src or self.src(name)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if snapshot(source) == snapshot(self.dst(name)):
                return True
            self.sync(name)
            if snapshot(source) == snapshot(self.dst(name)):
                return True
            time.sleep(0.1)
        return False


def snapshot(root: Path, *, content: bool = False) -> dict[str, tuple[object, ...]]:
    """The root and every entry below it (backup area excluded) with type, mode, owner, size,
    mtime to the nanosecond, link target and hard-link group (the sorted names sharing its
    inode); with content, a regular file's SHA-256 too."""
    entries: dict[str, os.stat_result] = {}
    if not root.is_dir():
        return {}
    entries["."] = os.lstat(root)
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath == str(root):
            dirnames[:] = [d for d in dirnames if d != BACKUP_DIR]
        for name in (*dirnames, *filenames):
            p = os.path.join(dirpath, name)
            try:
                entries[os.path.relpath(p, root)] = os.lstat(p)
            except FileNotFoundError:
                # Gone while walking: a pass in flight (rsync's temp file, a replaced file).
                # The caller compares again; an assertion compares settled trees.
                continue
    groups: dict[int, list[str]] = {}
    for rel, st in entries.items():
        if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
            groups.setdefault(st.st_ino, []).append(rel)
    out: dict[str, tuple[object, ...]] = {}
    for rel, st in entries.items():
        link = os.readlink(root / rel) if stat.S_ISLNK(st.st_mode) else ""
        mtime = st.st_mtime_ns
        size = 0 if stat.S_ISDIR(st.st_mode) else st.st_size
        group = tuple(sorted(groups.get(st.st_ino, []))) if stat.S_ISREG(st.st_mode) else ()
        out[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                    size, mtime, link, group)  # fmt: skip
        if content and stat.S_ISREG(st.st_mode):
            try:
                out[rel] += (hashlib.sha256((root / rel).read_bytes()).hexdigest(),)
            except OSError:
                continue  # gone while reading, as above
    return out


def diff_r(a: Path, b: Path) -> subprocess.CompletedProcess[str]:
    """`diff -r --no-dereference` of two trees, ignoring the backup area."""
    return subprocess.run(["diff", "-r", "--no-dereference", "-x", BACKUP_DIR, str(a), str(b)],
                          capture_output=True, text=True, check=False)  # fmt: skip


def nsenter_mount(pid: int, *argv: str) -> None:
    """Run argv in process pid's mount namespace (to mount/unmount under mirrord)."""
    subprocess.run(["nsenter", f"--mount=/proc/{pid}/ns/mnt", *argv], check=True)


def quoted(argv: Sequence[str]) -> str:
    """Shell-quote argv (for wrappers)."""
    return shlex.join(argv)


def rsync_daemon_answers(
    lab: Lab, src: str, key: Path, ssh_options: Sequence[str], address: str
) -> bool:
    """Whether the mirror key, from node `src`, reaches the forced rsync daemon at `address`
    (it greets with "@RSYNCD:" before reading anything)."""
    argv = [*lab_ssh(key, ssh_options), f"root@{address}", "greet"]
    return lab.run(src, argv, check=False, input="").stdout.startswith("@RSYNCD:")


def lab_ssh(key: Path, ssh_options: Sequence[str]) -> list[str]:
    """Return ssh with the mirror key and the lab's options (host keys pinned)."""
    argv = ["ssh", "-i", str(key), "-o", "BatchMode=yes", "-o", "ConnectTimeout=2"]
    for o in ssh_options:
        argv += ["-o", o]
    return argv


def write_policies(etc: Path, policies: Sequence[Mapping[str, object]]) -> None:
    """Write the policies as ETC/mirror.d/lab.toml, one [[directory]] each."""
    (etc / "mirror.d").mkdir(exist_ok=True)
    body = []
    for p in policies:
        body.append("[[directory]]\n" + "".join(
            f"{k} = {toml_value(v)}\n" for k, v in p.items()))  # fmt: skip
    (etc / "mirror.d" / "lab.toml").write_text("\n".join(body))


def spawn_sshd(
    lab: Lab,
    node: str,
    etc: Path,
    *,
    host_key: Path,
    authorized_line: str,
    srv: Path,
    log_path: Path | None = None,
) -> LabProcess:
    """Start sshd in `node` (its /srv is `srv`) that lets in only `authorized_line`'s key, as
    the README sets up the receiving side; files go in `etc`."""
    authorized = etc / "authorized_keys"
    authorized.write_text(authorized_line)
    config = etc / "sshd_config"
    config.write_text(
        f"ListenAddress {IPV4[node]}\nPort 22\nHostKey {host_key}\n"
        f"PidFile {etc / 'sshd.pid'}\nAuthorizedKeysFile {authorized}\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPrintMotd no\n"
        "MaxSessions 64\nMaxStartups 64\nLogLevel VERBOSE\n"
        # The forced command (mirrord.receive) runs the code under test, as the daemons do.
        + (f"SetEnv PYTHONPATH={os.environ['PYTHONPATH']}\n" if "PYTHONPATH" in os.environ else "")
    )
    privsep = lab.node_dir(node, "privsep")
    privsep.chmod(0o755)
    # The mirror account's shell start-up runs for every session: keep it minimal, as README
    # asks of operators (this host's /root/.bashrc initialises pyenv, ~0.3 s per session).
    argv = [SSHD, "-D", "-e", "-f", str(config)]
    if Path("/root/.bashrc").is_file():
        empty = etc / "empty.bashrc"
        empty.write_text("")
        argv = ["sh", "-c", 'mount --bind "$0" /root/.bashrc && exec "$@"', str(empty),
                *argv]  # fmt: skip
    return lab.spawn(node, argv, binds={"/srv": srv, "/run/sshd": privsep}, log_path=log_path)
