"""Interval accounting: who used what in each interval, every task counted.

``Accounting`` (a context manager and iterator) joins bulk snapshots of every thread at both
ends of an interval with the exit records received in between, attributes each task to its
cgroup v2 and adds pressure-stall time; each interval is an ``Interval`` (see ``interval.py``
for the contract).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, List

from .interval import (ALIVE, BORN, EXACT, EXITED, FLAG_DELAYACCT_OFF, FLAG_NO_START,
                       FLAG_PID_REUSED, INHERITED, PSI_DTYPE, PSI_RESOURCES, TASK_DTYPE, UNKNOWN,
                       Interval, Pressure)

__all__ = ["Accounting", "Interval", "Pressure", "TASK_DTYPE", "PSI_DTYPE", "PSI_RESOURCES",
           "ALIVE", "BORN", "EXITED", "EXACT", "INHERITED", "UNKNOWN",
           "FLAG_DELAYACCT_OFF", "FLAG_PID_REUSED", "FLAG_NO_START"]

if TYPE_CHECKING:   # the lazy name with its real type, for mypy and editors (not Any)
    from .accounting import Accounting


def __dir__() -> List[str]:
    """Tab completion and ``dir()`` list what ``__all__`` promises, the lazy name included."""
    return sorted(set(globals()) | set(__all__))


def __getattr__(name: str) -> Any:
    if name == "Accounting":     # opens sockets: loaded on first use
        from .accounting import Accounting
        return Accounting
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
