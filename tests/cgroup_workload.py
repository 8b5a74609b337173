"""A cgroup v2 group of a test's own (``Group``; the ``cgroup`` fixture in conftest.py makes and
removes them) and the churn workload the accounting tests run in one."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from taskstats_fast.accounting import cgroupfs

ROOT = cgroupfs.find_cgroup2()

# A churn of short-lived children (each a few ms of CPU) beside a long-running burner; every
# child's pid goes to the log.  Runs in the cgroup it was started in, for $2 seconds and until it
# has started at least $3 children (a loaded host starts far fewer in the same time).
WORKLOAD = r"""
log=$1; seconds=$2; least=${3:-0}; n=0
( while :; do :; done ) & burner=$!; echo $burner >> "$log"
end=$(( $(date +%s) + seconds ))
while [ "$(date +%s)" -lt "$end" ] || [ $n -lt "$least" ]; do
    ( i=0; while [ $i -lt 1500 ]; do i=$((i+1)); done ) & echo $! >> "$log"
    n=$((n+1))
    wait $!
done
kill $burner
wait
"""


class Group:
    """A cgroup v2 group of our own: start processes in it, read its cpu.stat, remove it."""

    def __init__(self, name: str):
        if ROOT is None:
            pytest.skip("no cgroup v2 hierarchy is mounted")
        self.path = os.path.join(ROOT, f"tsf-acct-{name}-{os.getpid()}-{time.monotonic_ns()}")
        os.mkdir(self.path)
        self.id = os.stat(self.path).st_ino
        self.procs: list = []

    def popen(self, argv, **kw) -> subprocess.Popen:
        procs = os.path.join(self.path, "cgroup.procs")

        def enter():
            with open(procs, "w") as f:
                f.write("0")
        p = subprocess.Popen(argv, preexec_fn=enter, **kw)
        self.procs.append(p)
        return p

    def usage_usec(self) -> int:
        with open(os.path.join(self.path, "cpu.stat")) as f:
            return int(f.readline().split()[1])

    def empty(self) -> bool:
        with open(os.path.join(self.path, "cgroup.procs")) as f:
            return not f.read().strip()

    def wait_empty(self, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not self.empty():
            assert time.monotonic() < deadline, "the test cgroup did not empty"
            time.sleep(0.02)

    def remove(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        with open(os.path.join(self.path, "cgroup.procs")) as f:
            for pid in f.read().split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 10
        while True:
            try:
                os.rmdir(self.path)
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


def run_until_empty(acct, group, intervals):
    """Intervals until the group has emptied, and one more so every exit is in."""
    out = list(intervals)
    while not group.empty():
        out.append(acct.next())
    out.append(acct.next())
    return out
