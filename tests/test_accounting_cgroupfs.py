"""accounting/cgroupfs.py without a kernel: finding cgroup v2 in mountinfo, pressure files, and a
walk over a fake hierarchy (a plain directory tree with cgroup.threads files); and, on this host's
own hierarchy, what its true root's pressure files are."""

import os

import numpy as np

from under_ci import unavailable

from taskstats_fast.accounting import cgroupfs
from taskstats_fast.accounting.interval import PSI_DTYPE

HYBRID = """\
25 30 0:23 / /sys rw,nosuid - sysfs sysfs rw
31 25 0:27 / /sys/fs/cgroup ro - tmpfs tmpfs ro,mode=755
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw
42 31 0:39 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
"""


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)


def test_find_cgroup2_hybrid_pure_none_and_escaped(tmp_path):
    mi = tmp_path / "mountinfo"
    _write(mi, HYBRID)
    assert cgroupfs.find_cgroup2(str(mi)) == "/sys/fs/cgroup/unified"
    _write(mi, "29 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n")
    assert cgroupfs.find_cgroup2(str(mi)) == "/sys/fs/cgroup"
    _write(mi, "42 31 0:39 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n")
    assert cgroupfs.find_cgroup2(str(mi)) is None
    # a bind mount of a sub-cgroup is passed over for the hierarchy's root; spaces are escaped
    _write(mi, "50 1 0:26 /sub /mnt/sub rw - cgroup2 cgroup2 rw\n"
               "51 1 0:26 / /mnt/my\\040cg rw - cgroup2 cgroup2 rw\n")
    assert cgroupfs.find_cgroup2(str(mi)) == "/mnt/my cg"
    assert cgroupfs.find_cgroup2(str(tmp_path / "absent")) is None


def test_pressure_totals(tmp_path):
    _write(tmp_path / "cpu.pressure", "some avg10=1.00 avg60=0.50 avg300=0.10 total=1234\n"
                                      "full avg10=0.00 avg60=0.00 avg300=0.00 total=56\n")
    _write(tmp_path / "io.pressure", "some avg10=0.00 avg60=0.00 avg300=0.00 total=7\n")
    out = np.zeros(1, PSI_DTYPE)[0]
    found = []
    cgroupfs.read_pressure_totals(str(tmp_path), out, found)
    assert found == ["cpu", "io"]
    assert (out["cpu_some_us"], out["cpu_full_us"], out["io_some_us"], out["memory_some_us"]) == \
        (1234, 56, 7, 0)


def test_walk_lists_every_thread_with_its_cgroup(tmp_path):
    root = tmp_path / "cg"
    (root / "a" / "b").mkdir(parents=True)
    (root / "c").mkdir()
    _write(root / "cgroup.threads", "1\n2\n")
    _write(root / "a" / "cgroup.threads", "30\n10\n")
    _write(root / "a" / "b" / "cgroup.threads", "")
    _write(root / "c" / "cgroup.threads", "5\n")
    _write(root / "a" / "cpu.pressure", "some avg10=0 avg60=0 avg300=0 total=99\n")
    seen = cgroupfs.look(str(root))
    ino = {rel: os.stat(root / rel.lstrip("/")).st_ino for rel in ("/", "/a", "/a/b", "/c")}
    assert seen.paths == {v: k for k, v in ino.items()}
    assert seen.tids.tolist() == [1, 2, 5, 10, 30]
    assert seen.tid_cgroup.tolist() == [ino["/"], ino["/"], ino["/c"], ino["/a"], ino["/a"]]
    assert seen.cgroup_of(np.array([10, 5, 4], np.uint32)).tolist() == [ino["/a"], ino["/c"], 0]
    a = seen.psi[seen.psi["cgroup_id"] == ino["/a"]][0]
    assert a["cpu_some_us"] == 99


def test_no_cgroup2_means_no_threads_but_system_pressure():
    seen = cgroupfs.look(None)
    assert seen.root == "" and len(seen.tids) == 0 and seen.paths == {}


def test_a_file_made_in_one_piece_is_read_whole_with_one_call_or_more(tmp_path, monkeypatch):
    """``read(one_piece=True)`` stops at a read shorter than asked for (one pread for a pressure
    file); a file longer than one read is still read to its end."""
    small, large = tmp_path / "cpu.pressure", tmp_path / "big"
    _write(small, "some avg10=0.00 avg60=0.00 avg300=0.00 total=7\n")
    _write(large, "x" * (3 * 65536 + 5))
    calls = []
    real = os.pread
    monkeypatch.setattr(cgroupfs.os, "pread", lambda fd, n, at: calls.append(at) or real(fd, n, at))
    files = cgroupfs.OpenFiles()
    try:
        for _ in range(2):                       # opened, then kept open
            calls.clear()
            assert files.read(str(small), one_piece=True).endswith(b"total=7\n") and calls == [0]
        calls.clear()
        assert files.read(str(small)) == small.read_bytes() and len(calls) == 2   # to the empty read
        assert len(files.read(str(large), one_piece=True)) == 3 * 65536 + 5
    finally:
        files.close()


def _fake_tree(root):
    (root / "a" / "b").mkdir(parents=True)
    (root / "c").mkdir()
    for rel, text in (("", "1\n2\n"), ("a", "30\n10\n"), ("a/b", ""), ("c", "5")):
        _write(root / rel / "cgroup.threads", text)
    _write(root / "a" / "cpu.pressure", "some avg10=0 avg60=0 avg300=0 total=99\n"
                                         "full avg10=0 avg60=0 avg300=0 total=9\n")
    _write(root / "a" / "cpu.stat", "usage_usec 77\nuser_usec 70\n")


def _same(kept, walked):
    assert kept.paths == walked.paths and kept.parent_of == walked.parent_of
    assert kept.tids.tolist() == walked.tids.tolist()
    assert kept.tid_cgroup.tolist() == walked.tid_cgroup.tolist()
    assert kept.psi.tolist() == walked.psi.tolist() and kept.resources == walked.resources
    # every caller looks with the kept files first: a total can only have grown since
    assert kept.system_psi["cpu_some_us"] <= walked.system_psi["cpu_some_us"]


def test_a_kept_walk_reads_what_a_walk_reads_and_walks_again_when_the_tree_changes(tmp_path):
    """The second look reads the first walk's files in one C call: the same threads, cgroups,
    pressure and cpu.stat as a fresh walk, including a thread that moved and a file without a
    final newline; a new, removed or renamed child directory makes the look walk again."""
    root = tmp_path / "cg"
    _fake_tree(root)
    files = cgroupfs.OpenFiles()
    try:
        first = cgroupfs.look(str(root), files=files)
        kept = files.walk
        assert kept is not None and first.kept is kept
        _write(root / "c" / "cgroup.threads", "5\n30\n")      # 30 listed twice: read last wins
        again, walked = cgroupfs.look(str(root), files=files), cgroupfs.look(str(root))
        assert files.walk is kept and again.kept is kept       # no walk: the kept files were read
        _same(again, walked)
        again.read_usage(files)
        walked.read_usage()
        assert again.usage_us == walked.usage_us and 77 in again.usage_us.values()
        for change in (lambda: (root / "a" / "new").mkdir(),
                       lambda: (root / "a" / "new").rename(root / "a" / "renamed"),
                       lambda: ((root / "a" / "renamed" / "cgroup.threads").unlink(),
                                (root / "a" / "renamed").rmdir())):
            change()
            if (root / "a" / "renamed").exists():
                _write(root / "a" / "renamed" / "cgroup.threads", "44\n")
            looked = cgroupfs.look(str(root), files=files)
            assert files.walk is not kept, "the tree changed: the look walked again"
            kept = files.walk
            _same(looked, cgroupfs.look(str(root)))
            _same(cgroupfs.look(str(root), files=files), cgroupfs.look(str(root)))
            assert files.walk is kept
    finally:
        files.close()


def test_a_kept_walk_grows_for_more_threads_than_it_saw(tmp_path):
    root = tmp_path / "cg"
    _fake_tree(root)
    files = cgroupfs.OpenFiles()
    try:
        cgroupfs.look(str(root), files=files)
        _write(root / "c" / "cgroup.threads", "".join(f"{t}\n" for t in range(100, 5100)))
        got = cgroupfs.look(str(root), files=files)
        assert len(got.tids) == 5000 + 4 and got.kept is files.walk
        _same(got, cgroupfs.look(str(root)))
    finally:
        files.close()


def test_no_walk_is_kept_past_the_open_files_limit(tmp_path):
    root = tmp_path / "cg"
    _fake_tree(root)
    files = cgroupfs.OpenFiles(limit=3)
    try:
        first = cgroupfs.look(str(root), files=files)
        assert files.walk is None and first.kept is None
        _same(cgroupfs.look(str(root), files=files), cgroupfs.look(str(root)))
    finally:
        files.close()


def _root_totals(root, resources):
    return {r: cgroupfs._totals(open(f"{root}/{r}.pressure", "rb").read()) for r in resources}


def test_the_true_roots_pressure_is_proc_pressures_read_once():
    """The kernel shows psi_system in both /proc/pressure and the root cgroup's files: a look
    reads it once and gives the root row those figures, which lie between the root's own
    files read before and after the look, by the walk and by the kept walk's C call alike."""
    root = cgroupfs.find_cgroup2()
    if root is None or not os.path.exists(f"{cgroupfs.SYSTEM_PRESSURE_DIR}/cpu"):
        unavailable("needs cgroup v2 and PSI (/proc/pressure)")
    if os.stat(root).st_ino != cgroupfs.ROOT_CGROUP_INO:
        unavailable(f"cgroup v2 at {root} is a cgroup namespace's root, not the hierarchy's")
    files = cgroupfs.OpenFiles()
    try:
        for _ in range(3):            # the walk, then looks through the kept walk
            before = _root_totals(root, ("cpu", "io", "memory"))
            got = cgroupfs.look(root, files=files)
            after = _root_totals(root, got.resources)
            row = got.psi[got.psi["cgroup_id"] == cgroupfs.ROOT_CGROUP_INO]
            assert len(row) == 1 and set(got.resources) >= {"cpu", "io", "memory"}
            for resource in got.resources:
                for i, kind in enumerate(("some", "full")):
                    name = f"{resource}_{kind}_us"
                    assert row[0][name] == got.system_psi[name], name
                    if resource in before:
                        assert before[resource][i] <= row[0][name] <= after[resource][i], name
            assert not [p for p in files.kept if p.startswith(f"{root}/") and p.endswith(".pressure")
                        and os.path.dirname(p) == root.rstrip("/")], "the root's files were read"
        assert files.walk is not None
    finally:
        files.close()
