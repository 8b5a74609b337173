"""Interval (accounting/interval.py): the contract other modules build on, with synthetic rows."""

import numpy as np
import pytest

import taskstats_fast as tsf
from taskstats_fast import accounting as accounting_package
from taskstats_fast.accounting import interval as iv_mod
from taskstats_fast.accounting.interval import (BORN, EXACT, EXITED, TASK_DTYPE, Interval,
                                                group_rows)


def _interval():
    return Interval.from_arrays(
        10, 2_000_000_010,
        {"ac_pid": [100, 101, 200, 201, 300], "ac_tgid": [100, 100, 200, 200, 300],
         "ac_uid": [0, 0, 1000, 1000, 1000],
         "ac_comm": [b"leader", b"worker", b"sh", b"sh", b"sh"],
         "ac_utime": [10, 20, 30, 40, 2**62], "ac_stime": [1, 2, 3, 4, 5],
         "state": [0, BORN, EXITED, BORN | EXITED, 0],
         "cgroup_id": [7, 7, 8, 8, 8], "attribution": [EXACT] * 5,
         "hiwater_rss": [5, 9, 1, 3, 2]},
        cgroups={7: "/a", 8: "/b"}, lost=2)


def test_fixed_names():
    for name in ("ac_pid", "ac_comm", "ac_utime", "ac_stime", "cgroup_id", "state", "attribution"):
        assert name in TASK_DTYPE.names
    # every delay class of the layout, count and total, is a delta field
    for f in tsf.layout.FIELDS:
        if f.name.endswith("_delay_total"):
            assert f.name in iv_mod.DELTA_FIELDS
            assert f.name.replace("_delay_total", "_count") in iv_mod.DELTA_FIELDS
    iv = _interval()
    assert (iv.start_ns, iv.end_ns, iv.lost, iv.seconds) == (10, 2_000_000_010, 2, 2.0)
    assert not iv.complete
    assert iv.counts() == {"tasks": 5, "alive": 2, "born": 2, "exited": 2, "short_lived": 1,
                           "exact": 5, "inherited": 0, "unknown": 0, "lost": 2}


def test_by_process_sums_deltas_and_takes_leader_identity():
    g = _interval().by("process", frame=False)
    assert g["ac_tgid"].tolist() == [100, 200, 300]
    assert g["ac_comm"].tolist() == [b"leader", b"sh", b"sh"]
    assert g["ac_utime"].tolist() == [30, 70, 2**62]    # exact in uint64
    assert g["tasks"].tolist() == [2, 2, 1]
    assert g["born"].tolist() == [1, 1, 0]
    assert g["exited"].tolist() == [0, 2, 0]
    assert g["hiwater_rss"].tolist() == [9, 3, 2]        # a level: maximum, not sum


def test_by_process_leader_first_even_when_listed_last():
    iv = Interval.from_arrays(0, 1, {"ac_pid": [11, 10], "ac_tgid": [10, 10],
                                     "ac_comm": [b"thread", b"main"], "ac_utime": [1, 2]})
    assert iv.by("process", frame=False)["ac_comm"].tolist() == [b"main"]


def test_by_process_is_tgid_and_start_when_a_tgid_is_reused_inside_the_interval():
    # tgid 10: process "old" (leader started at 100, a thread at 99 -- ac_btime reads a second
    # late, the leader's did -- and one at 103, all exited), then "new" reusing 10 (leader at
    # 107, exited; an exited thread at 106, a second before it, and one at 104 still alive,
    # which only the live leader's process can have); tgid 20 is one process.
    iv = Interval.from_arrays(0, 1, {
        "ac_pid": [12, 10, 10, 11, 13, 14, 20, 21], "ac_tgid": [10, 10, 10, 10, 10, 10, 20, 20],
        "ac_comm": [b"old", b"new", b"old", b"old", b"new", b"new", b"db", b"db"],
        "ac_btime64": [103, 107, 100, 99, 104, 106, 50, 49],
        "state": [EXITED, BORN | EXITED, EXITED, EXITED, BORN, BORN | EXITED, 0, 0],
        "ac_utime": [1, 10, 100, 1000, 10_000, 100_000, 5, 5]})
    g = iv.by("process", frame=False)
    assert g[["ac_tgid", "ac_comm", "ac_btime64", "tasks"]].tolist() == [
        (10, b"old", 100, 3), (10, b"new", 107, 3), (20, b"db", 50, 2)]
    assert g["ac_utime"].tolist() == [1101, 110_010, 10]
    rows = iv_mod.group_rows(iv.tasks, "process", fields=("ac_utime",))   # top's narrow form
    assert rows["ac_utime"].tolist() == [1101, 110_010, 10]
    start = iv_mod.process_starts(iv.tasks["ac_tgid"], iv.tasks["ac_pid"], iv.tasks["ac_btime64"])
    assert start.tolist() == [100, 107, 100, 100, 100, 107, 50, 50]   # 104 alive: unknown here


@pytest.mark.parametrize("key,expected", [("cgroup", [33, 2**62 + 82]), ("user", [33, 2**62 + 82]),
                                          ("command", [11, 2**62 + 82, 22])])
def test_by_keys(key, expected):
    g = _interval().by(key, frame=False)
    assert (g["ac_utime"] + g["ac_stime"]).tolist() == expected


def test_by_thread_keeps_every_row_and_frame_has_paths():
    iv = _interval()
    assert len(iv.by("thread", frame=False)) == 5
    pd = pytest.importorskip("pandas")
    df = iv.by("cgroup")
    assert isinstance(df, pd.DataFrame)
    assert df["cgroup"].tolist() == ["/a", "/b"]
    assert iv.by("command")["ac_comm"].tolist() == ["leader", "sh", "worker"]


def test_by_rejects_unknown_key_and_handles_empty():
    with pytest.raises(ValueError, match="process"):
        _interval().by("pod")
    empty = Interval.from_arrays(0, 1)
    assert len(group_rows(empty.tasks, "process")) == 0
    assert empty.counts()["tasks"] == 0


def test_from_arrays_rejects_unknown_field():
    with pytest.raises(KeyError, match="nope"):
        Interval.from_arrays(0, 1, {"nope": [1]})


def test_pressure_lookup():
    cg = np.zeros(2, iv_mod.PSI_DTYPE)
    cg["cgroup_id"] = [7, 8]
    cg["cpu_some_us"] = [5, 6]
    psi = iv_mod.Pressure(np.zeros(1, iv_mod.PSI_DTYPE)[0], cg, ("cpu",))
    iv = Interval.from_arrays(0, 1, psi=psi)
    assert iv.psi.of(8)["cpu_some_us"] == 6
    assert iv.psi.of(9) is None


def test_package_exports_lazily():
    assert tsf.Interval is Interval
    assert tsf.TASK_DTYPE is TASK_DTYPE
    assert set(accounting_package.__all__) <= set(dir(accounting_package))   # tab completion
    assert accounting_package.Accounting is tsf.Accounting


@pytest.mark.parametrize("key", list(iv_mod.GROUP_KEYS))
def test_group_rows_fields_sums_only_those_and_the_same_way(key):
    tasks = _interval().tasks
    full = group_rows(tasks, key)
    some = group_rows(tasks, key, fields=("ac_utime", "hiwater_rss"))
    assert np.array_equal(some["ac_utime"], full["ac_utime"])
    assert np.array_equal(some["hiwater_rss"], full["hiwater_rss"])
    assert np.array_equal(some["tasks"], full["tasks"]) and np.array_equal(some["exited"], full["exited"])
    assert not some["ac_stime"].any() and full["ac_stime"].any()


def test_the_blocks_are_the_named_fields_column_by_column():
    tasks = np.zeros(3, TASK_DTYPE)
    psi = np.zeros(3, iv_mod.PSI_DTYPE)
    for i, name in enumerate(iv_mod.SUMMED_FIELDS):
        tasks[name] = np.arange(3) * 100 + i
    for i, name in enumerate(iv_mod.PSI_FIELDS):
        psi[name] = np.arange(3) * 100 + i
    psi["cgroup_id"] = 7
    summed, stalls = iv_mod.summed_block(tasks), iv_mod.stall_block(psi)
    assert [summed[:, i].tolist() for i in range(summed.shape[1])] == \
        [tasks[name].tolist() for name in iv_mod.SUMMED_FIELDS]
    assert [stalls[:, i].tolist() for i in range(stalls.shape[1])] == \
        [psi[name].tolist() for name in iv_mod.PSI_FIELDS]
    assert iv_mod.stall_block(psi[1]).tolist() == [list(psi[1].tolist()[1:])]     # one row
    assert iv_mod.stall_block(psi[:0]).shape == (0, len(iv_mod.PSI_FIELDS))
