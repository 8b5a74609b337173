"""The ``taskstats-fast`` command end to end against the running kernel (needs root).

Every test runs the real command in a subprocess (``python -m taskstats_fast``) and checks what it
printed or wrote against an independent source: a direct ``Connection`` query, the pids of
processes the test itself spawned, the files read back with pyarrow/numpy.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.parse

import pyarrow.dataset as ds
import pytest
from child_exits import spawn_exits

import taskstats_fast as tsf
from taskstats_fast import recording

pytestmark = pytest.mark.kernel

CLI = [sys.executable, "-m", "taskstats_fast"]
STARTED = "recording every task that exits"


def run(*args, timeout=60, cwd=None, prefix=()):
    return subprocess.run([*prefix, *CLI, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def start_record(*args, cwd=None):
    """Start the command and return once it has registered its listener (it says so)."""
    proc = subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=cwd)
    sel = selectors.DefaultSelector()
    sel.register(proc.stderr, selectors.EVENT_READ)
    deadline = time.monotonic() + 30
    seen = []
    while time.monotonic() < deadline:
        if sel.select(timeout=0.5):
            line = proc.stderr.readline()
            seen.append(line)
            if STARTED in line:
                sel.close()
                proc.started_line = line
                return proc
            if not line and proc.poll() is not None:
                break
    proc.kill()
    out, err = proc.communicate()
    pytest.fail(f"record did not start: {''.join(seen)}{err}")


def children(pids, ppids, exitcodes):
    """pid -> exit status of the recorded tasks this test process spawned (another process's
    task may reuse a pid while a busy machine records)."""
    me = os.getpid()
    return {p: e for p, pp, e in zip(pids, ppids, exitcodes) if pp == me}


def finish(proc, timeout=30):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, proc.started_line + err


def my_comm():
    with open("/proc/self/comm") as f:
        return f.read().strip()


# ---- pid / tgid ------------------------------------------------------------------------------

def test_pid_text_report_of_this_process():
    res = run("pid", str(os.getpid()))
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert out.startswith(f"pid {os.getpid()}  {my_comm()}")
    for label in ("CPU", "user", "system", "switches", "page faults", "memory", "I/O",
                  *(c.label for c in tsf.layout.DELAY_CLASSES), "average", "max", "min"):
        assert label in out, label
    assert ("delay accounting" in out or "task_delayacct is 0" in out) == \
        (tsf.delayacct_enabled() is False)
    assert "Traceback" not in res.stderr


def test_pid_json_matches_a_direct_query():
    pid = os.getpid()
    with tsf.Connection(warn_delayacct=False) as conn:
        before = conn.pid(pid)
        res = run("pid", str(pid), "--json")
        after = conn.pid(pid)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["kind"] == "pid" and doc["missing"] == []
    assert doc["delayacct_enabled"] == tsf.delayacct_enabled()
    (task,) = doc["tasks"]
    for field, column in (("ac_pid", "ac_pid"), ("ac_ppid", "ac_ppid"), ("ac_uid", "ac_uid"),
                          ("ac_gid", "ac_gid"), ("version", "version")):
        assert task[column] == int(before[field]) == int(after[field]), field
    assert task["ac_comm"] == before["ac_comm"].decode()
    # the kernel derives btime as "now - elapsed", so two queries may differ by a second
    btime = datetime.datetime.fromisoformat(task["ac_btime"]).timestamp()
    low, high = sorted((int(before["ac_btime64"]), int(after["ac_btime64"])))
    assert low - 1 <= btime <= high + 1
    # counters that only grow: the command's answer lies between the two direct queries
    for field, column in (("ac_utime", "ac_utime_us"), ("ac_stime", "ac_stime_us"),
                          ("cpu_count", "cpu_count"), ("cpu_delay_total", "cpu_delay_total_ns"),
                          ("ac_minflt", "ac_minflt"), ("nvcsw", "nvcsw")):
        assert int(before[field]) <= task[column] <= int(after[field]), field
    cpu = task["delays"]["cpu"]
    assert cpu["count"] == task["cpu_count"] and cpu["total_ns"] == task["cpu_delay_total_ns"]
    if cpu["count"]:
        assert cpu["average_ns"] == pytest.approx(cpu["total_ns"] / cpu["count"])
    assert cpu["max_ns"] == task["cpu_delay_max_ns"]


def test_tgid_report_names_the_process_and_sums_threads():
    res = run("tgid", str(os.getpid()), "--json")
    assert res.returncode == 0, res.stderr
    (task,) = json.loads(res.stdout)["tasks"]
    assert task["kind"] == "tgid" and task["id"] == os.getpid()
    assert task["comm_from_proc"] == my_comm()
    text = run("tgid", str(os.getpid())).stdout
    assert text.startswith(f"tgid {os.getpid()}  {my_comm()}") and "summed" in text
    faults = next(ln for ln in text.splitlines() if "page faults" in ln)
    assert "not reported" in faults and "minor" not in faults


def test_a_live_tgid_reply_fills_only_the_tgid_fields():
    """layout.TGID_FIELDS against the kernel: every other field of a TGID reply is zero, while
    the PID reply of the same (busy, multi-threaded) process fills some of them."""
    import threading
    done = threading.Event()
    threads = [threading.Thread(target=done.wait) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        with tsf.Connection(warn_delayacct=False) as conn:
            (tgid,) = conn.tgids([os.getpid()]).records
            (pid,) = conn.pids([os.getpid()]).records
    finally:
        done.set()
    others = [n for n in tsf.layout.RECORD_FIELDS
              if n not in tsf.layout.TGID_FIELDS and n not in {m[0] for m in tsf.layout.META_FIELDS}]
    assert [n for n in others if tgid[n].any()] == []
    assert {"ac_minflt", "hiwater_rss", "ac_comm"} <= {n for n in others if pid[n].any()}
    assert tgid["ac_utime"] + tgid["ac_stime"] > 0 and tgid["nvcsw"] > 0


def test_missing_pid_exit_code_and_the_others_still_reported():
    gone = spawn_exits(1, 0)[0]
    res = run("pid", str(os.getpid()), str(gone))
    assert res.returncode == 4
    assert f"pid {os.getpid()}" in res.stdout
    assert f"no task with pid {gone}" in res.stderr and "Traceback" not in res.stderr


NO_NET_ADMIN = ["setpriv", "--bounding-set", "-net_admin", "--inh-caps", "-net_admin"]


def test_without_cap_net_admin_the_message_says_what_to_do(tmp_path):
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    res = run("pid", "1", prefix=NO_NET_ADMIN)
    assert res.returncode == 3, res.stderr
    assert "CAP_NET_ADMIN" in res.stderr and "Traceback" not in res.stderr
    assert res.stderr.count("\n") == 1 and "[Errno" not in res.stderr
    # the bare command (record) fails the same way and leaves nothing behind
    res = run(prefix=NO_NET_ADMIN, cwd=str(tmp_path))
    assert res.returncode == 3 and "CAP_NET_ADMIN" in res.stderr, res.stderr
    assert os.listdir(tmp_path) == []


# ---- snapshot --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["now.parquet", "now.npy"])
def test_snapshot_writes_every_live_process(tmp_path, name):
    path = tmp_path / name
    res = run("snapshot", "-o", str(path))
    assert res.returncode == 0, res.stderr
    table = recording.read_table([str(path)], ["ac_pid", "ac_comm", "kind"])
    pids = table.column("ac_pid").to_pylist()
    assert os.getpid() in pids and 1 in pids
    assert set(table.column("kind").to_pylist()) == {"pid"}
    live = {int(p) for p in os.listdir("/proc") if p.isdigit()}
    assert len(set(pids) & live) >= 0.9 * len(live)   # some may have come and gone meanwhile
    meta = recording.read_metadata(str(path))
    assert meta["source"] == "snapshot" and meta["records"] == len(pids)
    assert f"wrote {len(pids):,} processes" in res.stdout


# ---- record ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A short parquet recording while this test spawns processes; (root, pids, stderr)."""
    root = tmp_path_factory.mktemp("rec") / "exits"
    seconds = 2.5
    proc = start_record("record", "--seconds", str(seconds), "-o", str(root), "--format", "parquet")
    started = time.monotonic()
    pids = []
    for _ in range(25):
        pid = spawn_exits(1, 3)[0]
        # on a slow machine (qemu's software emulation) the recording may end before all 25 have
        # run: judge only the ones that exited well inside it (here: all of them)
        if time.monotonic() - started < seconds - 0.5:
            pids.append(pid)
    assert pids, "no child exited inside the recording window"
    code, out, err = finish(proc)
    assert code == 0, err
    return root, pids, err


def test_record_has_every_spawned_process(recorded):
    root, pids, err = recorded
    table = ds.dataset(str(root), format="parquet", partitioning="hive").to_table()
    assert set(table.column("host").to_pylist()) == {socket.gethostname()}
    got = children(table.column("ac_pid").to_pylist(), table.column("ac_ppid").to_pylist(),
                   table.column("ac_exitcode").to_pylist())
    lost = sum(recording.read_metadata(f)["lost"] for f in recording.find_files([str(root)]))
    assert len(set(pids) - set(got)) <= lost, err    # all of them, unless the kernel dropped some
    assert {got[p] for p in set(pids) & set(got)} == {3 << 8}
    assert f"recorded {table.num_rows:,} records" in err and "Traceback" not in err


def test_record_files_carry_their_metadata(recorded):
    root, pids, _ = recorded
    files = recording.find_files([str(root)])
    assert files
    metas = [recording.read_metadata(f) for f in files]
    total = ds.dataset(str(root), format="parquet", partitioning="hive").count_rows()
    assert sum(m["records"] for m in metas) == total
    for m in metas:
        assert m["hostname"] == socket.gethostname()
        assert m["kernel_release"] == os.uname().release
        assert m["cpus"] and m["source"] == "exit stream"
        assert m["taskstats_version"] >= 13
        assert m["lost"] >= 0 and "overruns" in m and m["lost_since_start"] >= m["lost"]
        assert m["first_record"] <= m["last_record"]


@pytest.mark.parametrize("sig,target", [
    (signal.SIGINT, "exits.npy"), (signal.SIGTERM, "exits"), (signal.SIGINT, "exits.csv"),
])
def test_a_signal_stops_record_with_every_record_on_disk(tmp_path, sig, target):
    out = tmp_path / target
    proc = start_record("record", "-o", str(out), "--format",
                        {"exits.npy": "npy", "exits": "arrow", "exits.csv": "csv"}[target])
    pids = spawn_exits(20, 5)        # their exit messages are queued before wait() returns
    proc.send_signal(sig)
    code, _, err = finish(proc)
    assert code == 0, err
    assert f"stopped by {signal.Signals(sig).name}" in err
    files = recording.find_files([str(out)])
    assert len(files) == 1
    cols = recording.read_columns(files, ["ac_pid", "ac_ppid", "ac_exitcode"])
    got = children(*(cols[n][0].tolist() for n in ("ac_pid", "ac_ppid", "ac_exitcode")))
    meta = recording.read_metadata(files[0])
    # every record the listener received is in the file ...
    assert meta["records"] == len(cols["ac_pid"][0]) == \
        meta["received_since_start"] - meta["discarded_since_start"]
    assert meta["discarded_since_start"] == 0     # stop() hands back what was still queued
    # ... and every spawned process is, unless the kernel dropped messages (a machine busy with
    # other exits), which the file then counts
    missing = set(pids) - set(got)
    assert len(missing) <= meta["lost_since_start"], err
    assert {got[p] for p in set(pids) & set(got)} == {5 << 8}
    leftovers = [n for _, _, names in os.walk(tmp_path) for n in names if n.endswith(".inprogress")]
    assert leftovers == []


def test_bare_command_records_to_the_default_place(tmp_path):
    proc = start_record(cwd=str(tmp_path))
    assert "taskstats-exits" in proc.started_line and "Ctrl-C" in proc.started_line
    pids = spawn_exits(5, 0)
    proc.send_signal(signal.SIGINT)
    code, _, err = finish(proc)
    assert code == 0, err
    files = recording.find_files([str(tmp_path / "taskstats-exits")])
    assert files and files[0].endswith(".parquet")
    assert f"host={urllib.parse.quote(socket.gethostname(), safe='')}" in files[0]
    table = recording.read_table(files, ["ac_pid"])
    lost = recording.read_metadata(files[0])["lost"]
    assert len(set(pids) - set(table.column("ac_pid").to_pylist())) <= lost
    assert "summary" in err    # tells the user what to do next


# Runs ``record`` noting which modules were loaded when its listener registered and at the
# recording loop's first read, and prints those loaded in between.
_BETWEEN = """
import runpy, sys
from taskstats_fast.kernel import listener
from taskstats_fast.recording import driver
seen = {}
opened, read = listener.ExitListener._open, driver._ExitSource.read
def noting_open(self, *a, **k):
    opened(self, *a, **k)
    seen["registered"] = set(sys.modules)
def noting_read(self, *a, **k):
    if "read" not in seen:
        seen["read"] = set(sys.modules)
        print("loaded in between:", sorted(seen["read"] - seen["registered"]), file=sys.stderr)
    return read(self, *a, **k)
listener.ExitListener._open, driver._ExitSource.read = noting_open, noting_read
sys.argv = ["taskstats-fast"] + sys.argv[1:]
runpy.run_module("taskstats_fast", run_name="__main__")
"""


@pytest.mark.parametrize("fmt", ["parquet", "npy", "arrow", "csv"])
def test_nothing_is_imported_between_registering_and_the_first_read(tmp_path, fmt):
    # Only a read-ahead thread reads the sockets in between, and imports compete with it for
    # the GIL: the sink's first-use imports (pyarrow's pandas) took longer than the sockets
    # hold at a full exit rate.
    done = subprocess.run([sys.executable, "-c", _BETWEEN, "record", "-o", str(tmp_path / "d"),
                           "--format", fmt, "--seconds", "0.2", "--no-status"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "loaded in between: []" in done.stderr, done.stderr


# Runs ``record`` with a recovery that takes 3 s (as a killed run's big file does) and says
# when it begins.
_SLOW_RECOVERY = """
import runpy, sys, time
from taskstats_fast.recording import sinks
recover = sinks.recover_leftovers
def slow_recovery(*a, **k):
    print("recovering", file=sys.stderr, flush=True)
    time.sleep(3)
    return recover(*a, **k)
sinks.recover_leftovers = slow_recovery
sys.argv = ["taskstats-fast"] + sys.argv[1:]
runpy.run_module("taskstats_fast", run_name="__main__")
"""


def test_exits_during_a_slow_recovery_are_recorded(tmp_path):
    # The listener is registered before the sink recovers what a killed run left; sockets with
    # room for a few dozen messages overflow unless they are read meanwhile.
    out = tmp_path / "exits"
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_RECOVERY, "record", "-o", str(out),
                             "--format", "npy", "--rcvbuf", "16384", "--no-status"],
                            stderr=subprocess.PIPE, text=True)
    seen = ""
    while "recovering" not in seen and proc.poll() is None:
        seen += proc.stderr.readline()
    pids = spawn_exits(150, 3)
    while STARTED not in seen and proc.poll() is None:
        seen += proc.stderr.readline()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, seen + err
    cols = recording.read_columns(recording.find_files([str(out)]), ["ac_pid", "ac_ppid"])
    got = children(cols["ac_pid"][0].tolist(), cols["ac_ppid"][0].tolist(), cols["ac_pid"][0])
    assert set(pids) <= set(got), seen + err


# ---- summary ---------------------------------------------------------------------------------

def test_summary_table_and_json(recorded):
    root, pids, _ = recorded
    res = run("summary", str(root))
    assert res.returncode == 0, res.stderr
    assert "Top 10 commands by CPU time" in res.stdout and "by I/O" in res.stdout
    doc = json.loads(run("summary", str(root), "--json", "--top", "100000").stdout)
    table = ds.dataset(str(root), format="parquet", partitioning="hive").to_table()
    # a quiet machine may record children that never waited on a run queue: then the summary
    # must say so instead of printing the table
    waited = any(v for v in table.column("cpu_delay_total_ns").to_pylist() if v)
    if waited:
        assert "run queue delay (cpu)" in res.stdout
    else:
        assert re.search(r"no delays recorded for: (.*, )?cpu\b", res.stdout), res.stdout
    kinds, comms = table.column("kind").to_pylist(), table.column("ac_comm").to_pylist()
    assert doc["exits"] == kinds.count("pid")
    assert doc["hosts"] == [socket.gethostname()]
    sh_exits = sum(1 for k, c in zip(kinds, comms) if k == "pid" and c == "sh")
    assert sh_exits >= len(pids) - doc["lost"]
    sh = [r for r in doc["delays"]["cpu"] + doc["cpu"] if r["comm"] == "sh"]
    assert sh and {r["exits"] for r in sh} == {sh_exits}
    assert all(r["cpu_ns"] == pytest.approx(r["user_ns"] + r["system_ns"]) for r in doc["cpu"])


def test_summary_plot_is_a_png(recorded, tmp_path):
    root, _, _ = recorded
    png = tmp_path / "exits.png"
    res = run("summary", str(root), "--plot", str(png))
    assert res.returncode == 0, res.stderr
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    length, chunk, width, height = struct.unpack(">I4sII", data[8:24])
    assert chunk == b"IHDR" and length == 13
    assert (width, height) == (1100, 800)
    assert len(data) > 10_000      # a picture, not an empty canvas


def test_summary_of_nothing_is_a_clear_error(tmp_path):
    res = run("summary", str(tmp_path / "nope"))
    assert res.returncode == 1 and "no such file or directory" in res.stderr
    assert "Traceback" not in res.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    res = run("summary", str(empty))
    assert res.returncode == 2 and "no recorded files" in res.stderr


# ---- failures found before, or while, recording -------------------------------------------

def one_line(res):
    assert "Traceback" not in res.stderr, res.stderr
    assert res.stderr.count("\n") == 1, res.stderr
    return res.stderr


def test_an_unwritable_output_fails_before_recording_starts():
    # root passes os.access on /proc: only creating a file there shows it cannot be written
    started = time.monotonic()
    res = run("record", "-o", "/proc/taskstats-fast-test.parquet", "--seconds", "10")
    assert res.returncode == 1 and time.monotonic() - started < 8
    line = one_line(res)
    assert "/proc" in line and STARTED not in line


def test_a_receive_buffer_out_of_range_is_a_usage_error(tmp_path):
    res = run("record", "-o", str(tmp_path / "x"), "--rcvbuf", "3000000000", "--seconds", "1")
    assert res.returncode == 2
    assert "--rcvbuf" in one_line(res) and os.listdir(tmp_path) == []


@pytest.fixture
def small_disk(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a small tmpfs: {mounted.stderr.strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_full_disk_says_once_how_many_records_were_not_written(small_disk):
    proc = start_record("-o", str(small_disk / "exits"), "--format", "npy",
                        "--flush-records", "64", "--seconds", "60")
    deadline = time.monotonic() + 40
    while proc.poll() is None and time.monotonic() < deadline:
        subprocess.run(["sh", "-c", "for i in $(seq 200); do /bin/true; done"])
    code, out, err = finish(proc)
    err = err.replace(proc.started_line, "")
    assert code == 1, err
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert re.search(r"No space left on device: [\d,]+ of the [\d,]+ records received were not "
                     r"written", err), err


def test_snapshot_into_a_directory_is_found_by_summary(tmp_path):
    target = tmp_path / "snapdir"
    res = run("snapshot", "-o", f"{target}/")
    assert res.returncode == 0, res.stderr
    (name,) = os.listdir(target)
    assert name.startswith("snapshot-") and name.endswith(".parquet")
    res = run("summary", str(target))
    assert res.returncode == 0, res.stderr
    assert "live tasks" in res.stdout and "exits" not in res.stdout
    # an existing directory: a file inside it, not one beside it
    assert run("snapshot", "-o", str(target)).returncode == 0
    assert len(os.listdir(target)) == 2 and os.listdir(tmp_path) == ["snapdir"]
