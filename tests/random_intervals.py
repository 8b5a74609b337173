"""Random intervals for the exporter and its server: every column the exporter reads, PSI for
each cgroup of ``CGROUPS``, reproducible from a numpy Generator."""

from __future__ import annotations

import numpy as np

from taskstats_fast.accounting.interval import BORN, DELAY_CLASSES, EXITED, PSI_DTYPE, Interval, Pressure

CGROUPS = {100: "/", 101: "/system.slice", 102: "/user.slice/user-0.slice", 103: "/system.slice"}


def random_interval(rng, n=300, comms=("sh", "ls", "make", "cc1", "python3"), index=0, lost=0):
    comm = rng.choice([c.encode() for c in comms], n)
    state = rng.choice([0, BORN, EXITED, BORN | EXITED], n)
    columns = {
        "ac_pid": rng.integers(1, 1 << 22, n), "ac_comm": comm, "state": state,
        "cgroup_id": rng.choice(list(CGROUPS) + [0, 999], n),
        "ac_utime": rng.integers(0, 50_000, n), "ac_stime": rng.integers(0, 20_000, n),
        "cpu_ns": rng.integers(0, 10**8, n),
        "read_bytes": rng.integers(0, 1 << 20, n), "write_bytes": rng.integers(0, 1 << 20, n),
    }
    for c in DELAY_CLASSES:
        columns[f"{c}_count"] = rng.integers(0, 100, n)
        columns[f"{c}_delay_total"] = rng.integers(0, 10**8, n)
    psi = Pressure(np.zeros(1, PSI_DTYPE)[0], np.zeros(len(CGROUPS), PSI_DTYPE), ("cpu", "io", "memory"))
    psi.cgroups["cgroup_id"] = list(CGROUPS)
    for field in PSI_DTYPE.names[1:]:
        psi.system[field] = rng.integers(0, 10**6)
        psi.cgroups[field] = rng.integers(0, 10**6, len(CGROUPS))
    return Interval.from_arrays(index * 10**9, (index + 1) * 10**9, columns, cgroups=CGROUPS, psi=psi,
                                lost=lost, delayacct=True, index=index)
