"""Delay accounting switch (sysctl ``kernel.task_delayacct``): read it, flip it, restore it.

Owns everything the library says about why delay fields can be zero.  Since Linux 5.14 the kernel
keeps delay accounting off unless ``kernel.task_delayacct`` is 1 (or the kernel was booted with
``delayacct``).  While it is off, only the run-queue delays (``cpu_count``, ``cpu_delay_*``, which
come from the scheduler's own statistics) are filled; every other ``*_count`` / ``*_delay_*``
field (the classes with ``switched`` set in ``layout.DELAY_CLASSES``) stays zero, and tasks only
collect them while the switch is on.

    import taskstats_fast as tsf
    tsf.delayacct_enabled()            # True / False / None (kernel has no switch)
    with tsf.delay_accounting(True):          # needs root; restores the previous value on exit
        ...
"""

from __future__ import annotations

import contextlib
import errno
from typing import Callable, Iterator, Optional, Tuple

from .. import layout

__all__ = ["SYSCTL_PATH", "DELAYACCT_FIELDS", "DelayAccountingOffWarning", "delayacct_enabled",
           "set_delayacct", "delay_accounting", "DELAYACCT_OFF_MESSAGE"]

SYSCTL_PATH = "/proc/sys/kernel/task_delayacct"

_SWITCHED = tuple(c for c in layout.DELAY_CLASSES if c.switched)

#: The fields that stay zero while ``kernel.task_delayacct`` is off.
DELAYACCT_FIELDS: Tuple[str, ...] = tuple(
    f.name for f in layout.FIELDS if any(f.name in c.fields for c in _SWITCHED))

DELAYACCT_OFF_MESSAGE = (
    "kernel.task_delayacct is 0: the kernel is not recording "
    f"{', '.join(c.label for c in _SWITCHED[:-1])} and {_SWITCHED[-1].label} delays, so those "
    "*_count/*_delay_* fields are zero (cpu_* delays are still filled). Turn it on with "
    "`sysctl kernel.task_delayacct=1` or `with taskstats_fast.delay_accounting(True): ...` "
    "(root); tasks only collect delays while it is on.")


class DelayAccountingOffWarning(RuntimeWarning):
    """Records were read while delay accounting was off: most delay fields are zero."""


def delayacct_enabled(read: Optional[Callable[[str], bytes]] = None) -> Optional[bool]:
    """Is ``kernel.task_delayacct`` on?  ``None`` when the kernel has no such switch (built
    without CONFIG_TASK_DELAY_ACCT, or older than 5.14, where delay accounting is on unless the
    kernel was booted with ``nodelayacct``).  ``read(path)``: how to read the switch's file
    (a reader that keeps it open between calls); default: open, read, close."""
    try:
        if read is not None:
            return read(SYSCTL_PATH).strip() not in (b"0", b"")
        with open(SYSCTL_PATH, "rb") as f:
            return f.read().strip() not in (b"0", b"")
    except FileNotFoundError:
        return None


def set_delayacct(enabled: bool) -> bool:
    """Write ``kernel.task_delayacct``; returns the previous value.  Needs root."""
    previous = delayacct_enabled()
    if previous is None:
        raise FileNotFoundError(
            errno.ENOENT, "this kernel has no kernel.task_delayacct switch (built without "
            "CONFIG_TASK_DELAY_ACCT, or older than Linux 5.14 where it is chosen at boot with "
            "the delayacct/nodelayacct parameter)", SYSCTL_PATH)
    try:
        with open(SYSCTL_PATH, "wb") as f:
            f.write(b"1\n" if enabled else b"0\n")
    except PermissionError as e:
        raise PermissionError(
            e.errno, "changing kernel.task_delayacct needs root (CAP_SYS_ADMIN) in the initial "
            "namespaces: run `sysctl kernel.task_delayacct=1` as root instead", SYSCTL_PATH) from e
    return previous


@contextlib.contextmanager
def delay_accounting(enabled: bool = True) -> Iterator[bool]:
    """Context manager: set ``kernel.task_delayacct`` for the duration of the block and put the
    previous value back afterwards (also on exceptions).  Yields the previous value.

    The switch is system-wide: other processes see the change while the block runs.
    """
    previous = set_delayacct(enabled)
    try:
        yield previous
    finally:
        if previous != enabled:
            set_delayacct(previous)
