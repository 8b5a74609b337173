"""taskstats_fast: Linux per-task accounting (TASKSTATS) at the rate the kernel produces it,
straight into numpy.

Decoding::

    import taskstats_fast as tsf
    records = tsf.decode(raw_netlink_bytes)      # numpy array of tsf.DTYPE
    records["ac_utime"], records["cpu_delay_total"], tsf.carried(records, "irq_delay_max")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, List

import numpy as np

from . import errors, layout
from ._native import NOTE_DTYPE, Parsed, decode, parse
from .errors import (CpumaskError, DecodeError, FamilyNotFoundError, KernelError,
                     MissingExtraError, NamespaceError, NewerFormatError, NoSuchTaskError,
                     NotARecordingError, PermissionDeniedError, ReceiveBufferSizeError,
                     ReplyTimeoutError, TaskstatsError, WriteFailedError)
from .kernel.connection import CgroupStats, CgroupV1RequiredError, Connection, Lookup
from .kernel.delayacct import (DELAYACCT_FIELDS, DelayAccountingOffWarning, delay_accounting,
                        delayacct_enabled, set_delayacct)
from .layout import (DTYPE, FLAG_LAYOUT_INFERRED, FLAG_NEWER_VERSION, KIND_PID, KIND_TGID,
                     MAX_VERSION, MIN_VERSION, fields_in)
from .kernel import cpumask

from ._version import __version__  # noqa: F401  (the public version attribute)

__all__ = [
    "DTYPE", "NOTE_DTYPE", "Parsed", "decode", "parse", "carried", "masked", "fields_in",
    "to_pandas", "to_arrow", "read_records", "read_frame",
    "KIND_PID", "KIND_TGID", "FLAG_NEWER_VERSION", "FLAG_LAYOUT_INFERRED", "MIN_VERSION",
    "MAX_VERSION", "errors", "layout", "TaskstatsError", "DecodeError", "KernelError",
    "PermissionDeniedError", "NoSuchTaskError", "NamespaceError", "FamilyNotFoundError",
    "ReplyTimeoutError", "CpumaskError", "MissingExtraError", "ReceiveBufferSizeError",
    "NotARecordingError", "NewerFormatError", "WriteFailedError",
    "Connection", "Lookup", "CgroupStats", "CgroupV1RequiredError",
    "delay_accounting", "delayacct_enabled", "set_delayacct", "DELAYACCT_FIELDS",
    "DelayAccountingOffWarning",
    "ExitListener", "ListenerStats", "ShardStats", "ForeignNetnsWarning", "cpumask",
    "Accounting", "Interval", "TASK_DTYPE",
]

if TYPE_CHECKING:  # the lazy names below with their real types, for mypy and editors; loaded at first use
    from .accounting import TASK_DTYPE, Interval
    from .accounting.accounting import Accounting
    from .kernel.listener import ExitListener, ForeignNetnsWarning, ListenerStats, ShardStats
    from .recording.reading import read_frame, read_records
    from .schema import to_arrow, to_pandas

#: Names loaded on first use, so ``import taskstats_fast`` stays light: name -> module.
_LAZY = {"Accounting": ".accounting", "Interval": ".accounting", "TASK_DTYPE": ".accounting",
         # the exit stream brings asyncio and select
         "ExitListener": ".kernel.listener", "ListenerStats": ".kernel.listener",
         "ShardStats": ".kernel.listener", "ForeignNetnsWarning": ".kernel.listener",
         # tables and files: the recording package (sinks, formats, threads)
         "to_pandas": ".schema", "to_arrow": ".schema",
         "read_records": ".recording.reading", "read_frame": ".recording.reading"}


def __dir__() -> List[str]:
    """Tab completion and ``dir(tsf)`` list what ``__all__`` promises, lazy names included."""
    return sorted(set(globals()) | set(__all__))


def __getattr__(name: str):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def carried(records: np.ndarray, field: str) -> np.ndarray:
    """Boolean array: does each record's struct version report ``field``?

    Fields newer than a record's version are zero in the array; this tells such a zero
    ("not reported") from a real zero.
    """
    return layout.CURRENT.carried(records, field)


def masked(records: np.ndarray, field: str) -> np.ma.MaskedArray:
    """``records[field]`` with the values its records' versions do not report masked out."""
    return np.ma.MaskedArray(records[field], mask=~carried(records, field))
