"""Children that exit on cue (``spawn``: a name, an exit code, threads, a CPU; ``spawn_exits``:
short shell commands run one after another) and the reads that find their exit records among
everyone else's on the machine (``collect``, ``has_pids``), with drop-free markers in each CPU's
sequence (``clean_markers``)."""

from __future__ import annotations

import ctypes
import os
import subprocess
import threading
import time

import numpy as np

import taskstats_fast as tsf

_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_NAME = 15
EMPTY = np.zeros(0, tsf.DTYPE)


def set_comm(name: str) -> None:
    _libc.prctl(PR_SET_NAME, name.encode(), 0, 0, 0)


def spawn(code: int, name: str, *, threads: int = 0, cpu=None) -> int:
    """A child that names itself ``name`` (its threads ``name.1``, ...) and exits with ``code``
    once every thread is running (so exit_group ends them all)."""
    pid = os.fork()
    if pid:
        return pid
    try:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
        set_comm(name)
        if threads:
            started = threading.Barrier(threads + 1)

            def worker(i):
                set_comm(f"{name}.{i}")
                started.wait()
                threading.Event().wait()

            for i in range(1, threads + 1):
                threading.Thread(target=worker, args=(i,), daemon=True).start()
            started.wait()
        os._exit(code)
    except BaseException:
        os._exit(255)


def reap(pids):
    for pid in pids:
        os.waitpid(pid, 0)


def collect(listener, done, timeout=5.0):
    """Batches until ``done(records)`` or the timeout."""
    parts = [EMPTY]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = listener.read(timeout=0.1)
        if len(batch):
            parts.append(batch)
            if done(np.concatenate(parts)):
                break
    return np.concatenate(parts)


def ours(recs):
    """The PID records in ``recs`` of our children themselves.  The parent check matters (other
    processes may reuse a pid while we listen), and so does the group-leader one: a child's
    threads also carry our pid as their parent, and a later child may reuse an exited thread's id."""
    return recs[(recs["kind"] == tsf.KIND_PID) & (recs["ac_ppid"] == os.getpid())
                & (recs["ac_pid"] == recs["ac_tgid"])]


def pid_records(recs, pids):
    """The pids, sorted, of the PID records in ``recs`` that are our children among ``pids``."""
    mine = ours(recs)["ac_pid"]
    want = set(pids)
    return sorted(p for p in mine.tolist() if p in want)


def has_pids(pids):
    """Whether records hold a PID record of each of our children ``pids``."""
    want = set(pids)
    return lambda recs: want <= set(pid_records(recs, want))


def drops_by_cpu(listener):
    """Each CPU's socket drop counter, read from the kernel now (one socket per CPU)."""
    return {s.cpus[0]: s.dropped for s in listener.stats.shards}


def clean_markers(listener, cpus, name, *, tries=20, timeout=5.0):
    """One marker child exits on each CPU of ``cpus``, to mark a point in that CPU's sequence.

    Returns ``({cpu: (seq, drops, pids)}, records read)``: the marker's seq, the CPU socket's drop
    counter at the moment of the marker's message, and every marker pid spawned on that CPU (the
    one that counted last).  The drop counter is read before and after each marker: if other
    processes' exits overflowed the socket in between, nobody can tell whether those drops came
    before or after the marker's message (nor whether the marker itself was dropped), so the
    marker exits again until one has a bracket without drops, where the counter is exact."""
    found, spawned, parts = {}, {cpu: [] for cpu in cpus}, [EMPTY]
    for _ in range(tries):
        todo = [cpu for cpu in cpus if cpu not in found]
        if not todo:
            break
        pre = drops_by_cpu(listener)
        pids = {spawn(0, name, cpu=cpu): cpu for cpu in todo}
        for pid, cpu in pids.items():
            spawned[cpu].append(pid)
        reap(pids)
        done = has_pids(pids)
        got = collect(listener, lambda r, pre=pre, done=done: done(r) or drops_by_cpu(listener) != pre,
                      timeout=timeout)
        post = drops_by_cpu(listener)
        parts.append(got)
        for rec in ours(got):
            cpu = pids.get(int(rec["ac_pid"]))
            if cpu is not None and pre[cpu] == post[cpu] and int(rec["shard"]) == cpu:
                found[cpu] = (int(rec["seq"]), post[cpu], spawned[cpu])
    assert len(found) == len(cpus), f"no marker without drops around it on CPUs {set(cpus) - set(found)}"
    return found, np.concatenate(parts)


def spawn_exits(n: int, code: int) -> list:
    """Run ``n`` short processes that exit with ``code``, one after another; return their pids."""
    pids = []
    for _ in range(n):
        child = subprocess.Popen(["sh", "-c", f"exit {code}"])
        child.wait()
        assert child.returncode == code
        pids.append(child.pid)
    return pids
