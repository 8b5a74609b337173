"""``serve --config``: process-exporter's ``process_names`` rules, read unchanged, and the groups
they give in /metrics.  Processes are described directly (``ProcessAttributes``) or through a
fake /proc of our own, so the oracle is the rules as process-exporter documents them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("yaml")
from taskstats_fast.accounting.interval import EXITED, Interval  # noqa: E402
from taskstats_fast.live.exporter import PrometheusExporter  # noqa: E402
from taskstats_fast.live.grouping import GroupConfig, GroupConfigError, ProcessAttributes  # noqa: E402

DATA = Path(__file__).parent / "data"
REAL_CONFIG = DATA / "process-exporter.yml"


def P(comm, *argv, user="alice", pid=7, cgroup=""):
    return ProcessAttributes(comm, tuple(argv), user, pid, cgroup)


def test_a_process_exporter_config_reads_unchanged_and_names_as_it_would():
    config = GroupConfig.from_file(str(REAL_CONFIG))
    assert config.name_of(P("bash", "-bash")) == "-bash"                # default name: ExeBase, argv[0]'s base
    assert config.name_of(P("bash", "/bin/bash", "-c", "x")) == "bash"
    assert config.name_of(P("postgres", "/usr/lib/postgresql/15/bin/postgres", "-D", "/data")) == "postgres"
    assert config.name_of(P("prometheus", "/usr/local/bin/prometheus")) == "prometheus"
    # a full path in exe: only that path
    assert config.name_of(P("prometheus", "/opt/prometheus", "--x")) == "prometheus"   # falls to the last rule's Comm
    assert config.name_of(P("process-exporte", "/usr/local/bin/process-exporter", "-config.path", "/etc/pe.yml")) \
        == "/usr/local/bin/process-exporter:/etc/pe.yml"
    assert config.name_of(P("python3", "/usr/bin/python3", "-u", "/srv/app.py", "--port", "80", user="bob")) \
        == "bob:python:/srv/app.py"
    assert config.name_of(P("nginx", "nginx: worker process")) == "nginx"
    # no command line (a kernel thread, or a process gone before /proc was read): no cmdline rule matches
    assert config.name_of(P("kworker/0:1")) is None
    assert config.name_of(P("bash")) == "bash"                           # comm rules still do


def test_the_first_matching_rule_wins_and_every_matcher_of_a_rule_must_match():
    config = GroupConfig.from_yaml("""
process_names:
  - name: first
    comm: [worker]
    cmdline: [--queue=fast]
  - name: second
    comm: [worker]
  - name: third
    cmdline: ['.']
""")
    assert config.name_of(P("worker", "worker", "--queue=fast")) == "first"
    assert config.name_of(P("worker", "worker", "--queue=slow")) == "second"
    assert config.name_of(P("other", "other")) == "third"


def test_templates_and_matches():
    every = ('{{.Comm}}|{{.ExeBase}}|{{.ExeFull}}|{{.Username}}|{{.PID}}|{{.Matches.a}}|{{index .Matches "b"}}'
             '|{{.Matches.nope}}')
    config = GroupConfig.from_yaml(r"""
process_names:
  - name: %s
    cmdline: ['x=(?P<a>\w+)', 'y=(?<b>\w+)']
  - name: "  {{- .Comm -}}  !"
    comm: [trim]
  - name: "{{.Cgroup}}/{{.Matches.unit}}"
    cgroup: ['/system\.slice/(?P<unit>[^/]+)\.service']
""" % json.dumps(every))
    assert config.name_of(P("tool", "/bin/tool", "x=1", "y=2", pid=42)) == \
        "tool|tool|/bin/tool|alice|42|1|2|<no value>"
    assert config.name_of(P("trim", "t")) == "trim!"
    assert config.name_of(P("sshd", "", cgroup="/system.slice/ssh.service")) == "/system.slice/ssh.service/ssh"
    assert config.name_of(P("sshd", "", cgroup="/user.slice")) is None


@pytest.mark.parametrize("text, message", [
    ("process_names: [{name: x}]", "no matchers provided"),
    ("process_names: [{comm: bash}]", "comm must be a list"),
    ("process_names: [{cmdline: ['(']}]", "bad cmdline regex"),
    ("process_names: [{name: '{{.StartTime}}', comm: [a]}]", "is not supported"),
    ("nothing: here", "needs a process_names list"),
    ("process_names: [unbalanced", "not YAML"),
])
def test_a_bad_config_is_one_clear_error(text, message):
    with pytest.raises(GroupConfigError, match=message):
        GroupConfig.from_yaml(text)


def _fake_proc(tmp_path, processes):
    for pid, argv in processes.items():
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "cmdline").write_bytes(b"".join(a.encode() + b"\0" for a in argv))
    return str(tmp_path)


def test_groups_in_metrics_count_every_thread_of_a_matched_process(tmp_path):
    proc = _fake_proc(tmp_path, {10: ["/usr/bin/python3", "/srv/app.py"], 20: ["/bin/bash"], 30: ["/usr/sbin/sshd"]})
    config = GroupConfig.from_file(str(REAL_CONFIG), proc=proc)
    exporter = PrometheusExporter(grouping=config.grouping())
    # app.py: a leader and a thread; bash; sshd; a kernel thread (no cmdline: in no group); an exited child
    exporter.write(Interval.from_arrays(0, 10**9, {
        "ac_comm": [b"python3", b"python3", b"bash", b"sshd", b"kworker/0:1", b"bash"],
        "ac_pid": [10, 11, 20, 30, 40, 50], "ac_tgid": [10, 10, 20, 30, 40, 50], "ac_uid": [0] * 6,
        "state": [0, 0, 0, 0, 0, EXITED], "cpu_ns": [10**9, 10**9, 5, 7, 11, 3],
        "hiwater_rss": [100, 100, 1, 2, 0, 0]}))
    from exposition import parse  # needs prometheus_client: skips the test without it
    samples = parse(exporter.exposition()[0])[0]
    cpu = samples["taskstats_group_cpu_usage_seconds_total"]
    assert cpu[frozenset({("groupname", "root:python:/srv/app.py")})] == 2.0
    assert cpu[frozenset({("groupname", "bash")})] == pytest.approx(8e-9)
    assert cpu[frozenset({("groupname", "sshd")})] == pytest.approx(7e-9)
    assert frozenset({("groupname", "kworker/0:1")}) not in cpu
    assert samples["taskstats_group_threads"][frozenset({("groupname", "root:python:/srv/app.py")})] == 2
    assert samples["taskstats_group_processes"][frozenset({("groupname", "bash")})] == 1
    assert samples["taskstats_group_task_exits_total"][frozenset({("groupname", "bash")})] == 1
    assert samples["taskstats_group_resident_memory_peak_bytes"][
        frozenset({("groupname", "root:python:/srv/app.py")})] == 100 * 1024
    assert samples["taskstats_group_folded_tasks_total"][frozenset()] == 0


def test_serve_with_a_bad_config_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("process_names: [{name: x}]\n")
    for path, message in ((bad, "no matchers provided"), (tmp_path / "missing.yml", "cannot read it")):
        proc = subprocess.run([sys.executable, "-m", "taskstats_fast", "serve", "--config", str(path)],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and str(path) in lines[0] and message in lines[0], proc.stderr


@pytest.mark.kernel
def test_serve_groups_a_live_process_by_the_real_config(tmp_path):
    """A sleeping copy of sleep under a name of this test's own falls to the config's last rule
    ({{.Comm}} of anything with a command line): one process, one thread in its group."""
    name = f"tsfgrp{os.getpid() % 10**8}"
    exe = tmp_path / name
    exe.write_bytes(Path("/bin/sleep").read_bytes())
    exe.chmod(0o755)
    sleeper = subprocess.Popen([str(exe), "120"])
    serve = subprocess.Popen([sys.executable, "-m", "taskstats_fast", "serve", "--listen", "127.0.0.1:0",
                              "--interval", "0.5", "--config", str(REAL_CONFIG)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wanted = {f'taskstats_group_processes{{groupname="{name}"}}': 1.0,
              f'taskstats_group_threads{{groupname="{name}"}}': 1.0}
    try:
        line = serve.stderr.readline()
        url = line[line.index("http://"):line.index("/metrics")] + "/metrics"
        deadline = time.monotonic() + 30
        found: dict = {}
        while time.monotonic() < deadline and found != wanted:
            with urllib.request.urlopen(url, timeout=10) as reply:
                found = {k: float(v) for k, v in (x.rsplit(" ", 1) for x in reply.read().decode().splitlines())
                         if k in wanted}
            time.sleep(0.3)
    finally:
        sleeper.kill()
        sleeper.wait()
        serve.terminate()
        _, err = serve.communicate(timeout=30)
    assert found == wanted, err
    assert serve.returncode == 0, err


def test_rows_in_no_group_are_not_counted_anywhere_in_the_groups(tmp_path):
    config = GroupConfig.from_yaml("process_names: [{comm: [keep]}]", proc=str(tmp_path))
    exporter = PrometheusExporter(grouping=config.grouping())
    exporter.write(Interval.from_arrays(0, 1, {"ac_comm": [b"keep", b"drop"], "ac_pid": [1, 2], "ac_tgid": [1, 2],
                                               "state": [EXITED, EXITED]}))
    from exposition import parse  # needs prometheus_client: skips the test without it
    exits = parse(exporter.exposition()[0])[0]["taskstats_group_task_exits_total"]
    assert exits == {frozenset({("groupname", "other")}): 0, frozenset({("groupname", "keep")}): 1}
    assert np.sum(list(exits.values())) == 1
