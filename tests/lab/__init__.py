"""The network-namespace lab used by lab and end-to-end tests, benchmarks and the demo."""

from tests.lab.faults import Fault
from tests.lab.lab import (
    HB4,
    IPV4,
    IPV6,
    NODES,
    VIP4,
    VIP6,
    Lab,
    LabCommandError,
    LabError,
    LabProcess,
    Node,
    wait_until,
)
from tests.lab.probe import ProbeResult, Reply, VipProbe

__all__ = [
    "HB4",
    "IPV4",
    "IPV6",
    "NODES",
    "VIP4",
    "VIP6",
    "Fault",
    "Lab",
    "LabCommandError",
    "LabError",
    "LabProcess",
    "Node",
    "ProbeResult",
    "Reply",
    "VipProbe",
    "wait_until",
]
