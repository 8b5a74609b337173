"""The top view's model and renderer on synthetic intervals (no kernel): grouping, columns,
percentages, marks of born/exited tasks, filter, sort, keys, fitting 80 columns, the header."""

from __future__ import annotations

import io
import os
import sys
from collections import defaultdict

import numpy as np
import pytest

from taskstats_fast import layout
from taskstats_fast.accounting.interval import BORN, EXITED, PSI_DTYPE, Pressure
from taskstats_fast.live import top
from taskstats_fast.recording import Sink
from terminal import Terminal
from top_intervals import CGROUPS, burst, interval, task

def col(name):
    return top.COLUMN_KEYS.index(name)


def by_name(table):
    return {name: table.values[i] for i, name in enumerate(table.names)}


# ---- the model ---------------------------------------------------------------------------------

def test_process_rows_sum_threads_and_take_the_leaders_name():
    iv = interval([task(100, comm=b"leader", cpu_ns=400_000_000),
                   task(101, 100, comm=b"worker", cpu_ns=200_000_000),
                   task(7, comm=b"other", cpu_ns=10_000_000)], seconds=2.0)
    table = top.build_table(iv, top.TopState())
    assert table.names == ["leader", "other"]
    assert list(table.ids) == [100, 7]
    # CPU % of one CPU over the interval: (400 + 200 ms) / 2 s
    assert table.values[0, col("cpu")] == pytest.approx(30.0)
    assert table.values[0, col("tasks")] == 2


def test_every_delay_class_is_a_percentage_of_the_interval():
    classes = [cls.name for cls in layout.DELAY_CLASSES]
    rows = [task(10 + i, ac_comm=b"w", **{f"{name}_delay_total": (i + 1) * 50_000_000})
            for i, name in enumerate(classes)]
    table = top.build_table(interval(rows, seconds=0.5), top.TopState(grouping="thread"))
    for i, name in enumerate(classes):
        row = list(table.ids).index(10 + i)
        assert table.values[row, col(f"{name}_delay")] == pytest.approx((i + 1) * 10.0)  # 50 ms/0.5 s
        others = [c for c in classes if c != name]
        assert all(table.values[row, col(f"{c}_delay")] == 0 for c in others)


def test_io_is_bytes_per_second():
    iv = interval([task(3, read_bytes=4 << 20, write_bytes=1 << 20)], seconds=4.0)
    table = top.build_table(iv, top.TopState())
    assert table.values[0, col("read")] == 1 << 20
    assert table.values[0, col("write")] == 1 << 18


def test_a_burst_of_short_lived_commands_shows_up_under_its_name():
    rows = [task(1, comm=b"init", cpu_ns=1_000_000)] + burst(500, 40)
    iv = interval(rows)
    by_command = top.build_table(iv, top.TopState(grouping="command"))
    i = by_command.names.index("burstcmd")
    assert by_command.values[i, col("exits")] == 40
    assert by_command.values[i, col("cpu")] == pytest.approx(40 * 4000 / 1e6 * 100)
    assert by_command.marks[i] == "*"
    assert by_command.names[0] == "burstcmd"      # the burst outweighs init: sorted first
    # the process view folds the 40 short-lived processes of one command into one row...
    by_process = top.build_table(iv, top.TopState())
    assert by_process.names == ["burstcmd (40)", "init"]
    assert list(by_process.ids) == [-1, 1] and by_process.marks[0] == "*"
    assert list(by_process.processes) == [40, 1]
    assert by_process.values[0] == pytest.approx(by_command.values[i])
    assert (by_process.exits, by_process.tasks, by_process.groups) == (40, 41, 2)
    # ... unless asked not to; the thread view keeps them apart
    unfolded = top.build_table(iv, top.TopState(fold=False))
    assert unfolded.names.count("burstcmd") == 40
    assert {m for n, m in zip(unfolded.names, unfolded.marks) if n == "burstcmd"} == {"*"}
    assert top.build_table(iv, top.TopState(grouping="thread")).names.count("burstcmd") == 40
    lines = top.render(iv, top.TopState(), width=80)
    row = next(line for line in lines if "burstcmd" in line)
    assert row.startswith(" " * top.ID_WIDTH + " ") and row.endswith("* burstcmd (40)")


def test_only_short_lived_processes_of_one_command_fold():
    rows = [task(1, comm=b"init"), task(2, comm=b"true", state=BORN | EXITED, cpu_ns=1_000_000),
            task(3, comm=b"true", state=BORN, cpu_ns=5_000_000),          # still alive: its own row
            task(4, comm=b"true", state=EXITED, cpu_ns=2_000_000),        # older: its own row
            task(5, comm=b"sed", state=BORN | EXITED),                    # alone: keeps its pid
            task(6, comm=b"true", state=BORN | EXITED, cpu_ns=3_000_000)]
    table = top.build_table(interval(rows), top.TopState())
    assert sorted(zip(table.names, table.ids.tolist(), table.marks)) == [
        ("init", 1, " "), ("sed", 5, "*"), ("true", 3, "+"), ("true", 4, "x"),
        ("true (2)", -1, "*")]
    folded = table.names.index("true (2)")
    assert table.values[folded, col("cpu")] == pytest.approx(0.4)
    assert table.values[folded, col("exits")] == 2 and table.values[folded, col("tasks")] == 2


def test_pid_and_user_selection():
    rows = [task(1, comm=b"init", ac_uid=0), task(20, comm=b"sshd", ac_uid=0),
            task(30, comm=b"bash", ac_uid=1000), task(31, 30, comm=b"bash", ac_uid=1000),
            task(40, comm=b"vim", ac_uid=1000)]
    iv = interval(rows)
    assert sorted(top.build_table(iv, top.TopState(pids=(30, 20))).ids) == [20, 30]
    mine = top.build_table(iv, top.TopState(uid=1000))
    assert sorted(mine.names) == ["bash", "vim"] and mine.shown_tasks == 3
    assert top.build_table(iv, top.TopState(uid=1000, pids=(20,))).names == []
    threads = top.build_table(iv, top.TopState(grouping="thread", pids=(30,)))
    assert sorted(threads.ids) == [30, 31]
    header = top.render(iv, top.TopState(pids=(30, 20), uid=0))[2]
    assert "pids 30,20" in header and "user root" in header


def test_tree_puts_children_under_their_parent_siblings_sorted():
    rows = [task(1, comm=b"init", ac_ppid=0, cpu_ns=1),
            task(10, comm=b"sshd", ac_ppid=1, cpu_ns=5_000_000),
            task(11, comm=b"bash", ac_ppid=10, cpu_ns=1_000_000),
            task(12, comm=b"vim", ac_ppid=11, cpu_ns=9_000_000),
            task(13, 12, comm=b"vim", ac_ppid=11, cpu_ns=9_000_000),    # a thread: no row of its own
            task(20, comm=b"cron", ac_ppid=1, cpu_ns=7_000_000),
            task(30, comm=b"orphan", ac_ppid=999, cpu_ns=2_000_000)]     # parent not seen: a root
    table = top.build_table(interval(rows), top.TopState(tree=True))
    # roots and siblings in sort order (CPU, largest first)
    assert table.names == ["orphan", "init", "`- cron", "`- sshd", "  `- bash", "    `- vim"]
    assert list(table.ids) == [30, 1, 20, 10, 11, 12]
    shown = top.render(interval(rows), top.TopState(tree=True))   # batch: every row of the tree
    assert any(line.endswith("   `- cron") for line in shown) and "by process tree" in shown[2]
    # the tree does not fold: each short-lived child stays under its parent
    burst_rows = rows + [task(100 + i, comm=b"true", ac_ppid=11, state=BORN | EXITED) for i in range(3)]
    table = top.build_table(interval(burst_rows), top.TopState(tree=True))
    assert table.names.count("    `- true") == 3


def test_scroll_keys_move_through_every_row_and_stop_at_the_ends():
    iv = interval([task(100 + i, comm=f"c{i:03d}".encode(), cpu_ns=(500 - i) * 1_000_000)
                   for i in range(200)])
    state = top.TopState()

    def first_and_last():
        lines = top.render(iv, state, width=80, height=24)
        table = lines[lines.index("") + 2:]
        return table[0].split()[-1], table[-1].split()[-1], len(table), lines

    first, last, rows, lines = first_and_last()
    assert (first, rows) == ("c000", 24 - lines.index("") - 2)
    assert f"rows 1-{rows}" in lines[lines.index("") - 1]
    assert state.press("down", page=rows) and first_and_last()[0] == "c001"
    state.press("pgdn", page=rows)
    assert first_and_last()[0] == f"c{1 + rows:03d}"
    state.press("end", page=rows)
    first, last, _, lines = first_and_last()
    assert last == "c199" and f"rows {201 - rows}-200" in lines[lines.index("") - 1]
    state.press("down", page=rows)                      # past the end: stays on the last page
    assert first_and_last()[1] == "c199"
    state.press("up", page=rows)
    assert first_and_last()[1] == "c198"
    state.press("home", page=rows)
    assert first_and_last()[0] == "c000"
    state.press("pgup", page=rows)
    assert state.scroll == 0


def test_marks_tell_born_exited_and_both_apart():
    iv = interval([task(1, comm=b"alive"), task(2, comm=b"born", state=BORN),
                   task(3, comm=b"exited", state=EXITED), task(4, comm=b"both", state=BORN | EXITED),
                   # a process whose leader is alive but one thread exited: not marked
                   task(5, comm=b"mixed"), task(6, 5, comm=b"mixed", state=EXITED)])
    table = top.build_table(iv, top.TopState())
    marks = dict(zip(table.names, table.marks))
    assert marks == {"alive": " ", "born": "+", "exited": "x", "both": "*", "mixed": " "}
    assert table.values[table.names.index("mixed"), col("exits")] == 1


def test_groupings_cgroup_user_command_thread():
    rows = [task(1, comm=b"init", ac_uid=0, cgroup_id=1, cpu_ns=1_000_000),
            task(20, comm=b"sshd", ac_uid=0, cgroup_id=5, cpu_ns=2_000_000),
            task(30, comm=b"bash", ac_uid=1000, cgroup_id=9, cpu_ns=3_000_000),
            task(31, 30, comm=b"bash", ac_uid=1000, cgroup_id=9, cpu_ns=4_000_000)]
    iv = interval(rows)
    cg = by_name(top.build_table(iv, top.TopState(grouping="cgroup")))
    assert cg["/user.slice/session-1.scope"][col("cpu")] == pytest.approx(0.7)
    assert cg["/"][col("tasks")] == 1
    users = top.build_table(iv, top.TopState(grouping="user"))
    assert users.names[list(users.ids).index(0)] == "root"
    assert users.values[list(users.ids).index(1000), col("tasks")] == 2
    threads = top.build_table(iv, top.TopState(grouping="thread"))
    assert sorted(threads.ids) == [1, 20, 30, 31]
    commands = by_name(top.build_table(iv, top.TopState(grouping="command")))
    assert commands["bash"][col("tasks")] == 2


def test_filter_matches_command_name_or_cgroup_path():
    rows = [task(1, comm=b"init", cgroup_id=1), task(20, comm=b"sshd", cgroup_id=5),
            task(30, comm=b"bash", cgroup_id=9), task(40, comm=b"vim", cgroup_id=9)]
    iv = interval(rows)
    assert top.build_table(iv, top.TopState(filter="SSH")).names == ["sshd"]          # name, any case
    assert sorted(top.build_table(iv, top.TopState(filter="session-1")).names) == ["bash", "vim"]
    nothing = top.build_table(iv, top.TopState(filter="no-such-thing"))
    assert (nothing.names, nothing.groups, nothing.shown_tasks, nothing.tasks) == ([], 0, 0, 4)


@pytest.mark.parametrize("key", top.COLUMN_KEYS)
def test_sorting_by_any_column_either_way(key):
    rng = np.random.default_rng(len(key))
    rows = [task(10 + i, comm=f"c{i}".encode(), cpu_ns=1000 * int(rng.integers(0, 10**6)),
                 read_bytes=int(rng.integers(0, 10**6)), write_bytes=int(rng.integers(0, 10**6)),
                 state=int(rng.integers(0, 4)),
                 **{f"{c.name}_delay_total": int(rng.integers(0, 10**9)) for c in layout.DELAY_CLASSES})
            for i in range(30)]
    rows += [task(10 + i, 10, comm=b"c0") for i in range(30, 33)]   # threads: tasks > 1
    iv = interval(rows)
    down = top.build_table(iv, top.TopState(sort=key)).values[:, col(key)]
    up = top.build_table(iv, top.TopState(sort=key, descending=False)).values[:, col(key)]
    assert list(down) == sorted(down, reverse=True)
    assert list(up) == sorted(up)


def test_the_table_agrees_with_a_python_oracle_on_random_intervals():
    rng = np.random.default_rng(7)
    n, seconds = 500, 1.5
    fields = ["cpu_ns", "read_bytes", "write_bytes",
              *(f"{c.name}_delay_total" for c in layout.DELAY_CLASSES)]
    rows = []
    for i in range(n):
        tgid = 1000 + int(rng.integers(0, 60))
        row = task(5000 + i, tgid, comm=f"cmd{tgid % 7}".encode(), state=int(rng.integers(0, 4)),
                   ac_uid=int(rng.integers(0, 3)), cgroup_id=int(rng.choice(list(CGROUPS))))
        row.update({f: int(rng.integers(0, 10**7)) for f in fields})
        rows.append(row)
    iv = interval(rows, seconds=seconds)
    for grouping, key in (("process", "ac_tgid"), ("user", "ac_uid"), ("cgroup", "cgroup_id"),
                          ("command", "ac_comm")):
        expected = defaultdict(lambda: defaultdict(float))
        for r in rows:
            e = expected[r[key]]
            e["cpu"] += r["cpu_ns"] / (seconds * 1e9) * 100
            for c in layout.DELAY_CLASSES:
                e[f"{c.name}_delay"] += r[f"{c.name}_delay_total"] / (seconds * 1e9) * 100
            e["read"] += r["read_bytes"] / seconds
            e["write"] += r["write_bytes"] / seconds
            e["exits"] += bool(r["state"] & EXITED)
            e["tasks"] += 1
        table = top.build_table(iv, top.TopState(grouping=grouping))
        assert table.groups == len(expected)
        for i in range(table.groups):
            name = table.names[i]
            if grouping == "process":
                k = int(table.ids[i])
            elif grouping == "user":
                k = int(table.ids[i])
            elif grouping == "cgroup":
                k = next(cid for cid, path in CGROUPS.items() if path == name)
            else:
                k = name.encode()
            for column, value in expected[k].items():
                assert table.values[i, col(column)] == pytest.approx(value), (grouping, name, column)


def test_an_empty_interval_renders():
    iv = interval([])
    lines = top.render(iv, top.TopState(), width=80, height=24)
    assert "tasks 0" in lines[0]
    assert top.build_table(iv, top.TopState(grouping="command")).groups == 0


def test_limit_names_only_the_screens_rows_but_counts_every_group():
    iv = interval([task(10 + i, cpu_ns=1000 * i) for i in range(100)])
    table = top.build_table(iv, top.TopState(), limit=5)
    assert table.groups == 100 and len(table.names) == 5 and len(table.values) == 5
    assert list(table.ids) == [109, 108, 107, 106, 105]


# ---- keys -------------------------------------------------------------------------------------------

def test_keys_change_grouping_sort_pause_and_help():
    s = top.TopState()
    for expected in top.GROUPINGS[1:] + top.GROUPINGS[:1]:
        assert s.press("g") and s.grouping == expected
    for key, grouping in top.GROUPING_KEYS.items():
        s.press(key)
        assert s.grouping == grouping
    s.press(">")
    assert s.sort == top.COLUMN_KEYS[1]
    s.press("<")
    s.press("<")
    assert s.sort == top.COLUMN_KEYS[-1]
    s.sort = "read"
    s.press("<", visible=["cpu", "read"])          # moves among the visible columns only
    assert s.sort == "cpu"
    s.press("P")
    assert (s.sort, s.descending) == ("cpu", True)
    s.press("r")
    assert not s.descending
    s.press(" ")
    assert s.paused
    s.press(" ")
    assert not s.paused
    s.press("?")
    assert s.help
    s.press("x")                                    # any key leaves help
    assert not s.help
    assert not s.press("Z")


# ---- rendering -------------------------------------------------------------------------------------

def test_80_columns_keep_the_essentials_and_wider_screens_show_everything():
    iv = interval([task(1, comm=b"a-rather-long-command-name", cpu_ns=10_000)])
    narrow = top.render(iv, top.TopState(), width=80, height=24)
    assert all(len(line) <= 80 for line in narrow)
    head = next(line for line in narrow if "COMMAND" in line)
    for header in ("PID", "CPU%", "RD/s", "WR/s", "EXITS", "COMMAND"):
        assert header in head
    assert top.COLUMNS[col("cpu_delay")].header in head
    wide = top.render(iv, top.TopState(), width=200, height=24)
    wide_head = next(line for line in wide if "COMMAND" in line)
    assert all(c.header in wide_head for c in top.COLUMNS)


def test_the_sort_column_stays_on_a_narrow_screen():
    last = top.COLUMN_KEYS[len(layout.DELAY_CLASSES)]     # the last delay class: dropped first
    assert last not in [c.key for c in top.fit_columns(80, "process", "cpu")]
    assert last in [c.key for c in top.fit_columns(80, "process", last)]
    span = top.sort_column_span(80, "process", last)
    head = top.render_table(top.build_table(interval([task(1)]), top.TopState(sort=last)),
                            top.TopState(sort=last), 80)[0]
    assert head[span[0]:span[1]].strip() == top.COLUMNS[col(last)].header


def test_height_limits_the_rows():
    iv = interval([task(10 + i, cpu_ns=1000 * (i + 1)) for i in range(100)])
    assert len(top.render(iv, top.TopState(), width=80, height=24)) <= 24


def test_batch_render_leaves_out_groups_that_did_nothing():
    iv = interval([task(1, comm=b"idle"), task(2, comm=b"busy", cpu_ns=5_000),
                   task(3, comm=b"quick", state=BORN | EXITED)])
    text = "\n".join(top.render(iv, top.TopState()))
    assert "busy" in text and "quick" in text and "idle" not in text


def test_header_shows_psi_tasks_exits_loss_and_the_delayacct_banner():
    psi = np.zeros(1, PSI_DTYPE)[0]
    psi["cpu_some_us"] = 250_000
    psi["io_some_us"] = 50_000
    psi["io_full_us"] = 25_000
    iv = interval(burst(10, 3) + [task(1)], seconds=0.5,
                  psi=Pressure(psi, np.zeros(0, PSI_DTYPE), ("cpu", "io")), lost=7, delayacct=False)
    lines = top.render(iv, top.TopState(), width=80, height=24)
    text = "\n".join(lines)
    assert "tasks 4" in lines[0] and "exited 3" in lines[0] and "LOST 7" in lines[0]
    assert "cpu 50.0/0.0" in lines[1] and "io 10.0/5.0" in lines[1]
    assert top.DELAYACCT_OFF_BANNER[:80] in text
    on = interval([task(1)], delayacct=True)
    assert top.DELAYACCT_OFF_BANNER not in "\n".join(top.render(on, top.TopState()))
    assert "lost 0" in top.render(on, top.TopState())[0]


def test_help_screen_fits_80x24():
    lines = top.render(interval([]), top.TopState(help=True), width=80, height=24)
    assert len(lines) <= 23 and all(len(line) <= 80 for line in lines)
    assert any("quit" in line for line in lines)


def test_the_sink_prints_each_interval_in_batch_mode_and_keeps_the_latest():
    out = io.StringIO()
    sink = top.TopSink(out=out)
    first, second = interval(burst(10, 2)), interval([task(1, cpu_ns=1_000)])
    sink.write(first)
    sink.write(second)
    sink.close()
    assert out.getvalue().count("taskstats-fast top") == 2
    assert "burstcmd" in out.getvalue()
    assert sink.intervals == 2 and sink.stats().written == 3 and sink.stats().lost == 0
    assert isinstance(sink, Sink)
    assert sink.wait(0) and sink.latest() is second and not sink.wait(0)


# ---- the curses screen through a pty, fed synthetic intervals ----------------------------------

SCREEN_PROGRAM = """
import sys, threading, time
sys.path.insert(0, {tests!r})
from top_intervals import burst, interval, task
from taskstats_fast.live import screen, top
sink, stop = top.TopSink(), threading.Event()
def feed():
    for i in range(1, 10**6):
        if stop.is_set():
            return
        sink.write(interval([task(1, comm=b"init", cpu_ns=1_000_000), task(30, comm=b"busy", cpu_ns=900_000_000,
                             read_bytes=3 << 20)] + burst(1000 + 10 * i, 5, comm=b"quickie")))
        time.sleep(0.5)
threading.Thread(target=feed, daemon=True).start()
screen.run_screen(sink, stop.is_set, waiting="waiting for the first interval")
"""


def test_screen_draws_keys_and_highlights_the_sort_column(tmp_path):
    program = tmp_path / "screen.py"
    program.write_text(SCREEN_PROGRAM.format(tests=str(os.path.dirname(__file__))))
    term = Terminal([sys.executable, str(program)])
    try:
        text = term.wait_for(lambda t: "busy" in t and "quickie" in t, "the table")
        lines = text.splitlines()
        head_row = next(i for i, line in enumerate(lines) if "COMMAND" in line)
        assert lines[head_row + 1].split()[1] == "90.0" and lines[head_row + 1].endswith("busy")
        assert lines[-1].startswith("h help")
        start = lines[head_row].index("CPU%")
        cells = term.screen.buffer[head_row]
        assert cells[start].reverse and cells[start].bold             # the sort column
        assert not cells[0].bold and cells[0].reverse                   # the rest of the header
        term.press("R")                                                 # sort by read/s
        start = lines[head_row].index("RD/s")
        term.wait_for(lambda t: "sort read desc" in t and term.screen.buffer[head_row][start + 1].bold
                      and not term.screen.buffer[head_row][lines[head_row].index("CPU%")].bold,
                      "the read sort, highlighted")
        term.press("m/quick\r")
        text = term.wait_for(lambda t: "filter 'quick'" in t and "by command" in t, "the filter")
        rows = [line for line in text.splitlines()[head_row + 1:-1] if line.strip()]
        assert len(rows) == 1 and rows[0].endswith("* quickie") and rows[0].split()[-3] == "5"
        term.press("/\x1b")                                            # Esc leaves the filter as it was
        term.wait_for(lambda t: "filter 'quick'" in t and "filter (" not in t, "the cancelled prompt")
        term.press("/\r")                                               # an empty filter shows all
        term.wait_for(lambda t: "filter" not in t.splitlines()[2] and "busy" in t, "the unfiltered table")
        term.press("q")
        assert term.wait_exit() == 0
    finally:
        term.close()


def test_control_characters_in_names_are_not_sent_to_the_terminal():
    iv = interval([task(1, comm=b"evil\x1b[2J\x07", cpu_ns=5_000)])
    text = "\n".join(top.render(iv, top.TopState()))
    assert "\x1b" not in text and "\x07" not in text and "evil?[2J?" in text


def test_column_titles_are_unique_and_short():
    headers = [c.header for c in top.COLUMNS]
    assert len(set(headers)) == len(headers)
    assert all(len(cls.short) <= 6 for cls in layout.DELAY_CLASSES)
    assert all(len(c.header) <= c.width for c in top.COLUMNS)
