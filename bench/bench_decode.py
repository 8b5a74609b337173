"""Decoding a realistic exit stream: taskstats_fast.decode vs the pure-Python reference decoder,
pyroute2's decoder and a numpy copy of the same number of 688-byte records (the floor).

The stream is built from real v16 exit datagrams captured on this machine's kernel
(tests/data/captures/6.18): PID-only messages and PID+TGID messages of the last thread of a
group, mixed 3:1, 20,000 records in one buffer as a drain would see them.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import taskstats_fast as tsf
import reference

CAPTURE = os.path.join(os.path.dirname(__file__), "..", "tests", "data", "captures", "6.18")
RECORDS = 20_000


def _datagrams(name):
    with open(os.path.join(CAPTURE, "manifest.json")) as f:
        lengths = json.load(f)["captures"][name]["datagrams"]
    data = open(os.path.join(CAPTURE, f"{name}.bin"), "rb").read()
    out, off = [], 0
    for n in lengths:
        out.append(data[off:off + n])
        off += n
    return out


def _stream():
    pid_only = _datagrams("exit_single")[0]
    pid_tgid = _datagrams("exit_threads")[-1]
    assert len(tsf.decode(pid_only)) == 1 and len(tsf.decode(pid_tgid)) == 2
    parts, n = [], 0
    while n < RECORDS:
        for msg in (pid_only, pid_only, pid_only, pid_tgid):
            parts.append(msg)
            n += len(tsf.decode(msg))
    buf = b"".join(parts)
    return buf, len(tsf.decode(buf)), parts


STREAM, NREC, MESSAGES = _stream()


def test_decode_into_reused_array(per_item):
    out = np.empty(NREC + 16, dtype=tsf.DTYPE)
    recs = per_item(lambda: tsf.decode(STREAM, out=out), items=NREC, group="decode", name="tsf.decode (reused out)")
    assert len(recs) == NREC


def test_decode_fresh_array(per_item):
    recs = per_item(lambda: tsf.decode(STREAM), items=NREC, group="decode", name="tsf.decode (new array)")
    assert len(recs) == NREC


def test_memcpy_floor(per_item):
    src = np.frombuffer(np.random.default_rng(1).bytes(NREC * 688), dtype=np.uint8).reshape(NREC, 688)
    dst = np.empty_like(src)
    per_item(lambda: np.copyto(dst, src), items=NREC, group="decode", name="numpy copyto 688 B (floor)")


def test_reference_decoder(per_item):
    sample = b"".join(MESSAGES[:400])
    n = len(tsf.decode(sample))
    recs, _ = per_item(lambda: reference.parse(sample), items=n, group="decode", name="pure-Python reference",
                       rounds=5, iterations=1)
    assert len(recs) == n


def test_pyroute2_decoder(per_item):
    taskstatsmsg = pytest.importorskip("pyroute2.netlink.taskstats").taskstatsmsg
    sample = MESSAGES[:200]
    n = len(tsf.decode(b"".join(sample)))

    def decode_all():
        out = []
        for m in sample:
            msg = taskstatsmsg(m)
            msg.decode()
            out.append(msg)
        return out

    per_item(decode_all, items=n, group="decode", name="pyroute2", rounds=5, iterations=1)
