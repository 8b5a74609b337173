"""The tables-and-files side: recordings on disk, the sinks records go to, and reading back.

Where things live (each module opens with what it owns):

* ``formats``  the format registry: one entry per file format (extension, extra, writer, reader,
  where its metadata lives)
* ``writers`` / ``readers``  one writer and one reader per format
* ``metadata`` the metadata object every file carries and the schema-version check
* ``paths``    which files a path names (datasets, single files)
* ``sinks``    ``FileSink`` (one file or a rotating dataset); the protocol is ``taskstats_fast.sink``
* ``driver``   the recording loop, once (``drive``: a batch source into a sink until told to
  stop), and ``record(listener, sink, stop=...)``, it over an exit listener
* ``reading``  ``read_records``/``read_frame``/``read_metadata``: files and datasets back
* ``summary``  ``summarize``: what a recording adds up to (top commands, window, losses)
* ``interval_rows`` accounting intervals as rows on disk: their schema (a leaf)
* ``psi_rows`` the intervals' pressure stalls as rows on disk, and where a dataset keeps them (a leaf)
* ``row_kinds`` which kind of rows a file holds, from its metadata or its column names
* ``intervals`` ``record_intervals``, the same loop over an ``Accounting``

Importing this package needs numpy only; pyarrow and pandas are imported when used.
"""

from __future__ import annotations

from ..errors import NewerFormatError, NotARecordingError, WriteFailedError
from .driver import ReadAhead, RecordResult, Stop, record
from .formats import (EXTENSIONS, FORMAT, FORMATS, Format, MetadataPlace, default_format,
                      detect_format, format_of_path, require_format)
from .metadata import FORMAT_VERSION, METADATA_KEY, system_metadata
from ..sink import CountingSink, Sink, SinkStats
from .interval_rows import interval_schema
from .psi_rows import psi_path, psi_schema
from .paths import find_files, is_dataset_path
from .reading import (DamagedRecordingWarning, Recordings, columns_of, read_columns, read_frame,
                      read_metadata, read_records, read_table)
from .intervals import record_intervals
from .retention import RetentionPolicy
from .summary import INTERVALS, SUMMARY_COLUMNS, Summary, summarize, summarize_columns
from .sinks import (BackgroundWriter, FileSink, Recorder, check_writable, prepare_output,
                    prepare_writing, write_file)

__all__ = [
    "record", "ReadAhead", "RecordResult", "Stop", "Sink", "CountingSink", "SinkStats", "FileSink",
    "Recorder", "BackgroundWriter", "write_file", "prepare_output", "prepare_writing",
    "check_writable",
    "summarize", "summarize_columns", "Summary", "SUMMARY_COLUMNS",
    "FORMAT", "FORMATS", "EXTENSIONS", "Format", "MetadataPlace", "detect_format",
    "default_format", "format_of_path", "require_format", "FORMAT_VERSION", "METADATA_KEY",
    "system_metadata", "find_files", "read_metadata", "read_records", "read_frame", "read_table",
    "read_columns", "columns_of", "Recordings", "is_dataset_path", "DamagedRecordingWarning",
    "NotARecordingError", "NewerFormatError", "WriteFailedError", "RetentionPolicy",
    "record_intervals", "interval_schema", "INTERVALS", "psi_schema", "psi_path",
]
