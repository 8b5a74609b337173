"""The command line as data, read from the argparse parser itself: commands, their options and
positional arguments.  The man pages (``manpage``) and the shell completions (``completion``)
are rendered from this, so a flag added to any subcommand appears in both without editing
them.  argparse keeps what it was told in private attributes (``_actions``,
``_choices_actions``); this module is the one place that reads them."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import List, Optional, Tuple


@dataclass(frozen=True)
class Option:
    """One argument of a command: option strings (empty for a positional), what it takes and says."""

    flags: Tuple[str, ...]
    metavar: Optional[str]        # None: a flag that takes no value
    choices: Tuple[str, ...]
    help: str
    takes_file: bool              # a value that may be a path, so shells complete file names

    @property
    def positional(self) -> bool:
        return not self.flags


@dataclass(frozen=True)
class Command:
    """A command (the program itself, or one subcommand) and what --help says about it."""

    name: str                     # "taskstats-fast" or "taskstats-fast record"
    summary: str                  # the one line the parent's --help shows ("" for the program)
    usage: str
    description: str
    epilog: str
    options: Tuple[Option, ...]
    subcommands: Tuple["Command", ...]

    @property
    def word(self) -> str:
        """The word typed to run it: the subcommand's name, or the program's."""
        return self.name.split()[-1]


# The metavars that name a path: shells complete file names for these values and for no others
# (a count, a number of seconds or a CPU list has no file to offer).
PATH_METAVARS = frozenset({"PATH", "FILE", "PNG", "DIR"})


def describe(parser: argparse.ArgumentParser, summary: str = "") -> Command:
    """``parser`` and its subparsers as a Command tree."""
    options, subcommands = [], []
    formatter = parser._get_formatter()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            summaries = {a.dest: a.help or "" for a in action._choices_actions}
            seen = set()
            for name, sub in action.choices.items():
                if id(sub) not in seen:          # an alias maps to the same parser
                    seen.add(id(sub))
                    subcommands.append(describe(sub, summaries.get(name, "")))
            continue
        if action.help == argparse.SUPPRESS:
            continue
        options.append(_option(action, formatter))
    usage = parser.format_usage().strip()
    usage = usage[len("usage: "):] if usage.startswith("usage: ") else usage
    return Command(parser.prog, summary, " ".join(usage.split()), parser.description or "",
                   parser.epilog or "", tuple(options), tuple(subcommands))


def _option(action: argparse.Action, formatter: argparse.HelpFormatter) -> Option:
    help_ = formatter._expand_help(action) if action.help else ""
    takes_value = action.nargs != 0
    metavar: Optional[str] = None
    if takes_value:
        metavar = formatter._metavar_formatter(action, action.dest.upper())(1)[0]
        if not action.option_strings and action.metavar is None:
            metavar = action.dest
    choices = tuple(str(c) for c in action.choices) if action.choices else ()
    return Option(tuple(action.option_strings), metavar, choices, " ".join(help_.split()),
                  takes_value and not choices and metavar in PATH_METAVARS)


def walk(command: Command) -> List[Command]:
    """``command`` and every subcommand under it, parents first."""
    out = [command]
    for sub in command.subcommands:
        out.extend(walk(sub))
    return out
