"""What an exposition says and what the README says it should: /metrics text parsed with
prometheus_client into {sample: {labels: value}}, and the README's table of metrics."""

from __future__ import annotations

import pathlib
from collections import defaultdict

import pytest

pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from taskstats_fast.live.cgroup_labels import LABEL_NAMES  # noqa: E402

README = pathlib.Path(__file__).parent.parent / "README.md"


def parse(body: bytes, derived: bool = False):
    """{sample name: {frozenset(labels): value}} and {family name: type}; the labels derived from
    a cgroup path (unit, container_id, pod_uid) are left out unless ``derived``."""
    samples: dict = defaultdict(dict)
    types = {}
    for fam in text_string_to_metric_families(body.decode()):
        types[fam.name] = fam.type
        for s in fam.samples:
            key = frozenset((k, v) for k, v in s.labels.items() if derived or k not in LABEL_NAMES)
            assert key not in samples[s.name], f"duplicate series {s.name}{s.labels}"
            samples[s.name][key] = s.value
    return samples, types


def readme_metric_table():
    """{metric name with GROUP: (type, label names, has GROUP's labels)} from the README's table."""
    text = README.read_text()
    section = text[text.index("## Prometheus exporter"):]
    table = section[section.index("| metric | type | labels | what |"):]
    rows = {}
    for line in table.splitlines()[2:]:
        if not line.startswith("|"):
            break
        name, typ, labels = (cell.strip() for cell in line.strip("|").split("|")[:3])
        listed = {label.strip().strip("`") for label in labels.split(",") if label.strip()}
        rows[name.strip("`")] = (typ, listed - {"GROUP"}, "GROUP" in listed)
    return rows
