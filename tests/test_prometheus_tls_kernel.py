"""A real Prometheus (Debian's package) scrapes ``taskstats-fast serve --web-config`` over TLS
with basic auth: the target is up, its samples are stored; a job with the wrong password sees
the target down.  The CA and certificates are made for the test with ``openssl``."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
from certificates import make_certificates
from prometheus_api import free_port, prometheus_binary, query

bcrypt = pytest.importorskip("bcrypt")
pytest.importorskip("yaml")


def _wait_for(base, expr, proc, log, seconds=90):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-2000:]
        try:
            result = query(base, expr)
        except OSError:    # not listening yet
            result = []
        if result:
            return result
        time.sleep(0.5)
    raise AssertionError(f"Prometheus never answered {expr}: " + log.read_text()[-2000:])


def _stop(proc, timeout=20):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()


@pytest.mark.kernel
def test_prometheus_scrapes_serve_over_tls_with_basic_auth(tmp_path):
    binary = prometheus_binary()
    certs = make_certificates(tmp_path / "certs")
    hashed = bcrypt.hashpw(b"scrape-secret", bcrypt.gensalt(10)).decode()
    web = tmp_path / "web.yml"
    web.write_text("tls_server_config:\n  cert_file: certs/server.pem\n  key_file: certs/server.key\n"
                   f"basic_auth_users:\n  prometheus: '{hashed}'\n")
    serve = subprocess.Popen([sys.executable, "-m", "taskstats_fast", "serve", "--listen", "127.0.0.1:0",
                              "--interval", "1", "--web-config", str(web)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    prometheus = None
    try:
        line = serve.stderr.readline()
        assert "serving https://127.0.0.1:" in line, line + (serve.stderr.read() if serve.poll() is not None else "")
        target = line[line.index("https://") + len("https://"):line.index("/metrics")]
        job = ("  - job_name: {name}\n    scheme: https\n    tls_config:\n      ca_file: {ca}\n"
               "    basic_auth:\n      username: prometheus\n      password: {password}\n"
               "    static_configs:\n      - targets: ['{target}']\n")
        config = tmp_path / "prometheus.yml"
        config.write_text("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n"
                          + job.format(name="taskstats", ca=certs["ca.pem"], password="scrape-secret", target=target)
                          + job.format(name="intruder", ca=certs["ca.pem"], password="guess", target=target))
        port = free_port()
        log = tmp_path / "prometheus.log"
        with open(log, "wb") as out:
            prometheus = subprocess.Popen([binary, f"--config.file={config}",
                                           f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                           f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                                          stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
        base = f"http://127.0.0.1:{port}"
        intervals = _wait_for(base, 'taskstats_intervals_total{job="taskstats"} > 0', prometheus, log)
        assert float(intervals[0]["value"][1]) > 0
        up = _wait_for(base, "up", prometheus, log)
        _wait_for(base, 'up{job="intruder"}', prometheus, log)
        up = {r["metric"]["job"]: float(r["value"][1]) for r in query(base, "up")}
        assert up == {"taskstats": 1.0, "intruder": 0.0}, up
        samples = query(base, 'count({job="taskstats", __name__=~"taskstats_.+"})')
        assert float(samples[0]["value"][1]) > 10
    finally:
        if prometheus is not None:
            _stop(prometheus)
        out, err = _stop(serve)
    assert serve.returncode == 0, err
    assert "Traceback" not in err and "stopped by SIGTERM" in err, err
    assert "HTTP: " in err and "refused passwords" in err, err     # the intruder job's 401s
