"""The command line without the kernel: how it is assembled, its help, its error lines."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from taskstats_fast import cli
from taskstats_fast.cli import common

CLI = [sys.executable, "-m", "taskstats_fast"]


def run(*args, env=None):
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def subcommand_names():
    parser = cli.build_parser()
    (action,) = [a for a in parser._actions if a.dest == "command"]
    return list(action.choices)


def test_every_subcommand_module_adds_parsers_that_run_it():
    names = subcommand_names()
    assert {"pid", "tgid", "snapshot", "record", "summary"} <= set(names)
    parser = cli.build_parser()
    for module in cli.SUBCOMMANDS:
        assert callable(module.add_parser) and callable(module.run)
    assert parser.parse_args(["pid", "1"]).run is cli.query.run
    assert parser.parse_args(["summary", "x"]).run is cli.summary.run


@pytest.mark.parametrize("command", ["", *subcommand_names()])
def test_help_lines_are_wrapped(command):
    res = run(*([command] if command else []), "--help", env={"COLUMNS": "80"})
    assert res.returncode == 0, res.stderr
    long = [ln for ln in res.stdout.splitlines() if len(ln) > 80]
    assert not long, long


def test_wrap_keeps_paragraphs():
    text = common.wrap("first " * 30 + "\n\n" + "second " * 30)
    first, second = text.split("\n\n")
    assert max(map(len, text.splitlines())) <= common.HELP_WIDTH
    assert first.split() == ["first"] * 30 and second.split() == ["second"] * 30


@pytest.mark.parametrize("value,message", [("0", "must be at least 1"), ("x", "not a whole")])
def test_bad_option_values_are_one_line_exit_2(value, message):
    res = run("summary", "--top", value, "somewhere")
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr


BUGGY = ("import sys\n"
         "from taskstats_fast import cli\n"
         "def broken(args):\n"
         "    raise RuntimeError('something inside broke')\n"
         "cli.summary.run = broken\n"
         "sys.exit(cli.main(['summary', 'x']))\n")


def test_an_unexpected_error_is_one_line_saying_it_is_a_bug():
    res = subprocess.run([sys.executable, "-c", BUGGY], capture_output=True, text=True,
                         env={k: v for k, v in os.environ.items()
                              if k != common.TRACEBACK_VARIABLE})
    assert res.returncode == common.EXIT_ERROR
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    assert "something inside broke" in res.stderr and "bug" in res.stderr
    res = subprocess.run([sys.executable, "-c", BUGGY], capture_output=True, text=True,
                         env={**os.environ, common.TRACEBACK_VARIABLE: "1"})
    assert "Traceback" in res.stderr


# ---- snapshot -o: a directory means a file inside it ----------------------------------------
NOON = (2026, 12, 1, 12, 0, 0, 1, 335, 0)


@pytest.mark.parametrize("given,expected", [
    ("snapdir/", "snapdir/snapshot-20261201T120000Z.npy"),
    ("now.parquet", "now.parquet"),
    ("now", "now.npy"),
])
def test_snapshot_output_rule(given, expected):
    path, fmt = cli.snapshot.output_file(given, "npy" if not given.endswith(".parquet") else None,
                                         now=time.struct_time(NOON))
    assert path == expected and fmt == ("parquet" if expected.endswith(".parquet") else "npy")


def test_an_existing_directory_gets_a_file_inside(tmp_path):
    path, _ = cli.snapshot.output_file(str(tmp_path), "npy", now=time.struct_time(NOON))
    assert os.path.dirname(path) == str(tmp_path)
    assert os.path.basename(path).startswith("snapshot-") and path.endswith(".npy")
    open(path, "w").close()
    again, _ = cli.snapshot.output_file(str(tmp_path), "npy", now=time.struct_time(NOON))
    assert again != path and again.endswith("-1.npy")


def test_an_unknown_extension_is_refused_with_one_line(tmp_path):
    res = run("snapshot", "-o", str(tmp_path / "s.xyz"))
    assert res.returncode == 2 and "'.xyz'" in res.stderr
    assert res.stderr.count("\n") == 1 and os.listdir(tmp_path) == []


def test_building_the_command_line_loads_no_server():
    """Every subcommand builds the whole parser at start: `top`'s first screen must not wait for
    the exporter, the HTTP server and asyncio, which only `serve` runs."""
    script = ("import sys; from taskstats_fast.cli import build_parser; build_parser(); "
              "print(sorted(m for m in ('asyncio', 'taskstats_fast.live.server', 'taskstats_fast.live.exporter', "
              "'taskstats_fast.live.service') if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]", run.stdout
