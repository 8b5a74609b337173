"""Generic netlink sockets: opening them, sizing their buffers, resolving the TASKSTATS family,
and one-request/one-answer exchanges (register, cgroupstats, family lookups).

Bulk traffic (queries, the exit stream) does not go through ``transact``: it is drained in
batches by the C core (``tsf_drain``).
"""

from __future__ import annotations

import errno
import socket
import threading
import time
import warnings
from typing import Dict, NamedTuple, Optional, Tuple

from .. import _native
from . import namespaces
from .._native import NETLINK_GENERIC, NOTE_ACK, NOTE_ERROR, SO_RCVBUFFORCE, parse
from ..errors import (DecodeError, FamilyNotFoundError, KernelError, ReplyTimeoutError, TaskstatsError,
                      kernel_error)

__all__ = ["Family", "open_socket", "set_rcvbuf", "resolve_family", "transact", "next_seq",
           "RECV_SIZE", "DEFAULT_TIMEOUT"]

#: Receive buffer for one datagram: a PID+TGID exit message is 1172 (v16) .. 1428 (v17) bytes.
RECV_SIZE = 65536
#: Seconds to wait for a reply the kernel owes us.
DEFAULT_TIMEOUT = 5.0

_seq_lock = threading.Lock()
_seq = int(time.time()) & 0x3FFFFFFF


def next_seq(n: int = 1) -> int:
    """First of ``n`` consecutive sequence numbers no other request of this process uses."""
    global _seq
    with _seq_lock:
        first = _seq
        _seq = (_seq + n) & 0xFFFFFFFF
        return first


class Family(NamedTuple):
    id: int
    version: int
    maxattr: int


def open_socket(rcvbuf: Optional[int] = None) -> socket.socket:
    """A bound NETLINK_GENERIC socket, close-on-exec, with ``rcvbuf`` bytes of receive buffer
    if given (see ``set_rcvbuf``)."""
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_GENERIC)
    except OSError as e:
        raise TaskstatsError(f"cannot open a generic netlink socket: {e.strerror or e}. "
                             "Is this Linux with CONFIG_NETLINK?") from e
    try:
        sock.bind((0, 0))
        if rcvbuf:
            set_rcvbuf(sock, rcvbuf)
    except BaseException:
        sock.close()
        raise
    return sock


def set_rcvbuf(sock: socket.socket, nbytes: int, *, warn: bool = True) -> int:
    """Give ``sock`` ``nbytes`` of receive buffer: SO_RCVBUFFORCE when privileged, else
    SO_RCVBUF (capped by net.core.rmem_max).  Returns what the kernel granted (it doubles the
    request for bookkeeping); warns when that is less than asked."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, nbytes)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, nbytes)
    granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    # the kernel doubles every request (half is bookkeeping): a full grant reads back as 2x
    if warn and granted < 2 * nbytes:
        warnings.warn(f"receive buffer is {granted} bytes, less than the {2 * nbytes} a full "
                      f"grant of {nbytes} gives "
                      "(net.core.rmem_max caps it without CAP_NET_ADMIN): raise "
                      "net.core.rmem_max or run with CAP_NET_ADMIN", RuntimeWarning, stacklevel=3)
    return granted


def _recv_until(sock: socket.socket, seq: int, deadline: float) -> bytes:
    """Datagrams until the kernel's final answer to request ``seq`` (its ACK or error), or the
    first datagram answering it when no ACK was asked for."""
    chunks = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ReplyTimeoutError(f"no reply from the kernel within the timeout (request seq {seq})")
        sock.settimeout(remaining)
        try:
            data = sock.recv(RECV_SIZE)
        except socket.timeout:
            continue
        except InterruptedError:  # PEP 475 retries, but keep the deadline honest
            continue
        except OSError as e:
            # ENOBUFS: the kernel dropped datagrams for this socket (e.g. exit events of a
            # registered listener); our ACK still comes, and whoever reads events counts drops
            if e.errno == errno.ENOBUFS:
                continue
            raise
        got = parse(data)
        chunks.append(data)
        for note in got.notes:
            if int(note["seq"]) == seq and int(note["kind"]) in (NOTE_ACK, NOTE_ERROR):
                return b"".join(chunks)


def transact(sock: socket.socket, request: bytes, seq: int, *, timeout: float = DEFAULT_TIMEOUT,
             what: str = "request") -> bytes:
    """Send one request that asks for an ACK and return every datagram up to that ACK.
    A kernel error reply raises the matching ``KernelError`` subclass."""
    sock.send(request)
    data = _recv_until(sock, seq, time.monotonic() + timeout)
    for note in parse(data).notes:
        if int(note["kind"]) == NOTE_ERROR and int(note["seq"]) == seq:
            raise kernel_error(int(note["code"]), what)
    return data


# keyed by network namespace (a family id is per namespace); None when it cannot be told
_families: Dict[Optional[Tuple[int, int]], Family] = {}
_families_lock = threading.Lock()


def resolve_family(sock: Optional[socket.socket] = None, *, timeout: float = DEFAULT_TIMEOUT) -> Family:
    """The TASKSTATS family (id, version) of this network namespace, asked once and cached."""
    key = namespaces.identity("net")
    with _families_lock:
        if key in _families:
            return _families[key]
    own = sock is None
    s: socket.socket = sock if sock is not None else open_socket()
    try:
        # CTRL_CMD_GETFAMILY answers with the family, or an error; no ACK needed
        s.send(_native.build_getfamily(next_seq(), "TASKSTATS"))
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ReplyTimeoutError("the kernel did not answer the TASKSTATS family lookup")
            s.settimeout(remaining)
            try:
                data = s.recv(RECV_SIZE)
            except (socket.timeout, InterruptedError):
                continue
            try:
                fam = _native.parse_family(data)
            except DecodeError as e:
                raise KernelError(errno.EPROTO, f"malformed family reply: {e}") from None
            if fam is None:
                continue  # something else (a stray event) came first
            break
        if fam.error:
            if fam.error == errno.ENOENT:
                raise FamilyNotFoundError(
                    errno.ENOENT, "this kernel has no TASKSTATS generic netlink family: it was "
                    "built without CONFIG_TASKSTATS (check /boot/config-$(uname -r) or "
                    "/proc/config.gz); per-task accounting cannot be read on it")
            raise kernel_error(fam.error, "TASKSTATS family lookup")
        family = Family(fam.id, fam.version, fam.maxattr)
    finally:
        if own:
            s.close()
        else:
            s.settimeout(None)
    with _families_lock:
        _families[key] = family
    return family
