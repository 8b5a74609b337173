"""bench/peers.py: each agent runs the package it names.  ``--compare-tree`` measures another
source tree's Accounting beside this one; if the compared agent imported this checkout instead
(``python -c`` puts the working directory ahead of PYTHONPATH), the two would be one version
measured twice, and every before/after figure would read "no change"."""

from __future__ import annotations

import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))

import peers  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WHICH = "import taskstats_fast; print(taskstats_fast.__file__)"


def _imported_by(agent) -> str:
    argv = agent.argv[:-1] + [WHICH]       # the agent's own command, printing what it imports
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def test_the_compared_agent_imports_the_compared_tree_even_when_run_from_this_checkout(tmp_path):
    (tmp_path / "taskstats_fast").mkdir()
    (tmp_path / "taskstats_fast" / "__init__.py").write_text("")
    by_name = {a.name: a for a in peers.agents(str(tmp_path), compare_tree=str(tmp_path))}
    assert _imported_by(by_name[peers.COMPARED]) == str(tmp_path / "taskstats_fast" / "__init__.py")
    assert _imported_by(by_name["taskstats_fast"]) != str(tmp_path / "taskstats_fast" / "__init__.py")
