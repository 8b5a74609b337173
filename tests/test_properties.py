"""Property tests of the decoder (owned by issue 6, hardening), with hypothesis.

Random records of every struct version (4-17 including the v15 layout, version 0 TGID records
after a PID record, versions above 17) are encoded byte by byte with tests/wire.py, wrapped in
messages with random unknown and padding attributes at both nesting levels, and must decode to
exactly the values encoded, every field drawn across the full range of its C type.  Damaged
messages (byte flips, truncation, inserted bytes, rewritten lengths) must never crash, must raise
nothing but DecodeError from decode, must leave every record outside the damage intact, and the
C path and taskstats_fast.reference must agree on records and notes for every input.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import taskstats_fast as tsf
import reference
from taskstats_fast import layout
from taskstats_fast._native import NOTE_BAD, lib

import wire
from wire import nla, nlmsg, genl, pad4

SETTINGS = settings(max_examples=250, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

INT_RANGES = {"__u8": (0, 2**8 - 1), "__u16": (0, 2**16 - 1), "__u32": (0, 2**32 - 1),
              "__u64": (0, 2**64 - 1), "__s64": (-2**63, 2**63 - 1)}
U32 = st.integers(0, 2**32 - 1)
NEST_TYPES = {wire.TYPE_AGGR_PID, wire.TYPE_AGGR_TGID}
INNER_TYPES = {wire.TYPE_PID, wire.TYPE_TGID, wire.TYPE_STATS}
# the high bits of nla_type are NLA_F_NESTED / NLA_F_NET_BYTEORDER, which the parser masks off
TYPE_FLAGS = st.sampled_from([0, 0x8000, 0x4000, 0xC000])


def _value(f: layout.Field):
    if f.ctype == "char":
        return st.binary(max_size=f.count)
    lo, hi = INT_RANGES[f.ctype]
    return st.integers(lo, hi)


_VALUES = {v: st.fixed_dictionaries({
    name: _value(layout.FIELD_BY_NAME[name]) for name in layout.offsets(v)
    if name != "version" and not layout.FIELD_BY_NAME[name].padding})
    for v in range(layout.MIN_VERSION, layout.MAX_VERSION + 1)}


def _junk(level_types):
    """Attributes the parser must skip at a level whose meaningful types are ``level_types``."""
    kind = st.integers(0, 0x3FFF).filter(lambda t: t not in level_types)
    return st.lists(st.builds(lambda t, flags, payload: nla(t | flags, payload),
                              kind, TYPE_FLAGS, st.binary(max_size=12)), max_size=2).map(b"".join)


_INNER_JUNK = _junk(INNER_TYPES)
_TOP_JUNK = _junk(NEST_TYPES)


@dataclass
class Rec:
    kind: int                # 1 PID, 2 TGID
    version: int             # what the payload says (0, 4..17, > 17)
    layout: int              # the layout the values are laid out in
    ident: int
    values: Dict[str, object]
    payload: bytes

    def expected_flags(self) -> int:
        if self.version > layout.MAX_VERSION:
            return tsf.FLAG_NEWER_VERSION
        return tsf.FLAG_LAYOUT_INFERRED if self.version == 0 else 0


def _sample_values(lv: int):
    """Distinct values without a draw per field: for the damage tests, which are about structure
    (drawing ~90 full-range integers per record is where the time would go)."""
    return st.integers(1, 2**20).map(lambda seed: wire.sample_values(lv, seed))


_SAMPLE_VALUES = {v: _sample_values(v) for v in _VALUES}
_TAIL = {True: st.binary(min_size=8, max_size=24), False: st.binary(max_size=24)}
_VERSIONS = st.one_of(st.integers(layout.MIN_VERSION, layout.MAX_VERSION),
                      st.integers(layout.MAX_VERSION + 1, 0xFFFF))
_KINDS = st.sampled_from([tsf.KIND_PID, tsf.KIND_TGID])


@st.composite
def records(draw, kind: Optional[int] = None, version0_layout: Optional[int] = None,
            full_range: bool = True) -> Rec:
    kind = kind or draw(_KINDS)
    if version0_layout is not None:
        version, lv = 0, version0_layout
    else:
        version = draw(_VERSIONS)
        lv = min(version, layout.MAX_VERSION)
    values = draw(_VALUES[lv] if full_range else _SAMPLE_VALUES[lv])
    # a newer struct is longer than v17; any payload may be longer than its struct
    tail = draw(_TAIL[version > layout.MAX_VERSION])
    payload = wire.stats(version, values, layout_version=lv) + tail
    return Rec(kind, version, lv, draw(U32), values, payload)


@st.composite
def aggr_nest(draw, rec: Rec) -> bytes:
    """AGGR nest with skipped attributes before, between and after the id and the stats."""
    junk = _INNER_JUNK
    inner = (draw(junk) + wire.u32(rec.kind, rec.ident) + draw(junk)
             + nla(wire.TYPE_STATS | draw(TYPE_FLAGS), rec.payload) + draw(junk))
    nest_type = wire.TYPE_AGGR_PID if rec.kind == tsf.KIND_PID else wire.TYPE_AGGR_TGID
    return nla(nest_type | draw(TYPE_FLAGS), inner)


@st.composite
def messages(draw, full_range: bool = False) -> Tuple[bytes, List[Rec], int]:
    """One TASKSTATS_CMD_NEW message of 1-3 records, maybe a version-0 TGID after a PID record."""
    seq = draw(U32)
    recs = draw(st.lists(records(full_range=full_range), min_size=1, max_size=3))
    pids = [r for r in recs if r.kind == tsf.KIND_PID]
    if pids and draw(st.booleans()):
        # the kernel's version-0 TGID record follows the PID record of the same exit
        recs.append(draw(records(kind=tsf.KIND_TGID, version0_layout=pids[-1].layout,
                                 full_range=full_range)))
    top_junk = _TOP_JUNK
    attrs = b"".join(draw(top_junk) + draw(aggr_nest(r)) for r in recs) + draw(top_junk)
    return nlmsg(wire.TASKSTATS_FAMILY, genl(wire.CMD_NEW, [attrs]), seq=seq), recs, seq


def streams(min_size=1, max_size=3, full_range=False):
    return st.lists(messages(full_range), min_size=min_size, max_size=max_size)


def check_record(row, rec: Rec, seq: int) -> None:
    assert (int(row["version"]), int(row["kind"]), int(row["id"]), int(row["seq"])) == \
        (rec.version, rec.kind, rec.ident, seq)
    assert (int(row["layout"]), int(row["flags"])) == (rec.layout, rec.expected_flags())
    for name, value in rec.values.items():
        if isinstance(value, bytes):
            assert row[name] == value.rstrip(b"\0"), name  # numpy S32 drops trailing NULs
        else:
            assert int(row[name]) == value, name
    for name in tsf.layout.RECORD_FIELDS:
        f = layout.FIELD_BY_NAME.get(name)
        if f is not None and f.since > rec.layout:
            assert not row[name], f"{name} is newer than layout v{rec.layout} and must read 0"


def same_as_reference(buf: bytes) -> tsf.Parsed:
    """C and reference decoders agree on every record field and every note."""
    got = tsf.parse(buf)
    ref_records, ref_notes = reference.parse(buf)
    assert len(got.records) == len(ref_records)
    for name in tsf.layout.RECORD_FIELDS:
        np.testing.assert_array_equal(got.records[name], ref_records[name], err_msg=name)
    assert got.notes.tolist() == ref_notes.tolist()
    return got


def decode_raises_only_decode_error(buf: bytes, parsed: tsf.Parsed) -> None:
    has_bad = bool((parsed.notes["kind"] == NOTE_BAD).any())
    for decoder in (tsf.decode, reference.decode):
        try:
            decoder(buf)
        except tsf.DecodeError:
            assert has_bad
        else:
            assert not has_bad


# ---- round trip ------------------------------------------------------------------------------

@SETTINGS
@given(streams(max_size=2, full_range=True))
def test_every_encoded_value_decodes_exactly(msgs):
    buf = b"".join(m for m, _, _ in msgs)
    got = tsf.decode(buf)
    expected = [(rec, seq) for _, recs, seq in msgs for rec in recs]
    assert len(got) == len(expected)
    for row, (rec, seq) in zip(got, expected):
        check_record(row, rec, seq)
    same_as_reference(buf)


@SETTINGS
@given(st.integers(layout.MIN_VERSION, layout.MAX_VERSION), st.data())
def test_every_version_round_trips_alone(version, data):
    """Each version on its own, so every one of them is drawn often (the stream test mixes)."""
    values = data.draw(_VALUES[version])
    rec = Rec(tsf.KIND_PID, version, version, data.draw(U32), values, wire.stats(version, values))
    buf = nlmsg(wire.TASKSTATS_FAMILY, genl(wire.CMD_NEW, [data.draw(aggr_nest(rec))]), seq=version)
    (row,) = tsf.decode(buf)
    check_record(row, rec, version)


# ---- damage ----------------------------------------------------------------------------------

def _rewrap(msg: bytes, body: bytes) -> bytes:
    """``msg``'s header (type, flags, seq, pid) around a new body, nlmsg_len telling the truth."""
    _, mtype, flags, seq, pid = struct.unpack_from("=IHHII", msg)
    return pad4(struct.pack("=IHHII", 16 + len(body), mtype, flags, seq, pid) + body)


@st.composite
def damaged_body(draw, body: bytes) -> bytes:
    """The body of a message (genl header + attributes) after one or more kinds of damage."""
    out = bytearray(body)
    for _ in range(draw(st.integers(1, 3))):
        how = draw(st.sampled_from(["flip", "truncate", "insert", "length", "attr"]))
        if how == "flip" and out:
            for _ in range(draw(st.integers(1, 4))):
                out[draw(st.integers(0, len(out) - 1))] = draw(st.integers(0, 255))
        elif how == "truncate":
            del out[draw(st.integers(0, len(out))):]
        elif how == "insert":
            at = draw(st.integers(0, len(out)))
            out[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif how == "length" and len(out) >= 6:
            # an nla_len: attributes start at 4-byte boundaries after the genl header
            at = 4 * draw(st.integers(1, (len(out) - 2) // 4))
            out[at:at + 2] = struct.pack("=H", draw(st.integers(0, 0xFFFF)))
        elif how == "attr":
            at = 4 * draw(st.integers(1, max(1, len(out) // 4)))
            out[at:at] = nla(draw(st.integers(0, 0xFFFF)), draw(st.binary(max_size=700)))
    return bytes(out)


@SETTINGS
@given(messages(), messages(), messages(), st.data())
def test_damage_inside_one_message_spares_its_neighbours(a, b, c, data):
    """Damage that keeps the middle message's framing (its nlmsg_len tells the truth about its
    new size) affects that message alone: the first and last messages' records come back
    whole, the middle decodes as it would alone, and every note comes from the middle."""
    (ma, _, _), (mb, _, _), (mc, _, _) = a, b, c
    damaged = _rewrap(mb, data.draw(damaged_body(mb[16:])))
    buf = ma + damaged + mc
    got = same_as_reference(buf)
    first, middle, last = tsf.parse(ma), tsf.parse(damaged), tsf.parse(mc)
    na, nb, nc = len(first.records), len(middle.records), len(last.records)
    assert len(got.records) == na + nb + nc
    assert got.records[:na].tobytes() == first.records.tobytes()
    assert got.records[na:na + nb].tobytes() == middle.records.tobytes()
    assert got.records[na + nb:].tobytes() == last.records.tobytes()
    shifted = [(k, code, off + len(ma), seq) for k, code, off, seq in middle.notes.tolist()]
    assert got.notes.tolist() == shifted
    decode_raises_only_decode_error(buf, got)


@SETTINGS
@given(messages(), messages(), messages(), U32)
def test_a_wrong_nlmsg_len_keeps_everything_before_it(a, b, c, new_len):
    """A corrupted nlmsg_len may legitimately end the walk or resynchronise anywhere after it;
    what came before is always returned, and a length past the buffer ends the walk there."""
    (ma, _, _), (mb, _, _), (mc, _, _) = a, b, c
    buf = ma + struct.pack("=I", new_len) + mb[4:] + mc
    got = same_as_reference(buf)
    first = tsf.parse(ma).records
    assert got.records[:len(first)].tobytes() == first.tobytes()
    if new_len < 16 or new_len > len(buf) - len(ma):
        assert got.records.tobytes() == first.tobytes()
        assert got.notes.tolist() == [(NOTE_BAD, lib.TSF_E_MSG_LEN, len(ma), 0)]
        assert got.consumed == len(ma)
    decode_raises_only_decode_error(buf, got)


@SETTINGS
@given(streams(max_size=4), st.data())
def test_truncation_keeps_every_complete_message(msgs, data):
    buf = b"".join(m for m, _, _ in msgs)
    cut = data.draw(st.integers(0, len(buf)))
    got = same_as_reference(buf[:cut])
    want, start = [], 0
    for m, _, _ in msgs:
        if start + len(m) > cut:
            break
        want.append(tsf.parse(m).records.tobytes())
        start += len(m)
    assert got.records.tobytes() == b"".join(want)
    if start < cut:  # a message cut short: one framing fault where it starts, nothing after
        code = lib.TSF_E_MSG_SHORT if cut - start < 16 else lib.TSF_E_MSG_LEN
        assert got.notes.tolist() == [(NOTE_BAD, code, start, 0)]
    else:
        assert got.notes.tolist() == []
    decode_raises_only_decode_error(buf[:cut], got)


@SETTINGS
@given(streams(), st.lists(st.tuples(st.integers(0, 2**31), st.integers(0, 255)), min_size=1, max_size=8))
def test_byte_flips_anywhere_never_crash(msgs, flips):
    buf = bytearray(b"".join(m for m, _, _ in msgs))
    for at, value in flips:
        buf[at % len(buf)] = value
    got = same_as_reference(bytes(buf))
    decode_raises_only_decode_error(bytes(buf), got)


@SETTINGS
@given(st.binary(max_size=3000))
def test_arbitrary_bytes_never_crash(buf):
    got = same_as_reference(buf)
    decode_raises_only_decode_error(buf, got)
    assert got.consumed <= len(buf)


@SETTINGS
@given(messages(), st.integers(4, 9), st.data())
def test_tight_output_space_resumes_to_the_same_records(msg, cap, data):
    """A stream reader with room for ``cap`` records, resuming from ``consumed``, ends with the
    records of one ample pass (each message here holds at most 4 records, so each fits)."""
    buf = b"".join([msg[0]] + [data.draw(messages())[0] for _ in range(2)])
    want = tsf.decode(buf)
    got, off = [], 0
    out = np.zeros(cap, dtype=tsf.DTYPE)
    while off < len(buf):
        part = tsf.parse(memoryview(buf)[off:], out=out)
        assert part.consumed > 0
        got.append(part.records.tobytes())
        off += part.consumed
    assert b"".join(got) == want.tobytes()


def test_version0_tgid_first_in_a_message_is_refused_not_guessed():
    tgid0 = wire.aggr(2, 9, wire.stats(0, {}, layout_version=16))
    buf = nlmsg(wire.TASKSTATS_FAMILY, genl(wire.CMD_NEW, [tgid0]))
    with pytest.raises(tsf.DecodeError) as exc:
        tsf.decode(buf)
    assert exc.value.code == lib.TSF_E_NO_LAYOUT
