"""The package's exceptions.

Every class also subclasses the builtin a caller would naturally catch (``ValueError`` for bad
input, ``PermissionError`` for missing privileges, ...), so ``except OSError`` keeps working.
Messages say what went wrong and what to do about it.
"""

from __future__ import annotations

import errno as _errno
import os
from typing import Optional

__all__ = [
    "TaskstatsError", "DecodeError", "KernelError", "PermissionDeniedError", "NoSuchTaskError",
    "FamilyNotFoundError", "NamespaceError", "ReplyTimeoutError", "CpumaskError", "CgroupV1RequiredError",
    "ReceiveBufferSizeError",
    "MissingExtraError", "ListenError", "UnknownUserError", "PrivilegeDropError",
    "NotARecordingError", "NewerFormatError", "WriteFailedError", "kernel_error",
]


class TaskstatsError(Exception):
    """Base class of every error raised by taskstats_fast."""


class DecodeError(TaskstatsError, ValueError):
    """Bytes that are not a well-formed TASKSTATS netlink stream.

    ``code`` is the C core's TSF_E_* code, ``offset`` the byte offset of the faulty part in the
    buffer, ``seq`` the netlink sequence number of the message it sits in.
    """

    def __init__(self, message: str, code: int = 0, offset: int = 0, seq: int = 0):
        super().__init__(message)
        self.code = code
        self.offset = offset
        self.seq = seq


class KernelError(TaskstatsError, OSError):
    """The kernel answered a request with an error (``errno`` is set)."""

    def __init__(self, errno: int, message: str):
        OSError.__init__(self, errno, message)


class PermissionDeniedError(KernelError, PermissionError):
    """TASKSTATS_CMD_GET needs CAP_NET_ADMIN in the initial user namespace."""


class NoSuchTaskError(KernelError, ProcessLookupError):
    """No task with that pid/tgid (it may have exited)."""


class NamespaceError(KernelError):
    """The request was made from a pid/user/network namespace the kernel does not serve."""


class CgroupV1RequiredError(KernelError, ValueError):
    """cgroupstats was asked for a directory that is not in a cgroup v1 hierarchy (EINVAL)."""


class FamilyNotFoundError(TaskstatsError, FileNotFoundError):
    """The kernel has no TASKSTATS generic netlink family (built without CONFIG_TASKSTATS)."""


class ReplyTimeoutError(TaskstatsError, TimeoutError):
    """A reply the kernel owes did not arrive in time."""


class InvalidTaskIdError(TaskstatsError, ValueError):
    """A pid/tgid no task can have: ids are whole numbers 1 .. 4294967295 (0 is the idle task,
    which TASKSTATS does not report)."""


class CpumaskError(TaskstatsError, ValueError):
    """A CPU list string or CPU set the kernel would refuse."""


class ReceiveBufferSizeError(TaskstatsError, ValueError):
    """A receive-buffer size out of the range the kernel takes (1 .. 2**31 - 1 bytes)."""


class MissingExtraError(TaskstatsError, ImportError):
    """An optional dependency (pandas, pyarrow) is not installed."""


class UnknownUserError(TaskstatsError, LookupError):
    """The user or group to switch to does not exist."""


class PrivilegeDropError(TaskstatsError, PermissionError):
    """Switching to another user failed, or left a capability or id behind (the process stops
    rather than run with more privilege than asked)."""


class ListenError(TaskstatsError, OSError):
    """A server could not listen on the address it was given (in use, not on this host, ...)."""

    def __init__(self, errno: int, message: str):
        OSError.__init__(self, errno, message)


_HINTS = {
    _errno.EPERM: "TASKSTATS queries and listener registration need CAP_NET_ADMIN in the initial "
                  "user namespace: run as root (or grant CAP_NET_ADMIN), outside user namespaces.",
    _errno.ESRCH: "no such task: it may already have exited.",
    _errno.EINVAL: "the kernel refused the request as invalid.",
}


def kernel_error(err: int, what: str, hint: Optional[str] = None) -> KernelError:
    """The exception for a kernel error reply ``err`` (positive errno) to request ``what``."""
    text = f"{what}: {os.strerror(err)} (errno {err})"
    hint = hint or _HINTS.get(err)
    if hint:
        text += f". {hint}"
    if err in (_errno.EPERM, _errno.EACCES):
        return PermissionDeniedError(err, text)
    if err == _errno.ESRCH:
        return NoSuchTaskError(err, text)
    return KernelError(err, text)


class NotARecordingError(TaskstatsError, ValueError):
    """A file that is not a readable taskstats_fast recording (another kind of file, or a
    damaged one).  The message names the file and what it is not; ``path`` is the file."""

    def __init__(self, path: str, why: str):
        super().__init__(f"{path}: not a recording: {why}")
        self.path = path
        self.why = why


class NewerFormatError(TaskstatsError, ValueError):
    """A recording written with a newer schema version than this library reads: the message
    names the file, its version and what to do (upgrade)."""


class WriteFailedError(TaskstatsError, OSError):
    """A sink could not write what it was given (a full disk, a vanished directory).  The
    message names the file and the cause; ``not_written`` counts the records handed over that
    are not in any file (``None`` while the sink still receives).  ``errno`` is the cause's."""

    def __init__(self, err: int, message: str, not_written: Optional[int] = None):
        OSError.__init__(self, err, message)
        self.not_written = not_written
