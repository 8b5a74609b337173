"""The sink protocol: where streams of rows go.

A stream (exit batches from a listener, an accounting interval's rows) flows into a sink, which
takes batches with ``write``, writes out what it buffers with ``flush``, finishes with ``close``
and says at any time what it holds and what it lost with ``stats()``.  The recording files
(``recording.FileSink``), the Prometheus exporter and the ``top`` view are sinks; this module is
at the bottom of the package so that each of them depends on the protocol, not on another sink.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Protocol, Tuple, runtime_checkable

import numpy as np

__all__ = ["Sink", "SinkStats", "CountingSink"]


@dataclass(frozen=True)
class SinkStats:
    """What a sink holds and what it lost.  Every record handed to ``write`` is in exactly one
    of ``written``, ``buffered`` and ``lost``."""

    written: int = 0          #: records (rows) written out: in files, exported, shown
    buffered: int = 0         #: handed over, not yet written
    lost: int = 0             #: handed over and never to be written (``error`` says why)
    files: Tuple[str, ...] = ()   #: finished files (file sinks)
    #: of ``written``, the records in files left in progress after a failed write (file
    #: sinks: fsynced, read in place, published by the next recording's recovery)
    unpublished: int = 0
    bytes: int = 0            #: bytes written out (file sinks: on disk, the current file too)
    error: Optional[str] = None   #: why records were lost (None: nothing was)


@runtime_checkable
class Sink(Protocol):
    """Where ``record()`` puts batches.  ``write`` takes ownership of the array (callers hand
    over fresh arrays); an empty array is a tick.  ``close`` writes what is buffered; a sink
    that cannot write raises ``WriteFailedError`` once and counts what it loses in
    ``stats().lost`` from then on."""

    def write(self, batch: np.ndarray) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> object: ...   # what it returns (FileSink: its files) is not part of it

    def stats(self) -> SinkStats: ...


@runtime_checkable
class CountingSink(Sink, Protocol):
    """A sink that also records its source's loss counters (``FileSink`` puts them in each
    file's metadata); ``record()`` hands them over when the sink has this method."""

    def update_counters(self, counters: Mapping[str, int]) -> None: ...
