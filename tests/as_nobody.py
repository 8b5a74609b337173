"""Running a process as the user ``nobody``: the user and group, a copy of the package under test
that every user can read, the environment that imports that copy, and the fields of
/proc/PID/status.  The ``python_for_nobody`` fixture (conftest.py) finds an interpreter to match."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import tempfile

from taskstats_fast.kernel import privileges
from under_ci import unavailable

USER, GROUP = "nobody", "nogroup"
PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(privileges.__file__)))
_COPY = {}


def package_parent():
    """A copy of the package under test (built extension included) where every user can read
    it: a checkout under /root, or a CI workspace, may not be."""
    if "path" not in _COPY:
        parent = tempfile.mkdtemp(prefix="tsf-package-", dir="/tmp")
        os.chmod(parent, 0o755)
        shutil.copytree(PACKAGE, os.path.join(parent, "taskstats_fast"),
                        ignore=shutil.ignore_patterns("__pycache__"))
        _COPY["path"] = parent
    return _COPY["path"]


def remove_package_copy():
    if "path" in _COPY:
        shutil.rmtree(_COPY.pop("path"), ignore_errors=True)


def nobody_identity():
    try:
        pwd.getpwnam(USER)
        grp.getgrnam(GROUP)
    except KeyError:
        unavailable(f"this machine has no user {USER!r} and group {GROUP!r} to switch to")
    return privileges.resolve_identity(USER, GROUP)


def nobody_env():
    """This environment, with the package imported from the copy every user can read."""
    env = dict(os.environ)
    env["PYTHONPATH"] = package_parent()
    return env


def status_fields(text):
    """/proc/PID/status as {field: value}."""
    return {k: v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}
