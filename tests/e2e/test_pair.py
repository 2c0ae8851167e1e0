"""The pair as one: takeover and mirrord on both lab nodes, real rsync over ssh both ways.

A writer writes a new file every 20 ms straight into the active's mirrored directory and
records every acknowledged write; each test then moves the service and checks where every
acknowledged write ended up.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from mirrord.cli import control_request
from mirrord.daemon import CATCH_UP_MARGIN
from tests.e2e.pairlab import PairLab, Writer, present
from tests.lab.lab import Lab, wait_until
from tests.lab.pair import HB_PORT, PairConfig

pytestmark = [pytest.mark.netns, pytest.mark.e2e]

# Seconds between a write returning and mirrord dating the change (generous).
INOTIFY_SLACK = 0.25
DATA = {"path": "/srv/data", "interval": "500ms", "min_interval": "200ms", "max_interval": "3s"}


@pytest.fixture
def pair(lab: Lab) -> Iterator[PairLab]:
    """Both daemons on both nodes; a is active and pushing to b."""
    p = PairLab(lab, [DATA])
    p.start()
    assert wait_until(lambda: p.active() == "a" and p.pushing("a"), 30, 0.1), p.log("a")[-2000:]
    assert wait_until(lambda: settled(p, "a"), 30, 0.1), p.log("a")[-2000:]
    yield p


def settled(pair: PairLab, node: str) -> bool:
    """Whether node's mirrord has nothing running and nothing owed (its start-up pass done)."""
    doc = control_request(pair.lab.node_dir(node, "run"), {"cmd": "status"}, 10)
    return all(
        not d["running"] and not d["dirty"] and d["full_needed"] is None for d in doc["directories"]
    )


def missing_on(pair: PairLab, node: str, names: set[str]) -> list[str]:
    """The first few of `names` that node's /srv/data lacks."""
    return sorted(names - present(pair.tree(node, "data"), list(names)))[:5]


def takeover_cmd(pair: PairLab, node: str, *args: str) -> None:
    """Run `takeover ARGS` on node (standby, promote)."""
    argv = [sys.executable, "-m", "takeover", "-c", str(pair.cluster), "--node", node, *args]
    pair.lab.run(node, argv)


def rpo_now(pair: PairLab, node: str) -> float:
    """The RPO of /srv/data on node, from mirrord's control socket."""
    doc = control_request(pair.lab.node_dir(node, "run"), {"cmd": "status"}, 10)
    return float(doc["directories"][0]["rpo"])


def test_planned_switchover_loses_nothing(pair: PairLab) -> None:
    """Under continuous writes, `takeover standby` on the active: every write acknowledged
    before the release began is on the new active, and the rest on it or on the orphan list."""
    writer = Writer(pair.tree("a", "data")).start()
    time.sleep(2.0)
    released_at = time.time()
    takeover_cmd(pair, "a", "standby")
    acked = writer.stop()
    assert wait_until(lambda: pair.active() == "b", 30, 0.1), pair.takeover.log("a")[-2000:]
    before = [n for n, t in acked if t < released_at]
    assert len(before) > 20
    on_b = present(pair.tree("b", "data"), [n for n, _ in acked])
    assert set(before) <= on_b
    orphaned = {o["path"] for o in pair.orphans("a")}
    assert {n for n, _ in acked} <= on_b | orphaned
    flush = (pair.mirror_status("a") or {})["follow"]["last_flush"]
    assert flush["ok"], flush
    # The new active pushes back with what it gathers, and the old one never pushes.
    (pair.tree("b", "data") / "after").write_text("after\n")
    assert wait_until((pair.tree("a", "data") / "after").exists, 20, 0.1)
    assert not pair.pushing("a")


def follow_state(pair: PairLab, node: str) -> dict[str, Any]:
    """The "follow" part of node's mirrord status file ({} if there is none)."""
    return dict((pair.mirror_status(node) or {}).get("follow") or {})


def serve_while_mirrord_is_away(pair: PairLab) -> list[tuple[str, float]]:
    """Seed 7's sequence: a hands over to b; takeover dies on the standby a (mirrord sees it
    go: the gap marker refuses b's pushes), mirrord is held back (SIGSTOP, as its reconnect
    back-off did); b lets go, a's takeover comes back and serves; a writer writes on a for
    2 s, then `takeover standby` on a. Return the acknowledged writes (mirrord still stopped)."""
    takeover_cmd(pair, "a", "standby")
    assert wait_until(lambda: pair.active() == "b" and pair.pushing("b"), 30, 0.1)
    assert wait_until(lambda: follow_state(pair, "a").get("receiving"), 30, 0.1)
    pair.takeover.procs["a"].signal(signal.SIGKILL)
    pair.takeover.procs["a"].wait(10)
    gone = wait_until(
        lambda: "role" in (f := follow_state(pair, "a")) and f["role"] is None, 10, 0.1
    )
    assert gone, pair.log("a")[-2000:]
    assert follow_state(pair, "a").get("gap")
    # The peer's pushes wait until mirrord has looked at what changed meanwhile.
    assert (pair.tree("a", "data") / ".hapair-backup" / "source").exists()
    pair.mirrord["a"].signal(signal.SIGSTOP)
    # b lets go (a is unheard: --force) and a's takeover comes back and wins.
    takeover_cmd(pair, "b", "standby", "--force")
    assert pair.takeover.wait_role("b", "STANDBY", 30), pair.takeover.log("b")[-2000:]
    pair.takeover.start("a")
    assert pair.takeover.wait_role("a", "ACTIVE", 30), pair.takeover.log("a")[-2000:]
    writer = Writer(pair.tree("a", "data")).start()
    time.sleep(2.0)
    takeover_cmd(pair, "a", "standby")
    acked = writer.stop()
    assert len(acked) > 20
    return acked


def test_standby_whose_takeover_restarts_and_serves_before_mirrord_is_back(
    pair: PairLab,
) -> None:
    """Seed 7: takeover dies on the standby, comes back and serves while mirrord is not
    subscribed, then `takeover standby`: the release waits for mirrord, which finds RELEASING
    and flushes what was written; every acknowledged write is on the new active."""
    try:
        names = [n for n, _ in serve_while_mirrord_is_away(pair)]
        time.sleep(1.0)
        # Without mirrord's say the release does not end (bounded by inhibit_timeout, 30 s).
        assert pair.takeover.role("a") == "RELEASING", pair.takeover.log("a")[-2000:]
    finally:
        pair.mirrord["a"].signal(signal.SIGCONT)
    assert wait_until(lambda: pair.active() == "b", 40, 0.1), pair.takeover.log("a")[-2000:]
    # The final flush carried them: every acknowledged write is on the new active.
    on_b = present(pair.tree("b", "data"), names)
    assert set(names) <= on_b, (sorted(set(names) - on_b)[:5], pair.log("a")[-3000:])
    flush = follow_state(pair, "a")["last_flush"]
    assert flush["ok"], flush
    totals: Any = pair.takeover.status("a").get("totals") or {}
    assert not totals.get("inhibitor_timeouts"), totals
    mirrors_on(pair)


def mirrors_on(pair: PairLab) -> None:
    """Assert that b's pushes reach a again (the gap is over, its marker gone)."""
    (pair.tree("b", "data") / "after").write_text("after\n")
    assert wait_until((pair.tree("a", "data") / "after").exists, 30, 0.1), pair.log("a")[-2000:]
    assert not pair.pushing("a") and not follow_state(pair, "a").get("gap")


def test_standby_that_served_while_mirrord_was_away_keeps_its_writes_as_orphans(
    lab: Lab,
) -> None:
    """Seed 7 past the bound: mirrord stays away longer than inhibit_timeout, so the
    release goes on without it (counted); the peer's pushes are refused until mirrord is back,
    sees STANDBY with a new epoch and sets the writes aside: each is on the new active or on
    the old one's orphan list."""
    pair = PairLab(lab, [DATA], PairConfig(inhibit_timeout=3.0), flush_timeout=2.0)
    pair.start()
    assert wait_until(lambda: pair.active() == "a" and settled(pair, "a"), 30, 0.1)
    try:
        names = [n for n, _ in serve_while_mirrord_is_away(pair)]
        assert wait_until(lambda: pair.active() == "b", 30, 0.1), pair.takeover.log("a")[-2000:]
        totals: Any = pair.takeover.status("a").get("totals") or {}
        assert totals.get("inhibitor_timeouts") == {"mirrord": 1}, totals
        # b pushes (a full pass: a was lost) and is refused: a's writes are all still there.
        time.sleep(2.0)
        assert present(pair.tree("a", "data"), names) == set(names)
    finally:
        pair.mirrord["a"].signal(signal.SIGCONT)

    def kept() -> bool:
        orphaned = {o["path"] for o in pair.orphans("a")}
        return set(names) <= present(pair.tree("b", "data"), names) | orphaned

    assert wait_until(kept, 30, 0.5), pair.log("a")[-3000:]
    mirrors_on(pair)


def test_active_crash_orphans_and_return(pair: PairLab) -> None:
    """The active crashes under writes: every write older than the measured RPO is on the
    survivor, every other one on the returning node's orphan list; on its return nothing is
    lost, the survivor's new files reach it, and it never pushes."""
    writer = Writer(pair.tree("a", "data")).start()
    time.sleep(5.0)
    rpo = rpo_now(pair, "a")
    measured_at = time.time()
    acked = writer.stop()
    pair.crash("a")
    crashed_at = time.time()
    # The RPO measured just before the crash, plus the time it took to crash, plus inotify's
    # delivery (mirrord dates a change when it sees it, a moment after the write returned).
    bound = rpo + (crashed_at - measured_at) + INOTIFY_SLACK
    assert wait_until(lambda: pair.takeover.role("b") == "ACTIVE", 15, 0.1)
    names = [n for n, _ in acked]
    on_b = present(pair.tree("b", "data"), names)
    old = [n for n, t in acked if t < crashed_at - bound]
    assert set(old) <= on_b, sorted(set(old) - on_b)[:5]
    # The survivor takes writes while a is down.
    (pair.tree("b", "data") / "while-down").write_text("while-down\n")

    pair.revive("a")
    assert wait_until(lambda: pair.takeover.role("a") == "STANDBY", 20, 0.1)
    missing = set(names) - on_b
    # The last writes came milliseconds before the crash: no pass could have carried them.
    assert missing
    # takeover may say STANDBY a moment before the restarted mirrord has set them aside.
    wait_until(lambda: missing <= {o["path"] for o in pair.orphans("a")}, 30, 0.2)
    orphaned = {o["path"] for o in pair.orphans("a")}
    assert missing <= orphaned, sorted(missing - orphaned)[:5]
    # Back in the pair: b pushes to a (a full pass, its tree may have lost the orphans). The
    # full pass sends its dirty paths (while-down) in a run of their own before the tree's.
    assert wait_until((pair.tree("a", "data") / "while-down").exists, 30, 0.1)
    assert wait_until(lambda: not missing_on(pair, "a", on_b), 30, 0.2), missing_on(pair, "a", on_b)
    assert not pair.pushing("a")
    # No mirror in the wrong direction: nothing a set aside ever reached b.
    assert not missing & present(pair.tree("b", "data"), list(missing))
    # An orphan goes back to the active as a conflict copy, never over a file.
    name = sorted(missing)[0]
    rc, out = pair.mirrord_in("a", "orphans", "--restore", f"/srv/data/{name}")
    assert rc == 0, out
    copies = list(pair.tree("b", "data").glob(f"{name}.orphan-a-*"))
    assert len(copies) == 1 and copies[0].read_text() == f"{name}\n"


def test_crashed_source_sets_aside_what_the_survivor_has_and_gets_it_back(pair: PairLab) -> None:
    """The returning node's set-aside moves writes the survivor already has (its walk starts
    before its last confirmed pass): it asks for a full pass, so they come back even when the
    survivor's mirrord never saw the peer return (CI stop 19: an incremental pass carried the
    survivor's change, and those writes stayed missing on the returning node)."""
    # b has pushed before (a switchover and back): its restart owes no start-up full pass.
    takeover_cmd(pair, "a", "standby")
    assert wait_until(lambda: pair.active() == "b" and settled(pair, "b"), 30, 0.1)
    takeover_cmd(pair, "b", "standby")
    assert wait_until(lambda: pair.active() == "a" and settled(pair, "a"), 30, 0.1)
    (pair.tree("a", "data") / "notes").write_text("before\n")
    writer = Writer(pair.tree("a", "data")).start()
    time.sleep(3.0)
    acked = writer.stop()
    pair.crash("a")
    assert wait_until(lambda: pair.takeover.role("b") == "ACTIVE", 15, 0.1)
    names = [n for n, _ in acked]
    on_b = present(pair.tree("b", "data"), names)
    assert (pair.tree("b", "data") / "notes").exists()
    # b's mirrord is away while a comes back: when it starts, the peer is already there, and
    # what changed meanwhile is one file's content (an incremental pass carries it; the wait
    # keeps a's last pushes out of the catch-up walk's margin, which would make it a full pass).
    time.sleep(CATCH_UP_MARGIN + 0.5)
    pair.mirrord["b"].stop()
    with open(pair.tree("b", "data") / "notes", "a") as f:
        f.write("while a was down\n")
    pair.revive("a")
    assert wait_until(lambda: pair.takeover.role("a") == "STANDBY", 20, 0.1)
    assert wait_until(lambda: pair.orphans("a"), 30, 0.2), pair.log("a")[-3000:]
    moved = {o["path"] for o in pair.orphans("a")}
    # The set-aside took some of what b has off a (the case this test is about).
    assert moved & on_b, sorted(moved)[:5]
    pair.start_mirrord("b")
    notes = pair.tree("a", "data") / "notes"
    assert wait_until(lambda: "while a was down" in notes.read_text(), 30, 0.1), pair.log("b")[
        -3000:
    ]
    assert wait_until(lambda: not missing_on(pair, "a", on_b), 30, 0.2), missing_on(pair, "a", on_b)


def test_heartbeat_partition_mirrors_toward_nobody(pair: PairLab) -> None:
    """With only the heartbeats cut, the standby stays passive and pushes nothing, the active
    holds its changes (it cannot tell the peer is standby), and mirroring resumes on healing."""
    faults = [pair.lab.block(n, proto="udp", port=HB_PORT) for n in ("a", "b")]
    try:
        assert wait_until(lambda: not pair.pushing("a"), 10, 0.1), pair.mirror_status("a")
        (pair.tree("a", "data") / "during").write_text("during\n")
        (pair.tree("b", "data") / "stray").write_text("stray\n")
        time.sleep(3.0)
        assert not (pair.tree("b", "data") / "during").exists()
        assert not (pair.tree("a", "data") / "stray").exists()
        assert pair.takeover.role("b") != "ACTIVE" and not pair.pushing("b")
    finally:
        for f in faults:
            pair.lab.unblock(f)
    assert wait_until((pair.tree("b", "data") / "during").exists, 20, 0.1)
    assert not (pair.tree("a", "data") / "stray").exists()
