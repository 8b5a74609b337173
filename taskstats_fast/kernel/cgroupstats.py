"""cgroupstats: task counts by scheduler state of a cgroup **v1** directory
(CGROUPSTATS_CMD_GET), and the message that tells a v2 or non-cgroup directory apart when the
kernel refuses one.  Needs no privilege.
"""

from __future__ import annotations

import ctypes
import errno
import os
from typing import NamedTuple, Optional, Union

from .. import _native
from . import netlink
from ..errors import CgroupV1RequiredError, DecodeError, KernelError, kernel_error
from .queries import U32, QueryChannel

__all__ = ["CgroupStats", "cgroupstats", "CgroupV1RequiredError", "CGROUP_SUPER_MAGIC",
           "CGROUP2_SUPER_MAGIC", "fs_magic", "cgroup_einval_message"]

CGROUP_SUPER_MAGIC = 0x27E0EB
CGROUP2_SUPER_MAGIC = 0x63677270


class CgroupStats(NamedTuple):
    """Task counts of a cgroup v1 directory (CGROUPSTATS_CMD_GET), by scheduler state."""

    nr_sleeping: int
    nr_running: int
    nr_stopped: int
    nr_uninterruptible: int
    nr_io_wait: int


def cgroupstats(channel: QueryChannel, path: Union[str, os.PathLike]) -> CgroupStats:
    """Ask over ``channel`` for the task counts of the cgroup v1 directory ``path``; a cgroup v2
    or non-cgroup directory raises ``CgroupV1RequiredError``."""
    path = os.fspath(path)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        seq = netlink.next_seq()
        request = _native.build_cgroupstats(channel.family.id, seq, fd)
        try:
            data = channel.transact(request, seq, f"cgroupstats of {path}")
        except KernelError as e:
            if e.errno == errno.EINVAL:
                raise CgroupV1RequiredError(errno.EINVAL, cgroup_einval_message(path, fd)) from None
            raise
    finally:
        os.close(fd)
    try:
        counts, err = _native.parse_cgroupstats(data, channel.family.id)
    except DecodeError as e:
        raise KernelError(errno.EPROTO, f"cgroupstats of {path}: {e}") from None
    if counts is None:
        raise kernel_error(err, f"cgroupstats of {path}")
    return CgroupStats(*counts)


def fs_magic(fd: int) -> Optional[int]:
    """f_type of fstatfs(fd) (the file system's magic number), or None."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        buf = ctypes.create_string_buffer(256)  # struct statfs is 120 bytes on 64-bit Linux
        if libc.fstatfs(fd, buf) != 0:
            return None
    except (OSError, AttributeError):
        return None
    return ctypes.c_ulong.from_buffer(buf).value & U32  # f_type is the first member


def cgroup_einval_message(path: str, fd: int) -> str:
    """Why the kernel refused cgroupstats for ``path`` (open as ``fd``), and what to do."""
    magic = fs_magic(fd)
    mount_hint = ("mount one, e.g. `mkdir -p /sys/fs/cgroup/cpu && mount -t cgroup -o cpu cgroup "
                  "/sys/fs/cgroup/cpu`, and ask about a directory inside it")
    if magic == CGROUP2_SUPER_MAGIC:
        return (f"{path} is a cgroup v2 directory: the kernel's cgroupstats serves only cgroup v1 "
                f"hierarchies; {mount_hint} (for v2, read cgroup.procs and cpu.stat instead)")
    if magic == CGROUP_SUPER_MAGIC:
        return f"the kernel refused cgroupstats for the cgroup v1 directory {path} (EINVAL)"
    shown = f" (file system magic {magic:#x})" if magic is not None else ""
    return (f"{path} is not a cgroup directory{shown}: cgroupstats needs a directory inside a "
            f"mounted cgroup v1 hierarchy (`grep -w cgroup /proc/mounts` lists them); "
            f"{mount_hint}")
