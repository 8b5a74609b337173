"""One reader per file format: one recorded file back to ``DTYPE`` records, chunk by chunk.

Each reader takes a path, the ``columns.Schema`` to read into (today's layout unless a test
builds another) and optionally the table columns needed (the rest come back as zeros), and
yields record arrays of that schema's dtype, one per row group / record batch / slice, so a
large file never has to fit in memory twice.  Whatever the file holds (today's schema, an older
layout, 0.1.0's microsecond timestamps) comes back through ``Schema.records_from_table`` or
``Schema.records_from_array``.  A file that is not a recording, or is damaged, raises
``NotARecordingError`` naming the file and what it is not.  Writing lives in ``writers``.

Readers run on the calling thread (``use_threads=False``): chunks are small anyway, and once
pyarrow's thread pool has started, a process that forks (an ExitListener user) leaves a child
that hangs in pyarrow's exit handler.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Iterator, List, Optional, Sequence

import numpy as np
from numpy.lib import format as npy_format

from ..errors import NotARecordingError
from ..schema import TableSchema
from .durable import journal_path
from .metadata import METADATA_KEY

__all__ = ["read_parquet", "read_arrow", "read_npy", "read_csv", "parquet_metadata",
           "arrow_metadata", "CHUNK_RECORDS", "read_npy_partial", "read_parquet_partial",
           "read_arrow_partial", "read_csv_partial", "arrow_partial_metadata",
           "parquet_partial_metadata",
           "no_partial_metadata"]

#: Records per chunk where a format does not chunk by itself (npy slices, CSV blocks).
CHUNK_RECORDS = 1 << 16
_NPY_MAGIC = b"\x93NUMPY"


def _arrow_errors() -> tuple:
    import pyarrow as pa
    return (pa.ArrowException, OSError, ValueError, UnicodeDecodeError)


def _check_columns(path: str, names: Sequence[str], schema: TableSchema, what: str) -> None:
    missing = [n for n in schema.REQUIRED if n not in names]
    if missing:
        raise NotARecordingError(path, f"{what} has no {', '.join(missing)} column"
                                 f"{'s' if len(missing) > 1 else ''}")


def _wanted(names: Sequence[str], columns: Optional[Sequence[str]], schema: TableSchema) -> list:
    """The file's columns to read: ``columns`` (plus what every read needs), those it has."""
    if columns is None:
        return list(names)
    want = set(columns) | set(schema.REQUIRED)
    return [n for n in names if n in want]


# ---- Parquet --------------------------------------------------------------------------------
def read_parquet(path: str, schema: TableSchema, columns: Optional[Sequence[str]] = None
                 ) -> Iterator[np.ndarray]:
    import pyarrow.parquet as pq
    try:
        handle = pq.ParquetFile(path)
    except _arrow_errors() as e:
        raise NotARecordingError(path, f"not a readable Parquet file ({e})") from None
    names = handle.schema_arrow.names
    _check_columns(path, names, schema, "its table")
    try:
        for group in range(handle.num_row_groups):
            table = handle.read_row_group(group, columns=_wanted(names, columns, schema),
                                          use_threads=False)
            yield schema.records_from_table(table)
    except _arrow_errors() as e:
        raise NotARecordingError(path, f"damaged Parquet data ({e})") from None


def parquet_metadata(path: str) -> Dict[str, Any]:
    import pyarrow.parquet as pq
    try:
        raw = pq.read_schema(path).metadata or {}
    except _arrow_errors() as e:
        raise NotARecordingError(path, f"not a readable Parquet file ({e})") from None
    return _decode_metadata(path, raw)


# ---- Arrow IPC ------------------------------------------------------------------------------
def read_arrow(path: str, schema: TableSchema, columns: Optional[Sequence[str]] = None
               ) -> Iterator[np.ndarray]:
    import pyarrow as pa
    try:
        with pa.memory_map(path) as source:
            reader = pa.ipc.open_file(source)
            names = reader.schema.names
            _check_columns(path, names, schema, "its table")
            wanted = _wanted(names, columns, schema)
            for i in range(reader.num_record_batches):
                table = pa.Table.from_batches([reader.get_batch(i)]).select(wanted)
                yield schema.records_from_table(table)
    except _arrow_errors() as e:
        raise NotARecordingError(path, f"not a readable Arrow IPC file ({e})") from None


def arrow_metadata(path: str) -> Dict[str, Any]:
    import pyarrow as pa
    try:
        with pa.memory_map(path) as source:
            raw = pa.ipc.open_file(source).schema.metadata or {}
    except _arrow_errors() as e:
        raise NotARecordingError(path, f"not a readable Arrow IPC file ({e})") from None
    return _decode_metadata(path, raw)


def _decode_metadata(path: str, raw: Dict[bytes, bytes]) -> Dict[str, Any]:
    text = raw.get(METADATA_KEY.encode())
    if not text:
        return {}
    try:
        return dict(json.loads(text))
    except (ValueError, TypeError) as e:
        raise NotARecordingError(path, f"its metadata is not valid JSON ({e})") from None


# ---- npy ------------------------------------------------------------------------------------
def read_npy(path: str, schema: TableSchema, columns: Optional[Sequence[str]] = None, *,
             partial: bool = False, torn: Optional[List[int]] = None) -> Iterator[np.ndarray]:
    """Any structured array with the recording's fields: today's DTYPE as it is, older (or
    newer) record dtypes field by field.  The header is parsed here, never by ``np.load``
    with pickles: an npy file holding anything else is refused, not unpickled.  ``partial``:
    a file in progress or left by a crash, read up to the smaller of its header's count and
    the complete rows its size holds."""
    with open(path, "rb") as f:
        if partial and _torn_npy_header(f):
            _count_torn(torn, os.fstat(f.fileno()).st_size)
            return
        f.seek(0)
        if f.read(len(_NPY_MAGIC)) != _NPY_MAGIC:
            raise NotARecordingError(path, "not an npy file (no NUMPY magic bytes)")
        f.seek(0)
        try:
            version = npy_format.read_magic(f)
            read_header = (npy_format.read_array_header_1_0 if version == (1, 0)
                           else npy_format.read_array_header_2_0)
            shape, _, dtype = read_header(f)
            offset = f.tell()
        except (ValueError, SyntaxError, TypeError) as e:
            raise NotARecordingError(path, f"its npy header is damaged ({e})") from None
    if dtype.hasobject or dtype.names is None or len(shape) != 1:
        raise NotARecordingError(path, f"an npy array of {dtype} with shape {shape}, not of "
                                 "taskstats_fast records")
    _check_columns(path, dtype.names, schema, f"its dtype ({len(dtype.names)} fields)")
    if partial:
        size = os.path.getsize(path)
        held = (size - offset) // dtype.itemsize if dtype.itemsize else 0
        shape = (max(0, min(shape[0], held)),)
        _count_torn(torn, size - offset - shape[0] * dtype.itemsize)
        if not shape[0]:
            return
    try:
        array = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)
    except ValueError as e:
        raise NotARecordingError(path, f"shorter than its npy header says ({e})") from None
    for lo in range(0, len(array), CHUNK_RECORDS):
        yield schema.records_from_array(np.asarray(array[lo:lo + CHUNK_RECORDS]))


def _torn_npy_header(f: Any) -> bool:
    """Whether ``f`` holds the start of an npy header and nothing more: a file killed before
    its header was complete, which holds no row (not a damaged file)."""
    head = f.read(10)
    if len(head) < 10:
        return _NPY_MAGIC.startswith(head[:6])
    if not head.startswith(_NPY_MAGIC):
        return False
    header_length = int.from_bytes(head[8:10], "little") if head[6] == 1 else None
    if header_length is None:   # version 2/3: a 4-byte length
        more = f.read(2)
        if len(more) < 2:
            return True
        header_length = int.from_bytes(head[8:10] + more, "little")
    return len(f.read(header_length)) < header_length


def _count_torn(torn: Optional[List[int]], dropped: int) -> None:
    """Add the bytes past the last complete row or batch (a write the crash cut short)."""
    if torn is not None and dropped > 0:
        torn.append(dropped)


def read_npy_partial(path: str, schema: TableSchema, columns: Optional[Sequence[str]] = None,
                     torn: Optional[List[int]] = None) -> Iterator[np.ndarray]:
    """An npy file in progress (or left by a crash), up to its last complete row: the header's
    count is the commit mark (rows past it, or a row cut short, are a torn tail, counted in
    ``torn``), and a header cut short holds no row."""
    return read_npy(path, schema, columns, partial=True, torn=torn)


def read_parquet_partial(path: str, schema: TableSchema,
                         columns: Optional[Sequence[str]] = None,
                         torn: Optional[List[int]] = None) -> Iterator[np.ndarray]:
    """A Parquet file in progress: its journal (an Arrow IPC stream), the Parquet file having
    no footer yet.  Without a journal (a crash of a version that wrote none) it is damaged."""
    journal = journal_path(path)
    if not os.path.exists(journal):
        raise NotARecordingError(path, "a Parquet file left unfinished without a journal: its "
                                 "rows cannot be read (delete it)")
    return _read_stream(journal, 0, schema, columns, torn)


def read_arrow_partial(path: str, schema: TableSchema, columns: Optional[Sequence[str]] = None,
                       torn: Optional[List[int]] = None) -> Iterator[np.ndarray]:
    """An Arrow IPC file in progress: after its 8 magic bytes it is an IPC stream, read batch
    by batch up to the last complete one."""
    return _read_stream(path, 8, schema, columns, torn)


_ARROW_MAGIC = b"ARROW1\0\0"


def _torn_stream_start(head: bytes, size: int, offset: int) -> bool:
    """Whether a stream of ``size`` bytes starting with ``head`` ends before its first message
    (the schema) is complete: the magic (``offset`` bytes of it), then a message framed as
    0xFFFFFFFF, a little-endian int32 length and that many bytes.  A stream cut there holds no
    batch; one whose schema is complete but unreadable is damaged instead."""
    if size < offset:
        return _ARROW_MAGIC.startswith(head)
    if head[:offset] != _ARROW_MAGIC[:offset]:
        return False
    frame = head[offset:offset + 8]
    if not b"\xff\xff\xff\xff".startswith(frame[:4]):
        return False
    if len(frame) < 8:
        return True
    return size < offset + 8 + int.from_bytes(frame[4:], "little", signed=True)


def _read_stream(path: str, offset: int, schema: TableSchema,
                 columns: Optional[Sequence[str]], torn: Optional[List[int]] = None
                 ) -> Iterator[np.ndarray]:
    """The IPC stream at ``offset`` of ``path``, up to its last complete batch (what follows
    it, a write the crash cut short, is counted in ``torn``)."""
    import pyarrow as pa
    try:
        with pa.memory_map(path) as source:
            data = source.read_buffer()
            head = data.slice(0, min(data.size, offset + 8)).to_pybytes()
            if _torn_stream_start(head, data.size, offset):
                _count_torn(torn, data.size)
                return
            if offset and data.slice(0, 6).to_pybytes() != b"ARROW1":
                raise NotARecordingError(path, "not an Arrow IPC file in progress (no magic)")
            stream = pa.BufferReader(data.slice(offset))
            reader = pa.ipc.open_stream(stream)
            names = reader.schema.names
            _check_columns(path, names, schema, "its table")
            wanted = _wanted(names, columns, schema)
            complete = stream.tell()
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    break
                except _arrow_errors():   # the batch the crash cut short
                    break
                complete = stream.tell()
                yield schema.records_from_table(pa.Table.from_batches([batch]).select(wanted))
            _count_torn(torn, data.size - offset - complete)
    except _arrow_errors() as e:
        raise NotARecordingError(path, f"not a readable Arrow IPC stream in progress ({e})"
                                 ) from None


def arrow_partial_metadata(path: str) -> Dict[str, Any]:
    """The metadata an Arrow file in progress opened with ({} when unreadable)."""
    return _stream_metadata(path, 8)


def parquet_partial_metadata(path: str) -> Dict[str, Any]:
    """The metadata a Parquet file in progress opened with: its journal's ({} if none)."""
    return _stream_metadata(journal_path(path), 0)


def _stream_metadata(path: str, offset: int) -> Dict[str, Any]:
    import pyarrow as pa
    try:
        with pa.memory_map(path) as source:
            raw = pa.ipc.open_stream(source.read_buffer().slice(offset)).schema.metadata or {}
    except _arrow_errors():
        return {}
    try:
        return _decode_metadata(path, raw)
    except NotARecordingError:
        return {}


def no_partial_metadata(path: str) -> Dict[str, Any]:
    """Formats whose file in progress keeps no metadata (it goes to a sidecar at the end)."""
    return {}


# ---- CSV ------------------------------------------------------------------------------------
def read_csv_partial(path: str, schema: TableSchema, columns: Optional[Sequence[str]] = None,
                     torn: Optional[List[int]] = None) -> Iterator[np.ndarray]:
    """A CSV file in progress, up to its last complete line (the rest, a line the crash cut
    short, is counted in ``torn``)."""
    import pyarrow as pa
    with open(path, "rb") as f:
        data = f.read()
    end = data.rfind(b"\n")
    _count_torn(torn, len(data) - end - 1)
    if end < 0:
        return iter(())
    return read_csv(path, schema, columns, source=pa.BufferReader(data[:end + 1]))


def read_csv(path: str, schema: TableSchema, columns: Optional[Sequence[str]] = None, *,
             source: Any = None) -> Iterator[np.ndarray]:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    types = {f.name: (pa.string() if pa.types.is_dictionary(f.type) else f.type)
             for f in schema.arrow_schema(unit="ns")}
    try:
        with open(path, "rb") as f:
            header = f.readline().decode("utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise NotARecordingError(path, f"not a text CSV file ({e})") from None
    names = [n.strip().strip('"') for n in header.split(",")]
    _check_columns(path, names, schema, "its header")
    wanted = _wanted(names, columns, schema)
    try:
        reader = pacsv.open_csv(path if source is None else source, read_options=pacsv.ReadOptions(block_size=1 << 24,
                                                                         use_threads=False),
                                convert_options=pacsv.ConvertOptions(
                                    column_types={n: t for n, t in types.items() if n in names},
                                    include_columns=wanted, strings_can_be_null=False))
        for batch in reader:
            yield schema.records_from_table(pa.Table.from_batches([batch]))
    except _arrow_errors() as e:
        raise NotARecordingError(path, f"its rows are not a recording's ({e})") from None
