"""Signals and pipes against the real kernel: SIGHUP (an ssh session or terminal going away)
stops ``record``, ``serve`` and ``top`` as SIGTERM does, every record received on disk; and a
closed stderr never stops ``record``: it goes on recording, says so once to the system log
(a test socket stands in for /dev/log), and sends its closing counts there."""

from __future__ import annotations

import os
import selectors
import signal
import socket
import subprocess
import sys
import time

import pytest
from child_exits import spawn_exits

from taskstats_fast import recording

pytestmark = pytest.mark.kernel

CLI = [sys.executable, "-m", "taskstats_fast"]
STARTED = "recording every"
# record with the system log socket pointed at a test's own (cli/output.py SYSLOG_SOCKET)
WITH_SYSLOG = ("import sys; import taskstats_fast.cli.output as o; o.SYSLOG_SOCKET = sys.argv[1]; "
               "from taskstats_fast.cli import main; sys.exit(main(sys.argv[2:]))")


def wait_line(stream, needle, timeout=60):
    sel = selectors.DefaultSelector()
    sel.register(stream, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    seen = []
    try:
        while time.monotonic() < deadline:
            if sel.select(timeout=0.5):
                line = stream.readline()
                seen.append(line)
                if needle in line:
                    return line
                if not line:
                    break
    finally:
        sel.close()
    pytest.fail(f"no line with {needle!r}: {''.join(seen)}")


def recorded_children(path, pids):
    """pid -> exit status of the recorded tasks among ``pids`` that this process spawned."""
    cols = recording.read_columns(recording.find_files([str(path)]),
                                  ["ac_pid", "ac_ppid", "ac_exitcode"])
    me = os.getpid()
    return {p: e for p, pp, e in zip(*(cols[n][0].tolist() for n in ("ac_pid", "ac_ppid",
                                                                       "ac_exitcode")))
            if pp == me and p in set(pids)}


def no_leftovers(root):
    return [n for _, _, names in os.walk(root) for n in names if n.endswith(".inprogress")]


@pytest.mark.parametrize("target,extra", [("exits.npy", ()), ("exits", ("--format", "parquet")),
                                          ("intervals", ("--interval", "0.5", "--format", "npy"))])
def test_sighup_stops_record_like_sigterm_with_every_record_on_disk(tmp_path, target, extra):
    out = tmp_path / target
    proc = subprocess.Popen([*CLI, "record", "-o", str(out), *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_line(proc.stderr, STARTED)
        pids = spawn_exits(10, 7)
        if "--interval" in extra:
            time.sleep(1.2)   # an interval has ended: its rows are what is recorded
        proc.send_signal(signal.SIGHUP)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "stopped by SIGHUP" in err and "Traceback" not in err, err
    files = recording.find_files([str(out)])
    assert len(files) == 1 and no_leftovers(tmp_path) == []
    if "--interval" not in extra:
        meta = recording.read_metadata(files[0])
        got = recorded_children(out, pids)
        assert len(set(pids) - set(got)) <= meta["lost_since_start"], err
        assert set(got.values()) <= {7 << 8} and got
    else:
        assert len(recording.read_records(str(out))) > 0


@pytest.fixture
def syslog(tmp_path):
    """A datagram socket standing in for /dev/log; ``.lines()`` gives what arrived."""
    path = str(tmp_path / "log.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    got = []

    class Log:
        address = path

        @staticmethod
        def lines():
            while True:
                try:
                    got.append(sock.recv(65536).decode())
                except BlockingIOError:
                    return list(got)

    yield Log
    sock.close()


def test_record_goes_on_when_its_stderr_is_closed_and_says_so_to_the_system_log(tmp_path, syslog):
    out = tmp_path / "exits"
    proc = subprocess.Popen([sys.executable, "-c", WITH_SYSLOG, syslog.address, "record",
                             "--status", "-o", str(out), "--format", "npy"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_line(proc.stderr, STARTED)
        proc.stderr.close()          # as `record --status 2>&1 | head -1` does
        deadline = time.monotonic() + 30   # the first status line (after 1 s) meets the closed pipe
        while not syslog.lines() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None, "record stopped when its stderr was closed"
        pids = spawn_exits(10, 9)    # recorded although nobody reads stderr any more
        time.sleep(6)                # more status lines (every 5 s): dropped, not logged
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    lines = syslog.lines()
    assert lines[0].startswith("<12>taskstats-fast[") and "Broken pipe" in lines[0], lines
    assert "recording goes on" in lines[0]
    recorded = [ln for ln in lines if "recorded " in ln]
    assert len(recorded) == 1 and "stopped by SIGTERM" in recorded[0], lines
    assert not any("records/s" in ln for ln in lines), "status lines went to the system log"
    got = recorded_children(out, pids)
    meta = recording.read_metadata(recording.find_files([str(out)])[0])
    assert len(set(pids) - set(got)) <= meta["lost_since_start"] and got


def test_record_started_without_stderr_records_and_logs_its_counts(tmp_path, syslog):
    out = tmp_path / "exits.npy"
    proc = subprocess.Popen([sys.executable, "-c", WITH_SYSLOG, syslog.address, "record",
                             "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            pass_fds=(), preexec_fn=lambda: os.close(2))
    try:
        deadline = time.monotonic() + 60
        while not any(STARTED in ln for ln in syslog.lines()) and time.monotonic() < deadline:
            time.sleep(0.2)
        pids = spawn_exits(5, 3)
        proc.send_signal(signal.SIGHUP)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = syslog.lines()
    assert proc.returncode == 0, lines
    assert "stderr is closed" in lines[0] and any("stopped by SIGHUP" in ln for ln in lines), lines
    assert recorded_children(out, pids)


def test_sighup_stops_serve_cleanly():
    proc = subprocess.Popen([*CLI, "serve", "--listen", "127.0.0.1:0", "--interval", "60"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_line(proc.stderr, "serving http://127.0.0.1:")
        proc.send_signal(signal.SIGHUP)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "stopped by SIGHUP" in err and "Traceback" not in err, err


def test_sighup_ends_the_interactive_top_cleanly():
    from terminal import Terminal
    term = Terminal([*CLI, "top", "-d", "0.3"])
    try:
        term.wait_for(lambda t: "COMMAND" in t, "the table")
        term.proc.send_signal(signal.SIGHUP)
        assert term.wait_exit() == 0, term.text()
    finally:
        term.close()
