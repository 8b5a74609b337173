"""Every ```python block of README.md runs as written, each alone in a fresh interpreter: its
imports are its own, nothing carries over from the block before.  A block runs in a directory
that holds what the README says is there: ``exits/``, a recorded dataset (the 0.1.0 fixture's
hive layout, tests/data/recordings-0.1.0/dataset-parquet), ``usage/``, an interval dataset with
its PSI (tests/data/psi-format3/usage), and ``capture.bin``, a real kernel's
exit messages (tests/data/captures/6.12/exit_threads.bin).  Blocks that talk to the kernel
(a Connection, an ExitListener, Accounting) run as root, as CI does, with a churn of short
commands beside them so that exits happen; elsewhere they skip, under CI they fail.

Shell sessions and output are fenced as ``sh`` or left unlabelled, so they are not collected;
a block meant as Python but fenced otherwise would escape this test, hence the check that every
block that reads like Python is fenced ``python``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

from under_ci import kernel_unavailable_reason, unavailable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
DATASET = os.path.join(ROOT, "tests", "data", "recordings-0.1.0", "dataset-parquet")
CAPTURE = os.path.join(ROOT, "tests", "data", "captures", "6.12", "exit_threads.bin")
USAGE = os.path.join(ROOT, "tests", "data", "psi-format3", "usage")
KERNEL_NAMES = re.compile(r"\b(Connection|ExitListener|Accounting)\(")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
SECONDS = 120


def readme_blocks():
    """(language, first line number, source) of every fenced block of the README."""
    text = open(README, encoding="utf-8").read()
    return [(m.group(1), text.count("\n", 0, m.start()) + 2, m.group(2)) for m in FENCE.finditer(text)]


PYTHON_BLOCKS = [(line, source) for lang, line, source in readme_blocks() if lang == "python"]


def test_the_readme_has_python_blocks():
    assert len(PYTHON_BLOCKS) >= 8


def test_every_block_that_reads_like_python_is_fenced_python():
    looks_python = re.compile(r"^(import \w|from \w[\w.]* import |with tsf\.|for \w+ in )", re.MULTILINE)
    bad = [f"README.md:{line} (```{lang})" for lang, line, source in readme_blocks()
           if lang != "python" and looks_python.search(source)]
    assert not bad, "Python fenced as something else (not run by this test): " + ", ".join(bad)


@pytest.mark.parametrize("line,source", PYTHON_BLOCKS, ids=[f"line{line}" for line, _ in PYTHON_BLOCKS])
def test_readme_python_block_runs_as_written(line, source, tmp_path):
    needs_kernel = bool(KERNEL_NAMES.search(source))
    if needs_kernel:
        reason = kernel_unavailable_reason()
        if reason:
            unavailable(f"README.md:{line} talks to the kernel: {reason}")
    shutil.copytree(DATASET, tmp_path / "exits")
    shutil.copytree(USAGE, tmp_path / "usage")
    shutil.copyfile(CAPTURE, tmp_path / "capture.bin")
    script = tmp_path / "block.py"
    script.write_text(source)
    churn = None
    if needs_kernel:       # exits for a listener to hear, whatever else the machine is doing
        churn = subprocess.Popen(["sh", "-c", "while :; do /bin/true; sleep 0.05; done"])
    try:
        run = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                             timeout=SECONDS, env={**os.environ, "PYTHONPATH": ROOT})
    finally:
        if churn is not None:
            churn.kill()
            churn.wait()
    assert run.returncode == 0, f"README.md:{line} failed as written:\n{source}\n{run.stderr[-3000:]}"


def _table_columns():
    """Every column name a table of this package has: exits and snapshots (``to_pandas`` of
    ``DTYPE`` records), interval rows per task and per process, PSI rows, and the hive partition
    columns."""
    import numpy as np

    import taskstats_fast as tsf
    from taskstats_fast.recording import interval_schema, psi_schema

    names = set(tsf.to_pandas(np.zeros(1, tsf.DTYPE)).columns) | {"host", "date"}
    for rows in (interval_schema("task"), interval_schema("process"), psi_schema()):
        names |= set(rows.to_pandas(np.zeros(1, rows.dtype)).columns)
    return names


def test_every_column_a_readme_query_names_is_a_table_column():
    """The README's DuckDB queries use the one naming convention: each name that is not SQL (a
    function, a named argument, an alias the query defines) is a column of the tables we write."""
    pytest.importorskip("pandas")
    columns = _table_columns()
    queries = [(line, source) for lang, line, source in readme_blocks() if lang == "sql"]
    assert queries
    bad = []
    for line, source in queries:
        code = re.sub(r"--[^\n]*|'[^']*'", "", source)
        aliases = set(re.findall(r"\bAS\s+(\w+)", code, re.IGNORECASE))
        functions = set(re.findall(r"\b(\w+)\s*\(", code))
        arguments = set(re.findall(r"[(,]\s*(\w+)\s*=", code))          # read_parquet(..., hive_partitioning = true)
        sql = aliases | functions | arguments | {"true", "false"}
        for name in sorted(set(re.findall(r"\b[a-z][a-z0-9_]*\b", code)) - sql):
            if name not in columns:
                bad.append(f"README.md:{line}: {name}")
    assert not bad, "not a column of any table: " + ", ".join(bad)


def test_the_readme_per_process_query_groups_by_host_pid_and_start():
    """A pid alone merges the unrelated processes a pid wrap puts under it (issue 19): a process
    is (host, ac_tgid, ac_btime)."""
    per_process = [source for lang, _, source in readme_blocks() if lang == "sql" and "ac_tgid" in source]
    assert per_process
    for source in per_process:
        grouped = re.search(r"GROUP BY\s+(.*?)(?:\s+ORDER BY|\s+LIMIT|;|$)", source, re.DOTALL | re.IGNORECASE)
        assert grouped, source
        keys = {k.strip() for k in grouped.group(1).split(",")}
        assert {"host", "ac_tgid", "ac_btime"} <= keys, source
