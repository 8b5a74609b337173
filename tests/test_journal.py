"""Durable recordings without a kernel (issue 17): what a sink received is fsynced within
``flush_seconds`` and readable in place after a kill -9, a restart publishes it once as a
``recovered`` file, a single-file output has one writer, a damaged sidecar damages one file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from taskstats_fast import recording
from taskstats_fast.recording import FileSink, interval_schema
from taskstats_fast.recording import durable
from taskstats_fast.recording.durable import OutputInUseError

from sample_records import batch, interval_batch, interval_key, row_schema

HERE = os.path.dirname(os.path.abspath(__file__))


_CHILD = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {here!r})
    from sample_records import batch, interval_batch, row_schema
    from taskstats_fast.recording import FileSink
    kind, fmt, path, batches = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    schema = row_schema(kind)
    sink = FileSink(path, fmt, flush_records=10**9, flush_seconds=0.05, schema=schema)
    for i in range(batches):
        rows = batch(40, start=40 * i) if schema is None else interval_batch(40, kind, 40 * i)
        sink.write(rows)
        time.sleep(0.06)
        sink.tick()          # the flush timer: written and fsynced
    print("flushed", flush=True)
    sink.flush_seconds = 3600   # so these stay in memory, however slow the machine
    sink.write(batch(7, start=10**6) if schema is None else interval_batch(7, kind, 10**6))
    time.sleep(60)           # killed here: the last 7 were never flushed
""")


def _killed_recorder(kind, fmt, path, batches=5):
    proc = subprocess.Popen([sys.executable, "-c", _CHILD.format(here=HERE), kind, fmt, str(path),
                             str(batches)], stdout=subprocess.PIPE, text=True, cwd=HERE)
    try:
        assert proc.stdout.readline().strip() == "flushed"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    return 40 * batches


@pytest.mark.parametrize("kind", ["exits", "task", "process", "psi"])
@pytest.mark.parametrize("fmt", recording.FORMATS)
def test_a_killed_recording_reads_in_place_and_is_recovered_once(tmp_path, fmt, kind):
    root = tmp_path / "rec"
    flushed = _killed_recorder(kind, fmt, root)
    # without a restart: readers read the file left in progress, up to its last fsync
    recordings = recording.Recordings(str(root))
    rows = recordings.records()
    assert len(rows) == flushed and not recordings.damaged and len(recordings.in_progress) == 1
    # a restart publishes it as a complete file saying so, and leaves no leftover
    sink = FileSink(str(root), fmt, schema=row_schema(kind))
    ((published, count),) = sink.recovery.recovered
    assert count == flushed
    sink.close()
    meta = recording.read_metadata(published)
    assert meta["recovered"] is True and meta["recovered_records"] == flushed
    assert meta["records"] == flushed
    assert not [n for _, _, names in os.walk(root) for n in names if n.startswith(".")]
    again = recording.read_records(str(root))
    key = interval_key(kind)
    assert len(again) == flushed and len(np.unique(again[key])) == flushed   # exactly once


@pytest.mark.parametrize("fmt", recording.FORMATS)
def test_a_killed_single_file_recording_is_recovered(tmp_path, fmt):
    path = tmp_path / f"exits{recording.EXTENSIONS[fmt]}"
    flushed = _killed_recorder("exits", fmt, path, batches=3)
    assert len(recording.read_records(str(path))) == flushed   # read in place
    sink = FileSink(str(path))
    assert sink.recovery.records == flushed
    ((recovered, _),) = sink.recovery.recovered
    sink.close()   # writes the file's own name: the recovered rows are beside it, kept
    assert recovered != str(path) and recording.read_metadata(recovered)["recovered"]
    assert len(recording.read_records(recovered)) == flushed
    assert len(recording.read_records(str(path))) == 0


def test_records_are_on_disk_within_flush_seconds_even_when_few_arrive(tmp_path):
    root = tmp_path / "rec"
    sink = FileSink(str(root), "parquet", flush_seconds=0.2)
    sink.write(batch(3))
    assert len(recording.read_records(str(root))) == 0   # not flushed yet
    time.sleep(0.25)
    sink.tick()
    assert len(recording.read_records(str(root))) == 3
    sink.close()


def test_closing_an_arrow_file_renames_it_in_place(tmp_path):
    sink = FileSink(str(tmp_path / "rec"), "arrow")
    sink.write(batch(100))
    sink.flush()
    inode = os.stat(sink._part.tmp_path).st_ino
    (path,) = sink.close()
    assert os.stat(path).st_ino == inode          # no copy: the same file, renamed
    meta = recording.read_metadata(path)
    assert meta["records"] == 100
    assert len(recording.read_records(path)) == 100


def test_a_second_writer_of_one_file_refuses_naming_the_first(tmp_path):
    path = str(tmp_path / "exits.parquet")
    first = FileSink(path)
    with pytest.raises(OutputInUseError, match=f"pid {os.getpid()}"):
        FileSink(path)
    first.close()
    FileSink(path).close()        # free again once the first closed


def test_two_recorders_into_one_directory_leave_each_other_alone(tmp_path):
    root = str(tmp_path / "rec")
    first = FileSink(root, "npy")
    first.write(batch(10))
    first.flush()
    second = FileSink(root, "npy")          # its recovery must not take the live file
    assert not second.recovery.recovered
    second.write(batch(5, start=100))
    assert len(first.close()) == 1 and len(second.close()) == 1
    assert len(recording.read_records(root)) == 15


@pytest.mark.parametrize("content", ["", "{not json"])
def test_an_empty_or_damaged_sidecar_damages_that_file_only(tmp_path, content):
    root = tmp_path / "rec"
    files = []
    for i in range(2):
        with FileSink(str(root), "npy") as sink:
            sink.write(batch(10, start=10 * i))
        files += sink.files
    sidecar = os.path.join(os.path.dirname(files[0]), "_" + os.path.basename(files[0]) + ".json")
    with open(sidecar, "w") as f:
        f.write(content)
    with pytest.warns(recording.DamagedRecordingWarning, match="sidecar"):
        records = recording.read_records(str(root), skip_damaged=True)
    assert len(records) == 10
    recordings = recording.Recordings(str(root))
    recordings.records()
    assert [p for p, _ in recordings.damaged] == [files[0]]
    summary = recording.summarize(str(root))
    assert [d["path"] for d in summary["damaged"]] == [files[0]]


def test_a_file_with_a_newer_recording_in_progress_names_it(tmp_path):
    path = str(tmp_path / "exits.npy")
    recording.write_file(path, batch(4))
    sink = FileSink(path)
    sink.write(batch(9))
    sink.flush()
    with pytest.warns(recording.DamagedRecordingWarning, match=r"\.exits\.npy\.inprogress"):
        assert len(recording.read_records(path)) == 4
    sink.close()
    assert len(recording.read_records(path)) == 9


def test_a_directory_of_only_a_file_in_progress_reads_its_rows_kind(tmp_path):
    root = str(tmp_path / "rec")
    sink = FileSink(root, "csv", schema=interval_schema("process"))
    sink.write(interval_batch(6, "process"))
    sink.flush()
    assert recording.Recordings(root).peek_schema() is interval_schema("process")
    assert len(recording.read_frame(root)) == 6
    sink.close()


@pytest.mark.parametrize("fmt", recording.FORMATS)
def test_an_empty_leftover_beside_interval_rows_leaves_them_readable(tmp_path, fmt):
    """A power cut right after a file was opened leaves it (Parquet: its journal) empty: its
    header never reached the disk, so nothing says it held interval rows.  The power-cut
    campaign found the whole dataset unreadable then ("holds taskstats records, the files
    before it interval rows"); it holds no row, so the others read, and recovery removes it."""
    root = tmp_path / "rec"
    with FileSink(str(root), fmt, schema=interval_schema("task"), hostname="h") as sink:
        sink.write(interval_batch(5))
    directory = os.path.dirname(sink.files[0])
    name = os.path.basename(sink.files[0]).replace("-0000", "-0001")
    left = os.path.join(directory, f".{name}.inprogress")
    open(left, "wb").close()
    if fmt == "parquet":
        open(durable.journal_path(left), "wb").close()
    found = recording.Recordings(str(root))
    assert np.array_equal(found.records()["ac_pid"], np.arange(5))
    assert found.in_progress == [left] and not found.damaged
    with FileSink(str(root), fmt, schema=interval_schema("task"), hostname="h") as again:
        assert again.recovery.empty == [left]
    assert len(recording.read_records(str(root))) == 5


def test_a_busy_stream_costs_one_fsync_per_flush_window(tmp_path):
    sink = FileSink(str(tmp_path / "rec"), "npy", flush_records=10, flush_seconds=0.3)
    sink.write(batch(1))   # the file is open (its creation fsyncs its directories)
    sink.flush()
    before = durable.FSYNCS.count
    started = time.monotonic()
    while time.monotonic() - started < 1.25:
        sink.write(batch(20))          # two full buffers a write: written at once ...
        time.sleep(0.02)
    fsyncs = durable.FSYNCS.count - before
    assert 3 <= fsyncs <= 5, fsyncs    # ... fsynced once per 0.3 s window
    assert len(recording.read_records(str(tmp_path / "rec"))) >= sink.stats().written - 20 * 16
    sink.close()


def test_rotation_keeps_its_own_time_not_the_flush_timer(tmp_path):
    sink = FileSink(str(tmp_path / "rec"), "npy", rotate_seconds=0.5, flush_seconds=30)
    started = time.monotonic()
    while time.monotonic() - started < 2.2:
        sink.write(batch(1))
        time.sleep(0.02)
    files = sink.close()
    assert 4 <= len(files) <= 5, len(files)


@pytest.mark.parametrize("fmt", recording.FORMATS)
def test_a_torn_last_batch_recovers_every_complete_one_at_every_byte(tmp_path, fmt):
    from taskstats_fast import schema as table_schema
    entry = recording.formats.FORMAT[fmt]
    path = str(tmp_path / f".part{entry.extension}.inprogress")
    writer = entry.writer(path, table_schema.DEFAULT)
    source = durable.journal_path(path) if fmt == "parquet" else path
    sizes, snapshots = [], []
    for i in range(3):
        writer.write(batch(2, start=2 * i))
        writer.sync()
        with open(source, "rb") as f:
            snapshots.append(f.read())
        sizes.append(len(snapshots[-1]))
    data = snapshots[-1]
    writer.abort()
    if fmt == "parquet":
        open(path, "wb").close()   # the Parquet file without its footer
    # every cut inside the last batch: the two complete batches, the tail counted as torn
    step = 1 if sizes[2] - sizes[1] < 4096 else 7    # Arrow batches: every 7th byte, and the ends
    cuts = sorted(set(range(sizes[1], sizes[2], step)) | {sizes[1], sizes[2] - 1})
    for cut in cuts:
        with open(source, "wb") as f:
            f.write(data[:cut])
        torn = []
        rows = np.concatenate(list(entry.partial_reader(path, table_schema.DEFAULT, None, torn)))
        complete = _complete_end(fmt, data, sizes, cut)   # npy and CSV: whole rows count too
        assert rows["ac_pid"].tolist() == list(range(len(rows))), cut
        assert len(rows) == 4 + (complete > sizes[1]) * (1 + (complete == sizes[2])), cut
        assert sum(torn) == cut - complete, cut
    with open(source, "wb") as f:
        f.write(data)
    assert len(np.concatenate(list(entry.partial_reader(path, table_schema.DEFAULT)))) == 6
    if fmt == "npy":   # killed after the rows were appended, before the header counted them
        header = len(data) - 6 * table_schema.DEFAULT.dtype.itemsize
        with open(source, "r+b") as f:
            f.write(snapshots[1][:header])
        torn = []
        assert len(np.concatenate(list(entry.partial_reader(path, table_schema.DEFAULT, None,
                                                            torn)))) == 4
        assert sum(torn) == sizes[2] - sizes[1]


def _complete_end(fmt, data, sizes, cut):
    """Where the last complete record or batch before ``cut`` ends."""
    if fmt == "npy":
        row = (sizes[2] - sizes[1]) // 2
        return sizes[1] + (cut - sizes[1]) // row * row
    if fmt == "csv":
        return data.rfind(b"\n", 0, cut) + 1
    return sizes[1]


@pytest.mark.parametrize("fmt", recording.FORMATS)
def test_a_torn_first_batch_or_header_is_an_empty_leftover_never_refused(tmp_path, fmt):
    from taskstats_fast import schema as table_schema
    root = tmp_path / "rec"
    entry = recording.formats.FORMAT[fmt]
    directory = root / "host=h" / "date=2026-12-02"
    directory.mkdir(parents=True)
    path = str(directory / f".part-x{entry.extension}.inprogress")
    writer = entry.writer(path, table_schema.DEFAULT)
    source = durable.journal_path(path) if fmt == "parquet" else path
    writer.write(batch(2))
    writer.sync()
    with open(source, "rb") as f:
        data = f.read()
    writer.abort()
    # before the first complete record (npy, CSV) or batch (Arrow IPC)
    limit = {"npy": len(data) - table_schema.DEFAULT.dtype.itemsize,
             "csv": data.index(b"\n", data.index(b"\n") + 1) + 1}.get(fmt, len(data))
    for cut in sorted(set(range(0, limit, 61)) | {0, limit - 1}):
        with open(source, "wb") as f:
            f.write(data[:cut])
        if fmt == "parquet":
            open(path, "wb").close()
        torn = []
        assert not list(entry.partial_reader(path, table_schema.DEFAULT, None, torn)), cut
        assert 0 < sum(torn) <= cut if cut else not torn, cut   # after the schema, if whole
    sink = FileSink(str(root), fmt, hostname="h")
    assert sink.recovery.empty == [path] and not sink.recovery.unreadable
    assert 0 < sink.recovery.torn_bytes <= limit - 1
    sink.close()
    assert not [n for _, _, names in os.walk(root) for n in names if n.startswith(".")]


def test_a_torn_recovery_counts_its_tail_in_the_metadata(tmp_path):
    root = tmp_path / "rec"
    sink = FileSink(str(root), "npy", hostname="h")
    sink.write(batch(5))
    sink.flush()
    tmp = sink._part.tmp_path
    with open(tmp, "ab") as f:
        f.write(b"\0" * 13)   # a row cut short by the kill
    os.close(sink._part._lock)   # as a kill would release it
    sink._part._lock = None
    fresh = FileSink(str(root), "npy", hostname="h")
    ((published, count),) = fresh.recovery.recovered
    assert count == 5 and fresh.recovery.torn_bytes == 13
    assert recording.read_metadata(published)["recovered_torn_bytes"] == 13
    fresh.close()
    sink._part._writer.abort()


def test_a_batch_that_waited_in_the_queue_is_flushed_by_when_it_arrived(tmp_path):
    # a rotation finishing a file on a starved CPU keeps later batches queued: the flush
    # deadline counts from their hand-over, so they are fsynced at once, not a window later
    root = str(tmp_path / "rec")
    sink = FileSink(root, "parquet", flush_seconds=30)
    sink.write(batch(3), arrived=time.monotonic() - 31)
    assert len(recording.read_records(root)) == 3
    sink.write(batch(2, start=10))
    assert len(recording.read_records(root)) == 3     # a fresh batch waits for its window
    writer = recording.BackgroundWriter(sink)
    writer.write(batch(4, start=20))
    writer.close()
    assert len(recording.read_records(root)) == 9


@pytest.mark.parametrize("fmt", recording.FORMATS)
def test_the_first_batch_imports_nothing(tmp_path, fmt):
    """Whatever a format's first table needs (pyarrow imports pandas on the first table it
    builds) is loaded when the sink is made, before recording starts: imported at the first
    batch instead, it took seconds of the flush window on a loaded host (the power-cut
    campaign's guest lost every Parquet exit to it)."""
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        from taskstats_fast.layout import DTYPE
        from taskstats_fast.recording import FileSink
        sink = FileSink({str(tmp_path / "rec")!r}, {fmt!r}, hostname="h")
        before = set(sys.modules)
        sink.write(np.zeros(3, DTYPE))
        sink.flush()
        print(sorted(set(sys.modules) - before))
        sink.close()
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]", run.stdout
