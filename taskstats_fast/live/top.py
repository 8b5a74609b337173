"""The ``top`` view of interval accounting: what one interval's task rows look like on a screen.

This module owns what ``taskstats-fast top`` shows and how:

* the groupings (process, thread, cgroup, user, command) and how task rows fold into them;
* the columns -- CPU %, each delay class as % of the interval (the way delaytop and iotop show
  them), read/write bytes per second, exits, tasks -- their order and which fit a narrow screen;
* sorting, filtering by name or cgroup, and the marks of tasks born or exited in the interval;
* the header (interval, tasks, exits, loss, system PSI) and the delay-accounting-off banner;
* the plain-text rendering shared by batch mode (``-b``) and the curses screen
  (``live/screen.py``), and the key bindings that change the view (``TopState.press``).

The model is pure functions over an ``Interval``: per-task work is numpy (one lexsort and a few
``reduceat`` per interval); Python loops run per group shown, never per task.  ``TopSink`` is the
Sink that feeds intervals to a renderer.
"""

from __future__ import annotations

import dataclasses
import pwd
import threading
import time
from typing import Callable, Dict, FrozenSet, Iterator, List, Mapping, Optional, Sequence, TextIO, Tuple

import numpy as np

from .. import layout
from ..accounting import interval as _iv
from ..sink import SinkStats
from . import header as _header
from . import procfs as _procfs

__all__ = ["GROUPINGS", "Column", "columns", "TopState", "TopTable", "build_table", "fit_columns",
           "render", "render_header", "render_table", "batch_table", "user_name", "sort_column_span",
           "column_values", "TopSink",
           "HELP_LINES", "STATUS_LINE", "MARKS", "COLUMNS", "COLUMN_KEYS", "DELAYACCT_OFF_BANNER",
           "FIRST_INTERVAL_SECONDS", "intervals", "ProcessColumn", "PROCESS_COLUMNS", "CHOOSABLE",
           "shown_columns", "shown_process_columns", "process_header", "chooser_lines"]

#: The groupings, in the order ``g`` cycles through them, with their one-key shortcuts.
GROUPINGS: Tuple[str, ...] = ("process", "thread", "cgroup", "user", "command")
GROUPING_KEYS: Dict[str, str] = {"p": "process", "t": "thread", "c": "cgroup", "u": "user", "m": "command"}

#: What the one-character mark before a name means.  A group is marked when every task in it was
#: born, exited, or both, inside the interval (a process: its tasks; a command: all its tasks).
MARKS: Tuple[Tuple[str, str], ...] = (
    ("*", "born and exited inside the interval"),
    ("x", "exited inside the interval"),
    ("+", "born inside the interval"),
)


@dataclasses.dataclass(frozen=True)
class Column:
    """One numeric column.  ``key`` names it for sorting (``--sort``); ``fit_rank``: lower ranks
    are kept first when the screen is narrow; ``unit``: 'pct' (value is a percentage), 'rate'
    (bytes/s) or 'count'; ``field``: its entry in the one naming table (``schema.ROW_COLUMNS``),
    the name ``--format json|csv`` gives it."""

    key: str
    header: str
    width: int
    fit_rank: int
    unit: str
    doc: str
    field: str


def _delay_classes():
    return layout.DELAY_CLASSES


def _delay_class_names() -> Tuple[str, ...]:
    return tuple(cls.name for cls in _delay_classes())


def _delay_columns() -> List[Column]:
    # run queue and block I/O are kept first on a narrow screen (what tasks wait on most)
    out = []
    for rank, cls in enumerate(_delay_classes()):
        header = cls.short + "%"
        out.append(Column(f"{cls.name}_delay", header, max(6, len(header)),
                          {0: 1, 1: 5}.get(rank, 6 + rank), "pct",
                          f"time waiting {cls.waiting}, % of the interval", f"{cls.name}_delay_pct"))
    return out


def columns() -> Tuple[Column, ...]:
    """Every numeric column, in screen order (before the name column)."""
    return (
        Column("cpu", "CPU%", 6, 0, "pct", "CPU time (cpu_ns), % of one CPU over the interval",
               "cpu_pct"),
        *_delay_columns(),
        Column("read", "RD/s", 6, 2, "rate", "bytes read from storage per second", "read_bytes_per_s"),
        Column("write", "WR/s", 6, 3, "rate", "bytes written to storage per second",
               "write_bytes_per_s"),
        Column("exits", "EXITS", 5, 4, "count", "tasks (threads) that exited inside the interval",
               "exited"),
        Column("tasks", "TASKS", 5, 20, "count", "tasks (threads) seen in the interval", "tasks"),
    )


COLUMNS: Tuple[Column, ...] = columns()
COLUMN_KEYS: Tuple[str, ...] = tuple(c.key for c in COLUMNS)


@dataclasses.dataclass(frozen=True)
class ProcessColumn:
    """One column of what /proc says of a process or thread row (process and thread views),
    read for the rows drawn only.  ``left``: left-aligned."""

    key: str
    header: str
    width: int
    left: bool
    doc: str


PROCESS_COLUMNS: Tuple[ProcessColumn, ...] = (
    ProcessColumn("user", "USER", 8, True, "the task's user"),
    ProcessColumn("state", "S", 1, True, "state now: R running, S sleeping, D disk, Z zombie, T stopped"),
    ProcessColumn("nice", "NI", 3, False, "nice value now"),
    ProcessColumn("res", "RES", 6, False, "resident memory now"),
    ProcessColumn("time", "TIME+", 9, False, "CPU time since the process began (min:s.hundredths)"),
)
#: Every column the chooser (key F) shows and hides, by key, in its order.
CHOOSABLE: Tuple[str, ...] = COLUMN_KEYS + tuple(c.key for c in PROCESS_COLUMNS)
#: The interval counters the columns are made of (the rest are not summed).
_SUMMED: Tuple[str, ...] = ("cpu_ns", *(f"{c}_delay_total" for c in _delay_class_names()),
                            "read_bytes", "write_bytes")
#: Width of the id column (pid, tid, uid) and the narrowest name column we draw.
ID_WIDTH = 7
MIN_NAME_WIDTH = 16
_ID_HEADER = {"process": "PID", "thread": "TID", "user": "UID"}
_NAME_HEADER = {"process": "COMMAND", "thread": "COMMAND", "cgroup": "CGROUP", "user": "USER",
                "command": "COMMAND"}


@dataclasses.dataclass
class TopState:
    """What the person looking chose: grouping, sort column and direction, filter, pause."""

    grouping: str = "process"
    sort: str = "cpu"
    descending: bool = True
    filter: str = ""
    paused: bool = False
    help: bool = False
    per_cpu: bool = False     # one %Cpu line per CPU instead of the total (top's '1')
    scroll: int = 0           # the first table row on screen (clamped when drawn)
    pids: Tuple[int, ...] = ()            # -p: only these processes (thread group ids)
    uid: Optional[int] = None             # -u: only this user's tasks
    tree: bool = False        # process view: children under their parent (htop's F5, top's V)
    fold: bool = True         # process view: short-lived processes of one command in one row
    cmdline: bool = False     # full command lines instead of command names (top's 'c')
    hidden: FrozenSet[str] = frozenset()  # the columns chosen away (``CHOOSABLE`` keys)
    choosing: bool = False    # the column chooser is on screen (key F, htop's F2)
    chooser_row: int = 0      # the chooser's cursor, an index into ``CHOOSABLE``

    def scroll_by(self, key: str, page: int) -> bool:
        """Scroll keys (arrows, PgUp/PgDn, Home/End); ``page``: table rows on screen."""
        step = {"up": -1, "down": 1, "pgup": -max(page, 1), "pgdn": max(page, 1)}
        if key in step:
            self.scroll = max(self.scroll + step[key], 0)
        elif key == "home":
            self.scroll = 0
        elif key == "end":
            self.scroll = _END
        else:
            return False
        return True

    def press(self, key: str, *, visible: Sequence[str] = COLUMN_KEYS, page: int = 10) -> bool:
        """Apply one key (see ``HELP_LINES``; the scroll keys by name: up, down, pgup, pgdn,
        home, end); returns False for keys that mean nothing.  ``visible``: the column keys on
        screen, which ``<``/``>`` move the sort through; ``page``: table rows on screen."""
        if self.help:
            self.help = False
            return True
        if self.choosing:
            return self.press_chooser(key)
        if self.scroll_by(key, page):
            return True
        if key in ("h", "?"):
            self.help = True
        elif key == " ":
            self.paused = not self.paused
        elif key == "1":
            self.per_cpu = not self.per_cpu
        elif key == "C":
            self.cmdline = not self.cmdline
        elif key in ("F", "f2"):
            self.choosing = True
        elif key == "V":
            self.tree = not self.tree
            self.grouping = "process"
        elif key == "g":
            self.grouping = GROUPINGS[(GROUPINGS.index(self.grouping) + 1) % len(GROUPINGS)]
        elif key in GROUPING_KEYS:
            self.grouping = GROUPING_KEYS[key]
        elif key in ("<", ">"):
            order = list(visible) if self.sort in visible else list(COLUMN_KEYS)
            step = -1 if key == "<" else 1
            self.sort = order[(order.index(self.sort) + step) % len(order)]
        elif key == "r":
            self.descending = not self.descending
        elif key in _SORT_KEYS:
            self.sort = _SORT_KEYS[key]
            self.descending = True
        else:
            return False
        return True


    def press_chooser(self, key: str) -> bool:
        """A key on the column chooser: up/down move, space (or d) shows or hides the column
        under the cursor, s sorts by it, and F, q, Esc or Enter go back to the table."""
        if key in ("up", "down", "home", "end", "pgup", "pgdn"):
            step = {"up": -1, "down": 1, "pgup": -5, "pgdn": 5, "home": -_END, "end": _END}[key]
            self.chooser_row = min(max(self.chooser_row + step, 0), len(CHOOSABLE) - 1)
        elif key in (" ", "d"):
            self.hidden = self.hidden ^ {CHOOSABLE[self.chooser_row]}
        elif key == "s" and CHOOSABLE[self.chooser_row] in COLUMN_KEYS:
            self.sort = CHOOSABLE[self.chooser_row]
            self.descending = True
        elif key in ("F", "f2", "q", "esc", "enter"):
            self.choosing = False
        else:
            return False
        return True


def shown_columns(state: TopState) -> List[Column]:
    """The numeric columns ``state`` shows (all but those chosen away)."""
    return [c for c in COLUMNS if c.key not in state.hidden]


def shown_process_columns(state: TopState) -> List[str]:
    """The keys of the process columns ``state`` shows."""
    return [c.key for c in PROCESS_COLUMNS if c.key not in state.hidden]


def process_header(state: TopState) -> str:
    """The header of the process columns ``state`` shows ("" for none)."""
    return " ".join(c.header.ljust(c.width) if c.left else c.header.rjust(c.width)
                    for c in PROCESS_COLUMNS if c.key not in state.hidden)


def chooser_lines(state: TopState, height: Optional[int] = None) -> List[str]:
    """The column chooser's screen: one line per column, ``[x]`` shown, ``>`` the cursor
    (a window of ``height`` lines around it when they do not all fit)."""
    heads = {c.key: (c.header, c.doc) for c in COLUMNS}
    heads.update({c.key: (c.header, c.doc + " (process and thread views)") for c in PROCESS_COLUMNS})
    lines = []
    for i, key in enumerate(CHOOSABLE):
        header, doc = heads[key]
        sort = "  [sort]" if key == state.sort else ""
        lines.append(f"{'>' if i == state.chooser_row else ' '} [{' ' if key in state.hidden else 'x'}] "
                     f"{header:<7} {doc}{sort}")
    title = ["taskstats-fast top: columns", "up/down move, space show/hide, s sort by it, "
             "F or q or Enter: back", ""]
    room = len(lines) if height is None else max(height - len(title), 1)
    first = min(max(state.chooser_row - room // 2, 0), max(len(lines) - room, 0))
    return title + lines[first:first + room]


#: ``scroll`` past any table: clamped to the last page when drawn.
_END = 1 << 62

#: Direct sort keys, like top's P/M/T: the column most often wanted, one key each.
_SORT_KEYS = {"P": "cpu", "Q": "cpu_delay", "B": "blkio_delay", "R": "read", "W": "write",
              "X": "exits", "N": "tasks"}

#: The last line of the interactive screen.
STATUS_LINE = "h help  q quit  g group  < > sort  r reverse  / filter  V tree  F columns"

HELP_LINES: Tuple[str, ...] = (
    "taskstats-fast top: keys",
    "",
    "  g              next grouping: process, thread, cgroup, user, command",
    "  p t c u m      group by process / thread / cgroup / user / command",
    "  < >  r         sort by the column left / right of it; reverse the order",
    "  P Q B R W X N  sort by CPU% / runq / blkio / read/s / write/s / exits / tasks",
    "  arrows PgUp PgDn Home End   scroll the table",
    "  V              process tree (children under their parent) / flat",
    "  F  F2          choose the columns shown (and the sort column)",
    "  C              full command lines / command names",
    "  1              CPU modes per CPU / all CPUs together",
    "  / f            filter by name or cgroup text (Enter applies, Esc cancels)",
    "  space          pause / resume the display (accounting goes on)",
    "  h ?            this help (any key returns)     q  quit",
    "",
    "Marks before a name (every task of the row was):",
    *(f"  {mark}         {what}" for mark, what in MARKS),
    "  NAME (N)  N short-lived processes of NAME, folded into one row",
    "CPU%: % of one CPU, as in top. Delay columns: % of the interval the",
    "tasks waited (a row of several tasks can pass 100). RD/s WR/s: storage I/O.",
)


# ---- the model: one interval -> a table of groups ----------------------------------------------
@dataclasses.dataclass
class TopTable:
    """One interval folded into groups, filtered and sorted.

    ``values``: float64 ``[groups, len(COLUMNS)]`` in ``COLUMNS`` order; ``ids``: the id column
    (pid, tid, uid; -1 where the grouping has none); ``names``: the name column; ``marks``: one
    character each (see ``MARKS``).  Rows are in display order.
    """

    grouping: str
    values: np.ndarray
    ids: np.ndarray
    names: List[str]
    marks: List[str]
    tasks: int            # task rows in the interval (before the filter)
    exits: int            # of which exited inside the interval
    shown_tasks: int      # task rows that passed the filter
    groups: int           # groups that passed the filter (``values`` may hold only the top ones)
    processes: Optional[np.ndarray] = None   # processes folded into each row (1: not folded)
    uids: Optional[np.ndarray] = None        # each row's user (process and thread views)
    prefixes: Optional[List[str]] = None     # the tree's indentation, already in ``names``
    rows: Optional[np.ndarray] = None        # the groups' rows (``Interval.by`` fields) in order


def _comm_text(comm: np.ndarray) -> List[str]:
    return [c.decode("utf-8", "replace") for c in comm.tolist()]


def _filter_mask(tasks: np.ndarray, cgroups: Mapping[int, str], text: str) -> np.ndarray:
    """Tasks whose command name or cgroup path contains ``text`` (case-insensitive)."""
    needle = text.lower()
    names, inverse = np.unique(tasks["ac_comm"], return_inverse=True)
    hit_name = np.array([needle in s.lower() for s in _comm_text(names)], dtype=bool)
    mask = hit_name[inverse.reshape(-1)] if len(names) else np.zeros(len(tasks), bool)
    hit_cgroups = [cid for cid, path in cgroups.items() if needle in path.lower()]
    if hit_cgroups:
        mask |= np.isin(tasks["cgroup_id"], np.array(hit_cgroups, dtype=np.uint64))
    return mask


def column_values(groups: np.ndarray, seconds: float) -> np.ndarray:
    """``[len(groups), len(COLUMNS)]`` float64: each column's value per group (rows of
    ``Interval.by(..., frame=False)``) for an interval of ``seconds``."""
    per_second = 1.0 / max(seconds, 1e-9)
    out = np.empty((len(groups), len(COLUMNS)), np.float64)
    out[:, 0] = groups["cpu_ns"]                          # the accounting's best CPU estimate
    out[:, 0] *= 100e-9 * per_second                      # ns -> % of one CPU
    for i, cls in enumerate(_delay_class_names(), start=1):
        out[:, i] = groups[f"{cls}_delay_total"]
        out[:, i] *= 100e-9 * per_second                  # ns -> % of the interval
    n = len(_delay_class_names()) + 1
    out[:, n] = groups["read_bytes"]
    out[:, n] *= per_second
    out[:, n + 1] = groups["write_bytes"]
    out[:, n + 1] *= per_second
    out[:, n + 2] = groups["exited"]
    out[:, n + 3] = groups["tasks"]
    return out


def user_name(uid: int, cache: Dict[int, str] = {}) -> str:  # noqa: B006 - a deliberate cache
    if uid not in cache:
        try:
            cache[uid] = pwd.getpwuid(uid).pw_name
        except KeyError:
            cache[uid] = str(uid)
    return cache[uid]


def _selected(tasks: np.ndarray, cgroups: Mapping[int, str], state: TopState) -> np.ndarray:
    """The tasks ``state`` keeps: its filter text, ``-p`` processes and ``-u`` user."""
    keep = np.ones(len(tasks), bool)
    if state.filter:
        keep &= _filter_mask(tasks, cgroups, state.filter)
    if state.pids:
        keep &= np.isin(tasks["ac_tgid"], np.array(state.pids, np.uint64))
    if state.uid is not None:
        keep &= tasks["ac_uid"] == state.uid
    return tasks if keep.all() else layout.take_records(tasks, keep)


def build_table(interval, state: TopState, *, limit: Optional[int] = None) -> TopTable:
    """Fold ``interval.tasks`` into ``state.grouping``, keep what ``state`` selects, sort by
    ``state.sort``; in the process view, fold short-lived processes by command (``state.fold``)
    or order them as a tree (``state.tree``).  ``limit``: name and mark only the first ``limit``
    rows (a screen's worth); every group is still counted and sorted."""
    tasks = interval.tasks
    cgroups: Mapping[int, str] = interval.cgroups or {}
    total, exits = len(tasks), int(np.count_nonzero(tasks["state"] & _iv.EXITED))
    tasks = _selected(tasks, cgroups, state)
    groups = _iv.group_rows(tasks, state.grouping, fields=_SUMMED)
    values = column_values(groups, (int(interval.end_ns) - int(interval.start_ns)) / 1e9)
    processes = np.ones(len(groups), np.int64)
    tree = state.tree and state.grouping == "process"
    if state.fold and state.grouping == "process" and not tree:
        groups, values, processes = _fold_short_lived(groups, values)
    column = values[:, COLUMN_KEYS.index(state.sort)]
    rank = np.argsort(-column if state.descending else column, kind="stable")
    prefixes: Optional[List[str]] = None
    if tree:
        rank, prefixes = _tree_order(groups, rank, _parents(tasks))
    rank = rank if limit is None else rank[:limit]
    shown = layout.take_records(groups, rank)
    ids, names = _ids(state.grouping, shown), _names(state.grouping, shown, cgroups)
    for i in np.flatnonzero(processes[rank] > 1).tolist():
        ids[i] = -1
        names[i] += f" ({processes[rank[i]]})"
    if prefixes is not None:
        names = [prefix + name for prefix, name in zip(prefixes, names)]
    return TopTable(grouping=state.grouping, values=values[rank], ids=ids, names=names,
                    marks=_marks(shown), tasks=total, exits=exits, shown_tasks=len(tasks),
                    groups=len(groups), processes=processes[rank],
                    uids=shown["ac_uid"] if state.grouping in ("process", "thread") else None,
                    prefixes=prefixes[:len(names)] if prefixes is not None else None, rows=shown)


def _fold_short_lived(groups: np.ndarray, values: np.ndarray):
    """Processes born and exited inside the interval, several of one command name, become one
    row per name (their sums; ``processes`` counts them): a fork-heavy shell loop is one
    ``true`` row, not hundreds.  Returns (groups, values, processes per row)."""
    short = np.flatnonzero((groups["born"] == groups["tasks"]) & (groups["exited"] == groups["tasks"]))
    names, first, inverse, counts = np.unique(groups["ac_comm"][short], return_index=True,
                                              return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    folding = counts[inverse] > 1
    if not folding.any():
        return groups, values, np.ones(len(groups), np.int64)
    several = np.flatnonzero(counts > 1)
    slot = np.full(len(names), -1, np.int64)
    slot[several] = np.arange(len(several))
    summed = np.zeros((len(several), values.shape[1]), np.float64)
    np.add.at(summed, slot[inverse[folding]], values[short[folding]])
    keep = np.ones(len(groups), bool)
    keep[short[folding]] = False
    kept = np.flatnonzero(keep)
    # the kept groups, then each folded name's first row, taken in one pass
    out = layout.take_records(groups, np.concatenate([kept, short[first[several]]]))
    rows = out[len(kept):]
    for field in ("tasks", "born", "exited"):
        rows[field] = np.bincount(slot[inverse[folding]], weights=groups[field][short[folding]],
                                  minlength=len(several)).astype(np.uint64)
    return (out, np.concatenate([values[keep], summed]),
            np.concatenate([np.ones(len(kept), np.int64), counts[several]]))


def _parents(tasks: np.ndarray) -> Dict[int, int]:
    """Each process's parent process id (from its leader's record)."""
    leaders = tasks[tasks["ac_pid"] == tasks["ac_tgid"]]
    return dict(zip(leaders["ac_tgid"].tolist(), leaders["ac_ppid"].tolist()))


def _tree_order(groups: np.ndarray, rank: np.ndarray, parents: Mapping[int, int]):
    """Depth first: each process, then its children (siblings in ``rank`` order); a process
    whose parent is not in the table is a root.  Returns (order, name prefix per row)."""
    tgids = groups["ac_tgid"].tolist()
    where = {tgid: i for i, tgid in enumerate(tgids)}
    children: Dict[int, List[int]] = {}
    roots: List[int] = []
    for i in rank.tolist():
        parent = where.get(parents.get(tgids[i], -1), -1)
        if parent >= 0 and parent != i:
            children.setdefault(parent, []).append(i)
        else:
            roots.append(i)
    order: List[int] = []
    prefixes: List[str] = []
    seen = set()
    for root in roots + [i for i in rank.tolist()]:   # the rest: rows inside a parent cycle
        stack = [(root, 0)]
        while stack:
            i, depth = stack.pop()
            if i in seen:
                continue
            seen.add(i)
            order.append(i)
            prefixes.append("  " * (depth - 1) + "`- " if depth else "")
            stack.extend((c, depth + 1) for c in reversed(children.get(i, [])))
    return np.array(order, np.intp), prefixes


def _marks(groups: np.ndarray) -> List[str]:
    born = groups["born"] == groups["tasks"]
    exited = groups["exited"] == groups["tasks"]
    marks = np.where(born & exited, "*", np.where(exited, "x", np.where(born, "+", " ")))
    return marks.tolist()


def _ids(grouping: str, groups: np.ndarray) -> np.ndarray:
    field = {"process": "ac_tgid", "thread": "ac_pid", "user": "ac_uid"}.get(grouping)
    return groups[field].astype(np.int64) if field else np.full(len(groups), -1, np.int64)


def _names(grouping: str, groups: np.ndarray, cgroups: Mapping[int, str]) -> List[str]:
    if grouping == "cgroup":
        names = [cgroups.get(c, f"cgroup {c}" if c else "?") for c in groups["cgroup_id"].tolist()]
    elif grouping == "user":
        names = [user_name(u) for u in groups["ac_uid"].tolist()]
    else:
        names = [s or "?" for s in _comm_text(groups["ac_comm"])]
    return [n if n.isprintable() else _printable(n) for n in names]


def _printable(name: str) -> str:
    """Any task can name itself with control characters (an escape sequence, say): shown as '?'
    so that neither batch output on a terminal nor the screen obeys them."""
    return "".join(c if c.isprintable() else "?" for c in name)


# ---- rendering: a table -> lines of text ---------------------------------------------------------
#: printf format of a cell, by unit, given the column width (pct above 9999.9 widens its column).
_CELL_FORMAT = {"pct": "%%%d.1f", "rate": "%%%ds", "count": "%%%d.0f"}


def _compact_bytes(n: float) -> str:
    """Bytes in at most 5 characters: 0, 512, 1.2K, 34M, 1.5G (powers of 1024, as top)."""
    for unit in ("", "K", "M", "G", "T"):
        if n < 1000 or unit == "T":
            if unit == "":
                return f"{n:.0f}"
            return f"{n:.1f}{unit}" if n < 9.95 else f"{n:.0f}{unit}"
        n /= 1024
    raise AssertionError("unreachable")


def fit_columns(width: Optional[int], grouping: str, sort: str, reserved: int = 0,
                hidden: FrozenSet[str] = frozenset()) -> List[Column]:
    """The numeric columns, less the ``hidden`` ones, that fit ``width`` characters beside the
    id, ``reserved`` characters (the process columns) and a name of at least
    ``MIN_NAME_WIDTH``; the sort column stays while it is not hidden.  ``None``: all of them."""
    candidates = [c for c in COLUMNS if c.key not in hidden]
    if width is None:
        return candidates
    room = width - MIN_NAME_WIDTH - 2 - reserved - (ID_WIDTH + 1 if grouping in _ID_HEADER else 0)
    chosen: List[Column] = []
    for col in sorted(candidates, key=lambda c: (c.key != sort, c.fit_rank)):
        if col.width + 1 <= room:
            chosen.append(col)
            room -= col.width + 1
    return [c for c in COLUMNS if c in chosen]


def sort_column_span(width: Optional[int], grouping: str, sort: str, reserved: int = 0,
                     hidden: FrozenSet[str] = frozenset()) -> Optional[Tuple[int, int]]:
    """Where the sort column's header sits in the line ``render_table`` draws: (start, end)."""
    pos = ID_WIDTH + 1 if grouping in _ID_HEADER else 0
    for col in fit_columns(width, grouping, sort, reserved, hidden):
        if col.key == sort:
            return pos, pos + col.width
        pos += col.width + 1
    return None


def render_table(table: TopTable, state: TopState, width: Optional[int],
                 rows: Optional[int] = None, process_cells: Optional[List[str]] = None) -> List[str]:
    """The column header line and one line per group (at most ``rows``); ``process_cells``: the
    process columns of each row, put between the numbers and the name."""
    header = process_header(state)
    reserved = len(header) + 1 if process_cells is not None else 0
    cols = fit_columns(width, table.grouping, state.sort, reserved, state.hidden)
    index = [COLUMN_KEYS.index(c.key) for c in cols]
    has_id = table.grouping in _ID_HEADER
    heads = []
    if has_id:
        heads.append(_ID_HEADER[table.grouping].rjust(ID_WIDTH))
    for c in cols:
        heads.append(c.header.rjust(c.width))
    if process_cells is not None:
        heads.append(header)
    heads.append("  " + _NAME_HEADER[table.grouping])
    lines = [" ".join(heads)]
    count = len(table.names) if rows is None else min(rows, len(table.names))
    # one %-format per line: numbers go straight in, byte rates are pre-formatted
    formats = ([f"%{ID_WIDTH}s"] if has_id else []) + [_CELL_FORMAT[c.unit] % c.width for c in cols]
    line_format = " ".join(formats + ["%s"])
    cells = table.values[:count][:, index].astype(object)
    for j, c in enumerate(cols):
        if c.unit == "rate":
            cells[:, j] = [_compact_bytes(v) for v in table.values[:count, index[j]].tolist()]
    ids = [str(i) if i >= 0 else "" for i in table.ids[:count].tolist()]   # "": a folded row
    for r, row in enumerate(cells.tolist()):
        lead = (ids[r],) if has_id else ()
        name = table.marks[r] + " " + table.names[r]
        if process_cells is not None:
            name = process_cells[r] + " " + name
        lines.append(line_format % (*lead, *row, name))
    if width is not None:
        lines = [line[:width] for line in lines]
    return lines


#: The process columns (process and thread views, when /proc can be read), all shown: the
#: figures of the rows on screen only, read when they are drawn.
PROCESS_HEADER = process_header(TopState())


def _time_plus(seconds: float) -> str:
    """top's TIME+: minutes:seconds.hundredths."""
    hundredths = int(seconds * 100)
    return f"{hundredths // 6000}:{hundredths // 100 % 60:02d}.{hundredths % 100:02d}"


def process_cells(table: TopTable, procfs: _procfs.ProcFS,
                  state: Optional[TopState] = None) -> List[str]:
    """The process columns ``state`` shows (default: all, ``PROCESS_HEADER``) of each row of
    ``table``: user, state, nice, resident memory, CPU time.  Rows with no process (folded, or
    gone since) show dashes."""
    shown = [c for c in PROCESS_COLUMNS if state is None or c.key not in state.hidden]
    keys = {c.key for c in shown}
    out = []
    threads = table.grouping == "thread"
    uids = table.uids.tolist() if table.uids is not None else [None] * len(table.names)
    for pid, uid in zip(table.ids.tolist(), uids):
        cells = {"user": user_name(uid)[:8] if uid is not None else ""}
        sample = (procfs.process(pid, pid if threads else None)
                  if pid > 0 and keys - {"user"} else None)
        if sample is not None:
            cells.update(state=sample.state, nice=str(sample.nice),
                         res=_compact_bytes(sample.rss_bytes), time=_time_plus(sample.cpu_seconds))
        out.append(" ".join(cells.get(c.key, "-").ljust(c.width) if c.left
                            else cells.get(c.key, "-").rjust(c.width) for c in shown))
    return out


def _psi_text(interval) -> str:
    """``PSI some/full %: cpu 1.2/0.0 io 0.3/0.1 ...``: system pressure-stall time as % of the
    interval."""
    psi = interval.psi
    if psi is None or not psi.resources:
        return "PSI n/a (no /proc/pressure)"
    scale = 100e-6 / max(interval.seconds, 1e-9)
    row = psi.system
    parts = [f"{r} {row[f'{r}_some_us'] * scale:.1f}/{row[f'{r}_full_us'] * scale:.1f}"
             for r in psi.resources]
    return "PSI some/full %: " + "  ".join(parts)


def render_header(interval, table: TopTable, state: TopState,
                  system: Optional[_header.SystemView] = None) -> List[str]:
    """The lines above the table: time and interval, tasks and exits, loss, the system's tasks,
    load, CPU modes, memory and swap (given ``system``), PSI, view state, and a banner when
    delay accounting is off."""
    clock = time.strftime("%H:%M:%S", time.localtime(int(interval.end_ns) / 1e9))
    lost = int(interval.lost or 0)
    loss = f"LOST {lost} exits (interval incomplete)" if lost else "lost 0"
    lines = [f"taskstats-fast top - {clock}  interval {interval.seconds:.2f}s  tasks {table.tasks}"
             f"  exited {table.exits}  {loss}"]
    if system is not None:
        lines += _header.system_lines(interval, system, per_cpu=state.per_cpu)
    lines.append(_psi_text(interval))
    tree = " tree" if state.tree and state.grouping == "process" else ""
    view = f"by {state.grouping}{tree}, sort {state.sort} {'desc' if state.descending else 'asc'}"
    if state.pids:
        view += ", pids " + ",".join(map(str, state.pids))
    if state.uid is not None:
        view += f", user {user_name(state.uid)}"
    if state.filter:
        view += f", filter '{state.filter}': {table.shown_tasks} tasks"
    view += f", {table.groups} groups"
    if state.paused:
        view += "  [PAUSED]"
    lines.append(view)
    if interval.delayacct is False:
        lines.append(DELAYACCT_OFF_BANNER)
    return lines


#: Shown under the header while kernel.task_delayacct is 0.
DELAYACCT_OFF_BANNER = "Delay accounting is OFF: sysctl kernel.task_delayacct=1 (run-queue delays only)"


def render(interval, state: TopState, *, width: Optional[int] = None,
           height: Optional[int] = None, system: Optional[_header.SystemView] = None,
           procfs: Optional[_procfs.ProcFS] = None) -> List[str]:
    """Everything for one interval as lines of text: header, then table.  ``width``/``height``:
    the screen (``None``: every column / every row that had any activity); ``system``: the
    system header's samples (None: no system lines); ``procfs``: where the process columns and
    command lines of the rows shown are read (None: no process columns)."""
    if state.help or state.choosing:
        lines = list(HELP_LINES) if state.help else chooser_lines(state, height)
        return [line[:width] for line in lines] if width else lines
    if height is None:
        table = batch_table(interval, state)
    else:
        table = build_table(interval, state, limit=min(state.scroll, _END) + max(height, 0))
    header = render_header(interval, table, state, system)
    if height is None:
        rows = None
    else:
        rows = max(height - len(header) - 2, 0)
        state.scroll = min(state.scroll, max(table.groups - rows, 0))
        table = _take(table, np.arange(state.scroll, min(state.scroll + rows, len(table.names))))
        if table.groups > rows:    # where the screen is in the table, on the view line
            view = next(i for i, line in enumerate(header) if line.startswith("by "))
            header[view] += f", rows {state.scroll + 1}-{state.scroll + len(table.names)}"
    cells = None
    if procfs is not None and table.grouping in ("process", "thread"):
        if shown_process_columns(state):
            cells = process_cells(table, procfs, state)
        if state.cmdline:
            table = dataclasses.replace(table, names=_command_lines(table, procfs))
    lines = header + [""] + render_table(table, state, width, rows, cells)
    if width is not None:
        lines = [line[:width] for line in lines]
    return lines


def batch_table(interval, state: TopState) -> TopTable:
    """The table batch mode prints: every group, less those that did nothing in the interval
    (not from a tree, nor of the processes asked for)."""
    table = build_table(interval, state)
    if state.tree or state.pids:
        return table
    active = (table.values[:, :-1] != 0).any(axis=1) | (np.array(table.marks) != " ")
    return _take(table, np.flatnonzero(active))


def _command_lines(table: TopTable, procfs: _procfs.ProcFS) -> List[str]:
    """The rows' names as full command lines (kept as they are where there is none: kernel
    threads, folded rows, tasks gone since), the tree's indentation kept."""
    prefixes = table.prefixes or [""] * len(table.names)
    out = []
    for pid, name, prefix in zip(table.ids.tolist(), table.names, prefixes):
        line = procfs.cmdline(pid) if pid > 0 else None
        out.append(prefix + _printable(line) if line else name)
    return out


def _take(table: TopTable, index: np.ndarray) -> TopTable:
    return dataclasses.replace(table, values=table.values[index], ids=table.ids[index],
                               names=[table.names[i] for i in index],
                               marks=[table.marks[i] for i in index],
                               processes=None if table.processes is None else table.processes[index],
                               uids=None if table.uids is None else table.uids[index],
                               rows=None if table.rows is None else table.rows[index],
                               prefixes=None if table.prefixes is None else
                               [table.prefixes[i] for i in index])


# ---- the schedule -------------------------------------------------------------------------------
#: The first interval is this short (or ``delay``, if shorter) so the first screen comes at once
#: instead of a whole ``delay`` after start; the intervals after it are ``delay`` long.
FIRST_INTERVAL_SECONDS = 0.1


def intervals(accounting, first: float = FIRST_INTERVAL_SECONDS) -> Iterator:
    """``accounting``'s intervals, the first one cut short at ``first`` seconds after its look."""
    accounting.open()
    yield accounting.next(deadline=time.monotonic() + min(first, accounting.interval))
    while not accounting.closed:
        yield accounting.next()


# ---- the sink ---------------------------------------------------------------------------------------
class TopSink:
    """The Sink of the top view: keeps the newest interval for a screen to draw (``latest``,
    ``wait``), or, given ``out``, prints each interval at once (batch mode): as plain text, or
    as ``printer`` makes it (``printer(interval, system view, procfs, first)`` -> text; the
    formats of ``top_formats.py``)."""

    def __init__(self, state: Optional[TopState] = None, *, out: Optional[TextIO] = None,
                 width: Optional[int] = None, system: Optional[_header.SystemHeader] = None,
                 printer: Optional[Callable[..., str]] = None):
        self.state = state or TopState()
        #: samples /proc for the system lines at each interval (None: no system lines)
        self.system = system
        self._latest_system: Optional[_header.SystemView] = None
        self._out = out
        self._width = width
        self._printer = printer or self._text
        self._lock = threading.Lock()
        self._latest = None
        self._intervals = 0
        self._rows = 0
        self._new = threading.Event()

    def write(self, interval) -> None:
        view = self.system.advance() if self.system is not None else None
        with self._lock:
            self._latest = interval
            self._latest_system = view
            self._intervals += 1
            self._rows += len(interval.tasks)
        self._new.set()
        if self._out is not None:
            self._out.write(self._printer(interval, view, self.procfs, self._intervals == 1))

    def _text(self, interval, view: Optional[_header.SystemView],
              procfs: Optional[_procfs.ProcFS], first: bool) -> str:
        text = "\n".join(render(interval, self.state, width=self._width, system=view, procfs=procfs))
        return ("" if first else "\n") + text + "\n"

    def latest(self):
        """The newest interval written (None before the first); clears what ``wait`` waits on."""
        self._new.clear()
        with self._lock:
            return self._latest

    @property
    def procfs(self) -> Optional[_procfs.ProcFS]:
        """Where the process columns are read (the system header's procfs root)."""
        return self.system.procfs if self.system is not None else None

    def latest_frame(self) -> Tuple[object, Optional[_header.SystemView]]:
        """The newest interval and its system samples, as ``latest()``."""
        self._new.clear()
        with self._lock:
            return self._latest, self._latest_system

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for an interval newer than the last ``latest()``."""
        return self._new.wait(timeout)

    @property
    def intervals(self) -> int:
        """Intervals written so far."""
        return self._intervals

    def stats(self) -> SinkStats:
        """Task rows of the intervals shown (or printed); a view loses nothing it is given."""
        with self._lock:
            return SinkStats(written=self._rows)

    def flush(self) -> None:
        if self._out is not None:
            self._out.flush()

    def close(self) -> None:
        self.flush()
