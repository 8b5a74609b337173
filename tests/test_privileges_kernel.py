"""Dropping root after the sockets are open (kernel.privileges, `record --user/--group`).

Checked from the outside, in /proc/PID/status of the process that switched: every uid and gid is
the user's, every capability set is empty and no_new_privs is set; exit records keep arriving;
files are created as the user; closing the listener raises and warns nothing. A query after
the switch is refused (TASKSTATS queries need CAP_NET_ADMIN at every request) unless
CAP_NET_ADMIN was kept.

The process that switches must still import after the switch, so it runs on a Python the user
`nobody` can read (this interpreter when it can, else a virtual environment made from the
distribution's /usr/bin/python3: a pyenv Python under /root, mode 0700, is unreadable) and on a
copy of the package under /tmp (a checkout may be unreadable too).
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse

import numpy as np
import pytest

from taskstats_fast import DTYPE
from taskstats_fast.errors import UnknownUserError
from taskstats_fast.recording import system_metadata
from taskstats_fast.kernel import privileges

from as_nobody import (GROUP, USER, nobody_env, nobody_identity, remove_package_copy,
                       status_fields)
from under_ci import unavailable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module", autouse=True)
def _remove_the_package_copy():
    yield
    remove_package_copy()


@pytest.fixture
def nobody_dir():
    """A directory `nobody` may write in (pytest's tmp_path is under a 0700 directory)."""
    path = tempfile.mkdtemp(prefix="tsf-nobody-", dir="/tmp")
    os.chmod(path, 0o755)
    nobody = nobody_identity()
    os.chown(path, nobody.uid, nobody.gid)
    yield path
    shutil.rmtree(path, ignore_errors=True)


# ---- without the kernel -------------------------------------------------------------------

def test_an_unknown_user_or_group_is_named():
    with pytest.raises(UnknownUserError, match="no such user: 'tsf-no-such-user'"):
        privileges.resolve_identity("tsf-no-such-user")
    with pytest.raises(UnknownUserError, match="no such group: 'tsf-no-such-group'"):
        privileges.resolve_identity("root", "tsf-no-such-group")


def test_a_user_resolves_to_its_ids_and_groups():
    nobody = nobody_identity()
    entry = pwd.getpwnam(USER)
    assert (nobody.user, nobody.uid, nobody.gid) == (USER, entry.pw_uid, grp.getgrnam(GROUP).gr_gid)
    assert nobody.gid in nobody.groups
    assert privileges.resolve_identity(str(entry.pw_uid)).uid == entry.pw_uid


def test_credentials_are_this_process(tmp_path):
    now = privileges.credentials()
    assert now.uids[1] == os.geteuid() and now.gids[1] == os.getegid()
    assert privileges.has_capability("CAP_NET_ADMIN") == bool(now.effective >> 12 & 1)


@pytest.fixture
def open_dir():
    """A directory under /tmp that every user can search (pytest's tmp_path is under a 0700 one)."""
    path = tempfile.mkdtemp(prefix="tsf-open-", dir="/tmp")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_directory_the_user_cannot_search_is_found(open_dir):
    nobody = nobody_identity()
    closed = os.path.join(open_dir, "closed")
    os.makedirs(os.path.join(closed, "inside"))
    os.chmod(closed, 0o700)
    assert privileges.unreadable_for(nobody, [os.path.join(closed, "inside")]) == closed
    os.chmod(closed, 0o755)
    assert privileges.unreadable_for(nobody, [os.path.join(closed, "inside")]) is None


def test_switching_refuses_when_the_user_could_not_import_afterwards(open_dir):
    """The check that keeps a service from dying at its first import after the switch."""
    if os.geteuid() != 0:
        unavailable("needs root to try a switch")
    nobody_identity()
    closed = os.path.join(open_dir, "python")
    os.mkdir(closed, 0o700)
    script = ("import os, sys; from taskstats_fast.kernel import privileges\n"
              f"privileges._python_paths = lambda: ({closed!r},)\n"
              "try:\n"
              f"    privileges.drop_privileges({USER!r}, {GROUP!r})\n"
              "except privileges.PrivilegeDropError as e:\n"
              "    print(e); sys.exit(0 if os.getuid() == 0 else 1)\n"
              "sys.exit(2)\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=nobody_env())
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"user 'nobody' could not read {closed}, where this Python imports from" in run.stdout


# ---- against the kernel --------------------------------------------------------------------

_LIBRARY_SCRIPT = r"""
import json, os, subprocess, sys, time, warnings
import taskstats_fast as tsf
from taskstats_fast.kernel import privileges
keep = tuple(sys.argv[2:])
listener = tsf.ExitListener()
privileges.drop_privileges("nobody", "nogroup", keep=keep)
with open("/proc/self/status") as f:
    status = f.read()
children = [subprocess.Popen(["sh", "-c", "exit 7"]) for _ in range(5)]
pids = {c.pid for c in children}
for c in children:
    c.wait()
seen, deadline = set(), time.monotonic() + 10
while pids - seen and time.monotonic() < deadline:
    batch = listener.read(timeout=0.5)
    mine = batch[(batch["kind"] == tsf.KIND_PID) & (batch["ac_exitcode"] == 7 << 8)]
    seen |= {int(p) for p in mine["ac_pid"]} & pids
with open(os.path.join(sys.argv[1], "written-after-the-switch"), "w") as f:
    f.write("x")
try:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # delay accounting may be off: not what this is about
        tsf.Connection().pid(os.getpid())
    query = "allowed"
except tsf.errors.PermissionDeniedError:
    query = "refused"
with warnings.catch_warnings(record=True) as caught:   # closing after the switch: no error, no warning
    warnings.simplefilter("always")
    listener.close()
print(json.dumps({"status": status, "missing": sorted(pids - seen), "query": query,
                  "close_warnings": [str(w.message) for w in caught]}))
"""


def _run_library(python, directory, *keep):
    run = subprocess.run([python, "-c", _LIBRARY_SCRIPT, directory, *keep], capture_output=True, text=True,
                         env=nobody_env(), timeout=60)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["close_warnings"] == []
    return out


@pytest.mark.kernel
def test_after_the_switch_records_keep_arriving_as_nobody_with_no_capabilities(python_for_nobody, nobody_dir):
    out = _run_library(python_for_nobody, nobody_dir)
    status = status_fields(out["status"])
    nobody = nobody_identity()
    assert status["Uid"].split() == [str(nobody.uid)] * 4
    assert status["Gid"].split() == [str(nobody.gid)] * 4
    for caps in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(status[caps], 16) == 0, caps
    assert status["NoNewPrivs"] == "1"
    assert out["missing"] == []
    written = os.stat(os.path.join(nobody_dir, "written-after-the-switch"))
    assert (written.st_uid, written.st_gid) == (nobody.uid, nobody.gid)
    assert out["query"] == "refused"      # queries need CAP_NET_ADMIN at every request


@pytest.mark.kernel
def test_keeping_cap_net_admin_keeps_queries_working(python_for_nobody, nobody_dir):
    out = _run_library(python_for_nobody, nobody_dir, "CAP_NET_ADMIN")
    status = status_fields(out["status"])
    assert status["Uid"].split()[1] == str(nobody_identity().uid)
    for caps in ("CapPrm", "CapEff", "CapBnd"):
        assert int(status[caps], 16) == 1 << 12, caps
    assert int(status["CapAmb"], 16) == 0 and int(status["CapInh"], 16) == 0
    assert out["missing"] == [] and out["query"] == "allowed"


@pytest.mark.kernel
def test_switching_with_other_threads_running_is_refused():
    script = ("import threading, time\nfrom taskstats_fast.kernel import privileges\n"
              "threading.Thread(target=time.sleep, args=(5,), daemon=True).start()\n"
              "try:\n    privileges.drop_privileges('nobody', 'nogroup')\n"
              "except privileges.PrivilegeDropError as e:\n    print(e)\n")
    nobody_identity()
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=nobody_env())
    assert "before starting threads" in run.stdout, run.stdout + run.stderr


@pytest.mark.kernel
def test_record_with_user_writes_as_that_user_and_holds_no_capabilities(python_for_nobody, nobody_dir):
    dataset = os.path.join(nobody_dir, "exits")
    nobody = nobody_identity()
    # a complete file 40 days old, which --keep-days 30 deletes (as the user) after a rotation
    host = f"host={urllib.parse.quote(system_metadata()['hostname'], safe='')}"
    old = os.path.join(dataset, host, "date=2020-01-01", "part-old.npy")
    for directory in (dataset, os.path.dirname(old), os.path.dirname(os.path.dirname(old))):
        os.makedirs(directory, exist_ok=True)
        os.chown(directory, nobody.uid, nobody.gid)
    np.save(old, np.zeros(1, dtype=DTYPE))
    os.utime(old, (time.time() - 40 * 86400,) * 2)
    proc = subprocess.Popen([python_for_nobody, "-m", "taskstats_fast", "record", "--user", USER, "--group", GROUP,
                             "-o", dataset, "--format", "npy", "--rotate-seconds", "1", "--no-status",
                             "--keep-days", "30"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=nobody_env())
    try:
        status = {}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:   # wait for the switch, seen from outside
            with open(f"/proc/{proc.pid}/status") as f:
                status = status_fields(f.read())
            if status["Uid"].split()[0] != "0":
                break
            time.sleep(0.05)
        children = [subprocess.Popen(["sh", "-c", "exit 7"]) for _ in range(5)]
        pids = {c.pid for c in children}
        for c in children:
            c.wait()
        time.sleep(2.5)                       # past a rotation, so a file is completed meanwhile
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert not os.path.exists(old)
    assert status["Uid"].split() == [str(nobody.uid)] * 4
    assert int(status["CapEff"], 16) == 0 and int(status["CapPrm"], 16) == 0 and int(status["CapBnd"], 16) == 0
    assert status["NoNewPrivs"] == "1"
    assert "running as user nobody" in err
    files = [os.path.join(d, f) for d, _, fs in os.walk(dataset) for f in fs]
    assert files
    for path in files + [d for d, _, _ in os.walk(dataset) if d != dataset]:
        st = os.stat(path)
        assert (st.st_uid, st.st_gid) == (nobody.uid, nobody.gid), path
    recorded = np.concatenate([np.load(f) for f in files if f.endswith(".npy")])
    assert pids <= {int(p) for p in recorded["ac_pid"]}


def test_group_without_user_is_a_usage_error():
    run = subprocess.run([sys.executable, "-m", "taskstats_fast", "record", "--group", GROUP, "--seconds", "1",
                          "-o", "/nonexistent/x"], capture_output=True, text=True, env=nobody_env())
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1] == "taskstats-fast: --group needs --user"


def test_an_unknown_user_is_one_line_before_anything_is_written(tmp_path):
    if os.geteuid() != 0:
        unavailable("needs root: the listener opens before the switch")
    run = subprocess.run([sys.executable, "-m", "taskstats_fast", "record", "--user", "tsf-no-such-user",
                          "--seconds", "1", "-o", str(tmp_path / "x")],
                         capture_output=True, text=True, env=nobody_env())
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip().splitlines() == ["taskstats-fast: --user/--group: no such user: 'tsf-no-such-user' "
                                               "(give a name from /etc/passwd or a numeric uid)"]
    assert not (tmp_path / "x").exists()


@pytest.mark.kernel
def test_switching_needs_root(python_for_nobody):
    script = ("import os\nfrom taskstats_fast.kernel import privileges\nos.setresuid(65534, 65534, 65534)\n"
              "try:\n    privileges.drop_privileges('nobody', 'nogroup')\n"
              "except privileges.PrivilegeDropError as e:\n    print(e)\n")
    run = subprocess.run([python_for_nobody, "-c", script], capture_output=True, text=True, env=nobody_env())
    assert "switching to user 'nobody' needs root (running as uid 65534)" in run.stdout, run.stdout + run.stderr


@pytest.mark.kernel
def test_record_with_user_into_a_directory_the_user_cannot_write_is_one_line(python_for_nobody, open_dir):
    """root could write there (the check before registering passes); the user cannot, which
    the file writer finds right after the switch, before recording anything."""
    dataset = os.path.join(open_dir, "exits")          # open_dir: root's, mode 0755
    run = subprocess.run([python_for_nobody, "-m", "taskstats_fast", "record", "--user", USER, "--group", GROUP,
                          "-o", dataset, "--format", "npy", "--seconds", "5", "--no-status"],
                         capture_output=True, text=True, env=nobody_env(), timeout=60)
    assert run.returncode == 1, run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("taskstats-fast: ") and open_dir in last and "Traceback" not in run.stderr
    assert not os.path.exists(dataset)
