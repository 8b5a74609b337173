"""Byte-level tests of taskstats_fast.kernel.connection, its parts (queries, snapshot_rows,
cgroupstats) and taskstats_fast.kernel.delayacct: no kernel needed.

A fake kernel (a thread on the far end of an AF_UNIX datagram socketpair) answers the
Connection's GET requests with messages built by tests/wire.py, so the bulk machinery (round
sizing, seq -> request mapping, ESRCH/EPERM/EAGAIN notes, stale and shuffled replies, timeouts,
signals, truncation) is exercised exactly as it runs against the kernel.
"""

from __future__ import annotations

import errno
import os
import signal
import struct
import threading
import time
import warnings

import numpy as np
import pytest

import wire
from fakekernel import QueryKernel
from taskstats_fast.kernel import cgroupstats, queries, snapshot_rows
from taskstats_fast import layout
from taskstats_fast.kernel import netlink
from taskstats_fast import _native
from taskstats_fast.kernel.connection import Lookup, requests_in_flight
from taskstats_fast.errors import (DecodeError, InvalidTaskIdError, NoSuchTaskError, PermissionDeniedError,
                                   ReplyTimeoutError)

from taskstats_fast.kernel import delayacct as da
FAMILY = netlink.Family(wire.TASKSTATS_FAMILY, 1, 0)


# ---- pure helpers ------------------------------------------------------------------------------
@pytest.mark.parametrize("rcvbuf", [2304, 32768, 212992, 1 << 20, 8 << 20])
@pytest.mark.parametrize("truesize", [832, 1280, 2304])
def test_round_fits_in_receive_buffer(rcvbuf, truesize):
    n = requests_in_flight(rcvbuf, truesize, cap=1 << 20)
    assert n >= 1
    if n > 1:  # a round's replies fit with an eighth of the buffer spare
        assert n * truesize <= rcvbuf - rcvbuf // 8
    assert (n + 1) * truesize > rcvbuf - rcvbuf // 8 or n == 1 << 20


def test_round_size_respects_cap_and_send_buffer():
    assert requests_in_flight(8 << 20, 1280, cap=100) == 100
    assert requests_in_flight(8 << 20, 1280) == queries.MAX_IN_FLIGHT
    # the request datagram must stay under sndbuf - 32 bytes
    n = requests_in_flight(8 << 20, 1280, sndbuf=4096, cap=10_000)
    assert n * queries.REQUEST_SIZE <= 4096 - 32 and n > 100
    with pytest.raises(ValueError):
        requests_in_flight(0, 1280)


def test_requests_are_built_with_consecutive_seqs():
    ids = np.array([5, 1, 4_000_000_000, 0], np.uint32)
    raw = _native.build_get(FAMILY.id, 2**32 - 2, _native.ATTR_TGID, ids)
    assert len(raw) == 4 * 28
    for i, ident in enumerate(ids.tolist()):
        length, mtype, flags, seq, port, cmd, version, _, alen, atype, value = struct.unpack_from(
            "=IHHIIBBHHHI", raw, 28 * i)
        assert (length, mtype, flags, port, cmd, version) == (28, FAMILY.id, 1, 0, 1, 1)
        assert (seq - (2**32 - 2)) & 0xFFFFFFFF == i
        assert (alen, atype, value) == (8, _native.ATTR_TGID, ident)


def test_a_lookup_straddling_the_seq_wrap_maps_every_reply(fake, monkeypatch):
    conn = fake(live={1, 2, 3, 5}, shuffle=True).connection()
    monkeypatch.setattr(netlink, "next_seq", lambda n=1: 2**32 - 2)
    got = conn.pids([1, 2, 3, 4, 5])
    assert got.records["id"].tolist() == [1, 2, 3, 5] and got.missing.tolist() == [4]


@pytest.mark.parametrize("bad, exc", [([-1], ValueError), ([2**32], ValueError), ([5, 0], ValueError),
                                      ([1.5], TypeError), (["1"], TypeError)])
def test_ids_are_validated(bad, exc):
    with pytest.raises(exc):
        queries.as_ids(bad, "pids")


def test_ids_accept_iterables():
    assert queries.as_ids((i for i in [3, 1, 2]), "pids").tolist() == [3, 1, 2]
    assert queries.as_ids(range(1, 4), "pids").dtype == np.uint32
    assert queries.as_ids([], "pids").size == 0


# ---- a fake kernel (tests/fakekernel.py) ---------------------------------------------------------
@pytest.fixture
def fake():
    made = []

    def make(*args, **kw):
        k = QueryKernel(*args, **kw)
        made.append(k)
        return k

    yield make
    for k in made:
        k.close()


def test_bulk_lookup_keeps_request_order_and_reports_missing(fake):
    ids = [7, 100, 3, 55, 9, 3, 12]
    conn = fake(live={3, 7, 9, 12}, shuffle=True).connection()
    got = conn.pids(ids)
    assert isinstance(got, Lookup)
    assert got.ids.tolist() == ids
    assert got.found.tolist() == [True, False, True, False, True, True, True]
    assert got.records["id"].tolist() == [7, 3, 9, 3, 12]
    assert got.records["ac_pid"].tolist() == [7, 3, 9, 3, 12]
    assert got.records["ac_utime"].tolist() == [70, 30, 90, 30, 120]
    assert got.missing.tolist() == [100, 55]
    assert got.resent == 0
    assert (got.records["kind"] == layout.KIND_PID).all()


def test_rounds_never_exceed_in_flight(fake):
    k = fake(live=range(0, 1000, 2))
    conn = k.connection()
    conn.max_in_flight = 7
    got = conn.pids(range(1, 101))
    assert max(k.request_datagrams) == 7 * 28
    assert len(k.request_datagrams) == 15  # ceil(100 / 7)
    assert got.records["id"].tolist() == list(range(2, 101, 2))
    assert got.missing.tolist() == list(range(1, 100, 2))


def test_tgid_lookup_uses_the_tgid_attribute(fake):
    conn = fake(live={42}).connection()
    rec = conn.tgid(42)
    assert rec["kind"] == layout.KIND_TGID and rec["id"] == 42
    with pytest.raises(NoSuchTaskError) as e:
        conn.tgid(43)
    assert isinstance(e.value, ProcessLookupError) and "43" in str(e.value)


def test_single_lookup_returns_one_record(fake):
    conn = fake(live={5}).connection()
    rec = conn.pid(5)
    assert isinstance(rec, np.void) and rec.dtype == layout.DTYPE
    assert rec["ac_comm"] == b"fake5"
    with pytest.raises(NoSuchTaskError):
        conn.pid(6)


def test_single_lookup_skips_stale_replies_and_resends_unqueued(fake):
    tries = []

    def policy(seq, ident):
        tries.append(seq)
        if len(tries) == 1:
            stale = wire.taskstats_msg(wire.aggr(1, 999, wire.stats(16, {"ac_pid": 999})),
                                       seq=seq ^ 0x5555)
            return [stale, wire.error_msg(-errno.EPERM, seq ^ 0x5555),
                    wire.error_msg(-errno.EAGAIN, seq)]
        return None

    conn = fake(live={5}, policy=policy).connection()
    rec = conn.pid(5)
    assert rec["ac_pid"] == 5 and rec["seq"] == tries[0]
    assert len(tries) == 2 and tries[0] == tries[1]  # the same request, sent again


def test_single_lookup_errors(fake):
    conn = fake(live={1}, policy=lambda seq, ident: [wire.error_msg(-errno.EPERM, seq)]).connection()
    with pytest.raises(PermissionDeniedError, match="CAP_NET_ADMIN"):
        conn.pid(1)
    conn = fake(live={1}, reply=False).connection(timeout=0.2)
    with pytest.raises(ReplyTimeoutError, match="pid 1"):
        conn.pid(1)
    with pytest.raises(ValueError):
        conn.pid(-1)
    with pytest.raises(TypeError):
        conn.pid(1.0)


def test_stale_replies_of_other_batches_are_ignored(fake):
    def policy(seq, ident):
        stale = wire.taskstats_msg(wire.aggr(1, 999, wire.stats(16, {"ac_pid": 999})),
                                   seq=(seq + 100_000) & 0xFFFFFFFF)
        stale_err = wire.error_msg(-errno.EPERM, (seq - 100_000) & 0xFFFFFFFF)
        return [stale, stale_err] + k.default_answer(seq, 1, ident)

    k = fake(live={1, 2, 3}, policy=policy)
    got = k.connection().pids([1, 2, 4, 3])
    assert got.records["id"].tolist() == [1, 2, 3]
    assert got.missing.tolist() == [4]


def test_permission_error_names_the_capability(fake):
    k = fake(live={1}, policy=lambda seq, ident: [wire.error_msg(-errno.EPERM, seq)])
    conn = k.connection()
    with pytest.raises(PermissionDeniedError) as e:
        conn.pids([1, 2, 3])
    assert isinstance(e.value, PermissionError) and e.value.errno == errno.EPERM
    assert "CAP_NET_ADMIN" in str(e.value)


def test_connection_recovers_after_an_abandoned_batch(fake):
    refuse = {"on": True}

    def policy(seq, ident):
        if refuse["on"] and ident == 2:
            return [wire.error_msg(-errno.EINVAL, seq)]
        return None

    k = fake(live={1, 2, 3}, policy=policy)
    conn = k.connection()
    with pytest.raises(OSError) as e:
        conn.pids([1, 2, 3])
    assert e.value.errno == errno.EINVAL
    refuse["on"] = False
    time.sleep(0.05)  # the reply to 3 is now queued: the next batch must not take it
    got = conn.pids([3, 1])
    assert got.records["id"].tolist() == [3, 1]


def test_requests_the_kernel_could_not_answer_are_resent(fake):
    tries = {}

    def policy(seq, ident):
        tries[ident] = tries.get(ident, 0) + 1
        if ident in (2, 4) and tries[ident] == 1:
            return [wire.error_msg(-errno.EAGAIN, seq)]  # reply could not be queued
        return None

    conn = fake(live={1, 2, 3, 4}, policy=policy).connection()
    got = conn.pids([1, 2, 3, 4])
    assert got.records["id"].tolist() == [1, 2, 3, 4]
    assert got.resent == 2
    assert tries == {1: 1, 2: 2, 3: 1, 4: 2}


def test_a_reply_that_never_comes_times_out(fake):
    conn = fake(live=set(), reply=False).connection(timeout=0.2)
    t0 = time.monotonic()
    with pytest.raises(ReplyTimeoutError) as e:
        conn.pids([1, 2])
    assert isinstance(e.value, TimeoutError)
    assert 0.15 < time.monotonic() - t0 < 2
    assert "2 of 2 requests unanswered" in str(e.value)


def test_a_lookup_nobody_answers_times_out(fake):
    conn = fake(live=set(), reply=False).connection(timeout=0.1)
    t0 = time.monotonic()
    with pytest.raises(ReplyTimeoutError):
        conn.pids([1, 2, 3])
    assert time.monotonic() - t0 < 1


def test_signal_during_wait_runs_its_handler_and_propagates(fake):
    conn = fake(live=set(), reply=False).connection(timeout=5)

    def handler(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        t0 = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            conn.pids([1])
        assert time.monotonic() - t0 < 1
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def test_signal_whose_handler_returns_keeps_waiting(fake):
    conn = fake(live=set(), reply=False).connection(timeout=0.3)
    fired = []
    old = signal.signal(signal.SIGALRM, lambda *a: fired.append(time.monotonic()))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        t0 = time.monotonic()
        with pytest.raises(ReplyTimeoutError):
            conn.pids([1])
        assert fired and time.monotonic() - t0 >= 0.25
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def test_malformed_reply_raises_decode_error(fake):
    def policy(seq, ident):
        short = wire.stats(16, size=100)  # STATS payload cut short
        return [wire.taskstats_msg(wire.aggr(1, ident, short), seq=seq)]

    with pytest.raises(DecodeError):
        fake(live={1}, policy=policy).connection().pids([1])


def test_truncated_datagram_is_never_decoded_silently(fake):
    def policy(seq, ident):
        big = wire.taskstats_msg(wire.aggr(1, ident, wire.stats(16)), wire.nla(6, b"\0" * 9000),
                                 seq=seq)
        return [big]

    with pytest.raises(DecodeError) as e:  # found at the latest when the wait ends
        fake(live={1}, policy=policy).connection(timeout=0.3).pids([1])
    assert "truncated" in str(e.value)


def test_empty_lookup_sends_nothing(fake):
    k = fake(live={1})
    got = k.connection().pids([])
    assert len(got.records) == 0 and len(got.missing) == 0
    assert k.request_datagrams == []


def test_closed_connection_refuses_io(fake):
    conn = fake(live={1}).connection()
    conn.close()
    conn.close()
    assert conn.closed
    with pytest.raises(ValueError):
        conn.pids([1])
    with pytest.raises(ValueError):
        conn.fileno()


def test_delayacct_warning_once_per_connection(fake, monkeypatch, tmp_path):
    sysctl = tmp_path / "task_delayacct"
    sysctl.write_text("0\n")
    monkeypatch.setattr(da, "SYSCTL_PATH", str(sysctl))
    conn = fake(live={1}).connection(warn_delayacct=True)
    with pytest.warns(da.DelayAccountingOffWarning, match="task_delayacct") as w:
        conn.pids([1])
    assert w[0].filename == __file__  # points at the caller, not the library
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        conn.pids([1])  # once per connection
        conn.pid(1)
    single = fake(live={1}).connection(warn_delayacct=True)
    with pytest.warns(da.DelayAccountingOffWarning) as w:
        single.pid(1)
    assert w[0].filename == __file__
    sysctl.write_text("1\n")
    conn2 = fake(live={1}).connection(warn_delayacct=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        conn2.pids([1])  # on: nothing to say


# ---- delay accounting switch -----------------------------------------------------------------------
def test_delayacct_fields_are_the_switched_delay_classes():
    f = set(da.DELAYACCT_FIELDS)
    assert {"blkio_count", "blkio_delay_total", "swapin_delay_max", "irq_delay_min",
            "wpcopy_count", "thrashing_delay_max_ts_sec"} <= f
    assert not {n for n in f if n.startswith("cpu_")}
    assert all(n in layout.DTYPE.names for n in f)


def test_delayacct_context_manager_restores(monkeypatch, tmp_path):
    sysctl = tmp_path / "task_delayacct"
    sysctl.write_text("0\n")
    monkeypatch.setattr(da, "SYSCTL_PATH", str(sysctl))
    assert da.delayacct_enabled() is False
    with da.delay_accounting(True) as previous:
        assert previous is False
        assert sysctl.read_text().strip() == "1" and da.delayacct_enabled() is True
    assert sysctl.read_text().strip() == "0"
    with pytest.raises(RuntimeError):
        with da.delay_accounting(True):
            raise RuntimeError("boom")
    assert da.delayacct_enabled() is False


def test_delayacct_without_the_switch(monkeypatch, tmp_path):
    monkeypatch.setattr(da, "SYSCTL_PATH", str(tmp_path / "missing"))
    assert da.delayacct_enabled() is None
    with pytest.raises(FileNotFoundError, match="CONFIG_TASK_DELAY_ACCT"):
        da.set_delayacct(True)


# ---- messages ------------------------------------------------------------------------------------
def test_permission_hint_names_a_user_namespace(monkeypatch):
    initial = {"user": True}
    monkeypatch.setattr(queries.namespaces, "in_initial", initial.get)
    assert "CAP_NET_ADMIN" in queries.permission_hint()
    assert "user namespace" not in queries.permission_hint()
    initial["user"] = False    # a child namespace
    assert "non-initial user namespace" in queries.permission_hint()
    initial.clear()            # cannot be told: say what is generally true
    assert "CAP_NET_ADMIN" in queries.permission_hint()


def test_missing_hint_names_a_pid_namespace(monkeypatch):
    initial = {"pid": True}
    monkeypatch.setattr(queries.namespaces, "in_initial", initial.get)
    assert "namespace" not in queries.missing_hint()
    initial["pid"] = False
    assert "non-initial pid namespace" in queries.missing_hint()


def test_cgroup_error_message_tells_v2_from_non_cgroup(tmp_path, monkeypatch):
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert cgroupstats.fs_magic(fd) not in (None, cgroupstats.CGROUP_SUPER_MAGIC,
                                              cgroupstats.CGROUP2_SUPER_MAGIC)
        text = cgroupstats.cgroup_einval_message("/x", fd)
        assert "/x is not a cgroup directory" in text and "cgroup v1" in text
        monkeypatch.setattr(cgroupstats, "fs_magic", lambda fd: cgroupstats.CGROUP2_SUPER_MAGIC)
        text = cgroupstats.cgroup_einval_message("/x", fd)
        assert "/x is a cgroup v2 directory" in text and "mount -t cgroup" in text
    finally:
        os.close(fd)


# ---- ids no task can have ------------------------------------------------------------------------
@pytest.mark.parametrize("call", ["pid", "tgid"])
@pytest.mark.parametrize("bad", [0, -1, 2**32])
def test_an_id_no_task_can_have_is_a_value_error_like_the_cli_says(fake, call, bad):
    conn = fake(live={1}).connection()
    with pytest.raises(InvalidTaskIdError) as e:
        getattr(conn, call)(bad)
    assert isinstance(e.value, ValueError) and "positive" in str(e.value)
    with pytest.raises(InvalidTaskIdError):
        conn.pids([1, bad]) if call == "pid" else conn.tgids([bad])


def test_a_zero_among_uint32_ids_is_refused_as_any_other_bad_id(fake):
    # uint32 arrays (what the C core lists) take the short check: only a zero can be wrong
    conn = fake(live={1, 2}).connection()
    with pytest.raises(InvalidTaskIdError, match="positive"):
        conn.pids(np.array([1, 0, 2], np.uint32))
    strided = np.array([1, 9, 2, 9], np.uint32)[::2]
    assert conn.pids(strided).records["ac_pid"].tolist() == [1, 2]


# ---- process rows: what snapshot() makes of threads and thread groups ---------------------------
def test_process_rows_carry_the_process_not_the_leader_thread(fake):
    tasks = {
        10: dict(ac_tgid=10, ac_comm=b"lead", ac_uid=7, ac_utime=100, ac_stime=10, nvcsw=1,
                 read_char=1024, ac_minflt=5, hiwater_rss=900, cpu_delay_total=1000,
                 cpu_count=1, cpu_delay_max=40, cpu_delay_min=30),
        11: dict(ac_tgid=10, ac_comm=b"worker", ac_uid=7, ac_utime=200, ac_stime=20, nvcsw=2,
                 read_char=2048, ac_minflt=6, hiwater_rss=900, cpu_delay_total=2000,
                 cpu_count=2, cpu_delay_max=90, cpu_delay_min=10),
        12: dict(ac_tgid=10, ac_comm=b"worker", ac_utime=300, ac_stime=30, read_char=4096,
                 ac_majflt=1),
        20: dict(ac_tgid=20, ac_comm=b"single", ac_utime=50, read_char=3072),
        31: dict(ac_tgid=30, ac_comm=b"orphan", ac_utime=1),     # its leader 30 has exited
    }
    dead = {10: dict(ac_utime=1000, ac_stime=100, cpu_delay_total=5000, cpu_count=4)}
    conn = fake(tasks=tasks, dead=dead).connection()
    tids = np.array([10, 11, 12, 20, 31, 30], np.uint32)
    owners = np.array([10, 10, 10, 20, 30, 30], np.uint32)
    pids = np.array([10, 20, 30], np.uint32)
    got = snapshot_rows.process_rows(pids, tids, owners, conn.pids(tids), conn.tgids(pids))
    assert got.found.tolist() == [True, True, False] and got.missing.tolist() == [30]
    ten, twenty = got.records
    # times, context switches, delays: the TGID record, exited threads included
    assert ten["ac_utime"] == 100 + 200 + 300 + 1000 and ten["ac_stime"] == 10 + 20 + 30 + 100
    assert ten["cpu_delay_total"] == 1000 + 2000 + 5000 and ten["cpu_count"] == 1 + 2 + 4
    assert ten["nvcsw"] == 3
    # I/O and faults: summed over the live threads' PID records
    assert ten["read_char"] == 1024 + 2048 + 4096
    assert ten["ac_minflt"] == 11 and ten["ac_majflt"] == 1
    # extremes over the threads that had such a delay
    assert ten["cpu_delay_max"] == 90 and ten["cpu_delay_min"] == 10
    # identity and memory: the leader's
    assert ten["ac_comm"] == b"lead" and ten["ac_uid"] == 7 and ten["hiwater_rss"] == 900
    assert ten["id"] == 10 and ten["kind"] == layout.KIND_PID
    assert twenty["ac_utime"] == 50 and twenty["read_char"] == 3072 and twenty["ac_comm"] == b"single"


def test_every_column_of_a_process_row_has_one_source():
    rules = snapshot_rows.PROCESS_COLUMNS
    assert set(rules.values()) == {"tgid", "sum", "max", "min"}
    assert set(rules) <= set(layout.RECORD_FIELDS)
    # the kernel's TGID record fills exactly what "tgid" takes, plus per-thread extremes
    assert {n for n, r in rules.items() if r == "tgid"} <= layout.TGID_FIELDS
    assert "ac_comm" not in rules and "hiwater_rss" not in rules   # the leader's


# ---- parallel lookups ------------------------------------------------------------------------------
def test_workers_split_a_lookup_over_sockets_and_keep_its_order(fake):
    k = fake(live=range(2, 5000, 3), shuffle=True)
    conn = k.connection()
    ids = np.arange(1, 4001, dtype=np.uint32)[::-1].copy()
    one = conn.pids(ids)
    two = conn.pids(ids, workers=2)
    assert len(conn._parallel.helpers) == 1                       # one extra socket, kept
    assert (one.found == two.found).all() and (one.ids == two.ids).all()
    assert one.records["id"].tolist() == two.records["id"].tolist() == ids[ids % 3 == 2].tolist()
    snap_ids = conn.tgids(ids, workers=3)
    assert snap_ids.records["kind"].tolist() == [layout.KIND_TGID] * len(one.records)
    conn.close()
    assert all(h.closed for h in conn._parallel.helpers) or conn._parallel.helpers == []


def _differing_fields(a: np.ndarray, b: np.ndarray) -> list:
    """The fields in which two record arrays differ, but for their datagrams' receive time and
    seq (alignment holes are not compared: nothing writes them)."""
    return [name for name in layout.RECORD_FIELDS
            if name not in ("time_ns", "seq") and not (a[name] == b[name]).all()]


@pytest.mark.parametrize("live", [
    set(range(1, 1001)) - {1, 3, 250, 499, 500},          # missing ids in the first part only
    set(range(1, 1001)) - {501, 502, 777, 999, 1000},     # ... in the second part only
    set(range(1, 1001)) - {2, 400, 600, 1000},            # ... in both
    set(range(501, 1001)),                                # the first part finds nothing
    set(range(1, 501)),                                   # the second part finds nothing
    set(range(1, 1001, 7)),                               # mostly missing: the result is a copy
    set(),
])
@pytest.mark.parametrize("shuffle", [False, True])
def test_workers_give_the_records_one_worker_gives(fake, live, shuffle):
    # ids 1..1000 split 1..500 | 501..1000: the first part writes into the joined array itself
    conn = fake(live=live, shuffle=shuffle).connection()
    ids = np.arange(1, 1001, dtype=np.uint32)
    one = conn.pids(ids)
    two = conn.pids(ids, workers=2)
    assert len(conn._parallel.helpers) == 1
    assert two.records["ac_pid"].tolist() == one.records["ac_pid"].tolist() == sorted(live)
    assert two.records["id"].tolist() == sorted(live)
    assert _differing_fields(two.records, one.records) == []
    assert (two.records["kind"] == layout.KIND_PID).all()
    assert two.found.tolist() == one.found.tolist() == [int(i) in live for i in ids]
    assert two.missing.tolist() == sorted(set(range(1, 1001)) - live)
    assert two.resent == one.resent == 0
    base = two.records.base
    # a mostly empty array is not kept alive by a few records (a base may be the rows' bytes)
    assert base is None or (base.nbytes - two.records.nbytes
                            <= max(len(two.records), queries._SPARE_ROWS) * layout.DTYPE.itemsize)


def test_a_lookup_into_a_given_array_writes_only_its_own_rows(fake):
    conn = fake(live={2, 3, 5}, shuffle=True).connection()
    main = conn._parallel.main
    ids = queries.as_ids([5, 4, 3, 2, 1], "pids")
    out = np.zeros(len(ids) + _native.ROWS_PER_DATAGRAM + 4, layout.DTYPE)
    out["ac_pid"] = 999
    got = main.lookup(ids, _native.ATTR_PID, out=out)
    assert np.shares_memory(got.records, out) and got.records.base is out   # a view, not a copy
    assert got.records["ac_pid"].tolist() == out["ac_pid"][:3].tolist() == [5, 3, 2]
    assert out["ac_pid"][len(ids) + _native.ROWS_PER_DATAGRAM:].tolist() == [999] * 4


@pytest.mark.parametrize("out, words", [
    (np.empty(5 + _native.ROWS_PER_DATAGRAM - 1, layout.DTYPE), "needs at least 7"),
    (np.empty(0, layout.DTYPE), "needs at least 7"),
    (np.empty(64, np.uint8), "DTYPE"),
    (np.empty((2, 8), layout.DTYPE), "one-dimensional"),
    (np.empty(16, layout.DTYPE)[::2], "C-contiguous"),
    ([None] * 16, "list"),
])
def test_a_given_array_too_short_or_of_another_dtype_is_refused(fake, out, words):
    conn = fake(live={1, 2}).connection()
    ids = queries.as_ids([1, 2, 3, 4, 5], "pids")
    with pytest.raises(ValueError, match=words):
        conn._parallel.main.lookup(ids, _native.ATTR_PID, out=out)
    assert conn.pids(ids).records["id"].tolist() == [1, 2]     # nothing was sent: still usable


def test_claims_hand_out_every_id_once_a_round_at_a_time_from_either_end():
    claims = _native.QueryClaims(np.arange(1, 10_001, dtype=np.uint32), 7, step=256)
    claimed = []                      # (side, lo, hi) in the order handed out, sides alternating
    while (span := claims.take(from_back=len(claimed) % 2 == 1)) is not None:
        claimed.append(("front back".split()[len(claimed) % 2], *span))
    spans = sorted((lo, hi) for _, lo, hi in claimed)
    assert spans[0][0] == 0 and spans[-1][1] == 10_000
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))       # disjoint, nothing left out
    front = [(lo, hi) for side, lo, hi in claimed if side == "front"]
    back = [(lo, hi) for side, lo, hi in claimed if side == "back"]
    assert all(a[1] == b[0] for a, b in zip(front, front[1:]))       # the caller's run on in place
    assert all(a[0] == b[1] for a, b in zip(back, back[1:]))         # the helpers' run backwards
    sizes = [hi - lo for _, lo, hi in claimed]
    assert sizes[:-1] == [256] * (len(sizes) - 1) and 0 < sizes[-1] <= 256
    assert claims.take() is None and claims.take(from_back=True) is None
    claims = _native.QueryClaims(np.arange(1, 10_001, dtype=np.uint32), 7, step=256)
    assert claims.take() == (0, 256)
    claims.stop()
    assert claims.take() is None and claims.take(from_back=True) is None
    with pytest.raises(ValueError):
        _native.QueryClaims(np.arange(1, 3, dtype=np.uint32), 7, step=0)


def test_claims_taken_by_racing_threads_hand_out_every_id_exactly_once():
    # one id a claim, from both ends at once: the compare-and-swap is what keeps them apart
    n = 60_000
    claims = _native.QueryClaims(np.ones(n, np.uint32), 1, step=1)
    taken = {False: [], True: []}

    def claim(from_back):
        while (span := claims.take(from_back)) is not None:
            taken[from_back].append(span[0])

    threads = [threading.Thread(target=claim, args=(side,)) for side in (False, True, True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = np.sort(np.array(taken[False] + taken[True]))
    assert (got == np.arange(n)).all()
    assert taken[False] == sorted(taken[False])


def test_claims_let_a_slow_worker_take_less_and_all_finish_within_a_round():
    claims = _native.QueryClaims(np.ones(8_192, np.uint32), 1, step=256)
    done, taken = {}, {"fast": 0, "slow": 0}

    def work(name, from_back, seconds_per_id):
        while (span := claims.take(from_back)) is not None:
            time.sleep((span[1] - span[0]) * seconds_per_id)
            taken[name] += span[1] - span[0]
        done[name] = time.perf_counter()

    slow = threading.Thread(target=work, args=("slow", True, 6e-6))
    slow.start()
    work("fast", False, 2e-6)
    slow.join()
    # fixed halves would have the fast one idle for two thirds of the slow one's time
    assert taken["fast"] + taken["slow"] == 8_192 and taken["fast"] > 1.5 * taken["slow"]
    assert abs(done["fast"] - done["slow"]) < 256 * 6e-6 + 0.05   # within about one round


@pytest.mark.parametrize("found", [
    "", "1", "0", "1111", "0000", "0110", "1001", "101010", "0001111000111", "1" * 40 + "0" + "1" * 9,
])
def test_compacting_placed_records_keeps_the_found_rows_in_order_and_touches_no_other(found):
    n = len(found)
    state = np.array([_native.QUERY_FOUND if c == "1" else _native.QUERY_MISSING for c in found],
                     np.uint8)
    placed = np.zeros(n + _native.ROWS_PER_DATAGRAM + 3, layout.DTYPE)
    placed["ac_pid"] = np.arange(len(placed)) + 100
    got = _native.compact_placed(placed, state)
    assert got.base is placed and len(got) == found.count("1")
    assert got["ac_pid"].tolist() == [100 + i for i, c in enumerate(found) if c == "1"]
    assert placed["ac_pid"][n:].tolist() == list(range(100 + n, 100 + len(placed)))
    with pytest.raises(ValueError, match="needs at least"):
        _native.compact_placed(placed[:n + 1], state)


def test_claimants_placing_into_one_array_write_only_their_ids_rows(fake):
    # the rows of ids not found and the rows past the ids stay as they were until compacted
    live = set(range(1, 2001)) - {1, 700, 1500, 2000}
    # the answer to the caller's first request waits, so the helper surely claims rounds too
    k = fake(live=live, shuffle=True,
             policy=lambda seq, ident: time.sleep(0.5) if ident == 1 and k.slow else None)
    k.slow = False
    conn = k.connection()
    conn.pids(np.arange(1, 600, dtype=np.uint32), workers=2)     # makes the helper
    k.slow = True
    main, helper = conn._parallel.main, conn._parallel.helpers[0]
    main.max_in_flight = helper.max_in_flight = 64
    ids = np.arange(1, 2001, dtype=np.uint32)
    claims = _native.QueryClaims(ids, netlink.next_seq(len(ids)), 64)
    placed = np.zeros(len(ids) + _native.ROWS_PER_DATAGRAM + 2, layout.DTYPE)
    placed["ac_pid"] = 7
    shares = []
    worker = threading.Thread(target=lambda: shares.append(
        helper.lookup_claimed(claims, _native.ATTR_PID, placed, from_back=True)))
    worker.start()
    part = main.lookup_claimed(claims, _native.ATTR_PID, placed, from_back=False)
    worker.join()
    assert part.rows + shares[0].rows == len(live) and part.rows and shares[0].rows
    assert placed["ac_pid"][ids - 1].tolist() == [int(i) if i in live else 7 for i in ids]
    assert placed["ac_pid"][len(ids):].tolist() == [7] * (_native.ROWS_PER_DATAGRAM + 2)
    with pytest.raises(ValueError, match="placed"):
        part.records()
    assert _native.compact_placed(placed, claims.state)["ac_pid"].tolist() == sorted(live)
    with pytest.raises(ValueError, match="placed"):   # claimants without one array to share
        _native.Query(main._drain, _native.ATTR_PID, ids, 1, 64, 1000, claims=claims)


def test_a_claimed_round_longer_than_a_sockets_own_rounds_is_sent_in_those(fake):
    live = set(range(1, 3000)) - {5, 700, 2999}
    conn = fake(live=live, shuffle=True).connection()
    ids = np.arange(1, 3001, dtype=np.uint32)
    conn.pids(ids, workers=2)                       # makes the helper
    conn._parallel.main.max_in_flight = 200         # claims of 200 ids ...
    conn._parallel.helpers[0].max_in_flight = 7     # ... which the helper sends 7 at a time
    two = conn.pids(ids, workers=2)
    assert two.records["id"].tolist() == sorted(live)
    assert two.found.tolist() == [int(i) in live for i in ids]
    assert two.resent == 0


@pytest.mark.parametrize("refused", [3, 3990])   # in the caller's first span, in a helper's
def test_a_refusal_in_any_workers_span_raises_and_leaves_the_connection_usable(fake, refused):
    k = fake(live=range(1, 4001), policy=lambda seq, ident: [wire.error_msg(-errno.EPERM, seq)]
             if ident == refused and k.refusing else None)
    k.refusing = True
    conn = k.connection()
    ids = np.arange(1, 4001, dtype=np.uint32)
    with pytest.raises(PermissionDeniedError):
        conn.pids(ids, workers=2)
    k.refusing = False
    assert conn.pids(ids, workers=2).records["id"].tolist() == ids.tolist()
    assert conn.pids(ids).records["id"].tolist() == ids.tolist()


def test_workers_must_be_positive(fake):
    conn = fake(live={1}).connection()
    with pytest.raises(ValueError):
        conn.pids([1], workers=0)
    assert conn.pids([1], workers=8).records["id"].tolist() == [1]   # too few ids to split
