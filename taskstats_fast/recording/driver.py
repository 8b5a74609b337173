"""``record()``: drive an exit listener into a sink until told to stop.

This is the recording loop of ``taskstats-fast record`` as a library function: read batches
from the listener, hand them to the sink (an empty batch when nothing arrived, so time-driven
sinks can rotate), keep the sink's copy of the listener's loss counters current, and at the end
``listener.stop()`` (which deregisters and returns every record still queued) so that every
record received lands in the sink.  The caller owns the listener and the sink's construction;
``record`` closes the sink.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Union

from ..errors import WriteFailedError
from ..sink import CountingSink, Sink, SinkStats

__all__ = ["record", "RecordResult", "Stop", "stop_check", "not_written_error"]

#: When to stop: a ``threading.Event`` (set it), a callable returning True, or a deadline on
#: the ``time.monotonic()`` clock; None runs until the listener is closed or KeyboardInterrupt.
Stop = Union[threading.Event, Callable[[], bool], float, None]

#: How often the loop looks at ``stop`` and hands the sink a tick while no record arrives.
POLL_SECONDS = 0.25
#: How often the sink's copy of the listener's loss counters is refreshed.
COUNTERS_SECONDS = 1.0


@dataclass(frozen=True)
class RecordResult:
    """What a recording did, for the caller to print.  Also what ``progress`` receives.

    ``received``: records the listener delivered (all handed to the sink); ``sink``: the
    sink's ``SinkStats`` (``sink.lost`` counts records received but not written);
    ``kernel_lost``: exit messages the kernel dropped or truncated (``listener.stats().lost``);
    ``discarded``: records that arrived while closing; ``elapsed``: seconds from start to the
    stop; ``stopped_by``: what ended it ("stop", "deadline", "error" or "interrupt");
    ``listener``: the listener's last stats.
    """

    received: int
    sink: SinkStats
    kernel_lost: int
    discarded: int
    elapsed: float
    stopped_by: str
    listener: Any = None

    @property
    def not_written(self) -> int:
        """Records received but not written (the sink lost them: a full disk)."""
        return self.sink.lost


def stop_check(stop: Stop) -> Callable[[], Optional[str]]:
    """``stop`` as a function returning why to stop ("stop", "deadline") or None."""
    if stop is None:
        return lambda: None
    if isinstance(stop, threading.Event):
        return lambda: "stop" if stop.is_set() else None
    if callable(stop):
        return lambda: "stop" if stop() else None
    deadline = float(stop)
    return lambda: "deadline" if time.monotonic() >= deadline else None


def _loss_counters(stats: Any) -> Dict[str, int]:
    return {"received": stats.received, "lost": stats.lost, "dropped": stats.dropped,
            "truncated": stats.truncated, "overruns": stats.overruns,
            "discarded": stats.discarded}


def not_written_error(failure: WriteFailedError, result: Any, sink: SinkStats,
                      handed: str) -> WriteFailedError:
    """``failure`` (a sink that could not write) again with the exact counts: how many of what
    was ``handed`` to the sink were not written and how many are in complete files; the
    recording's ``result`` rides along as ``error.result``."""
    error = WriteFailedError(
        failure.errno or 0,
        f"{failure.strerror}: {sink.lost:,} of the {handed} were not written; "
        f"{sink.written:,} are in {len(sink.files)} complete file(s)",
        not_written=sink.lost)
    error.result = result  # type: ignore[attr-defined]
    return error


def record(listener: Any, sink: Sink, stop: Stop = None, *,
           progress: Optional[Callable[[RecordResult], None]] = None,
           progress_seconds: float = 0.5) -> RecordResult:
    """Drive ``listener`` (an ``ExitListener``: ``read``, ``stop``, ``stats``) into ``sink``
    until ``stop`` says so, then stop the listener, hand the sink every record still queued,
    close the sink and return a ``RecordResult``.

    ``progress(result_so_far)`` is called every ``progress_seconds`` (for a status line).
    When the sink cannot write (``WriteFailedError``, e.g. a full disk), the recording stops:
    the records still queued go to the sink too (which counts them as not written), the sink is
    closed, and a ``WriteFailedError`` is raised whose message says how many records received
    were not written (``not_written``; the result is its ``result``).  KeyboardInterrupt also
    stops cleanly, and is raised again after the sink is closed; so is any other error of the
    listener or the sink.
    """
    should_stop = stop_check(stop)
    counting = isinstance(sink, CountingSink)
    started = time.monotonic()
    received = 0
    stopped_by: Optional[str] = None
    failure: Optional[WriteFailedError] = None
    interrupted: Optional[BaseException] = None   # raised again once the sink is closed
    next_counters = started + COUNTERS_SECONDS
    next_progress = started + min(progress_seconds, 1.0)
    deadline = None if stop is None or isinstance(stop, threading.Event) or callable(stop) \
        else float(stop)

    def result(now: float, reason: str) -> RecordResult:
        stats = listener.stats
        return RecordResult(received=received, sink=sink.stats(), kernel_lost=stats.lost,
                            discarded=stats.discarded, elapsed=now - started, stopped_by=reason,
                            listener=stats)

    try:
        while stopped_by is None:
            now = time.monotonic()
            stopped_by = should_stop()
            if stopped_by is not None:
                break
            wait = POLL_SECONDS if deadline is None else max(0.0, min(POLL_SECONDS, deadline - now))
            batch = listener.read(timeout=wait)   # a fresh array: handed over without a copy
            received += len(batch)
            sink.write(batch)
            now = time.monotonic()
            if counting and now >= next_counters:
                sink.update_counters(_loss_counters(listener.stats))  # type: ignore[attr-defined]
                next_counters = now + COUNTERS_SECONDS
            if progress is not None and now >= next_progress:
                progress(result(now, "running"))
                next_progress = now + progress_seconds
    except WriteFailedError as e:
        failure, stopped_by = e, "error"
    except (KeyboardInterrupt, Exception) as e:   # stop and close all the same, then re-raise
        interrupted, stopped_by = e, "interrupt" if isinstance(e, KeyboardInterrupt) else "error"
    stopped = time.monotonic()
    # stop() deregisters and hands back everything still queued on the sockets, including
    # exits that raced the deregistration: they go to the sink like the rest.
    tail = listener.stop()
    received += len(tail)
    for step in (lambda: sink.write(tail),
                 lambda: counting and sink.update_counters(  # type: ignore[attr-defined]
                     _loss_counters(listener.stats)),
                 sink.close):
        try:
            step()
        except WriteFailedError as e:
            failure = failure or e
    final = result(stopped, stopped_by or "stop")
    if failure is not None:
        raise not_written_error(failure, final, final.sink, f"{received:,} records received") \
            from failure
    if interrupted is not None:
        raise interrupted
    return final
