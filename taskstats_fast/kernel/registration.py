"""Registering exit-listener sockets with the kernel, and deregistering them: the request/ACK
exchange, what a refusal means (privilege, namespace, CPU list), and the network-namespace check.

Each listener socket is registered for its CPUs with TASKSTATS_CMD_GET + REGISTER_CPUMASK and
asks for an ACK; the kernel answers every socket separately.  Registration is all or nothing: a
refusal undoes the sockets that did register.  Exit messages that arrive before an ACK are
ordinary records: the ``receive`` callable given to ``Registrar`` (the listener's reader) keeps or
counts them, and hands back the notes (ACKs, errors) of what it received.
"""

from __future__ import annotations

import errno
import math
import os
import socket
import time
import warnings
from typing import Callable, Dict, List, NamedTuple, Sequence, Tuple

import numpy as np

from .. import _native
from .._native import NOTE_ERROR
from ..errors import (CpumaskError, NamespaceError, PermissionDeniedError, ReplyTimeoutError,
                      TaskstatsError, kernel_error)
from . import cpumask, namespaces, netlink

__all__ = ["Shard", "Registrar", "ForeignNetnsWarning", "registration_error",
           "warn_if_foreign_netns", "REGISTER_TIMEOUT"]

#: Seconds to wait for the kernel's ACK to a (de)registration.
REGISTER_TIMEOUT = 5.0


class ForeignNetnsWarning(RuntimeWarning):
    """The listener registered, but from a network namespace the kernel sends no exit events to."""


class Shard(NamedTuple):
    """One listener socket and the CPUs it is registered for.  ``id`` is stamped into its records
    (the CPU with one socket per CPU, else the shard index)."""
    id: int
    cpus: cpumask.CpuSet
    sock: socket.socket


#: ``receive(timeout_ms, registering)``: drain the sockets once (waiting up to timeout_ms) and
#: return the notes received.
Receive = Callable[[int, bool], np.ndarray]


class Registrar:
    """Sends (de)registrations for shards and waits for every ACK."""

    def __init__(self, family_id: int, receive: Receive, timeout: float = REGISTER_TIMEOUT):
        self.family_id = family_id
        self.timeout = timeout
        self._receive = receive

    def register(self, shards: Sequence[Shard]) -> None:
        """Register every shard, or none: a refusal (or no ACK) undoes the ones that did."""
        try:
            failures = self._exchange(shards, register=True)
        except BaseException:   # e.g. no ACK in time: undo whatever did register, best effort
            self.timeout = min(self.timeout, 1.0)
            self._undo(shards)
            raise
        if failures:
            failed = {id(shard) for shard, _ in failures}
            self._undo([s for s in shards if id(s) not in failed])
            shard, err = failures[0]
            raise registration_error(err, shard.cpus, register=True)

    def deregister(self, shards: Sequence[Shard]) -> None:
        """Deregister every shard; the first refusal raises (after all were tried).

        EPERM is no error here: a process that dropped CAP_NET_ADMIN after registering (a
        service that switched users, kernel.privileges) may not deregister, and the kernel drops
        its closed sockets at the next exit message it sends them (ECONNREFUSED)."""
        failures = [(shard, err) for shard, err in self._exchange(shards, register=False)
                    if err != errno.EPERM]
        if failures:
            shard, err = failures[0]
            raise registration_error(err, shard.cpus, register=False)

    def _undo(self, shards: Sequence[Shard]) -> None:
        if not shards:
            return
        try:
            self._exchange(shards, register=False)
        except (OSError, TaskstatsError):
            pass

    def _exchange(self, shards: Sequence[Shard], register: bool) -> List[Tuple[Shard, int]]:
        """Send a (de)registration on each shard and wait for every ACK; returns the
        (shard, errno) of those the kernel refused."""
        pending: Dict[int, Shard] = {}
        for shard in shards:
            seq = netlink.next_seq()
            shard.sock.send(_native.build_cpumask(self.family_id, seq, register, shard.cpus.wire()))
            pending[seq] = shard
        failures: List[Tuple[Shard, int]] = []
        deadline = time.monotonic() + self.timeout
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ReplyTimeoutError(
                    f"the kernel did not acknowledge {'registering' if register else 'deregistering'}"
                    f" CPUs {', '.join(s.cpus.wire() for s in pending.values())} within "
                    f"{self.timeout:g} s")
            for note in self._receive(max(1, math.ceil(left * 1000)), register):
                seq = int(note["seq"])
                if seq in pending:
                    shard = pending.pop(seq)
                    if int(note["kind"]) == NOTE_ERROR:
                        failures.append((shard, int(note["code"])))
        return failures


def registration_error(err: int, cpus: cpumask.CpuSet, register: bool) -> TaskstatsError:
    """The exception for the kernel refusing to (de)register ``cpus`` with errno ``err``."""
    what = (f"{'registering' if register else 'deregistering'} an exit listener for CPUs "
            f"{cpus.wire()!r}")
    user_ok, pid_ok = namespaces.in_initial("user"), namespaces.in_initial("pid")
    if err in (errno.EPERM, errno.EINVAL) and (user_ok is False or pid_ok is False):
        which = " and ".join(n for n, ok in (("user", user_ok), ("pid", pid_ok)) if ok is False)
        return NamespaceError(err, f"{what}: {os.strerror(err)} (errno {err}). The kernel serves "
                              f"exit listeners only in the initial user and pid namespaces, and this "
                              f"process runs in a child {which} namespace: run it on the host (for "
                              "containers: share the host's pid namespace and do not remap users, "
                              "e.g. docker --pid=host --userns=host --cap-add=NET_ADMIN)")
    if err == errno.EPERM:
        return PermissionDeniedError(err, f"{what}: {os.strerror(err)} (errno {err}). Registering "
                                     "needs CAP_NET_ADMIN: run as root or grant the capability "
                                     "(e.g. setcap cap_net_admin+ep, or --cap-add=NET_ADMIN)")
    if err in (errno.EINVAL, errno.ERANGE, errno.E2BIG):
        return CpumaskError(f"{what}: the kernel refused the CPU list ({os.strerror(err)}, errno "
                            f"{err}); possible CPUs here: {cpumask.format(cpumask.possible())}")
    return kernel_error(err, what)


def warn_if_foreign_netns(stacklevel: int = 2) -> None:
    """Warn (ForeignNetnsWarning) when this process is outside the initial network namespace,
    where a registered listener receives nothing."""
    if namespaces.in_initial("net") is False:
        warnings.warn(
            "the exit listener registered, but this process is not in the initial network "
            "namespace, and the kernel sends exit events only to listeners there: it will "
            "receive nothing. Run it in the host's network namespace (e.g. docker --net=host)",
            ForeignNetnsWarning, stacklevel=stacklevel + 1)
