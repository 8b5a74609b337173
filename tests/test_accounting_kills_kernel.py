"""Identity across looks on the real kernel: processes SIGKILLed a few ms before, during and after
the looks, each charged its wait4 CPU once.

The issue this guards: a process killed 0-2 ms after a look began was charged its whole lifetime
a second time in about 7% of cases (its exit record arrived before the look's reply for it).
Here a farm process forks sleepers that each burn a known stretch of CPU first; the test kills
them at planned offsets around the looks (which it schedules itself with ``next(deadline=)``)
and the farm reaps them, reporting each one's ``ru_utime + ru_stime`` from ``wait4``.

It also guards the reconciliation's split (accounting/reconcile.py): a sleeper's exit record
carries about none of the CPU its death cost (its clock last moved when it went to sleep), so
what its cgroup's cpu.stat says the exits used must go back to them one exit at a time.  Split in
proportion to the records, under load it all went to the one or two whose clock happened to
move, charged up to 1.19x.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import taskstats_fast as tsf
from taskstats_fast.accounting.interval import EXITED

pytestmark = pytest.mark.kernel

# Forks argv[1] children; each burns argv[2] ms of CPU, says so on the pipe and sleeps until it
# is killed.  Then every line on stdin is a pid to reap: the farm answers "pid cpu_us status".
FARM = r"""
import os, signal, sys, time
n, burn_s = int(sys.argv[1]), float(sys.argv[2]) / 1000
r, w = os.pipe()
pids = []
for _ in range(n):
    pid = os.fork()
    if pid == 0:
        os.close(r)
        end = time.process_time() + burn_s
        while time.process_time() < end:
            pass
        os.write(w, b"x")
        while True:
            signal.pause()
    pids.append(pid)
os.close(w)
got = 0
while got < n:
    got += len(os.read(r, n))
print(" ".join(map(str, pids)), flush=True)
for line in sys.stdin:
    pid, status, ru = os.wait4(int(line), 0)
    print(pid, round((ru.ru_utime + ru.ru_stime) * 1e6), status, flush=True)
"""

KILLS = 208                      # at least 200, as the issue asks (26 looks, 8 kills each)
PER_LOOK = 8
INTERVAL = 0.25
BURN_MS = 20


def _run(group):
    """One campaign: (pids, wait4 CPU per pid, the rows of the farm's children, the interval of
    each row, kill offsets in ms from the looks, what each interval's cgroup said, messages lost
    meanwhile)."""
    offsets_ms = np.linspace(-5.0, 5.0, PER_LOOK)
    with tsf.Accounting(interval=INTERVAL) as acct:
        # started after the first look, so every child's CPU falls inside the intervals
        farm = group.popen([sys.executable, "-c", FARM, str(KILLS), str(BURN_MS)],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert farm.stdin is not None and farm.stdout is not None
        pids = [int(p) for p in farm.stdout.readline().split()]     # all of them have burnt
        assert len(pids) == KILLS
        ivs = [acct.next()]
        t0 = time.monotonic() + INTERVAL
        looks = [t0 + k * INTERVAL for k in range(KILLS // PER_LOOK)]
        plan = sorted((look_at + off / 1000, pids[k * PER_LOOK + j], k)
                      for k, look_at in enumerate(looks) for j, off in enumerate(offsets_ms))
        killed_at = {}

        def killer():
            for when, pid, _ in plan:
                while (left := when - time.monotonic()) > 0:
                    time.sleep(left if left < 0.002 else left - 0.001)
                killed_at[pid] = time.time_ns()
                os.kill(pid, signal.SIGKILL)
        thread = threading.Thread(target=killer)
        thread.start()
        for look_at in looks:
            ivs.append(acct.next(deadline=look_at))
        thread.join()
        ivs += [acct.next(), acct.next()]
        truth = {}
        for pid in pids:
            farm.stdin.write(f"{pid}\n")
            farm.stdin.flush()
            got, cpu_us, status = (int(x) for x in farm.stdout.readline().split())
            assert got == pid and os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
            truth[pid] = cpu_us
        farm.stdin.close()
        farm.wait()
    rows = np.concatenate([iv.tasks for iv in ivs])
    where = np.repeat(np.arange(len(ivs)), [len(iv.tasks) for iv in ivs])
    ours = np.isin(rows["ac_pid"], pids) & (rows["ac_ppid"] == farm.pid)
    rows, where = rows[ours], where[ours]
    context = [_interval_context(iv, rows[where == i]) for i, iv in enumerate(ivs)]
    # from the nearest look's start (on a loaded machine the looks and the kills run late)
    began = np.array(sorted(iv.end_ns for iv in ivs), np.int64)
    kills = np.array([killed_at[p] for _, p, _ in plan], np.int64)
    at = np.clip(np.searchsorted(began, kills), 1, len(began) - 1)
    nearest = np.where(kills - began[at - 1] < began[at] - kills, began[at - 1], began[at])
    offsets = (kills - nearest) / 1e6
    offset_of = {p: float(o) for (_, p, _), o in zip(plan, offsets)}
    return pids, truth, rows, where, offset_of, context, sum(iv.lost for iv in ivs)


def _interval_context(iv, rows) -> str:
    """What reconciliation had to go on in one interval: the farm's cgroup's cpu.stat usage,
    its exits and what their rows carry raw and reconciled."""
    exited = rows[(rows["state"] & EXITED) != 0]
    cgroup = int(rows["cgroup_id"][0]) if len(rows) else None
    usage = iv.cpu_stat_us.get(cgroup) if cgroup is not None else None
    return (f"cgroup {cgroup} cpu.stat {usage} us, {len(exited)} exits charged "
            f"{int(exited['cpu_ns'].sum()) // 1000} us (scheduler clock "
            f"{int(exited['cpu_run_real_total'].sum()) // 1000} us), lost {iv.lost}")


def _explain(pid, mine, where, offset_ms, context) -> str:
    """A process's rows interval by interval, raw beside reconciled: what a failure needs to
    say whether the look's cut or the exit's share of its cgroup went wrong."""
    out = [f"pid {pid}, killed {offset_ms:+.2f} ms from the nearest look:"]
    for row, i in zip(mine, where):
        out.append(f"  interval {i}: state {row['state']} flags {row['flags']:#x} cpu_ns "
                   f"{row['cpu_ns']} scheduler clock {row['cpu_run_real_total']} ticks "
                   f"{(int(row['ac_utime']) + int(row['ac_stime'])) * 1000} ns; {context[i]}")
    return "\n".join(out)


def _campaign(make_cgroup):
    charged, truth, offsets, runs, lost, explained = {}, {}, [], 0, 0, {}
    while len(charged) < 200 and runs < 4:
        # a fork storm elsewhere on the machine can overflow the sockets (lost > 0): a process
        # whose exit row is missing then may be among the lost and is not judged; the others are
        pids, wait4_us, rows, where, offset_of, context, run_lost = _run(make_cgroup())
        runs, lost = runs + 1, lost + run_lost
        offsets.extend(offset_of.values())
        for pid in pids:
            hit = rows["ac_pid"] == pid
            mine = rows[hit]
            n_exits = int(np.count_nonzero(mine["state"] & EXITED))
            assert n_exits <= 1, f"pid {pid} has {n_exits} exit rows"
            assert n_exits == 1 or run_lost, f"pid {pid} has no exit row and nothing was lost"
            if n_exits:
                key = (runs, pid)
                charged[key] = int(mine["cpu_ns"].sum()) // 1000
                truth[key] = wait4_us[pid]
                explained[key] = _explain(pid, mine, where[hit], offset_of[pid], context)
    ratios = np.array([charged[k] / truth[k] for k in charged])
    offsets = np.array(offsets)
    near = np.count_nonzero(np.abs(offsets) <= 5)
    print(f"kills around looks: {len(ratios)} processes judged in {runs} run(s) ({lost} exit "
          f"messages lost machine-wide), killed {offsets.min():+.1f}..{offsets.max():+.1f} ms "
          f"from the nearest look's start, {near} within 5 ms; charged/wait4 median {np.median(ratios):.3f}, range "
          f"{ratios.min():.3f}-{ratios.max():.3f}; never two exit rows")
    assert len(ratios) >= 200, "too few processes with their exit row in four runs"
    return {k: (charged[k], truth[k]) for k in charged}, explained


def test_kills_around_looks_are_charged_once(cgroup):
    # wait4's ru_utime + ru_stime of a reaped child is its scheduler clock at the end, exit path
    # included, to the microsecond: the exact figure for each process, compared as it is.  Each
    # one burnt 20 ms and then spent a few hundred us dying, so a process charged twice shows at
    # ~2x; that is checked first, on its own, and fails at once.
    pairs, explained = _campaign(cgroup)
    twice = {k: v for k, v in pairs.items() if v[0] >= 1.5 * v[1]}
    assert not twice, f"charged twice (us against wait4 us): {twice}\n" + "\n".join(
        explained[k] for k in twice)
    bad = {k: v for k, v in pairs.items() if not 0.9 <= v[0] / v[1] <= 1.1}
    assert not bad, f"charged (us) against wait4 (us), outside 0.9-1.1: {bad}\n" + "\n".join(
        explained[k] for k in bad)
