"""A full disk, for real: a 256 KiB tmpfs mounted for the test (needs root, like CI).

Required (issue 12): a partial file is never published under a final name (we remove it),
files finished before stay readable, the exact count of records received but not written is
reported once (the sink's ``stats().lost``, the CLI's one error line) and recorded in one more
file's metadata when that fits, and ``record`` exits 1.
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


@pytest.mark.parametrize("fmt", recording.FORMATS)
def test_a_full_disk_publishes_no_partial_file_and_counts_every_record(small_disk, fmt):
    fds = sorted(os.listdir("/proc/self/fd"))
    sink = FileSink(str(small_disk / "exits"), fmt, rotate_bytes=40_000, flush_records=50)
    handed, failures = 0, []
    for i in range(400):              # ~20 MB of records: far more than fits
        try:
            sink.write(batch(50, start=50 * i), copy=False)
        except tsf.WriteFailedError as e:
            failures.append(e)
        handed += 50
    sink.close()
    assert sorted(os.listdir("/proc/self/fd")) == fds, "no fd leaked"
    stats = sink.stats()
    assert len(failures) == 1, "the failure is raised once"
    assert failures[0].errno == 28 and "No space left on device" in str(failures[0])
    assert stats.written + stats.lost == handed and stats.buffered == 0 and stats.lost > 0
    # the file that failed (removed), or the dataset when opening the next file failed while
    # the last one was still being finished (rotation finishes files off the writer's thread)
    assert stats.error.endswith(("(the partial file was removed): No space left on device",
                                 "/exits: No space left on device")), stats.error
    # nothing half-written anywhere, not even under a hidden name
    assert not [p for p in everything_under(small_disk) if p.endswith(".inprogress")]
    files = recording.find_files(str(small_disk / "exits"))
    assert files == list(stats.files)
    records = tsf.read_records(files)          # every published file reads in full
    assert len(records) == stats.written
    assert np.array_equal(np.unique(records["ac_pid"]), np.arange(stats.written))
    metas = [recording.read_metadata(f) for f in files]
    noted = [m for m in metas if m.get("write_error")]
    if noted:   # the count of what was not written, in the one more file that fitted
        assert noted[-1]["not_written_since_start"] == stats.lost
        assert noted[-1]["records"] == 0


def test_a_full_disk_on_a_single_file_leaves_nothing(small_disk):
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
                             "--rotate-mb", "0.03", "--no-status", *extra],
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
    files = recording.find_files(str(out))
    assert not [p for p in everything_under(small_disk) if p.endswith(".inprogress")]
    written = len(tsf.read_records(files)) if files else 0
    assert written + not_written == received and not_written > 0
    assert int(words[words.index("are") - 1].replace(",", "")) == written
