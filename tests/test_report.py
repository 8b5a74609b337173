"""Text reports, summaries and plots from records built with tests/wire.py (no kernel)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import taskstats_fast as tsf
from taskstats_fast import recording, report
from taskstats_fast import schema as frames

from wire import aggr, stats, taskstats_msg


def records(specs, version=16):
    """One PID record per (pid, comm, utime_us, cpu_count, cpu_delay_total_ns) spec."""
    msgs = b"".join(taskstats_msg(aggr(1, pid, stats(version, {
        "ac_pid": pid, "ac_comm": comm, "ac_utime": utime, "cpu_count": count,
        "cpu_delay_total": delay, "ac_btime": 1_700_000_000, "ac_etime": 2_500_000,
        **({"cpu_delay_max": delay, "cpu_delay_min": 1} if version >= 15 else {}),
    }))) for pid, comm, utime, count, delay in specs)
    recs = tsf.decode(msgs).copy()
    recs["time_ns"] = 1_800_000_000_000_000_000 + np.arange(len(recs)) * 10_000_000
    return recs


@pytest.mark.parametrize("ns,text", [(None, "n/a"), (0, "0 ns"), (999, "999 ns"),
                                     (1500, "1.5 µs"), (2_340_000, "2.34 ms"),
                                     (12_345_678_900, "12.346 s"), (3_723e9, "1h02m03.0s")])
def test_durations(ns, text):
    assert report.format_duration_ns(ns) == text


@pytest.mark.parametrize("ns,text", [
    (999.4, "999 ns"), (999.7, "1 µs"), (999_499, "999 µs"), (999_700, "1 ms"),
    (999_400_000, "999 ms"), (999_700_000, "1.000 s"), (99_999_900_000, "100.0 s"),
    (599_970_000_000, "10m00.0s"), (3_599_970_000_000, "1h00m00.0s"), (-5e6, "-5 ms")])
def test_durations_just_under_a_unit_change_move_up_a_unit(ns, text):
    assert report.format_duration_ns(ns) == text


@pytest.mark.parametrize("n,text", [(None, "n/a"), (0, "0 B"), (1023, "1023 B"),
                                    (1536, "1.5 KiB"), (3 * 1024 ** 3, "3.0 GiB")])
def test_sizes(n, text):
    assert report.format_bytes(n) == text


def test_report_shows_units_and_delay_statistics():
    text = report.task_report(records([(42, b"worker", 1_500_000, 4, 8_000_000)]))
    assert text.startswith("pid 42  worker")
    assert "user 1.500 s" in text
    line = next(ln for ln in text.splitlines() if "run queue" in ln)
    assert line.split("run queue")[1].split() == ["4", "8", "ms", "2", "ms", "8", "ms", "1", "ns"]


def test_old_struct_has_no_max_min_and_says_why():
    text = report.task_report(records([(42, b"old", 0, 2, 100)], version=13))
    line = next(ln for ln in text.splitlines() if "run queue" in ln)
    assert line.split()[-2:] == ["n/a", "n/a"]
    assert "no per-delay max/min (v15+)" in text


@pytest.mark.parametrize("enabled,noted", [(False, True), (True, False), (None, False)])
def test_delay_accounting_off_is_said(enabled, noted):
    text = report.task_report(records([(1, b"x", 0, 0, 0)]), delayacct_enabled=enabled)
    assert ("task_delayacct is 0" in text) == noted


def test_tgid_report_hides_the_last_threads_max_min():
    recs = records([(7, b"", 0, 3, 300)])
    recs["kind"] = tsf.KIND_TGID
    text = report.task_report(recs, comms=["proc-name"])
    assert text.startswith("tgid 7  proc-name") and "last thread" in text
    line = next(ln for ln in text.splitlines() if "run queue" in ln)
    assert line.split()[-2:] == ["-", "-"]


def test_tgid_report_says_not_reported_for_what_the_kernel_does_not_sum():
    recs = records([(7, b"", 0, 3, 300)])
    recs["kind"] = tsf.KIND_TGID
    recs["ac_minflt"] = 0
    text = report.task_report(recs)
    faults = next(ln for ln in text.splitlines() if "page faults" in ln)
    assert "minor" not in faults and "not reported" in faults
    assert all(name not in tsf.layout.TGID_FIELDS for name in ("ac_minflt", "ac_majflt",
                                                               "hiwater_rss", "read_bytes"))


def test_tgid_json_has_nulls_for_what_the_kernel_does_not_sum():
    recs = records([(7, b"", 10, 3, 300)])
    recs["kind"] = tsf.KIND_TGID
    (obj,) = report.task_json(recs)
    json.dumps(obj)
    assert obj["ac_minflt"] is None and obj["read_bytes"] is None and obj["ac_uid"] is None
    assert obj["ac_utime_us"] == 10 and obj["cpu_count"] == 3 and obj["id"] == 7
    (pid,) = report.task_json(records([(7, b"x", 10, 3, 300)]))
    assert pid["ac_minflt"] == 0 and pid["ac_uid"] == 0


def test_json_is_serialisable_with_nulls_for_missing_fields():
    (obj,) = report.task_json(records([(42, b"w", 10, 2, 50)], version=13))
    json.dumps(obj)
    assert obj["irq_count"] is None and obj["delays"]["irq"]["count"] is None
    assert obj["delays"]["cpu"] == {"count": 2, "total_ns": 50, "average_ns": 25.0,
                                    "max_ns": None, "min_ns": None, "max_at": None}
    assert obj["ac_btime"].startswith("2023-11-14T22:13:20")


def test_missing_matplotlib_is_exit_code_5_naming_the_extra(tmp_path):
    path = recording.write_file(str(tmp_path / "r.npy"), records([(1, b"a", 1, 1, 1)]))
    code = ("import sys; sys.modules['matplotlib'] = None\n"
            "from taskstats_fast.cli import main\n"
            f"sys.exit(main(['summary', {path!r}, '--plot', {str(tmp_path / 'p.png')!r}]))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 5
    assert "pip install 'taskstats_fast[plot]'" in res.stderr and "Traceback" not in res.stderr


def test_plot_without_receive_times_still_draws(tmp_path):
    recs = records([(1, b"a", 1, 1, 1)])
    recs["time_ns"] = 0
    summary = recording.summarize_columns(frames.columns(recs))
    out = report.plot_summary(summary, str(tmp_path / "p.png"))
    assert open(out, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
