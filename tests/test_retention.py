"""Dataset retention (recording/retention.py, `record --keep-days/--max-total-mb`): the oldest
complete files go, with their sidecars; a file being written never does, however old or big;
emptied date= directories go too; FileSink applies it after every rotation to its host's files."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from taskstats_fast import layout
from taskstats_fast.recording import FileSink, find_files
from taskstats_fast.recording.durable import try_lock
from taskstats_fast.recording.retention import RetentionPolicy, complete_files

NOW = 1_800_000_000.0
DAY = 86400.0


def _file(path, size, age_days, sidecar=True):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(b"x" * size)
    os.utime(path, (NOW - age_days * DAY, NOW - age_days * DAY))
    if sidecar:
        directory, name = os.path.split(path)
        side = os.path.join(directory, f"_{name}.json")
        with open(side, "w") as f:
            f.write("{}")
        return side
    return None


@pytest.fixture
def dataset(tmp_path):
    """host=h: three complete .npy files (10, 5 and 1 days old, with sidecars), one complete
    .parquet (2 days), and a file being written that is the oldest and biggest of all."""
    host = tmp_path / "ds" / "host=h"
    files = {
        "old": str(host / "date=2026-11-21" / "part-a.npy"),
        "mid": str(host / "date=2026-11-26" / "part-b.npy"),
        "pq": str(host / "date=2026-11-29" / "part-c.parquet"),
        "new": str(host / "date=2026-11-30" / "part-d.npy"),
        "writing": str(host / "date=2026-11-21" / ".part-e.npy.inprogress"),
    }
    sides = {"old": _file(files["old"], 1000, 10), "mid": _file(files["mid"], 1000, 5),
             "pq": _file(files["pq"], 1000, 2, sidecar=False), "new": _file(files["new"], 1000, 1)}
    _file(files["writing"], 5000, 30, sidecar=False)
    return str(host), files, sides


def test_complete_files_are_what_readers_see_oldest_first(dataset):
    host, files, sides = dataset
    complete, other = complete_files(host)
    assert [f.path for f in complete] == [files["old"], files["mid"], files["pq"], files["new"]]
    assert complete[0].sidecar == sides["old"] and complete[2].sidecar is None
    assert complete[0].size == 1000 + 2 and other == 5000


def test_keep_days_deletes_older_complete_files_and_their_sidecars(dataset):
    host, files, sides = dataset
    writer = try_lock(files["writing"])      # as a live writer holds its file
    result = RetentionPolicy(keep_days=3).apply(host, now=NOW)
    os.close(writer)
    assert result.deleted == [files["old"], files["mid"]] and not result.errors
    assert result.aged_out == []
    for gone in (files["old"], sides["old"], files["mid"], sides["mid"]):
        assert not os.path.exists(gone)
    assert os.path.exists(files["writing"])                 # older than all, but being written
    assert os.path.exists(files["pq"]) and os.path.exists(files["new"])
    assert not os.path.exists(os.path.dirname(files["mid"]))     # emptied date= directory removed
    assert os.path.exists(os.path.dirname(files["old"]))         # still holds the file being written


def test_max_total_deletes_oldest_first_until_the_total_fits(dataset):
    host, files, _ = dataset
    # only what it may delete counts (not the 5000 bytes being written):
    # 1002 + 1002 + 1000 + 1002 fits in 2100 once the two oldest are gone
    result = RetentionPolicy(max_total_bytes=2100).apply(host, now=NOW)
    assert result.deleted == [files["old"], files["mid"]] and not result.over_cap
    assert sorted(find_files([host])) == sorted([files["pq"], files["new"]])
    assert result.bytes_freed == 2004
    assert RetentionPolicy(max_total_bytes=7100).apply(host, now=NOW).deleted == []


def test_a_cap_below_one_file_keeps_the_newest_and_says_so(dataset):
    host, files, _ = dataset
    result = RetentionPolicy(max_total_bytes=100).apply(host, now=NOW)
    assert len(result.deleted) == 3 and result.over_cap
    assert find_files([host]) == [files["new"]] and os.path.exists(files["writing"])


def test_a_protected_file_is_never_deleted(dataset):
    host, files, _ = dataset
    result = RetentionPolicy(keep_days=0.5).apply(host, now=NOW, protected=[files["mid"]])
    assert result.deleted == [files["old"], files["pq"]]     # "new" is the newest: kept too


def test_keep_days_ages_out_a_crash_leftover_no_writer_holds(dataset):
    host, files, _ = dataset
    result = RetentionPolicy(keep_days=20).apply(host, now=NOW)
    assert result.deleted == [] and result.aged_out == [files["writing"]]
    assert not os.path.exists(files["writing"])


def test_both_limits_together_and_no_limit(dataset):
    host, files, _ = dataset
    assert RetentionPolicy().apply(host, now=NOW).deleted == []
    result = RetentionPolicy(keep_days=7, max_total_bytes=2100).apply(host, now=NOW)
    assert result.deleted == [files["old"], files["mid"]]


def test_limits_must_be_positive():
    with pytest.raises(ValueError):
        RetentionPolicy(keep_days=0)
    with pytest.raises(ValueError):
        RetentionPolicy(max_total_bytes=-1)


def _batch(n, start=0):
    records = np.zeros(n, dtype=layout.DTYPE)
    records["ac_pid"] = np.arange(start, start + n)
    records["kind"] = layout.KIND_PID
    return records


def test_file_sink_applies_it_after_each_rotation_and_keeps_the_current_file(tmp_path):
    root = str(tmp_path / "ds")
    limit = 200_000
    sink = FileSink(root, "npy", rotate_bytes=60_000, flush_records=64,
                    retention=RetentionPolicy(max_total_bytes=limit))
    written = 0
    with sink:
        for _ in range(40):
            sink.write(_batch(64, written))
            written += 64
            sink.tick()
            sink.wait_finished()   # rotation finishes files (and applies retention) off-thread
            complete, other = complete_files(root)
            # after a rotation the total fits again; in between it can grow by one file's worth
            assert sum(f.size for f in complete) + other <= limit + 60_000 + 64 * layout.DTYPE.itemsize
    assert len(sink.files) > 4
    survivors = find_files([root])
    assert survivors and len(survivors) < len(sink.files)
    assert set(survivors) <= set(sink.files)
    assert survivors[-1] == sink.files[-1]                  # the newest files stay
    kept = np.concatenate([np.load(p) for p in survivors])
    assert kept["ac_pid"].max() == written - 1               # ... with the latest records


def test_record_refuses_retention_for_a_single_file(tmp_path):
    run = subprocess.run([sys.executable, "-m", "taskstats_fast", "record", "--keep-days", "3", "--seconds", "1",
                          "-o", str(tmp_path / "one.npy")], capture_output=True, text=True)
    assert run.returncode == 2
    assert "--keep-days" in run.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "one.npy").exists()


def test_keep_days_removes_old_files_of_a_dataset_a_recording_continues(tmp_path):
    """A recording started into an existing dataset applies the limits to what is there."""
    root = tmp_path / "ds"
    old = root / "host=h" / "date=2026-01-01" / "part-old.npy"
    _file(str(old), 100, 0)
    os.utime(old, (time.time() - 40 * DAY, time.time() - 40 * DAY))
    sink = FileSink(str(root), "npy", rotate_bytes=10_000, hostname="h",
                    retention=RetentionPolicy(keep_days=30))
    with sink:
        sink.write(_batch(10))
    assert not old.exists()
    assert find_files([str(root)]) == sink.files


def test_a_sink_with_a_cap_below_one_file_keeps_the_file_it_closed_and_warns_once(tmp_path):
    root = str(tmp_path / "ds")
    sink = FileSink(root, "npy", rotate_bytes=1, flush_records=64,
                    retention=RetentionPolicy(max_total_bytes=1000))
    with pytest.warns(RuntimeWarning, match="is alone over the size cap") as caught:
        with sink:
            for i in range(4):
                sink.write(_batch(64, 64 * i))
    assert len([w for w in caught if "size cap" in str(w.message)]) == 1
    assert find_files([root]) == sink.files[-1:]            # the newest stays
    assert len(sink.deleted) == 3


def test_a_recording_directory_s_datasets_share_one_cap(tmp_path):
    """An interval recording's rows (DIR/host=h) and its PSI (DIR/_psi/host=h) are one
    directory to the cap: the oldest complete files go first whichever dataset they are in,
    never the newest of either, nor a file being written."""
    rows, psi = tmp_path / "ds" / "host=h", tmp_path / "ds" / "_psi" / "host=h"
    ages = {"rows-a": 9, "psi-a": 8, "rows-b": 7, "psi-b": 1.5, "rows-c": 1}
    path = {name: str((rows if name.startswith("rows") else psi) / "date=2026-11-30" /
                      f"part-{name}.npy") for name in ages}
    for name, age in ages.items():
        _file(path[name], 1000, age)
    _file(str(psi / "date=2026-11-30" / ".part-z.npy.inprogress"), 9000, 0, sidecar=False)
    sizes = {name: os.path.getsize(p) + 2 for name, p in path.items()}   # + its "{}" sidecar
    policy = RetentionPolicy(max_total_bytes=sizes["rows-b"] + sizes["psi-b"] + sizes["rows-c"])
    result = policy.apply(str(rows), now=NOW, shared=[str(psi)])
    assert sorted(result.deleted) == sorted([path["rows-a"], path["psi-a"]])
    assert result.bytes_freed == sizes["rows-a"] + sizes["psi-a"] and not result.over_cap
    # a cap below the newest file of each keeps both and says so; the PSI sink sees the same
    result = RetentionPolicy(max_total_bytes=1).apply(str(psi), now=NOW, shared=[str(rows)])
    assert result.deleted == [path["rows-b"]] and result.over_cap
    assert {f.path for f in complete_files(str(rows))[0] + complete_files(str(psi))[0]} == \
        {path["rows-c"], path["psi-b"]}
    assert os.path.exists(psi / "date=2026-11-30" / ".part-z.npy.inprogress")


def test_an_interval_recording_s_two_sinks_keep_the_directory_under_one_cap(tmp_path):
    from taskstats_fast.accounting.interval import Interval
    from taskstats_fast.recording import interval_rows as intervals
    from taskstats_fast.recording.psi_rows import psi_path, psi_rows, psi_schema

    root = str(tmp_path / "ds")
    rotate, limit = 20_000, 120_000
    policy = RetentionPolicy(max_total_bytes=limit)
    sink = FileSink(root, "npy", rotate_bytes=rotate, flush_records=1, hostname="h",
                    retention=policy, schema=intervals.interval_schema())
    pressure = FileSink(psi_path(root), "npy", rotate_bytes=rotate, flush_records=1,
                        hostname="h", retention=policy, schema=psi_schema())
    n = 64
    modified = {}   # each file's mtime when it was published
    with sink, pressure:
        for k in range(60):
            iv = Interval.from_arrays(k * 10**9, (k + 1) * 10**9, cgroups={7: "/a"}, columns={
                "ac_pid": np.arange(n), "ac_tgid": np.arange(n), "cgroup_id": [7] * n,
                "cpu_ns": [k] * n})
            sink.write(intervals.interval_rows(iv))
            pressure.write(np.repeat(psi_rows(iv), 40))
            for s in (sink, pressure):
                s.tick()
                s.wait_finished()
                modified.update((p, os.stat(p).st_mtime_ns) for p in s.files
                                if p not in modified and os.path.exists(p))
            on_disk = sum(os.path.getsize(os.path.join(d, f))
                          for d, _, names in os.walk(root) for f in names)
            # after a rotation the directory fits again: beyond it, at most the file each sink
            # is writing (its journal and the part, which the cap does not count)
            assert on_disk <= limit + 4 * rotate, (k, on_disk)
    assert sink.deleted and pressure.deleted          # both datasets gave up files
    survivors = set(find_files([root])) | set(find_files([psi_path(root)]))
    assert sink.files[-1] in survivors and pressure.files[-1] in survivors
    complete = complete_files(os.path.join(root, "host=h"))[0] + \
        complete_files(os.path.join(psi_path(root), "host=h"))[0]
    assert sum(f.size for f in complete) <= limit
    # the oldest went first across both: every survivor is newer than every deleted file
    deleted = set(sink.deleted) | set(pressure.deleted)
    assert max(modified[p] for p in deleted) <= min(modified[p] for p in survivors)


def test_each_sink_of_an_interval_recording_finds_the_other_s_host_directory(tmp_path):
    """The cap's scope, seen from either dataset: the rows' sink counts the PSI's files of the
    same host, the PSI's sink the rows' (and a plain dataset only its own)."""
    from taskstats_fast.recording.finishing import FinishedFiles
    from taskstats_fast.recording.paths import host_directory
    from taskstats_fast.recording.psi_rows import psi_path

    root = str(tmp_path / "ds")
    rows, psi = host_directory(root, "web 1"), host_directory(psi_path(root), "web 1")
    policy = RetentionPolicy(max_total_bytes=1000)
    assert FinishedFiles({}, rows, policy).shared == (psi,)
    assert FinishedFiles({}, psi, policy).shared == (rows,)
    assert FinishedFiles({}, rows, None).shared == ()
