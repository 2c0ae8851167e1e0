"""The campaign's workload, run inside lab namespaces as plain scripts.

    agents.py serve NODE ROOT PORT   the service: one record per connection, written into ROOT
                                     and fsynced (file and directory) before it answers
    agents.py write VIP PORT SEED OUT [--every S]
                                     the client: writes record 1, 2, ... through the VIP and
                                     logs each acknowledged one (id, wall time, monotonic time,
                                     the node that answered) as a JSON line to OUT

A record's bytes are `payload(seed, id)`, so a checker recomputes them without the client log.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import signal
import socket
import socketserver
import sys
import time

# Names of record files in the hot directory.
PREFIX = "r"


def record_name(rid: int) -> str:
    """File name of record rid."""
    return f"{PREFIX}{rid:07d}"


def payload(seed: int, rid: int) -> bytes:
    """The bytes record rid carries in a campaign of this seed."""
    digest = hashlib.sha256(f"{seed}:{rid}".encode()).hexdigest()
    return f"{rid} {digest} {'x' * (rid % 97)}\n".encode()


def store(root: str, name: str, data: bytes) -> None:
    """Write data to ROOT/name and fsync the file and the directory."""
    fd = os.open(os.path.join(root, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    dfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def serve(node: str, root: str, port: int) -> int:
    """Answer `ID HEX` lines: write HEX's bytes to ROOT/rID, fsync, reply `ok ID NODE`."""

    class Handler(socketserver.StreamRequestHandler):
        timeout = 5.0

        def handle(self) -> None:
            try:
                self._answer()
            except OSError as e:  # client gone or silent, disk full: no acknowledgement
                print(f"no answer: {e!r}", file=sys.stderr, flush=True)

        def _answer(self) -> None:
            line = self.rfile.readline(65536)
            rid_text, _, data_hex = line.decode(errors="replace").strip().partition(" ")
            try:
                rid = int(rid_text)
                data = bytes.fromhex(data_hex)
            except ValueError:  # the client gave up before sending (a timeout): nothing to do
                return
            # OSError here (disk full, a root gone) propagates: no answer, no acknowledgement.
            store(root, record_name(rid), data)
            self.wfile.write(f"ok {rid} {node}\n".encode())

    class Server(socketserver.ThreadingTCPServer):
        allow_reuse_address = True
        daemon_threads = True

    with Server(("0.0.0.0", port), Handler) as srv:
        srv.serve_forever(poll_interval=0.2)
    return 0


def write(vip: str, port: int, seed: int, out_path: str, every: float) -> int:
    """Write records through the VIP until SIGTERM; log every acknowledged one."""
    stop = False

    def on_term(_signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    rid = 0
    with open(out_path, "a", buffering=1) as out:
        out.write(json.dumps({"event": "ready", "t": time.time()}) + "\n")
        while not stop:
            rid += 1
            line = f"{rid} {payload(seed, rid).hex()}\n".encode()
            reply = b""
            with contextlib.suppress(OSError), socket.create_connection((vip, port), 1.0) as s:
                s.settimeout(2.0)
                s.sendall(line)
                while not reply.endswith(b"\n"):
                    chunk = s.recv(256)
                    if not chunk:
                        break
                    reply += chunk
            parts = reply.decode(errors="replace").split()
            if len(parts) == 3 and parts[0] == "ok" and parts[1] == str(rid):
                rec = {"id": rid, "t": time.time(), "m": time.monotonic(), "node": parts[2]}
                out.write(json.dumps(rec) + "\n")
            time.sleep(every)
        out.write(json.dumps({"event": "stop", "t": time.time(), "last": rid}) + "\n")
    return 0


def main(argv: list[str]) -> int:
    """Command line of the agents."""
    p = argparse.ArgumentParser(prog="agents.py")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("node")
    s.add_argument("root")
    s.add_argument("port", type=int)
    w = sub.add_parser("write")
    w.add_argument("vip")
    w.add_argument("port", type=int)
    w.add_argument("seed", type=int)
    w.add_argument("out")
    w.add_argument("--every", type=float, default=0.05)
    args = p.parse_args(argv)
    if args.cmd == "serve":
        return serve(args.node, args.root, args.port)
    return write(args.vip, args.port, args.seed, args.out, args.every)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
