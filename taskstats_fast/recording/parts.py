"""One output file, from its hidden name in progress to its final name: ``Part``.

A part is written under ``.NAME.inprogress`` beside its final name ``NAME`` (hidden, so
dataset readers such as pyarrow.dataset skip it); its writer keeps it readable up to the last
``sync`` (the recording's flush: an fsync), so after a crash ``recovery`` publishes what it
holds and our readers read it in place.  While it is open its writer holds an flock on it,
which tells recovery it is not a crash's leftover.  ``finish`` completes and fsyncs it, writes
and fsyncs the metadata sidecar (formats that keep one), renames it into place and fsyncs the
directory (``durable``).  A failure at any step raises, and the file is not published: when
the directory fsync after the rename fails, the file goes back under its hidden name and its
sidecar is removed (the metadata of no file).  After a failed write (a full disk) or finish
``keep`` leaves it in progress, cut back to its last complete write and fsynced, for
``recovery`` to publish; ``abort`` removes it.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Mapping, Optional

import numpy as np

from ..schema import TableSchema
from .durable import (NotPublishedError, fsync_directory, journal_path, make_directories,
                      publish, try_lock, write_text_durably)
from .formats import Format
from .metadata import stats_for
from .writers import unlink_quietly

__all__ = ["Part", "IN_PROGRESS", "RECOVERING", "hidden_name"]

#: The suffix of a file being written (after a leading dot).
IN_PROGRESS = ".inprogress"
#: The suffix of a file recovery is writing from a crash's leftover.
RECOVERING = ".recovering"


def hidden_name(path: str, suffix: str = IN_PROGRESS) -> str:
    """The hidden name a file to be published as ``path`` is written under."""
    directory, name = os.path.split(path)
    return os.path.join(directory, f".{name}{suffix}")


class Part:
    """One file being written under a hidden temporary name, renamed into place by ``finish``."""

    def __init__(self, path: str, fmt: Format, *, sidecar_path: Optional[str],
                 schema: TableSchema, opening_metadata: Optional[Mapping[str, Any]] = None,
                 suffix: str = IN_PROGRESS):
        self.path = path
        self.sidecar_path = sidecar_path
        self.tmp_path = hidden_name(path, suffix)
        #: where its rows are when it is not published: ``tmp_path``, or ``path`` when a
        #: finish renamed it into place and could neither prove that name nor undo it
        self.kept_in = self.tmp_path
        make_directories(os.path.dirname(path))
        self.stats = stats_for(schema)
        self.opened_ns = time.time_ns()
        self._lock: Optional[int] = None
        try:
            self._writer = fmt.writer(self.tmp_path, schema,
                                      json.dumps(dict(opening_metadata or {}), sort_keys=True))
            self._lock = try_lock(self.tmp_path)
            # the new name on disk: a power cut leaves the journal where recovery looks
            fsync_directory(os.path.dirname(self.tmp_path))
        except BaseException:   # e.g. no room for the header: leave nothing behind
            if getattr(self, "_writer", None) is not None:
                self._writer.abort()
            self._release()
            unlink_quietly(self.tmp_path)
            unlink_quietly(journal_path(self.tmp_path))
            raise

    @property
    def bytes_on_disk(self) -> int:
        """What the file in progress takes on disk now (with its journal, where it has one)."""
        total = 0
        for path in (self.tmp_path, journal_path(self.tmp_path)):
            try:
                total += os.stat(path).st_size
            except FileNotFoundError:
                pass
        return total

    def write(self, records: np.ndarray) -> None:
        if len(records):
            self._writer.write(records)
            self.stats.add(records)

    def sync(self) -> None:
        """Everything written so far onto the disk (an fsync)."""
        self._writer.sync()

    def finish(self, metadata: Mapping[str, Any]) -> str:
        """Close the file with ``metadata`` (JSON-able), move it into place, return its path."""
        self._writer.finish(json.dumps(metadata, sort_keys=True))
        if self.sidecar_path:
            write_text_durably(self.sidecar_path,
                               json.dumps(metadata, indent=2, sort_keys=True) + "\n")
        try:
            publish(self.tmp_path, self.path)
        except NotPublishedError as e:
            self.kept_in = e.where
            if self.sidecar_path and e.where != self.path:
                _remove_quietly(self.sidecar_path)
            raise
        self._release()
        try:
            self._writer.published()
        except OSError:   # a journal whose file is published: recovery removes it, never rereads it
            pass
        return self.path

    def abort(self) -> None:
        """Close without publishing, and remove what was written."""
        try:
            self._writer.abort()
        finally:
            unlink_quietly(self.tmp_path)
            self._release()

    def keep(self) -> int:
        """Close without publishing after a failed write or finish, leaving the file readable
        in progress up to its last complete write, fsynced (or, when that fsync fails, up to
        its last good one), and unlocked: a leftover for ``recovery``.  Returns the rows it
        holds; the rest of what was written is not.  One holding no row is removed.  One left
        under its final name (``kept_in``) is complete and fsynced: all its rows, untouched."""
        if self.kept_in == self.path:
            self._release()
            return self.stats.records
        try:
            kept = int(self._writer.keep())
        except OSError:   # it vanished: nothing of it is on disk
            kept = 0
        finally:
            self._release()
        if not kept:
            unlink_quietly(self.tmp_path)
            unlink_quietly(journal_path(self.tmp_path))
        return kept

    def _release(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None


def _remove_quietly(path: str) -> None:
    """Best effort: the directory it is in has just failed an fsync."""
    try:
        os.unlink(path)
    except OSError:
        pass
