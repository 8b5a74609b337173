"""The Prometheus exporter on synthetic intervals: what /metrics says, parsed by prometheus_client.

The oracle for every counter is a plain Python sum over the rows fed in (not the exporter's numpy
group-by); the exposition is also cross-checked against prometheus_client's own rendering of the
exporter's collector.
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections import defaultdict

import numpy as np
import pytest

pytest.importorskip("prometheus_client")
from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from taskstats_fast.accounting.interval import (BORN, DELAY_CLASSES, EXITED, PSI_DTYPE,  # noqa: E402
                                                Interval, Pressure)
from taskstats_fast.errors import ListenError  # noqa: E402
from taskstats_fast.live.exporter import (OPENMETRICS_FORMAT, OTHER, TEXT_FORMAT, ListenerCounters,  # noqa: E402
                                          PrometheusExporter, negotiate)
from taskstats_fast.live.server import MetricsServer, parse_listen  # noqa: E402

CGROUPS = {100: "/", 101: "/system.slice", 102: "/user.slice/user-0.slice", 103: "/system.slice"}


def parse(body: bytes):
    """{sample name: {frozenset(labels): value}} and {family name: type}."""
    samples: dict = defaultdict(dict)
    types = {}
    for fam in text_string_to_metric_families(body.decode()):
        types[fam.name] = fam.type
        for s in fam.samples:
            key = frozenset(s.labels.items())
            assert key not in samples[s.name], f"duplicate series {s.name}{s.labels}"
            samples[s.name][key] = s.value
    return samples, types


def scrape(exporter, accept=None):
    return parse(exporter.exposition(accept)[0])[0]


def random_interval(rng, n=300, comms=("sh", "ls", "make", "cc1", "python3"), index=0, lost=0):
    comm = rng.choice([c.encode() for c in comms], n)
    state = rng.choice([0, BORN, EXITED, BORN | EXITED], n)
    columns = {
        "ac_pid": rng.integers(1, 1 << 22, n), "ac_comm": comm, "state": state,
        "cgroup_id": rng.choice(list(CGROUPS) + [0, 999], n),
        "ac_utime": rng.integers(0, 50_000, n), "ac_stime": rng.integers(0, 20_000, n),
        "cpu_ns": rng.integers(0, 10**8, n),
        "read_bytes": rng.integers(0, 1 << 20, n), "write_bytes": rng.integers(0, 1 << 20, n),
    }
    for c in DELAY_CLASSES:
        columns[f"{c}_count"] = rng.integers(0, 100, n)
        columns[f"{c}_delay_total"] = rng.integers(0, 10**8, n)
    psi = Pressure(np.zeros(1, PSI_DTYPE)[0], np.zeros(len(CGROUPS), PSI_DTYPE), ("cpu", "io", "memory"))
    psi.cgroups["cgroup_id"] = list(CGROUPS)
    for field in PSI_DTYPE.names[1:]:
        psi.system[field] = rng.integers(0, 10**6)
        psi.cgroups[field] = rng.integers(0, 10**6, len(CGROUPS))
    return Interval.from_arrays(index * 10**9, (index + 1) * 10**9, columns, cgroups=CGROUPS, psi=psi,
                                lost=lost, delayacct=True, index=index)


def expected_by(intervals, key):
    """Oracle: per group, the plain Python sums of the rows (seconds in base units)."""
    out: dict = defaultdict(lambda: defaultdict(float))
    for iv in intervals:
        for row in iv.tasks:
            if key == "cgroup":
                group = iv.cgroups.get(int(row["cgroup_id"]), "unknown")
            else:
                group = row["ac_comm"].decode()
            sums = out[group]
            sums["usage"] += int(row["cpu_ns"]) / 1e9
            sums["user"] += int(row["ac_utime"]) / 1e6
            sums["system"] += int(row["ac_stime"]) / 1e6
            sums["read"] += int(row["read_bytes"])
            sums["write"] += int(row["write_bytes"])
            sums["exits"] += bool(row["state"] & EXITED)
            for c in DELAY_CLASSES:
                sums[f"{c}_count"] += int(row[f"{c}_count"])
                sums[f"{c}_seconds"] += int(row[f"{c}_delay_total"]) / 1e9
    return out


def check_group_counters(samples, intervals, key):
    expected = expected_by(intervals, key)
    prefix = f"taskstats_{key}_"
    for group, sums in expected.items():
        g = (key, group)
        assert samples[prefix + "cpu_usage_seconds_total"][frozenset({g})] == pytest.approx(sums["usage"])
        assert samples[prefix + "cpu_user_seconds_total"][frozenset({g})] == pytest.approx(sums["user"])
        assert samples[prefix + "cpu_system_seconds_total"][frozenset({g})] == pytest.approx(sums["system"])
        assert samples[prefix + "read_bytes_total"][frozenset({g})] == sums["read"]
        assert samples[prefix + "write_bytes_total"][frozenset({g})] == sums["write"]
        assert samples[prefix + "task_exits_total"][frozenset({g})] == sums["exits"]
        for c in DELAY_CLASSES:
            assert samples[prefix + "delays_total"][frozenset({g, ("class", c)})] == sums[f"{c}_count"]
            assert samples[prefix + "delay_seconds_total"][frozenset({g, ("class", c)})] == \
                pytest.approx(sums[f"{c}_seconds"])


def test_counters_are_the_sums_of_the_rows_per_cgroup_and_command():
    rng = np.random.default_rng(1)
    exporter = PrometheusExporter()
    intervals = [random_interval(rng, index=i) for i in range(5)]
    for iv in intervals:
        exporter.write(iv)
    samples = scrape(exporter)
    check_group_counters(samples, intervals, "cgroup")
    check_group_counters(samples, intervals, "command")
    # two cgroup ids with one path (a cgroup removed and made again) share one series
    assert "/system.slice" in {dict(k)["cgroup"] for k in samples["taskstats_cgroup_task_exits_total"]}
    assert samples["taskstats_intervals_total"][frozenset()] == 5
    assert exporter.counts().rows == sum(len(iv.tasks) for iv in intervals)


def test_names_types_and_units():
    exporter = PrometheusExporter(listener_counters=lambda: ListenerCounters(3, 2, 1))
    exporter.write(random_interval(np.random.default_rng(2)))
    body, content_type = exporter.exposition()
    assert content_type == TEXT_FORMAT.content_type
    samples, types = parse(body)
    for family, typ in types.items():
        assert family.startswith("taskstats_"), family
        if typ == "counter":    # node_exporter's naming: base units, _total; the unit in the name
            assert any(family.endswith(unit) for unit in ("_seconds", "_bytes", "_exits", "_delays", "_intervals",
                                                          "_tasks", "_messages", "_overruns")), family
    for grouping in ("cgroup", "command"):
        for name in ("cpu_usage_seconds", "cpu_user_seconds", "cpu_system_seconds", "delay_seconds", "delays",
                     "read_bytes", "write_bytes", "task_exits",
                     "folded_tasks"):
            assert types[f"taskstats_{grouping}_{name}"] == "counter"
        assert types[f"taskstats_{grouping}_folded_names"] == "gauge"
    delay_classes = {dict(k)["class"] for k in samples["taskstats_cgroup_delay_seconds_total"]}
    assert delay_classes == set(DELAY_CLASSES)
    assert samples["taskstats_listener_lost_messages_total"][frozenset()] == 3
    assert samples["taskstats_listener_dropped_messages_total"][frozenset()] == 2
    assert samples["taskstats_listener_overruns_total"][frozenset()] == 1
    assert samples["taskstats_delay_accounting_enabled"][frozenset()] == 1
    assert types["taskstats_exporter_scrape_duration_seconds"] == "summary"
    assert samples["taskstats_exporter_cpu_seconds_total"][frozenset()] > 0
    assert samples["taskstats_exporter_interval_processing_seconds_count"][frozenset()] == 1


def test_one_second_of_cpu_is_one():
    """Base units: 1,000,000 µs of user time, 10**9 ns of CPU and of run-queue wait are 1 second each."""
    exporter = PrometheusExporter()
    exporter.write(Interval.from_arrays(0, 10**9, {"ac_comm": [b"burn"], "ac_utime": [1_000_000], "cpu_ns": [10**9],
                                                   "cpu_delay_total": [10**9], "cgroup_id": [7]},
                                        cgroups={7: "/burn"}))
    samples = scrape(exporter)
    assert samples["taskstats_command_cpu_user_seconds_total"][frozenset({("command", "burn")})] == 1.0
    assert samples["taskstats_command_cpu_usage_seconds_total"][frozenset({("command", "burn")})] == 1.0
    assert samples["taskstats_cgroup_delay_seconds_total"][frozenset({("cgroup", "/burn"), ("class", "cpu")})] == 1.0


def test_counters_never_go_down_between_scrapes():
    rng = np.random.default_rng(3)
    exporter = PrometheusExporter(max_commands=3)
    previous: dict = {}
    for i in range(8):
        exporter.write(random_interval(rng, comms=[f"c{j}" for j in range(2 + i)], index=i))
        samples = scrape(exporter)
        for name, series in samples.items():
            if not name.endswith("_total") or name == "taskstats_exporter_cpu_seconds_total":
                continue
            for labels, value in series.items():
                assert value >= previous.get((name, labels), 0), (name, dict(labels))
                previous[(name, labels)] = value
        # every series seen before is still there (none evicted)
        assert all(labels in samples[name] for name, labels in previous)


def test_series_past_the_cap_fold_into_other():
    rng = np.random.default_rng(4)
    comms = [f"cmd{i:02d}" for i in range(12)] + [OTHER]
    intervals = [random_interval(rng, comms=comms, index=i) for i in range(3)]
    exporter = PrometheusExporter(max_commands=4)
    for iv in intervals:
        exporter.write(iv)
    samples = scrape(exporter)
    exits = samples["taskstats_command_task_exits_total"]
    shown = {dict(k)["command"] for k in exits}
    assert len(shown) == 5 and OTHER in shown       # 4 series + other
    expected = expected_by(intervals, "command")
    own = shown - {OTHER}
    folded = set(expected) - own
    assert len(folded) == len(comms) - 4
    assert exits[frozenset({("command", OTHER)})] == sum(expected[c]["exits"] for c in folded)
    user = samples["taskstats_command_cpu_user_seconds_total"]
    assert user[frozenset({("command", OTHER)})] == pytest.approx(sum(expected[c]["user"] for c in folded))
    folded_rows = sum(int(np.count_nonzero(np.isin(iv.tasks["ac_comm"], [c.encode() for c in folded])))
                      for iv in intervals)
    assert samples["taskstats_command_folded_tasks_total"][frozenset()] == folded_rows
    # a command really named "other" never gets its own series: it is counted in the fold
    assert samples["taskstats_command_folded_names"][frozenset()] == len(folded - {OTHER})
    # the totals over every series equal the totals over every row
    assert sum(exits.values()) == sum(iv.exits for iv in intervals)


def test_cgroup_cap_folds_and_unknown_cgroups_are_labelled():
    rng = np.random.default_rng(5)
    intervals = [random_interval(rng, index=i) for i in range(2)]
    exporter = PrometheusExporter(max_cgroups=1)
    for iv in intervals:
        exporter.write(iv)
    samples = scrape(exporter)
    exits = samples["taskstats_cgroup_task_exits_total"]
    assert len(exits) == 2
    assert sum(exits.values()) == sum(iv.exits for iv in intervals)
    exporter = PrometheusExporter()
    exporter.write(intervals[0])
    shown = {dict(k)["cgroup"] for k in scrape(exporter)["taskstats_cgroup_task_exits_total"]}
    assert shown == {OTHER, "unknown", "/", "/system.slice", "/user.slice/user-0.slice"}


def test_label_values_are_escaped_and_survive_a_parser():
    names = [b'say "hi"', b"back\\slash", b"new\nline", b"\xff\xfebad utf8"]
    exporter = PrometheusExporter()
    exporter.write(Interval.from_arrays(0, 1, {"ac_comm": names, "state": [EXITED] * 4}))
    for accept, parser in ((None, text_string_to_metric_families),
                           ("application/openmetrics-text; version=1.0.0", parse_openmetrics)):
        body = exporter.exposition(accept)[0].decode()
        fam = next(f for f in parser(body) if f.name == "taskstats_command_task_exits")
        got = {s.labels["command"] for s in fam.samples}
        assert got == {OTHER, 'say "hi"', "back\\slash", "new\nline", "\\xff\\xfebad utf8"}


def test_pressure_system_and_per_cgroup():
    rng = np.random.default_rng(6)
    intervals = [random_interval(rng, index=i) for i in range(3)]
    exporter = PrometheusExporter()
    for iv in intervals:
        exporter.write(iv)
    samples = scrape(exporter)
    system = samples["taskstats_pressure_stall_seconds_total"]
    assert {dict(k)["resource"] for k in system} == {"cpu", "io", "memory"}   # no irq: not reported
    assert system[frozenset({("resource", "io"), ("kind", "full")})] == \
        pytest.approx(sum(int(iv.psi.system["io_full_us"]) for iv in intervals) / 1e6)
    per_cgroup = samples["taskstats_cgroup_pressure_stall_seconds_total"]
    by_path: dict = defaultdict(int)
    for iv in intervals:
        for row in iv.psi.cgroups:
            by_path[CGROUPS[int(row["cgroup_id"])]] += int(row["memory_some_us"])
    for path, total in by_path.items():
        key = frozenset({("cgroup", path), ("resource", "memory"), ("kind", "some")})
        assert per_cgroup[key] == pytest.approx(total / 1e6)


def test_the_collector_says_what_the_fast_exposition_says():
    rng = np.random.default_rng(7)
    exporter = PrometheusExporter(max_commands=3, listener_counters=lambda: ListenerCounters(0, 0, 0))
    for i in range(3):
        exporter.write(random_interval(rng, index=i, lost=i))
    registry = CollectorRegistry()
    registry.register(exporter)
    ours = scrape(exporter)
    theirs = parse(generate_latest(registry))[0]
    volatile = {"taskstats_exporter_cpu_seconds_total", "taskstats_exporter_scrape_duration_seconds_count",
                "taskstats_exporter_scrape_duration_seconds_sum"}
    assert set(ours) == set(theirs)
    for name in set(ours) - volatile:
        assert ours[name] == pytest.approx(theirs[name]), name
    assert ours["taskstats_interval_lost_exits_total"][frozenset()] == 3


def test_openmetrics_on_request():
    exporter = PrometheusExporter()
    exporter.write(random_interval(np.random.default_rng(8)))
    accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
    assert negotiate(accept) is OPENMETRICS_FORMAT
    assert negotiate("text/plain") is negotiate(None) is TEXT_FORMAT
    body, content_type = exporter.exposition(accept)
    assert content_type.startswith("application/openmetrics-text") and body.endswith(b"# EOF\n")
    families = {f.name: f for f in parse_openmetrics(body.decode())}
    assert families["taskstats_cgroup_cpu_usage_seconds"].type == "counter"


def test_concurrent_scrapes_while_intervals_arrive_see_monotonic_counters():
    rng = np.random.default_rng(9)
    intervals = [random_interval(rng, n=200, index=i) for i in range(40)]
    exporter = PrometheusExporter()
    errors = []

    def scraper():
        last = 0.0
        try:
            while not done.is_set():
                exits = sum(scrape(exporter)["taskstats_command_task_exits_total"].values())
                assert exits >= last
                last = exits
        except Exception as e:   # reported by the main thread
            errors.append(e)

    done = threading.Event()
    threads = [threading.Thread(target=scraper) for _ in range(4)]
    for t in threads:
        t.start()
    for iv in intervals:
        exporter.write(iv)
    done.set()
    for t in threads:
        t.join()
    assert not errors, errors
    assert sum(scrape(exporter)["taskstats_command_task_exits_total"].values()) == sum(iv.exits for iv in intervals)


def test_http_server_serves_metrics_and_refuses_a_port_in_use():
    exporter = PrometheusExporter()
    exporter.write(random_interval(np.random.default_rng(10)))
    with MetricsServer(exporter, "127.0.0.1", 0) as server:
        with urllib.request.urlopen(server.url) as reply:
            assert reply.headers["Content-Type"] == TEXT_FORMAT.content_type
            assert "taskstats_cgroup_cpu_usage_seconds_total" in parse(reply.read())[0]
        request = urllib.request.Request(server.url, headers={"Accept": "application/openmetrics-text"})
        with urllib.request.urlopen(request) as reply:
            assert reply.read().endswith(b"# EOF\n")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(server.url.replace("/metrics", "/nope"))
        assert err.value.code == 404
        with pytest.raises(ListenError, match=f"127.0.0.1:{server.address[1]}.*in use"):
            MetricsServer(exporter, "127.0.0.1", server.address[1])


def test_parse_listen():
    assert parse_listen("127.0.0.1:9456") == ("127.0.0.1", 9456)
    assert parse_listen(":9456") == ("", 9456)
    assert parse_listen("[::1]:80") == ("::1", 80)
    for bad in ("9456", "host:", "host:http", "h:70000"):
        with pytest.raises(ValueError, match="HOST:PORT"):
            parse_listen(bad)


def test_folded_names_are_remembered_up_to_a_bound(monkeypatch):
    from taskstats_fast.live import exporter as module
    monkeypatch.setattr(module, "FOLDED_NAMES_REMEMBERED", 5)
    exporter = PrometheusExporter(max_commands=1)
    comms = [f"c{i}".encode() for i in range(20)]
    exporter.write(Interval.from_arrays(0, 1, {"ac_comm": comms, "state": [EXITED] * 20}))
    samples = scrape(exporter)
    assert samples["taskstats_command_folded_names"][frozenset()] == 5
    assert samples["taskstats_command_folded_tasks_total"][frozenset()] == 19   # the count stays exact


def test_the_exporter_is_a_sink():
    from taskstats_fast.sink import Sink, SinkStats
    exporter = PrometheusExporter()
    assert isinstance(exporter, Sink)
    iv = random_interval(np.random.default_rng(11), n=50)
    exporter.write(iv)
    exporter.write(np.zeros(0, iv.tasks.dtype))     # a tick
    with pytest.raises(TypeError, match="Interval"):
        exporter.write(iv.tasks)
    exporter.flush()
    assert exporter.stats() == SinkStats(written=50)
    assert exporter.counts().intervals == 1
    exporter.close()
