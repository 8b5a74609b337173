"""``summary`` of files that are not recordings, without a kernel: one line naming the file,
never a traceback or numpy's allow_pickle advice; a dataset with a damaged file summarises the
others, names the damaged one and exits non-zero (issue 12)."""

from __future__ import annotations

import os
import subprocess
import sys

from taskstats_fast import recording

from sample_records import exact_records

CLI = [sys.executable, "-m", "taskstats_fast"]


def summary(*paths):
    return subprocess.run([*CLI, "summary", *map(str, paths)], capture_output=True, text=True,
                          timeout=60)


def test_summary_of_a_csv_that_is_not_a_recording(tmp_path):
    notes = tmp_path / "notes.csv"
    notes.write_text("name,value\nalpha,1\n")
    res = summary(notes)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert f"{notes}: not a recording: its header has no version, kind, layout columns" \
        in res.stderr
    assert "ArrowKeyError" not in res.stderr


def test_summary_of_random_bytes_named_npy(tmp_path):
    junk = tmp_path / "junk.npy"
    junk.write_bytes(os.urandom(4096))
    res = summary(junk)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert f"{junk}: not a recording: not an npy file" in res.stderr
    assert "allow_pickle" not in res.stderr


def test_summary_of_a_dataset_with_a_damaged_file_reads_the_others(tmp_path):
    root = tmp_path / "exits"
    sink = recording.FileSink(str(root), "parquet", rotate_bytes=1, flush_records=6)
    records = exact_records()
    sink.write(records[:6])
    sink.write(records[6:])
    first, _ = sink.close()
    with open(first, "r+b") as f:
        f.truncate(os.path.getsize(first) // 2)
    notes = os.path.join(os.path.dirname(first), "notes.csv")
    with open(notes, "w") as f:
        f.write("a,b\n1,2\n")
    res = summary(root)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert f"skipped {first}: not a recording" in res.stderr
    assert f"skipped {notes}: not a recording" in res.stderr
    assert f"{len(records) - 6:,} records" in res.stdout      # the readable file is summarised
