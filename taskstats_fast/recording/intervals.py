"""``record_intervals()``: the recording loop (``driver.drive``) over an ``Accounting``, one
batch of interval rows (``interval_rows``) per interval, until told to stop; and, given a
second sink, each interval's pressure stalls (``psi_rows``) into it.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, Mapping, Optional

import numpy as np

from ..errors import WriteFailedError
from ..sink import Sink
from .driver import RecordResult, Stop, drive, not_written_error
from .interval_rows import interval_rows, row_dtype
from .psi_rows import psi_rows

__all__ = ["record_intervals", "IntervalRecordResult"]

#: What ``record_intervals`` returns: a ``RecordResult`` whose ``intervals`` and ``rows`` count
#: what went to the sink and whose ``lost`` sums the exit messages the kernel dropped.
IntervalRecordResult = RecordResult

_SLICE = 0.1   # how often the wait for an interval's end looks at ``stop``


class _IntervalSource:
    """An ``Accounting`` as a ``BatchSource``: ``read`` waits (in slices) for the end of the
    interval and returns its rows; ``finish`` closes the interval in progress early when the
    recording was stopped during it, so that the recording covers the whole time it ran.  Each
    interval's PSI rows go to ``psi`` (a sink of ``psi_schema()`` rows) as it closes."""

    noun = "interval rows"
    poll_seconds = _SLICE

    def __init__(self, accounting: Any, by: str, psi: Optional[Sink] = None):
        row_dtype(by)   # refuse a bad ``by`` before opening anything
        self.accounting, self.by, self.psi = accounting, by, psi
        self.intervals = self.lost = self.psi_rows = 0
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
        if self.psi is not None:
            self._write_psi(psi_rows(iv))
        return interval_rows(iv, self.by)

    def _write_psi(self, rows: np.ndarray) -> None:
        """``rows`` to the PSI sink; a failure stops the recording (``drive``) with a message
        that says how many PSI rows were not written, beside the interval rows' counts."""
        assert self.psi is not None
        self.psi_rows += len(rows)
        try:
            self.psi.write(rows)
        except WriteFailedError as e:
            stats = self.psi.stats()
            raise WriteFailedError(e.errno or 0, f"{e.strerror} ({stats.lost:,} of the "
                                   f"{self.psi_rows:,} PSI rows were not written)",
                                   not_written=stats.lost) from e

    def close_psi(self, result: Optional[RecordResult]) -> None:
        """Close the PSI sink.  After the recording (``result``) a failure is raised with the
        exact counts; after an error (None) it is dropped: that error is the one raised."""
        if self.psi is None:
            return
        try:
            self.psi.close()
        except WriteFailedError as e:
            if result is not None:
                raise not_written_error(e, result, self.psi.stats(),
                                        f"{self.psi_rows:,} PSI rows") from e
        except Exception:
            if result is not None:
                raise

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
                     progress_seconds: float = 0.5, psi: Optional[Sink] = None) -> RecordResult:
    """Drive ``accounting`` (an ``Accounting``) into ``sink`` (e.g. ``FileSink(path,
    schema=interval_schema(by))``): every ``accounting.interval`` seconds the interval's rows
    (``interval_rows(iv, by)``) go to the sink, until ``stop`` (as for ``record()``) says so;
    then the interval in progress is closed early and written too, so the recording covers the
    whole time it ran.  Closes the sink (not the accounting).  ``progress(result_so_far)`` is
    called every ``progress_seconds``; a full disk, an error or KeyboardInterrupt are handled
    as by ``record()`` (``drive``).  ``psi``: a sink of ``psi_schema()`` rows (e.g.
    ``FileSink(psi_path(DIR), schema=psi_schema())``) that gets each interval's ``psi_rows(iv)``
    and is closed after ``sink`` (its ``stats()`` count what it wrote and lost).
    """
    source = _IntervalSource(accounting, by, psi)
    try:
        result = drive(source, sink, stop, progress=progress, progress_seconds=progress_seconds)
    except BaseException:
        source.close_psi(None)
        raise
    source.close_psi(result)
    return result
