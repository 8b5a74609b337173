"""The format registry: every file format is one ``Format`` entry, and nothing else in the
package branches on a format's name.

An entry says what a format is: its extension (and the other extensions that select it), the
optional extra it needs, the writer class that writes it (``writers``), the reader that reads
it back (``readers``) and where its metadata lives (in the file's schema, or in a JSON sidecar
beside it).  To add a format, write a writer and a reader and add one entry to ``_ENTRIES``.
"""

from __future__ import annotations

import enum
import json
import os
import stat
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, Mapping, Optional, Tuple

from . import readers, writers
from ..errors import NotARecordingError
from ..schema import require

__all__ = ["Format", "MetadataPlace", "FORMAT", "FORMATS", "EXTENSIONS", "format_of_path",
           "detect_format", "default_format", "require_format", "require_regular_file"]

# What a path that is not a regular file is, for the one line that refuses it.
_NOT_FILES = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
              (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
              (stat.S_ISDIR, "a directory"))


def require_regular_file(path: str) -> None:
    """Refuse ``path`` unless it is a regular file (a symlink to one is fine): opening a FIFO
    waits forever for a writer, and a device or socket never holds a recording."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file or directory") from None
    if stat.S_ISREG(mode):
        return
    what = next((name for test, name in _NOT_FILES if test(mode)), "not a regular file")
    raise NotARecordingError(path, f"it is {what}, not a file; recordings are read from files "
                             "(copy the data into a file first)")


class MetadataPlace(enum.Enum):
    """Where a format keeps a file's metadata object."""

    #: in the file itself, as JSON under the schema metadata key ``taskstats_fast``
    SCHEMA = "schema"
    #: in ``<file>.json`` beside a single file, ``_<file>.json`` inside a dataset directory
    #: (the underscore keeps dataset readers such as pyarrow.dataset away from it)
    SIDECAR = "sidecar"

    def sidecar_path(self, path: str, *, in_dataset: bool) -> Optional[str]:
        """Where the sidecar of a file written at ``path`` goes (None: no sidecar)."""
        if self is MetadataPlace.SCHEMA:
            return None
        directory, name = os.path.split(path)
        return os.path.join(directory, ("_" if in_dataset else "") + name + ".json")

    def read(self, fmt: "Format", path: str) -> Dict[str, Any]:
        """The metadata object of the file at ``path`` ({} when it has none)."""
        if self is MetadataPlace.SCHEMA:
            assert fmt.schema_metadata is not None
            return fmt.schema_metadata(path)
        directory, name = os.path.split(path)
        for candidate in (os.path.join(directory, "_" + name + ".json"), path + ".json"):
            if os.path.exists(candidate):
                require_regular_file(candidate)
                try:
                    with open(candidate, encoding="utf-8") as f:
                        found = json.load(f)
                except (ValueError, UnicodeDecodeError) as e:
                    raise NotARecordingError(path, f"its metadata sidecar {candidate} is empty "
                                             f"or damaged ({e}); delete or restore it") from None
                if not isinstance(found, dict):
                    raise NotARecordingError(path, f"its metadata sidecar {candidate} holds no "
                                             "JSON object; delete or restore it")
                return found
        return {}


@dataclass(frozen=True)
class Format:
    """One file format of recordings."""

    name: str
    extension: str                       #: what ``record``/``snapshot`` append
    also: Tuple[str, ...]                #: other extensions that select this format on read
    extra: Optional[str]                 #: the pip extra it needs (None: numpy alone)
    #: opens a ``writers`` object on a path: ``writer(path, schema)`` (``columns`` schema)
    writer: Callable[..., Any]
    #: reads one file back, chunk by chunk: ``reader(path, schema, columns)`` (``readers``)
    reader: Callable[..., Iterator[Any]]
    metadata: MetadataPlace
    #: reads a file in progress (or left by a crash) up to its last fsync, same arguments
    partial_reader: Optional[Callable[..., Iterator[Any]]] = None
    #: the metadata a file in progress opened with ({} where the format keeps none then)
    partial_metadata: Callable[[str], Dict[str, Any]] = readers.no_partial_metadata
    #: reads the metadata from the file's schema (formats whose metadata is ``SCHEMA``)
    schema_metadata: Optional[Callable[[str], Dict[str, Any]]] = None

    def require(self, purpose: str) -> None:
        """Raise ``MissingExtraError`` unless this format's extra is installed; imports what its
        writer needs, so none of it is imported while records wait for their first flush."""
        if self.extra is not None:
            for module in getattr(self.writer, "MODULES", ("pyarrow",)):
                require(module, self.extra, f"{purpose} {self.name} files")

    def read_metadata(self, path: str) -> Dict[str, Any]:
        """The metadata of the file at ``path``; every read of a file starts here, so this is
        where a FIFO, device or socket is refused before anything opens it."""
        require_regular_file(path)
        return self.metadata.read(self, path)


_ENTRIES = (
    Format("parquet", ".parquet", (".pq",), "arrow", writers.ParquetWriter, readers.read_parquet,
           MetadataPlace.SCHEMA, readers.read_parquet_partial, readers.parquet_partial_metadata,
           readers.parquet_metadata),
    Format("arrow", ".arrow", (".feather", ".ipc"), "arrow", writers.ArrowWriter,
           readers.read_arrow, MetadataPlace.SCHEMA, readers.read_arrow_partial,
           readers.arrow_partial_metadata, readers.arrow_metadata),
    Format("npy", ".npy", (), None, writers.NpyWriter, readers.read_npy, MetadataPlace.SIDECAR,
           readers.read_npy_partial),
    Format("csv", ".csv", (), "arrow", writers.CsvWriter, readers.read_csv, MetadataPlace.SIDECAR,
           readers.read_csv_partial),
)

#: Every format by name.
FORMAT: Mapping[str, Format] = {f.name: f for f in _ENTRIES}
#: The format names, in order of preference.
FORMATS: Tuple[str, ...] = tuple(FORMAT)
#: File extension written for each format.
EXTENSIONS: Dict[str, str] = {f.name: f.extension for f in _ENTRIES}
_BY_EXTENSION: Dict[str, Format] = {ext: f for f in _ENTRIES for ext in (f.extension, *f.also)}


def format_of_path(path: str) -> Optional[Format]:
    """The format a file name's extension selects (None: not a recording's extension)."""
    return _BY_EXTENSION.get(os.path.splitext(path)[1].lower())


def known_extensions() -> Tuple[str, ...]:
    return tuple(sorted(_BY_EXTENSION))


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
    by_extension = format_of_path(path)
    if explicit is not None:
        if explicit not in FORMAT:
            raise ValueError(f"unknown format {explicit!r}: choose one of {', '.join(FORMATS)}")
        if by_extension is not None and by_extension.name != explicit:
            raise ValueError(f"{path} has a {by_extension.name} extension but --format {explicit} "
                             "was asked for: change one of them")
        return explicit
    return by_extension.name if by_extension else default_format()


def require_format(fmt: str, purpose: str = "writing") -> Format:
    """The registry entry of ``fmt``, after checking its extra is installed."""
    entry = FORMAT[fmt]
    entry.require(purpose)
    return entry
