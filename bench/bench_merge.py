"""The accounting merge alone: the C core (``merge``, ``sightings``) against its numpy reference
(``reference_merge``, ``reference_sightings``: the merge as it was before the join moved into
csrc/tsf_join.c), on the same synthetic looks, in the same run.

Over --tasks threads seen by both looks:
  look   one look's records turned into sightings (``Look.of`` does it every interval);
  idle   a merge without exits: what every interval of a quiet host pays;
  busy   a merge of --exits exit records between the looks: a tenth of them of tasks the opening
         look saw, the rest born and dead inside (children of the look's tasks, so their cgroup
         is inherited), one in ten also listed by the closing look (an exit racing it).
Reported: CPU per call (``time.thread_time``; merges interleaved, medians of --rounds) and, with
--instructions, instructions per call under valgrind (this script run twice under it, with
--repeat calls and with none: the difference over --repeat).  valgrind is a bench-only tool.

Run:  python3 bench/bench_merge.py [--tasks 150] [--exits 400] [--rounds 2001] [--instructions]
      python3 -m pytest bench/bench_merge.py --benchmark-enable -s
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Tuple

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from taskstats_fast import layout  # noqa: E402
from taskstats_fast.accounting import cgroupfs  # noqa: E402
from taskstats_fast.accounting.merge import (Look, merge, reference_merge,  # noqa: E402
                                             reference_sightings, sightings)

S = 1_000_000_000
T0 = 1_700_000_000 * S
T1 = T0 + S
C, NUMPY = "C core", "numpy reference"
#: {case: {implementation: fn(*case's arguments)}}
RUNS: Dict[str, Dict[str, Callable]] = {
    "look": {C: sightings, NUMPY: reference_sightings},
    "idle": {C: merge, NUMPY: reference_merge},
    "busy": {C: merge, NUMPY: reference_merge},
}


def _records(pids: np.ndarray, received_ns: np.ndarray, born_ns: np.ndarray,
             ppid: np.ndarray) -> np.ndarray:
    r = np.zeros(len(pids), layout.DTYPE)
    r["kind"], r["layout"], r["version"] = layout.KIND_PID, 16, 16
    r["ac_pid"] = r["id"] = r["ac_tgid"] = pids
    r["ac_ppid"] = ppid
    r["time_ns"] = received_ns
    r["ac_etime"] = (received_ns - born_ns) // 1000
    r["ac_btime64"] = r["ac_btime"] = born_ns // S
    used = (received_ns - born_ns) // 1000
    for name in ("ac_utime", "ac_stime", "nvcsw", "read_char", "ac_minflt"):
        r[name] = used // 7
    r["cpu_run_virtual_total"] = r["cpu_run_real_total"] = used * 100
    return r


def intervals(tasks: int, exits: int) -> Dict[str, tuple]:
    """{"look": (records, look_ns), "idle": (start, end, exits), "busy": ...} over ``tasks``
    threads in four cgroups."""
    pids = np.arange(1000, 1000 + tasks, dtype=np.uint32)
    born = np.full(tasks, T0 - 100 * S, np.int64)
    cg = cgroupfs.CgroupLook(T0, "/cg", {c: f"/{c}" for c in range(1, 5)}, pids,
                             (pids % 4 + 1).astype(np.uint64))
    ones = np.ones(tasks, np.uint32)
    look_records = _records(pids, np.full(tasks, T0), born, ones)
    start = Look.of(T0, look_records, cg, True)
    end = Look.of(T1, _records(pids, np.full(tasks, T1), born, ones), cg, True)
    rng = np.random.default_rng(0)
    old = exits // 10
    gone = rng.choice(tasks, old, replace=False)
    fresh = np.arange(100_000, 100_000 + exits - old, dtype=np.uint32)
    x_born = np.concatenate([born[gone], T0 + rng.integers(0, S // 2, len(fresh))])
    x_pids = np.concatenate([pids[gone], fresh])
    x_seen = x_born + rng.integers(S // 100, S // 2, exits)
    x_seen[:old] = T0 + rng.integers(0, S, old)
    parents = np.concatenate([ones[:old], pids[rng.integers(0, tasks, len(fresh))]])
    x = _records(x_pids, x_seen, x_born, parents)
    # one exit in ten raced the closing look: listed in it too (queried just before it died)
    racing = np.arange(old, exits, 10)
    listed = _records(x_pids[racing], np.full(len(racing), T1 + 1000), x_born[racing], parents[racing])
    x["time_ns"][racing] = T1 + 2_000_000
    x["ac_etime"][racing] = (T1 + 2_000_000 - x_born[racing]) // 1000
    keep = np.ones(tasks, bool)
    keep[gone] = False
    busy_end_records = np.concatenate([_records(pids[keep], np.full(keep.sum(), T1), born[keep],
                                                ones[keep]), listed])
    busy_tids = np.concatenate([pids[keep], x_pids[racing]])
    order = np.argsort(busy_tids)
    busy_cg = cgroupfs.CgroupLook(T1, "/cg", cg.paths, busy_tids[order],
                                  (busy_tids[order] % 4 + 1).astype(np.uint64))
    busy_end = Look.of(T1, busy_end_records, busy_cg, True)
    return {"look": (look_records, T0), "idle": (start, end, np.zeros(0, layout.DTYPE)),
            "busy": (start, busy_end, x)}


def cpu_per_run(cases, rounds: int) -> Dict[str, Dict[str, float]]:
    """{case: {implementation: median µs}}: each of every case in turn, ``rounds`` times."""
    runs: Dict[Tuple[str, str], List[float]] = {}
    for _ in range(rounds):
        for case, arguments in cases.items():
            for name, fn in RUNS[case].items():
                t = time.thread_time()
                fn(*arguments)
                runs.setdefault((case, name), []).append(time.thread_time() - t)
    out: Dict[str, Dict[str, float]] = {}
    for (case, name), v in runs.items():
        out.setdefault(case, {})[name] = statistics.median(v) * 1e6
    return out


def _instructions(argv: List[str]) -> int:
    # a fixed hash seed: the interpreter's own start-up then counts the same in both runs
    run = subprocess.run(["valgrind", "--tool=cachegrind", "--cache-sim=no",
                          "--cachegrind-out-file=/dev/null", sys.executable, __file__] + argv,
                         capture_output=True, text=True, check=True,
                         env=dict(os.environ, PYTHONHASHSEED="0"))
    found = re.search(r"I\s+refs:\s+([\d,]+)", run.stderr)
    assert found, run.stderr[-2000:]
    return int(found.group(1).replace(",", ""))


def instructions_per_run(args) -> Dict[str, Dict[str, float]]:
    """{case: {implementation: instructions}}: (a run with --repeat calls - one with none) /
    --repeat."""
    base = ["--tasks", str(args.tasks), "--exits", str(args.exits)]
    out: Dict[str, Dict[str, float]] = {}
    for case, by in RUNS.items():
        for name in by:
            only = ["--case", case, "--implementation", name]
            empty = _instructions(base + only + ["--repeat", "0"])
            full = _instructions(base + only + ["--repeat", str(args.repeat)])
            out.setdefault(case, {})[name] = (full - empty) / args.repeat
    return out


def _table(title: str, figures: Dict[str, Dict[str, float]], unit: str) -> str:
    lines = [title]
    for case, by in figures.items():
        ref, c = by[NUMPY], by[C]
        lines.append(f"  {case:<5} {NUMPY} {ref:>12,.1f} {unit}   {C} {c:>12,.1f} {unit}"
                     f"   C/numpy {c / ref:.3f}x")
    return "\n".join(lines)


def main(argv=None) -> Dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", type=int, default=150)
    ap.add_argument("--exits", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=2001)
    ap.add_argument("--instructions", action="store_true", help="also count them under valgrind")
    ap.add_argument("--repeat", type=int, default=300, help="calls per valgrind run")
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--implementation", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    cases = intervals(args.tasks, args.exits)
    if args.case:                   # one valgrind run: warm up once, then --repeat calls
        fn, arguments = RUNS[args.case][args.implementation], cases[args.case]
        fn(*arguments)
        for _ in range(args.repeat):
            fn(*arguments)
        return {}
    result = {"cpu_us": cpu_per_run(cases, args.rounds)}
    print(_table(f"CPU per call, {args.tasks} tasks ({args.exits} exits when busy), medians of "
                 f"{args.rounds}:", result["cpu_us"], "us"))
    if args.instructions:
        if not shutil.which("valgrind"):
            raise SystemExit("--instructions runs valgrind: install it (apt-get install valgrind)")
        result["instructions"] = instructions_per_run(args)
        print(_table("Instructions per call (valgrind):", result["instructions"], ""))
    return result


def test_merge_bench():
    result = main(["--rounds", "201"])
    for case in RUNS:
        assert result["cpu_us"][case][C] > 0


if __name__ == "__main__":
    main()
