"""Which running passes stop when the node stops pushing or its final flush ends."""

from __future__ import annotations

import pytest

from mirrord.stopping import Stop, may_start, passes_to_stop

# running, push, released -> roots stopped
CASES = [
    ((), True, False, ()),
    ((), False, False, ()),
    ((), True, True, ()),
    (("/b", "/a"), True, False, ()),
    (("/b", "/a"), False, False, ("/a", "/b")),
    (("/a",), True, True, ("/a",)),
    (("/a",), False, True, ("/a",)),
]


@pytest.mark.parametrize(("running", "push", "released", "stopped"), CASES)
def test_passes_to_stop_from_the_table(
    running: tuple[str, ...], push: bool, released: bool, stopped: tuple[str, ...]
) -> None:
    """Every running pass stops once the node no longer pushes or its flush is over; else none."""
    assert passes_to_stop(running, push, released, "role STANDBY").roots == stopped


def test_stop_says_why() -> None:
    """The reason names the direction's own reason, or the end of the final flush."""
    assert passes_to_stop(["/a"], False, False, "role FAULT") == Stop(
        ("/a",), "no longer pushing (role FAULT)"
    )
    assert "final flush over" in passes_to_stop(["/a"], True, True, "x").why


@pytest.mark.parametrize(
    ("push", "released", "ok"),
    [(True, False, True), (True, True, False), (False, False, False), (False, True, False)],
)
def test_may_start_only_while_pushing_and_not_released(
    push: bool, released: bool, ok: bool
) -> None:
    """No pass starts after the final flush ended, even while the role still says RELEASING."""
    assert may_start(push, released) is ok
