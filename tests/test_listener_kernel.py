"""ExitListener against the running kernel: every exit we cause arrives exactly once with the
right fields, CPU filtering, exact loss accounting under overflow, deregistration on every way
out (close, atexit, KeyboardInterrupt, fork), namespace/permission errors, threads and asyncio.

Other processes on the machine exit too: tests filter by the pids they caused, and the loss test
accounts for strangers through the per-CPU sequence numbers.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import taskstats_fast as tsf
from taskstats_fast.kernel import cpumask, lifetime, listener as listener_mod, netlink, receive_buffer
from taskstats_fast.errors import CpumaskError, NamespaceError, PermissionDeniedError

from child_exits import EMPTY, clean_markers, collect, has_pids, pid_records, reap, spawn
from raw_cpumask import cpumask_request

pytestmark = pytest.mark.kernel

CPUS = cpumask.online()
PYTHON = sys.executable
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pinned(cpu):
    """Context manager: run (and fork) on one CPU."""
    class _Pin:
        def __enter__(self):
            self.old = os.sched_getaffinity(0)
            os.sched_setaffinity(0, {cpu})

        def __exit__(self, *exc):
            os.sched_setaffinity(0, self.old)
    return _Pin()


# ---- delivery --------------------------------------------------------------------------------

def test_every_exit_arrives_once_with_its_fields():
    me = os.getpid()
    with tsf.ExitListener() as listener:
        assert listener.shards == {c: (c,) for c in cpumask.possible()}
        plan = [(10 + i, f"tsfx{i}", 3 if i % 3 == 0 else 0) for i in range(12)]
        children = {spawn(code, name, threads=nthreads): (code, name, nthreads)
                    for code, name, nthreads in plan}
        reap(children)
        group = lambda recs: {int(t) for t in recs["id"][recs["kind"] == tsf.KIND_TGID]}
        recs = collect(listener, lambda r: has_pids(children)(r) and
                       {p for p, (_, _, t) in children.items() if t} <= group(r))
        stats = listener.stats

    # other processes exit meanwhile, and with pid reuse may even carry our children's pids:
    # ours are those whose parent is this process
    pid_recs = recs[(recs["kind"] == tsf.KIND_PID) & (recs["ac_ppid"] == me)]
    for pid, (code, name, nthreads) in children.items():
        # a thread of an earlier child may have had this id (threads carry our ppid too)
        main = pid_recs[(pid_recs["ac_pid"] == pid) & (pid_recs["ac_tgid"] == pid)]
        assert len(main) == 1, f"pid {pid} arrived {len(main)} times"
        assert int(main["ac_exitcode"][0]) == code << 8            # raw wait status
        assert main["ac_comm"][0] == name.encode()
        assert int(main["ac_ppid"][0]) == me
        assert int(main["id"][0]) == pid
        assert int(main["shard"][0]) in listener.shards
        threads = pid_recs[(pid_recs["ac_tgid"] == pid) & (pid_recs["ac_pid"] != pid)]
        assert len(threads) == nthreads
        assert len(set(threads["ac_pid"].tolist())) == nthreads
        assert sorted(threads["ac_comm"].tolist()) == sorted(f"{name}.{i}".encode() for i in range(1, nthreads + 1))
        assert (threads["ac_exitcode"] == code << 8).all()          # exit_group's status
        # the group's last thread brings the TGID record in the same message (same shard, seq)
        ours = {(int(r["shard"]), int(r["seq"])) for r in pid_recs[pid_recs["ac_tgid"] == pid]}
        tgid = [r for r in recs[(recs["kind"] == tsf.KIND_TGID) & (recs["id"] == pid)]
                if (int(r["shard"]), int(r["seq"])) in ours]
        assert len(tgid) == (1 if nthreads else 0)
    assert stats.lost == 0 and stats.dropped == 0 and stats.truncated == 0
    assert stats.seq_unexplained == 0 and stats.malformed == 0
    assert stats.received >= len(pid_recs) and stats.messages >= len(children)


def test_records_carry_their_cpu_as_shard():
    if len(CPUS) < 2:
        pytest.skip("needs two CPUs")
    with tsf.ExitListener() as listener:
        pids = {}
        for cpu in CPUS[:2]:
            for i in range(3):
                pids[spawn(i, f"tsfcpu{cpu}", cpu=cpu)] = cpu
        reap(pids)
        recs = collect(listener, has_pids(pids))
    for pid, cpu in pids.items():
        assert recs["shard"][(recs["ac_pid"] == pid) & (recs["ac_ppid"] == os.getpid())].tolist() == [cpu]


def test_children_pinned_elsewhere_are_not_heard():
    if len(CPUS) < 2:
        pytest.skip("needs two CPUs")
    heard_cpu, other_cpu = CPUS[0], CPUS[1]
    with tsf.ExitListener(cpus=[heard_cpu]) as listener:
        assert listener.shards == {heard_cpu: (heard_cpu,)}
        silent = [spawn(5, "tsfsilent", cpu=other_cpu) for _ in range(5)]
        heard = [spawn(6, "tsfheard", cpu=heard_cpu) for _ in range(2)]
        reap(silent + heard)
        recs = collect(listener, has_pids(heard))
        time.sleep(0.1)
        recs = np.concatenate([recs, listener.read(timeout=0.1)])
    ours = set(recs["ac_pid"][recs["ac_ppid"] == os.getpid()].tolist())
    assert set(heard) <= ours                     # the stream works...
    assert not set(silent) & ours                 # ...and CPU filtering too
    assert (recs["shard"] == heard_cpu).all()


def test_one_shard_for_all_cpus():
    with tsf.ExitListener(shards=1) as listener:
        assert listener.shards == {0: tuple(cpumask.possible())}
        pids = [spawn(1, "tsfshard") for _ in range(4)]
        reap(pids)
        recs = collect(listener, has_pids(pids))
        stats = listener.stats
    assert (recs["shard"] == 0).all()
    assert stats.lost_by_cpu is None and stats.shards[0].seq_gaps is None
    assert stats.lost_by_shard == {0: 0}


# ---- loss accounting ---------------------------------------------------------------------------

def test_overflow_is_counted_exactly_and_the_stream_goes_on():
    """A burst into a tiny buffer: every message the CPU sent between two markers is either
    received or in the kernel's drop count.  The buffer is tiny only during the burst; other
    processes flooding the same CPU with exits can still overflow it around a marker, which is
    why the markers are taken only from brackets without drops (``clean_markers``)."""
    cpu = CPUS[-1]
    me = os.getpid()

    with tsf.ExitListener(cpus=[cpu]) as listener, pinned(cpu):
        sock = listener._shards[0].sock
        roomy = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        start, first = clean_markers(listener, [cpu], "tsfmark0")
        before = listener.stats
        sock.setsockopt(socket.SOL_SOCKET, netlink.SO_RCVBUFFORCE, 8192)   # ~12 messages
        burst = []
        for i in range(120):                      # no reading while the burst runs
            burst.append(spawn(i % 200, "tsfburst"))
            os.waitpid(burst[-1], 0)
        mid = listener.stats
        sock.setsockopt(socket.SOL_SOCKET, netlink.SO_RCVBUFFORCE, roomy // 2)
        middle = collect(listener, lambda r: False, timeout=0.3)   # drain; ends congestion
        end, tail = clean_markers(listener, [cpu], "tsfmark1")
        _, settle = clean_markers(listener, [cpu], "tsfmark2")   # settles the seq tracker after s1
        stats = listener.stats
    recs = np.concatenate([first, middle, tail, settle])
    s0, drops0, _ = start[cpu]
    s1, drops1, end_markers = end[cpu]
    window = recs[(recs["kind"] == tsf.KIND_PID) & (recs["seq"] > s0) & (recs["seq"] < s1)]
    window_messages = s1 - s0 - 1                 # every exit message CPU `cpu` sent in between
    dropped = drops1 - drops0
    sent = burst + end_markers[:-1]               # our exits in the window: the burst, retried markers
    own = (np.isin(window["ac_pid"], sent) & (window["ac_ppid"] == me)   # pids get reused
           & (window["ac_pid"] == window["ac_tgid"]))
    facts = dict(received=len(window), own=int(own.sum()), dropped=dropped, window=window_messages,
                 burst=len(burst), markers=len(end_markers), gaps=stats.seq_gaps - before.seq_gaps,
                 foreign=stats.seq_foreign - before.seq_foreign, overruns=stats.overruns)
    assert dropped > 0 and mid.dropped > drops0, facts              # the buffer did overflow
    assert stats.overruns >= 1, facts                                # ENOBUFS seen, not fatal
    # exact, per CPU: every message CPU `cpu` sent in the window was delivered or counted lost
    assert len(window) + dropped == window_messages, facts
    assert stats.seq_gaps - before.seq_gaps == stats.dropped - before.dropped, facts
    # our exits: each delivered once or among the lost; strangers' exits explain the rest
    assert len(set(window["ac_pid"][own].tolist())) == own.sum() <= len(sent), facts
    strangers = window_messages - len(sent)       # other processes' exits on `cpu` meanwhile
    strangers_received = len(window) - int(own.sum())
    assert 0 <= strangers_received <= strangers, facts
    assert own.sum() + dropped == len(sent) + (strangers - strangers_received), facts
    assert stats.lost == stats.dropped and stats.lost_by_cpu == {cpu: stats.dropped}


# ---- deregistration ------------------------------------------------------------------------------

def _ports(listener):
    return [s.sock.getsockname()[0] for s in listener._shards]


def _bind_to(port):
    """A netlink socket bound to ``port``: if the kernel still lists that port as a listener,
    exit messages reach this socket without it ever registering."""
    for _ in range(50):
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, netlink.NETLINK_GENERIC)
        try:
            sock.bind((port, 0))
            netlink.set_rcvbuf(sock, 4 << 20, warn=False)
            return sock
        except OSError:
            sock.close()
            time.sleep(0.01)
    raise RuntimeError(f"port {port} stays taken")


def _stray_traffic(ports):
    """Bind to each port, cause exits on every CPU, and count what the unregistered sockets get."""
    socks = [_bind_to(p) for p in ports]
    try:
        pids = [spawn(0, "tsfstray", cpu=c) for c in CPUS for _ in range(2)]
        reap(pids)
        time.sleep(0.2)
        got = 0
        for s in socks:
            s.setblocking(False)
            while True:
                try:
                    s.recv(65536)
                    got += 1
                except BlockingIOError:
                    break
                except OSError as e:      # ENOBUFS: it overflowed, so it got plenty
                    if e.errno != errno.ENOBUFS:
                        raise
                    got += 1
        return got
    finally:
        for s in socks:
            cpumask_request(s, cpumask.format(cpumask.possible()), register=False)
            s.close()


def test_stale_port_check_detects_a_listener_closed_without_deregistering():
    # the control for the tests below: a socket closed while registered leaves its port listed
    sock = netlink.open_socket(rcvbuf=4 << 20)
    cpumask_request(sock, cpumask.format(cpumask.possible()), register=True)
    port = sock.getsockname()[0]
    sock.close()
    assert _stray_traffic([port]) > 0


def test_close_deregisters_and_closes_every_socket():
    listener = tsf.ExitListener()
    ports = _ports(listener)
    socks = [s.sock for s in listener._shards]
    epoll_fd = listener.fileno()
    listener.close()
    listener.close()                              # idempotent
    assert listener.closed and all(s.fileno() == -1 for s in socks)
    with pytest.raises(OSError):
        os.fstat(epoll_fd)
    with pytest.raises(ValueError):
        listener.read()
    assert _stray_traffic(ports) == 0             # the kernel no longer lists the ports
    with tsf.ExitListener() as again:             # and exits still reach a new listener
        pids = [spawn(3, "tsfagain") for _ in range(3)]
        reap(pids)
        assert has_pids(pids)(collect(again, has_pids(pids)))


def test_stop_hands_back_every_exit_not_yet_read():
    listener = tsf.ExitListener()
    first = [spawn(4, "tsfread") for _ in range(5)]
    reap(first)
    read = collect(listener, has_pids(first))
    # exits that nobody reads: waitpid returns only after the kernel queued their messages
    pids = [spawn(6, "tsfstop", threads=i % 3) for i in range(24)]
    reap(pids)
    tail = listener.stop()
    assert listener.closed and tail.dtype == tsf.DTYPE
    assert pid_records(tail, pids) == sorted(pids)           # each exactly once
    assert not set(pid_records(tail, first)) & set(pid_records(read, first))
    threaded = [pid for i, pid in enumerate(pids) if i % 3]   # only groups bring TGID records
    tgids = tail[(tail["kind"] == tsf.KIND_TGID) & np.isin(tail["id"], pids)]
    assert sorted(tgids["id"].tolist()) == sorted(threaded)
    assert set(tail["ac_exitcode"][np.isin(tail["ac_pid"], pids)].tolist()) == {6 << 8}
    stats = listener.stats
    assert stats.discarded == 0 and stats.delivered == stats.received
    assert len(listener.stop()) == 0                          # closed: nothing more


def test_close_counts_what_stop_would_have_returned():
    listener = tsf.ExitListener()
    pids = [spawn(7, "tsfclose") for _ in range(12)]
    reap(pids)
    listener.close()
    stats = listener.stats
    assert stats.discarded >= len(pids)
    assert stats.delivered == 0 and stats.received == stats.discarded


def test_stop_keeps_at_most_what_the_sockets_could_hold(monkeypatch):
    # a socket "holds" one message per EVENT_TRUESIZE bytes: make that nothing, leaving room
    # for batch_size records only; the rest must be counted, not dropped silently
    listener = tsf.ExitListener(batch_size=4)
    monkeypatch.setattr(receive_buffer, "EVENT_TRUESIZE", 1 << 40)
    pids = [spawn(8, "tsfcap") for _ in range(10)]
    reap(pids)
    tail = listener.stop()
    stats = listener.stats
    assert len(tail) == 4
    assert stats.received >= len(pids)
    assert len(tail) + stats.discarded == stats.received == stats.delivered + stats.discarded


def test_forked_child_leaves_the_parents_stream_alone():
    """fork() while a parent thread iterates: the child's close() and atexit must neither hang
    on the read lock that thread held, nor wake/end the parent's iteration, nor deregister."""
    listener = tsf.ExitListener()
    batches, ended = [], threading.Event()

    def iterate():
        for batch in listener:
            batches.append(batch)
        ended.set()

    reader = threading.Thread(target=iterate, daemon=True)
    reader.start()
    try:
        time.sleep(0.2)                           # the reader waits inside tsf_drain
        child = os.fork()
        if child == 0:
            code = 1
            try:
                signal.alarm(5)                   # a hang must not hang the test
                try:
                    listener.read(timeout=0)
                except tsf.TaskstatsError as e:   # not ours to read: it would steal records
                    code = 0 if "forked child" in str(e) else 3
                listener.close()                  # only the child's copies of the fds
                lifetime._close_at_exit()         # the listeners' exit hook (not pytest's)
            finally:
                os._exit(code)
        _, status = os.waitpid(child, 0)
        assert status == 0, f"child wait status {status}"
        pids = [spawn(4, "tsfafterfork") for _ in range(3)]
        reap(pids)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not has_pids(pids)(np.concatenate([EMPTY] + batches)):
            time.sleep(0.02)
        assert not ended.is_set(), "the child's close() ended the parent's iteration"
        assert has_pids(pids)(np.concatenate([EMPTY] + batches))     # still registered
    finally:
        listener.close()
        reader.join(5)
    assert ended.is_set()


CHILD = textwrap.dedent("""
    import json, os, signal, sys, time
    sys.path.insert(0, {repo!r})
    import taskstats_fast as tsf
    # a test run started in the background (CI, nohup, '&') hands SIGINT down ignored, and
    # Python keeps it so: behave like a program started from a terminal
    signal.signal(signal.SIGINT, signal.default_int_handler)
    listener = tsf.ExitListener()
    print(json.dumps([s.sock.getsockname()[0] for s in listener._shards]), flush=True)
    if sys.argv[1] == "block":
        for batch in listener:     # interrupted by SIGINT: KeyboardInterrupt, then atexit
            pass
    # "exit": leave without closing; atexit deregisters
""")


@pytest.mark.parametrize("how", ["exit", "block"])
def test_process_exit_deregisters(how):
    proc = subprocess.Popen([PYTHON, "-c", CHILD.format(repo=REPO), how], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    ports = json.loads(proc.stdout.readline())
    if how == "block":
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    if how == "block":
        assert "KeyboardInterrupt" in err
    else:
        assert proc.returncode == 0, err
    assert _stray_traffic(ports) == 0


def test_keyboard_interrupt_during_a_read_loses_nothing():
    """SIGINT while read() lingers after taking a record: the record stays for the next read.
    (If other processes flood the buffer, reads return early and the interrupt lands elsewhere;
    the record must still arrive exactly once.)"""
    def interrupt(signum, frame):
        raise KeyboardInterrupt
    old = signal.signal(signal.SIGALRM, interrupt)
    got = [EMPTY]
    try:
        with tsf.ExitListener(linger=3.0) as listener:
            pid = spawn(7, "tsfsigint")
            reap([pid])
            time.sleep(0.2)                       # its record is queued before we read
            signal.setitimer(signal.ITIMER_REAL, 0.4)
            t0 = time.monotonic()
            with pytest.raises(KeyboardInterrupt):
                while time.monotonic() - t0 < 5:
                    got.append(listener.read())   # takes the record, lingers, gets SIGALRM
            assert time.monotonic() - t0 < 2.5
            got.append(collect(listener, has_pids([pid]), timeout=2))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    recs = np.concatenate(got)
    assert int(((recs["ac_pid"] == pid) & (recs["ac_ppid"] == os.getpid())).sum()) == 1


# ---- errors ------------------------------------------------------------------------------------

def test_bad_cpu_lists_are_refused_before_any_socket():
    with pytest.raises(CpumaskError) as info:
        tsf.ExitListener(cpus="0-1,4096")
    assert info.value.token == "4096"
    with pytest.raises(CpumaskError, match="reversed"):
        tsf.ExitListener(cpus="1-0")
    with pytest.raises(CpumaskError):
        tsf.ExitListener(shards=len(cpumask.possible()) + 1)


PROBE = textwrap.dedent("""
    import sys, warnings
    sys.path.insert(0, {repo!r})
    import taskstats_fast as tsf
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            tsf.ExitListener().close()
            print("OK")
        except Exception as e:
            print(type(e).__name__, getattr(e, "errno", None), e)
    for w in caught:
        print("WARNING", w.category.__name__, w.message)
""")


def _probe(*prefix):
    out = subprocess.run(list(prefix) + [PYTHON, "-c", PROBE.format(repo=REPO)],
                         capture_output=True, text=True, timeout=60)
    return out.stdout + out.stderr


def test_child_pid_namespace_is_a_namespace_error():
    out = _probe("unshare", "--pid", "--fork")
    assert out.startswith("NamespaceError 22 ") and "pid namespace" in out, out


def test_child_user_namespace_is_a_namespace_error():
    if subprocess.run(["unshare", "--user", "true"], capture_output=True).returncode != 0:
        pytest.skip("cannot create a user namespace here (user.max_user_namespaces?)")
    out = _probe("unshare", "--user", "--map-root-user")
    assert out.startswith("NamespaceError 1 ") and "user namespace" in out, out


def test_missing_cap_net_admin_is_a_permission_error():
    out = _probe("setpriv", "--bounding-set=-net_admin")
    assert out.startswith("PermissionDeniedError 1 ") and "CAP_NET_ADMIN" in out, out


def test_other_network_namespace_registers_but_warns():
    out = _probe("unshare", "--net")
    assert out.startswith("OK") and "WARNING ForeignNetnsWarning" in out, out
    assert "initial network namespace" in out


def test_namespace_errors_are_the_right_classes():
    assert issubclass(NamespaceError, OSError) and issubclass(PermissionDeniedError, PermissionError)


# ---- buffers -----------------------------------------------------------------------------------

def test_receive_buffer_is_sized_for_the_default_burst():
    with tsf.ExitListener() as listener:
        for shard in listener._shards:
            granted = shard.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
            assert granted >= listener_mod.DEFAULT_EVENTS_PER_CPU * listener_mod.EVENT_TRUESIZE


def test_fullest_is_the_share_of_the_fullest_buffer_the_waiting_exits_take():
    """``fullest()`` (what the accounting reader wakes to check) against the kernel's own
    figure, /proc/net/netlink's Rmem of the same sockets, and against what a read then finds;
    ``waiting()`` (whether a cut must read) counts records a read left in the listener too."""
    cpu = CPUS[0]
    with tsf.ExitListener(cpus=[cpu], rcvbuf=1 << 20) as listener:
        listener.read(timeout=0)
        before = listener.fullest()
        with pinned(cpu):
            pids = {spawn(0, "tsffull") for _ in range(20)}
        reap(pids)
        time.sleep(0.05)
        fullest = listener.fullest()
        inode = os.fstat(listener._shards[0].sock.fileno()).st_ino
        with open("/proc/net/netlink") as f:
            rows = [line.split() for line in f][1:]
        rmem = [int(r[4]) for r in rows if int(r[-1]) == inode]
        granted = listener._shards[0].sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        assert rmem and fullest == pytest.approx(rmem[0] / granted, rel=0.2)
        # nothing was read meanwhile: at least our 20 messages of at least 600 bytes each more
        # (strangers' exits on this CPU only add), and never past the drop point
        assert before + 20 * 600 / granted <= fullest < 1
        assert listener.waiting() is True
        first = listener.read(timeout=0, max_records=1, copy=False)
        assert len(first) == 1 and listener.waiting() is True       # the rest, held or queued
        records = np.concatenate([first.copy(), collect(listener, has_pids(pids))])
        assert set(records["ac_pid"].tolist()) >= pids
        listener.read(timeout=0)
        assert listener.fullest() == 0 or listener.fullest() < fullest
    assert listener.fullest() is None and listener.waiting() is None    # closed: nothing to ask


def test_capped_receive_buffer_warns_with_its_capacity(monkeypatch):
    monkeypatch.setattr(listener_mod.netlink, "set_rcvbuf", lambda sock, n, warn=True: 1_300_000)
    with pytest.warns(RuntimeWarning, match="room for about 1000 exit messages"):
        tsf.ExitListener(cpus=[CPUS[0]]).close()


# ---- threads and asyncio -----------------------------------------------------------------------

def test_reader_thread_and_close_from_another_thread():
    listener = tsf.ExitListener()
    batches = []
    reader = threading.Thread(target=lambda: batches.extend(listener), daemon=True)
    reader.start()
    pids = [spawn(9, "tsfthread") for _ in range(4)]
    reap(pids)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not has_pids(pids)(np.concatenate([EMPTY] + batches)):
        time.sleep(0.02)
    t0 = time.monotonic()
    listener.close()                              # ends the iteration in the reader thread
    reader.join(5)
    assert not reader.is_alive() and time.monotonic() - t0 < 5
    assert has_pids(pids)(np.concatenate(batches))


def test_asyncio_receives_exits():
    async def main():
        with tsf.ExitListener() as listener:
            loop = asyncio.get_running_loop()
            pids = [spawn(12, "tsfasync") for _ in range(4)]
            await loop.run_in_executor(None, reap, pids)
            seen = EMPTY
            ticks = 0

            async def tick():                     # the loop stays free while we wait
                nonlocal ticks
                while True:
                    ticks += 1
                    await asyncio.sleep(0.01)

            ticker = asyncio.ensure_future(tick())

            async def consume():
                nonlocal seen
                async for batch in listener.aiter():
                    seen = np.concatenate([seen, batch])
                    if has_pids(pids)(seen):
                        return

            await asyncio.wait_for(consume(), 10)
            ticker.cancel()
            return pids, seen, ticks

    pids, seen, ticks = asyncio.run(main())
    assert has_pids(pids)(seen)
    assert ticks >= 1


def test_asyncio_iteration_ends_when_closed():
    async def main():
        listener = tsf.ExitListener(cpus=[CPUS[0]])
        got = []

        async def consume():
            async for batch in listener:
                got.append(batch)

        task = asyncio.ensure_future(consume())
        await asyncio.sleep(0.1)
        assert not task.done()
        closer = threading.Thread(target=listener.close)   # from another thread
        closer.start()
        await asyncio.wait_for(task, 5)
        return listener, closer

    listener, closer = asyncio.run(main())
    closer.join(10)
    assert listener.closed
