"""Reading recordings back: which files a path names, their metadata (with the schema-version
check), and their records as ``DTYPE`` arrays, tables or columns.

Everything goes through one path: ``Recordings`` opens each file through its format's registry
entry (``formats``), checks its schema version, and reads it chunk by chunk into the records of
one ``columns.Schema``.  ``read_records`` and ``read_frame`` are what users call; ``read_table``
and ``read_columns`` are built on the same path.  A damaged file never hides the others:
``Recordings`` reads the rest and lists what it could not read (``damaged``).  Which rows a
file holds (exit records and snapshots: ``DTYPE``; accounting intervals: ``intervals``' rows)
is what its metadata says; one read takes files of one kind of rows only.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import NotARecordingError, TaskstatsError
from .. import layout
from .. import schema as _columns
from .formats import format_of_path, known_extensions
from .metadata import check_format_version
from .paths import PathOrPaths, find_files, is_dataset_path, path_list
from .psi_rows import PSI_ROWS, psi_paths, psi_schema
from .recovery import Leftover, find_leftovers, leftovers_of_file
from .row_kinds import rows_name, schema_of_metadata

if TYPE_CHECKING:  # pragma: no cover - typing only
    import pandas

__all__ = ["find_files", "read_metadata", "Recordings", "DamagedRecordingWarning",
           "read_records", "read_frame", "read_table", "read_columns", "is_dataset_path",
           "MixedRowsError"]

class DamagedRecordingWarning(UserWarning):
    """A file of a recording could not be read and was skipped (the message names it)."""


def read_metadata(path: str) -> Dict[str, Any]:
    """The metadata object of one recorded file ({} if it has none)."""
    fmt = format_of_path(path)
    if fmt is None:
        raise NotARecordingError(path, "its name has none of the extensions recordings have "
                                 f"({', '.join(known_extensions())})")
    fmt.require("reading")
    return fmt.read_metadata(path)


@dataclass
class Recordings:
    """The files named by some paths, read one by one into one schema's records.

    ``files``: the complete data files found; ``leftovers``: files in progress or left by a
    crash (``recovery``), read after them up to their last fsync (``in_progress`` lists those
    read); ``metadata``: each readable file's metadata (same order, without the unreadable
    ones; a leftover's says ``in_progress``); ``damaged``: ``(path, NotARecordingError)`` for every file that
    could not be read, or not to its end (its chunks before the damage are kept).
    ``chunks()`` yields each readable file's records chunk by chunk; ``records()``
    concatenates them.  ``columns`` restricts what is read from disk (table column names; the
    other fields come back as zeros).  ``schema``: the rows to read into; None: what the first
    readable file's metadata says it holds (``DTYPE`` records, or interval rows), and a file
    holding other rows raises ``MixedRowsError``.
    """

    paths: PathOrPaths
    schema: Optional[_columns.TableSchema] = None
    columns: Optional[Sequence[str]] = None
    files: List[str] = field(init=False)
    metadata: List[Dict[str, Any]] = field(init=False, default_factory=list)
    damaged: List[Tuple[str, TaskstatsError]] = field(init=False, default_factory=list)
    #: ``(path, rows read from it)`` of each file read, in reading order
    file_rows: List[Tuple[str, int]] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        named = path_list(self.paths)
        # a single file not there yet (its recording in progress, or crashed) reads from its
        # leftover; directories read their leftovers after the complete files
        self.leftovers: List[Leftover] = [lo for p in named if not os.path.exists(p)
                                          for lo in leftovers_of_file(p)]
        self.files = find_files([p for p in named if os.path.exists(p)
                                 or not leftovers_of_file(p)])
        self.leftovers += [lo for p in named if os.path.isdir(p) for lo in find_leftovers(p)]
        for path in named:   # a newer recording of a file that is there: named, not read
            for leftover in (leftovers_of_file(path) if os.path.isfile(path) else ()):
                if leftover.in_progress is not None:
                    warnings.warn(DamagedRecordingWarning(
                        f"not read: {leftover.in_progress}, a newer recording of {path} in "
                        f"progress or left by a crash (the next record -o {path} recovers it)"),
                        stacklevel=3)
        #: the files in progress (or left by a crash) read up to their last fsync
        self.in_progress: List[str] = []
        self._chosen = self.schema is not None   # given: read every file into it

    def chunks(self) -> Iterator[np.ndarray]:
        self.metadata, self.damaged, self.in_progress, self.file_rows = [], [], [], []
        for path in self.files:
            yield from self._counted(path, self._file_chunks(path))
        for leftover in self.leftovers:
            yield from self._counted(leftover.in_progress or leftover.final,
                                     self._leftover_chunks(leftover))

    def _counted(self, path: str, chunks: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        """``chunks``, counting in ``file_rows`` how many rows came from ``path``."""
        self.file_rows.append((path, 0))
        index = len(self.file_rows) - 1
        for chunk in chunks:
            self.file_rows[index] = (path, self.file_rows[index][1] + len(chunk))
            yield chunk

    def _file_chunks(self, path: str) -> Iterator[np.ndarray]:
        fmt = format_of_path(path)
        assert fmt is not None   # find_files only returns files with a known extension
        fmt.require("reading")
        try:
            meta = fmt.read_metadata(path)
            check_format_version(path, meta)
            chunks = fmt.reader(path, self._schema_for(path, meta), self.columns)
            first = next(chunks, None)   # the header and schema checks happen here
        except NotARecordingError as e:
            self.damaged.append((path, e))
            return
        self.metadata.append(meta)
        try:   # chunk by chunk: a file never has to fit in memory whole
            if first is not None:
                yield first
            yield from chunks
        except NotARecordingError as e:   # damaged further in: what came before is kept
            self.damaged.append((path, e))

    def _leftover_chunks(self, leftover: Leftover) -> Iterator[np.ndarray]:
        """A file in progress or left by a crash, up to its last fsync.  One that was
        published meanwhile is read under its final name."""
        path = leftover.in_progress
        if path is None:
            return   # only a clean-up is left: its rows are in the published file
        leftover.fmt.require("reading")
        try:
            meta = leftover.metadata()
            schema = self._leftover_schema(leftover, path, meta)
            if schema is None:
                self.in_progress.append(path)
                return
            chunks = leftover.chunks(schema, self.columns)
            first = next(chunks, None)
        except FileNotFoundError:
            if os.path.exists(leftover.final) and leftover.final not in self.files:
                yield from self._file_chunks(leftover.final)
            return
        except NotARecordingError as e:
            self.damaged.append((path, e))
            return
        self.metadata.append(meta)
        self.in_progress.append(path)
        try:
            if first is not None:
                yield first
            yield from chunks
        except (NotARecordingError, OSError) as e:
            self.damaged.append((path, e if isinstance(e, NotARecordingError)
                                 else NotARecordingError(path, str(e))))

    def _leftover_schema(self, leftover: Leftover, path: str, meta: Dict[str, Any]
                         ) -> Optional[_columns.TableSchema]:
        """The schema to read a leftover with; None when it holds no row at all and its header
        does not say what rows it was to hold: a power cut soon after a file was opened leaves
        it (or its journal) empty, whose kind, unknown, must not make the rows of the other
        files unreadable.  One holding rows of another kind still raises ``MixedRowsError``."""
        try:
            return self._schema_for(path, meta)
        except MixedRowsError:
            if next(leftover.chunks(schema_of_metadata(meta), self.columns), None) is None:
                return None
            raise

    def _schema_for(self, path: str, meta: Dict[str, Any]) -> _columns.TableSchema:
        if self._chosen and self.schema is not None:
            return self.schema
        found = schema_of_metadata(meta)
        if self.schema is None:
            self.schema = found
        elif found is not self.schema:
            raise MixedRowsError(f"{path} holds {rows_name(found)}, the files before it "
                                 f"{rows_name(self.schema)}: read them separately")
        return self.schema

    def peek_schema(self) -> _columns.TableSchema:
        """The schema of the rows the first readable file holds (``DTYPE`` records if none),
        from metadata alone: what a reader picks before choosing the columns to read."""
        if self.schema is not None:
            return self.schema
        for path in self.files:
            fmt = format_of_path(path)
            try:
                if fmt is not None:
                    return schema_of_metadata(fmt.read_metadata(path))
            except (TaskstatsError, ImportError):
                continue
        for leftover in self.leftovers:
            try:
                if leftover.in_progress is not None:
                    return schema_of_metadata(leftover.metadata())
            except (TaskstatsError, ImportError, OSError):
                continue
        return _columns.DEFAULT

    @property
    def rows_schema(self) -> _columns.TableSchema:
        """The schema of the rows read (``DTYPE`` records until a file says otherwise)."""
        return self.schema if self.schema is not None else _columns.DEFAULT

    def records(self) -> np.ndarray:
        return layout.join_records(list(self.chunks()), self.rows_schema.dtype)


class MixedRowsError(TaskstatsError, ValueError):
    """The files of one read hold different kinds of rows (exit records and interval rows)."""


def _read(recordings: Recordings, skip_damaged: bool) -> np.ndarray:
    records = recordings.records()
    for _, error in recordings.damaged:
        if not skip_damaged:
            raise error
        warnings.warn(DamagedRecordingWarning(f"skipped {error}"), stacklevel=3)
    return records


def _of_kind(paths: PathOrPaths, kind: Optional[str]) -> Recordings:
    """The recordings to read: ``paths`` (``kind`` None: the rows their files hold), or the PSI
    datasets of the interval datasets ``paths`` (``kind="psi"``; none for an old dataset)."""
    if kind is None:
        return Recordings(paths)
    if kind != PSI_ROWS:
        raise ValueError(f"kind is None (the rows the files hold) or {PSI_ROWS!r} (the "
                         f"pressure stalls an interval dataset keeps), not {kind!r}")
    return Recordings(psi_paths(paths), schema=psi_schema())


def read_records(paths: PathOrPaths, *, skip_damaged: bool = False,
                 kind: Optional[str] = None) -> np.ndarray:
    """Every record of ``paths`` (recorded files of any format, or dataset directories) as one
    ``DTYPE`` array, exactly as they were recorded (an interval recording: one array of
    ``intervals.row_dtype(by)`` rows).  Files written by older versions load
    too: fields their records lack are zeros that ``carried()`` reports as not carried.

    A file that is not a readable recording raises ``NotARecordingError`` naming it; with
    ``skip_damaged=True`` the others are read and each damaged file is named in a
    ``DamagedRecordingWarning``.  A file written by a newer, incompatible version raises
    ``NewerFormatError``.  npy files need only numpy; the other formats need
    ``taskstats_fast[arrow]``.  ``kind="psi"``: the PSI rows (``psi_rows.PSI_ROW_DTYPE``) that
    the interval datasets ``paths`` keep under ``_psi/`` (none, for a dataset recorded before
    PSI was).
    """
    return _read(_of_kind(paths, kind), skip_damaged)


def read_frame(paths: PathOrPaths, *, skip_damaged: bool = False,
               kind: Optional[str] = None) -> "pandas.DataFrame":
    """``to_pandas(read_records(paths))``: the recording as a pandas ``DataFrame``, plus the
    dataset's hive partition columns (``host``, ``date``) where its files sit in partitions.
    For an interval recording, one row per task (or process) and interval, with
    ``interval_start`` and ``interval_end`` columns (UTC), named by the one naming table.
    ``kind="psi"``: the interval datasets' pressure stalls instead, one row per cgroup and
    interval (the root ``cgroup`` "/" holding the system's), stall deltas in µs."""
    recordings = _of_kind(paths, kind)
    records = _read(recordings, skip_damaged)
    frame = recordings.rows_schema.to_pandas(records)
    for key, values in hive_columns(recordings.file_rows).items():
        frame[key] = values
    return frame


def hive_columns(file_rows: Sequence[Tuple[str, int]]) -> Dict[str, Any]:
    """The hive partition columns (``host=web-1/date=2026-11-26/`` directories) of rows read
    file by file (``(path, rows)``), as pandas categories; a file outside a partition gets a
    missing value.  A dataset of many hosts keeps which host each row came from."""
    import pandas as pd
    parts = [dict(p.split("=", 1) for p in os.path.dirname(path).split(os.sep) if "=" in p)
             for path, _ in file_rows]
    keys = list(dict.fromkeys(k for part in parts for k in part))
    counts = [n for _, n in file_rows]
    return {key: pd.Categorical(np.repeat(np.array([part.get(key) for part in parts], object),
                                          counts)) for key in keys}


def read_table(paths: PathOrPaths, columns: Optional[Sequence[str]] = None) -> "Any":
    """Every record of ``paths`` as one ``pyarrow.Table`` with the ``to_arrow`` schema
    (``columns`` selects some).  Needs ``taskstats_fast[arrow]``."""
    recordings = Recordings(paths, columns=columns)
    table = recordings.rows_schema.to_arrow(_read(recordings, False))
    return table if columns is None else table.select(list(columns))


def read_columns(paths: PathOrPaths, names: Sequence[str]
                 ) -> Dict[str, Tuple[np.ndarray, Optional[np.ndarray]]]:
    """Columns of every record of ``paths`` as numpy, in ``columns.columns`` form
    (``{name: (values, valid)}``), read file by file and chunk by chunk so only the asked
    columns are ever held for the whole recording."""
    return columns_of(Recordings(paths, columns=names), names)


def columns_of(recordings: Recordings, names: Sequence[str], *, skip_damaged: bool = False
               ) -> Dict[str, Tuple[np.ndarray, Optional[np.ndarray]]]:
    """``read_columns`` over ``recordings`` (whose ``damaged`` lists what was skipped when
    ``skip_damaged``; otherwise the first damaged file raises)."""
    parts = []
    for chunk in recordings.chunks():
        cols = recordings.rows_schema.numpy_columns(chunk)
        parts.append({n: cols[n] for n in names})
    if recordings.damaged and not skip_damaged:
        raise recordings.damaged[0][1]
    if not parts:
        cols = recordings.rows_schema.numpy_columns(np.zeros(0, recordings.rows_schema.dtype))
        return {n: cols[n] for n in names}
    out: Dict[str, Tuple[np.ndarray, Optional[np.ndarray]]] = {}
    for n in names:
        values = np.concatenate([p[n][0] for p in parts])
        valids = [np.ones(len(v), bool) if valid is None else valid
                  for v, valid in (p[n] for p in parts)]
        out[n] = (values, np.concatenate(valids))
    return out
