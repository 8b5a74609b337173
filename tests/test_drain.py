"""tsf_drain at the byte level: datagrams built with tests/wire.py are fed through AF_UNIX
SOCK_DGRAM socketpairs (one datagram per send, like netlink) and drained by the C core.

Covers decoding into the record space, per-socket counters, round-robin fairness, waiting
(timeout, min_records, linger), wake fds, signals, MSG_TRUNC, notes, a full record space,
bad fds, and the per-CPU sequence tracker (gaps, a migrated task's foreign seq, wrap-around).
No kernel needed.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import numpy as np
import pytest

import wire
from taskstats_fast import layout
from taskstats_fast._native import NOTE_ACK, NOTE_BAD, NOTE_DTYPE, NOTE_ERROR, PLAN, ffi, lib

FAMILY = wire.TASKSTATS_FAMILY


def exit_msg(pid, seq, *, tgid=None, version=16, port=0):
    """An exit event: AGGR_PID, plus AGGR_TGID for the last thread of a group."""
    parts = [wire.aggr(1, pid, wire.stats(version, {"ac_pid": pid, "ac_exitcode": pid * 256}))]
    if tgid is not None:
        parts.append(wire.aggr(2, tgid, wire.stats(version, {"ac_pid": 0})))
    return wire.nlmsg(FAMILY, wire.genl(wire.CMD_NEW, parts), seq=seq, pid=port)


class Drain:
    """Buffers and C structs for tsf_drain over a list of fds."""

    def __init__(self, fds, *, capacity=256, notes_cap=64, slot_size=8192, nslots=64,
                 track_seq=0, shards=None, wake=()):
        self.arena = np.zeros(nslots * slot_size, np.uint8)
        self.records = np.zeros(capacity, layout.DTYPE)
        self.notes = np.zeros(max(notes_cap, 1), NOTE_DTYPE)
        all_fds = list(fds) + list(wake)
        self.src = ffi.new("struct tsf_source[]", len(all_fds))
        for i, fd in enumerate(all_fds):
            self.src[i].fd = fd
            self.src[i].shard = shards[i] if shards and i < len(fds) else i
            self.src[i].track_seq = track_seq
            self.src[i].flags = lib.TSF_SOURCE_WAKE if i >= len(fds) else 0
        self.nsrc = len(all_fds)
        self.args = ffi.new("struct tsf_drain_args *")
        self.args.arena = ffi.cast("uint8_t *", ffi.from_buffer(self.arena))
        self.args.slot_size = slot_size
        self.args.nslots = nslots
        self.args.records = ffi.cast("uint8_t *", ffi.from_buffer(self.records))
        self.args.capacity = capacity
        self.args.notes = ffi.cast("struct tsf_note *", ffi.from_buffer(self.notes))
        self.args.notes_cap = notes_cap
        self.args.family = FAMILY
        self.res = ffi.new("struct tsf_drain_result *")

    def __call__(self, *, timeout_ms=0, min_records=1, linger_ms=0):
        self.args.timeout_ms = timeout_ms
        self.args.min_records = min_records
        self.args.linger_ms = linger_ms
        n = lib.tsf_drain(PLAN, self.src, self.nsrc, self.args, self.res)
        assert n == self.res.records
        return self.records[:n].copy()

    def got_notes(self):
        return self.notes[:min(self.res.notes, self.args.notes_cap)]


@pytest.fixture
def pairs():
    made = []

    def make(n=1, rcvbuf=1 << 20):
        out = []
        for _ in range(n):
            a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
            a.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            b.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, rcvbuf)
            made.extend((a, b))
            out.append((a, b))
        return out

    yield make
    for s in made:
        s.close()


def test_decodes_every_datagram_into_records(pairs):
    (rx, tx), = pairs()
    tx.send(exit_msg(101, 7))
    tx.send(exit_msg(102, 8, tgid=100))
    tx.send(exit_msg(103, 9))
    d = Drain([rx.fileno()], shards=[5])
    before = time.time_ns()
    recs = d()
    assert recs["id"].tolist() == [101, 102, 100, 103]
    assert recs["kind"].tolist() == [1, 1, 2, 1]
    assert recs["ac_pid"].tolist() == [101, 102, 0, 103]
    assert recs["ac_exitcode"].tolist() == [101 * 256, 102 * 256, 0, 103 * 256]
    assert recs["seq"].tolist() == [7, 8, 8, 9]
    assert (recs["shard"] == 5).all()
    assert (recs["time_ns"] >= before - 10**9).all() and (recs["time_ns"] <= time.time_ns()).all()
    src = d.src[0]
    assert (src.datagrams, src.records, d.res.datagrams) == (3, 4, 3)
    assert src.bytes == sum(len(m) for m in (exit_msg(101, 7), exit_msg(102, 8, tgid=100), exit_msg(103, 9)))
    assert not d.res.timed_out and not d.res.error


def test_nothing_queued_times_out_without_blocking(pairs):
    (rx, _), = pairs()
    d = Drain([rx.fileno()])
    t0 = time.monotonic()
    assert len(d(timeout_ms=0)) == 0
    assert d.res.timed_out == 1
    assert len(d(timeout_ms=80)) == 0
    assert d.res.timed_out == 1
    assert 0.07 < time.monotonic() - t0 < 1.0


def _send_later(sock, messages, delay):
    def run():
        for m in messages:
            time.sleep(delay)
            sock.send(m)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_waits_for_min_records(pairs):
    (rx, tx), = pairs()
    t = _send_later(tx, [exit_msg(i, i) for i in range(1, 6)], 0.01)
    d = Drain([rx.fileno()])
    recs = d(timeout_ms=5000, min_records=5)
    t.join()
    assert recs["id"].tolist() == [1, 2, 3, 4, 5]
    assert not d.res.timed_out


def test_linger_gathers_a_burst_into_one_call(pairs):
    (rx, tx), = pairs()
    tx.send(exit_msg(1, 1))
    t = _send_later(tx, [exit_msg(i, i) for i in range(2, 12)], 0.002)
    d = Drain([rx.fileno()])
    t0 = time.monotonic()
    recs = d(timeout_ms=5000, min_records=1, linger_ms=300)
    elapsed = time.monotonic() - t0
    t.join()
    assert recs["id"].tolist() == list(range(1, 12))
    assert 0.25 < elapsed < 2.0


def test_without_linger_returns_as_soon_as_min_records_are_in(pairs):
    (rx, tx), = pairs()
    tx.send(exit_msg(1, 1))
    t = _send_later(tx, [exit_msg(2, 2)], 0.2)
    d = Drain([rx.fileno()])
    t0 = time.monotonic()
    recs = d(timeout_ms=5000, min_records=1)
    assert time.monotonic() - t0 < 0.15
    assert recs["id"].tolist() == [1]
    t.join()
    assert d(timeout_ms=1000)["id"].tolist() == [2]


def test_linger_is_bounded_by_the_timeout_and_skipped_when_nonblocking(pairs):
    (rx, tx), = pairs()
    d = Drain([rx.fileno()])
    tx.send(exit_msg(1, 1))
    t0 = time.monotonic()
    assert len(d(timeout_ms=0, linger_ms=500)) == 1
    assert time.monotonic() - t0 < 0.1
    tx.send(exit_msg(2, 2))
    t0 = time.monotonic()
    assert len(d(timeout_ms=50, linger_ms=5000)) == 1
    assert time.monotonic() - t0 < 1.0


def test_linger_comes_before_the_receive_and_takes_a_quiet_socket_too(pairs):
    """The first readable socket starts the linger; a socket quiet then that gets data during
    it is received from in the same call (no second wake-up for it)."""
    (rx0, tx0), (rx1, tx1) = pairs(2)
    tx0.send(exit_msg(1, 1))
    t = _send_later(tx1, [exit_msg(2, 1)], 0.05)
    d = Drain([rx0.fileno(), rx1.fileno()])
    recs = d(timeout_ms=5000, linger_ms=400)
    t.join()
    assert sorted(recs["id"].tolist()) == [1, 2]
    assert d.res.datagrams == 2


def test_drain_into_decodes_into_the_rows_it_is_given(pairs):
    (rx, tx), = pairs()
    d = Drain([rx.fileno()], capacity=8)
    for i in (1, 2, 3):
        tx.send(exit_msg(i, i))
    rows = ffi.from_buffer("uint8_t[]", d.records)
    n = lib.tsf_drain_into(PLAN, d.src, d.nsrc, d.args, d.res, rows, 8, 4, 4, 1000, 0)
    assert n == 3 == d.res.records
    assert d.records["id"].tolist() == [0] * 4 + [1, 2, 3, 0]


@pytest.mark.parametrize("start, capacity, linger", [(9, 0, 0), (8, 1, 0), (2, 7, 0),
                                                     (0, 8, 1 << 16)])
def test_drain_into_refuses_rows_outside_the_space(pairs, start, capacity, linger):
    (rx, tx), = pairs()
    d = Drain([rx.fileno()], capacity=8)
    tx.send(exit_msg(1, 1))
    rows = ffi.from_buffer("uint8_t[]", d.records)
    assert lib.tsf_drain_into(PLAN, d.src, d.nsrc, d.args, d.res, rows, 8, start, capacity,
                              0, linger) == lib.TSF_E_ARG
    assert d.src[0].datagrams == 0


def test_busy_socket_does_not_starve_the_others(pairs):
    (rx0, tx0), (rx1, tx1) = pairs(2)
    for i in range(300):
        tx0.send(exit_msg(1000 + i, i))
    for i in range(5):
        tx1.send(exit_msg(2000 + i, i))
    d = Drain([rx0.fileno(), rx1.fileno()], capacity=2048)
    recs = d()
    assert len(recs) == 305
    # round-robin by recvmmsg batch (64): socket 1 comes right after socket 0's first batch
    first_of_1 = int(np.argmax(recs["shard"] == 1))
    assert first_of_1 == 64
    assert recs["id"][recs["shard"] == 0].tolist() == [1000 + i for i in range(300)]


def test_full_record_space_leaves_the_rest_queued(pairs):
    (rx, tx), = pairs()
    for i in range(1, 11):
        tx.send(exit_msg(i, i, tgid=i))     # 2 records each
    d = Drain([rx.fileno()], capacity=7)
    seen = []
    for _ in range(10):
        recs = d()
        assert len(recs) <= 7
        seen += recs["id"][recs["kind"] == 1].tolist()
        if len(seen) == 10:
            break
    assert seen == list(range(1, 11))
    assert d.src[0].bad == 0


def test_truncated_datagrams_are_counted_not_decoded(pairs):
    (rx, tx), = pairs()
    tx.send(exit_msg(1, 1, tgid=1))         # ~1.2 KB: cut by a 512-byte slot
    tx.send(exit_msg(2, 2, tgid=2))
    tx.send(wire.error_msg(0, 5))           # 52 bytes: fits
    d = Drain([rx.fileno()], slot_size=512, track_seq=1)
    recs = d()
    assert len(recs) == 0
    assert d.src[0].truncated == 2 and d.src[0].datagrams == 3
    assert d.src[0].events == 2                        # the cut ones were exit events
    assert (d.src[0].next_seq, d.src[0].seq_lost) == (3, 0)    # and no false seq gap
    assert d.got_notes()["kind"].tolist() == [NOTE_ACK]


def test_kernel_errors_and_acks_become_notes(pairs):
    (rx, tx), = pairs()
    tx.send(wire.error_msg(0, 41))
    tx.send(wire.error_msg(-22, 42))
    tx.send(exit_msg(9, 3))
    d = Drain([rx.fileno()])
    recs = d(min_records=3)
    notes = d.got_notes()
    assert notes["kind"].tolist() == [NOTE_ACK, NOTE_ERROR]
    assert notes["seq"].tolist() == [41, 42]
    assert notes["code"].tolist() == [0, 22]
    assert d.src[0].kernel_errors == 1
    assert recs["id"].tolist() == [9]


def test_malformed_datagrams_are_counted(pairs):
    (rx, tx), = pairs()
    tx.send(wire.nlmsg(FAMILY, wire.genl(wire.CMD_NEW, [wire.nla(wire.TYPE_AGGR_PID, b"\xff\xff\x03\x00")])))
    tx.send(b"\x01\x02\x03")
    tx.send(exit_msg(4, 4))
    d = Drain([rx.fileno()])
    recs = d()
    assert recs["id"].tolist() == [4]
    assert d.src[0].bad == 2
    assert (d.got_notes()["kind"] == NOTE_BAD).sum() == 2


def test_notes_space_limits_the_batch_so_no_note_is_lost(pairs):
    (rx, tx), = pairs()
    for i in range(6):
        tx.send(wire.error_msg(0, i))
    d = Drain([rx.fileno()], notes_cap=2)
    got = []
    for _ in range(10):
        d(min_records=100)
        got += d.got_notes()["seq"].tolist()
        if len(got) == 6:
            break
    assert got == list(range(6))


def test_wake_fd_ends_a_wait(pairs):
    (rx, _), = pairs()
    r, w = os.pipe()
    try:
        d = Drain([rx.fileno()], wake=[r])
        threading.Timer(0.1, os.write, (w, b"x")).start()
        t0 = time.monotonic()
        assert len(d(timeout_ms=10_000)) == 0
        assert time.monotonic() - t0 < 5
        assert d.res.woken == 1 and not d.res.timed_out
        assert os.read(r, 1) == b"x"           # tsf_drain never reads the wake fd
    finally:
        os.close(r)
        os.close(w)


def test_wake_fd_also_cuts_a_linger_short(pairs):
    (rx, tx), = pairs()
    r, w = os.pipe()
    try:
        d = Drain([rx.fileno()], wake=[r])
        tx.send(exit_msg(1, 1))
        threading.Timer(0.1, os.write, (w, b"x")).start()
        t0 = time.monotonic()
        recs = d(timeout_ms=10_000, linger_ms=10_000)
        assert time.monotonic() - t0 < 5
        assert recs["id"].tolist() == [1] and d.res.woken == 1
    finally:
        os.close(r)
        os.close(w)


def test_signal_interrupts_the_wait(pairs):
    (rx, _), = pairs()
    d = Drain([rx.fileno()])
    hits = []
    old = signal.signal(signal.SIGALRM, lambda *a: hits.append(1))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        t0 = time.monotonic()
        d(timeout_ms=10_000)
        assert time.monotonic() - t0 < 5
        assert d.res.interrupted == 1 and not d.res.timed_out
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert hits == [1]


def test_closed_fd_is_reported_not_spun_on(pairs):
    (rx, _), = pairs()
    fd = os.dup(rx.fileno())
    os.close(fd)
    d = Drain([rx.fileno(), fd])
    d(timeout_ms=1000)
    assert d.res.error == 9 and d.src[1].error == 9   # EBADF
    assert d.src[0].error == 0


def test_socket_failure_is_reported(pairs):
    r, w = os.pipe()                       # readable but not a socket: recvmmsg fails
    try:
        os.write(w, b"x")
        d = Drain([r])
        d(timeout_ms=1000)
        assert d.res.error == 88 and d.src[0].error == 88   # ENOTSOCK
    finally:
        os.close(r)
        os.close(w)


def test_bad_arguments():
    res = ffi.new("struct tsf_drain_result *")
    args = ffi.new("struct tsf_drain_args *")
    assert lib.tsf_drain(PLAN, ffi.NULL, 0, args, res) == lib.TSF_E_ARG      # no arena
    assert lib.tsf_drain(PLAN, ffi.NULL, 0, args, ffi.NULL) == lib.TSF_E_ARG
    arena = np.zeros(8192, np.uint8)
    args.arena = ffi.cast("uint8_t *", ffi.from_buffer(arena))
    args.nslots, args.slot_size, args.capacity = 1, 8192, 4     # capacity without records
    assert lib.tsf_drain(PLAN, ffi.NULL, 0, args, res) == lib.TSF_E_ARG


# ---- sequence tracking ---------------------------------------------------------------------
# (seqs fed in order, expected seq_lost, seq_foreign, seq_backwards, held at the end)
SEQ_CASES = [
    ("in order", [5, 6, 7, 8], 0, 0, 0, 0),
    ("one gap", [5, 6, 9, 10], 2, 0, 0, 0),
    ("gap at the end stays held", [5, 6, 9], 0, 0, 0, 1),
    ("two gaps", [1, 3, 4, 8, 9], 1 + 3, 0, 0, 0),
    ("gap then gap right after", [1, 3, 5, 6], 1 + 1, 0, 0, 0),
    ("foreign ahead", [100, 500, 101, 102], 0, 1, 0, 0),
    ("foreign behind", [1000, 30, 1001], 0, 1, 0, 0),
    ("foreign just ahead", [100, 103, 101], 0, 1, 0, 0),
    ("foreign then loss", [100, 500, 103, 104], 2, 1, 0, 0),
    ("loss then foreign", [100, 151, 500, 152], 50, 1, 0, 0),
    ("loss then foreign at once", [100, 500, 151, 152], 50, 1, 0, 0),
    ("wrap-around", [0xFFFFFFFE, 0xFFFFFFFF, 0, 1], 0, 0, 0, 0),
    ("gap across wrap", [0xFFFFFFFE, 1, 2], 2, 0, 0, 0),
    ("confirmed step back", [50, 51, 10, 11, 12], 0, 0, 1, 0),
]


@pytest.mark.parametrize("name,seqs,lost,foreign,backwards,held", SEQ_CASES, ids=[c[0] for c in SEQ_CASES])
def test_seq_tracker(name, seqs, lost, foreign, backwards, held):
    src = ffi.new("struct tsf_source *")
    for s in seqs:
        lib.tsf_source_track_seq(src, s)
    assert (src.seq_lost, src.seq_foreign, src.seq_backwards, src.held) == (lost, foreign, backwards, held)


def test_seq_gaps_through_the_drain(pairs):
    (rx, tx), = pairs()
    for seq in (10, 11, 14, 15):
        tx.send(exit_msg(seq, seq))
    tx.send(wire.error_msg(0, 999))                 # an ACK (its seq is the request's): ignored
    tx.send(exit_msg(77, 16, port=1234))            # not from the kernel: ignored
    tx.send(exit_msg(16, 16))
    d = Drain([rx.fileno()], track_seq=1)
    d(min_records=10)
    src = d.src[0]
    assert (src.seq_lost, src.seq_foreign, src.held, src.next_seq) == (2, 0, 0, 17)
    assert (src.events, src.datagrams) == (5, 7)


def test_seq_not_tracked_unless_asked(pairs):
    (rx, tx), = pairs()
    for seq in (10, 20, 30):
        tx.send(exit_msg(seq, seq))
    d = Drain([rx.fileno()], track_seq=0)
    d(min_records=3)
    assert d.src[0].seq_lost == 0 and d.src[0].seq_valid == 0
