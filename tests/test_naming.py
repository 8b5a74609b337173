"""The one naming table: every column of every table kind (exit records, snapshots, interval rows
per task and per process, ``Interval.by`` groups, pressure rows in memory and recorded) takes its name, unit and type
from one place, so the same name means the same quantity, unit and type everywhere; and the
decoded exit status (``exit_code``, ``exit_signal``, ``core_dumped``) beside the raw status.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import numpy as np
import pytest

import taskstats_fast as tsf
from taskstats_fast import schema
from taskstats_fast.accounting.interval import GROUP_KEYS, PSI_DTYPE, TASK_DTYPE, Interval, group_dtype
from taskstats_fast.recording.interval_rows import BY, interval_schema
from taskstats_fast.recording.psi_rows import psi_schema

UNIT_SUFFIXES = {"us": "_us", "ns": "_ns", "KB": "_kb", "MB*us": "_mb_us", "bytes": "_bytes"}


def every_table():
    yield "exits", schema.DEFAULT
    for by in BY:
        yield f"interval rows by {by}", interval_schema(by)
    yield "Interval.tasks", schema.schema_of(np.zeros(0, TASK_DTYPE))
    for key in GROUP_KEYS:
        yield f"Interval.by({key!r})", schema.schema_of(np.zeros(0, group_dtype(key)))
    yield "pressure rows", schema.schema_of(np.zeros(0, PSI_DTYPE))
    yield "recorded PSI rows", psi_schema()


def test_same_name_same_unit_kind_and_type_in_every_table():
    seen = {}
    for table, sch in every_table():
        for col in sch.columns:
            facts = (col.unit, col.kind, col.dtype if col.kind is not schema.ColumnKind.INT else
                     ("i8" if col.dtype == "i8" else col.dtype))
            if col.name in seen:
                assert seen[col.name][1] == facts, \
                    f"{col.name}: {facts} in {table}, {seen[col.name][1]} in {seen[col.name][0]}"
            else:
                seen[col.name] = (table, facts)


def test_names_carry_their_unit_and_counters_are_int64():
    for table, sch in every_table():
        for col in sch.columns:
            suffix = UNIT_SUFFIXES.get(col.unit)
            if suffix:
                assert col.name.endswith(suffix), f"{table}: {col.name} is in {col.unit}"
            if col.kind is schema.ColumnKind.TIMESTAMP:
                assert col.unit == "UTC"


def test_interval_tables_use_the_exit_tables_names():
    exits = set(schema.DEFAULT.by_name)
    task = set(interval_schema("task").by_name)
    for name in ("ac_utime_us", "ac_stime_us", "cpu_delay_total_ns", "read_char_bytes",
                 "hiwater_rss_kb", "ac_btime", "exit_code", "exit_signal", "core_dumped"):
        assert name in exits and name in task, name
    assert {"ac_utime", "cpu_delay_total", "ac_btime64", "flags"}.isdisjoint(task)


def test_every_row_kind_carries_pid_and_start():
    for table, sch in every_table():
        names = set(sch.by_name)
        if names & {"ac_pid", "ac_tgid"}:
            assert "ac_btime" in names, f"{table} has task ids but no start time"


def test_to_pandas_and_to_arrow_take_interval_rows():
    pytest.importorskip("pandas")
    iv = Interval.from_arrays(10**18, 10**18 + 10**9, {
        "ac_pid": [5], "ac_tgid": [5], "ac_comm": [b"x"], "ac_btime64": [1_700_000_000],
        "ac_utime": [2**62], "cgroup_id": [7]}, cgroups={7: "/a"})
    df = tsf.to_pandas(iv.tasks)
    assert df["ac_utime_us"].dtype == np.int64 and int(df["ac_utime_us"][0]) == 2**62
    assert str(df["ac_btime"][0]) == "2023-11-14 22:13:20+00:00"
    assert iv.frame()["cgroup"].tolist() == ["/a"]
    assert iv.by("process")["ac_utime_us"].dtype == np.int64
    pytest.importorskip("pyarrow")
    assert tsf.to_arrow(iv.tasks).schema.field("ac_utime_us").type == "int64"


def _statuses(*raw):
    records = np.zeros(len(raw), tsf.DTYPE)
    records["ac_exitcode"] = raw
    records["layout"] = tsf.MAX_VERSION
    records["kind"] = tsf.KIND_PID
    return records


def test_exit_status_decodes_like_wait():
    pytest.importorskip("pandas")
    df = tsf.to_pandas(_statuses(0, 3 << 8, signal.SIGKILL, 0x80 | signal.SIGSEGV))
    assert df["exit_code"].tolist() == [0, 3, pd_na(), pd_na()]
    assert df["exit_signal"].tolist() == [pd_na(), pd_na(), 9, 11]
    assert df["core_dumped"].tolist() == [False, False, False, True]
    assert df["ac_exitcode"].tolist() == [0, 768, 9, 139]


def pd_na():
    import pandas as pd
    return pd.NA


@pytest.mark.kernel
def test_an_exit_3_and_a_sigkill_decode_from_the_kernels_records():
    with tsf.ExitListener() as listener:
        three = subprocess.Popen(["sh", "-c", "exit 3"])
        killed = subprocess.Popen(["sleep", "30"])
        three.wait()
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        want, found = {three.pid, killed.pid}, {}
        deadline = time.monotonic() + 10
        while set(found) != want and time.monotonic() < deadline:
            batch = listener.read(timeout=0.5)
            for rec in batch[(batch["kind"] == tsf.KIND_PID) & np.isin(batch["ac_pid"], list(want))]:
                found[int(rec["ac_pid"])] = rec
        assert set(found) == want, "the children's exit records did not arrive"
    pytest.importorskip("pandas")
    df = tsf.to_pandas(np.array([found[three.pid], found[killed.pid]], tsf.DTYPE)).set_index("ac_pid")
    assert int(df.loc[three.pid, "exit_code"]) == 3 and df.loc[three.pid, "exit_signal"] is pd_na()
    assert int(df.loc[killed.pid, "exit_signal"]) == signal.SIGKILL
    assert df.loc[killed.pid, "exit_code"] is pd_na() and not df.loc[killed.pid, "core_dumped"]
    assert os.WEXITSTATUS(int(df.loc[three.pid, "ac_exitcode"])) == 3


def test_dir_lists_everything_all_promises():
    assert set(tsf.__all__) <= set(dir(tsf))
    for name in ("Accounting", "read_frame", "to_pandas", "ExitListener"):
        assert name in dir(tsf)


def test_read_frame_keeps_the_hive_columns_of_a_two_host_dataset(tmp_path):
    pd = pytest.importorskip("pandas")
    from taskstats_fast import recording
    for host, pids in (("web-1", [1, 2]), ("db-1", [3])):
        records = _statuses(*([0] * len(pids)))
        records["ac_pid"] = pids
        records["time_ns"] = 1_795_706_400_000_000_000
        with recording.FileSink(str(tmp_path / "exits"), "npy", hostname=host) as sink:
            sink.write(records)
    frame = tsf.read_frame(str(tmp_path / "exits"))
    assert isinstance(frame["host"].dtype, pd.CategoricalDtype)
    assert sorted(zip(frame["host"], frame["ac_pid"])) == [("db-1", 3), ("web-1", 1), ("web-1", 2)]
    import re
    assert all(re.fullmatch(r"\d{4}-\d{2}-\d{2}", d) for d in frame["date"])
