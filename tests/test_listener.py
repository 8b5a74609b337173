"""ExitListener without root: built over socketpairs standing in for the kernel (tests/fakekernel.py).

Covers registration and deregistration on every way out, reading (read, iteration with and
without a timeout, asyncio), loss accounting (sequence gaps, foreign seqs, truncation, malformed
messages), stop(), fork-safety, the receive-buffer size checks and the order of a refused
registration and a short buffer's warning.  test_listener_kernel.py does the same against the
kernel.
"""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
import sys
import threading
import time
import warnings

import numpy as np
import pytest

import wire
from fakekernel import FakeKernel
from taskstats_fast import ExitListener, PermissionDeniedError, ReplyTimeoutError, TaskstatsError
from taskstats_fast.errors import ReceiveBufferSizeError
from taskstats_fast.kernel import cpumask, netlink, receive_buffer


@pytest.fixture
def kernel(monkeypatch, request):
    """make(n, **kw): a FakeKernel with n sockets, closed after the test."""
    monkeypatch.setattr(cpumask, "possible", lambda: (0, 1, 2, 3))   # whatever this machine has

    def make(n=1, **kw):
        k = FakeKernel(n, **kw)
        request.addfinalizer(k.close)
        return k
    return make


def pids(batch):
    return sorted(int(p) for p in batch["ac_pid"])


def read_until(listener, n, timeout=2.0):
    got = []
    deadline = time.monotonic() + timeout
    while sum(map(len, got)) < n and time.monotonic() < deadline:
        got.append(listener.read(timeout=0.1))
    return np.concatenate(got) if got else np.zeros(0)


# ---- registration ------------------------------------------------------------------------------

def test_registers_each_socket_for_its_cpus_and_deregisters_on_close(kernel):
    k = kernel(2)
    listener = k.listener(cpus="0-1")
    assert k.requests == [(0, "register", "0"), (1, "register", "1")]
    assert listener.shards == {0: (0,), 1: (1,)} and listener.cpus == (0, 1)
    listener.close()
    assert k.requests[2:] == [(0, "deregister", "0"), (1, "deregister", "1")]
    assert listener.closed
    listener.close()                     # idempotent
    assert len(k.requests) == 4


def test_shards_register_their_cpu_lists(kernel):
    k = kernel(1)
    with k.listener(cpus=[0, 1], shards=1) as listener:
        assert listener.shards == {0: (0, 1)}
    assert k.requests == [(0, "register", "0-1"), (0, "deregister", "0-1")]


def test_a_refused_registration_raises_and_leaves_nothing_registered(kernel):
    k = kernel(2, refuse=errno.EPERM)
    with pytest.raises(PermissionDeniedError, match="CAP_NET_ADMIN"):
        k.listener(cpus="0-1")
    assert [r[1] for r in k.requests] == ["register", "register"]   # nothing to undo


def test_no_ack_times_out(kernel):
    k = kernel(1, ack=False)
    t0 = time.monotonic()
    with pytest.raises(ReplyTimeoutError, match="did not acknowledge registering CPUs 0"):
        k.listener(ack_timeout=0.3)
    assert time.monotonic() - t0 < 3


# ---- receive buffer: sizes and the order of messages (issue 12) -------------------------------

@pytest.mark.parametrize("size", [3_000_000_000, 2**31, 0, -1])
def test_receive_buffer_size_out_of_range_is_a_value_error_naming_the_range(size):
    """It was a TypeError from setsockopt for sizes >= 2**31; checked before any socket opens."""
    with pytest.raises(ReceiveBufferSizeError, match="1 to 2147483647 bytes") as e:
        ExitListener(rcvbuf=size)
    assert isinstance(e.value, ValueError) and "rcvbuf" not in str(e.value)


@pytest.mark.parametrize("size", [1.5, "4096", True])
def test_receive_buffer_size_is_a_whole_number(size):
    with pytest.raises(ReceiveBufferSizeError, match="whole number of bytes"):
        ExitListener(rcvbuf=size)


def test_permission_error_comes_alone_before_any_buffer_warning(kernel, monkeypatch):
    """Without CAP_NET_ADMIN the buffer is capped and registering is refused: the refusal is what
    matters, and it used to come after a warning naming the Python parameter ``rcvbuf=``."""
    monkeypatch.setattr(netlink, "set_rcvbuf", lambda sock, n, warn=True: 200_000)
    k = kernel(1, refuse=errno.EPERM)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(PermissionDeniedError):
            k.listener(rcvbuf=None)


def test_a_short_buffer_warns_once_registered_in_plain_words(kernel, monkeypatch):
    monkeypatch.setattr(netlink, "set_rcvbuf", lambda sock, n, warn=True: 1_300_000)
    k = kernel(2)
    with pytest.warns(RuntimeWarning, match="room for about 1000 exit messages") as caught:
        k.listener(cpus="0-1", rcvbuf=None).close()
    assert len(caught) == 1 and "rcvbuf=" not in str(caught[0].message)
    assert k.requests[0][1] == "register"


def test_requested_and_granted_sizes_are_kept_apart(kernel):
    k = kernel(1)
    listener = k.listener(rcvbuf=50_000)
    buffer = listener._buffer
    assert buffer.requested == 50_000 and buffer.granted == [100_000]   # the kernel doubles
    listener.close()
    assert receive_buffer.ReceiveBuffer().request_for(2) == (
        receive_buffer.DEFAULT_EVENTS_PER_CPU * 2 * receive_buffer.EVENT_TRUESIZE // 2)


# ---- reading -----------------------------------------------------------------------------------

def test_read_returns_records_stamped_with_shard_and_seq(kernel):
    k = kernel(2)
    with k.listener(cpus="0-1") as listener:
        k.exit(0, pid=100, seq=1)
        k.exit(1, pid=200, seq=7, tgid=200)
        got = read_until(listener, 3)
        assert pids(got) == [0, 100, 200]
        by_pid = {int(r["ac_pid"]): r for r in got}
        assert (int(by_pid[100]["shard"]), int(by_pid[100]["seq"])) == (0, 1)
        assert (int(by_pid[200]["shard"]), int(by_pid[200]["seq"])) == (1, 7)
        assert listener.read(timeout=0).size == 0
        assert listener.stats.delivered == 3 and listener.stats.received == 3


def test_a_copied_batch_owns_just_its_rows_and_outlives_later_reads(kernel):
    """read() decodes into an array of its own, cut to the rows that came: holding many small
    batches holds their rows, not a batch_size each; later reads do not touch it."""
    k = kernel(1)
    with k.listener(cpus="0", linger=0) as listener:
        k.exit(0, pid=100, seq=1)
        k.exit(0, pid=101, seq=2)
        first = read_until(listener, 2)
        held = listener.read(timeout=0)           # nothing: an empty batch
        k.exit(0, pid=102, seq=3)
        second = listener.read(timeout=1)
        assert pids(first) == [100, 101] and held.size == 0 and pids(second) == [102]
        owner = second.base if second.base is not None else second
        assert owner.nbytes == second.nbytes == second.dtype.itemsize
        k.exit(0, pid=103, seq=4)
        view = listener.read(timeout=1, copy=False)
        assert pids(view) == [103] and pids(second) == [102] and pids(first) == [100, 101]
        assert listener.stats.delivered == 4


def test_one_record_at_a_time_keeps_the_rest_for_the_next_read(kernel):
    k = kernel(1)
    with k.listener(cpus="0", linger=0) as listener:
        for i in range(3):
            k.exit(0, pid=100 + i, seq=1 + i)
        time.sleep(0.1)
        got = [listener.read(timeout=1, max_records=1) for _ in range(3)]
        assert [pids(b) for b in got] == [[100], [101], [102]]


def test_read_with_timeout_returns_empty_on_a_quiet_stream(kernel):
    k = kernel(1)
    with k.listener() as listener:
        t0 = time.monotonic()
        assert listener.read(timeout=0.2).size == 0
        assert 0.15 < time.monotonic() - t0 < 1.5


def test_batches_with_a_timeout_yield_empty_batches_on_a_quiet_machine(kernel):
    """``for batch in listener`` waits for the next exit however long that takes (a loop meant to
    end after 2 s ran 18 s); ``batches(timeout=)`` hands the loop an empty batch meanwhile."""
    k = kernel(1)
    with k.listener() as listener:
        t0 = time.monotonic()
        seen = []
        for batch in listener.batches(timeout=0.2):
            seen.append(len(batch))
            if len(seen) == 1:
                k.exit(0, pid=42, seq=1)
            if sum(seen) or time.monotonic() - t0 > 5:
                break
        assert seen[0] == 0 and sum(seen) == 1
        assert time.monotonic() - t0 < 2


def test_negative_batch_timeout_is_refused(kernel):
    with kernel(1).listener() as listener:
        with pytest.raises(ValueError, match="0 or more"):
            listener.batches(timeout=-1)


def test_iteration_ends_when_another_thread_closes(kernel):
    k = kernel(1)
    listener = k.listener()
    got = []
    reader = threading.Thread(target=lambda: got.extend(listener), daemon=True)
    reader.start()
    k.exit(0, pid=7, seq=1)
    deadline = time.monotonic() + 2
    while not got and time.monotonic() < deadline:
        time.sleep(0.01)
    listener.close()
    reader.join(2)
    assert not reader.is_alive() and pids(np.concatenate(got)) == [7]


def test_async_iteration(kernel):
    k = kernel(1)
    listener = k.listener()

    async def main():
        got = []
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, k.exit, 0, 9, 1)
        async for batch in listener:
            got.append(batch)
            loop.call_soon(listener.close)
        return got

    got = asyncio.run(asyncio.wait_for(main(), 5))
    assert pids(np.concatenate(got)) == [9]


def test_read_after_close_raises(kernel):
    listener = kernel(1).listener()
    listener.close()
    with pytest.raises(ValueError, match="closed"):
        listener.read(timeout=0)


# ---- loss accounting ---------------------------------------------------------------------------

def test_sequence_gaps_are_counted_per_cpu(kernel):
    k = kernel(2)
    with k.listener(cpus="0-1") as listener:
        for seq in (1, 2, 5, 6):       # 3 and 4 never came
            k.exit(0, pid=100 + seq, seq=seq)
        k.exit(1, pid=300, seq=40)
        read_until(listener, 5)
        stats = listener.stats
        by_cpu = {s.shard: s for s in stats.shards}
        assert (by_cpu[0].seq_gaps, by_cpu[1].seq_gaps) == (2, 0)
        assert stats.seq_gaps == 2 and stats.lost == 0 and stats.messages == 5
        assert stats.seq_unexplained == 2          # no drop counter explains them: a fake kernel
        assert stats.lost_by_cpu == {0: 0, 1: 0}


def test_a_migrated_tasks_foreign_seq_is_no_loss(kernel):
    k = kernel(1)
    with k.listener() as listener:
        for seq in (100, 500, 101, 102):
            k.exit(0, pid=seq, seq=seq)
        read_until(listener, 4)
        stats = listener.stats
        assert (stats.seq_gaps, stats.seq_foreign, stats.lost) == (0, 1, 0)


def test_shared_sockets_track_no_sequence(kernel):
    k = kernel(1)
    with k.listener(cpus="0-1", shards=1) as listener:
        k.exit(0, pid=1, seq=1)
        k.exit(0, pid=2, seq=9)
        read_until(listener, 2)
        stats = listener.stats
        assert stats.shards[0].seq_gaps is None and stats.seq_gaps == 0
        assert stats.lost_by_cpu is None and stats.lost_by_shard == {0: 0}


def test_truncated_and_malformed_datagrams_are_counted(kernel):
    k = kernel(1)
    with k.listener() as listener:
        k.send(0, wire.nlmsg(wire.TASKSTATS_FAMILY, b"\0" * 9000))     # larger than a slot
        k.send(0, wire.nlmsg(wire.TASKSTATS_FAMILY, wire.genl(wire.CMD_NEW, [b"\xff\xff"]),
                             length=2000))                             # lies about its length
        k.exit(0, pid=5, seq=1)
        got = read_until(listener, 1)
        stats = listener.stats
        assert pids(got) == [5]
        assert stats.truncated == 1 and stats.lost == 1 and stats.malformed >= 1


# ---- the ends of a stream -----------------------------------------------------------------------

def test_stop_returns_what_was_not_read_and_deregisters(kernel):
    k = kernel(2)
    listener = k.listener(cpus="0-1")
    for i in range(3):
        k.exit(i % 2, pid=10 + i, seq=i + 1)
    time.sleep(0.05)
    tail = listener.stop()
    assert pids(tail) == [10, 11, 12]
    assert [r[1] for r in k.requests] == ["register"] * 2 + ["deregister"] * 2
    stats = listener.stats
    assert stats.delivered == 3 and stats.discarded == 0 and listener.closed
    assert listener.stop().size == 0


def test_close_counts_unread_records_as_discarded(kernel):
    k = kernel(1)
    listener = k.listener()
    k.exit(0, pid=1, seq=1)
    k.exit(0, pid=2, seq=2)
    time.sleep(0.05)
    listener.close()
    assert listener.stats.discarded == 2 and listener.stats.delivered == 0


def test_a_forked_child_leaves_the_parents_stream_alone(kernel):
    k = kernel(1)
    listener = k.listener()
    child = os.fork()
    if child == 0:   # the child: reading raises, close() only drops its copies of the fds
        code = 1
        try:
            try:
                listener.read(timeout=0)
            except TaskstatsError as e:
                code = 0 if "belongs to process" in str(e) else 2
            listener.close()
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)
    assert os.WEXITSTATUS(status) == 0
    assert [r[1] for r in k.requests] == ["register"]       # the child deregistered nothing
    k.exit(0, pid=77, seq=1)
    assert pids(read_until(listener, 1)) == [77]              # the parent still reads
    listener.close()
    assert [r[1] for r in k.requests] == ["register", "deregister"]


def test_the_sockets_count_must_match_the_shards(kernel):
    k = kernel(1)
    with pytest.raises(ValueError, match="1 sockets for 2 shards"):
        k.listener(cpus="0-1")


def test_a_refused_deregistration_after_dropping_privileges_is_quiet(kernel):
    """A service that dropped CAP_NET_ADMIN after registering gets EPERM when deregistering:
    nothing to warn about, the kernel drops the closed socket lazily."""
    k = kernel(1)
    listener = k.listener()
    k.refuse_deregister = errno.EPERM
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        listener.close()
    assert [r[1] for r in k.requests] == ["register", "deregister"] and listener.closed


def test_another_refused_deregistration_warns(kernel):
    k = kernel(1)
    listener = k.listener()
    k.refuse_deregister = errno.EINVAL
    with pytest.warns(RuntimeWarning, match="deregistering failed"):
        listener.close()
    assert listener.closed


def test_fileno_turns_readable_when_an_exit_arrives(kernel):
    import select
    k = kernel(2)
    with k.listener(cpus="0-1") as listener:
        assert select.select([listener.fileno()], [], [], 0)[0] == []
        k.exit(1, pid=8, seq=1)
        assert select.select([listener.fileno()], [], [], 2)[0] == [listener.fileno()]
        assert pids(listener.read(timeout=0)) == [8]
    with pytest.raises(ValueError, match="closed"):
        listener.fileno()


def test_importing_the_package_leaves_the_exit_stream_unloaded():
    """decode() users do not pay for asyncio: the listener loads on first use of its names."""
    code = ("import sys, taskstats_fast as tsf\n"
            "assert 'asyncio' not in sys.modules and 'taskstats_fast.kernel.listener' not in sys.modules\n"
            "assert tsf.ExitListener.__name__ == 'ExitListener'\n")
    subprocess.run([sys.executable, "-c", code], check=True)
