"""Thin wrappers over the C codec: the only module that imports the cffi extension.

Each wrapper checks its arguments, makes one C call and turns the return code into a result or
an exception whose text comes from the C side (``tsf_strerror``).  The copy plan the C core
follows is built here, once, from ``layout``.
"""

from __future__ import annotations

from typing import List, NamedTuple, Optional

import numpy as np

from . import layout
from ._tsf_cffi import ffi, lib
from .errors import DecodeError

__all__ = ["NOTE_DTYPE", "Parsed", "parse", "decode", "strerror", "PLAN", "ffi", "lib"]

#: One note from the parser: a kernel ACK/error, NLMSG_DONE, or a malformed part of the input.
NOTE_DTYPE = np.dtype([("kind", "<i4"), ("code", "<i4"), ("offset", "<u4"), ("seq", "<u4")])
NOTE_ACK, NOTE_ERROR, NOTE_DONE, NOTE_BAD = (lib.TSF_NOTE_ACK, lib.TSF_NOTE_ERROR,
                                             lib.TSF_NOTE_DONE, lib.TSF_NOTE_BAD)
assert ffi.sizeof("struct tsf_note") == NOTE_DTYPE.itemsize

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
