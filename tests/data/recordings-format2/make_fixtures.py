"""Writes the format-version-2 recording fixtures in this directory (run once, with the code of
commit 780a064, the last to write format version 2).

Format version 2 is what main wrote before the one naming table: exit recordings with
nanosecond timestamps, and accounting-interval recordings whose columns carried the raw field
names (``ac_utime``, ``cpu_delay_total``, ``ac_btime64`` as a number, no cgroup path).
tests/test_read_records.py reads them with today's code.  Never regenerate them with a newer
version — that would test nothing.  Made by::

    git worktree add /tmp/f2 780a064 && cp <built>/_tsf_cffi.abi3.so /tmp/f2/taskstats_fast/
    cd /tmp/f2 && PYTHONPATH=$PWD python3 <this file>

The exit records are the 0.1.0 fixtures' ``records.npy``; the interval rows are three
synthetic intervals by task and by process; ``expected-intervals-task.npy`` and
``expected-intervals-process.npy`` are those rows saved with ``np.save`` (the expected values,
in the row dtype format version 2 had).
"""

from __future__ import annotations

import os

import numpy as np

import taskstats_fast as tsf
from taskstats_fast import recording
from taskstats_fast.accounting.interval import Interval
from taskstats_fast.recording import intervals

HERE = os.path.dirname(os.path.abspath(__file__))
T0 = 1_795_706_400_000_000_000

assert recording.FORMAT_VERSION == 2, "format-2 fixtures must be written by format-2 code"


def synthetic(k: int) -> Interval:
    return Interval.from_arrays(T0 + k * 10**9, T0 + (k + 1) * 10**9, {
        "ac_pid": [10, 11, 20], "ac_tgid": [10, 10, 20], "ac_ppid": [1, 1, 1],
        "ac_comm": [b"web", b"web", b"db"], "ac_btime64": [1_795_706_000, 1_795_706_000, 1_795_706_100],
        "cgroup_id": [7, 7, 9], "cpu_ns": [5_000 + k, 6_000, 2**40], "ac_utime": [1, 2, 3],
        "ac_stime": [4, 5, 6], "cpu_delay_total": [100, 0, 300], "read_char": [4096, 0, 1],
        "state": [0, 1, 3], "ac_exitcode": [0, 0, 3 << 8], "hiwater_rss": [10, 20, 30]},
        cgroups={7: "/system.slice/web.service", 9: "/db"})


def main() -> None:
    records = np.load(os.path.join(HERE, "..", "recordings-0.1.0", "records.npy"))
    for fmt in recording.FORMATS:
        recording.write_file(os.path.join(HERE, f"exits.{fmt}"), records, metadata={"fixture": fmt})
    for by in intervals.BY:
        rows = np.concatenate([intervals.interval_rows(synthetic(k), by) for k in range(3)])
        np.save(os.path.join(HERE, f"expected-intervals-{by}.npy"), rows)
        for fmt in recording.FORMATS:
            with recording.FileSink(os.path.join(HERE, f"intervals-{by}.{fmt}"), fmt,
                                    schema=intervals.interval_schema(by)) as sink:
                for k in range(3):
                    sink.write(intervals.interval_rows(synthetic(k), by))
    print("wrote", sorted(os.listdir(HERE)), tsf.__version__)


if __name__ == "__main__":
    main()
