"""The man pages and shell completions, as a user meets them (generated from the argparse parser
by taskstats_fast/cli/manpage.py and completion.py; tests/test_docs.py checks the committed
copies are current):

- every page renders with `man -l`, and every subcommand and option that --help shows appears in
  the rendered pages;
- the bash, zsh and fish completions load in their shell and complete subcommands, options and
  option values (zsh in a pseudo-terminal: tests/shells/zsh_complete.zsh);
- `make install-man-completion` puts each file where distributions look, under DESTDIR/PREFIX;
- a new option of a subcommand appears in both without editing either generator.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess

import pytest

from under_ci import unavailable
from taskstats_fast.cli import SUBCOMMANDS, build_parser, completion, manpage
from taskstats_fast.cli.parsers import describe, walk

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAN = os.path.join(ROOT, "contrib", "man")
BASH = os.path.join(ROOT, "contrib", "completion", "taskstats-fast.bash")
FLAG = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")


def _help(argv):
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args([*argv, "--help"])


def _help_text(argv, capsys):
    _help(argv)
    return capsys.readouterr().out


def _rendered(page):
    if shutil.which("man") is None:
        unavailable("`man` is not installed (Debian man-db and groff-base: `make test` installs them as root)")
    run = subprocess.run(["man", "-l", os.path.join(MAN, page)], capture_output=True, text=True,
                         env=dict(os.environ, LC_ALL="C", MANWIDTH="200", MANPAGER="cat", PAGER="cat"))
    assert run.returncode == 0 and not run.stderr.strip(), run.stderr
    return run.stdout


def test_every_page_renders_and_holds_every_option_of_its_help(capsys):
    root = describe(build_parser())
    assert sorted(os.listdir(MAN)) == sorted(f"{manpage.page_name(c)}.1" for c in walk(root))
    for command in walk(root):
        argv = command.name.split()[1:]
        text = _rendered(f"{manpage.page_name(command)}.1")
        help_ = _help_text(argv, capsys)
        options = set(FLAG.findall(help_[help_.index("options:"):]))
        assert options, command.name
        missing = [o for o in options if not re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", text)]
        assert not missing, (command.name, missing)
        for sub in command.subcommands:
            assert re.search(rf"^\s+{sub.word}\b", text, re.M), (command.name, sub.word)
            assert sub.word in help_


def test_the_main_page_lists_every_subcommand_module():
    text = _rendered("taskstats-fast.1")
    names = [c.word for c in describe(build_parser()).subcommands]
    assert len(names) >= len(SUBCOMMANDS)   # query.py makes two: pid and tgid
    for name in names:
        assert f"taskstats-fast-{name}(1)" in text


COMPLETION = os.path.join(ROOT, "contrib", "completion")
ZSH_COMPLETE = os.path.join(ROOT, "tests", "shells", "zsh_complete.zsh")


def _shell(name):
    if shutil.which(name) is None:
        unavailable(f"{name} is not installed (Debian package {name}: `make test` installs it as root)")


def _complete_bash(words):
    script = ('source "$1"; shift; COMP_WORDS=(taskstats-fast "$@"); COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 )); '
              'complete -p taskstats-fast >/dev/null && _taskstats_fast && printf "%s\\n" "${COMPREPLY[@]}"')
    return ["bash", "--norc", "-c", script, "complete", BASH, *words]


def _complete_zsh(words):
    return ["zsh", "-f", ZSH_COMPLETE, COMPLETION, " ".join(["taskstats-fast", *words])]


def _complete_fish(words):
    script = f"source {os.path.join(COMPLETION, 'taskstats-fast.fish')}; complete -C $argv[1]"
    return ["fish", "--no-config", "-c", script, " ".join(["taskstats-fast", *words])]


SHELLS = {"bash": _complete_bash, "zsh": _complete_zsh, "fish": _complete_fish}


def _complete(shell, *words):
    """What SHELL offers for the last word of ``taskstats-fast WORDS`` (an empty last word: a new one)."""
    _shell(shell)
    run = subprocess.run(SHELLS[shell](words), capture_output=True, text=True, cwd="/", timeout=60)
    assert run.returncode == 0 and not run.stderr, run.stderr
    # fish prints "candidate<TAB>description"
    return sorted({line.split("\t")[0] for line in run.stdout.splitlines() if line.strip()})


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_each_shell_completes_subcommands_options_and_values(shell):
    assert _complete(shell, "re") == ["record"]
    assert set(_complete(shell, "")) >= {"pid", "tgid", "snapshot", "record", "summary", "top", "serve"}
    assert "--version" in _complete(shell, "--v")
    assert "--seconds" in _complete(shell, "record", "--se")
    assert "--seconds" not in _complete(shell, "summary", "--se")
    assert _complete(shell, "record", "--format", "pa") == ["parquet"]
    assert "command" in _complete(shell, "top", "--group", "")
    assert "usr" in [w.rstrip("/") for w in _complete(shell, "summary", "u")]    # a path: file names
    assert "usr" in [w.rstrip("/") for w in _complete(shell, "record", "-o", "u")]
    assert _complete(shell, "record", "--seconds", "u") == []                  # a number: no file names


def test_make_install_man_completion_puts_files_where_distributions_look(tmp_path):
    if shutil.which("make") is None:
        unavailable("make is not installed")
    run = subprocess.run(["make", "--no-print-directory", "install-man-completion", f"DESTDIR={tmp_path}",
                          "PREFIX=/usr"], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    share = tmp_path / "usr" / "share"
    assert sorted(os.listdir(share / "man" / "man1")) == sorted(os.listdir(MAN))
    assert (share / "bash-completion" / "completions" / "taskstats-fast").is_file()
    assert (share / "zsh" / "site-functions" / "_taskstats-fast").is_file()
    assert (share / "fish" / "vendor_completions.d" / "taskstats-fast.fish").is_file()


def test_a_new_option_flows_into_man_page_and_completions():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    sub.choices["top"].add_argument("--tsf-dist-new-flag", choices=["x", "y"], help="a flag no generator knows")
    root = describe(parser)
    pages = manpage.pages(root)
    assert "\\-\\-tsf\\-dist\\-new\\-flag" in pages["taskstats-fast-top.1"]
    assert "tsf-dist-new-flag" not in pages["taskstats-fast-record.1"]
    scripts = completion.scripts(root)
    assert all("tsf-dist-new-flag" in text for text in scripts.values())
