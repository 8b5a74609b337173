"""The Sink protocol and record(): a fake listener drives real sinks, without a kernel.

The fake listener hands out batches we encode ourselves (tests/wire.py), keeps records back
for ``stop()`` the way the real one returns what is still queued, and counts what it gave; the
sinks must account for every record: written + buffered + lost == handed over.
"""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

import taskstats_fast as tsf
from taskstats_fast import recording
from taskstats_fast.recording import FileSink, SinkStats, record

from sample_records import batch


class FakeListener:
    """read() hands out ``batches`` one per call (then empty arrays); stop() returns ``tail``."""

    def __init__(self, batches, tail=None, delay=0.0):
        self.batches = list(batches)
        self.tail = tail if tail is not None else np.zeros(0, tsf.DTYPE)
        self.delay = delay
        self.stopped = False
        self.reads = 0

    def read(self, timeout=None):
        self.reads += 1
        if self.batches:
            return self.batches.pop(0)
        time.sleep(min(timeout or 0.0, 0.01) + self.delay)
        return np.zeros(0, tsf.DTYPE)

    def stop(self):
        self.stopped = True
        return self.tail

    @property
    def stats(self):
        return SimpleNamespace(received=0, delivered=0, lost=2, dropped=2, truncated=0,
                               overruns=0, discarded=1)


class ListSink:
    """The smallest sink: keeps every batch (what the exporter and top do, in spirit)."""

    def __init__(self):
        self.batches, self.closed, self.flushes = [], False, 0

    def write(self, batch):
        self.batches.append(batch)

    def flush(self):
        self.flushes += 1

    def close(self):
        self.closed = True

    def stats(self):
        n = sum(len(b) for b in self.batches)
        return SinkStats(written=n)


def test_file_sink_and_background_writer_are_sinks(tmp_path):
    sink = FileSink(str(tmp_path / "x.npy"))
    assert isinstance(sink, recording.Sink) and isinstance(sink, recording.CountingSink)
    writer = recording.BackgroundWriter(sink)
    assert isinstance(writer, recording.Sink)
    assert isinstance(ListSink(), recording.Sink)
    assert not isinstance(ListSink(), recording.CountingSink)
    writer.close()


def test_sink_stats_account_for_every_record(tmp_path):
    sink = FileSink(str(tmp_path / "exits"), "npy", flush_records=10)
    sink.write(batch(7))
    assert sink.stats() == SinkStats(written=0, buffered=7, lost=0, files=(),
                                     bytes=0, error=None)
    sink.write(batch(5, start=7))
    stats = sink.stats()
    assert (stats.written, stats.buffered, stats.lost) == (12, 0, 0) and stats.bytes > 0
    sink.write(np.zeros(0, tsf.DTYPE))          # a tick
    sink.close()
    stats = sink.stats()
    assert stats.written == 12 and len(stats.files) == 1 and stats.error is None


@pytest.mark.parametrize("how", ["event", "callable", "deadline"])
def test_record_lands_every_record_and_stops_the_listener(tmp_path, how):
    listener = FakeListener([batch(3), batch(4, start=3)], tail=batch(2, start=7))
    sink = FileSink(str(tmp_path / "exits"), "npy")
    if how == "event":
        stop = threading.Event()
        threading.Timer(0.3, stop.set).start()
    elif how == "callable":
        stop = lambda: listener.reads > 5
    else:
        stop = time.monotonic() + 0.3
    result = record(listener, sink, stop=stop)
    assert listener.stopped
    assert result.received == 9 and result.sink.written == 9 and result.not_written == 0
    assert result.stopped_by == ("deadline" if how == "deadline" else "stop")
    assert result.kernel_lost == 2 and result.discarded == 1
    got = tsf.read_records(result.sink.files)
    assert got["ac_pid"].tolist() == list(range(9))
    assert recording.read_metadata(result.sink.files[0])["lost"] == 2   # the listener's counters


def test_record_drives_any_sink_and_reports_progress():
    listener = FakeListener([batch(3), batch(1, start=3)], delay=0.02)
    sink = ListSink()
    seen = []
    result = record(listener, sink, stop=time.monotonic() + 0.4, progress=seen.append,
                    progress_seconds=0.05)
    assert sink.closed and sum(len(b) for b in sink.batches) == 4
    assert any(len(b) == 0 for b in sink.batches)   # ticks while nothing arrives
    assert seen and seen[-1].received == 4 and seen[-1].stopped_by == "running"
    assert result.sink.written == 4


class FailingSink(ListSink):
    """Fails on the second non-empty batch, then counts what it is given, like FileSink."""

    def __init__(self):
        super().__init__()
        self.lost = 0
        self.failed = False

    def write(self, batch):
        if self.failed:
            self.lost += len(batch)
            return
        if len(batch) and self.batches:
            self.failed, self.lost = True, len(batch)
            raise tsf.WriteFailedError(28, "/x/part.parquet: No space left on device")
        self.batches.append(batch)

    def stats(self):
        return SinkStats(written=sum(len(b) for b in self.batches), lost=self.lost,
                         error="No space left on device" if self.failed else None)


def test_record_stops_on_a_write_failure_and_counts_what_was_not_written():
    listener = FakeListener([batch(3), batch(4, start=3), batch(5, start=7)],
                            tail=batch(2, start=20))
    with pytest.raises(tsf.WriteFailedError) as info:
        record(listener, FailingSink(), stop=time.monotonic() + 5)
    error = info.value
    assert listener.stopped
    # the failed batch and the tail; the third batch was never read
    assert error.not_written == 4 + 2 == error.result.not_written
    assert "6 of the 9 records received were not written" in str(error)
    assert error.errno == 28 and error.result.stopped_by == "error"


def test_record_closes_the_sink_and_stops_the_listener_on_any_error():
    class Broken(ListSink):
        def write(self, batch):
            if len(batch):
                raise RuntimeError("a bug in a sink")
            super().write(batch)

    listener, sink = FakeListener([batch(2)]), Broken()
    with pytest.raises(RuntimeError, match="a bug in a sink"):
        record(listener, sink, stop=time.monotonic() + 5)
    assert listener.stopped and sink.closed


def _read_ahead_of(listener):
    """A ReadAhead of ``listener``, once it has read every batch the listener had."""
    ahead = recording.ReadAhead(listener)
    deadline = time.monotonic() + 10
    while listener.batches and time.monotonic() < deadline:
        time.sleep(0.01)
    return ahead


def test_what_a_read_ahead_read_comes_first_and_in_order():
    listener = FakeListener([batch(3), batch(4, start=3)], tail=batch(2, start=9))
    ahead = _read_ahead_of(listener)
    listener.batches.append(batch(2, start=7))   # arrives once the loop reads
    sink = ListSink()
    result = record(listener, sink, stop=time.monotonic() + 0.3, ahead=ahead)
    got = np.concatenate([b["ac_pid"] for b in sink.batches if len(b)]).tolist()
    assert got == list(range(11)) and result.received == 11 and sink.closed


def test_a_recording_stopped_before_its_first_read_keeps_what_was_read_ahead():
    listener = FakeListener([batch(3)], tail=batch(2, start=3))
    ahead = _read_ahead_of(listener)
    sink = ListSink()
    result = record(listener, sink, stop=lambda: True, ahead=ahead)
    got = np.concatenate([b["ac_pid"] for b in sink.batches if len(b)]).tolist()
    assert got == list(range(5)) and result.received == 5 and listener.stopped


def test_a_read_ahead_stops_at_its_bound_and_raises_what_stopped_it():
    listener = FakeListener([batch(3), batch(3, start=3), batch(3, start=6)])
    ahead = recording.ReadAhead(listener, max_records=4)
    time.sleep(0.2)
    assert [len(b) for b in ahead.take()] == [3, 3] and len(listener.batches) == 1

    class Failing(FakeListener):
        def read(self, timeout=None):
            raise OSError(105, "receiving exit records: No buffer space available")

    broken = Failing([])
    ahead = recording.ReadAhead(broken)
    with pytest.raises(OSError, match="No buffer space"):
        record(broken, ListSink(), stop=time.monotonic() + 5, ahead=ahead)
    assert broken.stopped
