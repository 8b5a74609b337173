"""Writes the 0.1.0 recording fixtures in this directory (run once, with taskstats_fast 0.1.0).

These files prove that recordings stay readable after the library and the struct layout grow:
tests/test_read_records.py reads them with today's code and with a test-only layout that has a
v18.  Never regenerate them with a newer version — that would test nothing.  Made by::

    cd <checkout at 0.1.0> && PYTHONPATH=$PWD python3 tests/data/recordings-0.1.0/make_fixtures.py

The records: real kernel captures (tests/data/captures/*/exit_*.bin, batch.bin from 6.1, 6.12,
6.18: struct versions 13..16, PID and TGID records) plus records encoded by tests/wire.py for
versions 4, 8, 10, 15 and 17 (v17 with delay timestamps) and one newer-than-known version, each
with a receive time.  ``records.npy`` is the same array saved with ``np.save``: the expected
values.  Written as one file per format, a rotating Parquet dataset, an npy dataset and a
``snapshot`` of this machine's live processes written by the 0.1.0 CLI.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", ".."))   # tests/ for wire.py

import taskstats_fast as tsf  # noqa: E402
from taskstats_fast import recording  # noqa: E402
from wire import aggr, stats, taskstats_msg  # noqa: E402

assert tsf.__version__ == "0.1.0", "fixtures of 0.1.0 must be written by 0.1.0"


def encoded() -> np.ndarray:
    btime = 1_795_706_314
    parts = []
    for i, version in enumerate((4, 8, 10, 15, 17)):
        values = {"ac_pid": 900 + i, "ac_comm": f"v{version}-tâsk".encode(), "ac_utime": 1000 + i,
                  "cpu_count": 3 + i, "cpu_delay_total": 12_345 + i, "ac_nice": 0xFB,
                  "ac_exitcode": 9 << 8}
        if version >= 2:
            values["ac_btime"] = btime
        if version >= 10:
            values["ac_btime64"] = btime
        if version >= 14:
            values["irq_count"] = 2
        if version >= 15:
            values["cpu_delay_max"] = 777_000
            values["cpu_delay_min"] = 1_000
        if version >= 17:
            values["cpu_delay_max_ts_sec"] = btime + 5
            values["cpu_delay_max_ts_nsec"] = 123_456_000   # whole microseconds: 0.1.0 keeps us
        parts.append(taskstats_msg(aggr(1, 900 + i, stats(version, values)), seq=i))
    parts.append(taskstats_msg(aggr(2, 950, stats(19, {"ac_pid": 0, "cpu_count": 1},
                                                  layout_version=17)), seq=9))
    return tsf.decode(b"".join(parts))


def captured() -> np.ndarray:
    out = []
    for path in sorted(glob.glob(os.path.join(HERE, "..", "captures", "*", "*.bin"))):
        name = os.path.basename(path)
        if name.startswith(("exit_", "batch")):
            out.append(tsf.decode(open(path, "rb").read()))
    return np.concatenate(out).astype(tsf.DTYPE)


def main() -> None:
    records = np.concatenate([captured(), encoded()]).astype(tsf.DTYPE)
    records["time_ns"] = 1_795_706_400_000_000_000 + np.arange(len(records)) * 1_000_000
    records["shard"] = np.arange(len(records)) % 3
    for name in os.listdir(HERE):
        if name != os.path.basename(__file__):
            target = os.path.join(HERE, name)
            shutil.rmtree(target) if os.path.isdir(target) else os.unlink(target)
    np.save(os.path.join(HERE, "records.npy"), records)
    for fmt in recording.FORMATS:
        recording.write_file(os.path.join(HERE, f"one.{fmt}"), records, metadata={"fixture": fmt})
    half = len(records) // 2
    for fmt in ("parquet", "npy"):
        rec = recording.Recorder(os.path.join(HERE, f"dataset-{fmt}"), fmt, rotate_bytes=1,
                                 flush_records=half, hostname="fixture-host")
        rec.update_counters({"received": len(records), "lost": 3})
        rec.write(records[:half])
        rec.write(records[half:])
        rec.close()
    env = dict(os.environ, PYTHONPATH=os.path.join(HERE, "..", "..", ".."))
    subprocess.run([sys.executable, "-m", "taskstats_fast", "snapshot", "-o",
                    os.path.join(HERE, "snapshot.parquet")], check=True, env=env)
    print("wrote", sorted(os.listdir(HERE)))


if __name__ == "__main__":
    main()
