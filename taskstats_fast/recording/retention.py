"""Retention of a recording dataset: ``--keep-days`` and ``--max-total-mb``.

A ``RetentionPolicy`` deletes the oldest *complete* files of a dataset directory, together with
their metadata sidecars, and never a file being written:

- complete files are the ones readers see (``find_files``: no hidden, ``_``-prefixed or
  ``.inprogress`` names), so a file still being written, which lives under a hidden
  ``.part-….inprogress`` name until it is renamed into place, is never a candidate;
- a file's age is its modification time, when its last records were written;
- ``keep_days`` deletes complete files older than that, and ages out crash leftovers
  (``recovery``) no writer holds that were not modified for that long (a restart recovers the
  readable ones first: these are the ones it could not);
- ``max_total_bytes`` counts only the files it may delete (complete files), and deletes them
  oldest first until their total fits;
- it never deletes the newest complete file, nor the ones it is told to protect (the file the
  sink just closed): a cap smaller than one file keeps that file and says so (``over_cap``);
- one recording directory's datasets share its cap (``shared``: an interval recording's rows
  and its PSI under ``_psi``, written by two sinks): their complete files are counted together
  and deleted oldest first across both, never the newest of either (the last file its sink
  closed);
- directories it empties (an old ``date=`` partition) are removed, and every directory it
  deleted in is fsynced (``durable``).

``FileSink`` applies the policy after each rotation to its own host's part of the dataset
(``host=HOST/``), together with that host's part of the other dataset of its recording
directory (``paths.sharing_host_directories``; ``FinishedFiles`` asks): recorders of several
hosts writing into one shared dataset each manage their own files.  A file that vanished
meanwhile is skipped; other errors are returned, not raised, so a recording never stops
because an old file could not be deleted.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Collection, List, Optional, Sequence, Set, Tuple

from .durable import fsync_directory, try_lock
from .formats import format_of_path
from .paths import find_files
from .recovery import find_leftovers

__all__ = ["RetentionPolicy", "RetentionResult", "DatasetFile", "complete_files"]

_DAY = 86400.0


@dataclass(frozen=True)
class DatasetFile:
    """One complete data file of a dataset and its sidecar (if it has one)."""

    path: str
    modified: float             #: seconds since the epoch
    size: int                   #: bytes of the data file and its sidecar
    sidecar: Optional[str] = None


@dataclass
class RetentionResult:
    """What one application of a policy did."""

    deleted: List[str] = field(default_factory=list)   #: data files (their sidecars went too)
    bytes_freed: int = 0
    errors: List[OSError] = field(default_factory=list)
    #: crash leftovers aged out by ``keep_days`` (every hidden file of each)
    aged_out: List[str] = field(default_factory=list)
    #: the files kept are still over ``max_total_bytes`` (the newest alone is bigger)
    over_cap: bool = False


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def complete_files(directory: str) -> Tuple[List[DatasetFile], int]:
    """The complete data files under ``directory``, oldest first, and the bytes of every other
    file there (files being written, stray files) that the size limit counts as well."""
    files: List[DatasetFile] = []
    counted: Set[str] = set()
    for path in find_files([directory]):
        fmt = format_of_path(path)
        sidecar = fmt.metadata.sidecar_path(path, in_dataset=True) if fmt is not None else None
        if sidecar is not None and not os.path.exists(sidecar):
            sidecar = None
        try:
            st = os.stat(path)
        except FileNotFoundError:
            continue
        files.append(DatasetFile(path, st.st_mtime, st.st_size + (_size(sidecar) if sidecar else 0), sidecar))
        counted.update(p for p in (path, sidecar) if p)
    other = sum(_size(os.path.join(d, n)) for d, _, names in os.walk(directory) for n in names
                if os.path.join(d, n) not in counted)
    files.sort(key=lambda f: (f.modified, f.path))
    return files, other


@dataclass(frozen=True)
class RetentionPolicy:
    """Keep complete files for ``keep_days`` days and/or within ``max_total_bytes`` in total."""

    keep_days: Optional[float] = None
    max_total_bytes: Optional[int] = None

    def __post_init__(self) -> None:
        if self.keep_days is not None and not self.keep_days > 0:
            raise ValueError(f"keep_days must be positive, not {self.keep_days!r}")
        if self.max_total_bytes is not None and not self.max_total_bytes > 0:
            raise ValueError(f"max_total_bytes must be positive, not {self.max_total_bytes!r}")

    @property
    def active(self) -> bool:
        return self.keep_days is not None or self.max_total_bytes is not None

    def select(self, files: Sequence[DatasetFile], now: float,
               protected: Collection[str] = ()) -> Tuple[List[DatasetFile], int]:
        """Which of ``files`` (oldest first) to delete, and the bytes of those kept.  The
        newest file and the ``protected`` paths are never chosen."""
        keep = set(protected) | ({files[-1].path} if files else set())
        doomed: List[DatasetFile] = []
        kept = list(files)
        if self.keep_days is not None:
            cutoff = now - self.keep_days * _DAY
            doomed = [f for f in kept if f.modified < cutoff and f.path not in keep]
            kept = [f for f in kept if f not in doomed]
        total = sum(f.size for f in kept)
        if self.max_total_bytes is not None:
            for candidate in [f for f in kept if f.path not in keep]:
                if total <= self.max_total_bytes:
                    break
                doomed.append(candidate)
                kept.remove(candidate)
                total -= candidate.size
        return doomed, total

    def apply(self, directory: str, now: Optional[float] = None,
              protected: Collection[str] = (), shared: Sequence[str] = ()) -> RetentionResult:
        """Delete what the policy says under ``directory``; returns what it did.  The complete
        files under the ``shared`` directories (another dataset of the same recording
        directory, written by another sink) count against the same size cap and are deleted
        oldest first with ``directory``'s, except the newest of each directory."""
        result = RetentionResult()
        if not self.active or not os.path.isdir(directory):
            return result
        now = time.time() if now is None else now
        files, _ = complete_files(directory)
        top_of = dict.fromkeys((f.path for f in files), directory)
        protected = set(protected) | {f.path for f in files[-1:]}
        for other in (d for d in shared if os.path.isdir(d) and d != directory):
            theirs, _ = complete_files(other)
            protected.update(f.path for f in theirs[-1:])   # its newest: its writer's last close
            top_of.update(dict.fromkeys((f.path for f in theirs), other))
            files += theirs
        files.sort(key=lambda f: (f.modified, f.path))
        doomed, kept_bytes = self.select(files, now, protected)
        result.over_cap = self.max_total_bytes is not None and kept_bytes > self.max_total_bytes
        touched: Set[str] = set()
        for file in doomed:
            if not _unlink(file.path, result.errors):
                continue
            if file.sidecar:
                _unlink(file.sidecar, result.errors)
            result.deleted.append(file.path)
            result.bytes_freed += file.size
            touched.add(_remove_emptied(os.path.dirname(file.path), top_of[file.path]))
        if self.keep_days is not None:
            touched |= self._age_out(directory, now - self.keep_days * _DAY, result)
        for where in sorted(touched):
            try:
                fsync_directory(where)
            except OSError as e:
                result.errors.append(e)
        return result

    def _age_out(self, directory: str, cutoff: float, result: RetentionResult) -> Set[str]:
        """Delete crash leftovers no writer holds, untouched since ``cutoff``."""
        touched: Set[str] = set()
        for leftover in find_leftovers(directory):
            if leftover.modified >= cutoff:
                continue
            lock = try_lock(leftover.in_progress) if leftover.in_progress else None
            if leftover.in_progress is not None and lock is None:
                continue   # a live writer's file, only quiet for long
            try:
                for path in leftover.remnants:
                    if _unlink(path, result.errors):
                        result.aged_out.append(path)
                touched.add(_remove_emptied(os.path.dirname(leftover.final), directory))
            finally:
                if lock is not None:
                    os.close(lock)
        return touched


def _unlink(path: str, errors: List[OSError]) -> bool:
    """Delete ``path``; True if it is gone by our hand. A file already gone is skipped, another
    error is added to ``errors``."""
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False
    except OSError as e:
        errors.append(e)
        return False


def _remove_emptied(path: str, top: str) -> str:
    """Remove ``path`` and its parents up to (not including) ``top`` while they are empty;
    returns the directory a removal last changed (to fsync)."""
    top = os.path.abspath(top)
    path = os.path.abspath(path)
    while path != top and path.startswith(top + os.sep):
        try:
            os.rmdir(path)
        except OSError:        # not empty (or a writer just made it): leave it
            return path
        path = os.path.dirname(path)
    return path
