"""What ``top`` reads from procfs besides TASKSTATS: the system header's figures and the
per-process columns of the rows on screen.

One procfs root (as psutil has): every path is under ``ProcFS.root``, so tests point it at a fake
``/proc`` tree.  Reading is the only job here; percentages and layout are ``top.py``'s.  The
system side is a handful of small files per interval (``stat``, ``loadavg``, ``meminfo``); the
per-process side is read only for the rows shown, so its cost is bounded by the screen, not by
the number of tasks.  A task that exits between the interval and the read simply has no figures
(``None``), never an error.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Dict, Optional, Tuple

import numpy as np

__all__ = ["ProcFS", "SystemSample", "ProcessSample", "CPU_MODES"]

#: The modes of a ``cpu`` line of /proc/stat, in the kernel's order (guest time is already
#: inside user and nice, so it is left out, as top and node_exporter do).
CPU_MODES: Tuple[str, ...] = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


@dataclasses.dataclass(frozen=True)
class SystemSample:
    """One read of the system files.  ``cpu``: int64 ``[1 + cpus, len(CPU_MODES)]`` clock ticks
    since boot, row 0 the total; ``load``: 1, 5 and 15-minute load averages; ``memory``:
    /proc/meminfo in kB; ``running``/``blocked``: tasks runnable / in uninterruptible sleep now
    (procs_running, procs_blocked); ``uptime``: seconds since boot."""

    cpu: np.ndarray
    load: Tuple[float, float, float]
    memory: Dict[str, int]
    running: int
    blocked: int
    uptime: float


@dataclasses.dataclass(frozen=True)
class ProcessSample:
    """One process (or thread) from ``/proc/PID/stat`` and ``statm``: state letter, nice,
    CPU time (user + system) in seconds, resident set size in bytes."""

    state: str
    nice: int
    cpu_seconds: float
    rss_bytes: int


class ProcFS:
    """Reads under one procfs root (default ``/proc``)."""

    def __init__(self, root: str = "/proc"):
        self.root = root
        self.ticks_per_second = os.sysconf("SC_CLK_TCK")
        self.page_size = os.sysconf("SC_PAGE_SIZE")

    def _read(self, *parts: str) -> Optional[str]:
        try:
            with open(os.path.join(self.root, *parts), "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:     # gone (the task exited) or not there (no such file on this kernel)
            return None

    # -- the system ------------------------------------------------------------------------
    def system(self) -> SystemSample:
        """The header's figures, now."""
        stat = self._read("stat") or ""
        rows, running, blocked = [], 0, 0
        for line in stat.splitlines():
            name, _, rest = line.partition(" ")
            if name.startswith("cpu"):
                ticks = [int(v) for v in rest.split()[:len(CPU_MODES)]]
                rows.append(ticks + [0] * (len(CPU_MODES) - len(ticks)))
            elif name == "procs_running":
                running = int(rest)
            elif name == "procs_blocked":
                blocked = int(rest)
        cpu = np.array(rows or [[0] * len(CPU_MODES)], np.int64)
        load_fields = (self._read("loadavg") or "0 0 0").split()
        load = (float(load_fields[0]), float(load_fields[1]), float(load_fields[2]))
        uptime = float((self._read("uptime") or "0").split()[0])
        return SystemSample(cpu=cpu, load=load, memory=self.meminfo(), running=running,
                            blocked=blocked, uptime=uptime)

    def meminfo(self) -> Dict[str, int]:
        """/proc/meminfo as ``{name: kB}`` (counts without a unit, like HugePages_Total, as is)."""
        out: Dict[str, int] = {}
        for line in (self._read("meminfo") or "").splitlines():
            name, _, rest = line.partition(":")
            fields = rest.split()
            if fields and fields[0].isdigit():
                out[name.strip()] = int(fields[0])
        return out

    # -- the rows on screen ------------------------------------------------------------------
    def process(self, pid: int, tid: Optional[int] = None) -> Optional[ProcessSample]:
        """``pid``'s figures (or its thread ``tid``'s); None once it is gone."""
        base = (str(pid),) if tid is None else (str(pid), "task", str(tid))
        stat = self._read(*base, "stat")
        statm = self._read(*base, "statm")
        if stat is None or ")" not in stat:
            return None
        # the command name may hold spaces and parentheses: the fields start after the last ')'
        fields = stat[stat.rindex(")") + 2:].split()
        try:
            state, utime, stime, nice = fields[0], int(fields[11]), int(fields[12]), int(fields[16])
            rss_pages = int(statm.split()[1]) if statm else int(fields[21])
        except (IndexError, ValueError):
            return None
        return ProcessSample(state=state, nice=nice,
                             cpu_seconds=(utime + stime) / self.ticks_per_second,
                             rss_bytes=rss_pages * self.page_size)

    def cmdline(self, pid: int) -> Optional[str]:
        """``pid``'s command line, arguments joined by spaces; None when gone or empty (a
        kernel thread, or a zombie)."""
        text = self._read(str(pid), "cmdline")
        if not text:
            return None
        return " ".join(arg for arg in text.split("\0") if arg) or None
