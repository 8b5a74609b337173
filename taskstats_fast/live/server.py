"""The HTTP side of the exporter: ``/metrics`` on one asyncio event loop, rendered on a fixed pool
of threads, optionally over TLS with basic auth (``webconfig.WebConfig``).

A host's exporter port meets more than Prometheus: port scanners, health checkers that connect
and say nothing, clients that reset, and now and then a hostile one.  So the thread count never
depends on the clients: one loop thread holds every connection, however many are idle, and
``workers`` threads render ``/metrics`` (and run the slow bcrypt checks), so a scrape never holds
up the accounting thread and a slow client never holds a renderer.  The limits:

- at most ``max_connections`` open at once; a connection beyond that closes the one that has
  waited longest on its client (for a request, a TLS handshake or to read a response: an idle
  client cannot lock Prometheus out), or, when every one is busy, is closed itself;
- at most ``MAX_PENDING_BYTES`` of responses wait in memory for clients that do not read them;
  beyond, the longest-stalled of those clients is closed;
- a request must arrive complete within ``idle_timeout`` of the connection opening or of its
  previous response (a slowloris client sending a byte now and then is cut off), and a response
  must be taken within ``idle_timeout`` too;
- request heads of at most ``MAX_HEAD_BYTES``, no request bodies, GET and HEAD only;
- the listen backlog is ``BACKLOG``, so a burst of simultaneous scrapes is queued by the kernel
  rather than refused or retried.

Nothing a client does prints anything: resets, broken pipes, failed TLS handshakes and garbage
requests are counted (``counts()``), and so is anything else the event loop would have logged.
A failure to bind (port in use, address not on this host) is a ``ListenError`` naming the
address, raised by the constructor before anything runs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import re
import resource
import socket
import ssl
import threading
from dataclasses import dataclass, fields
from email.utils import formatdate
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

from ..errors import ListenError
from .defaults import DEFAULT_IDLE_TIMEOUT, DEFAULT_LISTEN, DEFAULT_MAX_CONNECTIONS
from .webconfig import BasicAuth, WebConfig

__all__ = ["MetricsServer", "HttpCounts", "parse_listen", "parse_request", "BadRequest", "DEFAULT_LISTEN",
           "DEFAULT_MAX_CONNECTIONS", "DEFAULT_IDLE_TIMEOUT", "DEFAULT_WORKERS", "BACKLOG", "MAX_HEAD_BYTES",
           "MAX_PENDING_BYTES"]

#: Threads that render /metrics and check passwords.
DEFAULT_WORKERS = 4
#: The listen queue: a burst of scrapes, or an accept loop busy with many clients, waits there.
BACKLOG = 1024
#: Request line and headers together; Prometheus sends a few hundred bytes.
MAX_HEAD_BYTES = 16 * 1024
#: Bytes of responses kept in memory for clients that do not read them; beyond, the
#: longest-stalled of those clients is closed.
MAX_PENDING_BYTES = 64 * 1024 * 1024
#: Open files kept free of connections for everything else the process opens.
_FILES_RESERVED = 64
_WRITE_HIGH_WATER = 256 * 1024

_INDEX = b'<html><head><title>taskstats-fast</title></head><body><a href="/metrics">/metrics</a></body></html>\n'
_END_OF_HEAD = re.compile(rb"\r?\n\r?\n")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed",
            413: "Content Too Large", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
            505: "HTTP Version Not Supported"}
_CLIENT_GONE = (ConnectionError, TimeoutError, ssl.SSLError)


def parse_listen(text: str) -> Tuple[str, int]:
    """``HOST:PORT`` (``[v6addr]:PORT``, or ``:PORT`` for every interface) -> (host, port)."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{text!r} is not HOST:PORT (for example 127.0.0.1:9456, [::1]:9456 or :9456)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port_text)


# ---- requests: parsing is a pure function of the bytes of the head --------------------------
class BadRequest(Exception):
    """A request this server does not answer; ``status`` is the HTTP status to send, then close."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status


class Request(NamedTuple):
    method: str
    path: str
    version: str
    headers: Dict[str, str]     #: lower-cased names
    keep_alive: bool


def parse_request(head: bytes) -> Request:
    """The request in ``head`` (request line and headers, without the blank line)."""
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:   # latin-1 decodes every byte; kept for clarity of intent
        raise BadRequest(400, "undecodable request") from None
    lines = text.replace("\r\n", "\n").split("\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not parts[1]:
        raise BadRequest(400, "not an HTTP request line")
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise BadRequest(505 if version.startswith("HTTP/") else 400, f"unsupported version {version[:16]!r}")
    headers: Dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN.fullmatch(name):
            raise BadRequest(400, "malformed header line")
        headers[name.lower()] = value.strip()
    if method not in ("GET", "HEAD"):
        raise BadRequest(405, f"method {method[:16]} not allowed: GET /metrics")
    if headers.get("content-length", "0") != "0" or "transfer-encoding" in headers:
        raise BadRequest(413, "a request body is not accepted")
    connection = headers.get("connection", "").lower()
    keep_alive = "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
    return Request(method, target.split("?", 1)[0], version, headers, keep_alive)


def _response(status: int, body: bytes, content_type: str, *, close: bool, head_only: bool = False,
              extra: Tuple[Tuple[str, str], ...] = ()) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}", f"Date: {formatdate(usegmt=True)}",
             f"Content-Type: {content_type}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in extra]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head_only else body)


# ---- counters ------------------------------------------------------------------------------
@dataclass
class HttpCounts:
    """What the HTTP server has seen since it started (each a count of events)."""
    connections: int = 0      #: accepted
    requests: int = 0         #: answered, whatever the status
    evicted: int = 0          #: closed while waiting on their client: over the cap, or over MAX_PENDING_BYTES
    refused: int = 0          #: new connections closed at once: the cap was reached, none idle
    timeouts: int = 0         #: closed for taking longer than the idle timeout
    resets: int = 0           #: closed by the client mid-request or mid-response (reset, broken pipe)
    bad_requests: int = 0     #: garbage, oversized or unsupported requests (answered 4xx, closed)
    tls_failures: int = 0     #: TLS handshakes that failed or a client certificate refused
    unauthorized: int = 0     #: answered 401
    errors: int = 0           #: answered 500, or an unexpected event-loop error (see last_error)
    open: int = 0             #: connections open now
    last_error: str = ""

    def add(self, name: str, n: int = 1) -> None:
        setattr(self, name, getattr(self, name) + n)

    def copy(self) -> "HttpCounts":
        return HttpCounts(**{f.name: getattr(self, f.name) for f in fields(self)})


# ---- one connection -------------------------------------------------------------------------
class _Connection(asyncio.Protocol):
    """One client: reads request heads, answers them one at a time, keeps the connection alive."""

    def __init__(self, owner: "_HttpLoop"):
        self._owner = owner
        self._loop = owner.loop
        self._transport: Any = None
        self._buffer = bytearray()
        self._busy = False           # a handshake or a request is in progress
        self._closed = False
        self._eof = False
        self._timer: Optional[asyncio.TimerHandle] = None
        self._writable: Optional[asyncio.Future] = None
        self.idle_since = 0.0

    # asyncio's callbacks
    def connection_made(self, transport: Any) -> None:
        self._transport = transport
        if not self._owner.admit(self):
            self._closed = True
            transport.abort()
            return
        transport.set_write_buffer_limits(high=_WRITE_HIGH_WATER)
        self._arm()
        self._owner.waiting(self, True)     # a handshake, too, waits on the client: evictable
        if self._owner.web.context is not None:
            transport.pause_reading()    # the ClientHello is for start_tls, not data_received
            self._busy = True
            self._owner.spawn(self._handshake())

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        self._buffer += data
        if not self._busy:
            self._next_request()

    def eof_received(self) -> Optional[bool]:
        self._eof = True
        if self._busy and self._owner.web.context is None:
            return True         # a client that shut down its side still gets its answer, then the close
        self._closed = True     # asyncio closes the transport
        return None

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self._closed = True
        self._cancel_timer()
        self._owner.release(self)
        if isinstance(exc, _CLIENT_GONE):     # None when the close was ours
            self._owner.counts.add("resets")
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    def pause_writing(self) -> None:
        self._writable = self._loop.create_future()

    @property
    def stalled(self) -> bool:
        """A response is waiting for the client to read it."""
        return self._writable is not None and not self._writable.done()

    def pending_bytes(self) -> int:
        return int(self._transport.get_write_buffer_size()) if self._transport is not None else 0

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    # the state machine
    def _arm(self) -> None:
        self._cancel_timer()
        self.idle_since = self._loop.time()
        self._timer = self._loop.call_later(self._owner.idle_timeout, self._expire)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        if not self._closed:
            self._owner.counts.add("timeouts")
            self.abort()

    def abort(self) -> None:
        self._closed = True
        self._transport.abort()

    async def _handshake(self) -> None:
        context = self._owner.web.context
        assert context is not None     # connection_made starts a handshake only then
        try:
            self._transport = await self._loop.start_tls(
                self._transport, self, context, server_side=True,
                ssl_handshake_timeout=self._owner.idle_timeout + 1)
            if not self._owner.client_allowed(self._transport):
                raise ssl.SSLError("the client certificate names none of client_allowed_sans")
        except (OSError, asyncio.TimeoutError, asyncio.CancelledError):
            if not self._closed:
                self._owner.counts.add("tls_failures")
                self.abort()
            self._owner.release(self)
            return
        self._busy = False
        self._owner.waiting(self, True)
        if self._buffer:
            self._next_request()

    def _next_request(self) -> None:
        match = _END_OF_HEAD.search(self._buffer, 0, MAX_HEAD_BYTES + 4)
        if match is None:
            if len(self._buffer) > MAX_HEAD_BYTES:
                self._fail(BadRequest(431, "request head too large"))
            return
        head = bytes(self._buffer[:match.start()])
        del self._buffer[:match.end()]
        self._busy = True
        self._arm()                          # the response, too, must be taken within the timeout
        self._owner.waiting(self, False)
        self._transport.pause_reading()      # one request at a time: pipelined ones wait in the socket
        try:
            request = parse_request(head)
        except BadRequest as e:
            self._fail(e)
            return
        self._owner.spawn(self._serve(request))

    def _fail(self, error: BadRequest) -> None:
        self._busy = True
        self._owner.counts.add("bad_requests")
        self._owner.counts.add("requests")
        self._write(_response(error.status, f"{error}\n".encode(), "text/plain; charset=utf-8", close=True))
        self._transport.close()

    def _write(self, data: bytes) -> None:
        if not self._transport.is_closing():
            self._transport.write(data)

    async def _serve(self, request: Request) -> None:
        status, body, content_type, extra = await self._owner.answer(request)
        close = not request.keep_alive or self._closed or self._eof
        self._owner.counts.add("requests")
        response = _response(status, body, content_type, close=close, head_only=request.method == "HEAD",
                             extra=extra)
        self._owner.make_room(len(response))
        self._write(response)
        writable = self._writable
        if writable is not None and not writable.done():
            # waiting on the client again, so evictable; the idle timer, still armed, cuts it off
            self._owner.waiting(self, True)
            await writable
            self._owner.waiting(self, False)
        if close or self._closed:
            self._busy = False
            self._transport.close()
            return
        self._busy = False
        self._arm()
        self._owner.waiting(self, True)
        self._transport.resume_reading()
        if self._buffer:
            self._next_request()


# ---- the loop: admission, answers, counters ------------------------------------------------
class _HttpLoop:
    """Owns the event loop thread's state: connections, the render pool and the counters."""

    def __init__(self, exporter: Any, web: WebConfig, max_connections: int, idle_timeout: float, workers: int):
        self.exporter = exporter
        self.web = web
        self.auth = BasicAuth(web.users)
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.counts = HttpCounts()
        self.loop = asyncio.new_event_loop()
        self.loop.set_exception_handler(self._on_loop_error)
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="taskstats-http")
        self._open: Dict[_Connection, None] = {}
        self._waiting: Dict[_Connection, None] = {}     # insertion order: longest-waiting first
        self._tasks: set = set()

    def _on_loop_error(self, loop: Any, context: Dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, ssl.SSLError):
            self.counts.add("tls_failures")
        elif isinstance(exc, _CLIENT_GONE):
            self.counts.add("resets")
        else:
            self.counts.add("errors")
            self.counts.last_error = f"{context.get('message', '')}: {exc!r}"[:500]

    def spawn(self, coroutine: Any) -> None:
        task = self.loop.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def admit(self, connection: _Connection) -> bool:
        self.counts.add("connections")
        if len(self._open) >= self.max_connections:
            if not self._waiting:
                self.counts.add("refused")
                return False
            oldest = next(iter(self._waiting))
            self.release(oldest)
            oldest.abort()
            self.counts.add("evicted")
        self._open[connection] = None
        self.counts.open = len(self._open)
        return True

    def make_room(self, size: int) -> None:
        """Close the longest-stalled readers until the responses waiting in memory for their
        clients, with ``size`` more bytes, fit in ``MAX_PENDING_BYTES``."""
        stalled = [c for c in self._waiting if c.stalled]
        pending = sum(c.pending_bytes() for c in stalled)
        for connection in stalled:
            if pending + size <= MAX_PENDING_BYTES:
                break
            pending -= connection.pending_bytes()
            self.release(connection)
            connection.abort()
            self.counts.add("evicted")

    def waiting(self, connection: _Connection, waits: bool) -> None:
        """Mark ``connection`` as waiting for a request (evictable) or not."""
        self._waiting.pop(connection, None)
        if waits and connection in self._open:
            self._waiting[connection] = None

    def release(self, connection: _Connection) -> None:
        self._waiting.pop(connection, None)
        self._open.pop(connection, None)
        self.counts.open = len(self._open)

    def client_allowed(self, transport: Any) -> bool:
        allowed = self.web.tls.client_allowed_sans if self.web.tls is not None else ()
        if not allowed:
            return True
        certificate = transport.get_extra_info("peercert") or {}
        names = {value for _kind, value in certificate.get("subjectAltName", ())}
        return bool(names.intersection(allowed))

    async def answer(self, request: Request) -> Tuple[int, bytes, str, Tuple[Tuple[str, str], ...]]:
        """(status, body, content type, extra headers) for ``request``."""
        extra = self.web.headers
        text = "text/plain; charset=utf-8"
        try:
            if self.auth and not await self._authorized(request.headers.get("authorization")):
                self.counts.add("unauthorized")
                return 401, b"unauthorized\n", text, extra + (("WWW-Authenticate", 'Basic realm="taskstats-fast"'),)
            if request.path == "/metrics":
                body, content_type = await self.loop.run_in_executor(
                    self.pool, self.exporter.exposition, request.headers.get("accept"))
                return 200, body, content_type, extra
            if request.path == "/":
                return 200, _INDEX, "text/html; charset=utf-8", extra
            return 404, b"not found: try /metrics\n", text, extra
        except Exception as e:    # a bug in rendering: the client gets a 500, the count says so
            self.counts.add("errors")
            self.counts.last_error = f"{request.path}: {e!r}"[:500]
            return 500, b"internal error\n", text, extra

    async def _authorized(self, header: Optional[str]) -> bool:
        if self.auth.remembered(header):
            return True
        return bool(await self.loop.run_in_executor(self.pool, self.auth.check, header))

    async def abort_all(self) -> None:
        for connection in list(self._open):
            connection.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _connection_limit(asked: int) -> int:
    """``asked``, lowered to what the open-files limit leaves room for."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return asked
    return max(1, min(asked, soft - _FILES_RESERVED))


class MetricsServer:
    """Serves ``exporter.exposition()`` at ``http(s)://host:port/metrics`` on a background thread."""

    def __init__(self, exporter: Any, host: str, port: int, *, web: Optional[WebConfig] = None,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS, idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
                 workers: int = DEFAULT_WORKERS):
        if max_connections < 1 or not idle_timeout > 0 or workers < 1:
            raise ValueError("max_connections and workers must be at least 1, idle_timeout positive")
        self.web = web if web is not None else WebConfig()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            self._socket = socket.create_server((host, port), family=family, backlog=BACKLOG)
        except OSError as e:
            hint = {errno.EADDRINUSE: ": another process listens there; choose another port with --listen",
                    errno.EADDRNOTAVAIL: ": that address is not on this host",
                    errno.EACCES: ": ports below 1024 need root"}.get(e.errno or 0, "")
            where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            raise ListenError(e.errno or 0, f"cannot listen on {where}: {e.strerror}{hint}") from None
        self.max_connections = _connection_limit(max_connections)
        self._http = _HttpLoop(exporter, self.web, self.max_connections, float(idle_timeout), workers)
        self._thread: Optional[threading.Thread] = None
        self._started = threading.Event()
        self._startup_error: List[BaseException] = []

    @property
    def address(self) -> Tuple[str, int]:
        """The bound (host, port): the port the kernel chose when 0 was asked for."""
        host, port = self._socket.getsockname()[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        scheme = "https" if self.web.context is not None else "http"
        return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}/metrics"

    def counts(self) -> HttpCounts:
        """A copy of the server's counters."""
        return self._http.counts.copy()

    def start(self) -> "MetricsServer":
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="taskstats-metrics", daemon=True)
            self._thread.start()
            self._started.wait()
            if self._startup_error:
                raise self._startup_error[0]
        return self

    def _run(self) -> None:
        loop = self._http.loop
        asyncio.set_event_loop(loop)
        try:
            server = loop.run_until_complete(
                loop.create_server(lambda: _Connection(self._http), sock=self._socket, backlog=BACKLOG))
        except BaseException as e:    # handed to start()'s caller
            self._startup_error.append(e)
            self._started.set()
            return
        self._started.set()
        try:
            loop.run_forever()
        finally:
            server.close()
            loop.run_until_complete(self._http.abort_all())
            loop.close()

    def close(self) -> None:
        """Stop answering, close every connection and release the port (idempotent)."""
        if self._thread is not None:
            if self._thread.is_alive():
                self._http.loop.call_soon_threadsafe(self._http.loop.stop)
            self._thread.join()
            self._thread = None
        elif not self._http.loop.is_closed():
            self._http.loop.close()
        self._http.pool.shutdown(wait=False)
        self._socket.close()

    def __enter__(self) -> "MetricsServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()
