"""Serve a daemon's metrics over HTTP for Prometheus (`/metrics`), in a background thread.

The effect half of takeover.metrics and mirrord.metrics: each daemon registers one
SnapshotCollector (plus the library's process collector) in a registry of its own and serves
it on its `listen` address. Scrapes run in the server's threads and only read the snapshot
the daemon last published.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, ProcessCollector, make_wsgi_app
from prometheus_client.registry import Collector

from takeover.config import MetricsConfig

log = logging.getLogger(__name__)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Quiet(WSGIRequestHandler):
    # One line per scrape would drown the daemon's own log.
    def log_message(self, format: str, *args: object) -> None:
        pass


def serve(listen: MetricsConfig, collector: Collector, what: str) -> Callable[[], None]:
    """Start serving `collector` on `listen`; return the function that stops the server.

    Raises OSError (address in use, not an address of this host) with the address named.
    """
    registry = CollectorRegistry(auto_describe=True)
    registry.register(collector)
    ProcessCollector(registry=registry)
    server_class = _Server6 if ":" in listen.host else _Server
    try:
        httpd = make_server(listen.host, listen.port, make_wsgi_app(registry),
                            server_class, handler_class=_Quiet)  # fmt: skip
    except OSError as err:
        raise OSError(err.errno, f"{what} metrics on {listen.listen}: {err.strerror}") from err
    thread = threading.Thread(target=httpd.serve_forever, name=f"{what}-metrics", daemon=True)
    thread.start()
    log.info("metrics.listening what=%s address=%s", what, listen.listen)

    def stop() -> None:
        httpd.shutdown()
        httpd.server_close()

    return stop
