"""The system lines of ``top``'s header: tasks by state and load, CPU modes (total or per CPU),
memory and swap, in procps top's layout so an eye used to top finds each figure where it looks.

``SystemHeader`` keeps the previous ``SystemSample`` so each interval's CPU modes are the ticks
between two reads of /proc/stat (taken when an interval is shown, so they span the same time as
the interval within one look's duration).  ``system_lines`` is a pure function of two samples and
the interval, so tests feed it samples from a fake /proc tree.
"""

from __future__ import annotations

import dataclasses
from typing import List, Optional

import numpy as np

from ..accounting import interval as _iv
from .procfs import CPU_MODES, ProcFS, SystemSample

__all__ = ["SystemHeader", "SystemView", "system_lines", "cpu_percentages", "TOP_CPU_ORDER"]

#: The order and labels of top's %Cpu line (us sy ni id wa hi si st).
TOP_CPU_ORDER = (("user", "us"), ("system", "sy"), ("nice", "ni"), ("idle", "id"),
                 ("iowait", "wa"), ("irq", "hi"), ("softirq", "si"), ("steal", "st"))


@dataclasses.dataclass(frozen=True)
class SystemView:
    """The two samples an interval's system lines are made of (``before`` None: only ``now``,
    so the CPU modes are averages since boot, as top's first screen shows them)."""

    before: Optional[SystemSample]
    now: SystemSample


class SystemHeader:
    """Samples the system files once per interval shown and pairs each with the previous one."""

    def __init__(self, procfs: Optional[ProcFS] = None):
        self.procfs = procfs or ProcFS()
        self._last: Optional[SystemSample] = self.procfs.system()

    def advance(self) -> SystemView:
        """A new sample, with the one before it."""
        now = self.procfs.system()
        view = SystemView(self._last, now)
        self._last = now
        return view


def cpu_percentages(view: SystemView) -> np.ndarray:
    """float64 ``[1 + cpus, len(CPU_MODES)]``: % of each CPU's ticks spent in each mode between
    the two samples (row 0: all CPUs).  A CPU whose counters did not move shows all zeros."""
    now = view.now.cpu
    if view.before is not None and view.before.cpu.shape == now.shape:
        ticks = np.maximum(now - view.before.cpu, 0)
    else:
        ticks = now
    total = ticks.sum(axis=1, keepdims=True).astype(np.float64)
    return np.divide(ticks * 100.0, total, out=np.zeros(ticks.shape), where=total > 0)


def _cpu_line(label: str, pct: np.ndarray) -> str:
    cells = [f"{pct[CPU_MODES.index(mode)]:5.1f} {short}" for mode, short in TOP_CPU_ORDER]
    return f"{label}:" + ",".join(cells)


def _mib(kb: int) -> str:
    return f"{kb / 1024:9.1f}"


def _memory_lines(memory) -> List[str]:
    total, free = memory.get("MemTotal", 0), memory.get("MemFree", 0)
    available = memory.get("MemAvailable", free)
    cache = memory.get("Buffers", 0) + memory.get("Cached", 0) + memory.get("SReclaimable", 0)
    swap_total, swap_free = memory.get("SwapTotal", 0), memory.get("SwapFree", 0)
    return [f"MiB Mem : {_mib(total)} total, {_mib(free)} free, {_mib(total - available)} used, "
            f"{_mib(cache)} buff/cache",
            f"MiB Swap: {_mib(swap_total)} total, {_mib(swap_free)} free, "
            f"{_mib(swap_total - swap_free)} used. {_mib(available)} avail Mem"]


def _tasks_line(interval, view: SystemView) -> str:
    tasks = interval.tasks
    alive = tasks[(tasks["state"] & _iv.EXITED) == 0]
    processes = len(np.unique(alive["ac_tgid"])) if len(alive) else 0
    running, blocked = view.now.running, view.now.blocked
    sleeping = max(len(alive) - running - blocked, 0)
    load = " ".join(f"{v:.2f}" for v in view.now.load)
    # htop's shape: processes, then threads; the states are threads (the kernel counts those)
    return (f"Tasks: {processes}, {len(alive)} thr; {running} running, {blocked} blocked, "
            f"{sleeping} sleeping  load {load}")


def system_lines(interval, view: SystemView, *, per_cpu: bool = False) -> List[str]:
    """Tasks and load, CPU modes (one line, or one per CPU), memory and swap."""
    pct = cpu_percentages(view)
    if per_cpu and len(pct) > 1:
        width = len(str(len(pct) - 2))
        cpus = [_cpu_line(f"%Cpu{i:<{width}} ", row) for i, row in enumerate(pct[1:])]
    else:
        cpus = [_cpu_line("%Cpu(s)", pct[0])]
    return [_tasks_line(interval, view), *cpus, *_memory_lines(view.now.memory)]
