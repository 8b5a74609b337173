"""``serve --config FILE``: process-exporter's ``process_names`` grouping, read unchanged.

The file is process-exporter's (ncabatoff/process-exporter, ``-config.path``)::

    process_names:
      - comm: [bash]                         # exact 15-character comm names
      - exe: [postgres, /usr/local/bin/prometheus]   # argv[0]'s base name, or the full argv[0] with a /
      - name: "{{.ExeFull}}:{{.Matches.Cfgfile}}"
        exe: [/usr/local/bin/process-exporter]
        cmdline: ['-config.path\\s+(?P<Cfgfile>\\S+)']  # every regex must match argv joined by spaces

with its semantics: the rules are tried in order and the first whose matchers all match names the
process; a rule needs one matcher at least; ``name`` is a Go template over ``{{.Comm}}``,
``{{.ExeBase}}`` (the default), ``{{.ExeFull}}``, ``{{.Username}}``, ``{{.PID}}`` and
``{{.Matches.NAME}}`` / ``{{index .Matches "NAME"}}`` (the named groups of the cmdline regexes);
a process no rule matches is in no group (its tasks still count in the cgroup and command
series).  One extension, for grouping by cgroup: a ``cgroup`` matcher, regexes searched in the
process's cgroup path, whose named groups join ``.Matches``, and ``{{.Cgroup}}`` in templates
(process-exporter does not know them).

Every thread of a process is in the process's group.  The command line and user are read from
/proc once per process (keyed by tgid and comm); a process that exited before it could be read
has no command line, so, as process-exporter would, its ExeBase is its comm and exe and cmdline
rules do not match it.
"""

from __future__ import annotations

import os
import pwd
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np

from ..schema import require
from .exporter import Grouping, command_label

__all__ = ["GroupConfig", "GroupConfigError", "ProcessAttributes", "load_group_config"]

#: Processes whose names are remembered; past this the memory starts again (a fresh read each).
_REMEMBERED = 65_536


class GroupConfigError(ValueError):
    """A grouping config that cannot be used; the message names what is wrong."""


@dataclass(frozen=True)
class ProcessAttributes:
    """What a rule can look at: the kernel's comm, argv from /proc, user, pid and cgroup path."""
    comm: str
    cmdline: Tuple[str, ...] = ()
    username: str = ""
    pid: int = 0
    cgroup: str = ""


# ---- name templates: the subset of Go's text/template process-exporter configs use -----------
_ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.S)
_FIELD = re.compile(r"\.(Comm|ExeBase|ExeFull|Username|PID|Cgroup)\Z")
_MATCH = re.compile(r'\.Matches\.(\w+)\Z|index\s+\.Matches\s+"([^"]*)"\Z')
_Part = Callable[[ProcessAttributes, Mapping[str, str]], str]


def _exe_full(p: ProcessAttributes) -> str:
    return p.cmdline[0] if p.cmdline else p.comm


def _field(name: str) -> _Part:
    get: Dict[str, Callable[[ProcessAttributes], str]] = {
        "Comm": lambda p: p.comm, "ExeFull": _exe_full, "ExeBase": lambda p: os.path.basename(_exe_full(p)),
        "Username": lambda p: p.username, "PID": lambda p: str(p.pid), "Cgroup": lambda p: p.cgroup}
    one = get[name]
    return lambda p, matches: one(p)


def _match(key: str) -> _Part:
    return lambda p, matches: matches.get(key, "<no value>")     # Go prints a missing key so


def _literal(text: str) -> _Part:
    return lambda p, matches: text


def _compile_template(text: str) -> List[_Part]:
    parts: List[_Part] = []
    literals: List[str] = []
    end = 0
    for action in _ACTION.finditer(text):
        literals.append(text[end:action.start()])
        if action.group(1):                         # {{- trims the space before
            literals[-1] = literals[-1].rstrip()
        expr = action.group(2)
        found_field, found_match = _FIELD.match(expr), _MATCH.match(expr)
        if found_field:
            part = _field(found_field.group(1))
        elif found_match:
            part = _match(found_match.group(1) or found_match.group(2))
        else:
            raise GroupConfigError(f"name template {text!r}: {{{{{expr}}}}} is not supported (use .Comm, "
                                   ".ExeBase, .ExeFull, .Username, .PID, .Cgroup or .Matches.NAME)")
        end = action.end()
        trim_after = bool(action.group(3))
        parts.append(_literal(literals[-1]))
        parts.append(part)
        if trim_after:                              # -}} trims the space after
            rest = text[end:]
            end += len(rest) - len(rest.lstrip())
    parts.append(_literal(text[end:]))
    return parts


def _regex(pattern: Any, where: str) -> "re.Pattern[str]":
    try:   # Go's RE2 also spells a named group (?<name>...)
        return re.compile(re.sub(r"\(\?<(?=\w)", "(?P<", str(pattern)))
    except re.error as e:
        raise GroupConfigError(f"bad {where} regex {pattern!r}: {e}") from None


@dataclass
class _Rule:
    template: List[_Part]
    comms: Optional[frozenset] = None
    exes: Optional[Dict[str, str]] = None          # base name -> full path ("" for any)
    cmdlines: Optional[List["re.Pattern[str]"]] = None
    cgroups: Optional[List["re.Pattern[str]"]] = None

    def name(self, p: ProcessAttributes) -> Optional[str]:
        """The group name if every matcher of the rule matches ``p``, else None."""
        if self.comms is not None and p.comm not in self.comms:
            return None
        if self.exes is not None:
            if not p.cmdline:
                return None
            full = self.exes.get(os.path.basename(p.cmdline[0]))
            if full is None or (full and full != p.cmdline[0]):
                return None
        matches: Dict[str, str] = {}
        for patterns, text in ((self.cmdlines, " ".join(p.cmdline)), (self.cgroups, p.cgroup)):
            for pattern in patterns or ():
                found = pattern.search(text)
                if found is None:
                    return None
                matches.update({k: v or "" for k, v in found.groupdict().items()})
        return "".join(part(p, matches) for part in self.template)


def _strings(rule: Mapping[str, Any], key: str, where: str) -> Optional[List[str]]:
    value = rule.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, (str, int, float)) for v in value):
        raise GroupConfigError(f"{where}: {key} must be a list of strings")
    return [str(v) for v in value]


def _rule(raw: Any, index: int) -> _Rule:
    where = f"process_names[{index}]"
    if not isinstance(raw, dict):
        raise GroupConfigError(f"{where} must be a mapping with name, comm, exe or cmdline")
    comms, exes = _strings(raw, "comm", where), _strings(raw, "exe", where)
    cmdlines, cgroups = _strings(raw, "cmdline", where), _strings(raw, "cgroup", where)
    if comms is None and exes is None and cmdlines is None and cgroups is None:
        raise GroupConfigError(f"{where}: no matchers provided (comm, exe, cmdline or cgroup)")
    name = raw.get("name") or "{{.ExeBase}}"
    return _Rule(
        template=_compile_template(str(name)),
        comms=frozenset(comms) if comms is not None else None,
        exes={os.path.basename(e): (e if "/" in e else "") for e in exes} if exes is not None else None,
        cmdlines=[_regex(c, "cmdline") for c in cmdlines] if cmdlines is not None else None,
        cgroups=[_regex(c, "cgroup") for c in cgroups] if cgroups is not None else None)


@dataclass
class GroupConfig:
    """The rules of a ``process_names`` file, and the naming of processes by them."""
    rules: List[_Rule]
    proc: str = "/proc"
    _names: Dict[Tuple[int, bytes], Optional[str]] = field(default_factory=dict, repr=False)
    _users: Dict[int, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_yaml(cls, text: str, *, proc: str = "/proc") -> "GroupConfig":
        yaml = require("yaml", "serve", "serve --config")
        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise GroupConfigError(f"not YAML: {' '.join(str(e).split())}") from None
        if not isinstance(document, dict) or not isinstance(document.get("process_names"), list):
            raise GroupConfigError("needs a process_names list (process-exporter's config format)")
        return cls([_rule(raw, i) for i, raw in enumerate(document["process_names"])], proc=proc)

    @classmethod
    def from_file(cls, path: str, *, proc: str = "/proc") -> "GroupConfig":
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise GroupConfigError(f"cannot read it: {getattr(e, 'strerror', None) or e}") from None
        return cls.from_yaml(text, proc=proc)

    def name_of(self, p: ProcessAttributes) -> Optional[str]:
        """The group of a process: the first rule's that matches, or None."""
        for rule in self.rules:
            name = rule.name(p)
            if name is not None:
                return name
        return None

    def grouping(self) -> Grouping:
        """This config as the exporter's ``grouping``."""
        return Grouping(self.names)

    def names(self, rows: np.ndarray, paths: Mapping[int, str]) -> List[Optional[str]]:
        """The group of each process row (``ac_tgid``, ``ac_comm``, ``ac_uid``, ``cgroup_id``)."""
        out: List[Optional[str]] = []
        for tgid, comm, uid, cgroup_id in zip(rows["ac_tgid"].tolist(), rows["ac_comm"].tolist(),
                                              rows["ac_uid"].tolist(), rows["cgroup_id"].tolist()):
            key = (tgid, comm)
            if key not in self._names:
                if len(self._names) >= _REMEMBERED:
                    self._names.clear()
                self._names[key] = self.name_of(self._attributes(tgid, comm, uid, paths.get(cgroup_id, "")))
            out.append(self._names[key])
        return out

    def _attributes(self, tgid: int, comm: bytes, uid: int, cgroup: str) -> ProcessAttributes:
        try:
            with open(f"{self.proc}/{tgid}/cmdline", "rb") as f:
                raw = f.read()
        except OSError:     # exited (or a kernel thread's empty cmdline): comm alone
            raw = b""
        cmdline = tuple(a.decode("utf-8", "backslashreplace") for a in raw.rstrip(b"\0").split(b"\0")) if raw else ()
        return ProcessAttributes(command_label(comm), cmdline, self._username(uid), tgid, cgroup)

    def _username(self, uid: int) -> str:
        if uid not in self._users:
            try:
                self._users[uid] = pwd.getpwuid(uid).pw_name
            except KeyError:
                self._users[uid] = str(uid)
        return self._users[uid]


def load_group_config(path: str) -> Grouping:
    """``--config FILE`` as the exporter's grouping (GroupConfigError says what is wrong)."""
    return GroupConfig.from_file(path).grouping()

