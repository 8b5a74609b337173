"""One writer class per file format: how a stream of ``DTYPE`` batches (or the rows of another
``columns`` schema, such as interval rows) becomes bytes in one file.

Each writer opens the (hidden, temporary) path it is given for the rows of ``schema`` (today's
``DTYPE`` records by default), appends batches with ``write``, puts everything written so far
on disk with ``sync`` (an fsync: the recording's flush), and ``finish(metadata)`` completes and
fsyncs the file (embedding the metadata JSON where its format keeps it); ``published`` cleans up
after the sink renamed it; ``abort`` closes without completing; ``keep`` closes without completing
and leaves the file readable in progress, cut back to its last complete write and fsynced (a
write failed: what was written before stays, for ``recovery``).  A failed fsync or close raises:
the sink counts the records as not written.  Every format's file in progress is readable up to
its last ``sync`` by ``readers``' partial readers (Parquet's through its journal).  Publishing
under the final name, rotation and sidecars are the sink's job (``sinks.FileSink``); which
writer serves which format is the registry's (``formats.FORMAT``).  Arrow-based writers write
``schema.file_table`` tables.
"""

from __future__ import annotations

import os
from typing import Any, List, Optional, Tuple

import numpy as np
from numpy.lib import format as npy_format

from .. import schema as columns
from .durable import fsync_path, journal_path, remove_durably, sync_file
from .metadata import METADATA_KEY

__all__ = ["NpyWriter", "ParquetWriter", "ArrowWriter", "CsvWriter", "ARROW_METADATA_ROOM",
           "Marks"]


class Marks:
    """Where the file a writer keeps readable in progress (its journal) ended after its last
    complete write and after its last fsync, and the rows it held then: where ``keep`` cuts
    it back to after a failed write, whose tail may be torn."""

    def __init__(self, path: str, start: int):
        self.path = path
        self.complete = self.synced = (start, 0)

    def wrote(self, end: int, rows: int) -> None:
        self.complete = (end, self.complete[1] + rows)

    def sync(self, f: Any) -> None:
        complete = self.complete
        sync_file(f)
        self.synced = complete

    def keep(self, close: Any) -> int:
        """``close`` the writer (whatever it still flushes is cut off), cut the journal back
        to its last complete write and fsync it: the rows it holds.  When that fsync fails,
        to its last good fsync instead (those rows were on disk before)."""
        close()
        for end, rows in (self.complete, self.synced):
            try:
                os.truncate(self.path, end)
                fsync_path(self.path)
                return rows
            except OSError:
                continue
        return self.synced[1]


class NpyWriter:
    """A ``.npy`` file of DTYPE records whose header always counts the rows written so far, so
    a file cut short (crash, full disk) still loads up to its last complete batch: the file in
    progress is its own journal.  Readers of a file in progress trust the smaller of the
    header's count and the rows the file's size holds."""

    #: the modules it writes with, imported when a sink is made (``Format.require``)
    MODULES: Tuple[str, ...] = ()

    def __init__(self, path: str, schema: Any = columns.DEFAULT, opening_metadata: str = "{}"):
        self.path = path
        self.rows = 0
        self._dtype = schema.dtype
        self._file = open(path, "wb")
        self._header_size = len(_npy_header(0, self._dtype)) + 24   # room for the count to grow
        self._file.write(_npy_header(0, self._dtype, self._header_size))
        self._file.flush()   # the header at once: a kill before the first batch leaves no torn one
        self.marks = Marks(path, self._header_size)

    def write(self, records: np.ndarray) -> None:
        self._file.write(np.ascontiguousarray(records).data.cast("B"))
        self._file.flush()
        end = self._file.tell()
        self._file.seek(0)
        self._file.write(_npy_header(self.rows + len(records), self._dtype, self._header_size))
        self._file.flush()
        self._file.seek(end)
        self.rows += len(records)
        self.marks.wrote(end, len(records))

    def sync(self) -> None:
        self.marks.sync(self._file)

    def finish(self, metadata_json: str) -> None:
        sync_file(self._file)
        self._file.close()

    def published(self) -> None:
        """Called once the file is under its final name (nothing else to clean up)."""

    def abort(self) -> None:
        _close_quietly(self._file)

    def keep(self) -> int:
        def close() -> None:   # and the header counts the rows kept (in place: no new block)
            _close_quietly(self._file)
            fd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.pwrite(fd, _npy_header(self.marks.complete[1], self._dtype,
                                          self._header_size), 0)
            finally:
                os.close(fd)
        return self.marks.keep(close)


def _npy_header(rows: int, dtype: np.dtype, size: Optional[int] = None) -> bytes:
    """An npy v1.0 header for ``rows`` rows of ``dtype``, padded with spaces to ``size`` bytes
    (or to the next multiple of 64)."""
    text = repr({"descr": npy_format.dtype_to_descr(dtype), "fortran_order": False,
                 "shape": (rows,)}).encode("latin1")
    prefix = 10   # magic (6) + version (2) + header length (2)
    total = size if size is not None else -(-(prefix + len(text) + 1) // 64) * 64
    if size is not None:
        total = -(-total // 64) * 64
    body = text + b" " * (total - prefix - len(text) - 1) + b"\n"
    if len(body) > 0xFFFF:  # pragma: no cover - the descr is ~4 KB
        raise ValueError("npy header too long")
    return b"\x93NUMPY\x01\x00" + len(body).to_bytes(2, "little") + body


class ParquetWriter:
    """Parquet, one row group per ``row_group_records`` rows, zstd; the metadata lands in the
    footer at ``finish`` (written without the embedded Arrow schema, which is fixed before the
    metadata is known).  A Parquet file is unreadable until its footer is written, so every
    batch also goes to a journal beside it (``journal_path``: an LZ4-compressed Arrow IPC
    stream of the same table, whose schema carries the opening metadata; fsynced by ``sync``),
    which readers and recovery read after a crash and which is removed once the Parquet file
    is published.  The table is built once per batch, for the journal and the row group."""

    #: the modules it writes with, imported when a sink is made (``Format.require``)
    MODULES: Tuple[str, ...] = ("pyarrow", "pyarrow.parquet")

    row_group_records = 65536

    def __init__(self, path: str, schema: Any = columns.DEFAULT, opening_metadata: str = "{}"):
        import pyarrow as pa
        import pyarrow.parquet as pq
        self.path = path
        self._schema = schema
        self._pending: List[Any] = []
        self._pending_rows = 0
        self._journal = open(journal_path(path), "wb")
        self._file: Any = None
        try:
            journal_schema = schema.file_schema().with_metadata({METADATA_KEY: opening_metadata})
            # on this thread: handing each column's buffers to pyarrow's pool to compress
            # costs more CPU than compressing them (and a pool is a hazard for a forking user)
            self._journal_writer = pa.ipc.new_stream(
                self._journal, journal_schema,
                options=pa.ipc.IpcWriteOptions(compression="lz4", use_threads=False))
            self._journal.flush()   # its schema at once, as the other formats' headers
            self.marks = Marks(journal_path(path), self._journal.tell())
            # the file opened here, not by pyarrow: if its first bytes do not fit (a full
            # disk), the writer raises half-made and only this handle can close the fd
            self._file = pa.OSFile(path, "wb")
            self._writer = pq.ParquetWriter(self._file, schema.file_schema(),
                                            compression="zstd", store_schema=False)
        except BaseException:
            if self._file is not None:
                _close_quietly(self._file)
            _close_quietly(self._journal)
            unlink_quietly(journal_path(path))
            raise

    def write(self, records: np.ndarray) -> None:
        table = self._schema.file_table(records)
        self._journal_writer.write_table(table)
        self._journal.flush()
        self._pending.append(table)
        self._pending_rows += len(records)
        if self._pending_rows >= self.row_group_records:
            self._write_group()
        self.marks.wrote(self._journal.tell(), len(records))

    def _write_group(self) -> None:
        import pyarrow as pa
        if not self._pending_rows:
            return
        table = pa.concat_tables(self._pending)
        self._pending, self._pending_rows = [], 0
        self._writer.write_table(table, row_group_size=len(table))

    def sync(self) -> None:
        self.marks.sync(self._journal)

    def finish(self, metadata_json: str) -> None:
        self._write_group()
        self._writer.add_key_value_metadata({METADATA_KEY: metadata_json})
        self._writer.close()
        self._file.close()   # a file handed to pyarrow's writer is the caller's to close
        fsync_path(self.path)
        self._journal_writer.close()
        self._journal.close()

    def published(self) -> None:
        remove_durably([journal_path(self.path)])

    def abort(self) -> None:
        _close_quietly(self._writer)
        _close_quietly(self._file)
        _close_quietly(self._journal_writer)
        _close_quietly(self._journal)
        unlink_quietly(journal_path(self.path))

    def keep(self) -> int:
        """The journal stays; the Parquet file, unreadable without its footer, is emptied
        (not removed: recovery finds a leftover by it), which frees its room."""
        def close() -> None:
            _close_quietly(self._writer)
            _close_quietly(self._file)
            _close_quietly(self._journal_writer)
            _close_quietly(self._journal)
            try:
                os.truncate(self.path, 0)
            except OSError:
                pass
        return self.marks.keep(close)


#: Room kept in an Arrow file's schema for its metadata, so ``finish`` writes the final
#: metadata in place (same length, padded with spaces) instead of copying the file.
ARROW_METADATA_ROOM = 1 << 14


def _padded(metadata_json: str) -> bytes:
    data = metadata_json.encode("utf-8")
    if len(data) > ARROW_METADATA_ROOM:
        raise ValueError(f"the file's metadata ({len(data)} bytes) does not fit the "
                         f"{ARROW_METADATA_ROOM} bytes an Arrow file keeps for it")
    return data + b" " * (ARROW_METADATA_ROOM - len(data))


class ArrowWriter:
    """Arrow IPC file.  After its 8 magic bytes an IPC file is an IPC stream, readable batch
    by batch while it is written (and after a crash, up to the last fsynced batch).  Its
    schema, which carries the metadata, comes first: it is written with the opening metadata
    padded to ``ARROW_METADATA_ROOM`` bytes, and ``finish`` overwrites both copies (the stream's
    schema and the footer's) with the final metadata, in place: closing never copies."""

    #: the modules it writes with, imported when a sink is made (``Format.require``)
    MODULES: Tuple[str, ...] = ("pyarrow",)

    def __init__(self, path: str, schema: Any = columns.DEFAULT, opening_metadata: str = "{}"):
        import pyarrow as pa
        self.path = path
        self._schema = schema
        self._placeholder = _padded(opening_metadata)
        self._file = open(path, "w+b")
        try:
            file_schema = schema.file_schema().with_metadata(
                {METADATA_KEY.encode(): self._placeholder})
            self._writer = pa.ipc.new_file(self._file, file_schema)
            self._file.flush()
        except BaseException:
            self._file.close()
            raise
        self.marks = Marks(path, self._file.tell())

    def write(self, records: np.ndarray) -> None:
        self._writer.write_table(self._schema.file_table(records))
        self._file.flush()   # to the OS: readers and the size limit see it before the fsync
        self.marks.wrote(self._file.tell(), len(records))

    def sync(self) -> None:
        self.marks.sync(self._file)

    def finish(self, metadata_json: str) -> None:
        self._writer.close()
        final = _padded(metadata_json)
        self._file.flush()
        size = os.fstat(self._file.fileno()).st_size
        window = ARROW_METADATA_ROOM + (1 << 16)
        for where in (0, max(0, size - window)):   # the stream's schema, then the footer's
            self._file.seek(where)
            chunk = self._file.read(window)
            at = chunk.find(self._placeholder)
            if at < 0:
                raise ValueError(f"{self.path}: the metadata room of the Arrow schema is missing")
            self._file.seek(where + at)
            self._file.write(final)
        sync_file(self._file)
        self._file.close()

    def published(self) -> None:
        """Nothing else to clean up."""

    def abort(self) -> None:
        _close_quietly(self._writer)
        _close_quietly(self._file)

    def keep(self) -> int:
        return self.marks.keep(self.abort)


class CsvWriter:
    """CSV with a header row (the metadata goes to a JSON sidecar).  The file in progress is
    its own journal: readers of a file in progress stop at its last complete line."""

    #: the modules it writes with, imported when a sink is made (``Format.require``)
    MODULES: Tuple[str, ...] = ("pyarrow", "pyarrow.csv")

    def __init__(self, path: str, schema: Any = columns.DEFAULT, opening_metadata: str = "{}"):
        import pyarrow.csv as pacsv
        self._schema = schema
        self._file = open(path, "wb")
        try:
            self._writer = pacsv.CSVWriter(self._file, schema.file_schema())
            self._file.flush()
        except BaseException:
            self._file.close()
            raise
        self.marks = Marks(path, self._file.tell())

    def write(self, records: np.ndarray) -> None:
        self._writer.write_table(self._schema.file_table(records))
        self._file.flush()   # to the OS: readers and the size limit see it before the fsync
        self.marks.wrote(self._file.tell(), len(records))

    def sync(self) -> None:
        self.marks.sync(self._file)

    def finish(self, metadata_json: str) -> None:
        self._writer.close()
        sync_file(self._file)
        self._file.close()

    def published(self) -> None:
        """Nothing else to clean up."""

    def abort(self) -> None:
        _close_quietly(self._writer)
        _close_quietly(self._file)

    def keep(self) -> int:
        return self.marks.keep(self.abort)


def _close_quietly(writer: Any) -> None:
    try:
        writer.close()
    except Exception:   # closing a writer that already failed may fail the same way again
        pass


def unlink_quietly(path: str) -> None:
    """Remove ``path`` if it is there (a temporary file that may never have been created)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
