"""Hapair managing one VM in the lab: libvirtd in nodes a and b, one BMC per node, and
takeover on both nodes configured for the guest with live migration and IPMI fencing.

Shared by the VM end-to-end tests and `make bench-vm`. The BMCs (ipmi_sim) live in the client
namespace on the lab LAN, where the daemons in a and b reach them; a BMC's power-off crashes
its node for real (every process killed, links down).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import libvirt

from tests.lab.bmc import SimBmc, power_off_node_argv
from tests.lab.lab import HA_NODES, IPV4, Lab
from tests.lab.libvirt_hosts import LibvirtPair
from tests.lab.pair import HapairPair, PairConfig

# Polling a crashed node's libvirtd fails by design; libvirt would print each error to stderr.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


def start_bmcs(lab: Lab, *, crash_on_off: bool = True) -> dict[str, SimBmc]:
    """Start one BMC per HA node in the client namespace; the caller stops them. A power-off
    crashes the node and waits for it (crash_on_off), or only records "off"."""
    bmcs: dict[str, SimBmc] = {}
    try:
        for node in HA_NODES:
            bmcs[node] = SimBmc(
                on_power_off=power_off_node_argv(lab, node) if crash_on_off else None,
                netns=lab.ns("client"),
                address=IPV4["client"],
            ).start()
    except BaseException:
        for bmc in bmcs.values():
            bmc.stop()
        raise
    return bmcs


def vm_toml(lv: LibvirtPair, name: str) -> str:
    """A `[[vm]]` table for a fresh tiny guest `name` on lv's shared storage (XML written)."""
    xml = lv.write_guest(name)
    uris = ", ".join(f'{n} = "{lv[n].uri}"' for n in HA_NODES)
    migrate = ", ".join(f'{n} = "{lv[n].tcp_uri}"' for n in HA_NODES)
    return (
        f'\n[[vm]]\nname = "{name}"\nxml = "{xml}"\nuri = {{ {uris} }}\n'
        f"migrate = true\nmigrate_uri = {{ {migrate} }}\n"
        # The BIOS-only guest ignores ACPI: a short grace before destroy.
        'stop_timeout = "1s"\nstart_timeout = "20s"\nmax_restarts = 2\n'
    )


@dataclass
class VmLab:
    """A lab with libvirtd in nodes a and b and one BMC per node in the client namespace."""

    lab: Lab
    libvirt: LibvirtPair
    bmcs: dict[str, SimBmc]


class VmPair:
    """Both takeover daemons managing one fresh guest."""

    def __init__(self, vl: VmLab) -> None:
        self.vl = vl
        self.name = f"g-{uuid.uuid4().hex[:8]}"
        vm = vm_toml(vl.libvirt, self.name)
        fencing = {
            n: f'[node.fencing]\ntype = "ipmi"\naddress = "{b.address}"\nport = {b.port}\n'
            f'user = "{b.user}"\npassword_file = "{b.write_password_file()}"\n'
            'timeout = "8s"\n'
            for n, b in vl.bmcs.items()
        }
        self.pair = HapairPair(vl.lab, PairConfig(extra=vm, node_extra=fencing))

    def state(self, node: str) -> str | None:
        """ "running", "defined" or None for the guest on `node` (None if libvirtd is down)."""
        host = self.vl.libvirt[node]
        return host.domains().get(self.name) if host.running() else None

    def running_on(self) -> list[str]:
        """The nodes whose libvirtd runs the guest."""
        return [n for n in HA_NODES if self.state(n) == "running"]

    def vm_status(self, node: str) -> dict[str, Any]:
        """The guest's entry in `takeover status --json` of node ({} if none)."""
        vms = self.pair.status(node).get("vms")
        return next((v for v in vms if v.get("name") == self.name), {}) if vms else {}

    def restart_node(self, node: str) -> None:
        """Bring a crashed node back: links up, BMC power on, libvirtd started again."""
        self.vl.lab.revive_node(node)
        self.vl.bmcs[node].set_power(on=True)
        self.vl.libvirt[node].start()

    def close(self) -> None:
        """Stop both daemons (standby first), revive crashed nodes, clear every domain."""
        procs = self.pair.procs
        for node in sorted(procs, key=lambda n: self.pair.role(n) == "ACTIVE"):
            procs[node].stop(grace=15)
        for node in HA_NODES:
            if not self.vl.libvirt[node].running():
                self.restart_node(node)
            self.vl.libvirt[node].clear()
