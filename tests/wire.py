"""A small netlink encoder for building test messages byte by byte.

Tests describe messages with these helpers instead of hex blobs, so a case reads like the
structure it encodes.  ``stats()`` writes a struct taskstats payload of any version from field
values, using the layout table's offsets (which tests/test_layout_compiler.py checks against a
C compiler).
"""

from __future__ import annotations

import struct
from typing import Dict, Iterable, Optional

from taskstats_fast import layout

NLMSG_ERROR, NLMSG_DONE, NLMSG_NOOP = 2, 3, 1
GENL_ID_CTRL = 0x10
TASKSTATS_FAMILY = 31           # any id >= 0x10 will do for byte-level tests
CMD_GET, CMD_NEW = 1, 2
TYPE_PID, TYPE_TGID, TYPE_STATS, TYPE_AGGR_PID, TYPE_AGGR_TGID, TYPE_NULL = 1, 2, 3, 4, 5, 6

_FMT = {"__u8": "B", "__u16": "H", "__u32": "I", "__u64": "Q", "__s64": "q"}


def pad4(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 4)


def nla(atype: int, payload: bytes, *, length: Optional[int] = None) -> bytes:
    """An attribute; ``length`` overrides nla_len (to build malformed input)."""
    n = 4 + len(payload) if length is None else length
    return pad4(struct.pack("=HH", n, atype) + payload)


def u32(atype: int, value: int) -> bytes:
    return nla(atype, struct.pack("=I", value))


def nlmsg(mtype: int, payload: bytes, *, seq: int = 0, flags: int = 0, pid: int = 0,
          length: Optional[int] = None) -> bytes:
    """A netlink message; ``length`` overrides nlmsg_len."""
    n = 16 + len(payload) if length is None else length
    return pad4(struct.pack("=IHHII", n, mtype, flags, seq, pid) + payload)


def genl(cmd: int, attrs: Iterable[bytes] = (), version: int = 1) -> bytes:
    return struct.pack("=BBH", cmd, version, 0) + b"".join(attrs)


def stats(version: int, values: Optional[Dict[str, object]] = None, *,
          layout_version: Optional[int] = None, size: Optional[int] = None) -> bytes:
    """A struct taskstats payload saying ``version`` laid out as ``layout_version`` (default:
    the same; pass it for version 0 or for versions newer than the table).  ``size`` pads or
    truncates the payload."""
    lv = layout_version if layout_version is not None else version
    offs = layout.offsets(lv)
    n = layout.STRUCT_SIZE[lv] if size is None else size
    buf = bytearray(max(n, layout.STRUCT_SIZE[lv]))
    for name, value in (values or {}).items():
        f = layout.FIELD_BY_NAME[name]
        if name not in offs:
            raise KeyError(f"{name} is not in struct version {lv}")
        fmt = f"{f.count}s" if f.ctype == "char" else _FMT[f.ctype]
        struct.pack_into("=" + fmt, buf, offs[name], value)
    struct.pack_into("=H", buf, 0, version)
    return bytes(buf[:n])


def aggr(kind: int, ident: int, payload: bytes, *, null_before_stats: bool = False) -> bytes:
    """AGGR_PID (kind 1) or AGGR_TGID (kind 2) nest around an id and a STATS payload."""
    inner = u32(kind, ident)
    if null_before_stats:
        inner += nla(TYPE_NULL, b"")
    return nla(TYPE_AGGR_PID if kind == 1 else TYPE_AGGR_TGID, inner + nla(TYPE_STATS, payload))


def taskstats_msg(*parts: bytes, seq: int = 0, family: int = TASKSTATS_FAMILY) -> bytes:
    """A TASKSTATS_CMD_NEW message holding the given top-level attributes."""
    return nlmsg(family, genl(CMD_NEW, parts), seq=seq)


def error_msg(err: int, req_seq: int, *, seq: Optional[int] = None, family: int = TASKSTATS_FAMILY) -> bytes:
    """NLMSG_ERROR for a request with ``req_seq``; err is negative (0 = ACK)."""
    request = struct.pack("=IHHII", 28, family, 1, req_seq, 0)
    return nlmsg(NLMSG_ERROR, struct.pack("=i", err) + request,
                 seq=req_seq if seq is None else seq)


def done_msg(seq: int = 0) -> bytes:
    return nlmsg(NLMSG_DONE, struct.pack("=i", 0), seq=seq)


def sample_values(version: int, seed: int = 1) -> Dict[str, object]:
    """Distinct non-zero values for every field of ``version`` (so misplaced bytes show)."""
    out: Dict[str, object] = {}
    for i, name in enumerate(layout.offsets(version)):
        f = layout.FIELD_BY_NAME[name]
        if name == "version" or f.padding:
            continue
        if f.ctype == "char":
            out[name] = f"task{seed}-{i}".encode()
        else:
            bits = struct.calcsize(_FMT[f.ctype]) * 8
            out[name] = (seed * 1_000_003 + i * 7919 + 1) % (1 << (bits - 1)) or 1
    return out
