"""`takeover witness`: the third vote for any number of pairs, on any small host.

One UDP socket serves every cluster of the witness file, each with its own key. Requests are
decoded, authenticated and de-duplicated by `takeover.witnesswire` (forged, replayed,
unknown-cluster and unknown-node requests are dropped and counted), the lease rules are
`takeover.lease`'s (pure), and every answer is signed with the cluster's key. The status
file (`RUN_DIR/witness.json`) is rewritten every second; `takeover witness status` reads it.

The witness file:

    [witness]
    address = "0.0.0.0"            # where to listen (IPv4 or IPv6)
    port = 7406
    run_dir = "/run/takeover-witness"

    [[cluster]]
    name = "mail"                  # the cluster file's [cluster] name
    nodes = ["alpha", "beta"]      # its two node names
    key_file = "/etc/hapair/witness-mail.key"   # the nodes' [witness] key_file
    max_lease = "30s"              # longest lease granted; a restart grants nothing this long
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import re
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from takeover import lease
from takeover.config import NAME_RE, NAME_WHAT
from takeover.configparse import ConfigError, IPAddress, Problems, Table, read_toml
from takeover.daemon import SdNotify, watchdog_period
from takeover.heartbeat import KeyFileError, load_key
from takeover.lease import Verdict
from takeover.status import process_start, remove_status, write_status
from takeover.witnesswire import Reply, Request, WitnessReceiver, encode_reply

log = logging.getLogger(__name__)

DEFAULT_WITNESS_CONFIG: Final = Path("/etc/hapair/witness.toml")
DEFAULT_RUN_DIR: Final = "/run/takeover-witness"
STATUS_NAME: Final = "witness.json"
STATUS_INTERVAL: Final = 1.0
MAX_DATAGRAM: Final = 2048
# Requests read per loop turn (level-triggered: a flood leaves the rest for the next turn).
MAX_PER_TURN: Final = 64


@dataclass(frozen=True)
class ServedCluster:
    """One pair the witness serves."""

    # The cluster file's [cluster] name.
    name: str
    # Its two node names.
    nodes: tuple[str, str]
    # The key shared with the nodes' [witness] key_file (absolute path).
    key_file: Path
    # Longest lease granted; also how long a restarted witness grants nothing.
    max_lease: float = 30.0


@dataclass(frozen=True)
class WitnessFile:
    """The witness file, validated."""

    source: Path
    address: IPAddress
    port: int
    run_dir: Path
    clusters: tuple[ServedCluster, ...]


def load_witness(path: str | os.PathLike[str]) -> WitnessFile:
    """Read and validate a witness file; raise ConfigError naming file and key of each problem."""
    source = Path(path).absolute()
    label = source.name
    problems = Problems(label)
    root = Table(read_toml(source, label), "", problems)
    t = root.table("witness")
    if t is None:
        t = Table({}, "witness", problems)
    # The unspecified address listens on every interface (Table.address wants unicast).
    raw = t.raw("address") if t.has("address") else None
    unspecified = raw in ("0.0.0.0", "::")
    address = ipaddress.ip_address(str(raw)) if unspecified else None
    if t.has("address") and not unspecified:
        address = t.address("address")
    port = t.integer("port", 7406, lo=1, hi=65535)
    run_dir = t.path("run_dir", DEFAULT_RUN_DIR)
    t.finish()
    clusters: list[ServedCluster] = []
    tables = root.tables("cluster")
    if not tables and not problems.bad("cluster"):
        problems.add("cluster", "at least one [[cluster]] is required")
    for c in tables:
        name = c.string("name", pattern=NAME_RE, what=NAME_WHAT)
        nodes = c.strings("nodes", nonempty=True)
        if not c.bad("nodes") and (len(nodes) != 2 or nodes[0] == nodes[1]):
            c.problem("nodes", f"must be the pair's two node names, got {list(nodes)}")
        for i, n in enumerate(nodes):
            if re.fullmatch(NAME_RE, n) is None:
                c.problem(f"nodes[{i}]", f'must be {NAME_WHAT}, got "{n}"')
        key_file = c.path("key_file")
        max_lease = c.duration("max_lease", 30.0, positive=True)
        c.finish()
        if name and any(s.name == name for s in clusters):
            c.problem("name", f'cluster "{name}" is served twice')
        pair = (nodes[0], nodes[1]) if len(nodes) == 2 else ("", "")
        clusters.append(ServedCluster(name, pair, key_file, max_lease))
    root.finish()
    problems.raise_if_any()
    return WitnessFile(
        source=source,
        address=address if address is not None else ipaddress.ip_address("0.0.0.0"),
        port=port,
        run_dir=run_dir,
        clusters=tuple(clusters),
    )


def load_keys(w: WitnessFile) -> dict[str, bytes]:
    """Read every cluster's key by the heartbeat key's rules; ConfigError names each bad one."""
    keys, lines = {}, []
    for i, c in enumerate(w.clusters):
        try:
            keys[c.name] = load_key(c.key_file)
        except KeyFileError as err:
            lines.append(f"{w.source.name}: cluster[{i}].key_file: {err}")
    if lines:
        raise ConfigError(lines)
    return keys


class Witness:
    """The witness daemon: answer every authentic, fresh request by the lease rules."""

    def __init__(
        self,
        w: WitnessFile,
        keys: dict[str, bytes],
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        notifier: SdNotify | None = None,
    ) -> None:
        """Serve the clusters of `w` with their `keys`; nothing is opened before `run`."""
        self.w = w
        self.clock = clock
        self.wall = wall
        self.keys = keys
        self.notifier = notifier or SdNotify.from_env()
        now = clock()
        self.clusters = {c.name: c for c in w.clusters}
        # Started now: each cluster grants nothing for its max_lease (takeover.lease).
        self.leases = {c.name: lease.new_cluster(c.max_lease, now) for c in w.clusters}
        self.receiver = WitnessReceiver(keys, {c.name: c.nodes for c in w.clusters})
        self.boot_id = os.urandom(16)
        self.seq = int(wall() * 1e6)
        self.answered = 0
        self.send_errors = 0
        self.sock: socket.socket | None = None
        self.stop = asyncio.Event()

    def open(self) -> None:
        """Bind the socket."""
        family = socket.AF_INET6 if self.w.address.version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((str(self.w.address), self.w.port))
        sock.setblocking(False)
        self.sock = sock

    def handle(self, data: bytes, source: Any) -> bytes | None:
        """Return the signed answer to one datagram, or None when it is dropped (counted)."""
        got = self.receiver.receive(data)
        if not isinstance(got, Request):
            log.debug("witness.drop reason=%s source=%s", got.value, source)
            return None
        c = self.clusters[got.cluster]
        other = c.nodes[1] if got.node == c.nodes[0] else c.nodes[0]
        now = self.clock()
        before = self.leases[got.cluster].holder_at(now)
        state, answer = lease.request(
            self.leases[got.cluster], got.node, other, got.op,
            lease=got.lease, seq=got.sequence, now=now,
        )  # fmt: skip
        self.leases[got.cluster] = state
        after = state.holder_at(now)
        if after != before:
            log.info(
                "witness.holder cluster=%s from=%s to=%s op=%s lease=%g",
                got.cluster, before or "-", after or "-", got.op.name, got.lease,
            )  # fmt: skip
        elif answer.verdict is Verdict.TOO_LONG:
            log.warning("witness.lease_too_long cluster=%s node=%s", got.cluster, got.node)
        self.seq += 1
        reply = Reply(
            got.cluster, got.node, answer.verdict, answer.holder, self.boot_id, self.seq,
            got.sequence, answer.remaining, got.lease,
        )  # fmt: skip
        return encode_reply(reply, self.keys[got.cluster])

    def _read(self) -> None:
        for _ in range(MAX_PER_TURN):
            if self.sock is None:
                return
            try:
                data, source = self.sock.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            try:
                out = self.handle(data, source)
            except Exception:
                log.exception("witness.internal_error source=%s", source)
                continue
            if out is None:
                continue
            try:
                self.sock.sendto(out, source)
                self.answered += 1
            except OSError:
                self.send_errors += 1

    def status(self) -> dict[str, Any]:
        """Return the status document."""
        now, wall = self.clock(), self.wall()
        clusters = {}
        for name, c in self.leases.items():
            holder = c.holder_at(now)
            clusters[name] = {
                "nodes": list(self.clusters[name].nodes),
                "holder": holder or None,
                "remaining": round(c.expires - now, 3) if holder else None,
                "quiet_left": round(c.quiet_left(now), 3),
                "max_lease": c.max_lease,
                "heard_age": {n: round(now - t, 3) for n, t in sorted(c.heard.items())},
                "accepted": self.receiver.accepted[name],
            }
        counters = self.receiver.counters()
        counters.update(answered=self.answered, send_errors=self.send_errors)
        return {
            "version": 1,
            "written": wall,
            "pid": os.getpid(),
            "pid_start": process_start(os.getpid()),
            "status_interval": STATUS_INTERVAL,
            "address": f"{self.w.address}:{self.w.port}",
            "clusters": clusters,
            "counters": counters,
        }

    def write_status(self) -> None:
        """Rewrite the status file (atomically)."""
        try:
            write_status(self.w.run_dir / STATUS_NAME, self.status())
        except OSError as err:
            log.error("witness.status_write_failed error=%s", err)

    async def run(self) -> int:
        """Serve until SIGTERM or SIGINT."""
        loop = asyncio.get_running_loop()
        if self.sock is None:
            self.open()
        assert self.sock is not None
        loop.add_reader(self.sock.fileno(), self._read)
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop.set)
        log.info(
            "witness.start address=%s port=%s clusters=%s",
            self.w.address, self.w.port, ",".join(self.clusters),
        )  # fmt: skip
        self.write_status()
        self.notifier.notify("READY=1")
        self.notifier.notify(f"STATUS=serving {len(self.clusters)} clusters")
        watchdog = watchdog_period()
        tick = min(STATUS_INTERVAL, watchdog) if watchdog is not None else STATUS_INTERVAL
        try:
            while not self.stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), tick)
                self.write_status()
                if watchdog is not None:
                    self.notifier.notify("WATCHDOG=1")
        finally:
            loop.remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None
            remove_status(self.w.run_dir / STATUS_NAME)
            self.notifier.notify("STOPPING=1")
            log.info("witness.stop")
        return 0


def render(doc: dict[str, Any], verdict: str) -> str:
    """Return the human view of a witness status document."""
    lines = [f"Witness {doc.get('address', '?')}   {verdict}"]
    for name, c in sorted((doc.get("clusters") or {}).items()):
        holder = c.get("holder")
        if holder:
            lease_text = f"lease held by {holder}, {c.get('remaining', 0):.1f}s left"
        elif c.get("quiet_left"):
            lease_text = f"restarted: grants nothing for {c['quiet_left']:.1f}s"
        else:
            lease_text = "lease free"
        lines.append(f"  cluster {name:<16} {lease_text}")
        heard = c.get("heard_age") or {}
        for node in c.get("nodes") or []:
            age = heard.get(node)
            seen = f"heard {age:.1f}s ago" if age is not None else "never heard"
            lines.append(f"    {node:<16} {seen}")
    counters = doc.get("counters") or {}
    dropped = {
        k: v for k, v in counters.items() if v and k not in {"accepted", "answered", "send_errors"}
    }
    lines.append(
        f"Requests: {counters.get('accepted', 0)} accepted, {counters.get('answered', 0)} answered"
        + (
            "; dropped " + ", ".join(f"{k}={v}" for k, v in sorted(dropped.items()))
            if dropped
            else ""
        )
    )
    return "\n".join(lines) + "\n"


__all__ = [
    "ServedCluster",
    "Witness",
    "WitnessFile",
    "load_keys",
    "load_witness",
    "render",
]
