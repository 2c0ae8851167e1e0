"""What mirrord does on each role or peer change: the table of mirrord.roles.follow."""

from __future__ import annotations

import pytest

from mirrord.roles import Direction, Peer, follow

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
