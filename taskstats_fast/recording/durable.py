"""The durability rules of everything a recording puts on disk: fsync, publish, remove, lock.

PostgreSQL's rule: only a successful fsync proves data is on disk, and a failed one is data
lost (reported, never retried away).  So a file is fsynced before it is renamed to its final
name, and its directory after (a rename lives in the directory); a deletion fsyncs its
directory too.  Every helper here raises the ``OSError`` of a failed fsync or close: the caller
counts the records as not written and does not publish the file.

Locks: a file being written is ``flock``-ed by its writer for as long as it is open, so recovery
(``recovery``) can tell a crashed run's leftover (lock free) from the file another recorder is
writing right now (locked).  A single-file output also has a lock file (``.NAME.lock``, the
writer's pid inside), so a second writer refuses at start and names the first.
"""

from __future__ import annotations

import errno
import fcntl
import os
from typing import IO, Iterable, Optional

from ..errors import TaskstatsError

__all__ = ["fsync_directory", "make_directories", "fsync_path", "sync_file", "publish",
           "write_text_durably", "remove_durably", "try_lock", "journal_path", "OutputLock",
           "OutputInUseError", "NotPublishedError", "FSYNCS"]


class _Counter:
    """How many fsyncs this process made (the bench reports fsyncs per minute)."""

    def __init__(self) -> None:
        self.count = 0


#: fsyncs of files and directories made by this process.
FSYNCS = _Counter()


class OutputInUseError(TaskstatsError, BlockingIOError):
    """Another process is writing the same output."""


def sync_file(f: IO[bytes]) -> None:
    """Write out ``f``'s buffer and fsync it."""
    f.flush()
    os.fsync(f.fileno())
    FSYNCS.count += 1


def fsync_path(path: str) -> None:
    """fsync the file at ``path`` (written by a writer that does not show its fd)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
        FSYNCS.count += 1
    finally:
        os.close(fd)


def fsync_directory(directory: str) -> None:
    """fsync a directory, so the names created, renamed or removed in it are on disk."""
    fd = os.open(directory or ".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
        FSYNCS.count += 1
    finally:
        os.close(fd)


def make_directories(directory: str) -> None:
    """``os.makedirs``, fsyncing the parent of every directory it creates, so the names lead
    to the file after a power cut too."""
    missing = []
    where = os.path.abspath(directory or ".")
    while not os.path.isdir(where):
        missing.append(where)
        where = os.path.dirname(where)
    os.makedirs(directory or ".", exist_ok=True)
    for created in reversed(missing):
        fsync_directory(os.path.dirname(created))


class NotPublishedError(OSError):
    """The directory fsync after renaming a file into place failed (``publish``): the file is
    not published.  ``where``: the name it is under now, its hidden one again, or its final one
    when renaming it back failed too (then a power cut may leave either name)."""

    def __init__(self, error: OSError, final: str, where: str):
        how = ("renamed back" if where != final else
               "renaming it back failed too, so its name may not survive a power cut")
        super().__init__(error.errno, f"{error.strerror} (the directory fsync after renaming "
                         f"it into place; {how})", final)
        self.where = where


def publish(tmp: str, final: str) -> None:
    """Rename the (already fsynced) ``tmp`` to ``final`` and fsync the directory.  When that
    fsync fails, ``final`` is not proven on disk: the file goes back to ``tmp`` (best effort:
    either name leaves it readable once, ``recovery``) and ``NotPublishedError`` is raised."""
    os.replace(tmp, final)
    try:
        fsync_directory(os.path.dirname(final))
    except OSError as e:
        where = final
        try:
            os.replace(final, tmp)
            where = tmp
        except OSError:
            pass
        raise NotPublishedError(e, final, where) from e


def write_text_durably(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through a hidden ``.NAME.tmp``: written, fsynced, closed,
    renamed, directory fsynced.  Leaves nothing behind when any step fails."""
    tmp = os.path.join(os.path.dirname(path) or ".", f".{os.path.basename(path)}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
            FSYNCS.count += 1
        publish(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def remove_durably(paths: Iterable[str]) -> None:
    """Remove ``paths`` (those already gone are skipped) and fsync each directory touched."""
    directories = set()
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            continue
        directories.add(os.path.dirname(path))
    for directory in sorted(directories):
        fsync_directory(directory)


def journal_path(path: str) -> str:
    """The journal beside a Parquet file in progress (``writers.ParquetWriter``)."""
    return path + ".journal"


def try_lock(path: str) -> Optional[int]:
    """An fd of ``path`` holding an exclusive flock, or None when another process holds it
    (or the file vanished).  Close the fd to release it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


class OutputLock:
    """The lock of a single-file output: ``.NAME.lock`` beside it, flock-ed while it is written,
    with the writer's pid inside.  A second writer raises ``OutputInUseError`` naming the pid."""

    def __init__(self, output: str):
        directory, name = os.path.split(os.path.abspath(output))
        self.path = os.path.join(directory, f".{name}.lock")
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise OutputInUseError(errno.EBUSY, f"{output} is being written by another "
                                   f"process (pid {holder}, lock {self.path}): stop it, or "
                                   "write somewhere else") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd: Optional[int] = fd

    def release(self) -> None:
        if self._fd is not None:
            try:   # removed while still held, so no other writer ever sees it unlocked
                os.unlink(self.path)
            except OSError:
                pass
            os.close(self._fd)
            self._fd = None
