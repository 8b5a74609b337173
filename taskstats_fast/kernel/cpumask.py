"""CPU lists: the ``"0-3,8,10-11"`` strings TASKSTATS listeners register with.

This module owns parsing, formatting and validating CPU lists, reading the machine's possible and
online CPUs from sysfs, the kernel's length limit for a registration string, and splitting a CPU
set into contiguous shards.  Pure Python: it never opens a socket.

What a user gives (a string, CPU numbers, nothing) is resolved once into a ``CpuSet`` (sorted,
validated); code after that works on CPU numbers, and text is made again only for the kernel
(``CpuSet.wire()``) and for people (``str()``).

    >>> parse("0-3,8,10-11")
    (0, 1, 2, 3, 8, 10, 11)
    >>> format([0, 1, 2, 3, 8, 10, 11])
    '0-3,8,10-11'
    >>> split(range(8), 3)
    [(0, 1, 2), (3, 4, 5), (6, 7)]

Errors are ``taskstats_fast.errors.CpumaskError`` (a ``ValueError``) naming the bad token and its
character position in the string.
"""

from __future__ import annotations

import re
from typing import Iterable, List, Optional, Set, Tuple, Union

from ..errors import CpumaskError

__all__ = ["CpuSet", "parse", "format", "possible", "online", "validate", "check_length",
           "max_length", "split", "SYSFS_CPU", "CPU_NUMBER_LIMIT"]

#: Where the kernel publishes its CPU sets.
SYSFS_CPU = "/sys/devices/system/cpu"

# One region of the kernel's cpulist syntax (lib/bitmap-str.c, bitmap_parselist): "N", "N-M", or
# "N-M:used/group" (in every group of `group` CPUs of the range, the first `used`).
_REGION = re.compile(r"([0-9]+)(?:-([0-9]+)(?::([0-9]+)/([0-9]+))?)?")

#: No Linux build numbers a CPU this high (every architecture's NR_CPUS is far below it).  A
#: range is checked against it, or against the possible CPUs, before it is expanded: a typo like
#: "0-99999999999" is one error at once, not a list that grows until memory runs out.
CPU_NUMBER_LIMIT = 1 << 16


def _error(message: str, token: Optional[str] = None, position: Optional[int] = None) -> CpumaskError:
    err = CpumaskError(message)
    # what to fix and where (CpumaskError in errors.py declares no such fields)
    err.token = token  # type: ignore[attr-defined]
    err.position = position  # type: ignore[attr-defined]
    return err


def parse(text: str) -> Tuple[int, ...]:
    """The CPUs a cpulist string names, sorted and without duplicates.

    Accepts what the kernel's ``cpulist_parse`` accepts for real lists: comma-separated ``N``,
    ``N-M`` and ``N-M:used/group`` regions; surrounding whitespace (a sysfs file's newline) is
    ignored.  Stricter than the kernel where the kernel is lenient by accident: empty entries
    (``"0,,1"``) and whitespace inside the list are errors, and so is an empty list.
    """
    cpus: Set[int] = set()
    for _, _, region in _regions(text, None):
        cpus.update(region)
    return tuple(sorted(cpus))


def _regions(text: str, past: Optional[int]) -> List[Tuple[str, int, List[int]]]:
    """(token, character position, CPUs) for each region of a cpulist string.

    ``past``: a CPU number the caller refuses (one past the highest possible CPU); a region is
    expanded no further than it, so its error comes at once.  None: a region reaching
    ``CPU_NUMBER_LIMIT`` is an error."""
    if not isinstance(text, str):
        raise TypeError(f"a CPU list is a str like '0-3,8', not {type(text).__name__}")
    body = text.strip()
    if not body:
        raise _error("empty CPU list: name at least one CPU, e.g. '0' or '0-3,8'", "", 0)
    out = []
    pos = len(text) - len(text.lstrip())
    for token in body.split(","):
        where = f"{token!r} at position {pos} of {text!r}"
        if not token:
            raise _error(f"empty entry at position {pos} of {text!r} (two commas in a row, or a "
                         "comma at an end): remove it", token, pos)
        m = _REGION.fullmatch(token)
        if not m:
            raise _error(f"{where} is not a CPU number or range: write N, N-M or N-M:used/group "
                         "with non-negative decimal numbers", token, pos)
        if max(len(g) for g in m.groups() if g is not None) > 18:
            raise _error(f"{where} has a number of more than 18 digits: no CPU is numbered that "
                         "high", token, pos)
        first = int(m.group(1))
        last = int(m.group(2)) if m.group(2) is not None else first
        if last < first:
            raise _error(f"range {where} is reversed (start > end): write '{last}-{first}'", token, pos)
        used = int(m.group(3)) if m.group(3) is not None else 1
        group = int(m.group(4)) if m.group(4) is not None else 1
        if group == 0 or used == 0 or used > group:
            raise _error(f"{where} has a bad ':used/group' part: need 0 < used <= group", token, pos)
        highest = min(first + (last - first) // group * group + used - 1, last)
        if past is None and highest >= CPU_NUMBER_LIMIT:
            raise _error(f"{where} names CPU {highest:,}, and no Linux machine has a CPU numbered "
                         f"{CPU_NUMBER_LIMIT:,} or above: check the number", token, pos)
        cpus = _expand(first, min(last, highest if past is None else past - 1), used, group)
        if past is not None and highest >= past:   # the first CPU at or past `past`, not the rest
            base = first + max(0, past - first) // group * group
            cpus.append(max(past, base) if max(past, base) < base + used else base + group)
        out.append((token, pos, cpus))
        pos += len(token) + 1
    return out


def _expand(first: int, last: int, used: int, group: int) -> List[int]:
    """The CPUs of region ``first-last:used/group`` (none when ``last < first``)."""
    return [c for base in range(first, last + 1, group)
            for c in range(base, min(base + used, last + 1))]


def format(cpus: Iterable[int]) -> str:  # noqa: A001 - mirrors parse(); use as cpumask.format
    """The shortest cpulist string for ``cpus``: runs of two or more become ``N-M`` (never longer
    than ``N,M``, and what the kernel's own ``%*pbl`` prints), duplicates collapse, order does
    not matter.  An empty set gives ``""``."""
    values = sorted(set(_as_cpu(c) for c in cpus))
    parts: List[str] = []
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[j] + 1:
            j += 1
        parts.append(str(values[i]) if i == j else f"{values[i]}-{values[j]}")
        i = j + 1
    return ",".join(parts)


def _as_cpu(c) -> int:
    if isinstance(c, bool) or not isinstance(c, int) and not hasattr(c, "__index__"):
        raise _error(f"CPU numbers are non-negative ints, not {c!r}", repr(c))
    value = c.__index__()
    if value < 0:
        raise _error(f"CPU numbers are non-negative, not {value}", str(value))
    return value


def _read_sysfs(name: str) -> Tuple[int, ...]:
    path = f"{SYSFS_CPU}/{name}"
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise CpumaskError(f"cannot read {path} ({e.strerror}): is sysfs mounted?") from e
    return parse(text)


def possible() -> Tuple[int, ...]:
    """CPUs this kernel could ever bring online (``/sys/devices/system/cpu/possible``); a listener
    registered for all of them also covers CPUs hot-plugged later."""
    return _read_sysfs("possible")


def online() -> Tuple[int, ...]:
    """CPUs online right now (``/sys/devices/system/cpu/online``)."""
    return _read_sysfs("online")


def validate(cpus: Iterable[int], possible_cpus: Iterable[int]) -> Tuple[int, ...]:
    """``cpus`` sorted and deduplicated, after checking that there is at least one and that each
    is a possible CPU (the kernel refuses a registration naming any other with EINVAL)."""
    allowed = set(possible_cpus)
    found: Set[int] = set()
    for c in cpus:   # one by one: a huge iterable (range(10**12)) fails at its first bad CPU
        value = _as_cpu(c)
        if value not in allowed:
            raise _error(f"CPU {value} is not possible on this machine (possible CPUs: "
                         f"{format(allowed)}); the kernel would refuse it", str(value))
        found.add(value)
    if not found:
        raise _error("empty CPU set: name at least one CPU", "", 0)
    return tuple(sorted(found))


def max_length(n_possible: int) -> int:
    """Longest registration string (without its NUL) the kernel is sure to accept.

    The kernel refuses a cpumask attribute longer than ``100 + 6 * NR_CPUS`` bytes (-E2BIG), the
    attribute counting its terminating NUL.  NR_CPUS is a build-time constant userspace cannot
    read; it is at least the number of possible CPUs, so ``100 + 6 * possible - 1`` is a limit
    that never refuses a string the kernel would take on any build.  Strings from ``format`` are
    far below it: every CPU number up to 99,999 takes at most 6 bytes with its comma.
    """
    return 100 + 6 * n_possible - 1


def check_length(text: str, n_possible: int) -> str:
    """``text`` if the kernel is sure to accept its length, else a CpumaskError saying how much
    too long it is (see ``max_length``)."""
    limit = max_length(n_possible)
    size = len(text.encode())
    if size > limit:
        raise _error(f"CPU list of {size} bytes is longer than the {limit} bytes the kernel is "
                     "sure to accept (100 + 6 x possible CPUs, counting the NUL)", text, 0)
    return text


class CpuSet(Tuple[int, ...]):
    """A resolved CPU set: sorted, without duplicates, every CPU possible on this machine, at least
    one.  A tuple of ints (so ``listener.cpus == (0, 1)`` holds); ``str()`` is its cpulist and
    ``wire()`` the registration string.  Build it with ``CpuSet.resolve``, once, from whatever the
    user gave; everything after works on CPU numbers."""

    __slots__ = ()

    @classmethod
    def resolve(cls, cpus: Union[None, str, Iterable[int], "CpuSet"]) -> "CpuSet":
        """``cpus`` (a cpulist string, CPU numbers, or None for every possible CPU) checked against
        the possible CPUs (the kernel refuses a registration naming any other with EINVAL).  A
        string's errors name the offending token and its position."""
        if isinstance(cpus, CpuSet):
            return cpus
        allowed = possible()
        if cpus is None:
            return cls._trusted(validate(allowed, allowed))
        if isinstance(cpus, str):
            allowed_set = set(allowed)
            found: Set[int] = set()
            for token, pos, region in _regions(cpus, max(allowed) + 1):
                bad = [c for c in region if c not in allowed_set]
                if bad:
                    raise _error(f"CPU {bad[0]} (in {token!r} at position {pos} of {cpus!r}) is "
                                 f"not possible on this machine (possible CPUs: {format(allowed)}); "
                                 "the kernel would refuse it", token, pos)
                found.update(region)
            cpus = found
        resolved = cls._trusted(validate(cpus, allowed))
        check_length(resolved.wire(), len(allowed))
        return resolved

    @classmethod
    def _trusted(cls, values: Tuple[int, ...]) -> "CpuSet":
        return tuple.__new__(cls, values)

    def wire(self) -> str:
        """The registration string: the shortest cpulist form, whose length ``resolve`` checked
        against what the kernel accepts."""
        return format(self)

    def split(self, k: int) -> List["CpuSet"]:
        """This set cut into ``k`` contiguous, balanced shards (see ``split``)."""
        return [CpuSet._trusted(part) for part in split(self, k)]

    def __str__(self) -> str:
        return format(self)

    def __repr__(self) -> str:
        return f"CpuSet({format(self)!r})"


def split(cpus: Iterable[int], k: int) -> List[Tuple[int, ...]]:
    """``cpus`` (sorted) cut into ``k`` contiguous shards whose sizes differ by at most one, the
    larger ones first: ``split(range(8), 3) == [(0, 1, 2), (3, 4, 5), (6, 7)]``."""
    values = sorted(set(_as_cpu(c) for c in cpus))
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"the number of shards is an int, not {type(k).__name__}")
    if not 1 <= k <= len(values):
        raise _error(f"cannot split {len(values)} CPU(s) ({format(values) or 'none'}) into {k} "
                     f"shards: choose between 1 and {len(values)}", str(k))
    size, extra = divmod(len(values), k)
    out, at = [], 0
    for i in range(k):
        n = size + (1 if i < extra else 0)
        out.append(tuple(values[at:at + n]))
        at += n
    return out
