"""to_pandas / to_arrow: column names and units, types, and missing values, without a kernel.

Records are built byte by byte with tests/wire.py and decoded by the real decoder, so each test
states the kernel's bytes and the table cell they must become.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import taskstats_fast as tsf
from taskstats_fast import layout
from taskstats_fast import schema as frames

from wire import aggr, stats, taskstats_msg

BTIME32 = 1_700_000_000          # fits the 32-bit ac_btime
BTIME64 = 5_000_000_000          # year 2128: only ac_btime64 can hold it


def record(version, values=None, *, kind=1, ident=4242, **extra):
    vals = {"ac_comm": b"worker", "ac_pid": ident, "ac_utime": 1500, "ac_stime": 250,
            "ac_btime": BTIME32, "cpu_count": 3, "cpu_delay_total": 9000, "hiwater_rss": 2048}
    vals.update({k: v for k, v in (values or {}).items()})
    vals = {k: v for k, v in vals.items() if layout.FIELD_BY_NAME[k].since <= version}
    return tsf.decode(taskstats_msg(aggr(kind, ident, stats(version, vals))))


@pytest.fixture
def mixed():
    """A v10 PID record, a v16 PID record and a v17 TGID record, as one array."""
    v10 = record(10, {"ac_btime64": BTIME64, "nvcsw": 7, "freepages_count": 2})
    v16 = record(16, {"ac_btime64": BTIME32, "compact_count": 5, "irq_delay_max": 800,
                      "irq_delay_min": 0, "cpu_delay_max": 4000, "ac_tgid": 4242})
    v17 = record(17, {"ac_comm": b"", "ac_btime": 0, "cpu_delay_max_ts_sec": 1_700_000_123,
                      "cpu_delay_max_ts_nsec": 456_789_000}, kind=2, ident=99)
    return np.concatenate([v10, v16, v17]).astype(tsf.DTYPE)


# ---- the schema -----------------------------------------------------------------------------

def test_every_kernel_field_lands_in_exactly_one_column():
    fields = [f.name for f in layout.FIELDS if not f.padding]
    meta = [name for name, _, _ in layout.META_FIELDS]
    assert sorted(frames.COLUMN_FOR_FIELD) == sorted(fields + meta)
    assert len({c.name for c in frames.COLUMNS}) == len(frames.COLUMNS)


@pytest.mark.parametrize("unit,suffix", [("us", "_us"), ("ns", "_ns"), ("KB", "_kb"),
                                         ("MB*us", "_mb_us"), ("bytes", "_bytes")])
def test_column_names_carry_the_unit(unit, suffix):
    names = [f.name for f in layout.FIELDS
             if f.unit == unit and frames.COLUMN_FOR_FIELD[f.name] != "ac_btime"
             and "_max_ts_" not in f.name]
    assert names, unit
    for name in names:
        assert frames.COLUMN_FOR_FIELD[name].endswith(suffix), name


def test_counts_keep_the_kernel_name():
    for f in layout.FIELDS:
        if f.unit == "count":
            assert frames.COLUMN_FOR_FIELD[f.name] == f.name


def test_arrow_schema_does_not_depend_on_the_data(mixed):
    empty = tsf.to_arrow(np.zeros(0, tsf.DTYPE))
    assert empty.schema == tsf.to_arrow(mixed).schema == frames.arrow_schema()
    assert list(tsf.to_pandas(np.zeros(0, tsf.DTYPE)).dtypes) == list(tsf.to_pandas(mixed).dtypes)


# ---- pandas ---------------------------------------------------------------------------------

def test_pandas_types(mixed):
    df = tsf.to_pandas(mixed)
    assert list(df.columns) == [c.name for c in frames.COLUMNS]
    assert df["ac_utime_us"].dtype == np.int64          # every version has it: plain numpy
    assert df["nvcsw"].dtype == pd.Int64Dtype()          # v5: may be missing, nullable
    assert df["ac_tgid"].dtype == pd.UInt32Dtype()
    assert df["ac_nice"].dtype == np.int8
    assert isinstance(df["kind"].dtype, pd.CategoricalDtype)
    assert list(df["kind"].cat.categories) == ["pid", "tgid"]
    for name in ("ac_btime", "time", "cpu_delay_max_ts"):
        assert str(df[name].dtype) == "datetime64[ns, UTC]", name
    assert df["ac_comm"].map(type).eq(str).all()


def test_pandas_values_and_units(mixed):
    df = tsf.to_pandas(mixed)
    assert df["ac_utime_us"].tolist() == [1500, 1500, 1500]
    assert df["cpu_delay_total_ns"].tolist() == [9000, 9000, 9000]
    assert df["hiwater_rss_kb"].tolist()[:2] == [2048, 2048]
    assert df["ac_comm"].tolist() == ["worker", "worker", ""]
    assert df["kind"].tolist() == ["pid", "pid", "tgid"]
    assert df["id"].tolist() == [4242, 4242, 99]


def test_fields_newer_than_the_record_are_missing_not_zero(mixed):
    df = tsf.to_pandas(mixed)
    v10, v16, v17 = range(3)
    # present in v10 (nvcsw v5, freepages v7), carried as given
    assert df.loc[v10, "nvcsw"] == 7 and df.loc[v10, "freepages_count"] == 2
    # newer than v10: missing
    for name in ("compact_count", "ac_tgid", "irq_count", "irq_delay_max_ns", "wpcopy_count"):
        assert df.loc[v10, name] is pd.NA, name
    # the v16 record carries them, including a real zero
    assert df.loc[v16, "compact_count"] == 5
    assert df.loc[v16, "irq_delay_max_ns"] == 800
    assert df.loc[v16, "irq_delay_min_ns"] == 0
    assert df.loc[v16, "ac_tgid"] == 4242
    # v17 timestamps: missing before v17, NaT for a zero timespec
    assert pd.isna(df.loc[v16, "cpu_delay_max_ts"])
    assert df.loc[v17, "cpu_delay_max_ts"] == pd.Timestamp(1_700_000_123_456_789_000, tz="UTC")
    assert pd.isna(df.loc[v17, "blkio_delay_max_ts"])
    assert df["nvcsw"].isna().sum() == 0


def test_btime_prefers_the_64bit_field_where_the_version_has_it():
    v9 = record(9, {"ac_btime": BTIME32})
    v10 = record(10, {"ac_btime": BTIME32, "ac_btime64": BTIME64})
    df = tsf.to_pandas(np.concatenate([v9, v10]).astype(tsf.DTYPE))
    assert df["ac_btime"].tolist() == [pd.Timestamp(BTIME32, unit="s", tz="UTC"),
                                       pd.Timestamp(BTIME64, unit="s", tz="UTC")]


def test_tgid_record_without_begin_time_is_missing(mixed):
    assert pd.isna(tsf.to_pandas(mixed).loc[2, "ac_btime"])


def test_receive_time_is_a_timestamp_and_missing_when_decoded_from_bytes(mixed):
    mixed["time_ns"][0] = 1_700_000_000_123_456_789
    df = tsf.to_pandas(mixed)
    assert df.loc[0, "time"] == pd.Timestamp(1_700_000_000_123_456_789, tz="UTC")
    assert pd.isna(df.loc[1, "time"])


def test_nice_is_signed():
    rec = record(16, {"ac_nice": 256 - 20})
    assert tsf.to_pandas(rec)["ac_nice"].tolist() == [-20]


def test_comm_decoding_ascii_utf8_and_invalid_bytes():
    recs = np.concatenate([record(16, {"ac_comm": b"plain"}),
                           record(16, {"ac_comm": "héllo".encode()}),
                           record(16, {"ac_comm": b"bad\xff"})]).astype(tsf.DTYPE)
    assert tsf.to_pandas(recs)["ac_comm"].tolist() == ["plain", "héllo", "bad\ufffd"]


@pytest.mark.parametrize("raw,expected", [(b"ab\0cd", "ab"), (b"x" * 32, "x" * 32),
                                          (b"", ""), ("é\0\xff".encode("latin1"), "\ufffd")])
def test_comm_is_a_c_string_in_pandas_and_arrow(raw, expected):
    rec = record(16, {"ac_comm": raw})
    assert tsf.to_pandas(rec)["ac_comm"].tolist() == [expected]
    assert tsf.to_arrow(rec).column("ac_comm").to_pylist() == [expected]


def test_frames_refuse_other_arrays():
    with pytest.raises(TypeError, match="DTYPE"):
        tsf.to_pandas(np.zeros(3))


# ---- Arrow ----------------------------------------------------------------------------------

def test_arrow_types_and_nulls(mixed):
    table = tsf.to_arrow(mixed)
    schema = table.schema
    assert schema.field("ac_utime_us").type == pa.int64()
    assert not schema.field("ac_utime_us").nullable
    assert schema.field("nvcsw").nullable
    assert schema.field("ac_comm").type == pa.string()
    assert schema.field("kind").type == pa.dictionary(pa.int8(), pa.string())
    assert schema.field("ac_btime").type == pa.timestamp("us", tz="UTC")
    assert schema.field("ac_utime_us").metadata[b"unit"] == b"us"
    assert table.column("compact_count").to_pylist() == [None, 5, 0]
    assert table.column("irq_delay_max_ns").null_count == 1
    assert table.column("kind").to_pylist() == ["pid", "pid", "tgid"]
    assert table.column("ac_btime").to_pylist()[2] is None
    assert table.column("cpu_delay_max_ts").cast(pa.int64()).to_pylist()[2] == 1_700_000_123_456_789


def test_arrow_schema_metadata():
    table = tsf.to_arrow(record(16), metadata={"taskstats_fast": "{}"})
    assert table.schema.metadata == {b"taskstats_fast": b"{}"}


def test_pandas_and_arrow_agree(mixed):
    table = tsf.to_arrow(mixed)
    direct = tsf.to_pandas(mixed)
    for name in ("ac_utime_us", "nvcsw", "compact_count", "ac_comm", "id", "kind"):
        assert table.column(name).to_pylist() == \
            [None if v is pd.NA else v for v in direct[name].tolist()], name


# ---- without the extras ---------------------------------------------------------------------

@pytest.mark.parametrize("module,call,extra", [
    ("pandas", "to_pandas", "taskstats_fast[pandas]"),
    ("pyarrow", "to_arrow", "taskstats_fast[arrow]"),
])
def test_missing_extra_names_it(monkeypatch, module, call, extra):
    monkeypatch.setitem(sys.modules, module, None)   # makes `import module` fail
    with pytest.raises(tsf.MissingExtraError, match=extra.replace("[", r"\[").replace("]", r"\]")) as err:
        getattr(tsf, call)(record(16))
    assert isinstance(err.value, ImportError)


def test_core_works_without_pandas_and_pyarrow():
    """A fresh interpreter where neither can be imported: the package, decoding and the numpy
    column view work; the table functions say which extra to install."""
    code = r"""
import sys
sys.modules["pandas"] = None
sys.modules["pyarrow"] = None
import taskstats_fast as tsf
from taskstats_fast import schema as frames
recs = tsf.decode(bytes.fromhex(sys.argv[1]))
assert frames.columns(recs)["ac_utime_us"][0].tolist() == [1500]
for call in ("to_pandas", "to_arrow"):
    try:
        getattr(tsf, call)(recs)
    except tsf.MissingExtraError as e:
        print(e)
"""
    raw = taskstats_msg(aggr(1, 7, stats(16, {"ac_utime": 1500}))).hex()
    out = subprocess.run([sys.executable, "-c", code, raw], capture_output=True, text=True,
                         check=True).stdout
    assert "pip install 'taskstats_fast[pandas]'" in out
    assert "pip install 'taskstats_fast[arrow]'" in out
