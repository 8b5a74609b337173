"""Loss accounting of the exit stream: the per-socket and total counters (``ShardStats``,
``ListenerStats``) and where each number comes from.

Nothing is lost silently: a message is delivered, or counted in ``lost``.

* ``dropped`` (authoritative): the kernel's per-socket drop counter (SO_MEMINFO), exact even when
  one socket serves many CPUs.
* ``truncated``: datagrams larger than a receive slot (cannot happen with today's 1.4 KB
  messages and 8 KiB slots; counted in case a future kernel grows them).
* ``seq_gaps`` (cross-check, one socket per CPU only): holes in each CPU's sequence numbers.
  A task that migrates between choosing a CPU's listeners and taking the sequence number sends
  its message to CPU A's socket with CPU B's number: A sees a *foreign* number (counted in
  ``seq_foreign``, not a loss) and B sees a hole that is not a loss either.  Hence, listening on
  every CPU, once each stream has received a message after its last drop (``seq_pending`` is 0):
  ``seq_gaps == dropped + seq_foreign``; ``seq_unexplained`` reports the difference (negative
  while a drop has not yet been followed by a message).  Listening on a subset of CPUs, a task
  that migrates in from an unlistened CPU leaves a hole that is no loss of ours.
* ``overruns``: ENOBUFS errors, one per congestion episode (not a count of messages); the stream
  always continues after one.

``lost`` counts exit *messages*: one per exiting thread, the TGID record of a group's last thread
travels in the same message as its PID record.
"""

from __future__ import annotations

from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

from .. import _native
from .registration import Shard

__all__ = ["ShardStats", "ListenerStats", "LossAccounting"]


class ShardStats(NamedTuple):
    """Counters of one listener socket."""
    shard: int
    cpus: Tuple[int, ...]
    messages: int         #: exit messages received (delivered or truncated)
    records: int          #: records decoded (a group's last thread brings two)
    dropped: int          #: messages the kernel dropped for this socket (its drop counter)
    truncated: int        #: datagrams cut by MSG_TRUNC (counted as lost)
    overruns: int         #: ENOBUFS reports (congestion episodes)
    malformed: int        #: undecodable parts
    seq_gaps: Optional[int]      #: holes in the CPU's seq (one socket per CPU only, else None)
    seq_foreign: Optional[int]   #: messages with another CPU's seq (task migrated while exiting)
    seq_pending: bool            #: the last message broke the sequence; the next one judges it

    @property
    def lost(self) -> int:
        return self.dropped + self.truncated


class ListenerStats(NamedTuple):
    """Totals over every socket of a listener, with the breakdown in ``shards``."""
    received: int         #: records decoded (delivered, or waiting for the next read)
    delivered: int        #: records handed out by read/iteration
    messages: int         #: exit messages received
    lost: int             #: exit messages lost: dropped + truncated
    dropped: int
    truncated: int
    overruns: int
    malformed: int
    seq_gaps: int         #: summed over the sockets that serve one CPU
    seq_foreign: int
    seq_pending: int      #: sockets whose last message is still held for judgement
    seq_unexplained: int  #: seq_gaps - dropped - seq_foreign on per-CPU sockets (0 when consistent)
    discarded: int        #: records received but never delivered because the listener closed
    lost_by_shard: Dict[int, int]
    lost_by_cpu: Optional[Dict[int, int]]   #: with one socket per CPU, else None
    shards: Tuple[ShardStats, ...]


class LossAccounting:
    """Reads the drain's per-socket counters and the kernel's drop counters into stats.  The drop
    counters are read live while the sockets are open and frozen when they close."""

    def __init__(self, shards: Sequence[Shard], sources: Sequence[_native.SourceCounters]):
        self._shards = list(shards)
        self._sources = list(sources)
        self._final_drops: Optional[List[int]] = None

    def drops(self) -> List[int]:
        """Each socket's kernel drop counter: read now (into a scratch copy, so a concurrent read,
        which refreshes them on ENOBUFS, never sees a half-updated value), or as frozen."""
        if self._final_drops is not None:
            return list(self._final_drops)
        return [_native.read_drops(src.fd, src.drops) for src in self._sources]

    def freeze(self, read_kernel: bool) -> None:
        """Fix the drop counters before the sockets close: read from the kernel, or (a forked
        child, whose reads would race the parent's) as last seen."""
        if self._final_drops is None:
            self._final_drops = (self.drops() if read_kernel
                                 else [src.drops for src in self._sources])

    def lost(self) -> int:
        """``stats().lost`` alone: the drop counters and truncations, without building every
        shard's figures (Accounting reads it at every look)."""
        return sum(self.drops()) + sum(src.truncated for src in self._sources)

    def stats(self, delivered: int, discarded: int) -> ListenerStats:
        drops = self.drops()
        shards = []
        for shard, src, dropped in zip(self._shards, self._sources, drops):
            per_cpu = src.track_seq == 1
            shards.append(ShardStats(
                shard=shard.id, cpus=tuple(shard.cpus),
                messages=src.events, records=src.records, dropped=dropped,
                truncated=src.truncated, overruns=src.overruns, malformed=src.bad,
                seq_gaps=src.seq_lost if per_cpu else None,
                seq_foreign=src.seq_foreign if per_cpu else None,
                seq_pending=bool(src.held) if per_cpu else False))
        per_cpu_shards = [s for s in shards if s.seq_gaps is not None]
        gaps = sum(s.seq_gaps or 0 for s in per_cpu_shards)
        foreign = sum(s.seq_foreign or 0 for s in per_cpu_shards)
        one_per_cpu = all(len(s.cpus) == 1 for s in shards)
        return ListenerStats(
            received=sum(s.records for s in shards),
            delivered=delivered,
            messages=sum(s.messages for s in shards),
            lost=sum(s.lost for s in shards),
            dropped=sum(s.dropped for s in shards),
            truncated=sum(s.truncated for s in shards),
            overruns=sum(s.overruns for s in shards),
            malformed=sum(s.malformed for s in shards),
            seq_gaps=gaps, seq_foreign=foreign,
            seq_pending=sum(1 for s in per_cpu_shards if s.seq_pending),
            seq_unexplained=gaps - foreign - sum(s.dropped for s in per_cpu_shards),
            discarded=discarded,
            lost_by_shard={s.shard: s.lost for s in shards},
            lost_by_cpu={s.cpus[0]: s.lost for s in shards} if one_per_cpu else None,
            shards=tuple(shards))
