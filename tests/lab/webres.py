"""A `command` resource for the lab: a web server serving a directory (the shared disk).

    python -m tests.lab.webres start|stop|status DIR PORT

start runs `python -m http.server` detached, its pid in DIR/.web.pid, and waits until it
answers; status answers with LSB codes (0 serving, 3 not); stop ends the pid in the pid file.
The pid file lives on the mounted file system, so each node sees only its own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def answers(port: int) -> bool:
    """Return whether the server answers on this node's loopback."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as r:
            return bool(r.status == 200)
    except OSError as err:
        print(f"webres: {err}", file=sys.stderr)
        return False


def main(argv: list[str]) -> int:
    """Run one action; return its LSB exit code."""
    action, directory, port = argv[0], Path(argv[1]), int(argv[2])
    pidfile = directory / ".web.pid"
    if action == "status":
        if not pidfile.exists():
            print(f"webres: no pid file {pidfile}", file=sys.stderr)
            return 3
        if not answers(port):
            print(f"webres: nothing answers on port {port}", file=sys.stderr)
            return 3
        return 0
    if action == "start":
        proc = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(port), "--directory", str(directory)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        pidfile.write_text(f"{proc.pid}\n")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if answers(port):
                return 0
            time.sleep(0.05)
        return 1
    if action == "stop":
        if pidfile.exists():
            pid = int(pidfile.read_text())
            # A pid file left by a crashed node names a pid that may be reused by now.
            cmdline = Path(f"/proc/{pid}/cmdline")
            if cmdline.exists() and b"http.server" in cmdline.read_bytes():
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and answers(port):
                time.sleep(0.05)
            pidfile.unlink()
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
