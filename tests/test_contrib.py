"""The systemd units under contrib/: they parse (`systemd-analyze verify`), hold the sandboxing
README.md promises, and run commands our own parser accepts with paths that fit together (the
dataset lies under ReadWritePaths, the tmpfiles entry makes it the switched-to user's)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from typing import Dict, List

import pytest

from under_ci import unavailable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONTRIB = os.path.join(ROOT, "contrib")
UNITS = sorted(f for f in os.listdir(CONTRIB) if f.endswith(".service"))
FAMILIES = {"taskstats-fast-record.service": {"AF_NETLINK", "AF_UNIX"},
            "taskstats-fast-serve.service": {"AF_NETLINK", "AF_UNIX", "AF_INET", "AF_INET6"}}


def parse_unit(path: str) -> Dict[str, Dict[str, List[str]]]:
    """section -> key -> values (a key may repeat), comments and blank lines skipped."""
    sections: Dict[str, Dict[str, List[str]]] = {}
    current = None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                current = sections.setdefault(line.strip("[]"), {})
                continue
            key, sep, value = line.partition("=")
            assert current is not None and sep, f"{path}: {line!r} is outside a section or not KEY=VALUE"
            current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_both_units_are_there():
    assert UNITS == ["taskstats-fast-record.service", "taskstats-fast-serve.service"]


@pytest.mark.parametrize("unit", UNITS)
def test_unit_is_sandboxed_as_the_readme_says(unit):
    service = parse_unit(os.path.join(CONTRIB, unit))["Service"]
    one = {k: v[-1] for k, v in service.items()}
    assert set(one["CapabilityBoundingSet"].split()) == {"CAP_NET_ADMIN", "CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP"}
    assert one["AmbientCapabilities"] == ""
    assert "User" not in one and "DynamicUser" not in one   # root opens the sockets; --user switches
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
                       "PrivateTmp": "yes", "PrivateDevices": "yes", "ProtectKernelTunables": "yes",
                       "ProtectKernelModules": "yes", "ProtectControlGroups": "yes", "RestrictSUIDSGID": "yes",
                       "RestrictNamespaces": "yes", "MemoryDenyWriteExecute": "yes",
                       "SystemCallFilter": "@system-service", "SystemCallArchitectures": "native"}.items():
        assert one.get(key) == value, key
    assert set(one["RestrictAddressFamilies"].split()) == FAMILIES[unit]
    argv = shlex.split(one["ExecStart"])
    assert argv[argv.index("--user") + 1] == "taskstats-fast"


def test_the_record_unit_writes_where_it_may_and_as_its_user():
    service = parse_unit(os.path.join(CONTRIB, "taskstats-fast-record.service"))["Service"]
    argv = shlex.split(service["ExecStart"][-1])
    output = argv[argv.index("-o") + 1]
    writable = service["ReadWritePaths"][-1].split()
    assert any(output == w or output.startswith(w.rstrip("/") + "/") for w in writable)
    with open(os.path.join(CONTRIB, "tmpfiles.d", "taskstats-fast.conf")) as f:
        entries = [line.split() for line in f if line.strip() and not line.startswith("#")]
    assert ["d", writable[0], "0750", "taskstats-fast", "taskstats-fast", "-"] in entries
    with open(os.path.join(CONTRIB, "sysusers.d", "taskstats-fast.conf")) as f:
        assert re.search(r"^u taskstats-fast ", f.read(), re.M)


@pytest.mark.parametrize("unit", UNITS)
def test_the_unit_runs_a_command_our_parser_accepts(unit):
    from taskstats_fast import cli
    service = parse_unit(os.path.join(CONTRIB, unit))["Service"]
    argv = shlex.split(service["ExecStart"][-1])
    assert os.path.basename(argv[0]) == "taskstats-fast"
    if argv[1] not in {m.__name__.rsplit(".", 1)[-1] for m in cli.SUBCOMMANDS}:
        pytest.skip(f"`{argv[1]}` is not a subcommand yet")
    args = cli.build_parser().parse_args(argv[1:])
    assert args.user == "taskstats-fast" and args.group == "taskstats-fast"


@pytest.mark.parametrize("unit", UNITS)
def test_systemd_analyze_verify_finds_nothing(unit, tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        unavailable("systemd-analyze is not installed (Debian package systemd)")
    with open(os.path.join(CONTRIB, unit)) as f:
        text = f.read()
    # verify also wants ExecStart's program to exist: stand one in for the install path
    stand_in = shutil.which("true") or "/bin/true"
    (tmp_path / unit).write_text(text.replace("/opt/taskstats-fast/bin/taskstats-fast", stand_in))
    run = subprocess.run([analyze, "verify", str(tmp_path / unit)], capture_output=True, text=True)
    findings = [line for line in (run.stdout + run.stderr).splitlines() if unit in line]
    assert run.returncode == 0 and not findings, run.stdout + run.stderr
