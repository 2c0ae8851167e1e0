"""The local control API: a root-only Unix socket speaking JSON lines, and its clients.

Requests are one JSON object per line with a "cmd" key; each gets one JSON reply line
(`{"ok": true, ...}` or `{"ok": false, "error": "..."}`):

    {"cmd": "status"}                        -> {"ok": true, "status": {...}}
    {"cmd": "standby", "force": false}       -> planned switchover away from this node
    {"cmd": "promote"}                       -> make this node active
    {"cmd": "maintenance", "on": true}       -> maintenance mode on/off (for the pair)
    {"cmd": "cleanup", "resource": "web"}    -> clear a configuration error (resource optional)
    {"cmd": "inhibit", "name": "mirrord"}    -> hold a release inhibitor (until release/close)
    {"cmd": "release", "name": "mirrord"}    -> drop it
    {"cmd": "subscribe", "inhibitor": "mirrord"}
        -> {"ok": true, "role": "...", ...} then one {"event": "role", ...} line per transition.
           With "inhibitor", every transition into RELEASING holds an inhibitor of that name
           for this subscriber until it sends {"cmd": "release", "name": ...} on the same
           connection (or disconnects): mirrord's final flush needs no race to win.
           An *expected* inhibitor (mirrord's, when the cluster file has `[mirror]`) is
           waited for even when nobody holds it as RELEASING starts: a subscriber naming it
           during RELEASING holds it at once (the reply's role says RELEASING), until its
           release (takeover.deadlines.release_waits_for).

The socket lives in the run directory with mode 0600: whoever can connect can move the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from takeover.deadlines import release_waits_for

log = logging.getLogger(__name__)

# The inhibitor mirrord's subscription names (mirrord.follow uses it too).
MIRROR_INHIBITOR = "mirrord"
SOCKET_NAME = "takeover.sock"
# One request line may not exceed this; a longer one closes the connection.
MAX_LINE = 64 * 1024


def socket_path(run_dir: Path) -> Path:
    """Return the control socket's path in a run directory."""
    return run_dir / SOCKET_NAME


class ControlError(Exception):
    """The daemon could not be reached, or refused a request (message says why)."""


class Handler(Protocol):
    """What the daemon offers the control server."""

    def status(self) -> dict[str, Any]:
        """Return the current status document."""
        ...

    def command(self, cmd: str, args: dict[str, Any]) -> str | None:
        """Carry out standby/promote; return None when accepted, else the refusal reason."""
        ...


@dataclass(eq=False)
class _Conn:
    """One client connection."""

    writer: asyncio.StreamWriter
    # Inhibitor names this connection holds.
    holds: set[str] = field(default_factory=set)
    subscribed: bool = False
    # Name of the inhibitor taken automatically for this subscriber on RELEASING.
    inhibitor: str | None = None


class Inhibitors:
    """Named release inhibitors, each tied to the connection that holds it.

    Between `begin()` (the node entered RELEASING) and `end()`, the release waits for every
    inhibitor held and every expected one that has not been released by its holder since
    (`awaited()`); the machine bounds the wait by `inhibit_timeout`.
    """

    def __init__(self, expected: Iterable[str] = ()) -> None:
        """Start with none held; `expected` are waited for on every release."""
        self.expected = frozenset(expected)
        self._held: dict[str, set[_Conn]] = {}
        # Names whose holder released them since RELEASING began; None: not releasing.
        self._said: set[str] | None = None
        self._clear = asyncio.Event()
        self._clear.set()

    def begin(self) -> None:
        """The node entered RELEASING: expected inhibitors have not had their say yet."""
        self._said = set()
        self._changed()

    def end(self) -> None:
        """RELEASING is over (done, timed out or failed)."""
        self._said = None
        self._changed()

    def hold(self, name: str, conn: _Conn) -> None:
        """Hold `name` for `conn`."""
        self._held.setdefault(name, set()).add(conn)
        conn.holds.add(name)
        self._changed()
        log.info("inhibitor.hold name=%s", name)

    def release(self, name: str, conn: _Conn, said: bool = True) -> None:
        """Drop `conn`'s hold of `name` (no error if it held none); `said`: its holder released
        it (a closed connection did not)."""
        holders = self._held.get(name)
        conn.holds.discard(name)
        if holders is None or conn not in holders:
            return
        holders.discard(conn)
        if not holders:
            del self._held[name]
        if said and self._said is not None:
            self._said.add(name)
        log.info("inhibitor.release name=%s said=%s", name, said)
        self._changed()

    def drop(self, conn: _Conn) -> None:
        """Drop every hold of a closed connection."""
        for name in list(conn.holds):
            self.release(name, conn, said=False)

    def owed(self, name: str) -> bool:
        """Return whether a subscriber naming `name` must hold it now: a release is under way
        and that expected inhibitor has not had its say."""
        return self._said is not None and name in self.expected and name not in self._said

    def names(self) -> list[str]:
        """Return the names currently held."""
        return sorted(self._held)

    def awaited(self) -> list[str]:
        """Return the names a release under way still waits for (none when not releasing)."""
        if self._said is None:
            return []
        return sorted(release_waits_for(self.expected, self._held, self._said))

    def _changed(self) -> None:
        if self.awaited() or (self._said is None and self._held):
            self._clear.clear()
        else:
            self._clear.set()

    async def wait_clear(self) -> None:
        """Return once no inhibitor is held (during a release: none is awaited)."""
        await self._clear.wait()


class ControlServer:
    """Serve the control protocol on a Unix socket."""

    def __init__(self, path: Path, handler: Handler, expected: Iterable[str] = ()) -> None:
        """Serve at `path` (created on start, removed on close) for `handler`; `expected`:
        the inhibitors every planned release waits for, subscribed or not."""
        self.path = path
        self.handler = handler
        self.inhibitors = Inhibitors(expected)
        self._conns: set[_Conn] = set()
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        """Bind the socket (mode 0600, replacing a stale one) and start serving."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        # Bind under a tight umask so the socket is never reachable by others, even briefly.
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(
                self._serve, path=str(self.path), limit=MAX_LINE
            )
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        log.info("control.listening path=%s", self.path)

    async def close(self) -> None:
        """Stop serving, close every connection and remove the socket."""
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns):
            conn.writer.close()
        if self._server is not None:
            await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def publish(self, event: dict[str, Any]) -> None:
        """Send an event line to every subscriber; take subscriber inhibitors on RELEASING."""
        line = (json.dumps(event) + "\n").encode()
        if event.get("new") == "RELEASING":
            self.inhibitors.begin()
        elif event.get("old") == "RELEASING":
            self.inhibitors.end()
        for conn in list(self._conns):
            if not conn.subscribed:
                continue
            if event.get("new") == "RELEASING" and conn.inhibitor is not None:
                self.inhibitors.hold(conn.inhibitor, conn)
            conn.writer.write(line)

    def subscribers(self) -> int:
        """Return how many subscribers are connected."""
        return sum(1 for c in self._conns if c.subscribed)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Conn(writer)
        self._conns.add(conn)
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    await self._reply(conn, {"ok": False, "error": "request line too long"})
                    break
                if not line:
                    break
                reply = self._answer(conn, line)
                await self._reply(conn, reply)
        except (ConnectionError, asyncio.CancelledError):
            # Cancelled: the server is closing; the client sees the connection end.
            pass
        finally:
            self._conns.discard(conn)
            self.inhibitors.drop(conn)
            writer.close()

    async def _reply(self, conn: _Conn, reply: dict[str, Any]) -> None:
        conn.writer.write((json.dumps(reply) + "\n").encode())
        await conn.writer.drain()

    def _answer(self, conn: _Conn, line: bytes) -> dict[str, Any]:
        """Return the reply to one request line; never raise on bad input."""
        try:
            req = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            return {"ok": False, "error": "not a JSON line"}
        if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
            return {"ok": False, "error": 'a request is an object with a "cmd" string'}
        cmd = req["cmd"]
        if cmd == "status":
            return {"ok": True, "status": self.handler.status()}
        if cmd in ("standby", "promote", "maintenance", "cleanup"):
            refusal = self.handler.command(cmd, req)
            log.info("control.command cmd=%s refused=%s", cmd, refusal)
            return {"ok": True} if refusal is None else {"ok": False, "error": refusal}
        if cmd in ("inhibit", "release"):
            name = req.get("name")
            if not isinstance(name, str) or not name:
                return {"ok": False, "error": f'{cmd} needs a "name" string'}
            if cmd == "inhibit":
                self.inhibitors.hold(name, conn)
            else:
                self.inhibitors.release(name, conn)
            return {"ok": True, "inhibitors": self.inhibitors.names()}
        if cmd == "subscribe":
            inhibitor = req.get("inhibitor")
            if inhibitor is not None and (not isinstance(inhibitor, str) or not inhibitor):
                return {"ok": False, "error": '"inhibitor" must be a non-empty string'}
            conn.subscribed = True
            conn.inhibitor = inhibitor
            if inhibitor is not None and self.inhibitors.owed(inhibitor):
                # A release is waiting for this one: it holds it from now, and learns from
                # the reply's role (RELEASING) that it must flush, then release.
                self.inhibitors.hold(inhibitor, conn)
            status = self.handler.status()
            local = status.get("local") or {}
            return {"ok": True, "role": local.get("role"), "epoch": status.get("epoch")}
        return {"ok": False, "error": f"unknown command {cmd!r}"}


# ---------------------------------------------------------------------------------------------
# Clients


def _connect(path: Path, timeout: float) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
    except OSError as err:
        sock.close()
        raise ControlError(f"{path}: {_why(err)}") from err
    return sock


def _why(err: OSError) -> str:
    """Return an operator's reading of a failed connect."""
    if isinstance(err, FileNotFoundError):
        return "no control socket (is takeover running?)"
    if isinstance(err, ConnectionRefusedError):
        return "connection refused (is takeover running?)"
    if isinstance(err, PermissionError):
        return "permission denied (root only)"
    return str(err.strerror or err)


def _read_line(f: Any) -> dict[str, Any]:
    line = f.readline()
    if not line:
        raise ControlError("the daemon closed the connection")
    doc = json.loads(line)
    if not isinstance(doc, dict):
        raise ControlError("the daemon sent something other than an object")
    return doc


def call(path: Path, request: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    """Send one request and return the reply; raise ControlError if unreachable or refused."""
    with _connect(path, timeout) as sock, sock.makefile("rwb") as f:
        f.write((json.dumps(request) + "\n").encode())
        f.flush()
        try:
            reply = _read_line(f)
        except TimeoutError as err:
            raise ControlError(f"{path}: no reply within {timeout} s") from err
    if not reply.get("ok"):
        raise ControlError(str(reply.get("error", "refused")))
    return reply


def subscribe(
    path: Path, inhibitor: str | None = None, timeout: float | None = None
) -> Iterator[dict[str, Any]]:
    """Yield the subscription reply, then every event line (blocking; ends when the daemon does)."""
    sock = _connect(path, 5.0)
    sock.settimeout(timeout)
    with sock, sock.makefile("rwb") as f:
        req: dict[str, Any] = {"cmd": "subscribe"}
        if inhibitor is not None:
            req["inhibitor"] = inhibitor
        f.write((json.dumps(req) + "\n").encode())
        f.flush()
        first = _read_line(f)
        if not first.get("ok"):
            raise ControlError(str(first.get("error", "refused")))
        yield first
        while True:
            try:
                yield _read_line(f)
            except ControlError:
                return


class Subscription:
    """An asyncio subscription: iterate events; `release()` ends this subscriber's inhibitor."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Wrap an open, subscribed connection."""
        self._reader = reader
        self._writer = writer
        self.first: dict[str, Any] = {}

    @classmethod
    async def open(cls, path: Path, inhibitor: str | None = None) -> Subscription:
        """Connect and subscribe; raise ControlError if the daemon is unreachable or refuses."""
        try:
            reader, writer = await asyncio.open_unix_connection(str(path), limit=MAX_LINE)
        except OSError as err:
            raise ControlError(f"{path}: {_why(err)}") from err
        sub = cls(reader, writer)
        req: dict[str, Any] = {"cmd": "subscribe"}
        if inhibitor is not None:
            req["inhibitor"] = inhibitor
        await sub._send(req)
        first = await sub._next_line()
        if first is None or not first.get("ok"):
            writer.close()
            raise ControlError(str((first or {}).get("error", "subscription refused")))
        sub.first = first
        return sub

    async def _send(self, req: dict[str, Any]) -> None:
        self._writer.write((json.dumps(req) + "\n").encode())
        await self._writer.drain()

    async def _next_line(self) -> dict[str, Any] | None:
        line = await self._reader.readline()
        if not line:
            return None
        doc = json.loads(line)
        return doc if isinstance(doc, dict) else None

    async def release(self, name: str) -> None:
        """Drop the inhibitor `name` held for this subscriber (its reply arrives as a line)."""
        await self._send({"cmd": "release", "name": name})

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """Yield each role event until the daemon closes the connection."""
        while True:
            doc = await self._next_line()
            if doc is None:
                return
            if "event" in doc:
                yield doc

    def close(self) -> None:
        """Close the connection (drops any inhibitor it holds)."""
        self._writer.close()


def role_event(old: str, new: str, reason: str, epoch: int, wall: float) -> dict[str, Any]:
    """Return the event line published for one transition."""
    return {"event": "role", "old": old, "new": new, "reason": reason, "epoch": epoch, "time": wall}
