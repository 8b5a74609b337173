"""Man pages of ``taskstats-fast`` and each subcommand, rendered from the argparse parser (through
``parsers``) so they say what ``--help`` says.  ``python -m taskstats_fast.cli.manpage DIR``
writes taskstats-fast.1 and taskstats-fast-COMMAND.1 into DIR (``make man-completion``; the
committed copies in contrib/man/ are checked against it by tests/test_docs.py)."""

from __future__ import annotations

import os
import re
import sys
from typing import Callable, Dict, List, Optional, Sequence

from . import build_parser
from .parsers import Command, Option, describe, walk

SOURCE = "taskstats_fast"
MANUAL = "User Commands"


def page_name(command: Command) -> str:
    """taskstats-fast, taskstats-fast-record, ...: the page's name (without the section)."""
    return command.name.replace(" ", "-")


def _escape(text: str) -> str:
    """Text as roff reads it literally: backslashes and hyphens escaped, no line starting a request."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line.startswith((".", "'")) else line for line in text.split("\n"))


def _paragraphs(text: str) -> List[str]:
    """Text from --help as roff paragraphs: flowing prose reflows, indented blocks keep their lines."""
    out = []
    for block in re.split(r"\n\s*\n", text.strip("\n")):
        lines = block.split("\n")
        if len(lines) > 1 and any(line.startswith(" ") for line in lines[1:]) or block.startswith(" "):
            if not lines[0].startswith(" ") and lines[0].rstrip().endswith(":"):
                out.append(f".PP\n\\fB{_escape(lines[0].rstrip())}\\fR")
                lines = lines[1:]
            out.append(".PP\n.nf\n" + _escape("\n".join(lines)) + "\n.fi")
        else:
            out.append(".PP\n" + _escape(" ".join(block.split())))
    return out


def _option_entry(option: Option) -> str:
    if option.positional:
        head = f"\\fI{_escape(option.metavar or '')}\\fR"
    else:
        value = f" \\fI{_escape(option.metavar)}\\fR" if option.metavar else ""
        head = ", ".join(f"\\fB{_escape(flag)}\\fR{value}" for flag in option.flags)
    return f".TP\n{head}\n{_escape(option.help)}" if option.help else f".TP\n{head}"


def render(command: Command, parent: Optional[Command] = None) -> str:
    """The man page (roff, section 1) of ``command``."""
    name = page_name(command)
    summary = command.summary or (command.description.split("\n\n")[0] if command.description else "")
    lines = [f'.TH "{name.upper()}" "1" "" "{SOURCE}" "{MANUAL}"', ".SH NAME",
             f"{_escape(name)} \\- {_escape(' '.join(summary.split()))}",
             ".SH SYNOPSIS", f"\\fB{_escape(command.name)}\\fR{_escape(command.usage[len(command.name):])}"]
    if command.description:
        lines += [".SH DESCRIPTION", *_paragraphs(command.description)]
    if command.subcommands:
        lines.append(".SH COMMANDS")
        for sub in command.subcommands:
            lines += [".TP", f"\\fB{_escape(sub.word)}\\fR", f"{_escape(sub.summary)}; see \\fB{page_name(sub)}\\fR(1)"]
    positionals = [o for o in command.options if o.positional]
    if positionals:
        lines += [".SH ARGUMENTS", *(_option_entry(o) for o in positionals)]
    lines += [".SH OPTIONS", *(_option_entry(o) for o in command.options if not o.positional)]
    if command.epilog:
        lines += [".SH NOTES", *_paragraphs(command.epilog)]
    related = ([parent] if parent else []) + list(command.subcommands)
    if related:
        lines += [".SH SEE ALSO", ",\n".join(f"\\fB{page_name(c)}\\fR(1)" for c in related)]
    return "\n".join(lines) + "\n"


def pages(root: Optional[Command] = None) -> Dict[str, str]:
    """{file name: man page} of the program and every subcommand."""
    root = root or describe(build_parser())
    parents = {id(sub): c for c in walk(root) for sub in c.subcommands}
    return {f"{page_name(c)}.1": render(c, parents.get(id(c))) for c in walk(root)}


def write(directory: str, files: Dict[str, str]) -> None:
    os.makedirs(directory, exist_ok=True)
    for name, text in files.items():
        with open(os.path.join(directory, name), "w", encoding="utf-8") as f:
            f.write(text)


def write_generated(module: str, generate: Callable[[], Dict[str, str]],
                    argv: Optional[Sequence[str]] = None) -> int:
    """``python -m MODULE DIRECTORY``: write what ``generate`` makes into DIRECTORY."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print(f"usage: python -m {module} DIRECTORY", file=sys.stderr)
        return 2
    write(args[0], generate())
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return write_generated("taskstats_fast.cli.manpage", pages, argv)


if __name__ == "__main__":
    sys.exit(main())
