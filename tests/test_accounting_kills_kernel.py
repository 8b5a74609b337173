"""Identity across looks on the real kernel: processes SIGKILLed a few ms before, during and after
the looks, each charged its wait4 CPU once.

The issue this guards: a process killed 0-2 ms after a look began was charged its whole lifetime
a second time in about 7% of cases (its exit record arrived before the look's reply for it).
Here a farm process forks sleepers that each burn a known stretch of CPU first; the test kills
them at planned offsets around the looks (which it schedules itself with ``next(deadline=)``)
and the farm reaps them, reporting each one's ``ru_utime + ru_stime`` from ``wait4``.
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
from test_accounting_kernel import cgroup  # noqa: F401 (a fixture, used by name)

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
BURN_MS = 40


def _run(group):
    """One campaign: (pids, wait4 CPU per pid, the rows of the farm's children, kill offsets in
    ms from the looks, messages lost meanwhile)."""
    farm = group.popen([sys.executable, "-c", FARM, str(KILLS), str(BURN_MS)],
                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert farm.stdin is not None and farm.stdout is not None
    offsets_ms = np.linspace(-5.0, 5.0, PER_LOOK)
    with tsf.Accounting(interval=INTERVAL) as acct:
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
                killed_at[pid] = time.monotonic()
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
    rows = rows[np.isin(rows["ac_pid"], pids) & (rows["ac_ppid"] == farm.pid)]
    offsets = np.array([killed_at[p] - looks[k] for _, p, k in plan]) * 1000
    return pids, truth, rows, offsets, sum(iv.lost for iv in ivs)


def test_kills_around_looks_are_charged_once(cgroup):  # noqa: F811
    for attempt in range(3):  # noqa: B007 (reported)
        # a fork storm elsewhere on the machine can overflow the sockets; a run in which one of
        # our exits may be among the lost says nothing: run it again
        pids, truth, rows, offsets, lost = _run(cgroup())
        exits = {pid: 0 for pid in pids}
        for pid in rows["ac_pid"][(rows["state"] & EXITED) != 0]:
            exits[int(pid)] += 1
        if min(exits.values()) == 1 or not lost:
            break
    charged = {pid: 0 for pid in pids}
    for r in rows:
        charged[int(r["ac_pid"])] += int(r["cpu_ns"]) // 1000
    ratios = np.array([charged[p] / truth[p] for p in pids])
    print(f"kills around looks: {len(pids)} processes killed {offsets.min():+.1f}.."
          f"{offsets.max():+.1f} ms from the looks ({attempt + 1} run(s), {lost} lost "
          f"machine-wide); charged/wait4 median {np.median(ratios):.3f}, range "
          f"{ratios.min():.3f}-{ratios.max():.3f}; exit rows per process "
          f"{sorted(set(exits.values()))}")
    assert max(exits.values()) == 1, "a process with two exit rows"
    assert min(exits.values()) == 1, "a process with no exit row (lost in three runs)"
    bad = {p: (charged[p], truth[p]) for p, x in zip(pids, ratios) if not 0.9 <= x <= 1.1}
    assert not bad, f"charged (us) against wait4 (us), outside 0.9-1.1: {bad}"
