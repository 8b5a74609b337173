"""recording.summarize: what a recording adds up to, and how report lays it out (no kernel)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import taskstats_fast as tsf
from taskstats_fast import recording, report
from taskstats_fast import schema as columns
from taskstats_fast.recording import summary as summary_mod

from wire import aggr, stats, taskstats_msg

T0 = 1_800_000_000_000_000_000   # ns since the epoch, 2027


def records(specs, version=16):
    """One PID record per (pid, comm, utime_us, cpu_count, cpu_delay_total_ns) spec, received
    10 ms apart from T0."""
    msgs = b"".join(taskstats_msg(aggr(1, pid, stats(version, {
        "ac_pid": pid, "ac_comm": comm, "ac_utime": utime, "cpu_count": count,
        "cpu_delay_total": delay, "ac_btime": 1_700_000_000, "ac_etime": 2_500_000,
        "cpu_delay_max": delay, "cpu_delay_min": 1,
    }))) for pid, comm, utime, count, delay in specs)
    recs = tsf.decode(msgs).copy()
    recs["time_ns"] = T0 + np.arange(len(recs)) * 10_000_000
    return recs


def iso(ns):
    return recording.metadata.utc(ns)


def test_summary_ranks_commands():
    recs = records([(1, b"a", 100, 1, 10), (2, b"b", 5000, 1, 10), (3, b"a", 100, 1, 900),
                    (4, b"c", 0, 0, 0)])
    s = recording.summarize_columns(columns.columns(recs), top=2)
    assert s["kind"] == "exits" and s["counted"] == "exits"
    assert [r["comm"] for r in s["cpu"]] == ["b", "a"]
    assert s["cpu"][1]["exits"] == 2 and s["cpu"][1]["cpu_ns"] == 200_000
    assert [r["comm"] for r in s["delays"]["cpu"]] == ["a", "b"]
    assert s["delays"]["cpu"][0]["average_ns"] == 455 and s["delays"]["cpu"][0]["max_ns"] == 900
    assert s["delays"]["blkio"] == []
    assert s["exits"] == 4 and s["seconds"] == pytest.approx(0.03)
    text = report.format_summary(s)
    assert "Top 2 commands by CPU time" in text and "no delays recorded for: blkio" in text


def test_a_snapshot_is_summarised_as_live_tasks_not_exits(tmp_path):
    path = recording.write_file(str(tmp_path / "now.npy"), records([(1, b"a", 100, 1, 10),
                                                                     (2, b"b", 50, 1, 10)]),
                                metadata={"source": "snapshot", "scope": "processes"})
    s = recording.summarize([path])
    assert s["kind"] == "snapshot" and s["tasks"] == 2 and "exits" not in s
    assert s["exits_per_second"] is None
    assert s["cpu"][0]["tasks"] == 1 and "cpu_per_task_ns" in s["cpu"][0]
    text = report.format_summary(s)
    assert "exit" not in text and "2 live tasks" in text and "snapshot taken" in text


def test_aggregate_snapshot_rows_count_too(tmp_path):
    recs = records([(1, b"a", 100, 1, 10)])
    recs["kind"] = tsf.KIND_TGID
    path = recording.write_file(str(tmp_path / "agg.npy"), recs,
                                metadata={"source": "snapshot", "scope": "aggregate"})
    s = recording.summarize([path])
    assert s["tasks"] == 1 and s["cpu"][0]["comm"] == "a"


def test_the_window_is_the_recording_not_the_first_to_last_record():
    recs = records([(1, b"a", 1, 1, 1), (2, b"a", 1, 1, 1)])   # 10 ms apart
    meta = [{"source": "exit stream", "window_started": iso(T0 - 30 * 10**9),
             "window_finished": iso(T0 + 30 * 10**9)}]
    s = recording.summarize_columns(columns.columns(recs), metadata=meta)
    assert s["seconds"] == pytest.approx(60) and s["exits_per_second"] == pytest.approx(2 / 60)
    assert s["first"] == iso(T0) and s["window_start"] == iso(T0 - 30 * 10**9)
    edges, per_second = report.exit_rate(s)
    assert edges[0] == 0 and edges[-1] >= 60 and per_second.sum() > 0
    # files of 0.1.0 only say when each file was open
    old = [{"file_started": iso(T0 - 10**9), "file_finished": iso(T0 + 4 * 10**9)}]
    assert recording.summarize_columns(columns.columns(recs), metadata=old)["seconds"] == \
        pytest.approx(5)


def test_files_of_a_recording_say_the_window_they_cover(tmp_path):
    sink = recording.FileSink(str(tmp_path / "exits"), "npy")
    sink.write(records([(1, b"a", 1, 1, 1)]))
    sink.close()
    (meta,) = [recording.read_metadata(f) for f in sink.files]
    assert meta["window_started"] <= meta["file_started"] <= meta["window_finished"]


def test_a_damaged_file_is_named_and_the_others_still_summed(tmp_path):
    good = recording.write_file(str(tmp_path / "good.npy"), records([(1, b"a", 1, 1, 1)]))
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all" * 100)
    s = recording.summarize([str(tmp_path)])
    assert s["exits"] == 1 and s["files"] == 2
    assert [d["path"] for d in s["damaged"]] == [str(bad)]
    res = subprocess.run([sys.executable, "-m", "taskstats_fast", "summary", str(tmp_path)],
                         capture_output=True, text=True, env=os.environ)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert str(bad) in res.stderr and res.stderr.count("\n") == 1
    assert "1 task (thread) exits" in res.stdout and good


def test_summary_json_is_serialisable(tmp_path):
    path = recording.write_file(str(tmp_path / "r.npy"), records([(1, b"a", 1, 1, 1)]))
    json.dumps(report.summary_json(recording.summarize([path])))


def test_a_gap_between_recordings_is_a_gap_not_time(tmp_path):
    """Two 6 s recordings 15 s apart cover 12 s, not the 27 s span: rates divide by 12 and the
    plot's bins inside the gap are empty (NaN), not 0 exits/s."""
    t0 = 1_795_706_400 * 10**9
    paths = []
    for i, start in enumerate((t0, t0 + 21 * 10**9)):
        records = np.zeros(60, tsf.DTYPE)
        records["kind"], records["layout"], records["ac_comm"] = tsf.KIND_PID, tsf.MAX_VERSION, b"x"
        records["time_ns"] = start + np.arange(60) * 10**8
        path = str(tmp_path / f"r{i}.npy")
        recording.write_file(path, records)
        with open(path + ".json") as f:   # the files say they covered 6 s each
            meta = json.load(f)
        meta["window_started"] = meta["file_started"] = summary_mod._iso_ns(start)
        meta["window_finished"] = meta["file_finished"] = summary_mod._iso_ns(start + 6 * 10**9)
        with open(path + ".json", "w") as f:
            json.dump(meta, f)
        paths.append(path)
    s = recording.summarize(paths)
    assert len(s["windows"]) == 2
    assert s["seconds"] == pytest.approx(12.0) and s["span_seconds"] == pytest.approx(27.0)
    assert s["exits_per_second"] == pytest.approx(120 / 12.0)
    edges, rate = report.exit_rate(s)
    mids = (edges[:-1] + edges[1:]) / 2
    assert np.isnan(rate[(mids > 7) & (mids < 20)]).all()
    assert (rate[mids < 5.5] > 0).all()
    assert "2 separate windows covering 12.0 s of 27.0 s" in report.format_summary(s)
