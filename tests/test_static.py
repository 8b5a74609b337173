"""Static checks of the C and Python code (owned by issue 6, hardening).

- every csrc/*.c and bench/*.c compiles warning-free (-Wall -Wextra -Werror) with gcc and with clang
  (the bench's C floors are what the speed goals are measured against: a warning there is a
  floor that may not measure what it says);
- cppcheck finds nothing in csrc/ and the C test drivers (warning, performance, portability;
  a finding may be silenced only inline, ``// cppcheck-suppress ID`` with the reason beside it);
- ruff (pyproject.toml [tool.ruff]) finds nothing in the repository;
- mypy (pyproject.toml [tool.mypy]) finds nothing in the taskstats_fast package nor in
  tests/typed/readme_example.py, the README's API used with types that are not Any.

The tools come from `make test`: gcc, clang and cppcheck from SYSTEM_PACKAGES, ruff and mypy
from the test extra.  Missing tools skip the checks here and fail them under CI=true.
"""

from __future__ import annotations

import collections
import glob
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys

import pytest

from under_ci import unavailable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CSRC = os.path.join(ROOT, "csrc")
C_SOURCES = sorted(glob.glob(os.path.join(CSRC, "*.c")))
BENCH_C_SOURCES = sorted(glob.glob(os.path.join(ROOT, "bench", "*.c")))
# C that cppcheck reads besides csrc/: the sanitizer harness and the fuzz target
C_TEST_DRIVERS = [os.path.join(ROOT, "tests", "c"), os.path.join(ROOT, "tests", "fuzz")]



def _tool(*names: str) -> str:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    unavailable(f"{names[0]} is not installed (`make test` installs it as root; see Makefile)")


def _python_tool(module: str) -> list:
    """``python -m module`` when importable here, else the console script."""
    probe = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True)
    return [sys.executable, "-m", module] if probe.returncode == 0 else [_tool(module)]


# ---- C ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("compiler", ["gcc", "clang"])
@pytest.mark.parametrize("source", [os.path.relpath(p, ROOT) for p in C_SOURCES + BENCH_C_SOURCES])
def test_c_compiles_without_warnings(compiler, source, tmp_path):
    cc = _tool(compiler)
    run = subprocess.run([cc, "-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror", "-I", CSRC, "-c",
                          os.path.join(ROOT, source), "-o", str(tmp_path / "out.o")],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def cppcheck_findings(paths) -> str:
    cppcheck = _tool("cppcheck")
    run = subprocess.run([cppcheck, "--enable=warning,performance,portability", "--error-exitcode=1",
                          "--inline-suppr", "--std=c11", "--quiet", "-I", CSRC, *paths],
                         capture_output=True, text=True)
    return run.stderr if run.returncode != 0 or run.stderr.strip() else ""


def test_cppcheck_finds_nothing():
    assert cppcheck_findings([CSRC, *C_TEST_DRIVERS]) == ""


# ---- Python -------------------------------------------------------------------------------------

def test_ruff_finds_nothing():
    run = subprocess.run(_python_tool("ruff") + ["check", "--output-format", "concise", "--no-cache", ROOT],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stdout + run.stderr


_MYPY_LINE = re.compile(r"^(?P<file>[^:]+):\d+: error: (?P<msg>.*?)\s+\[[\w-]+\]$")


def mypy_findings() -> collections.Counter:
    run = subprocess.run(_python_tool("mypy") + ["--no-incremental", "--no-error-summary",
                                                 "--hide-error-context"],
                         capture_output=True, text=True, cwd=ROOT)
    found: collections.Counter = collections.Counter()
    for line in run.stdout.splitlines():
        m = _MYPY_LINE.match(line)
        if m:
            found[(m["file"], m["msg"])] += 1
        elif ": error:" in line:
            found[(line, "")] += 1
    if run.returncode not in (0, 1) or (run.returncode == 1 and not found):
        pytest.fail(f"mypy did not run: {run.stdout}{run.stderr}")
    return found


def test_mypy_finds_nothing():
    found = mypy_findings()
    assert not found, "mypy findings:\n" + "\n".join(f"{f}: {m} (x{n})" for (f, m), n in found.items())


def test_the_readme_api_has_real_types_for_a_typed_caller(tmp_path):
    """What the README shows, seen by mypy from outside the package: DataFrames, arrays and
    Intervals, not Any (tests/typed/readme_example.py pins each with assert_type; this probe
    shows mypy can tell, which needs pandas' stubs from the test extra)."""
    try:
        importlib.metadata.version("pandas-stubs")
    except importlib.metadata.PackageNotFoundError:
        unavailable("pandas-stubs is not installed (the test extra has it: make install)")
    probe = tmp_path / "probe.py"
    probe.write_text("import taskstats_fast as tsf\n"
                     "reveal_type(tsf.read_frame('exits'))\n"
                     "reveal_type(tsf.read_records('exits'))\n"
                     "reveal_type(tsf.Accounting(interval=1.0).next().by('process', frame=True))\n")
    run = subprocess.run(_python_tool("mypy") + ["--no-incremental", "--no-error-summary", str(probe)],
                         capture_output=True, text=True, cwd=ROOT)
    revealed = re.findall(r'Revealed type is "([^"]+)"', run.stdout)
    assert revealed == ["pandas.core.frame.DataFrame", "numpy.ndarray[tuple[Any, ...], numpy.dtype[Any]]",
                        "pandas.core.frame.DataFrame"], run.stdout + run.stderr


def test_the_typed_readme_example_runs_on_the_shipped_dataset():
    dataset = os.path.join(ROOT, "tests", "data", "recordings-0.1.0", "dataset-parquet")
    run = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "typed", "readme_example.py"), dataset],
                         capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})
    assert run.returncode == 0, run.stderr
    assert run.stdout.split(maxsplit=1)[1].strip() == "['fixture-host']", run.stdout
