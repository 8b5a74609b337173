"""Reconciliation: exited tasks' CPU made to add up to what each cgroup's cpu.stat says.

Owns the per-cgroup correction of ``cpu_ns``.  A cgroup's ``cpu.stat`` ``usage_usec`` is exact:
the scheduler charges every task's runtime to it, including tasks born and dead between two
looks and the stretch after a task's exit record was built.  Its *own* usage over an interval
is its delta minus its child cgroups' deltas.  Live tasks' ``cpu_ns`` is the scheduler's clock
read at the looks, so it is exact too; an exited task's is an estimate (an exit record's clock
stops early, its ticks are samples).  So the exited tasks of a cgroup share what its live tasks
do not explain, in proportion to their estimates, and are flagged ``FLAG_RECONCILED``; the raw
kernel fields (``ac_utime``, ``ac_stime``, ``cpu_run_virtual_total``) are left as they were.

Not reconciled, and why:
* the root cgroup: on cgroup v2 its ``cpu.stat`` is summed from the per-CPU tick counters
  (user, nice, system, irq, softirq), time that belongs to no task included, not from the
  scheduler's clock;
* a cgroup that lost a child cgroup during the interval: the child's usage up to its removal is
  unknown, so the parent's own usage is too;
* a cgroup whose live tasks already explain all of its usage (nothing is left to share), or
  where the share would scale the estimates by more than ``MAX_FACTOR`` (tasks moved between
  cgroups, or exit messages were lost: the estimates are then the better figure).
"""

from __future__ import annotations

from typing import Dict

import numpy as np

from .cgroupfs import CgroupLook
from .interval import EXITED, FLAG_RECONCILED

__all__ = ["own_usage_delta", "reconcile", "MAX_FACTOR"]

#: The largest factor (and the inverse of the smallest) the share may scale estimates by.
MAX_FACTOR = 16.0


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
    """Scale the exited rows' ``cpu_ns`` per cgroup (see the module docstring), in place;
    returns each cgroup's own usage delta (µs) where it is known."""
    own = own_usage_delta(start, end)
    if not own or not len(rows):
        return own
    ids = np.array(sorted(own), np.uint64)
    own_ns = np.array([own[int(c)] for c in ids], np.float64) * 1000
    cg = rows["cgroup_id"]
    at = np.searchsorted(ids, cg)
    at[at == len(ids)] = 0
    hit = ids[at] == cg
    exited = (rows["state"] & EXITED) != 0
    cpu = rows["cpu_ns"].astype(np.float64)
    live = np.bincount(at[hit & ~exited], weights=cpu[hit & ~exited], minlength=len(ids))
    estimated = np.bincount(at[hit & exited], weights=cpu[hit & exited], minlength=len(ids))
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = (own_ns - live) / estimated
    usable = (estimated > 0) & (factor >= 1 / MAX_FACTOR) & (factor <= MAX_FACTOR)
    pick = np.flatnonzero(hit & exited & usable[at])
    if len(pick):
        rows["cpu_ns"][pick] = np.rint(cpu[pick] * factor[at[pick]]).astype(np.uint64)
        rows["flags"][pick] |= FLAG_RECONCILED
    return own
