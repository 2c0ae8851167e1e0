"""Checker 3's observation (--vms): the guest on each node, from outside hapair, every EVERY s.

Each node's QEMU PID comes from its libvirtd's pid file and /proc (alive, not a zombie, its
command line names the guest; state T: stopped by the nemesis). libvirt's view of the domain
(running / paused) comes from one reader thread per node with its own connection: a frozen or
crashed libvirtd only makes that reader late, never the sampler; a view older than STALE s
counts as "?" (no answer). The judgement is tests/campaign/guests.py.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import libvirt

from tests.campaign.guests import NodeSample, Sample
from tests.lab.libvirt_hosts import LibvirtPair

# Seconds between samples.
EVERY = 0.15
# Seconds after which a reader's view of the domain no longer counts.
STALE = 1.0

_STATES = {
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTOFF: "shutoff",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_BLOCKED: "running",
}


def qemu(pidfile: Path, guest: str) -> tuple[int | None, bool]:
    """(PID, stopped) of the guest's QEMU named in pidfile; (None, False) if none runs."""
    try:
        pid = int(pidfile.read_text().strip())
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None, False
    state = stat[stat.rindex(")") + 2]
    if state in "ZX" or f"guest={guest},".encode() not in cmdline:
        return None, False
    return pid, state in "Tt"


class _Reader(threading.Thread):
    """libvirt's view of the guest on one host, refreshed as fast as libvirtd answers."""

    def __init__(self, uri: str, guest: str, stop: threading.Event) -> None:
        super().__init__(daemon=True, name=f"guestwatch-{uri[-20:]}")
        self.uri, self.guest, self.stop = uri, guest, stop
        self.view: tuple[float, str] = (0.0, "?")

    def run(self) -> None:
        conn: libvirt.virConnect | None = None
        while not self.stop.wait(0.05):
            try:
                if conn is None:
                    conn = libvirt.open(self.uri)
                try:
                    state = _STATES.get(conn.lookupByName(self.guest).state()[0], "other")
                except libvirt.libvirtError as e:
                    if e.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                        raise
                    state = "absent"
                self.view = (time.monotonic(), state)
            except libvirt.libvirtError:
                if conn is not None:
                    with contextlib.suppress(libvirt.libvirtError):
                        conn.close()
                conn = None
                time.sleep(0.2)


class GuestWatch:
    """Samples the guest on both nodes in a thread; samples are kept, oldest first."""

    def __init__(self, lv: LibvirtPair, guest: str) -> None:
        self.lv, self.guest = lv, guest
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._readers = {n: _Reader(h.uri, guest, self._stop) for n, h in lv.hosts.items()}
        self._thread = threading.Thread(target=self._run, daemon=True, name="guestwatch")

    def start(self) -> GuestWatch:
        """Start the readers and the sampler."""
        for r in self._readers.values():
            r.start()
        self._thread.start()
        return self

    def sample(self) -> Sample:
        """One sample of both nodes, now."""
        now = time.monotonic()
        nodes = {}
        for n, host in self.lv.hosts.items():
            pid, stopped = qemu(host.root / "run" / "qemu" / f"{self.guest}.pid", self.guest)
            at, state = self._readers[n].view
            if now - at > STALE:
                state = "?"
            running = pid is not None and not stopped and state in ("running", "?")
            nodes[n] = NodeSample(pid=pid, running=running, state=state)
        return Sample(now, nodes)

    def running_on(self) -> list[str]:
        """The nodes the guest runs on now."""
        return sorted(n for n, ns in self.sample().nodes.items() if ns.running)

    def _run(self) -> None:
        while not self._stop.wait(EVERY):
            self.samples.append(self.sample())

    def stop(self) -> list[Sample]:
        """Stop sampling; return the samples."""
        self._stop.set()
        self._thread.join()
        return self.samples
