"""The agents users run today against taskstats_fast's Accounting: CPU per 1 s interval, per
process, at the same loads, in one run (bench/bench_accounting.py prints the table).

Each agent runs in a cgroup v2 of its own, so its CPU is the cgroup's ``cpu.stat`` usage_usec
(children and threads included, nothing sampled); after a warm-up its usage over a window of
whole seconds is divided by the seconds.  Agents run one at a time, in turn, round after round
(interleaved), and each figure is a median over rounds.

  taskstats_fast   Accounting(interval=1.0), every interval built and dropped
  top              top -b -d 1 (output to /dev/null)
  atop -P          atop -P PRG,PRC,PRM,PRD 1 (parseable per-process output)
  pidstat          pidstat -u -r -d 1 (CPU, memory, I/O per process)
  process-exporter prometheus-process-exporter, grouped by command name, scraped each second

The peers are Debian packages (atop, sysstat, prometheus-process-exporter): ``ensure_packages``
installs the missing ones with apt-get when run as root (the bench's set-up; never CI's).
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Callable, Dict, List, Optional

PACKAGES = {"atop": "atop", "pidstat": "sysstat",
            "prometheus-process-exporter": "prometheus-process-exporter"}

OURS = """
import taskstats_fast as tsf
with tsf.Accounting(interval=1.0) as acct:
    for iv in acct:
        pass
"""
EXPORTER_CONFIG = """process_names:
  - name: "{{.Comm}}"
    cmdline:
    - '.+'
"""


def ensure_packages() -> List[str]:
    """Install the peers that are missing (root and apt-get only); returns what is still missing."""
    missing = [pkg for exe, pkg in PACKAGES.items() if not shutil.which(exe)]
    if missing and os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends"] + missing,
                       env=env, check=False, stdout=subprocess.DEVNULL)
    return [pkg for exe, pkg in PACKAGES.items() if not shutil.which(exe)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Agent:
    """One agent's command, and what must happen each second while it runs (a scrape)."""

    def __init__(self, name: str, argv: List[str], tick: Optional[Callable[[], None]] = None):
        self.name, self.argv, self.tick = name, argv, tick


#: The agent name of ``--compare-tree``: the same Accounting loop from another source tree.
COMPARED = "taskstats_fast-compared"


def agents(tmp: str, compare_tree: Optional[str] = None) -> List[Agent]:
    """The agents; ``compare_tree``: also run taskstats_fast from that source tree (its
    extension built in place), so two versions are measured in one run."""
    # -P: ``python -c`` puts the working directory first on sys.path, ahead of PYTHONPATH, so
    # run from a source tree both agents would import that tree's package
    out = [Agent("taskstats_fast", [sys.executable, "-P", "-c", OURS]),
           Agent("top -b -d 1", ["top", "-b", "-d", "1"])]
    if compare_tree:
        out.insert(1, Agent(COMPARED, ["env", f"PYTHONPATH={os.path.abspath(compare_tree)}",
                                       sys.executable, "-P", "-c", OURS]))
    if shutil.which("atop"):
        out.append(Agent("atop -P", ["atop", "-P", "PRG,PRC,PRM,PRD", "1"]))
    if shutil.which("pidstat"):
        out.append(Agent("pidstat", ["pidstat", "-u", "-r", "-d", "1"]))
    exporter = shutil.which("prometheus-process-exporter")
    if exporter:
        config = os.path.join(tmp, "process-exporter.yml")
        with open(config, "w") as f:
            f.write(EXPORTER_CONFIG)
        port = _free_port()
        url = f"http://127.0.0.1:{port}/metrics"

        def scrape() -> None:
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    r.read()
            except OSError:
                pass
        out.append(Agent("process-exporter", [exporter, f"-web.listen-address=127.0.0.1:{port}",
                                              f"-config.path={config}"], scrape))
    return out


class CgroupRun:
    """An agent started inside a fresh cgroup v2 directory; ``usage_s()`` is its CPU so far."""

    def __init__(self, cgroup_root: str, name: str, argv: List[str]):
        self.path = os.path.join(cgroup_root, f"tsf-bench-peers-{os.getpid()}-{name}")
        os.mkdir(self.path)
        procs = os.path.join(self.path, "cgroup.procs")
        self.proc = subprocess.Popen(["sh", "-c", f'echo $$ > {procs} && exec "$@"', "sh"] + argv,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     stdin=subprocess.DEVNULL)

    def usage_s(self) -> float:
        with open(os.path.join(self.path, "cpu.stat")) as f:
            for line in f:
                if line.startswith("usage_usec "):
                    return int(line.split()[1]) / 1e6
        raise RuntimeError(f"no usage_usec in {self.path}/cpu.stat")

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        try:
            with open(os.path.join(self.path, "cgroup.kill"), "w") as f:
                f.write("1")
        except OSError:
            pass
        for _ in range(100):
            try:
                os.rmdir(self.path)
                return
            except OSError:
                time.sleep(0.05)


def cpu_per_second(cgroup_root: str, agent: Agent, warmup: float, window: int) -> float:
    """The agent's CPU seconds per wall second over ``window`` seconds after ``warmup``."""
    run = CgroupRun(cgroup_root, agent.name.split()[0], agent.argv)
    try:
        end_warm = time.monotonic() + warmup
        while time.monotonic() < end_warm:
            if agent.tick:
                agent.tick()
            time.sleep(min(1.0, max(0.0, end_warm - time.monotonic())))
        t0, u0 = time.monotonic(), run.usage_s()
        for i in range(window):
            if agent.tick:
                agent.tick()
            time.sleep(max(0.0, t0 + i + 1 - time.monotonic()))
        return (run.usage_s() - u0) / (time.monotonic() - t0)
    finally:
        run.stop()


def count_tasks() -> Dict[str, int]:
    processes = threads = 0
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                threads += len(os.listdir(f"/proc/{p}/task"))
                processes += 1
            except OSError:
                pass
    return dict(processes=processes, threads=threads)


def measure(cgroup_root: str, rounds: int, warmup: float = 2.5, window: int = 5,
            compare_tree: Optional[str] = None) -> Dict:
    """{agent: median CPU ms per interval} on the machine as it is now."""
    with tempfile.TemporaryDirectory() as tmp:
        runs: Dict[str, List[float]] = {}
        for _ in range(rounds):
            for agent in agents(tmp, compare_tree):
                runs.setdefault(agent.name, []).append(
                    cpu_per_second(cgroup_root, agent, warmup, window))
    return {name: statistics.median(v) * 1e3 for name, v in runs.items()}
