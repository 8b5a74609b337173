#!/usr/bin/env python3
"""The kill -9 campaign: ``record`` killed at random moments must lose nothing older than its
flush window, and duplicate nothing.

A producer process forks children at a steady rate; each child names itself (its comm, which
the kernel puts in the exit record) with the campaign's nonce and its sequence number, and exits.
The producer logs every exit it caused (sequence, pid, when ``waitpid`` saw it) once the kernel
has sent its exit message.  Meanwhile ``record`` runs in several configurations (every format,
``record --interval``, fast rotation, retention at every rotation), side by side, each on its
own directory, and each is killed with SIGKILL at a random moment of its life, then started
again at once on the same directory, which makes the next run recover what the last one left
(a kill soon after a start lands in that recovery).  Side by side, every configuration
listens for most of the campaign, so most of the exits the producer causes are checked in
every directory (one configuration at a time, each heard only its share of them, and the
short lives 60 kills in 3 minutes left it were mostly inside the unchecked window).  At the
end each directory is read twice: as the last kill left it (readers must read crashed parts,
or name each one they skip) and after one more run stopped cleanly (which recovers
everything).

The rule checked: every exit logged while a run had its listener registered, and older than
the kill by more than the flush window plus a margin, is in the recording exactly once; no
exit is recorded twice (interval rows: no task twice in one interval; their PSI rows under
``_psi``: no cgroup twice in one interval, and some after the clean restart).

    tests/crash/kill9.py [--kills N] [--seed S] [--out DIR] [--json FILE]

Needs root (TASKSTATS).  Exit status 0 when every check held, 1 otherwise, 2 for bad usage.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

CLI = [sys.executable, "-m", "taskstats_fast"]
STARTED = "recording every"
#: record's flush window (--flush-seconds' default) and the slack a loaded machine needs on top
FLUSH_SECONDS = 1.0
MARGIN_SECONDS = 2.0
#: a kill lands this long after a start, or earlier, counts as one during start-up/recovery
RECOVERY_SECONDS = 1.5
#: the share of kills aimed at start-up (where a run recovers what the last one left)
EARLY_SHARE = 0.25
#: how long a run records before its kill (uniform), the others: long enough for most of its
#: exits to be older than the window, and for many rotations to land a kill in one
LIFE_SECONDS = (1.5, 28.0)


# ---- the producer: children with known names, every exit logged ------------------------------
def produce(nonce: str, rate: float, log_path: str) -> None:
    """Fork ``rate`` children a second until killed; child ``seq`` is named ``k9<nonce><seq>``
    (hex, within the 15 bytes of a comm) and exits with ``seq % 256``.  Each exit is logged as
    "seq pid monotonic_ns" once waitpid has reaped it (the kernel sends the exit message before
    the parent can reap)."""
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_name = 15
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    period = 1.0 / rate
    due = time.monotonic()
    seq = 0
    with open(log_path, "a", buffering=1) as log:
        while True:
            name = f"k9{nonce}{seq:x}".encode()
            pid = os.fork()
            if pid == 0:
                libc.prctl(pr_set_name, ctypes.c_char_p(name), 0, 0, 0)
                os._exit(seq % 256)
            os.waitpid(pid, 0)
            log.write(f"{seq} {pid} {time.monotonic_ns()}\n")
            seq += 1
            due += period
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            else:
                due = time.monotonic()   # behind (a busy machine): do not burst to catch up


def read_log(path: str, nonce: str) -> Dict[bytes, float]:
    """comm -> monotonic seconds of its exit, for every complete line of the producer's log."""
    out: Dict[bytes, float] = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and line.endswith("\n"):
                out[f"k9{nonce}{int(parts[0]):x}".encode()] = int(parts[2]) / 1e9
    return out


# ---- record runs -----------------------------------------------------------------------------
@dataclass
class Config:
    name: str
    args: Tuple[str, ...]
    interval: float = 0.0     #: record --interval SECS (rows appear at the end of an interval)

    @property
    def window(self) -> float:
        return self.interval + FLUSH_SECONDS + MARGIN_SECONDS


CONFIGS = (
    Config("parquet-rotate", ("--format", "parquet", "--rotate-seconds", "1")),
    Config("arrow-retention", ("--format", "arrow", "--rotate-seconds", "2", "--keep-days", "30",
                               "--max-total-mb", "100000")),
    Config("npy-rotate-mb", ("--format", "npy", "--rotate-mb", "1")),
    Config("csv", ("--format", "csv")),
    Config("interval-parquet", ("--format", "parquet", "--interval", "1"), interval=1.0),
    Config("interval-npy", ("--format", "npy", "--interval", "1", "--rotate-seconds", "2"),
           interval=1.0),
)


@dataclass
class Run:
    """One life of ``record``: when its listener was ready, how it ended."""
    config: str
    started: float
    ready: Optional[float] = None   #: monotonic time the start line was read
    ended: Optional[float] = None   #: monotonic time of the SIGKILL (or SIGTERM)
    how: str = "SIGKILL"
    code: Optional[int] = None
    stderr: List[str] = field(default_factory=list)


class Recorder:
    """``record`` on one directory, its stderr read line by line with arrival times."""

    def __init__(self, config: Config, out: str):
        self.run = Run(config.name, time.monotonic())
        self.proc = subprocess.Popen([*CLI, "record", "-o", out, "--no-status", *config.args],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if self.run.ready is None and STARTED in line:
                self.run.ready = time.monotonic()
            self.run.stderr.append(line.rstrip("\n"))

    def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.run.ready is None and self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.run.ready is not None

    def end(self, sig: int) -> Run:
        self.run.ended = time.monotonic()
        self.run.how = signal.Signals(sig).name
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.run.code = self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.run.code = self.proc.wait()
            self.run.stderr.append("(did not stop within 120 s of SIGTERM: killed)")
        self._reader.join(timeout=10)
        return self.run


AS_LEFT, RESTARTED = "after the last kill", "after a clean restart"
#: the crash window each SIGKILL of an exit-stream run showed (``crash_windows``)
WINDOWS: List[float] = []


# ---- checking a directory --------------------------------------------------------------------
@dataclass
class Check:
    config: str
    when: str                     #: "after the last kill" / "after a clean restart"
    expected: int = 0
    once: int = 0
    missing: int = 0
    duplicated: int = 0
    damaged: List[str] = field(default_factory=list)
    error: Optional[str] = None
    missing_examples: List[str] = field(default_factory=list)
    present: set = field(default_factory=set, repr=False)
    #: exits logged while a run listened (checked or not: the last window before a kill, which
    #: a kill may lose, is not)
    listened: int = 0

    @property
    def ok(self) -> bool:
        """Nothing duplicated, nothing lost.  As the last kill left it, a directory may hold
        crashed parts that readers skip instead of reading, if they name each one
        (``Recordings.damaged``); after the clean restart nothing may be missing."""
        if self.error is not None or self.duplicated:
            return False
        if self.when == RESTARTED and self.damaged:   # recovery must publish what is readable
            return False
        return not self.missing or (self.when == AS_LEFT and bool(self.damaged))


def expected_exits(runs: Sequence[Run], exits: Dict[bytes, float], window: float,
                   clean_margin: float = 0.2) -> Dict[bytes, float]:
    """The producer's exits that some run must have: logged after its listener was ready and
    more than ``window`` before its SIGKILL (``clean_margin`` before a SIGTERM, which writes
    everything received)."""
    spans = []
    for r in runs:
        if r.ready is None or r.ended is None:
            continue
        end = r.ended - (window if r.how == "SIGKILL" else clean_margin)
        spans.append((r.ready + 0.5, end))   # +0.5 s: the start line comes just after registering
    return {comm: t for comm, t in exits.items() if any(lo <= t <= hi for lo, hi in spans)}


def check_directory(config: Config, out: str, when: str, expected: Dict[bytes, float],
                    nonce: str, require_psi: Optional[bool] = None) -> Check:
    """``out`` holds each exit ``expected`` once and nothing twice.  ``require_psi``: an
    interval recording must have PSI rows (default: after a clean restart)."""
    import numpy as np
    from taskstats_fast import recording
    check = Check(config.name, when, expected=len(expected))
    if not os.path.exists(out):   # every run so far was killed before it created anything
        check.missing = len(expected)
        check.error = None if not expected else f"{out} does not exist"
        return check
    try:
        found = recording.Recordings(out)
        rows = found.records()
        check.damaged = [f"{p}: {e}" for p, e in found.damaged]
    except Exception as e:   # a reader that fails on a crashed directory fails the check
        check.error = f"{type(e).__name__}: {e}"
        check.missing = len(expected)
        return check
    ours = rows[np.char.startswith(rows["ac_comm"], f"k9{nonce}".encode())]
    if "interval_start" in (rows.dtype.names or ()):
        # a task once per interval and state: a task seen alive by an interval's closing look
        # and also exiting in it is accounting's business (merge.py); a replayed row is ours
        keys = np.array([f"{c!r}@{s}@{st}" for c, s, st in
                         zip(ours["ac_comm"], ours["interval_start"], ours["state"])])
    else:
        keys = ours["ac_comm"]
    _, counts = np.unique(keys, return_counts=True) if len(keys) else (None, np.zeros(0))
    check.duplicated = int((counts > 1).sum())
    if config.interval:
        _check_psi(check, out, when == RESTARTED if require_psi is None else require_psi)
    present = set(ours["ac_comm"].tolist())
    check.present = present
    missing = [c for c in expected if c not in present]
    check.missing = len(missing)
    check.once = len(expected) - len(missing)
    check.missing_examples = [f"{m.decode()}@{expected[m]:.2f}" for m in sorted(missing)[:5]]
    return check


def _check_psi(check: Check, out: str, required: bool) -> None:
    """The PSI rows an interval recording keeps in ``out/_psi``: none twice (a cgroup once per
    interval), damaged files named as for the interval rows, and some after the clean restart
    (its run records whole intervals)."""
    import numpy as np
    from taskstats_fast import recording
    from taskstats_fast.recording.psi_rows import psi_path, psi_schema
    where = psi_path(out)
    if where is None or not os.path.isdir(where):
        if required:
            check.error = f"{out} has no PSI dataset after a clean run"
        return
    found = recording.Recordings(where, schema=psi_schema())
    rows = found.records()
    check.damaged += [f"{p}: {e}" for p, e in found.damaged]
    pairs = np.unique(np.stack([rows["interval_start"], rows["cgroup_id"]]), axis=1).shape[1] \
        if len(rows) else 0
    check.duplicated += len(rows) - pairs
    if required and not (rows["cgroup"] == b"/").any():
        check.error = f"{where}: no system PSI row after a clean run"


# ---- the campaign ----------------------------------------------------------------------------
class Life:
    """What the configurations' threads share: the random source (one seed), the start-up
    times seen (whose median guides the early kills), and the count of early kills."""

    def __init__(self, seed: int):
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.ready_after = [2.0]
        self.early = 0

    def uniform(self, lo: float, hi: float) -> float:
        with self._lock:
            return self._rng.uniform(lo, hi)

    def early_kill(self) -> bool:
        with self._lock:
            return self._rng.random() < EARLY_SHARE

    def startup(self) -> float:
        with self._lock:
            return sorted(self.ready_after)[len(self.ready_after) // 2]

    def ended(self, run: Run) -> None:
        with self._lock:
            if run.ready is not None:
                self.ready_after.append(run.ready - run.started)
            self.early += (run.ready is None or run.ended - run.ready < RECOVERY_SECONDS)


def kill_repeatedly(config: Config, directory: str, kills: int, life: Life, runs: List[Run],
                    log=print) -> None:
    """``kills`` lives of ``record`` in ``config`` on ``directory``, each SIGKILLed at a random
    moment (in start-up and recovery, or while recording) and restarted at once."""
    for _ in range(kills):
        rec = Recorder(config, directory)
        if life.early_kill():   # in start-up: imports, recovery, registration
            time.sleep(life.uniform(0.0, life.startup()))
        elif rec.wait_ready(60):
            time.sleep(life.uniform(*LIFE_SECONDS))
        run = rec.end(signal.SIGKILL)
        life.ended(run)
        runs.append(run)
        if run.code not in (-signal.SIGKILL,):
            log(f"kill9: {config.name}: a run ended before its kill (code {run.code}): "
                + " | ".join(run.stderr[-3:]))


def campaign(kills: int, seed: int, out: str, rate: float, log=print) -> Dict:
    rng = random.Random(seed)
    nonce = f"{rng.randrange(36 ** 2):02x}"[:2]
    exits_log = os.path.join(out, "producer.log")
    producer = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--produce", nonce,
                                 "--rate", str(rate), "--log", exits_log])
    runs: Dict[str, List[Run]] = {c.name: [] for c in CONFIGS}
    checks: Dict[str, List[Check]] = {c.name: [] for c in CONFIGS}
    life = Life(seed)
    started = time.monotonic()
    # the clean runs stop together, once every configuration had its kills: each directory
    # listens until the campaign's end (the lives add up to different lengths)
    all_killed = threading.Barrier(len(CONFIGS))

    def one(index: int, config: Config) -> None:
        share = kills // len(CONFIGS) + (index < kills % len(CONFIGS))
        directory = os.path.join(out, config.name)
        try:
            kill_repeatedly(config, directory, share, life, runs[config.name], log)
        except BaseException:
            all_killed.abort()
            raise
        checks[config.name] = final_checks(config, runs[config.name], directory, nonce,
                                           exits_log, all_killed)

    threads = [threading.Thread(target=one, args=(i, c), name=c.name)
               for i, c in enumerate(CONFIGS)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        producer.terminate()
        producer.wait(timeout=30)
    exits = read_log(exits_log, nonce)
    all_checks = [c for name in runs for c in checks[name]]
    final = [c for c in all_checks if c.when == RESTARTED]
    totals = {"checked": sum(c.expected for c in final), "once": sum(c.once for c in final),
              "lost": sum(c.missing for c in final), "duplicated": sum(c.duplicated for c in final),
              "listened": sum(c.listened for c in final)}
    # of every exit the producer caused, in every directory: how many were checked
    totals["coverage"] = totals["checked"] / max(1, len(exits) * len(final))
    windows = sorted(WINDOWS)
    totals["window_max"] = windows[-1] if windows else 0.0
    totals["window_median"] = windows[len(windows) // 2] if windows else 0.0
    totals["kills_losing_any"] = sum(1 for w in windows if w > 0)
    return {"kills": kills, "totals": totals, "seed": seed, "seconds": round(time.monotonic() - started, 1),
            "producer_exits": len(exits), "kills_during_startup_or_recovery": life.early,
            "checks": [{k: v for k, v in c.__dict__.items() if k != "present"} | {"ok": c.ok}
                       for c in all_checks],
            "ok": all(c.ok for c in all_checks) and len(final) == len(CONFIGS),
            "runs": {name: [{"started": round(r.started, 2), "ready": r.ready and round(r.ready, 2),
                             "ended": round(r.ended, 2), "how": r.how, "code": r.code,
                             "stderr": r.stderr[-4:]} for r in rs] for name, rs in runs.items()}}


def crash_windows(runs: Sequence[Run], exits: Dict[bytes, float], present: set) -> List[float]:
    """For each SIGKILL: how far back from the kill the exits it lost reach (the oldest exit
    logged while that run listened and missing after the restart), 0 when it lost none."""
    windows = []
    for r in runs:
        if r.how != "SIGKILL" or r.ready is None or r.ended is None:
            continue
        lost = [t for c, t in exits.items() if r.ready + 0.5 <= t <= r.ended and c not in present]
        windows.append(round(r.ended - min(lost), 3) if lost else 0.0)
    return windows


def final_checks(config: Config, runs: List[Run], directory: str, nonce: str,
                 exits_log: str, all_killed: threading.Barrier) -> List[Check]:
    """The directory as the last kill left it, then after one more run, which records until
    ``all_killed`` (every configuration had its kills), then stops cleanly."""
    time.sleep(0.2)   # the producer's log is line-buffered: the last lines are in
    expected = expected_exits(runs, read_log(exits_log, nonce), config.window)
    checks = [check_directory(config, directory, AS_LEFT, expected, nonce)]
    rec = Recorder(config, directory)   # the restart: recovers, records, stops cleanly
    try:
        all_killed.wait(timeout=900)
    except threading.BrokenBarrierError:   # another configuration failed: stop now
        pass
    if rec.wait_ready(60):
        time.sleep(config.interval + 2.0)
    final = rec.end(signal.SIGTERM)
    runs.append(final)
    time.sleep(0.2)
    exits = read_log(exits_log, nonce)
    expected = expected_exits(runs, exits, config.window)
    check = check_directory(config, directory, RESTARTED, expected, nonce)
    check.listened = len(expected_exits(runs, exits, 0.0, 0.0))
    if not config.interval:   # interval rows appear only at an interval's end
        WINDOWS.extend(crash_windows(runs[:-1], exits, check.present))
    if final.code != 0:
        check.error = (check.error or "") + f"restart exited {final.code}: " + \
            " | ".join(final.stderr[-3:])
    checks.append(check)
    return checks


def summary_line(result: Dict) -> str:
    """The one line a CI log shows: verdict and figures."""
    t = result["totals"]
    return (f"kill9: {'PASS' if result['ok'] else 'FAIL'}: {result['kills']} kills in "
            f"{result['seconds']} s (seed {result['seed']}, "
            f"{result['kills_during_startup_or_recovery']} in start-up/recovery), "
            f"{t['checked']:,} exits older than {FLUSH_SECONDS:g}+{MARGIN_SECONDS:g} s checked "
            f"({t['coverage']:.0%} of the {result['producer_exits']:,} produced, in each of "
            f"{len(CONFIGS)} directories): "
            f"{t['once']:,} exactly once, {t['lost']:,} lost, {t['duplicated']:,} duplicated; "
            f"crash window median {t['window_median']:.2f} s, max {t['window_max']:.2f} s "
            f"({t['kills_losing_any']} of the exit-stream kills lost the exits of their last "
            "moments)")


def report(result: Dict) -> str:
    lines = [f"kill -9 campaign: {result['kills']} kills in {result['seconds']} s (seed "
             f"{result['seed']}), {result['producer_exits']:,} exits produced, "
             f"{result['kills_during_startup_or_recovery']} kills during start-up or recovery; "
             f"after the restarts {result['totals']['checked']:,} exits checked, "
             f"{result['totals']['once']:,} readable exactly once, {result['totals']['lost']:,} "
             f"lost, {result['totals']['duplicated']:,} duplicated",
             f"{'config':18} {'when':22} {'expected':>9} {'once':>9} {'lost':>7} {'dup':>5} "
             f"{'damaged':>7}  result"]
    for c in result["checks"]:
        lines.append(f"{c['config']:18} {c['when']:22} {c['expected']:9,} {c['once']:9,} "
                     f"{c['missing']:7,} {c['duplicated']:5,} {len(c['damaged']):7}  "
                     + ("ok" if c["ok"] else "FAIL " + (c["error"] or "")
                        + (f" (e.g. {', '.join(c['missing_examples'])})"
                           if c["missing_examples"] else "")))
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=60, help="SIGKILLs in all (default: %(default)s)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: from the time)")
    p.add_argument("--rate", type=float, default=200.0, help="exits the producer causes per second")
    p.add_argument("--out", help="where the recordings go (default: a temp dir, removed if ok)")
    p.add_argument("--json", help="also write the result as JSON here")
    p.add_argument("--produce", help=argparse.SUPPRESS)   # the producer process itself
    p.add_argument("--log", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.produce:
        produce(args.produce, args.rate, args.log)
        return 0
    if os.geteuid() != 0:
        print("kill9: needs root (TASKSTATS registration)", file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else int(time.time())
    out = args.out or tempfile.mkdtemp(prefix="tsf-kill9-")
    os.makedirs(out, exist_ok=True)
    result = campaign(args.kills, seed, out, args.rate, log=lambda s: print(s, file=sys.stderr))
    result["out"] = out
    print(report(result))
    print(summary_line(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    if result["ok"] and not args.out:
        shutil.rmtree(out, ignore_errors=True)
    else:
        print(f"kill9: recordings kept in {out}", file=sys.stderr)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
