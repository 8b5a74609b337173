"""Malformed netlink input, each case with the error code and the byte offset the decoder must
name (``MALFORMED``), framing faults that end the walk (``FRAMING``), and the good messages
(``GOOD``, ``GOOD2``) set around them.  The codec tests, the sanitizer run and the fuzzer's
seeds all use them."""

from __future__ import annotations

import struct

from taskstats_fast._native import lib

import wire
from wire import aggr, genl, nla, nlmsg, stats, taskstats_msg, u32

GOOD = taskstats_msg(aggr(1, 1, stats(16, {"ac_pid": 1})), seq=1)
GOOD2 = taskstats_msg(aggr(1, 2, stats(16, {"ac_pid": 2})), seq=2)
ATTRS_AT = 20  # first top-level attribute of a message


def _msg_with_attrs(raw: bytes, seq=9) -> bytes:
    return nlmsg(wire.TASKSTATS_FAMILY, genl(2) + raw, seq=seq)


MALFORMED = {
    # name: (bytes, TSF_E code, offset of the fault relative to the bad message)
    "nla_len_0": (_msg_with_attrs(struct.pack("=HH", 0, 4) + b"\0" * 8), lib.TSF_E_ATTR_LEN, ATTRS_AT),
    "nla_len_3": (_msg_with_attrs(struct.pack("=HH", 3, 4) + b"\0" * 8), lib.TSF_E_ATTR_LEN, ATTRS_AT),
    "nla_len_past_message": (_msg_with_attrs(nla(4, b"\0" * 8, length=200)), lib.TSF_E_ATTR_LEN, ATTRS_AT),
    "attr_header_cut": (_msg_with_attrs(b"\x08\x00"), lib.TSF_E_ATTR_LEN, ATTRS_AT),
    "inner_nla_len_past_nest": (
        _msg_with_attrs(nla(wire.TYPE_AGGR_PID, u32(1, 1) + nla(3, b"\0" * 16, length=600))),
        lib.TSF_E_ATTR_LEN, ATTRS_AT + 4 + 8),
    "stats_truncated": (_msg_with_attrs(aggr(1, 1, stats(16, size=300))), lib.TSF_E_STATS_SHORT, ATTRS_AT + 4 + 8),
    "stats_one_byte": (_msg_with_attrs(aggr(1, 1, b"\x10")), lib.TSF_E_STATS_SHORT, ATTRS_AT + 4 + 8),
    "newer_version_short": (_msg_with_attrs(aggr(1, 1, stats(18, layout_version=17, size=600))),
                            lib.TSF_E_STATS_SHORT, ATTRS_AT + 4 + 8),
    "version_1": (_msg_with_attrs(aggr(1, 1, stats(1, layout_version=4))), lib.TSF_E_VERSION, ATTRS_AT + 4 + 8),
    "version_3": (_msg_with_attrs(aggr(1, 1, stats(3, layout_version=4))), lib.TSF_E_VERSION, ATTRS_AT + 4 + 8),
    "version_0_pid_record": (_msg_with_attrs(aggr(1, 1, stats(0, layout_version=16))), lib.TSF_E_VERSION,
                             ATTRS_AT + 4 + 8),
    "nest_without_stats": (_msg_with_attrs(nla(wire.TYPE_AGGR_PID, u32(1, 1))), lib.TSF_E_NO_STATS, ATTRS_AT),
    "short_pid_attr": (_msg_with_attrs(nla(wire.TYPE_AGGR_PID, nla(1, b"\1\0") + nla(3, stats(16)))),
                       lib.TSF_E_ID_SHORT, ATTRS_AT + 4),
    "error_without_code": (nlmsg(wire.NLMSG_ERROR, b""), lib.TSF_E_ERR_SHORT, 0),
    "genl_header_cut": (nlmsg(wire.TASKSTATS_FAMILY, b"\2\1"), lib.TSF_E_GENL_SHORT, 0),
}

# framing faults end the walk: no message after them can be found
FRAMING = {
    "nlmsg_len_below_header": (nlmsg(wire.TASKSTATS_FAMILY, genl(2), length=8), lib.TSF_E_MSG_LEN),
    "nlmsg_len_past_buffer": (nlmsg(wire.TASKSTATS_FAMILY, genl(2), length=4000), lib.TSF_E_MSG_LEN),
    "trailing_bytes": (b"\x10\x00\x00\x00\x1f\x00", lib.TSF_E_MSG_SHORT),
}
