"""`make bench-mirror`: mirrord against a full rsync pass and against lsyncd, on the lab.

Everything runs over the same ssh set-up (sshd in node b, a ControlMaster connection): node a
pushes its /srv to node b's /srv. mirrord's key is the one `mirrord authorize` restricts to the
forced rsync daemon (its modules); lsyncd's key runs plain `rsync --server`.

1. Pass cost: on maildir-like trees of 100k and 500k small files, mirrord's pass for a 10-file
   change (its own start-to-end, from the journal) against a no-change `rsync -a --delete` of the
   whole tree (the scan every periodic mirror pays). Ratio = full / mirrord.
2. Latency: a file written in a `hot` directory after a quiet spell, until it is on b:
   mirrord (class hot) vs lsyncd (default.rsync, delay 0 and its default delay).
3. Sustained churn: new files at a fixed rate for a while; per-file change->peer time p50/p99
   (the RPO a crash at a random moment would lose) and CPU seconds of the daemon and its
   children (rsync, ssh client), mirrord vs lsyncd delay 0.

Prints a table, then one JSON line (last). Options: --sizes 100000,500000 --churn-rate 200
--churn-seconds 60 --latency-samples 8.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from mirrord.journal import Journal
from mirrord.transfer import Peer, TransferOptions, full_argv
from tests.e2e.mirrorlab import MirrorPair
from tests.lab.lab import IPV4, Lab, LabProcess, wait_until

CLK_TCK = os.sysconf("SC_CLK_TCK")


def make_tree(root: Path, files: int, per_dir: int = 100) -> None:
    """A maildir-like tree: files/per_dir mailboxes of `per_dir` small messages each."""
    body = ("Received: from mx.example.org\nSubject: bench\n\n" + "x" * 900 + "\n").encode()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    for d in range(files // per_dir):
        cur = f"{root}/user{d:05d}/cur"
        os.makedirs(cur)
        for i in range(per_dir):
            fd = os.open(f"{cur}/{1700000000 + i}.M{i}P{d}.host:2,S", flags, 0o644)
            os.write(fd, body)
            os.close(fd)


def cpu_seconds(pid: int) -> float:
    """utime + stime of pid and its waited-for children, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the comm field: state is fields[0]; utime, stime, cutime, cstime are 11..14.
    return sum(int(x) for x in fields[11:15]) / CLK_TCK


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank)."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s)) - 1))]


class Bench:
    """One lab, one sshd, the trees, and the measurements."""

    def __init__(self, lab: Lab, args: argparse.Namespace) -> None:
        self.lab = lab
        self.args = args
        self.sizes = [int(s) for s in args.sizes.split(",")]
        policies: list[dict[str, object]] = [
            {"path": f"/srv/t{n // 1000}k", "class": "warm", "max_delete": "50%"}
            for n in self.sizes
        ]
        policies += [{"path": "/srv/lat", "class": "hot"}, {"path": "/srv/churn", "class": "hot"}]
        self.pair = MirrorPair(lab, policies)
        for name in ("lat-lsyncd0", "lat-lsyncd", "churn-lsyncd"):
            self.pair.src(name).mkdir()
            self.pair.dst(name).mkdir()
        self.results: dict[str, Any] = {}

    # -- pass cost ------------------------------------------------------------------------

    def trees(self) -> None:
        for n in self.sizes:
            name = f"t{n // 1000}k"
            src, dst = self.pair.src(name), self.pair.dst(name)
            t0 = time.monotonic()
            make_tree(src, n)
            # The mirror starts identical (as after mirrord's first full pass).
            shutil.rmtree(dst)
            subprocess.run(["cp", "-a", str(src), str(dst)], check=True)
            print(f"bench: tree {name}: {n} files in {time.monotonic() - t0:.1f}s",
                  file=sys.stderr)  # fmt: skip

    def full_rsync_seconds(self, name: str) -> float:
        """Wall time of a no-change `rsync -a --delete` of /srv/NAME over the same ssh."""
        opts = tuple(x for o in self.pair.ssh_options() for x in ("-o", o))
        control = str(self.pair.a_run / "bench-ssh-%C")
        peer = Peer("root", IPV4["b"], key=str(self.pair.key), control_path=control,
                    ssh_options=opts)  # fmt: skip
        argv = full_argv(f"/srv/{name}", peer, TransferOptions(backup=False), time.time())
        script = 'TIMEFORMAT=%R; { time "$@" >/dev/null; } 2>&1 | tail -1'
        proc = self.lab.spawn("a", ["bash", "-c", script, "bench", *argv],
                              binds={"/srv": self.pair.a_srv})  # fmt: skip
        proc.wait(600)
        return float(proc.output().strip().splitlines()[-1])

    def mirrord_pass_seconds(self, name: str, files: int) -> float:
        """mirrord's pass time for 10 changed files of /srv/NAME (journal start-to-end).

        The first change after a quiet spell starts a pass at once, so the 10 changes may be
        split over two passes: their durations are summed.
        """
        src = self.pair.src(name)
        t0 = time.time()
        for i in range(10):
            msg = next((src / f"user{(i * 7) % (files // 100):05d}" / "cur").iterdir())
            msg.write_bytes(msg.read_bytes() + b"edited\n")
        wait_until(lambda: self.pair.dir_status(name)["dirty"] >= 10
                   or self.pair.dir_status(name)["running"], timeout=10)  # fmt: skip
        self.pair.sync(name)
        recs = [r for r in Journal(self.pair.a_state).history(f"/srv/{name}", 10)
                if r.started >= t0]  # fmt: skip
        assert recs and all(r.result == "ok" and r.ended for r in recs), recs
        return sum((r.ended or 0.0) - r.started for r in recs)

    def pass_cost(self) -> None:
        for n in self.sizes:
            name = f"t{n // 1000}k"
            self.full_rsync_seconds(name)  # warm the ControlMaster and the page cache
            full = statistics.median(self.full_rsync_seconds(name) for _ in range(3))
            inc = statistics.median(self.mirrord_pass_seconds(name, n) for _ in range(5))
            self.results[f"full_{name}"] = full
            self.results[f"pass_{name}"] = inc
            print(f"bench: {name}: full {full:.3f}s mirrord 10-file pass {inc:.3f}s",
                  file=sys.stderr)  # fmt: skip

    # -- lsyncd ---------------------------------------------------------------------------

    def lsyncd_key(self) -> Path:
        """A second key for lsyncd, without the forced command: default.rsync addresses a path
        (`host:/srv/...`), not a daemon module. Same sshd, same ControlMaster set-up."""
        key = self.pair.etc / "lsyncd_key"
        if not key.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                           check=True)  # fmt: skip
            pub = (self.pair.etc / "lsyncd_key.pub").read_text().strip()
            with self.pair.authorized_keys.open("a") as f:
                f.write(f"restrict {pub}\n")
        return key

    def lsyncd(self, name: str, delay: int | None) -> LabProcess:
        """Start lsyncd (default.rsync over the same ssh, ControlMaster) for /srv/NAME."""
        work = self.lab.node_dir("a", f"lsyncd-{name}")
        ssh = ["/usr/bin/ssh", "-i", str(self.lsyncd_key()), "-o", "BatchMode=yes",
               "-o", "ControlMaster=auto", "-o", f"ControlPath={work}/ssh-%C",
               "-o", "ControlPersist=10m"]  # fmt: skip
        for o in self.pair.ssh_options():
            ssh += ["-o", o]
        delay_line = "" if delay is None else f"delay = {delay},"
        conf = work / "lsyncd.conf"
        conf.write_text(
            f'settings {{ nodaemon = true, logfile = "{work}/log", '
            f'statusFile = "{work}/status", insist = true }}\n'
            f'sync {{ default.rsync, source = "/srv/{name}", '
            f'target = "root@{IPV4["b"]}:/srv/{name}/", {delay_line} '
            f'rsync = {{ archive = true, rsh = "{" ".join(ssh)}" }} }}\n'
        )
        proc = self.lab.spawn("a", ["lsyncd", str(conf)], binds={"/srv": self.pair.a_srv})
        # lsyncd's start-up full pass: wait until a probe file arrives.
        probe = self.pair.src(name) / ".probe"
        probe.write_text("p")
        if not wait_until((self.pair.dst(name) / ".probe").exists, timeout=60):
            raise RuntimeError(f"lsyncd did not sync: {proc.output()}")
        return proc

    # -- latency --------------------------------------------------------------------------

    def latency(self, name: str, samples: int, gap: float) -> list[float]:
        """Seconds from writing a file in /srv/NAME on a to seeing it on b."""
        out = []
        for i in range(samples):
            time.sleep(gap)  # a quiet spell: the first change after it is measured
            target = self.pair.dst(name) / f"lat{i}"
            t0 = time.monotonic()
            (self.pair.src(name) / f"lat{i}").write_text(str(i))
            while not target.exists():
                time.sleep(0.0005)
                if time.monotonic() - t0 > 120:
                    raise RuntimeError(f"latency sample {i} of {name} never arrived")
            out.append(time.monotonic() - t0)
        return out

    # -- churn ----------------------------------------------------------------------------

    def churn(self, name: str, pid: int) -> tuple[list[float], float]:
        """Write files at the configured rate; return per-file change->peer times and CPU s."""
        rate, seconds = self.args.churn_rate, self.args.churn_seconds
        written: dict[str, float] = {}
        arrived: dict[str, float] = {}
        done = threading.Event()
        dst = self.pair.dst(name)

        def watch() -> None:
            while not done.is_set() or len(arrived) < len(written):
                now = time.monotonic()
                for e in os.scandir(dst):
                    if e.name.startswith("c") and e.name not in arrived:
                        arrived[e.name] = now
                time.sleep(0.02)
                if done.is_set() and now - end > 120:
                    break

        end = float("inf")
        watcher = threading.Thread(target=watch, daemon=True)
        cpu0 = cpu_seconds(pid)
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
        end = time.monotonic()
        done.set()
        watcher.join(180)
        cpu = cpu_seconds(pid) - cpu0
        lat = [arrived[k] - written[k] for k in written if k in arrived]
        missing = len(written) - len(lat)
        if missing:
            print(f"bench: {name}: {missing} files never arrived", file=sys.stderr)
        return lat, cpu

    # -- run ------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        self.trees()
        mirrord = self.pair.start()
        for n in self.sizes:
            name = f"t{n // 1000}k"
            wait_until(lambda name=name: not self.pair.dir_status(name)["full_needed"]
                       and not self.pair.dir_status(name)["running"], timeout=1800)  # fmt: skip
        self.pass_cost()
        a = self.args
        self.results["lat_mirrord"] = self.latency("lat", a.latency_samples, 6.0)
        lat, cpu = self.churn("churn", mirrord.pid)
        self.results["churn_mirrord"], self.results["cpu_mirrord"] = lat, cpu
        self.pair.stop()
        ls0 = self.lsyncd("lat-lsyncd0", 0)
        self.results["lat_lsyncd0"] = self.latency("lat-lsyncd0", a.latency_samples, 6.0)
        ls0.stop()
        lsd = self.lsyncd("lat-lsyncd", None)
        self.results["lat_lsyncd"] = self.latency("lat-lsyncd", min(3, a.latency_samples), 1.0)
        lsd.stop()
        lsc = self.lsyncd("churn-lsyncd", 0)
        lat, cpu = self.churn("churn-lsyncd", lsc.pid)
        self.results["churn_lsyncd"], self.results["cpu_lsyncd"] = lat, cpu
        lsc.stop()
        return self.results


def report(r: dict[str, Any], sizes: list[int], args: argparse.Namespace) -> dict[str, Any]:
    """Print the table and return the JSON document."""
    rows = []
    ratios: dict[str, float] = {}
    for n in sizes:
        name = f"t{n // 1000}k"
        ratio = r[f"full_{name}"] / r[f"pass_{name}"]
        ratios[f"full_scan_over_pass_{n // 1000}k"] = round(ratio, 1)
        rows.append((f"{n // 1000}k files: full rsync -a --delete (no change)",
                     f"{r[f'full_{name}']:.3f} s", ""))  # fmt: skip
        rows.append((f"{n // 1000}k files: mirrord pass, 10 files changed",
                     f"{r[f'pass_{name}']:.3f} s", f"ratio {ratio:.0f}x"))  # fmt: skip
    lat_m, lat_0 = statistics.median(r["lat_mirrord"]), statistics.median(r["lat_lsyncd0"])
    lat_d = statistics.median(r["lat_lsyncd"])
    rows.append(("latency change->peer, hot: mirrord (median)", f"{lat_m * 1000:.0f} ms", ""))
    rows.append(("latency change->peer: lsyncd delay 0 (median)", f"{lat_0 * 1000:.0f} ms",
                 f"mirrord/lsyncd {lat_m / lat_0:.2f}"))  # fmt: skip
    rows.append(("latency change->peer: lsyncd default delay", f"{lat_d:.1f} s", ""))
    cm, cl = r["churn_mirrord"], r["churn_lsyncd"]
    churn = f"{args.churn_rate}/s for {args.churn_seconds}s"
    for who, lat, cpu in (
        ("mirrord", cm, r["cpu_mirrord"]),
        ("lsyncd delay 0", cl, r["cpu_lsyncd"]),
    ):
        rows.append((f"churn {churn}: {who} change->peer p50/p99",
                     f"{pct(lat, 50):.2f} / {pct(lat, 99):.2f} s", f"CPU {cpu:.1f} s"))  # fmt: skip
    width = max(len(x[0]) for x in rows)
    for label, value, note in rows:
        print(f"{label:<{width}}  {value:>14}  {note}")
    ratios["latency_vs_lsyncd_delay0"] = round(lat_m / lat_0, 2)
    ratios["cpu_vs_lsyncd_churn"] = round(r["cpu_mirrord"] / max(r["cpu_lsyncd"], 1e-9), 2)
    return {
        "bench": "mirror",
        "ratio": ratios,
        "rpo_p50_s": round(pct(cm, 50), 3),
        "rpo_p99_s": round(pct(cm, 99), 3),
        "lsyncd_rpo_p99_s": round(pct(cl, 99), 3),
        "latency_ms": {"mirrord": round(lat_m * 1000, 1), "lsyncd_delay0": round(lat_0 * 1000, 1)},
        "cpu_s": {"mirrord": round(r["cpu_mirrord"], 2), "lsyncd": round(r["cpu_lsyncd"], 2)},
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark on a fresh lab and print the table and the JSON line."""
    p = argparse.ArgumentParser(prog="bench.mirror", description=__doc__)
    p.add_argument("--sizes", default="100000,500000")
    p.add_argument("--churn-rate", type=int, default=200)
    p.add_argument("--churn-seconds", type=int, default=60)
    p.add_argument("--latency-samples", type=int, default=8)
    args = p.parse_args(argv)
    with Lab() as lab:
        bench = Bench(lab, args)
        results = bench.run()
    doc = report(results, bench.sizes, args)
    print(json.dumps(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
