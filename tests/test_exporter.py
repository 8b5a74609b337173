"""The Prometheus exporter on synthetic intervals: what /metrics says, parsed by prometheus_client.

The oracle for every counter is a plain Python sum over the rows fed in (not the exporter's numpy
group-by); the exposition is also cross-checked against prometheus_client's own rendering of the
exporter's collector.
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections import defaultdict

import numpy as np
import pytest

pytest.importorskip("prometheus_client")
from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from taskstats_fast import __version__  # noqa: E402
from taskstats_fast.accounting.interval import (BORN, DELAY_CLASSES, EXITED, Interval)
from taskstats_fast.errors import ListenError  # noqa: E402
from taskstats_fast.live.exporter import (OPENMETRICS_FORMAT, OTHER, TEXT_FORMAT, Grouping, ListenerCounters,  # noqa: E402
                                          PrometheusExporter, negotiate)
from taskstats_fast.live.cgroup_labels import LABEL_NAMES  # noqa: E402
from taskstats_fast.live.series import SeriesTable, Store  # noqa: E402
from taskstats_fast.live.server import MetricsServer, parse_listen  # noqa: E402
from taskstats_fast.layout import DELAY_CLASS_BY_NAME  # noqa: E402

from exposition import parse, readme_metric_table  # noqa: E402
from random_intervals import CGROUPS, random_interval  # noqa: E402

def scrape(exporter, accept=None):
    return parse(exporter.exposition(accept)[0])[0]


def expected_by(intervals, key):
    """Oracle: per group, the plain Python sums of the rows (seconds in base units); cgroup "/"
    is every row."""
    out: dict = defaultdict(lambda: defaultdict(float))
    for iv in intervals:
        for row in iv.tasks:
            if key == "cgroup":
                group = iv.cgroups.get(int(row["cgroup_id"]), "unknown")
            else:
                group = row["ac_comm"].decode()
            for sums in ([out[group], out["/"]] if key == "cgroup" and group != "/" else [out[group]]):
                _add_row(sums, row)
    return out


def _add_row(sums, row):
    sums["usage"] += int(row["cpu_ns"]) / 1e9
    sums["user"] += int(row["ac_utime"]) / 1e6
    sums["system"] += int(row["ac_stime"]) / 1e6
    sums["read"] += int(row["read_bytes"])
    sums["write"] += int(row["write_bytes"])
    sums["exits"] += bool(row["state"] & EXITED)
    for c in DELAY_CLASSES:
        sums[f"{c}_count"] += int(row[f"{c}_count"])
        sums[f"{c}_seconds"] += int(row[f"{c}_delay_total"]) / 1e9


def check_group_counters(samples, intervals, key):
    expected = expected_by(intervals, key)
    prefix = f"taskstats_{key}_"
    for group, sums in expected.items():
        g = (key, group)
        assert samples[prefix + "cpu_usage_seconds_total"][frozenset({g})] == pytest.approx(sums["usage"])
        assert samples[prefix + "cpu_seconds_total"][frozenset({g, ("mode", "user")})] == pytest.approx(sums["user"])
        assert samples[prefix + "cpu_seconds_total"][frozenset({g, ("mode", "system")})] == \
            pytest.approx(sums["system"])
        assert samples[prefix + "read_bytes_total"][frozenset({g})] == sums["read"]
        assert samples[prefix + "write_bytes_total"][frozenset({g})] == sums["write"]
        assert samples[prefix + "task_exits_total"][frozenset({g})] == sums["exits"]
        for c in DELAY_CLASSES:
            label = ("class", DELAY_CLASS_BY_NAME[c].waits_for)
            assert samples[prefix + "delays_total"][frozenset({g, label})] == sums[f"{c}_count"]
            assert samples[prefix + "delay_seconds_total"][frozenset({g, label})] == \
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
        if typ == "counter":    # node_exporter's naming: base units, _total; the unit in the name
            assert family.startswith("process_") or \
                any(family.endswith(unit) for unit in ("_seconds", "_bytes", "_exits", "_delays", "_intervals",
                                                       "_tasks", "_messages", "_overruns", "_series")), family
        else:
            assert family.startswith(("taskstats_", "process_")), family
    for grouping in ("cgroup", "command"):
        for name in ("cpu_usage_seconds", "cpu_seconds", "delay_seconds", "delays",
                     "read_bytes", "write_bytes", "task_exits", "folded_tasks", "forgotten_series"):
            assert types[f"taskstats_{grouping}_{name}"] == "counter"
        for name in ("folded_names", "threads", "processes", "resident_memory_peak_bytes"):
            assert types[f"taskstats_{grouping}_{name}"] == "gauge"
    delay_classes = {dict(k)["class"] for k in samples["taskstats_cgroup_delay_seconds_total"]}
    assert delay_classes == {"runqueue", "block_io", "swap_in", "reclaim", "thrashing", "compaction",
                             "write_protect_copy", "irq"}
    assert {dict(k)["mode"] for k in samples["taskstats_command_cpu_seconds_total"]} == {"user", "system"}
    (build,) = samples["taskstats_build_info"]
    assert dict(build)["version"] == __version__ and samples["taskstats_build_info"][build] == 1
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_virtual_memory_bytes",
                 "process_open_fds", "process_max_fds", "process_start_time_seconds"):
        assert samples[name][frozenset()] > 0, name
    assert time.time() - 3600 < samples["process_start_time_seconds"][frozenset()] <= time.time()
    assert samples["taskstats_listener_lost_messages_total"][frozenset()] == 3
    assert samples["taskstats_listener_dropped_messages_total"][frozenset()] == 2
    assert samples["taskstats_listener_overruns_total"][frozenset()] == 1
    assert samples["taskstats_delay_accounting_enabled"][frozenset()] == 1
    assert types["taskstats_exporter_scrape_duration_seconds"] == "summary"
    assert samples["taskstats_exporter_interval_processing_seconds_count"][frozenset()] == 1


def test_one_second_of_cpu_is_one():
    """Base units: 1,000,000 µs of user time, 10**9 ns of CPU and of run-queue wait are 1 second each."""
    exporter = PrometheusExporter()
    exporter.write(Interval.from_arrays(0, 10**9, {"ac_comm": [b"burn"], "ac_utime": [1_000_000], "cpu_ns": [10**9],
                                                   "cpu_delay_total": [10**9], "cgroup_id": [7]},
                                        cgroups={7: "/burn"}))
    samples = scrape(exporter)
    assert samples["taskstats_command_cpu_seconds_total"][frozenset({("command", "burn"), ("mode", "user")})] == 1.0
    assert samples["taskstats_command_cpu_usage_seconds_total"][frozenset({("command", "burn")})] == 1.0
    assert samples["taskstats_cgroup_delay_seconds_total"][frozenset({("cgroup", "/burn"),
                                                                      ("class", "runqueue")})] == 1.0


def test_counters_never_go_down_between_scrapes():
    rng = np.random.default_rng(3)
    exporter = PrometheusExporter(max_commands=3)
    previous: dict = {}
    for i in range(8):
        exporter.write(random_interval(rng, comms=[f"c{j}" for j in range(2 + i)], index=i))
        samples = scrape(exporter)
        for name, series in samples.items():
            if not name.endswith("_total") or name == "process_cpu_seconds_total":
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
    user = samples["taskstats_command_cpu_seconds_total"]
    assert user[frozenset({("command", OTHER), ("mode", "user")})] == \
        pytest.approx(sum(expected[c]["user"] for c in folded))
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
    assert len(exits) == 3       # other, / and the one series the cap allows
    assert exits[frozenset({("cgroup", "/")})] == sum(iv.exits for iv in intervals)
    assert sum(v for k, v in exits.items() if ("cgroup", "/") not in k) == \
        sum(iv.exits for iv in intervals) - sum(int(np.count_nonzero(((iv.tasks["state"] & EXITED) != 0) & (
            iv.tasks["cgroup_id"] == 100))) for iv in intervals)   # the root's own tasks are in "/" alone
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
    system = {k - {("cgroup", "/")}: v for k, v in samples["taskstats_cgroup_pressure_stall_seconds_total"].items()
              if ("cgroup", "/") in k}     # the root cgroup's pressure is the system's
    assert {dict(k)["resource"] for k in system} == {"cpu", "io", "memory"}   # no irq: not reported
    assert system[frozenset({("resource", "io"), ("kind", "full")})] == \
        pytest.approx(sum(int(iv.psi.system["io_full_us"]) for iv in intervals) / 1e6)
    per_cgroup = samples["taskstats_cgroup_pressure_stall_seconds_total"]
    by_path: dict = defaultdict(int)
    for iv in intervals:
        for row in iv.psi.cgroups:
            by_path[CGROUPS[int(row["cgroup_id"])]] += int(row["memory_some_us"])
    for path, total in by_path.items():
        if path == "/":
            continue
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
    volatile = {"process_cpu_seconds_total", "process_open_fds", "process_resident_memory_bytes",
                "process_virtual_memory_bytes", "taskstats_exporter_scrape_duration_seconds_count",
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
    from taskstats_fast.live import series as module
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


def _churn_interval(i, *, steady=("steady",), cgroup_lives=3):
    """Interval i (1 s long) of a churn: a steady command in a steady cgroup, plus one unique
    command run in a unique cgroup that exists for ``cgroup_lives`` intervals."""
    cgroups = {10: "/steady.slice"}
    cgroups.update({1000 + j: f"/churn.slice/job-{j}.scope" for j in range(max(0, i - cgroup_lives + 1), i + 1)})
    comms = [c.encode() for c in steady] + [f"once-{i}".encode()]
    return Interval.from_arrays(i * 10**9, (i + 1) * 10**9, {
        "ac_comm": comms, "ac_pid": [1, 1000 + i], "ac_tgid": [1, 1000 + i],
        "state": [0, BORN | EXITED], "cgroup_id": [10, 1000 + i], "cpu_ns": [10**6, 10**6]}, cgroups=cgroups)


def _exposed(exporter) -> int:
    return sum(1 for line in exporter.exposition()[0].splitlines() if not line.startswith(b"#"))


def test_a_churn_of_commands_and_cgroups_returns_to_the_baseline_of_series():
    exporter = PrometheusExporter(forget_after=5)

    def steady(i):
        exporter.write(Interval.from_arrays(i * 10**9, (i + 1) * 10**9, {"ac_comm": [b"steady"], "cgroup_id": [10]},
                                            cgroups={10: "/steady.slice"}))

    steady(0)
    steady(1)
    baseline = _exposed(exporter)
    churn = 200
    for i in range(2, 2 + churn):
        exporter.write(_churn_interval(i))
    during = _exposed(exporter)
    for i in range(2 + churn, 2 + churn + 6):      # the steady task alone, past forget_after
        steady(i)
    after = scrape(exporter)
    assert _exposed(exporter) == baseline < during
    # bounded during the churn too: forget_after (5 s) of commands, and cgroups while they exist
    assert set(dict(k)["command"] for k in after["taskstats_command_task_exits_total"]) == {OTHER, "steady"}
    assert set(dict(k)["cgroup"] for k in after["taskstats_cgroup_task_exits_total"]) == \
        {OTHER, "/", "/steady.slice"}
    # nothing was folded (the caps were never reached) and the host total stays exact
    assert after["taskstats_command_folded_tasks_total"][frozenset()] == 0
    assert after["taskstats_cgroup_task_exits_total"][frozenset({("cgroup", "/")})] == churn
    assert after["taskstats_command_forgotten_series_total"][frozenset()] == churn
    assert after["taskstats_cgroup_forgotten_series_total"][frozenset()] == churn
    assert exporter.counts().series == baseline


def test_a_removed_cgroup_leaves_at_once_and_a_returning_group_starts_from_zero():
    exporter = PrometheusExporter(forget_after=600)
    exporter.write(_churn_interval(0, cgroup_lives=1))
    exits = scrape(exporter)["taskstats_cgroup_task_exits_total"]
    assert exits[frozenset({("cgroup", "/churn.slice/job-0.scope")})] == 1
    exporter.write(_churn_interval(1, cgroup_lives=1))        # job-0's cgroup is gone from the looks
    samples = scrape(exporter)
    assert frozenset({("cgroup", "/churn.slice/job-0.scope")}) not in samples["taskstats_cgroup_task_exits_total"]
    assert frozenset({("command", "once-0")}) in samples["taskstats_command_task_exits_total"]   # 600 s not up
    # a command forgotten and seen again: its counter restarts from 0 (a reset rate() handles)
    exporter = PrometheusExporter(forget_after=2)
    for i in (0, 1):
        exporter.write(Interval.from_arrays(i * 10**9, (i + 1) * 10**9, {"ac_comm": [b"back"], "state": [EXITED]}))
    assert scrape(exporter)["taskstats_command_task_exits_total"][frozenset({("command", "back")})] == 2
    exporter.write(Interval.from_arrays(5 * 10**9, 6 * 10**9, {"ac_comm": [b"x"], "state": [0]}))
    assert frozenset({("command", "back")}) not in scrape(exporter)["taskstats_command_task_exits_total"]
    exporter.write(Interval.from_arrays(6 * 10**9, 7 * 10**9, {"ac_comm": [b"back"], "state": [EXITED]}))
    assert scrape(exporter)["taskstats_command_task_exits_total"][frozenset({("command", "back")})] == 1


def test_forgetting_frees_slots_under_the_cap_and_the_fold_stays_exact():
    exporter = PrometheusExporter(max_commands=2, forget_after=3)
    total = 0
    for i in range(30):
        comms = [f"a{i}".encode(), f"b{i}".encode(), f"c{i}".encode()]   # 3 new names, room for 2
        exporter.write(Interval.from_arrays(i * 10**9, (i + 1) * 10**9, {"ac_comm": comms, "state": [EXITED] * 3}))
        total += 3
        exits = scrape(exporter)["taskstats_command_task_exits_total"]
        assert len(exits) <= 3
        assert sum(exits.values()) <= total
    samples = scrape(exporter)
    # a slot comes free 3 s after its name was last seen, so every 4th interval's names get
    # series (a0, a4, ... a28) and the rest fold
    assert frozenset({("command", "a28")}) in samples["taskstats_command_task_exits_total"]
    assert samples["taskstats_command_forgotten_series_total"][frozenset()] == 2 * 7
    assert samples["taskstats_command_folded_tasks_total"][frozenset()] == 90 - 2 * 8
    assert samples["taskstats_command_task_exits_total"][frozenset({("command", OTHER)})] == \
        samples["taskstats_command_folded_tasks_total"][frozenset()]


def test_gauges_are_the_live_tasks_at_the_interval_end():
    exporter = PrometheusExporter()
    # two processes of "web" (one with 2 threads), one exited thread, and a "db" process, in 2 cgroups
    exporter.write(Interval.from_arrays(0, 10**9, {
        "ac_comm": [b"web", b"web", b"web", b"web", b"db"], "ac_pid": [10, 11, 20, 21, 30],
        "ac_tgid": [10, 10, 20, 20, 30], "state": [0, 0, 0, EXITED, 0],
        "hiwater_rss": [1000, 1000, 3000, 3000, 500], "cgroup_id": [1, 1, 1, 1, 2]},
        cgroups={1: "/system.slice/web.service", 2: "/system.slice/db.service"}))
    samples = scrape(exporter)
    web = frozenset({("command", "web")})
    assert samples["taskstats_command_threads"][web] == 3
    assert samples["taskstats_command_processes"][web] == 2
    assert samples["taskstats_command_resident_memory_peak_bytes"][web] == 4000 * 1024
    root = frozenset({("cgroup", "/")})
    assert samples["taskstats_cgroup_threads"][root] == 4
    assert samples["taskstats_cgroup_processes"][root] == 3
    assert samples["taskstats_cgroup_resident_memory_peak_bytes"][root] == 4500 * 1024
    labelled = parse(exporter.exposition()[0], derived=True)[0]["taskstats_cgroup_processes"]
    assert labelled[frozenset({("cgroup", "/system.slice/db.service"), ("unit", "db.service")})] == 1
    # the next interval has no live web task: its gauges drop to 0 (the series stays until forgotten)
    exporter.write(Interval.from_arrays(10**9, 2 * 10**9, {"ac_comm": [b"db"], "ac_pid": [30], "ac_tgid": [30],
                                                           "cgroup_id": [2]},
                                        cgroups={1: "/system.slice/web.service", 2: "/system.slice/db.service"}))
    samples = scrape(exporter)
    assert samples["taskstats_command_threads"][web] == 0
    assert samples["taskstats_command_processes"][frozenset({("command", "db")})] == 1


def test_the_readme_table_lists_every_metric_with_its_type_and_labels():
    exporter = PrometheusExporter(grouping=Grouping(lambda rows, paths: ["g"] * len(rows)),
                                  listener_counters=lambda: ListenerCounters(0, 0, 0))
    exporter.write(random_interval(np.random.default_rng(12)))
    samples, types = parse(exporter.exposition()[0], derived=True)
    group_labels = {"cgroup": {"cgroup", *LABEL_NAMES}, "command": {"command"}, "group": {"groupname"}}
    expected = {}
    for name, (typ, extra, grouped) in readme_metric_table().items():
        for grouping in (group_labels if "GROUP" in name else
                         [g for g in group_labels if name.startswith(f"taskstats_{g}_")] or [None]):
            family = name.replace("GROUP", grouping or "")
            family = family[:-len("_total")] if typ == "counter" else family
            expected[family] = (typ, extra | (group_labels[grouping] if grouped else set()))
    assert set(expected) == set(types)
    for family, (typ, labels) in expected.items():
        assert types[family] == typ, family
        shown = set()
        for sample_name, series in samples.items():
            if sample_name == family or sample_name in (family + "_total", family + "_count", family + "_sum"):
                for key in series:
                    shown |= {k for k, _ in key}
        if "cgroup" in labels:   # the path's own labels appear where a path has them
            assert "cgroup" in shown and shown <= labels, (family, shown, labels)
        else:
            assert shown == labels, (family, shown, labels)


def test_series_rows_of_names_new_known_repeated_none_and_past_the_cap():
    table = SeriesTable("command", cap=2, pinned=("total",))
    first = table.rows_of(["a", None, "b", "a", "c", "c", "total"], now_ns=5)
    a, b = table.row("a"), table.row("b")
    assert first.tolist() == [a, -1, b, a, 0, 0, table.row("total")]
    assert table.names[0] == OTHER and len({a, b, table.row("total"), 0}) == 4
    assert table.folded_names == 1 and "c" not in table.names      # past the cap: folded into other
    again = table.rows_of(("b", "a", "c"), now_ns=9)               # any iterable, all known
    assert again.tolist() == [b, a, 0]
    assert table.last_seen[a] == table.last_seen[b] == 9
    fresh = SeriesTable("cgroup", cap=5)
    assert fresh.rows_of(["x", "x", "y", "x"], now_ns=1).tolist() == [1, 1, 2, 1]   # a new name once


def test_series_are_forgotten_exactly_when_stale_whatever_was_checked_before():
    # the oldest last-seen is remembered between checks: a check must still find every series
    # that went stale since, and one named by an interval from the past
    table = SeriesTable("command", cap=10)
    table.rows_of(["a"], now_ns=10)
    table.rows_of(["b"], now_ns=20)
    assert table.forget(5) == 0 and table.forget(10) == 0     # a was seen at 10: not before
    table.rows_of(["b"], now_ns=30)
    assert table.forget(11) == 1 and "a" not in table.names
    assert table.forget(30) == 0
    table.rows_of(["c"], now_ns=12)                           # an interval from the past
    assert table.forget(13) == 1 and table.names[1:] == ["b"]
    assert table.forget(31) == 1 and table.names == [OTHER] and table.forgotten == 3


@pytest.mark.parametrize("rows", [[3], [0, 2, 5], [4, 1, 4, 0, 4], [7, 7]])
def test_a_store_adds_each_value_into_its_row_repeats_included(rows):
    store = Store(("a", "b"))
    values = np.arange(2 * len(rows), dtype=np.uint64).reshape(len(rows), 2) + 1
    store.add(np.array(rows, np.intp), values)
    store.add(np.array(rows, np.intp), values)
    want = np.zeros((max(rows) + 1, 2), np.uint64)
    for row, value in zip(rows, values):
        want[row] += 2 * value
    assert store.first(max(rows) + 1).tolist() == want.tolist()
