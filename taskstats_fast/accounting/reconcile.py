"""Reconciliation: exited tasks' CPU made to add up to what each cgroup's cpu.stat says.

Owns the per-cgroup correction of ``cpu_ns``.  A cgroup's ``cpu.stat`` ``usage_usec`` is exact:
the scheduler charges every task's runtime to it, including tasks born and dead between two
looks and the stretch after a task's exit record was built.  Its *own* usage over an interval
is its delta minus its child cgroups' deltas.  Live tasks' ``cpu_ns`` is the scheduler's clock
read at the looks, so it is exact too; an exited task's is an estimate that can only be low:
its exit record carries the clock as last updated (at the task's last tick, preemption or clock
read), so it misses the task's last stretch on the CPU, its exit path up to the record included,
and whatever the exit path did after the record.

What live tasks and the estimates leave of the cgroup's own usage is therefore what the exits
missed, and it is shared out **per exit, in equal parts**, not in proportion to the estimates:
each exit misses one such stretch, whose size has nothing to do with how much CPU the task
used in the interval.  A sleeper killed between two looks has an estimate of about zero (its
clock last moved when it went to sleep) and misses its whole exit path; shared in proportion,
the exits of an interval all went to the one or two whose clock happened to move (preempted
during the exit under load, or queried by a look after their record), which were charged up to
15% over their ``wait4`` CPU.  Where live tasks and estimates together already exceed the
usage (a task moved in, or its start charged to the cgroup it was forked in), the estimates are
scaled down in proportion instead, never below zero.  Reconciled rows carry
``FLAG_RECONCILED``; the raw kernel fields (``ac_utime``, ``ac_stime``,
``cpu_run_virtual_total``) are left as they were.

Not reconciled, and why:
* the root cgroup: on cgroup v2 its ``cpu.stat`` is summed from the per-CPU tick counters
  (user, nice, system, irq, softirq), time that belongs to no task included, not from the
  scheduler's clock;
* a cgroup that lost a child cgroup during the interval: the child's usage up to its removal is
  unknown, so the parent's own usage is too;
* a cgroup whose live tasks already explain all of its usage (nothing is left to share), and
  shares that are implausible for what an exit can miss (tasks moved between cgroups, or exit
  messages were lost: the estimates are then the better figure): more than ``MAX_EXIT_SHARE_NS``
  per exit and more than ``MAX_FACTOR - 1`` times the estimates, or a scale-down below
  ``1 / MAX_FACTOR``.
"""

from __future__ import annotations

from typing import Dict

import numpy as np

from .cgroupfs import CgroupLook
from .interval import EXITED, FLAG_RECONCILED

__all__ = ["own_usage_delta", "reconcile", "MAX_FACTOR", "MAX_EXIT_SHARE_NS"]

#: The largest factor the estimates may be scaled down by (its inverse), and, less one, the
#: largest multiple of them the exits may be given on top when that exceeds the per-exit bound.
MAX_FACTOR = 16.0
#: The most one exit is believed to miss: a scheduler tick of CPU at the slowest tick rate
#: (HZ=100) before the exit record, its clock not updated meanwhile, plus room for the exit path.
MAX_EXIT_SHARE_NS = 20_000_000


def own_usage_delta(start: CgroupLook, end: CgroupLook) -> Dict[int, int]:
    """Each cgroup's own ``usage_usec`` over the interval (its delta minus its children's), for
    the cgroups whose own usage is known (see the module docstring)."""
    if not start.usage_us or not end.usage_us:
        return {}
    delta = {c: u - start.usage_us.get(c, 0) for c, u in end.usage_us.items()
             if c in start.usage_us or c not in start.paths}    # new cgroups started at 0
    spoiled = {start.parent_of.get(c) for c in start.paths if c not in end.paths}
    own = {c: d for c, d in delta.items() if c in end.parent_of and c not in spoiled}
    for child, parent in end.parent_of.items():
        if parent in own:
            if child not in delta:
                del own[parent]            # a child whose usage went unread: unknown
            else:
                own[parent] -= delta[child]
    return own


def reconcile(rows: np.ndarray, start: CgroupLook, end: CgroupLook) -> Dict[int, int]:
    """Correct the exited rows' ``cpu_ns`` per cgroup (see the module docstring), in place;
    returns each cgroup's own usage delta (µs) where it is known."""
    own = own_usage_delta(start, end)
    if not own or not len(rows):
        return own
    exited = (rows["state"] & EXITED) != 0
    if not exited.any():               # live rows are exact: nothing to correct
        return own
    ids = np.array(sorted(own), np.uint64)
    own_ns = np.array([own[int(c)] for c in ids], np.float64) * 1000
    cg = rows["cgroup_id"]
    at = np.searchsorted(ids, cg)
    at[at == len(ids)] = 0
    hit = ids[at] == cg
    cpu = rows["cpu_ns"].astype(np.float64)
    live = np.bincount(at[hit & ~exited], weights=cpu[hit & ~exited], minlength=len(ids))
    mine = hit & exited
    estimated = np.bincount(at[mine], weights=cpu[mine], minlength=len(ids))
    exits = np.bincount(at[mine], minlength=len(ids))
    unexplained = own_ns - live                 # what the exits used, by the cgroup's count
    missed = unexplained - estimated            # what their records did not see
    with np.errstate(divide="ignore", invalid="ignore"):
        per_exit = missed / exits
        factor = unexplained / estimated
    add = (exits > 0) & (missed >= 0) & \
        ((per_exit <= MAX_EXIT_SHARE_NS) | (missed <= (MAX_FACTOR - 1) * estimated))
    shrink = (estimated > 0) & (missed < 0) & (factor >= 1 / MAX_FACTOR)
    pick = np.flatnonzero(mine & (add | shrink)[at])
    if len(pick):
        step, scale = np.where(add, per_exit, 0.0), np.where(shrink, factor, 1.0)
        fixed = cpu[pick] * scale[at[pick]] + step[at[pick]]
        rows["cpu_ns"][pick] = np.rint(fixed).astype(np.uint64)
        rows["flags"][pick] |= FLAG_RECONCILED
    return own
