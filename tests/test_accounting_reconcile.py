"""Reconciliation (accounting/reconcile.py) on synthetic looks: own usage from cpu.stat deltas,
the cases left alone, and exited rows given, per exit, what live rows and their estimates do not
explain.  No kernel."""

import numpy as np

from taskstats_fast.accounting.cgroupfs import CgroupLook
from taskstats_fast.accounting.interval import EXITED, FLAG_RECONCILED, TASK_DTYPE
from taskstats_fast.accounting.reconcile import (MAX_EXIT_SHARE_NS, MAX_FACTOR, own_usage_delta,
                                                 reconcile)

ROOT, A, B, C = 1, 10, 11, 12           # A and B under the root, C under A


def cg_look(usage, present=(ROOT, A, B, C)):
    parents = {A: ROOT, B: ROOT, C: A}
    return CgroupLook(0, "/cg", paths={c: f"/{c}" for c in present},
                      parent_of={c: p for c, p in parents.items() if c in present},
                      usage_us={c: u for c, u in usage.items() if c in present})


def rows_of(*specs):
    """(cgroup_id, exited, cpu_ns) per row."""
    rows = np.zeros(len(specs), TASK_DTYPE)
    for i, (cg, exited, cpu) in enumerate(specs):
        rows[i]["cgroup_id"], rows[i]["cpu_ns"] = cg, cpu
        rows[i]["state"] = EXITED if exited else 0
    return rows


def test_own_usage_is_the_delta_minus_the_childrens():
    start = cg_look({ROOT: 0, A: 1000, B: 500, C: 200})
    end = cg_look({ROOT: 99_999, A: 1800, B: 900, C: 500})
    own = own_usage_delta(start, end)
    assert own == {A: 800 - 300, B: 400, C: 300}            # never the root (tick-based)


def test_a_removed_child_leaves_its_parent_unknown_and_a_new_one_counts_from_zero():
    start = cg_look({ROOT: 0, A: 1000, B: 500, C: 200})
    end = cg_look({ROOT: 0, A: 1500, B: 900}, present=(ROOT, A, B))
    assert own_usage_delta(start, end) == {B: 400}
    start = cg_look({ROOT: 0, A: 1000, B: 500}, present=(ROOT, A, B))
    end = cg_look({ROOT: 0, A: 1800, B: 900, C: 300})
    assert own_usage_delta(start, end) == {A: 500, B: 400, C: 300}


def test_exited_rows_share_what_live_rows_do_not_explain():
    start = cg_look({ROOT: 0, A: 0, B: 0, C: 0})
    end = cg_look({ROOT: 0, A: 1000, B: 100, C: 0})         # A's own: 1000 us
    rows = rows_of((A, False, 600_000), (A, True, 100_000), (A, True, 100_000),
                   (B, True, 100_000), (ROOT, True, 5_000))
    own = reconcile(rows, start, end)
    assert own[A] == 1000
    assert rows["cpu_ns"].tolist() == [600_000, 200_000, 200_000, 100_000, 5_000]
    assert (rows["flags"] != 0).tolist() == [False, True, True, True, False]
    assert rows["flags"][1] & FLAG_RECONCILED
    assert rows["cpu_ns"][rows["cgroup_id"] == A].sum() == 1_000_000


def test_what_the_exits_missed_is_shared_per_exit_not_by_their_estimates():
    """Killed sleepers: most exit records carry no CPU for the interval (the clock last moved when
    the task went to sleep), one was preempted during its exit; each exit path cost about the same.
    Shared by the estimates, that one row took all of it."""
    start = cg_look({ROOT: 0, A: 0, B: 0, C: 0})
    end = cg_look({ROOT: 0, A: 2_000, B: 0, C: 0})          # 8 exits of 250 us each
    rows = rows_of(*([(A, True, 0)] * 7 + [(A, True, 250_000)]))
    reconcile(rows, start, end)
    assert rows["cpu_ns"].tolist() == [218_750] * 7 + [468_750]
    assert (rows["flags"] & FLAG_RECONCILED).all()
    assert rows["cpu_ns"].sum() == 2_000_000


def test_estimates_beyond_the_usage_are_scaled_down_never_below_zero():
    start = cg_look({ROOT: 0, A: 0, B: 0, C: 0})
    end = cg_look({ROOT: 0, A: 700, B: 0, C: 0})            # live 600 us: 100 us for the exits
    rows = rows_of((A, False, 600_000), (A, True, 150_000), (A, True, 50_000), (A, True, 0))
    reconcile(rows, start, end)
    assert rows["cpu_ns"].tolist() == [600_000, 75_000, 25_000, 0]
    assert rows["cpu_ns"].sum() == 700_000


def test_a_share_beyond_the_bounds_or_nothing_left_keeps_the_estimates():
    start = cg_look({ROOT: 0, A: 0, B: 0, C: 0})
    big = 2 * MAX_EXIT_SHARE_NS // 1000                     # us: more than one exit can miss
    small = int(big * 1000 / (MAX_FACTOR + 1))             # ns: and it is over 15x the estimate
    end = cg_look({ROOT: 0, A: 500 + 5, B: big, C: 5})      # A's own: 500 us (C is its child)
    rows = rows_of((A, False, 600_000), (A, True, 100_000),            # live explain it all
                   (B, True, small),                                   # would add > both bounds
                   (C, True, 100_000))                                 # would scale by 1/20
    before = rows["cpu_ns"].copy()
    reconcile(rows, start, end)
    assert (rows["cpu_ns"] == before).all() and (rows["flags"] == 0).all()


def test_one_exit_missing_up_to_the_per_exit_bound_is_reconciled():
    start = cg_look({ROOT: 0, A: 0, B: 0, C: 0})
    end = cg_look({ROOT: 0, A: 0, B: MAX_EXIT_SHARE_NS // 1000, C: 0})
    rows = rows_of((B, True, 0))                            # a record that saw none of it
    reconcile(rows, start, end)
    assert rows["cpu_ns"][0] == MAX_EXIT_SHARE_NS and rows["flags"][0] & FLAG_RECONCILED


def test_no_usage_read_no_change():
    rows = rows_of((A, True, 100))
    assert reconcile(rows, CgroupLook(0, ""), CgroupLook(0, "")) == {}
    assert rows["cpu_ns"][0] == 100
