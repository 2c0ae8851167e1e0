"""A node's link to the witness: one UDP socket, a request every heartbeat interval, answers
reported to the machine as `WitnessAnswer` events.

The socket is connected to the witness's address, so the kernel delivers nothing from any
other source. What does arrive is decoded by `takeover.witnesswire` and accepted only as the
answer to a request this daemon sent and has not had answered (`Pending`); everything else is
dropped and counted. A send that fails (no route: the witness path is cut) is counted; the
machine notices the silence.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections import Counter
from collections.abc import Callable
from typing import Any, Final

from takeover import machine as m
from takeover.config import WitnessConfig
from takeover.lease import Op
from takeover.witnesswire import Pending, Reply, Request, WitnessDrop, decode_reply, encode_request

log = logging.getLogger(__name__)

MAX_DATAGRAM: Final = 2048
# Answers read per loop turn (level-triggered: the rest on the next turn).
MAX_PER_TURN: Final = 16


class WitnessClient:
    """Ask the witness, match its answers to our requests, report them."""

    def __init__(
        self,
        cfg: WitnessConfig,
        cluster: str,
        node: str,
        *,
        key: bytes,
        boot_id: bytes,
        next_seq: Callable[[], int],
        emit: Callable[[m.Event], None],
    ) -> None:
        """Ask the witness at `cfg` for `node` of `cluster`; report answers through `emit`."""
        self.cfg = cfg
        self.cluster = cluster
        self.node = node
        self.key = key
        self.boot_id = boot_id
        self.next_seq = next_seq
        self.emit = emit
        self.pending = Pending()
        self.sock: socket.socket | None = None
        self.sent = 0
        self.send_errors = 0
        self.answered = 0
        self.dropped: Counter[WitnessDrop] = Counter()
        self.last_op: Op | None = None

    def start(self) -> None:
        """Open the socket and read answers on the running loop."""
        family = socket.AF_INET6 if self.cfg.address.version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.connect((str(self.cfg.address), self.cfg.port))
        self.sock = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._read)
        log.info("witness.open address=%s port=%s", self.cfg.address, self.cfg.port)

    def close(self) -> None:
        """Stop reading and close the socket."""
        if self.sock is None:
            return
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
        self.sock.close()
        self.sock = None

    def request(self, op: Op, now: float) -> None:
        """Send one request (`now`: this node's clock, no later than the sending)."""
        if self.sock is None:
            return
        seq = self.next_seq()
        req = Request(self.cluster, self.node, op, self.boot_id, seq, self.cfg.lease)
        self.pending.add(seq, now, op, self.cfg.lease)
        self.last_op = op
        try:
            self.sock.send(encode_request(req, self.key))
        except OSError as err:
            # Unreachable, refused (ICMP from a previous send), a full buffer: silence.
            self.send_errors += 1
            if self.send_errors == 1 or self.send_errors % 100 == 0:
                log.warning("witness.send_failed errors=%s error=%s", self.send_errors, err)
            return
        self.sent += 1

    def _read(self) -> None:
        for _ in range(MAX_PER_TURN):
            if self.sock is None:
                return
            try:
                data = self.sock.recv(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                # An ICMP error for an earlier send surfaces here; the send counted it.
                continue
            self._handle(data)

    def _handle(self, data: bytes) -> None:
        got = decode_reply(data, self.key, self.cluster, self.node)
        if not isinstance(got, Reply):
            self.dropped[got] += 1
            return
        sent = self.pending.take(got.echo)
        if sent is None:
            self.dropped[WitnessDrop.UNSOLICITED] += 1
            return
        sent_at, op, asked = sent
        self.answered += 1
        self.emit(
            m.WitnessAnswer(
                sent_at=sent_at,
                verdict=got.verdict,
                holder=got.holder,
                remaining=got.remaining,
                # Never more than asked: the node counts what it asked for at most.
                lease=min(asked, got.lease),
                asked=op in {Op.RENEW, Op.CLAIM},
            )
        )

    def stats(self) -> dict[str, Any]:
        """Return the address, what was asked last, and the counters."""
        counters: dict[str, int] = {
            "sent": self.sent,
            "send_errors": self.send_errors,
            "answered": self.answered,
        }
        counters.update({r.value: self.dropped[r] for r in WitnessDrop if self.dropped[r]})
        return {
            "address": f"{self.cfg.address}:{self.cfg.port}",
            "lease": self.cfg.lease,
            "on_unreachable": self.cfg.on_unreachable,
            "asking": self.last_op.name.lower() if self.last_op is not None else None,
            "counters": counters,
        }
