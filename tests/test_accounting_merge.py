"""The accounting merge (accounting/merge.py) on synthetic records: matching across looks, pid
reuse, exits racing a look, cgroup attribution and inheritance.  No kernel needed."""

import numpy as np
import pytest

from taskstats_fast import layout
from taskstats_fast.accounting import cgroupfs
from taskstats_fast.accounting.interval import (BORN, EXACT, EXITED, FLAG_DELAYACCT_OFF,
                                                FLAG_NO_START, FLAG_PID_REUSED, INHERITED, UNKNOWN)
from taskstats_fast.accounting.merge import BIRTH_TOLERANCE_NS, Look, merge

S = 1_000_000_000
T0 = 1_700_000_000 * S          # the opening look
T1 = T0 + S                     # the closing look


def rec(pid, seen_ns, age_s, *, utime=0, tgid=None, ppid=1, exitcode=0, **fields):
    """One PID record of a task ``age_s`` old when it was received at ``seen_ns``."""
    r = np.zeros(1, layout.DTYPE)
    born_ns = seen_ns - int(age_s * S)
    r["kind"], r["layout"], r["version"] = layout.KIND_PID, 16, 16
    r["ac_pid"], r["id"], r["ac_tgid"], r["ac_ppid"] = pid, pid, tgid or pid, ppid
    r["time_ns"], r["ac_etime"] = seen_ns, int(age_s * 1_000_000)
    r["ac_btime64"] = born_ns // S
    r["ac_btime"] = born_ns // S
    r["ac_utime"], r["ac_exitcode"] = utime, exitcode
    r["ac_comm"] = f"t{pid}".encode()
    for k, v in fields.items():
        r[k] = v
    return r


def cat(*recs):
    return np.concatenate(recs) if recs else np.zeros(0, layout.DTYPE)


def look(time_ns, records, where=None, delayacct=True):
    """A Look; ``where`` maps tid -> cgroup id (the cgroup.threads walk)."""
    where = dict(where or {})
    tids = np.array(sorted(where), np.uint32)
    cg = cgroupfs.CgroupLook(time_ns, "/cg", {c: f"/{c}" for c in set(where.values())},
                             tids, np.array([where[t] for t in sorted(where)], np.uint64))
    return Look.of(time_ns, records, cg, delayacct)


def row(rows, pid, state=None):
    hit = rows[(rows["ac_pid"] == pid) & ((rows["state"] == state) if state is not None else True)]
    assert len(hit) == 1, hit
    return hit[0]


def test_alive_born_exited_and_short_lived():
    start = look(T0, cat(rec(10, T0, 5, utime=100), rec(11, T0, 5, utime=100)), {10: 7, 11: 8})
    exits = cat(rec(11, T0 + S // 2, 5.5, utime=150, exitcode=256),     # had a start record
                rec(12, T0 + S // 2, 0.1, utime=40, ppid=10))           # born and dead inside
    end = look(T1, cat(rec(10, T1, 6, utime=300), rec(13, T1, 0.5, utime=20)),
               {10: 7, 13: 9})
    rows, nxt = merge(start, end, exits)
    assert len(rows) == 4
    r = row(rows, 10)
    assert (r["state"], r["ac_utime"], r["cgroup_id"], r["attribution"]) == (0, 200, 7, EXACT)
    r = row(rows, 11)
    assert (r["state"], r["ac_utime"], r["cgroup_id"], r["attribution"], r["ac_exitcode"]) == \
        (EXITED, 50, 8, EXACT, 256)
    r = row(rows, 12)
    assert (r["state"], r["ac_utime"], r["cgroup_id"], r["attribution"]) == \
        (BORN | EXITED, 40, 7, INHERITED)                               # its parent's cgroup
    r = row(rows, 13)
    assert (r["state"], r["ac_utime"], r["cgroup_id"], r["attribution"]) == (BORN, 20, 9, EXACT)
    assert nxt.records["ac_pid"].tolist() == [10, 13]


def test_exit_racing_the_closing_look_counts_once():
    start = look(T0, rec(20, T0, 3, utime=10), {20: 7})
    end = look(T1, rec(20, T1 + 1000, 4, utime=30), {20: 7})              # queried, then died
    exits = rec(20, T1 + S // 100, 4.01, utime=31)                          # drained after the look
    rows, nxt = merge(start, end, exits)
    assert len(rows) == 1
    r = rows[0]
    assert (r["state"], r["ac_utime"], r["cgroup_id"], r["attribution"]) == (EXITED, 21, 7, EXACT)
    assert nxt.records["exited"].tolist() == [1]                            # final in the ledger
    rows2, _ = merge(nxt, look(T1 + S, cat(), {}), cat())
    assert len(rows2) == 0


def test_exit_received_before_the_look_is_not_merged_with_a_reused_pid():
    start = look(T0, rec(30, T0, 3, utime=10), {30: 7})
    exits = rec(30, T0 + S // 2, 3.5, utime=50)                             # A dies mid-interval
    end = look(T1, rec(30, T1, 0.3, utime=60), {30: 8})                     # B got A's pid
    rows, _ = merge(start, end, exits)
    a, b = row(rows, 30, EXITED), row(rows, 30, BORN)
    assert (a["ac_utime"], a["cgroup_id"]) == (40, 7)
    assert (b["ac_utime"], b["cgroup_id"]) == (60, 8)
    assert a["flags"] & FLAG_PID_REUSED and b["flags"] & FLAG_PID_REUSED


def test_reused_pid_whose_counters_went_backwards_is_a_new_task():
    # A's exit message was lost; B (same pid, similar start second) has smaller counters
    start = look(T0, rec(40, T0, 0.2, utime=500, nvcsw=9), {40: 7})
    end = look(T1, rec(40, T1, 0.5, utime=100, nvcsw=2), {40: 7})
    rows, _ = merge(start, end, cat())
    r = row(rows, 40)
    assert r["state"] == BORN and r["ac_utime"] == 100 and r["nvcsw"] == 2


def test_reused_pid_started_seconds_later_is_a_new_task_even_with_larger_counters():
    start = look(T0, rec(41, T0, 0.0, utime=0), {41: 7})
    end = look(T1 + 5 * S, rec(41, T1 + 5 * S, 1.0, utime=900), {41: 7})   # its btime64 is 5 s on
    rows, _ = merge(start, end, cat())
    assert row(rows, 41)["state"] == BORN


def test_deltas_never_negative():
    rng = np.random.default_rng(3)
    recs = [rec(p, T0, rng.uniform(0, 3), utime=int(rng.integers(0, 1000)),
                nvcsw=int(rng.integers(0, 50))) for p in range(100, 200)]
    start = look(T0, cat(*recs), {p: 7 for p in range(100, 200)})
    ends = [rec(p, T1, rng.uniform(0, 3), utime=int(rng.integers(0, 1000)),
                nvcsw=int(rng.integers(0, 50))) for p in range(150, 250)]
    end = look(T1, cat(*ends), {p: 7 for p in range(150, 250)})
    rows, _ = merge(start, end, cat())
    for name in ("ac_utime", "nvcsw"):
        assert (rows[name] <= 1000).all()                                   # no uint64 wrap
    by_pid = {int(r["ac_pid"]): r for r in rows}
    for e in ends:
        pid = int(e["ac_pid"][0])
        s = [r for r in recs if int(r["ac_pid"][0]) == pid]
        # looks filled at their own instant: a birth is exact, so the same task is born once
        born_e = T1 - int(e["ac_etime"][0]) * 1000
        same = s and int(e["ac_utime"][0]) >= int(s[0]["ac_utime"][0]) and \
            int(e["nvcsw"][0]) >= int(s[0]["nvcsw"][0]) and \
            int(e["ac_etime"][0]) >= int(s[0]["ac_etime"][0]) and \
            abs(born_e - (T0 - int(s[0]["ac_etime"][0]) * 1000)) <= BIRTH_TOLERANCE_NS
        if same:
            expected = int(e["ac_utime"][0]) - int(s[0]["ac_utime"][0])
        elif born_e < T0:       # older than the opening look, not in it: only its share since
            share = min(1.0, (T1 - T0) / (int(e["ac_etime"][0]) * 1000.0))
            expected = int(np.float64(e["ac_utime"][0]) * share)
        else:
            expected = int(e["ac_utime"][0])
        assert int(by_pid[pid]["ac_utime"]) == expected


def test_inheritance_through_thread_group_and_chains_of_short_lived_tasks():
    start = look(T0, rec(50, T0, 9), {50: 7})
    end = look(T1, rec(50, T1, 10), {50: 7})
    exits = cat(rec(51, T0 + 1000, 0.1, tgid=50, ppid=1),       # a thread of 50
                rec(60, T0 + 2000, 0.2, ppid=50),               # sh -c, child of 50
                rec(61, T0 + 3000, 0.1, ppid=60),               # its child
                rec(62, T0 + 4000, 0.1, ppid=61),               # and grandchild
                rec(70, T0 + 5000, 0.1, ppid=999))              # parent never seen
    rows, _ = merge(start, end, exits)
    for pid in (51, 60, 61, 62):
        r = row(rows, pid)
        assert (r["cgroup_id"], r["attribution"]) == (7, INHERITED), pid
    r = row(rows, 70)
    assert (r["cgroup_id"], r["attribution"]) == (0, UNKNOWN)


def test_thread_inherits_its_group_before_its_parent():
    start = look(T0, cat(rec(80, T0, 9), rec(1, T0, 99)), {80: 7, 1: 1})
    end = look(T1, cat(rec(80, T1, 10), rec(1, T1, 100)), {80: 7, 1: 1})
    rows, _ = merge(start, end, rec(81, T0 + 10, 0.1, tgid=80, ppid=1))
    assert row(rows, 81)["cgroup_id"] == 7



def test_thread_that_died_with_its_process_inherits_the_group_the_opening_look_saw():
    # the process (80) and its last short thread (81) exit in the interval: only the opening
    # look listed 80, while its parent (1) is in both looks, in another cgroup
    start = look(T0, cat(rec(80, T0, 9), rec(1, T0, 99)), {80: 7, 1: 1})
    end = look(T1, rec(1, T1, 100), {1: 1})
    exits = cat(rec(81, T0 + 10, 0.1, tgid=80, ppid=1), rec(80, T0 + 20, 9, ppid=1))
    rows, _ = merge(start, end, exits)
    assert (row(rows, 81)["cgroup_id"], row(rows, 81)["attribution"]) == (7, INHERITED)
    assert (row(rows, 80)["cgroup_id"], row(rows, 80)["attribution"]) == (7, EXACT)

def test_moved_task_counts_in_its_cgroup_at_the_closing_look():
    start = look(T0, rec(90, T0, 9, utime=10), {90: 7})
    end = look(T1, rec(90, T1, 10, utime=20), {90: 8})
    rows, _ = merge(start, end, cat())
    assert row(rows, 90)["cgroup_id"] == 8


def test_delay_accounting_off_zeroes_and_flags_switched_delays():
    start = look(T0, rec(95, T0, 9, blkio_delay_total=10, cpu_delay_total=10), {95: 7},
                 delayacct=False)
    end = look(T1, rec(95, T1, 10, blkio_delay_total=50, cpu_delay_total=50), {95: 7})
    rows, _ = merge(start, end, cat())
    r = rows[0]
    assert r["flags"] & FLAG_DELAYACCT_OFF
    assert r["blkio_delay_total"] == 0 and r["cpu_delay_total"] == 40


def test_task_older_than_the_opening_look_but_missing_from_it_is_flagged():
    start = look(T0, cat(), {})
    end = look(T1, cat(rec(96, T1, 30), rec(97, T1, 0.5)), {96: 7, 97: 7})
    rows, _ = merge(start, end, cat())
    assert row(rows, 96)["flags"] & FLAG_NO_START
    assert not row(rows, 97)["flags"] & FLAG_NO_START


def test_tgid_records_are_ignored():
    exits = rec(98, T0 + S // 2, 0.1, utime=5)
    tgid = exits.copy()
    tgid["kind"] = layout.KIND_TGID
    rows, _ = merge(look(T0, cat(), {}), look(T1, cat(), {}), cat(exits, tgid))
    assert len(rows) == 1 and rows[0]["ac_utime"] == 5


def test_cpu_ns_is_the_scheduler_clock_for_live_and_exited_tasks():
    start = look(T0, cat(rec(110, T0, 9, utime=100, cpu_run_virtual_total=90_000),
                         rec(111, T0, 9, utime=100, cpu_run_virtual_total=90_000)),
                 {110: 7, 111: 7})
    end = look(T1, rec(110, T1, 10, utime=300, cpu_run_virtual_total=250_000), {110: 7})
    exits = cat(rec(111, T0 + S // 2, 9.5, utime=200, cpu_run_virtual_total=120_000),
                rec(112, T0 + S // 2, 0.1, utime=0, cpu_run_virtual_total=700_000))
    rows, _ = merge(start, end, exits)
    assert row(rows, 110)["cpu_ns"] == 160_000                  # scheduler delta
    assert row(rows, 111)["cpu_ns"] == 30_000                   # scheduler, not the 100 us of ticks
    assert row(rows, 112)["cpu_ns"] == 700_000                  # scheduler: no tick caught it


# ---- one task, every order in which its exit record and the looks can arrive ------------------
# The task burns 1 us of CPU per 10 ms of its life, and dies at ``dies`` (ns after
# T1's look began).  Its exit record is received ``wait`` ns after it was filled, so it may land
# in the interval before the closing look, after it, or in the next interval; the closing look
# may query it before it dies or after (it stays listed and queryable until cgroup_exit), and a
# zombie may be listed again by the look after.
def _task(seen_ns, dies_ns, born_ns=T0 - 5 * S, exitcode=None):
    at = min(seen_ns, dies_ns)
    r = rec(70, seen_ns, (seen_ns - born_ns) / S, utime=(at - born_ns) // 10_000_000)
    if exitcode is not None:
        r["ac_exitcode"] = exitcode
    return r


@pytest.mark.parametrize("dies_ms", [-5, -2, -1, 0, 1, 2, 5, 15, 50])
@pytest.mark.parametrize("wait_ms", [0, 1, 3, 700])
@pytest.mark.parametrize("zombie_listed_again", [False, True])
@pytest.mark.parametrize("born_inside", [False, True])
def test_a_task_dying_around_a_look_is_counted_once_whatever_the_order(
        dies_ms, wait_ms, zombie_listed_again, born_inside):
    T2 = T1 + S
    dies = T1 + dies_ms * 1_000_000
    born = T0 + S // 4 if born_inside else T0 - 5 * S
    query = T1 + 2_000_000                            # the closing look reaches it 2 ms in
    cut = T1 + 10_000_000                             # everything received by then is this interval's
    received = dies + wait_ms * 1_000_000
    if dies <= cut:                                   # the cut reads all the sockets hold
        received = min(received, cut)
    final = _task(received, dies, born, exitcode=9)
    where = {70: 7}
    start = look(T0, cat() if born_inside else _task(T0, dies, born), {} if born_inside else where)
    # listed by the closing look unless it had gone through cgroup_exit (5 ms after its exit
    # record: the double count was this, its exit received before the look began)
    listed = query < dies + 5_000_000
    end = look(T1, _task(query, dies, born) if listed else cat(), where if listed else {})
    exits1 = final if received <= cut else cat()
    exits2 = cat() if received <= cut else final
    rows1, nxt = merge(start, end, exits1)
    again = zombie_listed_again and listed
    last = look(T2, _task(T2, dies, born) if again else cat(), where if again else {})
    rows2, _ = merge(nxt, last, exits2)
    rows = np.concatenate([rows1, rows2])
    rows = rows[rows["ac_pid"] == 70]
    total = int(final["ac_utime"][0]) - (0 if born_inside else int(start.records["mono"][0][0]))
    assert int(rows["ac_utime"].sum()) == total, rows[["state", "ac_utime"]]
    assert np.count_nonzero(rows["state"] & EXITED) == 1
    assert not (rows["flags"] & FLAG_NO_START).any()
    assert np.count_nonzero(rows["state"] & BORN) == (1 if born_inside else 0)


def test_a_repeated_exit_record_is_counted_once():
    start = look(T0, rec(71, T0, 3, utime=10), {71: 7})
    e = rec(71, T0 + S // 2, 3.5, utime=50)
    rows, _ = merge(start, look(T1, cat(), {}), cat(e, e))
    assert rows["ac_utime"].tolist() == [40]


def test_a_record_with_no_start_is_charged_its_share_not_its_lifetime():
    # alive for 10 s, missing from the opening look: one tenth of its counters is this interval's
    start = look(T0, cat(), {})
    end = look(T1, rec(72, T1, 10, utime=10_000, nvcsw=100), {72: 7})
    exits = rec(73, T0 + S // 2, 5.5, utime=5_500)            # and one that exited, 5.5 s old
    rows, _ = merge(start, end, exits)
    alive, gone = row(rows, 72), row(rows, 73)
    assert alive["flags"] & FLAG_NO_START and gone["flags"] & FLAG_NO_START
    assert (alive["ac_utime"], alive["nvcsw"]) == (1_000, 10)
    assert gone["ac_utime"] == 500


def test_a_pid_reused_right_after_its_exit_is_a_new_task():
    start = look(T0, rec(74, T0, 3, utime=10), {74: 7})
    exits = rec(74, T0 + S // 2, 3.5, utime=50)                # dies mid-interval
    end = look(T1, rec(74, T1, 0.4, utime=20), {74: 7})        # a newcomer, born 100 ms later
    rows, _ = merge(start, end, exits)
    assert sorted(rows["ac_utime"].tolist()) == [20, 40]
    assert row(rows, 74, BORN)["ac_utime"] == 20


def test_every_row_of_a_task_carries_the_start_of_its_first_sighting():
    """The kernel's ac_btime is floor(now) - floor(elapsed): a later record of the same task may
    say a second more.  Rows keep the first, through live intervals and the exit."""
    first = rec(40, T0, 2.5)                                        # says T0 - 3 s
    later = rec(40, T1, 3.5, utime=10)
    later["ac_btime64"] = later["ac_btime"] = first["ac_btime64"] + 1    # the jitter
    start = look(T0, first, {40: 7})
    rows, nxt = merge(start, look(T1, later, {40: 7}), cat())
    assert row(rows, 40)["ac_btime64"] == first["ac_btime64"][0]
    dead = rec(40, T1 + S // 2, 4.0, utime=20, exitcode=9)
    dead["ac_btime64"] = dead["ac_btime"] = first["ac_btime64"] + 1
    rows, nxt = merge(nxt, look(T1 + S, cat(), {}), dead)
    assert row(rows, 40, EXITED)["ac_btime64"] == first["ac_btime64"][0]
