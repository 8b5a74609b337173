"""Who and where in recorded interval rows, on the real kernel: a process is (tgid, start), and a
row names its cgroup's path even after the cgroup is gone.

Both run the real ``record --interval`` command, per task and per process, while the test makes
the events happen, then read the recordings back with ``read_frame`` as a pandas user would.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import pytest

from taskstats_fast import recording
from taskstats_fast.accounting import Accounting

from cgroup_workload import ROOT

pytestmark = pytest.mark.kernel

CLI = [sys.executable, "-m", "taskstats_fast"]
INTERVAL = "0.5"
# Takes the name argv[1], says so, and sleeps until killed (or argv[2] seconds).
NAMED = ("import sys, time\n"
         "open('/proc/self/comm', 'w').write(sys.argv[1])\n"
         "print('named', flush=True)\n"
         "time.sleep(float(sys.argv[2]))\n")
# The same with a second thread, started after the rename so that it bears the name too.
THREADED = ("import sys, threading, time\n"
            "open('/proc/self/comm', 'w').write(sys.argv[1])\n"
            "threading.Thread(target=time.sleep, args=(float(sys.argv[2]),), daemon=True).start()\n"
            "print('named', flush=True)\n"
            "time.sleep(float(sys.argv[2]))\n")


@contextlib.contextmanager
def _recorders(tmp_path):
    """A ``record`` per task and one per process, each past its first look; any still running
    when the block ends (a failed test) is killed."""
    procs = {}
    try:
        for by in ("task", "process"):
            out = tmp_path / f"{by}.npy"
            p = subprocess.Popen([*CLI, "record", "--interval", INTERVAL, "--by", by, "-o", str(out)],
                                 stderr=subprocess.PIPE, text=True)
            procs[by] = (p, out)
        for p, _ in procs.values():
            assert p.stderr is not None
            line = p.stderr.readline()
            assert "recording every" in line, line
        time.sleep(2 * float(INTERVAL))       # the first look is behind it
        yield procs
    finally:
        for p, _ in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()


def _stop(procs):
    """Two more intervals (the last exits are cut into one), then SIGTERM: each flushes."""
    time.sleep(3 * float(INTERVAL))
    frames = {}
    for by, (p, out) in procs.items():
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        frames[by] = recording.read_frame(str(out))
    return frames


def _named(argv_prefix, comm, seconds=60.0, **kw):
    p = subprocess.Popen([*argv_prefix, sys.executable, "-c", NAMED, comm, str(seconds)],
                         stdout=subprocess.PIPE, text=True, **kw)
    assert p.stdout is not None and p.stdout.readline() == "named\n"
    return p


def _named_threaded(comm, seconds=60.0):
    p = subprocess.Popen([sys.executable, "-c", THREADED, comm, str(seconds)],
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline() == "named\n"
    return p


def _with_pid(pid, comm, attempts=500):
    """``_named`` with exactly ``pid`` (via ns_last_pid), or None (every fork on the machine
    races the write)."""
    for _ in range(attempts):
        with open("/proc/sys/kernel/ns_last_pid", "w") as f:
            f.write(str(pid - 1))
        p = subprocess.Popen([sys.executable, "-c", NAMED, comm, "1.5"], stdout=subprocess.PIPE,
                             text=True)
        if p.pid == pid:
            assert p.stdout is not None and p.stdout.readline() == "named\n"
            return p
        p.kill()
        p.wait()
        p.stdout.close()  # type: ignore[union-attr]
    return None


def _reuse_pid(first: subprocess.Popen, comm: str) -> None:
    """Kill ``first``, then run a command named ``comm`` under the same pid, to its end."""
    first.kill()
    first.wait()
    first.stdout.close()  # type: ignore[union-attr]
    second = _with_pid(first.pid, comm)
    if second is None:
        pytest.fail("could not get the same pid again in 500 tries (machine too busy forking)")
    second.wait()
    second.stdout.close()  # type: ignore[union-attr]


def test_a_pid_wrap_puts_two_commands_under_one_tgid_and_start_keeps_them_apart(tmp_path):
    first_comm, second_comm = f"tsfwA{os.getpid() % 10**6}", f"tsfwB{os.getpid() % 10**6}"
    with _recorders(tmp_path) as procs:
        first = _named([], first_comm)
        time.sleep(1.5)                   # seen by looks; and the next start is seconds later
        _reuse_pid(first, second_comm)
        frames = _stop(procs)
    for by, frame in frames.items():
        ours = frame[frame["ac_comm"].isin([first_comm, second_comm])]
        assert set(ours["ac_tgid"]) == {first.pid}, (by, ours[["ac_tgid", "ac_comm"]])
        assert set(ours["ac_comm"]) == {first_comm, second_comm}, by
        # the README's per-process grouping: (tgid, start).  Each group holds one of the two
        # commands (a row seen before its process renamed itself says "python": the same
        # process), and each command is one group: its rows agree on its start.
        groups = ours.groupby(["ac_tgid", "ac_btime"])["ac_comm"]
        assert (groups.nunique() == 1).all(), (by, groups.unique())
        starts = ours.groupby("ac_comm")["ac_btime"].unique()
        assert all(len(s) == 1 for s in starts), (by, starts)   # one start per command
        assert starts[first_comm][0] < starts[second_comm][0], (by, starts)


@pytest.mark.skipif(ROOT is None, reason="no cgroup v2 hierarchy is mounted")
def test_a_cgroups_path_is_in_its_rows_after_the_cgroup_is_removed(tmp_path):
    assert ROOT is not None
    name = f"tsf-gone-{os.getpid()}-{time.monotonic_ns()}"
    path = os.path.join(ROOT, name)
    os.mkdir(path)
    comm = f"tsfgone{os.getpid() % 10**5}"
    try:
        with _recorders(tmp_path) as procs:
            def enter():
                with open(os.path.join(path, "cgroup.procs"), "w") as f:
                    f.write("0")
            proc = _named([], comm, preexec_fn=enter)
            time.sleep(3 * float(INTERVAL))   # listed in the cgroup by looks
            proc.kill()
            proc.wait()
            proc.stdout.close()  # type: ignore[union-attr]
            deadline = time.monotonic() + 30
            while True:
                try:
                    os.rmdir(path)            # gone before the recordings are read
                    break
                except OSError:
                    assert time.monotonic() < deadline, "the cgroup did not empty in 30 s"
                    time.sleep(0.05)
            frames = _stop(procs)
    finally:
        if os.path.isdir(path):
            os.rmdir(path)
    assert not os.path.exists(path)
    for by, frame in frames.items():
        ours = frame[frame["ac_comm"] == comm]
        assert len(ours) >= 2, (by, len(ours))
        assert set(ours["cgroup"].astype(str)) == {f"/{name}"}, (by, set(ours["cgroup"]))
        assert (ours["cgroup_id"] != 0).all()


def test_a_pid_wrap_inside_one_interval_is_two_processes(tmp_path):
    """Two processes under one tgid in ONE interval (the first, with two threads, killed; the
    second given its pid through ns_last_pid): ``Interval.by("process")`` and the recorded
    per-process rows are one group per process, each holding one command, with its own task
    count; the per-task rows keep them apart by (tgid, start) too."""
    first_comm, second_comm = f"tsf1A{os.getpid() % 10**6}", f"tsf1B{os.getpid() % 10**6}"
    recorders = {}
    with Accounting(interval=3600) as accounting:
        try:
            for by in ("task", "process"):   # one interval: closed early by SIGTERM
                out = tmp_path / f"{by}.npy"
                p = subprocess.Popen([*CLI, "record", "--interval", "3600", "--by", by,
                                      "-o", str(out)], stderr=subprocess.PIPE, text=True)
                recorders[by] = (p, out)
            for p, _ in recorders.values():
                line = p.stderr.readline()  # type: ignore[union-attr]
                assert "recording every" in line, line   # past its first look
            first = _named_threaded(first_comm)
            time.sleep(4)   # the next start is seconds later: more than ac_btime's jitter
            _reuse_pid(first, second_comm)
            time.sleep(0.3)                  # the exit messages are in the sockets
            iv = accounting.next(deadline=time.monotonic())
            frames = {}
            for by, (p, out) in recorders.items():
                p.send_signal(signal.SIGTERM)
                _, err = p.communicate(timeout=120)
                assert p.returncode == 0, err
                frames[by] = recording.read_frame(str(out))
        finally:
            for p, _ in recorders.values():
                if p.poll() is None:
                    p.kill()
                    p.wait()
    expected = {first_comm: 2, second_comm: 1}   # tasks per command: our own threads
    groups = iv.by("process", frame=False)
    ours = groups[groups["ac_tgid"] == first.pid]
    assert {c.decode(): int(n) for c, n in zip(ours["ac_comm"], ours["tasks"])} == expected, ours
    assert len(ours) == 2 and ours["ac_btime64"][0] < ours["ac_btime64"][1]
    rows = frames["process"]
    assert rows["interval_start"].nunique() == 1          # one interval, as in memory
    ours_rows = rows[rows["ac_tgid"] == first.pid]
    assert dict(zip(ours_rows["ac_comm"], ours_rows["tasks"])) == expected, ours_rows
    for by, frame in frames.items():   # the README's per-process grouping: (tgid, start)
        mine = frame[frame["ac_tgid"] == first.pid]
        assert set(mine["ac_comm"]) == set(expected), (by, mine[["ac_pid", "ac_comm"]])
        per_start = mine.groupby(["ac_tgid", "ac_btime"])["ac_comm"]
        assert (per_start.nunique() == 1).all(), (by, per_start.unique())
