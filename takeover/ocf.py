"""Service resources' rules: OCF exit codes, agent meta-data, command lines. Pure: no I/O.

Three kinds of service resource share one vocabulary (`Outcome`):

- OCF resource agents (the OCF Resource Agent API 1.0, as Debian's `resource-agents` ships
  them): an executable under `$OCF_ROOT/resource.d/PROVIDER/TYPE`, run with the action as its
  only argument and its parameters as `OCF_RESKEY_<name>` in the environment. Its exit code
  means what `OCF_EXIT` says (the values of `ocf-returncodes`);
- systemd units: `systemctl start|stop`, and `ActiveState` as the monitor;
- plain commands: argv for start, stop and status, status answering with LSB's codes
  (0 running, 3 not running; 1 and 2 a dead service with a leftover pid or lock file).

What the effects module (takeover.backends.services) does with an outcome is decided here.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

# The OCF RA API version we speak (OCF_RA_VERSION_MAJOR / _MINOR).
RA_VERSION: Final = (1, 0)
DEFAULT_OCF_ROOT: Final = "/usr/lib/ocf"
# Seconds an action may take when neither the file nor the agent's meta-data says.
DEFAULT_TIMEOUT: Final = 20.0
# Seconds `meta-data` may take (it only prints XML).
META_DATA_TIMEOUT: Final = 10.0


class Outcome(enum.Enum):
    """What one action's exit says about the resource."""

    # The action did what was asked; a monitor: it runs.
    RUNNING = "running"
    # A monitor (or a stop, which then succeeded): it does not run, cleanly.
    STOPPED = "stopped"
    # It failed (soft, in Pacemaker's words): a restart here may help, else the peer.
    FAILED = "failed"
    # It cannot work on this node (hard: not installed, no permission, bad params for this
    # node): no restart here, the peer may try.
    FAILED_HERE = "failed-here"
    # The configuration is wrong: it would fail the same on the peer, so it is not retried
    # there (Pacemaker bans such a resource from every node).
    MISCONFIGURED = "misconfigured"


@dataclass(frozen=True)
class ExitMeaning:
    """One row of an exit-code table."""

    name: str
    outcome: Outcome
    # Why the row says so.
    reason: str


# The OCF RA API's exit codes (resource-agents' ocf-returncodes) and what each means here.
OCF_EXIT: Final[Mapping[int, ExitMeaning]] = {
    0: ExitMeaning("OCF_SUCCESS", Outcome.RUNNING, "success (a monitor: running)"),
    1: ExitMeaning("OCF_ERR_GENERIC", Outcome.FAILED, "generic error: soft, retry here first"),
    2: ExitMeaning(
        "OCF_ERR_ARGS",
        Outcome.FAILED_HERE,
        "the params are invalid on this node (a path missing here): hard, the peer may",
    ),
    3: ExitMeaning(
        "OCF_ERR_UNIMPLEMENTED", Outcome.FAILED_HERE, "the action is not implemented: hard"
    ),
    4: ExitMeaning(
        "OCF_ERR_PERM", Outcome.FAILED_HERE, "insufficient permission on this node: peer may"
    ),
    5: ExitMeaning(
        "OCF_ERR_INSTALLED",
        Outcome.FAILED_HERE,
        "a program or file it needs is missing on this node: the peer may have it",
    ),
    6: ExitMeaning(
        "OCF_ERR_CONFIGURED",
        Outcome.MISCONFIGURED,
        "the configuration is wrong: not retried on the peer, which reads the same file",
    ),
    7: ExitMeaning("OCF_NOT_RUNNING", Outcome.STOPPED, "not running, cleanly stopped"),
    8: ExitMeaning(
        "OCF_RUNNING_MASTER", Outcome.RUNNING, "running as master (a promotable agent): it runs"
    ),
    9: ExitMeaning(
        "OCF_FAILED_MASTER", Outcome.FAILED, "failed as master: a failure like generic error"
    ),
}

# LSB init-script `status` codes; any other code counts as status unknown, a failure.
LSB_STATUS: Final[Mapping[int, ExitMeaning]] = {
    0: ExitMeaning("running", Outcome.RUNNING, "program is running or service is OK"),
    1: ExitMeaning("dead, pid file", Outcome.FAILED, "program is dead, a pid file exists"),
    2: ExitMeaning("dead, lock file", Outcome.FAILED, "program is dead and /var/lock file exists"),
    3: ExitMeaning("not running", Outcome.STOPPED, "program is not running"),
}

# An init script's start or stop exiting so: "program is not configured" (LSB 20.2).
LSB_NOT_CONFIGURED: Final = 6

# systemd's ActiveState values and what each says of the unit.
SYSTEMD_STATE: Final[Mapping[str, ExitMeaning]] = {
    "active": ExitMeaning("active", Outcome.RUNNING, "started and running"),
    "reloading": ExitMeaning("reloading", Outcome.RUNNING, "running, rereading its config"),
    "inactive": ExitMeaning("inactive", Outcome.STOPPED, "stopped cleanly"),
    "failed": ExitMeaning("failed", Outcome.FAILED, "exited with an error or was killed"),
    "activating": ExitMeaning("activating", Outcome.FAILED, "not up yet (start still running)"),
    "deactivating": ExitMeaning("deactivating", Outcome.FAILED, "not down yet (stop running)"),
}

# A start or stop that timed out, or an agent that could not be run at all.
TIMED_OUT: Final = ExitMeaning("timeout", Outcome.FAILED, "the action did not end in time")
UNKNOWN_EXIT: Final = ExitMeaning("unknown", Outcome.FAILED, "an exit code the standard lacks")


def ocf_meaning(code: int) -> ExitMeaning:
    """Return what an OCF agent's exit code means."""
    return OCF_EXIT.get(code, UNKNOWN_EXIT)


def lsb_meaning(code: int, action: str) -> ExitMeaning:
    """Return what a command's exit code means: `status` by LSB, start and stop 0 = done."""
    if action == "status":
        return LSB_STATUS.get(code, UNKNOWN_EXIT)
    if code == 0:
        return ExitMeaning("ok", Outcome.RUNNING, f"{action} succeeded")
    if code == LSB_NOT_CONFIGURED:
        # LSB's init-script code 6, "program is not configured": the OCF code it became.
        return ExitMeaning(
            "not configured", Outcome.MISCONFIGURED, f"{action}: {OCF_EXIT[6].reason}"
        )
    return ExitMeaning(f"exit {code}", Outcome.FAILED, f"{action} failed")


def systemd_meaning(active_state: str) -> ExitMeaning:
    """Return what a unit's ActiveState means (as `systemctl show -P ActiveState` prints it)."""
    return SYSTEMD_STATE.get(active_state.strip(), UNKNOWN_EXIT)


def stop_succeeded(meaning: ExitMeaning) -> bool:
    """Return whether a stop left the resource stopped: OCF 0, or 7 (it was not running)."""
    return meaning.outcome in {Outcome.RUNNING, Outcome.STOPPED}


# --- agents -----------------------------------------------------------------------------------

AGENT_RE: Final = r"([A-Za-z0-9_.-]+):([A-Za-z0-9_.-]+)"


def split_agent(agent: str) -> tuple[str, str] | None:
    """Return (provider, type) of "provider:type" (the `ocf:` class prefix allowed), or None."""
    text = agent.removeprefix("ocf:")
    match = re.fullmatch(AGENT_RE, text)
    return (match.group(1), match.group(2)) if match else None


def agent_path(root: str, provider: str, kind: str) -> str:
    """Return where the agent's executable lives under the OCF root."""
    return f"{root.rstrip('/')}/resource.d/{provider}/{kind}"


def ocf_env(
    *,
    root: str,
    provider: str,
    kind: str,
    instance: str,
    params: Mapping[str, str],
    timeout: float,
) -> dict[str, str]:
    """Return the OCF environment of one action (to be added to a minimal base environment).

    OCF_RESKEY_CRM_meta_timeout is the action's timeout in milliseconds, as Pacemaker passes
    it; agents such as Filesystem size their own retries from it.
    """
    env = {
        "OCF_ROOT": root,
        "OCF_RA_VERSION_MAJOR": str(RA_VERSION[0]),
        "OCF_RA_VERSION_MINOR": str(RA_VERSION[1]),
        "OCF_RESOURCE_INSTANCE": instance,
        "OCF_RESOURCE_TYPE": kind,
        "OCF_RESOURCE_PROVIDER": provider,
        "OCF_RESKEY_CRM_meta_timeout": str(int(timeout * 1000)),
    }
    for name, value in params.items():
        env[f"OCF_RESKEY_{name}"] = value
    return env


@dataclass(frozen=True)
class Param:
    """One parameter an agent declares."""

    name: str
    required: bool = False
    default: str | None = None


@dataclass(frozen=True)
class MetaData:
    """What an agent's `meta-data` says: its parameters and its actions' advised timeouts."""

    name: str
    params: Mapping[str, Param] = field(default_factory=dict)
    # Action -> advised timeout, seconds.
    timeouts: Mapping[str, float] = field(default_factory=dict)
    # Action -> advised interval, seconds (monitor).
    intervals: Mapping[str, float] = field(default_factory=dict)

    def timeout(self, action: str) -> float:
        """Return the agent's advised timeout for `action`, else DEFAULT_TIMEOUT."""
        return self.timeouts.get(action, DEFAULT_TIMEOUT)


class MetaDataError(ValueError):
    """An agent's meta-data is not the OCF XML it should be."""


_DURATION: Final = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|msec|s|sec|m|min|h|hr)?\s*", re.I)
_UNIT: Final = {"ms": 0.001, "msec": 0.001, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0}


def ocf_seconds(text: str) -> float:
    """Return a meta-data duration in seconds: "20s", "2m", "500ms", "1h", or bare seconds."""
    match = _DURATION.fullmatch(text)
    if match is None:
        raise MetaDataError(f'"{text}" is not a duration')
    unit = (match.group(2) or "s").lower()
    return float(match.group(1)) * _UNIT.get(unit, 3600.0)


def parse_meta_data(text: str) -> MetaData:
    """Parse an agent's `meta-data` output; raise MetaDataError naming what is wrong."""
    # Loaded here: mirrord reads the cluster config (and so this module) but no meta-data.
    import xml.etree.ElementTree as ET  # noqa: PLC0415

    try:
        root = ET.fromstring(text.strip())
    except ET.ParseError as err:
        raise MetaDataError(f"not XML: {err}") from err
    if root.tag != "resource-agent":
        raise MetaDataError(f"root element is <{root.tag}>, not <resource-agent>")
    params: dict[str, Param] = {}
    for p in root.iterfind("parameters/parameter"):
        name = p.get("name")
        if not name:
            raise MetaDataError("a <parameter> has no name")
        content = p.find("content")
        default = content.get("default") if content is not None else None
        params[name] = Param(name, p.get("required", "0") in {"1", "true", "yes"}, default)
    timeouts: dict[str, float] = {}
    intervals: dict[str, float] = {}
    for a in root.iterfind("actions/action"):
        action = a.get("name")
        if not action:
            raise MetaDataError("an <action> has no name")
        # A monitor may be listed once per role or depth: the first one (depth 0) counts.
        if a.get("timeout") and action not in timeouts:
            timeouts[action] = ocf_seconds(a.get("timeout", ""))
        if a.get("interval") and action not in intervals:
            intervals[action] = ocf_seconds(a.get("interval", ""))
    return MetaData(root.get("name", ""), params, timeouts, intervals)


def param_problems(meta: MetaData, params: Mapping[str, str]) -> list[tuple[str, str]]:
    """Return (param, message) for params the agent does not know and required ones missing."""
    out: list[tuple[str, str]] = []
    known = ", ".join(sorted(meta.params)) or "none"
    for name in params:
        if name not in meta.params:
            out.append((name, f"the agent {meta.name} has no such parameter (it has: {known})"))
    for p in meta.params.values():
        if p.required and p.name not in params:
            out.append((p.name, f"required by the agent {meta.name}, missing"))
    return out


# --- systemd ----------------------------------------------------------------------------------


def systemctl_argv(action: str, unit: str) -> list[str]:
    """Return the systemctl command for an action on `unit`: start, stop or monitor."""
    if action == "start":
        return ["systemctl", "start", "--no-ask-password", "--", unit]
    if action == "stop":
        return ["systemctl", "stop", "--no-ask-password", "--", unit]
    if action in {"monitor", "status"}:
        return ["systemctl", "show", "--property=ActiveState", "--value", "--", unit]
    if action == "exists":
        return ["systemctl", "show", "--property=LoadState", "--value", "--", unit]
    raise ValueError(f"no systemctl command for {action!r}")


__all__ = [
    "DEFAULT_OCF_ROOT",
    "DEFAULT_TIMEOUT",
    "LSB_STATUS",
    "META_DATA_TIMEOUT",
    "OCF_EXIT",
    "SYSTEMD_STATE",
    "TIMED_OUT",
    "ExitMeaning",
    "MetaData",
    "MetaDataError",
    "Outcome",
    "Param",
    "agent_path",
    "lsb_meaning",
    "ocf_env",
    "ocf_meaning",
    "ocf_seconds",
    "param_problems",
    "parse_meta_data",
    "split_agent",
    "stop_succeeded",
    "systemctl_argv",
    "systemd_meaning",
]
