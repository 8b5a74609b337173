"""Recorder and file formats without a kernel: datasets readable by pyarrow.dataset, rotation,
per-file metadata, single files, in-progress files, and reading recordings back."""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
import pyarrow.dataset as ds
import pytest

import taskstats_fast as tsf
from taskstats_fast import recording

from sample_records import batch


def data_files(root):
    return recording.find_files([str(root)])


# ---- datasets ----------------------------------------------------------------------------

@pytest.mark.parametrize("fmt,ds_format", [("parquet", "parquet"), ("arrow", "arrow"),
                                           ("csv", "csv")])
def test_dataset_reads_back_with_pyarrow_dataset(tmp_path, fmt, ds_format):
    root = tmp_path / "exits"
    with recording.Recorder(str(root), fmt, flush_records=50, hostname="web-1") as rec:
        rec.write(batch(120))
        rec.write(batch(30, start=1000, comm=b"other"))
    (path,) = rec.files
    rel = os.path.relpath(path, root).split(os.sep)
    assert rel[0] == "host=web-1" and rel[1].startswith("date=") and rel[2].startswith("part-")
    table = ds.dataset(str(root), format=ds_format, partitioning="hive").to_table()
    assert table.num_rows == 150
    assert set(table.column("host").to_pylist()) == {"web-1"}
    pids = table.column("ac_pid").to_pylist()
    assert sorted(pids) == list(range(120)) + list(range(1000, 1030))
    row = pids.index(1005)
    assert table.column("ac_comm")[row].as_py() == "other"
    assert table.column("ac_utime_us")[row].as_py() == 10050
    assert table.column("ac_exitcode")[row].as_py() == (1005 % 256) << 8


def test_datasets_of_two_hosts_form_one_dataset(tmp_path):
    root = tmp_path / "fleet"
    for host, n in (("a", 10), ("b", 25)):
        with recording.Recorder(str(root), "parquet", hostname=host) as rec:
            rec.write(batch(n))
    table = ds.dataset(str(root), format="parquet", partitioning="hive").to_table()
    counts = table.group_by("host").aggregate([("ac_pid", "count")]).to_pydict()
    assert dict(zip(counts["host"], counts["ac_pid_count"])) == {"a": 10, "b": 25}


def test_npy_dataset_and_sidecar(tmp_path):
    root = tmp_path / "exits"
    with recording.Recorder(str(root), "npy") as rec:
        rec.write(batch(40))
    (path,) = rec.files
    arr = np.load(path)
    assert arr.dtype == tsf.DTYPE and arr["ac_pid"].tolist() == list(range(40))
    sidecar = os.path.join(os.path.dirname(path), "_" + os.path.basename(path) + ".json")
    with open(sidecar) as f:
        assert json.load(f)["records"] == 40


def test_metadata_of_each_file(tmp_path):
    root = tmp_path / "exits"
    rec = recording.Recorder(str(root), "parquet", metadata={"cpus": "0-1"})
    rec.update_counters({"lost": 2, "overruns": 1})
    rec.write(batch(5, version=14))
    rec.write(batch(5, start=5))
    rec.update_counters({"lost": 7, "overruns": 1})
    (path,) = rec.close()
    meta = recording.read_metadata(path)
    assert meta["hostname"] == os.uname().nodename
    assert meta["kernel_release"] == os.uname().release
    assert meta["taskstats_versions"] == [14, 16] and meta["taskstats_version"] == 16
    assert meta["cpus"] == "0-1"
    assert meta["records"] == 10 and meta["pid_records"] == 10 and meta["tgid_records"] == 0
    assert meta["lost"] == 7 and meta["overruns"] == 1
    assert meta["first_record_ns"] == 1_800_000_000_000_000_000
    assert meta["last_record_ns"] == 1_800_000_000_000_000_004
    assert meta["first_record"].startswith("2027-01-15T")
    assert meta["file_started"] <= meta["file_finished"]


@pytest.mark.parametrize("fmt", recording.FORMATS)
def test_metadata_in_every_format(tmp_path, fmt):
    path = recording.write_file(str(tmp_path / f"one.{fmt}"), batch(3), metadata={"x": 1})
    meta = recording.read_metadata(path)
    assert meta["x"] == 1 and meta["records"] == 3 and meta["format_version"] == recording.FORMAT_VERSION == 3


# ---- rotation ----------------------------------------------------------------------------

def test_rotation_by_size_keeps_every_record_and_splits_the_loss(tmp_path):
    root = tmp_path / "exits"
    rec = recording.Recorder(str(root), "parquet", rotate_bytes=1, flush_records=10)
    for i in range(4):
        rec.update_counters({"lost": 3 * i})
        rec.write(batch(10, start=100 * i))
    rec.update_counters({"lost": 20})
    files = rec.close()
    assert len(files) >= 3
    metas = [recording.read_metadata(f) for f in files]
    assert sum(m["records"] for m in metas) == 40
    assert [m["sequence"] for m in metas] == list(range(len(files)))
    assert sum(m["lost"] for m in metas) == 20 and metas[-1]["lost_since_start"] == 20
    table = recording.read_table([str(root)])
    assert sorted(table.column("ac_pid").to_pylist()) == sorted(
        p for i in range(4) for p in range(100 * i, 100 * i + 10))


def test_rotation_by_time(tmp_path):
    root = tmp_path / "exits"
    rec = recording.Recorder(str(root), "npy", rotate_seconds=0.05, flush_records=1)
    rec.write(batch(3))
    time.sleep(0.1)
    rec.write(batch(3, start=3))
    time.sleep(0.1)
    rec.tick()           # a quiet recording rotates too
    rec.write(batch(3, start=6))
    files = rec.close()
    assert len(files) == 3
    assert [np.load(f)["ac_pid"].tolist() for f in files] == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]


def test_single_file_refuses_rotation(tmp_path):
    with pytest.raises(ValueError, match="single file"):
        recording.Recorder(str(tmp_path / "x.parquet"), rotate_bytes=100)


# ---- safety ------------------------------------------------------------------------------

def test_write_copies_its_input(tmp_path):
    recs = batch(4)
    with recording.Recorder(str(tmp_path / "x.npy")) as rec:
        rec.write(recs)
        recs["ac_pid"] = 0          # the caller reuses its array
    assert np.load(tmp_path / "x.npy")["ac_pid"].tolist() == [0, 1, 2, 3]


def test_in_progress_files_are_hidden_and_npy_stays_loadable(tmp_path):
    root = tmp_path / "exits"
    rec = recording.Recorder(str(root), "npy", flush_records=5)
    rec.write(batch(7))               # 7 written, nothing buffered (flush at >= 5)
    assert data_files(root) == []     # readers never see a half-written file
    (hidden,) = [os.path.join(d, n) for d, _, names in os.walk(root) for n in names]
    assert os.path.basename(hidden).startswith(".") and hidden.endswith(".inprogress")
    with open(hidden, "rb") as f:     # a crash now would leave every flushed row loadable
        assert np.load(f)["ac_pid"].tolist() == list(range(7))
    rec.close()
    assert len(data_files(root)) == 1 and not os.path.exists(hidden)


def test_empty_recording_still_leaves_a_file_with_metadata(tmp_path):
    (path,) = recording.Recorder(str(tmp_path / "exits"), "parquet").close()
    assert recording.read_metadata(path)["records"] == 0
    assert recording.read_table([path]).num_rows == 0


# ---- formats and reading -----------------------------------------------------------------

@pytest.mark.parametrize("path,explicit,expected", [
    ("x.parquet", None, "parquet"), ("x.csv", None, "csv"), ("x.npy", None, "npy"),
    ("x.arrow", None, "arrow"), ("x.feather", None, "arrow"), ("dir", "csv", "csv"),
])
def test_detect_format(path, explicit, expected):
    assert recording.detect_format(path, explicit) == expected


def test_format_and_extension_must_agree():
    with pytest.raises(ValueError, match="csv extension"):
        recording.detect_format("x.csv", "parquet")


@pytest.mark.parametrize("fmt", recording.FORMATS)
def test_read_columns_round_trip(tmp_path, fmt):
    recs = np.concatenate([batch(3), batch(2, start=10, version=13)]).astype(tsf.DTYPE)
    path = recording.write_file(str(tmp_path / f"r.{fmt}"), recs)
    cols = recording.read_columns([path], ["ac_pid", "ac_comm", "kind", "irq_count", "time"])
    assert cols["ac_pid"][0].tolist() == [0, 1, 2, 10, 11]
    assert cols["ac_comm"][0].tolist() == ["job"] * 5
    assert cols["kind"][0].tolist() == [0] * 5
    assert cols["irq_count"][1].tolist() == [True, True, True, False, False]  # v13 has no irq
    assert cols["time"][0][0] == np.datetime64(1_800_000_000_000_000_000, "ns")


def test_npy_recordings_read_without_pyarrow(tmp_path, monkeypatch):
    path = recording.write_file(str(tmp_path / "r.npy"), batch(3))
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    assert recording.read_columns([path], ["ac_pid"])["ac_pid"][0].tolist() == [0, 1, 2]
    with pytest.raises(tsf.MissingExtraError, match=r"taskstats_fast\[arrow\]"):
        recording.Recorder(str(tmp_path / "x.parquet"))


def test_find_files_rejects_what_is_not_a_recording(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ValueError, match="not a recording"):
        recording.find_files([str(tmp_path / "notes.txt")])
    with pytest.raises(FileNotFoundError):
        recording.find_files([str(tmp_path / "missing.parquet")])


# ---- the writer thread -------------------------------------------------------------------

def test_background_writer_keeps_order_counters_and_every_record(tmp_path):
    root = tmp_path / "exits"
    writer = recording.BackgroundWriter(
        recording.Recorder(str(root), "npy", rotate_bytes=1, flush_records=10),
        max_queued_records=15)          # smaller than what is written: write() must wait
    for i in range(5):
        writer.update_counters({"lost": i})
        writer.write(batch(10, start=10 * i), copy=False)
    files = writer.close()
    assert writer.buffered == 0 and writer.records_written == 50
    assert [np.load(f)["ac_pid"].tolist() for f in files] == \
        [list(range(10 * i, 10 * i + 10)) for i in range(5)]
    assert [recording.read_metadata(f)["lost_since_start"] for f in files] == list(range(5))


def test_background_writer_reports_a_failure_to_the_caller(tmp_path):
    rec = recording.Recorder(str(tmp_path / "x.npy"), flush_records=1)
    writer = recording.BackgroundWriter(rec)
    writer.write(np.zeros(3, np.float64))   # not DTYPE: the writer thread fails
    with pytest.raises(TypeError, match="DTYPE"):
        for _ in range(100):
            time.sleep(0.01)
            writer.tick()
    writer.close()                           # raised once, not again
