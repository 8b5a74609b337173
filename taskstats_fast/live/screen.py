"""The interactive screen of ``taskstats-fast top``: curses, keys, the filter prompt.

Owns the terminal side only: drawing the lines ``top.render`` produces, highlighting the sort
column, reading keys into ``TopState.press``, the filter prompt, pause, and redrawing when a new
interval arrives or the terminal is resized.  What the lines say is ``top.py``'s business.

curses from the standard library is the choice: no new dependency, and it speaks whatever
terminal ``TERM`` names, so it works in an 80x24 ssh session as well as in a wide local one.
"""

from __future__ import annotations

import curses
from typing import Any, Callable, List, Optional

from . import top

__all__ = ["run_screen", "KEY_POLL_SECONDS"]

#: Below this size the screen only says it is too small.
MIN_HEIGHT, MIN_WIDTH = 8, 40
#: How often the screen looks for keys and new intervals while idle.
KEY_POLL_SECONDS = 0.1
#: ... and until the first interval is on screen (the first screen should not wait for a poll).
FIRST_POLL_SECONDS = 0.01
_ESC = 27
_ENTER = (10, 13, curses.KEY_ENTER)
_BACKSPACE = (8, 127, curses.KEY_BACKSPACE)
#: The keys that scroll the table, by the names ``TopState.press`` knows them by.
_SCROLL_KEYS = {curses.KEY_UP: "up", curses.KEY_DOWN: "down", curses.KEY_PPAGE: "pgup",
                curses.KEY_NPAGE: "pgdn", curses.KEY_HOME: "home", curses.KEY_END: "end"}
#: The other keys ``TopState.press`` knows by name.
_NAMED_KEYS = {curses.KEY_F2: "f2", _ESC: "esc", **{k: "enter" for k in _ENTER}}
#: Escape alone should leave the column chooser at once, not after curses' default second.
_ESCAPE_DELAY_MS = 25


class _Screen:
    """One curses session over a ``TopSink``: draw, read keys, until ``q`` or ``stopped()``."""

    def __init__(self, window, sink: top.TopSink, stopped: Callable[[], bool], waiting: str):
        self.window = window
        self.sink = sink
        self.state = sink.state
        self.stopped = stopped
        self.waiting = waiting
        self.shown: Any = None      # the interval on screen (kept while paused)
        self.system: Any = None     # its system samples
        self.prompt: Optional[str] = None   # filter text being typed
        self.shown_rows = 1         # table rows of the last draw

    def run(self) -> None:
        try:
            curses.curs_set(0)
        except curses.error:
            pass   # a terminal that cannot hide the cursor still works
        if hasattr(curses, "set_escdelay"):
            curses.set_escdelay(_ESCAPE_DELAY_MS)
        self.window.timeout(int(FIRST_POLL_SECONDS * 1000))
        self.draw()
        while not self.stopped():
            if self.sink.wait(0) and not self.state.paused:
                self.shown, self.system = self.sink.latest_frame()
                self.window.timeout(int(KEY_POLL_SECONDS * 1000))
                self.draw()
            key = self.window.getch()
            if key == -1:
                continue
            if key == curses.KEY_RESIZE:
                self.draw()
                continue
            if self.prompt is not None:
                self.edit_prompt(key)
            elif key == ord("q") and not self.state.choosing:
                return
            elif key in (ord("/"), ord("f")) and not (self.state.help or self.state.choosing):
                self.prompt = ""
            else:
                was_paused = self.state.paused
                name = (_SCROLL_KEYS.get(key) or _NAMED_KEYS.get(key)
                        or (chr(key) if 0 <= key < 256 else ""))
                self.state.press(name, visible=self.visible_keys(), page=self.table_rows())
                if was_paused and not self.state.paused and self.sink.wait(0):
                    self.shown, self.system = self.sink.latest_frame()
            self.draw()

    def edit_prompt(self, key: int) -> None:
        assert self.prompt is not None
        if key in _ENTER:
            self.state.filter = self.prompt.strip()
            self.prompt = None
        elif key == _ESC:
            self.prompt = None
        elif key in _BACKSPACE:
            self.prompt = self.prompt[:-1]
        elif 32 <= key < 127:
            self.prompt += chr(key)

    def table_rows(self) -> int:
        """Table rows on screen now (what PgUp/PgDn move by)."""
        return max(self.shown_rows, 1)

    def visible_keys(self) -> List[str]:
        height, width = self.window.getmaxyx()
        return [c.key for c in top.fit_columns(width - 1, self.state.grouping, self.state.sort,
                                               self.reserved(), self.state.hidden)]

    def reserved(self) -> int:
        """Room the process columns take (process and thread views with a procfs)."""
        shows = self.sink.procfs is not None and self.state.grouping in ("process", "thread")
        header = top.process_header(self.state)
        return len(header) + 1 if shows and header else 0

    def draw(self) -> None:
        height, width = self.window.getmaxyx()
        width -= 1   # curses cannot write the bottom-right cell
        if height < MIN_HEIGHT or width < MIN_WIDTH:
            self.window.erase()
            self.window.addnstr(0, 0, "terminal too small", max(width, 1))
            self.window.refresh()
            return
        if self.shown is None and not (self.state.help or self.state.choosing):
            lines = [self.waiting, "", "h: help  q: quit"]
        else:
            lines = top.render(self.shown, self.state, width=width, height=height - 1,
                               system=self.system, procfs=self.sink.procfs)
            self.shown_rows = len(lines) - (lines.index("") + 2 if "" in lines else len(lines))
        self.window.erase()
        for y, line in enumerate(lines[:height - 1]):
            self.window.addnstr(y, 0, line, width)
        if self.state.choosing:
            self.window.chgat(min(lines.index("") + 1 + self.chooser_offset(lines), height - 2), 0,
                              width, curses.A_REVERSE)
        elif self.shown is not None and not self.state.help:
            self.highlight(lines, width)
        if self.prompt is not None:
            self.window.addnstr(height - 1, 0, f"filter (name or cgroup, Enter/Esc): {self.prompt}", width,
                                curses.A_BOLD)
        else:
            self.window.addnstr(height - 1, 0, top.STATUS_LINE, width, curses.A_DIM)
        self.window.refresh()

    def chooser_offset(self, lines: List[str]) -> int:
        """The chooser's cursor line below its title."""
        body = lines[lines.index("") + 1:]
        return next((i for i, line in enumerate(body) if line.startswith(">")), 0)

    def highlight(self, lines: List[str], width: int) -> None:
        """The table's header line in reverse video, the sort column's header in bold too."""
        row = lines.index("") + 1 if "" in lines else None
        if row is None or row >= len(lines):
            return
        self.window.chgat(row, 0, min(len(lines[row]), width), curses.A_REVERSE)
        span = top.sort_column_span(width, self.state.grouping, self.state.sort, self.reserved(),
                                    self.state.hidden)
        if span is not None and span[1] <= width:
            self.window.chgat(row, span[0], span[1] - span[0], curses.A_REVERSE | curses.A_BOLD)


def run_screen(sink: top.TopSink, stopped: Callable[[], bool], *, waiting: str) -> None:
    """Show ``sink``'s intervals on the terminal until the user quits or ``stopped()``.
    ``waiting``: what to say before the first interval arrives."""
    curses.wrapper(lambda window: _Screen(window, sink, stopped, waiting).run())
