"""A program on a pseudo-terminal, its output read back through the pyte terminal emulator, so
tests can press keys and assert on what the screen shows (tests of ``taskstats-fast top``)."""

from __future__ import annotations

import fcntl
import os
import select
import struct
import subprocess
import termios
import time

import pytest

#: A screen counts as drawn when the program has written nothing for this long.
QUIET_SECONDS = 0.1


def _emulator(columns: int, lines: int):
    """A pyte screen and byte stream that also know SU/SD (CSI n S / CSI n T: scroll the
    scrolling region), which ncurses uses for xterm and pyte 0.8 does not implement."""
    import pyte

    class Screen(pyte.Screen):
        def _scroll(self, count, up):
            top, bottom = self.margins or pyte.screens.Margins(0, self.lines - 1)
            y, x = self.cursor.y, self.cursor.x
            self.cursor.y = bottom if up else top
            for _ in range(max(int(count or 1), 1)):
                self.index() if up else self.reverse_index()
            self.cursor.y, self.cursor.x = y, x

        def scroll_up(self, count=1, *_args, **_kw):
            self._scroll(count, True)

        def scroll_down(self, count=1, *_args, **_kw):
            self._scroll(count, False)

    class Stream(pyte.ByteStream):
        csi = {**pyte.ByteStream.csi, "S": "scroll_up", "T": "scroll_down"}

    screen = Screen(columns, lines)
    return screen, Stream(screen)


class Terminal:
    """The command on a pseudo-terminal of 80x24, its output fed to a pyte screen."""

    def __init__(self, argv, *, columns: int = 80, lines: int = 24):
        pytest.importorskip("pyte")
        self.screen, self.stream = _emulator(columns, lines)
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, 0, 0))
        env = dict(os.environ, TERM="xterm", LINES=str(lines), COLUMNS=str(columns))
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave,
                                     env=env, start_new_session=True, close_fds=True)
        os.close(slave)
        self.master = master

    def text(self) -> str:
        return "\n".join(line.rstrip() for line in self.screen.display)

    def pump(self, timeout: float) -> bool:
        """Feed what the program wrote within ``timeout`` seconds; False if it wrote nothing."""
        ready, _, _ = select.select([self.master], [], [], timeout)
        if ready:
            try:
                self.stream.feed(os.read(self.master, 65536))
                return True
            except OSError:   # EIO: the child closed the terminal
                time.sleep(timeout)
        return False

    def wait_for(self, predicate, what: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.pump(0.1)
            # judge a whole screen update: the program has been quiet for a moment
            if predicate(self.text()) and not self.pump(QUIET_SECONDS) and predicate(self.text()):
                return self.text()
        raise AssertionError(f"screen never showed {what}:\n{self.text()}")

    def wait_exit(self, timeout: float = 10.0):
        """The program's exit status once it ends (None if it is still running at ``timeout``),
        reading the screen meanwhile so it never blocks on a full terminal."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self.pump(0.1)
        return self.proc.poll()

    def press(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        os.close(self.master)
