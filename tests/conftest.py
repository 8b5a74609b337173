"""Shared test plumbing: the kernel-test gate and the fixtures more than one test module uses
(helper functions live in modules named by what they hold: wire.py, cgroup_workload.py, ...).

Kernel tests (``@pytest.mark.kernel``) talk to the running kernel's TASKSTATS interface and
need root.  Where they cannot run they skip with the reason, except under CI (``CI=true``),
where CI runs as root on a kernel with TASKSTATS: there a skip of a kernel test fails the run.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from taskstats_fast.kernel import privileges

from as_nobody import USER, nobody_env, nobody_identity, package_parent, remove_package_copy
from cgroup_workload import Group
from under_ci import UNDER_CI, kernel_unavailable_reason, unavailable


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


@pytest.fixture
def cgroup(request):
    """Makes cgroup v2 groups of the test's own (``cgroup()`` names one after the test), removed
    afterwards with whatever still runs in them."""
    groups = []

    def make(name: str = request.node.name[:40]) -> Group:
        g = Group(name.replace("[", "-").replace("]", ""))
        groups.append(g)
        return g
    yield make
    for g in groups:
        g.remove()


@pytest.fixture(scope="module")
def python_for_nobody(tmp_path_factory):
    """An interpreter with numpy and cffi whose files `nobody` can read (the package comes from
    PYTHONPATH: a readable copy)."""
    nobody = nobody_identity()
    if privileges.unreadable_for(nobody, [package_parent()]):
        unavailable(f"user {USER} cannot read {package_parent()}, a copy of the package under test")
    probe = ("import sysconfig, numpy, cffi; print(sysconfig.get_paths()['stdlib']); "
             "print(sysconfig.get_paths()['purelib']); print(sysconfig.get_paths()['platlib'])")

    def readable(python):
        run = subprocess.run([python, "-c", probe], capture_output=True, text=True, env=nobody_env())
        return run.returncode == 0 and privileges.unreadable_for(nobody, run.stdout.split()) is None

    if readable(sys.executable):
        yield sys.executable
        remove_package_copy()
        return
    base = "/usr/bin/python3"
    if not os.path.exists(base) or privileges.unreadable_for(nobody, [base]):
        unavailable(f"neither {sys.executable} nor {base} is readable by {USER}")
    parent = tempfile.mkdtemp(prefix="tsf-venv-", dir="/tmp")
    os.chmod(parent, 0o755)
    env = os.path.join(parent, "env")
    try:
        subprocess.run([base, "-m", "venv", "--without-pip", env], check=True)
        python = os.path.join(env, "bin", "python")
        run = subprocess.run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "numpy", "cffi"],
                             capture_output=True, text=True, env=nobody_env())
        assert run.returncode == 0, run.stdout + run.stderr
        assert readable(python)
        yield python
    finally:
        shutil.rmtree(parent, ignore_errors=True)
        remove_package_copy()
