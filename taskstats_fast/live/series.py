"""The exporter's series: group name -> row of its counters and gauges, bounded and forgotten.

``SeriesTable`` owns one grouping's series (cgroups, commands or configured groups): row 0 is
``other``, where groups past the cap are folded, then any pinned rows (``cgroup="/"``), then one
row per group, first come while there is room.  A group with no task for ``forget_after``
seconds, or a cgroup that no longer exists, is forgotten: its row leaves, its slot is free for the
next group, and if it comes back its counters start again from 0 (a counter reset, which
Prometheus's ``rate()`` and ``increase()`` handle).  What was folded into ``other`` stays in
``other``: its counters only ever grow, so the sums over the series stay exact.

Rows stay contiguous (a forgotten row is refilled by the last one), so a scrape reads the first
``n`` rows of each array with numpy; the ``name{labels} `` text of every sample is cached per
row and moved along with it.
"""

from __future__ import annotations

from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["SeriesTable", "Store", "Labels", "OTHER", "FOLDED_NAMES_REMEMBERED", "label_text"]

Labels = Tuple[Tuple[str, str], ...]

#: The label value of the series that holds every group past the cap.  A group really named
#: ``other`` is counted in it too (it never gets a series of its own), so the sums stay right.
OTHER = "other"
#: Distinct folded names remembered for the ``folded_names`` gauge; past this it stops growing
#: (a lower bound), so names that never repeat cannot grow memory without end.
FOLDED_NAMES_REMEMBERED = 100_000

_ESCAPES = {"\\": "\\\\", "\n": "\\n", '"': '\\"'}


def _escape(value: str) -> str:
    if "\\" in value or "\n" in value or '"' in value:
        return "".join(_ESCAPES.get(ch, ch) for ch in value)
    return value


def label_text(labels: Labels) -> str:
    """``{k="v",...}`` in the text exposition's escaping, or "" for no labels."""
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels) + "}"


class Store:
    """uint64 values of some columns, one row per series of a table (counters or gauges)."""

    def __init__(self, columns: Sequence[str]):
        self.columns = tuple(columns)
        self.index = {c: i for i, c in enumerate(self.columns)}
        self.values = np.zeros((16, len(self.columns)), dtype=np.uint64)

    def _fit(self, rows: int) -> None:
        if rows > len(self.values):
            grown = np.zeros((2 * rows, len(self.columns)), dtype=np.uint64)
            grown[:len(self.values)] = self.values
            self.values = grown

    def add(self, rows: np.ndarray, values: np.ndarray) -> None:
        """Add ``values`` (one row per entry of ``rows``, repeats allowed) into the series' rows."""
        if len(rows):
            self._fit(int(rows.max()) + 1)
            ordered = np.sort(rows)
            if (ordered[1:] != ordered[:-1]).all():   # no repeats: a plain fancy add, twice as fast
                self.values[rows] += values
            else:
                np.add.at(self.values, rows, values)

    def add_row(self, row: int, values: np.ndarray) -> None:
        """Add ``values`` (one row) into the series' row ``row``, which exists."""
        self.values[row] += values

    def clear(self, columns: slice) -> None:
        """Zero ``columns`` of every series' row (gauges that hold one interval's values)."""
        self.values[:, columns] = 0

    def first(self, n: int) -> np.ndarray:
        """A copy of the values of the first ``n`` series (rows never written are zero)."""
        out = np.zeros((n, len(self.columns)), dtype=np.uint64)
        k = min(n, len(self.values))
        out[:k] = self.values[:k]
        return out


class SeriesTable:
    """One grouping's series: ``label`` is the label naming the group (``cgroup``, ``command``),
    ``family`` the grouping's part of the metric names (the label unless given).

    ``labeller(name)`` gives the extra labels of a new series (a cgroup's unit, container, pod).
    ``cap`` bounds the series of groups (``other`` and the pinned rows are beyond it).
    """

    def __init__(self, label: str, cap: int, *, pinned: Sequence[str] = (),
                 labeller: Callable[[str], Labels] = lambda name: (), family: str = ""):
        if cap < 0:
            raise ValueError(f"the cap on {label} series must be >= 0, not {cap}")
        self.label = label
        self.family = family or label     # taskstats_<family>_...
        self.cap = cap
        self._labeller = labeller
        self.names: List[str] = []
        self.labels: List[Labels] = []
        self._row: Dict[str, int] = {}
        self.last_seen = np.zeros(16, dtype=np.int64)
        for name in (OTHER, *pinned):
            self._append(name, 0)
        self._kept = len(self.names)       # other + pinned: never forgotten
        self._stores: List[Store] = []
        self._prefixes: Dict[Tuple[str, Labels], List[str]] = {}
        self._folded: set = set()
        self.forgotten = 0
        # no series was last seen before this: last_seen only grows, so the oldest of them,
        # once known, rules out stale series until the forget threshold passes it
        self._seen_since = 0

    @property
    def n(self) -> int:
        return len(self.names)

    @property
    def folded_names(self) -> int:
        return len(self._folded)

    def row(self, name: str) -> int:
        return self._row[name]

    def store(self, columns: Sequence[str]) -> Store:
        """A new Store of these columns whose rows follow this table's series."""
        store = Store(columns)
        self._stores.append(store)
        return store

    def _append(self, name: str, now_ns: int) -> int:
        row = len(self.names)
        self.names.append(name)
        self.labels.append(((self.label, name),) + self._labeller(name))
        self._row[name] = row
        if row >= len(self.last_seen):
            self.last_seen = np.concatenate([self.last_seen, np.zeros(len(self.last_seen), np.int64)])
        self.last_seen[row] = now_ns
        return row

    def rows_of(self, names: Iterable[Optional[str]], now_ns: int) -> np.ndarray:
        """The row of each name (seen at ``now_ns``), giving new groups a series while there is room;
        -1 for None (a row in no group)."""
        names = names if isinstance(names, list) else list(names)
        out = list(map(self._row.get, names))    # the common case: every name has its series
        if None in out:
            for i, row in enumerate(out):
                if row is not None:
                    continue
                name = names[i]
                if name is None:
                    out[i] = -1
                elif name in self._row:         # new a moment ago, named twice in this call
                    out[i] = self._row[name]
                elif len(self.names) - self._kept < self.cap:
                    out[i] = self._append(name, now_ns)
                else:
                    out[i] = 0
                    if len(self._folded) < FOLDED_NAMES_REMEMBERED:
                        self._folded.add(name)
        rows = np.array(out, dtype=np.intp)
        self.last_seen[rows[rows >= 0]] = now_ns
        self._seen_since = min(self._seen_since, now_ns)   # an interval from the past stays exact
        return rows

    def forget(self, seen_before_ns: int, gone: Iterable[str] = ()) -> int:
        """Forget the series last seen before ``seen_before_ns`` and those named in ``gone``;
        returns how many left."""
        gone = tuple(gone)
        if not gone:
            if self._seen_since >= seen_before_ns:
                return 0                 # the common case: every series was seen lately
            seen = self.last_seen[self._kept:len(self.names)]
            self._seen_since = int(seen.min()) if len(seen) else seen_before_ns
            if self._seen_since >= seen_before_ns:
                return 0
        stale = set(np.flatnonzero(self.last_seen[:len(self.names)] < seen_before_ns).tolist())
        stale.update(self._row[name] for name in gone if name in self._row)
        victims = sorted((r for r in stale if r >= self._kept), reverse=True)
        for row in victims:      # from the end, so a row moved into a hole is never a victim
            self._remove(row)
        self.forgotten += len(victims)
        return len(victims)

    def _remove(self, row: int) -> None:
        last = len(self.names) - 1
        del self._row[self.names[row]]
        if row != last:
            self.names[row] = self.names[last]
            self.labels[row] = self.labels[last]
            self._row[self.names[row]] = row
            self.last_seen[row] = self.last_seen[last]
        self.names.pop()
        self.labels.pop()
        self.last_seen[last] = 0
        for store in self._stores:
            if last < len(store.values):
                store.values[row] = store.values[last]
                store.values[last] = 0
        for cache in self._prefixes.values():
            if len(cache) > last:
                cache[row] = cache[last]
                del cache[last:]
            elif len(cache) > row:
                del cache[row:]

    def prefixes(self, sample_name: str, extra: Labels) -> List[str]:
        """Cached ``sample_name{group labels,extra} `` per series, grown as series appear."""
        cache = self._prefixes.setdefault((sample_name, extra), [])
        for labels in self.labels[len(cache):]:
            cache.append(f"{sample_name}{label_text(labels + extra)} ")
        return cache
