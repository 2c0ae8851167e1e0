"""The reload plan: old cluster file, new cluster file -> what changes live, what is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from takeover.config import Cluster, load_cluster
from takeover.reloadplan import RESTART, Plan, plan

ROOT = Path(__file__).resolve().parents[2]
MINIMAL = (ROOT / "tests" / "configs" / "valid-minimal.toml").read_text()
VIP1 = '\n[[vip]]\naddress = "192.0.2.100/24"\n'
VIP2 = '\n[[vip]]\naddress = "192.0.2.101/24"\n'
VM1 = (
    '\n[[vm]]\nname = "web"\nxml = "/etc/hapair/web.xml"\n'
    '[vm.uri]\na = "qemu:///system"\nb = "qemu:///system"\n'
)


def cluster(tmp_path: Path, text: str, name: str = "cluster.toml") -> Cluster:
    """Return the cluster file `text`, loaded from `tmp_path`."""
    path = tmp_path / name
    path.write_text(text)
    return load_cluster(path)


# (appended to the minimal file before, after, the changes the plan lists)
LIVE = [
    ("", "", ["nothing"]),
    ("", VIP1, ["vip+192.0.2.100/24"]),
    (VIP1, VIP1 + VIP2, ["vip+192.0.2.101/24"]),
    (VIP1 + VIP2, VIP2, ["vip-192.0.2.100/24"]),
    # Order alone changes nothing: neither VIP is touched.
    (VIP1 + VIP2, VIP2 + VIP1, ["nothing"]),
    (
        VIP1,
        VIP1.replace('/24"\n', '/24"\ninterface = "lan1"\n'),
        ["vip+192.0.2.100/24", "vip-192.0.2.100/24"],
    ),
    ("", '\n[heartbeat]\ninterval = "100ms"\n', ["timings"]),
    ("", '\n[arbitration]\ntargets = ["192.0.2.1"]\n', ["timings", "targets"]),
    ("", "\n[arbitration]\nmax_unreachable = 1\n", ["timings"]),
    ("", "\n[announce]\ngarp_count = 3\n", ["announce"]),
    ("", '\n[[hook]]\ncommand = ["/bin/true"]\n', ["hooks"]),
    ("", '\n[[check]]\nname = "x"\ntype = "tcp"\ntarget = "127.0.0.1:25"\n', ["checks"]),
    ("", VM1, ["vm+web", "timings"]),
    (VM1, "", ["vm-web", "timings"]),
]


def with_heartbeat(base: str, extra: str) -> str:
    """Return the minimal file with `extra` merged: a [heartbeat] edit joins its table."""
    if extra.startswith("\n[heartbeat]\n"):
        return base + extra[len("\n[heartbeat]\n") - 1 :]
    return base + extra


@pytest.mark.parametrize("before, after, changes", LIVE)
def test_live_changes_are_planned_and_nothing_else(
    before: str, after: str, changes: list[str], tmp_path: Path
) -> None:
    """Each edit that can change live is listed, and only what differs is touched."""
    old = cluster(tmp_path, with_heartbeat(MINIMAL, before), "old.toml")
    new = cluster(tmp_path, with_heartbeat(MINIMAL, after), "new.toml")
    got = plan(old, new, "a")
    assert got.refused == ()
    assert got.changes() == changes


def test_priority_of_a_node_is_a_timing(tmp_path: Path) -> None:
    """A node's priority changes the election live, no restart."""
    old = cluster(tmp_path, MINIMAL, "old.toml")
    new = cluster(tmp_path, MINIMAL.replace('name = "b"\n', 'name = "b"\npriority = 50\n'))
    assert plan(old, new, "a").changes() == ["timings"]


# (a replacement in the minimal file, the key the refusal names)
RESTART_ONLY = [
    ('name = "lab"', 'name = "lab2"', "cluster.name"),
    ('hb = "198.51.100.1"', 'hb = "198.51.100.9"', "node[0].heartbeat.hb"),
    ('lan = "192.0.2.12"', 'lan = "192.0.2.19"', "node[1].heartbeat.lan"),
    ('key_file = "/etc/hapair/authkey"', 'key_file = "/etc/hapair/other"', "heartbeat.key_file"),
    ('links = ["hb", "lan"]', 'links = ["hb", "lan"]\nport = 7000', "heartbeat.port"),
    ('interface = "lan0"\n[node.heartbeat]\nhb = "198.51.100.2"',
     'interface = "lan9"\n[node.heartbeat]\nhb = "198.51.100.2"', "node[1].interface"),
]  # fmt: skip


@pytest.mark.parametrize("old_text, new_text, key", RESTART_ONLY)
def test_restart_only_changes_refuse_the_whole_reload(
    old_text: str, new_text: str, key: str, tmp_path: Path
) -> None:
    """A key that cannot change live refuses the reload, naming file and key and a restart."""
    old = cluster(tmp_path, MINIMAL + VIP1, "old.toml")
    new = cluster(tmp_path, (MINIMAL + VIP2).replace(old_text, new_text))
    got = plan(old, new, "a")
    assert got == Plan(refused=got.refused)
    assert any(p.startswith(f"cluster.toml: {key}: ") and RESTART in p for p in got.refused)


def test_node_names_changed_refuses(tmp_path: Path) -> None:
    """Renaming a node is another pair: refused, restart to apply."""
    old = cluster(tmp_path, MINIMAL, "old.toml")
    new = cluster(tmp_path, MINIMAL.replace('name = "b"', 'name = "c"'))
    (problem,) = plan(old, new, "a").refused
    assert problem.startswith("cluster.toml: node names: ") and RESTART in problem


def test_a_changed_key_refuses(tmp_path: Path) -> None:
    """Same key file, other content: refused, restart to apply."""
    old = cluster(tmp_path, MINIMAL, "old.toml")
    new = cluster(tmp_path, MINIMAL + VIP1)
    (problem,) = plan(old, new, "a", key_changed=True).refused
    assert problem == f"cluster.toml: heartbeat.key_file: the key changed: {RESTART}"


def test_changed_vm_settings_refuse(tmp_path: Path) -> None:
    """A VM's settings cannot change under a running guest: restart to apply."""
    old = cluster(tmp_path, MINIMAL + VM1, "old.toml")
    new = cluster(
        tmp_path, MINIMAL + VM1.replace('name = "web"\n', 'name = "web"\nstop_timeout = "30s"\n')
    )
    (problem,) = plan(old, new, "a").refused
    assert problem == f"cluster.toml: vm[0] (web): settings changed: {RESTART}"


def test_peer_fencing_changed_refuses_but_own_does_not(tmp_path: Path) -> None:
    """The fencer of this node's peer is set up at start-up; this node's own entry is the peer's."""
    fencing = (
        '[node.fencing]\ntype = "ipmi"\naddress = "192.0.2.201"\nuser = "u"\n'
        'password_file = "/etc/hapair/pw"\n'
    )
    text = MINIMAL.replace('[[node]]\nname = "b"', fencing + '[[node]]\nname = "b"')
    old = cluster(tmp_path, text, "old.toml")
    new = cluster(tmp_path, text.replace("192.0.2.201", "192.0.2.202"))
    assert plan(old, new, "a").refused == ()
    (problem,) = plan(old, new, "b").refused
    assert problem.startswith("cluster.toml: node[0].fencing: ")


def test_maintenance_refuses_resources_but_not_timings(tmp_path: Path) -> None:
    """In maintenance no resource may come or go; a timing change still applies."""
    old = cluster(tmp_path, MINIMAL, "old.toml")
    (problem,) = plan(old, cluster(tmp_path, MINIMAL + VIP1), "a", maintenance=True).refused
    assert "maintenance" in problem and problem.startswith("cluster.toml: vip/vm: ")
    timing = cluster(tmp_path, MINIMAL + 'interval = "100ms"\n', "t.toml")
    assert plan(old, timing, "a", maintenance=True).changes() == ["timings"]


RES1 = (
    '\n[[resource]]\nname = "web"\ntype = "command"\n'
    'start = ["/bin/true"]\nstop = ["/bin/true"]\nstatus = ["/bin/true"]\n'
)
WITNESS = '\n[witness]\naddress = "203.0.113.10"\nkey_file = "/etc/hapair/witness.key"\n'


@pytest.mark.parametrize(
    "before, after, key",
    [
        ("", RES1, "resource"),
        (RES1, "", "resource"),
        ("", WITNESS, "witness"),
    ],
)
def test_resources_group_and_witness_need_a_restart(
    before: str, after: str, key: str, tmp_path: Path
) -> None:
    """Services and the witness are set up at start-up: a reload that changes
    them is refused as a whole (never reported applied while nothing changed)."""
    old = cluster(tmp_path, MINIMAL + before, "old.toml")
    new = cluster(tmp_path, MINIMAL + after)
    got = plan(old, new, "a")
    assert got == Plan(refused=got.refused)
    assert any(p.startswith(f"cluster.toml: {key}: ") and RESTART in p for p in got.refused)
