"""The accounting exit reader: a thread that keeps the exit listener's sockets from filling, and
hands everything received up to a cut to the interval being closed.

Owns the wake-up schedule.  The reader does not wait inside ``read`` on a timer: it sleeps on a
pipe of its own (``stop`` writes to it) and wakes for one of two reasons:

* exits arrive after a quiet spell: the listener's fd turns readable with the first one; the
  reader lets the burst gather for ``FIRST_GATHER`` seconds to see its rate;
* while exits keep coming: when the fullest socket may be a quarter full (``FILL_TARGET`` of its
  receive buffer) at the rate it filled in the last stretch, never later than ``MAX_SLEEP``.

A wake-up reads nothing unless there is work: it asks the kernel how full each socket is (one
getsockopt each, ``ExitListener.fullest``) and empties them only when one holds ``DRAIN_AT`` of
its room, or when they were last emptied ``MAX_HOLD`` ago (so the kernel holds no more than that
much of a trickle, whatever the interval).  Otherwise the exits wait in the sockets for the
interval's end (``cut``), which the
caller's thread empties itself, after any read the reader thread has begun (one lock covers a
read and the hand-over of its batch), so everything received before the call is in the cut,
once.  A steady trickle so costs a handful of getsockopt wake-ups per interval and one drain at
its end, and a storm a drain per quarter of the room.  Sockets found empty send the reader back
to waiting on readiness, so an idle interval costs no wake-up at all.  ``MAX_SLEEP`` bounds how
far a storm that starts during a long sleep can fill a socket: Accounting's sockets hold
``4 * DEFAULT_EVENTS_PER_CPU`` messages, and one CPU cannot produce them that fast.

A listener that cannot tell how full its sockets are (``fullest()`` None) is emptied at every
wake-up instead, and its rate is taken from the records read against ``room``.

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

__all__ = ["ExitReader", "FILL_TARGET", "DRAIN_AT", "MAX_HOLD", "MAX_SLEEP", "FIRST_GATHER"]

#: Wake when the fullest socket may hold this share of its receive buffer, at the rate seen.
FILL_TARGET = 0.25
#: Empty the sockets at a wake-up when the fullest holds this share: half the target, so a
#: storm that starts right after a wake-up that left the sockets unread still finds them mostly
#: free.
DRAIN_AT = FILL_TARGET / 2
#: Longest the sockets go unemptied while exits keep coming (s): twice the default interval,
#: so at that interval the cut always comes first.
MAX_HOLD = 2.0
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

    ``room``: exit messages the smallest socket's receive buffer holds (the rate's measure for a
    listener whose ``fullest()`` is None)."""

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
        self._mark_at = (clock(), 0.0)      # (when, the fullest's share then): the rate's origin
        self._emptied_at = self._mark_at[0]  # when a read last left the sockets empty
        self._growth = (0.0, 0.0)           # (the fullest's share, its growth a second)
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
        try:
            while not self._stopping:
                if quiet:
                    self._sleep([self._wake_r, self._listener_fd], None)
                    self._mark(0.0)          # the sockets were empty until now
                    if not self._stopping:
                        self._sleep([self._wake_r], FIRST_GATHER)
                else:
                    self._sleep([self._wake_r], self._next_sleep(*self._growth))
                if self._stopping:
                    break
                quiet = self._check(clock())
        except BaseException as e:   # surfaces in cut(); a closed listener ends the thread
            if not self._stopping:
                self._error = e

    def _check(self, now: float) -> bool:
        """One wake-up's work: read the sockets if one holds DRAIN_AT of its room, they were
        emptied MAX_HOLD ago, or the listener cannot tell; and update the rate.  True when they
        were found empty."""
        since, filled = self._mark_at
        fill = self._listener.fullest()
        if fill is not None and fill < DRAIN_AT and now - self._emptied_at < MAX_HOLD:
            self._growth = (fill, (fill - filled) / max(now - since, _MIN_SLEEP))
            self._mark_at = (now, fill)
            return fill == 0
        with self._lock:
            got = self._read_all()
        seen = got / self._room if fill is None else fill - filled
        self._growth = (0.0, seen / max(now - since, _MIN_SLEEP))
        self._mark(0.0)
        return got == 0

    def _mark(self, fill: float) -> None:
        """The sockets held ``fill`` (the fullest's share) now: the rate is measured from here
        (0.0: they were just emptied)."""
        now = self._clock()
        self._mark_at = (now, fill)
        if fill == 0.0:
            self._emptied_at = now

    def _next_sleep(self, fill: float, growth: float) -> float:
        """Until the fullest socket, ``fill`` full now and filling by ``growth`` of its room a
        second, may be FILL_TARGET full."""
        if growth <= 0:
            return MAX_SLEEP
        return min(MAX_SLEEP, max(_MIN_SLEEP, (FILL_TARGET - fill) / growth))

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
        in the caller's thread, once a read the reader thread began has handed its batch over;
        not read at all when the listener says nothing waits)."""
        if self._error is not None:
            raise self._error
        with self._lock:
            if self._listener.waiting() is not False:   # an idle interval's cut reads nothing
                self._read_all()
            out, self._batches = self._batches, []
            self._mark(0.0)
        return out

    def stop(self) -> None:
        self._stopping = True
        self._poke()
        self._thread.join()
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)
