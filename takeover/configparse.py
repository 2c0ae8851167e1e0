"""Typed reading of TOML tables that records every problem with its key path.

Shared by `takeover.config` (the cluster file) and `mirrord.policy` (mirror policy files), so
both report problems the same way: one line each, `"<file>: <key.path>: <message>"`, all of them
collected before anything is raised (lsyncd's `checkgauge` rejects unknown keys the same way).

Exceptions:

    ConfigError            one or more problems in a configuration file; str() = one a line
     +-- ConfigMissing     the file itself cannot be read (systemd: "not configured")
"""

from __future__ import annotations

import ipaddress
import math
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Final, TypeAlias

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
IPInterface: TypeAlias = ipaddress.IPv4Interface | ipaddress.IPv6Interface


class ConfigError(Exception):
    """A configuration file is invalid; `problems` holds one message per problem."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems: list[str] = list(problems)
        super().__init__("\n".join(self.problems))


class ConfigMissing(ConfigError):
    """The configuration file does not exist or cannot be read."""


# Units a duration may carry, in seconds. One unit per value keeps "1h30m" from hiding a typo.
_UNITS: Final[dict[str, float]] = {
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}
_DURATION_RE: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
DURATION_HINT: Final = 'a duration with a unit such as "200ms", "1.5s", "5m", "1h" or "7d"'


def parse_duration(value: object) -> float:
    """Return the seconds a duration string such as "200ms" or "7d" stands for.

    Raises ValueError with a message fit for an operator. A bare number is refused: "5" could
    mean seconds or milliseconds, and heartbeat timings differ by exactly that factor.
    """
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"must be {DURATION_HINT}, got {describe(value)}")
    if not isinstance(value, str):
        raise ValueError(
            f"must be {DURATION_HINT}, got the bare number {value}: "
            f'write the unit, e.g. "{value}ms" or "{value}s"'
        )
    match = _DURATION_RE.match(value)
    if match is None:
        if re.fullmatch(r"\s*\d+(?:\.\d+)?\s*", value):
            raise ValueError(
                f'must be {DURATION_HINT}, got "{value}": write the unit, '
                f'e.g. "{value.strip()}ms" or "{value.strip()}s"'
            )
        raise ValueError(f'must be {DURATION_HINT}, got "{value}"')
    # Rounded so that "200ms" is exactly 0.2, as a reader of the file would expect.
    return round(float(match.group(1)) * _UNITS[match.group(2)], 9)


def format_seconds(seconds: float) -> str:
    """Render seconds for a message: 0.2 -> "0.2 s"."""
    return f"{seconds:g} s"


def describe(value: object) -> str:
    """Name a TOML value's type (and show it when short) for an error message."""
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a number ({value:g})"
    if isinstance(value, str):
        return f'a string ("{value}")' if len(value) <= 40 else "a string"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return f"a {type(value).__name__}"


class Required:
    """Marks a getter's default as 'the key must be present'."""

    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Final = Required()


@dataclass
class Problems:
    """Collects problems for one file; `failed` remembers which keys could not be read.

    Cross-checks consult `bad()` first so a key that is already wrong does not also produce
    a second, confusing complaint about its relation to another key.
    """

    # The name printed before every problem: a file name such as "cluster.toml".
    source: str
    # Problem lines, shared between every file of one load (see `for_file`).
    lines: list[str] = field(default_factory=list)
    # Key paths whose value was missing or invalid.
    failed: set[str] = field(default_factory=set)

    def add(self, key: str, message: str) -> None:
        """Record one problem at a key path (empty path: the file as a whole)."""
        self.failed.add(key)
        where = f"{self.source}: {key}: " if key else f"{self.source}: "
        self.lines.append(where + message)

    def bad(self, *keys: str) -> bool:
        """Tell whether any of these key paths (or a key below them) already has a problem."""
        return any(f == k or f.startswith((k + ".", k + "[")) for k in keys for f in self.failed)

    def for_file(self, source: str) -> Problems:
        """Return a collector for another file that adds to the same list of lines."""
        return Problems(source, self.lines)

    def raise_if_any(self) -> None:
        """Raise ConfigError with every line collected so far, if there is any."""
        if self.lines:
            raise ConfigError(self.lines)


def read_toml(path: Path, source: str) -> dict[str, object]:
    """Read and parse a TOML file; syntax errors name the file and the line."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigMissing([f"{source}: cannot read {path}: {exc.strerror or exc}"]) from exc
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{source}: not UTF-8 text: {exc.reason}"]) from exc
    except tomllib.TOMLDecodeError as exc:
        # Python 3.11's TOMLDecodeError carries the position only in its message.
        text = str(exc)
        match = re.search(r"\(at line (\d+), column (\d+)\)$", text)
        if match:
            reason = text[: match.start()].strip()
            where = f"line {match.group(1)}, column {match.group(2)}"
        else:
            reason, where = text, "end of file"
        raise ConfigError([f"{source}: {where}: invalid TOML: {reason}"]) from exc


def join_key(prefix: str, name: str) -> str:
    """Join a key path and a key: ("node[1]", "name") -> "node[1].name"."""
    return f"{prefix}.{name}" if prefix else name


class Table:
    """A read-only view of one TOML table whose typed getters record problems by key path.

    Every getter marks its key as known; `finish()` then reports the keys nobody asked for.
    On a bad or missing value a getter records the problem and returns its default (or a
    zero value for a required key): the load raises at the end, so that value is never used.
    """

    def __init__(self, data: Mapping[str, object], path: str, problems: Problems) -> None:
        self.data = data
        self.prefix = path
        self.problems = problems
        self._known: set[str] = set()

    def key(self, name: str) -> str:
        """Return the full key path of one of this table's keys."""
        return join_key(self.prefix, name)

    def has(self, name: str) -> bool:
        """Tell whether the key is present (and mark it known)."""
        self._known.add(name)
        return name in self.data

    def problem(self, name: str, message: str) -> None:
        """Record a problem at one of this table's keys."""
        self.problems.add(self.key(name), message)

    def bad(self, *names: str) -> bool:
        """Tell whether any of these keys already has a problem."""
        return self.problems.bad(*(self.key(n) for n in names))

    def _fetch(self, name: str, default: object) -> tuple[bool, object]:
        # (present, value); a missing required key is recorded here, once.
        self._known.add(name)
        if name in self.data:
            return True, self.data[name]
        if default is REQUIRED:
            self.problem(name, "required key is missing")
        return False, default

    def raw(self, name: str) -> object:
        """Return a value unchecked (None when absent), for keys that accept several types."""
        self._known.add(name)
        return self.data.get(name)

    def string(
        self,
        name: str,
        default: str | Required = REQUIRED,
        *,
        choices: Iterable[str] | None = None,
        pattern: str | None = None,
        what: str = "",
    ) -> str:
        """Return a string key, optionally one of `choices` or matching `pattern`."""
        present, value = self._fetch(name, default)
        if not present:
            return "" if isinstance(default, Required) else default
        fallback = "" if isinstance(default, Required) else default
        if not isinstance(value, str):
            self.problem(name, f"must be a string, got {describe(value)}")
            return fallback
        if choices is not None:
            allowed = list(choices)
            if value not in allowed:
                options = ", ".join(f'"{c}"' for c in allowed)
                self.problem(name, f'must be one of {options}, got "{value}"')
                return fallback
        if pattern is not None and re.fullmatch(pattern, value) is None:
            self.problem(name, f'must be {what or "valid"}, got "{value}"')
            return fallback
        if not value:
            self.problem(name, "must not be empty")
            return fallback
        return value

    def integer(
        self,
        name: str,
        default: int | Required = REQUIRED,
        *,
        lo: int | None = None,
        hi: int | None = None,
    ) -> int:
        """Return an integer key within [lo, hi] (either bound optional)."""
        present, value = self._fetch(name, default)
        fallback = 0 if isinstance(default, Required) else default
        if not present:
            return fallback
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(name, f"must be an integer, got {describe(value)}")
            return fallback
        if not in_range(value, lo, hi):
            self.problem(name, f"must be {range_text(lo, hi)}, got {value}")
            return fallback
        return value

    def number(
        self,
        name: str,
        default: float | Required = REQUIRED,
        *,
        above: float | None = None,
        hi: float | None = None,
    ) -> float:
        """Return a number (integer or float) key with `above < value <= hi`."""
        present, value = self._fetch(name, default)
        fallback = 0.0 if isinstance(default, Required) else default
        if not present:
            return fallback
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.problem(name, f"must be a number, got {describe(value)}")
            return fallback
        number = float(value)
        if (
            not math.isfinite(number)
            or (above is not None and number <= above)
            or (hi is not None and number > hi)
        ):
            bounds = f"greater than {above:g}" if above is not None else ""
            if hi is not None:
                bounds += (" and " if bounds else "") + f"at most {hi:g}"
            self.problem(name, f"must be {bounds or 'finite'}, got {value}")
            return fallback
        return number

    def boolean(self, name: str, default: bool) -> bool:
        """Return a boolean key (true/false, never 0/1 or "yes")."""
        present, value = self._fetch(name, default)
        if present and not isinstance(value, bool):
            self.problem(name, f"must be true or false, got {describe(value)}")
            return default
        return bool(value)

    def duration(
        self,
        name: str,
        default: float | Required = REQUIRED,
        *,
        minimum: float | None = None,
        positive: bool = False,
    ) -> float:
        """Return a duration key in seconds ("200ms", "5s", "1h", "7d")."""
        present, value = self._fetch(name, default)
        fallback = 0.0 if isinstance(default, Required) else default
        if not present:
            return fallback
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            self.problem(name, str(exc))
            return fallback
        if positive and seconds <= 0:
            self.problem(name, f"must be greater than 0 s, got {value}")
            return fallback
        if minimum is not None and seconds < minimum:
            self.problem(name, f"must be at least {format_seconds(minimum)}, got {value}")
            return fallback
        return seconds

    def strings(
        self,
        name: str,
        default: tuple[str, ...] | Required = REQUIRED,
        *,
        nonempty: bool = False,
    ) -> tuple[str, ...]:
        """Return an array of non-empty strings (`nonempty`: at least one element)."""
        present, value = self._fetch(name, default)
        fallback: tuple[str, ...] = () if isinstance(default, Required) else default
        if not present:
            return fallback
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.problem(name, f"must be an array of non-empty strings, got {describe(value)}")
            return fallback
        if nonempty and not value:
            self.problem(name, "must list at least one element")
            return fallback
        return tuple(str(v) for v in value)

    def path(self, name: str, default: str | Required = REQUIRED) -> Path:
        """Return an absolute, normalized file system path key."""
        present, value = self._fetch(name, default)
        if not present:
            return Path(default) if isinstance(default, str) else Path()
        text = value if isinstance(value, str) else None
        problem = absolute_path_problem(text) if text is not None else None
        if text is None:
            problem = f"must be an absolute path (a string), got {describe(value)}"
        if problem:
            self.problem(name, problem)
            return Path(default) if isinstance(default, str) else Path()
        return Path(normalize_path(str(text)))

    def address(self, name: str) -> IPAddress | None:
        """Return a required IPv4 or IPv6 address key (None after a problem)."""
        present, value = self._fetch(name, REQUIRED)
        if not present:
            return None
        address = parse_address(value)
        if isinstance(address, str):
            self.problem(name, address)
            return None
        return address

    def table(self, name: str) -> Table | None:
        """Return a sub-table, or None when absent (or not a table: recorded)."""
        present, value = self._fetch(name, None)
        if not present:
            return None
        if not isinstance(value, Mapping):
            self.problem(name, f"must be a table ([{self.key(name)}]), got {describe(value)}")
            return None
        return Table(value, self.key(name), self.problems)

    def tables(self, name: str) -> list[Table]:
        """Return the elements of an array of tables, keyed `name[i]`."""
        present, value = self._fetch(name, None)
        if not present:
            return []
        if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
            self.problem(
                name,
                f"must be an array of tables ([[{self.key(name)}]]), got {describe(value)}",
            )
            return []
        return [Table(v, f"{self.key(name)}[{i}]", self.problems) for i, v in enumerate(value)]

    def finish(self) -> None:
        """Report every key of this table that no getter asked for."""
        for name in self.data:
            if name in self._known:
                continue
            # Loaded for a mistake only: a daemon whose file is right never holds it.
            import difflib  # noqa: PLC0415

            close = difflib.get_close_matches(name, sorted(self._known), n=1)
            hint = f' (did you mean "{close[0]}"?)' if close else ""
            self.problem(name, "unknown key" + hint)


def in_range(value: int, lo: int | None, hi: int | None) -> bool:
    """Tell whether lo <= value <= hi, either bound optional."""
    return (lo is None or value >= lo) and (hi is None or value <= hi)


def range_text(lo: int | None, hi: int | None) -> str:
    """Describe an integer range for a message."""
    if lo is not None and hi is not None:
        return f"between {lo} and {hi}"
    if lo is not None:
        return f"at least {lo}"
    if hi is not None:
        return f"at most {hi}"
    return "an integer"


def absolute_path_problem(text: str) -> str | None:
    """Return why a string is not an acceptable absolute path, or None when it is."""
    if not text:
        return "must be an absolute path, got an empty string"
    if not text.startswith("/"):
        return f'must be an absolute path (starting with "/"), got "{text}"'
    if ".." in PurePosixPath(text).parts:
        return f'must not contain "..", got "{text}"'
    if "\0" in text:
        return "must not contain a NUL character"
    return None


def normalize_path(text: str) -> str:
    """Drop repeated and trailing slashes and "." parts of an absolute path."""
    return str(PurePosixPath(text))


def parse_address(value: object) -> IPAddress | str:
    """Return an IP address, or the message saying why `value` is not a usable one."""
    if not isinstance(value, str):
        return f"must be an IPv4 or IPv6 address (a string), got {describe(value)}"
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return f'must be an IPv4 or IPv6 address, got "{value}"'
    if address.is_unspecified or address.is_multicast:
        return f"must be a unicast address, got {value}"
    return address
