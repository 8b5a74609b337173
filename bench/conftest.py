"""Benchmark plumbing shared by every bench file: per-item timings and a ratio table.

Benchmarks call ``per_item(fn, items=N, group=..., name=...)``: pytest-benchmark times ``fn``,
and the median divided by N is recorded.  At the end of the run each group is printed with every
entry's ns/item and its ratio to every baseline in the group, so speed claims are always relative
to something measured in the same run on the same (noisy) machine.

Run: ``python3 -m pytest bench --benchmark-enable`` (the normal test run does not collect bench/).
"""

from __future__ import annotations

import os
import sys
from collections import defaultdict
from typing import Callable, Dict

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

RESULTS: Dict[str, Dict[str, float]] = defaultdict(dict)


@pytest.fixture
def per_item(benchmark) -> Callable:
    def run(fn, *, items: int, group: str, name: str, rounds: int = 0, **pedantic):
        benchmark.group = group
        benchmark.name = name
        if rounds:
            result = benchmark.pedantic(fn, rounds=rounds, **pedantic)
        else:
            result = benchmark(fn)
        stats = getattr(benchmark, "stats", None)
        if stats is not None:
            ns = stats.stats.median / items * 1e9
            RESULTS[group][name] = ns
            benchmark.extra_info["items"] = items
            benchmark.extra_info["ns_per_item"] = round(ns, 1)
        return result
    return run


def record_figure(group: str, name: str, ns_per_item: float) -> None:
    """For figures measured outside pytest-benchmark (e.g. a C floor timed by itself)."""
    RESULTS[group][name] = ns_per_item


def pytest_terminal_summary(terminalreporter):
    if not RESULTS:
        return
    tr = terminalreporter
    tr.section("ns per item and ratios (same run)")
    for group, entries in RESULTS.items():
        tr.write_line(f"[{group}]")
        names = sorted(entries, key=entries.get)
        for name in names:
            ratios = "  ".join(f"{entries[name] / entries[other]:8.2f}x {other}"
                               for other in names if other != name)
            tr.write_line(f"  {name:<34} {entries[name]:12.1f} ns   {ratios}")
