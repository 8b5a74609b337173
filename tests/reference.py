"""A pure-Python TASKSTATS decoder: the oracle the C core is tested against, and the
"pure-Python decoder" baseline in the benchmarks.

It shares only the layout table (field offsets, checked against a C compiler) and the error
code numbers with the C path; the message walk, the validity checks and the version handling are
written again here, plainly, with the ``struct`` module.  ``parse`` gives the same records and
the same notes (kind, code, offset, seq) as ``taskstats_fast.parse`` for any input.

It lives in tests/ because it is a test oracle, not a feature: the package never needs it, and
keeping it out of ``taskstats_fast`` keeps the oracle from sharing more than the layout table and
the C core's published code numbers (``taskstats_fast._native.ErrorCode``).
"""

from __future__ import annotations

import struct
from typing import Dict, List, Optional, Tuple

import numpy as np

from taskstats_fast import layout
from taskstats_fast._native import NOTE_ACK, NOTE_BAD, NOTE_DONE, NOTE_DTYPE, NOTE_ERROR, ErrorCode

__all__ = ["parse", "decode"]

_NLMSG = struct.Struct("=IHHII")   # len, type, flags, seq, pid
_NLA = struct.Struct("=HH")        # len, type
_I32 = struct.Struct("=i")
_U32 = struct.Struct("=I")
_U16 = struct.Struct("=H")

_FORMAT = {"__u8": "B", "__u16": "H", "__u32": "I", "__u64": "Q", "__s64": "q"}


def _unpacker(version: int) -> Tuple[struct.Struct, List[str]]:
    """One Struct that reads every field of ``version`` in one call, derived from the table."""
    offs = layout.offsets(version)
    fmt, names, pos = "=", [], 0
    for f in sorted((layout.FIELD_BY_NAME[n] for n in offs), key=lambda f: offs[f.name]):
        if f.padding:
            continue
        fmt += "x" * (offs[f.name] - pos)
        fmt += f"{f.count}s" if f.ctype == "char" else _FORMAT[f.ctype]
        names.append(f.name)
        pos = offs[f.name] + f.size
    return struct.Struct(fmt), names


_UNPACK = {v: _unpacker(v) for v in range(layout.MIN_VERSION, layout.MAX_VERSION + 1)}


class _Walk:
    def __init__(self, family: int):
        self.family = family
        self.rows: List[Dict[str, object]] = []
        self.notes: List[Tuple[int, int, int, int]] = []

    def note(self, kind: int, code: int, offset: int, seq: int) -> None:
        self.notes.append((kind, code, offset, seq))

    def attrs(self, buf: bytes, start: int, end: int, seq: int):
        """Yield (offset, type, payload_start, payload_end) until a bad attribute (noted)."""
        p = start
        while p < end:
            remaining = end - p
            if remaining < 4:
                self.note(NOTE_BAD, ErrorCode.ATTR_LEN, p, seq)
                return
            nla_len, nla_type = _NLA.unpack_from(buf, p)
            if nla_len < 4 or nla_len > remaining:
                self.note(NOTE_BAD, ErrorCode.ATTR_LEN, p, seq)
                return
            yield p, nla_type & 0x3FFF, p + 4, p + nla_len
            p += min((nla_len + 3) & ~3, remaining)

    def message(self, buf: bytes, p: int, msglen: int, mtype: int, seq: int) -> None:
        if mtype == 2:  # NLMSG_ERROR
            if msglen < 20:
                self.note(NOTE_BAD, ErrorCode.ERR_SHORT, p, seq)
                return
            (err,) = _I32.unpack_from(buf, p + 16)
            req_seq = _U32.unpack_from(buf, p + 28)[0] if msglen >= 36 else seq
            # |INT32_MIN| does not fit the int32 code: the C core clamps it to INT32_MAX
            self.note(NOTE_ACK if err == 0 else NOTE_ERROR, min(abs(err), 2**31 - 1), p, req_seq)
        elif mtype == 3:  # NLMSG_DONE
            self.note(NOTE_DONE, 0, p, seq)
        elif mtype >= 0x10 and (self.family == 0 or mtype == self.family):
            if msglen < 20:
                self.note(NOTE_BAD, ErrorCode.GENL_SHORT, p, seq)
            elif buf[p + 16] == 2 and (self.family != 0 or mtype != 0x10):  # TASKSTATS_CMD_NEW
                pid_layout = 0
                for at, atype, start, end in self.attrs(buf, p + 20, p + msglen, seq):
                    if atype in (4, 5):  # AGGR_PID, AGGR_TGID
                        kind = 1 if atype == 4 else 2
                        used = self.aggr(buf, at, start, end, kind, seq, pid_layout)
                        if used and kind == 1:
                            pid_layout = used

    def aggr(self, buf: bytes, at: int, start: int, end: int, kind: int, seq: int,
             pid_layout: int) -> int:
        stats: Optional[Tuple[int, int, int]] = None
        ident: Optional[Tuple[int, int, int]] = None
        before = len(self.notes)
        for a, atype, s, e in self.attrs(buf, start, end, seq):
            if atype == 3:
                stats = (a, s, e)
            elif atype in (1, 2):
                ident = (a, s, e)
        if len(self.notes) > before:
            return 0
        if stats is None:
            self.note(NOTE_BAD, ErrorCode.NO_STATS, at, seq)
            return 0
        if ident is not None and ident[2] - ident[1] < 4:
            self.note(NOTE_BAD, ErrorCode.ID_SHORT, ident[0], seq)
            return 0
        a, s, e = stats
        if e - s < 2:
            self.note(NOTE_BAD, ErrorCode.STATS_SHORT, a, seq)
            return 0
        (version,) = _U16.unpack_from(buf, s)
        flags = 0
        if version > layout.MAX_VERSION:
            slot, flags = layout.MAX_VERSION, layout.FLAG_NEWER_VERSION
        elif version == 0 and kind == 2:
            if not pid_layout:
                self.note(NOTE_BAD, ErrorCode.NO_LAYOUT, a, seq)
                return 0
            slot, flags = pid_layout, layout.FLAG_LAYOUT_INFERRED
        elif version < layout.MIN_VERSION:
            self.note(NOTE_BAD, ErrorCode.VERSION, a, seq)
            return 0
        else:
            slot = version
        if e - s < layout.STRUCT_SIZE[slot]:
            self.note(NOTE_BAD, ErrorCode.STATS_SHORT, a, seq)
            return 0
        unpacker, names = _UNPACK[slot]
        row: Dict[str, object] = dict(zip(names, unpacker.unpack_from(buf, s)))
        row.update(kind=kind, flags=flags, layout=slot, seq=seq,
                   id=_U32.unpack_from(buf, ident[1])[0] if ident else 0)
        self.rows.append(row)
        return slot


def parse(buf, family: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """(records, notes) for every netlink message in ``buf``; same contract as the C parser."""
    data = bytes(buf)
    walk = _Walk(family)
    p, n = 0, len(data)
    while p < n:
        remaining = n - p
        if remaining < 16:
            walk.note(NOTE_BAD, ErrorCode.MSG_SHORT, p, 0)
            break
        msglen, mtype, _, seq, _ = _NLMSG.unpack_from(data, p)
        if msglen < 16 or msglen > remaining:
            walk.note(NOTE_BAD, ErrorCode.MSG_LEN, p, 0)
            break
        walk.message(data, p, msglen, mtype, seq)
        p += min((msglen + 3) & ~3, remaining)

    records = np.zeros(len(walk.rows), dtype=layout.DTYPE)
    for name in layout.RECORD_FIELDS:
        if walk.rows:
            records[name] = [row.get(name, 0) for row in walk.rows]
    return records, np.array(walk.notes, dtype=NOTE_DTYPE)


def decode(buf) -> np.ndarray:
    """The records of ``buf``; malformed input raises like ``taskstats_fast.decode``."""
    from taskstats_fast._native import _decode_error  # the same message text as the C path
    records, notes = parse(buf)
    bad = notes[notes["kind"] == NOTE_BAD]
    if len(bad):
        raise _decode_error(bad[0])
    return records
