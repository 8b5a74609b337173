"""What durable recordings (issue 17: a journal fsynced every --flush-seconds, fsync before
every rename) cost ``record``, against the recorder of the commit before them, in the same run.

Both recorders run as ``python -m taskstats_fast record -o DIR --seconds S`` children while the
exit-stream bench's producers (bench/exit_storm.c, one per online CPU, as fast as they can)
cause exits; rounds interleave the two, and each reports its median over the rounds:

* CPU per record written: the child's user + sys (``wait4``) less that of the same recorder
  run as long with no producers (start-up, imports and idle ticks: ~0.5 s that would otherwise
  swamp the per-record figure), over the records it wrote,
* records lost (the kernel's drops and records not written; the run must have none),
* fsyncs per minute at the default --flush-seconds (the durable recorder counts its own), all
  of them: the window's journal fsyncs and the fixed ones (new directories, open and close).

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
from typing import Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from bench_exit_stream import build, finish_producers, start_producers  # noqa: E402

#: The last commit before durable recordings.
BEFORE = "780a064"

_CHILD = """
import atexit, runpy, sys
try:
    from taskstats_fast.recording import durable
    atexit.register(lambda: print(f"fsyncs {durable.FSYNCS.count}", file=sys.stderr))
except ImportError:
    pass
sys.argv = ["taskstats-fast"] + sys.argv[1:]
runpy.run_module("taskstats_fast", run_name="__main__")
"""


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
    out = tempfile.mkdtemp(dir=tmp, prefix=f"rec-{fmt}-")
    env = dict(os.environ, PYTHONPATH=tree)
    child = subprocess.Popen([sys.executable, "-c", _CHILD, "record", "-o", out, "--format", fmt,
                              "--seconds", str(seconds), "--no-status"],
                             stderr=subprocess.PIPE, text=True, env=env, cwd=tmp)
    caused = finish_producers(start_producers(storm, seconds)) if storm else 0
    _, status, usage = os.wait4(child.pid, 0)
    err = child.stderr.read()
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"record failed ({child.returncode}): {err}")
    written = int(re.search(r"recorded ([\d,]+) records", err).group(1).replace(",", ""))
    lost = re.search(r"lost ([\d,]+) exit messages .* and ([\d,]+) records", err)
    fsyncs = re.search(r"fsyncs (\d+)", err)
    elapsed = float(re.search(r"records in ([\d.]+) s", err).group(1))
    shutil.rmtree(out, ignore_errors=True)
    return dict(written=written, caused=caused, cpu=usage.ru_utime + usage.ru_stime,
                lost=0 if lost is None else sum(int(g.replace(",", "")) for g in lost.groups()),
                fsyncs=None if fsyncs is None else int(fsyncs.group(1)), elapsed=elapsed)


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
                    if busy["fsyncs"] is not None:   # all of them: on a shared machine the
                        # "idle" run records other users' exits too, so it is no baseline
                        busy["fsyncs_per_min"] = busy["fsyncs"] / busy["elapsed"] * 60
                    else:
                        busy["fsyncs_per_min"] = None
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
            fsyncs = [r["fsyncs_per_min"] for r in rounds if r["fsyncs_per_min"] is not None]
            lines.append(f"{fmt:8} {variant:8} {ns:9.0f} ns CPU/record  {rate:>10,.0f} records  "
                         f"lost {sum(r['lost'] for r in rounds):,}"
                         + (f"  fsyncs/min {statistics.median(fsyncs):.0f}" if fsyncs else ""))
        if "before" in per_record:
            lines.append(f"{fmt:8} durable / before: {per_record['durable'] / per_record['before']:.3f}x")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--formats", default="parquet,npy")
    args = p.parse_args(argv)
    print(report(measure(args.seconds, args.repeat, args.formats.split(","))))


def test_durability_cost():
    """Via pytest (bench/ is not collected by the normal test run)."""
    print("\n" + report(measure(4.0, 3, ["parquet", "npy"])))


if __name__ == "__main__":
    main()
