"""Kernel tests of Connection.cgroup (CGROUPSTATS_CMD_GET): task counts of a cgroup v1 directory
we create and fill, and the errors for cgroup v2 and non-cgroup directories.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

import taskstats_fast as tsf

pytestmark = pytest.mark.kernel


def _v1_hierarchy():
    """A mounted cgroup v1 hierarchy we can make a child group in (from /proc/self/mounts)."""
    with open("/proc/self/mounts") as f:
        for line in f:
            dev, mnt, fstype, opts = line.split()[:4]
            if fstype == "cgroup" and os.access(mnt, os.W_OK):
                return mnt
    return None


def _v2_mount():
    with open("/proc/self/mounts") as f:
        for line in f:
            dev, mnt, fstype = line.split()[:3]
            if fstype == "cgroup2":
                return mnt
    return None


@pytest.fixture(scope="module")
def conn():
    with tsf.Connection(warn_delayacct=False) as c:
        yield c


@pytest.fixture
def v1_group():
    root = _v1_hierarchy()
    if root is None:
        pytest.skip("no writable cgroup v1 hierarchy is mounted")
    path = os.path.join(root, f"tsf_test_{os.getpid()}")
    os.mkdir(path)
    procs = []
    try:
        yield path, procs
    finally:
        for p in procs:
            p.kill()
            p.wait()
            p.stdin.close()
        for _ in range(100):  # the kernel drops exited tasks from the group asynchronously
            try:
                os.rmdir(path)
                break
            except OSError:
                time.sleep(0.01)


def _move(path, pid):
    with open(os.path.join(path, "cgroup.procs"), "w") as f:
        f.write(str(pid))


def _wait_state(pid, states):
    for _ in range(500):
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        if state in states:
            return state
        time.sleep(0.01)
    raise AssertionError(f"process {pid} never reached state {states}")


def _wait_blocked_in_pipe_read(pid):
    """Until ``pid`` sleeps in a pipe read.  State S alone is not enough: a process starting up
    from a FUSE filesystem (qemu's virtiofs root in the kernel matrix) also sleeps in S while
    its pages are read, and leaves that state again."""
    deadline = time.monotonic() + 30
    while True:
        state = _wait_state(pid, "S")
        with open(f"/proc/{pid}/wchan") as f:
            wchan = f.read().strip()
        if wchan.endswith("pipe_read"):      # pipe_read; anon_pipe_read since 6.16
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"process {pid} never blocked in a pipe read ({state}, {wchan})")
        time.sleep(0.01)


def test_counts_of_a_v1_cgroup(conn, v1_group):
    path, procs = v1_group
    assert conn.cgroup(path) == tsf.CgroupStats(0, 0, 0, 0, 0)  # empty group
    # blocked in a pipe read: TASK_INTERRUPTIBLE.  (sleep(1) would not do: nanosleep sleeps in
    # TASK_INTERRUPTIBLE | TASK_FREEZABLE, which cgroupstats counts in no column at all.)
    sleeper = subprocess.Popen(["cat"], stdin=subprocess.PIPE)
    stopped = subprocess.Popen(["cat"], stdin=subprocess.PIPE)
    procs += [sleeper, stopped]
    for p in procs:
        _move(path, p.pid)
    os.kill(stopped.pid, signal.SIGSTOP)
    _wait_blocked_in_pipe_read(sleeper.pid)
    _wait_state(stopped.pid, "T")
    stats = conn.cgroup(path)
    assert isinstance(stats, tuple) and stats._fields[0] == "nr_sleeping"
    assert stats.nr_sleeping == 1
    assert stats.nr_stopped == 1
    assert stats.nr_running == 0 and stats.nr_uninterruptible == 0 and stats.nr_io_wait == 0


def test_cgroup_v2_directory_gets_a_clear_error(conn):
    v2 = _v2_mount()
    if v2 is None:
        pytest.skip("no cgroup v2 hierarchy is mounted")
    with pytest.raises(tsf.CgroupV1RequiredError) as e:
        conn.cgroup(v2)
    assert isinstance(e.value, ValueError) and isinstance(e.value, OSError)
    assert e.value.errno == 22
    assert "cgroup v2 directory" in str(e.value) and "only cgroup v1" in str(e.value)
    assert "mount -t cgroup" in str(e.value)


def test_non_cgroup_directory_gets_a_clear_error(conn, tmp_path):
    with pytest.raises(tsf.CgroupV1RequiredError) as e:
        conn.cgroup(tmp_path)
    assert "is not a cgroup directory" in str(e.value) and "v1" in str(e.value)
    # the connection stays usable after the error
    root = _v1_hierarchy()
    if root:
        assert conn.cgroup(root).nr_sleeping >= 0


def test_missing_path_and_file(conn, tmp_path):
    with pytest.raises(FileNotFoundError):
        conn.cgroup(tmp_path / "nope")
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(NotADirectoryError):
        conn.cgroup(f)
