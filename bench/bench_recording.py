"""Tables and files: ``to_pandas``/``to_arrow`` and reading a recording back with
``read_records``, each per record, against floors measured in the same run: a numpy copy of the
same records (for the table conversions) and ``np.load`` of the same records saved as a plain npy
file (for reading back).

The records: 100,000 v16 PID records decoded from real exit datagrams (tests/data/captures/6.18).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import taskstats_fast as tsf
from taskstats_fast import recording

CAPTURE = os.path.join(os.path.dirname(__file__), "..", "tests", "data", "captures", "6.18")
RECORDS = 100_000


def _records():
    one = tsf.decode(open(os.path.join(CAPTURE, "exit_single.bin"), "rb").read())
    out = np.resize(one, RECORDS).astype(tsf.DTYPE)
    out["ac_pid"] = np.arange(RECORDS)
    out["time_ns"] = 1_795_706_400_000_000_000 + np.arange(RECORDS) * 997
    return out


RECS = _records()


def test_copy_floor(per_item):
    per_item(lambda: RECS.copy(), items=RECORDS, group="tables", name="numpy copy (floor)")


def test_to_arrow(per_item):
    per_item(lambda: tsf.to_arrow(RECS), items=RECORDS, group="tables", name="to_arrow")


def test_to_pandas(per_item):
    per_item(lambda: tsf.to_pandas(RECS), items=RECORDS, group="tables", name="to_pandas")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("recordings")
    plain = str(root / "plain.npy")
    np.save(plain, RECS)
    written = {fmt: recording.write_file(str(root / f"r.{fmt}"), RECS) for fmt in recording.FORMATS}
    return plain, written


def test_np_load_floor(per_item, files):
    plain, _ = files
    per_item(lambda: np.load(plain), items=RECORDS, group="read back", name="np.load (floor)")


@pytest.mark.parametrize("fmt", recording.FORMATS)
def test_read_records(per_item, files, fmt):
    _, written = files
    back = per_item(lambda: tsf.read_records(written[fmt]), items=RECORDS, group="read back",
                    name=f"read_records {fmt}")
    assert np.array_equal(back["ac_pid"], RECS["ac_pid"])
