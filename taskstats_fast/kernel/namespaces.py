"""Which namespaces this process runs in, as far as TASKSTATS cares: the one namespace check of
the package.

The kernel answers TASKSTATS requests only to CAP_NET_ADMIN in the initial user namespace,
registers exit listeners only from the initial user and pid namespaces, and sends exit events
only to listeners in the initial network namespace.  ``in_initial(kind)`` tells whether this
process is in the initial ``"user"``, ``"pid"`` or ``"net"`` namespace; ``identity(kind)``
names the namespace (for caches keyed by it).

How it tells, in order:

1. the kernel gives the initial namespaces fixed inode numbers (include/linux/proc_ns.h): ours
   equal to that number means initial;
2. kthreadd (pid 2, a kernel thread) always lives in the initial namespaces: when ``/proc/2`` is
   a kernel thread (PF_KTHREAD in its stat flags, which no user process can fake) and its links
   are readable (root on the host), ours equal to its means initial, different means not;
3. the user and pid numbers have been fixed since Linux 3.8, so a different number is a child
   namespace; the net number is fixed only on newer kernels, so a different one means nothing.

``/proc/1/ns`` is never consulted: pid 1 may be a container's init, and a sandbox may refuse to
show it even to root.
"""

from __future__ import annotations

import os
from typing import Dict, Optional, Tuple

__all__ = ["KINDS", "INITIAL_INODE", "identity", "in_initial"]

#: The namespace kinds TASKSTATS depends on.
KINDS = ("user", "pid", "net")

#: Inode numbers the kernel gives its initial namespaces (PROC_*_INIT_INO).
INITIAL_INODE: Dict[str, int] = {"user": 0xEFFFFFFD, "pid": 0xEFFFFFFC, "net": 0xEFFFFFF9}

# Kinds whose initial inode number is fixed on every kernel this package supports (since 3.8);
# the net one only on newer kernels.
_ALWAYS_FIXED = frozenset({"user", "pid"})
# PF_KTHREAD in the flags field of /proc/PID/stat (include/linux/sched.h).
_PF_KTHREAD = 0x00200000
_KTHREADD_PID = 2


def identity(kind: str, pid: str = "self") -> Optional[Tuple[int, int]]:
    """(device, inode) of process ``pid``'s ``kind`` namespace, or None if it cannot be read."""
    _check_kind(kind)
    try:
        st = os.stat(f"/proc/{pid}/ns/{kind}")
    except OSError:
        return None
    return st.st_dev, st.st_ino


def in_initial(kind: str) -> Optional[bool]:
    """Is this process in the kernel's initial ``kind`` namespace ("user", "pid" or "net")?
    None when that cannot be told (see the module docstring for how it is told)."""
    mine = identity(kind)
    if mine is None:
        return None
    if mine[1] == INITIAL_INODE[kind]:
        return True
    if _is_kernel_thread(_KTHREADD_PID):
        reference = identity(kind, str(_KTHREADD_PID))
        if reference is not None:
            return reference == mine
    if kind in _ALWAYS_FIXED:
        return False
    return None


def _check_kind(kind: str) -> None:
    if kind not in INITIAL_INODE:
        raise ValueError(f"namespace kind {kind!r}: use one of {', '.join(KINDS)}")


def _is_kernel_thread(pid: int) -> bool:
    """Is ``/proc/PID`` a kernel thread of this kernel (so in the initial namespaces)?  In a child
    pid namespace with its own /proc, pid 2 is a user process (or absent)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return bool(int(fields[6]) & _PF_KTHREAD)   # fields after comm: state ppid ... flags
    except (OSError, IndexError, ValueError):
        return False
