"""Reading recordings back, for users and forever: the format registry round-trips every field
exactly, files say their schema version and readers check it, the files 0.1.0 wrote still
load, a layout grown to a (test-only) v18 reads today's files and 0.1.0's, and files that are
not recordings get one clear error naming them.

Expected values come from records we encode ourselves (tests/wire.py) and from real kernel
captures; tests/data/recordings-0.1.0/records.npy is what the 0.1.0 fixtures were written from.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import warnings

import numpy as np
import pyarrow.parquet as pq
import pytest

import taskstats_fast as tsf
from taskstats_fast import layout, recording
from taskstats_fast import schema as columns
from taskstats_fast.recording import FORMAT, FORMATS

from sample_records import exact_records

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "data", "recordings-0.1.0")


def same(a, b):
    """Equal record arrays: the same dtype and every field equal, byte for byte (alignment
    holes excepted: decode leaves them as it finds them)."""
    return a.dtype == b.dtype and len(a) == len(b) and all(
        a[name].tobytes() == b[name].tobytes() for name in layout.RECORD_FIELDS)


# ---- the registry -------------------------------------------------------------------------

def test_each_format_is_one_entry():
    assert FORMATS == tuple(FORMAT) == ("parquet", "arrow", "npy", "csv")
    extensions = [e for f in FORMAT.values() for e in (f.extension, *f.also)]
    assert len(extensions) == len(set(extensions))
    for entry in FORMAT.values():
        assert recording.format_of_path("x" + entry.extension) is entry
        assert callable(entry.writer) and callable(entry.reader)
        assert entry.metadata in recording.MetadataPlace
        assert (entry.schema_metadata is not None) == (entry.metadata is recording.MetadataPlace.SCHEMA)


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_round_trips_every_field_exactly(tmp_path, fmt):
    records = exact_records()
    assert records["flags"][-1] == tsf.FLAG_NEWER_VERSION and records["ac_utime"][-1] > 1 << 63
    path = recording.write_file(str(tmp_path / f"r.{fmt}"), records)
    back = tsf.read_records(path)
    for name in layout.RECORD_FIELDS:
        assert np.array_equal(back[name], records[name]), name
    assert same(back, records)


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_dataset_reads_back_whole_and_in_order(tmp_path, fmt):
    records = exact_records()
    sink = recording.FileSink(str(tmp_path / "exits"), fmt, rotate_bytes=1, flush_records=5)
    for lo in range(0, len(records), 5):
        sink.write(records[lo:lo + 5])
    files = sink.close()
    assert len(files) == -(-len(records) // 5)
    assert same(tsf.read_records(str(tmp_path / "exits")), records)
    frame = tsf.read_frame(str(tmp_path / "exits"))
    assert frame["ac_pid"].tolist() == tsf.to_pandas(records)["ac_pid"].tolist()


def test_columns_round_trip_through_the_table_without_a_file():
    records = exact_records()
    assert same(columns.records_from_table(columns.file_table(records)), records)
    # the public to_arrow table (microsecond timestamps) loses only the sub-microsecond part
    back = columns.records_from_table(tsf.to_arrow(records))
    assert np.array_equal(back["time_ns"], records["time_ns"] // 1000 * 1000)
    assert np.array_equal(back["ac_utime"], records["ac_utime"])


def test_column_kinds_are_an_enum_with_one_converter_each():
    kinds = {c.kind for c in columns.COLUMNS}
    assert kinds == set(columns.ColumnKind)
    assert all(isinstance(c.kind, columns.ColumnKind) for c in columns.COLUMNS)
    assert set(columns._CONVERTER) == set(columns.ColumnKind)


# ---- the schema version ---------------------------------------------------------------------

def test_files_say_their_schema_version(tmp_path):
    for fmt in FORMATS:
        path = recording.write_file(str(tmp_path / f"r.{fmt}"), exact_records()[:2])
        assert recording.read_metadata(path)["format_version"] == recording.FORMAT_VERSION


def _newer(path, fmt):
    """Rewrite ``path``'s metadata as if a future version with a newer schema wrote it."""
    meta = recording.read_metadata(path)
    meta.update(format_version=recording.FORMAT_VERSION + 1, library_version="9.0.0")
    if fmt == "parquet":
        table = pq.read_table(path)
        pq.write_table(table.replace_schema_metadata(
            {recording.METADATA_KEY: json.dumps(meta)}), path)
    else:
        with open(path + ".json", "w") as f:
            json.dump(meta, f)


@pytest.mark.parametrize("fmt", ["parquet", "npy"])
def test_a_newer_schema_is_one_clear_error(tmp_path, fmt):
    path = recording.write_file(str(tmp_path / f"r.{fmt}"), exact_records())
    _newer(path, fmt)
    with pytest.raises(tsf.NewerFormatError) as info:
        tsf.read_records(path)
    text = str(info.value)
    assert text.startswith(path) and "9.0.0" in text and "upgrade" in text
    assert f"schema version {recording.FORMAT_VERSION + 1}" in text


# ---- 0.1.0's files ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def expected_010():
    return np.load(os.path.join(FIXTURES, "records.npy"))


@pytest.mark.parametrize("name", ["one.parquet", "one.arrow", "one.npy", "one.csv",
                                  "dataset-parquet", "dataset-npy"])
def test_files_written_by_0_1_0_still_load_exactly(name, expected_010):
    path = os.path.join(FIXTURES, name)
    back = tsf.read_records(path)
    assert same(back, expected_010.astype(tsf.DTYPE))
    for field in ("irq_count", "cpu_delay_max", "ac_btime64", "cpu_delay_max_ts_sec"):
        assert np.array_equal(tsf.carried(back, field), tsf.carried(expected_010, field))
    for meta in (recording.read_metadata(f) for f in recording.find_files(path)):
        assert meta["format_version"] == 1 and meta["library_version"] == "0.1.0"


def test_a_snapshot_written_by_0_1_0_still_loads():
    path = os.path.join(FIXTURES, "snapshot.parquet")
    back = tsf.read_records(path)
    meta = recording.read_metadata(path)
    assert meta["source"] == "snapshot" and len(back) == meta["records"] > 0
    assert (back["kind"] == tsf.KIND_PID).all() and (back["ac_pid"] > 0).all()
    assert 1 in back["ac_pid"]


# ---- a grown layout ---------------------------------------------------------------------------

V18 = layout.CURRENT.extended(
    [layout.Field("hypothetical_wait_count", "__u64", 18, "count", "a future delay count"),
     layout.Field("hypothetical_flags", "__u32", 18, "", "a future 32-bit field")], 18)


def test_the_v18_test_layout_grows_the_struct():
    assert V18.MAX_VERSION == 18 and V18.STRUCT_SIZE[17] == layout.STRUCT_SIZE[17]
    assert V18.STRUCT_SIZE[18] > layout.STRUCT_SIZE[17]
    assert V18.DTYPE.itemsize > layout.DTYPE.itemsize
    for name in layout.RECORD_FIELDS:
        assert V18.DTYPE.fields[name][0] == layout.DTYPE.fields[name][0]


def _read_v18(paths):
    return recording.Recordings(paths, schema=columns.Schema(V18)).records()


def _check_v18(back, expected):
    assert back.dtype == V18.DTYPE and len(back) == len(expected)
    for name in layout.RECORD_FIELDS:
        assert np.array_equal(back[name], expected[name]), name
    for new in ("hypothetical_wait_count", "hypothetical_flags"):
        assert not back[new].any()
        assert not V18.carried(back, new).any()     # a zero that means "not reported"
    assert np.array_equal(V18.carried(back, "irq_count"), tsf.carried(expected, "irq_count"))


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_v18_layout_reads_files_written_today(tmp_path, fmt):
    records = exact_records()
    path = recording.write_file(str(tmp_path / f"r.{fmt}"), records)
    _check_v18(_read_v18(path), records)


@pytest.mark.parametrize("name", ["one.parquet", "one.arrow", "one.npy", "one.csv",
                                  "dataset-parquet", "dataset-npy"])
def test_a_v18_layout_reads_the_0_1_0_files(name, expected_010):
    _check_v18(_read_v18(os.path.join(FIXTURES, name)), expected_010)


def test_v18_columns_name_the_new_fields():
    schema = columns.Schema(V18)
    assert schema.by_name["hypothetical_wait_count"].since == 18
    assert schema.by_name["hypothetical_wait_count"].nullable


# ---- what is not a recording ----------------------------------------------------------------

def _bad_files(tmp_path):
    (tmp_path / "notes.csv").write_text("name,value\nalpha,1\n")
    (tmp_path / "random.npy").write_bytes(os.urandom(3000))
    (tmp_path / "floats.npy").write_bytes(b"")
    np.save(tmp_path / "floats.npy", np.arange(10.0))
    (tmp_path / "random.parquet").write_bytes(os.urandom(3000))
    (tmp_path / "random.arrow").write_bytes(os.urandom(3000))
    (tmp_path / "random.csv").write_bytes(os.urandom(3000))
    good = recording.write_file(str(tmp_path / "good.parquet"), exact_records())
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(open(good, "rb").read()[:2000])
    return ["notes.csv", "random.npy", "floats.npy", "random.parquet", "random.arrow",
            "random.csv", "cut.parquet"]


def test_each_kind_of_bad_file_is_one_clear_error_naming_it(tmp_path):
    for name in _bad_files(tmp_path):
        path = str(tmp_path / name)
        with pytest.raises(tsf.NotARecordingError) as info:
            tsf.read_records(path)
        text = str(info.value)
        assert text.startswith(f"{path}: not a recording: "), text
        assert "allow_pickle" not in text and info.value.path == path
        assert isinstance(info.value, ValueError) and isinstance(info.value, tsf.TaskstatsError)


def test_a_dataset_with_a_damaged_file_names_it_and_reads_the_others(tmp_path):
    root = tmp_path / "exits"
    records = exact_records()
    sink = recording.FileSink(str(root), "parquet", rotate_bytes=1, flush_records=6)
    sink.write(records[:6])
    sink.write(records[6:])
    first, second = sink.close()
    shutil.copy(first, first + ".bak")
    with open(first, "r+b") as f:      # damaged: the footer is gone
        f.truncate(os.path.getsize(first) // 2)
    notes = os.path.join(os.path.dirname(first), "notes.csv")
    with open(notes, "w") as f:
        f.write("a,b\n1,2\n")
    with pytest.raises(tsf.NotARecordingError) as info:
        tsf.read_records(str(root))
    assert info.value.path in (first, notes)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        back = tsf.read_records(str(root), skip_damaged=True)
    assert same(back, records[6:])
    named = sorted(str(w.message) for w in caught
                   if issubclass(w.category, recording.DamagedRecordingWarning))
    assert len(named) == 2 and any(first in t for t in named) and any(notes in t for t in named)
    found = recording.Recordings(str(root))
    assert len(found.records()) == len(records) - 6
    assert sorted(p for p, _ in found.damaged) == sorted([first, notes])


def test_random_bytes_never_reach_numpys_unpickler(tmp_path, monkeypatch):
    path = tmp_path / "x.npy"
    path.write_bytes(b"\x93NUMPY\x01\x00" + b"\x76\x00" + b"{'descr': '|O', 'fortran_order': "
                     b"False, 'shape': (3,), }".ljust(117) + b"\n" + os.urandom(64))
    monkeypatch.setattr(np, "load", lambda *a, **k: pytest.fail("np.load called"))
    with pytest.raises(tsf.NotARecordingError, match="not of taskstats_fast records"):
        tsf.read_records(str(path))


def test_0_1_0_fixture_script_is_kept_beside_its_files():
    assert os.path.exists(os.path.join(FIXTURES, "make_fixtures.py"))
    assert len(glob.glob(os.path.join(FIXTURES, "dataset-*", "*", "*", "*"))) == 6


# ---- format version 2 (main before the one naming table) -----------------------------------------
FORMAT2 = os.path.join(HERE, "data", "recordings-format2")


@pytest.mark.parametrize("fmt", FORMATS)
def test_format2_exit_files_read_exactly(fmt):
    if FORMAT[fmt].extra:
        pytest.importorskip("pyarrow")
    expected = np.load(os.path.join(FIXTURES, "records.npy"))
    back = tsf.read_records(os.path.join(FORMAT2, f"exits.{fmt}"))
    if fmt != "npy":   # tables hold text: invalid UTF-8 in a command name was replaced
        expected = columns.DEFAULT.records_from_table(columns.file_table(expected))
    for name in expected.dtype.names:
        if not name.startswith("_pad"):
            assert np.array_equal(back[name], expected[name]), name


@pytest.mark.parametrize("by", ("task", "process"))
@pytest.mark.parametrize("fmt", FORMATS)
def test_format2_interval_files_read_into_todays_rows(fmt, by):
    """Format 2 named interval columns by field (``ac_utime``, ``ac_btime64`` a number, ``flags``)
    and had no cgroup path: today's reader maps every old column onto today's row and leaves the
    path empty (format 2 never had it)."""
    if FORMAT[fmt].extra:
        pytest.importorskip("pyarrow")
    old = np.load(os.path.join(FORMAT2, f"expected-intervals-{by}.npy"))
    back = tsf.read_records(os.path.join(FORMAT2, f"intervals-{by}.{fmt}"))
    assert len(back) == len(old) == (9 if by == "task" else 6)
    for name in old.dtype.names:
        assert np.array_equal(back[name], old[name]), name
    assert (back["cgroup"] == b"").all()
    frame = tsf.read_frame(os.path.join(FORMAT2, f"intervals-{by}.{fmt}"))
    assert frame["ac_utime_us"].tolist() == old["ac_utime"].tolist()
    assert str(frame["ac_btime"].dtype) == "datetime64[ns, UTC]"
