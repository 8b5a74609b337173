"""Sinks: where batches of records go.  The ``Sink`` protocol, and ``FileSink``, the recording
writer (files of any registered format, one file or a rotating hive-partitioned dataset).

A sink takes batches (``DTYPE`` arrays, or an interval's rows) with ``write``, writes out what
it buffers with ``flush``, finishes with ``close`` and says at any time what it holds and what
it lost with ``stats()``.  ``record()`` (``driver``) drives an exit listener into any sink; the
exporter and the ``top`` view are sinks too.  An empty batch is a tick: sinks that act on time
(rotation) may act on it, the others ignore it.

Layout of a recording directory (``FileSink(path)`` where ``path`` has no file extension) —
a hive-partitioned dataset, so the directories of many hosts copied side by side form one dataset
for pyarrow.dataset, DuckDB (``read_parquet('exits/**/*.parquet', hive_partitioning=true)``),
Spark or pandas::

    exits/host=web-1/date=2026-11-26/part-20261126T152001Z-4242-0000.parquet
    exits/host=web-1/date=2026-11-26/part-20261126T162001Z-4242-0001.parquet

``date`` is the UTC day the file was started; a file rotates at UTC midnight, after
``rotate_seconds`` and when it reaches ``rotate_bytes``.  A file is written under a hidden name
(``.part-….inprogress``, which dataset readers skip) and renamed when it is complete (``parts``).
A ``path`` with an extension (``exits.parquet``) is one file, locked against a second writer.

Durability: what ``write`` received is written to the file in progress and fsynced within
``flush_seconds`` (the crash window), and the file in progress stays readable up to that
fsync (``Recordings`` reads it; a restart's ``recovery`` publishes it as a ``recovered`` file).
Finished files, sidecars and deletions follow the fsync rules of ``durable``.

When a write fails (a full disk), the file being written is never published half-made, and
what it holds up to its last complete write stays: cut back to that write, fsynced and left in
progress (``Part.keep``; a Parquet file keeps its journal), it reads in place and ``recovery``
publishes it, at once when ``close`` finds room for that, else when the next recording starts
there.  A file that failed to finish off the writer's thread is kept the same way (its journal
was fsynced whole before).  Files finished before stay complete.  Every record handed over
that is not on disk is counted (``stats().lost``; what was kept is ``written``, and
``unpublished`` while left in progress), and the count goes into the metadata of one more
(empty) file if the disk has room for it.
"""

from __future__ import annotations

import errno
import functools
import os
import queue
import tempfile
import time
from typing import Any, List, Mapping, Optional, Tuple

import numpy as np

from .. import layout
from .. import schema as columns
from ..errors import WriteFailedError
from ..schema import TableSchema
from ..sink import CountingSink, Sink, SinkStats
from .durable import NotPublishedError, OutputLock
from .finishing import FinishedFiles
from .formats import FORMAT, Format, detect_format, require_format
from .metadata import stats_for, system_metadata
from .parts import Part
from .paths import PartNames, host_directory, is_dataset_path, utc_day
from .recovery import RecoveryResult, Unfinished, recover_leftovers
from .retention import RetentionPolicy

__all__ = ["Sink", "SinkStats", "FileSink", "Recorder", "BackgroundWriter", "write_file",
           "prepare_output", "prepare_writing", "check_writable", "CountingSink"]


def _nearest_existing(path: str) -> str:
    path = os.path.abspath(path)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def check_writable(path: str) -> str:
    """Check, without leaving anything behind, that ``path`` (a file or a dataset directory)
    can be written: create and remove a real file in the deepest existing directory on its way
    (``os.access`` is not enough: root passes it on read-only and pseudo file systems).  Raises
    ``PermissionError``/``OSError`` naming that directory; returns it."""
    directory = path if is_dataset_path(path) else (os.path.dirname(path) or ".")
    existing = _nearest_existing(directory)
    if not os.path.isdir(existing):
        raise NotADirectoryError(errno.ENOTDIR, "not a directory: cannot create files under it",
                                 existing)
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".taskstats-fast-probe-")
    except OSError as e:
        raise type(e)(e.errno, f"cannot create files in this directory ({e.strerror}): "
                      "write somewhere else", existing) from None
    os.close(fd)
    os.unlink(probe)
    return existing


def prepare_output(path: str) -> str:
    """Create the directory ``path`` will be written in (the dataset directory itself, or a
    file's parent) and check that a file can really be created there; returns that directory."""
    directory = path if is_dataset_path(path) else (os.path.dirname(path) or ".")
    os.makedirs(directory, exist_ok=True)
    check_writable(path)
    return directory


def _write_error(error: BaseException) -> Tuple[int, str]:
    """(errno, text) of a failed write: OSError's own, or pyarrow's "[errno N]" in its text."""
    if isinstance(error, NotPublishedError):   # which fsync, and where the file went
        return error.errno or errno.EIO, str(error.strerror)
    if isinstance(error, OSError) and error.errno:
        return error.errno, os.strerror(error.errno)
    text = str(error)
    for code, name in ((errno.ENOSPC, "No space left on device"), (errno.EDQUOT, "quota")):
        if f"errno {code}]" in text or name in text:
            return code, os.strerror(code)
    return errno.EIO, text.splitlines()[0] if text else type(error).__name__


# ---- a recording ---------------------------------------------------------------------------
def prepare_writing(fmt: str, schema: Optional[TableSchema] = None) -> None:
    """A dry run of one batch's work in format ``fmt``, on no file (``FileSink`` makes one).
    pyarrow imports pandas on the first table it builds, numpy its masked arrays on the first
    unique(): left to the first batch, they took seconds of the flush window on a slow or loaded
    host, with that batch on no disk meanwhile.  A recorder calls it before its exit listener
    registers too: the imports compete with its read-ahead for the GIL, and took longer than the
    sockets hold at a full exit rate (what then arrives is lost)."""
    schema = schema if schema is not None else columns.DEFAULT
    stats_for(schema).add(np.zeros(1, schema.dtype))
    if require_format(fmt).extra is not None:
        schema.file_table(np.zeros(0, schema.dtype))


def _row_name(schema: TableSchema) -> str:
    return "taskstats_fast.DTYPE" if schema is columns.DEFAULT else "the schema's rows"


def _check_single_file_options(path: str, dataset: bool, rotating: bool,
                               retention: Optional[RetentionPolicy]) -> None:
    """Rotation and retention need a dataset directory: refuse them for a single file."""
    if not dataset and rotating:
        raise ValueError(f"{path} is a single file: rotation needs a directory to put the "
                         "files in; give a path without an extension (or drop --rotate-*)")
    if retention is not None and retention.active and not dataset:
        raise ValueError(f"{path} is a single file: retention (--keep-days / --max-total-mb) "
                         "deletes old files of a dataset; give a path without an extension")


class FileSink:
    """Writes a stream of ``DTYPE`` batches to files, rotating them; a ``Sink`` and a context
    manager.

    ``path``: a dataset directory (hive-partitioned ``host=…/date=…/part-….<ext>`` files) or,
    with a file extension, one file (no rotation).  ``fmt``: one of ``FORMATS`` (default: from
    the extension, else ``default_format()``).  ``rotate_bytes`` / ``rotate_seconds``: start a
    new file when the current one reaches this size on disk / age (None or 0: never).
    ``flush_records`` / ``flush_seconds``: records buffered in memory at most before they
    are written and fsynced / the longest a record waits for that (the crash window).
    ``metadata``: extra keys for every file (``system_metadata()`` is always included).

    ``write`` copies what it is given unless ``copy=False``.  ``update_counters`` takes the
    source's cumulative loss counters; each file's metadata carries how much was lost while it
    was open.  ``close`` writes everything still buffered; every record passed to ``write`` is
    on disk when it returns, or counted in ``stats().lost`` (see the module docstring).

    ``schema``: the rows written (default: ``DTYPE`` records; ``intervals.interval_schema()``
    for accounting intervals); its ``metadata`` keys (what the rows are) go into every file.
    """

    def __init__(self, path: str, fmt: Optional[str] = None, *, rotate_bytes: Optional[int] = None,
                 rotate_seconds: Optional[float] = None, flush_records: int = 65536,
                 flush_seconds: float = 1.0, metadata: Optional[Mapping[str, Any]] = None,
                 hostname: Optional[str] = None, retention: Optional[RetentionPolicy] = None,
                 schema: Optional[TableSchema] = None):
        self.schema: TableSchema = schema if schema is not None else columns.DEFAULT
        self.fmt = detect_format(path, fmt)
        self.format: Format = require_format(self.fmt)
        self.root = path
        self.dataset = is_dataset_path(path)
        _check_single_file_options(path, self.dataset, bool(rotate_bytes or rotate_seconds),
                                   retention)
        # Fail now, not at the first flush (which may be minutes in, on another thread).
        prepare_output(path)
        prepare_writing(self.fmt, self.schema)
        self.rotate_bytes = rotate_bytes or None
        self.rotate_seconds = rotate_seconds or None
        self.flush_records = max(1, int(flush_records))
        self.flush_seconds = flush_seconds
        self.metadata = system_metadata(**{**getattr(self.schema, "metadata", {}),
                                           **(metadata or {})})
        self.hostname = hostname or self.metadata["hostname"]
        self.retention = retention if retention is not None and retention.active else None
        self._lock: Optional[OutputLock] = None if self.dataset else OutputLock(path)
        own = host_directory(path, self.hostname)
        try:
            #: what earlier runs left unfinished here, published again (``recovery``)
            self.recovery: RecoveryResult = recover_leftovers(
                [own] if self.dataset else [path], in_dataset=self.dataset)
        except BaseException:
            self._release_lock()
            raise
        self._finished = FinishedFiles(self.metadata, own, self.retention)
        self._names = PartNames(own, self.format.extension)
        #: the files finished, in order; files that retention deleted, and crash leftovers
        #: it aged out
        self.files: List[str] = self._finished.files
        self.deleted: List[str] = self._finished.deleted
        self.aged_out: List[str] = self._finished.aged_out
        self.records_written = 0
        self.not_written = 0
        self.error: Optional[WriteFailedError] = None
        #: the files left in progress after a failed write, with what they hold
        self.unfinished = Unfinished()
        self._pending: List[np.ndarray] = []
        self._pending_records = 0
        #: when the oldest record not yet fsynced arrived (None: all are on disk)
        self._unsynced_since: Optional[float] = None
        self._part: Optional[Part] = None
        #: when the current file's time began (its first record), None until one arrives
        self._part_started: Optional[float] = None
        self._part_day: Optional[str] = None
        self._closed = False

    # -- the Sink protocol -----------------------------------------------------------------
    def write(self, records: np.ndarray, *, copy: bool = True,
              arrived: Optional[float] = None) -> None:
        """Queue a batch and write out what is due (an empty batch: only what is due).
        ``copy=False``: take ``records`` over.  ``arrived``: when it was queued (monotonic; a
        BackgroundWriter's), which the flush deadline counts from."""
        if self._closed:
            raise ValueError("write to a closed FileSink")
        if len(records) and records.dtype != self.schema.dtype:   # an empty array is a tick
            raise TypeError(f"this FileSink writes arrays of {_row_name(self.schema)}, not "
                            f"{records.dtype}")
        if self.error is not None:
            self.not_written += len(records)   # reported once already: only counted now
            return
        if len(records):
            now = time.monotonic()
            self._rotate_if_due(now)   # these came after a deadline passed
            self._pending.append(np.array(records, copy=True) if copy else records)
            self._pending_records += len(records)
            if self._unsynced_since is None:
                self._unsynced_since = min(now, arrived or float("inf"))
            if self._part_started is None:
                # now, not at arrival: batches queued behind a slow rotation would each find
                # their file due at once (one batch a file, each rotation slower than the last)
                self._part_started = now
                self._part_day = utc_day()
        self.tick()

    def flush(self) -> None:
        """Write every buffered record to the current file (opening one if needed) and fsync
        it: everything handed over so far is on disk."""
        self._write_out(sync=True)

    def _write_out(self, *, sync: bool) -> None:
        """Write the buffered records; ``sync``: and fsync what the file holds."""
        if self.error is not None:
            return
        if not self._pending_records:
            if sync and self._unsynced_since is not None and self._part is not None:
                self._guarded(self._sync)
            return
        if len(self._pending) == 1:
            batch = self._pending[0]
        else:
            batch = layout.join_records(self._pending, self.schema.dtype)
        self._pending, self._pending_records = [], 0
        in_part = False   # once in the part's counts, _fail counts the batch with the part's
        try:
            part = self._part or self._open_part()
            part.write(batch)
            in_part = True
            self.records_written += len(batch)
            if sync:
                self._sync()
        except Exception as e:
            self._fail(e, 0 if in_part else len(batch))

    def _sync(self) -> None:
        assert self._part is not None
        self._part.sync()
        self._unsynced_since = None

    def close(self) -> List[str]:
        """Write what is buffered, finish the current file, return every file written.  After
        a failed write, leaves one more (empty) file whose metadata counts what was not
        written, if the disk now has room for it."""
        if self._closed:
            return self.files
        self._closed = True
        try:
            self._close()
        finally:
            self._release_lock()
        return self.files

    def _release_lock(self) -> None:
        lock, self._lock = getattr(self, "_lock", None), None
        if lock is not None:
            lock.release()

    def _close(self) -> None:
        try:
            self.flush()
        finally:   # the files still being finished are done (or accounted for) first
            self._finished.finisher.stop()
            self._account_for_finishing()
        if self.error is not None:
            self.not_written += self._pending_records
            self._pending, self._pending_records = [], 0
            self._finished.adopt(self.unfinished.publish(in_dataset=self.dataset))
            if self.dataset:
                self._leave_a_note()
            return
        if self._part is None and (not self.files or self._finished.unaccounted):
            # an empty recording still leaves a file with its metadata, and a loss after the
            # last file finished still lands in one
            self._guarded(self._open_part)
        if self._part is not None:
            self._guarded(self._finish_part)

    def stats(self) -> SinkStats:
        part = self._part   # one read: another thread may be rotating (BackgroundWriter)
        return SinkStats(written=self.records_written, buffered=self._pending_records,
                         lost=self.not_written, files=tuple(self.files),
                         unpublished=self.unfinished.records,
                         bytes=self._finished.bytes + (part.bytes_on_disk if part else 0),
                         error=None if self.error is None else str(self.error.strerror))

    # -- the rest of the recorder ----------------------------------------------------------
    def update_counters(self, counters: Mapping[str, int]) -> None:
        """Cumulative counters of the source (e.g. ``received``, ``lost``, ``overruns``)."""
        self._finished.counters = {k: int(v) for k, v in counters.items()}

    def tick(self) -> None:
        """Write buffered records and rotate if one of the limits is reached (call it now and
        then when no records arrive, so quiet recordings still rotate on time)."""
        if self.error is not None:
            return
        self._account_for_finishing()
        now = time.monotonic()
        self._rotate_if_due(now)
        # the oldest record not yet fsynced decides: on disk within flush_seconds of arrival;
        # a full buffer in between is only written (one fsync per window, however busy)
        if self._unsynced_since is not None and now - self._unsynced_since >= self.flush_seconds:
            self.flush()
        elif self._pending_records >= self.flush_records:
            self._write_out(sync=False)
        if self._part is not None and self.rotate_bytes and \
                self._part.bytes_on_disk >= self.rotate_bytes:
            self._guarded(self._rotate)

    def wait_finished(self) -> None:
        """Return once every file rotated out so far is finished (off this thread)."""
        self._finished.finisher.wait()
        self._account_for_finishing()

    @property
    def current_path(self) -> Optional[str]:
        """The file being written (its final name), if any."""
        return self._part.path if self._part else None

    @property
    def bytes_written(self) -> int:
        """Bytes of finished files plus what the current file holds on disk."""
        return self.stats().bytes

    @property
    def buffered(self) -> int:
        """Records passed to ``write`` and not yet written to a file."""
        return self._pending_records

    def __enter__(self) -> "FileSink":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- internals -------------------------------------------------------------------------
    def _guarded(self, step: Any) -> None:
        try:
            step()
        except Exception as e:
            self._fail(e, 0)

    def _account_for_finishing(self) -> None:
        """Files that failed to finish in the background: each left in progress with what its
        journal holds (the rest not written), and the first failure is the sink's."""
        lost, first = self._finished.take_failures(self.unfinished)
        self.records_written -= lost
        self.not_written += lost
        if first is not None and self.error is None:
            self._fail(first[1], 0, failed=first[0])

    def _fail(self, error: BaseException, batch_records: int, *,
              failed: Optional[Part] = None) -> None:
        """A write failed: keep the file in progress up to its last complete write (fsynced,
        for recovery), count every record not on disk, and raise the one error the caller sees
        (naming ``failed``, a file that failed to finish, or else the file in progress)."""
        part, self._part = self._part, None
        in_part = part.stats.records if part is not None else 0
        kept = self.unfinished.keep(part)
        self.records_written -= in_part - kept
        self.not_written += in_part - kept + batch_records + self._pending_records
        self._pending, self._pending_records = [], 0
        self._unsynced_since = None
        code, text = _write_error(error)
        named = failed or part
        where = self.root if named is None else self.unfinished.what_became_of(named)
        self.error = WriteFailedError(code, f"{where}: {text}")
        raise self.error from error

    def _leave_a_note(self) -> None:
        """One more file, empty, whose metadata says what was not written and why."""
        try:
            self._open_part()
            self._finish_part()
        except Exception:   # the disk is still full: the caller was told, nothing more to do
            part, self._part = self._part, None
            if part is not None:
                part.abort()

    def _rotate_if_due(self, now: float) -> None:
        """Time is up: what arrived before the deadline goes in, what arrives after not."""
        if not self._age_due(now):
            return
        self._write_out(sync=False)
        if self._part is not None:
            self._guarded(self._rotate)
        self._part_started = None

    def _age_due(self, now: float) -> bool:
        """A file's time runs from the first record handed over for it, open or not yet."""
        if self._part_started is None or self.error is not None:
            return False
        if self.rotate_seconds and now - self._part_started >= self.rotate_seconds:
            return True
        return self.dataset and self._part_day is not None and utc_day() != self._part_day

    def _next_path(self) -> str:
        return self._names.next() if self.dataset else self.root

    def _open_part(self) -> Part:
        path = self._next_path()
        sidecar = self.format.metadata.sidecar_path(path, in_dataset=self.dataset)
        self._part = Part(path, self.format, sidecar_path=sidecar, schema=self.schema,
                          opening_metadata=self.metadata)
        if self._part_started is None:
            self._part_started = time.monotonic()
        self._part_day = utc_day()
        return self._part

    def _rotate(self) -> None:
        self._finish_part(in_background=True)

    def _finish_part(self, *, in_background: bool = False) -> None:
        """Fix the current file's metadata and finish it here, once the files handed over
        before it are done; or (``in_background``: a rotation) fsync its journal and hand it to
        the finisher, so the next records go to a new file, fsynced on their own time."""
        part = self._part
        assert part is not None
        if in_background:
            part.sync()
        finished_ns = time.time_ns()
        meta = self._finished.describe(part, finished_ns, self.not_written, None if self.error
                                       is None else str(self.error.strerror))
        if not in_background:
            self._finished.finisher.wait()
            self._account_for_finishing()
            self._finished.publish(part, meta)   # raises with the part current: _fail removes it
        self._part = None
        self._finished.closed(finished_ns, self.not_written)
        self._part_started = time.monotonic() if self._pending_records else None
        if not self._pending_records:   # the file's journal holds everything handed over
            self._unsynced_since = None
        if in_background:
            self._finished.hand_over(part, meta)

    @property
    def retention_over_cap(self) -> bool:
        """Retention had to keep a file over the size cap (the newest)."""
        return self._finished.over_cap


#: The name 0.1.0 gave the file sink.
Recorder = FileSink


class BackgroundWriter:
    """Runs a sink on its own thread, so that writing a file (seconds for a big Parquet row
    group on a busy machine) never stops the caller from draining its sockets; a ``Sink``.

    ``write``/``update_counters``/``flush`` queue work in order and return at once, unless more
    than ``max_queued_records`` records are waiting, in which case ``write`` blocks until the
    writer catches up (the kernel then drops and counts what does not fit in the socket
    buffers, instead of this process growing without bound).  A failure on the writer thread
    (a full disk) is raised once, by the next call; later batches go on to the sink, which
    counts them as not written.  ``close`` writes everything queued and returns the sink's
    files (``FileSink``).
    """

    _STOP = object()
    #: the most records queued writes are joined into, for one ``write`` of the sink
    COALESCE_RECORDS = 1 << 16

    def __init__(self, sink: Any, *, max_queued_records: int = 1 << 20):
        import threading
        self.sink = sink
        self.max_queued_records = max(1, int(max_queued_records))
        self._queue: "queue.Queue[Any]" = queue.Queue()
        self._room = threading.Condition()
        self._queued = 0
        self._error: Optional[BaseException] = None
        self._reported = False
        # a FileSink copies by default (the arrays queued here are already private), and
        # counts its flush deadline from when a batch was queued here
        self._write: Any = (functools.partial(sink.write, copy=False) if isinstance(sink, FileSink)
                            else lambda batch, arrived: sink.write(batch))
        self._thread = threading.Thread(target=self._run, name="taskstats-fast writer",
                                        daemon=True)
        self._thread.start()

    @property
    def recorder(self) -> Any:
        """The sink written to (0.1.0's name)."""
        return self.sink

    @property
    def queued(self) -> int:
        """Records handed over and not yet with the sink."""
        return self._queued

    @property
    def buffered(self) -> int:
        """Records handed over and not yet written to a file."""
        return self._queued + self.sink.stats().buffered

    @property
    def bytes_written(self) -> int:
        return int(self.sink.stats().bytes)

    @property
    def records_written(self) -> int:
        return int(self.sink.stats().written)

    def stats(self) -> SinkStats:
        inner = self.sink.stats()
        return SinkStats(written=inner.written, buffered=inner.buffered + self._queued,
                         lost=inner.lost, files=inner.files, unpublished=inner.unpublished,
                         bytes=inner.bytes, error=inner.error)

    def _check(self) -> None:
        if self._error is not None and not self._reported:
            self._reported = True
            raise self._error

    def write(self, records: np.ndarray, *, copy: bool = True) -> None:
        """Queue ``records`` for the sink's ``write`` (``copy=False``: hand the array over).
        The batch is queued even when a failure is raised, so the sink counts it as lost."""
        batch = np.array(records, copy=True) if copy else records
        with self._room:
            while self._queued >= self.max_queued_records and self._error is None:
                self._room.wait(0.5)
            self._queued += len(batch)
        self._queue.put(("write", (batch, time.monotonic())))
        self._check()

    def update_counters(self, counters: Mapping[str, int]) -> None:
        """Queue the sink's ``update_counters`` (in order with the writes)."""
        self._check()
        self._queue.put(("counters", dict(counters)))

    def tick(self) -> None:
        """Queue an empty write (flush and rotate what is due)."""
        self.write(np.empty(0, layout.DTYPE), copy=False)

    def flush(self) -> None:
        """Queue the sink's ``flush``."""
        self._check()
        self._queue.put(("flush", None))

    def close(self) -> List[str]:
        """Finish every queued write, close the sink, return its files; raises a failure not
        reported yet."""
        if self._thread.is_alive():
            self._queue.put((self._STOP, None))
            self._thread.join()
        self._check()
        return list(self.sink.stats().files)

    def _take_queued_writes(self, first: Tuple[np.ndarray, float]) -> Tuple[
            List[np.ndarray], float, Optional[Tuple[str, Any]]]:
        """``first`` and every write queued right behind it (up to ``COALESCE_RECORDS``), and
        the next other operation if one stopped it: a writer that fell behind (a slow or
        starved CPU) catches up in one write and one fsync, instead of one per batch, each
        slower than the batches arrive."""
        batches, arrived = [first[0]], first[1]
        records = len(first[0])
        dtype = first[0].dtype if records else None
        while records < self.COALESCE_RECORDS:
            try:
                op, arg = self._queue.get_nowait()
            except queue.Empty:
                return batches, arrived, None
            if op != "write" or (dtype is not None and len(arg[0]) and arg[0].dtype != dtype):
                return batches, arrived, (op, arg)   # other rows than these: a write of its own
            if dtype is None and len(arg[0]):
                dtype = arg[0].dtype
            batches.append(arg[0])
            records += len(arg[0])
        return batches, arrived, None

    def _write_joined(self, batches: List[np.ndarray], arrived: float) -> None:
        rows = [b for b in batches if len(b)]   # empty ones are ticks
        if len(rows) > 1:
            batch = layout.join_records(rows, rows[0].dtype)
        else:
            batch = rows[0] if rows else batches[0]
        try:
            self._write(batch, arrived=arrived)
        finally:
            with self._room:
                self._queued -= sum(len(b) for b in batches)
                self._room.notify_all()

    def _run(self) -> None:
        held: Optional[Tuple[str, Any]] = None
        while True:
            op, arg = held if held is not None else self._queue.get()
            held = None
            try:
                if op == "write":   # held: what stopped the joining, kept if this raises
                    batches, arrived, held = self._take_queued_writes(arg)
                    self._write_joined(batches, arrived)
                elif op == "counters":
                    if isinstance(self.sink, CountingSink):
                        self.sink.update_counters(arg)
                elif op == "flush":
                    self.sink.flush()
                else:
                    self.sink.close()
                    return
            except BaseException as e:   # reported to the caller by the next call
                if self._error is None:
                    self._error = e
                with self._room:
                    self._room.notify_all()
                if op is self._STOP:
                    return


def write_file(path: str, records: np.ndarray, fmt: Optional[str] = None,
               metadata: Optional[Mapping[str, Any]] = None) -> str:
    """Write ``records`` to one file (format from ``fmt`` or the extension) with its metadata."""
    fmt = detect_format(path, fmt)
    if is_dataset_path(path) and not os.path.splitext(path)[1]:
        path += FORMAT[fmt].extension
    with FileSink(path, fmt, metadata=metadata) as sink:
        sink.write(records)
    if sink.error is not None:
        raise sink.error
    return sink.files[0]
