"""Rotation finishes files off the writer's thread (issue 17): however long a Parquet file
takes to finish (a starved CPU: the power-cut guest), the records handed over meanwhile are
fsynced in the next file's journal within ``flush_seconds``; and a crash at any step of
finishing recovers every record exactly once."""

from __future__ import annotations

import os
import shutil
import threading
import time
import types

import numpy as np

from taskstats_fast import recording
from taskstats_fast.recording import BackgroundWriter, FileSink, parts

from sample_records import batch

FLUSH = 0.3


def _held_finish(monkeypatch):
    """Part.finish that waits for the returned event: a file finishing for as long as a test
    wants."""
    go = threading.Event()
    real = parts.Part.finish

    def finish(self, metadata):
        go.wait(30)
        return real(self, metadata)
    monkeypatch.setattr(parts.Part, "finish", finish)
    return go


def test_a_slow_finish_does_not_hold_back_the_next_files_journal(tmp_path, monkeypatch):
    go = _held_finish(monkeypatch)
    synced = []   # (part path, records it held, when) of every fsync of a file in progress
    real_sync = parts.Part.sync

    def sync(self):
        real_sync(self)
        synced.append((self.path, self.stats.records, time.monotonic()))
    monkeypatch.setattr(parts.Part, "sync", sync)
    root = str(tmp_path / "rec")
    writer = BackgroundWriter(FileSink(root, "parquet", rotate_seconds=0.2, flush_seconds=FLUSH))
    try:
        writer.write(batch(3))
        time.sleep(0.3)
        writer.write(batch(3, start=3))   # past the deadline: the first file goes to finishing
        handed = time.monotonic()
        first = None
        while time.monotonic() - handed < 3.0:
            writer.tick()
            first = first or next((p for p, _, _ in synced), None)
            later = [(p, n, t) for p, n, t in synced if p != first and n >= 3]
            if later:
                break
            time.sleep(0.02)
        assert later, "the second batch was never fsynced while the first file was finishing"
        assert later[0][2] - handed <= FLUSH + 0.5
        assert not go.is_set()   # ... and the first file is still finishing
        # readable there as it is: the first file's journal and the second's
        in_place = recording.read_records(root)
        assert sorted(in_place["ac_pid"].tolist()) == list(range(6))
    finally:
        go.set()
        files = writer.close()
    assert len(files) == 2
    assert [recording.read_records(f)["ac_pid"].tolist() for f in files] == [[0, 1, 2], [3, 4, 5]]


def test_a_crash_at_any_step_of_finishing_recovers_every_record_once(tmp_path, monkeypatch):
    """The dataset copied as a power cut would leave it: while the first file is finishing
    (before its footer), after its footer (before the rename) and after the rename (before
    its journal is removed); a recording started on each copy recovers all six records, once."""
    go = _held_finish(monkeypatch)
    root = str(tmp_path / "rec")
    snapshots = []

    def snapshot(name):
        where = str(tmp_path / name)
        shutil.copytree(root, where)
        snapshots.append(where)
    real_publish = parts.publish

    def publish(tmp, final):
        first = len(snapshots) == 1   # the first file's (the second's, at close, is not copied)
        if first:
            snapshot("footer-written")
        real_publish(tmp, final)
        if first:
            snapshot("renamed")
    monkeypatch.setattr(parts, "publish", publish)
    sink = FileSink(root, "parquet", rotate_seconds=0.1, flush_seconds=FLUSH)
    sink.write(batch(3))
    time.sleep(0.15)
    sink.write(batch(3, start=3))   # rotation: the first file is handed to the finisher
    sink.flush()
    snapshot("finishing")
    go.set()
    sink.wait_finished()
    sink.close()
    assert len(snapshots) == 3
    for where in snapshots:
        with FileSink(where, "parquet") as again:
            recovered = again.recovery.records
        rows = recording.read_records(where)["ac_pid"]
        assert sorted(rows.tolist()) == list(range(6)), (os.path.basename(where), recovered)
        assert np.unique(rows).size == rows.size


class _StalledSink:
    """A sink whose first write waits for ``go``: a writer thread that fell behind."""

    def __init__(self):
        self.go = threading.Event()
        self.writes = []

    def write(self, records):
        if len(records):
            self.writes.append(records["ac_pid"].tolist())
        self.go.wait(10)

    def flush(self):
        pass

    def close(self):
        return []

    def stats(self):
        return types.SimpleNamespace(files=())


def test_a_writer_that_fell_behind_catches_up_in_one_write():
    """Batches queued behind a stalled write reach the sink joined, in one write (one flush
    and one fsync for a FileSink), not one write each: a writer slower per batch than batches
    arrive would otherwise never catch up (the power-cut guest's Parquet recordings)."""
    sink = _StalledSink()
    writer = BackgroundWriter(sink)
    writer.write(batch(1))
    deadline = time.monotonic() + 5
    while not sink.writes and time.monotonic() < deadline:
        time.sleep(0.01)
    for i in range(1, 50):
        writer.write(batch(1, start=i))
        if i % 10 == 0:
            writer.tick()   # ticks (empty batches) between them join too
    sink.go.set()
    writer.close()
    assert sink.writes == [[0], list(range(1, 50))]
