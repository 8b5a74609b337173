"""Records built for tests, with known values: exit records of every struct version
(``exact_records``), runs of PID records (``batch``) and interval rows of each kind
(``interval_batch``: by task or process, or PSI rows)."""

from __future__ import annotations

import numpy as np

import taskstats_fast as tsf
from taskstats_fast import layout
from taskstats_fast.recording import interval_schema, psi_schema

from wire import aggr, sample_values, stats, taskstats_msg

BTIME = 1_795_706_314


def exact_records():
    """One record of every struct version 4..17 with distinct non-zero values in every field it
    carries (as the kernel would fill them: ac_btime is ac_btime64 clamped to 32 bits, a
    timespec's nanoseconds are below 1e9), a TGID record, a newer-than-known version, a u64
    counter above 2**63, a UTF-8 command name, and receive times with nanoseconds."""
    msgs = []
    for i, version in enumerate(range(layout.MIN_VERSION, layout.MAX_VERSION + 1)):
        values = sample_values(version, seed=i + 1)
        values["ac_comm"] = f"t{version}-ünï".encode()
        if "ac_btime" in values:
            values["ac_btime"] = BTIME + i
        if "ac_btime64" in values:
            values["ac_btime64"] = BTIME + i
        for name in list(values):
            if name.endswith("_delay_max_ts_sec"):
                values[name] = BTIME + 100 + i
            elif name.endswith("_delay_max_ts_nsec"):
                values[name] = 123_456_789 - i
        msgs.append(taskstats_msg(aggr(1 + i % 2, 100 + i, stats(version, values)), seq=i))
    msgs.append(taskstats_msg(aggr(1, 999, stats(21, {"ac_utime": (1 << 64) - 5,
                                                      "ac_btime": BTIME, "ac_btime64": BTIME},
                                                 layout_version=17)), seq=77))
    records = tsf.decode(b"".join(msgs)).copy()
    records["time_ns"] = 1_795_706_400_123_456_789 + np.arange(len(records)) * 1_001
    records["shard"] = np.arange(len(records))
    return records


def batch(n, *, start=0, comm=b"job", version=16, time_ns=1_800_000_000_000_000_000):
    """``n`` PID records with pids start..start+n-1, distinct utimes, received at ``time_ns``+i."""
    msgs = b"".join(taskstats_msg(aggr(1, start + i, stats(version, {
        "ac_pid": start + i, "ac_comm": comm, "ac_utime": 10 * (start + i),
        "ac_exitcode": (start + i) % 256 << 8})), seq=start + i) for i in range(n))
    recs = tsf.decode(msgs).copy()
    recs["time_ns"] = time_ns + np.arange(n)
    return recs


def row_schema(kind):
    """The schema of a kind of rows: "exits" (None: DTYPE records), "task", "process", "psi"."""
    if kind == "exits":
        return None
    return psi_schema() if kind == "psi" else interval_schema(kind)


def interval_batch(n, by="task", start=0):
    """``n`` rows of one interval of a kind ("task", "process" or "psi"), keyed start..start+n-1."""
    rows = np.zeros(n, row_schema(by).dtype)
    rows["interval_start"] = 1_800_000_000_000_000_000 + start
    rows["interval_end"] = rows["interval_start"] + 10**9
    rows[interval_key(by)] = np.arange(start, start + n)
    return rows


def interval_key(kind):
    return {"process": "ac_tgid", "psi": "cgroup_id"}.get(kind, "ac_pid")
