"""taskstats_fast.kernel.cpumask: parse/format round trips, every error case, sysfs reading, the
kernel length limit and shard splitting.  No kernel needed (sysfs is faked in a temp dir)."""

from __future__ import annotations

import pytest

from taskstats_fast.kernel import cpumask
from taskstats_fast.errors import CpumaskError

# (string, CPUs it names, its shortest form)
ROUND_TRIPS = [
    ("0", (0,), "0"),
    ("7", (7,), "7"),
    ("0-3", (0, 1, 2, 3), "0-3"),
    ("0-3,8,10-11", (0, 1, 2, 3, 8, 10, 11), "0-3,8,10-11"),
    ("0,1", (0, 1), "0-1"),
    ("0,1,2,3", (0, 1, 2, 3), "0-3"),
    ("3,2,1", (1, 2, 3), "1-3"),
    ("5-5", (5,), "5"),
    ("0-3,2-6", tuple(range(7)), "0-6"),
    ("1,1,1", (1,), "1"),
    ("0,2,4", (0, 2, 4), "0,2,4"),
    ("10-11,100", (10, 11, 100), "10-11,100"),
    ("0-15:2/4", (0, 1, 4, 5, 8, 9, 12, 13), "0-1,4-5,8-9,12-13"),
    ("0-9:1/3", (0, 3, 6, 9), "0,3,6,9"),
    ("0-7:4/4", tuple(range(8)), "0-7"),
    ("0-3\n", (0, 1, 2, 3), "0-3"),          # a sysfs file's trailing newline
    ("  4-5 ", (4, 5), "4-5"),
    ("0010", (10,), "10"),
    ("8191", (8191,), "8191"),
]


@pytest.mark.parametrize("text,cpus,shortest", ROUND_TRIPS)
def test_parse_and_format_round_trip(text, cpus, shortest):
    assert cpumask.parse(text) == cpus
    assert cpumask.format(cpus) == shortest
    assert cpumask.parse(shortest) == cpus
    assert cpumask.format(reversed(cpus)) == shortest


# (string, the token the error must name, its position)
PARSE_ERRORS = [
    ("", "", 0),
    ("   ", "", 0),
    (",", "", 0),
    ("0,", "", 2),
    (",0", "", 0),
    ("0,,1", "", 2),
    ("3-1", "3-1", 0),
    ("0-3,9-8", "9-8", 4),
    ("x", "x", 0),
    ("0-3,a", "a", 4),
    ("0-3,8,10-y", "10-y", 6),
    ("-1", "-1", 0),
    ("1-", "1-", 0),
    ("1-2-3", "1-2-3", 0),
    ("1.5", "1.5", 0),
    ("0x3", "0x3", 0),
    ("1 ,2", "1 ", 0),
    ("0, 1", " 1", 2),
    ("\u0661", "\u0661", 0),                 # a non-ASCII digit
    ("0-7:5/4", "0-7:5/4", 0),
    ("0-7:0/4", "0-7:0/4", 0),
    ("0-7:1/0", "0-7:1/0", 0),
    ("0-7:2", "0-7:2", 0),
    ("3:1/2", "3:1/2", 0),
]


@pytest.mark.parametrize("text,token,position", PARSE_ERRORS)
def test_parse_errors_name_token_and_position(text, token, position):
    with pytest.raises(CpumaskError) as info:
        cpumask.parse(text)
    err = info.value
    assert isinstance(err, ValueError)
    assert err.token == token
    assert err.position == position
    assert f"position {position}" in str(err) or text.strip() == ""
    if token:
        assert repr(token) in str(err)


def test_parse_refuses_an_empty_sysfs_file():
    with pytest.raises(CpumaskError, match="empty CPU list"):
        cpumask.parse("\n")


def test_parse_rejects_non_strings():
    with pytest.raises(TypeError):
        cpumask.parse([0, 1])


@pytest.mark.parametrize("bad", [[-1], [1.0], ["1"], [True], [None]])
def test_format_rejects_non_cpu_values(bad):
    with pytest.raises(CpumaskError):
        cpumask.format(bad)


def test_format_empty_and_numpy_ints():
    np = pytest.importorskip("numpy")
    assert cpumask.format([]) == ""
    assert cpumask.format(np.arange(4)) == "0-3"


@pytest.fixture
def fake_sysfs(tmp_path, monkeypatch):
    def make(possible, online):
        (tmp_path / "possible").write_text(possible + "\n")
        (tmp_path / "online").write_text(online + "\n")
        monkeypatch.setattr(cpumask, "SYSFS_CPU", str(tmp_path))
    return make


def test_possible_and_online_from_sysfs(fake_sysfs):
    fake_sysfs("0-7", "0-3,6")
    assert cpumask.possible() == tuple(range(8))
    assert cpumask.online() == (0, 1, 2, 3, 6)


def test_sysfs_missing_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(cpumask, "SYSFS_CPU", str(tmp_path / "nowhere"))
    with pytest.raises(CpumaskError, match="cannot read .*possible"):
        cpumask.possible()


def test_real_sysfs_is_consistent():
    possible, online = cpumask.possible(), cpumask.online()
    assert online and set(online) <= set(possible)


def test_validate_against_possible(fake_sysfs):
    fake_sysfs("0-3", "0-3")
    possible = cpumask.possible()
    assert cpumask.validate([3, 1, 1], possible) == (1, 3)
    with pytest.raises(CpumaskError, match="CPU 4 is not possible .*possible CPUs: 0-3") as info:
        cpumask.validate([0, 4], possible)
    assert info.value.token == "4"
    with pytest.raises(CpumaskError, match="empty CPU set"):
        cpumask.validate([], possible)
    assert cpumask.validate([9], possible_cpus=range(16)) == (9,)


def test_wire_string_is_the_shortest_form_and_errors_name_the_token(fake_sysfs):
    fake_sysfs("0-3", "0-1")
    assert cpumask.CpuSet.resolve("0,1,2").wire() == "0-2"
    assert cpumask.CpuSet.resolve([2, 3, 0]).wire() == "0,2-3"
    with pytest.raises(CpumaskError) as info:
        cpumask.CpuSet.resolve("0-1,3-5")
    assert info.value.token == "3-5" and info.value.position == 4
    assert "CPU 4" in str(info.value) and "possible CPUs: 0-3" in str(info.value)
    with pytest.raises(CpumaskError, match="reversed"):
        cpumask.CpuSet.resolve("2-1")


def test_length_limit_is_conservative():
    # NR_CPUS >= possible CPUs, so 100 + 6 * possible (minus the NUL) is never above the kernel's limit
    assert cpumask.max_length(2) == 111
    assert cpumask.max_length(8192) == 100 + 6 * 8192 - 1
    assert cpumask.check_length("0" * 111, 2) == "0" * 111
    with pytest.raises(CpumaskError, match="112 bytes is longer than the 111"):
        cpumask.check_length("0," * 55 + "10", 2)
    with pytest.raises(CpumaskError, match="longer than"):
        cpumask.check_length("x" * 200, 2)


def test_shortest_form_of_any_set_fits_the_limit(monkeypatch):
    # worst case: every other CPU of a large machine, each number with its comma <= 6 bytes
    cpus = range(0, 8192, 2)
    assert len(cpumask.format(cpus)) <= cpumask.max_length(8192)
    monkeypatch.setattr(cpumask, "possible", lambda: tuple(range(8192)))
    assert cpumask.CpuSet.resolve(cpus).wire() == cpumask.format(cpus)


SPLITS = [
    (range(8), 1, [tuple(range(8))]),
    (range(8), 2, [(0, 1, 2, 3), (4, 5, 6, 7)]),
    (range(8), 3, [(0, 1, 2), (3, 4, 5), (6, 7)]),
    (range(8), 8, [(i,) for i in range(8)]),
    ([0, 1, 8, 10, 11], 2, [(0, 1, 8), (10, 11)]),
    ([5, 3, 4, 3], 3, [(3,), (4,), (5,)]),
    (range(10), 4, [(0, 1, 2), (3, 4, 5), (6, 7), (8, 9)]),
]


@pytest.mark.parametrize("cpus,k,expected", SPLITS)
def test_split_contiguous_balanced(cpus, k, expected):
    shards = cpumask.split(cpus, k)
    assert shards == expected
    assert sorted(c for s in shards for c in s) == sorted(set(cpus))
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("k", [0, -1, 9])
def test_split_bad_counts(k):
    with pytest.raises(CpumaskError, match="choose between 1 and 8"):
        cpumask.split(range(8), k)


def test_split_type_errors():
    with pytest.raises(TypeError):
        cpumask.split(range(4), 2.0)
    with pytest.raises(CpumaskError):
        cpumask.split([], 1)


# ---- CpuSet: resolved once, formatted at the wire ------------------------------------------------

def test_cpuset_resolves_strings_numbers_and_none_alike(fake_sysfs):
    fake_sysfs("0-7", "0-7")
    assert cpumask.CpuSet.resolve("3,1-2,2") == (1, 2, 3)
    assert cpumask.CpuSet.resolve([3, 1, 2, 2]) == (1, 2, 3)
    assert cpumask.CpuSet.resolve(None) == tuple(range(8))
    cpus = cpumask.CpuSet.resolve("0,1,2,3,5")
    assert cpus.wire() == "0-3,5" and str(cpus) == "0-3,5" and repr(cpus) == "CpuSet('0-3,5')"
    assert cpumask.CpuSet.resolve(cpus) is cpus          # already resolved: no second pass


def test_cpuset_refuses_impossible_cpus_naming_the_token(fake_sysfs):
    fake_sysfs("0-3", "0-3")
    with pytest.raises(CpumaskError, match=r"CPU 4 \(in '3-5' at position 2") as e:
        cpumask.CpuSet.resolve("1,3-5")
    assert (e.value.token, e.value.position) == ("3-5", 2)
    with pytest.raises(CpumaskError, match="CPU 9 is not possible"):
        cpumask.CpuSet.resolve([9])
    with pytest.raises(CpumaskError, match="empty"):
        cpumask.CpuSet.resolve([])


def test_cpuset_shards_are_cpusets(monkeypatch):
    monkeypatch.setattr(cpumask, "possible", lambda: tuple(range(8)))
    cpus = cpumask.CpuSet.resolve(range(8))
    shards = cpus.split(3)
    assert shards == [(0, 1, 2), (3, 4, 5), (6, 7)]
    assert all(isinstance(s, cpumask.CpuSet) for s in shards) and shards[2].wire() == "6-7"



# ---- huge ranges: refused before they are expanded -----------------------------------------------

def _peak_bytes(fn):
    import tracemalloc
    tracemalloc.start()
    try:
        with pytest.raises(CpumaskError) as info:
            fn()
        return tracemalloc.get_traced_memory()[1], info.value
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("text", ["0-99999999999", "1,0-99999999999:3/4", "99999999999",
                                  "0-" + "9" * 4000])
def test_a_huge_range_is_refused_against_the_possible_cpus_without_expanding_it(fake_sysfs, text):
    fake_sysfs("0-3", "0-3")
    peak, error = _peak_bytes(lambda: cpumask.CpuSet.resolve(text))
    assert peak < 1 << 20, f"{peak:,} bytes allocated to refuse {text[:20]!r}"
    assert "not possible" in str(error) or "18 digits" in str(error)


def test_parse_refuses_a_cpu_number_no_machine_has_without_expanding_it():
    peak, error = _peak_bytes(lambda: cpumask.parse("0-99999999999"))
    assert peak < 1 << 20 and "CPU 99,999,999,999" in str(error) and error.token == "0-99999999999"
    limit = cpumask.CPU_NUMBER_LIMIT
    assert cpumask.parse(f"{limit - 1}") == (limit - 1,)
    assert cpumask.parse(f"0-{limit + 5}:1/{limit + 6}") == (0,)   # names CPU 0 only
    with pytest.raises(CpumaskError, match=f"names CPU {limit:,}"):
        cpumask.parse(f"0-{limit}")


@pytest.mark.parametrize("possible,text,first_bad", [
    ("0-3", "0-99", 4), ("0-3,8-11", "0-99", 4), ("0-3,8-11", "8-99", 12),
    ("0-15", "0-99:1/10", 20), ("0-15", "0-99:2/10", 20), ("0-15", "0-99:8/10", 16),
    ("0-3", "7-99", 7), ("0-1", "2", 2),
])
def test_the_first_impossible_cpu_of_a_clipped_range_is_the_one_named(fake_sysfs, possible, text,
                                                                      first_bad):
    fake_sysfs(possible, possible)
    with pytest.raises(CpumaskError, match=f"CPU {first_bad} \\(in '{text}'"):
        cpumask.CpuSet.resolve(text)


def test_a_huge_iterable_of_cpus_fails_at_its_first_impossible_cpu(fake_sysfs):
    fake_sysfs("0-3", "0-3")
    peak, error = _peak_bytes(lambda: cpumask.CpuSet.resolve(range(10 ** 12)))
    assert peak < 1 << 20 and "CPU 4 is not possible" in str(error)
