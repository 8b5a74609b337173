"""A real Prometheus server (Debian's ``prometheus`` package) scrapes the exporter, then is asked
for a counter over its HTTP API: the end-to-end check that the exposition is what Prometheus
accepts (its own parser, content negotiation, OpenMetrics by default) and that names and labels
arrive intact.

The test starts the server itself on a free port, with a temporary config and TSDB directory.
Under CI the binary must be there (``make test`` installs it); elsewhere a missing binary skips.
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest

pytest.importorskip("prometheus_client")

from taskstats_fast.accounting.interval import BORN, EXITED, Interval  # noqa: E402
from taskstats_fast.live.exporter import PrometheusExporter  # noqa: E402
from taskstats_fast.live.server import MetricsServer  # noqa: E402

from prometheus_api import free_port, prometheus_binary, query  # noqa: E402


def test_prometheus_scrapes_the_exporter(tmp_path):
    binary = prometheus_binary()
    exporter = PrometheusExporter()
    exporter.write(Interval.from_arrays(0, 10**9, {
        "ac_comm": [b"promtest", b"promtest", b"other-cmd"], "state": [EXITED, BORN | EXITED, 0],
        "cpu_ns": [1_500_000_000, 500_000_000, 1], "cgroup_id": [5, 5, 6]}, cgroups={5: "/prom.slice", 6: "/"}))
    with MetricsServer(exporter, "127.0.0.1", 0) as server:
        port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
            "scrape_configs:\n  - job_name: taskstats\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{server.address[1]}']\n")
        log = open(tmp_path / "prometheus.log", "wb")
        proc = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                 f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                                stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            result = []
            while time.monotonic() < deadline:
                assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:]
                try:
                    result = query(base, 'taskstats_command_task_exits_total{command="promtest"}')
                except OSError:    # not listening yet
                    result = []
                if result:
                    break
                time.sleep(0.5)
            assert result, "Prometheus never stored the counter: " + (tmp_path / "prometheus.log").read_text()[-2000:]
            assert float(result[0]["value"][1]) == 2
            assert result[0]["metric"]["job"] == "taskstats"
            cpu = query(base, 'sum(taskstats_cgroup_cpu_usage_seconds_total{cgroup="/prom.slice"})')
            assert float(cpu[0]["value"][1]) == pytest.approx(2.0)
            health = query(base, 'up{job="taskstats"}')
            assert float(health[0]["value"][1]) == 1
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()
    assert exporter.counts().scrapes >= 1
    assert os.path.isdir(tmp_path / "tsdb")
