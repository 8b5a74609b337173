"""Intervals for the top view built from row dicts (``interval``, ``task``), and bursts of
short-lived commands (``burst``), over the cgroups of ``CGROUPS``."""

from __future__ import annotations

from taskstats_fast.accounting.interval import BORN, EXITED, Interval

SECOND = 1_000_000_000
START = 1_700_000_000 * SECOND
CGROUPS = {1: "/", 5: "/system.slice/ssh.service", 9: "/user.slice/session-1.scope"}


def interval(rows, *, seconds=1.0, **kw):
    """An Interval from a list of row dicts (missing fields are zero)."""
    names = sorted({k for r in rows for k in r})
    columns = {k: [r.get(k, 0) for r in rows] for k in names}
    kw.setdefault("cgroups", CGROUPS)
    return Interval.from_arrays(START, START + int(seconds * SECOND), columns, n=len(rows), **kw)


def task(pid, tgid=None, comm=b"sh", **fields):
    return {"ac_pid": pid, "ac_tgid": tgid or pid, "ac_comm": comm, **fields}


def burst(first_pid, count, comm=b"burstcmd", cgroup=9):
    """``count`` short-lived commands, each born and exited inside the interval."""
    return [task(first_pid + i, comm=comm, cpu_ns=4_000_000, state=BORN | EXITED, cgroup_id=cgroup)
            for i in range(count)]
