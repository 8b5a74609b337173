"""The HTTP side of the exporter: ``/metrics`` served on threads from the standard library.

One thread per request (``ThreadingHTTPServer``), so a slow scraper never holds up another or the
accounting thread; each request renders the exporter's counters as they are at that moment.
A failure to bind (port in use, address not on this host) is a ``ListenError`` naming the
address, raised before anything runs.
"""

from __future__ import annotations

import errno
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional, Tuple

from ..errors import ListenError

__all__ = ["MetricsServer", "parse_listen", "DEFAULT_LISTEN"]

#: Loopback by default: command names and cgroup paths say what runs on the host, and a
#: Prometheus on the same host (or an SSH tunnel, or a reverse proxy) reaches it there.
DEFAULT_LISTEN = "127.0.0.1:9456"

_INDEX = b'<html><head><title>taskstats-fast</title></head><body><a href="/metrics">/metrics</a></body></html>\n'


def parse_listen(text: str) -> Tuple[str, int]:
    """``HOST:PORT`` (``[v6addr]:PORT``, or ``:PORT`` for every interface) -> (host, port)."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{text!r} is not HOST:PORT (for example 127.0.0.1:9456, [::1]:9456 or :9456)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port_text)


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            body, content_type = self.server.exporter.exposition(self.headers.get("Accept"))
            self._send(200, body, content_type)
        elif path == "/":
            self._send(200, _INDEX, "text/html; charset=utf-8")
        else:
            self._send(404, b"not found: try /metrics\n", "text/plain; charset=utf-8")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a scrape every few seconds is not news."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: Tuple[str, int], exporter: Any):
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.exporter = exporter
        super().__init__(address, _Handler)


class MetricsServer:
    """Serves ``exporter.exposition()`` at ``http://host:port/metrics`` on a background thread."""

    def __init__(self, exporter: Any, host: str, port: int):
        try:
            self._server = _Server((host, port), exporter)
        except OSError as e:
            hint = {errno.EADDRINUSE: ": another process listens there; choose another port with --listen",
                    errno.EADDRNOTAVAIL: ": that address is not on this host",
                    errno.EACCES: ": ports below 1024 need root"}.get(e.errno or 0, "")
            where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            raise ListenError(e.errno or 0, f"cannot listen on {where}: {e.strerror}{hint}") from None
        self._thread: Optional[threading.Thread] = None

    @property
    def address(self) -> Tuple[str, int]:
        """The bound (host, port): the port the kernel chose when 0 was asked for."""
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/metrics"

    def start(self) -> "MetricsServer":
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="taskstats-metrics", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop answering and release the port (requests in flight finish on their threads)."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> "MetricsServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()
