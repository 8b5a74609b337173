"""Byte-level tests of the decoder: table-driven cases built with tests/wire.py.

Every case runs through the C path (``taskstats_fast.parse``/``decode``) and the pure-Python
reference decoder, which must agree on every record and every note.
"""

from __future__ import annotations


import numpy as np
import pytest

import taskstats_fast as tsf
import reference
from taskstats_fast import layout
from taskstats_fast._native import NOTE_ACK, NOTE_DONE, NOTE_ERROR, lib

import wire
from malformed_messages import FRAMING, GOOD, GOOD2, MALFORMED
from wire import aggr, error_msg, done_msg, nla, nlmsg, genl, stats, taskstats_msg, u32

ALL_VERSIONS = list(range(layout.MIN_VERSION, layout.MAX_VERSION + 1))


def check_same_as_reference(buf, family=0):
    got = tsf.parse(buf, family=family)
    ref_records, ref_notes = reference.parse(buf, family=family)
    assert len(got.records) == len(ref_records)
    for name in layout.RECORD_FIELDS:
        np.testing.assert_array_equal(got.records[name], ref_records[name], err_msg=name)
    assert got.notes.tolist() == ref_notes.tolist()
    return got


def assert_values(record, values, version):
    for name, value in values.items():
        assert record[name] == value, name
    for name in layout.RECORD_FIELDS:
        f = layout.FIELD_BY_NAME.get(name)
        if f is not None and f.since > version:
            assert record[name] == 0, f"{name} is newer than v{version} and must read 0"


# ---- every struct version --------------------------------------------------------------

@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_every_version_decodes_exactly(version):
    values = wire.sample_values(version, seed=version)
    buf = taskstats_msg(aggr(1, 4242, stats(version, values)), seq=77)
    got = check_same_as_reference(buf)
    (rec,) = got.records
    assert_values(rec, values, version)
    assert (rec["version"], rec["kind"], rec["id"], rec["seq"], rec["layout"], rec["flags"]) == \
        (version, tsf.KIND_PID, 4242, 77, version, 0)
    assert set(tsf.fields_in(version)) == {n for n in tsf.DTYPE.names
                                           if n in layout.FIELD_BY_NAME
                                           and layout.FIELD_BY_NAME[n].since <= version}


def test_v15_and_v16_same_size_different_layout():
    """Same length, so only the version field can choose the layout."""
    values = {"cpu_delay_max": 111, "blkio_count": 222, "ac_pid": 333, "irq_delay_min": 444,
              "ac_comm": b"fifteen"}
    assert layout.STRUCT_SIZE[15] == layout.STRUCT_SIZE[16]
    for version in (15, 16):
        (rec,) = check_same_as_reference(taskstats_msg(aggr(1, 1, stats(version, values)))).records
        assert_values(rec, values, version)


def test_carried_and_masked_tell_zero_from_not_reported():
    buf = taskstats_msg(aggr(1, 1, stats(13, {"wpcopy_count": 0}))) + \
        taskstats_msg(aggr(1, 2, stats(16, {"irq_delay_max": 0})))
    recs = tsf.decode(buf)
    assert tsf.carried(recs, "wpcopy_count").tolist() == [True, True]
    assert tsf.carried(recs, "irq_delay_max").tolist() == [False, True]
    m = tsf.masked(recs, "irq_delay_max")
    assert m.mask.tolist() == [True, False] and m[1] == 0
    with pytest.raises(KeyError):
        tsf.carried(recs, "no_such_field")


# ---- message shapes ----------------------------------------------------------------------

def test_pid_and_tgid_in_one_message():
    buf = taskstats_msg(aggr(1, 10, stats(16, {"ac_pid": 10, "ac_utime": 5})),
                        aggr(2, 9, stats(16, {"ac_utime": 50})), seq=3)
    recs = check_same_as_reference(buf).records
    assert recs["kind"].tolist() == [tsf.KIND_PID, tsf.KIND_TGID]
    assert recs["id"].tolist() == [10, 9]
    assert recs["ac_utime"].tolist() == [5, 50]
    assert recs["seq"].tolist() == [3, 3]


@pytest.mark.parametrize("pid_version", [13, 14, 15, 16, 17])
def test_version0_tgid_borrows_the_pid_record_layout(pid_version):
    delays = {"cpu_count": 7, "cpu_delay_total": 700, "blkio_delay_total": 9}
    if pid_version >= 15:
        delays["irq_delay_max"] = 31
    buf = taskstats_msg(aggr(1, 10, stats(pid_version, {"ac_pid": 10})),
                        aggr(2, 9, stats(0, delays, layout_version=pid_version)))
    pid_rec, tgid_rec = check_same_as_reference(buf).records
    assert tgid_rec["version"] == 0
    assert tgid_rec["layout"] == pid_version
    assert tgid_rec["flags"] == tsf.FLAG_LAYOUT_INFERRED
    assert_values(tgid_rec, delays, pid_version)


def test_version0_tgid_without_pid_record_is_reported():
    buf = taskstats_msg(aggr(2, 9, stats(0, {}, layout_version=16)))
    got = check_same_as_reference(buf)
    assert len(got.records) == 0
    assert [(p.code, p.offset) for p in got.problems] == [(lib.TSF_E_NO_LAYOUT, 16 + 4 + 4 + 8)]


def test_newer_unknown_version_keeps_the_known_prefix_and_is_flagged():
    payload = stats(21, {"ac_pid": 5, "irq_delay_max_ts_nsec": 6}, layout_version=17,
                    size=layout.STATS_SIZE + 64)
    (rec,) = check_same_as_reference(taskstats_msg(aggr(1, 5, payload))).records
    assert (rec["version"], rec["layout"], rec["flags"]) == (21, 17, tsf.FLAG_NEWER_VERSION)
    assert (rec["ac_pid"], rec["irq_delay_max_ts_nsec"]) == (5, 6)


def test_longer_payload_than_version_size_is_fine():
    payload = stats(14, {"irq_count": 3}) + b"\xff" * 16
    (rec,) = check_same_as_reference(taskstats_msg(aggr(1, 1, payload))).records
    assert rec["irq_count"] == 3 and rec["cpu_delay_max"] == 0


@pytest.mark.parametrize("where", ["before_nest", "inside_nest", "both"])
def test_type_null_padding_is_skipped(where):
    nest = aggr(1, 3, stats(16, {"ac_pid": 3}), null_before_stats=where in ("inside_nest", "both"))
    top = (nla(wire.TYPE_NULL, b""),) if where in ("before_nest", "both") else ()
    (rec,) = check_same_as_reference(taskstats_msg(*top, nest)).records
    assert rec["ac_pid"] == 3 and rec["id"] == 3


def test_unknown_attributes_are_skipped_at_both_levels():
    inner = u32(1, 8) + nla(77, b"future!!") + nla(wire.TYPE_STATS, stats(16, {"ac_pid": 8}))
    buf = taskstats_msg(nla(99, b"\x01\x02\x03"), nla(wire.TYPE_AGGR_PID, inner), nla(100, b""))
    (rec,) = check_same_as_reference(buf).records
    assert rec["ac_pid"] == 8


def test_nested_flag_on_the_aggr_type_is_ignored():
    inner = u32(1, 8) + nla(wire.TYPE_STATS, stats(16, {"ac_pid": 8}))
    buf = taskstats_msg(nla(0x8000 | wire.TYPE_AGGR_PID, inner))
    assert check_same_as_reference(buf).records["ac_pid"].tolist() == [8]


def test_error_ack_and_done_are_reported_with_the_request_seq():
    buf = (taskstats_msg(aggr(1, 1, stats(16)), seq=5) + error_msg(-3, req_seq=6)
           + error_msg(0, req_seq=7) + done_msg(seq=8))
    got = check_same_as_reference(buf)
    assert len(got.records) == 1
    assert [(int(n["kind"]), int(n["code"]), int(n["seq"])) for n in got.notes] == \
        [(NOTE_ERROR, 3, 6), (NOTE_ACK, 0, 7), (NOTE_DONE, 0, 8)]
    assert got.kernel_errors["code"].tolist() == [3]


def test_other_families_and_commands_are_skipped():
    ctrl = nlmsg(wire.GENL_ID_CTRL, genl(1, [u32(1, 31)]))             # a family reply
    cgroup = nlmsg(wire.TASKSTATS_FAMILY, genl(5, [nla(1, b"\0" * 40)]))  # CGROUPSTATS_CMD_NEW
    other = taskstats_msg(aggr(1, 2, stats(16)), family=40)
    mine = taskstats_msg(aggr(1, 1, stats(16)))
    buf = ctrl + cgroup + other + mine + nlmsg(wire.NLMSG_NOOP, b"")
    assert check_same_as_reference(buf).records["id"].tolist() == [2, 1]
    assert check_same_as_reference(buf, family=wire.TASKSTATS_FAMILY).records["id"].tolist() == [1]


def test_accepts_every_buffer_type():
    buf = taskstats_msg(aggr(1, 1, stats(16, {"ac_pid": 1})))
    for b in (buf, bytearray(buf), memoryview(buf), np.frombuffer(buf, dtype=np.uint8)):
        assert tsf.decode(b)["ac_pid"].tolist() == [1]
    with pytest.raises(TypeError, match="bytes-like"):
        tsf.decode("not bytes")


# ---- malformed input ---------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_message_is_named_and_the_neighbours_survive(name):
    bad, code, rel = MALFORMED[name]
    buf = GOOD + bad + GOOD2
    got = check_same_as_reference(buf)
    assert got.records["id"].tolist() == [1, 2], "records before and after the damage survive"
    assert [(p.code, p.offset) for p in got.problems] == [(code, len(GOOD) + rel)]
    with pytest.raises(tsf.DecodeError) as exc:
        tsf.decode(buf)
    assert isinstance(exc.value, ValueError)
    assert exc.value.code == code and exc.value.offset == len(GOOD) + rel
    assert f"at byte {len(GOOD) + rel}" in str(exc.value)
    with pytest.raises(tsf.DecodeError):
        reference.decode(buf)


@pytest.mark.parametrize("name", sorted(FRAMING))
def test_framing_fault_stops_the_walk_and_keeps_what_came_before(name):
    bad, code = FRAMING[name]
    got = check_same_as_reference(GOOD + bad)
    assert got.records["id"].tolist() == [1]
    assert [(p.code, p.offset) for p in got.problems] == [(code, len(GOOD))]
    assert got.consumed == len(GOOD)


def test_several_problems_are_all_reported():
    buf = MALFORMED["nla_len_0"][0] + GOOD + MALFORMED["version_1"][0]
    got = check_same_as_reference(buf)
    assert len(got.problems) == 2 and got.records["id"].tolist() == [1]
    with pytest.raises(tsf.DecodeError, match="1 more problem"):
        tsf.decode(buf)


def test_empty_buffer_gives_no_records():
    assert len(tsf.decode(b"")) == 0


# ---- output arrays -------------------------------------------------------------------------

def test_caller_array_is_reused_and_returned_as_a_view():
    out = np.zeros(8, dtype=tsf.DTYPE)
    recs = tsf.decode(GOOD + GOOD2, out=out)
    assert recs.base is out or np.shares_memory(recs, out)
    assert out["id"][:2].tolist() == [1, 2]


def test_too_small_output_stops_at_a_message_boundary_and_resumes():
    msgs = [taskstats_msg(aggr(1, i, stats(16)), aggr(2, 100 + i, stats(16)), seq=i) for i in range(5)]
    buf = b"".join(msgs)
    out = np.zeros(3, dtype=tsf.DTYPE)
    first = tsf.parse(buf, out=out)
    assert first.records["id"].tolist() == [0, 100]
    assert first.consumed == len(msgs[0])
    rest = tsf.parse(memoryview(buf)[first.consumed:])
    assert rest.records["id"].tolist() == [1, 101, 2, 102, 3, 103, 4, 104]
    with pytest.raises(ValueError, match="too few"):
        tsf.decode(buf, out=out)


def test_output_array_is_checked():
    with pytest.raises(TypeError):
        tsf.decode(GOOD, out=np.zeros(4, dtype=np.uint8))
    with pytest.raises(ValueError):
        tsf.decode(GOOD, out=np.zeros(8, dtype=tsf.DTYPE)[::2])


def test_more_notes_than_the_first_guess_are_all_kept():
    """Thousands of error replies (a bulk query of dead pids) come back note for note."""
    buf = b"".join(error_msg(-3, req_seq=i) for i in range(5000)) + GOOD
    got = check_same_as_reference(buf)
    assert got.kernel_errors["seq"].tolist() == list(range(5000))
    assert got.records["id"].tolist() == [1]
