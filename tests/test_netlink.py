"""netlink.py without a kernel: request/ACK exchanges over a socketpair standing in for it."""

from __future__ import annotations

import errno
import socket
import warnings

import pytest

from taskstats_fast.kernel import netlink
from taskstats_fast.errors import NoSuchTaskError, ReplyTimeoutError

import wire


class FakeKernel(socket.socket):
    """One end of a SOCK_SEQPACKET pair whose recv raises queued errors first."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.errors = []

    def recv(self, n, *flags):
        if self.errors:
            raise self.errors.pop(0)
        return super().recv(n, *flags)


@pytest.fixture
def pair():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours = FakeKernel(fileno=a.detach())
    yield ours, b
    ours.close()
    b.close()


def test_transact_returns_everything_up_to_the_ack(pair):
    ours, kernel = pair
    kernel.send(wire.taskstats_msg(wire.aggr(1, 5, wire.stats(16)), seq=3))
    kernel.send(wire.error_msg(0, req_seq=7))
    data = netlink.transact(ours, b"request", 7, timeout=2)
    assert kernel.recv(100) == b"request"
    assert data.endswith(wire.error_msg(0, req_seq=7))


def test_transact_rides_out_enobufs_and_raises_the_kernel_error(pair):
    ours, kernel = pair
    ours.errors.append(OSError(errno.ENOBUFS, "No buffer space available"))
    kernel.send(wire.error_msg(-errno.ESRCH, req_seq=9))
    with pytest.raises(NoSuchTaskError, match="no such task"):
        netlink.transact(ours, b"request", 9, timeout=2, what="GET pid 1")


def test_transact_times_out(pair):
    ours, _ = pair
    with pytest.raises(ReplyTimeoutError):
        netlink.transact(ours, b"request", 1, timeout=0.2)


def test_set_rcvbuf_warns_only_when_the_grant_is_short():
    with netlink.open_socket() as sock, warnings.catch_warnings():
        warnings.simplefilter("error")
        netlink.set_rcvbuf(sock, 65536)          # root: SO_RCVBUFFORCE grants it in full
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == 2 * 65536
