"""Soak test of the exit stream (owned by issue 6, hardening): opt-in, not part of any test run.

    python3 bench/soak.py [--seconds 600] [--interval 10] [--producers N] [--json FILE]

Opens an ExitListener with default settings (every possible CPU, one socket each) and, for
``--seconds``, runs one producer per core: a small C program compiled here at run time that
pins itself to its CPU and vforks children that exit at once, as fast as it can.  The main
thread reads batches the whole time.  Every ``--interval`` seconds it samples the process's RSS
and open file descriptors, the records so far and the listener's loss counters, and prints them
as a series.  At the end it checks, per producer, that the records whose ac_ppid is that
producer number exactly the children it reaped (nothing lost, every record decoded), that no
record was malformed and that ``stats.lost`` is 0.  Exits 1 if any of that fails.  Needs root.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Dict, List

import numpy as np

import taskstats_fast as tsf

PRODUCER_C = r"""
/* soak producer: pin to CPU argv[1], vfork children that _exit at once for argv[2] seconds;
 * prints the number of children reaped. */
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc != 3)
        return 2;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(atoi(argv[1]), &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0)
        return 1;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    double end = ts.tv_sec + ts.tv_nsec / 1e9 + atof(argv[2]);
    long children = 0;
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &ts);
        if (ts.tv_sec + ts.tv_nsec / 1e9 >= end)
            break;
        for (int i = 0; i < 64; i++) {
            pid_t pid = vfork();
            if (pid == 0)
                _exit(i & 0x7f);
            if (pid < 0)
                return 1;
            if (waitpid(pid, NULL, 0) == pid)
                children++;
        }
    }
    printf("%ld\n", children);
    return 0;
}
"""


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def build_producer(workdir: str) -> str:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        sys.exit("soak: needs a C compiler (cc) for the producers")
    src = os.path.join(workdir, "tsf_soak_prod.c")
    exe = os.path.join(workdir, "tsf_soak_prod")
    with open(src, "w") as f:
        f.write(PRODUCER_C)
    subprocess.run([cc, "-O2", "-o", exe, src], check=True)
    return exe


def soak(seconds: float, interval: float, producers: int) -> Dict:
    workdir = tempfile.mkdtemp(prefix="tsf_soak_")
    exe = build_producer(workdir)
    cpus = sorted(os.sched_getaffinity(0))
    series: List[Dict] = []
    children_seen: Dict[int, int] = {}
    records = pid_records = malformed_rows = 0
    versions: Dict[int, int] = {}
    fds_before = open_fds()
    started = time.monotonic()
    with tsf.ExitListener() as listener:
        procs = [subprocess.Popen([exe, str(cpus[i % len(cpus)]), str(seconds)], stdout=subprocess.PIPE,
                                  text=True) for i in range(producers)]
        producer_pids = np.array([p.pid for p in procs], dtype=np.uint32)
        children_seen = {int(p): 0 for p in producer_pids}
        next_sample = started
        quiet_since = done_at = None
        while True:
            now = time.monotonic()
            if now >= next_sample:
                st = listener.stats
                series.append({"t_s": round(now - started, 1), "rss_kib": rss_kib(), "fds": open_fds(),
                               "records": records, "lost": st.lost, "dropped": st.dropped,
                               "overruns": st.overruns})
                print(f"  t={series[-1]['t_s']:7.1f} s  rss={series[-1]['rss_kib']:7d} KiB  "
                      f"fds={series[-1]['fds']:3d}  records={records:11,d}  lost={st.lost}", flush=True)
                next_sample += interval
            batch = listener.read(timeout=0.5)
            if len(batch):
                records += len(batch)
                pid_rows = batch[batch["kind"] == tsf.KIND_PID]
                pid_records += len(pid_rows)
                ppids = pid_rows["ac_ppid"]
                for p in producer_pids[np.isin(producer_pids, ppids)]:
                    children_seen[int(p)] += int(np.count_nonzero(ppids == p))
                malformed_rows += int(np.count_nonzero(batch["layout"] == 0))
                for v in np.unique(batch["version"]):
                    versions[int(v)] = versions.get(int(v), 0) + int(np.count_nonzero(batch["version"] == v))
            if done_at is None and all(p.poll() is not None for p in procs):
                done_at = now
            if done_at is not None:
                # producers done: drain what is queued, until quiet or (other tasks on the machine
                # may keep exiting) for at most 5 s
                quiet_since = None if len(batch) else (quiet_since or now)
                if (quiet_since is not None and now - quiet_since > 1.0) or now - done_at > 5.0:
                    break
        reaped = {p.pid: int(p.stdout.read().strip() or -1) for p in procs}
        for p in procs:
            p.stdout.close()
            p.wait()
        final = listener.stats
    elapsed = time.monotonic() - started
    series.append({"t_s": round(elapsed, 1), "rss_kib": rss_kib(), "fds": open_fds(), "records": records,
                   "lost": final.lost, "dropped": final.dropped, "overruns": final.overruns})
    shutil.rmtree(workdir, ignore_errors=True)
    return {
        "seconds": round(elapsed, 1), "producers": producers, "records": records,
        "pid_records": pid_records, "rate_per_s": round(records / elapsed),
        "children_reaped": reaped, "children_seen": children_seen,
        "lost": final.lost, "dropped": final.dropped, "truncated": final.truncated,
        "overruns": final.overruns, "malformed": final.malformed, "malformed_rows": malformed_rows,
        "seq_gaps": final.seq_gaps, "seq_foreign": final.seq_foreign,
        "seq_unexplained": final.seq_unexplained, "versions": versions,
        "fds_before": fds_before, "fds_after": open_fds(), "series": series,
    }


def verdict(r: Dict) -> List[str]:
    problems = []
    for pid, n in r["children_reaped"].items():
        if r["children_seen"].get(pid) != n:
            problems.append(f"producer {pid} reaped {n} children, the listener saw {r['children_seen'].get(pid)}")
    for key in ("lost", "malformed", "malformed_rows", "truncated"):
        if r[key]:
            problems.append(f"{key} = {r[key]}")
    if r["fds_after"] != r["fds_before"]:
        problems.append(f"open fds {r['fds_before']} before, {r['fds_after']} after")
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--interval", type=float, default=10)
    ap.add_argument("--producers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json", help="write the figures here too")
    args = ap.parse_args()
    print(f"soak: {args.producers} producer(s) for {args.seconds:g} s, sampling every {args.interval:g} s")
    r = soak(args.seconds, args.interval, args.producers)
    rss = [s["rss_kib"] for s in r["series"]]
    print(f"records {r['records']:,} ({r['pid_records']:,} PID) in {r['seconds']} s = {r['rate_per_s']:,}/s; "
          f"lost {r['lost']} (dropped {r['dropped']}, truncated {r['truncated']}, overruns {r['overruns']}); "
          f"malformed {r['malformed']}; seq gaps {r['seq_gaps']} (foreign {r['seq_foreign']}, "
          f"unexplained {r['seq_unexplained']}); versions {r['versions']}")
    print(f"RSS min/max {min(rss)}/{max(rss)} KiB; fds before/after {r['fds_before']}/{r['fds_after']}; "
          f"children reaped {r['children_reaped']} seen {r['children_seen']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(r, f, indent=1)
    problems = verdict(r)
    for p in problems:
        print("FAIL:", p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
