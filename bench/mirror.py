"""`make bench-mirror`: mirrord against lsyncd and a full rsync pass, end to end, on the lab.

Node a pushes its /srv to node b's /srv over one sshd in b. mirrord's key is the one
`mirrord authorize` restricts to the forced rsync daemon; lsyncd (default.rsync) and the full
`rsync -a --delete` (the cron+rsync baseline) use a key that runs plain `rsync --server`. Every
tool gets its own ControlMaster connection.

What is timed is always the same thing: from the write on a until the change is on b (the
bench polls b's copy), never a tool's own account of its pass.

1. End to end on maildir-like trees (100 messages of 1 KB per directory) of 100k, 500k and 1M
   files: the same 10-file change (appends to 10 messages in 10 directories), after a quiet
   spell, with mirrord (class hot, one daemon per tree), lsyncd (delay 0) and a full rsync pass
   started right after the write (a cron job's wait for its next tick is not counted). The
   daemons' resident memory (VmRSS) after the samples.
2. Latency after a quiet spell in a small hot directory: one new file, mirrord vs lsyncd delay 0.
   `--parts anatomy` takes that path apart: one-file rsync commands run from node a, each
   adding one thing to the last, from lsyncd's (plain `rsync --server` on b) to mirrord's own
   (its options, the receiving daemon module, its push check, `setpriv`), then mirrord's
   command to a standing rsync daemon on b's loopback through an ssh forward (what a push
   would cost without its ssh session and receiving rsync's start: not mirrord's path),
   interleaved, each timed from the spawn to the file's arrival on b.
3. Trade-off: the same churn (new files at a fixed rate) for mirrord at several `min_interval`
   values and lsyncd at several `delay` values; per file change->peer time (p99 = the RPO p99)
   against the CPU seconds spent. Plotted to docs/mirror-tradeoff.png.

CPU: everything in the lab's nodes a and b, which run nothing but the tool under test (its
daemon, rsync, ssh and the ControlMaster on a; sshd, its sessions and the receiving rsync on b).
The bench sums utime+stime+cutime+cstime (/proc/PID/stat) over every process in the two network
namespaces before and after: a child that exits in between is in its parent's cutime/cstime.
A full rsync runs under `sh`, which reports its children's time before it exits.

Generated trees are cached outside the repository (HAPAIR_BENCH_CACHE, default
/var/tmp/hapair-bench) and moved into the lab and back. Prints a table, then one JSON line
(last); partial results go to CACHE/results.json as each part ends.
"""

from __future__ import annotations

import argparse
import compileall
import itertools
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from mirrord.rsyncd import module_name
from mirrord.transfer import Peer, TransferOptions, incremental_argv, with_parent_death
from tests.e2e.mirrorlab import MirrorPair, write_policies
from tests.lab.lab import IPV4, Lab, LabProcess, wait_until

CLK_TCK = os.sysconf("SC_CLK_TCK")
TREE_CACHE = Path(os.environ.get("HAPAIR_BENCH_CACHE", "/var/tmp/hapair-bench"))
PLOT = Path(__file__).resolve().parent.parent / "docs" / "mirror-tradeoff.png"


def make_tree(root: Path, files: int, per_dir: int = 100) -> None:
    """A maildir-like tree: files/per_dir mailboxes of `per_dir` small messages each."""
    body = ("Received: from mx.example.org\nSubject: bench\n\n" + "x" * 900 + "\n").encode()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    for d in range(files // per_dir):
        cur = f"{root}/user{d:05d}/cur"
        os.makedirs(cur)
        for i in range(per_dir):
            fd = os.open(f"{cur}/{message(d, i)}", flags, 0o644)
            os.write(fd, body)
            os.close(fd)


def message(d: int, i: int) -> str:
    """Name of message i in mailbox d."""
    return f"{1700000000 + i}.M{i}P{d}.host:2,S"


def cached_tree(files: int) -> Path:
    """TREE_CACHE/tNk with `src` (make_tree) and `dst` (its `cp -a` copy), made once.

    The 1M-file tree takes minutes to write: the bench moves these directories into the lab
    and back (same filesystem), so later runs reuse them. `.complete` marks a finished pair.
    """
    base = TREE_CACHE / f"t{files // 1000}k"
    if (base / ".complete").exists():
        return base
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    t0 = time.monotonic()
    make_tree(base / "src", files)
    subprocess.run(["cp", "-a", str(base / "src"), str(base / "dst")], check=True)
    (base / ".complete").touch()
    print(f"bench: tree {base}: {files} files in {time.monotonic() - t0:.1f}s", file=sys.stderr)
    return base


def ns_cpu(inodes: set[int]) -> float:
    """CPU seconds (utime+stime+cutime+cstime) of every process in the given network namespaces."""
    ticks = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}/ns/net").st_ino not in inodes:
                continue
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue  # gone meanwhile: its time is in its parent's cutime
        fields = stat.rsplit(")", 1)[1].split()
        # After the comm field: state is fields[0]; utime, stime, cutime, cstime are 11..14.
        ticks += sum(int(x) for x in fields[11:15])
    return ticks / CLK_TCK


def rss_mib(pid: int) -> float:
    """Resident memory (VmRSS) of pid in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def pct(values: Sequence[float], p: float) -> float:
    """The p-th percentile (nearest rank)."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s)) - 1))]


# -- reading "equal" off two measured frontiers --------------------------------------------


def frontier(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (cpu, rpo) points no other point beats on both, by increasing CPU."""
    out: list[tuple[float, float]] = []
    for cpu, rpo in sorted(points):
        if not out or rpo < out[-1][1]:
            out.append((cpu, rpo))
    return out


def interpolate(curve: Sequence[tuple[float, float]], x: float) -> float:
    """Piecewise-linear y at x on a curve sorted by x (x within its range)."""
    for (x0, y0), (x1, y1) in itertools.pairwise(curve):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    if len(curve) == 1 and curve[0][0] == x:
        return curve[0][1]
    raise ValueError(f"{x} outside {curve}")


def ratio_at_equal(
    mine: Sequence[tuple[float, float]], theirs: Sequence[tuple[float, float]]
) -> tuple[float, float] | None:
    """(worst, best) of mine(x) / theirs(x) over x where both measured curves are defined.

    The curves are piecewise linear through the measured points (sorted by x); x runs over the
    measured x of both curves that lie in the overlap of their x ranges. None without overlap.
    """
    a, b = sorted(mine), sorted(theirs)
    lo, hi = max(a[0][0], b[0][0]), min(a[-1][0], b[-1][0])
    if lo > hi:
        return None
    xs = sorted({x for x, _ in (*a, *b) if lo <= x <= hi})
    ratios = [interpolate(a, x) / interpolate(b, x) for x in xs]
    return max(ratios), min(ratios)


def equal_cpu_and_rpo(
    m: Sequence[tuple[float, float]], ls: Sequence[tuple[float, float]]
) -> dict[str, tuple[float, float] | None]:
    """mirrord/lsyncd RPO p99 at equal CPU, and CPU at equal RPO p99, from (cpu, rpo) points."""
    fm, fl = frontier(m), frontier(ls)
    return {
        "rpo_at_equal_cpu": ratio_at_equal(fm, fl),
        "cpu_at_equal_rpo": ratio_at_equal([(r, c) for c, r in fm], [(r, c) for c, r in fl]),
    }


class Bench:
    """One lab, one sshd in b, the tools in a, and the measurements."""

    def __init__(self, lab: Lab, args: argparse.Namespace) -> None:
        self.lab = lab
        self.args = args
        self.sizes = [int(s) for s in args.sizes.split(",") if s]
        self.intervals = [float(x) for x in args.min_intervals.split(",") if x]
        self.delays = [float(x) for x in args.delays.split(",") if x]
        # Every root the bench will use, so that `mirrord authorize` gives each a module on b;
        # each part then runs mirrord with its own roots only.
        roots = ["lat", *(f"t{n // 1000}k" for n in self.sizes)]
        roots += [f"churn-m{i}" for i in range(len(self.intervals))]
        self.pair = MirrorPair(lab, [{"path": f"/srv/{r}", "class": "hot"} for r in roots],
                               tunnel_port=args.tunnel_port)  # fmt: skip
        self.inodes = {os.stat(f"/run/netns/{lab.ns(n)}").st_ino for n in ("a", "b")}
        self.adopted: list[tuple[Path, Path]] = []
        self.seq = 0
        self.results: dict[str, Any] = {"sizes": {}, "tradeoff": {"mirrord": [], "lsyncd": []}}
        if args.resume:
            self.results = json.loads(args.resume.read_text())

    def cpu(self) -> float:
        """CPU seconds so far of everything in nodes a and b."""
        return ns_cpu(self.inodes)

    def save(self) -> None:
        TREE_CACHE.mkdir(parents=True, exist_ok=True)
        (TREE_CACHE / "results.json").write_text(json.dumps(self.results, indent=1))

    def root(self, name: str) -> None:
        """/srv/NAME on both nodes, alike, with 100 small files in it.

        Not empty: on an empty root main's `max_delete` ("50%" of the peer's tree at the
        start-up full pass) is 0, and every later pass ends in rsync's code 25 and is retried
        only at `max_interval` (issue 11, the guard), which would be measured instead.
        """
        src, dst = self.pair.src(name), self.pair.dst(name)
        for d in (src, dst):
            shutil.rmtree(d, ignore_errors=True)
        src.mkdir()
        for i in range(100):
            (src / f"seed{i:03d}").write_bytes(b"seed\n")
        subprocess.run(["cp", "-a", str(src), str(dst)], check=True)

    # -- trees ----------------------------------------------------------------------------

    def adopt(self, files: int) -> str:
        """Move the cached tree pair of `files` files in as /srv/tNk on a and b."""
        base, name = cached_tree(files), f"t{files // 1000}k"
        for side, root in (("src", self.pair.src(name)), ("dst", self.pair.dst(name))):
            if root.exists():
                root.rmdir()
            os.rename(base / side, root)
            self.adopted.append((base / side, root))
        return name

    def give_back(self) -> None:
        """Move the adopted trees back to the cache (they stay mirrors of each other)."""
        while self.adopted:
            cache, root = self.adopted.pop()
            if root.exists() and not cache.exists():
                os.rename(root, cache)

    # -- the tools ------------------------------------------------------------------------

    def mirrord(self, policies: list[dict[str, object]], timeout: float = 120) -> LabProcess:
        """(Re)start mirrord on a with these policies; return once the start-up passes ran."""
        if self.pair.mirrord_alive():
            self.pair.stop()
        write_policies(self.pair.etc, policies)
        proc = self.pair.start()
        for p in policies:
            name = str(p["path"]).removeprefix("/srv/")
            ok = wait_until(lambda name=name: not self.pair.dir_status(name)["full_needed"]
                            and not self.pair.dir_status(name)["running"],
                            timeout=timeout, interval=0.5)  # fmt: skip
            if not ok:
                raise RuntimeError(f"mirrord's start-up pass of {name} did not end")
        return proc

    def plain_key(self) -> Path:
        """A key for lsyncd and the full rsync without the forced command: they address a path
        (`host:/srv/...`), not a daemon module. Same sshd."""
        key = self.pair.etc / "plain_key"
        if not key.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                           check=True)  # fmt: skip
            pub = (self.pair.etc / "plain_key.pub").read_text().strip()
            with self.pair.authorized_keys.open("a") as f:
                f.write(f"restrict {pub}\n")
        return key

    def ssh(self, work: Path) -> list[str]:
        """ssh with the plain key and a ControlMaster in `work`."""
        argv = ["/usr/bin/ssh", "-i", str(self.plain_key()), "-o", "BatchMode=yes",
                "-o", "ControlMaster=auto", "-o", f"ControlPath={work}/ssh-%C",
                "-o", "ControlPersist=10m"]  # fmt: skip
        for o in self.pair.ssh_options():
            argv += ["-o", o]
        return argv

    def close_master(self, work: Path) -> None:
        """End the ControlMaster of `work` (idle masters would still be counted as the node's)."""
        self.lab.run("a", [*self.ssh(work), "-O", "exit", f"root@{IPV4['b']}"], check=False)

    def lsyncd(self, name: str, delay: float) -> LabProcess:
        """Start lsyncd (default.rsync, this delay) for /srv/NAME; return once it synced."""
        work = self.lab.node_dir("a", f"lsyncd-{name}")
        conf = work / "lsyncd.conf"
        conf.write_text(
            f'settings {{ nodaemon = true, logfile = "{work}/log", '
            f'statusFile = "{work}/status", insist = true }}\n'
            f'sync {{ default.rsync, source = "/srv/{name}", '
            f'target = "root@{IPV4["b"]}:/srv/{name}/", delay = {delay:g}, '
            f'rsync = {{ archive = true, rsh = "{" ".join(self.ssh(work))}" }} }}\n'
        )
        log = work / "log"
        log.unlink(missing_ok=True)
        proc = self.lab.spawn("a", ["lsyncd", str(conf)], binds={"/srv": self.pair.a_srv})
        # lsyncd's start-up full pass ends with this line in its log. (A probe file is no
        # sign: the start-up rsync may send it long before it has walked the rest.)
        done = f"Startup of /srv/{name}/ -> root@{IPV4['b']}:/srv/{name}/ finished."
        if not wait_until(lambda: log.exists() and done in log.read_text(), 1800, 0.1):
            raise RuntimeError(f"lsyncd did not sync: {proc.output()}")
        probe = f".probe{self.next_seq()}"
        (self.pair.src(name) / probe).write_text("p")
        if not wait_until((self.pair.dst(name) / probe).exists, timeout=600, interval=0.1):
            raise RuntimeError(f"lsyncd does not sync: {proc.output()}")
        return proc

    def stop_lsyncd(self, proc: LabProcess, name: str) -> None:
        proc.stop()
        self.close_master(self.lab.node_dir("a", f"lsyncd-{name}"))

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    # -- 1. end to end, 10 files, whole trees ---------------------------------------------

    def change(self, name: str, files: int) -> list[tuple[Path, Path]]:
        """Append a line to 10 messages in 10 mailboxes of /srv/NAME; return (src, dst) paths."""
        k, dirs = self.next_seq(), files // 100
        out = []
        for i in range(10):
            d, m = (k * 131 + i * 997) % dirs, (k + i) % 100
            rel = f"user{d:05d}/cur/{message(d, m)}"
            src = self.pair.src(name) / rel
            with src.open("ab") as f:
                f.write(b"edited %d\n" % k)
            out.append((src, self.pair.dst(name) / rel))
        return out

    @staticmethod
    def arrived(paths: list[tuple[Path, Path]]) -> bool:
        """Whether every changed file has its new size on b."""
        try:
            return all(s.stat().st_size == d.stat().st_size for s, d in paths)
        except FileNotFoundError:
            return False  # rsync's rename in flight

    def wait_arrival(self, paths: list[tuple[Path, Path]], t0: float, what: str) -> float:
        while not self.arrived(paths):
            time.sleep(0.0005)
            if time.monotonic() - t0 > self.args.arrival_timeout:
                raise RuntimeError(f"{what}: the change never arrived")
        return time.monotonic() - t0

    def e2e_daemon(self, name: str, files: int, what: str) -> dict[str, Any]:
        """Quiet spell, 10-file change, until on b; per sample seconds and CPU seconds."""
        lat, cpu = [], []
        for _ in range(self.args.samples):
            time.sleep(self.args.quiet)
            c0, t0 = self.cpu(), time.monotonic()
            paths = self.change(name, files)
            lat.append(self.wait_arrival(paths, t0, f"{what} {name}"))
            time.sleep(1.0)  # the tail of the pass (journal, status) is the tool's too
            cpu.append(self.cpu() - c0)
        return {"s": lat, "cpu_s": cpu}

    def e2e_full(self, name: str, files: int) -> dict[str, Any]:
        """10-file change, then a full `rsync -a --delete` of the tree right away."""
        work = self.lab.node_dir("a", "full-rsync")
        argv = ["rsync", "-a", "--delete", "-e", shlex.join(self.ssh(work)),
                f"/srv/{name}/", f"root@{IPV4['b']}:/srv/{name}/"]  # fmt: skip
        # sh waits for rsync (and rsync for its ssh), then reports their time: CLK_TCK ticks.
        script = 'rsync "$@"; rc=$?; cut -d" " -f16,17 /proc/$$/stat; exit $rc'
        run = ["sh", "-c", script, "full", *argv[1:]]

        def once() -> float:
            proc = self.lab.spawn("a", run, binds={"/srv": self.pair.a_srv})
            if proc.wait(3600) != 0:
                raise RuntimeError(f"full rsync of {name} failed: {proc.output()}")
            ticks = proc.output().split()[-2:]
            proc.stop()
            return sum(int(x) for x in ticks) / CLK_TCK

        once()  # the ControlMaster up, the page cache as warm as the daemons had it
        lat, cpu = [], []
        for _ in range(self.args.full_samples):
            time.sleep(self.args.quiet)
            c0, t0 = self.cpu(), time.monotonic()
            paths = self.change(name, files)
            children = once()
            lat.append(time.monotonic() - t0)
            if not self.arrived(paths):
                raise RuntimeError(f"full rsync of {name}: the change is not on b")
            cpu.append(self.cpu() - c0 + children)
        self.close_master(work)
        return {"s": lat, "cpu_s": cpu}

    def end_to_end(self, files: int) -> None:
        name = self.adopt(files)
        r: dict[str, Any] = self.results["sizes"].get(str(files), {})
        tools = self.args.e2e_tools.split(",")
        if "mirrord" in tools:
            self.e2e_mirrord(name, files, r)
        if "lsyncd" in tools:
            self.e2e_lsyncd(name, files, r)
        if "full" in tools:
            r["full"] = self.e2e_full(name, files)
        self.results["sizes"][str(files)] = r
        self.save()
        for who in tools:
            x = r[who]
            print(f"bench: {name} {who}: " + " ".join(f"{s:.3f}" for s in x["s"])
                  + " s; cpu " + " ".join(f"{c:.2f}" for c in x["cpu_s"])
                  + (f"; rss {x['rss_mib']:.1f} MiB" if "rss_mib" in x else ""),
                  file=sys.stderr)  # fmt: skip

    def e2e_mirrord(self, name: str, files: int, r: dict[str, Any]) -> None:
        t0 = time.monotonic()
        proc = self.mirrord([{"path": f"/srv/{name}", "class": "hot"}], 120 + files / 1000)
        r["mirrord_startup_s"] = time.monotonic() - t0
        r["mirrord"] = self.e2e_daemon(name, files, "mirrord")
        r["mirrord"]["rss_mib"] = rss_mib(proc.pid)
        self.pair.stop()

    def e2e_lsyncd(self, name: str, files: int, r: dict[str, Any]) -> None:
        t0 = time.monotonic()
        ls = self.lsyncd(name, 0)
        r["lsyncd_startup_s"] = time.monotonic() - t0
        r["lsyncd"] = self.e2e_daemon(name, files, "lsyncd")
        r["lsyncd"]["rss_mib"] = rss_mib(ls.pid)
        self.stop_lsyncd(ls, name)

    # -- 2. latency after a quiet spell, small hot directory ------------------------------

    def latency_sample(self, name: str) -> float:
        """A quiet spell, then one new file in /srv/NAME; seconds until it is on b."""
        time.sleep(self.args.quiet)
        fname = f"lat{self.next_seq()}"
        target = self.pair.dst(name) / fname
        t0 = time.monotonic()
        (self.pair.src(name) / fname).write_text(fname)
        while not target.exists():
            time.sleep(0.0005)
            if time.monotonic() - t0 > self.args.arrival_timeout:
                raise RuntimeError(f"latency sample of {name} never arrived")
        return time.monotonic() - t0

    def latency(self) -> None:
        """Both tools run at once, each on its own small root, and their samples alternate:
        a change in the machine's load (other work on the same cores) falls on both alike,
        where one tool's samples after the other's would each see another load."""
        self.root("lat")
        self.root("lat-lsyncd0")
        self.mirrord([{"path": "/srv/lat", "class": "hot"}])
        ls = self.lsyncd("lat-lsyncd0", 0)
        self.results["lat_mirrord"], self.results["lat_lsyncd0"] = [], []
        for _ in range(self.args.latency_samples):
            self.results["lat_mirrord"].append(self.latency_sample("lat"))
            self.results["lat_lsyncd0"].append(self.latency_sample("lat-lsyncd0"))
        self.pair.stop()
        self.stop_lsyncd(ls, "lat-lsyncd0")
        self.save()

    def anatomy(self) -> None:
        """One-file pushes from a, each variant one step nearer mirrord's command (ANATOMY)."""
        self.root("lat")
        work = self.lab.node_dir("a", "anatomy")
        conf = self.pair.b_etc / "rsyncd.conf"
        original = conf.read_text()
        mirror = Peer(
            "root",
            IPV4["b"],
            key=str(self.pair.key),
            control_path=f"{work}/mirror-%C",
            ssh_options=tuple(x for o in self.pair.ssh_options() for x in ("-o", o)),
        )
        plain = replace(mirror, key=str(self.plain_key()), control_path=f"{work}/plain-%C",
                        daemon=False)  # fmt: skip
        opts = TransferOptions(max_delete=100)
        checked = incremental_argv("/srv/lat", mirror, opts, time.time())
        unchecked = [*checked[:-1], f"{mirror.login}::{ANATOMY_MODULE}/"]
        variants = {
            "plain": ["rsync", "-a", "-I", "--files-from=-", "--from0", "--relative",
                      "-e", shlex.join(plain.ssh_argv()), "/srv/lat/", plain.target("/srv/lat")],
            "+ mirrord's options": incremental_argv("/srv/lat", plain, opts, time.time()),
            "+ daemon module": unchecked,
            "+ push check": checked,
            "+ setpriv (mirrord's command)": with_parent_death(checked)[0],
        }  # fmt: skip
        # Not mirrord's path, for what its per-push ssh session and receiving rsync's start cost:
        # the same command to a standing rsync daemon (the same modules and push check, rsync's
        # own authentication) on b's loopback, through an ssh forward.
        at = checked.index("-e")
        url, password = self.standing_receiver(work, original)
        standing = [*checked[:at], *checked[at + 2 : -1], "--sockopts=TCP_NODELAY",
                    f"--password-file={password}", url]  # fmt: skip
        variants[STANDING] = with_parent_death(standing)[0]
        spec = work / "anatomy.json"
        spec.write_text(json.dumps({"variants": variants, "samples": self.args.anatomy_samples,
                                    "quiet": self.args.quiet}))  # fmt: skip
        # The same root, without the push check: what the daemon module costs by itself.
        conf.write_text(f"{original}\n[{ANATOMY_MODULE}]\npath = /srv/lat\npre-xfer exec =\n")
        try:
            top = str(Path(__file__).resolve().parent.parent)
            proc = self.lab.spawn(
                "a", [sys.executable, "-m", "bench.mirror", "--anatomy-worker", str(spec)],
                binds={"/srv": self.pair.a_srv, ANATOMY_PEER: self.pair.b_srv},
                env={"PYTHONPATH": top},
            )  # fmt: skip
            if proc.wait(timeout=1800) != 0:
                raise RuntimeError(f"anatomy worker failed: {proc.output()}")
            self.results["anatomy"] = json.loads((work / "anatomy-out.json").read_text())
        finally:
            conf.write_text(original)
            for master in ("mirror", "plain"):
                for path in work.glob(f"{master}-*"):
                    self.lab.run("a", ["ssh", "-o", f"ControlPath={path}", "-O", "exit", "x"],
                                 check=False)  # fmt: skip
        self.save()

    def standing_receiver(self, work: Path, conf_text: str) -> tuple[str, Path]:
        """Start rsync's daemon in b on its loopback, with `conf_text`'s modules and rsync's
        authentication, and an ssh forward to it from a's loopback; return the lat root's URL
        for it and the password file. Nagle's algorithm is off on every hop (without, each push
        waited for delayed acknowledgements, 40 ms at a time): rsync's sockets by its options,
        and ssh's connection by a session on it (ssh sets TCP_NODELAY only then)."""
        port = STANDING_PORT
        secrets, password = self.pair.b_etc / "standing.secrets", work / "standing.password"
        for path, text in ((secrets, "hapair:bench-only\n"), (password, "bench-only\n")):
            path.write_text(text)
            path.chmod(0o600)
        head, _, modules = conf_text.partition("\n[")
        conf = self.pair.b_etc / "standing.conf"
        conf.write_text(
            f"{head}\naddress = 127.0.0.1\nport = {port}\nsocket options = TCP_NODELAY\n"
            f"auth users = hapair\nsecrets file = {secrets}\n\n[{modules}"
        )
        self.lab.spawn("b", ["rsync", "--daemon", "--no-detach", f"--config={conf}"],
                       binds={"/srv": self.pair.b_srv})  # fmt: skip
        key = work / "forward_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                       check=True)  # fmt: skip
        pub = (work / "forward_key.pub").read_text().strip()
        with self.pair.authorized_keys.open("a") as f:
            f.write(f'restrict,port-forwarding,permitopen="127.0.0.1:{port}",'
                    f'command="sleep 86400" {pub}\n')  # fmt: skip
        argv = ["ssh", "-i", str(key), "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes",
                "-L", f"127.0.0.1:{port}:127.0.0.1:{port}"]  # fmt: skip
        for o in self.pair.ssh_options():
            argv += ["-o", o]
        self.lab.spawn("a", [*argv, f"root@{IPV4['b']}", "session"])
        probe = [sys.executable, "-c",
                 f"import socket; socket.create_connection(('127.0.0.1', {port}), 1)"]  # fmt: skip
        if not wait_until(lambda: self.lab.run("a", probe, check=False).returncode == 0, 30, 0.2):
            raise RuntimeError("the forward to the standing rsync daemon did not come up")
        return f"rsync://hapair@127.0.0.1:{port}/{module_name('/srv/lat')}/", password

    # -- 3. the trade-off: RPO p99 against CPU under the same churn -----------------------

    def churn(self, name: str) -> dict[str, Any]:
        """Write new files at the configured rate; per file change->peer seconds, CPU seconds."""
        rate, seconds = self.args.churn_rate, self.args.churn_seconds
        written: dict[str, float] = {}
        arrived: dict[str, float] = {}
        done = threading.Event()
        dst = self.pair.dst(name)
        end = [float("inf")]

        def watch() -> None:
            while not done.is_set() or len(arrived) < len(written):
                now = time.monotonic()
                for e in os.scandir(dst):
                    if e.name.startswith("c") and e.name not in arrived:
                        arrived[e.name] = now
                time.sleep(0.02)
                if done.is_set() and now - end[0] > 120:
                    break

        watcher = threading.Thread(target=watch, daemon=True)
        c0 = self.cpu()
        watcher.start()
        start = time.monotonic()
        n = 0
        while (t := time.monotonic()) - start < seconds:
            due = start + n / rate
            if t < due:
                time.sleep(due - t)
            fname = f"c{n:06d}"
            (self.pair.src(name) / fname).write_bytes(b"churn %d\n" % n)
            written[fname] = time.monotonic()
            n += 1
        end[0] = time.monotonic()
        done.set()
        watcher.join(180)
        cpu = self.cpu() - c0
        lat = [arrived[k] - written[k] for k in written if k in arrived]
        if len(lat) < len(written):
            raise RuntimeError(f"{name}: {len(written) - len(lat)} files never arrived")
        return {"p50_s": pct(lat, 50), "p99_s": pct(lat, 99), "cpu_s": cpu, "files": n}

    def tradeoff(self) -> None:
        self.results["tradeoff"] = {"mirrord": [], "lsyncd": []}
        for i, mi in enumerate(self.intervals):
            name = f"churn-m{i}"
            self.root(name)
            policy: dict[str, object] = {"path": f"/srv/{name}", "class": "hot",
                                         "min_interval": f"{mi * 1000:g}ms"}  # fmt: skip
            if mi > 5:
                policy["interval"] = policy["min_interval"]
            self.mirrord([policy])
            r = {"min_interval_s": mi, **self.churn(name)}
            self.pair.stop()
            self.results["tradeoff"]["mirrord"].append(r)
            print(f"bench: churn mirrord min_interval {mi:g}s: {r}", file=sys.stderr)
            self.save()
        for i, delay in enumerate(self.delays):
            name = f"churn-l{i}"
            self.root(name)
            ls = self.lsyncd(name, delay)
            r = {"delay_s": delay, **self.churn(name)}
            self.stop_lsyncd(ls, name)
            self.results["tradeoff"]["lsyncd"].append(r)
            print(f"bench: churn lsyncd delay {delay:g}s: {r}", file=sys.stderr)
            self.save()

    def all_sizes(self) -> None:
        for n in self.sizes:
            self.end_to_end(n)

    # -- run ------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        parts: dict[str, Callable[[], None]] = {
            "latency": self.latency,
            "tradeoff": self.tradeoff,
            "e2e": self.all_sizes,
            "anatomy": self.anatomy,
        }
        try:
            for part in self.args.parts.split(","):
                parts[part]()
        finally:
            if self.pair.mirrord_alive():
                self.pair.stop()
            self.give_back()
        return self.results


# -- the report -----------------------------------------------------------------------------


# The tools the end-to-end part can measure (--e2e-tools), as the report names them.
LABELS = {
    "mirrord": "mirrord hot (median, CPU)",
    "lsyncd": "lsyncd delay 0",
    "full": "full rsync -a --delete",
}
TOOLS = tuple(LABELS)


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def plot(r: dict[str, Any], path: Path) -> None:
    """RPO p99 against CPU seconds, one curve per tool, each point labelled with its setting."""
    import matplotlib  # noqa: PLC0415  only the bench needs it (pip group bench)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    for who, key, label, style in (
        ("mirrord", "min_interval_s", "mirrord (hot), min_interval", "o-"),
        ("lsyncd", "delay_s", "lsyncd 2.2.3 (default.rsync), delay", "s--"),
    ):
        pts = sorted(r["tradeoff"][who], key=lambda p: p[key])  # the knob, turned
        if not pts:
            continue
        ax.plot([p["cpu_s"] for p in pts], [p["p99_s"] for p in pts], style, label=label)
        for p in pts:
            ax.annotate(f"{p[key]:g}s", (p["cpu_s"], p["p99_s"]), textcoords="offset points",
                        xytext=(4, 4), fontsize=8)  # fmt: skip
    ax.set_xlabel("CPU seconds (nodes a and b: daemon, rsync, ssh, sshd)")
    ax.set_ylabel("RPO p99: change -> peer (s)")
    ax.set_ylim(bottom=0)
    ax.set_xlim(left=0)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    ax.set_title(r.get("churn_title", "same churn"), fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def report(r: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Print the table and return the JSON document."""
    rows: list[tuple[str, str, str]] = []
    ratios: dict[str, float | None] = {}
    doc: dict[str, Any] = {"bench": "mirror", "ratio": ratios}
    e2e: dict[str, Any] = {}
    for n, s in sorted(r["sizes"].items(), key=lambda kv: int(kv[0])):
        # A run with --e2e-tools measures only some tools: report what it has.
        k = f"{int(n) // 1000}k"
        t = {w: (median(s[w]["s"]), median(s[w]["cpu_s"])) for w in TOOLS if w in s}
        row: dict[str, Any] = {"cpu_s": {w: round(c, 2) for w, (_, c) in t.items()}}
        m = t["mirrord"][0] if "mirrord" in t else None
        for w, (x, c) in t.items():
            label, shown = LABELS[w], f"{x * 1000:.0f} ms" if w != "full" else f"{x:.3f} s"
            note = f"CPU {c:.2f} s"
            if w != "full":
                note += f", RSS {s[w]['rss_mib']:.1f} MiB"
            if w == "mirrord":
                note += f", all: {' '.join(f'{y:.2f}' for y in s[w]['s'])} s"
                row["mirrord_samples_s"] = [round(y, 3) for y in s[w]["s"]]
            elif m is not None:
                note += (
                    f", mirrord/lsyncd {m / x:.2f}"
                    if w == "lsyncd"
                    else f", full/mirrord {x / m:.1f}x"
                )
            rows.append((f"{k} files, 10 changed: {label}", shown, note))
            row[f"{w}_s"] = round(x, 4 if w != "full" else 3)
        row["rss_mib"] = {w: round(s[w]["rss_mib"], 1) for w in ("mirrord", "lsyncd") if w in s}
        e2e[k] = row
    if {"full_s", "mirrord_s"} <= e2e.get("500k", {}).keys():
        ratios["e2e_full_over_mirrord_500k"] = round(
            e2e["500k"]["full_s"] / e2e["500k"]["mirrord_s"], 1
        )
    if "lat_mirrord" in r:
        lm, l0 = median(r["lat_mirrord"]), median(r["lat_lsyncd0"])
        rows.append(
            (
                "1 new file after a quiet spell, small hot dir: mirrord",
                f"{lm * 1000:.0f} ms",
                f"lsyncd delay 0: {l0 * 1000:.0f} ms, ratio {lm / l0:.2f}",
            )
        )
        ratios["latency_vs_lsyncd_delay0"] = round(lm / l0, 2)
        doc["latency_ms"] = {"mirrord": round(lm * 1000, 1), "lsyncd_delay0": round(l0 * 1000, 1)}
    if "anatomy" in r:
        meds = {k: median(v) * 1000 for k, v in r["anatomy"].items()}
        before = None
        for k, ms in meds.items():
            step = "" if before is None else f", {ms - before:+.1f} ms"
            rows.append((f"one-file push, spawn to arrival: {k}", f"{ms:.1f} ms",
                         f"median of {len(r['anatomy'][k])}{step}"))  # fmt: skip
            before = ms
        doc["anatomy_ms"] = {k: round(ms, 1) for k, ms in meds.items()}
    m_pts = [(p["cpu_s"], p["p99_s"]) for p in r["tradeoff"]["mirrord"]]
    l_pts = [(p["cpu_s"], p["p99_s"]) for p in r["tradeoff"]["lsyncd"]]
    churn = f"churn {args.churn_rate} new files/s for {args.churn_seconds} s"
    for who, key in (("mirrord", "min_interval_s"), ("lsyncd", "delay_s")):
        for p in r["tradeoff"][who]:
            rows.append(
                (
                    f"{churn}: {who} {key.removesuffix('_s')} {p[key]:g}s",
                    f"p99 {p['p99_s']:.2f} s",
                    f"p50 {p['p50_s']:.2f} s, CPU {p['cpu_s']:.1f} s",
                )
            )
    if m_pts and l_pts:
        eq = equal_cpu_and_rpo(m_pts, l_pts)
        rpo, cpu = eq["rpo_at_equal_cpu"], eq["cpu_at_equal_rpo"]
        ratios["rpo_p99_vs_lsyncd_at_equal_cpu"] = round(rpo[0], 2) if rpo else None
        ratios["cpu_vs_lsyncd_at_equal_rpo"] = round(cpu[0], 2) if cpu else None
        doc["equal_range"] = {
            "rpo_at_equal_cpu": [round(x, 2) for x in rpo] if rpo else None,
            "cpu_at_equal_rpo": [round(x, 2) for x in cpu] if cpu else None,
        }
        r["churn_title"] = churn
        plot(r, PLOT)
        doc["plot"] = str(PLOT.relative_to(PLOT.parent.parent))
    hot = [p for p in r["tradeoff"]["mirrord"] if p["min_interval_s"] == 1.0]
    if hot:
        doc["rpo_p99_s"] = round(hot[0]["p99_s"], 3)
    if {"mirrord_s", "lsyncd_s"} <= e2e.get("1000k", {}).keys():
        ratios["latency_vs_lsyncd_1m"] = round(
            e2e["1000k"]["mirrord_s"] / e2e["1000k"]["lsyncd_s"], 2
        )
        # From the measured figures, not the row's (rounded to 0.1 MiB: 25.57 / 17.14 read
        # as 25.6 / 17.1 gave 1.50 for 1.49).
        rss = {w: r["sizes"]["1000000"][w]["rss_mib"] for w in ("mirrord", "lsyncd")}
        ratios["rss_vs_lsyncd_1m"] = round(rss["mirrord"] / rss["lsyncd"], 2)
    doc["e2e"] = e2e
    doc["tradeoff"] = {
        w: [
            {k: round(v, 3) if isinstance(v, float) else v for k, v in p.items()}
            for p in r["tradeoff"][w]
        ]
        for w in ("mirrord", "lsyncd")
    }
    width = max((len(x[0]) for x in rows), default=0)
    for label, value, note in rows:
        print(f"{label:<{width}}  {value:>12}  {note}")
    return doc


# The anatomy's module without the push check, and where node a sees b's /srv.
ANATOMY_MODULE = "bench-anatomy"
ANATOMY_PEER = "/peer-srv"
# The anatomy's last variant (not mirrord's path), and its port on both nodes' loopback.
STANDING = "standing receiver via a forward (not mirrord's)"
STANDING_PORT = 8730


def anatomy_worker(spec_path: Path) -> None:
    """In node a: run each variant with one new file per sample, interleaved (a change in the
    machine's load falls on all alike), a round first to open the ControlMasters; time each
    from the spawn until the file is on b; write the seconds next to the spec."""
    spec = json.loads(spec_path.read_text())
    variants: dict[str, list[str]] = spec["variants"]
    out: dict[str, list[float]] = {k: [] for k in variants}
    for i in range(spec["samples"] + 1):
        for j, (k, argv) in enumerate(variants.items()):
            time.sleep(spec["quiet"])
            name = f"anatomy-{i}-{j}"
            Path("/srv/lat", name).write_text(name)
            arrived = Path(ANATOMY_PEER, "lat", name)
            t0 = time.monotonic()
            p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE)  # fmt: skip
            assert p.stdin is not None and p.stderr is not None
            p.stdin.write(name.encode() + b"\0")
            p.stdin.close()
            while not arrived.exists():
                time.sleep(0.0002)
                if time.monotonic() - t0 > 30:
                    raise RuntimeError(f"{k}: never arrived: {p.stderr.read()!r}")
            took = time.monotonic() - t0
            if p.wait() != 0:
                raise RuntimeError(f"{k}: rsync exit {p.returncode}: {p.stderr.read()!r}")
            if i > 0:
                out[k].append(took)
    (spec_path.parent / "anatomy-out.json").write_text(json.dumps(out))


def compile_daemons() -> None:
    """Byte-compile hapair's packages, as the Debian package's postinst does: a daemon that
    compiles its modules at every start (PYTHONDONTWRITEBYTECODE, a read-only tree) keeps the
    compiler's leftovers resident, about 3 MiB that no installed mirrord carries."""
    top = Path(__file__).resolve().parent.parent
    for package in ("mirrord", "takeover"):
        compileall.compile_dir(top / package, quiet=1)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark on a fresh lab and print the table and the JSON line."""
    p = argparse.ArgumentParser(prog="bench.mirror", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--sizes", default="100000,500000,1000000")
    p.add_argument("--samples", type=int, default=5, help="10-file changes per tool and size")
    p.add_argument("--full-samples", type=int, default=3, help="full rsync passes per size")
    p.add_argument("--quiet", type=float, default=3.0, help="quiet spell before a change (s)")
    p.add_argument("--latency-samples", type=int, default=8)
    p.add_argument("--churn-rate", type=int, default=200)
    p.add_argument("--churn-seconds", type=int, default=30)
    p.add_argument("--min-intervals", default="0.25,0.5,1,2,5", help="mirrord's, seconds")
    p.add_argument("--delays", default="0,1,2,5,10", help="lsyncd's, seconds")
    p.add_argument("--arrival-timeout", type=float, default=300.0)
    p.add_argument("--anatomy-samples", type=int, default=20)
    p.add_argument("--anatomy-worker", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--parts", default="e2e,latency,tradeoff", help="also: anatomy")
    p.add_argument("--e2e-tools", default="mirrord,lsyncd,full")
    p.add_argument("--tunnel-port", type=int, default=0,
                   help="mirrord's [mirror] tunnel_port (b runs the standing daemon)")  # fmt: skip
    p.add_argument("--resume", type=Path, help="start from this results.json (parts re-run)")
    p.add_argument("--report-only", type=Path, help="re-read a results.json, print, plot")
    args = p.parse_args(argv)
    if args.anatomy_worker:
        anatomy_worker(args.anatomy_worker)
        return 0
    if args.report_only:
        results = json.loads(args.report_only.read_text())
    else:
        compile_daemons()
        with Lab() as lab:
            results = Bench(lab, args).run()
    print(json.dumps(report(results, args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
