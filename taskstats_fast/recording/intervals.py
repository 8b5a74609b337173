"""``record_intervals()``: the recording loop (``driver.drive``) over an ``Accounting``, one
batch of interval rows (``interval_rows``) per interval, until told to stop.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, Mapping, Optional

import numpy as np

from ..sink import Sink
from .driver import RecordResult, Stop, drive
from .interval_rows import interval_rows, row_dtype

__all__ = ["record_intervals", "IntervalRecordResult"]

#: What ``record_intervals`` returns: a ``RecordResult`` whose ``intervals`` and ``rows`` count
#: what went to the sink and whose ``lost`` sums the exit messages the kernel dropped.
IntervalRecordResult = RecordResult

_SLICE = 0.1   # how often the wait for an interval's end looks at ``stop``


class _IntervalSource:
    """An ``Accounting`` as a ``BatchSource``: ``read`` waits (in slices) for the end of the
    interval and returns its rows; ``finish`` closes the interval in progress early when the
    recording was stopped during it, so that the recording covers the whole time it ran."""

    noun = "interval rows"
    poll_seconds = _SLICE

    def __init__(self, accounting: Any, by: str):
        row_dtype(by)   # refuse a bad ``by`` before opening anything
        self.accounting, self.by = accounting, by
        self.intervals = self.lost = 0
        accounting.open()
        self.next_end = time.monotonic() + accounting.interval
        self.in_progress = False   # waited since the last interval was closed

    def read(self, timeout: float) -> Optional[np.ndarray]:
        now = time.monotonic()
        if now < self.next_end:
            time.sleep(max(0.0, min(timeout, self.next_end - now)))
            self.in_progress = True
            if time.monotonic() < self.next_end:
                return None
        rows = self._close()
        self.next_end = max(self.next_end + self.accounting.interval, time.monotonic())
        return rows

    def _close(self) -> np.ndarray:
        iv = self.accounting.next(deadline=time.monotonic())
        self.intervals, self.lost = self.intervals + 1, self.lost + iv.lost
        self.in_progress = False
        return interval_rows(iv, self.by)

    def finish(self, stopped_by: str) -> Optional[np.ndarray]:
        # after an error or an interrupt the accounting's state is not known: nothing more
        if self.in_progress and stopped_by in ("stop", "deadline"):
            return self._close()
        return None

    def counters(self) -> Mapping[str, int]:
        return {"lost": self.lost}

    def outcome(self) -> Dict[str, Any]:
        return {"kernel_lost": self.lost, "intervals": self.intervals}


def record_intervals(accounting: Any, sink: Sink, stop: Stop = None, *, by: str = "task",
                     progress: Optional[Callable[[RecordResult], None]] = None,
                     progress_seconds: float = 0.5) -> RecordResult:
    """Drive ``accounting`` (an ``Accounting``) into ``sink`` (e.g. ``FileSink(path,
    schema=interval_schema(by))``): every ``accounting.interval`` seconds the interval's rows
    (``interval_rows(iv, by)``) go to the sink, until ``stop`` (as for ``record()``) says so;
    then the interval in progress is closed early and written too, so the recording covers the
    whole time it ran.  Closes the sink (not the accounting).  ``progress(result_so_far)`` is
    called every ``progress_seconds``; a full disk, an error or KeyboardInterrupt are handled
    as by ``record()`` (``drive``).
    """
    return drive(_IntervalSource(accounting, by), sink, stop, progress=progress,
                 progress_seconds=progress_seconds)
