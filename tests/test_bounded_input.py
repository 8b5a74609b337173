"""Input that could hang or exhaust the command: FIFOs, devices and sockets where a recording is
expected, and CPU lists naming absurd ranges.  Each is refused at once, in one line, before
anything is opened or expanded.  No kernel needed (the --cpus check comes before the listener)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import taskstats_fast as tsf
from taskstats_fast import recording
from taskstats_fast.errors import NotARecordingError

CLI = [sys.executable, "-m", "taskstats_fast"]


def run(*args, timeout=60):
    started = time.monotonic()
    res = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)
    res.seconds = time.monotonic() - started
    return res


def one_line(res):
    assert "Traceback" not in res.stderr, res.stderr
    assert res.stderr.count("\n") == 1, res.stderr
    return res.stderr


def unblock_later(fifo, after=10.0):
    """A reader stuck opening ``fifo`` (no writer) is let go after ``after`` seconds by a writer
    that opens and closes it at once, so a regression fails instead of hanging the suite.
    Returns the stop function."""
    done = threading.Event()

    def writer():
        if done.wait(after):
            return
        while not done.wait(0.2):
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:   # no reader (yet)
                continue

    threading.Thread(target=writer, daemon=True).start()
    return done.set


@pytest.fixture
def not_files(tmp_path):
    """name -> path of a FIFO, a socket and a character device, each under a recording's name."""
    fifo = tmp_path / "exits.parquet"
    os.mkfifo(fifo)
    stop = unblock_later(fifo)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "exits.arrow"))
    (tmp_path / "exits.npy").symlink_to("/dev/zero")
    yield {"FIFO": fifo, "socket": tmp_path / "exits.arrow", "character device": tmp_path / "exits.npy"}
    stop()
    sock.close()


@pytest.mark.parametrize("kind", ["FIFO", "socket", "character device"])
def test_summary_refuses_a_fifo_a_socket_or_a_device_at_once(not_files, kind):
    # the FIFO has no writer: opening it would wait forever (the timeout is the failure)
    res = run("summary", str(not_files[kind]), timeout=30)
    assert res.returncode == 1
    assert f"it is a {kind}" in one_line(res) and str(not_files[kind]) in res.stderr


def test_a_fifo_without_a_recording_extension_is_named_as_a_fifo(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    res = run("summary", str(tmp_path / "pipe"), timeout=30)
    assert res.returncode == 1 and "FIFO" in one_line(res)


@pytest.mark.parametrize("read", [recording.read_records, recording.read_metadata,
                                  recording.read_frame])
def test_every_reader_refuses_a_fifo(not_files, read):
    with pytest.raises(NotARecordingError, match="it is a FIFO") as info:
        read(str(not_files["FIFO"]))
    assert info.value.path == str(not_files["FIFO"])


def test_a_fifo_in_a_dataset_is_named_as_damaged_and_the_rest_reads(tmp_path):
    records = np.zeros(3, tsf.DTYPE)
    records["ac_pid"] = [1, 2, 3]
    recording.write_file(str(tmp_path / "part-0.npy"), records)
    os.mkfifo(tmp_path / "part-1.npy")
    stop = unblock_later(tmp_path / "part-1.npy")
    found = recording.Recordings(str(tmp_path))
    assert found.records()["ac_pid"].tolist() == [1, 2, 3]
    stop()
    ((path, error),) = found.damaged
    assert path == str(tmp_path / "part-1.npy") and "FIFO" in str(error)


def test_a_fifo_as_a_sidecar_is_refused_not_waited_for(tmp_path):
    records = np.zeros(2, tsf.DTYPE)
    recording.write_file(str(tmp_path / "one.npy"), records)
    sidecar = tmp_path / "one.npy.json"
    sidecar.unlink()
    os.mkfifo(sidecar)
    stop = unblock_later(sidecar)
    with pytest.raises(NotARecordingError, match="one.npy.json: not a recording: it is a FIFO"):
        recording.read_records(str(tmp_path / "one.npy"))
    stop()


@pytest.mark.parametrize("extra", [(), ("--interval", "1")])
def test_a_huge_cpu_range_fails_at_once_in_one_line(tmp_path, extra):
    res = run("record", "--cpus", "0-99999999999", "-o", str(tmp_path / "out"), *extra,
              "--seconds", "1", timeout=30)
    assert res.returncode == 2
    assert "--cpus: CPU" in one_line(res) and "not possible on this machine" in res.stderr
    assert os.listdir(tmp_path) == []     # checked before anything was opened or created
