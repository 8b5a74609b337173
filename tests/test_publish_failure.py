"""A failed directory fsync after a file is renamed into place (issue 17): its name is not
proven on disk, so the file is not published.  It goes back under its hidden name, its
sidecar is removed, its rows stay readable in place, counted as kept (``unpublished``) and
never as published, ``stats().lost`` is exactly what is not on disk, the one error line says
where the rows are, and the next start recovers them exactly once.

The failure is injected at the real OS call: ``os.fsync`` of a directory fd fails with EIO
right after ``os.replace`` moved a file to a final name, on the thread that renamed it (the
background finisher's, or the writer's), every time; files under hidden names, and every
other fsync, work.  Files finished in place (``close``) and files handed to the finisher (a
rotation), every format, datasets and single files, data files and sidecars.
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import taskstats_fast as tsf
from taskstats_fast import recording
from taskstats_fast.recording import FileSink

from sample_records import batch

SIDECAR_FORMATS = [f for f in recording.FORMATS
                   if recording.FORMAT[f].metadata is recording.MetadataPlace.SIDECAR]


class DirectoryFsyncFails:
    """``os.fsync`` of a directory fails (EIO) right after a rename to a final name that
    ``renamed`` selects, on the renaming thread; ``undo_fails``: renaming it back fails too."""

    def __init__(self, monkeypatch, renamed, *, undo_fails=False):
        self.renamed, self.undo_fails = renamed, undo_fails
        self.failed = []   # the final names whose directory fsync failed
        self.on = True
        self._armed = threading.local()
        self._replace, self._fsync = os.replace, os.fsync
        monkeypatch.setattr(os, "replace", self.replace)
        monkeypatch.setattr(os, "fsync", self.fsync)

    def replace(self, src, dst):
        if self.on and self.undo_fails and self.failed and src == self.failed[-1]:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), dst)
        self._replace(src, dst)
        if self.on and self.renamed(os.path.basename(dst)):
            self._armed.final = dst

    def fsync(self, fd):
        final = getattr(self._armed, "final", None)
        if final is not None and stat.S_ISDIR(os.fstat(fd).st_mode):
            self._armed.final = None
            self.failed.append(final)
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        self._fsync(fd)


def data_file(fmt):
    ext = recording.FORMAT[fmt].extension
    return lambda name: not name.startswith(".") and name.endswith(ext)


def sidecar(name):
    return not name.startswith(".") and name.endswith(".json")


def everything_under(root):
    return sorted(os.path.join(d, n) for d, _, names in os.walk(root) for n in names)


def hidden(root):
    return [p for p in everything_under(root) if os.path.basename(p).startswith(".")
            and not p.endswith(".lock")]


def published(root):
    return [p for p in everything_under(root) if not os.path.basename(p).startswith(".")]


def pids_once(paths):
    pids = np.sort(tsf.read_records(paths)["ac_pid"])
    assert len(np.unique(pids)) == len(pids), "a record is readable twice"
    return pids.tolist()


def recover_once(out, fmt, expected):
    """A recording started on ``out`` (no fault now) recovers ``expected`` records; the next
    one recovers none; every record reads once."""
    with FileSink(str(out), fmt) as again:
        assert again.recovery.records == expected, again.recovery
    assert not hidden(out.parent if out.suffix else out)
    with FileSink(str(out), fmt) as third:
        assert third.recovery.records == 0


# the sidecar's rename only where there is one (Parquet and Arrow keep metadata in the file)
@pytest.mark.parametrize("fmt,which", [(f, "file") for f in recording.FORMATS]
                         + [(f, "sidecar") for f in SIDECAR_FORMATS])
@pytest.mark.parametrize("single", [False, True], ids=["dataset", "single-file"])
def test_a_file_finished_in_place_whose_rename_is_not_proven_is_not_published(
        tmp_path, monkeypatch, fmt, single, which):
    out = tmp_path / ("exits" + recording.FORMAT[fmt].extension if single else "exits")
    sink = FileSink(str(out), fmt)
    sink.write(batch(10))
    sink.flush()
    sink.write(batch(5, start=10))   # buffered: written and fsynced by close, before finishing
    fault = DirectoryFsyncFails(monkeypatch, data_file(fmt) if which == "file" else sidecar)
    with pytest.raises(tsf.WriteFailedError) as raised:
        sink.close()
    fault.on = False
    assert len(fault.failed) == 1 and fault.failed[0].endswith(
        ".json" if which == "sidecar" else recording.FORMAT[fmt].extension)
    stats = sink.stats()
    assert (stats.written, stats.lost, stats.unpublished, stats.files) == (15, 0, 15, ())
    message = str(raised.value)
    assert raised.value.errno == errno.EIO and "directory fsync" in message, message
    assert "its 15 records up to the failure are kept in" in message, message
    where = tmp_path if single else out
    assert published(where) == [], "a file (or sidecar) under a final name not proven on disk"
    left = [p for p in hidden(where) if p.endswith(".inprogress")]
    assert len(left) == 1 and left[0] in message
    if not single:   # read in place, before any recovery
        assert pids_once(str(out)) == list(range(15))
    recover_once(out, fmt, 15)
    files = recording.find_files(str(tmp_path)) if single else recording.find_files(str(out))
    recovered = [f for f in files if recording.read_metadata(f).get("recovered")]
    assert len(recovered) == 1 and pids_once(recovered) == list(range(15))


@pytest.mark.parametrize("fmt", recording.FORMATS)
def test_a_file_the_finisher_could_not_publish_is_kept_and_counted(tmp_path, monkeypatch, fmt):
    """A rotation hands the file to the background finisher, whose publish fails: it is kept
    in progress and counted there, the file in progress meanwhile too; what came after the
    failure is lost, by count; nothing is under a final name until the next start."""
    out = tmp_path / "exits"
    sink = FileSink(str(out), fmt, rotate_seconds=0.2)
    fault = DirectoryFsyncFails(monkeypatch, data_file(fmt))
    sink.write(batch(10))
    sink.flush()
    time.sleep(0.25)
    sink.write(batch(10, start=10))   # past the deadline: the first file goes to the finisher
    sink.flush()
    with pytest.raises(tsf.WriteFailedError) as raised:
        sink.wait_finished()
    sink.write(batch(5, start=20))   # after the failure: not written, counted
    sink.close()   # retries publishing what is kept: the fault is still there
    fault.on = False
    assert fault.failed and all(f.endswith(recording.FORMAT[fmt].extension)
                                for f in fault.failed)
    stats = sink.stats()
    assert (stats.written, stats.lost, stats.unpublished, stats.files) == (20, 5, 20, ())
    message = str(raised.value)
    assert "directory fsync" in message and "its 10 records up to the failure are kept" in \
        message, message
    assert published(out) == []
    assert len([p for p in hidden(out) if p.endswith(".inprogress")]) == 2
    assert pids_once(str(out)) == list(range(20))   # in place
    recover_once(out, fmt, 20)
    assert pids_once(str(out)) == list(range(20))


@pytest.mark.parametrize("fmt", recording.FORMATS)
def test_a_rename_that_cannot_be_undone_either_keeps_its_rows_once(tmp_path, monkeypatch, fmt):
    """Renaming back fails too (a file system gone read-only after the error): the file stays
    under its final name, complete and fsynced, counted as kept and not published, and the
    message says its name is not proven; a power cut may leave either name, and both hold
    its rows once (Parquet keeps its journal for the hidden one)."""
    out = tmp_path / "exits"
    sink = FileSink(str(out), fmt)
    sink.write(batch(10))
    DirectoryFsyncFails(monkeypatch, data_file(fmt), undo_fails=True)
    with pytest.raises(tsf.WriteFailedError) as raised:
        sink.close()
    monkeypatch.undo()
    stats = sink.stats()
    assert (stats.written, stats.lost, stats.unpublished, stats.files) == (10, 0, 10, ())
    assert "not proven on disk" in str(raised.value), raised.value
    files = recording.find_files(str(out))
    assert len(files) == 1 and pids_once(files) == list(range(10))
    # as a power cut that dropped the rename would leave it: under its hidden name again
    before = {p: open(p, "rb").read() for p in everything_under(out)}
    final = files[0]
    hidden_again = os.path.join(os.path.dirname(final), f".{os.path.basename(final)}.inprogress")
    os.replace(final, hidden_again)
    copy = tmp_path / "copy"
    for path, data in before.items():
        target = copy / os.path.relpath(path, out)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    os.replace(hidden_again, final)
    os.rename(copy / os.path.relpath(final, out),
              copy / os.path.relpath(hidden_again, out))
    for where, recovered in ((out, 0), (copy, 10)):   # the name kept; the name dropped
        with FileSink(str(where), fmt) as again:
            assert again.recovery.records == recovered
        assert not hidden(where)
        assert pids_once(str(where)) == list(range(10))


@pytest.mark.kernel
@pytest.mark.parametrize("fmt", ["parquet", "npy"])
def test_record_recovers_what_an_unproven_publish_kept_once(tmp_path, monkeypatch, fmt):
    out = tmp_path / "exits"
    sink = FileSink(str(out), fmt, rotate_seconds=0.2)
    DirectoryFsyncFails(monkeypatch, data_file(fmt))
    sink.write(batch(7))
    sink.flush()
    time.sleep(0.25)
    sink.write(batch(3, start=7))
    with pytest.raises(tsf.WriteFailedError):
        sink.close()
    monkeypatch.undo()
    assert sink.stats().unpublished == 10 and sink.stats().lost == 0
    for expected in (10, 0):
        run = subprocess.run([sys.executable, "-m", "taskstats_fast", "record", "-o", str(out),
                              "--format", fmt, "--seconds", "0.3", "--no-status"],
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        assert (f"recovered {expected:,} records" in run.stderr) == bool(expected), run.stderr
    recovered = [f for f in recording.find_files(str(out))
                 if recording.read_metadata(f).get("recovered")]
    assert pids_once(recovered) == list(range(10))
    assert not hidden(out)
