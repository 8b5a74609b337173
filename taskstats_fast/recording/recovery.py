"""What a crash leaves behind, read in place and published again: ``Leftover``, ``recover``.

A recorder killed (kill -9, OOM, power cut) leaves its file in progress under its hidden name
(``.NAME.inprogress``; Parquet also its journal ``.NAME.inprogress.journal``), readable up to
its last fsync (``parts``, ``writers``).  Recovery, run by ``FileSink`` when a recording starts
on a directory or file, publishes the readable part of each leftover nobody holds the lock of
(a live recorder's file is locked) as a complete file under the name it was to have, whose
metadata says ``recovered`` and counts what was recovered, then removes the leftover.  Every
step follows the ``durable`` rules, so a crash during recovery is recovered the next time, and
a leftover whose rows are already in a published file (a crash between publish and clean-up)
is removed, never published twice.  The rule: a leftover is recovered up to its last complete
record (npy: the rows its header counts) or batch (Arrow and the Parquet journal: IPC
messages; CSV: lines); a torn tail after it, the write a kill cut short, is dropped and its
bytes counted (``recovered_torn_bytes``); a leftover holding no complete record (killed before
its first) is removed and counted, never refused.  ``Recordings`` reads leftovers in place,
without recovery.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from numpy.lib import format as npy_format

from ..errors import NotARecordingError
from ..schema import TableSchema
from .durable import journal_path, remove_durably, try_lock
from .formats import Format, format_of_path
from .metadata import system_metadata, utc
from .parts import IN_PROGRESS, RECOVERING, Part
from .row_kinds import metadata_of_names, schema_of_metadata

__all__ = ["Leftover", "find_leftovers", "leftovers_of_file", "recover", "RecoveryResult",
           "recover_leftovers", "Unfinished"]

_SUFFIXES = tuple(sorted((IN_PROGRESS, journal_path(IN_PROGRESS), RECOVERING,
                          journal_path(RECOVERING)), key=len, reverse=True))


@dataclass
class Leftover:
    """The hidden files one unfinished file left: ``final`` is the name it was to be published
    under, ``remnants`` every hidden file of it."""

    final: str
    fmt: Format
    remnants: List[str] = field(default_factory=list)

    @property
    def in_progress(self) -> Optional[str]:
        """The file in progress, when it is still there (else only clean-up is left)."""
        directory, name = os.path.split(self.final)
        path = os.path.join(directory, f".{name}{IN_PROGRESS}")
        return path if path in self.remnants else None

    @property
    def modified(self) -> float:
        times = [os.stat(p).st_mtime for p in self.remnants if os.path.exists(p)]
        return max(times) if times else 0.0

    @property
    def size(self) -> int:
        return sum(os.stat(p).st_size for p in self.remnants if os.path.exists(p))

    def chunks(self, schema: TableSchema, columns: Optional[Sequence[str]] = None,
               torn: Optional[List[int]] = None) -> Iterator[np.ndarray]:
        """Its rows up to its last complete record or batch (nothing when only clean-up is
        left); the bytes of a torn tail after it are added to ``torn``."""
        path = self.in_progress
        if path is None:
            return iter(())
        assert self.fmt.partial_reader is not None
        return self.fmt.partial_reader(path, schema, columns, torn)

    def metadata(self) -> Dict[str, Any]:
        """What it opened with, and what its rows are: ``in_progress`` True."""
        path = self.in_progress
        meta: Dict[str, Any] = dict(self.fmt.partial_metadata(path)) if path else {}
        if "rows" not in meta and path is not None:
            meta.update(metadata_of_names(_names_of(path, self.fmt), _table_names))
        meta["in_progress"] = True
        return meta


def _names_of(path: str, fmt: Format) -> Tuple[str, ...]:
    """The column (or field) names a file in progress holds, () when it cannot tell."""
    source = journal_path(path) if os.path.exists(journal_path(path)) else path
    try:
        with open(source, "rb") as f:
            head = f.read(1 << 16)
            if head.startswith(b"\x93NUMPY"):
                f.seek(0)
                npy_format.read_magic(f)
                return tuple(npy_format.read_array_header_1_0(f)[2].names or ())
            if fmt.extension == ".csv":
                return tuple(n.strip().strip('"') for n in
                             head.split(b"\n", 1)[0].decode("utf-8").split(","))
    except (OSError, ValueError, SyntaxError, UnicodeDecodeError):
        pass
    return ()


def _table_names(schema: TableSchema) -> Tuple[str, ...]:
    try:
        return tuple(schema.file_schema().names)
    except ImportError:   # no pyarrow: then no CSV or Arrow file was written either
        return ()


def _leftover_of(directory: str, name: str) -> Optional[Tuple[str, Format]]:
    if not name.startswith("."):
        return None
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            final = name[1:-len(suffix)]
            fmt = format_of_path(final)
            return (os.path.join(directory, final), fmt) if fmt is not None else None
    return None


def find_leftovers(directory: str) -> List[Leftover]:
    """The leftovers under ``directory`` (searched recursively, hidden directories skipped)."""
    found: Dict[str, Leftover] = {}
    for where, subdirs, names in os.walk(directory):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith((".", "_")))
        for name in sorted(names):
            hit = _leftover_of(where, name)
            if hit is not None:
                found.setdefault(hit[0], Leftover(hit[0], hit[1])).remnants.append(
                    os.path.join(where, name))
    return [found[k] for k in sorted(found)]


def leftovers_of_file(path: str) -> List[Leftover]:
    """The leftover of a single-file output ``path`` (none, or one)."""
    directory, name = os.path.split(path)
    fmt = format_of_path(path)
    remnants = [os.path.join(directory, f".{name}{s}") for s in _SUFFIXES]
    remnants = [p for p in remnants if os.path.exists(p)]
    return [Leftover(path, fmt, remnants)] if fmt is not None and remnants else []


def schema_of(leftover: Leftover) -> TableSchema:
    return schema_of_metadata(leftover.metadata())


@dataclass
class RecoveryResult:
    """What ``recover_leftovers`` did: ``recovered`` (published path, records), ``removed``
    (remnants whose rows were already published), ``unreadable`` (path, why) left in place."""

    recovered: List[Tuple[str, int]] = field(default_factory=list)
    removed: List[str] = field(default_factory=list)
    unreadable: List[Tuple[str, str]] = field(default_factory=list)
    #: bytes of torn tails dropped (a write the crash cut short, after the last complete one)
    torn_bytes: int = 0
    #: leftovers removed because they held no complete record (killed before the first)
    empty: List[str] = field(default_factory=list)

    @property
    def records(self) -> int:
        return sum(n for _, n in self.recovered)


def _published_by_recovery(path: str, fmt: Format) -> bool:
    try:
        return bool(fmt.read_metadata(path).get("recovered"))
    except (NotARecordingError, OSError, ImportError):
        return False


def _target(leftover: Leftover, *, in_dataset: bool) -> str:
    """Where to publish: a part of a dataset under its own name; a single file's leftover
    beside it as ``STEM.recovered-TIME.EXT``, since the recording that recovers it then writes
    the file's own name (published there, it was replaced by that recording's file)."""
    if in_dataset and not os.path.exists(leftover.final):
        return leftover.final
    target = first = _recovered_name(leftover)
    stem, ext = os.path.splitext(first)
    n = 1
    while os.path.exists(target):
        target, n = f"{stem}-{n}{ext}", n + 1
    return target


def _recovered_name(leftover: Leftover) -> str:
    """``STEM.recovered-TIME.EXT``, TIME the leftover's last change (which recovery does not
    change: a crash between publishing and removing the leftover finds the same name)."""
    stem, ext = os.path.splitext(leftover.final)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(leftover.modified))
    return f"{stem}.recovered-{stamp}{ext}"


def _published_before(leftover: Leftover, *, in_dataset: bool) -> bool:
    """Its rows are published already: recovery crashed before removing it."""
    published = leftover.final if in_dataset else _recovered_name(leftover)
    return os.path.exists(published) and _published_by_recovery(published, leftover.fmt)


def recover(leftover: Leftover, result: RecoveryResult, *, in_dataset: bool) -> None:
    """Publish what ``leftover`` holds (unless a live writer holds its lock), then remove it."""
    source = leftover.in_progress
    lock = try_lock(source) if source is not None else None
    if source is not None and lock is None:
        return   # a live recorder's file (or it was just published)
    try:
        if source is None or _published_before(leftover, in_dataset=in_dataset):
            remove_durably(leftover.remnants)
            result.removed += leftover.remnants
            return
        torn: List[int] = []
        try:
            published = _publish_recovered(leftover, source, torn, in_dataset=in_dataset)
        except NotARecordingError as e:
            result.unreadable.append((source, e.why))
            return
        result.torn_bytes += sum(torn)
        if published is None:   # not one complete record: nothing to publish
            remove_durably(leftover.remnants)
            result.empty.append(source)
            return
        remove_durably(p for p in leftover.remnants if p != published[0])
        result.recovered.append(published)
    finally:
        if lock is not None:
            os.close(lock)


def _publish_recovered(leftover: Leftover, source: str, torn: List[int], *, in_dataset: bool
                       ) -> Optional[Tuple[str, int]]:
    schema = schema_of(leftover)
    target = _target(leftover, in_dataset=in_dataset)
    opening = leftover.metadata()
    part = Part(target, leftover.fmt, schema=schema, suffix=RECOVERING,
                sidecar_path=leftover.fmt.metadata.sidecar_path(target, in_dataset=in_dataset))
    stopped: Optional[str] = None
    try:
        try:
            for chunk in leftover.chunks(schema, torn=torn):
                part.write(chunk)
        except NotARecordingError as e:
            if not part.stats.records:
                raise
            stopped = e.why   # damaged further in: what came before is published
        if not part.stats.records:
            part.abort()
            return None
        meta = system_metadata(**{**getattr(schema, "metadata", {}), **opening})
        meta.pop("in_progress", None)
        meta.update(part.stats.as_metadata())
        finished = utc(int(leftover.modified * 1e9))
        meta.update(recovered=True, recovered_records=part.stats.records,
                    recovered_torn_bytes=sum(torn),
                    recovered_from=os.path.basename(source), recovered_at=utc(time.time_ns()),
                    file_started=meta.get("first_record"), file_finished=finished,
                    window_started=meta.get("first_record"), window_finished=finished)
        if stopped:
            meta["recovery_stopped"] = stopped
        return part.finish(meta), part.stats.records
    except BaseException:
        part.abort()
        raise


def recover_leftovers(paths: Sequence[str], *, in_dataset: bool) -> RecoveryResult:
    """Recover every leftover under the directories (``in_dataset``) or of the single files
    ``paths``."""
    result = RecoveryResult()
    for path in paths:
        if in_dataset and not os.path.isdir(path):
            continue
        for leftover in (find_leftovers(path) if in_dataset else leftovers_of_file(path)):
            recover(leftover, result, in_dataset=in_dataset)
    return result



class Unfinished:
    """The files a recording that failed to write (a full disk) left in progress
    (``Part.keep``) and the records each holds: read in place, published by ``publish`` as
    soon as the disk has room (as the next start's recovery would)."""

    def __init__(self) -> None:
        #: (final name, records) of each one still in progress
        self.kept: List[Tuple[str, int]] = []

    def keep(self, part: Optional[Part]) -> int:
        """``part.keep()``, remembered: the records it holds (0 without a part)."""
        rows = part.keep() if part is not None else 0
        if rows:
            assert part is not None
            self.kept.append((part.path, rows))
        return rows

    @property
    def records(self) -> int:
        return sum(rows for _, rows in self.kept)

    def what_became_of(self, part: Part) -> str:
        """``part``'s name and where its records are, for the failure's message."""
        rows = dict(self.kept).get(part.path, 0)
        if not rows:
            return f"{part.path} (the partial file was removed)"
        if part.kept_in == part.path:
            return (f"{part.path} (its {rows:,} records are in it, complete, but its name is "
                    f"not proven on disk: if a power cut drops it, the next start recovers "
                    f"them from {part.tmp_path})")
        return (f"{part.path} (left unfinished: its {rows:,} records up to the failure are "
                f"kept in {part.kept_in})")

    def publish(self, *, in_dataset: bool) -> List[str]:
        """Recover each one if the disk has room now; the paths published.  The others stay
        as they are, readable in place, for the next start."""
        published: List[str] = []
        still = []
        for final, rows in self.kept:
            result = RecoveryResult()
            try:
                for leftover in leftovers_of_file(final):
                    recover(leftover, result, in_dataset=in_dataset)
            except OSError:   # no room yet: the leftover is untouched
                pass
            if result.recovered:
                published.append(result.recovered[0][0])
            else:
                still.append((final, rows))
        self.kept = still
        return published
