"""The C boundary: the only module that imports the cffi extension and touches ``ffi``/``lib``.

It owns, in one place:
- parsing and decoding (``parse``, ``decode``) with the copy plan built once from ``layout``;
- request builders that return ``bytes`` (GET by pid/tgid, (de)registration, cgroupstats,
  family lookup) and the parsers of the replies that are not records;
- ``Drain``: the state of ``tsf_drain`` (poll + recvmmsg + decode) over one or more sockets:
  its arena, notes, arguments, result and per-socket counters.  Queries (``kernel.connection``)
  and the exit stream (``listener``) both use it;
- the kernel numbers the Python side needs (socket options, request attributes), read from the
  C headers so they are written once.

Each wrapper checks its arguments, makes the C call and turns a negative code into an exception
whose text comes from the C side (``tsf_strerror``).  ``ffi``, ``lib`` and ``PLAN`` stay exported
for tests and C harnesses only; package code calls the functions below.
"""

from __future__ import annotations

import enum
import functools
import os
import threading
from typing import Any, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from . import layout
from .errors import DecodeError

try:
    from ._tsf_cffi import ffi, lib
except ImportError as e:  # say what happened and what to do, the way numpy does
    _package = os.path.dirname(os.path.abspath(__file__))
    _in_source_tree = os.path.exists(os.path.join(_package, os.pardir, "csrc", "build_ffi.py"))
    raise ImportError(
        f"taskstats_fast's C extension (_tsf_cffi) could not be imported from {_package} ({e}). "
        + ("That is a source tree without a built extension: Python started in the repository root "
           "imports it instead of an installed copy. Build it in place with `pip install -e .` "
           "(or `make install`), or start Python outside the repository."
           if _in_source_tree else
           "The installation is incomplete: reinstall taskstats_fast (it builds with a C compiler and "
           "Python's headers; see the README, section Install).")) from e

__all__ = ["NOTE_DTYPE", "NOTE_ACK", "NOTE_ERROR", "NOTE_DONE", "NOTE_BAD", "ErrorCode", "Parsed",
           "parse", "decode", "strerror", "output_array", "build_get", "build_cpumask",
           "build_cgroupstats", "build_getfamily", "parse_family", "parse_cgroupstats", "Drain",
           "read_drops", "rmem_alloc", "GET_REQUEST_SIZE", "ATTR_PID", "ATTR_TGID",
           "NETLINK_GENERIC", "SO_RCVBUFFORCE", "Query", "QueryClaims", "Join", "JoinResult", "Sightings",
           "CgroupFiles", "GroupSums", "GroupCount", "PLAN", "ffi", "lib"]

#: One note from the parser: a kernel ACK/error, NLMSG_DONE, or a malformed part of the input.
NOTE_DTYPE = np.dtype([("kind", "<i4"), ("code", "<i4"), ("offset", "<u4"), ("seq", "<u4")])
NOTE_ACK, NOTE_ERROR, NOTE_DONE, NOTE_BAD = (lib.TSF_NOTE_ACK, lib.TSF_NOTE_ERROR,
                                             lib.TSF_NOTE_DONE, lib.TSF_NOTE_BAD)
assert ffi.sizeof("struct tsf_note") == NOTE_DTYPE.itemsize

#: The C core's negative return codes (TSF_E_*), by name without the prefix.
ErrorCode = enum.IntEnum("ErrorCode", {name[len("TSF_E_"):]: getattr(lib, name)  # type: ignore[misc]
                                       for name in dir(lib) if name.startswith("TSF_E_")})

#: Kernel numbers, written once in csrc/tsf_abi.h.
NETLINK_GENERIC = lib.TSF_NETLINK_GENERIC
SO_RCVBUFFORCE = lib.TSF_SO_RCVBUFFORCE
ATTR_PID = lib.TSF_TASKSTATS_CMD_ATTR_PID
ATTR_TGID = lib.TSF_TASKSTATS_CMD_ATTR_TGID
#: Bytes of one GET-by-pid/tgid request.
GET_REQUEST_SIZE = lib.TSF_GET_REQUEST_SIZE

# Smallest bytes one record can occupy: a v4 STATS attribute inside an AGGR nest.
_MIN_RECORD_BYTES = layout.STRUCT_SIZE[layout.MIN_VERSION] + 8
# Notes are rare (errors, ACKs, faults): start small, and size exactly on the rare second pass.
_FIRST_NOTES = 1024


def strerror(code: int) -> str:
    """The C core's description of a TSF_E_* code."""
    return ffi.string(lib.tsf_strerror(code)).decode()


def _build_plan():
    plan = ffi.new("struct tsf_plan *")
    plan.record_size = layout.DTYPE.itemsize
    plan.stats_size = layout.STATS_SIZE
    plan.max_version = layout.MAX_VERSION
    segs: List[tuple] = []
    for v in range(layout.MIN_VERSION, layout.MAX_VERSION + 1):
        runs = layout.copy_segments(v)
        plan.version_size[v] = layout.STRUCT_SIZE[v]
        plan.seg_first[v] = len(segs)
        plan.seg_count[v] = len(runs)
        segs += runs
    if len(segs) > lib.TSF_MAX_SEGMENTS:
        raise RuntimeError("copy plan has more segments than the C core holds")
    plan.nseg = len(segs)
    for i, (src, dst, n) in enumerate(segs):
        plan.seg[i].src, plan.seg[i].dst, plan.seg[i].len = src, dst, n
    for name, _, _ in layout.META_FIELDS:
        setattr(plan, "off_" + name, layout.DTYPE.fields[name][1])
    rc = lib.tsf_plan_check(plan)
    if rc:
        raise RuntimeError(strerror(rc))
    return plan


#: The copy plan every parse call uses (built once at import).
PLAN = _build_plan()


class Parsed(NamedTuple):
    """What one pass over a buffer found.

    ``records`` are the decoded rows (a view into the output array); ``notes`` a NOTE_DTYPE
    array of kernel ACKs/errors, DONE markers and malformed parts, in buffer order;
    ``consumed`` how many bytes were parsed (less than the buffer only when the output array
    filled up: parse the rest into a fresh array).
    """

    records: np.ndarray
    notes: np.ndarray
    consumed: int
    messages: int

    @property
    def problems(self) -> List[DecodeError]:
        """The malformed parts of the input, as exceptions (not raised)."""
        return [_decode_error(n) for n in self.notes[self.notes["kind"] == NOTE_BAD]]

    @property
    def kernel_errors(self) -> np.ndarray:
        """NLMSG_ERROR replies with a non-zero error: fields ``code`` (errno) and ``seq``."""
        return self.notes[self.notes["kind"] == NOTE_ERROR]


def _decode_error(note) -> DecodeError:
    code, offset, seq = int(note["code"]), int(note["offset"]), int(note["seq"])
    return DecodeError(f"{strerror(code)} (at byte {offset}, message seq {seq})", code, offset, seq)


def _as_input(buf) -> "ffi.CData":
    try:
        return ffi.from_buffer("uint8_t[]", buf)
    except TypeError:
        raise TypeError("expected a bytes-like object (bytes, bytearray, memoryview or a "
                        f"C-contiguous numpy array), not {type(buf).__name__}") from None


def output_array(nbytes: int) -> np.ndarray:
    """An uninitialised DTYPE array large enough for every record ``nbytes`` of input can hold."""
    return np.empty(nbytes // _MIN_RECORD_BYTES + 1, dtype=layout.DTYPE)


def _check_out(out: np.ndarray) -> None:
    if not isinstance(out, np.ndarray) or out.dtype != layout.DTYPE:
        raise TypeError("out must be a numpy array of taskstats_fast.DTYPE")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError("out must be a writeable, C-contiguous array")


def parse(buf, *, out: Optional[np.ndarray] = None, family: int = 0, time_ns: int = 0,
          shard: int = 0) -> Parsed:
    """Decode every record in ``buf`` and report everything else it holds; never raises for
    malformed input (see ``Parsed.problems``)."""
    src = _as_input(buf)
    n = len(src)
    if out is None:
        out = output_array(n)
    else:
        _check_out(out)
    dst = ffi.from_buffer("uint8_t[]", out, require_writable=True)
    res = ffi.new("struct tsf_parse_result *")
    notes_cap = _FIRST_NOTES
    while True:
        notes = np.empty(notes_cap, dtype=NOTE_DTYPE)
        rc = lib.tsf_parse(PLAN, family, src, n, dst, len(out),
                           ffi.cast("struct tsf_note *", ffi.from_buffer(notes)), notes_cap,
                           time_ns, shard, res)
        if rc < 0:
            raise ValueError(strerror(rc))
        if res.notes <= notes_cap:
            break
        notes_cap = res.notes  # parsing is deterministic: the second pass stores them all
    return Parsed(out[:res.records], notes[:res.notes], res.consumed, res.messages)


def decode(buf, *, out: Optional[np.ndarray] = None) -> np.ndarray:
    """Decode every TASKSTATS record in ``buf`` (one or more netlink messages, as a ``recv`` or
    a capture gives them) into a DTYPE array, one row per AGGR_PID/AGGR_TGID nest, in order.

    Malformed input raises ``DecodeError`` naming the fault and its byte offset; use ``parse``
    to keep the good records and collect the problems instead.  ``out`` lets a stream reuse one
    array: the result is a view of its first rows.
    """
    got = parse(buf, out=out)
    bad = got.notes[got.notes["kind"] == NOTE_BAD]
    if len(bad):
        err = _decode_error(bad[0])
        if len(bad) > 1:
            err.args = (f"{err.args[0]}; {len(bad) - 1} more problem(s), see parse()",)
        raise err
    if got.consumed < memoryview(buf).nbytes:
        raise ValueError(f"out holds {len(out) if out is not None else 0} records, too few for "
                         f"this buffer: decoded {len(got.records)} records from the first "
                         f"{got.consumed} bytes; pass a larger out or use parse() to continue")
    return got.records


# ---- requests ----------------------------------------------------------------------------------
def _built(n: int, buf: bytearray, what: str) -> bytes:
    if n < 0:
        raise ValueError(f"building {what}: {strerror(n)}")
    return bytes(buf[:n])


def build_get(family: int, first_seq: int, attr: int, ids: np.ndarray) -> bytes:
    """GET requests for every id in ``ids`` (a uint32 array) by ``attr`` (ATTR_PID/ATTR_TGID),
    with sequence numbers ``first_seq``, ``first_seq + 1``, ...: ``GET_REQUEST_SIZE`` bytes each."""
    ids = np.ascontiguousarray(ids, dtype=np.uint32)
    n = len(ids)
    buf = bytearray(n * GET_REQUEST_SIZE)
    if not n:
        return b""
    built = lib.tsf_build_get(ffi.from_buffer(buf), len(buf), family, first_seq & 0xFFFFFFFF,
                              attr, ffi.cast("const uint32_t *", ffi.from_buffer(ids)), n, 0)
    if built != len(buf):
        raise ValueError(f"building GET requests: {strerror(built) if built < 0 else built}")
    return bytes(buf)


def build_cpumask(family: int, seq: int, register: bool, mask: str) -> bytes:
    """A REGISTER (``register``) or DEREGISTER request for a cpulist string; asks for an ACK."""
    raw = mask.encode()
    buf = bytearray(64 + len(raw))
    return _built(lib.tsf_build_cpumask(ffi.from_buffer(buf), len(buf), family, seq,
                                        1 if register else 0, raw, len(raw)),
                  buf, "the cpumask request")


def build_cgroupstats(family: int, seq: int, fd: int) -> bytes:
    """A CGROUPSTATS_CMD_GET request for the directory open as ``fd``; asks for an ACK."""
    buf = bytearray(64)
    return _built(lib.tsf_build_cgroupstats(ffi.from_buffer(buf), len(buf), family, seq, fd),
                  buf, "the cgroupstats request")


def build_getfamily(seq: int, name: str) -> bytes:
    """A CTRL_CMD_GETFAMILY request for the generic netlink family ``name``."""
    raw = name.encode()
    buf = bytearray(64 + len(raw))
    return _built(lib.tsf_build_getfamily(ffi.from_buffer(buf), len(buf), seq, raw, len(raw)),
                  buf, "the family lookup")


# ---- replies that are not records -------------------------------------------------------------
class FamilyReply(NamedTuple):
    id: int
    version: int
    maxattr: int
    error: int    #: positive errno when the kernel answered with an error, else 0


def parse_family(data: bytes) -> Optional[FamilyReply]:
    """The CTRL_CMD_NEWFAMILY reply (or the kernel's error) in ``data``; None when ``data`` holds
    neither.  Broken framing raises ``DecodeError``."""
    fam = ffi.new("struct tsf_family *")
    rc = lib.tsf_parse_family(data, len(data), fam)
    if rc == lib.TSF_E_NO_REPLY:
        return None
    if rc < 0:
        raise DecodeError(strerror(rc), rc)
    return FamilyReply(int(fam.id), int(fam.version), int(fam.maxattr), int(fam.error) if rc == 0 else 0)


def parse_cgroupstats(data: bytes, family: int) -> Tuple[Optional[Tuple[int, ...]], int]:
    """``(counts, 0)`` for a CGROUPSTATS_CMD_NEW reply in ``data`` (5 counts), ``(None, errno)``
    when the kernel refused.  No reply, or a malformed one, raises ``DecodeError``."""
    out = ffi.new("uint64_t[5]")
    err = ffi.new("int32_t *")
    rc = lib.tsf_parse_cgroupstats(data, len(data), family, out, err)
    if rc == 0:
        return None, int(err[0])
    if rc < 0:
        raise DecodeError(strerror(rc), rc)
    return tuple(int(out[i]) for i in range(5)), 0


# ---- socket facts --------------------------------------------------------------------------------
def read_drops(fd: int, last: int = 0) -> int:
    """The kernel's drop counter of socket ``fd`` (SO_MEMINFO), kept monotonic past its 32-bit wrap
    given the ``last`` value read; ``last`` itself if it cannot be read."""
    scratch = ffi.new("struct tsf_source *")
    scratch.fd = fd
    scratch.drops = last
    lib.tsf_source_read_drops(scratch)
    return int(scratch.drops)


def rmem_alloc(fd: int) -> int:
    """Bytes queued in socket ``fd``'s receive buffer (SK_MEMINFO rmem_alloc), or -1 if unknown."""
    n = lib.tsf_socket_rmem_alloc(fd)
    return int(n) if n >= 0 else -1


# ---- the drain -----------------------------------------------------------------------------------
#: recvmmsg arena defaults: 64 datagrams per call, 8 KiB each (a PID+TGID exit message is
#: 1172..1428 bytes, a query reply ~600: MSG_TRUNC cannot happen, and is counted if it does).
DRAIN_SLOT_SIZE = 8192
DRAIN_SLOTS = 64
#: Record rows tsf_drain wants free before it takes a datagram (a PID and a TGID record).
ROWS_PER_DATAGRAM = 2

_SOURCE_COUNTERS = ("datagrams", "bytes", "records", "seq_lost", "seq_backwards", "overruns",
                    "drops", "truncated", "bad", "kernel_errors", "seq_foreign", "events",
                    "held", "error", "track_seq", "fd", "shard")


class SourceCounters:
    """Live view of one socket's counters in a ``Drain`` (attributes read the C struct now)."""

    __slots__ = ("_c",)

    def __init__(self, c):
        self._c = c

    def __getattr__(self, name: str) -> int:
        if name in _SOURCE_COUNTERS:
            return int(getattr(self._c, name))
        raise AttributeError(name)

    def refresh_drops(self) -> int:
        """Read the kernel's drop counter into ``drops`` now; returns it."""
        lib.tsf_source_read_drops(self._c)
        return int(self._c.drops)

    def as_dict(self) -> dict:
        return {name: int(getattr(self._c, name)) for name in _SOURCE_COUNTERS}


class DrainResult:
    """What the last ``Drain.run`` did (a live view: it survives an exception raised right after
    the call, so a caller can account for records a signal handler interrupted)."""

    __slots__ = ("_c",)

    def __init__(self, c):
        self._c = c

    records = property(lambda self: int(self._c.records))
    #: notes produced; more than ``Drain.notes_cap`` means some were counted but not stored
    notes = property(lambda self: int(self._c.notes))
    datagrams = property(lambda self: int(self._c.datagrams))
    timed_out = property(lambda self: bool(self._c.timed_out))
    interrupted = property(lambda self: bool(self._c.interrupted))
    error = property(lambda self: int(self._c.error))
    woken = property(lambda self: bool(self._c.woken))


class Drain:
    """``tsf_drain`` over netlink sockets: one recvmmsg arena, a notes array, the C arguments and
    result, and per-socket counters (``source(i)``).

    ``fds``: the sockets, drained round-robin; ``shards``: the number stamped into each socket's
    records (default its index); ``track_seq``: per socket, whether it carries one CPU's exit
    stream (count sequence gaps); ``wake_fd``: an fd that ends a wait when readable (never read).
    ``notes``: how many notes one run stores (``ensure_notes`` grows it).
    """

    def __init__(self, family: int, fds: Sequence[int], *, shards: Optional[Sequence[int]] = None,
                 track_seq: Optional[Sequence[bool]] = None, wake_fd: Optional[int] = None,
                 notes: int = 64, slot_size: int = DRAIN_SLOT_SIZE, nslots: int = DRAIN_SLOTS):
        self._nsock = len(fds)
        self._nsrc = self._nsock + (wake_fd is not None)
        self._src = ffi.new("struct tsf_source[]", max(self._nsrc, 1))
        for i, fd in enumerate(fds):
            self._src[i].fd = fd
            self._src[i].shard = shards[i] if shards is not None else i
            self._src[i].track_seq = 1 if track_seq is not None and track_seq[i] else 0
        if wake_fd is not None:
            self._src[self._nsock].fd = wake_fd
            self._src[self._nsock].flags = lib.TSF_SOURCE_WAKE
        self.nslots = nslots
        self._arena = np.zeros(nslots * slot_size, np.uint8)
        self._args = ffi.new("struct tsf_drain_args *")
        self._args.arena = ffi.cast("uint8_t *", ffi.from_buffer(self._arena))
        self._args.slot_size = slot_size
        self._args.nslots = nslots
        self._args.family = family
        self._res = ffi.new("struct tsf_drain_result *")
        self.last = DrainResult(self._res)
        self._out: Optional[np.ndarray] = None
        self._out_ptr: Any = None   # cdata pointer into _out
        self._notes = np.zeros(0, NOTE_DTYPE)
        self.ensure_notes(notes)

    @property
    def notes_cap(self) -> int:
        return len(self._notes)

    def ensure_notes(self, n: int) -> None:
        """Room for at least ``n`` notes per run."""
        if len(self._notes) < n:
            self._notes = np.zeros(n, NOTE_DTYPE)
            self._args.notes = ffi.cast("struct tsf_note *", ffi.from_buffer(self._notes))
            self._args.notes_cap = n

    def source(self, i: int = 0) -> SourceCounters:
        """Counters of socket ``i``."""
        if not 0 <= i < self._nsock:
            raise IndexError(i)
        return SourceCounters(self._src + i)

    def refresh_drops(self) -> None:
        """Read every socket's kernel drop counter now."""
        for i in range(self._nsock):
            lib.tsf_source_read_drops(self._src + i)

    def notes(self) -> np.ndarray:
        """The notes the last run stored (a view, valid until the next run)."""
        return self._notes[:min(int(self._res.notes), len(self._notes))]

    def run(self, out: np.ndarray, start: int = 0, capacity: Optional[int] = None, *,
            timeout_ms: int = 0, min_records: int = 1, linger_ms: int = 0) -> int:
        """Receive and decode into ``out[start:start + capacity]`` (a writeable DTYPE array) until
        ``min_records`` records or notes are in (the first data waits ``linger_ms`` in the
        socket before it is received, so a burst is one drain), the space is nearly
        full (``ROWS_PER_DATAGRAM`` rows left), or ``timeout_ms`` passes (-1: no limit).  The GIL
        is released meanwhile.  Returns the records written; ``last`` says why it returned."""
        if out is not self._out:
            if out.dtype != layout.DTYPE:
                raise TypeError("out must be a numpy array of taskstats_fast.DTYPE")
            self._out_ptr = ffi.cast("uint8_t *", ffi.from_buffer(out, require_writable=True))
            self._out = out
        if capacity is None:
            capacity = len(out) - start
        if start < 0 or capacity < 0 or start + capacity > len(out):
            raise ValueError("the record space lies outside out")
        args = self._args
        args.records = self._out_ptr + start * layout.DTYPE.itemsize
        args.capacity = capacity
        args.timeout_ms = timeout_ms
        args.min_records = min_records
        args.linger_ms = linger_ms
        rc = lib.tsf_drain(PLAN, self._src, self._nsrc, args, self._res)
        if rc < 0:
            raise RuntimeError(f"tsf_drain: {strerror(rc)}")
        return rc

    @property
    def result(self) -> Any:
        """The C result struct itself (``records``, ``error``, ``woken``, ``timed_out``, ...): the
        fields without ``last``'s conversions, for a caller that reads them on every call."""
        return self._res

    def receiver(self, out: np.ndarray) -> Any:
        """A callable ``receive(start, capacity, timeout_ms, linger_ms) -> records`` that runs
        like ``run(out, start, capacity, timeout_ms=..., min_records=1, linger_ms=...)`` as one
        C call: no Python frame and no field set from Python per call (a reader that wakes every
        few milliseconds finds each of those out of the CPU's caches).  C checks the bounds; a
        negative return is a TSF_E_* code.  It keeps ``out`` (a writeable DTYPE array) alive."""
        if out.dtype != layout.DTYPE:
            raise TypeError("out must be a numpy array of taskstats_fast.DTYPE")
        ptr = ffi.from_buffer("uint8_t[]", out, require_writable=True)
        return functools.partial(lib.tsf_drain_into, PLAN, self._src, self._nsrc, self._args,
                                 self._res, ptr, len(out))

    def fresh_receiver(self) -> Tuple[Any, Any]:
        """``(rows_of, receive)`` for decoding straight into a new buffer on each call:
        ``rows = rows_of(buf)`` takes a writeable uint8 array of whole records, then
        ``receive(rows, nrecords, start, capacity, timeout_ms, linger_ms)`` runs like the
        ``receiver`` callable into it.  Drop ``rows`` before resizing or freeing ``buf``."""
        rows_of = functools.partial(ffi.from_buffer, "uint8_t[]", require_writable=True)
        return rows_of, functools.partial(lib.tsf_drain_into, PLAN, self._src, self._nsrc,
                                          self._args, self._res)


# ---- the bulk lookup loop ---------------------------------------------------------------------------
QUERY_PENDING, QUERY_FOUND, QUERY_MISSING = (lib.TSF_QUERY_PENDING, lib.TSF_QUERY_FOUND,
                                             lib.TSF_QUERY_MISSING)
QUERY_DONE, QUERY_KERNEL, QUERY_MALFORMED, QUERY_SOCKET, QUERY_INTERRUPTED, QUERY_TIMEOUT, \
    QUERY_DROPPING = (lib.TSF_QUERY_DONE, lib.TSF_QUERY_KERNEL, lib.TSF_QUERY_MALFORMED,
                      lib.TSF_QUERY_SOCKET, lib.TSF_QUERY_INTERRUPTED, lib.TSF_QUERY_TIMEOUT,
                      lib.TSF_QUERY_DROPPING)


#: Longest one tsf_query call runs before it comes back to Python (so signal handlers run), in ms.
QUERY_SLICE_MS = 200


def _check_query_out(out: np.ndarray, n: int) -> None:
    if not isinstance(out, np.ndarray) or out.dtype != layout.DTYPE or out.ndim != 1:
        raise ValueError("out must be a one-dimensional numpy array of taskstats_fast.DTYPE, not "
                         + (f"{out.ndim}-d {out.dtype}" if isinstance(out, np.ndarray)
                            else type(out).__name__))
    if len(out) < n + ROWS_PER_DATAGRAM:
        raise ValueError(f"out has {len(out)} rows: a lookup of {n} ids needs at least "
                         f"{n + ROWS_PER_DATAGRAM} (ROWS_PER_DATAGRAM spare rows for the last reply)")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError("out must be a writeable, C-contiguous array")


class QueryClaims:
    """One bulk lookup shared by several ``Query`` calls, each on its own socket and thread:
    the ids, one state byte per id, the first seq, and the rounds (``step`` ids) still
    unclaimed (``struct tsf_claims``).  Each call claims rounds in C as it goes, from the front
    or from the back (``Query(claims=..., from_back=...)``); ``stop()`` hands out nothing more."""

    def __init__(self, ids: np.ndarray, first_seq: int, step: int):
        self.ids = np.ascontiguousarray(ids, np.uint32)
        self.state = np.zeros(len(self.ids), np.uint8)
        self.first_seq = first_seq & 0xFFFFFFFF
        self.c = ffi.new("struct tsf_claims *")
        if step < 1 or lib.tsf_claims_init(self.c, len(self.ids), int(step)) < 0:
            raise ValueError(f"claims are rounds of 1 or more ids, not {step}")

    def take(self, from_back: bool = False) -> Optional[Tuple[int, int]]:
        """Claim the next round here: its ids [lo, hi), or None when none is left."""
        lo, hi = ffi.new("uint32_t *"), ffi.new("uint32_t *")
        if not lib.tsf_claims_take(self.c, int(from_back), lo, hi):
            return None
        return int(lo[0]), int(hi[0])

    def stop(self) -> None:
        lib.tsf_claims_stop(self.c)


class Query:
    """One bulk lookup (``tsf_query``) on the first socket of ``drain``, sharing its arena, notes
    and counters: ``ids`` by ``attr`` with seqs from ``first_seq``, at most ``in_flight``
    requests per send, giving up after ``timeout_ms`` without progress.  ``run()`` runs (or
    resumes) it with the GIL released and returns a QUERY_* reason; then ``records()``,
    ``state`` (QUERY_* per id), ``unordered`` and ``row_index`` say what came back.

    With ``claims`` (and ``placed``, which they require), the ids, state and first seq are the
    claims' and this call sends only the rounds it claims (from the back with ``from_back``),
    writing only those ids' state bytes and placed rows; ``state`` is every claimant's.

    ``out`` (a writeable C-contiguous DTYPE array of at least ``len(ids) + ROWS_PER_DATAGRAM``
    rows) receives the records instead of a fresh array.  The C core is still given only
    ``len(ids) + ROWS_PER_DATAGRAM`` rows of it, so the rows past those stay untouched.

    ``placed`` (an array like ``out``) instead receives each record in the row of its request,
    the way several claimants fill one array without a row in common and without a copy after;
    ``out`` is then only the scratch each receive decodes into, all of it (at least
    ``in_flight + ROWS_PER_DATAGRAM`` rows; made when not given), and ``compact_placed`` closes
    up the rows of the ids not found once every claimant is done."""

    def __init__(self, drain: "Drain", attr: int, ids: np.ndarray, first_seq: int,
                 in_flight: int, timeout_ms: int, out: Optional[np.ndarray] = None, *,
                 claims: Optional[QueryClaims] = None, from_back: bool = False,
                 placed: Optional[np.ndarray] = None):
        if claims is not None:
            if placed is None:
                raise ValueError("claimants share their records through one placed array")
            ids, first_seq = claims.ids, claims.first_seq
        n = len(ids)
        if placed is None:       # the records land in out: the C core gets its first n + 2 rows
            if out is None:
                out = layout.empty_records(n + ROWS_PER_DATAGRAM)
            else:
                _check_query_out(out, n)
            capacity = n + ROWS_PER_DATAGRAM
        else:                    # out is only the scratch receives decode into: all of it
            _check_query_out(placed, n)
            if out is None:
                out = layout.empty_records(placed_scratch_rows(in_flight))
            else:
                _check_query_out(out, in_flight)
            capacity = len(out)
        drain.ensure_notes(in_flight + drain.nslots)
        self._drain = drain
        self._reqbuf = np.empty(in_flight * GET_REQUEST_SIZE, np.uint8)   # built in full per round
        self.ids = np.ascontiguousarray(ids, np.uint32)
        self.state = np.zeros(n, np.uint8) if claims is None else claims.state
        self._claims = claims
        self.out = out
        self.placed = placed
        self.row_index = np.zeros(0 if placed is not None else n + ROWS_PER_DATAGRAM, np.uint32)
        q = self._q = ffi.new("struct tsf_query *")
        q.fd = drain._src[0].fd
        q.family = drain._args.family
        q.attr = attr
        q.first_seq = first_seq & 0xFFFFFFFF
        q.n = n
        q.ids = ffi.cast("const uint32_t *", ffi.from_buffer(self.ids))
        q.state = ffi.cast("uint8_t *", ffi.from_buffer(self.state))
        q.in_flight = in_flight
        q.slot_size = drain._args.slot_size
        q.nslots = drain.nslots
        q.arena = drain._args.arena
        q.reqbuf = ffi.cast("uint8_t *", ffi.from_buffer(self._reqbuf))
        q.records = ffi.cast("uint8_t *", ffi.from_buffer(self.out))
        if placed is None:
            q.row_index = ffi.cast("uint32_t *", ffi.from_buffer(self.row_index))
        else:
            q.placed = ffi.cast("uint8_t *", ffi.from_buffer(placed))
        q.capacity = capacity
        q.notes_cap = drain.notes_cap
        q.notes = drain._args.notes
        q.timeout_ms = timeout_ms
        q.slice_ms = QUERY_SLICE_MS
        if claims is not None:
            q.claims = claims.c
            q.from_back = int(from_back)

    def run(self) -> int:
        """Run or resume the lookup (GIL released); a QUERY_* reason."""
        q = self._q
        q.src = self._drain._src[0]     # the socket's counters, carried on from the drain's
        rc = lib.tsf_query(PLAN, q)
        self._drain._src[0] = q.src
        if rc < 0:
            raise RuntimeError(f"tsf_query: {strerror(rc)}")
        return rc

    rows = property(lambda self: int(self._q.rows))
    resent = property(lambda self: int(self._q.resent))
    unordered = property(lambda self: bool(self._q.unordered))
    error = property(lambda self: int(self._q.error))
    kernel_error = property(lambda self: int(self._q.kernel_error))
    kernel_error_index = property(lambda self: int(self._q.kernel_error_index))

    def records(self) -> np.ndarray:
        """The records kept so far, in arrival order (``row_index`` maps them to requests)."""
        if self.placed is not None:
            raise ValueError("a placed query's records are in its placed array, one row per id")
        return self.out[:self.rows]


def placed_scratch_rows(in_flight: int) -> int:
    """Rows of the scratch a placed query decodes into: a round's replies at the drain's bound
    of ROWS_PER_DATAGRAM rows each (any datagram's), so they come in full receive batches, none
    cut short by the room left."""
    return ROWS_PER_DATAGRAM * (in_flight + 1)


def compact_placed(placed: np.ndarray, state: np.ndarray) -> np.ndarray:
    """The records of a finished placed lookup (``Query(placed=...)``, every claimant done) in
    request order: the rows of ids not found closed up in place, a view of ``placed``."""
    state = np.ascontiguousarray(state, np.uint8)
    _check_query_out(placed, len(state))
    rows = lib.tsf_query_compact(ffi.cast("uint8_t *", ffi.from_buffer(placed)), layout.DTYPE.itemsize,
                                 ffi.cast("const uint8_t *", ffi.from_buffer(state)), len(state))
    if rows < 0:
        raise RuntimeError(f"tsf_query_compact: {strerror(rows)}")
    return placed[:rows]


class _Scratch(threading.local):
    """Buffers reused across calls, one set per thread: a large fresh array costs its pages'
    zeroing on first touch (huge pages, for numpy's large arrays) every time it is made.  What a
    call returns from one is valid until that thread's next call; a buffer far larger than the
    need (after a storm) is let go."""

    def get(self, name: str, n: int, dtype) -> np.ndarray:
        have = self.__dict__.get(name)
        if have is None or len(have) < n or (have.nbytes > 1 << 20 and len(have) > 8 * n):
            have = self.__dict__[name] = np.empty(n + n // 4 + 16, dtype)
        return have[:n]

    def struct(self, name: str, ctype: str) -> Any:
        """This thread's C struct ``ctype`` (made once): the C call runs without the GIL, so
        arguments or results shared between threads could be overwritten mid-call."""
        have = self.__dict__.get(name)
        if have is None:
            have = self.__dict__[name] = ffi.new(ctype)
        return have


class Sightings:
    """Decoded records (layout.DTYPE) as the merge's sightings, in the C core (``tsf_sightings``);
    ``plan`` names every field of ``struct tsf_sighting_plan`` (``word`` a list)."""

    def __init__(self, sighting_dtype: np.dtype, plan: dict):
        self.dtype = np.dtype(sighting_dtype)
        p = self._plan = ffi.new("struct tsf_sighting_plan *")
        p.record_size, p.sighting_size = layout.DTYPE.itemsize, self.dtype.itemsize
        for name, value in plan.items():
            if name == "word":
                p.n_words = len(value)
                for i, v in enumerate(value):
                    p.word[i] = v
            else:
                setattr(p, name, value)
        rc = lib.tsf_sighting_plan_check(p)
        if rc < 0:
            raise ValueError(f"tsf_sightings plan: {strerror(rc)}")
        self._scratch = _Scratch()

    def run(self, records: np.ndarray, look_ns: Optional[int] = None) -> Tuple[np.ndarray, bool]:
        """The PID records of ``records`` as sightings, in order, and whether their pids strictly
        increase."""
        if records.dtype != layout.DTYPE:
            raise TypeError("records must be a numpy array of taskstats_fast.DTYPE")
        records = np.ascontiguousarray(records)
        out = layout.empty_records(len(records), self.dtype)
        ordered = self._scratch.struct("sorted", "int *")
        n = lib.tsf_sightings(self._plan, ffi.from_buffer("uint8_t[]", records), len(records),
                              look_ns is not None, look_ns or 0,
                              ffi.from_buffer("uint8_t[]", out, require_writable=True), len(out),
                              ordered)
        if n < 0:
            raise ValueError(f"tsf_sightings: {strerror(n)}")
        return (out if n == len(out) else out[:n]), bool(ordered[0])

    def run_batches(self, batches: Sequence[np.ndarray], look_ns: Optional[int] = None) -> np.ndarray:
        """``run`` over several record arrays (the exit reader's batches), their sightings one
        after another in one array: the batches are never joined into one record array first.
        The array is this thread's scratch, valid until its next call."""
        out = self._scratch.get("sightings", sum(len(b) for b in batches), self.dtype)
        dst = ffi.from_buffer("uint8_t[]", out, require_writable=True)
        kept = 0
        for records in batches:
            if records.dtype != layout.DTYPE:
                raise TypeError("records must be numpy arrays of taskstats_fast.DTYPE")
            records = np.ascontiguousarray(records)
            n = lib.tsf_sightings(self._plan, ffi.from_buffer("uint8_t[]", records), len(records),
                                  look_ns is not None, look_ns or 0,
                                  dst + kept * self.dtype.itemsize, len(out) - kept,
                                  self._scratch.struct("sorted", "int *"))
            if n < 0:
                raise ValueError(f"tsf_sightings: {strerror(n)}")
            kept += n
        return out if kept == len(out) else out[:kept]


class JoinResult(NamedTuple):
    """What ``Join.run`` wrote: the interval's rows, the next ledger, which rows to keep (None:
    all) and how many rows have no cgroup yet (the caller resolves those by inheritance)."""
    rows: np.ndarray
    ledger: np.ndarray
    keep: Optional[np.ndarray]
    unresolved: int


_JOIN_ARRAYS = ("identity", "s_level", "zero_when_off")


def _held(held: list, cdata: Any) -> Any:
    """``cdata``, kept alive in ``held``: a struct field pointing into a buffer does not."""
    held.append(cdata)
    return cdata


class Join:
    """The accounting merge's join in the C core (``tsf_join``), for one pair of dtypes.

    ``plan`` names every field of ``struct tsf_join_plan``: numbers, lists for the arrays and
    ``copy`` as (src, dst, len) triples; the caller derives it from its dtypes (accounting/merge.py
    owns the rules; this class only checks and moves buffers)."""

    def __init__(self, sighting_dtype: np.dtype, row_dtype: np.dtype, plan: dict):
        self.sighting_dtype, self.row_dtype = np.dtype(sighting_dtype), np.dtype(row_dtype)
        p = self._plan = ffi.new("struct tsf_join_plan *")
        p.sighting_size, p.row_size = self.sighting_dtype.itemsize, self.row_dtype.itemsize
        for name, value in plan.items():
            if name == "copy":
                p.n_copies = len(value)
                for i, (src, dst, length) in enumerate(value):
                    p.copy[i].src, p.copy[i].dst, p.copy[i].len = src, dst, length
            elif name in _JOIN_ARRAYS:
                for i, v in enumerate(value):
                    getattr(p, name)[i] = v
            else:
                setattr(p, name, value)
        p.n_identity, p.n_levels = len(plan["identity"]), len(plan["s_level"])
        rc = lib.tsf_join_plan_check(p)
        if rc < 0:
            raise ValueError(f"tsf_join plan: {strerror(rc)}")
        self._scratch = _Scratch()

    def _sightings(self, a: np.ndarray, what: str, held: list, writable: bool = False) -> Any:
        if a.dtype != self.sighting_dtype or not a.flags.c_contiguous or (writable and not a.flags.writeable):
            raise ValueError(f"{what} must be C-contiguous{' writeable' if writable else ''} sightings")
        return _held(held, ffi.from_buffer("uint8_t[]", a, require_writable=writable))

    @staticmethod
    def _cgroups(c: Any, tids: np.ndarray, cgroups: np.ndarray, keep: list) -> None:
        tids = np.ascontiguousarray(tids, np.uint32)
        cgroups = np.ascontiguousarray(cgroups, np.uint64)
        if len(tids) != len(cgroups):
            raise ValueError("each thread id needs one cgroup id")
        keep += (tids, cgroups)
        c.tids = _held(keep, ffi.from_buffer("uint32_t[]", tids))
        c.cgroup = _held(keep, ffi.from_buffer("uint64_t[]", cgroups))
        c.n = len(tids)

    def unique_exits(self, exits: np.ndarray) -> np.ndarray:
        """``exits`` (sightings) sorted by (pid, start second), repeats of one exit record left
        out (``tsf_exit_order``), in this thread's scratch: valid until its next call."""
        held: list = []
        n = len(exits)
        out = self._scratch.get("exits", n, self.sighting_dtype)
        work = self._scratch.get("order", n * lib.TSF_EXIT_ORDER_WORK, np.uint8)
        kept = lib.tsf_exit_order(self._plan, self._sightings(exits, "exits", held), n,
                                  ffi.from_buffer("uint8_t[]", out, require_writable=True), n,
                                  ffi.from_buffer("uint8_t[]", work, require_writable=True), len(work))
        if kept < 0:
            raise ValueError(f"tsf_exit_order: {strerror(kept)}")
        return out if kept == n else out[:kept]

    def run(self, start: np.ndarray, ends: np.ndarray, exits: np.ndarray, start_ns: int,
            start_cgroups: Tuple[np.ndarray, np.ndarray], end_cgroups: Tuple[np.ndarray, np.ndarray],
            delayacct_off: bool) -> JoinResult:
        """Join the ledger ``start``, the closing look ``ends`` and ``exits`` (sightings, sorted by
        pid; ``exits`` is folded in place); the cgroups are (sorted tids, cgroup ids) per look."""
        ns, ne, nx = len(start), len(ends), len(exits)
        rows = layout.empty_records(nx + ne, self.row_dtype)
        ledger = layout.empty_records(ne, self.sighting_dtype)
        keep = np.empty(nx + ne, np.uint8)
        work = self._scratch.get("join", ns + 3 * ne + 2 * nx, np.int64)
        held: list = []
        a = self._scratch.struct("args", "struct tsf_join_args *")
        a.start, a.n_start = self._sightings(start, "start", held), ns
        a.ends, a.n_end = self._sightings(ends, "ends", held), ne
        a.exits, a.n_exit = self._sightings(exits, "exits", held, True), nx
        a.start_ns = start_ns
        self._cgroups(a.start_cg, *start_cgroups, held)
        self._cgroups(a.end_cg, *end_cgroups, held)
        a.delayacct_off = bool(delayacct_off)
        a.rows = _held(held, ffi.from_buffer("uint8_t[]", rows, require_writable=True))
        a.ledger = _held(held, ffi.from_buffer("uint8_t[]", ledger, require_writable=True))
        a.keep = _held(held, ffi.from_buffer("uint8_t[]", keep, require_writable=True))
        a.work = _held(held, ffi.from_buffer("int64_t[]", work, require_writable=True))
        a.rows_cap, a.ledger_cap, a.work_len = len(rows), ne, len(work)
        rc = lib.tsf_join(self._plan, a)
        del held           # the buffers lived through the call
        if rc < 0:
            raise ValueError(f"tsf_join: {strerror(rc)}")
        n = a.n_rows
        return JoinResult(rows[:n], ledger, keep[:n].view(bool) if a.n_dropped else None,
                          a.n_unresolved)


class GroupCount(NamedTuple):
    """A column of per-group sums counted from a test of each row (``struct tsf_group_count``):
    a row passes when its uint8 field ``flag`` masked with ``mask`` equals ``want`` (no test
    without ``flag``) and its uint32 fields ``same`` are equal (no test without them), and
    then adds its uint64 field ``value`` times ``scale`` (1 times ``scale`` without one)."""
    flag: Optional[str] = None
    mask: int = 0
    want: int = 0
    same: Optional[Tuple[str, str]] = None
    value: Optional[str] = None
    scale: int = 1


def _field_offset(fields: Any, name: Optional[str], dtype: Any, what: str) -> int:
    if name is None:
        return lib.TSF_GROUP_NONE
    if fields[name][0] != np.dtype(dtype):
        raise TypeError(f"tsf_group_sums {what} {np.dtype(dtype)} fields; {name} is {fields[name][0]}")
    return fields[name][1]


class GroupSums:
    """Per-group sums in the C core (``tsf_group_sums``) over rows of one dtype: ``key`` is the
    field whose bytes tell one group from the next, ``words`` the uint64 fields summed, and
    ``counts`` the columns counted from tests of each row (``GroupCount``).  The sums of a
    group are its words' then its counts'."""

    def __init__(self, dtype: np.dtype, key: str, words: Sequence[str], counts: Sequence[GroupCount] = ()):
        self.dtype = np.dtype(dtype)
        fields: Any = self.dtype.fields or {}
        p = self._plan = ffi.new("struct tsf_group_plan *")
        p.row_size = self.dtype.itemsize
        key_dtype, p.key = fields[key][:2]
        p.key_len = key_dtype.itemsize
        if len(words) > lib.TSF_GROUP_MAX_WORDS:
            raise ValueError(f"tsf_group_sums sums at most {lib.TSF_GROUP_MAX_WORDS} words, not {len(words)}")
        if len(counts) > lib.TSF_GROUP_MAX_COUNTS:
            raise ValueError(f"tsf_group_sums counts at most {lib.TSF_GROUP_MAX_COUNTS} columns, not {len(counts)}")
        for i, name in enumerate(words):
            p.word[i] = _field_offset(fields, name, np.uint64, "sums")
        for i, count in enumerate(counts):
            c = p.count[i]
            c.flag = _field_offset(fields, count.flag, np.uint8, "tests a flag of")
            c.mask, c.want = count.mask, count.want
            same = count.same or (None, None)
            c.same = _field_offset(fields, same[0], np.uint32, "compares")
            c.same_as = _field_offset(fields, same[1], np.uint32, "compares")
            c.value = _field_offset(fields, count.value, np.uint64, "counts")
            c.scale = count.scale
        p.n_words, p.n_counts = len(words), len(counts)
        rc = lib.tsf_group_plan_check(p)
        if rc < 0:
            raise ValueError(f"tsf_group_sums plan: {strerror(rc)}")
        self.width = len(words) + len(counts)
        self._scratch = _Scratch()

    def __call__(self, rows: np.ndarray, order: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """The (groups, width) uint64 sums of ``rows`` taken in ``order`` (row indices, equal keys
        adjacent), and each group's first position in ``order``."""
        if rows.dtype != self.dtype or not rows.flags.c_contiguous:
            raise ValueError("rows must be C-contiguous rows of the plan's dtype")
        order = np.ascontiguousarray(order, np.int64)
        sums = np.empty((len(order), self.width), np.uint64)
        first = np.empty(len(order), np.uint32)
        a = self._scratch.struct("args", "struct tsf_group_args *")
        held = [ffi.from_buffer("uint8_t[]", rows), ffi.from_buffer("int64_t[]", order),
                ffi.from_buffer("uint64_t[]", sums, require_writable=True),
                ffi.from_buffer("uint32_t[]", first, require_writable=True)]
        a.rows, a.order, a.sums, a.first = held
        a.rows_len, a.n = rows.nbytes, len(rows)
        a.n_order = len(order)
        a.sums_len, a.cap = sums.size, len(first)
        groups = lib.tsf_group_sums(self._plan, a)
        del held           # the buffers lived through the call
        if groups < 0:
            raise ValueError(f"tsf_group_sums: {strerror(groups)}")
        return sums[:groups], first[:groups]


# ---- one look's cgroup files -------------------------------------------------------------------------
_CGROUP_BUF = 1 << 16
CGROUP_NO_USAGE = lib.TSF_CGROUP_NO_USAGE


class CgroupFiles:
    """The kept files of one walk of the cgroup hierarchy, read in one C call per look
    (``tsf_cgroup_read``; accounting/cgroupfs.py owns which files and what they mean).  Row i
    has ``threads_fd[i]``, ``dir_fd[i]`` (-1: none), cgroup id ``ids[i]`` and ``psi_fds[i]``
    (one per pressure file, -1: absent); ``psi_words`` is the word of each file's ``some``
    counter in a psi row of ``psi_width`` words; ``listing`` every row's child directories as
    the walk saw them (tsf_cgroup.h); ``usage_fds`` the rows' cpu.stat files.  The C call
    runs without the GIL, so its arguments are this object's: one look at a time."""

    def __init__(self, threads_fd: Sequence[int], dir_fd: Sequence[int], ids: Sequence[int],
                 psi_fds: np.ndarray, psi_words: Sequence[int], psi_width: int, listing: bytes,
                 usage_fds: Sequence[int], tids_hint: int):
        n = len(ids)
        self._threads = np.array(threads_fd, np.int32)
        self._dirs = np.array(dir_fd, np.int32)
        self.ids = np.array(ids, np.uint64)
        self._psi = np.ascontiguousarray(psi_fds, np.int32).reshape(n, -1)
        self._usage_fds = np.array(usage_fds, np.int32)
        if not (len(self._threads) == len(self._dirs) == len(self._usage_fds) == n):
            raise ValueError("every row needs a threads, a directory and a cpu.stat descriptor")
        n_psi = self._psi.shape[1]
        if n_psi != len(psi_words) or n_psi > lib.TSF_CGROUP_MAX_PSI or \
                any(not 0 < w < psi_width - 1 for w in psi_words):
            raise ValueError("a pressure file's counters must lie inside a psi row")
        self.psi_width = int(psi_width)
        self._listing = bytes(listing)
        self._buf = np.empty(_CGROUP_BUF, np.uint8)
        self._usage = np.empty(n, np.uint64)
        a = self._a = ffi.new("struct tsf_cgroup_read *")
        self._held = [ffi.from_buffer("int32_t[]", self._threads), ffi.from_buffer("int32_t[]", self._dirs),
                      ffi.from_buffer("uint64_t[]", self.ids), ffi.from_buffer("int32_t[]", self._psi),
                      ffi.from_buffer("uint8_t[]", self._listing),
                      ffi.from_buffer("uint8_t[]", self._buf, require_writable=True)]
        a.threads_fd, a.dir_fd, a.id, a.psi_fd, a.listing, a.buf = self._held
        a.n, a.n_psi, a.psi_width = n, n_psi, self.psi_width
        for j, w in enumerate(psi_words):
            a.psi_word[j] = w
        a.listing_len, a.buf_len = len(self._listing), len(self._buf)
        self._grow(tids_hint)

    def _grow(self, listed: int) -> None:
        cap = max(64, listed + listed // 4 + 64)
        self._keys = np.empty(cap, np.uint64)
        self._a.keys = ffi.cast("uint64_t *", ffi.from_buffer(self._keys, require_writable=True))
        self._a.tids_cap = cap

    def read(self, psi: Optional[np.ndarray]) -> Optional[Tuple[np.ndarray, np.ndarray]]:
        """Every row's files: (sorted unique thread ids, the cgroup id of each), the pressure
        counters written into ``psi`` (a C-contiguous uint64 array of rows x psi_width, or
        None without pressure files); None when the hierarchy is not what the walk saw (a
        listing differs or a file failed: walk again)."""
        a = self._a
        a.psi = ffi.NULL
        if psi is not None or a.n_psi:
            if psi is None or psi.dtype != np.uint64 or not psi.flags.c_contiguous or \
                    psi.size != a.n * self.psi_width or not psi.flags.writeable:
                raise ValueError("psi must be a writeable C-contiguous uint64 array of rows x psi_width")
            a.psi = ffi.cast("uint64_t *", ffi.from_buffer(psi, require_writable=True))
        for _ in range(2):
            cap = int(a.tids_cap)
            tids, cgroups = np.empty(cap, np.uint32), np.empty(cap, np.uint64)
            a.tids = ffi.cast("uint32_t *", ffi.from_buffer(tids, require_writable=True))
            a.tid_cgroup = ffi.cast("uint64_t *", ffi.from_buffer(cgroups, require_writable=True))
            n = lib.tsf_cgroup_read(a)
            if n != lib.TSF_E_NOSPACE:
                break
            self._grow(int(a.listed))
        if n < 0:
            raise RuntimeError(f"tsf_cgroup_read: {strerror(n)}")
        if a.changed:
            return None
        return tids[:n], cgroups[:n]

    def usage(self) -> Tuple[np.ndarray, np.ndarray]:
        """(cgroup ids, cpu.stat usage_usec) of the rows whose cpu.stat read."""
        rc = lib.tsf_cgroup_usage(ffi.from_buffer("int32_t[]", self._usage_fds), len(self._usage_fds),
                                  ffi.from_buffer("uint64_t[]", self._usage, require_writable=True),
                                  self._a.buf, self._a.buf_len)
        if rc < 0:
            raise RuntimeError(f"tsf_cgroup_usage: {strerror(rc)}")
        ok = self._usage != CGROUP_NO_USAGE
        return self.ids[ok], self._usage[ok]


def build_info() -> str:
    """What this build of the C core is: its extension module's ABI tag (``abi3``: one build
    for every CPython from 3.9 on), the cffi that generated it and the struct versions it
    decodes -- for ``--version`` and bug reports."""
    import importlib.util

    import cffi  # type: ignore[import-untyped]
    spec = importlib.util.find_spec(f"{__package__}._tsf_cffi")
    name = os.path.basename(spec.origin or "") if spec is not None else ""
    tag = name.split(".")[1] if name.count(".") >= 2 else "built-in"
    return (f"extension {tag} ({name or '?'}), cffi {cffi.__version__}, "
            f"struct versions {layout.MIN_VERSION}-{layout.MAX_VERSION}")
