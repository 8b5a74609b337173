"""``record_intervals()``: the loop that drives an ``Accounting`` into a sink, one batch of
interval rows (``interval_rows``) per interval, until told to stop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, NoReturn, Optional

from ..errors import WriteFailedError
from ..sink import CountingSink, Sink, SinkStats
from .driver import Stop, not_written_error, stop_check
from .interval_rows import interval_rows, row_dtype

__all__ = ["record_intervals", "IntervalRecordResult"]


@dataclass(frozen=True)
class IntervalRecordResult:
    """What ``record_intervals`` did: ``intervals`` and ``rows`` written to the sink, ``lost``
    (exit messages the kernel dropped, summed over the intervals), ``sink`` its last stats,
    ``elapsed`` seconds, ``stopped_by`` ("stop", "deadline", "interrupt" or "error")."""

    intervals: int
    rows: int
    lost: int
    sink: SinkStats
    elapsed: float
    stopped_by: str


_SLICE = 0.1   # how often the wait for an interval's end looks at ``stop``


def record_intervals(accounting: Any, sink: Sink, stop: Stop = None, *, by: str = "task",
                     progress: Optional[Callable[[IntervalRecordResult], None]] = None
                     ) -> IntervalRecordResult:
    """Drive ``accounting`` (an ``Accounting``) into ``sink`` (e.g. ``FileSink(path,
    schema=interval_schema(by))``): every ``accounting.interval`` seconds the interval's rows
    (``interval_rows(iv, by)``) go to the sink, until ``stop`` (as for ``record()``) says so;
    then the interval in progress is closed early and written too, so the recording covers the
    whole time it ran.  Closes the sink (not the accounting).  ``progress(result_so_far)`` is
    called after each interval.  An error (or KeyboardInterrupt) closes the sink and is raised.
    """
    row_dtype(by)   # refuse a bad ``by`` before opening anything
    should_stop = stop_check(stop)
    counting = isinstance(sink, CountingSink)
    accounting.open()
    started = now = time.monotonic()
    intervals = rows = lost = 0
    stopped_by: Optional[str] = None
    next_end = started + accounting.interval

    def result(reason: str) -> IntervalRecordResult:
        return IntervalRecordResult(intervals, rows, lost, sink.stats(),
                                    time.monotonic() - started, reason)

    try:
        while stopped_by is None:
            while (now := time.monotonic()) < next_end:
                stopped_by = should_stop()
                if stopped_by is not None:
                    break
                time.sleep(min(_SLICE, next_end - now))
            iv = accounting.next(deadline=now)
            batch = interval_rows(iv, by)
            intervals, rows, lost = intervals + 1, rows + len(batch), lost + iv.lost
            if counting:
                sink.update_counters({"lost": lost})  # type: ignore[attr-defined]
            sink.write(batch)
            next_end = max(next_end + accounting.interval, time.monotonic())
            if progress is not None:
                progress(result("running"))
            stopped_by = stopped_by or should_stop()
    except WriteFailedError as failure:   # a full disk: close, then say what was not written
        _close_after(sink, failure, result)
    except BaseException:
        sink.close()
        raise
    sink.close()
    return result(stopped_by)


def _close_after(sink: Sink, failure: WriteFailedError,
                 result: Callable[[str], IntervalRecordResult]) -> NoReturn:
    """Close ``sink`` after ``failure`` and raise it again with the exact counts."""
    try:
        sink.close()
    except WriteFailedError:
        pass
    final = result("error")
    handed = final.sink.written + final.sink.lost + final.sink.buffered
    raise not_written_error(failure, final, final.sink, f"{handed:,} interval rows") from failure
