"""``taskstats-fast top`` end to end on the running kernel (needs root): batch mode showing a
burst of short-lived commands this test starts under a unique name, and the interactive screen
driven through a pseudo-terminal (80x24, TERM=xterm) with keys, read back with the pyte terminal
emulator."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from terminal import Terminal

pytestmark = pytest.mark.kernel

CLI = [sys.executable, "-m", "taskstats_fast"]
NO_NET_ADMIN = ["setpriv", "--bounding-set", "-net_admin", "--inh-caps", "-net_admin"]


@pytest.fixture
def burst_command(tmp_path):
    """A copy of ``true`` under a name no other task has (comm is the file name, <= 15 bytes)."""
    name = f"tsfb{os.getpid() % 100000}"
    path = tmp_path / name
    shutil.copy(shutil.which("true"), path)
    return name, str(path)


class Burst:
    """Runs the command over and over in a thread until stopped; counts the runs."""

    def __init__(self, path: str, pause: float = 0.01):
        self.path, self.pause, self.runs = path, pause, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self._stop.is_set():
            subprocess.run([self.path], check=True)
            self.runs += 1
            time.sleep(self.pause)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def intervals(text: str):
    """Batch output split into intervals (each starts with the 'taskstats-fast top' line)."""
    return [block for block in re.split(r"(?m)^(?=taskstats-fast top - )", text) if block.strip()]


def test_batch_mode_folds_short_lived_processes_of_a_command_into_one_row(burst_command):
    name, path = burst_command
    with Burst(path):
        res = subprocess.run([*CLI, "top", "-b", "-n", "2", "-d", "0.5"], capture_output=True,
                             text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    blocks = intervals(res.stdout)
    assert len(blocks) == 2, res.stdout
    for block in blocks:
        header = block.splitlines()[0]
        assert re.search(r"interval 0\.\d\ds  tasks \d+  exited \d+  (lost 0|LOST \d+)", header), header
        assert block.splitlines()[1].startswith("Tasks: ") and block.splitlines()[5].startswith("PSI")
    # the runs born and exited inside the interval: one row, no PID, marked '*' and counted
    block = blocks[1]
    folded = [line for line in block.splitlines() if re.search(rf" \* {name} \((\d+)\)$", line)]
    assert len(folded) == 1, block
    assert folded[0][:7].strip() == "" and int(re.search(r"\((\d+)\)$", folded[0])[1]) >= 5
    # a run straddling a boundary keeps its own row, with its PID and mark
    for line in block.splitlines():
        if line.endswith(" " + name):
            assert line[-len(name) - 2] in "x+" and int(line.split()[0]) > 0, line


def test_batch_mode_by_command_sums_the_burst(burst_command):
    name, path = burst_command
    with Burst(path) as burst:
        res = subprocess.run([*CLI, "top", "-b", "-n", "2", "-d", "0.5", "-g", "command",
                              "-f", name], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    blocks = intervals(res.stdout)
    assert len(blocks) == 2
    head = [line for line in blocks[1].splitlines() if line.rstrip().endswith("COMMAND")][0]
    exits_at = head.split().index("EXITS")
    rows = [line for line in blocks[1].splitlines() if line.endswith(" " + name)]
    assert len(rows) == 1, blocks[1]                       # one row per command name
    assert f"filter '{name}'" in blocks[1]
    exits = int(rows[0].split()[exits_at])
    assert 5 <= exits <= burst.runs, (exits, burst.runs)  # ~20 runs/s over 0.5 s


def test_without_cap_net_admin_one_line_and_exit_3():
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    res = subprocess.run([*NO_NET_ADMIN, *CLI, "top", "-b", "-n", "1"], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 3, res.stderr
    # one error line (the listener may warn about its receive buffer first: its own line)
    errors = [line for line in res.stderr.splitlines() if not line.startswith("taskstats-fast: warning:")]
    assert len(errors) == 1 and "CAP_NET_ADMIN" in errors[0] and not res.stdout, res.stderr


def test_interactive_needs_a_terminal():
    res = subprocess.run([*CLI, "top"], capture_output=True, text=True, timeout=60,
                         stdin=subprocess.DEVNULL)
    assert res.returncode == 2 and "-b" in res.stderr and len(res.stderr.splitlines()) == 1


# ---- the interactive screen through a pty ------------------------------------------------------

def test_interactive_screen_keys_grouping_sort_filter_help_quit(burst_command):
    name, path = burst_command
    term = Terminal([*CLI, "top", "-d", "0.5"])
    try:
        with Burst(path):
            screen = term.wait_for(lambda t: "by process" in t and "COMMAND" in t, "the process table")
            lines = screen.splitlines()
            assert len(lines) == 24 and all(len(line) <= 80 for line in lines)
            assert lines[0].startswith("taskstats-fast top - ")
            head = next(line for line in lines if "COMMAND" in line)
            # 80 columns: the process columns take the room of the exits column
            assert "PID" in head and "CPU%" in head and "RUNQ%" in head and "TIME+" in head

            term.press("m")                                         # group by command
            term.wait_for(lambda t: "by command" in t and " PID " not in t and "EXITS" in t,
                          "the command grouping")
            term.press(">")                                         # sort by the next column
            term.wait_for(lambda t: "sort cpu_delay desc" in t, "the sort moved right")
            term.press("X")                                         # sort by exits
            term.wait_for(lambda t: "sort exits desc" in t, "the exits sort")
            term.press("/")
            term.wait_for(lambda t: "filter (name or cgroup" in t, "the filter prompt")
            term.press(name + "\r")
            screen = term.wait_for(lambda t: f"filter '{name}'" in t and f" {name}" in t.split("COMMAND", 1)[-1],
                                   "the filtered burst")
            table = screen.split("COMMAND", 1)[1].strip().splitlines()
            assert table and all(row.rstrip().endswith(name) for row in table if row.strip()
                                 and not row.startswith("h help")), table
            term.press("g")                                         # command -> process
            term.wait_for(lambda t: "by process" in t, "the grouping cycle")
            term.press("h")
            term.wait_for(lambda t: "taskstats-fast top: keys" in t and "quit" in t, "the help")
            term.press(" ")                                         # any key leaves help
            term.wait_for(lambda t: "by process" in t, "the table after help")
            term.press(" ")                                         # pause
            term.wait_for(lambda t: "[PAUSED]" in t, "the pause mark")
            term.press("q")
            assert term.wait_exit() == 0, term.text()
    finally:
        term.close()


def test_interactive_screen_ends_cleanly_on_sigterm():
    term = Terminal([*CLI, "top", "-d", "0.3", "-g", "user"])
    try:
        term.wait_for(lambda t: "by user" in t and "USER" in t and "root" in t, "the user table")
        term.proc.send_signal(signal.SIGTERM)
        assert term.wait_exit() == 0, term.text()
    finally:
        term.close()


# ---- the system header against /proc -----------------------------------------------------------

def _proc_cpu_ticks():
    with open("/proc/stat") as f:
        return [int(v) for v in f.readline().split()[1:9]]


def _meminfo_kb():
    with open("/proc/meminfo") as f:
        return {line.split(":")[0]: int(line.split()[1]) for line in f}


def _threads_now():
    return sum(len(os.listdir(f"/proc/{p}/task")) for p in os.listdir("/proc")
               if p.isdigit() and os.path.isdir(f"/proc/{p}/task"))


def test_batch_header_figures_agree_with_proc():
    before = _proc_cpu_ticks()
    res = subprocess.run([*CLI, "top", "-b", "-n", "2", "-d", "0.5", "-w", "200"], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    _check_header(intervals(res.stdout)[1].splitlines(), before)


def _check_header(block, before):
    """The header lines of one screen or batch interval (``block``: its lines, the first one the
    title) against /proc read now, and /proc/stat's CPU ticks read ``before`` it started."""
    after, memory, threads = _proc_cpu_ticks(), _meminfo_kb(), _threads_now()
    with open("/proc/loadavg") as f:
        load = [float(v) for v in f.read().split()[:3]]
    tasks, cpu, mem, swap = block[1:5]
    # Tasks: P, T thr; R running, D blocked, S sleeping  load a b c
    got = re.match(r"Tasks: (\d+), (\d+) thr; (\d+) running, (\d+) blocked, (\d+) sleeping  "
                   r"load ([\d.]+) ([\d.]+) ([\d.]+)$", tasks)
    assert got, tasks
    assert abs(int(got[2]) - threads) <= max(20, threads // 5), (tasks, threads)
    assert int(got[3]) >= 1                                  # top itself was running
    assert [abs(float(got[6 + i]) - load[i]) <= 1.0 + load[i] * 0.2 for i in range(3)] == [True] * 3
    # %Cpu(s): us, sy, ni, id, wa, hi, si, st: they add up to 100, and the busy share is the
    # run's within what one interval of a shared machine can differ from the whole run
    pct = dict((short, float(v)) for v, short in re.findall(r"([\d.]+) (us|sy|ni|id|wa|hi|si|st)", cpu))
    assert list(pct) == ["us", "sy", "ni", "id", "wa", "hi", "si", "st"], cpu
    assert sum(pct.values()) == pytest.approx(100, abs=0.6)
    delta = [b - a for a, b in zip(before, after)]
    run_idle = 100.0 * delta[3] / sum(delta)
    assert abs(pct["id"] - run_idle) <= 35, (cpu, run_idle)
    # MiB Mem: total is exact; free and available move a little between the two reads
    figures = [float(v) for v in re.findall(r"([\d.]+) (?:total|free|used|buff/cache)", mem)]
    assert figures[0] == pytest.approx(memory["MemTotal"] / 1024, abs=0.06), mem
    assert figures[1] == pytest.approx(memory["MemFree"] / 1024, rel=0.1), mem
    swap_figures = [float(v) for v in re.findall(r"([\d.]+) (?:total|free|used\.|avail Mem)", swap)]
    assert swap_figures[0] == pytest.approx(memory["SwapTotal"] / 1024, abs=0.06), swap
    assert swap_figures[3] == pytest.approx(memory["MemAvailable"] / 1024, rel=0.1), swap
    assert block[5].startswith("PSI")


# ---- scrolling, tree, -p and -u on a pty at two sizes ---------------------------------------------

# what xterm sends for these keys in keypad mode (curses turns that mode on)
KEYS = {"down": "\x1bOB", "up": "\x1bOA", "pgdn": "\x1b[6~", "pgup": "\x1b[5~", "home": "\x1bOH",
        "end": "\x1bOF"}
SIZES = [(80, 24), (200, 50)]


def _rows_shown(text):
    """(first, last, of) from the view line's 'N groups, rows A-B'."""
    got = re.search(r"(\d+) groups, rows (\d+)-(\d+)", text)
    return (int(got[2]), int(got[3]), int(got[1])) if got else None


def _table(text):
    lines = text.splitlines()
    head = next((i for i, line in enumerate(lines) if line.rstrip().endswith("COMMAND")), None)
    if head is None:            # a screen caught before its table is drawn
        return []
    return [line for line in lines[head + 1:-1] if line.strip()]


def _press_until(term, key, predicate, what, tries=5):
    """Press ``key`` until the screen shows ``what``. On a busy host the number of groups changes
    between intervals, so a last page reached can be a page short by the next redraw: End is
    then pressed again, as a user would."""
    for attempt in range(tries):
        term.press(key)
        try:
            return term.wait_for(predicate, what, timeout=20.0 if attempt == tries - 1 else 5.0)
        except AssertionError:
            if attempt == tries - 1:
                raise


@pytest.fixture
def sleepers():
    """Two idle processes of this test, and one of user nobody."""
    procs = [subprocess.Popen(["sleep", "300"]) for _ in range(2)]
    procs.append(subprocess.Popen(["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups",
                                   "sleep", "300"]))
    yield procs
    for p in procs:
        p.kill()
        p.wait()


@pytest.mark.parametrize("columns,lines", SIZES)
def test_screen_scrolls_every_row_and_shows_the_header(columns, lines):
    cpu_before = _proc_cpu_ticks()
    term = Terminal([*CLI, "top", "-d", "0.5"], columns=columns, lines=lines)
    try:
        screen = term.wait_for(lambda t: _rows_shown(t) is not None, "a scrollable table")
        text = screen.splitlines()
        assert len(text) == lines and all(len(line) <= columns for line in text)
        assert text[1].startswith("Tasks: ") and text[2].startswith("%Cpu(s):")
        assert text[3].startswith("MiB Mem :") and text[4].startswith("MiB Swap:")
        if columns >= 100:       # at 80 columns the load averages are cut off
            _check_header(text, cpu_before)
        first, last, groups = _rows_shown(screen)
        page = last - first + 1
        assert first == 1 and page == len(_table(screen)) and groups > page
        term.press(KEYS["down"])
        term.wait_for(lambda t: (_rows_shown(t) or (0,))[0] == 2, "one row down")
        term.press(KEYS["pgdn"])   # a page down, or to the last whole page when fewer remain
        term.wait_for(lambda t: (lambda r: r is not None and r[0] == min(2 + page, r[2] - page + 1))(
            _rows_shown(t)), "a page down")
        screen = _press_until(term, KEYS["end"], lambda t: (lambda r: r and r[1] == r[2])(_rows_shown(t)),
                              "the last page")
        assert len(_table(screen)) == page
        term.press(KEYS["pgup"])
        term.wait_for(lambda t: (lambda r: r and r[1] < r[2])(_rows_shown(t)), "a page up")
        term.press(KEYS["home"])
        term.wait_for(lambda t: (_rows_shown(t) or (0,))[0] == 1, "the first row again")
        term.press("1")                                         # per-CPU modes
        term.wait_for(lambda t: "%Cpu0" in t and "%Cpu(s)" not in t, "a line per CPU")
        term.press("V")
        screen = term.wait_for(lambda t: "by process tree" in t and "`- " in t, "the tree")
        term.press("q")
        assert term.wait_exit() == 0, term.text()
    finally:
        term.close()


@pytest.mark.parametrize("columns,lines", SIZES)
def test_screen_shows_only_the_pids_and_user_asked_for(columns, lines, sleepers):
    mine = [p.pid for p in sleepers[:2]]
    term = Terminal([*CLI, "top", "-d", "0.5", "-p", ",".join(map(str, mine))], columns=columns, lines=lines)
    try:
        screen = term.wait_for(lambda t: "pids " in t and len(_table(t)) == 2, "the two pids")
        assert sorted(int(row.split()[0]) for row in _table(screen)) == sorted(mine)
        term.press("q")
        assert term.wait_exit() == 0
    finally:
        term.close()
    nobody = sleepers[2].pid
    term = Terminal([*CLI, "top", "-d", "0.5", "-u", "nobody"], columns=columns, lines=lines)
    try:
        screen = term.wait_for(lambda t: "user nobody" in t and str(nobody) in t, "nobody's sleeper")
        for row in _table(screen):
            try:
                with open(f"/proc/{row.split()[0]}/status") as f:
                    uid = next(line.split()[1] for line in f if line.startswith("Uid:"))
            except FileNotFoundError:
                continue    # exited since the screen was drawn
            assert int(uid) == 65534, row
        term.press("q")
        assert term.wait_exit() == 0
    finally:
        term.close()


# ---- --format json|csv: what a script reads -----------------------------------------------------
def test_batch_json_and_csv_of_a_spinner_agree_with_proc():
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        out = subprocess.run([*CLI, "top", "-b", "-n", "3", "-d", "0.5", "-p", str(spinner.pid),
                              "--format", "json"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and out.stderr == "", out.stderr
        objects = [json.loads(line) for line in out.stdout.splitlines()]
        assert len(objects) == 3
        with open(f"/proc/{spinner.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        cpu_us_now = (int(fields[11]) + int(fields[12])) * 1e6 / os.sysconf("SC_CLK_TCK")
        last = objects[-1]["rows"]
        assert [r["ac_tgid"] for r in last] == [spinner.pid] and last[0]["ac_comm"].startswith("python")
        assert 0 < last[0]["cpu_pct"] <= 101 and last[0]["process_state"] in "RS"
        # TIME+ read when the row was printed: below what /proc says a moment later
        assert 0 < last[0]["cpu_time_us"] <= cpu_us_now + 20_000
        csv_out = subprocess.run([*CLI, "top", "-n", "2", "-d", "0.5", "-p", str(spinner.pid),
                                  "--format", "csv"], capture_output=True, text=True, timeout=60)
        assert csv_out.returncode == 0, csv_out.stderr
        rows = list(csv.DictReader(io.StringIO(csv_out.stdout)))
        assert [int(r["ac_tgid"]) for r in rows] == [spinner.pid, spinner.pid]
        assert set(rows[0]) == {"interval_start", "interval_end", "lost", *last[0]}
    finally:
        spinner.kill()
        spinner.wait()


def _table_header(text):
    return next(line for line in text.splitlines() if line.rstrip().endswith("COMMAND"))


@pytest.mark.parametrize("columns,lines", SIZES)
def test_the_column_chooser_hides_and_shows_columns_and_sorts(columns, lines):
    from taskstats_fast.live import top
    term = Terminal([*CLI, "top", "-d", "0.5"], columns=columns, lines=lines)
    try:
        term.wait_for(lambda t: "COMMAND" in t and "CPU%" in _table_header(t), "the table")
        term.press("F")
        screen = term.wait_for(lambda t: "top: columns" in t and "> [x] CPU%" in t, "the chooser")
        text = screen.splitlines()
        assert len(text) == lines and all(len(line) <= columns for line in text)
        assert "[sort]" in next(line for line in text if "CPU%" in line)
        term.press(" ")                                     # hide CPU%
        term.wait_for(lambda t: "> [ ] CPU%" in t, "CPU% unticked")
        term.press(KEYS["down"] * top.COLUMN_KEYS.index("read") + "s")  # sort by RD/s
        term.wait_for(lambda t: "> [x] RD/s" in t and "[sort]" in
                      next(line for line in t.splitlines() if "RD/s" in line), "RD/s the sort column")
        term.press(KEYS["down"] * (len(top.COLUMN_KEYS) - top.COLUMN_KEYS.index("read")) + " ")
        term.wait_for(lambda t: "> [ ] USER" in t, "USER unticked")
        term.press("q")                                     # q leaves the chooser, not top
        screen = term.wait_for(lambda t: "COMMAND" in t and "top: columns" not in t, "the table again")
        head = _table_header(screen)
        assert "CPU%" not in head and "USER" not in head and "RD/s" in head and "RES" in head, head
        assert "sort read desc" in screen
        term.press("F" + KEYS["end"] + KEYS["up"] * (len(top.PROCESS_COLUMNS) - 1))
        term.wait_for(lambda t: "> [ ] USER" in t, "the cursor back on USER")
        term.press(" \r")                                   # show USER again; Enter leaves
        screen = term.wait_for(lambda t: "COMMAND" in t and "top: columns" not in t
                               and "USER" in _table_header(t), "USER shown again")
        assert term.proc.poll() is None
        term.press("q")
        assert term.wait_exit() == 0, term.text()
    finally:
        term.close()
