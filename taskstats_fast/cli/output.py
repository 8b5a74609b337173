"""A stderr that outlives its reader, for the commands that must keep running (``record``).

When the pipe or terminal stderr goes to is closed (``record --status 2>&1 | head -1``, an ssh
session that dropped, a log collector that died), writing to it fails with EPIPE or EIO.  A
recorder must not stop over that, and must never stop silently: ``SurvivingStderr`` catches the
failure, says so once to the system log (syslog, or the journal, through the ``/dev/log``
socket) when there is one, and from then on drops status lines and sends the command's own
messages (its closing counts, warnings) to the system log instead.  File descriptor 2 is then
pointed at /dev/null, so nothing else (the interpreter's exit, a library) trips over it again.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Any, Optional, TextIO

from .common import PROG

__all__ = ["SurvivingStderr", "SystemLog", "SYSLOG_SOCKET"]

#: Where syslog daemons and journald take messages (journald's syslog socket is linked here).
SYSLOG_SOCKET = "/dev/log"

# RFC 3164 priority: facility "user" (1) times 8 plus the severity.
_WARNING, _INFO = 8 + 4, 8 + 6


class SystemLog:
    """Lines to the system log socket, as ``PROG[pid]: text``; silently nothing when there
    is no system log (a container without syslog, a minimal image)."""

    def __init__(self, address: Optional[str] = None) -> None:
        self.address = SYSLOG_SOCKET if address is None else address

    def send(self, text: str, priority: int = _INFO) -> bool:
        """Send one line; True if the system log took it."""
        message = f"<{priority}>{PROG}[{os.getpid()}]: {text}".encode("utf-8", "replace")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(message, self.address)
        except OSError:
            return False
        return True


class SurvivingStderr:
    """Stands in for ``sys.stderr`` while a command runs (``with SurvivingStderr() as err:``).

    ``write`` passes text on until the first failure; ``write_status`` is for lines that only
    matter to someone watching (dropped once the stream is gone).  ``broken`` holds why the
    stream went away (None while it works).
    """

    def __init__(self, stream: Optional[TextIO] = None, log: Optional[SystemLog] = None) -> None:
        self._given = stream
        self.stream: Optional[TextIO] = None
        self.log = log or SystemLog()
        self.broken: Optional[str] = None
        self._pending = ""
        self._previous: Optional[Any] = None

    def __enter__(self) -> "SurvivingStderr":
        self._previous = sys.stderr
        self.stream = self._given if self._given is not None else sys.stderr
        if self.stream is None:   # started with fd 2 closed: Python made sys.stderr None
            self._break("stderr is closed")
        sys.stderr = self
        return self

    def __exit__(self, *exc: Any) -> None:
        self.flush()
        if self._pending.strip():
            self.log.send(self._pending.strip())
        self._pending = ""
        sys.stderr = self._previous

    # ---- the TextIO surface print(), warnings and logging use --------------------------------
    def write(self, text: str) -> int:
        stream = self.stream
        if self.broken is None and stream is not None and self._try(lambda: stream.write(text)):
            return len(text)
        self._forward(text)   # the text that failed too: it is a message, not a status line
        return len(text)

    def write_status(self, text: str) -> None:
        """A status line: written while the stream works, dropped (not logged) after."""
        stream = self.stream
        if self.broken is None and stream is not None:
            self._try(lambda: (stream.write(text), stream.flush()))

    def flush(self) -> None:
        stream = self.stream
        if self.broken is None and stream is not None:
            self._try(stream.flush)

    def isatty(self) -> bool:
        if self.broken is not None or self.stream is None:
            return False
        try:
            return bool(self.stream.isatty())
        except (OSError, ValueError):
            return False

    def fileno(self) -> int:
        return 2

    @property
    def encoding(self) -> str:
        return getattr(self.stream, "encoding", None) or "utf-8"

    # ---- the failure ----------------------------------------------------------------------
    def _try(self, action: Any) -> bool:
        try:
            action()
        except (OSError, ValueError) as e:   # ValueError: the file object itself was closed
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            self._break(f"stderr went away ({reason})")
            return False
        return True

    def _break(self, why: str) -> None:
        self.broken = why
        self.log.send(f"{why}: recording goes on; status lines are dropped and messages "
                      "go to the system log", _WARNING)
        self._silence_fd()

    def _silence_fd(self) -> None:
        """Point fd 2 (and the stream's buffer, if any) at /dev/null: the interpreter flushes
        sys.__stderr__ at exit, and C libraries write to fd 2 directly."""
        try:
            null = os.open(os.devnull, os.O_WRONLY)
        except OSError:
            return
        try:
            fd = self.stream.fileno() if self.stream is not None else 2
            os.dup2(null, fd)
        except (OSError, ValueError, AttributeError):
            pass
        finally:
            os.close(null)

    def _forward(self, text: str) -> None:
        self._pending += text
        while "\n" in self._pending:
            line, self._pending = self._pending.split("\n", 1)
            line = line.replace("\r", "").strip()
            if line.startswith(f"{PROG}: "):   # the log line names the program already
                line = line[len(PROG) + 2:]
            if line:
                self.log.send(line)
