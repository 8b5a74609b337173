"""contrib/prometheus (recording rules and alerts) and contrib/grafana (the dashboard):
``promtool check rules``; ``promtool test rules`` with a case for every alert; and a real
Prometheus (Debian's, installed by ``make test``) scraping a real ``serve`` over TLS with basic
auth (``--web-config``, as beyond loopback) with the rules loaded,
where every PromQL expression of the dashboard and every recording rule, run through its HTTP
API, returns data.  A workload runs in a cgroup shaped like a docker scope, so the unit and
container panels have something to show."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("yaml")
import yaml  # noqa: E402
from under_ci import unavailable  # noqa: E402

from taskstats_fast.accounting import cgroupfs  # noqa: E402

from certificates import make_certificates  # noqa: E402
from exposition import readme_metric_table  # noqa: E402
from prometheus_api import free_port, prometheus_binary, query  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RULES = os.path.join(ROOT, "contrib", "prometheus", "taskstats-fast.rules.yml")
RULE_TESTS = os.path.join(ROOT, "contrib", "prometheus", "taskstats-fast.rules.test.yml")
DASHBOARD = os.path.join(ROOT, "contrib", "grafana", "taskstats-fast-dashboard.json")
# what Grafana would put in for the dashboard's variables
VARIABLES = {"$__rate_interval": "15s", "$instance": ".+", "$class": ".+"}


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        unavailable("promtool is not installed (it comes with Debian's prometheus package; make test installs it)")
    return path


def _rules():
    with open(RULES) as f:
        return [rule for group in yaml.safe_load(f)["groups"] for rule in group["rules"]]


def dashboard_expressions():
    with open(DASHBOARD) as f:
        dashboard = json.load(f)
    out = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name, value in VARIABLES.items():
                expr = expr.replace(name, value)
            out.append((panel["title"], expr))
    return out


def test_promtool_checks_the_rules():
    proc = subprocess.run([_promtool(), "check", "rules", RULES], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in proc.stdout


def test_promtool_unit_tests_every_alert():
    proc = subprocess.run([_promtool(), "test", "rules", os.path.basename(RULE_TESTS)], capture_output=True,
                          text=True, timeout=60, cwd=os.path.dirname(RULE_TESTS))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with open(RULE_TESTS) as f:
        cases = yaml.safe_load(f)["tests"]
    tested = {t["alertname"] for case in cases for t in case.get("alert_rule_test", [])}
    firing = {t["alertname"] for case in cases for t in case.get("alert_rule_test", []) if t["exp_alerts"]}
    alerts = {rule["alert"] for rule in _rules() if "alert" in rule}
    assert alerts == tested == firing, "every alert needs a case where it fires and one where it does not"


def test_the_dashboard_uses_only_metrics_serve_exposes():
    documented = set()
    for name in readme_metric_table():
        for grouping in ("cgroup", "command", "group"):
            documented.add(name.replace("GROUP", grouping))
    documented |= {d[:-len("_total")] for d in documented if d.endswith("_total")}
    documented |= {f"{d}_{s}" for d in documented for s in ("sum", "count")}
    used = set()
    for _, expr in dashboard_expressions():
        used |= set(re.findall(r"\b((?:taskstats|process)_\w+)", expr))
    assert used and used <= documented, used - documented


def _container_cgroup():
    root = cgroupfs.find_cgroup2()
    if root is None:
        unavailable("no cgroup v2 hierarchy is mounted")
    slice_path = os.path.join(root, f"tsf-exporter-{os.getpid()}.slice")
    scope = os.path.join(slice_path, f"docker-{os.getpid():08x}{'ab' * 28}.scope")
    os.makedirs(scope)
    return slice_path, scope


def _remove_cgroups(*paths):
    for path in paths:
        deadline = time.monotonic() + 10
        while os.path.isdir(path):
            try:
                os.rmdir(path)
            except OSError:
                assert time.monotonic() < deadline, f"{path} did not empty"
                time.sleep(0.05)


PASSWORD = "scrape-secret"


def _start_serve(tmp_path):
    """serve as an operator beyond loopback runs it: TLS and a bcrypt basic-auth user."""
    bcrypt = pytest.importorskip("bcrypt")
    certs = make_certificates(tmp_path / "certs")
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(10)).decode()
    web = tmp_path / "web.yml"
    web.write_text(f"tls_server_config:\n  cert_file: {certs['server.pem']}\n  key_file: {certs['server.key']}\n"
                   f"basic_auth_users:\n  prometheus: '{hashed}'\n")
    proc = subprocess.Popen([sys.executable, "-m", "taskstats_fast", "serve", "--listen", "127.0.0.1:0",
                             "--interval", "1", "--web-config", str(web)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()
    assert "serving https://" in line, line + proc.stderr.read()
    return proc, line[line.index("https://") + len("https://"):line.index("/metrics")], certs["ca.pem"]


def _start_prometheus(tmp_path, target, ca):
    port = free_port()
    shutil.copy(RULES, tmp_path / "rules.yml")
    (tmp_path / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
        "rule_files: [rules.yml]\n"
        "scrape_configs:\n  - job_name: taskstats\n    scheme: https\n"
        f"    tls_config:\n      ca_file: {ca}\n"
        f"    basic_auth:\n      username: prometheus\n      password: {PASSWORD}\n"
        "    static_configs:\n"
        f"      - targets: ['{target}']\n")
    log = open(tmp_path / "prometheus.log", "wb")
    proc = subprocess.Popen([prometheus_binary(), f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}",
                             "--log.level=warn"], stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    return proc, log, f"http://127.0.0.1:{port}"


def _stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.kernel
def test_every_dashboard_expression_and_recording_rule_returns_data_from_a_real_prometheus(tmp_path):
    slice_path, scope = _container_cgroup()

    def enter():
        with open(os.path.join(scope, "cgroup.procs"), "w") as f:
            f.write("0")
    workload = subprocess.Popen(["sh", "-c", "while :; do /bin/true; done"], preexec_fn=enter)
    serve = prometheus = log = None
    try:
        serve, target, ca = _start_serve(tmp_path)
        prometheus, log, base = _start_prometheus(tmp_path, target, ca)
        expressions = dashboard_expressions() + [(r["record"], r["record"]) for r in _rules() if "record" in r]
        missing = list(expressions)
        deadline = time.monotonic() + 120
        while missing and time.monotonic() < deadline:
            assert prometheus.poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:]
            assert serve.poll() is None, serve.stderr.read()
            still = []
            for title, expr in missing:
                try:
                    if not query(base, expr):
                        still.append((title, expr))
                except OSError:        # not listening yet
                    still.append((title, expr))
            missing = still
            time.sleep(1)
        assert not missing, f"no data for {len(missing)} of {len(expressions)} expressions: {missing}"
        unit = query(base, 'unit:taskstats_cpu_usage_seconds:rate5m{unit=~"docker-.*"}')
        assert unit and float(unit[0]["value"][1]) > 0, unit     # the shell loop's CPU, by its unit
    finally:
        workload.kill()
        workload.wait()
        for proc in (prometheus, serve):
            if proc is not None:
                _stop(proc)
        if log is not None:
            log.close()
        _remove_cgroups(scope, slice_path)
    assert serve.returncode == 0
