"""Records as tables and back: ``to_pandas``, ``to_arrow``, the column schema they share, the
tables recorded files hold, and the inverse mapping from such a table back to ``DTYPE`` records.

This module owns how a ``DTYPE`` array becomes columns for people and for other tools (the column
names and units, their types, and which values are missing) and how a table becomes records
again.  Every column has a ``ColumnKind``; each kind has one converter that does every
conversion for its columns (numpy, pandas, Arrow, and back).  The rules (the README's field
reference lists every column):

* **Names are the kernel's field names plus a unit suffix**: ``_us`` (microseconds), ``_ns``
  (nanoseconds), ``_kb`` (kilobytes), ``_mb_us`` (MB times microseconds), ``_bytes``.  Counts and
  unit-less fields keep the bare kernel name (``cpu_count``, ``nvcsw``, ``ac_uid``).
* **Points in time are UTC timestamps**: ``ac_btime`` (from ``ac_btime64`` where the record has
  it and it is set, else the 32-bit ``ac_btime``), ``time`` (when the record was received, from ``time_ns``) and
  the v17 ``<class>_delay_max_ts`` (from the ``tv_sec``/``tv_nsec`` pair).  A zero in the kernel's
  field means "not known" (TGID aggregates carry no begin time; a delay class that never
  happened has no timestamp; records decoded from bytes have no receive time) and becomes null.
  pandas gets ``datetime64[ns, UTC]``; Arrow gets ``timestamp[us, UTC]``, the resolution Parquet
  readers such as Spark accept.
* **Fields a record's struct version does not carry are missing values, not zeros** (pandas
  nullable dtypes, Arrow nulls).  Fields every decodable version (4 and newer) carries can never be
  missing and use plain numpy dtypes in pandas; all others use nullable ones whatever the data, so
  a column's dtype never depends on which kernels a dataset came from.
* Unsigned 64-bit kernel counters become signed ``int64`` (no real value reaches 2**63, and
  Spark, Java and many SQL engines have no unsigned 64-bit type).  ``ac_nice`` is the kernel's
  signed nice value stored in a byte; it becomes ``int8`` (-20..19).
* ``ac_comm`` is ``str`` (UTF-8, invalid bytes replaced); ``kind`` is a category, "pid" or
  "tgid".

pandas and pyarrow are optional (``pip install taskstats_fast[pandas]`` / ``[arrow]``): importing
this module needs neither; calling a function that does raises ``MissingExtraError`` naming the
extra.  Conversions are vectorised; the only per-row Python work is decoding the (rare) command
names that are not plain ASCII.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from . import layout
from .errors import MissingExtraError

if TYPE_CHECKING:  # pragma: no cover - typing only
    import pandas
    import pyarrow

__all__ = ["Column", "ColumnKind", "Clock", "Schema", "TableSchema", "RowSchema", "COLUMNS",
           "COLUMN_BY_NAME", "COLUMN_FOR_FIELD", "columns", "to_pandas", "to_arrow", "arrow_schema",
           "file_schema", "file_table", "records_from_table", "require", "DELAY_CLASSES", "KIND_CATEGORIES",
           "ROW_COLUMNS", "PSI_RESOURCES", "PSI_KINDS", "column_name", "row_columns", "schema_of",
           "wait_status_columns"]

#: The delay classes in kernel order: ``<class>_count``, ``<class>_delay_total_ns``, ...
DELAY_CLASSES: Tuple[str, ...] = tuple(c.name for c in layout.DELAY_CLASSES)

_UNIT_SUFFIX = {"us": "_us", "ns": "_ns", "KB": "_kb", "MB*us": "_mb_us", "bytes": "_bytes",
                "%": "_pct", "bytes/s": "_bytes_per_s"}
#: The categories of the ``kind`` column (code 0 = KIND_PID, 1 = KIND_TGID).
KIND_CATEGORIES: Tuple[str, ...] = ("pid", "tgid")
_KIND_VALUES = (layout.KIND_PID, layout.KIND_TGID)
#: Resolution of the timestamps of ``to_arrow`` (what Parquet readers such as Spark accept) and
#: of recorded files (every nanosecond of the record, so files round-trip exactly).
_TABLE_UNIT = "us"
_FILE_UNIT = "ns"
_NS_PER_S = 1_000_000_000
_ARROW_INT = {"i1": "int8", "u1": "uint8", "u2": "uint16", "u4": "uint32", "i8": "int64"}


class ColumnKind(str, enum.Enum):
    """What a column holds; each kind has one converter (``_CONVERTER``)."""

    INT = "int"
    STR = "str"
    CATEGORY = "category"
    TIMESTAMP = "timestamp"
    #: a part of a wait status (``exit_code``, ``exit_signal``, ``core_dumped``), computed
    #: from ``ac_exitcode`` when a table is built; files keep the raw status, readers ignore it
    WAIT_STATUS = "wait_status"


class Clock(enum.Enum):
    """How a TIMESTAMP column's instant is stored in a record."""

    #: one u64 of nanoseconds since the epoch (``time_ns``)
    NANOSECONDS = "ns"
    #: seconds since the epoch in ``ac_btime`` (u32, clamped) and ``ac_btime64`` (since v10)
    BEGIN_SECONDS = "btime"
    #: a ``struct timespec64`` as a (tv_sec, tv_nsec) pair of s64
    TIMESPEC = "timespec"
    #: one u64 of whole seconds since the epoch (accounting rows' ``ac_btime64``)
    SECONDS = "s"


@dataclass(frozen=True)
class Column:
    """One column of ``to_pandas``/``to_arrow``.

    ``sources`` are the ``DTYPE`` fields it is computed from; ``kind`` a ``ColumnKind`` (it
    compares equal to its value, "int", "str", "category" or "timestamp"); ``dtype`` the numpy
    type of an INT column; ``clock`` how a TIMESTAMP column is stored; ``since`` the struct
    version that added it (0 for our metadata), ``nullable`` whether a record can lack it (its
    struct version predates the field, or a zero means "unknown").
    """

    name: str
    sources: Tuple[str, ...]
    kind: ColumnKind
    unit: str
    since: int
    nullable: bool
    doc: str
    dtype: Optional[str] = None
    clock: Optional[Clock] = None
    #: WAIT_STATUS columns: which part ("code", "signal" or "core")
    part: Optional[str] = None
    #: STR columns: dictionary-encoded in Arrow and Parquet, a category in pandas (few values)
    dictionary: bool = False
    #: names the column had in files of older format versions (readers accept them)
    aliases: Tuple[str, ...] = ()


def _int_dtype(field: layout.Field) -> str:
    if field.name == "ac_nice":
        return "i1"
    return {"__u8": "u1", "__u16": "u2", "__u32": "u4", "__u64": "i8", "__s64": "i8"}[field.ctype]


def _build_columns(lay: Any) -> Tuple[Column, ...]:
    out: List[Column] = []
    for f in lay.FIELDS:
        if f.padding or f.name in ("ac_btime64",) or f.name.endswith("_delay_max_ts_nsec"):
            continue  # folded into the timestamp columns below
        may_lack = f.since > lay.MIN_VERSION
        if f.name == "ac_btime":
            out.append(Column("ac_btime", ("ac_btime", "ac_btime64"), ColumnKind.TIMESTAMP, "UTC",
                              f.since, True, "when the task began (null in TGID aggregates)",
                              clock=Clock.BEGIN_SECONDS))
        elif f.name.endswith("_delay_max_ts_sec"):
            prefix = f.name[:-len("_delay_max_ts_sec")]
            out.append(Column(f"{prefix}_delay_max_ts", (f.name, f"{prefix}_delay_max_ts_nsec"),
                              ColumnKind.TIMESTAMP, "UTC", f.since, True,
                              f.doc.replace(" (seconds)", "") + " (null: no such delay yet)",
                              clock=Clock.TIMESPEC))
        elif f.ctype == "char":
            out.append(Column(f.name, (f.name,), ColumnKind.STR, "", f.since, may_lack, f.doc))
        else:
            suffix = _UNIT_SUFFIX.get(f.unit, "")
            name = f.name if f.name.endswith(suffix) else f.name + suffix
            out.append(Column(name, (f.name,), ColumnKind.INT, f.unit, f.since, may_lack, f.doc,
                              _int_dtype(f)))
            if f.name == "ac_exitcode":
                out.extend(wait_status_columns(f.name))
    meta_doc = {name: doc for name, _, doc in lay.META_FIELDS}
    out.append(Column("time", ("time_ns",), ColumnKind.TIMESTAMP, "UTC", 0, True,
                      "when the record was received (CLOCK_REALTIME; null when decoded from bytes)",
                      clock=Clock.NANOSECONDS))
    out.append(Column("kind", ("kind",), ColumnKind.CATEGORY, "", 0, False,
                      '"pid" (one thread) or "tgid" (thread group aggregate)'))
    for name in ("flags", "layout", "id", "seq", "shard"):
        fmt = dict((n, f) for n, f, _ in lay.META_FIELDS)[name]
        out.append(Column(name, (name,), ColumnKind.INT, "", 0, False, meta_doc[name], fmt))
    return tuple(out)


#: The parts of a wait status (``ac_exitcode``): name, part, numpy dtype, doc.
_WAIT_STATUS_PARTS = (
    ("exit_code", "code", "u1", "the exit code (exit(3) gives 3; null when a signal ended the task)"),
    ("exit_signal", "signal", "u1", "the signal that ended the task (null when it exited)"),
    ("core_dumped", "core", "?", "whether the ending signal dumped core"),
)


def wait_status_columns(source: str) -> List[Column]:
    """The decoded-status columns of a raw wait status field (for exits and interval rows)."""
    return [Column(name, (source,), ColumnKind.WAIT_STATUS, "", 0, part != "core", doc, dtype,
                   part=part) for name, part, dtype, doc in _WAIT_STATUS_PARTS]


def require(module: str, extra: str, purpose: str) -> Any:
    """Import ``module`` or raise ``MissingExtraError`` saying which extra installs it."""
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as e:
        raise MissingExtraError(
            f"{purpose} needs {module.split('.')[0]}, which is not installed: "
            f"pip install 'taskstats_fast[{extra}]'") from e


# Rows copied per step when splitting records into columns: one block of records (~2.9 MB)
# stays in cache while every field is copied out of it, instead of streaming the whole array
# from memory once per field.
_BLOCK = 4096


def _split_fields(records: np.ndarray) -> Dict[str, np.ndarray]:
    """Every field of ``records`` as its own contiguous array, copied block by block."""
    names = [n for n in records.dtype.names or () if not n.startswith("_pad")]
    out = {name: np.empty(len(records), records.dtype[name]) for name in names}
    for lo in range(0, len(records), _BLOCK):
        block = records[lo:lo + _BLOCK]
        for name in names:
            out[name][lo:lo + _BLOCK] = block[name]
    return out


def _c_strings(raw: np.ndarray) -> Tuple[Any, Any, Any]:
    """A ``char[N]`` column as C strings: (bytes as an (n, N) uint8 matrix with everything from
    the first NUL on zeroed, lengths up to the first NUL, rows with non-ASCII bytes)."""
    width = raw.dtype.itemsize
    matrix = raw.view(np.uint8).reshape(len(raw), width)
    nonzero = matrix != 0
    lengths = np.where(nonzero.all(axis=1), width, np.argmin(nonzero, axis=1))
    keep = np.arange(width) < lengths[:, None]
    if not keep.all() and (nonzero & ~keep).any():   # bytes after a NUL: not part of the name
        matrix = np.where(keep, matrix, 0).astype(np.uint8)
    non_ascii = (matrix >= 0x80).any(axis=1)
    return matrix, lengths, non_ascii


def _comm_strings(raw: np.ndarray) -> np.ndarray:
    """``char[N]`` command names as a numpy ``U`` array: ASCII in one vectorised cast, the rest
    decoded one by one (UTF-8, invalid bytes replaced)."""
    matrix, _, non_ascii = _c_strings(raw)
    width = raw.dtype.itemsize
    clean = np.ascontiguousarray(matrix).view(f"S{width}").reshape(len(raw))
    out = np.where(non_ascii, b"", clean).astype(f"U{width}")
    for i in np.flatnonzero(non_ascii):
        out[i] = bytes(clean[i]).decode("utf-8", "replace")
    return out


def _arrow_strings(raw: np.ndarray) -> Any:
    """``char[N]`` command names as an Arrow string array, built from buffers when every name
    is ASCII (no per-row work at all)."""
    import pyarrow as pa
    matrix, lengths, non_ascii = _c_strings(raw)
    if non_ascii.any():
        return pa.array(_comm_strings(raw), type=pa.string())
    keep = np.arange(matrix.shape[1]) < lengths[:, None]
    data = matrix[keep]
    offsets = np.zeros(len(raw) + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.StringArray.from_buffers(len(raw), pa.py_buffer(offsets), pa.py_buffer(data))


def _fixed_width_bytes(strings: Any, width: int) -> np.ndarray:
    """An Arrow string column as a numpy ``S<width>`` array (UTF-8, cut at ``width`` bytes),
    copied from the Arrow buffers without per-row Python work."""
    import pyarrow as pa
    import pyarrow.compute as pc
    array = pc.fill_null(strings, "").cast(pa.large_string())
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    n = len(array)
    offsets = np.frombuffer(array.buffers()[1], np.int64)[array.offset:array.offset + n + 1]
    data = np.frombuffer(array.buffers()[2] or b"", np.uint8)
    starts = offsets[:-1]
    lengths = np.minimum(offsets[1:] - starts, width)
    matrix = np.zeros((n, width), np.uint8)
    keep = np.arange(width) < lengths[:, None]
    rows, cols = np.nonzero(keep)
    matrix[rows, cols] = data[starts[rows] + cols]
    return matrix.view(f"S{width}").reshape(n)


# ---- one converter per column kind --------------------------------------------------------
class _IntConverter:
    def numpy(self, col: Column, fields: Mapping[str, np.ndarray], valid: Any) -> Tuple[Any, Any]:
        assert col.dtype is not None
        return fields[col.sources[0]].view(col.dtype), valid

    def pandas(self, pd: Any, col: Column, values: np.ndarray, valid: Any) -> Any:
        return pd.arrays.IntegerArray(values, ~valid) if valid is not None else values

    def arrow_type(self, pa: Any, col: Column, unit: str) -> Any:
        return getattr(pa, _ARROW_INT[str(col.dtype)])()

    def arrow(self, pa: Any, col: Column, values: np.ndarray, mask: Any, typ: Any) -> Any:
        return pa.array(values, type=typ, mask=mask)

    def restore(self, col: Column, column: Any, out: np.ndarray) -> None:
        import pyarrow.compute as pc
        values = pc.fill_null(column, 0).to_numpy(zero_copy_only=False)
        target = out.dtype[col.sources[0]]
        out[col.sources[0]] = values.astype(col.dtype, copy=False).view(target) \
            if values.dtype.itemsize == target.itemsize else values.astype(target)


class _StrConverter:
    def numpy(self, col: Column, fields: Mapping[str, np.ndarray], valid: Any,
              raw: bool = False) -> Tuple[Any, Any]:
        values = fields[col.sources[0]]
        return (values if raw else _comm_strings(values)), valid

    def pandas(self, pd: Any, col: Column, values: np.ndarray, valid: Any) -> Any:
        if col.dictionary:
            return pd.Categorical(values)
        return pd.Series(values, copy=False)

    def arrow_type(self, pa: Any, col: Column, unit: str) -> Any:
        return pa.dictionary(pa.int32(), pa.string()) if col.dictionary else pa.string()

    def arrow(self, pa: Any, col: Column, values: np.ndarray, mask: Any, typ: Any) -> Any:
        strings = _arrow_strings(values)
        if mask is not None:
            import pyarrow.compute as pc
            strings = pc.if_else(pa.array(mask), pa.scalar(None, pa.string()), strings)
        return strings.dictionary_encode().cast(typ) if col.dictionary else strings

    def restore(self, col: Column, column: Any, out: np.ndarray) -> None:
        import pyarrow as pa
        name = col.sources[0]
        if pa.types.is_dictionary(column.type):
            column = column.cast(pa.string())
        out[name] = _fixed_width_bytes(column, out.dtype[name].itemsize)


class _CategoryConverter:
    def numpy(self, col: Column, fields: Mapping[str, np.ndarray], valid: Any) -> Tuple[Any, Any]:
        kind = fields[col.sources[0]]
        codes = np.full(len(kind), -1, np.int8)
        for code, value in enumerate(_KIND_VALUES):
            codes[kind == value] = code
        return codes, codes >= 0

    def pandas(self, pd: Any, col: Column, values: np.ndarray, valid: Any) -> Any:
        return pd.Categorical.from_codes(values, categories=list(KIND_CATEGORIES))

    def arrow_type(self, pa: Any, col: Column, unit: str) -> Any:
        return pa.dictionary(pa.int8(), pa.string())

    def arrow(self, pa: Any, col: Column, values: np.ndarray, mask: Any, typ: Any) -> Any:
        return pa.DictionaryArray.from_arrays(pa.array(values, type=pa.int8(), mask=mask),
                                              pa.array(list(KIND_CATEGORIES), type=pa.string()))

    def restore(self, col: Column, column: Any, out: np.ndarray) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc
        if pa.types.is_dictionary(column.type):
            column = column.cast(pa.string())
        names = pc.fill_null(column, "").to_numpy(zero_copy_only=False).astype(str)
        values = np.zeros(len(names), out.dtype[col.sources[0]])
        for category, value in zip(KIND_CATEGORIES, _KIND_VALUES):
            values[names == category] = value
        out[col.sources[0]] = values


class _TimestampConverter:
    def numpy(self, col: Column, fields: Mapping[str, np.ndarray], carried: Any
              ) -> Tuple[Any, Any]:
        """``carried``: which records' versions have the column (None: all)."""
        if col.clock is Clock.NANOSECONDS:
            ns = fields[col.sources[0]].view(np.int64)
            known = ns != 0
        elif col.clock is Clock.BEGIN_SECONDS:
            narrow, wide = (fields[s] for s in col.sources)
            seconds = np.where(carried[1] & (wide != 0), wide, narrow).astype(np.int64)
            ns, known = seconds * _NS_PER_S, seconds != 0
        elif col.clock is Clock.SECONDS:
            seconds = fields[col.sources[0]].astype(np.int64)
            ns, known = seconds * _NS_PER_S, seconds != 0
        else:
            sec, nsec = (fields[s] for s in col.sources)
            ns = sec * _NS_PER_S + nsec
            known = carried[0] & ((sec != 0) | (nsec != 0))
        values = ns.astype("datetime64[ns]")
        values[~known] = np.datetime64("NaT")
        return values, known

    def pandas(self, pd: Any, col: Column, values: np.ndarray, valid: Any) -> Any:
        return pd.DatetimeIndex(values).tz_localize("UTC")

    def arrow_type(self, pa: Any, col: Column, unit: str) -> Any:
        return pa.timestamp(unit, tz="UTC")

    def arrow(self, pa: Any, col: Column, values: np.ndarray, mask: Any, typ: Any) -> Any:
        ticks = values.astype(f"datetime64[{typ.unit}]").view(np.int64)
        return pa.array(ticks, type=typ, mask=mask)

    def restore(self, col: Column, column: Any, out: np.ndarray) -> None:
        """Fields from instants: for BEGIN_SECONDS both ``ac_btime`` (clamped to u32, as the
        kernel does) and ``ac_btime64`` (zeroed later where the record's version lacks it)."""
        import pyarrow as pa
        import pyarrow.compute as pc
        if not pa.types.is_timestamp(column.type):   # an older file kept the raw field
            out[col.sources[0]] = pc.fill_null(column, 0).to_numpy(zero_copy_only=False)
            return
        ns = pc.fill_null(column.cast(pa.timestamp("ns", tz="UTC")).cast(pa.int64()), 0) \
            .to_numpy(zero_copy_only=False)
        if col.clock is Clock.NANOSECONDS:
            out[col.sources[0]] = ns.view(np.uint64)
        elif col.clock is Clock.BEGIN_SECONDS:
            seconds = ns // _NS_PER_S
            out[col.sources[0]] = np.clip(seconds, 0, 0xFFFFFFFF)
            out[col.sources[1]] = seconds
        elif col.clock is Clock.SECONDS:
            out[col.sources[0]] = ns // _NS_PER_S
        else:
            out[col.sources[0]], out[col.sources[1]] = np.divmod(ns, _NS_PER_S)


class _WaitStatusConverter:
    """``exit_code``/``exit_signal``/``core_dumped`` from a raw wait status (as ``wait(2)``'s
    WEXITSTATUS, WTERMSIG and WCOREDUMP decode it); derived, so nothing to restore."""

    def numpy(self, col: Column, fields: Mapping[str, np.ndarray], valid: Any) -> Tuple[Any, Any]:
        status = fields[col.sources[0]].astype(np.uint32)
        signal = status & 0x7F
        if col.part == "code":
            ok = signal == 0
            return ((status >> 8) & 0xFF).astype(np.uint8), ok if valid is None else ok & valid
        if col.part == "signal":
            ok = signal != 0
            return signal.astype(np.uint8), ok if valid is None else ok & valid
        return (status & 0x80) != 0, None

    def pandas(self, pd: Any, col: Column, values: np.ndarray, valid: Any) -> Any:
        return pd.arrays.IntegerArray(values, ~valid) if valid is not None else values

    def arrow_type(self, pa: Any, col: Column, unit: str) -> Any:
        return pa.bool_() if col.part == "core" else pa.uint8()

    def arrow(self, pa: Any, col: Column, values: np.ndarray, mask: Any, typ: Any) -> Any:
        return pa.array(values, type=typ, mask=mask)

    def restore(self, col: Column, column: Any, out: np.ndarray) -> None:
        pass


_CONVERTER: Dict[ColumnKind, Any] = {
    ColumnKind.INT: _IntConverter(), ColumnKind.STR: _StrConverter(),
    ColumnKind.CATEGORY: _CategoryConverter(), ColumnKind.TIMESTAMP: _TimestampConverter(),
    ColumnKind.WAIT_STATUS: _WaitStatusConverter(),
}


# ---- the schema of one row layout ---------------------------------------------------------
class TableSchema:
    """What every row layout's schema shares: its columns (``columns``, ``by_name``), and the
    conversions built on ``numpy_columns`` (pandas, Arrow, the tables files hold, and back)."""

    #: Columns a table must have to be a recording of this row layout.
    REQUIRED: Tuple[str, ...] = ()
    columns: Tuple[Column, ...]
    by_name: Dict[str, Column]

    @property
    def dtype(self) -> np.dtype:
        """The numpy dtype of this layout's rows."""
        raise NotImplementedError

    def numpy_columns(self, records: np.ndarray, raw_strings: bool = False
                      ) -> Dict[str, Tuple[np.ndarray, Optional[np.ndarray]]]:
        raise NotImplementedError

    #: Makes a fresh counter of what one file's rows add up to (``None``: the recording
    #: layer's own ``FileStats`` of exit records); the layer above injects it.
    stats_factory: Any = None

    def arrow_schema(self, metadata: Optional[Mapping[str, str]] = None,
                     unit: str = _TABLE_UNIT) -> "pyarrow.Schema":
        pa = require("pyarrow", "arrow", "Arrow output")
        fields = []
        for col in self.columns:
            typ = _CONVERTER[col.kind].arrow_type(pa, col, unit)
            fields.append(pa.field(col.name, typ,
                                   nullable=col.nullable or col.kind is ColumnKind.CATEGORY,
                                   metadata={"unit": col.unit, "doc": col.doc}))
        return pa.schema(fields, metadata=dict(metadata) if metadata else None)

    def to_arrow(self, records: np.ndarray, metadata: Optional[Mapping[str, str]] = None,
                 unit: str = _TABLE_UNIT) -> "pyarrow.Table":
        pa = require("pyarrow", "arrow", "to_arrow()")
        schema = self.arrow_schema(metadata, unit)
        cols = self.numpy_columns(records, raw_strings=True)
        arrays = []
        for col, field in zip(self.columns, schema):
            values, valid = cols[col.name]
            mask = None if valid is None else ~valid
            arrays.append(_CONVERTER[col.kind].arrow(pa, col, values, mask, field.type))
        return pa.Table.from_arrays(arrays, schema=schema)

    def file_schema(self) -> "pyarrow.Schema":
        """The schema of the tables recorded files hold (nanosecond timestamps: exact)."""
        return self.arrow_schema(unit=_FILE_UNIT)

    def file_table(self, records: np.ndarray) -> "pyarrow.Table":
        return self.to_arrow(records, unit=_FILE_UNIT)

    def to_pandas(self, records: np.ndarray) -> "pandas.DataFrame":
        pd = require("pandas", "pandas", "to_pandas()")
        data: Dict[str, Any] = {}
        for col, (values, valid) in zip(self.columns, self.numpy_columns(records).values()):
            data[col.name] = _CONVERTER[col.kind].pandas(pd, col, values, valid)
        return pd.DataFrame(data, copy=False)

    def records_from_table(self, table: "pyarrow.Table") -> np.ndarray:
        """The inverse of ``to_arrow``/``file_table``: a table back to rows of ``dtype``.
        Columns the table lacks come back as zeros; columns this layout does not know are
        ignored."""
        out = np.zeros(table.num_rows, self.dtype)
        present = set(table.column_names)
        for col in self.columns:
            name = next((n for n in (col.name, *col.aliases) if n in present), None)
            if name is not None:
                _CONVERTER[col.kind].restore(col, table.column(name), out)
        return self._complete(out)

    def records_from_array(self, array: np.ndarray) -> np.ndarray:
        """Rows of any other dtype as this layout's rows, field by field: fields the array
        lacks come back as zeros, fields this layout lacks are dropped."""
        if array.dtype == self.dtype:
            return np.array(array, copy=True)
        out = np.zeros(len(array), self.dtype)
        for name in out.dtype.names or ():
            if array.dtype.names and name in array.dtype.names and not name.startswith("_pad"):
                out[name] = array[name]
        return self._complete(out)

    def _complete(self, out: np.ndarray) -> np.ndarray:
        return out


class Schema(TableSchema):
    """The columns of one record layout (``layout`` by default; tests build others) and every
    conversion between its records and tables."""

    #: Columns a table must have to be a recording (the rest may be missing: older layouts).
    REQUIRED = ("version", "kind", "layout")

    def __init__(self, lay: Any = layout):
        self.layout = lay
        self.columns: Tuple[Column, ...] = _build_columns(lay)
        self.by_name: Dict[str, Column] = {c.name: c for c in self.columns}
        self.for_field: Dict[str, str] = {src: c.name for c in self.columns for src in c.sources
                                          if c.kind is not ColumnKind.WAIT_STATUS}

    @property
    def dtype(self) -> np.dtype:
        return self.layout.DTYPE

    def check(self, records: np.ndarray) -> np.ndarray:
        if not isinstance(records, np.ndarray) or records.dtype != self.layout.DTYPE:
            raise TypeError("expected a numpy array of taskstats_fast.DTYPE (from decode(), a "
                            "Connection or an ExitListener)")
        return records.reshape(-1)

    def numpy_columns(self, records: np.ndarray, raw_strings: bool = False
                      ) -> Dict[str, Tuple[np.ndarray, Optional[np.ndarray]]]:
        fields = _split_fields(self.check(records))
        version_of_layout = fields["layout"]
        carried_since: Dict[int, np.ndarray] = {}

        def carried(since: int) -> np.ndarray:
            key = max(since, self.layout.MIN_VERSION)
            if key not in carried_since:
                carried_since[key] = version_of_layout >= key
            return carried_since[key]

        out: Dict[str, Tuple[np.ndarray, Optional[np.ndarray]]] = {}
        for col in self.columns:
            converter = _CONVERTER[col.kind]
            valid = carried(col.since) if col.nullable else None
            if col.kind is ColumnKind.STR:
                out[col.name] = converter.numpy(col, fields, valid, raw_strings)
            elif col.kind is ColumnKind.TIMESTAMP:
                sources = [self.layout.FIELD_BY_NAME.get(s) for s in col.sources]
                out[col.name] = converter.numpy(col, fields, [
                    carried(f.since) if f is not None else None for f in sources])
            else:
                out[col.name] = converter.numpy(col, fields, valid)
        return out

    def records_from_table(self, table: "pyarrow.Table") -> np.ndarray:
        """The inverse of ``to_arrow``/``file_table``: a table (of this or any older layout, at
        any timestamp resolution) back to records.  Columns the table lacks come back as zeros;
        so do the fields a record's ``layout`` version does not carry, as ``decode`` leaves
        them, so ``carried()`` reads the result as it reads decoded records.  Columns this
        layout does not know are ignored.  Every field round-trips exactly, except a command
        name that is not valid UTF-8 (tables hold text: invalid bytes were replaced)."""
        return super().records_from_table(table)

    def records_from_array(self, array: np.ndarray) -> np.ndarray:
        """Records of any older (or newer) record dtype as this layout's records, field by
        field: fields the array lacks come back as zeros, fields this layout lacks are
        dropped, and what a record's ``layout`` version does not carry is zeroed."""
        return super().records_from_array(array)

    def _complete(self, out: np.ndarray) -> np.ndarray:
        versions = out["layout"]
        for f in self.layout.FIELDS:
            if not f.padding and f.since > self.layout.MIN_VERSION:
                out[f.name][versions < f.since] = 0
        return out


#: The one naming table's entries for fields of row layouts other than the kernel's records
#: (accounting's interval rows and their groups, pressure stalls): field -> (column, unit, doc).
#: A field not listed here takes the column of the ``DTYPE`` field of the same name
#: (``ac_utime`` -> ``ac_utime_us``, ``hiwater_rss`` -> ``hiwater_rss_kb``), so that one
#: quantity has one name and one unit in every table.  A unit of "UTC" makes a timestamp.
#: The pressure-stall (PSI) resources and kinds, in the order every PSI table keeps them: each
#: resource's ``some``, then ``full`` (``<resource>_<kind>_us``).
PSI_RESOURCES: Tuple[str, ...] = ("cpu", "io", "memory", "irq")
PSI_KINDS: Tuple[str, ...] = ("some", "full")

ROW_COLUMNS: Dict[str, Tuple[str, str, str]] = {
    "ac_btime64": ("ac_btime", "UTC", "when the task began (whole seconds, as the kernel keeps it)"),
    "interval_start": ("interval_start", "UTC", "when the interval began (the opening look)"),
    "interval_end": ("interval_end", "UTC", "when the interval ended (the closing look)"),
    "cgroup_id": ("cgroup_id", "", "the cgroup v2 directory's inode number (0: unknown)"),
    "cgroup": ("cgroup", "", "the cgroup v2 path below the hierarchy's root (\"/\": the root; "
               "empty: unknown)"),
    "state": ("state", "", "0 alive at both looks; bits 1 born and 2 exited inside the interval"),
    "attribution": ("attribution", "", "how cgroup_id was found: 1 listed in the cgroup, "
                    "2 inherited from its process or parent, 0 unknown"),
    "flags": ("row_flags", "", "bits: 1 delay accounting was off, 2 pid reused inside the "
              "interval, 4 first seen after its birth, 8 CPU reconciled with the cgroup's cpu.stat"),
    "cpu_ns": ("cpu_ns", "ns", "CPU time over the interval: the best estimate (see README, "
               "interval accounting)"),
    "tasks": ("tasks", "", "rows (threads) summed into this one"),
    "born": ("born", "", "of those, born inside the interval"),
    "exited": ("exited", "", "of those, exited inside the interval"),
    **{f"{r}_{k}_us": (f"{r}_{k}_us", "us", f"{r} pressure stall time, {k} tasks stalled")
       for r in PSI_RESOURCES for k in PSI_KINDS},
    # the figures of a ``top`` row that no row layout holds (``top -b --format json|csv``)
    "grouping": ("grouping", "", "what one row sums: process, thread, cgroup, user or command"),
    "lost": ("lost", "", "exit messages the kernel dropped during the interval (0: complete)"),
    "processes": ("processes", "", "processes summed into the row (top folds short-lived "
                  "processes of one command into one row; 1: not folded)"),
    "user": ("user", "", "the user name of ac_uid (the number where it has none)"),
    "cpu_pct": ("cpu_pct", "%", "CPU time (cpu_ns) over the interval, % of one CPU"),
    **{f"{c.name}_delay_pct": (f"{c.name}_delay_pct", "%",
                               f"time waiting {c.waiting}, % of the interval")
       for c in layout.DELAY_CLASSES},
    "read_bytes_per_s": ("read_bytes_per_s", "bytes/s", "bytes read from storage per second "
                         "over the interval"),
    "write_bytes_per_s": ("write_bytes_per_s", "bytes/s", "bytes written to storage per second "
                          "over the interval"),
    "process_state": ("process_state", "", "the state letter of /proc/PID/stat when the row "
                      "was drawn (R, S, D, Z, T, I, ...)"),
    "rss_bytes": ("rss_bytes", "bytes", "resident memory when the row was drawn "
                  "(/proc/PID/statm)"),
    "cpu_time_us": ("cpu_time_us", "us", "CPU time since the process began, when the row was "
                    "drawn (/proc/PID/stat utime + stime, top's TIME+)"),
    "cmdline": ("cmdline", "", "the command line, arguments joined by spaces (/proc/PID/cmdline; "
                "empty for kernel threads)"),
}
_ROW_CLOCKS = {"ac_btime64": Clock.SECONDS}


class RowSchema(TableSchema):
    """The columns of a plain row layout: any structured dtype of integers and ``char[N]``
    strings (``accounting``'s interval rows and groups), one column per field named by the one
    naming table (``ROW_COLUMNS``, then the ``DTYPE`` columns).  ``stats`` makes a file's
    ``FileStats``-like counter; ``metadata`` are the keys every file of these rows carries
    (what the rows are); ``dictionary`` names the string fields with few values (Arrow
    dictionaries, pandas categories)."""

    def __init__(self, dtype: np.dtype, *, required: Tuple[str, ...] = (), stats: Any = None,
                 metadata: Optional[Mapping[str, Any]] = None,
                 dictionary: Tuple[str, ...] = ("cgroup",)):
        self._dtype = np.dtype(dtype)
        self.stats_factory = stats
        self.metadata = dict(metadata or {})
        self.REQUIRED = tuple(required)
        cols: List[Column] = []
        for name in self._dtype.names or ():
            if not name.startswith("_pad"):
                cols += row_columns(name, self._dtype[name], dictionary=name in dictionary)
        self.columns = tuple(cols)
        self.by_name = {c.name: c for c in self.columns}

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    def numpy_columns(self, records: np.ndarray, raw_strings: bool = False
                      ) -> Dict[str, Tuple[np.ndarray, Optional[np.ndarray]]]:
        if not isinstance(records, np.ndarray) or records.dtype != self._dtype:
            raise TypeError(f"expected a numpy array of {self._dtype}")
        fields = _split_fields(records.reshape(-1))
        out: Dict[str, Tuple[np.ndarray, Optional[np.ndarray]]] = {}
        for col in self.columns:
            converter = _CONVERTER[col.kind]
            out[col.name] = (converter.numpy(col, fields, None, raw_strings)
                             if col.kind is ColumnKind.STR else converter.numpy(col, fields, None))
        return out


def column_name(field: str) -> str:
    """The column name the one naming table gives ``field`` (a row layout's field, a ``DTYPE``
    field, or a figure of ``top``'s rows); a field it does not name is an error."""
    if field in ROW_COLUMNS:
        return ROW_COLUMNS[field][0]
    if field in COLUMN_FOR_FIELD:
        return COLUMN_FOR_FIELD[field]
    raise KeyError(f"{field!r} has no column in the naming table (schema.ROW_COLUMNS)")


def row_columns(field: str, kind: np.dtype, *, dictionary: bool = False) -> List[Column]:
    """The table column(s) of one field of a row layout, from the one naming table: its
    column, and for a raw wait status the decoded ones too.  A field the table does not name
    is an error: every column of every table is named in one place."""
    if field in ROW_COLUMNS:
        name, unit, doc = ROW_COLUMNS[field]
    elif field in COLUMN_FOR_FIELD:
        base = COLUMN_BY_NAME[COLUMN_FOR_FIELD[field]]
        name, unit, doc = base.name, base.unit, base.doc
    else:
        raise KeyError(f"{field!r} has no column in the naming table (schema.ROW_COLUMNS)")
    aliases = (field,) if name != field else ()   # format version 2 named columns by field
    if unit == "UTC":
        return [Column(name, (field,), ColumnKind.TIMESTAMP, unit, 0, True, doc,
                       clock=_ROW_CLOCKS.get(field, Clock.NANOSECONDS), aliases=aliases)]
    if kind.kind == "S":
        return [Column(name, (field,), ColumnKind.STR, unit, 0, False, doc,
                       dictionary=dictionary, aliases=aliases)]
    int_type = "i8" if kind.itemsize == 8 else kind.str.lstrip("<>|=")
    column = Column(name, (field,), ColumnKind.INT, unit, 0, False, doc, dtype=int_type,
                    aliases=aliases)
    return [column] + (wait_status_columns(field) if field == "ac_exitcode" else [])


DEFAULT = Schema()
#: Every column of ``to_pandas``/``to_arrow``, in order.
COLUMNS: Tuple[Column, ...] = DEFAULT.columns
COLUMN_BY_NAME: Dict[str, Column] = DEFAULT.by_name
#: The column each ``DTYPE`` field ends up in.
COLUMN_FOR_FIELD: Dict[str, str] = DEFAULT.for_field


_ROW_SCHEMAS: Dict[np.dtype, RowSchema] = {}


def schema_of(records: np.ndarray) -> TableSchema:
    """The schema of an array's rows: ``DTYPE`` records, or any row layout the naming table
    names (``TASK_DTYPE`` rows of an interval, ``Interval.by`` groups, pressure rows)."""
    dtype = getattr(records, "dtype", None)
    if dtype is None or dtype == DEFAULT.dtype or dtype.names is None:
        return DEFAULT
    if dtype not in _ROW_SCHEMAS:
        _ROW_SCHEMAS[dtype] = RowSchema(dtype)
    return _ROW_SCHEMAS[dtype]


def columns(records: np.ndarray, *, _raw_strings: bool = False
            ) -> Dict[str, Tuple[np.ndarray, Optional[np.ndarray]]]:
    """The table as numpy: ``{column name: (values, valid)}`` in ``COLUMNS`` order.

    ``valid`` is a bool array (False = missing) or None when the column cannot miss a value.
    Timestamps are ``datetime64[ns]`` (UTC; NaT where missing), ``kind`` is an int8 code array
    (0 = pid, 1 = tgid, -1 = other), ``ac_comm`` a numpy ``str_`` array.  Needs only numpy;
    ``to_pandas``/``to_arrow`` build on it.
    """
    return DEFAULT.numpy_columns(records, _raw_strings)


def to_pandas(records: np.ndarray) -> "pandas.DataFrame":
    """A ``DataFrame`` with one row per record and the columns of ``COLUMNS`` (see the module
    docstring for names, units and missing values).  ``records`` may also be any row layout the
    naming table names (``Interval.tasks``, ``Interval.by(..., frame=False)``).  Needs
    ``taskstats_fast[pandas]``."""
    return schema_of(records).to_pandas(records)


def arrow_schema(metadata: Optional[Mapping[str, str]] = None) -> "pyarrow.Schema":
    """The Arrow schema of ``to_arrow`` (fixed: it does not depend on the data).  ``metadata``
    becomes the schema's key/value metadata.  Needs ``taskstats_fast[arrow]``."""
    return DEFAULT.arrow_schema(metadata)


def to_arrow(records: np.ndarray, metadata: Optional[Mapping[str, str]] = None) -> "pyarrow.Table":
    """A ``pyarrow.Table`` with one row per record, schema ``arrow_schema(metadata)``.
    ``records`` may be any row layout ``to_pandas`` takes.  Needs ``taskstats_fast[arrow]``."""
    return schema_of(records).to_arrow(records, metadata)


def file_schema() -> "pyarrow.Schema":
    """The schema of the tables recorded files hold: ``arrow_schema()`` with nanosecond
    timestamps, so that every field round-trips exactly."""
    return DEFAULT.file_schema()


def file_table(records: np.ndarray) -> "pyarrow.Table":
    """``records`` as the table a recorded file holds (schema ``file_schema()``)."""
    return DEFAULT.file_table(records)


def records_from_table(table: "pyarrow.Table") -> np.ndarray:
    """``Schema.records_from_table`` of today's layout."""
    return DEFAULT.records_from_table(table)
