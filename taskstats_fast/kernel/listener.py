"""ExitListener: the kernel's stream of exit records, per CPU, in numpy batches.

This module puts the exit stream together from one-job parts and owns its public face:

* ``cpumask.CpuSet``: the CPUs, resolved once, and how they are cut into sockets (shards);
* ``receive_buffer.ReceiveBuffer``: each socket's receive-buffer size, requested and granted;
* ``registration.Registrar``: the (de)registration exchange and what a refusal means;
* ``reader.RecordReader``: the C drain into a fixed record array; read, iterate, asyncio;
* ``exit_stats.LossAccounting``: the counters behind ``stats``;
* ``lifetime.Lifetime``: ownership, closing, atexit and fork-safety.

    import taskstats_fast as tsf

    with tsf.ExitListener() as listener:          # every possible CPU, one socket each
        for batch in listener:                    # numpy arrays of tsf.DTYPE
            print(batch["ac_pid"], batch["ac_comm"], batch["ac_exitcode"])
            print(listener.stats.lost)            # exact: the kernel's own drop counters

``for batch in listener`` waits as long as it takes for the next exit;
``for batch in listener.batches(timeout=1.0)`` also yields an empty batch after each second
without one, so a loop can check a clock or a flag on a quiet machine.

How it works
------------
The kernel sends an exit message to every listener registered for the CPU the task exits on,
without ever blocking: when a listener's receive buffer is full it drops the message and
counts it (``sk_drops``).  By default each CPU gets its own socket, so each socket carries one
CPU's sequence numbers, and loss is exact per CPU (see ``exit_stats`` for every counter).

Records
-------
Each record's ``seq`` is the CPU's sequence number and ``shard`` the socket that delivered it:
the CPU number with one socket per CPU (the default), else the shard index; ``listener.shards``
maps shards to CPUs.  ``time_ns`` is when the listener received the record, not the exit time
(that is ``ac_btime64`` + ``ac_etime``).

Lifetime
--------
``close()`` (also ``with``, iteration end by ``close`` from another thread, garbage collection
and ``atexit``) deregisters every socket before closing it; the kernel would otherwise keep a
closed socket's port on its list until the next message to it fails.  Records still queued then
are counted in ``stats.discarded``; ``stop()`` closes the same way and returns them instead.  A
child process after ``fork()`` leaves the parent's stream alone (see ``lifetime``).  A process
killed by a signal cannot deregister, nor can one that dropped CAP_NET_ADMIN after registering
(``kernel.privileges``; close() then skips the deregistration without a warning): the kernel drops
the port lazily, when its next exit message to it fails with ECONNREFUSED.
"""

from __future__ import annotations

import warnings
import socket
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from .. import _native, layout
from ..errors import TaskstatsError
from . import lifetime as lifetimes
from . import netlink
from .cpumask import CpuSet
from .exit_stats import ListenerStats, LossAccounting, ShardStats
from .lifetime import Lifetime
from .reader import DEFAULT_BATCH, DEFAULT_LINGER, RecordReader, empty
from .receive_buffer import DEFAULT_EVENTS_PER_CPU, EVENT_TRUESIZE, ReceiveBuffer, messages_held
from .registration import REGISTER_TIMEOUT, ForeignNetnsWarning, Registrar, Shard, warn_if_foreign_netns

__all__ = ["ExitListener", "ListenerStats", "ShardStats", "ForeignNetnsWarning",
           "EVENT_TRUESIZE", "DEFAULT_EVENTS_PER_CPU", "DEFAULT_BATCH", "DEFAULT_LINGER"]

# Notes one drain stores: a slot's worth per socket turn, plus the (de)registration ACKs.
_SPARE_NOTES = 8


class ExitListener:
    """Exit records of every task that exits on ``cpus``, as numpy batches of ``DTYPE``.

    ``cpus``: a cpulist string (``"0-3,8"``) or CPU numbers; default every *possible* CPU, so
    CPUs brought online later are covered.  ``shards``: group the CPUs onto this many sockets
    (contiguous, balanced); default one socket per CPU, which makes loss exact per CPU.
    ``rcvbuf``: receive-buffer bytes requested per socket (1 .. 2**31 - 1); default room for
    DEFAULT_EVENTS_PER_CPU messages per CPU (SO_RCVBUFFORCE, or SO_RCVBUF capped by
    net.core.rmem_max with a warning once registered).  ``batch_size``: most records one read
    returns.  ``linger``: seconds a blocking read keeps gathering after the first record.
    ``ack_timeout``: seconds to wait for the kernel to acknowledge each (de)registration.

    Raises CpumaskError (bad CPU list), ReceiveBufferSizeError (``rcvbuf`` out of range),
    PermissionDeniedError (no CAP_NET_ADMIN), NamespaceError (child user or pid namespace);
    warns ForeignNetnsWarning when registered from a network namespace the kernel sends no exit
    events to.
    """

    def __init__(self, cpus: Union[None, str, Iterable[int]] = None, shards: Optional[int] = None,
                 rcvbuf: Optional[int] = None, *, batch_size: int = DEFAULT_BATCH,
                 linger: float = DEFAULT_LINGER, ack_timeout: float = REGISTER_TIMEOUT):
        self._open(cpus, shards, rcvbuf, batch_size, linger, ack_timeout, None, None)

    @classmethod
    def over_sockets(cls, sockets: Sequence[socket.socket], family: netlink.Family,
                     cpus: Union[None, str, Iterable[int]] = None, shards: Optional[int] = None,
                     rcvbuf: Optional[int] = None, *, batch_size: int = DEFAULT_BATCH,
                     linger: float = DEFAULT_LINGER,
                     ack_timeout: float = REGISTER_TIMEOUT) -> "ExitListener":
        """An ExitListener over sockets you made and their family: the test seam.  One socket per
        shard, in shard order (per CPU by default); it sizes, registers, reads, deregisters and
        closes them like its own.  Tests hand it the near ends of socketpairs whose far ends
        play the kernel (tests/fakekernel.py, ``FakeKernel``), so reading, loss accounting,
        ``stop()`` and fork-safety run without root."""
        self = cls.__new__(cls)
        self._open(cpus, shards, rcvbuf, batch_size, linger, ack_timeout, list(sockets), family)
        return self

    def _open(self, cpus, shards, rcvbuf, batch_size, linger, ack_timeout,
              sockets: Optional[List], family: Optional[netlink.Family]) -> None:
        self._life = Lifetime()   # first: close(), __del__ and __repr__ rely on its flags
        self._shards: List[Shard] = []
        self._reader: Optional[RecordReader] = None
        self._accounting: Optional[LossAccounting] = None
        self._buffer: Optional[ReceiveBuffer] = None
        try:
            self.cpus = CpuSet.resolve(cpus)
            groups = ([CpuSet.resolve([c]) for c in self.cpus] if shards is None
                      else self.cpus.split(shards))
            ids = list(self.cpus) if shards is None else list(range(len(groups)))
            buffer = self._buffer = ReceiveBuffer(rcvbuf)
            if sockets is not None and len(sockets) != len(groups):
                raise ValueError(f"{len(sockets)} sockets for {len(groups)} shards")
            self.family = family if family is not None else netlink.resolve_family()
            for i, (shard_id, group) in enumerate(zip(ids, groups)):
                sock = sockets[i] if sockets is not None else netlink.open_socket()
                self._shards.append(Shard(shard_id, group, sock))
                buffer.apply(sock, len(group))
            fds = [s.sock.fileno() for s in self._shards]
            drain = _native.Drain(self.family.id, fds, shards=[s.id for s in self._shards],
                                  track_seq=[len(s.cpus) == 1 for s in self._shards],
                                  wake_fd=self._life.wake_r,
                                  notes=_native.DRAIN_SLOTS + 2 * len(self._shards) + _SPARE_NOTES)
            self._reader = RecordReader(drain, fds, self._life, batch_size=batch_size, linger=linger)
            self._accounting = LossAccounting(
                self._shards, [drain.source(i) for i in range(len(self._shards))])
            self._registrar = Registrar(self.family.id, self._reader.receive_notes, ack_timeout)
            self._life.closed = False
            self._registrar.register(self._shards)
        except BaseException:
            self._life.closed = False
            self._teardown(deregister=False)
            raise
        # only now: a process that may not register gets that error alone
        buffer.warn_if_short(stacklevel=3)
        warn_if_foreign_netns(stacklevel=3)
        lifetimes.track(self)

    # -- what it is --------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._life.closed

    @property
    def shards(self) -> Dict[int, Tuple[int, ...]]:
        """Shard number (the ``shard`` field of records) -> the CPUs its socket serves."""
        return {s.id: tuple(s.cpus) for s in self._shards}

    @property
    def batch_size(self) -> int:
        """Most records one read returns (the size of the preallocated record array)."""
        return self._open_reader().batch_size

    @property
    def linger(self) -> float:
        """Seconds a blocking read keeps gathering after the first record."""
        return self._open_reader().linger

    @property
    def room(self) -> int:
        """About how many exit messages the smallest socket's receive buffer holds (what the
        kernel granted): how long a reader may leave the sockets unread at a given rate."""
        granted = self._buffer.granted if self._buffer is not None else []
        return min((messages_held(g) for g in granted), default=0)

    def fullest(self) -> Optional[float]:
        """The largest share of its granted receive buffer that any socket holds now (the kernel's
        SK_MEMINFO rmem_alloc over SO_RCVBUF; a socket drops exits past 1.0), without reading
        anything: one getsockopt per socket.  None when the kernel does not say."""
        granted = self._buffer.granted if self._buffer is not None else []
        if not granted or len(granted) != len(self._shards):
            return None
        fullest = 0.0
        for shard, size in zip(self._shards, granted):
            queued = _native.rmem_alloc(shard.sock.fileno())
            if queued < 0:
                return None
            fullest = max(fullest, queued / size)
        return fullest

    def waiting(self) -> Optional[bool]:
        """Whether a read now would find records: received ones not yet handed out, or bytes
        queued in any socket (``fullest``).  None when the kernel does not say how full the
        sockets are."""
        reader = self._reader
        if reader is None:
            return None
        if reader.holds_records():
            return True
        fill = self.fullest()
        return None if fill is None else fill > 0

    def fileno(self) -> int:
        """An epoll fd that is readable whenever any listener socket is (or close() was called):
        for selectors and event loops.  Read with ``read(timeout=0)`` when it fires."""
        if self._reader is None:
            raise ValueError("the listener is closed")
        return self._reader.fileno()

    def _open_reader(self) -> RecordReader:
        if self._reader is None:
            raise ValueError("the listener did not open")
        return self._reader

    # -- reading -----------------------------------------------------------------------------
    def read(self, timeout: Optional[float] = None, max_records: Optional[int] = None, *,
             copy: bool = True) -> np.ndarray:
        """The next batch of exit records (a DTYPE array).

        Waits up to ``timeout`` seconds (None: until a record arrives; 0: never) for the first
        record, then gathers for up to ``linger`` seconds more and returns up to ``max_records``
        (default ``batch_size``) records.  An empty array means the timeout passed, or the
        listener was closed from another thread while waiting.

        ``copy=True`` (default) returns a fresh array of just the rows (decoded straight into
        it): keep it as long as you like.  ``copy=False`` returns a view into the listener's
        reused record array, valid only until the next read: the same buffer every time, which
        the CPU's caches keep warmer (measured in bench/bench_exit_stream.py).

        A signal (KeyboardInterrupt) during the wait propagates; records already received stay
        for the next read.
        """
        life = self._life
        if life.closed:
            raise ValueError("read from a closed ExitListener")
        life.check_owner()
        reader = self._reader
        if reader is None:
            raise ValueError("the listener did not open")
        batch = reader.read(timeout, max_records, copy)
        return empty() if batch is None else batch

    def __iter__(self) -> Iterator[np.ndarray]:
        """Batches until the listener is closed (from another thread, or a signal handler);
        waits as long as it takes for the next exit (see ``batches`` for a timeout)."""
        return self.batches()

    def batches(self, timeout: Optional[float] = None) -> Iterator[np.ndarray]:
        """Batches until the listener is closed.  With ``timeout`` (seconds), an *empty* batch
        whenever that long passes without an exit, so the loop body runs on a quiet machine too:

            for batch in listener.batches(timeout=1.0):
                if time.monotonic() > deadline:
                    break
        """
        self._life.check_owner()
        if timeout is not None and timeout < 0:
            raise ValueError("timeout is in seconds, 0 or more (None: wait for each exit)")
        if self._reader is None:
            return iter(())
        return self._reader.batches(timeout)

    def aiter(self, max_records: Optional[int] = None):
        """``async for batch in listener.aiter():`` batches on the running event loop, until the
        listener is closed.  Waits with ``loop.add_reader`` on ``fileno()`` (an epoll fd over all
        sockets) and never blocks the loop; lingers with ``asyncio.sleep`` like ``read`` does."""
        self._life.check_owner()
        return self._open_reader().abatches(max_records)

    def __aiter__(self):
        return self.aiter()

    # -- accounting --------------------------------------------------------------------------
    @property
    def stats(self) -> ListenerStats:
        """Counters so far, with the kernel's drop counters read now."""
        if self._accounting is None or self._reader is None:
            raise ValueError("the listener did not open")
        return self._accounting.stats(self._reader.delivered, self._reader.discarded)

    @property
    def lost(self) -> int:
        """``stats.lost`` (exit messages lost so far), read without the rest of ``stats``."""
        if self._accounting is None:
            raise ValueError("the listener did not open")
        return self._accounting.lost()

    # -- closing -----------------------------------------------------------------------------
    def close(self) -> None:
        """Deregister every socket, then close it (idempotent; safe from any thread: a read
        waiting in another thread returns, an async iterator ends)."""
        life = self._life
        if not life.in_owner():
            self._close_in_child()
            return
        with life.state_lock:
            if life.closed:
                return
            life.closing = True
            life.wake()                  # a read waiting in another thread returns
            if self._reader is not None:
                self._reader.wake_async()
                with self._reader.read_lock:
                    life.clear_wake()    # the reader is out: the deregistration drains can wait
                    self._teardown(deregister=True)
            else:
                self._teardown(deregister=False)

    def stop(self) -> np.ndarray:
        """Deregister, close, and return every record not yet read: those waiting in the listener
        and in its sockets, and exits that raced the deregistration.  The end of a recording:
        read until you want to stop, then ``stop()`` and keep its rows too.

        What it returns is bounded by what the sockets could hold (their receive buffers, about
        two records per exit message); past that (a flood that keeps the sockets full while we
        deregister) records are counted in ``stats.discarded``.  A closed listener returns an
        empty array.
        """
        self._life.check_owner()
        if self._life.closed or self._reader is None or self._buffer is None:
            return empty()
        room = self._reader.batch_size + sum(2 * messages_held(g) for g in self._buffer.granted)
        # not under the read lock: close() first wakes a read waiting in another thread, which
        # holds it; the rows are only collected inside close(), under that lock
        kept = self._reader.keep(room)
        try:
            self.close()
        finally:
            self._reader.stop_keeping()
        if not kept:
            return empty()
        return kept[0] if len(kept) == 1 else layout.join_records(kept)

    def _close_in_child(self) -> None:
        """close() in a forked child: drop the child's copies of the fds and nothing else.  The
        sockets, their registrations and the wake pipe stay the parent's (writing the pipe
        would end the parent's read; deregistering would stop its stream)."""
        with self._life.state_lock:
            if self._life.closed:
                return
            self._life.closing = True
            self._teardown(deregister=False)

    def _teardown(self, deregister: bool) -> None:
        reader, accounting = self._reader, self._accounting
        try:
            if deregister and self._shards and reader is not None and accounting is not None:
                try:
                    reader.discard_pending()
                    reader.drain_everything()
                    self._registrar.deregister(self._shards)
                    # an exit that found the socket on the list just before the deregistration
                    # can still land after its ACK: take it (or count it) before closing
                    reader.drain_everything()
                except (OSError, TaskstatsError) as e:
                    warnings.warn(f"exit listener: deregistering failed ({e}); the kernel drops "
                                  "the closed sockets lazily", RuntimeWarning, stacklevel=4)
                reader.discard_pending()
            if accounting is not None:
                accounting.freeze(read_kernel=deregister)
        finally:
            self._life.closed = True
            lifetimes.untrack(self)
            for shard in self._shards:
                shard.sock.close()
            if reader is not None:
                reader.close()
            self._life.close_pipe()

    def _after_fork_in_child(self) -> None:
        """A forked child inherits the locks, possibly held by threads that do not exist in it:
        fresh ones, so its close() (or atexit) only drops its copies."""
        self._life.after_fork_in_child()
        if self._reader is not None:
            self._reader.after_fork_in_child()

    def __enter__(self) -> "ExitListener":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        life = getattr(self, "_life", None)
        if life is not None and not life.closed:
            try:
                self.close()
            except Exception:
                pass

    def __repr__(self) -> str:
        state = "closed" if self._life.closed else "open"
        cpus = getattr(self, "cpus", None)
        return f"<ExitListener {state} cpus={str(cpus)!r} sockets={len(self._shards)}>"
