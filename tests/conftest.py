"""Shared test plumbing.

Kernel tests (``@pytest.mark.kernel``) talk to the running kernel's TASKSTATS interface and
need root.  Where they cannot run they skip with the reason, except under CI (``CI=true``),
where CI runs as root on a kernel with TASKSTATS: there a skip of a kernel test fails the run.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from typing import NoReturn

import pytest

UNDER_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _kernel_unavailable_reason():
    if os.geteuid() != 0:
        return "needs root (CAP_NET_ADMIN) for TASKSTATS queries"
    try:
        from taskstats_fast.kernel import netlink
        netlink.resolve_family()
    except Exception as e:  # any failure here is a reason, reported verbatim
        return f"TASKSTATS is not usable here: {e}"
    return None


def unavailable(why: str) -> NoReturn:
    """A test whose tools or privileges are missing here: skip with the reason, fail under CI=true
    (CI runs `make test` as root, which installs every tool the suite needs)."""
    if UNDER_CI:
        pytest.fail(why, pytrace=False)
    pytest.skip(why)


_REASON = "unchecked"


def kernel_unavailable_reason():
    global _REASON
    if _REASON == "unchecked":
        _REASON = _kernel_unavailable_reason()
    return _REASON


def pytest_runtest_setup(item):
    if item.get_closest_marker("kernel") is None:
        return
    reason = kernel_unavailable_reason()
    if reason:
        if UNDER_CI:
            pytest.fail(f"kernel test cannot run under CI: {reason}", pytrace=False)
        pytest.skip(reason)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CI, any skip of a kernel test (also one from inside the test) is a failure."""
    outcome = yield
    report = outcome.get_result()
    if (UNDER_CI and report.skipped and not hasattr(report, "wasxfail")
            and item.get_closest_marker("kernel") is not None):
        report.outcome = "failed"
        report.longrepr = f"kernel test skipped under CI=true: {report.longrepr}"


@pytest.fixture(scope="session")
def asan_harness(tmp_path_factory):
    """tests/c/parse_harness.c built with csrc/ under ASan+UBSan: (executable, plan file).
    The plan file holds the copy plan taskstats_fast derives from its layout table."""
    from taskstats_fast._native import PLAN, ffi
    here = os.path.dirname(os.path.abspath(__file__))
    csrc = os.path.join(here, "..", "csrc")
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.fail("no C compiler: the sanitizer build needs cc (install gcc)")
    d = tmp_path_factory.mktemp("asan")
    exe = d / "parse_harness"
    cmd = [cc, "-std=gnu11", "-g", "-O1", "-Wall", "-Wextra", "-Werror",
           "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer",
           "-I", csrc, "-o", str(exe), os.path.join(here, "c", "parse_harness.c")]
    subprocess.run(cmd + sorted(glob.glob(os.path.join(csrc, "*.c"))), check=True)
    plan = d / "plan.bin"
    plan.write_bytes(bytes(ffi.buffer(PLAN)))
    return exe, plan
