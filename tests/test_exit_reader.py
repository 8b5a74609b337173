"""The accounting exit reader's wake-up schedule (accounting/exit_reader.py), without root: a
fake listener whose fd is a pipe, fed by the test.

What must hold: an idle interval wakes the reader at most 5 times (counted by the reader and by
the kernel's voluntary context switches of its thread); a steady trickle wakes it a bounded
number of times however many exits come, and is left in the sockets for the cut; the sleep
follows the rate seen; sockets an eighth full, or unemptied for MAX_HOLD, are emptied by the
thread, and every wake-up empties a listener that cannot say how full it is; a cut returns
everything the sockets held at the call, once.
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

import taskstats_fast as tsf
from taskstats_fast.accounting import exit_reader
from taskstats_fast.accounting.exit_reader import ExitReader


class FakeListener:
    """``fileno`` readable while records wait; ``read(timeout=0)`` returns them all;
    ``fullest()`` is the share of ``room`` records waiting (None: ``room`` None, it cannot tell)."""

    batch_size = 4096

    def __init__(self, room=65536):
        self.room = room
        self._r, self._w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._lock = threading.Lock()
        self._pending = []
        self.next_pid = 1
        self.reads = 0

    def fileno(self) -> int:
        return self._r

    def add(self, n: int) -> None:
        rows = np.zeros(n, tsf.DTYPE)
        rows["ac_pid"] = np.arange(self.next_pid, self.next_pid + n)
        self.next_pid += n
        with self._lock:
            self._pending.append(rows)
            os.write(self._w, b"x")

    def fullest(self):
        if self.room is None:
            return None
        with self._lock:
            return sum(len(p) for p in self._pending) / self.room

    def waiting(self):
        fill = self.fullest()
        return None if fill is None else fill > 0

    def read(self, timeout=None):
        assert timeout == 0, "the reader never waits inside read"
        self.reads += 1
        with self._lock:
            out = np.concatenate(self._pending) if self._pending else np.zeros(0, tsf.DTYPE)
            self._pending = []
            try:
                while os.read(self._r, 4096):
                    pass
            except BlockingIOError:
                pass
        return out

    def close(self) -> None:
        os.close(self._r)
        os.close(self._w)


def voluntary_switches(tid: int) -> int:
    with open(f"/proc/self/task/{tid}/status") as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches line")


def read_by_the_thread(reader: ExitReader, within: float = 5.0) -> None:
    """Wait until the reader thread has read something (or ``within`` seconds passed)."""
    deadline = time.monotonic() + within
    while reader.records == 0 and time.monotonic() < deadline:
        time.sleep(0.01)


@pytest.fixture
def fake():
    listener = FakeListener()
    yield listener
    listener.close()


@pytest.fixture
def reader(fake):
    reader = ExitReader(fake, room=65536)
    yield reader
    reader.stop()


def test_an_idle_interval_wakes_the_reader_at_most_five_times(reader):
    reader.cut()
    for _ in range(2):
        woken, switched = reader.wakeups, voluntary_switches(reader.native_id)
        time.sleep(1.0)
        assert reader.cut() == []
        assert reader.wakeups - woken <= 5
        assert voluntary_switches(reader.native_id) - switched <= 5


def test_a_trickle_wakes_the_reader_a_bounded_number_of_times_and_loses_nothing(reader, fake):
    reader.cut()
    woken, reads = reader.wakeups, fake.reads
    for _ in range(100):                    # 400 exits/s for 1 s, in 100 arrivals
        fake.add(4)
        time.sleep(0.01)
    assert reader.records == 0               # far below DRAIN_AT: left for the cut
    got = np.concatenate(reader.cut())
    assert sorted(got["ac_pid"].tolist()) == list(range(1, 401))
    # readiness after the quiet start, the first gather, then at most one per MAX_SLEEP
    assert reader.wakeups - woken <= 2 + 1 / exit_reader.MAX_SLEEP + 3
    assert fake.reads - reads == 1           # the cut's, in this thread
    assert reader.cut() == []


def test_the_sleep_is_the_time_to_a_quarter_full_at_the_rate_seen(fake):
    reader = ExitReader(fake, room=40_000)
    try:
        quarter = exit_reader.FILL_TARGET
        assert reader._next_sleep(0.0, quarter / 0.1) == pytest.approx(0.1)
        assert reader._next_sleep(0.1, quarter / 0.1) == pytest.approx(0.1 * 0.15 / 0.25)
        assert reader._next_sleep(0.0, quarter / 10) == exit_reader.MAX_SLEEP     # slow: capped
        assert reader._next_sleep(0.0, 0) == exit_reader.MAX_SLEEP
        assert reader._next_sleep(0.0, -1.0) == exit_reader.MAX_SLEEP        # a cut emptied them
        assert reader._next_sleep(0.0, 1e12) > 0
        assert reader._next_sleep(0.3, 1.0) > 0                              # past the target
    finally:
        reader.stop()


def test_a_socket_an_eighth_full_is_emptied_by_the_reader_thread(reader, fake):
    reader.cut()
    fake.add(int(exit_reader.DRAIN_AT * fake.room) + 1)
    read_by_the_thread(reader)
    assert reader.records == int(exit_reader.DRAIN_AT * fake.room) + 1
    assert fake.fullest() == 0
    assert sum(len(b) for b in reader.cut()) == reader.records


def test_a_listener_that_cannot_tell_its_fill_is_emptied_at_every_wake_up():
    listener = FakeListener(room=None)
    reader = ExitReader(listener, room=65536)
    try:
        reader.cut()
        listener.add(3)
        read_by_the_thread(reader)
        assert reader.records == 3
        assert sum(len(b) for b in reader.cut()) == 3
    finally:
        reader.stop()
        listener.close()


def test_a_storm_is_read_before_the_sockets_are_a_quarter_full():
    """With a fake clock and wait: at a steady rate the reader reads every quarter room."""
    now = [0.0]
    rate = 10_000.0                  # exits/s
    room = 4_000
    listener = FakeListener(room=room)
    sleeps = []
    gate = threading.Semaphore(0)

    def wait(fds, timeout):
        # the fake world: time passes by the timeout (or until the first exit), exits arrive
        sleeps.append(timeout)
        step = 0.01 if timeout is None else timeout
        now[0] += step
        listener.add(max(1, int(rate * step)))
        if len(sleeps) >= 20:
            gate.release()
            time.sleep(0.05)          # let cut() take over
        return True

    reader = ExitReader(listener, room=room, clock=lambda: now[0], wait=wait)
    try:
        gate.acquire(timeout=10)
        steady = [s for s in sleeps[3:15] if s is not None]
        quarter_time = exit_reader.FILL_TARGET * room / rate
        assert steady and all(s == pytest.approx(quarter_time, rel=0.05) for s in steady)
    finally:
        reader.stop()
        listener.close()


def test_a_trickle_left_unread_is_emptied_every_max_hold_without_a_cut():
    """With a fake clock: exits far below DRAIN_AT and no cut (a long interval) are read by the
    thread once per MAX_HOLD, so the kernel never holds more than that much of them."""
    now = [0.0]
    listener = FakeListener()
    reads_at = []
    read = listener.read

    def timed_read(timeout=None):
        got = read(timeout)
        if len(got):
            reads_at.append(now[0])
        return got
    listener.read = timed_read
    done = threading.Event()

    def wait(fds, timeout):
        now[0] += 0.01 if timeout is None else timeout
        listener.add(4)                 # 4 exits per wake-up: a trickle
        if now[0] > 5 * exit_reader.MAX_HOLD:
            done.set()
            time.sleep(0.05)
        return True

    reader = ExitReader(listener, room=65536, clock=lambda: now[0], wait=wait)
    try:
        assert done.wait(10)
        gaps = [b - a for a, b in zip(reads_at, reads_at[1:])]
        assert len(reads_at) >= 4
        assert all(exit_reader.MAX_HOLD <= g <= exit_reader.MAX_HOLD + exit_reader.MAX_SLEEP + 1e-9
                   for g in gaps)
    finally:
        reader.stop()
        listener.close()


def test_a_cut_returns_what_the_sockets_held_at_the_call(reader, fake):
    for n in (1, 7, 300):
        fake.add(n)
        got = reader.cut()
        assert sum(len(b) for b in got) == n
    assert reader.records == 308


def test_a_cut_wakes_nobody(reader, fake):
    """The caller's thread empties the sockets at a cut: an idle interval wakes the reader
    thread not once."""
    reader.cut()
    time.sleep(0.1)
    woken, reads = reader.wakeups, fake.reads
    for _ in range(3):
        assert reader.cut() == []
    assert fake.reads == reads                          # nothing waited: nothing was read
    fake.add(5)
    assert sum(len(b) for b in reader.cut()) == 5      # read here, not by the thread
    assert reader.wakeups - woken <= 1                  # the thread may see readiness once
