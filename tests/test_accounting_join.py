"""The merge's join in the C core (csrc/tsf_join.c via accounting.merge.merge) against its numpy
reference (merge.reference_merge): the same rows and the same ledger, byte for byte, over
randomised intervals of records encoded here: pid reuse, tasks missing from a look (NO_START),
exits between looks, exits racing a look (listed in it too), repeated exit records, exits of an
earlier interval, zombies listed again, cgroup moves and delay accounting switched off.  Two
intervals are chained so the second opens on a ledger with exited entries.  No kernel needed."""

import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taskstats_fast import _native, layout
from taskstats_fast.accounting import cgroupfs
from taskstats_fast.accounting import merge as merge_module
from taskstats_fast.accounting.interval import FLAG_NO_START, FLAG_PID_REUSED
from taskstats_fast.accounting.merge import SIGHTING_DTYPE, Look, merge, reference_merge

S = 1_000_000_000
T0 = 1_700_000_000 * S
MS = 1_000_000


class Task:
    """One task: a pid, a birth, maybe a death, counters that grow at its own rates."""

    def __init__(self, rng, pid, born_ns, dies_ns):
        self.pid, self.born, self.dies = pid, born_ns, dies_ns
        self.tgid = pid if rng.random() < 0.7 else int(rng.integers(1, 40))
        self.ppid = int(rng.integers(1, 40))
        self.rates = rng.integers(0, 2000, 8)            # per ms
        self.rss = int(rng.integers(100, 5000))
        self.exitcode = int(rng.choice([0, 9, 256]))
        # listed by looks until reaped: mostly at once, sometimes a zombie for a while
        self.reaped = dies_ns + int(rng.integers(0, 5 * MS) if rng.random() < 0.8 else
                                    rng.integers(0, 2 * S)) if dies_ns is not None else None

    def record(self, seen_ns, rng):
        at = seen_ns if self.dies is None else min(seen_ns, self.dies)
        ms = max(0, at - self.born) // MS
        r = np.zeros(1, layout.DTYPE)
        r["kind"], r["layout"], r["version"] = layout.KIND_PID, 16, 16
        r["ac_pid"], r["id"], r["ac_tgid"], r["ac_ppid"] = self.pid, self.pid, self.tgid, self.ppid
        r["time_ns"], r["ac_etime"] = seen_ns, max(0, seen_ns - self.born) // 1000
        jitter = int(rng.integers(0, 2))                  # ac_btime is floor(now) - floor(elapsed)
        r["ac_btime64"] = r["ac_btime"] = self.born // S + jitter
        r["ac_exitcode"] = self.exitcode if self.dies is not None and seen_ns >= self.dies else 0
        r["ac_comm"] = f"t{self.pid}".encode()
        r["hiwater_rss"] = self.rss + ms // 100
        for name, rate in zip(("ac_utime", "ac_stime", "cpu_run_virtual_total", "cpu_run_real_total",
                               "nvcsw", "read_char", "blkio_delay_total", "ac_minflt"), self.rates):
            r[name] = ms * int(rate)
        return r


def _world(rng, times):
    """Tasks over the looks' span, few pids so that they are reused."""
    tasks = []
    for pid in range(2, 2 + int(rng.integers(1, 14))):
        t = times[0] - int(rng.integers(0, 20 * S))
        while t < times[-1] + S and len(tasks) < 60:
            dies = None if rng.random() < 0.3 else t + int(rng.integers(1 * MS, 3 * S))
            if dies is not None and rng.random() < 0.4:     # around a look
                dies = max(t + MS, int(rng.choice(times)) + int(rng.integers(-5 * MS, 5 * MS)))
            tasks.append(Task(rng, pid, t, dies))
            if dies is None:
                break
            t = dies + int(rng.integers(0, 300 * MS))      # the pid is free again
    return tasks


def _look(rng, tasks, t_ns, delayacct):
    """What a look beginning at t_ns lists: live tasks and recent zombies (some missed), each
    queried a few ms in, and where the walk saw them."""
    recs, where = [], {}
    for task in tasks:
        zombie = task.dies is not None and task.dies <= t_ns < task.reaped
        alive = task.born <= t_ns and (task.dies is None or task.dies > t_ns or zombie)
        if not alive or rng.random() < 0.1:               # missed: moved during the walk, raced
            continue
        if any(r["ac_pid"][0] == task.pid for r in recs):
            continue
        recs.append(task.record(t_ns + int(rng.integers(0, 3 * MS)), rng))
        if rng.random() < 0.9:
            where[task.pid] = int(rng.integers(1, 5))
    tids = np.array(sorted(where), np.uint32)
    cg = cgroupfs.CgroupLook(t_ns, "/cg", {c: f"/{c}" for c in set(where.values())}, tids,
                             np.array([where[t] for t in sorted(where)], np.uint64))
    records = np.concatenate(recs) if recs else np.zeros(0, layout.DTYPE)
    return Look.of(t_ns, records[rng.permutation(len(records))], cg, delayacct)


def _exits(rng, tasks, lo_ns, hi_ns):
    """Exit records received in (lo, hi]: some filled before lo (an earlier interval's), some
    repeated."""
    recs = []
    for task in tasks:
        if task.dies is None:
            continue
        received = task.dies + int(rng.integers(0, 15 * MS))
        if lo_ns < received <= hi_ns:
            r = task.record(received, rng)
            recs.append(r)
            if rng.random() < 0.1:
                recs.append(r.copy())
    if recs and rng.random() < 0.2:
        recs.append(recs[0].copy())                       # a repeat across intervals
    if rng.random() < 0.1 and recs:
        recs[0]["kind"] = layout.KIND_TGID                # a TGID record: not a task
    records = np.concatenate(recs) if recs else np.zeros(0, layout.DTYPE)
    return records[rng.permutation(len(records))]


def _same(a: np.ndarray, b: np.ndarray, what: str) -> None:
    """Field by field (a copy of aligned records may leave the padding between fields unset)."""
    assert a.dtype == b.dtype and len(a) == len(b), (what, len(a), len(b))
    for name in a.dtype.names:
        assert np.array_equal(a[name], b[name]), (what, name, a[name], b[name])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32 - 1))
def test_the_c_join_gives_the_reference_rows(seed):
    rng = np.random.default_rng(seed)
    times = [T0 + i * S + int(rng.integers(0, 50 * MS)) for i in range(3)]
    tasks = _world(rng, times)
    switch = [None, True, False]
    looks = [_look(rng, tasks, t, switch[int(rng.integers(0, 3))] if rng.random() < 0.3 else True)
             for t in times]
    exits = [_exits(rng, tasks, times[i] - 20 * MS, times[i + 1] + 10 * MS) for i in range(2)]
    c_open = ref_open = looks[0]
    for i in range(2):
        c_rows, c_next = merge(c_open, looks[i + 1], exits[i].copy())
        r_rows, r_next = reference_merge(ref_open, looks[i + 1], exits[i].copy())
        _same(c_rows, r_rows, f"rows of interval {i}")
        _same(c_next.records, r_next.records, f"ledger after interval {i}")
        c_open, ref_open = c_next, r_next


def _sightings(pids):
    out = np.zeros(len(pids), SIGHTING_DTYPE)
    out["ac_pid"] = pids
    return out


def test_unsorted_or_short_inputs_are_refused_not_read():
    join = merge_module._JOIN
    no_cg = (np.zeros(0, np.uint32), np.zeros(0, np.uint64))
    with pytest.raises(ValueError, match="invalid argument"):
        join.run(_sightings([3, 2]), _sightings([]), _sightings([]), T0, no_cg, no_cg, False)
    with pytest.raises(ValueError, match="invalid argument"):     # a look's pids are unique
        join.run(_sightings([]), _sightings([2, 2]), _sightings([]), T0, no_cg, no_cg, False)
    with pytest.raises(ValueError, match="invalid argument"):     # exits sorted, repeats allowed
        join.run(_sightings([]), _sightings([]), _sightings([4, 4, 1]), T0, no_cg, no_cg, False)
    unsorted_cg = (np.array([5, 1], np.uint32), np.array([1, 1], np.uint64))
    with pytest.raises(ValueError, match="invalid argument"):
        join.run(_sightings([]), _sightings([1]), _sightings([]), T0, no_cg, unsorted_cg, False)
    with pytest.raises(ValueError, match="one cgroup id"):
        join.run(_sightings([]), _sightings([1]), _sightings([]), T0, no_cg,
                 (np.array([1], np.uint32), np.zeros(0, np.uint64)), False)
    with pytest.raises(ValueError, match="sightings"):
        join.run(np.zeros(1, layout.DTYPE), _sightings([]), _sightings([]), T0, no_cg, no_cg, False)


def test_a_plan_outside_its_rows_is_refused():
    plan = dict(merge_module._join_plan())
    plan["s_birth_ns"] = SIGHTING_DTYPE.itemsize            # one word past the end
    with pytest.raises(ValueError, match="copy plan"):
        _native.Join(SIGHTING_DTYPE, merge_module.TASK_DTYPE, plan)
    plan = dict(merge_module._join_plan())
    plan["copy"] = plan["copy"] + [(0, merge_module.TASK_DTYPE.itemsize - 4, 8)]
    with pytest.raises(ValueError, match="copy plan"):
        _native.Join(SIGHTING_DTYPE, merge_module.TASK_DTYPE, plan)


def _record(pid, received_ns, elapsed_ns, utime):
    r = np.zeros(1, layout.DTYPE)
    r["kind"], r["layout"], r["version"] = layout.KIND_PID, 16, 16
    r["ac_pid"], r["id"], r["ac_tgid"], r["ac_ppid"] = pid, pid, pid, 1
    r["time_ns"], r["ac_etime"] = received_ns, elapsed_ns // 1000
    r["ac_btime64"] = r["ac_btime"] = (received_ns - elapsed_ns) // S
    r["ac_utime"] = r["cpu_run_virtual_total"] = utime
    return r


def _cg_look(t_ns, records, tids=()):
    tids = np.array(tids, np.uint32)
    cg = cgroupfs.CgroupLook(t_ns, "/cg", {7: "/7"}, tids, np.full(len(tids), 7, np.uint64))
    return Look.of(t_ns, records, cg, True)


def _both(start, end, exits):
    c_rows, c_next = merge(start, end, exits.copy())
    r_rows, r_next = reference_merge(start, end, exits.copy())
    _same(c_rows, r_rows, "rows")
    _same(c_next.records, r_next.records, "ledger")
    return c_rows


def test_an_exit_claims_its_ledger_entry_before_a_live_sighting_that_also_fits():
    # the ledger's birth range overlaps the exit's and the live sighting's; those two do not
    # overlap each other, so they were not folded: the exit is the task, the live one a reuse
    start = _cg_look(T0, _record(50, T0 + 3 * MS, 5 * S, 100), [50])
    exit_ = _record(50, T0 + S // 2, 5 * S + S // 2 + MS, 150)
    end = _cg_look(T0 + S, _record(50, T0 + S + MS, 6 * S - 4 * MS, 200), [50])
    rows = _both(start, end, exit_)
    assert rows["state"].tolist() == [2, 1]          # EXITED, then BORN
    assert rows["ac_utime"][0] == 50                 # the exit's growth over the ledger
    assert rows["flags"][1] == FLAG_NO_START | FLAG_PID_REUSED    # charged a share, not 200


def test_of_two_exits_as_late_born_the_first_folds_with_the_closing_sighting():
    start = _cg_look(T0, _record(51, T0, 3 * S, 100), [51])
    end = _cg_look(T0 + S, _record(51, T0 + S + MS, 4 * S + MS, 140), [51])
    exits = np.concatenate([_record(51, T0 + S + 5 * MS, 4 * S + 5 * MS, 150),
                            _record(51, T0 + S + 5 * MS, 4 * S + 5 * MS, 160)])
    rows = _both(start, end, exits)
    assert rows["ac_utime"][0] == 50 and rows["flags"][1] & FLAG_NO_START   # the second: a share


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32 - 1), st.booleans())
def test_the_c_sightings_are_the_reference_sightings(seed, with_look):
    """Records of random bytes (any kind, layout, start and elapsed time, values that overflow
    the birth arithmetic): the same sightings, the same order, as numpy's."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 40))
    records = np.frombuffer(rng.bytes(n * layout.DTYPE.itemsize), layout.DTYPE).copy()
    records["kind"] = rng.choice([layout.KIND_PID, layout.KIND_TGID, 7], n, p=[0.8, 0.1, 0.1])
    records["layout"] = rng.integers(0, 20, n)
    pids = rng.choice(["random", "ascending", "ascending with repeats"])
    if pids != "random":                      # a bulk lookup's order, and a repeat in it
        records["ac_pid"] = np.cumsum(rng.integers(pids == "ascending", 3, n))
    if rng.random() < 0.5:                    # realistic times too, not only random words
        records["time_ns"] = T0 + rng.integers(0, S, n)
        records["ac_etime"] = rng.integers(0, 10**9, n)
        records["ac_btime64"] = records["ac_btime"] = T0 // S - rng.integers(0, 1000, n)
    look_ns = int(rng.integers(-2**63, 2**63 - 1)) if with_look and rng.random() < 0.2 else \
        (T0 if with_look else None)
    c = merge_module.sightings(records, look_ns)
    ref = merge_module.reference_sightings(records, look_ns)
    _same(c, ref, "sightings")
    ordered = merge_module._SIGHTINGS.run(records, look_ns)[1]
    assert ordered == bool(np.all(ref["ac_pid"][1:] > ref["ac_pid"][:-1]))



@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_the_c_exit_order_is_the_reference_order(seed):
    """Exit sightings of random bytes over few pids and start seconds, some repeated once or
    more, some only nearly (one monotone word apart): sorted and de-duplicated in C exactly as
    merge._unique_exits does, past one run of the C sort (up to 300 exits)."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 300))
    exits = np.frombuffer(rng.bytes(n * SIGHTING_DTYPE.itemsize), SIGHTING_DTYPE).copy()
    exits["ac_pid"] = rng.integers(1, 12, n)
    exits["btime"] = rng.integers(-2, 3, n) * (2**62 if rng.random() < 0.2 else 1)
    exits["mono"] = rng.integers(0, 3, (n, exits["mono"].shape[1])) * (rng.random() < 0.5)
    for _ in range(int(rng.integers(0, 4))):
        if n:
            twins = exits[rng.integers(0, n, int(rng.integers(1, n + 1)))].copy()
            if rng.random() < 0.3:                       # nearly: one word apart
                twins["mono"][:, int(rng.integers(0, twins["mono"].shape[1]))] += 1
            both = np.empty(n + len(twins), SIGHTING_DTYPE)   # concatenate would repack the dtype
            both[:n], both[n:] = exits, twins
            exits, n = both[rng.permutation(len(both))], len(both)
    _same(merge_module._JOIN.unique_exits(exits.copy()), merge_module._unique_exits(exits.copy()),
          "exits")


def test_merges_in_two_threads_at_once_each_give_their_own_rows():
    """The C calls run without the GIL: two Accountings merging at once in two threads (each
    its own world, with many repeated exits for the sort) get the rows a merge alone gives,
    every time; their arguments and scratch are per thread (shared, they crashed the process)."""
    cases = []
    for seed in (11, 12):
        rng = np.random.default_rng(seed)
        times = [T0 + i * S for i in range(2)]
        tasks = _world(rng, times)
        looks = [_look(rng, tasks, t, True) for t in times]
        exits = _exits(rng, tasks, times[0] - 20 * MS, times[1] + 10 * MS)
        exits = np.repeat(exits, 200)                     # repeats: work for the sort
        rows, ledger = merge(looks[0], looks[1], exits.copy())
        cases.append((looks, exits, rows.copy(), ledger.records.copy()))
    barrier, failures = threading.Barrier(2), []

    def run(case):
        looks, exits, rows, ledger = case
        for _ in range(60):
            barrier.wait()
            got, nxt = merge(looks[0], looks[1], exits.copy())
            same = len(got) == len(rows) and all(
                np.array_equal(a[name], b[name]) for a, b in ((got, rows), (nxt.records, ledger))
                for name in a.dtype.names)    # field by field: padding may differ (see _same)
            if not same:
                failures.append(1)

    threads = [threading.Thread(target=run, args=(case,)) for case in cases]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures
