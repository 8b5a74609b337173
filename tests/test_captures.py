"""Real kernel messages, decoded without a kernel.

tests/data/captures/<kernel>/ holds raw datagrams captured by tests/kernels/capture.py on
Debian 6.1 (struct v13), Debian 6.12 (v14) and 6.18 (v16), with a manifest of what the capturing
process knew independently (pids, exit statuses, comms, errnos).  Every CI run decodes all of
them and checks the C decoder against three oracles: the pure-Python reference decoder (every
field), pyroute2's decoder (every field it knows) and the manifest's facts.
"""

from __future__ import annotations

import json
import os
import struct

import numpy as np
import pytest

import taskstats_fast as tsf
import reference
from taskstats_fast import layout
from taskstats_fast._native import ffi, lib

CAPTURES = os.path.join(os.path.dirname(__file__), "data", "captures")
KERNELS = sorted(d for d in os.listdir(CAPTURES) if os.path.isdir(os.path.join(CAPTURES, d)))


def load(kernel):
    with open(os.path.join(CAPTURES, kernel, "manifest.json")) as f:
        manifest = json.load(f)
    blobs = {}
    for name, cap in manifest["captures"].items():
        with open(os.path.join(CAPTURES, kernel, cap["file"]), "rb") as f:
            blobs[name] = f.read()
    return manifest, blobs


@pytest.fixture(scope="module", params=KERNELS)
def capture(request):
    return load(request.param)


def test_all_three_kernel_generations_are_present():
    versions = {load(k)[0]["struct_version"] for k in KERNELS}
    assert {13, 14, 16} <= versions


def test_every_capture_matches_the_reference_decoder(capture):
    manifest, blobs = capture
    for name, data in blobs.items():
        got = tsf.parse(data)
        ref_records, ref_notes = reference.parse(data)
        assert len(got.problems) == 0, name
        assert got.notes.tolist() == ref_notes.tolist(), name
        assert len(got.records) == len(ref_records), name
        for field in layout.RECORD_FIELDS:
            np.testing.assert_array_equal(got.records[field], ref_records[field], err_msg=f"{name}.{field}")
        assert (got.records["version"][got.records["kind"] > 0] == manifest["struct_version"]).all()


def _pyroute2_stats(data):
    """(kind, id, stats dict) for every AGGR nest, as pyroute2 decodes it."""
    from pyroute2.netlink.taskstats import taskstatsmsg
    out, off = [], 0
    while off < len(data):
        (length, mtype) = struct.unpack_from("=IH", data, off)
        if mtype >= 0x10:
            msg = taskstatsmsg(data[off:off + length])
            msg.decode()
            if msg["cmd"] == 2:
                for aname, nest in msg["attrs"]:
                    if aname not in ("TASKSTATS_TYPE_AGGR_PID", "TASKSTATS_TYPE_AGGR_TGID"):
                        continue
                    kind = tsf.KIND_PID if aname.endswith("PID") else tsf.KIND_TGID
                    ident = nest.get_attr("TASKSTATS_TYPE_PID" if kind == tsf.KIND_PID else "TASKSTATS_TYPE_TGID")
                    out.append((kind, ident, nest.get_attr("TASKSTATS_TYPE_STATS")))
        off += (length + 3) & ~3
    return out


def test_every_record_matches_pyroute2(capture):
    pytest.importorskip("pyroute2", reason="pyroute2 is the independent decoder oracle (test extra)")
    manifest, blobs = capture
    compared = 0
    for name, data in blobs.items():
        records = tsf.decode(data)
        theirs = _pyroute2_stats(data)
        assert len(theirs) == len(records), name
        for rec, (kind, ident, st) in zip(records, theirs):
            assert (rec["kind"], rec["id"]) == (kind, ident)
            fields = [k for k in st.keys() if not k.startswith("__")]
            assert len(fields) >= 39
            for field in fields:
                value = st[field]
                if field == "ac_comm":
                    value = value.rstrip(b"\0") if isinstance(value, bytes) else value.encode()
                assert rec[field] == value, f"{name}: {field}"
                compared += 1
    assert compared > 0


def test_query_replies_match_what_the_process_knew(capture):
    manifest, blobs = capture
    expect = manifest["captures"]["pid_self"]["expect"]
    (rec,) = tsf.decode(blobs["pid_self"])
    assert (rec["kind"], rec["id"], rec["ac_pid"], rec["ac_ppid"], rec["ac_uid"], rec["ac_gid"]) == \
        (tsf.KIND_PID, expect["pid"], expect["pid"], expect["ppid"], expect["uid"], expect["gid"])
    assert rec["ac_comm"] == expect["comm"].encode()
    assert rec["seq"] == expect["seq"]

    expect = manifest["captures"]["tgid_threads"]["expect"]
    (rec,) = tsf.decode(blobs["tgid_threads"])
    assert (rec["kind"], rec["id"]) == (tsf.KIND_TGID, expect["tgid"])
    assert rec["ac_pid"] == 0 and rec["ac_comm"] == b""  # TGID replies carry sums only


def test_exit_events_match_the_children_that_exited(capture):
    manifest, blobs = capture
    children = manifest["captures"]["exit_single"]["expect"]["children"]
    records = tsf.decode(blobs["exit_single"])
    by_pid = {int(r["ac_pid"]): r for r in records}
    assert len(records) == len(children)
    for child in children:
        rec = by_pid[child["pid"]]
        assert rec["kind"] == tsf.KIND_PID
        assert rec["ac_exitcode"] == child["ac_exitcode"], child["how"]
        assert rec["ac_comm"] == child["comm"].encode()
        assert rec["ac_ppid"] == child["ppid"]
        assert rec["ac_flag"] & child["ac_flag_set"] == child["ac_flag_set"]

    expect = manifest["captures"]["exit_threads"]["expect"]
    records = tsf.decode(blobs["exit_threads"])
    assert records["kind"].tolist() == [tsf.KIND_PID] * expect["nthreads"] + [tsf.KIND_TGID]
    last_pid, tgid_rec = records[-2], records[-1]
    assert last_pid["seq"] == tgid_rec["seq"], "PID and TGID records of the last thread share one message"
    assert tgid_rec["id"] == expect["tgid"] and last_pid["ac_exitcode"] == expect["child_exit_status"]
    assert sorted(records["ac_pid"][:-1].tolist()) == sorted(t["pid"] for t in expect["threads"])


def test_errors_and_acks_carry_errno_and_request_seq(capture):
    manifest, blobs = capture
    for name in ("error_esrch", "error_einval", "register_bad", "register_garbage", "register_huge",
                 "cgroup_v2_error", "cgroup_notcg_error", "register_ack", "deregister_ack", "cgroup_badfd"):
        expect = manifest["captures"][name]["expect"]
        got = tsf.parse(blobs[name])
        assert len(got.records) == 0
        (note,) = got.notes
        assert int(note["code"]) == expect["errno"], name
        assert int(note["seq"]) == expect["seq"], name


def test_batch_replies_and_the_dead_pid(capture):
    manifest, blobs = capture
    got = tsf.parse(blobs["batch"])
    assert len(got.records) + len(got.kernel_errors) == manifest["captures"]["batch"]["expect"]["requests"]
    assert got.kernel_errors["code"].tolist() == [3]  # ESRCH
    assert len(set(got.records["seq"].tolist()) | set(got.kernel_errors["seq"].tolist())) == \
        manifest["captures"]["batch"]["expect"]["requests"]


def test_family_and_cgroupstats_replies(capture):
    manifest, blobs = capture
    fam = ffi.new("struct tsf_family *")
    data = blobs["family"]
    assert lib.tsf_parse_family(data, len(data), fam) == 1
    assert fam.id == manifest["family_id"] and fam.error == 0

    expect = manifest["captures"]["cgroup_v1"]["expect"]
    out, err = ffi.new("uint64_t[5]"), ffi.new("int32_t *")
    data = blobs["cgroup_v1"]
    assert lib.tsf_parse_cgroupstats(data, len(data), manifest["family_id"], out, err) == 1
    assert list(out) == [expect[k] for k in ("nr_sleeping", "nr_running", "nr_stopped",
                                             "nr_uninterruptible", "nr_io_wait")]
    data = blobs["cgroup_v2_error"]
    assert lib.tsf_parse_cgroupstats(data, len(data), manifest["family_id"], out, err) == 0
    assert err[0] == 22
    data = blobs["cgroup_badfd"]
    assert lib.tsf_parse_cgroupstats(data, len(data), manifest["family_id"], out, err) == lib.TSF_E_NO_REPLY
