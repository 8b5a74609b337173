"""The standard ``process_*`` metrics of the exporting process itself, read from /proc/self.

The names, units and meanings are those every Prometheus client library exports (see
prometheus_client's ProcessCollector), so the usual exporter dashboards and alerts work on
``serve``: CPU seconds, resident and virtual memory, open and maximum file descriptors, start time.
"""

from __future__ import annotations

import os
import resource
import time
from typing import List, Optional, Tuple

__all__ = ["process_samples"]

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")
_boot_time: Optional[float] = None


def _booted_at() -> float:
    global _boot_time
    if _boot_time is None:
        with open("/proc/stat", "rb") as f:
            for line in f:
                if line.startswith(b"btime "):
                    _boot_time = float(line.split()[1])
                    break
            else:
                _boot_time = 0.0
    return _boot_time


def process_samples(proc: str = "/proc/self") -> List[Tuple[str, str, str, float]]:
    """``(name, type, help, value)`` of each process metric; a figure /proc does not give is left out."""
    out: List[Tuple[str, str, str, float]] = [
        ("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.",
         time.process_time()),
    ]
    try:
        with open(f"{proc}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        # fields[0] is the state (field 3 of proc(5)): field k is fields[k - 3]
        out += [
            ("process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.",
             _booted_at() + int(fields[19]) / _TICKS),
            ("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", float(fields[20])),
            ("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.",
             float(int(fields[21]) * _PAGE)),
        ]
    except (OSError, IndexError, ValueError):
        pass
    try:
        out.append(("process_open_fds", "gauge", "Number of open file descriptors.",
                    float(len(os.listdir(f"{proc}/fd")))))
    except OSError:
        pass
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY:
        out.append(("process_max_fds", "gauge", "Maximum number of open file descriptors.", float(soft)))
    return out
