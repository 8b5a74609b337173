"""``top``'s procfs side on a fake /proc tree (no kernel): the system header's figures (CPU modes
between two reads of /proc/stat, load, memory and swap, tasks by state) and the per-process
figures of the rows on screen, including tasks that vanish and names with ')' in them."""

from __future__ import annotations

import os

import numpy as np
import pytest

from taskstats_fast.accounting.interval import EXITED, Interval
from taskstats_fast.live import header, top
from taskstats_fast.live.procfs import CPU_MODES, ProcFS

SECOND = 1_000_000_000
START = 1_700_000_000 * SECOND

MEMINFO = """MemTotal:        8000000 kB
MemFree:         2000000 kB
MemAvailable:    5000000 kB
Buffers:          100000 kB
Cached:          1000000 kB
SwapCached:            0 kB
SReclaimable:     200000 kB
SwapTotal:       1048576 kB
SwapFree:         524288 kB
HugePages_Total:       0
"""


def stat_text(total, per_cpu, running=3, blocked=1):
    lines = ["cpu  " + " ".join(map(str, total)) + " 0 0"]
    lines += [f"cpu{i} " + " ".join(map(str, row)) + " 0 0" for i, row in enumerate(per_cpu)]
    lines += ["intr 1 2 3", "ctxt 99", "btime 1700000000", "processes 500",
              f"procs_running {running}", f"procs_blocked {blocked}"]
    return "\n".join(lines) + "\n"


def fake_proc(root, total, per_cpu, **kw):
    (root / "stat").write_text(stat_text(total, per_cpu, **kw))
    (root / "loadavg").write_text("1.50 0.75 0.25 4/321 12345\n")
    (root / "uptime").write_text("3723.45 7000.00\n")
    (root / "meminfo").write_text(MEMINFO)
    return ProcFS(str(root))


def fake_process(root, pid, comm, state="S", utime=250, stime=50, nice=5, rss_pages=300,
                 cmdline=b"", tid=None):
    d = root / str(pid) if tid is None else root / str(pid) / "task" / str(tid)
    d.mkdir(parents=True, exist_ok=True)
    # fields after "(comm)": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
    # utime stime cutime cstime priority nice threads itrealvalue starttime vsize rss ...
    after = [state, 1, pid, pid, 0, -1, 0, 0, 0, 0, 0, utime, stime, 0, 0, 20, nice, 1, 0, 99,
             1 << 20, rss_pages]
    (d / "stat").write_text(f"{pid} ({comm}) " + " ".join(map(str, after)) + " 0 0\n")
    (d / "statm").write_text(f"1000 {rss_pages} 50 10 0 200 0\n")
    if tid is None:
        (d / "cmdline").write_bytes(cmdline)


def test_cpu_modes_are_the_ticks_between_two_reads(tmp_path):
    # modes: user nice system idle iowait irq softirq steal
    procfs = fake_proc(tmp_path, [100, 0, 50, 800, 10, 0, 0, 40], [[50, 0, 25, 400, 5, 0, 0, 20]] * 2)
    system = header.SystemHeader(procfs)
    fake_proc(tmp_path, [160, 0, 70, 860, 30, 0, 0, 80],          # +60 +0 +20 +60 +20 +0 +0 +40
              [[100, 0, 30, 410, 5, 0, 0, 55], [60, 0, 40, 450, 25, 0, 0, 25]])
    view = system.advance()
    pct = header.cpu_percentages(view)
    by_mode = dict(zip(CPU_MODES, pct[0]))
    assert by_mode == pytest.approx({"user": 30.0, "nice": 0.0, "system": 10.0, "idle": 30.0,
                                     "iowait": 10.0, "irq": 0.0, "softirq": 0.0, "steal": 20.0})
    assert pct[1][CPU_MODES.index("steal")] == pytest.approx(35.0)   # of 100 ticks
    assert pct[2][CPU_MODES.index("iowait")] == pytest.approx(20.0)
    iv = Interval.from_arrays(START, START + SECOND, {"ac_pid": [1, 2, 3, 4], "ac_tgid": [1, 1, 3, 4],
                                                      "state": [0, 0, 0, EXITED]}, n=4)
    lines = header.system_lines(iv, view)
    assert lines[0] == "Tasks: 2, 3 thr; 3 running, 1 blocked, 0 sleeping  load 1.50 0.75 0.25"
    assert lines[1] == ("%Cpu(s): 30.0 us, 10.0 sy,  0.0 ni, 30.0 id, 10.0 wa,  0.0 hi,  0.0 si,"
                        " 20.0 st")
    assert lines[2] == ("MiB Mem :    7812.5 total,    1953.1 free,    2929.7 used,    1269.5 "
                        "buff/cache")
    assert lines[3] == "MiB Swap:    1024.0 total,     512.0 free,     512.0 used.    4882.8 avail Mem"
    per_cpu = header.system_lines(iv, view, per_cpu=True)
    assert [line.split(":")[0] for line in per_cpu[1:3]] == ["%Cpu0 ", "%Cpu1 "]
    assert per_cpu[3].startswith("MiB Mem")


def test_the_first_view_and_a_missing_proc_still_render(tmp_path):
    procfs = fake_proc(tmp_path, [10, 0, 10, 80, 0, 0, 0, 0], [])
    view = header.SystemView(None, procfs.system())               # since boot, as top's first screen
    assert header.cpu_percentages(view)[0][CPU_MODES.index("idle")] == pytest.approx(80.0)
    empty = ProcFS(str(tmp_path / "nothing-here"))
    sample = empty.system()
    assert sample.memory == {} and sample.load == (0.0, 0.0, 0.0)
    iv = Interval.from_arrays(START, START + SECOND, {}, n=0)
    assert len(header.system_lines(iv, header.SystemView(sample, sample))) == 4


def test_process_figures_and_command_lines(tmp_path):
    procfs = ProcFS(str(tmp_path))
    fake_process(tmp_path, 42, "odd) name (x", state="R", utime=250, stime=50, nice=-5,
                 cmdline=b"/usr/bin/odd\0--flag\0value\0")
    fake_process(tmp_path, 42, "worker", state="D", utime=10, stime=0, tid=43)
    got = procfs.process(42)
    assert (got.state, got.nice, got.rss_bytes) == ("R", -5, 300 * os.sysconf("SC_PAGE_SIZE"))
    assert got.cpu_seconds == pytest.approx(300 / os.sysconf("SC_CLK_TCK"))
    assert procfs.process(42, 43).state == "D"
    assert procfs.cmdline(42) == "/usr/bin/odd --flag value"
    assert procfs.process(999) is None and procfs.cmdline(999) is None   # gone: no figures
    fake_process(tmp_path, 7, "kthreadd")
    assert procfs.cmdline(7) is None                                   # a kernel thread


def test_the_real_proc_reads():
    sample = ProcFS().system()
    assert sample.cpu.shape == (1 + os.cpu_count(), len(CPU_MODES)) and (sample.cpu >= 0).all()
    assert sample.memory["MemTotal"] > 0 and sample.running >= 1
    me = ProcFS().process(os.getpid())
    assert me.state in "RS" and me.rss_bytes > 0
    assert "pytest" in ProcFS().cmdline(os.getpid()) or "python" in ProcFS().cmdline(os.getpid())


def test_the_sink_shows_the_system_lines(tmp_path):
    procfs = fake_proc(tmp_path, [10, 0, 10, 80, 0, 0, 0, 0], [[10, 0, 10, 80, 0, 0, 0, 0]])
    import io
    out = io.StringIO()
    sink = top.TopSink(out=out, system=header.SystemHeader(procfs))
    sink.write(Interval.from_arrays(START, START + SECOND, {"ac_pid": [1], "ac_tgid": [1]}, n=1))
    lines = out.getvalue().splitlines()
    assert lines[1].startswith("Tasks: 1, 1 thr;") and lines[2].startswith("%Cpu(s):")
    interval, view = sink.latest_frame()
    assert view is not None and np.array_equal(view.now.cpu, procfs.system().cpu)


def test_process_columns_and_command_lines_of_the_rows_shown(tmp_path):
    procfs = ProcFS(str(tmp_path))
    fake_process(tmp_path, 42, "odd", state="R", utime=6150, stime=0, nice=-5,
                 cmdline=b"/usr/bin/odd\0--flag\0")
    iv = Interval.from_arrays(START, START + SECOND, {"ac_pid": [42, 77], "ac_tgid": [42, 77],
                                                      "ac_comm": [b"odd", b"gone"], "ac_uid": [0, 0],
                                                      "cpu_ns": [5, 1]}, n=2)
    lines = top.render(iv, top.TopState(), width=120, procfs=procfs)
    head = next(line for line in lines if line.rstrip().endswith("COMMAND"))
    assert top.PROCESS_HEADER in head
    odd = next(line for line in lines if line.endswith(" odd"))
    ticks = os.sysconf("SC_CLK_TCK")
    assert "root     R  -5 " in odd and top._time_plus(6150 / ticks) in odd
    gone = next(line for line in lines if line.endswith(" gone"))
    assert "root     - " in gone                                   # exited since: dashes
    wide = top.render(iv, top.TopState(cmdline=True), procfs=procfs)
    assert any(line.endswith(" /usr/bin/odd --flag") for line in wide)
    assert any(line.endswith(" gone") for line in wide)            # no command line: its name
    assert top._time_plus(61.5) == "1:01.50"
