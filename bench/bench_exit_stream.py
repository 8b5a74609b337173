"""The live exit stream at the machine's maximum exit rate: ExitListener against a C floor and
a pure-Python receive loop, in the same run.

Producers: one ``exit_storm`` per online CPU (bench/exit_storm.c, pinned, vfork + _exit as fast
as the CPU allows).  For each listener, in turn, the producers run for ``--seconds`` while it
listens; then we report:

* exits/s the producers achieved (listener CPU competes with them on a small machine),
* messages received and lost (the kernel's drop counters, SO_MEMINFO), and received - caused
  (exits of other processes on the machine),
* the listener's CPU time per received message (user + sys).  For ExitListener a reader thread
  calls ``read()`` in a loop and times only those calls with ``time.thread_time()`` (the
  thread's whole CPU, loop included, is the ``thread ns/ev`` column); the pure-Python loop is
  timed whole (``getrusage(RUSAGE_THREAD)``); the C floor is its whole process
  (``getrusage(RUSAGE_SELF)``).  Producers are other processes, never counted,
* ratios to the C floor.

Listeners:
  tsf            ExitListener() defaults: per-CPU sockets, C drain + decode, linger, copy=True
  tsf view       ExitListener, read(copy=False): no per-batch copy
  tsf linger=0   ExitListener(linger=0): wake per readiness, like the plain floor
  one C call per wake-up   a Python reader thread calling the listener's C drain once per
                 wake-up and nothing else (Drain.receiver), timed the same way: the ceiling
                 of any Python reader that calls C once per wake-up
  C floor        exit_floor: poll + recvmmsg + memcpy per datagram, per-CPU sockets, same linger
  C floor no-linger
  pure Python    per-CPU sockets, select.epoll, recv_into per datagram, reference.parse

The C programs are compiled at run time with ``cc`` into a temp dir (no committed binaries).

Each round runs every listener once (interleaved); each gets its median round's figures, and
its ratio to the C floor of each round is printed too (``rounds vs floor``, sorted).

Run:  python3 bench/bench_exit_stream.py [--seconds 3] [--repeat 5]
      python3 bench/bench_exit_stream.py --repeat 7 --only tsf --only "tsf view (copy=False)" \
          --only "one C call per wake-up" --only "C floor"        (the goal's comparison)
      python3 -m pytest bench/bench_exit_stream.py --benchmark-enable -s   (same, via pytest)
Needs root (CAP_NET_ADMIN) and a kernel with TASKSTATS.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable, Dict, List

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))   # reference.py, the pure-Python oracle

import taskstats_fast as tsf  # noqa: E402
from taskstats_fast import _native  # noqa: E402
from taskstats_fast.kernel import cpumask, listener as listener_mod, netlink  # noqa: E402
from taskstats_fast.kernel.receive_buffer import ReceiveBuffer  # noqa: E402
import reference  # noqa: E402

SETTLE = 0.3   # seconds of silence after the producers stop before a listener stops


def build(tmp: str) -> Dict[str, str]:
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise SystemExit("the benchmark compiles its producers with cc: install a C compiler")
    out = {}
    for name in ("exit_storm", "exit_floor"):
        exe = os.path.join(tmp, name)
        subprocess.run([cc, "-O2", "-Wall", "-Wextra", "-o", exe, os.path.join(HERE, f"{name}.c")],
                       check=True)
        out[name] = exe
    return out


def thread_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_THREAD)
    return ru.ru_utime + ru.ru_stime


def start_producers(exe: str, seconds: float) -> List[subprocess.Popen]:
    return [subprocess.Popen([exe, str(cpu), str(seconds)], stdout=subprocess.PIPE, text=True)
            for cpu in cpumask.online()]


def finish_producers(procs: List[subprocess.Popen]) -> int:
    return sum(int(p.communicate()[0]) for p in procs)


def read_while_producing(reader: Callable[[], None], name: str, exe: str, seconds: float,
                         done: threading.Event) -> int:
    """Run ``reader`` on a thread of its own while the producers run, then tell it they are
    done (``done``) and wait for it: the exits the producers caused."""
    thread = threading.Thread(target=reader, name=name)
    thread.start()
    caused = finish_producers(start_producers(exe, seconds))
    done.set()
    thread.join()
    return caused


# ---- listeners -----------------------------------------------------------------------------------

def run_tsf(exe: Dict[str, str], seconds: float, *, copy: bool = True, **kw) -> Dict:
    """A reader thread calls ``read()`` in a loop and times only those calls with
    ``time.thread_time()`` (its own CPU: the producers, the main thread and the loop's
    bookkeeping are not in it); the thread's whole CPU is reported beside it."""
    with tsf.ExitListener(**kw) as listener:
        before = listener.stats
        done = threading.Event()
        out: Dict = dict(records=0, reads=0, read_cpu_s=0.0, thread_cpu_s=0.0)

        def reader() -> None:
            records = reads = 0
            in_read = 0.0
            start = time.thread_time()
            quiet_since = None
            while True:
                t = time.thread_time()
                batch = listener.read(timeout=0.05, copy=copy)
                in_read += time.thread_time() - t
                reads += 1
                records += len(batch)
                if len(batch):
                    quiet_since = None
                elif done.is_set():
                    quiet_since = quiet_since or time.monotonic()
                    if time.monotonic() - quiet_since > SETTLE:
                        break
            out.update(records=records, reads=reads, read_cpu_s=in_read,
                       thread_cpu_s=time.thread_time() - start)

        caused = read_while_producing(reader, "bench reader", exe["exit_storm"], seconds, done)
        stats = listener.stats
    return dict(caused=caused, seconds=seconds, received=stats.messages - before.messages,
                records=out["records"], lost=stats.lost - before.lost, cpu_s=out["read_cpu_s"],
                thread_cpu_s=out["thread_cpu_s"], wakeups=out["reads"],
                seq_gaps=stats.seq_gaps - before.seq_gaps, foreign=stats.seq_foreign - before.seq_foreign)


def run_ceiling(exe: Dict[str, str], seconds: float) -> Dict:
    """The least a Python reader can cost: per-CPU sockets like the listener's, and a reader
    thread that makes one C call per wake-up (the listener's own drain: poll, linger, recvmmsg,
    decode into a fixed array) and nothing else, each call timed with ``time.thread_time()``.
    What ``read()`` costs above this is its Python; what this costs above the C floor is the
    Python call itself and the decode."""
    socks = _open_registered()
    out = np.zeros(4096, tsf.DTYPE)
    drain = _native.Drain(netlink.resolve_family().id, [s.fileno() for s in socks])
    receive = drain.receiver(out)
    linger_ms = int(listener_mod.DEFAULT_LINGER * 1000)
    done = threading.Event()
    res: Dict = {}

    def reader() -> None:
        received = wakeups = 0
        in_call = 0.0
        quiet_since = None
        while True:
            t = time.thread_time()
            n = receive(0, len(out), 50, linger_ms)
            in_call += time.thread_time() - t
            wakeups += 1
            received += max(n, 0)
            if n > 0:
                quiet_since = None
            elif done.is_set():
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since > SETTLE:
                    break
        res.update(received=received, wakeups=wakeups, cpu_s=in_call)

    try:
        caused = read_while_producing(reader, "bench ceiling", exe["exit_storm"], seconds, done)
        lost = sum(_drops(s) for s in socks)
    finally:
        _close_registered(socks)
    return dict(caused=caused, seconds=seconds, received=res["received"], records=res["received"],
                lost=lost, cpu_s=res["cpu_s"], wakeups=res["wakeups"])


def run_floor(exe: Dict[str, str], seconds: float, *, linger_ms: int) -> Dict:
    family = netlink.resolve_family().id
    masks = [str(c) for c in cpumask.possible()]
    floor = subprocess.Popen([exe["exit_floor"], str(family)] + masks + ["--linger-ms", str(linger_ms)],
                             stdout=subprocess.PIPE, text=True)
    assert floor.stdout.readline().strip() == "ready"
    procs = start_producers(exe["exit_storm"], seconds)
    caused = finish_producers(procs)
    time.sleep(SETTLE)
    floor.terminate()
    out = json.loads(floor.communicate()[0])
    return dict(caused=caused, seconds=seconds, received=out["received"], records=None,
                lost=out["dropped"], cpu_s=out["cpu_s"], wakeups=out["wakeups"])


def _register(sock: socket.socket, mask: str, reg: bool) -> None:
    fam = netlink.resolve_family()
    seq = netlink.next_seq()
    netlink.transact(sock, _native.build_cpumask(fam.id, seq, reg, mask), seq, what="register")


def _drops(sock: socket.socket) -> int:
    return _native.read_drops(sock.fileno())


def _open_registered() -> List[socket.socket]:
    """One socket per possible CPU, sized and registered as the listener's are."""
    socks = []
    for cpu in cpumask.possible():
        s = netlink.open_socket()
        ReceiveBuffer().apply(s, 1)          # what the listener gives a one-CPU socket
        _register(s, str(cpu), True)
        s.setblocking(False)
        socks.append(s)
    return socks


def _close_registered(socks: List[socket.socket]) -> None:
    for s, cpu in zip(socks, cpumask.possible()):
        s.setblocking(True)
        try:
            _register(s, str(cpu), False)
        except Exception:
            pass
        s.close()


def run_python(exe: Dict[str, str], seconds: float) -> Dict:
    """The straightforward pure-Python listener: per-CPU sockets, epoll, one recv_into per
    datagram, decoded by the pure-Python reference decoder."""
    socks = _open_registered()
    ep = select.epoll()
    for s in socks:
        ep.register(s.fileno(), select.EPOLLIN)
    by_fd = {s.fileno(): s for s in socks}
    buf = bytearray(8192)
    view = memoryview(buf)
    received = records = wakeups = 0
    try:
        cpu0 = thread_cpu()
        procs = start_producers(exe["exit_storm"], seconds)
        quiet_since = None
        while True:
            events = ep.poll(0.05)
            wakeups += 1
            if events:
                quiet_since = None
            elif all(p.poll() is not None for p in procs):
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since > SETTLE:
                    break
            for fd, _ in events:
                s = by_fd[fd]
                while True:
                    try:
                        n = s.recv_into(buf)
                    except BlockingIOError:
                        break
                    except OSError as e:   # ENOBUFS: the kernel dropped some; go on
                        if e.errno == 105:
                            continue
                        raise
                    received += 1
                    records += len(reference.parse(view[:n])[0])
        cpu = thread_cpu() - cpu0
        caused = finish_producers(procs)
        lost = sum(_drops(s) for s in socks)
    finally:
        ep.close()
        _close_registered(socks)
    return dict(caused=caused, seconds=seconds, received=received, records=records, lost=lost,
                cpu_s=cpu, wakeups=wakeups)


def copy_cost_ns(n: int = 4096, rounds: int = 200) -> Dict[str, float]:
    """ns per record of copying a full batch: as bytes (what read(copy=True) does) and as a
    structured array (numpy's field-by-field path for dtypes with holes)."""
    rows = np.zeros(n, tsf.DTYPE)
    raw = rows.view(np.uint8)
    out = {}
    for name, fn in (("bytes", lambda: raw.copy().view(tsf.DTYPE)), ("structured", rows.copy)):
        best = float("inf")
        for _ in range(rounds):
            t = time.perf_counter_ns()
            fn()
            best = min(best, time.perf_counter_ns() - t)
        out[name] = best / n
    return out


VARIANTS: Dict[str, Callable] = {
    "tsf": lambda exe, s: run_tsf(exe, s),
    "tsf view (copy=False)": lambda exe, s: run_tsf(exe, s, copy=False),
    "tsf linger=0": lambda exe, s: run_tsf(exe, s, linger=0),
    "one C call per wake-up": run_ceiling,
    "C floor": lambda exe, s: run_floor(exe, s, linger_ms=int(listener_mod.DEFAULT_LINGER * 1000)),
    "C floor no-linger": lambda exe, s: run_floor(exe, s, linger_ms=0),
    "pure Python": lambda exe, s: run_python(exe, s),
}


def measure(seconds: float, repeat: int, only=None) -> Dict[str, Dict]:
    """Each round runs every listener once, in turn (interleaved, so a noisy spell on the
    machine hits them all); each listener's figures are those of its median round, and
    ``round_ratios`` its ns/event over the C floor's of the same round, round by round."""
    runs: Dict[str, List[Dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        exe = build(tmp)
        for _ in range(repeat):
            for name, fn in VARIANTS.items():
                if only and name not in only:
                    continue
                r = fn(exe, seconds)
                r["ns_per_event"] = r["cpu_s"] * 1e9 / max(r["received"], 1)
                runs.setdefault(name, []).append(r)
    floor_rounds = [r["ns_per_event"] for r in runs.get("C floor", [])]
    results: Dict[str, Dict] = {}
    for name, rs in runs.items():
        ratios = sorted(r["ns_per_event"] / f for r, f in zip(rs, floor_rounds))
        by_cost = sorted(rs, key=lambda r: r["ns_per_event"])
        results[name] = dict(by_cost[(len(rs) - 1) // 2], rounds=len(rs),
                             lost_total=sum(r["lost"] for r in rs), round_ratios=ratios,
                             lossy=[(r["lost"], r["received"] + r["lost"] - r["caused"])
                                    for r in rs if r["lost"]])
    return results


def report(results: Dict[str, Dict]) -> str:
    floor = results.get("C floor", {}).get("ns_per_event")
    floor0 = results.get("C floor no-linger", {}).get("ns_per_event")
    lines = [f"{'listener':<24}{'exits/s':>9}{'received':>10}{'lost':>8}{'others':>8}"
             f"{'reads':>7}{'ev/read':>8}{'us/read':>8}{'CPU ns/ev':>10}{'vs floor':>9}"
             f"{'vs floor0':>10}{'thread ns/ev':>13}  rounds vs floor"]
    for name, r in results.items():
        others = r["received"] + r["lost"] - r["caused"]
        rounds = ", ".join(f"{x:.2f}" for x in r["round_ratios"])
        lines.append(
            f"{name:<24}{r['caused'] / r['seconds']:>9.0f}{r['received']:>10}"
            f"{r['lost']:>8}{others:>8}{r['wakeups']:>7}"
            f"{r['received'] / max(r['wakeups'], 1):>8.0f}{r['cpu_s'] * 1e6 / max(r['wakeups'], 1):>8.0f}"
            f"{r['ns_per_event']:>10.0f}"
            f"{r['ns_per_event'] / floor if floor else float('nan'):>8.2f}x"
            f"{r['ns_per_event'] / floor0 if floor0 else float('nan'):>9.2f}x"
            + (f"{r['thread_cpu_s'] * 1e9 / max(r['received'], 1):>13.0f}" if "thread_cpu_s" in r
               else f"{'':>13}")
            + f"  {rounds} (lost over all rounds: {r['lost_total']}"
            + "".join(f"; a round lost {lost} with {others} others" for lost, others in r["lossy"])
            + ")")
    cost = copy_cost_ns()
    lines.append(f"read(copy=True) extra copy: {cost['bytes']:.0f} ns/record as bytes "
                 f"({cost['structured']:.0f} ns as a structured-array copy), "
                 f"{tsf.DTYPE.itemsize} B records")
    lines.append("others = received + lost - caused: exits of other processes during the run; "
                 "reads = read() calls (C floor: wake-ups); us/read = CPU per call")
    lines.append(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
                 f"on {os.cpu_count()} CPUs")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="producer run per listener")
    ap.add_argument("--repeat", type=int, default=3, help="rounds (each listener's median is kept)")
    ap.add_argument("--only", action="append", help="run only this listener (repeatable)")
    args = ap.parse_args(argv)
    results = measure(args.seconds, args.repeat, args.only)
    print(report(results))


def test_exit_stream():
    """pytest entry: records each listener's CPU ns/event in the bench ratio table."""
    import pytest
    if os.geteuid() != 0:
        pytest.skip("needs root (CAP_NET_ADMIN)")
    from conftest import record_figure
    results = measure(2.0, 1)
    print("\n" + report(results))
    for name, r in results.items():
        record_figure("exit stream CPU per event", name, r["ns_per_event"])
    assert results["tsf"]["received"] > 0


if __name__ == "__main__":
    main()
