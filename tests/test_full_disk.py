"""A full disk, for real: a 256 KiB tmpfs mounted for the test (needs root, like CI).

Required (issues 12, 17): a partial file is never published under a final name, files
finished before stay readable, and so do the records fsynced into the file the disk filled up
in (kept in progress, read in place, published by the next recording there); what is readable
is exactly what was said to be written, the exact count of the rest is reported once (the
sink's ``stats().lost``, the CLI's one error line) and recorded in one more file's metadata
when that fits, and ``record`` exits 1.  Every format, exits and ``record --interval``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

import taskstats_fast as tsf
from taskstats_fast import recording
from taskstats_fast.recording import FileSink

from under_ci import unavailable
from sample_records import batch


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs at ``tmp_path/disk``, unmounted afterwards."""
    yield from _tmpfs(tmp_path, "256k")


@pytest.fixture
def one_mib_disk(tmp_path):
    yield from _tmpfs(tmp_path, "1m")


def _tmpfs(tmp_path, size):
    if os.geteuid() != 0:
        unavailable("mounting a tmpfs needs root")
    where = tmp_path / "disk"
    where.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        unavailable(f"cannot mount a tmpfs: {res.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def everything_under(root):
    return sorted(os.path.join(d, n) for d, _, names in os.walk(root) for n in names)


def grow(disk, size):
    """Make room on the tmpfs (an operator freeing space) without touching what is on it."""
    subprocess.run(["mount", "-o", f"remount,size={size}", str(disk)], check=True)


def unfinished(root):
    return [p for p in everything_under(root) if p.endswith(".inprogress")]


def fill(sink, *, rows=50, batches=400):
    """Hand ``sink`` numbered records (``ac_pid`` 0, 1, …) until far more than fits, flushing
    after each batch: the records handed over, how many of them a flush (an fsync) had put on
    disk before the first failure, and the failures raised."""
    handed, durable, failures = 0, 0, []
    for i in range(batches):              # ~20 MB of records: far more than fits
        handed += rows   # a batch that fails is the sink's all the same, counted
        try:
            sink.write(batch(rows, start=rows * i), copy=False)
            sink.flush()
            if not failures:
                durable = handed
        except tsf.WriteFailedError as e:
            failures.append(e)
    return handed, durable, failures


def readable_pids(root):
    """Every record readable under ``root`` (complete files, and files in progress read in
    place), by its number; checked to hold no record twice."""
    pids = np.sort(tsf.read_records(str(root))["ac_pid"])
    assert len(np.unique(pids)) == len(pids), "a record is readable twice"
    return pids


@pytest.mark.parametrize("rotate_bytes", [None, 40_000], ids=["one-file", "rotating"])
@pytest.mark.parametrize("fmt", recording.FORMATS)
def test_a_full_disk_keeps_every_record_written_and_counts_the_rest(small_disk, fmt,
                                                                     rotate_bytes):
    fds = sorted(os.listdir("/proc/self/fd"))
    out = small_disk / "exits"
    sink = FileSink(str(out), fmt, rotate_bytes=rotate_bytes, flush_records=50)
    handed, durable, failures = fill(sink)
    if rotate_bytes is None:   # the disk filled up in the one file, after fsyncs into it
        assert "are kept in" in str(failures[0]), failures[0]
    sink.close()
    assert sorted(os.listdir("/proc/self/fd")) == fds, "no fd leaked"
    stats = sink.stats()
    assert len(failures) == 1, "the failure is raised once"
    assert failures[0].errno == 28 and "No space left on device" in str(failures[0])
    assert stats.written + stats.lost == handed and stats.buffered == 0 and stats.lost > 0
    # what is readable is exactly what the sink says it wrote: the records handed over first
    # (the file the disk filled up in keeps its rows up to its last complete write)
    pids = readable_pids(out)
    assert np.array_equal(pids, np.arange(stats.written)), (len(pids), stats)
    assert 0 < durable <= stats.written, "a record fsynced before the failure was lost"
    assert len(pids) == handed - stats.lost
    left = unfinished(small_disk)
    assert bool(left) == (stats.unpublished > 0)
    files = recording.find_files(str(out))
    assert files == list(stats.files)
    assert len(tsf.read_records(files)) == stats.written - stats.unpublished
    metas = [recording.read_metadata(f) for f in files]
    noted = [m for m in metas if m.get("write_error")]
    if noted:   # the count of what was not written, in the one more file that fitted
        assert noted[-1]["not_written_since_start"] == stats.lost
        assert noted[-1]["records"] == 0
    # room again: the next recording there publishes what was left unfinished, once
    grow(small_disk, "8m")
    with FileSink(str(out), fmt) as again:
        assert again.recovery.records == stats.unpublished
    assert not unfinished(small_disk)
    assert np.array_equal(readable_pids(out), np.arange(stats.written))


def test_a_full_disk_after_fsyncs_keeps_them_in_a_single_file(small_disk):
    """One file, no rotation: the rows flushed before the disk filled stay (published at once
    when the disk has room for the copy, else read in place), the rest are counted lost."""
    path = small_disk / "exits.npy"
    sink = FileSink(str(path), flush_records=50)
    handed, durable, failures = fill(sink)
    sink.close()
    stats = sink.stats()
    assert len(failures) == 1 and 0 < durable <= stats.written and stats.lost > 0
    assert stats.written + stats.lost == handed
    assert "are kept in" in str(failures[0]) and str(path) in str(failures[0])
    assert np.array_equal(np.sort(tsf.read_records(str(path))["ac_pid"]),
                          np.arange(stats.written))
    grow(small_disk, "8m")
    FileSink(str(path)).close()   # recovers it (beside an empty new file of its own)
    assert not unfinished(small_disk)
    recovered = [f for f in recording.find_files(str(small_disk))
                 if recording.read_metadata(f).get("recovered")]
    assert len(tsf.read_records(recovered)) == stats.unpublished


def test_a_full_disk_at_the_first_write_of_a_single_file_leaves_nothing(small_disk):
    path = small_disk / "exits.npy"          # uncompressed: 5 MB of records
    removed = r"exits.npy \(the partial file was removed\): No space left on device"
    with pytest.raises(tsf.WriteFailedError, match=removed):
        recording.write_file(str(path), np.concatenate([batch(2000)] * 4).astype(tsf.DTYPE))
    assert everything_under(small_disk) == []


def test_an_arrow_file_closes_with_room_for_its_data_but_not_for_a_copy(one_mib_disk):
    path = one_mib_disk / "exits.arrow"
    sink = FileSink(str(path), flush_records=100)
    written = 0
    while os.statvfs(one_mib_disk).f_bavail * os.statvfs(one_mib_disk).f_frsize > 400_000:
        sink.write(batch(100, start=written))
        written += 100
    free = os.statvfs(one_mib_disk).f_bavail * os.statvfs(one_mib_disk).f_frsize
    assert free < os.path.getsize(sink._part.tmp_path)        # no room for a second copy
    assert sink.close() == [str(path)] and sink.stats().lost == 0
    assert len(tsf.read_records(str(path))) == written
    assert everything_under(one_mib_disk) == [str(path)]
    assert recording.read_metadata(str(path))["records"] == written


@pytest.mark.kernel
@pytest.mark.parametrize("mode", ["exits", "interval"])
@pytest.mark.parametrize("fmt", recording.FORMATS)
def test_record_on_a_full_disk_says_once_what_was_not_written_and_exits_1(small_disk, fmt, mode):
    out = small_disk / "exits"
    extra = ["--interval", "0.2"] if mode == "interval" else []
    proc = subprocess.Popen([sys.executable, "-m", "taskstats_fast", "record", "-o", str(out),
                             "--format", fmt, "--seconds", "60", "--flush-records", "200",
                             "--no-status", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 50
    while proc.poll() is None and time.monotonic() < deadline:   # exits until the disk fills
        subprocess.run(["true"])
    assert proc.poll() is not None, "record did not stop when the disk was full"
    out_text, err = proc.communicate(timeout=30)
    assert proc.returncode == 1, err
    assert err.count("No space left on device") == 1, err
    line = [t for t in err.splitlines() if "No space left on device" in t][0]
    words = line.split(": ")[-1].split()   # "N of the M records received were not written; …"
    not_written = int(words[0].replace(",", ""))
    received = int(words[3].replace(",", ""))
    # readable: the complete files, and the file the disk filled up in, read in place up to
    # its last complete write; exactly what was not said to be lost
    readable = len(tsf.read_records(str(out)))
    assert readable + not_written == received and not_written > 0
    files = recording.find_files(str(out))
    in_files = len(tsf.read_records(files)) if files else 0
    assert int(words[words.index("are") - 1].replace(",", "")) == in_files
    # one file, the disk filled up in it: what it held up to its last write stays, unless the
    # first batch written already did not fit (then nothing was fsynced, nothing is kept)
    left = [p for p in unfinished(out) if "/_psi/" not in p]   # the interval rows' (PSI apart)
    assert len(left) == (readable > in_files) and len(left) <= 1, (left, readable, in_files)
    # room again: the next record there publishes what was left unfinished, once
    grow(small_disk, "8m")
    again = subprocess.run([sys.executable, "-m", "taskstats_fast", "record", "-o", str(out),
                            "--format", fmt, "--seconds", "0.3", "--no-status", *extra],
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert not unfinished(small_disk)
    recovered = [f for f in recording.find_files(str(out))
                 if recording.read_metadata(f).get("recovered")]
    assert len(recovered) == len(left)
    assert (len(tsf.read_records(recovered)) if recovered else 0) == readable - in_files
