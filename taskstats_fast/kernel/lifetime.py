"""Lifetime of an exit listener: who owns it, whether it is closing, waking its readers, and the
process-wide hooks that close listeners at interpreter exit and make them fork-safe.

A listener belongs to the process that opened it.  A forked child inherits its fds (and locks,
possibly held by threads that do not exist in the child): ``after_fork_in_child`` gives it fresh
locks, reading the inherited listener raises, and its ``close()`` (or atexit) only drops the
child's copies of the fds, leaving the parent's registrations and wake pipe alone.
"""

from __future__ import annotations

import atexit
import os
import threading
import weakref
from typing import Any

from ..errors import TaskstatsError

__all__ = ["Lifetime", "track", "untrack"]


class Lifetime:
    """The owner pid, the closing/closed flags with their lock, and the wake pipe that ends a
    wait inside the C drain from another thread."""

    def __init__(self) -> None:
        self.owner_pid = os.getpid()
        self.state_lock = threading.Lock()
        self.closing = False
        self.closed = True      # until the listener is fully open
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def in_owner(self) -> bool:
        return os.getpid() == self.owner_pid

    def check_owner(self) -> None:
        if not self.in_owner():
            raise TaskstatsError(
                f"this ExitListener belongs to process {self.owner_pid}: a forked child shares its "
                "sockets and would steal the parent's records. Open a new ExitListener in the "
                "child (and close() the inherited one, which only drops the child's copies)")

    def wake(self) -> None:
        """End a wait in another thread (the drain watches ``wake_r``)."""
        try:
            os.write(self.wake_w, b"x")
        except OSError:
            pass

    def clear_wake(self) -> None:
        try:
            os.read(self.wake_r, 64)
        except OSError:
            pass

    def close_pipe(self) -> None:
        for fd in (self.wake_r, self.wake_w):
            try:
                os.close(fd)
            except OSError:
                pass

    def after_fork_in_child(self) -> None:
        self.state_lock = threading.Lock()


# Listeners open in this process: closed at interpreter exit, given fresh locks after fork.
_open: "weakref.WeakSet[Any]" = weakref.WeakSet()


def track(listener: Any) -> None:
    """Close ``listener`` at interpreter exit and call its ``_after_fork_in_child`` in children."""
    _open.add(listener)


def untrack(listener: Any) -> None:
    _open.discard(listener)


@atexit.register
def _close_at_exit() -> None:
    for listener in list(_open):
        try:
            listener.close()
        except Exception:
            pass


def _after_fork_in_child() -> None:
    for listener in list(_open):
        listener._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
