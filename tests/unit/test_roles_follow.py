"""What mirrord does on each role or peer change: the table of mirrord.roles.follow."""

from __future__ import annotations

from typing import Any

import pytest

from mirrord.roles import (
    GAP_NOTHING,
    GAP_SEND,
    GAP_SET_ASIDE,
    Direction,
    Gap,
    Peer,
    RootAtStart,
    follow,
    resumes_receiving,
)

STANDBY = Peer(alive=True, role="STANDBY")
ACTIVE = Peer(alive=True, role="ACTIVE")
LOST = Peer(alive=False, role="STANDBY")
PUSHING = Direction(True, False, "pushing")
HOLDING = Direction(False, False, "holding")
RECEIVING = Direction(False, True, "receiving")

# (case, role now, peer before, peer now, direction before, roots marked) ->
# (push, receive, set orphans aside, full pass owed, catch-up walk, mark the roots).
CASES = [
    ("takeover restarts on the active", None, STANDBY, STANDBY, PUSHING, True,
     (False, False, False, False, False, False)),
    ("... STARTING on the active", "STARTING", STANDBY, STANDBY, HOLDING, True,
     (False, False, False, False, False, False)),
    ("... and back ACTIVE", "ACTIVE", STANDBY, STANDBY, HOLDING, True,
     (True, False, False, False, True, False)),
    ("takeover restarts on the standby", None, ACTIVE, ACTIVE, RECEIVING, False,
     (False, True, False, False, False, False)),
    ("... STARTING on the standby", "STARTING", ACTIVE, ACTIVE, RECEIVING, False,
     (False, True, False, False, False, False)),
    ("the peer is lost", "ACTIVE", STANDBY, LOST, PUSHING, True,
     (False, False, False, False, False, False)),
    ("the peer returns", "ACTIVE", LOST, STANDBY, HOLDING, True,
     (True, False, False, True, True, False)),
    ("the node becomes standby", "STANDBY", STANDBY, ACTIVE, HOLDING, True,
     (False, True, True, False, False, False)),
    ("the node becomes ACTIVE", "ACTIVE", ACTIVE, STANDBY, RECEIVING, False,
     (True, False, False, False, True, True)),
    ("both ACTIVE", "ACTIVE", STANDBY, ACTIVE, PUSHING, True,
     (False, False, False, False, False, False)),
]  # fmt: skip


Case = tuple[str, str | None, Peer, Peer, Direction, bool, tuple[bool, ...]]


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_follow_table(case: Case) -> None:
    """Each row of the module's table: push, receive, set aside, full pass, catch-up, mark."""
    _name, role, peer_before, peer, before, marked, expected = case
    step = follow(role, peer_before, peer, before, marked=marked, node="a", peer_name="b")
    got = (
        step.direction.push,
        step.direction.receiving,
        step.set_aside,
        step.full_pass is not None,
        step.catch_up,
        step.mark_source,
    )
    assert got == expected


def test_a_returned_peer_is_named_in_the_full_pass_reason() -> None:
    """The full pass a returned peer is owed says which peer came back."""
    step = follow("ACTIVE", LOST, STANDBY, HOLDING, marked=True, node="a", peer_name="b")
    assert step.full_pass == "peer b returned"


# (case, role now, gap before, epoch now, peer's epoch, direction before) ->
# (gap after, began, how it ended).
GAP_CASES = [
    ("takeover lost on the standby: the gap begins", None, None, 3, 2, RECEIVING,
     (Gap(3), True, None)),
    ("... knowing the peer's higher epoch", None, None, 0, 1, RECEIVING, (Gap(1), True, None)),
    ("takeover lost on the active: no gap (writes are journaled)", None, None, 3, 2, PUSHING,
     (None, False, None)),
    ("takeover lost before it told a role: no gap", None, None, None, None, HOLDING,
     (None, False, None)),
    ("lost again within the gap", None, Gap(3), None, 3, RECEIVING, (Gap(3), False, None)),
    ("STARTING keeps the gap", "STARTING", Gap(3), 3, 3, RECEIVING, (Gap(3), False, None)),
    ("ARBITRATING keeps the gap", "ARBITRATING", Gap(3), 3, 3, RECEIVING,
     (Gap(3), False, None)),
    ("FENCING keeps the gap", "FENCING", Gap(3), 3, 3, RECEIVING, (Gap(3), False, None)),
    ("back ACTIVE: what changed is sent", "ACTIVE", Gap(3), 4, 3, RECEIVING,
     (None, False, GAP_SEND)),
    ("back RELEASING (the seed-7 switchover): sent by the flush", "RELEASING", Gap(3), 4, 3,
     RECEIVING, (None, False, GAP_SEND)),
    ("back STANDBY, same epoch: it served nobody", "STANDBY", Gap(3), 3, 3, RECEIVING,
     (None, False, GAP_NOTHING)),
    ("back STANDBY with the peer's epoch loaded as its own: it served nobody", "STANDBY",
     Gap(1), 1, 1, RECEIVING, (None, False, GAP_NOTHING)),
    ("back STANDBY above every epoch known: it served, set aside", "STANDBY", Gap(3), 4, 5,
     RECEIVING, (None, False, GAP_SET_ASIDE)),
    ("back STANDBY, epoch never told: set aside", "STANDBY", Gap(None), 4, 3, RECEIVING,
     (None, False, GAP_SET_ASIDE)),
    ("back STANDBY, epoch not told now: set aside", "STANDBY", Gap(3), None, 3, RECEIVING,
     (None, False, GAP_SET_ASIDE)),
    ("back ISOLATED above every epoch known: set aside", "ISOLATED", Gap(3), 4, 3, RECEIVING,
     (None, False, GAP_SET_ASIDE)),
    ("back FAULT, same epoch: nothing", "FAULT", Gap(3), 3, 3, RECEIVING,
     (None, False, GAP_NOTHING)),
]  # fmt: skip


@pytest.mark.parametrize("case", GAP_CASES, ids=[case[0] for case in GAP_CASES])
def test_gap_table(case: tuple[Any, ...]) -> None:
    """Each row of the gap table: when takeover lost while receiving opens, keeps, ends it."""
    _name, role, gap, epoch, peer_epoch, before, expected = case
    step = follow(role, ACTIVE, ACTIVE, before, marked=False, node="a", peer_name="b",
                  gap=gap, epoch=epoch, peer_epoch=peer_epoch)  # fmt: skip
    assert (step.gap, step.open_gap, step.end_gap) == expected


def test_seed_7_sequence_ends_the_gap_by_sending_or_setting_aside() -> None:
    """Seed 7: a standby's takeover dies, comes back, serves and hands over before mirrord
    subscribes again; what it wrote is sent (RELEASING seen) or set aside (STANDBY seen),
    never left to the peer's pushes."""
    step = follow("STANDBY", STANDBY, ACTIVE, HOLDING, marked=True, node="a", peer_name="b",
                  epoch=3)  # fmt: skip
    assert step.direction.receiving and step.gap is None
    lost = follow(None, ACTIVE, ACTIVE, step.direction, marked=False, node="a", peer_name="b",
                  gap=step.gap, epoch=3, peer_epoch=3)  # fmt: skip
    assert lost.direction.receiving and lost.open_gap and lost.gap == Gap(3)
    # The peer is unheard meanwhile (takeover gone), then STANDBY as a hands over to it.
    releasing = follow("RELEASING", LOST, STANDBY, lost.direction, marked=True, node="a",
                       peer_name="b", gap=lost.gap, epoch=4)  # fmt: skip
    assert releasing.direction.push and releasing.end_gap == GAP_SEND
    late = follow("STANDBY", LOST, ACTIVE, lost.direction, marked=True, node="a",
                  peer_name="b", gap=lost.gap, epoch=4)  # fmt: skip
    assert late.direction.receiving and late.end_gap == GAP_SET_ASIDE


# (received by the last run, marked, dirty paths) per root -> starts receiving.
RESUMES = [
    ("every root received, clean", [(True, False, 0), (True, False, 0)], True),
    ("one root not received (a reload added it, or the node was the source)",
     [(True, False, 0), (False, False, 0)], False),
    ("a root still marked (a gap not settled, a crash as the source)", [(True, True, 0)], False),
    ("dirty paths left", [(True, False, 3)], False),
    ("no root", [], False),
]  # fmt: skip


@pytest.mark.parametrize("case", RESUMES, ids=[case[0] for case in RESUMES])
def test_resumes_receiving_table(case: tuple[str, list[tuple[bool, bool, int]], bool]) -> None:
    """A restarted mirrord receives at once only if the last run received into every root
    and set everything aside (mirrord.roles, "across a restart")."""
    _name, roots, expected = case
    assert resumes_receiving(RootAtStart(*r) for r in roots) is expected
