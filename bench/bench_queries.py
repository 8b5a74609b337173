"""Bulk pid lookups: Connection.pids against pyroute2's TaskStats.get_pid_stat and a C floor.

Every pid on the machine, repeated to reach >= 10,000 lookups, is looked up
- by ``Connection.pids`` (one bulk call), and with ``workers=2`` (two sockets queried from two
  threads, the C loop running without the GIL).  The kernel serialises TASKSTATS GETs under
  genl_mutex (the family has no parallel_ops), so a second worker cannot double throughput; the
  target is >= 0.95x the throughput of the C floor on 2 threads, measured in the same run,
- by ``Connection.pid`` in a Python loop (a smaller sample),
- by pyroute2 ``get_pid_stat`` in a loop (300 lookups: it is ~100x slower),
- by bench/query_floor.c, compiled here with cc at run time: batched sendmsg + recvmmsg + memcpy
  of the same lookups, timed by itself (the floor any implementation can reach on this kernel).
The floor is run at several round sizes, including Connection's own, and the fastest counts;
then on 2 threads (two sockets) at that round size, both with fixed halves of the lookups and
with every round claimed from one shared cursor (the best split: no thread waits for another
the kernel served less), and the faster of the two counts.

Run: ``python3 -m pytest bench/bench_queries.py --benchmark-enable`` (needs root).  Figures are
ns per lookup and ratios in the same run: the machine is a noisy 2-vCPU VM, compare ratios.

The 2-worker goal has a direct entry that interleaves its contenders round by round (the floor
on 1 thread, and on 2 with halves and with a shared cursor, at each round size, ``workers=1``,
``workers=2``; the order rotates each round), times each as the median of ``--repeats`` calls,
wall and CPU (the floor by getrusage over its threads, ours by ``time.process_time``), and prints
medians over rounds and each round's ratios: ``workers=2`` against the floor's fastest 2-thread
set-up (chosen once, by its median over the rounds: the goal), against each round's fastest of
the six (noise favours the floor there), and against the shared floor at our own round size
(the like-for-like); then the load average before and after:

    python3 bench/bench_queries.py [--rounds 15] [--repeats 15]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from typing import Callable, Dict, List, Tuple

import numpy as np
import pytest

import taskstats_fast as tsf
from conftest import RESULTS, record_figure

GROUP = "bulk pid lookup"
FLOOR_2_THREADS = "C floor on 2 threads"
LOOKUPS = 10_000
PYROUTE2_SAMPLE = 300
LOOP_SAMPLE = 2_000
HERE = os.path.dirname(os.path.abspath(__file__))

if os.geteuid() != 0:
    pytest.skip("TASKSTATS queries need root (CAP_NET_ADMIN)", allow_module_level=True)


def _ids() -> np.ndarray:
    pids = np.array(sorted(int(p) for p in os.listdir("/proc") if p.isdigit()), np.uint32)
    return np.resize(pids, -(-LOOKUPS // len(pids)) * len(pids))


@pytest.fixture(scope="module")
def conn():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tsf.DelayAccountingOffWarning)
        with tsf.Connection() as c:
            c.pid(os.getpid())  # resolve and calibrate outside the timings
            yield c


@pytest.fixture(scope="module")
def ids():
    return _ids()


def _compile_floor(directory: str) -> str:
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("no C compiler for the floor")
    exe = os.path.join(directory, "query_floor")
    subprocess.run([cc, "-O2", "-Wall", "-Wextra", "-Werror", "-pthread", "-o", exe,
                    os.path.join(HERE, "query_floor.c")], check=True)
    return exe


@pytest.fixture(scope="module")
def floor_binary(tmp_path_factory):
    return _compile_floor(str(tmp_path_factory.mktemp("floor")))


def test_connection_pids(per_item, conn, ids, benchmark):
    got = per_item(lambda: conn.pids(ids), items=len(ids), group=GROUP, name="Connection.pids")
    assert len(got.records) + len(got.missing) == len(ids)
    assert len(got.records) > 0.9 * len(ids)
    assert got.resent == 0 and conn.counters["drops"] == 0
    benchmark.extra_info["in_flight"] = conn.in_flight


def test_connection_pids_two_workers(per_item, conn, ids):
    conn.pids(ids, workers=2)   # open the second socket outside the timings
    got = per_item(lambda: conn.pids(ids, workers=2), items=len(ids), group=GROUP,
                   name="Connection.pids workers=2")
    assert len(got.records) + len(got.missing) == len(ids)
    assert len(got.records) > 0.9 * len(ids)


def test_connection_pid_loop(per_item, conn, ids):
    sample = ids[:LOOP_SAMPLE].tolist()
    me = os.getpid()

    def loop():
        for _ in sample:
            conn.pid(me)  # pid() raises for exited pids: ask about one that exists

    per_item(loop, items=len(sample), group=GROUP, name="Connection.pid loop", rounds=5,
             iterations=1)


def test_pyroute2_loop(per_item, ids):
    pyroute2 = pytest.importorskip("pyroute2")
    ts = pyroute2.TaskStats()
    ts.bind()
    sample = [os.getpid()] * PYROUTE2_SAMPLE
    try:
        per_item(lambda: [ts.get_pid_stat(p) for p in sample], items=len(sample), group=GROUP,
                 name="pyroute2 get_pid_stat loop", rounds=3, iterations=1)
    finally:
        ts.close()


def _run_floor(exe, family, chunk, path, repeats, threads=1, shared=False):
    """query_floor's key=value line; ``shared``: its threads claim rounds from one cursor."""
    args = [exe, str(family), str(chunk), str(repeats), path, str(threads)] + (["1"] if shared else [])
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return dict(kv.split("=", 1) for kv in out.split())


def test_c_floor(benchmark, conn, ids, floor_binary, tmp_path):
    path = str(tmp_path / "pids.bin")
    ids.tofile(path)
    repeats = 15 if benchmark.enabled else 1
    chunks = sorted({64, 256, conn.in_flight})
    best = {}

    def run_all():
        for chunk in chunks:
            res = _run_floor(floor_binary, conn.family.id, chunk, path, repeats)
            assert int(res["lookups"]) == len(ids)
            assert int(res["records"]) + int(res["errors"]) == len(ids)
            best[chunk] = float(res["median_ns_per_lookup"])

    benchmark.group = GROUP
    benchmark.name = "C floor (process, all round sizes)"
    benchmark.pedantic(run_all, rounds=1, iterations=1)
    for chunk, ns in best.items():
        benchmark.extra_info[f"ns_per_lookup_round_{chunk}"] = round(ns, 1)
    chunk = min(best, key=best.get)
    benchmark.extra_info["ns_per_lookup"] = round(best[chunk], 1)
    # 2 threads: three runs (a noisy spell hits one run, not the median)
    twos = []
    for _ in range(3 if benchmark.enabled else 1):
        best_split = []
        for shared in (False, True):   # fixed halves, rounds claimed from one cursor
            two = _run_floor(floor_binary, conn.family.id, chunk, path, repeats, threads=2, shared=shared)
            assert int(two["records"]) + int(two["errors"]) == len(ids)
            best_split.append(float(two["median_ns_per_lookup"]))
        twos.append(min(best_split))
    two_ns = sorted(twos)[len(twos) // 2]
    benchmark.extra_info["ns_per_lookup_2_threads"] = two_ns
    if benchmark.enabled:
        record_figure(GROUP, f"C floor sendmsg+recvmmsg (round {chunk})", best[chunk])
        record_figure(GROUP, FLOOR_2_THREADS, two_ns)


def test_ratios(capsys):
    """Print Connection.pids against pyroute2 and the C floor (targets: >= 40x, <= 1.5x)."""
    entries = RESULTS.get(GROUP, {})
    ours = entries.get("Connection.pids")
    floor = next((v for k, v in entries.items()
                  if k.startswith("C floor") and k != FLOOR_2_THREADS), None)
    theirs = entries.get("pyroute2 get_pid_stat loop")
    if not (ours and floor and theirs):
        pytest.skip("run with --benchmark-enable to get figures")
    with capsys.disabled():
        print(f"\n  Connection.pids      {ours:10.1f} ns/lookup")
        print(f"  C floor              {floor:10.1f} ns/lookup   "
              f"Connection.pids / floor = {ours / floor:.2f}x (target <= 1.5x)")
        print(f"  pyroute2 loop        {theirs:10.1f} ns/lookup   "
              f"pyroute2 / Connection.pids = {theirs / ours:.1f}x (target >= 40x)")
        two = entries.get("Connection.pids workers=2")
        if two:
            print(f"  workers=2            {two:10.1f} ns/lookup   "
                  f"throughput vs one worker = {ours / two:.2f}x")
        floor2 = entries.get(FLOOR_2_THREADS)
        if two and floor2:
            print(f"  C floor, 2 threads   {floor2:10.1f} ns/lookup   "
                  f"workers=2 throughput / floor's = {floor2 / two:.2f}x (target >= 0.95x)")


# ---- direct entry: the 2-worker goal, interleaved ---------------------------------------------
FLOOR_ROUND_SIZES = (64, 256, 1024)


def _time_ours(conn, ids: np.ndarray, workers: int, repeats: int) -> Tuple[float, float]:
    """Median wall and CPU ns per lookup of ``repeats`` calls of ``conn.pids(ids, workers=)``."""
    walls, cpus = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        got = conn.pids(ids, workers=workers)
        walls.append((time.perf_counter() - t0) * 1e9 / len(ids))
        cpus.append((time.process_time() - c0) * 1e9 / len(ids))
        assert len(got.records) + len(got.missing) == len(ids)
    return statistics.median(walls), statistics.median(cpus)


def _contenders(conn, ids: np.ndarray, exe: str, path: str, repeats: int
                ) -> Dict[str, Callable[[], Tuple[float, float]]]:
    def floor(chunk: int, threads: int, shared: bool = False) -> Callable[[], Tuple[float, float]]:
        def run():
            res = _run_floor(exe, conn.family.id, chunk, path, repeats, threads=threads, shared=shared)
            assert int(res["records"]) + int(res["errors"]) == len(ids)
            return float(res["median_ns_per_lookup"]), float(res["median_cpu_ns_per_lookup"])
        return run

    out: Dict[str, Callable[[], Tuple[float, float]]] = {}
    for chunk in sorted({*FLOOR_ROUND_SIZES, conn.in_flight}):
        out[f"floor 1 thread, round {chunk}"] = floor(chunk, 1)
        out[f"floor 2 threads, round {chunk}"] = floor(chunk, 2)
        out[f"floor 2 threads shared, round {chunk}"] = floor(chunk, 2, shared=True)
    out["workers=1"] = lambda: _time_ours(conn, ids, 1, repeats)
    out["workers=2"] = lambda: _time_ours(conn, ids, 2, repeats)
    return out


def main(argv=None) -> Dict[str, List[Tuple[float, float]]]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=15, help="interleaved rounds (default 15)")
    ap.add_argument("--repeats", type=int, default=15, help="calls timed per contender and round")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        sys.exit("bench_queries: TASKSTATS queries need root (CAP_NET_ADMIN)")
    ids = _ids()
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", tsf.DelayAccountingOffWarning)
        exe = _compile_floor(tmp)
        path = os.path.join(tmp, "pids.bin")
        ids.tofile(path)
        with tsf.Connection() as conn:
            conn.pids(ids, workers=2)   # calibrate, open the second socket: outside the timings
            cases = _contenders(conn, ids, exe, path, args.repeats)
            names = list(cases)
            load_before = os.getloadavg()
            got: Dict[str, List[Tuple[float, float]]] = {name: [] for name in names}
            for r in range(args.rounds):
                for name in names[r % len(names):] + names[:r % len(names)]:
                    got[name].append(cases[name]())
            load_after = os.getloadavg()
            in_flight = conn.in_flight
    _report(got, args.rounds, len(ids), load_before, load_after, in_flight)
    return got


def _report(got, rounds: int, lookups: int, load_before, load_after, in_flight: int) -> None:
    print(f"{lookups} lookups per call, {rounds} rounds; load average "
          f"{load_before[0]:.2f} before, {load_after[0]:.2f} after")
    print(f"  {'':36s} {'wall ns/lookup':>15s} {'CPU ns/lookup':>14s}")
    for name, runs in got.items():
        print(f"  {name:36s} {statistics.median(w for w, _ in runs):15.0f} "
              f"{statistics.median(c for _, c in runs):14.0f}")

    def best(threads: str, r: int) -> float:
        return min(runs[r][0] for name, runs in got.items() if name.startswith(f"floor {threads}"))

    def ratios(fn) -> str:
        values = sorted(fn(r) for r in range(rounds))
        return f"{statistics.median(values):.2f} (rounds {values[0]:.2f}-{values[-1]:.2f})"

    def fastest(threads: str) -> str:
        return min((name for name in got if name.startswith(f"floor {threads}")),
                   key=lambda name: statistics.median(w for w, _ in got[name]))

    print("  throughput ratios, each round's (median and range over the rounds):")
    print("    floor 2 threads / 1 thread:        " + ratios(lambda r: best("1", r) / best("2", r)))
    print("    floor 2 threads, shared / halves:  "
          + ratios(lambda r: best("2 threads,", r) / best("2 threads shared", r)))
    one, two = fastest("1"), fastest("2")
    print("    workers=1 / floor 1 thread:        " + ratios(lambda r: got[one][r][0] / got["workers=1"][r][0])
          + f"   (the floor's fastest by median: {one})")
    # The goal's floor is the floor's fastest 2-thread set-up, chosen once by its median over
    # the rounds: taking each round's fastest of six instead picks whichever noise favoured
    print("    workers=2 / floor 2 threads:       " + ratios(lambda r: got[two][r][0] / got["workers=2"][r][0])
          + f"   (goal >= 0.95; the floor's fastest by median: {two})")
    print("    workers=2 / each round's fastest floor of six: "
          + ratios(lambda r: best("2", r) / got["workers=2"][r][0]) + "   (noise favours the floor)")
    like = f"floor 2 threads shared, round {in_flight}"
    print(f"    workers=2 / shared floor, round {in_flight}: "
          + ratios(lambda r: got[like][r][0] / got["workers=2"][r][0])
          + "   (the same split and round size)")
    print("    workers=2 / workers=1:             "
          + ratios(lambda r: got["workers=1"][r][0] / got["workers=2"][r][0]))


if __name__ == "__main__":
    main()
