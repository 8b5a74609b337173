"""Interval recordings (``record --interval``): interval rows through the sink, the writers and
the readers of every format, and ``summary`` of them.

The unit tests build synthetic intervals (``Interval.from_arrays``) and check the round trip
field by field; the kernel test records a workload of its own (a unique command name) with the
real command and finds it in what ``read_frame`` reads back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from taskstats_fast import recording
from taskstats_fast.accounting.interval import SUMMED_FIELDS, Interval
from taskstats_fast import schema
from taskstats_fast.recording import interval_rows as intervals
from taskstats_fast.recording.intervals import record_intervals

from scripted_accounting import ScriptedAccounting

CLI = [sys.executable, "-m", "taskstats_fast"]
#: how much of an interval span one task's reading may drift from the looks' timestamps: the
#: time a look takes to reach it differs between looks (a loaded host slows some looks more)
READ_SKEW = 0.05
T0 = 1_764_590_400 * 10**9   # 2025-12-01T12:00:00Z


def synthetic(k: int, cgroups=None) -> Interval:
    return Interval.from_arrays(T0 + k * 10**9, T0 + (k + 1) * 10**9, cgroups=cgroups, columns={
        "ac_pid": [10, 11, 20], "ac_tgid": [10, 10, 20], "ac_comm": [b"web", b"web", b"db\xff"],
        "cgroup_id": [7, 7, 9], "cpu_ns": [5_000 + k, 6_000, 2**40], "ac_utime": [1, 2, 3],
        "cpu_delay_total": [100, 0, 300], "read_char": [4096, 0, 1], "state": [0, 1, 3],
        "hiwater_rss": [10, 20, 30]})


@pytest.mark.parametrize("fmt", recording.FORMATS)
@pytest.mark.parametrize("by", intervals.BY)
def test_interval_rows_round_trip_every_format(tmp_path, fmt, by):
    written = [intervals.interval_rows(synthetic(k), by) for k in range(3)]
    out = tmp_path / "ds"
    with recording.FileSink(str(out), fmt, schema=intervals.interval_schema(by)) as sink:
        for rows in written:
            sink.write(rows)
    meta = recording.read_metadata(sink.files[0])
    assert (meta["rows"], meta["by"], meta["records"], meta["intervals"]) == \
        ("interval", by, sum(map(len, written)), 3)
    back = recording.read_records(str(out))
    expected = np.concatenate(written)
    assert back.dtype == intervals.row_dtype(by)
    if fmt != "npy":   # tables hold text: the invalid byte of "db\xff" was replaced
        expected["ac_comm"][expected["ac_comm"] == b"db\xff"] = "db\ufffd".encode()
    for name in expected.dtype.names:
        assert (back[name] == expected[name]).all(), name
    frame = recording.read_frame(str(out))
    assert str(frame["interval_start"].dtype) == "datetime64[ns, UTC]"
    assert frame["interval_start"].min().value == T0
    assert (frame["interval_end"] > frame["interval_start"]).all()
    assert "kind" not in frame   # not exit records


def test_by_process_rows_sum_threads():
    rows = intervals.interval_rows(synthetic(0), "process")
    web = rows[rows["ac_tgid"] == 10][0]
    assert (web["tasks"], web["cpu_ns"], web["hiwater_rss"]) == (2, 11_000, 20)


def test_exit_and_interval_files_are_not_read_together(tmp_path):
    recording.write_file(str(tmp_path / "a.npy"), np.zeros(1, schema.DEFAULT.dtype))
    with recording.FileSink(str(tmp_path / "b.npy"), schema=intervals.interval_schema()) as sink:
        sink.write(intervals.interval_rows(synthetic(0)))
    with pytest.raises(recording.reading.MixedRowsError, match="read them separately"):
        recording.read_records(str(tmp_path))


def test_file_sink_refuses_rows_of_another_schema(tmp_path):
    with recording.FileSink(str(tmp_path / "x.npy"), schema=intervals.interval_schema()) as sink:
        with pytest.raises(TypeError, match="schema's rows"):
            sink.write(np.zeros(1, schema.DEFAULT.dtype))


def test_summary_of_intervals_ranks_usage_not_exits(tmp_path):
    out = tmp_path / "ds"
    with recording.FileSink(str(out), "npy", schema=intervals.interval_schema("task")) as sink:
        for k in range(3):
            sink.write(intervals.interval_rows(synthetic(k)))
    s = recording.summarize(str(out))
    assert (s["kind"], s["intervals"], s["records"], s["exits_per_second"]) == \
        ("intervals", 3, 9, None)
    assert "exits" not in s
    assert s["cpu"][0]["comm"] == "db\ufffd" and s["cpu"][0]["cpu_ns"] == 3 * 2**40
    assert [r["tgid"] for r in s["processes"]] == [20, 10]
    assert s["cgroups"][0] == {"cgroup_id": 9, "cgroup": None, "processes": 1,
                               "cpu_ns": 3 * 2**40, "delay_ns": 900.0}
    text = subprocess.run([*CLI, "summary", str(out)], capture_output=True, text=True, timeout=60)
    assert text.returncode == 0, text.stderr
    assert "usage, not exits" in text.stdout and "task (thread) exits" not in text.stdout
    plot = subprocess.run([*CLI, "summary", str(out), "--plot", str(tmp_path / "p.png")],
                          capture_output=True, text=True, timeout=60)
    assert plot.returncode == 2 and plot.stderr.count("\n") == 1, plot.stderr
    assert "interval recording" in plot.stderr


@pytest.mark.parametrize("by", intervals.BY)
def test_summary_names_cgroups_by_path(tmp_path, by):
    # cgroup 9's path is known; 7's is not (its rows carry an empty path); 12 is another cgroup
    # made again under 9's path after 9 was removed
    out = tmp_path / "ds"
    with recording.FileSink(str(out), "npy", schema=intervals.interval_schema(by)) as sink:
        for k in range(3):
            sink.write(intervals.interval_rows(synthetic(k, {9: "/db.slice"}), by))
        again = Interval.from_arrays(T0 + 3 * 10**9, T0 + 4 * 10**9, cgroups={12: "/db.slice"},
                                     columns={"ac_pid": [40], "ac_tgid": [40], "cgroup_id": [12],
                                              "ac_comm": [b"db"], "cpu_ns": [10**9]})
        sink.write(intervals.interval_rows(again, by))
    s = recording.summarize(str(out))
    assert [(r["cgroup_id"], r["cgroup"]) for r in s["cgroups"]] == \
        [(9, "/db.slice"), (12, "/db.slice"), (7, None)]
    run = subprocess.run([*CLI, "summary", "--json", str(out)], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, run.stderr
    assert [r["cgroup"] for r in json.loads(run.stdout)["cgroups"]] == \
        ["/db.slice", "/db.slice", None]
    text = recording_text(out)
    table = text[text.index("cgroups by CPU time"):].splitlines()
    assert table[1].split()[0] == "cgroup"
    assert [line.split("  ")[1].strip() for line in table[2:5]] == \
        ["/db.slice (cgroup_id 9)", "/db.slice (cgroup_id 12)", "cgroup_id 7"]


def test_summary_of_interval_files_without_paths_names_cgroups_by_id():
    # written before interval rows carried the cgroup's path (and their start)
    fixture = os.path.join(os.path.dirname(__file__), "data", "recordings-format2",
                           "intervals-task.parquet")
    s = recording.summarize(fixture)
    assert {r["cgroup"] for r in s["cgroups"]} == {None}
    text = recording_text(fixture)
    cgroups = text[text.index("cgroups by CPU time"):].splitlines()[2:4]
    assert {line.split("  ")[1].strip() for line in cgroups} == {"cgroup_id 9", "cgroup_id 7"}
    processes = text[text.index("processes by CPU time"):].splitlines()
    assert processes[1].split()[:3] == ["tgid", "started", "(UTC)"]
    assert all(line.split()[1] == "?" for line in processes[2:4])


def recording_text(path) -> str:
    run = subprocess.run([*CLI, "summary", str(path)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return run.stdout


@pytest.mark.parametrize("by", intervals.BY)
def test_summary_keeps_a_reused_tgid_apart(tmp_path, by):
    # tgid 30 is "true" (with a thread started a second before its leader: ac_btime jitters)
    # in the first interval, then "dd" started later under the same id in the second
    def one(k, comm, start, cpu):
        return Interval.from_arrays(T0 + k * 10**9, T0 + (k + 1) * 10**9, {
            "ac_pid": [30, 31], "ac_tgid": [30, 30], "ac_comm": [comm, comm],
            "ac_btime64": [start, start - 1], "cpu_ns": [cpu, cpu], "cgroup_id": [7, 7]})
    out = tmp_path / "ds"
    with recording.FileSink(str(out), "npy", schema=intervals.interval_schema(by)) as sink:
        sink.write(intervals.interval_rows(one(0, b"true", T0 // 10**9 - 5, 1), by))
        sink.write(intervals.interval_rows(one(1, b"dd", T0 // 10**9 + 1, 10**9), by))
    s = recording.summarize(str(out))
    assert [(r["tgid"], r["comm"], r["cpu_ns"]) for r in s["processes"]] == \
        [(30, "dd", 2e9), (30, "true", 2.0)]
    assert s["processes"][0]["start"].startswith("2025-12-01T12:00:01")
    assert s["cgroups"][0]["processes"] == 2
    # the text table tells the two apart by their start, to the second
    text = recording_text(out)
    rows = text[text.index("processes by CPU time"):].splitlines()[2:4]
    assert [row.split()[:4] for row in rows] == [["30", "2025-12-01", "12:00:01", "dd"],
                                                 ["30", "2025-12-01", "11:59:55", "true"]]
    if by == "process":
        assert s["tasks"] == 2   # processes, counted once each


def test_by_process_without_interval_is_one_usage_line(tmp_path):
    run = subprocess.run([*CLI, "record", "--by", "process", "--seconds", "1", "-o",
                          str(tmp_path / "x")], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and "--interval" in run.stderr
    assert not (tmp_path / "x").exists()


def test_record_intervals_writes_a_final_partial_interval():
    class ListSink:
        def __init__(self):
            self.batches, self.closed = [], False

        def write(self, batch):
            self.batches.append(batch)

        def flush(self):
            pass

        def close(self):
            self.closed = True

        def stats(self):
            return recording.SinkStats(written=sum(map(len, self.batches)))

    sink = ListSink()
    result = record_intervals(ScriptedAccounting(synthetic, interval=0.2), sink, stop=time.monotonic() + 0.5,
                                        by="process")
    assert sink.closed and result.intervals == len(sink.batches) == 3   # 0.2, 0.4, then 0.5
    assert result.rows == 6 and result.stopped_by == "deadline"
    with pytest.raises(ValueError, match="per task or per process"):
        record_intervals(ScriptedAccounting(synthetic, interval=0.2), sink, by="cgroup")


def _schedstat_ns(pid: int) -> int:
    """The scheduler's clock of ``pid`` (its run time, ns), the oracle for its rows' cpu_ns."""
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


@pytest.mark.kernel
def test_record_interval_finds_our_workload(tmp_path):
    comm = f"tsfri{os.getpid() % 100000}"
    # burns until killed: on a loaded host the two recordings (each a Python start-up, then
    # 2.5 s) can take far longer than they do on a quiet one
    burner = subprocess.Popen([sys.executable, "-c", (
        f"open('/proc/self/comm', 'w').write({comm!r})\n"
        "while True: pass\n")])
    try:
        deadline = time.monotonic() + 60
        while open(f"/proc/{burner.pid}/comm").read().strip() != comm:
            assert time.monotonic() < deadline, "the burner did not take its name in 60 s"
            time.sleep(0.01)
        runs = {}
        for name, extra in (("ds", ()), ("x.npy", ("--by", "process"))):
            out = tmp_path / name
            cpu_before, wall_before = _schedstat_ns(burner.pid), time.time_ns()
            run = subprocess.run([*CLI, "record", "--interval", "1", "--seconds", "2.5",
                                  "-o", str(out), *extra], capture_output=True, text=True,
                                 timeout=300)
            cpu_after, wall_after = _schedstat_ns(burner.pid), time.time_ns()
            assert run.returncode == 0, run.stderr
            runs[name] = (out, cpu_after - cpu_before, wall_after - wall_before)
    finally:
        burner.kill()
        burner.wait()
    for name, (out, cpu_during, wall_during) in runs.items():
        frame = recording.read_frame(str(out))
        assert frame["interval_start"].nunique() >= 2, name
        ours = frame[frame["ac_comm"] == comm]
        assert len(ours) >= 2, (name, len(frame))
        assert (ours["ac_tgid"] == burner.pid).all()
        for field in SUMMED_FIELDS:   # no wrapped negative delta, under the table's name
            column = schema.row_columns(field, np.dtype("u8"))[0].name
            assert (frame[column] >= 0).all(), (name, column)
        # its CPU inside the recorded intervals: at most what it used during the whole run, and
        # at least that less the run's time outside them (one thread burns <= 1 s per second).
        # A look's timestamp is taken before it reads any task, and the burner is read a little
        # later in one look than in another, so the bound allows READ_SKEW of the span.
        recorded_ns = (frame["interval_end"].max() - frame["interval_start"].min()).value
        cpu = int(ours["cpu_ns"].sum())
        assert 0 < cpu <= cpu_during, (name, cpu, cpu_during)
        assert cpu >= cpu_during - (wall_during - recorded_ns) - READ_SKEW * recorded_ns, \
            (name, cpu, cpu_during, wall_during, recorded_ns)
        assert (frame["interval_end"] > frame["interval_start"]).all()
        # --top as large as the host has commands: on a loaded one, others may outrank ours
        summary = subprocess.run([*CLI, "summary", "--json", "--top", "100000", str(out)],
                                 capture_output=True, text=True, timeout=300)
        assert summary.returncode == 0, summary.stderr
        s = json.loads(summary.stdout)
        assert s["kind"] == "intervals" and "exits" not in s
        assert comm in [r["comm"] for r in s["cpu"]]
        text = subprocess.run([*CLI, "summary", str(out)], capture_output=True, text=True,
                              timeout=300)
        assert text.returncode == 0 and "task (thread) exits" not in text.stdout
