"""A bounded libFuzzer run of the C codec on every change (owned by issue 6, hardening).

Builds tests/fuzz/fuzz_parse.c with clang -fsanitize=fuzzer,address,undefined, seeds a fresh
corpus with every capture and synthetic message (tests/fuzz/run_fuzz.py) and fuzzes for
TSF_FUZZ_SECONDS (default 60 under CI=true, 10 otherwise) with one process per core (at most 2).
Any crash, sanitizer report or broken parser contract fails the test with the input's path and
the fuzzer's report; keep the input as tests/data/fuzz_regressions/NAME.bin.  Longer runs:
`make fuzz FUZZ_SECONDS=600`.
"""

from __future__ import annotations

import os
import sys

import pytest

from under_ci import UNDER_CI, unavailable

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "fuzz"))
import run_fuzz  # noqa: E402

SECONDS = float(os.environ.get("TSF_FUZZ_SECONDS", "60" if UNDER_CI else "10"))
JOBS = max(1, min(2, os.cpu_count() or 1))


@pytest.fixture(scope="module")
def clang():
    why = run_fuzz.missing_fuzz_toolchain()
    if why:
        unavailable(why)
    return run_fuzz.find_clang()


def test_seeds_cover_every_capture_datagram_and_every_version():
    seeds = run_fuzz.all_seeds()
    for v in range(4, 18):
        assert f"v{v}_pid" in seeds and f"v{v}_pid_tgid0" in seeds
    assert "cap_6.18_exit_threads_d2" in seeds and len(seeds["cap_6.18_exit_threads_d2"]) == 1172
    assert any(k.startswith("malformed_") for k in seeds) and any(k.startswith("framing_") for k in seeds)


def test_fuzzing_finds_no_crash(clang, tmp_path):
    exe = run_fuzz.build(str(tmp_path / "build"), clang)
    report = run_fuzz.run(exe, SECONDS, str(tmp_path), jobs=JOBS, fresh=True)
    print(report.summary())
    assert not report.crashes, report.summary()
    # it really ran: the seeds reach deep into the parser and it executed many inputs
    assert report.executions >= 1000 * SECONDS, report.summary()
    assert report.cov >= 150, report.summary()


def test_a_planted_bug_is_caught(clang, tmp_path):
    """The run above can fail: the same target with a one-byte overread behind 'BUG!'."""
    exe = run_fuzz.build(str(tmp_path / "build"), clang, defines=["TSF_FUZZ_PLANTED_BUG"])
    report = run_fuzz.run(exe, 5, str(tmp_path), fresh=True, extra_seeds={"planted": b"BUG!"})
    assert report.crashes and report.crashes[0].artifacts, report.summary()
    assert "heap-buffer-overflow" in open(report.crashes[0].log).read()
