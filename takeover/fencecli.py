"""`takeover fence NODE` and `takeover check --fencing`: the operator's hands on the BMCs.

`fence` powers one node off through its BMC and confirms it, exactly as the daemon would
(same agent, same attempts and classification); it asks first on a terminal and never fences
the node it runs on. `check --fencing` logs into every configured BMC and reads the power
state without changing it, so a wrong password shows up before the day it is needed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, TextIO

from takeover.cliutil import (
    Command,
    Subcommands,
    add_command,
    config_exit,
    load_local,
    print_json,
    print_problems,
)
from takeover.config import Cluster, Node
from takeover.configparse import ConfigError
from takeover.exits import Exit

if TYPE_CHECKING:
    from takeover.fencing.ipmi import FenceResult, IpmiFencer

PROG = "takeover"

# Builds the agent for a node (tests pass their own); the default imports pyghmi lazily.
AgentFactory = Callable[[Node], "IpmiFencer"]


def ipmi_agent(node: Node) -> IpmiFencer:
    """Return the IPMI agent that powers `node` off (its `[node.fencing]` table)."""
    from takeover.fencing.ipmi import IpmiFencer  # noqa: PLC0415 - pyghmi only when fencing

    assert node.fencing is not None
    return IpmiFencer.from_config(node.name, node.fencing)


def add_fence_command(sub: Subcommands[argparse.ArgumentParser], func: Command) -> None:
    """Register `fence NODE [--yes] [--json]` on a subparsers action."""
    fence = add_command(sub, "fence", func, "power a node off through its BMC and confirm it")
    fence.add_argument("target", metavar="NODE", help="the node to power off (not this one)")
    fence.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    fence.add_argument("--json", action="store_true", help="print the result as one JSON document")


def describe_result(result: FenceResult) -> str:
    """Return one line saying what a fencing or status operation found."""
    tries = len(result.attempts)
    plural = "s" if tries != 1 else ""
    if result.ok:
        return f"power {result.power} ({tries} attempt{plural}, {result.elapsed:.2f}s)"
    return f"{result.error}: {result.detail} ({tries} attempt{plural}, {result.elapsed:.2f}s)"


def confirm(target: str, bmc: str, stdin: TextIO, stderr: TextIO) -> bool:
    """Ask the operator to type the node's name; True only if they did."""
    stderr.write(
        f"This powers off node {target} through its BMC {bmc} at once (no shutdown).\n"
        f"Type the node name to confirm: "
    )
    stderr.flush()
    return stdin.readline().strip() == target


def run_fence(
    args: argparse.Namespace,
    agent: AgentFactory = ipmi_agent,
    stdin: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Fence args.target; exit 0 (confirmed off), 1 (failed or refused), 2/6 (configuration)."""
    stdin = stdin or sys.stdin
    stderr = stderr or sys.stderr
    try:
        cluster, me = load_local(args)
    except ConfigError as err:
        print_problems(PROG, err.problems)
        return config_exit(err)
    names = [n.name for n in cluster.nodes]
    if args.target not in names:
        print_problems(PROG, [f"{args.target}: not a node of {cluster.label} ({', '.join(names)})"])
        return int(Exit.CONFIG)
    if args.target == me.name:
        print_problems(PROG, [f"{args.target} is this node: refusing to fence myself"])
        return int(Exit.FAILURE)
    target = cluster.node(args.target)
    if target.fencing is None:
        index = names.index(args.target)
        print_problems(PROG, [f"{cluster.label}: node[{index}].fencing: not configured"])
        return int(Exit.NOT_CONFIGURED)
    bmc = f"{target.fencing.address}:{target.fencing.port}"
    if not args.yes:
        if not stdin.isatty():
            print_problems(PROG, ["not a terminal: pass --yes to fence without asking"])
            return int(Exit.FAILURE)
        if not confirm(args.target, bmc, stdin, stderr):
            print_problems(PROG, ["not confirmed; nothing done"])
            return int(Exit.FAILURE)
    result = agent(target).power_off_and_confirm()
    if args.json:
        print_json(result.to_dict())
    elif result.ok:
        print(f"{args.target}: fenced via {bmc}: {describe_result(result)}")
    else:
        failed = f"{args.target}: fencing via {bmc} failed: {describe_result(result)}"
        print_problems(PROG, [failed])
        for a in result.attempts:
            print(f"  try {a.number}: {a.result}: {a.detail} ({a.elapsed:.2f}s)", file=stderr)
    return int(Exit.OK if result.ok else Exit.FAILURE)


def check_fencing(cluster: Cluster, json_out: bool, agent: AgentFactory = ipmi_agent) -> int:
    """Read every configured BMC's power state (in parallel); exit 0 if all answered, else 1."""
    fenced = [n for n in cluster.nodes if n.fencing is not None]
    if not fenced:
        if json_out:
            print_json({"ok": False, "summary": "no node has [node.fencing]", "fencing": {}})
        else:
            print_problems(PROG, [f"{cluster.label}: no node has [node.fencing]"])
        return int(Exit.NOT_CONFIGURED)
    with ThreadPoolExecutor(max_workers=len(fenced)) as pool:
        results = list(pool.map(lambda n: agent(n).power_state(), fenced))
    ok = all(r.ok for r in results)
    if json_out:
        print_json({"ok": ok, "fencing": {r.node: r.to_dict() for r in results}})
    else:
        for node, result in zip(fenced, results, strict=True):
            assert node.fencing is not None
            bmc = f"{node.fencing.address}:{node.fencing.port}"
            verdict = "ok" if result.ok else "FAILED"
            print(f"{node.name}: BMC {bmc}: {verdict}: {describe_result(result)}")
    return int(Exit.OK if ok else Exit.FAILURE)
