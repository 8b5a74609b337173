"""The metadata object every recorded file carries, and the schema version readers check.

Every file says where and how it was recorded (hostname, kernel release, library version, the
delay-accounting switch), what its records add up to (counts, struct versions, time range) and
what was lost while it was open.  ``format_version`` is the file's schema version: readers
accept every version up to ``FORMAT_VERSION`` and refuse a newer one with one clear error
(``check_format_version``).  Where the object is stored depends on the format (see
``formats.FORMAT``: schema metadata or a JSON sidecar).
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional

import numpy as np

from .. import layout
from .._version import __version__
from ..errors import NewerFormatError

__all__ = ["METADATA_KEY", "FORMAT_VERSION", "system_metadata", "FileStats", "StatsColumns", "RECORD_STATS", "utc",
           "check_format_version", "NewerFormatError", "stats_for"]

#: Schema metadata key (Parquet/Arrow) holding the file's metadata as JSON.
METADATA_KEY = "taskstats_fast"
#: The schema version of the files this library writes.  1: 0.1.0 (timestamps in
#: microseconds).  2: timestamps in nanoseconds, so every field round-trips exactly.  3: one
#: naming table for every table (interval rows: ``ac_utime_us``, ``ac_btime`` as a timestamp,
#: the ``cgroup`` path, ``row_flags``; decoded exit status in every table).  Readers
#: read every version up to this one; bump it when an old reader would misread new files.
FORMAT_VERSION = 3


def check_format_version(path: str, metadata: Mapping[str, Any]) -> int:
    """The schema version of the file at ``path`` (1 when its metadata has none: 0.1.0 wrote
    it everywhere, so a file without it is at least that old); raises ``NewerFormatError``
    when this library is too old to read it."""
    version = metadata.get("format_version", 1)
    if not isinstance(version, int) or version < 1:
        from ..errors import NotARecordingError
        raise NotARecordingError(path, f"its schema version {version!r} is not one "
                                 "taskstats_fast ever wrote")
    if version > FORMAT_VERSION:
        written_by = metadata.get("library_version", "a newer version")
        raise NewerFormatError(
            f"{path}: written by taskstats_fast {written_by} with schema version {version}; "
            f"this taskstats_fast ({__version__}) reads schema versions up to "
            f"{FORMAT_VERSION}: upgrade it (pip install -U taskstats_fast)")
    return version


def stats_for(schema: Any) -> Any:
    """A fresh counter of what one file of ``schema``'s rows adds up to: the schema's own
    (``stats_factory``: interval rows) or ``FileStats`` (exit records and snapshots)."""
    factory = getattr(schema, "stats_factory", None)
    return factory() if factory is not None else FileStats()


def utc(ns: Optional[int]) -> Optional[str]:
    """Nanoseconds since the epoch as an ISO 8601 UTC string (None stays None)."""
    if ns is None:
        return None
    return _dt.datetime.fromtimestamp(ns / 1e9, _dt.timezone.utc).isoformat(timespec="microseconds")


def system_metadata(**extra: Any) -> Dict[str, Any]:
    """What every file says about where it was recorded: hostname, kernel release, machine,
    library version, the delay-accounting switch, plus ``extra``."""
    from ..kernel.delayacct import delayacct_enabled
    uname = platform.uname()
    meta: Dict[str, Any] = {
        "format": "taskstats_fast recording",
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        "hostname": os.uname().nodename,
        "kernel_release": uname.release,
        "machine": uname.machine,
        "delayacct_enabled": delayacct_enabled(),
        "columns": "taskstats_fast.schema.COLUMNS (README: field reference)",
    }
    meta.update(extra)
    return meta


@dataclass(frozen=True)
class StatsColumns:
    """Which columns of a kind of rows ``FileStats`` reads, and the metadata keys it writes.

    ``first``/``last``: the columns whose least and greatest non-zero values bound the time the
    file's rows cover, named ``first_key``/``last_key`` in the metadata (ISO; the ``*_ns`` keys
    are always ``first_record_ns``/``last_record_ns``); ``distinct``: a column whose distinct
    values ``describe`` turns into metadata; ``kinds``: count PID and TGID records apart."""

    first: str
    last: str
    first_key: str
    last_key: str
    distinct: str
    describe: Callable[[List[int]], Dict[str, Any]]
    kinds: bool


def _struct_versions(versions: List[int]) -> Dict[str, Any]:
    return {"taskstats_version": versions[-1] if versions else None, "taskstats_versions": versions}


#: Exit records and snapshots: stamped ``time_ns`` when received, of one or more struct versions.
RECORD_STATS = StatsColumns("time_ns", "time_ns", "first_record", "last_record", "version",
                            _struct_versions, kinds=True)


class FileStats:
    """What a file's rows add up to, updated batch by batch (vectorised per batch): how many,
    the time they cover and what ``columns`` (a ``StatsColumns``) asks for besides."""

    def __init__(self, columns: StatsColumns = RECORD_STATS) -> None:
        self.columns = columns
        self.records = 0
        self.pid_records = 0
        self.tgid_records = 0
        self.distinct: set = set()
        self.first_ns: Optional[int] = None
        self.last_ns: Optional[int] = None

    def add(self, rows: np.ndarray) -> None:
        if not len(rows):
            return
        c = self.columns
        self.records += len(rows)
        if c.kinds:
            kind = rows["kind"]
            self.pid_records += int(np.count_nonzero(kind == layout.KIND_PID))
            self.tgid_records += int(np.count_nonzero(kind == layout.KIND_TGID))
        self.distinct.update(int(v) for v in np.unique(rows[c.distinct]))
        first, last = rows[c.first], rows[c.last]
        first, last = first[first != 0], last[last != 0]
        if len(first):
            lo = int(first.min())
            self.first_ns = lo if self.first_ns is None else min(self.first_ns, lo)
        if len(last):
            hi = int(last.max())
            self.last_ns = hi if self.last_ns is None else max(self.last_ns, hi)

    def as_metadata(self) -> Dict[str, Any]:
        c = self.columns
        kinds = {"pid_records": self.pid_records, "tgid_records": self.tgid_records} if c.kinds else {}
        return {"records": self.records, **kinds, **c.describe(sorted(self.distinct)),
                c.first_key: utc(self.first_ns), c.last_key: utc(self.last_ns),
                "first_record_ns": self.first_ns, "last_record_ns": self.last_ns}
