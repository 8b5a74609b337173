"""What durable recordings (issue 17: a journal fsynced every --flush-seconds, fsync before
every rename) cost ``record``, against the recorder of the commit before them, in the same run.

Both recorders run as ``python -m taskstats_fast record -o DIR --seconds S`` children while the
exit-stream bench's producers (bench/exit_storm.c, one per online CPU, as fast as they can)
cause exits; rounds interleave the two, and each reports its median over the rounds:

* CPU per record written: the child's user + sys (``wait4``) less that of the same recorder
  run as long with no producers (start-up, imports and idle ticks: ~0.5 s that would otherwise
  swamp the per-record figure), over the records it wrote,
* records lost in each round (the kernel's drops and records not written; the run must have
  none), and how many of them the kernel dropped outside the producers' window (sampled by the
  child: other load on a shared machine, not the producers' exits),
* fsyncs per minute at the default --flush-seconds (the child times every ``os.fsync`` and
  tells files from directories) while the producers ran, and of them those of files (the steady
  rate: the journal's one per flush window, however busy; the directories' are the dataset's
  first file opening), and all of the run (its closing too).

``before`` is the package at ``BEFORE`` (``git archive``, with this checkout's compiled
extension: the C code did not change in between); without git history it is left out.

Run:  python3 bench/bench_durability.py [--seconds 6] [--repeat 3] [--formats parquet,npy]
Needs root (CAP_NET_ADMIN), a kernel with TASKSTATS and a C compiler.  The machine is shared and
noisy: compare the ratio, not the absolute figures.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from bench_exit_stream import build, finish_producers, start_producers  # noqa: E402

#: The last commit before durable recordings.
BEFORE = "780a064"

_CHILD = """
import atexit, runpy, sys, threading, time
from taskstats_fast.kernel import listener
import os, stat
# when each fsync was made, and of what (a file: the journal's flush or a file finished; a
# directory: a name created, renamed or removed)
fsyncs = []
real_fsync = os.fsync
def timed_fsync(fd):
    real_fsync(fd)
    fsyncs.append((time.monotonic(), "d" if stat.S_ISDIR(os.fstat(fd).st_mode) else "f"))
os.fsync = timed_fsync
atexit.register(lambda: print("fsyncs " + " ".join(f"{t:.3f}{k}" for t, k in fsyncs),
                              file=sys.stderr))
# when the kernel's drop counter moved (CLOCK_MONOTONIC, shared with the bench): losses while
# the producers ran are the recorder's; those after them, other load on this shared machine's
losses = []
opened = listener.ExitListener._open
def sample(it):
    seen = 0
    while not it.closed:
        try:
            lost = it.stats.lost
        except Exception:
            return
        if lost != seen:
            losses.append((time.monotonic(), lost - seen))
            seen = lost
        time.sleep(0.05)
def noting_open(self, *a, **k):
    opened(self, *a, **k)
    threading.Thread(target=sample, args=(self,), daemon=True).start()
listener.ExitListener._open = noting_open
atexit.register(lambda: print("losses " + " ".join(f"{t:.3f}:{n}" for t, n in losses),
                              file=sys.stderr))
sys.argv = ["taskstats-fast"] + sys.argv[1:]
runpy.run_module("taskstats_fast", run_name="__main__")
"""

#: What ``record`` says once its listener is registered and its loop is about to read.
STARTED = "recording every task that exits"
#: Seconds the recorder runs on after the producers stop (their last exits drain).
SETTLE = 0.5


def before_tree(tmp: str) -> Optional[str]:
    """The package at ``BEFORE`` under ``tmp`` (None without git history)."""
    where = os.path.join(tmp, "before")
    os.makedirs(where)
    archive = subprocess.run(["git", "-C", ROOT, "archive", BEFORE, "taskstats_fast"],
                             capture_output=True)
    if archive.returncode != 0:
        return None
    subprocess.run(["tar", "-x", "-C", where], input=archive.stdout, check=True)
    for ext in glob.glob(os.path.join(ROOT, "taskstats_fast", "_tsf_cffi*.so")):
        shutil.copy(ext, os.path.join(where, "taskstats_fast"))
    return where


def run_one(tree: str, storm: Optional[str], fmt: str, seconds: float, tmp: str) -> Dict:
    """One recorder child; the producers (if any) run from when it says it is recording until
    ``SETTLE`` before its end, so their exits all fall inside its window."""
    out = tempfile.mkdtemp(dir=tmp, prefix=f"rec-{fmt}-")
    env = dict(os.environ, PYTHONPATH=tree)
    child = subprocess.Popen([sys.executable, "-c", _CHILD, "record", "-o", out, "--format", fmt,
                              "--seconds", str(seconds + SETTLE), "--no-status"],
                             stderr=subprocess.PIPE, text=True, env=env, cwd=tmp)
    head = ""
    while STARTED not in head:
        line = child.stderr.readline()
        if not line:
            break
        head += line
    window = (time.monotonic(), None)
    caused = finish_producers(start_producers(storm, seconds)) if storm else 0
    window = (window[0], time.monotonic() + SETTLE)
    _, status, usage = os.wait4(child.pid, 0)
    err = head + child.stderr.read()
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"record failed ({child.returncode}): {err}")
    written = int(re.search(r"recorded ([\d,]+) records", err).group(1).replace(",", ""))
    lost = re.search(r"lost ([\d,]+) exit messages .* and ([\d,]+) records", err)
    synced = [(float(t[:-1]), t[-1]) for t in re.search(r"fsyncs(.*)", err).group(1).split()]
    during = [kind for t, kind in synced if window[0] <= t <= window[1] - SETTLE]
    elapsed = float(re.search(r"records in ([\d.]+) s", err).group(1))
    moments = [(float(t), int(n)) for t, n in re.findall(r"([\d.]+):(\d+)",
                                                        re.search(r"losses(.*)", err).group(1))]
    shutil.rmtree(out, ignore_errors=True)
    return dict(written=written, caused=caused, cpu=usage.ru_utime + usage.ru_stime,
                lost=0 if lost is None else sum(int(g.replace(",", "")) for g in lost.groups()),
                # sampled every 50 ms: a loss in the window's last sample may be counted outside
                lost_outside=sum(n for t, n in moments if not window[0] <= t <= window[1] + 0.1),
                # all of them; of files and directories while the producers ran
                fsyncs=len(synced), file_fsyncs=during.count("f"), dir_fsyncs=during.count("d"),
                window=window[1] - SETTLE - window[0], elapsed=elapsed,
                moments=[(round(t - window[0], 2), n) for t, n in moments])


def measure(seconds: float, repeat: int, formats: List[str]) -> Dict[str, Dict[str, List[Dict]]]:
    tmp = tempfile.mkdtemp(prefix="tsf-bench-durability-")
    try:
        exe = build(tmp)
        trees = {"durable": ROOT}
        before = before_tree(tmp)
        if before is not None:
            trees = {"before": before, **trees}
        runs: Dict[str, Dict[str, List[Dict]]] = {f: {v: [] for v in trees} for f in formats}
        for _ in range(repeat):
            for fmt in formats:
                for variant, tree in trees.items():   # interleaved
                    busy = run_one(tree, exe["exit_storm"], fmt, seconds, tmp)
                    idle = run_one(tree, None, fmt, seconds, tmp)
                    busy["cpu"] -= idle["cpu"]
                    busy["written"] -= idle["written"]
                    # not less the idle run's fsyncs: on a shared machine it records other
                    # users' exits too, so it is no baseline
                    busy["fsyncs_per_min"] = (busy["file_fsyncs"] + busy["dir_fsyncs"]) \
                        / busy["window"] * 60
                    busy["file_fsyncs_per_min"] = busy["file_fsyncs"] / busy["window"] * 60
                    runs[fmt][variant].append(busy)
        return runs
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def report(runs: Dict[str, Dict[str, List[Dict]]]) -> str:
    lines = []
    for fmt, variants in runs.items():
        per_record = {}
        for variant, rounds in variants.items():
            ns = statistics.median(r["cpu"] / max(1, r["written"]) * 1e9 for r in rounds)
            per_record[variant] = ns
            rate = statistics.median(r["written"] for r in rounds)
            fsyncs = statistics.median(r["fsyncs_per_min"] for r in rounds)
            files = statistics.median(r["file_fsyncs_per_min"] for r in rounds)
            whole = statistics.median(r["fsyncs"] for r in rounds)
            lost = "/".join(f"{r['lost']:,}" for r in rounds)
            outside = "/".join(f"{r['lost_outside']:,}" for r in rounds)
            lines.append(f"{fmt:8} {variant:8} {ns:9.0f} ns CPU/record  {rate:>10,.0f} records  "
                         f"lost {lost} (outside the producers' window {outside})"
                         + (f"  fsyncs/min {fsyncs:.0f} while the producers ran ({files:.0f} of "
                            f"files), {whole:.0f} in the whole run" if whole else ""))
        if "before" in per_record:
            lines.append(f"{fmt:8} durable / before: {per_record['durable'] / per_record['before']:.3f}x")
    return "\n".join(lines)


def timeline(runs: Dict[str, Dict[str, List[Dict]]]) -> str:
    """When each round's losses happened: (seconds after the producers started, messages)."""
    return "\n".join(f"{fmt:8} {variant:8} round {i}: {r['moments']}"
                     for fmt, variants in runs.items() for variant, rounds in variants.items()
                     for i, r in enumerate(rounds) if r["moments"])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--formats", default="parquet,npy")
    p.add_argument("--timeline", action="store_true",
                   help="also print when each round's losses happened")
    args = p.parse_args(argv)
    runs = measure(args.seconds, args.repeat, args.formats.split(","))
    print(report(runs))
    if args.timeline:
        print(timeline(runs))


def test_durability_cost():
    """Via pytest (bench/ is not collected by the normal test run)."""
    print("\n" + report(measure(4.0, 3, ["parquet", "npy"])))


if __name__ == "__main__":
    main()
