"""Recorded pressure stalls (issue 19): ``record --interval`` into a dataset keeps each
interval's PSI under ``DIR/_psi`` (``recording/psi_rows.py``), one row per cgroup with the root's
holding /proc/pressure; ``read_frame(DIR, kind="psi")`` and ``summary`` read them, and a dataset
recorded before PSI was still reads.  The kernel tests check the recorded deltas against a
throttled cgroup's own ``cpu.pressure`` and against ``/proc/pressure``, read before and after.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import taskstats_fast as tsf
from taskstats_fast import recording, report
from taskstats_fast.accounting import Accounting
from taskstats_fast.accounting.interval import PSI_DTYPE, Interval, Pressure
from taskstats_fast.recording import interval_rows as intervals
from taskstats_fast.recording.intervals import record_intervals
from taskstats_fast.recording.psi_rows import (PSI_ROW_DTYPE, PSI_STALL_FIELDS, psi_path, psi_rows,
                                               psi_schema)

from cgroup_workload import Group
from scripted_accounting import ScriptedAccounting

CLI = [sys.executable, "-m", "taskstats_fast"]
T0 = 1_764_590_400 * 10**9   # 2025-12-01T12:00:00Z
ROOT_ID, WEB_ID, DB_ID = 1, 7, 9


def synthetic(k: int, *, root: bool = True) -> Interval:
    """Interval k (1 s long) with known stalls: the system's, the root's (zeros, as a root
    without pressure files reads), and two cgroups'."""
    system = np.zeros(1, PSI_DTYPE)[0]
    system["cpu_some_us"], system["io_some_us"], system["io_full_us"] = 100_000 + k, 20_000, 5_000
    cgroups = np.zeros(3 if root else 2, PSI_DTYPE)
    cgroups["cgroup_id"] = [ROOT_ID, WEB_ID, DB_ID] if root else [WEB_ID, DB_ID]
    cgroups["cpu_some_us"][-2:] = [500_000, 1_000 * k]
    cgroups["memory_full_us"][-2:] = [0, 250_000]
    paths = {WEB_ID: "/system.slice/web.service", DB_ID: "/db"}
    if root:
        paths[ROOT_ID] = "/"
    return Interval.from_arrays(T0 + k * 10**9, T0 + (k + 1) * 10**9, {
        "ac_pid": [10], "ac_tgid": [10], "ac_comm": [b"web"], "cgroup_id": [WEB_ID]},
        cgroups=paths, psi=Pressure(system, cgroups, ("cpu", "io", "memory")))


def test_psi_rows_put_the_system_in_the_root_row():
    rows = psi_rows(synthetic(2))
    assert rows.dtype == PSI_ROW_DTYPE and len(rows) == 3   # the root once, then the cgroups
    assert rows["cgroup"].tolist() == [b"/", b"/system.slice/web.service", b"/db"]
    assert rows["cgroup_id"].tolist() == [ROOT_ID, WEB_ID, DB_ID]
    assert rows["cpu_some_us"].tolist() == [100_002, 500_000, 2_000]
    assert rows["io_full_us"].tolist() == [5_000, 0, 0]
    assert rows["memory_full_us"].tolist() == [0, 0, 250_000]
    assert (rows["interval_start"] == T0 + 2 * 10**9).all()
    assert (rows["interval_end"] == T0 + 3 * 10**9).all()
    # no cgroup v2 root seen: the system still gets its row, cgroup "/" with id 0
    bare = psi_rows(synthetic(0, root=False))
    assert bare["cgroup_id"].tolist() == [0, WEB_ID, DB_ID] and bare["cgroup"][0] == b"/"


def _record(ds, fmt, n=3):
    with recording.FileSink(str(ds), fmt, schema=intervals.interval_schema("task")) as rows, \
            recording.FileSink(psi_path(str(ds)), fmt, schema=psi_schema()) as psi:
        for k in range(n):
            rows.write(intervals.interval_rows(synthetic(k)))
            psi.write(psi_rows(synthetic(k)))


@pytest.mark.parametrize("fmt", recording.FORMATS)
def test_psi_rows_round_trip_beside_the_interval_rows(tmp_path, fmt):
    if recording.FORMAT[fmt].extra:
        pytest.importorskip("pyarrow")
    ds = tmp_path / "usage"
    _record(ds, fmt)
    written = np.concatenate([psi_rows(synthetic(k)) for k in range(3)])
    back = tsf.read_records(str(ds), kind="psi")
    assert back.dtype == PSI_ROW_DTYPE
    for name in PSI_ROW_DTYPE.names:
        assert np.array_equal(back[name], written[name]), name
    # the dataset itself is still one kind of rows: the interval rows, as before
    assert len(tsf.read_records(str(ds))) == 3
    assert (ds / "_psi").is_dir()
    assert recording.read_metadata(recording.find_files(str(ds / "_psi"))[0])["rows"] == "psi"


def test_read_frame_of_psi_names_columns_and_keeps_the_host(tmp_path):
    pytest.importorskip("pyarrow")
    pytest.importorskip("pandas")
    ds = tmp_path / "usage"
    _record(ds, "parquet")
    frame = tsf.read_frame(str(ds), kind="psi")
    assert list(frame.columns) == ["interval_start", "interval_end", "cgroup_id", "cgroup",
                                   *PSI_STALL_FIELDS, "host", "date"]
    assert str(frame["interval_start"].dtype) == "datetime64[ns, UTC]"
    assert frame["cpu_some_us"].dtype == np.int64
    system = frame[frame["cgroup"] == "/"]
    assert system["cpu_some_us"].tolist() == [100_000, 100_001, 100_002]
    assert frame["host"].nunique() == 1
    # the PSI dataset named by itself reads the same rows
    assert len(tsf.read_frame(str(ds / "_psi"))) == len(frame) == 9


def test_a_dataset_recorded_before_psi_reads_with_no_psi_rows(tmp_path):
    ds = tmp_path / "old"
    with recording.FileSink(str(ds), "npy", schema=intervals.interval_schema("task")) as sink:
        sink.write(intervals.interval_rows(synthetic(0)))
    assert len(tsf.read_records(str(ds), kind="psi")) == 0
    assert len(tsf.read_records(str(ds))) == 1
    summary = recording.summarize(str(ds))
    assert summary["pressure"] is None
    assert "no pressure stalls (PSI) recorded" in report.format_summary(summary)
    with pytest.raises(ValueError, match="kind is None"):
        tsf.read_records(str(ds), kind="intervals")


def test_summary_says_the_systems_stall_and_ranks_cgroups(tmp_path):
    ds = tmp_path / "usage"
    _record(ds, "npy")
    s = recording.summarize(str(ds))
    p = s["pressure"]
    assert p["intervals"] == 3 and p["seconds"] == 3.0
    assert p["system"]["cpu_some_us"] == 300_003
    assert p["system"]["cpu_some_pct"] == pytest.approx(10.0001)
    assert p["system"]["io_full_pct"] == pytest.approx(0.5)
    assert [r["cgroup"] for r in p["cgroups"]] == ["/system.slice/web.service", "/db"]
    web, db = p["cgroups"]
    assert web["cpu_some_pct"] == pytest.approx(50.0) and web["seconds"] == 3.0
    assert db["memory_full_pct"] == pytest.approx(25.0) and db["cpu_some_us"] == 3_000
    text = report.format_summary(s)
    assert "Pressure stall (PSI) of the system" in text and "cpu some 10.00%" in text
    assert "/system.slice/web.service" in text and "50.00%" in text
    # the PSI dataset summarised by itself: the same figures, no commands
    alone = recording.summarize(str(ds / "_psi"))
    assert alone["kind"] == "pressure" and alone["pressure"] == p
    assert "Top 10 commands" not in report.format_summary(alone)



def test_record_intervals_writes_each_intervals_psi_to_its_sink(tmp_path):
    ds = tmp_path / "usage"
    rows = recording.FileSink(str(ds), "npy", schema=intervals.interval_schema("task"))
    psi = recording.FileSink(psi_path(str(ds)), "npy", schema=psi_schema())
    result = record_intervals(ScriptedAccounting(synthetic), rows, stop=time.monotonic() + 0.35, psi=psi)
    assert result.intervals >= 2 and psi.stats().written == 3 * result.intervals
    back = tsf.read_records(str(ds), kind="psi")
    assert len(back) == 3 * result.intervals and not psi.stats().lost
    assert len(np.unique(back["interval_start"])) == result.intervals
    assert psi.stats().files and rows.stats().files   # both closed, both published


def test_a_psi_sink_that_cannot_write_stops_the_recording_with_its_counts(tmp_path):
    class FullDisk:
        def __init__(self):
            self.handed, self.closed = 0, False

        def write(self, batch):
            self.handed += len(batch)
            raise recording.WriteFailedError(28, "psi: No space left on device")

        def flush(self):
            pass

        def close(self):
            self.closed = True

        def stats(self):
            return recording.SinkStats(lost=self.handed)

    rows = recording.FileSink(str(tmp_path / "usage"), "npy", schema=intervals.interval_schema("task"))
    psi = FullDisk()
    with pytest.raises(recording.WriteFailedError, match=r"3 of the 3 PSI rows were not written") as e:
        record_intervals(ScriptedAccounting(synthetic), rows, stop=time.monotonic() + 5, psi=psi)
    assert psi.closed and rows.stats().files    # both closed; the interval rows handed are kept
    assert "interval rows were not written" in str(e.value)


# ---- the kernel: a throttled cgroup's own cpu.pressure, and /proc/pressure -------------------
def _totals(path):
    """{"some": µs, "full": µs} of a pressure file's ``total=`` counters."""
    out = {}
    with open(path) as f:
        for line in f:
            kind, *fields = line.split()
            out[kind] = int(dict(p.split("=") for p in fields)["total"])
    return out


BURN = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end: pass\n"


V1_CPU = "/sys/fs/cgroup/cpu"


class _Throttle:
    """Starts processes in ``group`` held to 10% of one CPU: by its own ``cpu.max`` where the v2
    hierarchy has the cpu controller, else by a cgroup v1 cpu group beside it (a hybrid host);
    throttled tasks wait runnable, which PSI counts as CPU stall of their v2 cgroup."""

    def __init__(self, group: Group):
        self.group, self.v1 = group, None
        if os.path.exists(os.path.join(group.path, "cpu.max")):
            with open(os.path.join(group.path, "cpu.max"), "w") as f:
                f.write("10000 100000")
        elif os.path.exists(os.path.join(V1_CPU, "cpu.cfs_quota_us")):
            self.v1 = os.path.join(V1_CPU, os.path.basename(group.path))
            os.mkdir(self.v1)
            with open(os.path.join(self.v1, "cpu.cfs_quota_us"), "w") as f:
                f.write("10000")
        else:
            pytest.skip("no CPU quota in either cgroup hierarchy")

    def popen(self, argv):
        files = [os.path.join(d, "cgroup.procs") for d in (self.group.path, self.v1) if d]

        def enter():
            for name in files:
                with open(name, "w") as f:
                    f.write("0")
        return subprocess.Popen(argv, preexec_fn=enter)

    def remove(self):
        if self.v1 is not None:
            os.rmdir(self.v1)


@pytest.mark.kernel
def test_recorded_psi_matches_the_cgroups_and_the_systems_own_totals(tmp_path, cgroup):
    group: Group = cgroup("psi")
    if not os.path.exists(os.path.join(group.path, "cpu.pressure")):
        pytest.skip("no PSI in this kernel's cgroups (psi=0 or CONFIG_PSI off)")
    throttle = _Throttle(group)
    ds = tmp_path / "usage"
    accounting = Accounting(interval=0.5)
    rows = recording.FileSink(str(ds), "parquet" if _has_arrow() else "npy",
                              schema=intervals.interval_schema("task"))
    psi = recording.FileSink(psi_path(str(ds)), rows.fmt, schema=psi_schema())
    stop = threading.Event()
    before = _totals(os.path.join(group.path, "cpu.pressure"))
    system_before = {r: _totals(f"/proc/pressure/{r}") for r in ("cpu", "io", "memory")}
    wall_before = time.time_ns()
    try:
        accounting.open()   # the first look: the cgroup has no task yet, so no stall before it
        burners = [throttle.popen([sys.executable, "-c", BURN.format(seconds=3)]) for _ in range(2)]
        recorder = threading.Thread(target=record_intervals, args=(accounting, rows),
                                    kwargs={"stop": stop.is_set, "psi": psi})
        recorder.start()
        for b in burners:
            b.wait(timeout=120)
        time.sleep(0.7)   # the last look comes after the burners are gone: no stall after it
        stop.set()
        recorder.join(timeout=120)
    finally:
        stop.set()
        accounting.close()
        for b in burners:
            b.kill()
            b.wait()
        throttle.remove()
    after = _totals(os.path.join(group.path, "cpu.pressure"))
    system_after = {r: _totals(f"/proc/pressure/{r}") for r in ("cpu", "io", "memory")}
    wall_after = time.time_ns()
    back = tsf.read_records(str(ds), kind="psi")
    ours = back[back["cgroup_id"] == group.id]
    assert len(ours) >= 4 and (ours["cgroup"] == group.path[len(_root()):].encode()).all()
    # the cgroup stalled only while recorded: its rows add up to its own counters' growth
    grew = after["some"] - before["some"]
    assert grew > 1_000_000, "two burners under a 10% quota stalled less than a second"
    recorded = int(ours["cpu_some_us"].sum())
    assert abs(recorded - grew) <= 1_000, (recorded, grew)
    assert abs(int(ours["cpu_full_us"].sum()) - (after["full"] - before["full"])) <= 1_000
    # the system is never quiet: its rows lie within what /proc/pressure grew by over the whole
    # run, and miss at most the run's time outside the recorded intervals (a stall counter grows
    # by at most 1 s a second) plus the look's own time to reach the PSI files
    system = back[back["cgroup"] == b"/"]
    span = int(system["interval_end"].max() - system["interval_start"].min())
    outside_us = ((wall_after - wall_before) - span) / 1000 + 100_000
    for resource in ("cpu", "io", "memory"):
        for kind in ("some", "full"):
            whole = system_after[resource].get(kind, 0) - system_before[resource].get(kind, 0)
            got = int(system[f"{resource}_{kind}_us"].sum())
            assert whole - outside_us <= got <= whole, (resource, kind, got, whole, outside_us)


def _root():
    from taskstats_fast.accounting import cgroupfs
    return cgroupfs.find_cgroup2()


def _has_arrow():
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.kernel
def test_record_interval_cli_keeps_psi_and_summary_shows_it(tmp_path):
    out = tmp_path / "usage"
    run = subprocess.run([*CLI, "record", "--interval", "0.5", "--seconds", "1.5", "-o", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert f"pressure stalls (PSI) to {out}/_psi" in run.stderr and "PSI rows" in run.stderr
    back = tsf.read_records(str(out), kind="psi")
    starts = np.unique(back["interval_start"])
    assert len(starts) >= 2 and (back["cgroup"] == b"/").sum() == len(starts)
    summary = subprocess.run([*CLI, "summary", "--json", str(out)], capture_output=True, text=True,
                             timeout=300)
    assert summary.returncode == 0, summary.stderr
    pressure = json.loads(summary.stdout)["pressure"]
    assert pressure["intervals"] == len(starts) and pressure["system"] is not None
    text = subprocess.run([*CLI, "summary", str(out)], capture_output=True, text=True, timeout=300)
    assert "Pressure stall (PSI) of the system" in text.stdout
    # a single file holds one kind of rows: no PSI, and the start line says so
    single = subprocess.run([*CLI, "record", "--interval", "0.5", "--seconds", "0.6", "-o",
                             str(tmp_path / "x.npy")], capture_output=True, text=True, timeout=300)
    assert single.returncode == 0 and "no pressure stalls (PSI)" in single.stderr


# ---- fixtures: PSI files written by the version that added them, read by today's code ---------
PSI_FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "psi-format3")


@pytest.mark.parametrize("fmt", recording.FORMATS)
def test_psi_fixtures_read_exactly(fmt):
    if recording.FORMAT[fmt].extra:
        pytest.importorskip("pyarrow")
    expected = np.load(os.path.join(PSI_FIXTURES, "expected-psi.npy"))
    back = tsf.read_records(os.path.join(PSI_FIXTURES, f"psi{recording.EXTENSIONS[fmt]}"))
    assert back.dtype == PSI_ROW_DTYPE and len(back) == len(expected) == 9
    for name in expected.dtype.names:
        assert np.array_equal(back[name], expected[name]), name


def test_psi_fixture_dataset_reads_both_kinds():
    pytest.importorskip("pyarrow")
    usage = os.path.join(PSI_FIXTURES, "usage")
    expected = np.load(os.path.join(PSI_FIXTURES, "expected-psi.npy"))
    back = tsf.read_records(usage, kind="psi")
    for name in expected.dtype.names:
        assert np.array_equal(back[name], expected[name]), name
    assert len(tsf.read_records(usage)) == 6   # the interval rows: 2 tasks, 3 intervals
    s = recording.summarize(usage)
    assert s["kind"] == "intervals" and s["pressure"]["intervals"] == 3
    assert s["pressure"]["system"]["cpu_some_us"] == 3 * 1_000 + 3
