"""The nemesis's effects: inject and heal each fault kind of tests/campaign/schedule.py."""

from __future__ import annotations

import contextlib
import os
import signal
from typing import Any

from tests.campaign.lab import CampaignLab, ballast_path, fill, takeover_cmd
from tests.campaign.schedule import Fault
from tests.lab.lab import HA_NODES
from tests.lab.pair import HB_PORT


class Nemesis:
    """Injects and heals faults on a CampaignLab; remembers what each injection resolved to."""

    def __init__(self, cl: CampaignLab) -> None:
        self.cl = cl
        # Per fault number: what the injection did (nodes, pids, nftables rules).
        self.done: dict[int, dict[str, Any]] = {}

    def inject(self, f: Fault) -> str:
        """Inject f; return what it resolved to (for the history)."""
        cl = self.cl
        with cl.mu:
            p = f.params
            node = cl.resolve(str(p.get("node", "active")))
            rec: dict[str, Any] = {"node": node}
            self.done[f.n] = rec
            if f.kind == "crash":
                cl.power_off(node)
            elif f.kind == "kill":
                daemon = str(p["daemon"])
                rec["daemon"] = daemon
                cl.state[node].held.add(daemon)
                cl.kill(node, daemon)
            elif f.kind == "freeze":
                what = str(p["what"])
                rec["what"] = what
                if what == "node":
                    pids = cl.lab.pids(node)
                else:
                    proc = cl.procs[node].get(what)
                    pids = [proc.pid] if proc is not None and proc.alive() else []
                rec["pids"] = pids
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGSTOP)
            elif f.kind == "cut":
                links = ["hb", "lan"] if p["link"] == "both" else [str(p["link"])]
                rec["links"] = links
                rec["how"] = p["how"]
                if p["how"] == "carrier":
                    for link in links:
                        cut = cl.state[node].cut
                        cut[link] = cut.get(link, 0) + 1
                    cl.apply_links()
                else:
                    ifaces = {"hb": "hb0", "lan": "lan0"}
                    rec["rules"] = [cl.lab.block(node, proto=None, iface=ifaces[link])
                                    for link in links]  # fmt: skip
            elif f.kind == "hb_loss":
                nodes = list(HA_NODES) if p["node"] == "both" else [node]
                rec["rules"] = [cl.lab.block(n, proto="udp", port=HB_PORT) for n in nodes]
                rec["node"] = ",".join(nodes)
            elif f.kind == "sshd":
                cl.state[node].held.add("sshd")
                cl.kill(node, "sshd", signal.SIGTERM)
            elif f.kind == "disk_full":
                rec["bytes"] = fill(ballast_path(cl, node))
            elif f.kind == "clock":
                daemon = str(p["daemon"])
                step = float(p["step"])
                rec["daemon"] = daemon
                cl.state[node].clock[daemon] = f"{step:+.1f}s"
                cl.kill(node, daemon)  # the supervisor starts it again under faketime
            elif f.kind == "planned":
                op = str(p["op"])
                target = cl.resolve("active") if op == "standby" else cl.resolve("standby")
                rec["node"] = target
                if not cl.state[target].off:
                    takeover_cmd(cl, target, op)
            else:
                raise ValueError(f.kind)
            return " ".join(f"{k}={v}" for k, v in rec.items() if k not in ("pids", "rules"))

    def heal(self, f: Fault) -> None:
        """Undo f."""
        cl = self.cl
        rec = self.done.get(f.n)
        if rec is None:
            return
        with cl.mu:
            node = str(rec["node"])
            if f.kind == "crash":
                if cl.state[node].off:
                    cl.power_on(node)
            elif f.kind == "kill":
                cl.state[node].held.discard(str(rec["daemon"]))
            elif f.kind == "freeze":
                for pid in rec["pids"]:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGCONT)
            elif f.kind == "cut":
                if rec["how"] == "carrier":
                    for link in rec["links"]:
                        cl.state[node].cut[link] -= 1
                    cl.apply_links()
                else:
                    for rule in rec["rules"]:
                        cl.lab.unblock(rule)
            elif f.kind == "hb_loss":
                for rule in rec["rules"]:
                    cl.lab.unblock(rule)
            elif f.kind == "sshd":
                cl.state[node].held.discard("sshd")
            elif f.kind == "disk_full":
                ballast_path(cl, node).unlink(missing_ok=True)
            elif f.kind == "clock":
                daemon = str(rec["daemon"])
                cl.state[node].clock.pop(daemon, None)
                cl.kill(node, daemon)
