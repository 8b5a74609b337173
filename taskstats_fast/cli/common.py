"""What every subcommand of ``taskstats-fast`` shares: exit codes, option types, the one-line
error messages and the help layout.

A subcommand module (``cli/query.py``, ``cli/record.py``, ...) builds its parser with
``add_command`` and raises ``UsageError`` for bad arguments found after parsing; ``run_guarded``
turns every expected failure into one line on stderr and its documented exit code, so no
subcommand prints a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from typing import Any, Callable, Optional, Sequence, TextIO

from ..errors import (CpumaskError, MissingExtraError, NamespaceError, NoSuchTaskError,
                      PermissionDeniedError, PrivilegeDropError, ReceiveBufferSizeError, TaskstatsError,
                      UnknownUserError, WriteFailedError)

__all__ = ["PROG", "EXIT_OK", "EXIT_ERROR", "EXIT_USAGE", "EXIT_PERMISSION", "EXIT_NO_SUCH_TASK",
           "EXIT_MISSING_EXTRA", "EXIT_INTERRUPTED", "EXIT_CODES_HELP", "UsageError",
           "positive_float", "non_negative_float", "positive_int", "task_id", "say",
           "show_warning", "error_message", "wrap", "add_command", "run_guarded", "HELP_WIDTH",
           "add_privilege_options", "check_privilege_options", "drop_privileges_as_asked", "TRACEBACK_VARIABLE"]

PROG = "taskstats-fast"

EXIT_OK = 0
EXIT_ERROR = 1            #: the kernel or the file system refused something (message says what)
EXIT_USAGE = 2            #: bad arguments
EXIT_PERMISSION = 3       #: needs root / CAP_NET_ADMIN, or the initial namespaces
EXIT_NO_SUCH_TASK = 4     #: pid/tgid: at least one id has no task (the others are reported)
EXIT_MISSING_EXTRA = 5    #: an optional dependency is missing (message names the pip extra)
EXIT_INTERRUPTED = 130    #: Ctrl-C outside ``record`` (where Ctrl-C is the normal way to stop)

EXIT_CODES_HELP = f"""\
exit codes:
  {EXIT_OK}    success
  {EXIT_ERROR}    the kernel or the file system refused something (the message says what)
  {EXIT_USAGE}    bad arguments
  {EXIT_PERMISSION}    not permitted: TASKSTATS needs root or CAP_NET_ADMIN in the initial
       user namespace (the exit stream also the initial pid and network
       namespaces)
  {EXIT_NO_SUCH_TASK}    pid/tgid: some ids have no task (exited?); the others are still reported
  {EXIT_MISSING_EXTRA}    an optional dependency is missing: pip install 'taskstats_fast[EXTRA]'
  {EXIT_INTERRUPTED}  interrupted by Ctrl-C (not for record, where Ctrl-C is how you stop)
"""

#: Set (to anything) to get the traceback of an unexpected error instead of its one line.
TRACEBACK_VARIABLE = "TASKSTATS_FAST_TRACEBACK"

#: Width of hand-written help paragraphs (argparse wraps option help to the terminal itself).
HELP_WIDTH = 78


class UsageError(Exception):
    """Bad arguments found after parsing (exit 2)."""


# ---- option types ------------------------------------------------------------------------
def _number(text: str, convert: Any, noun: str, ok: Any, requirement: str) -> Any:
    """Parse ``text`` with ``convert`` and check it with ``ok``; argparse turns the error into one line."""
    try:
        value = convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {noun}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"{text!r} must be {requirement}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    return _number(text, float, "a number", lambda v: 0 < v < float("inf"), "a positive number")


def non_negative_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    return _number(text, float, "a number", lambda v: 0 <= v < float("inf"), "0 or a positive number")


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    return _number(text, int, "a whole number", lambda v: v >= 1, "at least 1")


def non_negative_int(text: str) -> int:
    """argparse type: a whole number >= 0."""
    return _number(text, int, "a whole number", lambda v: v >= 0, "0 or more")


def task_id(text: str) -> int:
    """argparse type: a pid/tgid the kernel could have (1 .. 2**32-1)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a process or thread id") from None
    if not 0 < value <= 0xFFFFFFFF:
        raise argparse.ArgumentTypeError(f"{text!r} is not a valid id (1 .. 4294967295)")
    return value


# ---- output ------------------------------------------------------------------------------
def say(text: str, stream: Optional[TextIO] = None) -> None:
    """One line on stderr, prefixed with the program name."""
    print(f"{PROG}: {text}", file=stream or sys.stderr, flush=True)


def show_warning(message: Any, category: Any, filename: Any, lineno: Any, file: Any = None,
                 line: Any = None) -> None:
    """``warnings.showwarning`` replacement: a warning is one line, not a source excerpt."""
    say(f"warning: {message}")


def error_message(error: BaseException) -> str:
    """The text of an expected failure, without Python's "[Errno N]" prefix."""
    if isinstance(error, OSError) and error.strerror:
        if error.filename and not isinstance(error, TaskstatsError):
            return f"{error.filename}: {error.strerror}"
        return str(error.strerror)
    return str(error)


# ---- help layout -------------------------------------------------------------------------
def wrap(text: str) -> str:
    """Fill each blank-line-separated paragraph of ``text`` to ``HELP_WIDTH`` columns (the
    parsers use RawDescriptionHelpFormatter so the exit-code table keeps its layout)."""
    paragraphs = textwrap.dedent(text).strip().split("\n\n")
    return "\n\n".join(textwrap.fill(" ".join(p.split()), HELP_WIDTH) for p in paragraphs)


def add_command(subparsers: Any, name: str, *, help: str, description: str,
                epilog: str = "") -> argparse.ArgumentParser:
    """A subcommand parser with the shared layout: wrapped description, then ``epilog`` (kept
    as written) and the exit-code table."""
    return subparsers.add_parser(name, help=help, description=wrap(description),
                                 epilog=(epilog + "\n" if epilog else "") + EXIT_CODES_HELP,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)


# ---- dropping root (record, serve) -------------------------------------------------------
def add_privilege_options(p: argparse.ArgumentParser) -> None:
    """--user and --group: switch to that user once the netlink sockets are open."""
    g = p.add_argument_group("dropping root")
    g.add_argument("--user", metavar="NAME",
                   help="once the netlink sockets are open and registered (as root), switch to this "
                        "user (a name or uid) with no capabilities left, as tcpdump -Z does; files are "
                        "then created as that user, so the output directory must be writable by it")
    g.add_argument("--group", metavar="NAME",
                   help="the group to switch to with --user (default: the user's primary group)")


def check_privilege_options(args: argparse.Namespace) -> None:
    """Refuse a --group without --user, or a user or group that does not exist, before anything
    is opened."""
    if args.user is None:
        if args.group is not None:
            raise UsageError("--group needs --user")
        return
    from ..kernel import privileges
    try:
        privileges.resolve_identity(args.user, args.group)
    except UnknownUserError as e:
        raise UsageError(f"--user/--group: {e}") from None


def drop_privileges_as_asked(args: argparse.Namespace, keep: Sequence[str] = ()) -> None:
    """Switch to ``--user``/``--group`` if given (call it after opening the sockets, before
    writing files or starting threads); ``keep`` names capabilities the subcommand still needs."""
    check_privilege_options(args)
    if args.user is None:
        return
    from ..kernel import privileges
    now = privileges.drop_privileges(args.user, args.group, keep=keep)
    held = f"only {', '.join(keep)}" if keep else "no capabilities"
    say(f"running as user {args.user} (uid {now.uids[0]}, gid {now.gids[0]}) with {held}")


# ---- running a subcommand ----------------------------------------------------------------
def run_guarded(run: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """``run(args)``, with every expected failure turned into one line and its exit code."""
    try:
        return run(args)
    except UsageError as e:
        say(str(e))
        return EXIT_USAGE
    except (PermissionDeniedError, NamespaceError, PrivilegeDropError) as e:
        say(error_message(e))
        return EXIT_PERMISSION
    except NoSuchTaskError as e:
        say(error_message(e))
        return EXIT_NO_SUCH_TASK
    except MissingExtraError as e:
        say(str(e))
        return EXIT_MISSING_EXTRA
    except CpumaskError as e:
        say(f"--cpus: {e}")
        return EXIT_USAGE
    except ReceiveBufferSizeError as e:
        say(f"--rcvbuf: {e}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        say("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # stdout went away (e.g. `| head`): not an error worth a message
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return EXIT_OK
    except WriteFailedError as e:
        say(f"{error_message(e)}; make room there, or write somewhere else with -o")
        return EXIT_ERROR
    except TaskstatsError as e:
        say(error_message(e))
        return EXIT_ERROR
    except ValueError as e:
        say(str(e))
        return EXIT_USAGE
    except OSError as e:   # files: "path: what went wrong"
        say(error_message(e))
        return EXIT_ERROR
    except Exception as e:   # a bug: still one line, with what to do about it
        if os.environ.get(TRACEBACK_VARIABLE):
            raise
        say(f"unexpected error ({type(e).__name__}: {e}); this is a bug in taskstats_fast: "
            f"please report it with the command you ran ({TRACEBACK_VARIABLE}=1 shows where "
            "it happened)")
        return EXIT_ERROR
