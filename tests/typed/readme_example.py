"""The README's Python API as a typed program would use it, checked by mypy in CI
(pyproject.toml [tool.mypy] files; tests/test_static.py): every name the README shows keeps a real
type (a DataFrame, an ndarray, an Interval), not ``Any``.  ``assert_type`` pins each one, and
``warn_return_any`` for this module fails a function whose annotated result came out as ``Any``.
tests/test_static.py also runs ``read_back`` on the shipped 0.1.0 dataset, so the types are the
ones the calls return."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Dict, List, Optional

import numpy as np
import pandas as pd

import taskstats_fast as tsf
import taskstats_fast.accounting
from taskstats_fast import recording
from taskstats_fast.accounting.interval import Interval

if TYPE_CHECKING:
    from typing_extensions import assert_type


def read_back(dataset: str) -> pd.DataFrame:
    """Reading recordings back: one DTYPE array, and the same rows as pandas with ``host``."""
    records: np.ndarray = tsf.read_records(dataset)
    carried: np.ndarray = tsf.carried(records, "irq_count")
    assert len(carried) == len(records)
    frame = tsf.read_frame(dataset)
    return frame


def exits_as_tables(batch: np.ndarray) -> pd.DataFrame:
    """The exit stream and pandas: a DTYPE batch under the one naming table."""
    return tsf.to_pandas(batch)


def per_cgroup(acct: tsf.Accounting) -> Dict[str, float]:
    """Interval accounting: one Interval, its rows summed per cgroup, as pandas and as numpy."""
    iv: Interval = acct.next()
    table = iv.by("cgroup", frame=True)
    rows = iv.by("cgroup", frame=False)
    tasks = iv.frame()
    pressure: Optional[np.void] = iv.psi.of(0)
    assert pressure is None or pressure.dtype.names
    assert len(rows) == len(table) and len(tasks) == len(iv.tasks)
    return {str(path): float(cpu) for path, cpu in zip(table["cgroup"], table["cpu_ns"])}


def record_a_while(directory: str, seconds: float) -> int:
    """Recording from Python: the file sink behind a background writer."""
    with tsf.ExitListener() as listener:
        sink = recording.BackgroundWriter(recording.FileSink(directory, rotate_seconds=3600))
        result = recording.record(listener, sink, stop=time.monotonic() + seconds)
    received: int = result.received
    return received


if TYPE_CHECKING:
    def _pinned(dataset: str, acct: tsf.Accounting, iv: Interval) -> None:
        assert_type(tsf.read_frame(dataset), pd.DataFrame)
        assert_type(tsf.read_records(dataset), np.ndarray)
        assert_type(tsf.to_pandas(tsf.read_records(dataset)), pd.DataFrame)
        assert_type(iv.by("process", frame=True), pd.DataFrame)
        assert_type(iv.by("process", frame=False), np.ndarray)
        assert_type(iv.frame(), pd.DataFrame)
        assert_type(acct.next(), Interval)
        # the same class reached through the subpackage (a lazy name there too), not Any
        assert_type(taskstats_fast.accounting.Accounting(interval=1.0), tsf.Accounting)
        assert_type(taskstats_fast.accounting.Accounting(interval=1.0).next(), Interval)
        assert_type(next(iter(acct)), Interval)
        assert_type(iv.tasks, np.ndarray)


def main(argv: List[str]) -> int:
    frame = read_back(argv[1])
    print(len(frame), sorted({str(h) for h in frame["host"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
