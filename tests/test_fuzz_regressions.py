"""Every input the fuzzer ever crashed on, kept as a named case (owned by issue 6, hardening).

tests/data/fuzz_regressions/NAME.bin are the (minimised) crashers of tests/fuzz/fuzz_parse.c.
Each must decode through the C path and the pure-Python reference decoder alike (same records,
same notes, only DecodeError from decode), run clean under the ASan+UBSan harness of
tests/c/parse_harness.c (built with gcc here), and pass the fuzz target's own contracts when
replayed through it (when clang is there).  EXPECT says what each one is about and what the
parser must report for it, so a case cannot silently change meaning.
"""

from __future__ import annotations

import glob
import os
import subprocess

import numpy as np
import pytest

import taskstats_fast as tsf
import reference
from taskstats_fast._native import NOTE_ERROR, ffi

from under_ci import unavailable

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join(HERE, "..", "csrc")
REGRESSIONS = os.path.join(HERE, "data", "fuzz_regressions")
CASES = sorted(os.path.basename(p)[:-4] for p in glob.glob(os.path.join(REGRESSIONS, "*.bin")))

INT32_MAX = 2**31 - 1

# name: (what the fuzzer found, the notes as (kind, code, offset, seq), the record count)
EXPECT = {
    "nlmsgerr_int32_min": (
        "NLMSG_ERROR whose error is INT32_MIN: `-err` overflowed int32 (UB) in tsf_parse and "
        "find_reply, the note read as a negative errno, and the reference decoder raised "
        "OverflowError. The errno is now clamped to INT32_MAX.",
        [(NOTE_ERROR, INT32_MAX, 0, 0)], 0),
}


def _read(name: str) -> bytes:
    with open(os.path.join(REGRESSIONS, name + ".bin"), "rb") as f:
        return f.read()


def test_every_case_is_described():
    assert CASES, "tests/data/fuzz_regressions/ is empty"
    assert sorted(EXPECT) == CASES


@pytest.mark.parametrize("name", CASES)
def test_c_and_reference_agree(name):
    data = _read(name)
    got = tsf.parse(data)
    ref_records, ref_notes = reference.parse(data)
    assert len(got.records) == len(ref_records)
    for field in tsf.layout.RECORD_FIELDS:
        if field != "time_ns":
            np.testing.assert_array_equal(got.records[field], ref_records[field], err_msg=field)
    assert got.notes.tolist() == ref_notes.tolist()
    _, notes, nrecords = EXPECT[name]
    assert got.notes.tolist() == notes
    assert len(got.records) == nrecords
    for decoder in (tsf.decode, reference.decode):
        try:
            decoder(data)
        except tsf.DecodeError:
            pass


@pytest.mark.parametrize("name", CASES)
def test_family_and_cgroupstats_parsers_report_a_positive_errno(name):
    data = _read(name)
    fam = ffi.new("struct tsf_family *")
    rc = tsf._native.lib.tsf_parse_family(data, len(data), fam)
    assert rc != 0 or fam.error > 0
    out, err = ffi.new("uint64_t[5]"), ffi.new("int32_t *")
    rc = tsf._native.lib.tsf_parse_cgroupstats(data, len(data), 31, out, err)
    assert rc != 0 or err[0] > 0


def test_clean_under_asan_and_ubsan(asan_harness):
    exe, plan = asan_harness
    paths = [os.path.join(REGRESSIONS, n + ".bin") for n in CASES]
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:exitcode=86",
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:exitcode=87")
    run = subprocess.run([str(exe), str(plan)] + paths, capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr[-4000:]
    assert run.stdout.count("records=") == len(paths)


def test_fuzz_target_contracts_hold(tmp_path):
    import sys
    sys.path.insert(0, os.path.join(HERE, "fuzz"))
    import run_fuzz

    why = run_fuzz.missing_fuzz_toolchain()
    if why:
        unavailable(why)
    exe = run_fuzz.build(str(tmp_path / "build"))
    run = run_fuzz.replay(exe, [os.path.join(REGRESSIONS, n + ".bin") for n in CASES])
    assert run.returncode == 0, run.stderr[-4000:]
