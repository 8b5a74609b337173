"""Writes the PSI recording fixtures in this directory (run once, with the code of the commit
that added recorded PSI, format version 3; never regenerate them with a newer version: that
would test nothing).

``psi.<ext>``: three synthetic intervals' PSI rows (``recording/psi_rows.py``) in every format;
``usage/``: an interval dataset as ``record --interval`` leaves it, its interval rows under
``host=fixture/date=…/`` and its PSI rows under ``_psi/host=fixture/date=…/`` (Parquet);
``expected-psi.npy``: the PSI rows written, saved with ``np.save`` (the expected values, in the
row dtype of this version).  tests/test_record_psi.py reads them with today's code.  Made by::

    PYTHONPATH=$PWD python tests/data/psi-format3/make_fixtures.py
"""

from __future__ import annotations

import os

import numpy as np

import taskstats_fast as tsf
from taskstats_fast import recording
from taskstats_fast.accounting.interval import PSI_DTYPE, Interval, Pressure
from taskstats_fast.recording import interval_rows as intervals
from taskstats_fast.recording.psi_rows import psi_path, psi_rows, psi_schema

HERE = os.path.dirname(os.path.abspath(__file__))
T0 = 1_795_706_400_000_000_000

assert recording.FORMAT_VERSION == 3, "these fixtures are of format version 3"


def synthetic(k: int) -> Interval:
    system = np.zeros(1, PSI_DTYPE)[0]
    for i, name in enumerate(n for n in PSI_DTYPE.names if n != "cgroup_id"):
        system[name] = 1_000 * (i + 1) + k
    cgroups = np.zeros(3, PSI_DTYPE)
    cgroups["cgroup_id"] = [1, 7, 9]
    cgroups["cpu_some_us"] = [0, 400_000 + k, 2**40]
    cgroups["memory_full_us"] = [0, 0, 250_000]
    return Interval.from_arrays(T0 + k * 10**9, T0 + (k + 1) * 10**9, {
        "ac_pid": [10, 20], "ac_tgid": [10, 20], "ac_comm": [b"web", b"db"],
        "ac_btime64": [1_795_706_000, 1_795_706_100], "cgroup_id": [7, 9],
        "cpu_ns": [5_000 + k, 6_000]},
        cgroups={1: "/", 7: "/system.slice/web.service", 9: "/db"},
        psi=Pressure(system, cgroups, ("cpu", "io", "memory")))


def main() -> None:
    rows = np.concatenate([psi_rows(synthetic(k)) for k in range(3)])
    np.save(os.path.join(HERE, "expected-psi.npy"), rows)
    for fmt in recording.FORMATS:
        with recording.FileSink(os.path.join(HERE, f"psi{recording.EXTENSIONS[fmt]}"), fmt,
                                schema=psi_schema(), hostname="fixture") as sink:
            for k in range(3):
                sink.write(psi_rows(synthetic(k)))
    usage = os.path.join(HERE, "usage")
    with recording.FileSink(usage, "parquet", schema=intervals.interval_schema("task"),
                            hostname="fixture") as task_rows, \
            recording.FileSink(psi_path(usage), "parquet", schema=psi_schema(),
                               hostname="fixture") as psi:
        for k in range(3):
            task_rows.write(intervals.interval_rows(synthetic(k)))
            psi.write(psi_rows(synthetic(k)))
    print("wrote", sorted(os.listdir(HERE)), tsf.__version__)


if __name__ == "__main__":
    main()
