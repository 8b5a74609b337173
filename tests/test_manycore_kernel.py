"""The many-core design, on every CPU the machine has.

This machine has 2 CPUs; `make matrix` runs these same tests in a 64-CPU qemu guest.  They use
every online CPU: one listener socket per possible CPU, children pinned to each CPU, every exit
received exactly once on its own CPU's socket, the shards=k grouping, and loss accounting that
is exact per CPU under a forced overflow on several CPUs at once.
"""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest

import taskstats_fast as tsf
from taskstats_fast.kernel import cpumask, netlink

from child_exits import clean_markers, collect, has_pids, reap, spawn

pytestmark = pytest.mark.kernel

ONLINE = cpumask.online()
POSSIBLE = cpumask.possible()
# generous: under qemu's software emulation a fork takes tens of milliseconds
TIMEOUT = 60.0


def spread(cpus, k):
    """Up to k CPUs spread over the list (first, last and evenly between)."""
    if len(cpus) <= k:
        return list(cpus)
    idx = np.linspace(0, len(cpus) - 1, k).round().astype(int)
    return [cpus[i] for i in sorted(set(idx.tolist()))]


def test_one_socket_per_possible_cpu_and_every_exit_once_on_its_cpu():
    children = {}
    with tsf.ExitListener() as listener:
        assert listener.shards == {c: (c,) for c in POSSIBLE}
        for cpu in ONLINE:
            for j in range(2):
                code = (2 * cpu + j) % 256
                children[spawn(code, f"tsfmc{cpu}.{j}", cpu=cpu)] = (cpu, code)
        reap(children)
        recs = collect(listener, has_pids(children), timeout=TIMEOUT)
        stats = listener.stats
    pid_recs = recs[(recs["kind"] == tsf.KIND_PID) & np.isin(recs["ac_pid"], list(children))]
    assert sorted(pid_recs["ac_pid"].tolist()) == sorted(children), "each exit exactly once"
    for rec in pid_recs:
        cpu, code = children[int(rec["ac_pid"])]
        assert rec["shard"] == cpu, "delivered by the socket of the CPU it exited on"
        assert rec["ac_exitcode"] == code << 8
    assert stats.lost == 0 and set(stats.lost_by_cpu) == set(POSSIBLE)
    assert stats.seq_unexplained == 0
    assert len(stats.shards) == len(POSSIBLE)


@pytest.mark.parametrize("k", sorted({1, 2, min(4, len(POSSIBLE)), min(7, len(POSSIBLE))}))
def test_shards_group_cpus_and_cover_them_all(k):
    children = {}
    with tsf.ExitListener(shards=k) as listener:
        groups = listener.shards
        assert sorted(groups) == list(range(k))
        assert sorted(c for cpus in groups.values() for c in cpus) == list(POSSIBLE)
        sizes = [len(cpus) for cpus in groups.values()]
        assert max(sizes) - min(sizes) <= 1, "balanced"
        for cpu in ONLINE:
            children[spawn(cpu % 256, f"tsfsh{cpu}", cpu=cpu)] = cpu
        reap(children)
        recs = collect(listener, has_pids(children), timeout=TIMEOUT)
        stats = listener.stats
    pid_recs = recs[(recs["kind"] == tsf.KIND_PID) & np.isin(recs["ac_pid"], list(children))]
    assert sorted(pid_recs["ac_pid"].tolist()) == sorted(children)
    for rec in pid_recs:
        assert children[int(rec["ac_pid"])] in groups[int(rec["shard"])]
    assert stats.lost == 0 and stats.lost_by_shard == {s: 0 for s in range(k)}
    if k < len(POSSIBLE):
        assert stats.lost_by_cpu is None, "a shared socket cannot attribute loss to one CPU"


def test_overflow_is_exact_per_cpu_on_several_cpus_at_once():
    """Bursts into tiny buffers on several CPUs at once: on each CPU, every exit message sent
    between two markers (the CPU's seq advance, other processes' exits included) is delivered or
    in that socket's drop count.  The buffers are tiny only during the bursts, and the markers come
    from brackets without drops (``clean_markers``), so the drop counts belong to the window."""
    cpus = spread(ONLINE, 4)
    burst_size = 60
    me = os.getpid()
    with tsf.ExitListener(cpus=cpus) as listener:
        socks = {shard.cpus[0]: shard.sock for shard in listener._shards}
        roomy = {cpu: sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) for cpu, sock in socks.items()}
        start, first = clean_markers(listener, cpus, "tsfs", timeout=TIMEOUT / 10)
        for sock in socks.values():
            sock.setsockopt(socket.SOL_SOCKET, netlink.SO_RCVBUFFORCE, 8192)
        bursts = {cpu: [] for cpu in cpus}
        for i in range(burst_size):            # no reading while the bursts run
            for cpu in cpus:
                pid = spawn(i % 200, f"tsfb{cpu}", cpu=cpu)
                bursts[cpu].append(pid)
                os.waitpid(pid, 0)
        for cpu, sock in socks.items():
            sock.setsockopt(socket.SOL_SOCKET, netlink.SO_RCVBUFFORCE, roomy[cpu] // 2)
        middle = collect(listener, lambda r: False, timeout=0.5)   # drain; clears congestion
        end, tail = clean_markers(listener, cpus, "tsfe", timeout=TIMEOUT / 10)
    recs = np.concatenate([first, middle, tail])
    for cpu in cpus:
        mine = recs[(recs["shard"] == cpu) & (recs["kind"] == tsf.KIND_PID)]
        s0, drops0, _ = start[cpu]
        s1, drops1, end_markers = end[cpu]
        window = mine[(mine["seq"] > s0) & (mine["seq"] < s1)]
        dropped = drops1 - drops0
        sent = s1 - s0 - 1                 # exit messages this CPU sent between the markers
        facts = dict(cpu=cpu, received=len(window), dropped=dropped, sent=sent)
        assert dropped > 0, ("the tiny buffer overflowed on every CPU", facts)
        # exact: every one was delivered or counted as lost
        assert len(window) + dropped == sent, facts
        ours = bursts[cpu] + end_markers[:-1]
        own = (np.isin(window["ac_pid"], ours) & (window["ac_ppid"] == me)
               & (window["ac_pid"] == window["ac_tgid"]))
        assert len(set(window["ac_pid"][own].tolist())) == own.sum(), "no duplicates"
        strangers_lost = (sent - len(ours)) - (len(window) - int(own.sum()))
        assert strangers_lost >= 0, facts
        assert own.sum() + dropped == len(ours) + strangers_lost, "each of ours delivered or counted lost"
