"""The exporter's per-group sums in the C core (csrc/tsf_group.c via _native.GroupSums) against
numpy (a gather in the given order and ``np.add.reduceat`` at each change of key), over random
task rows grouped by a u64, a u32 and a 32-byte key, with random counted columns; and every
length and offset the C side checks.  No kernel needed."""

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taskstats_fast import _native
from taskstats_fast.accounting.interval import EXITED, SUMMED_FIELDS, TASK_DTYPE
from taskstats_fast.live.exporter import PrometheusExporter, RowBlock

from random_intervals import random_interval

WORDS = SUMMED_FIELDS[:5] + SUMMED_FIELDS[20:]


def random_rows(rng, n, distinct):
    rows = np.frombuffer(rng.bytes(n * TASK_DTYPE.itemsize), TASK_DTYPE).copy()
    rows["cgroup_id"] = rng.integers(0, distinct, n, dtype=np.uint64) * np.uint64(2**40 + 3)
    rows["ac_tgid"] = rng.integers(1, distinct + 1, n)
    names = [b"", b"sh", b"true", b"x" * 31, b"x" * 30 + b"y", b"\xff\xfe", b"a\0b", b"sh\0"]
    rows["ac_comm"] = [names[i % len(names)] for i in rng.integers(0, distinct, n)]
    return rows


def counted(rows, count):
    """numpy's form of one ``GroupCount`` column."""
    passes = np.ones(len(rows), bool)
    if count.flag is not None:
        passes &= (rows[count.flag] & count.mask) == count.want
    if count.same is not None:
        passes &= rows[count.same[0]] == rows[count.same[1]]
    value = rows[count.value] if count.value is not None else np.ones(len(rows), np.uint64)
    return np.where(passes, value * np.uint64(count.scale), np.uint64(0))


def reference(rows, order, key, words, counts):
    if not len(order):
        return np.zeros((0, len(words) + len(counts)), np.uint64), np.zeros(0, np.uint32)
    keys = rows[key][order]
    change = np.ones(len(order), bool)
    change[1:] = keys[1:] != keys[:-1]
    first = np.flatnonzero(change)
    block = np.stack([rows[w] for w in words] + [counted(rows, c) for c in counts], axis=1)[order]
    return np.add.reduceat(block, first, axis=0), first


U8, U32, U64 = (sorted(name for name in TASK_DTYPE.names if TASK_DTYPE[name] == np.dtype(t))
                for t in (np.uint8, np.uint32, np.uint64))

counts = st.lists(st.builds(
    _native.GroupCount, flag=st.none() | st.sampled_from(U8), mask=st.integers(0, 255),
    want=st.integers(0, 255), same=st.none() | st.tuples(st.sampled_from(U32), st.sampled_from(U32)),
    value=st.none() | st.sampled_from(U64), scale=st.integers(0, 2**64 - 1)), max_size=5)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 400), distinct=st.integers(1, 30),
       key=st.sampled_from(["cgroup_id", "ac_tgid", "ac_comm"]), sort=st.booleans(), counts=counts)
def test_the_c_sums_are_numpy_gather_and_reduceat(seed, n, distinct, key, sort, counts):
    rng = np.random.default_rng(seed)
    rows = random_rows(rng, n, distinct)
    rows["ac_pid"][::3] = rows["ac_tgid"][::3]     # some rows pass an equality test
    # sorted or not: a group is a run of equal keys along the order, whatever comes after it
    order = np.argsort(rows[key], kind="stable") if sort else rng.permutation(n)
    sums, first = _native.GroupSums(TASK_DTYPE, key, WORDS, counts)(rows, order)
    want_sums, want_first = reference(rows, order, key, WORDS, counts)
    assert first.tolist() == want_first.tolist()
    assert sums.tolist() == want_sums.tolist()     # uint64 wraps in both


def test_words_wrap_as_uint64_sums_do():
    rows = np.zeros(3, TASK_DTYPE)
    rows["cpu_ns"] = 2**64 - 1
    sums, first = _native.GroupSums(TASK_DTYPE, "cgroup_id", ["cpu_ns"])(rows, np.arange(3))
    assert sums.tolist() == [[2**64 - 3]] and first.tolist() == [0]


def test_the_exporters_counts_are_its_gauges_and_exits():
    rows = np.zeros(5, TASK_DTYPE)
    rows["state"] = [0, 0, EXITED, EXITED | 1, 1]
    rows["ac_pid"], rows["ac_tgid"] = [10, 11, 12, 12, 13], [10, 10, 12, 12, 13]
    rows["hiwater_rss"] = [100, 200, 300, 400, 500]
    block = RowBlock(("cpu_ns", "exited"))
    sums, _ = _native.GroupSums(TASK_DTYPE, "cgroup_id", block.words, block.counts)(rows, np.arange(5))
    # exited, live threads, live leaders, their peak RSS in bytes, rows
    assert sums[0, 1:].tolist() == [2, 3, 2, (100 + 500) * 1024, 5]


def test_a_bad_order_is_refused_with_what_is_wrong():
    rows = np.zeros(4, TASK_DTYPE)
    sums = _native.GroupSums(TASK_DTYPE, "ac_comm", ["cpu_ns"], [_native.GroupCount()])
    for order in ([0, 4], [-1], [1, 2, 3, 99]):
        with pytest.raises(ValueError, match="invalid argument"):
            sums(rows, np.array(order))
    with pytest.raises(ValueError, match="C-contiguous rows"):
        sums(rows[::2], np.arange(2))


def test_a_plan_that_does_not_fit_its_rows_is_refused():
    with pytest.raises(TypeError, match="uint64 fields; ac_pid"):
        _native.GroupSums(TASK_DTYPE, "cgroup_id", ["ac_pid"])
    with pytest.raises(TypeError, match="uint8 fields; ac_pid"):
        _native.GroupSums(TASK_DTYPE, "cgroup_id", [], [_native.GroupCount(flag="ac_pid")])
    with pytest.raises(TypeError, match="uint32 fields; state"):
        _native.GroupSums(TASK_DTYPE, "cgroup_id", [], [_native.GroupCount(same=("state", "ac_pid"))])
    with pytest.raises(ValueError, match="at most"):
        _native.GroupSums(TASK_DTYPE, "cgroup_id", ["cpu_ns"] * 65)
    with pytest.raises(ValueError, match="at most"):
        _native.GroupSums(TASK_DTYPE, "cgroup_id", [], [_native.GroupCount()] * 17)
    lib, ffi = _native.lib, _native.ffi
    plan = ffi.new("struct tsf_group_plan *")
    plan.row_size, plan.key, plan.key_len, plan.n_words, plan.n_counts = 16, 8, 8, 1, 1
    plan.word[0] = 8
    c = plan.count[0]
    c.flag, c.mask, c.want, c.same, c.same_as, c.value, c.scale = 15, 1, 1, 0, 12, 8, 1
    assert lib.tsf_group_plan_check(plan) == 0
    for field, value in (("key_len", 0), ("key", 9), ("row_size", 7), ("n_counts", 17)):
        bad = ffi.new("struct tsf_group_plan *", plan[0])
        setattr(bad, field, value)
        assert lib.tsf_group_plan_check(bad) == lib.TSF_E_PLAN, field
    bad = ffi.new("struct tsf_group_plan *", plan[0])
    bad.word[0] = 9
    assert lib.tsf_group_plan_check(bad) == lib.TSF_E_PLAN
    for field, value in (("flag", 16), ("mask", 256), ("want", 256), ("same", 13), ("same_as", 13),
                         ("same_as", lib.TSF_GROUP_NONE), ("value", 9)):
        bad = ffi.new("struct tsf_group_plan *", plan[0])
        setattr(bad.count[0], field, value)
        assert lib.tsf_group_plan_check(bad) == lib.TSF_E_PLAN, field
    for field in ("flag", "same", "value"):      # no such test, or a value of 1
        good = ffi.new("struct tsf_group_plan *", plan[0])
        setattr(good.count[0], field, lib.TSF_GROUP_NONE)
        assert lib.tsf_group_plan_check(good) == 0, field


def test_the_c_side_checks_every_length_it_is_given():
    lib, ffi = _native.lib, _native.ffi
    plan = ffi.new("struct tsf_group_plan *")
    plan.row_size, plan.key, plan.key_len, plan.n_words, plan.n_counts = 16, 0, 8, 1, 1
    plan.word[0] = 8
    c = plan.count[0]
    c.flag = c.same = c.value = lib.TSF_GROUP_NONE
    c.scale = 1
    rows = np.zeros(4, [("key", "<u8"), ("value", "<u8")])
    rows["key"] = [1, 1, 2, 3]
    rows["value"] = [10, 20, 30, 40]
    order = np.arange(4, dtype=np.int64)
    sums = np.zeros(8, np.uint64)
    first = np.zeros(4, np.uint32)
    keep = [ffi.from_buffer("uint8_t[]", rows), ffi.from_buffer("int64_t[]", order),
            ffi.from_buffer("uint64_t[]", sums), ffi.from_buffer("uint32_t[]", first)]

    def call(**change):
        a = ffi.new("struct tsf_group_args *")
        a.rows, a.order, a.sums, a.first = keep
        a.rows_len, a.n, a.n_order, a.sums_len, a.cap = 64, 4, 4, 8, 4
        for name, value in change.items():
            setattr(a, name, value)
        return lib.tsf_group_sums(plan, a)

    assert call() == 3 and sums[:6].tolist() == [30, 2, 30, 1, 40, 1] and first[:3].tolist() == [0, 2, 3]
    assert call(rows_len=63) == lib.TSF_E_ARG
    assert call(sums_len=7) == lib.TSF_E_ARG
    assert call(cap=2, sums_len=4) == lib.TSF_E_NOSPACE
    assert call(n=3) == lib.TSF_E_ARG          # order names row 3 of 3
    assert call(rows=ffi.NULL) == lib.TSF_E_ARG
    assert call(n_order=0, n=0, rows_len=0) == 0


def test_an_exporter_write_of_rows_that_are_not_contiguous_counts_them_all():
    rng = np.random.default_rng(7)
    interval = random_interval(rng, 300)
    a, b = PrometheusExporter(), PrometheusExporter()
    a.write(dataclasses.replace(interval, tasks=interval.tasks[::2]))
    b.write(dataclasses.replace(interval, tasks=interval.tasks[::2].copy()))

    def counters(exporter):
        return exporter.exposition()[0].split(b"\ntaskstats_exporter_")[0]
    assert counters(a) == counters(b) and b"taskstats_cgroup_cpu_usage_seconds_total" in counters(a)
