"""A real Prometheus server for tests: its binary (Debian's package; a test without it skips,
or fails under CI), a free port to run it on, and a PromQL query over its HTTP API."""

from __future__ import annotations

import json
import shutil
import socket
import urllib.parse
import urllib.request

from under_ci import unavailable


def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        unavailable("the prometheus binary is not installed (apt-get install prometheus; make test does)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def query(base: str, expr: str):
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as reply:
        answer = json.load(reply)
    assert answer["status"] == "success", answer
    return answer["data"]["result"]
