"""Shared start of the effect modules' hand-run entry points (`python -m takeover.probe` ...).

They exist so the lab tests can run one effect inside a node's network namespace and read its
result: one JSON document on stdout, log lines and errors on stderr.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Callable, Coroutine
from typing import Any


def run_json(
    run: Callable[[], Coroutine[Any, Any, object]], errors: tuple[type[Exception], ...]
) -> int:
    """Run `run()` in a new event loop and print its result as JSON; return an exit status.

    An exception of one of `errors` (an effect that could not be set up) prints
    "takeover: error: ..." and returns 1.
    """
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        result = asyncio.run(run())
    except errors as e:
        print(f"takeover: error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0
