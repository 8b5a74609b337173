"""Reading the exit stream: the C drain into one preallocated record array, handed out as
batches to blocking reads (with a timeout), iteration and asyncio.

One C call (``Drain.run``) waits on every socket, receives in batches with ``recvmmsg`` and
decodes straight into the record array, with the GIL released; it returns when at least one
record is in and, after a short linger that lets a burst queue up, whatever else has arrived.
Memory is fixed at construction.
"""

from __future__ import annotations

import asyncio
import math
import os
import select
import threading
import time
from typing import AsyncIterator, Iterator, List, Optional, Sequence

import numpy as np

from .. import layout
from .._native import Drain
from ..errors import ReplyTimeoutError
from .lifetime import Lifetime

__all__ = ["RecordReader", "SIGNAL_CHECK_MS", "DEFAULT_BATCH", "DEFAULT_LINGER"]

#: Records one ``read`` can return (the preallocated record array: 4096 x 712 B = 2.9 MB).
DEFAULT_BATCH = 4096
#: Seconds ``read`` keeps gathering after the first record (sleeping, so a burst costs one wake-up
#: instead of one per message).  Adds at most this much latency.
DEFAULT_LINGER = 0.005
#: Longest a read waits inside one C call before Python checks for signals (milliseconds).
SIGNAL_CHECK_MS = 200

def empty() -> np.ndarray:
    """A fresh empty batch.  Built over a buffer: numpy's own allocation or copy of a
    structured dtype walks its 95 fields and costs ~40x more, on every empty read."""
    return np.ndarray((0,), layout.DTYPE, bytearray())


class RecordReader:
    """The record array, the drain calls that fill it, and every way of reading it.

    ``read`` returns None once the listener is closing; the listener turns that into its public
    behaviour.  ``keep(room)`` makes the next discards keep up to ``room`` rows (for ``stop()``)."""

    def __init__(self, drain: Drain, fds: Sequence[int], lifetime: Lifetime, *,
                 batch_size: int = DEFAULT_BATCH, linger: float = DEFAULT_LINGER):
        if batch_size < 2:
            raise ValueError("batch_size must be at least 2 (a message may carry two records)")
        if not 0 <= linger <= 60:
            raise ValueError("linger is in seconds, between 0 and 60")
        self.batch_size = int(batch_size)
        self.linger = float(linger)
        self._drain_obj = drain
        self._res = drain.last
        self._res_c = drain.result
        self._linger_ms = int(self.linger * 1000)
        self._lifetime = lifetime
        # reentrant: a signal handler that calls close() runs inside read(), on the same thread
        self.read_lock = threading.RLock()
        self._waiters: set = set()   # (loop, future) of async iterators waiting for data
        self._records = np.zeros(self.batch_size, layout.DTYPE)
        self._record_bytes = self._records.view(np.uint8)
        self._receive = drain.receiver(self._records)
        self._rows_of, self._receive_fresh = drain.fresh_receiver()
        # read(copy=True) allocates batch_size rows per read and shrinks them to what came.  An
        # allocation that large is mapped afresh per call (faulting in every page it decodes
        # into) until the C library has seen one that size freed: that is this one.
        primer = np.empty(self.batch_size * layout.DTYPE.itemsize, np.uint8)
        del primer
        self._flight_raw: Optional[np.ndarray] = None   # the fresh buffer of a call in flight
        self._head = 0               # rows [head, filled) are decoded and not yet delivered
        self._filled = 0
        self._in_flight = False      # a drain call whose result is not yet accounted
        self._flight_base = 0        # _filled when that call started
        self.delivered = 0
        self.discarded = 0
        self._kept: Optional[List[np.ndarray]] = None   # stop() collects here instead of discarding
        self._keep_room = 0
        self._epoll: Optional[select.epoll] = select.epoll(len(fds) + 1)
        for fd in list(fds) + [lifetime.wake_r]:
            self._epoll.register(fd, select.EPOLLIN)

    # -- the C call --------------------------------------------------------------------------
    def _settle(self) -> None:
        """Account for a drain call that an exception (KeyboardInterrupt) cut off before its
        records were counted: they stay for the next read instead of being lost."""
        if self._in_flight:
            raw = self._flight_raw
            if raw is not None:      # decoded into a fresh buffer: its rows become pending
                n = self._res.records * layout.DTYPE.itemsize
                self._record_bytes[:n] = raw[:n]
                self._flight_raw = None
            self._filled = self._flight_base + self._res.records   # idempotent
            self._in_flight = False

    def _drain(self, timeout_ms: int, capacity: int, linger_ms: int) -> None:
        self._flight_base = self._filled
        self._in_flight = True
        n = self._receive(self._filled, capacity, timeout_ms, linger_ms)
        # a signal handler may raise right after the call: _settle() then does this later
        if n < 0:
            self._in_flight = False
            raise RuntimeError(f"tsf_drain: C error {n}")
        self._filled = self._flight_base + n
        self._in_flight = False

    # -- reading -----------------------------------------------------------------------------
    def holds_records(self) -> bool:
        """Whether records were received into the record array and not yet handed out."""
        return self._in_flight or self._head < self._filled

    def fileno(self) -> int:
        if self._epoll is None:
            raise ValueError("the listener is closed")
        return self._epoll.fileno()

    def read(self, timeout: Optional[float], max_records: Optional[int],
             copy: bool) -> Optional[np.ndarray]:
        """The next batch, an empty one when ``timeout`` passed, None once closing.

        Written for the reader that wakes every few milliseconds: by then the CPU's caches hold
        other work, and each Python call, property or C field access costs a miss of its own, so
        the common path (nothing pending, one C call, records) makes one C call and few others."""
        if max_records is None:
            limit = self.batch_size
        else:
            limit = int(max_records)
            if limit < 1:
                raise ValueError("max_records must be at least 1")
            limit = min(limit, self.batch_size)
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        life = self._lifetime
        res = self._res_c
        with self.read_lock:
            while True:
                if life.closed or life.closing:
                    return None
                if self._in_flight:
                    self._settle()
                if self._head < self._filled:
                    return self._deliver(limit, copy)
                self._head = self._filled = 0
                # Never wait in C for long: a signal that lands between Python's last check and
                # poll() does not interrupt poll, so its handler (KeyboardInterrupt) would wait
                # for the next exit on a quiet machine.  Coming back every slice runs it.
                if deadline is None:
                    timeout_ms = SIGNAL_CHECK_MS
                else:
                    left = deadline - time.monotonic()
                    timeout_ms = (SIGNAL_CHECK_MS if left * 1000 >= SIGNAL_CHECK_MS
                                  else max(0, math.ceil(left * 1000)))
                self._flight_base = 0
                linger_ms = self._linger_ms if timeout_ms else 0
                if copy and limit > 1:
                    # decode straight into the array the caller keeps: no copy of the batch
                    fresh = self._read_fresh(limit, timeout_ms, linger_ms)
                    if fresh is not None:
                        return fresh
                else:
                    self._in_flight = True
                    n = self._receive(0, limit if limit > 1 else 2, timeout_ms, linger_ms)
                    if n < 0:
                        self._in_flight = False
                        raise RuntimeError(f"tsf_drain: C error {n}")
                    # a signal handler may raise right after the call: _settle() then does this
                    self._filled = n
                    self._in_flight = False
                if res.error:
                    raise OSError(res.error, f"receiving exit records: {os.strerror(res.error)}")
                if self._filled:
                    continue
                if res.woken:
                    return None
                if res.timed_out and (deadline is not None and time.monotonic() >= deadline):
                    return empty()
                # interrupted by a signal: looping back runs its handler (KeyboardInterrupt
                # propagates from here, with nothing lost); otherwise wait on

    def _read_fresh(self, limit: int, timeout_ms: int, linger_ms: int) -> Optional[np.ndarray]:
        """One drain into a new buffer of ``limit`` rows, cut to the rows received and returned
        as the batch; None when there is none to return now (nothing came, an error, a close):
        then whatever came is pending in the record array, as after any other drain."""
        size = layout.DTYPE.itemsize
        raw = np.empty(limit * size, np.uint8)
        rows = self._rows_of(raw)
        self._flight_raw = raw
        self._in_flight = True
        # until the batch is made, a signal handler that raises leaves the rows to _settle()
        n = self._receive_fresh(rows, limit, 0, limit, timeout_ms, linger_ms)
        del rows                     # no pointer into raw may outlive its resize
        res = self._res_c
        if n <= 0 or res.error or res.woken or self._lifetime.closing:
            if n < 0:
                self._flight_raw = None
                self._in_flight = False
                raise RuntimeError(f"tsf_drain: C error {n}")
            self._settle()           # what came is pending, as after any other drain
            return None
        raw.resize(n * size, refcheck=False)     # realloc shrinks in place: the rows stay put
        batch = np.ndarray((n,), layout.DTYPE, raw)
        self.delivered += n
        self._flight_raw = None
        self._in_flight = False
        return batch

    def batches(self, timeout: Optional[float]) -> Iterator[np.ndarray]:
        """Batches until closing; with a ``timeout``, an empty batch each time it passes quietly."""
        while True:
            batch = self.read(timeout, None, True)
            if batch is None:
                return
            if len(batch) or timeout is not None:
                yield batch

    async def abatches(self, max_records: Optional[int]) -> AsyncIterator[np.ndarray]:
        """Batches on the running event loop until closing: waits with ``loop.add_reader`` on the
        epoll fd and never blocks the loop; lingers with ``asyncio.sleep`` like ``read`` does."""
        loop = asyncio.get_running_loop()
        life = self._lifetime
        if life.closing or life.closed:
            return
        # our own handle on the epoll instance: close() may close the reader's meanwhile
        fd = os.dup(self.fileno())
        try:
            while True:
                batch = self.read(0, max_records, True)
                if batch is None:
                    return
                if len(batch):
                    yield batch
                    continue
                ready = loop.create_future()
                waiter = (loop, ready)
                self._waiters.add(waiter)
                loop.add_reader(fd, _resolve, ready)
                try:
                    if not life.closing:   # wake_async() resolves waiters it sees; check after adding
                        await ready
                finally:
                    loop.remove_reader(fd)
                    self._waiters.discard(waiter)
                if self.linger and not life.closing:
                    await asyncio.sleep(self.linger)
        finally:
            os.close(fd)

    def wake_async(self) -> None:
        """End the waits of async iterators (from any thread)."""
        for loop, fut in list(self._waiters):
            try:
                loop.call_soon_threadsafe(_resolve, fut)
            except RuntimeError:               # that loop is closed
                pass

    def _deliver(self, limit: int, copy: bool) -> np.ndarray:
        n = min(limit, self._filled - self._head)
        if copy:
            # copy the bytes, not the records: numpy copies a structured dtype with holes field
            # by field but raw bytes at memcpy speed
            # and wrap them with the constructor: .view(DTYPE) revalidates every field per call
            size = layout.DTYPE.itemsize
            raw = self._record_bytes[self._head * size:(self._head + n) * size].copy()
            rows = np.ndarray((n,), layout.DTYPE, raw)
        else:
            rows = self._records[self._head:self._head + n]
        self._head += n
        self.delivered += n
        return rows

    # -- what registration and closing need ---------------------------------------------------
    def receive_notes(self, timeout_ms: int, registering: bool) -> np.ndarray:
        """One drain for a (de)registration: waits up to ``timeout_ms``, returns the notes (ACKs,
        errors).  Exit records that came with them stay for reading when registering, and are
        discarded (counted) when deregistering."""
        free = self.batch_size - self._filled
        if free < 2:
            if registering:
                raise ReplyTimeoutError("the exit stream filled the record array before the "
                                        "kernel acknowledged the registration")
            self.discard_pending()
            free = self.batch_size
        self._drain(timeout_ms, free, 0)
        if self._res.error:
            raise OSError(self._res.error, "receiving from a listener socket: "
                                           f"{os.strerror(self._res.error)}")
        notes = self._drain_obj.notes()
        if not registering:
            self.discard_pending()
        return notes

    def keep(self, room: int) -> List[np.ndarray]:
        """From now on, discarding keeps up to ``room`` rows in the returned list instead."""
        self._kept, self._keep_room = [], room
        return self._kept

    def stop_keeping(self) -> None:
        self._kept, self._keep_room = None, 0

    def discard_pending(self) -> None:
        """Drop the decoded, undelivered rows (counting them as discarded), or keep them (see
        ``keep``) up to its bound."""
        self._settle()
        if self._kept is not None and self._keep_room and self._head < self._filled:
            rows = self._deliver(self._keep_room, copy=True)
            self._kept.append(rows)
            self._keep_room -= len(rows)
        self.discarded += self._filled - self._head
        self._head = self._filled = 0

    def drain_everything(self) -> None:
        """Empty every socket (discarding what was in them) so the kernel has room for the
        deregistration ACK and the congestion flag is cleared."""
        for _ in range(1024):   # bounded: a flood of exits could keep the sockets busy forever
            self._drain(0, self.batch_size, 0)
            full = self._res.records >= self.batch_size - 1
            self.discard_pending()
            if not full or self._res.error:
                return              # the record space did not fill: every socket ran empty

    def after_fork_in_child(self) -> None:
        self.read_lock = threading.RLock()
        self._waiters = set()

    def close(self) -> None:
        if self._epoll is not None:
            self._epoll.close()
            self._epoll = None


def _resolve(fut: "asyncio.Future") -> None:
    if not fut.done():
        fut.set_result(None)
