"""Finishing files off the writer's thread: ``Finisher``.

A rotation turns the file in progress into its final file: for Parquet that is writing every
row group and the footer, and on a slow or starved machine it takes longer than the flush
window.  Done on the thread that writes the next file, the records handed over meanwhile would
wait for it on no disk.  So ``FileSink`` hands each file to finish (its records already fsynced
in its journal, its metadata fixed) to a ``Finisher``, which finishes them in order on a thread
of its own while the next file is written and fsynced as usual.  A file being finished is still
under its hidden name with its journal beside it and its lock held (``parts``): a crash then
leaves it to ``recovery``, exactly once, as a crash before the rotation would.

At most ``max_waiting`` files wait to be finished; handing over one more blocks until the
oldest is done (finishing slower than rotating, for good: the caller slows down instead of
the backlog growing).  A job that raises is kept, with the part it was given, for the caller
to account for on its own thread (``failures``).
"""

from __future__ import annotations

import functools
import os
import queue
import threading
import time
import warnings
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from .metadata import utc
from .parts import Part
from .paths import sharing_host_directories
from .retention import RetentionPolicy

__all__ = ["Finisher", "FinishedFiles"]


class Finisher:
    """Runs finishing jobs in the order given, on one thread of its own (started on the first
    job), with at most ``max_waiting`` jobs waiting."""

    _STOP = object()

    def __init__(self, max_waiting: int = 2):
        self._jobs: "queue.Queue[Any]" = queue.Queue(maxsize=max(1, int(max_waiting)))
        self._failed: List[Tuple[Any, BaseException]] = []
        self._failed_lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None

    def submit(self, job: Callable[[], None], part: Any) -> None:
        """Queue ``job`` (finishing ``part``); blocks while ``max_waiting`` jobs wait."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="taskstats-fast finisher",
                                            daemon=True)
            self._thread.start()
        self._jobs.put((job, part))

    def wait(self) -> None:
        """Return once every job handed over is done."""
        if self._thread is not None:
            self._jobs.join()

    def stop(self) -> None:
        """Finish every job handed over, then end the thread."""
        if self._thread is not None:
            self._jobs.put((self._STOP, None))
            self._thread.join()
            self._thread = None

    @property
    def busy(self) -> bool:
        """Jobs handed over and not done yet."""
        return self._jobs.unfinished_tasks > 0

    def failures(self) -> List[Tuple[Any, BaseException]]:
        """(part, error) of each job that raised since the last call."""
        with self._failed_lock:
            failed, self._failed = self._failed, []
        return failed

    def _run(self) -> None:
        while True:
            job, part = self._jobs.get()
            try:
                if job is self._STOP:
                    return
                job()
            except Exception as e:   # accounted for by the caller, on its thread
                with self._failed_lock:
                    self._failed.append((part, e))
            finally:
                self._jobs.task_done()


class FinishedFiles:
    """The files of one recording, in order: what each one's metadata says about its time and
    the source's counters (``describe``, ``closed``), finishing and publishing it (``publish``
    here, ``hand_over`` to the ``Finisher``), and retention after each (``retention``)."""

    def __init__(self, metadata: Mapping[str, Any], host_directory: str,
                 retention: Optional[RetentionPolicy]):
        self.metadata = dict(metadata)
        self.host_directory = host_directory
        #: this host's directories of the other datasets that share the retention cap (only
        #: a dataset has retention: a single file has no host directory)
        self.shared: Tuple[str, ...] = () if retention is None else tuple(
            sharing_host_directories(host_directory))
        self.retention = retention
        self.files: List[str] = []
        self.bytes = 0
        #: files that retention deleted, and crash leftovers it aged out
        self.deleted: List[str] = []
        self.aged_out: List[str] = []
        #: set once retention had to keep a file over the size cap (the newest)
        self.over_cap = False
        #: the source's cumulative counters (``FileSink.update_counters``)
        self.counters: Dict[str, int] = {}
        self._baseline: Dict[str, int] = {}   # counters when the last file closed
        self._not_written_baseline = 0
        # The time each file covers: from the sink's start (the first file) or the previous
        # file's end, to its own end; contiguous, so summaries and plots span the recording
        # window, not just the first and last record in it.
        self._window_started_ns = time.time_ns()
        self._closed = 0   # files closed so far: the next one's sequence
        self.finisher = Finisher()

    @property
    def unaccounted(self) -> bool:
        """The counters moved since the last file closed (a loss no file tells of yet)."""
        return any(v != self._baseline.get(k, 0) for k, v in self.counters.items())

    def describe(self, part: Part, finished_ns: int, not_written: int,
                 error: Optional[str]) -> Dict[str, Any]:
        """The final metadata of ``part``, closed at ``finished_ns``."""
        meta = dict(self.metadata)
        meta.update(part.stats.as_metadata())
        meta["file_started"] = utc(part.opened_ns)
        meta["file_finished"] = meta["window_finished"] = utc(finished_ns)
        meta["window_started"] = utc(self._window_started_ns)
        meta["sequence"] = self._closed
        for key, value in self.counters.items():
            meta[key] = value - self._baseline.get(key, 0)
            meta[f"{key}_since_start"] = value
        meta["not_written"] = not_written - self._not_written_baseline
        meta["not_written_since_start"] = not_written
        if error is not None:
            meta["write_error"] = error
        return meta

    def closed(self, finished_ns: int, not_written: int) -> None:
        """A file closed at ``finished_ns``: the next one starts where it ended."""
        self._closed += 1
        self._window_started_ns = finished_ns
        self._baseline = dict(self.counters)
        self._not_written_baseline = not_written

    def publish(self, part: Part, meta: Dict[str, Any]) -> None:
        """Finish ``part`` here (the files handed over before it done first), then retention."""
        self.finisher.wait()
        self._publish(part, meta)
        if self.retention is not None:
            self.apply_retention()

    def hand_over(self, part: Part, meta: Dict[str, Any]) -> None:
        """Finish ``part`` on the finisher's thread, then retention (whose failure is the
        dataset's, not the file's)."""
        self.finisher.submit(functools.partial(self._publish, part, meta), part)
        if self.retention is not None:
            self.finisher.submit(self.apply_retention, None)

    def take_failures(self, unfinished: Any
                      ) -> Tuple[int, Optional[Tuple[Optional[Part], BaseException]]]:
        """The files that failed to finish in the background since the last call, each left
        in progress with what its fsynced journal holds (``unfinished.keep``, for recovery):
        how many of their records are not kept, and the first (part, error)."""
        failed = self.finisher.failures()
        lost = sum(part.stats.records - unfinished.keep(part)
                   for part, _ in failed if part is not None)
        return lost, failed[0] if failed else None

    def adopt(self, published: List[str]) -> None:
        """Files published for the recording by others (recovery of its own leftovers)."""
        self.files += published
        self.bytes += sum(os.path.getsize(p) for p in published)

    def _publish(self, part: Part, meta: Dict[str, Any]) -> None:
        path = part.finish(meta)
        self.files.append(path)
        self.bytes += os.path.getsize(path)

    def apply_retention(self) -> None:
        """After a rotation: delete this host's oldest complete files beyond the limits (never
        the file being written, which is not complete, nor the one just closed). A file that
        cannot be deleted is a warning, not the end of the recording."""
        assert self.retention is not None
        result = self.retention.apply(self.host_directory, protected=self.files[-1:],
                                      shared=self.shared)
        self.deleted += result.deleted
        self.aged_out += result.aged_out
        _warn_retention(result, self.files[-1] if self.files else self.host_directory,
                        self.retention.max_total_bytes, once=not self.over_cap,
                        shared=any(os.path.isdir(d) for d in self.shared))
        self.over_cap = self.over_cap or result.over_cap


def _warn_retention(result: Any, newest: str, cap: Optional[int], *, once: bool,
                    shared: bool = False) -> None:
    """What retention could not do, as warnings (the cap below one file: once)."""
    if result.over_cap and once:
        what = (f"{newest} and the newest file of the directory's other dataset (its PSI, "
                "under _psi) are" if shared else f"{newest} is")
        warnings.warn(f"retention: {what} alone over the size cap ({cap:,} bytes): the "
                      "newest file of each is kept (raise --max-total-mb or lower --rotate-mb)",
                      RuntimeWarning, stacklevel=3)
    for error in result.errors:
        warnings.warn(f"retention: could not delete {error.filename}: {error.strerror}",
                      RuntimeWarning, stacklevel=3)
