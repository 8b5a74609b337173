"""The accounting exit reader: a thread that empties the exit listener's sockets when work is
due, and hands everything received up to a cut to the interval being closed.

Owns the wake-up schedule.  The reader does not wait inside ``read`` on a timer: it sleeps on a
pipe of its own (``stop`` writes to it) and wakes for one of two reasons:

* exits arrive after a quiet spell: the listener's fd turns readable with the first one; the
  reader then lets the burst gather for ``FIRST_GATHER`` seconds and empties the sockets;
* while exits keep coming: when the fullest socket may be a quarter full at the rate seen in the
  last stretch (``FILL_TARGET`` of the smallest socket's room), never later than ``MAX_SLEEP``.

An interval's end (``cut``) wakes nobody: the caller's thread empties the sockets itself, after
any read the reader thread has begun (one lock covers a read and the hand-over of its batch), so
everything received before the call is in the cut, once.  A stretch that brought nothing sends
the reader back to waiting on readiness, so an idle interval costs no wake-up at all, and a
steady trickle a handful per interval, however many exits it brings.  ``MAX_SLEEP`` bounds how
far a storm that starts during a long sleep can fill a socket: Accounting's sockets hold
``4 * DEFAULT_EVENTS_PER_CPU`` messages, and one CPU cannot produce them that fast.

``clock`` and ``wait`` are seams for tests: ``wait(fds, timeout)`` returns whether any of ``fds``
became readable (``timeout`` None: no limit); a wait that returns False drains nothing from the
wake-up pipe.
"""

from __future__ import annotations

import os
import select
import threading
import time
from typing import Callable, List, Optional, Sequence

import numpy as np

__all__ = ["ExitReader", "FILL_TARGET", "MAX_SLEEP", "FIRST_GATHER"]

#: Read when the fullest socket may hold this fraction of its room, at the rate seen.
FILL_TARGET = 0.25
#: Longest sleep while exits keep coming (s): a storm starting meanwhile fills at most this much.
MAX_SLEEP = 0.25
#: How long the first exits after a quiet spell gather before they are read (s).
FIRST_GATHER = 0.02
# Shortest sleep: at any rate, one read per this long empties the sockets.
_MIN_SLEEP = 0.001


def poll_wait(fds: Sequence[int], timeout: Optional[float]) -> bool:
    """Wait until one of ``fds`` is readable or ``timeout`` (s) passes; True if one is."""
    return _PollWait()(fds, timeout)


class _PollWait:
    """``poll_wait`` with one poll object per set of fds, made once: the reader waits on the
    same two sets for its whole life."""

    def __init__(self):
        self._pollers: dict = {}

    def __call__(self, fds: Sequence[int], timeout: Optional[float]) -> bool:
        key = tuple(fds)
        poller = self._pollers.get(key)
        if poller is None:
            poller = self._pollers[key] = select.poll()
            for fd in fds:
                poller.register(fd, select.POLLIN)
        return bool(poller.poll(None if timeout is None else max(0, int(timeout * 1000 + 0.999))))


class ExitReader:
    """Reads ``listener`` on a thread of its own (a look or a merge never leaves the sockets
    unread: at full fork rate their buffers fill within a look).  ``cut()`` returns everything
    received up to the call, leaving nothing behind that was in the sockets then.

    ``room``: exit messages the smallest socket's receive buffer holds."""

    def __init__(self, listener, room: int, *, clock: Callable[[], float] = time.monotonic,
                 wait: Optional[Callable[[Sequence[int], Optional[float]], bool]] = None):
        self._listener = listener
        self._room = max(1, int(room))
        self._clock = clock
        self._wait = wait if wait is not None else _PollWait()
        self._lock = threading.Lock()        # a read and the hand-over of its batch
        self._batches: List[np.ndarray] = []
        self._stopping = False
        self._error: Optional[BaseException] = None
        #: times the thread woke (for tests and benches)
        self.wakeups = 0
        #: records read so far
        self.records = 0
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._listener_fd = listener.fileno()
        self._dry_below = max(1, listener.batch_size // 2)
        self._thread = threading.Thread(target=self._run, name="taskstats_fast accounting reader",
                                        daemon=True)
        self._thread.start()

    @property
    def native_id(self) -> Optional[int]:
        """The reader thread's kernel thread id (``/proc/self/task/ID``)."""
        return self._thread.native_id

    # -- the thread --------------------------------------------------------------------------
    def _run(self) -> None:
        clock = self._clock
        quiet = True
        since = clock()
        rate = 0.0
        try:
            while not self._stopping:
                if quiet:
                    self._sleep([self._wake_r, self._listener_fd], None)
                    since = clock()
                    if not self._stopping:
                        self._sleep([self._wake_r], FIRST_GATHER)
                else:
                    self._sleep([self._wake_r], self._next_sleep(rate))
                if self._stopping:
                    break
                with self._lock:
                    got = self._read_all()
                now = clock()
                rate = got / max(now - since, _MIN_SLEEP)
                since = now
                quiet = got == 0
        except BaseException as e:   # surfaces in cut(); a closed listener ends the thread
            if not self._stopping:
                self._error = e

    def _next_sleep(self, rate: float) -> float:
        """Until the fullest socket may be FILL_TARGET full, if all ``rate`` went to it."""
        if rate <= 0:
            return MAX_SLEEP
        return min(MAX_SLEEP, max(_MIN_SLEEP, FILL_TARGET * self._room / rate))

    def _sleep(self, fds: Sequence[int], timeout: Optional[float]) -> None:
        if self._stopping:
            return
        readable = self._wait(fds, timeout)
        self.wakeups += 1
        if not readable:        # a timer's wake-up: nothing to drain from the pipe (and no
            return              # BlockingIOError raised and caught on every one)
        try:
            while os.read(self._wake_r, 64):
                pass
        except BlockingIOError:
            pass

    def _read_all(self) -> int:
        """Everything the sockets hold now, into the batches (under ``_lock``)."""
        got = 0
        while True:
            batch = self._listener.read(timeout=0)
            got += len(batch)
            if len(batch):
                self._batches.append(batch)
            # one read empties every socket unless the record array filled: a batch well short
            # of it means they ran dry, and a second read would only find that out again
            if len(batch) < self._dry_below:
                break
        self.records += got
        return got

    def _poke(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:      # the pipe is full: the reader has wake-ups pending anyway
            pass

    # -- the caller's side -------------------------------------------------------------------
    def cut(self) -> List[np.ndarray]:
        """The batches received so far, including all the sockets hold at this call (read here,
        in the caller's thread, once a read the reader thread began has handed its batch over)."""
        if self._error is not None:
            raise self._error
        with self._lock:
            self._read_all()
            out, self._batches = self._batches, []
        return out

    def stop(self) -> None:
        self._stopping = True
        self._poke()
        self._thread.join()
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)
