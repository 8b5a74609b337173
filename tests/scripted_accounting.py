"""A stand-in for ``Accounting`` as ``record_intervals`` drives it (``open``, then ``next`` per
interval): each call hands out the interval a test builds for that call's number, so the loop
and its sinks are tested on rows the test chose."""

from __future__ import annotations

from typing import Callable, Optional

from taskstats_fast.accounting.interval import Interval


class ScriptedAccounting:
    def __init__(self, make: Callable[[int], Interval], interval: float = 0.1):
        self.make, self.interval, self.calls = make, interval, 0

    def open(self) -> "ScriptedAccounting":
        return self

    def next(self, deadline: Optional[float] = None) -> Interval:
        self.calls += 1
        return self.make(self.calls)
