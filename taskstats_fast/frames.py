"""Records as tables: ``to_pandas``, ``to_arrow`` and the column schema they share.

This module owns how a ``DTYPE`` array becomes columns for people and for other tools: the column
names and units, their types, and which values are missing.  The rules (the README's field
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

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from . import layout
from .errors import MissingExtraError

if TYPE_CHECKING:  # pragma: no cover - typing only
    import pandas
    import pyarrow

__all__ = ["Column", "COLUMNS", "COLUMN_BY_NAME", "COLUMN_FOR_FIELD", "columns", "to_pandas",
           "to_arrow", "arrow_schema", "require", "DELAY_CLASSES"]

#: The delay classes in kernel order: ``<class>_count``, ``<class>_delay_total_ns``, ...
DELAY_CLASSES: Tuple[str, ...] = tuple(c.name for c in layout.DELAY_CLASSES)

_UNIT_SUFFIX = {"us": "_us", "ns": "_ns", "KB": "_kb", "MB*us": "_mb_us", "bytes": "_bytes"}
_KIND_CATEGORIES = ("pid", "tgid")
_INT64_MAX = np.iinfo(np.int64).max


@dataclass(frozen=True)
class Column:
    """One column of ``to_pandas``/``to_arrow``.

    ``sources`` are the ``DTYPE`` fields it is computed from; ``kind`` is ``"int"``, ``"str"``,
    ``"category"`` or ``"timestamp"``; ``dtype`` the numpy type of an ``"int"`` column;
    ``since`` the struct version that added it (0 for our metadata), ``nullable`` whether a
    record can lack it (its struct version predates the field, or a zero means "unknown").
    """

    name: str
    sources: Tuple[str, ...]
    kind: str
    unit: str
    since: int
    nullable: bool
    doc: str
    dtype: Optional[str] = None


def _int_dtype(field: layout.Field) -> str:
    if field.name == "ac_nice":
        return "i1"
    return {"__u8": "u1", "__u16": "u2", "__u32": "u4", "__u64": "i8", "__s64": "i8"}[field.ctype]


def _build_columns() -> Tuple[Column, ...]:
    out: List[Column] = []
    for f in layout.FIELDS:
        if f.padding or f.name in ("ac_btime64",) or f.name.endswith("_delay_max_ts_nsec"):
            continue  # folded into the timestamp columns below
        may_lack = f.since > layout.MIN_VERSION
        if f.name == "ac_btime":
            out.append(Column("ac_btime", ("ac_btime", "ac_btime64"), "timestamp", "UTC",
                              f.since, True, "when the task began (null in TGID aggregates)"))
        elif f.name.endswith("_delay_max_ts_sec"):
            prefix = f.name[:-len("_delay_max_ts_sec")]
            out.append(Column(f"{prefix}_delay_max_ts", (f.name, f"{prefix}_delay_max_ts_nsec"),
                              "timestamp", "UTC", f.since, True,
                              f.doc.replace(" (seconds)", "") + " (null: no such delay yet)"))
        elif f.ctype == "char":
            out.append(Column(f.name, (f.name,), "str", "", f.since, may_lack, f.doc))
        else:
            suffix = _UNIT_SUFFIX.get(f.unit, "")
            name = f.name if f.name.endswith(suffix) else f.name + suffix
            out.append(Column(name, (f.name,), "int", f.unit, f.since, may_lack, f.doc,
                              _int_dtype(f)))
    meta_doc = {name: doc for name, _, doc in layout.META_FIELDS}
    out.append(Column("time", ("time_ns",), "timestamp", "UTC", 0, True,
                      "when the record was received (CLOCK_REALTIME; null when decoded from bytes)"))
    out.append(Column("kind", ("kind",), "category", "", 0, False,
                      '"pid" (one thread) or "tgid" (thread group aggregate)'))
    for name in ("flags", "layout", "id", "seq", "shard"):
        fmt = dict((n, f) for n, f, _ in layout.META_FIELDS)[name]
        out.append(Column(name, (name,), "int", "", 0, False, meta_doc[name], fmt))
    return tuple(out)


#: Every column of ``to_pandas``/``to_arrow``, in order.
COLUMNS: Tuple[Column, ...] = _build_columns()
COLUMN_BY_NAME: Dict[str, Column] = {c.name: c for c in COLUMNS}
#: The column each ``DTYPE`` field ends up in.
COLUMN_FOR_FIELD: Dict[str, str] = {src: c.name for c in COLUMNS for src in c.sources}


def require(module: str, extra: str, purpose: str) -> Any:
    """Import ``module`` or raise ``MissingExtraError`` saying which extra installs it."""
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as e:
        raise MissingExtraError(
            f"{purpose} needs {module.split('.')[0]}, which is not installed: "
            f"pip install 'taskstats_fast[{extra}]'") from e


def _check(records: np.ndarray) -> np.ndarray:
    if not isinstance(records, np.ndarray) or records.dtype != layout.DTYPE:
        raise TypeError("expected a numpy array of taskstats_fast.DTYPE (from decode(), a "
                        "Connection or an ExitListener)")
    return records.reshape(-1)


# Rows copied per step when splitting records into columns: one block of records (~2.9 MB)
# stays in cache while every field is copied out of it, instead of streaming the whole array
# from memory once per field (measured 1.9x faster at 1M records).
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


def columns(records: np.ndarray, *, _raw_strings: bool = False
            ) -> Dict[str, Tuple[np.ndarray, Optional[np.ndarray]]]:
    """The table as numpy: ``{column name: (values, valid)}`` in ``COLUMNS`` order.

    ``valid`` is a bool array (False = missing) or None when the column cannot miss a value.
    Timestamps are ``datetime64[ns]`` (UTC; NaT where missing), ``kind`` is an int8 code array
    (0 = pid, 1 = tgid, -1 = other), ``ac_comm`` a numpy ``str_`` array.  Needs only numpy;
    ``to_pandas``/``to_arrow`` build on it.
    """
    fields = _split_fields(_check(records))
    version_of_layout = fields["layout"]
    carried_since: Dict[int, np.ndarray] = {}

    def carried(since: int) -> np.ndarray:
        key = max(since, layout.MIN_VERSION)
        if key not in carried_since:
            carried_since[key] = version_of_layout >= key
        return carried_since[key]

    out: Dict[str, Tuple[np.ndarray, Optional[np.ndarray]]] = {}
    for col in COLUMNS:
        if col.kind == "int":
            assert col.dtype is not None
            out[col.name] = (fields[col.sources[0]].view(col.dtype),
                             carried(col.since) if col.nullable else None)
        elif col.kind == "str":
            raw = fields[col.sources[0]]
            out[col.name] = (raw if _raw_strings else _comm_strings(raw),
                             carried(col.since) if col.nullable else None)
        elif col.kind == "category":
            kind = fields["kind"]
            codes = np.full(len(kind), -1, np.int8)
            codes[kind == layout.KIND_PID] = 0
            codes[kind == layout.KIND_TGID] = 1
            out[col.name] = (codes, codes >= 0)
        elif col.name == "ac_btime":
            wide = fields["ac_btime64"]
            has64 = carried(layout.FIELD_BY_NAME["ac_btime64"].since) & (wide != 0)
            seconds = np.where(has64, wide, fields["ac_btime"]).astype(np.int64)
            out[col.name] = _timestamps(seconds * 1_000_000_000, seconds != 0)
        elif col.name == "time":
            ns = fields["time_ns"].view(np.int64)
            out[col.name] = _timestamps(ns, ns != 0)
        else:  # <class>_delay_max_ts
            sec, nsec = fields[col.sources[0]], fields[col.sources[1]]
            known = carried(col.since) & ((sec != 0) | (nsec != 0))
            out[col.name] = _timestamps(sec * 1_000_000_000 + nsec, known)
    return out


def _timestamps(ns: np.ndarray, valid: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    values = ns.astype("datetime64[ns]")
    values[~valid] = np.datetime64("NaT")
    return values, valid


def to_pandas(records: np.ndarray) -> "pandas.DataFrame":
    """A ``DataFrame`` with one row per record and the columns of ``COLUMNS`` (see the module
    docstring for names, units and missing values).  Needs ``taskstats_fast[pandas]``."""
    pd = require("pandas", "pandas", "to_pandas()")
    data: Dict[str, Any] = {}
    for col, (values, valid) in zip(COLUMNS, columns(records).values()):
        if col.kind == "int":
            data[col.name] = (pd.arrays.IntegerArray(values, ~valid) if valid is not None
                              else values)
        elif col.kind == "str":
            data[col.name] = pd.Series(values, copy=False)
        elif col.kind == "category":
            data[col.name] = pd.Categorical.from_codes(values, categories=list(_KIND_CATEGORIES))
        else:
            data[col.name] = pd.DatetimeIndex(values).tz_localize("UTC")
    return pd.DataFrame(data, copy=False)


_ARROW_INT = {"i1": "int8", "u1": "uint8", "u2": "uint16", "u4": "uint32", "i8": "int64"}


def arrow_schema(metadata: Optional[Mapping[str, str]] = None) -> "pyarrow.Schema":
    """The Arrow schema of ``to_arrow`` (fixed: it does not depend on the data).  ``metadata``
    becomes the schema's key/value metadata.  Needs ``taskstats_fast[arrow]``."""
    pa = require("pyarrow", "arrow", "Arrow output")
    fields = []
    for col in COLUMNS:
        if col.kind == "int":
            typ = getattr(pa, _ARROW_INT[str(col.dtype)])()
        elif col.kind == "str":
            typ = pa.string()
        elif col.kind == "category":
            typ = pa.dictionary(pa.int8(), pa.string())
        else:
            typ = pa.timestamp("us", tz="UTC")
        fields.append(pa.field(col.name, typ, nullable=col.nullable or col.kind == "category",
                               metadata={"unit": col.unit, "doc": col.doc}))
    return pa.schema(fields, metadata=dict(metadata) if metadata else None)


def to_arrow(records: np.ndarray, metadata: Optional[Mapping[str, str]] = None) -> "pyarrow.Table":
    """A ``pyarrow.Table`` with one row per record, schema ``arrow_schema(metadata)``.
    Needs ``taskstats_fast[arrow]``."""
    pa = require("pyarrow", "arrow", "to_arrow()")
    schema = arrow_schema(metadata)
    cols = columns(records, _raw_strings=True)
    arrays = []
    for col, field in zip(COLUMNS, schema):
        values, valid = cols[col.name]
        mask = None if valid is None else ~valid
        if col.kind == "category":
            arrays.append(pa.DictionaryArray.from_arrays(
                pa.array(values, type=pa.int8(), mask=mask),
                pa.array(list(_KIND_CATEGORIES), type=pa.string())))
        elif col.kind == "timestamp":
            us = values.astype("datetime64[us]").view(np.int64)
            arrays.append(pa.array(us, type=field.type, mask=mask))
        elif col.kind == "str":
            strings = _arrow_strings(values)
            if mask is not None:
                import pyarrow.compute as pc
                strings = pc.if_else(pa.array(mask), pa.scalar(None, pa.string()), strings)
            arrays.append(strings)
        else:
            arrays.append(pa.array(values, type=field.type, mask=mask))
    return pa.Table.from_arrays(arrays, schema=schema)
