"""Recordings on disk: writing record arrays to Parquet, Arrow, npy or CSV files, rotating them,
the metadata every file carries, and reading them back.

This module owns the file formats of ``taskstats-fast record`` and ``snapshot`` and of
``summary``'s input.  It knows nothing about sockets: a ``Recorder`` is fed ``DTYPE`` arrays (and
the listener's loss counters) by whoever reads them.

Layout of a recording directory (``Recorder(path)`` where ``path`` has no file extension) —
a hive-partitioned dataset, so the directories of many hosts copied side by side form one dataset
for pyarrow.dataset, DuckDB (``read_parquet('exits/**/*.parquet', hive_partitioning=true)``),
Spark or pandas::

    exits/host=web-1/date=2026-11-26/part-20261126T152001Z-4242-0000.parquet
    exits/host=web-1/date=2026-11-26/part-20261126T162001Z-4242-0001.parquet

``date`` is the UTC day the file was started; a file rotates at UTC midnight, after
``rotate_seconds`` and when it reaches ``rotate_bytes``.  A file is written under a hidden name
(``.part-….inprogress``, which dataset readers skip) and renamed when it is complete, so readers
never see a half-written file.  A ``path`` with an extension (``exits.parquet``) is one file.

Every file carries the same metadata object (see ``file_metadata``): hostname, kernel release,
struct versions, CPUs listened to, time range, record and loss counts.  Parquet and Arrow keep it as
JSON under the schema metadata key ``taskstats_fast``; npy and CSV files get a JSON sidecar
(``<file>.json`` beside a single file, ``_<file>.json`` inside a dataset directory, where the
underscore keeps dataset readers away from it).

Parquet files are written without the embedded Arrow schema so that the metadata, which is only
known when the file is closed, lands in the footer where every reader finds it; as a consequence
``kind`` reads back as a plain string column (``read_table`` restores the category).
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import os
import platform
import socket
import time
import urllib.parse
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from . import frames, layout

__all__ = ["FORMATS", "EXTENSIONS", "METADATA_KEY", "FORMAT_VERSION", "detect_format",
           "default_format", "system_metadata", "Recorder", "BackgroundWriter", "write_file",
           "prepare_output",
           "find_files", "read_metadata", "read_table", "read_columns", "is_dataset_path"]

FORMATS: Tuple[str, ...] = ("parquet", "arrow", "npy", "csv")
#: File extension of each format (and the formats each extension selects).
EXTENSIONS: Dict[str, str] = {"parquet": ".parquet", "arrow": ".arrow", "npy": ".npy", "csv": ".csv"}
_FORMAT_OF_EXTENSION = {**{ext: fmt for fmt, ext in EXTENSIONS.items()},
                        ".feather": "arrow", ".ipc": "arrow", ".pq": "parquet"}
#: Schema metadata key (Parquet/Arrow) holding the file's metadata as JSON.
METADATA_KEY = "taskstats_fast"
#: Bumped when the meaning of files or their metadata changes.
FORMAT_VERSION = 1
_EXTRA_FOR_FORMAT = {"parquet": "arrow", "arrow": "arrow", "csv": "arrow", "npy": None}


def _extension_format(path: str) -> Optional[str]:
    return _FORMAT_OF_EXTENSION.get(os.path.splitext(path)[1].lower())


def is_dataset_path(path: str) -> bool:
    """Does ``path`` name a dataset directory (no known file extension, or an existing directory)?"""
    return os.path.isdir(path) or _extension_format(path) is None


def prepare_output(path: str) -> str:
    """Create the directory ``path`` will be written in (the dataset directory itself, or a
    file's parent) and check it is writable; returns that directory."""
    directory = path if is_dataset_path(path) else (os.path.dirname(path) or ".")
    os.makedirs(directory, exist_ok=True)
    if not os.access(directory, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, "cannot create files in this directory", directory)
    return directory


def default_format() -> str:
    """Parquet when pyarrow is installed, else npy (which needs nothing but numpy)."""
    try:
        import pyarrow  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        return "npy"
    return "parquet"


def detect_format(path: str, explicit: Optional[str] = None) -> str:
    """The format to write ``path`` in: ``explicit`` if given (it must agree with a file
    extension), else the extension's, else ``default_format()``."""
    by_extension = _extension_format(path)
    if explicit is not None:
        if explicit not in FORMATS:
            raise ValueError(f"unknown format {explicit!r}: choose one of {', '.join(FORMATS)}")
        if by_extension is not None and by_extension != explicit:
            raise ValueError(f"{path} has a {by_extension} extension but --format {explicit} "
                             "was asked for: change one of them")
        return explicit
    return by_extension or default_format()


def _require_format(fmt: str) -> None:
    extra = _EXTRA_FOR_FORMAT[fmt]
    if extra is not None:
        frames.require("pyarrow", extra, f"writing {fmt} files")


def _utc(ns: Optional[int]) -> Optional[str]:
    if ns is None:
        return None
    return _dt.datetime.fromtimestamp(ns / 1e9, _dt.timezone.utc).isoformat(timespec="microseconds")


def system_metadata(**extra: Any) -> Dict[str, Any]:
    """What every file says about where it was recorded: hostname, kernel release, machine,
    library version, the delay-accounting switch, plus ``extra``."""
    from . import __version__
    from .kernel.delayacct import delayacct_enabled
    uname = platform.uname()
    meta: Dict[str, Any] = {
        "format": "taskstats_fast recording",
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        "hostname": socket.gethostname(),
        "kernel_release": uname.release,
        "machine": uname.machine,
        "delayacct_enabled": delayacct_enabled(),
        "columns": "taskstats_fast.frames.COLUMNS (README: field reference)",
    }
    meta.update(extra)
    return meta


class _FileStats:
    """What a file's records add up to, updated batch by batch (vectorised per batch)."""

    def __init__(self) -> None:
        self.records = 0
        self.pid_records = 0
        self.tgid_records = 0
        self.versions: set = set()
        self.first_ns: Optional[int] = None
        self.last_ns: Optional[int] = None

    def add(self, records: np.ndarray) -> None:
        if not len(records):
            return
        self.records += len(records)
        kind = records["kind"]
        self.pid_records += int(np.count_nonzero(kind == layout.KIND_PID))
        self.tgid_records += int(np.count_nonzero(kind == layout.KIND_TGID))
        self.versions.update(int(v) for v in np.unique(records["version"]))
        times = records["time_ns"]
        times = times[times != 0]
        if len(times):
            lo, hi = int(times.min()), int(times.max())
            self.first_ns = lo if self.first_ns is None else min(self.first_ns, lo)
            self.last_ns = hi if self.last_ns is None else max(self.last_ns, hi)

    def as_metadata(self) -> Dict[str, Any]:
        versions = sorted(self.versions)
        return {
            "records": self.records,
            "pid_records": self.pid_records,
            "tgid_records": self.tgid_records,
            "taskstats_version": versions[-1] if versions else None,
            "taskstats_versions": versions,
            "first_record": _utc(self.first_ns),
            "last_record": _utc(self.last_ns),
            "first_record_ns": self.first_ns,
            "last_record_ns": self.last_ns,
        }


# ---- one output file ----------------------------------------------------------------------
class _Part:
    """One file being written under a hidden temporary name, renamed into place by ``finish``."""

    def __init__(self, path: str, fmt: str, *, sidecar_path: Optional[str]):
        self.path = path
        self.fmt = fmt
        self.sidecar_path = sidecar_path
        directory, name = os.path.split(path)
        self.tmp_path = os.path.join(directory, f".{name}.inprogress")
        os.makedirs(directory or ".", exist_ok=True)
        self.stats = _FileStats()
        self.opened_ns = time.time_ns()
        self._writer: Any = None
        self._file: Any = None
        self._npy_header_size = 0
        if fmt == "npy":
            self._file = open(self.tmp_path, "wb")
            header = _npy_header(0)
            self._npy_header_size = len(header) + 24   # room for the count to grow
            self._file.write(_npy_header(0, self._npy_header_size))
        elif fmt == "parquet":
            import pyarrow.parquet as pq
            self._writer = pq.ParquetWriter(self.tmp_path, frames.arrow_schema(),
                                            compression="zstd", store_schema=False)
        elif fmt == "arrow":
            import pyarrow as pa
            self._writer = pa.ipc.new_file(self.tmp_path, frames.arrow_schema())
        elif fmt == "csv":
            import pyarrow.csv as pacsv
            self._writer = pacsv.CSVWriter(self.tmp_path, frames.arrow_schema())
        else:  # pragma: no cover - detect_format guards this
            raise ValueError(fmt)

    @property
    def bytes_on_disk(self) -> int:
        try:
            return os.stat(self.tmp_path).st_size
        except FileNotFoundError:
            return 0

    def write(self, records: np.ndarray) -> None:
        if not len(records):
            return
        if self.fmt == "npy":
            self._file.write(np.ascontiguousarray(records).data.cast("B"))
            self._file.flush()
            # Keep the header's row count current, so a crash leaves a loadable file.
            end = self._file.tell()
            self._file.seek(0)
            self._file.write(_npy_header(self.stats.records + len(records), self._npy_header_size))
            self._file.seek(end)
        else:
            table = frames.to_arrow(records)
            if self.fmt == "parquet":
                self._writer.write_table(table, row_group_size=len(records))
            else:
                self._writer.write_table(table)
        self.stats.add(records)

    def finish(self, metadata: Mapping[str, Any]) -> str:
        """Close the file with ``metadata`` (JSON-able), move it into place, return its path."""
        text = json.dumps(metadata, sort_keys=True)
        if self.fmt == "npy":
            self._file.close()
        elif self.fmt == "parquet":
            self._writer.add_key_value_metadata({METADATA_KEY: text})
            self._writer.close()
        elif self.fmt == "arrow":
            self._writer.close()
            _rewrite_arrow_with_metadata(self.tmp_path, {METADATA_KEY: text})
        else:
            self._writer.close()
        if self.sidecar_path:
            _atomic_write(self.sidecar_path, json.dumps(metadata, indent=2, sort_keys=True) + "\n")
        os.replace(self.tmp_path, self.path)
        return self.path

    def abort(self) -> None:
        """Close without publishing (used when the first write failed)."""
        try:
            if self._file is not None:
                self._file.close()
            if self._writer is not None:
                self._writer.close()
        finally:
            try:
                os.unlink(self.tmp_path)
            except FileNotFoundError:
                pass


def _npy_header(rows: int, size: Optional[int] = None) -> bytes:
    """An npy v1.0 header for ``rows`` DTYPE records, padded with spaces to ``size`` bytes
    (or to the next multiple of 64)."""
    text = repr({"descr": np.lib.format.dtype_to_descr(layout.DTYPE), "fortran_order": False,
                 "shape": (rows,)}).encode("latin1")
    prefix = 10   # magic (6) + version (2) + header length (2)
    total = size if size is not None else -(-(prefix + len(text) + 1) // 64) * 64
    if size is not None:
        total = -(-total // 64) * 64
    body = text + b" " * (total - prefix - len(text) - 1) + b"\n"
    if len(body) > 0xFFFF:  # pragma: no cover - the descr is ~4 KB
        raise ValueError("npy header too long")
    return b"\x93NUMPY\x01\x00" + len(body).to_bytes(2, "little") + body


def _rewrite_arrow_with_metadata(path: str, metadata: Mapping[str, str]) -> None:
    """Arrow IPC files carry their schema (and its metadata) from the start: copy the batches
    into a new file whose schema has the final metadata."""
    import pyarrow as pa
    tmp = path + ".final"
    with pa.memory_map(path) as source:
        reader = pa.ipc.open_file(source)
        schema = reader.schema.with_metadata(dict(metadata))
        with pa.ipc.new_file(tmp, schema) as writer:
            for i in range(reader.num_record_batches):
                writer.write_batch(reader.get_batch(i))
    os.replace(tmp, path)


def _atomic_write(path: str, text: str) -> None:
    tmp = os.path.join(os.path.dirname(path) or ".", f".{os.path.basename(path)}.inprogress")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


# ---- a recording ---------------------------------------------------------------------------
class Recorder:
    """Writes a stream of ``DTYPE`` batches to files, rotating them; a context manager.

    ``path``: a dataset directory (hive-partitioned ``host=…/date=…/part-….<ext>`` files) or,
    with a file extension, one file (no rotation).  ``fmt``: one of ``FORMATS`` (default: from
    the extension, else ``default_format()``).  ``rotate_bytes`` / ``rotate_seconds``: start a
    new file when the current one reaches this size on disk / age (None or 0: never).
    ``flush_records``: records buffered in memory before they are written (Parquet: one row
    group).  ``metadata``: extra keys for every file (``system_metadata()`` is always included).

    ``write`` copies what it is given, so callers may reuse their arrays.  ``update_counters``
    takes the source's cumulative loss counters; each file's metadata carries how much was lost
    while it was open.  ``close`` writes everything still buffered; every record passed to
    ``write`` is on disk when it returns.
    """

    def __init__(self, path: str, fmt: Optional[str] = None, *, rotate_bytes: Optional[int] = None,
                 rotate_seconds: Optional[float] = None, flush_records: int = 65536,
                 flush_seconds: float = 10.0, metadata: Optional[Mapping[str, Any]] = None,
                 hostname: Optional[str] = None):
        self.fmt = detect_format(path, fmt)
        _require_format(self.fmt)
        self.root = path
        self.dataset = is_dataset_path(path)
        if not self.dataset and (rotate_bytes or rotate_seconds):
            raise ValueError(f"{path} is a single file: rotation needs a directory to put the "
                             "files in; give a path without an extension (or drop --rotate-*)")
        # Fail now, not at the first flush (which may be minutes in, on another thread).
        prepare_output(path)
        self.rotate_bytes = rotate_bytes or None
        self.rotate_seconds = rotate_seconds or None
        self.flush_records = max(1, int(flush_records))
        self.flush_seconds = flush_seconds
        self.metadata = system_metadata(**(metadata or {}))
        self.hostname = hostname or self.metadata["hostname"]
        self.files: List[str] = []
        self.records_written = 0
        self.bytes_finished = 0
        self._pending: List[np.ndarray] = []
        self._pending_records = 0
        self._last_flush = time.monotonic()
        self._part: Optional[_Part] = None
        self._part_started = 0.0
        self._part_day: Optional[str] = None
        self._counters: Dict[str, int] = {}
        self._counters_baseline: Dict[str, int] = {}   # counters when the last file finished
        self._sequence = 0
        self._closed = False

    # -- public ----------------------------------------------------------------------------
    @property
    def current_path(self) -> Optional[str]:
        """The file being written (its final name), if any."""
        return self._part.path if self._part else None

    @property
    def bytes_written(self) -> int:
        """Bytes of finished files plus what the current file holds on disk."""
        part = self._part   # one read: another thread may be rotating (BackgroundWriter)
        return self.bytes_finished + (part.bytes_on_disk if part else 0)

    @property
    def buffered(self) -> int:
        """Records passed to ``write`` and not yet written to a file."""
        return self._pending_records

    def update_counters(self, counters: Mapping[str, int]) -> None:
        """Cumulative counters of the source (e.g. ``received``, ``lost``, ``overruns``)."""
        self._counters = {k: int(v) for k, v in counters.items()}

    def write(self, records: np.ndarray, *, copy: bool = True) -> None:
        """Queue a batch and write out what is due.  ``copy=False`` takes ownership of
        ``records`` instead of copying it (the caller must not change it afterwards)."""
        if self._closed:
            raise ValueError("write to a closed Recorder")
        if records.dtype != layout.DTYPE:
            raise TypeError("Recorder.write takes arrays of taskstats_fast.DTYPE")
        if len(records):
            self._pending.append(np.array(records, copy=True) if copy else records)
            self._pending_records += len(records)
        self.tick()

    def tick(self) -> None:
        """Write buffered records and rotate if one of the limits is reached (call it now and
        then when no records arrive, so quiet recordings still rotate on time)."""
        now = time.monotonic()
        if self._part is not None and self._age_due(now):
            self._finish_part()   # before writing: what arrives after the deadline goes to the next file
        if self._pending_records >= self.flush_records or \
                (self._pending_records and now - self._last_flush >= self.flush_seconds):
            self.flush()
        if self._part is not None and self.rotate_bytes and \
                self._part.bytes_on_disk >= self.rotate_bytes:
            self._finish_part()

    def flush(self) -> None:
        """Write every buffered record to the current file (opening one if needed)."""
        self._last_flush = time.monotonic()
        if not self._pending_records:
            return
        if len(self._pending) == 1:
            batch = self._pending[0]
        else:   # into a DTYPE array: np.concatenate alone would drop the dtype's tail padding
            batch = np.empty(self._pending_records, layout.DTYPE)
            np.concatenate(self._pending, out=batch)
        self._pending, self._pending_records = [], 0
        part = self._part or self._open_part()
        part.write(batch)
        self.records_written += len(batch)

    def close(self) -> List[str]:
        """Write what is buffered, finish the current file, return every file written."""
        if self._closed:
            return self.files
        self._closed = True
        self.flush()
        unaccounted = any(v != self._counters_baseline.get(k, 0) for k, v in self._counters.items())
        if self._part is None and (not self.files or unaccounted):
            # an empty recording still leaves a file with its metadata, and a loss after the
            # last file finished still lands in one
            self._open_part()
        if self._part is not None:
            self._finish_part()
        return self.files

    def __enter__(self) -> "Recorder":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- internals -------------------------------------------------------------------------
    def _age_due(self, now: float) -> bool:
        if self.rotate_seconds and now - self._part_started >= self.rotate_seconds:
            return True
        return self.dataset and _utc_day() != self._part_day

    def _next_path(self) -> str:
        if not self.dataset:
            return self.root
        day = _utc_day()
        directory = os.path.join(self.root, f"host={urllib.parse.quote(self.hostname, safe='')}",
                                 f"date={day}")
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        while True:
            name = f"part-{stamp}-{os.getpid()}-{self._sequence:04d}{EXTENSIONS[self.fmt]}"
            self._sequence += 1
            path = os.path.join(directory, name)
            if not os.path.exists(path):
                return path

    def _open_part(self) -> _Part:
        path = self._next_path()
        sidecar = None
        if self.fmt in ("npy", "csv"):
            directory, name = os.path.split(path)
            sidecar = os.path.join(directory, ("_" if self.dataset else "") + name + ".json")
        self._part = _Part(path, self.fmt, sidecar_path=sidecar)
        self._part_started = time.monotonic()
        self._part_day = _utc_day()
        return self._part

    def _finish_part(self) -> None:
        part, self._part = self._part, None
        assert part is not None
        meta = dict(self.metadata)
        meta.update(part.stats.as_metadata())
        meta["file_started"] = _utc(part.opened_ns)
        meta["file_finished"] = _utc(time.time_ns())
        meta["sequence"] = len(self.files)
        for key, value in self._counters.items():
            meta[key] = value - self._counters_baseline.get(key, 0)
            meta[f"{key}_since_start"] = value
        self._counters_baseline = dict(self._counters)
        path = part.finish(meta)
        self.files.append(path)
        self.bytes_finished += os.path.getsize(path)


class BackgroundWriter:
    """Runs a ``Recorder`` on its own thread, so that writing a file (seconds for a big Parquet
    row group on a busy machine) never stops the caller from draining its sockets.

    ``write``/``update_counters``/``tick`` queue work in order and return at once, unless more
    than ``max_queued_records`` records are waiting, in which case ``write`` blocks until the
    writer catches up (the kernel then drops and counts what does not fit in the socket
    buffers, instead of this process growing without bound).  A failure on the writer thread
    (disk full) is raised by the next call.  ``close`` writes everything queued and returns the
    recorder's files.
    """

    _STOP = object()

    def __init__(self, recorder: Recorder, *, max_queued_records: int = 1 << 20):
        import queue
        import threading
        self.recorder = recorder
        self.max_queued_records = max(1, int(max_queued_records))
        self._queue: "queue.Queue[Any]" = queue.Queue()
        self._room = threading.Condition()
        self._queued = 0
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, name="taskstats-fast writer",
                                        daemon=True)
        self._thread.start()

    @property
    def queued(self) -> int:
        """Records handed over and not yet with the recorder."""
        return self._queued

    @property
    def buffered(self) -> int:
        """Records handed over and not yet written to a file."""
        return self._queued + self.recorder.buffered

    @property
    def bytes_written(self) -> int:
        """The recorder's bytes on disk so far."""
        return self.recorder.bytes_written

    @property
    def records_written(self) -> int:
        """Records the recorder has written to files."""
        return self.recorder.records_written

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def write(self, records: np.ndarray, *, copy: bool = True) -> None:
        """Queue ``records`` for ``Recorder.write`` (``copy=False``: hand the array over)."""
        self._check()
        batch = np.array(records, copy=True) if copy else records
        with self._room:
            while self._queued >= self.max_queued_records and self._error is None:
                self._room.wait(0.5)
            self._queued += len(batch)
        self._queue.put(("write", batch))

    def update_counters(self, counters: Mapping[str, int]) -> None:
        """Queue ``Recorder.update_counters`` (in order with the writes)."""
        self._check()
        self._queue.put(("counters", dict(counters)))

    def tick(self) -> None:
        """Queue ``Recorder.tick`` (flush and rotate what is due)."""
        self._check()
        self._queue.put(("tick", None))

    def close(self) -> List[str]:
        """Finish every queued write, close the recorder, return its files."""
        self._queue.put((self._STOP, None))
        self._thread.join()
        self._check()
        return self.recorder.files

    def _run(self) -> None:
        while True:
            op, arg = self._queue.get()
            try:
                if self._error is not None and op is not self._STOP:
                    continue   # drain the queue after a failure; close() reports it
                if op == "write":
                    self.recorder.write(arg, copy=False)
                    with self._room:
                        self._queued -= len(arg)
                        self._room.notify_all()
                elif op == "counters":
                    self.recorder.update_counters(arg)
                elif op == "tick":
                    self.recorder.tick()
                else:
                    self.recorder.close()
                    return
            except BaseException as e:   # reported to the caller by the next call
                self._error = e
                with self._room:
                    self._room.notify_all()
                if op is self._STOP:
                    return


def _utc_day() -> str:
    return time.strftime("%Y-%m-%d", time.gmtime())


def write_file(path: str, records: np.ndarray, fmt: Optional[str] = None,
               metadata: Optional[Mapping[str, Any]] = None) -> str:
    """Write ``records`` to one file (format from ``fmt`` or the extension) with its metadata."""
    fmt = detect_format(path, fmt)
    if is_dataset_path(path) and not os.path.splitext(path)[1]:
        path += EXTENSIONS[fmt]
    with Recorder(path, fmt, metadata=metadata) as rec:
        rec.write(records)
    return rec.files[0]


# ---- reading -------------------------------------------------------------------------------
def find_files(paths: Iterable[str]) -> List[str]:
    """The recorded data files named by ``paths`` (files, or directories searched recursively,
    skipping hidden, ``_``-prefixed and in-progress files), sorted within each directory."""
    out: List[str] = []
    for path in paths:
        if os.path.isdir(path):
            found = []
            for directory, subdirs, names in os.walk(path):
                subdirs[:] = sorted(d for d in subdirs if not d.startswith((".", "_")))
                found += [os.path.join(directory, n) for n in sorted(names)
                          if not n.startswith((".", "_")) and _extension_format(n)]
            out += found
        elif os.path.exists(path):
            if _extension_format(path) is None:
                raise ValueError(f"{path}: not a recording (expected one of "
                                 f"{', '.join(sorted(_FORMAT_OF_EXTENSION))})")
            out.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or directory")
    return out


def read_metadata(path: str) -> Dict[str, Any]:
    """The metadata object of one recorded file ({} if it has none)."""
    fmt = _extension_format(path)
    if fmt in ("npy", "csv"):
        directory, name = os.path.split(path)
        for candidate in (os.path.join(directory, "_" + name + ".json"), path + ".json"):
            if os.path.exists(candidate):
                with open(candidate, encoding="utf-8") as f:
                    return json.load(f)
        return {}
    pa = frames.require("pyarrow", "arrow", f"reading {fmt} files")
    if fmt == "parquet":
        import pyarrow.parquet as pq
        raw = pq.read_schema(path).metadata or {}
    else:
        with pa.memory_map(path) as source:
            raw = pa.ipc.open_file(source).schema.metadata or {}
    text = raw.get(METADATA_KEY.encode())
    return json.loads(text) if text else {}


def _load_npy(path: str) -> np.ndarray:
    records = np.load(path, mmap_mode="r")
    if records.dtype != layout.DTYPE:
        raise ValueError(f"{path}: not a taskstats_fast record array (its dtype differs from "
                         "taskstats_fast.DTYPE)")
    return records


def read_table(paths: Iterable[str], columns: Optional[Sequence[str]] = None) -> "Any":
    """Every record of ``paths`` (files or dataset directories) as one ``pyarrow.Table`` with the
    ``frames`` schema (``columns`` selects some).  Needs ``taskstats_fast[arrow]``."""
    pa = frames.require("pyarrow", "arrow", "reading recordings as Arrow")
    schema = frames.arrow_schema()
    if columns is not None:
        schema = pa.schema([schema.field(c) for c in columns])
    tables = [_read_one_table(p, schema) for p in find_files(paths)]
    if not tables:
        return schema.empty_table()
    return pa.concat_tables(tables)


def _read_one_table(path: str, schema: Any) -> Any:
    import pyarrow as pa
    fmt = _extension_format(path)
    names = schema.names
    if fmt == "npy":
        table = frames.to_arrow(np.asarray(_load_npy(path))).select(names)
    elif fmt == "parquet":
        import pyarrow.parquet as pq
        table = pq.read_table(path, columns=names)
    elif fmt == "arrow":
        with pa.memory_map(path) as source:
            table = pa.ipc.open_file(source).read_all().select(names)
    else:
        import pyarrow.csv as pacsv
        types = {f.name: (pa.string() if pa.types.is_dictionary(f.type) else f.type)
                 for f in frames.arrow_schema()}
        table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
            column_types=types, include_columns=names, strings_can_be_null=False))
    return _conform(table, schema)


def _conform(table: Any, schema: Any) -> Any:
    """Cast a table read from disk to ``schema`` (kind back to a category, metadata dropped)."""
    import pyarrow as pa
    arrays = []
    for field in schema:
        column = table.column(field.name)
        if pa.types.is_dictionary(field.type) and not pa.types.is_dictionary(column.type):
            column = column.dictionary_encode()
            column = column.cast(field.type) if column.type != field.type else column
        elif column.type != field.type:
            column = column.cast(field.type)
        arrays.append(column)
    return pa.Table.from_arrays(arrays, schema=schema.remove_metadata())


def read_columns(paths: Iterable[str], names: Sequence[str]
                 ) -> Dict[str, Tuple[np.ndarray, Optional[np.ndarray]]]:
    """Columns of every record of ``paths`` as numpy, in ``frames.columns`` form
    (``{name: (values, valid)}``; timestamps ``datetime64[ns]``, ``kind`` as int8 codes,
    ``ac_comm`` as str).  npy recordings need only numpy; the other formats need pyarrow."""
    files = find_files(paths)
    parts: List[Dict[str, Tuple[np.ndarray, Optional[np.ndarray]]]] = []
    for path in files:
        if _extension_format(path) == "npy":
            cols = frames.columns(np.asarray(_load_npy(path)))
            parts.append({n: cols[n] for n in names})
        else:
            parts.append(_table_to_columns(read_table([path], names), names))
    if not parts:
        return {n: (np.empty(0, _empty_dtype(n)), None) for n in names}
    out: Dict[str, Tuple[np.ndarray, Optional[np.ndarray]]] = {}
    for n in names:
        values = np.concatenate([p[n][0] for p in parts])
        valids: List[np.ndarray] = []
        for part_values, part_valid in (p[n] for p in parts):
            valids.append(np.ones(len(part_values), bool) if part_valid is None else part_valid)
        out[n] = (values, np.concatenate(valids))
    return out


def _empty_dtype(name: str) -> Any:
    col = frames.COLUMN_BY_NAME[name]
    return {"int": col.dtype, "str": "U1", "category": "i1", "timestamp": "datetime64[ns]"}[col.kind]


def _table_to_columns(table: Any, names: Sequence[str]
                      ) -> Dict[str, Tuple[np.ndarray, Optional[np.ndarray]]]:
    import pyarrow as pa
    import pyarrow.compute as pc
    out = {}
    for name in names:
        col = frames.COLUMN_BY_NAME[name]
        column = table.column(name).combine_chunks()
        valid = column.is_valid().to_numpy(zero_copy_only=False)
        if col.kind == "category":
            indices = column.indices if pa.types.is_dictionary(column.type) else column
            dictionary = [str(v) for v in column.dictionary.to_pylist()]
            lookup = np.array([frames._KIND_CATEGORIES.index(v) if v in frames._KIND_CATEGORIES
                               else -1 for v in dictionary] + [-1], np.int8)
            idx = pc.fill_null(indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
            values = lookup[idx]
        elif col.kind == "timestamp":
            values = pc.fill_null(column, 0).to_numpy(zero_copy_only=False) \
                .astype("datetime64[ns]")
            values[~valid] = np.datetime64("NaT")
        elif col.kind == "str":
            values = np.asarray(pc.fill_null(column, "").to_numpy(zero_copy_only=False), dtype=str)
        else:
            values = pc.fill_null(column, 0).to_numpy(zero_copy_only=False).astype(col.dtype)
        out[name] = (values, valid)
    return out
