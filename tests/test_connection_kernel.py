"""Kernel tests of taskstats_fast.Connection: pid/tgid lookups, bulk lookups and snapshots against
the running kernel, cross-checked with /proc, os.stat and pyroute2; permission errors, timeouts
and delay accounting.  Need root (CAP_NET_ADMIN); run in CI.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from importlib import import_module

import numpy as np
import pytest

import taskstats_fast as tsf
from taskstats_fast.kernel import netlink, queries, snapshot_rows
from taskstats_fast.errors import NoSuchTaskError

pytestmark = pytest.mark.kernel
da = import_module("taskstats_fast.kernel.delayacct")  # tsf.delay_accounting is the context manager

CLK_TCK = os.sysconf("SC_CLK_TCK")
STATIC_FIELDS = ("version", "ac_pid", "ac_ppid", "ac_uid", "ac_gid", "ac_comm", "ac_nice",
                 "ac_sched", "ac_flag")
# the kernel computes ac_btime as "now minus elapsed" in whole seconds: two replies about one task
# differ by a second whenever a second's boundary falls between them
BTIME_TOLERANCE_S = 1
# counters that only grow: a reply taken between two others must lie between them
MONOTONIC_FIELDS = ("cpu_count", "cpu_delay_total", "cpu_run_real_total", "cpu_run_virtual_total",
                    "ac_etime", "ac_utime", "ac_stime", "ac_minflt", "ac_majflt", "coremem",
                    "virtmem", "read_char", "write_char", "read_syscalls", "write_syscalls",
                    "read_bytes", "write_bytes", "nvcsw", "nivcsw")


@pytest.fixture(scope="module")
def conn():
    with tsf.Connection(warn_delayacct=False) as c:
        yield c


@pytest.fixture
def sleeper():
    """A child process asleep in read(): its counters do not move while we look."""
    procs = []

    def start(code='import sys; print("ready", flush=True); sys.stdin.read()', threads=0):
        if threads:
            code = textwrap.dedent(f"""
                import sys, threading, time
                spun = threading.Semaphore(0)
                def work():
                    t = time.thread_time() + 0.02     # this thread's own CPU time
                    while time.thread_time() < t:
                        pass
                    spun.release()
                    threading.Event().wait()
                ts = [threading.Thread(target=work, daemon=True) for _ in range({threads})]
                [t.start() for t in ts]
                for _ in ts:
                    spun.acquire()
                print("ready", flush=True)
                sys.stdin.read()
            """)
        p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE)
        procs.append(p)
        assert p.stdout.readline().strip() == b"ready"
        return p

    yield start
    for p in procs:
        p.kill()
        p.wait()


def _proc_stat(path):
    """Fields of a /proc/.../stat line after the comm, 0-based from field 3 (state)."""
    with open(path) as f:
        text = f.read()
    comm = text[text.index("(") + 1:text.rindex(")")]
    return comm, text[text.rindex(")") + 2:].split()


def _status(pid="self"):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            out[key] = value.split()
    return out


def _runtimes(pid):
    """Each thread's sum_exec_runtime (ns, /proc/PID/task/TID/schedstat), by tid."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
            out[int(tid)] = int(f.read().split()[0])
    return out


def while_idle(pid, look, tries=100):
    """``look()`` taken while no thread of ``pid`` ran: the threads' runtimes read before and
    after agree.  (A child that just printed "ready" may still be on its way into read(), and on
    a busy machine a thread is often preempted there.)  Returns (look's result, runtimes)."""
    for _ in range(tries):
        before = _runtimes(pid)
        result = look()
        if _runtimes(pid) == before:
            return result, before
        time.sleep(0.01)
    raise AssertionError(f"process {pid} never stayed idle across a look")


def test_pid_of_self_matches_proc(conn):
    _, before = _proc_stat("/proc/thread-self/stat")
    rec = conn.pid(os.getpid())
    _, after = _proc_stat("/proc/thread-self/stat")
    comm, _ = _proc_stat("/proc/self/stat")
    status = _status()
    assert rec["kind"] == tsf.KIND_PID and rec["id"] == os.getpid()
    assert rec["ac_pid"] == os.getpid() and rec["ac_tgid"] == os.getpid()
    assert rec["ac_ppid"] == os.getppid()
    assert rec["ac_comm"].decode() == comm
    assert rec["ac_uid"] == int(status["Uid"][0]) and rec["ac_gid"] == int(status["Gid"][0])
    # minflt (field 10) of this thread, read around the query.  (utime/stime are not comparable:
    # /proc scales them so they add up to the runtime, taskstats reports the raw tick samples.)
    assert int(before[7]) <= rec["ac_minflt"] <= int(after[7])
    # begin time: boot time + starttime (field 22, ticks)
    with open("/proc/stat") as f:
        btime = next(int(line.split()[1]) for line in f if line.startswith("btime"))
    start = btime + int(before[19]) / CLK_TCK
    assert abs(int(rec["ac_btime"]) - start) <= 2
    assert rec["ac_btime64"] == rec["ac_btime"]
    assert rec["layout"] >= 12 and rec["version"] >= 12


def test_runtime_and_context_switches_match_proc():
    # schedstat: sum_exec_runtime (= cpu_run_virtual_total), run_delay (= cpu_delay_total),
    # pcount (= cpu_count); cpu_run_real_total is the raw utime+stime instead
    fields = ("cpu_run_virtual_total", "cpu_delay_total", "cpu_count", "nvcsw", "nivcsw")

    def read():
        with open("/proc/thread-self/schedstat") as f:
            sched = [int(v) for v in f.read().split()]
        status = _status("thread-self")
        return sched + [int(status["voluntary_ctxt_switches"][0]),
                        int(status["nonvoluntary_ctxt_switches"][0])]

    with tsf.Connection(warn_delayacct=False) as c:
        before = read()
        rec = c.pid(threading.get_native_id())
        after = read()
    for field, lo, hi in zip(fields, before, after):
        assert lo <= rec[field] <= hi, field


def test_exe_inode_and_device_match_stat(conn, sleeper):
    child = sleeper()
    for pid in (os.getpid(), child.pid):
        rec = conn.pid(pid)
        st = os.stat(f"/proc/{pid}/exe")
        assert rec["ac_exe_inode"] == st.st_ino
        assert rec["ac_exe_dev"] == st.st_dev


def test_tgid_sums_its_threads(conn, sleeper):
    child = sleeper(threads=3)
    tids = sorted(int(t) for t in os.listdir(f"/proc/{child.pid}/task"))
    assert len(tids) == 4
    (group, threads, by_last), runtimes = while_idle(
        child.pid, lambda: (conn.tgid(child.pid), conn.pids(tids), conn.tgid(tids[-1])))
    assert group["kind"] == tsf.KIND_TGID and group["id"] == child.pid
    assert threads.found.all() and threads.records["ac_tgid"].tolist() == [child.pid] * 4
    # no thread ran across the two lookups: the group figure is exactly the sum of its threads'
    for field in ("ac_utime", "ac_stime", "nvcsw", "nivcsw", "cpu_run_real_total",
                  "cpu_run_virtual_total", "cpu_count"):
        per_thread = threads.records[field].astype(np.int64)
        assert int(group[field]) == int(per_thread.sum()), field
    # and the scheduler's own runtimes (/proc) are the same numbers
    assert threads.records["cpu_run_virtual_total"].tolist() == [runtimes[t] for t in tids]
    assert group["cpu_run_virtual_total"] >= 3 * 20_000_000   # each worker spun 20 ms of its own CPU
    # any thread id of the group finds the same group (asked inside the idle window: a sleeper's
    # thread can run between two lookups, and then the sums differ)
    assert by_last["cpu_run_virtual_total"] == group["cpu_run_virtual_total"]


def test_pid_matches_pyroute2(conn, sleeper):
    pyroute2 = pytest.importorskip("pyroute2")
    ts = pyroute2.TaskStats()
    ts.bind()
    try:
        def theirs(pid):
            msg = ts.get_pid_stat(pid)[0]
            return dict(msg.get_attr("TASKSTATS_TYPE_AGGR_PID").get_attr("TASKSTATS_TYPE_STATS"))

        child = sleeper()
        # an idle process: every field pyroute2 knows is equal but the elapsed time.  (It printed
        # "ready" just before its read(): retry until two pyroute2 replies agree, so it is idle.)
        for _ in range(50):
            before, ours, after = theirs(child.pid), conn.pid(child.pid), theirs(child.pid)
            if all(before[k] == after[k] for k in before if k != "ac_etime"):
                break
            time.sleep(0.01)
        known = [k for k in before if k in tsf.DTYPE.names]
        assert len(known) >= 40
        for k in known:
            if k == "ac_etime":
                assert before[k] <= ours[k] <= after[k]
            elif k == "ac_comm":
                assert ours[k] == before[k].rstrip(b"\0")
            else:
                assert ours[k] == before[k] == after[k], k
        # ourselves (running): static fields equal, counters between the two pyroute2 replies
        before, ours, after = theirs(os.getpid()), conn.pid(os.getpid()), theirs(os.getpid())
        for k in STATIC_FIELDS:
            want = before[k].rstrip(b"\0") if k == "ac_comm" else before[k]
            assert ours[k] == want == (after[k].rstrip(b"\0") if k == "ac_comm" else after[k]), k
        assert before["ac_btime"] - BTIME_TOLERANCE_S <= ours["ac_btime"] <= after["ac_btime"] + BTIME_TOLERANCE_S
        for k in MONOTONIC_FIELDS:
            assert before[k] <= ours[k] <= after[k], k
    finally:
        ts.close()


def test_bulk_lookup_returns_the_live_in_order_and_reports_the_dead(conn):
    dead = []
    for _ in range(3):
        p = subprocess.Popen(["true"])
        p.wait()
        dead.append(p.pid)
    live = [os.getpid(), os.getppid(), 1]
    ids = [live[0], dead[0], live[1], dead[1], dead[2], live[2], live[0]]
    got = conn.pids(ids)
    assert got.ids.tolist() == ids
    assert got.records["ac_pid"].tolist() == [live[0], live[1], live[2], live[0]]
    assert got.records["id"].tolist() == got.ids[got.found].tolist()
    assert got.missing.tolist() == dead
    assert got.resent == 0
    with pytest.raises(NoSuchTaskError) as e:
        conn.pid(dead[0])
    assert isinstance(e.value, ProcessLookupError) and str(dead[0]) in str(e.value)


@pytest.mark.parametrize("dead_in", ["first", "second", "both"])
def test_two_workers_give_the_records_one_worker_gives(conn, sleeper, dead_in):
    p = sleeper(threads=3)
    tids = [int(t) for t in os.listdir(f"/proc/{p.pid}/task")]
    dead = subprocess.Popen(["true"])
    dead.wait()
    live = np.resize(np.array(tids + [1], np.uint32), 600)      # 600 ids: two parts of 300
    with_dead = live.copy()
    with_dead[::7] = dead.pid
    first, second = {"first": (with_dead, live), "second": (live, with_dead),
                     "both": (with_dead, with_dead)}[dead_in]
    ids = np.concatenate([first, second])
    one = conn.pids(ids)
    two = conn.pids(ids, workers=2)
    assert len(conn._parallel.helpers) >= 1
    assert two.found.tolist() == one.found.tolist() == (ids != dead.pid).tolist()
    assert two.missing.tolist() == one.missing.tolist() == [dead.pid] * int((ids == dead.pid).sum())
    assert two.records["ac_pid"].tolist() == one.records["ac_pid"].tolist() == ids[ids != dead.pid].tolist()
    assert two.records["id"].tolist() == ids[ids != dead.pid].tolist()
    for k in STATIC_FIELDS:
        assert (two.records[k] == one.records[k]).all(), k
    btime_gap = two.records["ac_btime"].astype(np.int64) - one.records["ac_btime"]
    assert (abs(btime_gap) <= BTIME_TOLERANCE_S).all()


def test_a_batch_far_larger_than_the_socket_buffer_loses_nothing():
    pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    dead = subprocess.Popen(["true"])
    dead.wait()
    base = np.array([os.getpid(), os.getppid(), dead.pid, 1], np.uint32)
    ids = np.resize(base, 50_000)
    with tsf.Connection(rcvbuf=16384, warn_delayacct=False) as small:
        assert small.rcvbuf <= 64 * 1024
        got = small.pids(ids)
        assert small.in_flight * small._channel.reply_truesize <= small.rcvbuf
        assert small.in_flight < 64  # so the batch took hundreds of rounds
        counters = small.counters
    assert got.missing.tolist() == [dead.pid] * (50_000 // 4)
    assert len(got.records) == 50_000 - 50_000 // 4
    assert got.records["ac_pid"].tolist() == ids[ids != dead.pid].tolist()
    assert counters["drops"] == 0 and counters["overruns"] == 0 and got.resent == 0
    assert len(pids) > 0


def test_a_round_of_thousands_of_esrch_replies_loses_none():
    with open("/proc/sys/kernel/pid_max") as f:
        pid_max = int(f.read())
    n = max(queries.MAX_IN_FLIGHT * 3, 3000)
    ids = np.arange(pid_max + 1, pid_max + 1 + n, dtype=np.uint32)  # no such pids
    with tsf.Connection(rcvbuf=16 << 20, warn_delayacct=False) as big:
        big.max_in_flight = n
        assert big.in_flight == n  # one round: n ESRCH notes queued before we read one,
        # more than the notes array of a default round holds
        got = big.pids(ids)
        counters = big.counters
    assert got.missing.tolist() == ids.tolist() and len(got.records) == 0
    assert got.resent == 0 and counters["drops"] == 0


def test_replies_the_kernel_drops_are_requested_again():
    ids = np.resize(np.array([os.getpid(), 1], np.uint32), 3000)
    with tsf.Connection(rcvbuf=16384, warn_delayacct=False) as small:
        small.pid(os.getpid())     # calibrate, then lie: rounds now overflow the buffer
        small._channel.reply_truesize = 16
        assert small.in_flight > 100
        got = small.pids(ids)
        counters = small.counters
    assert counters["drops"] > 0  # the kernel did drop replies ...
    assert got.resent > 0         # ... and they were asked for again
    assert got.found.all() and got.records["ac_pid"].tolist() == ids.tolist()


def test_snapshot_of_processes_and_threads(conn):
    helper_tid = []
    stop = threading.Event()
    t = threading.Thread(target=lambda: (helper_tid.append(threading.get_native_id()), stop.wait()))
    t.start()
    try:
        while not helper_tid:
            time.sleep(0.001)
        procs = conn.snapshot()
        assert os.getpid() in procs.records["ac_pid"] and 1 in procs.records["id"]
        assert helper_tid[0] not in procs.records["id"]
        assert (procs.records["kind"] == tsf.KIND_PID).all()
        threads = conn.snapshot(threads=True)
        assert helper_tid[0] in threads.records["ac_pid"] and os.getpid() in threads.records["ac_pid"]
        assert len(threads.records) > len(procs.records) // 2
        mine = threads.records[threads.records["ac_tgid"] == os.getpid()]
        assert set(mine["ac_pid"].tolist()) >= {os.getpid(), helper_tid[0]}
        groups = conn.snapshot(aggregate=True)
        assert (groups.records["kind"] == tsf.KIND_TGID).all()
        assert os.getpid() in groups.records["id"]
    finally:
        stop.set()
        t.join()
    with pytest.raises(ValueError):
        conn.snapshot(threads=True, aggregate=True)


def test_snapshot_counts_tasks_that_exit_before_the_query(conn, monkeypatch):
    dead = subprocess.Popen(["true"])
    dead.wait()
    listed = snapshot_rows.list_tasks

    def with_the_dead(threads):
        tids, owners = listed(threads)
        return np.append(tids, np.uint32(dead.pid)), np.append(owners, np.uint32(dead.pid))

    monkeypatch.setattr(snapshot_rows, "list_tasks", with_the_dead)
    for snap in (conn.snapshot(), conn.snapshot(threads=True), conn.snapshot(aggregate=True)):
        missing = snap.missing.tolist()
        assert dead.pid in missing
        assert dead.pid not in snap.records["id"]
        # on a busy machine other tasks exit between the listing and the query too: those are gone
        assert not [p for p in missing if p != dead.pid and os.path.exists(f"/proc/{p}")], missing


def test_unprivileged_query_raises_permission_denied(tmp_path):
    # import as root (the interpreter's prefix is not readable by nobody), then drop privileges
    code = textwrap.dedent("""
        import os, taskstats_fast as tsf
        os.setgroups([]); os.setgid(65534); os.setuid(65534)
        c = tsf.Connection()
        try:
            c.pid(1)
        except tsf.PermissionDeniedError as e:
            print("PermissionDeniedError", isinstance(e, PermissionError), e.errno)
            print(e)
        try:
            c.pids([1, 2])
        except PermissionError as e:
            print("bulk", type(e).__name__)
        v1 = {v1!r}
        print("cgroup", c.cgroup(v1).nr_sleeping >= 0 if v1 else "no v1 hierarchy")
    """).format(v1=_cgroup_v1_mount())
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "PermissionDeniedError True 1"
    assert "CAP_NET_ADMIN" in lines[1] and "query for pid 1:" in lines[1]
    assert lines[2] == "bulk PermissionDeniedError"
    # cgroupstats needs no privilege (checked wherever a v1 hierarchy is mounted: here, in CI)
    assert lines[3] == ("cgroup True" if _cgroup_v1_mount() else "cgroup no v1 hierarchy")


def _cgroup_v1_mount():
    """Mount point of some cgroup v1 hierarchy, or None."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            fstype = fields[fields.index("-") + 1]
            if fstype == "cgroup":
                return fields[4]
    return None


def test_user_namespace_is_named_in_the_permission_error():
    if subprocess.run(["unshare", "--user", "true"], capture_output=True).returncode != 0:
        pytest.skip("cannot create a user namespace here")
    code = textwrap.dedent("""
        import ctypes
        # CLONE_NEWUSER, while still single-threaded (numpy may start threads)
        assert ctypes.CDLL(None, use_errno=True).unshare(0x10000000) == 0
        import taskstats_fast as tsf
        c = tsf.Connection()
        try:
            c.pid(1)
        except tsf.PermissionDeniedError as e:
            print(e)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "user namespace" in out.stdout and "initial" in out.stdout


def test_keyboard_interrupt_propagates_from_a_long_lookup():
    """The lookup loop runs in C without the GIL: it comes back to Python often enough for a
    signal's handler to run promptly, and the connection stays usable."""
    with tsf.Connection(timeout=5, warn_delayacct=False) as c:
        def interrupt(signum, frame):
            raise KeyboardInterrupt

        ids = np.full(2_000_000, os.getpid(), np.uint32)     # many seconds of lookups
        old = signal.signal(signal.SIGALRM, interrupt)
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.1)
            t0 = time.monotonic()
            with pytest.raises(KeyboardInterrupt):
                c.pids(ids)
            assert time.monotonic() - t0 < 1.5
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
        assert c.pid(os.getpid())["ac_pid"] == os.getpid()  # still usable
        assert c.pids([os.getpid()]).records["ac_pid"].tolist() == [os.getpid()]


def test_delay_accounting_switch_and_warning(sleeper):
    original = da.delayacct_enabled()
    assert original is not None  # this kernel has the switch
    with tsf.delay_accounting(False):
        assert tsf.delayacct_enabled() is False
        with tsf.Connection() as c:
            with pytest.warns(tsf.DelayAccountingOffWarning, match="task_delayacct"):
                c.pid(os.getpid())
            assert c.delayacct_enabled is False
        with tsf.delay_accounting(True) as previous:
            assert previous is False
            with open(da.SYSCTL_PATH) as f:
                assert f.read().strip() == "1"
            with tsf.Connection() as c, warnings.catch_warnings():
                warnings.simplefilter("error")
                c.pid(os.getpid())
        assert tsf.delayacct_enabled() is False
    assert da.delayacct_enabled() is original


def test_connection_basics():
    c = tsf.Connection(warn_delayacct=False)
    assert c.fileno() >= 0 and c.family.id >= 0x10
    assert c.family == netlink.resolve_family()
    assert "Connection" in repr(c)
    c.close()
    assert c.closed
    with pytest.raises(ValueError):
        c.pid(1)


_BUSY_THREADS = textwrap.dedent("""
    import sys, threading, time
    # each worker says when it is done: a thread waiting for the GIL shows as asleep ("S") in
    # /proc, so the threads' states cannot tell a finished worker from one not yet through
    done = threading.Semaphore(0)
    def work():
        end = time.thread_time() + 0.15          # this thread's own CPU time
        while time.thread_time() < end:
            pass
        with open("/dev/zero", "rb") as f:       # 1 MiB of reads of its own
            f.read(1 << 20)
        done.release()
        threading.Event().wait()
    ts = [threading.Thread(target=work, daemon=True) for _ in range(3)]
    [t.start() for t in ts]
    for _ in ts:
        done.acquire()
    print("ready", flush=True)
    sys.stdin.read()
""")


def test_snapshot_rows_carry_the_whole_process(conn, sleeper):
    """A process row's CPU is the process's (/proc/PID/stat), not its sleeping leader's, and its
    I/O is its threads' (/proc/PID/io); --threads rows stay per thread."""
    child = sleeper(_BUSY_THREADS)
    (snap, leader, threads), runtimes = while_idle(
        child.pid, lambda: (conn.snapshot(), conn.pid(child.pid), conn.snapshot(threads=True)))
    (row,) = snap.records[snap.records["id"] == child.pid]
    _, stat = _proc_stat(f"/proc/{child.pid}/stat")
    tick_ns = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    # the scheduler's runtime of every thread (exact), and /proc/PID/stat's utime + stime, which
    # the kernel scales to add up to that runtime (so equal to it up to the rounding to ticks)
    assert int(row["cpu_run_virtual_total"]) == sum(runtimes.values())
    assert int(row["cpu_run_virtual_total"]) >= 3 * 150_000_000   # each worker's own 150 ms
    proc_cpu_ns = (int(stat[11]) + int(stat[12])) * tick_ns       # utime + stime, all threads
    assert abs(int(row["cpu_run_virtual_total"]) - proc_cpu_ns) <= 2 * tick_ns
    assert int(leader["cpu_run_virtual_total"]) < int(row["cpu_run_virtual_total"]) / 3   # what it used to show
    # utime/stime are the kernel's tick samples (statistical, not comparable to /proc's runtime
    # under load): the row's are exactly its threads' own, summed
    row_cpu_us = int(row["ac_utime"]) + int(row["ac_stime"])
    assert int(leader["ac_utime"]) + int(leader["ac_stime"]) < row_cpu_us
    with open(f"/proc/{child.pid}/io") as f:
        io = dict(line.split(": ") for line in f.read().splitlines())
    nthreads = len(runtimes)
    # the kernel rounds each thread's figure down to a multiple of 1024
    assert 0 <= int(io["rchar"]) - int(row["read_char"]) < 1024 * nthreads
    assert int(row["read_char"]) > int(leader["read_char"]) + 3 * (1 << 20) * 0.9
    assert row["ac_comm"] == leader["ac_comm"] and row["ac_uid"] == leader["ac_uid"]
    mine = threads.records[threads.records["ac_tgid"] == child.pid]
    assert len(mine) == nthreads
    assert row_cpu_us == int((mine["ac_utime"] + mine["ac_stime"]).sum())
    assert int(row["cpu_run_virtual_total"]) == int(mine["cpu_run_virtual_total"].sum())
