"""Receive-buffer sizing of the exit listener's sockets: what we ask for, what the kernel grants,
and how many exit messages that holds.

Two sizes, two names, everywhere:

* **requested**: the bytes passed to setsockopt (``ExitListener(rcvbuf=)``, per socket, or by
  default enough for ``DEFAULT_EVENTS_PER_CPU`` messages per CPU the socket serves);
* **granted**: what the kernel reads back (SO_RCVBUF): twice the request (half is its own
  bookkeeping), or less when net.core.rmem_max capped a request without CAP_NET_ADMIN.

A short grant is reported only after the listener registered: a process that may not register
at all (no CAP_NET_ADMIN) gets the permission error alone, not a buffer warning before it.
"""

from __future__ import annotations

import socket
import warnings
from typing import List, Optional

from ..errors import ReceiveBufferSizeError
from . import netlink

__all__ = ["ReceiveBuffer", "EVENT_TRUESIZE", "DEFAULT_EVENTS_PER_CPU", "MAX_REQUEST"]

#: Receive-buffer bytes one exit message costs the kernel (skb truesize) for a single-threaded
#: task's ~600-byte message on x86_64.  Threads of multi-threaded processes cost more (about
#: 2.3 KB: the kernel sizes their skb for a PID and a TGID record).
EVENT_TRUESIZE = 1300
#: Exit messages each CPU's share of receive buffer holds by default (charged only while
#: messages wait to be read).
DEFAULT_EVENTS_PER_CPU = 8192
#: Largest request: the kernel takes the size as a C int.
MAX_REQUEST = 2**31 - 1


class ReceiveBuffer:
    """Sizes each listener socket's receive buffer and remembers what the kernel granted."""

    def __init__(self, requested: Optional[int] = None):
        """``requested``: bytes per socket, or None for room for ``DEFAULT_EVENTS_PER_CPU``
        messages per CPU.  Out of range (or not an int): ``ReceiveBufferSizeError``."""
        if requested is not None:
            if isinstance(requested, bool) or not isinstance(requested, int):
                raise ReceiveBufferSizeError(
                    f"the receive buffer size is a whole number of bytes, not {requested!r}")
            if not 1 <= requested <= MAX_REQUEST:
                raise ReceiveBufferSizeError(
                    f"a receive buffer of {requested} bytes is out of range: choose 1 to "
                    f"{MAX_REQUEST} bytes per socket (the kernel takes the size as a C int)")
        self.requested = requested
        #: what the kernel granted each socket sized so far, in order
        self.granted: List[int] = []
        self._short: List[tuple] = []   # (granted, wanted) of sockets the kernel gave less

    def request_for(self, ncpus: int) -> int:
        """The setsockopt argument for a socket serving ``ncpus`` CPUs."""
        if self.requested is not None:
            return self.requested
        return DEFAULT_EVENTS_PER_CPU * ncpus * EVENT_TRUESIZE // 2   # the kernel doubles it

    def apply(self, sock: socket.socket, ncpus: int) -> int:
        """Size ``sock`` for ``ncpus`` CPUs; returns the granted bytes.  A short grant is kept
        for ``warn_if_short``."""
        request = self.request_for(ncpus)
        granted = netlink.set_rcvbuf(sock, request, warn=False)
        self.granted.append(granted)
        full = 2 * min(request, MAX_REQUEST // 2)   # the kernel doubles, up to INT_MAX
        if granted < full:
            self._short.append((granted, full))
        return granted

    def warn_if_short(self, stacklevel: int = 2) -> None:
        """Warn once about the smallest short grant (call after registering)."""
        if not self._short:
            return
        granted, wanted = min(self._short)
        warnings.warn(
            f"the exit listener's receive buffer is {granted} bytes, room for about "
            f"{messages_held(granted)} exit messages (~{EVENT_TRUESIZE} B each) instead of "
            f"{messages_held(wanted)}: without CAP_NET_ADMIN the kernel caps it at "
            "net.core.rmem_max. Raise that (sysctl net.core.rmem_max) or run with CAP_NET_ADMIN; "
            "bursts larger than the buffer between two reads are dropped and counted as lost",
            RuntimeWarning, stacklevel=stacklevel + 1)


def messages_held(granted: int) -> int:
    """About how many exit messages ``granted`` bytes of receive buffer hold."""
    return granted // EVENT_TRUESIZE
