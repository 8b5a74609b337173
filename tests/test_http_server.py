"""The /metrics HTTP server against the clients a network brings: thousands of idle
connections, resets, garbage, slowloris, bursts of simultaneous scrapes; and over TLS with basic
auth and client certificates.  No kernel needed: the exporter is fed intervals made here."""

from __future__ import annotations

import base64
import os
import resource
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from certificates import make_certificates

from taskstats_fast.live import webconfig
from taskstats_fast.live.exporter import PrometheusExporter
from taskstats_fast.live.server import MAX_HEAD_BYTES, MetricsServer, parse_request, BadRequest

from random_intervals import random_interval

bcrypt = pytest.importorskip("bcrypt")


@pytest.fixture
def exporter():
    e = PrometheusExporter()
    e.write(random_interval(np.random.default_rng(20)))
    return e


def _connect(server, timeout=5.0):
    return socket.create_connection(server.address, timeout=timeout)


def _request(sock, text=b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"):
    """Send ``text``, return (status, headers, body) of one response."""
    sock.sendall(text)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    length = int(headers["content-length"])
    if not text.startswith(b"HEAD"):
        while len(body) < length:
            chunk = sock.recv(65536)
            assert chunk, "closed mid-body"
            body += chunk
    return int(lines[0].split()[1]), headers, body


def _closed_by_server(sock, within):
    """True when the server closes ``sock`` within ``within`` seconds."""
    sock.settimeout(within)
    try:
        while True:
            if not sock.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def _raise_open_files(needed):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))
    return soft, hard


def test_two_thousand_idle_connections_leave_a_scrape_fast_and_threads_bounded(exporter):
    saved = _raise_open_files(5000)
    idle = []
    try:
        threads_before = threading.active_count()
        with MetricsServer(exporter, "127.0.0.1", 0, max_connections=2500) as server:
            for _ in range(2000):
                idle.append(_connect(server))
            deadline = time.monotonic() + 30
            while server.counts().open < 2000 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert server.counts().open == 2000
            started = time.monotonic()
            with urllib.request.urlopen(server.url, timeout=5) as reply:
                assert reply.status == 200 and b"taskstats_" in reply.read()
            elapsed = time.monotonic() - started
            # the loop thread and the renderers: nothing grows with the clients
            assert threading.active_count() - threads_before <= 1 + 4
            assert elapsed < 1.0, elapsed
    finally:
        for s in idle:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, saved)


def test_over_the_cap_the_longest_idle_connection_makes_room_and_busy_ones_are_kept(exporter):
    with MetricsServer(exporter, "127.0.0.1", 0, max_connections=10) as server:
        idle = [_connect(server) for _ in range(20)]
        time.sleep(0.3)
        assert server.counts().open == 10 and server.counts().evicted == 10
        with urllib.request.urlopen(server.url, timeout=5) as reply:
            assert reply.status == 200
        for s in idle[:10]:     # the first ten, evicted, see their connection closed
            assert _closed_by_server(s, 2)
        for s in idle:
            s.close()


class _SlowExporter:
    """Renders only once ``release`` is set: its scrapes stay busy meanwhile."""

    def __init__(self):
        self.release = threading.Event()

    def exposition(self, accept=None):
        self.release.wait(10)
        return b"up 1\n", "text/plain; version=0.0.4"


def test_over_the_cap_with_every_connection_busy_the_new_one_is_refused():
    exporter = _SlowExporter()
    with MetricsServer(exporter, "127.0.0.1", 0, max_connections=2) as server:
        busy = [_connect(server) for _ in range(2)]
        for s in busy:            # a scrape each, being rendered: busy, not idle
            s.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
        time.sleep(0.3)
        extra = _connect(server)
        assert _closed_by_server(extra, 2)
        assert server.counts().refused == 1
        exporter.release.set()
        for s in busy:
            assert _request(s, b"")[0] == 200
            s.close()
        extra.close()


class _HugeExporter:
    """An exposition of 8 MB: more than the kernel buffers a reader that never reads."""
    body = b"# " + b"x" * (8 * 1024 * 1024) + b"\n"

    def exposition(self, accept=None):
        return self.body, "text/plain; version=0.0.4"


def test_responses_nobody_reads_are_bounded_in_memory(monkeypatch):
    from taskstats_fast.live import server as module
    monkeypatch.setattr(module, "MAX_PENDING_BYTES", 16 * 1024 * 1024)
    with MetricsServer(_HugeExporter(), "127.0.0.1", 0) as server:
        stalled = []
        for _ in range(12):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(server.address)
            s.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
            stalled.append(s)
            time.sleep(0.1)
        time.sleep(0.5)
        pending = sum(c.pending_bytes() for c in list(server._http._open))
        assert pending <= module.MAX_PENDING_BYTES + len(_HugeExporter.body) + 1024, pending
        assert server.counts().evicted >= 6
        with _connect(server, timeout=10) as s:
            status, _, body = _request(s)
            assert status == 200 and len(body) == len(_HugeExporter.body)
        for s in stalled:
            s.close()


def test_idle_clients_on_the_tls_port_cannot_lock_out_a_scrape(tmp_path, exporter):
    web, certs = _web(tmp_path)
    with MetricsServer(exporter, "127.0.0.1", 0, web=web, max_connections=10) as server:
        idle = [_connect(server) for _ in range(20)]     # TCP only: their handshakes never start
        time.sleep(0.3)
        with urllib.request.urlopen(server.url, context=_client_context(certs), timeout=5) as reply:
            assert reply.status == 200
        counts = server.counts()
        assert counts.evicted >= 11 and counts.tls_failures == 0, counts
        for s in idle:
            s.close()


_RESETTER = r"""
import sys, time
import numpy as np
sys.path.insert(0, sys.argv[1])
from random_intervals import random_interval
from taskstats_fast.live import webconfig
from taskstats_fast.live.exporter import PrometheusExporter
from taskstats_fast.live.server import MetricsServer
exporter = PrometheusExporter()
for i in range(20):
    exporter.write(random_interval(np.random.default_rng(i), n=2000, comms=[f"cmd{j}" for j in range(150)]))
web = None
if len(sys.argv) > 2:
    tls = webconfig.TLSSettings(sys.argv[2] + "/server.pem", sys.argv[2] + "/server.key")
    web = webconfig.WebConfig(tls, context=webconfig.tls_context(tls))
with MetricsServer(exporter, "127.0.0.1", 0, web=web) as server:
    print(server.address[1], flush=True)
    sys.stdin.readline()
    time.sleep(0.5)
    c = server.counts()
    print(c.resets + c.tls_failures, c.requests, c.errors, c.last_error, flush=True)
"""


def _reset(sock):
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _resetter(*args):
    tests = os.path.dirname(__file__)
    return subprocess.Popen([sys.executable, "-c", _RESETTER, tests, *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc):
    try:
        out, err = proc.communicate("\n", timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert err == "", err[-3000:]
    resets, requests, errors, *_ = out.split()
    assert int(errors) == 0, out
    return int(resets)


def test_two_hundred_resets_print_nothing_and_are_counted():
    proc = _resetter()
    port = int(proc.stdout.readline())
    for i in range(200):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        if i % 3 == 1:      # mid-request
            s.sendall(b"GET /metr")
        elif i % 3 == 2:    # after asking for a large response, without reading it
            s.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
            time.sleep(0.01)
        _reset(s)
    assert _finish(proc) >= 100      # a reset of an idle connection may come before any read


def test_resets_and_garbage_on_the_tls_port_print_nothing(tmp_path):
    certs = make_certificates(tmp_path / "certs")
    proc = _resetter(str(tmp_path / "certs"))
    port = int(proc.stdout.readline())
    context = ssl.create_default_context(cafile=str(certs["ca.pem"]))
    for i in range(60):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        if i % 3 == 0:      # not TLS at all
            s.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
            time.sleep(0.01)
        elif i % 3 == 1:    # half a ClientHello
            s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        else:               # a full handshake and a request, reset before the response is read
            s = context.wrap_socket(s, server_hostname="127.0.0.1")
            s.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
            time.sleep(0.01)
        _reset(s)
    assert _finish(proc) >= 20


def test_thirty_two_simultaneous_scrapes_are_all_answered_promptly(exporter):
    with MetricsServer(exporter, "127.0.0.1", 0) as server:
        start = threading.Barrier(32)
        took, failures = [], []

        def scrape():
            start.wait()
            t = time.monotonic()
            try:
                with urllib.request.urlopen(server.url, timeout=10) as reply:
                    reply.read()
                took.append(time.monotonic() - t)
            except Exception as e:   # reported below
                failures.append(e)

        threads = [threading.Thread(target=scrape) for _ in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not failures, failures
        # a SYN the listen queue dropped is retried after 1 s: that is what a short backlog costs
        assert len(took) == 32 and max(took) < 1.0, sorted(took)


def test_a_slowloris_client_is_cut_off_by_the_idle_timeout(exporter):
    with MetricsServer(exporter, "127.0.0.1", 0, idle_timeout=1.0) as server:
        slow = _connect(server)
        slow.sendall(b"GET /metrics HTTP/1.1\r\n")
        started = time.monotonic()
        closed = False
        while time.monotonic() - started < 5:
            try:
                slow.sendall(b"X")      # a byte now and then never completes the head
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            time.sleep(0.2)
        assert closed or _closed_by_server(slow, 1)
        assert time.monotonic() - started < 3
        silent = _connect(server)
        assert _closed_by_server(silent, 3)
        assert server.counts().timeouts == 2
        slow.close()
        silent.close()


def test_keep_alive_pipelining_head_and_bad_requests(exporter):
    with MetricsServer(exporter, "127.0.0.1", 0) as server:
        with _connect(server) as s:
            assert _request(s)[0] == 200
            status, headers, body = _request(s, b"HEAD /metrics HTTP/1.1\r\n\r\n")
            assert status == 200 and int(headers["content-length"]) > 0 and body == b""
            s.sendall(b"GET / HTTP/1.1\r\n\r\nGET /nope HTTP/1.1\r\n\r\n")
            assert _request(s, b"")[0] == 200
            assert _request(s, b"")[0] == 404
        for garbage, status in ((b"\x16\x03\x01\x02\x00garbage\r\n\r\n", 400), (b"POST /metrics HTTP/1.1\r\n\r\n", 405),
                                (b"GET /metrics HTTP/2.0\r\n\r\n", 505),
                                (b"GET /metrics HTTP/1.1\r\n" + b"X: y\r\n" * (MAX_HEAD_BYTES // 5), 431)):
            with _connect(server) as s:
                assert _request(s, garbage)[0] == status
                assert _closed_by_server(s, 2)
        with _connect(server) as s:
            _, headers, _ = _request(s, b"GET /metrics HTTP/1.0\r\n\r\n")
            assert headers["connection"] == "close" and _closed_by_server(s, 2)
        assert server.counts().bad_requests == 4


def test_parse_request():
    r = parse_request(b"GET /metrics?x=1 HTTP/1.1\r\nAccept: text/plain\r\nConnection: close")
    assert (r.method, r.path, r.headers["accept"], r.keep_alive) == ("GET", "/metrics", "text/plain", False)
    assert parse_request(b"GET / HTTP/1.0\r\nConnection: Keep-Alive").keep_alive
    for head, status in ((b"", 400), (b"GET /", 400), (b"GET / HTTP/1.1\r\nno colon", 400),
                         (b"GET / HTTP/1.1\r\nContent-Length: 5", 413), (b"PUT / HTTP/1.1", 405),
                         (b"GET / SPDY/3", 400)):
        with pytest.raises(BadRequest) as e:
            parse_request(head)
        assert e.value.status == status


# ---- TLS and basic auth --------------------------------------------------------------------
HASH_COST = 4


def _web(tmp_path, users=None, **tls):
    certs = make_certificates(tmp_path / "certs")
    settings = webconfig.TLSSettings(str(certs["server.pem"]), str(certs["server.key"]), **tls)
    hashed = {u: bcrypt.hashpw(p.encode(), bcrypt.gensalt(HASH_COST)) for u, p in (users or {}).items()}
    config = webconfig.WebConfig(settings, hashed, (("X-Content-Type-Options", "nosniff"),),
                                 webconfig.tls_context(settings))
    return config, certs


def _client_context(certs, with_client_cert=False):
    context = ssl.create_default_context(cafile=str(certs["ca.pem"]))
    if with_client_cert:
        context.load_cert_chain(str(certs["client.pem"]), str(certs["client.key"]))
    return context


def _basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_tls_with_basic_auth_answers_401_without_the_password_and_caches_good_checks(tmp_path, exporter,
                                                                                     monkeypatch):
    web, certs = _web(tmp_path, {"prometheus": "s3cret"})
    with MetricsServer(exporter, "127.0.0.1", 0, web=web) as server:
        assert server.url.startswith("https://")
        context = _client_context(certs)
        for header in (None, _basic("prometheus", "wrong"), _basic("nobody", "s3cret"), "Bearer x"):
            request = urllib.request.Request(server.url, headers={"Authorization": header} if header else {})
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(request, context=context, timeout=10)
            assert err.value.code == 401
            assert err.value.headers["WWW-Authenticate"] == 'Basic realm="taskstats-fast"'
        checks = []
        real = bcrypt.checkpw
        monkeypatch.setattr(bcrypt, "checkpw", lambda *a: checks.append(1) or real(*a))
        good = urllib.request.Request(server.url, headers={"Authorization": _basic("prometheus", "s3cret")})
        for _ in range(5):
            with urllib.request.urlopen(good, context=context, timeout=10) as reply:
                assert reply.status == 200 and b"taskstats_" in reply.read()
                assert reply.headers["X-Content-Type-Options"] == "nosniff"
        assert len(checks) == 1, "bcrypt ran again for credentials already checked"
        with pytest.raises((urllib.error.URLError, ConnectionError)):     # plain HTTP to the TLS port
            urllib.request.urlopen(server.url.replace("https", "http"), timeout=5)
        time.sleep(0.2)
        counts = server.counts()
        assert counts.unauthorized == 4 and counts.tls_failures >= 1


def test_tls_minimum_version_is_enforced(tmp_path, exporter):
    web, certs = _web(tmp_path, min_version="TLS13")
    with MetricsServer(exporter, "127.0.0.1", 0, web=web) as server:
        context = _client_context(certs)
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(server.url, context=context, timeout=5)
        context = _client_context(certs)
        with urllib.request.urlopen(server.url, context=context, timeout=5) as reply:
            assert reply.status == 200


def test_client_certificates_are_required_and_their_names_checked(tmp_path, exporter):
    certs = make_certificates(tmp_path / "certs")
    for allowed, accepted in (((), True), (("scraper.test",), True), (("other.test",), False)):
        settings = webconfig.TLSSettings(str(certs["server.pem"]), str(certs["server.key"]), str(certs["ca.pem"]),
                                         "RequireAndVerifyClientCert", client_allowed_sans=allowed)
        web = webconfig.WebConfig(settings, context=webconfig.tls_context(settings))
        with MetricsServer(exporter, "127.0.0.1", 0, web=web) as server:
            with pytest.raises((urllib.error.URLError, ConnectionError, ssl.SSLError)):
                with urllib.request.urlopen(server.url, context=_client_context(certs), timeout=5) as reply:
                    reply.read()
            try:
                with urllib.request.urlopen(server.url, context=_client_context(certs, True), timeout=5) as reply:
                    ok = reply.status == 200
            except (urllib.error.URLError, ConnectionError, ssl.SSLError):
                ok = False
            assert ok == accepted, allowed
