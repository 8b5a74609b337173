"""One writer class per file format: how a stream of ``DTYPE`` batches (or the rows of another
``columns`` schema, such as interval rows) becomes bytes in one file.

Each writer opens the (hidden, temporary) path it is given for the rows of ``schema`` (today's
``DTYPE`` records by default), appends batches with ``write``,
and ``finish(metadata)`` completes the file (embedding the metadata JSON where its format keeps
it); ``abort`` closes without completing.  Publishing under the final name, rotation and
sidecars are the sink's job (``sinks.FileSink``); which writer serves which format is the
registry's (``formats.FORMAT``).  Arrow-based writers write ``schema.file_table`` tables.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import numpy as np
from numpy.lib import format as npy_format

from .. import schema as columns
from .metadata import METADATA_KEY

__all__ = ["NpyWriter", "ParquetWriter", "ArrowWriter", "CsvWriter"]


class NpyWriter:
    """A ``.npy`` file of DTYPE records whose header always counts the rows written so far, so
    a file cut short (crash, full disk) still loads up to its last complete batch."""

    def __init__(self, path: str, schema: Any = columns.DEFAULT):
        self.path = path
        self.rows = 0
        self._dtype = schema.dtype
        self._file = open(path, "wb")
        self._header_size = len(_npy_header(0, self._dtype)) + 24   # room for the count to grow
        self._file.write(_npy_header(0, self._dtype, self._header_size))

    def write(self, records: np.ndarray) -> None:
        self._file.write(np.ascontiguousarray(records).data.cast("B"))
        self._file.flush()
        end = self._file.tell()
        self._file.seek(0)
        self._file.write(_npy_header(self.rows + len(records), self._dtype, self._header_size))
        self._file.flush()
        self._file.seek(end)
        self.rows += len(records)

    def finish(self, metadata_json: str) -> None:
        self._file.close()

    def abort(self) -> None:
        self._file.close()


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
    """Parquet, one row group per batch, zstd; the metadata lands in the footer at ``finish``
    (written without the embedded Arrow schema, which is fixed before the metadata is known)."""

    def __init__(self, path: str, schema: Any = columns.DEFAULT):
        import pyarrow.parquet as pq
        self._schema = schema
        self._writer = pq.ParquetWriter(path, schema.file_schema(), compression="zstd",
                                        store_schema=False)

    def write(self, records: np.ndarray) -> None:
        self._writer.write_table(self._schema.file_table(records), row_group_size=len(records))

    def finish(self, metadata_json: str) -> None:
        self._writer.add_key_value_metadata({METADATA_KEY: metadata_json})
        self._writer.close()

    def abort(self) -> None:
        _close_quietly(self._writer)


class ArrowWriter:
    """Arrow IPC file; its schema (and so the metadata) is written first, so ``finish`` copies
    the batches into a file whose schema carries the final metadata."""

    def __init__(self, path: str, schema: Any = columns.DEFAULT):
        import pyarrow as pa
        self.path = path
        self._schema = schema
        self._writer = pa.ipc.new_file(path, schema.file_schema())

    def write(self, records: np.ndarray) -> None:
        self._writer.write_table(self._schema.file_table(records))

    def finish(self, metadata_json: str) -> None:
        import pyarrow as pa
        self._writer.close()
        tmp = self.path + ".final"
        try:
            with pa.memory_map(self.path) as source:
                reader = pa.ipc.open_file(source)
                schema = reader.schema.with_metadata({METADATA_KEY: metadata_json})
                with pa.ipc.new_file(tmp, schema) as writer:
                    for i in range(reader.num_record_batches):
                        writer.write_batch(reader.get_batch(i))
            os.replace(tmp, self.path)
        except BaseException:
            unlink_quietly(tmp)
            raise

    def abort(self) -> None:
        _close_quietly(self._writer)
        unlink_quietly(self.path + ".final")


class CsvWriter:
    """CSV with a header row (the metadata goes to a JSON sidecar)."""

    def __init__(self, path: str, schema: Any = columns.DEFAULT):
        import pyarrow.csv as pacsv
        self._schema = schema
        self._writer = pacsv.CSVWriter(path, schema.file_schema())

    def write(self, records: np.ndarray) -> None:
        self._writer.write_table(self._schema.file_table(records))

    def finish(self, metadata_json: str) -> None:
        self._writer.close()

    def abort(self) -> None:
        _close_quietly(self._writer)


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
