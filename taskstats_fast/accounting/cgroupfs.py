"""The cgroup v2 hierarchy and pressure-stall files, read once per look.

Owns where cgroup v2 is mounted (found in ``/proc/self/mountinfo`` by file-system type, never
assumed: hybrid hosts mount it at ``/sys/fs/cgroup/unified``), the walk that lists every thread
with its cgroup, and the PSI ``total=`` counters (system and per cgroup).

One look reads, per cgroup directory, ``cgroup.threads`` (every thread id in it: one read per
cgroup instead of one ``/proc/PID/cgroup`` read per task) and its ``{cpu,io,memory,irq}.pressure``;
the thread ids of all cgroups are parsed in one numpy call.  After the look's queries,
``read_usage`` reads each cgroup's ``cpu.stat`` ``usage_usec``: the exact CPU of every task that
ran in it or below it (the reconciliation's reference, see reconcile.py).  A cgroup's id is its
directory's inode number, the id BPF tools and ``name_to_handle_at`` use.  Kernel threads sit in
the root.  ``OpenFiles`` keeps the files a look reads open between looks and reads them again
from offset 0 (the kernel regenerates a seq_file read from the start), so a look costs reads,
not opens and closes.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from .. import _native, layout
from .interval import PSI_DTYPE, PSI_RESOURCES, psi_words

__all__ = ["find_cgroup2", "CgroupLook", "OpenFiles", "KeptWalk", "look", "read_pressure_totals",
           "SYSTEM_PRESSURE_DIR", "ROOT_CGROUP_INO"]

MOUNTINFO = "/proc/self/mountinfo"
SYSTEM_PRESSURE_DIR = "/proc/pressure"
#: The inode of the hierarchy's true root (``cgroup_ino``).  Its pressure files show the kernel's
#: ``psi_system``, what /proc/pressure shows (kernel/cgroup/cgroup.c: cgroup_psi), so a look
#: reads that once and gives the root its figures; a cgroup namespace's root has another inode
#: and its own files.
ROOT_CGROUP_INO = 1
_READ_CHUNK = 1 << 16


def _unescape(path: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (``\\040``)."""
    if "\\" not in path:
        return path
    return path.encode().decode("unicode_escape").encode("latin-1").decode("utf-8", "replace")


def find_cgroup2(mountinfo: str = MOUNTINFO) -> Optional[str]:
    """Where the cgroup v2 hierarchy is mounted, or None (no cgroup v2 on this host, or not
    visible in this mount namespace).  Prefers a mount of the hierarchy's root (``/``)."""
    try:
        with open(mountinfo, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    found: List[Tuple[bool, str]] = []
    for line in lines:
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fstype = right.split(" ", 1)[0]
        if fstype != "cgroup2":
            continue
        fields = left.split(" ")
        if len(fields) < 5:
            continue
        found.append((fields[3] != "/", _unescape(fields[4])))
    if not found:
        return None
    return sorted(found)[0][1]


def _read(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks: List[bytes] = []
        while True:
            chunk = os.read(fd, _READ_CHUNK)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    finally:
        os.close(fd)


class OpenFiles:
    """Files read at every look, kept open and read again with ``pread`` from offset 0.

    At most ``limit`` files stay open (a host with thousands of cgroups must not run this
    process out of descriptors); the others are opened and closed per read.  A kept file that
    fails (its cgroup was removed: ENODEV; or the path now names a new cgroup) is closed and
    opened again once, so the error a caller sees is the one a fresh open gives."""

    def __init__(self, limit: int = 256):
        self.limit = int(limit)
        self._fds: Dict[str, int] = {}
        self._used: set = set()
        self._pinned: frozenset = frozenset()
        #: counts the closes of pinned files: descriptors handed out (``fd``) are valid while
        #: it stays the same
        self.generation = 0
        #: the last walk, kept to be read again in one C call (``look``; None: walk)
        self.walk: Optional["KeptWalk"] = None

    def read(self, path: str, *, one_piece: bool = False) -> bytes:
        """The whole file.  ``one_piece``: the kernel makes it in one piece (a pressure file,
        cpu.stat, a sysctl: one seq_file record, which a read returns whole when it fits), so a
        read shorter than asked for is all of it and the read that would return nothing is
        skipped; never for a file of many records such as cgroup.threads."""
        self._used.add(path)
        fd = self._fds.get(path)
        if fd is not None:
            try:
                return _pread_all(fd, one_piece)
            except OSError:
                self._forget(path)
        if len(self._fds) >= self.limit:
            return _read(path)
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            data = _pread_all(fd, one_piece)
        except BaseException:
            os.close(fd)
            raise
        self._fds[path] = fd
        return data

    def fd(self, path: str, *, directory: bool = False) -> Optional[int]:
        """The kept descriptor of ``path`` (opened now if need be), None when no more may be
        kept open; an open that fails raises.  Pin it (``pin``) while something reads it."""
        fd = self._fds.get(path)
        if fd is not None:
            return fd
        if len(self._fds) >= self.limit:
            return None
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | (os.O_DIRECTORY if directory else 0))
        self._fds[path] = fd
        return fd

    def pin(self, paths: frozenset) -> None:
        """Keep ``paths`` open through sweeps (read by descriptor, not through ``read``)."""
        self._pinned = paths

    def sweep(self) -> None:
        """Close the files not read since the last sweep (their cgroups are gone)."""
        pinned = self._pinned
        for path in [p for p in self._fds if p not in self._used and p not in pinned]:
            self._forget(path)
        self._used = set()

    @property
    def kept(self) -> List[str]:
        """The paths of the files held open now."""
        return list(self._fds)

    def _forget(self, path: str) -> None:
        fd = self._fds.pop(path, None)
        if fd is not None:
            if path in self._pinned:
                self.generation += 1
            os.close(fd)

    def close(self) -> None:
        for path in list(self._fds):
            self._forget(path)
        self.walk = None


def _pread_all(fd: int, one_piece: bool = False) -> bytes:
    # until pread returns nothing: a short read is not the end of a kernel file (cgroup.threads
    # is a seq_file, read a buffer at a time: stopping at the first short read lost every thread
    # past its first page), unless the file is made in one piece (OpenFiles.read)
    chunk = os.pread(fd, _READ_CHUNK, 0)
    if not chunk or (one_piece and len(chunk) < _READ_CHUNK):
        return chunk
    chunks = [chunk]
    offset = len(chunk)
    while True:
        chunk = os.pread(fd, _READ_CHUNK, offset)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        offset += len(chunk)


def _totals(text: bytes) -> Tuple[int, int]:
    """(some, full) ``total=`` µs of one pressure file (full is 0 where the kernel has none)."""
    some = full = 0
    for line in text.splitlines():
        at = line.rfind(b"total=")
        if at < 0:
            continue
        value = int(line[at + 6:])
        if line.startswith(b"some"):
            some = value
        elif line.startswith(b"full"):
            full = value
    return some, full


def _read_one_piece(path: str, files: Optional[OpenFiles]) -> bytes:
    """A file the kernel makes in one piece (``OpenFiles.read``), through ``files`` if given."""
    return _read(path) if files is None else files.read(path, one_piece=True)


def read_pressure_totals(directory: str, out: np.void, resources: Optional[List[str]] = None,
                         suffix: str = ".pressure", files: Optional[OpenFiles] = None) -> None:
    """Fill ``out`` (a PSI_DTYPE row) with the ``total=`` counters of ``directory``'s pressure
    files; ``resources`` collects the names of the files that exist and read."""
    words: List[int] = []
    found = _pressure_words(directory, PSI_RESOURCES, words, suffix, files)
    for resource, some, full in zip(PSI_RESOURCES, words[::2], words[1::2]):
        if resource in found:
            out[f"{resource}_some_us"] = some
            out[f"{resource}_full_us"] = full
    if resources is not None:
        resources.extend(found)


def _pressure_words(directory: str, resources: Tuple[str, ...], words: List[int], suffix: str,
                    files: Optional[OpenFiles]) -> List[str]:
    """Append (some, full) of each of ``resources`` to ``words`` (0, 0 where its file is absent
    or unreadable); returns the resources whose files read."""
    found: List[str] = []
    for resource in resources:
        try:
            path = f"{directory}/{resource}{suffix}"
            some, full = _totals(_read_one_piece(path, files))
        except OSError:   # absent (no irq time accounting), PSI off, or the cgroup went away
            words += (0, 0)
            continue
        words += (some, full)
        found.append(resource)
    return found


@dataclass
class CgroupLook:
    """What one walk of the hierarchy saw: every thread with its cgroup, and pressure totals.

    ``tids`` are sorted and unique (a thread that moved during the walk keeps the cgroup read
    last); ``tid_cgroup[i]`` is the cgroup id of ``tids[i]``.  ``psi`` holds per-cgroup
    **totals** (not deltas), sorted by cgroup id; ``system_psi`` the /proc/pressure totals.
    """
    time_ns: int
    root: str                                   # mount point ("" when the host has no cgroup v2)
    paths: Dict[int, str] = field(default_factory=dict)
    tids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint32))
    tid_cgroup: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    psi: np.ndarray = field(default_factory=lambda: layout.zeros_records(0, PSI_DTYPE))
    system_psi: np.void = field(default_factory=lambda: layout.zeros_records(1, PSI_DTYPE)[0])
    resources: Tuple[str, ...] = ()
    #: the parent of each cgroup id (the root has none)
    parent_of: Dict[int, int] = field(default_factory=dict)
    #: cpu.stat usage_usec of each cgroup, read by ``read_usage`` (absent: not read, or gone)
    usage_us: Dict[int, int] = field(default_factory=dict)
    #: the walk whose kept files this look read (its cpu.stat too), if any
    kept: Optional["KeptWalk"] = field(default=None, repr=False, compare=False)

    def read_usage(self, files: Optional[OpenFiles] = None) -> None:
        """Read every cgroup's cpu.stat ``usage_usec`` (its tasks' and its descendants')."""
        got = self.kept.usage() if self.kept is not None and files is not None else None
        if got is not None:
            self.usage_us.update(zip(got[0].tolist(), got[1].tolist()))
            return
        base = self.root.rstrip("/")
        for ino, rel in self.paths.items():
            path = f"{base}{'' if rel == '/' else rel}/cpu.stat"
            try:
                text = _read_one_piece(path, files)
            except OSError:         # removed since the walk
                continue
            if text.startswith(b"usage_usec "):
                self.usage_us[ino] = int(text[11:text.index(b"\n")])

    def cgroup_of(self, tids: np.ndarray) -> np.ndarray:
        """Cgroup id of each of ``tids`` at this look (0 where it was not listed)."""
        return lookup(self.tids, self.tid_cgroup, tids)


def lookup(keys: np.ndarray, values: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """``values[i]`` for each wanted key equal to sorted ``keys[i]``, else 0."""
    out = np.zeros(len(wanted), values.dtype)
    if len(keys) == 0 or len(wanted) == 0:
        return out
    at = np.searchsorted(keys, wanted)
    at[at == len(keys)] = 0
    hit = keys[at] == wanted
    out[hit] = values[at[hit]]
    return out


def look(root: Optional[str], *, pressure: bool = True,
         files: Optional[OpenFiles] = None) -> CgroupLook:
    """Walk the hierarchy at ``root`` (None: no cgroup v2, only system pressure is read);
    ``files`` keeps what it reads open for the next look, and the walk itself (``KeptWalk``):
    while no cgroup directory lists other child directories than the walk saw, a look reads the
    same files again in one C call instead of walking."""
    now = time.time_ns()
    kept = files.walk if files is not None else None
    if root and files is not None and kept is not None and kept.fits(root, pressure, files):
        again = kept.read(now)
        if again is not None:
            return again
    listings: Dict[int, bytes] = {}
    result = _walk(root, pressure, files, now, listings)
    if files is not None and root:
        files.walk = result.kept = KeptWalk.of(result, listings, pressure, files)
    return result


def _walk(root: Optional[str], pressure: bool, files: Optional[OpenFiles], now: int,
          listings: Dict[int, bytes]) -> CgroupLook:
    """``look`` by walking: each cgroup's child directories go to ``listings`` (KeptWalk's
    packing), by cgroup id."""
    result = CgroupLook(now, root or "")
    system_resources: List[str] = []
    read = _read if files is None else files.read
    if pressure:
        read_pressure_totals(SYSTEM_PRESSURE_DIR, result.system_psi, system_resources, suffix="",
                             files=files)
    result.resources = tuple(system_resources)
    if not root:
        return result
    ids: List[int] = []
    blobs: List[bytes] = []
    psi_values: List[int] = []   # per cgroup: its id, then (some, full) per resource
    # a cgroup has the pressure files the system has (both need the same kernel options), so
    # a resource /proc/pressure lacks (irq, without irq time accounting) is not tried per cgroup
    cgroup_resources = tuple(r for r in PSI_RESOURCES if r in system_resources)
    stack: List[Tuple[str, str, int, int]] = [(root, "/", os.stat(root).st_ino, 0)]
    while stack:
        directory, rel, ino, parent = stack.pop()
        try:
            blob = read(directory + "/cgroup.threads")
            children = [e for e in os.scandir(directory) if e.is_dir(follow_symlinks=False)]
        except OSError:        # removed while we walked (ENOENT/ENODEV): it had no threads
            continue
        ids.append(ino)
        blobs.append(blob)
        result.paths[ino] = rel
        listings[ino] = b"".join(e.inode().to_bytes(8, sys.byteorder) + os.fsencode(e.name) + b"\0"
                                 for e in children)
        if parent:
            result.parent_of[ino] = parent
        if pressure:
            psi_values.append(ino)
            if ino == ROOT_CGROUP_INO:
                for resource in cgroup_resources:
                    psi_values += (int(result.system_psi[f"{resource}_some_us"]),
                                  int(result.system_psi[f"{resource}_full_us"]))
            else:
                _pressure_words(directory, cgroup_resources, psi_values, ".pressure", files)
        base = "" if rel == "/" else rel
        stack.extend((e.path, f"{base}/{e.name}", e.inode(), ino) for e in children)
    counts = np.array([b.count(b"\n") for b in blobs], np.int64)
    tids = np.fromstring(b"".join(blobs), dtype=np.int64, sep="\n") if counts.sum() else \
        np.zeros(0, np.int64)
    cgroup_of_tid = np.repeat(np.array(ids, np.uint64), counts[:len(ids)])
    if len(tids) != len(cgroup_of_tid):     # a file without a final newline: count by split
        counts = np.array([len(b.split()) for b in blobs], np.int64)
        cgroup_of_tid = np.repeat(np.array(ids, np.uint64), counts)
    # sort by tid; a thread listed twice (moved during the walk) keeps its later cgroup
    order = np.argsort(tids[::-1], kind="stable")
    tids_sorted = tids[::-1][order]
    cg_sorted = cgroup_of_tid[::-1][order]
    keep = np.ones(len(tids_sorted), bool)
    keep[1:] = tids_sorted[1:] != tids_sorted[:-1]
    result.tids = tids_sorted[keep].astype(np.uint32)
    result.tid_cgroup = cg_sorted[keep]
    if psi_values:
        width = 1 + 2 * len(cgroup_resources)
        got = np.array(psi_values, np.uint64).reshape(len(ids), width)
        rows = layout.zeros_records(len(ids), PSI_DTYPE)
        words = psi_words(rows)
        words[:, 0] = got[:, 0]
        for i, resource in enumerate(cgroup_resources):      # PSI_DTYPE's columns of each
            at = 1 + 2 * PSI_RESOURCES.index(resource)
            words[:, at:at + 2] = got[:, 1 + 2 * i:3 + 2 * i]
        result.psi = layout.take_records(rows, np.argsort(got[:, 0]))
    return result


class KeptWalk:
    """The cgroups one walk found, with every file a look reads held open in ``OpenFiles``, read
    again per look in one C call (``_native.CgroupFiles``): each cgroup's ``cgroup.threads`` and
    pressure files, /proc/pressure's, and after the queries each ``cpu.stat``.

    Why a look need not walk: the walk's result (which cgroups there are, their paths and
    parents) follows from each directory's child directories, by inode and name, and nothing
    else.  The C call lists every kept directory again and compares its child directories with
    what the walk saw: while all are the same (a new cgroup changes its parent's listing; a
    removed or renamed one too, and fails its own reads), the walk would find the same tree.
    When one differs or a file fails, ``look`` walks again and keeps the new walk.  The rows are
    in cgroup id order, so the pressure rows come out sorted; a thread listed twice keeps the
    cgroup read last, as in the walk."""

    def __init__(self, result: CgroupLook, pressure: bool, files: OpenFiles, native,
                 paths: frozenset):
        self.root, self.pressure, self._files = result.root, pressure, files
        self.paths, self.parent_of, self.resources = result.paths, result.parent_of, result.resources
        self._native = native
        self._generation = files.generation
        # the true root's row, which takes /proc/pressure's figures (row 0) instead of reading
        ids = native.ids.tolist()
        self._system_root_row = ids.index(ROOT_CGROUP_INO) if pressure and ROOT_CGROUP_INO in ids else None
        files.pin(paths)

    @classmethod
    def of(cls, result: CgroupLook, listings: Dict[int, bytes], pressure: bool,
           files: OpenFiles) -> Optional["KeptWalk"]:
        """The walk ``result`` kept, or None when its files cannot all be kept open."""
        base = result.root.rstrip("/")
        cgroups = sorted(result.paths)
        resources = result.resources if pressure else ()
        words = [1 + 2 * PSI_RESOURCES.index(r) for r in resources]
        threads, dirs, psi, usage, used = [-1], [-1], [], [-1], set()

        def fd(path: str, *, directory: bool = False, optional: bool = False) -> int:
            try:
                got = files.fd(path, directory=directory)
            except OSError:
                if not optional:
                    raise
                return -1
            if got is None:
                raise OSError(f"{path}: no more files may be kept open")
            used.add(path)
            return got
        try:
            psi.append([fd(f"{SYSTEM_PRESSURE_DIR}/{r}", optional=True) for r in resources])
            for ino in cgroups:
                rel = result.paths[ino]
                directory = f"{base}{'' if rel == '/' else rel}"
                threads.append(fd(directory + "/cgroup.threads"))
                dirs.append(fd(directory, directory=True))
                psi.append([-1] * len(resources) if ino == ROOT_CGROUP_INO else   # /proc/pressure's
                           [fd(f"{directory}/{r}.pressure", optional=True) for r in resources])
                usage.append(fd(directory + "/cpu.stat", optional=True))
        except OSError:             # over the limit, or the hierarchy moved since the walk
            return None
        native = _native.CgroupFiles(
            threads, dirs, [0] + cgroups, np.array(psi, np.int32).reshape(len(cgroups) + 1, -1),
            words, len(PSI_DTYPE.names or ()), b"".join(listings[c] for c in cgroups), usage,
            len(result.tids))
        return cls(result, pressure, files, native, frozenset(used))

    def fits(self, root: str, pressure: bool, files: OpenFiles) -> bool:
        """Whether a look of ``root`` can read this walk's files again now."""
        return (root == self.root and pressure == self.pressure and files is self._files and
                files.generation == self._generation)

    def read(self, now: int) -> Optional[CgroupLook]:
        """The look, or None when the hierarchy is not what the walk saw (walk again)."""
        psi = layout.zeros_records(len(self._native.ids), PSI_DTYPE) if self.pressure else None
        got = self._native.read(None if psi is None else psi.view(np.uint64))
        if got is None:
            return None
        result = CgroupLook(now, self.root, self.paths, got[0], got[1],
                            resources=self.resources, parent_of=self.parent_of)
        if psi is not None:
            if self._system_root_row is not None:
                words = psi_words(psi)
                words[self._system_root_row, 1:] = words[0, 1:]
            result.system_psi, result.psi = psi[0], psi[1:]
        result.kept = self
        return result

    def usage(self) -> Optional[Tuple[np.ndarray, np.ndarray]]:
        """(cgroup ids, cpu.stat usage_usec) of the cgroups whose cpu.stat read, or None when
        the files are no longer the walk's."""
        if self._files.generation != self._generation:
            return None
        ids, usage = self._native.usage()
        keep = ids != 0                    # the system row has no cpu.stat
        return ids[keep], usage[keep]
