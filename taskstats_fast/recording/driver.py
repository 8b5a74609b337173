"""The recording loop, once: ``drive`` hands the batches of a ``BatchSource`` to a sink until
told to stop, and ``record()`` is it for an exit listener (``record_intervals`` in
``intervals`` is it for an ``Accounting``).

The loop reads batches from the source (an empty batch is a tick, so time-driven sinks can
rotate), keeps the sink's copy of the source's loss counters current, calls ``progress`` for a
status line, and at the end asks the source for what it still holds (``finish``: an exit
listener's queued records, an accounting's interval in progress) so that every row the source
produced lands in the sink.  Stopping, a full disk (the exact counts of what was not written),
an interrupt and any other error are handled here and nowhere else.  The caller owns the source
and the sink's construction; the loop closes the sink.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Deque, Dict, List, Mapping, Optional, Protocol, Union

import numpy as np

from .. import layout
from ..errors import WriteFailedError
from ..sink import CountingSink, Sink, SinkStats

__all__ = ["record", "drive", "BatchSource", "RecordResult", "Stop", "stop_check",
           "not_written_error", "ReadAhead"]

#: When to stop: a ``threading.Event`` (set it), a callable returning True, or a deadline on
#: the ``time.monotonic()`` clock; None runs until the listener is closed or KeyboardInterrupt.
Stop = Union[threading.Event, Callable[[], bool], float, None]

#: How often the loop looks at ``stop`` and hands the sink a tick while no record arrives.
POLL_SECONDS = 0.25
#: How often the sink's copy of the source's loss counters is refreshed.
COUNTERS_SECONDS = 1.0


@dataclass(frozen=True)
class RecordResult:
    """What a recording did, for the caller to print.  Also what ``progress`` receives.

    ``received``: rows the source delivered (all handed to the sink: exit records, or interval
    rows); ``sink``: the sink's ``SinkStats`` (``sink.lost`` counts rows received but not
    written); ``kernel_lost``: exit messages the kernel dropped or truncated (an exit stream:
    ``listener.stats().lost``; intervals: summed over them); ``discarded``: records that arrived
    while closing; ``elapsed``: seconds from start to the stop; ``stopped_by``: what ended it
    ("stop", "deadline", "error" or "interrupt"; "running" while in progress); ``listener``: the
    listener's last stats (exit streams); ``intervals``: intervals written (interval recordings).
    """

    received: int
    sink: SinkStats
    kernel_lost: int
    discarded: int
    elapsed: float
    stopped_by: str
    listener: Any = None
    intervals: int = 0

    @property
    def not_written(self) -> int:
        """Rows received but not written (the sink lost them: a full disk)."""
        return self.sink.lost

    @property
    def rows(self) -> int:
        """``received``, under the name interval recordings give it."""
        return self.received

    @property
    def lost(self) -> int:
        """``kernel_lost``, under the name interval recordings give it."""
        return self.kernel_lost


class BatchSource(Protocol):
    """What ``drive`` reads: batches of rows, loss counters, and what is left at the end."""

    #: what its rows are, for the full-disk message ("records received", "interval rows")
    noun: str
    #: the longest ``read`` may wait before the loop looks at ``stop`` again
    poll_seconds: float

    def read(self, timeout: float) -> Optional[np.ndarray]:
        """The next batch within ``timeout`` seconds: rows, an empty array (a tick for the
        sink) or None (nothing to hand over yet)."""

    def finish(self, stopped_by: str) -> Optional[np.ndarray]:
        """Stop, returning the rows still held (None: none) for the sink."""

    def counters(self) -> Mapping[str, int]:
        """The loss counters a ``CountingSink`` keeps (in each file's metadata)."""

    def outcome(self) -> Dict[str, Any]:
        """``RecordResult`` fields only the source knows (``kernel_lost``, ``discarded``, …)."""


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


def not_written_error(failure: WriteFailedError, result: Any, sink: SinkStats,
                      handed: str) -> WriteFailedError:
    """``failure`` (a sink that could not write) again with the exact counts: how many of what
    was ``handed`` to the sink were not written and how many are in complete files (and in
    files left unfinished, for the next start's recovery); the
    recording's ``result`` rides along as ``error.result``."""
    error = WriteFailedError(
        failure.errno or 0,
        f"{failure.strerror}: {sink.lost:,} of the {handed} were not written; "
        f"{sink.written - sink.unpublished:,} are in {len(sink.files)} complete file(s)"
        + (f" and {sink.unpublished:,} in file(s) left unfinished, read in place and published "
           "by the next record on this output" if sink.unpublished else ""),
        not_written=sink.lost)
    error.result = result  # type: ignore[attr-defined]
    return error


class _Run:
    """One run of the loop: what it counted, and when its counters and progress are due."""

    def __init__(self, source: BatchSource, sink: Sink, progress_seconds: float):
        self.source, self.sink = source, sink
        self.counting = isinstance(sink, CountingSink)
        self.started = time.monotonic()
        self.received = 0
        self.next_counters = self.started + COUNTERS_SECONDS
        self.next_progress = self.started + min(progress_seconds, 1.0)

    def hand(self, batch: Optional[np.ndarray]) -> None:
        """``batch`` to the sink (a fresh array: handed over without a copy)."""
        if batch is not None:
            self.received += len(batch)
            self.sink.write(batch)

    def update_counters(self) -> None:
        if self.counting:
            self.sink.update_counters(self.source.counters())  # type: ignore[attr-defined]

    def result(self, now: float, reason: str) -> RecordResult:
        return RecordResult(received=self.received, sink=self.sink.stats(),
                            elapsed=now - self.started, stopped_by=reason,
                            **{"kernel_lost": 0, "discarded": 0, **self.source.outcome()})


def drive(source: BatchSource, sink: Sink, stop: Stop = None, *,
          progress: Optional[Callable[[RecordResult], None]] = None,
          progress_seconds: float = 0.5) -> RecordResult:
    """Hand ``source``'s batches to ``sink`` until ``stop`` says so, then hand it what the
    source still holds (``finish``), close the sink and return a ``RecordResult``.

    ``progress(result_so_far)`` is called every ``progress_seconds`` (for a status line).
    When the sink cannot write (``WriteFailedError``, e.g. a full disk), the recording stops:
    what the source still holds goes to the sink too (which counts it as not written), the sink
    is closed, and a ``WriteFailedError`` is raised whose message says how many rows received
    were not written (``not_written``; the result is its ``result``).  KeyboardInterrupt also
    stops cleanly, and is raised again after the sink is closed; so is any other error of the
    source or the sink.
    """
    should_stop = stop_check(stop)
    deadline = None if stop is None or isinstance(stop, threading.Event) or callable(stop) \
        else float(stop)
    run = _Run(source, sink, progress_seconds)
    stopped_by: Optional[str] = None
    failure: Optional[WriteFailedError] = None
    interrupted: Optional[BaseException] = None   # raised again once the sink is closed
    try:
        while (stopped_by := should_stop()) is None:
            wait = source.poll_seconds if deadline is None else \
                max(0.0, min(source.poll_seconds, deadline - time.monotonic()))
            run.hand(source.read(wait))
            now = time.monotonic()
            if now >= run.next_counters:
                run.update_counters()
                run.next_counters = now + COUNTERS_SECONDS
            if progress is not None and now >= run.next_progress:
                progress(run.result(now, "running"))
                run.next_progress = now + progress_seconds
    except WriteFailedError as e:
        failure, stopped_by = e, "error"
    except (KeyboardInterrupt, Exception) as e:   # stop and close all the same, then re-raise
        interrupted, stopped_by = e, "interrupt" if isinstance(e, KeyboardInterrupt) else "error"
    stopped, reason = time.monotonic(), stopped_by or "stop"
    tail = source.finish(reason)
    for step in (lambda: run.hand(tail), run.update_counters, sink.close):
        try:
            step()
        except WriteFailedError as e:
            failure = failure or e
    final = run.result(stopped, reason)
    if failure is not None:
        raise not_written_error(failure, final, final.sink,
                                f"{run.received:,} {source.noun}") from failure
    if interrupted is not None:
        raise interrupted
    return final


def _loss_counters(stats: Any) -> Dict[str, int]:
    return {"received": stats.received, "lost": stats.lost, "dropped": stats.dropped,
            "truncated": stats.truncated, "overruns": stats.overruns,
            "discarded": stats.discarded}


class ReadAhead:
    """Reads an exit listener on a thread of its own and keeps what it read, until ``take``:
    for the time between the listener's registration and the recording loop's first read.
    Making the sink takes that time, and a restart's recovery of what a killed run left (its
    rows published again) takes seconds for a big file, while at a full exit rate the sockets
    hold a fraction of one: unread, they fill and the kernel drops the rest.  Keeps at most
    ``max_records`` (as many as a ``BackgroundWriter`` queues); past that it stops reading and
    the kernel drops and counts what does not fit in the sockets."""

    #: the longest ``take`` waits for a read in progress (it keeps what that read brings)
    READ_SECONDS = 0.05

    def __init__(self, listener: Any, max_records: int = 1 << 20):
        self.listener = listener
        self.max_records = max(1, int(max_records))
        self._batches: List[np.ndarray] = []
        self._records = 0
        self._error: Optional[BaseException] = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="taskstats-fast read-ahead",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set() and self._records < self.max_records:
                batch = self.listener.read(timeout=self.READ_SECONDS)
                if len(batch):
                    self._batches.append(batch)
                    self._records += len(batch)
        except BaseException as e:   # the loop's first read raises it, on its own thread
            self._error = e

    def take(self) -> List[np.ndarray]:
        """Stop reading; the batches read so far, in order (raises what stopped the reading:
        the listener's own error, which the recording loop's own read would have raised)."""
        self._stop.set()
        self._thread.join()
        batches, self._batches = self._batches, []
        error, self._error = self._error, None
        if error is not None:
            raise error
        return batches


class _ExitSource:
    """An ``ExitListener`` as a ``BatchSource``: ``finish`` is ``listener.stop()``, which
    deregisters and hands back everything still queued on the sockets, including exits that
    raced the deregistration.  With a ``ReadAhead``, what it read comes first."""

    noun = "records received"
    poll_seconds = POLL_SECONDS

    def __init__(self, listener: Any, ahead: Optional[ReadAhead] = None):
        self.listener = listener
        self._ahead = ahead
        self._held: Deque[np.ndarray] = collections.deque()

    def _take_ahead(self) -> None:
        """What the read-ahead read, held to come first (once: on the first read or finish)."""
        if self._ahead is not None:
            ahead, self._ahead = self._ahead, None
            self._held.extend(ahead.take())

    def read(self, timeout: float) -> Optional[np.ndarray]:
        self._take_ahead()
        if self._held:   # one batch a read, as they came: the writer joins them
            return self._held.popleft()
        return self.listener.read(timeout=timeout)   # a fresh array, empty when none arrived

    def finish(self, stopped_by: str) -> Optional[np.ndarray]:
        self._take_ahead()   # stopped before the first read
        rest = self.listener.stop()
        return _joined(list(self._held) + ([rest] if rest is not None and len(rest) else []))

    def counters(self) -> Mapping[str, int]:
        return _loss_counters(self.listener.stats)

    def outcome(self) -> Dict[str, Any]:
        stats = self.listener.stats
        return {"kernel_lost": stats.lost, "discarded": stats.discarded, "listener": stats}


def _joined(batches: List[np.ndarray]) -> Optional[np.ndarray]:
    if not batches:
        return None
    return batches[0] if len(batches) == 1 else layout.join_records(batches)


def record(listener: Any, sink: Sink, stop: Stop = None, *,
           progress: Optional[Callable[[RecordResult], None]] = None,
           progress_seconds: float = 0.5, ahead: Optional[ReadAhead] = None) -> RecordResult:
    """Drive ``listener`` (an ``ExitListener``: ``read``, ``stop``, ``stats``) into ``sink``
    until ``stop`` says so, then stop the listener, hand the sink every record still queued,
    close the sink and return a ``RecordResult`` (``drive``: progress, a full disk, errors).
    ``ahead``: a ``ReadAhead`` of ``listener`` started before the sink was made; its records
    come first."""
    return drive(_ExitSource(listener, ahead), sink, stop, progress=progress,
                 progress_seconds=progress_seconds)
