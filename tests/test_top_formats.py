"""``top -b --format json|csv`` on synthetic intervals (no kernel): one JSON object per interval
and a CSV with one header, every name from the one naming table, the values those of the text
table, a folded row's pid missing, and the column chooser's choice applied."""

from __future__ import annotations

import csv
import io
import json

import pytest

from taskstats_fast import schema
from taskstats_fast.accounting.interval import BORN
from taskstats_fast.live import top, top_formats

from top_intervals import CGROUPS, START, burst, interval, task


def _rows():
    return [task(100, comm=b"leader", cpu_ns=400_000_000, read_bytes=3 << 20, ac_uid=0),
            task(101, 100, comm=b"worker", cpu_ns=200_000_000, blkio_delay_total=100_000_000),
            task(7, comm=b"other", cpu_ns=10_000_000, cgroup_id=5)] + burst(1000, 3)


def _print(fmt, intervals, state=None, procfs=None):
    printer = top_formats.FORMATS[fmt](state or top.TopState())
    return "".join(printer(iv, None, procfs, i == 0) for i, iv in enumerate(intervals))


def test_json_is_one_object_per_interval_with_the_text_tables_figures():
    ivs = [interval(_rows(), seconds=2.0), interval([task(7, cpu_ns=5_000_000)], seconds=0.5, lost=3)]
    lines = _print("json", ivs).splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["interval_start"] == "2023-11-14T22:13:20.000000Z"
    assert first["interval_end"] == "2023-11-14T22:13:22.000000Z"
    assert (first["grouping"], first["tasks"], first["exited"], first["lost"]) == ("process", 6, 3, 0)
    assert second["lost"] == 3 and [r["ac_tgid"] for r in second["rows"]] == [7]
    rows = {r["ac_comm"]: r for r in first["rows"]}
    assert rows["leader"]["ac_tgid"] == 100 and rows["leader"]["tasks"] == 2
    assert rows["leader"]["cpu_pct"] == pytest.approx(30.0)             # 600 ms of 2 s
    assert rows["leader"]["blkio_delay_pct"] == pytest.approx(5.0)
    assert rows["leader"]["read_bytes_per_s"] == pytest.approx(1.5 * 2**20)
    assert rows["leader"]["user"] == "root"
    # the three short-lived burstcmd processes are one folded row with no pid
    assert rows["burstcmd"]["ac_tgid"] is None and rows["burstcmd"]["processes"] == 3
    assert rows["burstcmd"]["born"] == 3 and rows["burstcmd"]["exited"] == 3
    # the same rows, in the same order, as the text table
    table = top.batch_table(ivs[0], top.TopState())
    assert [r["ac_comm"] for r in first["rows"]] == [n.split(" (")[0] for n in table.names]


def test_every_name_is_the_naming_tables_with_its_unit():
    state = top.TopState()
    for grouping in top.GROUPINGS:
        fields = top_formats.row_fields(grouping, state, procfs=True) + top_formats.interval_fields()
        for field in fields:
            name = schema.column_name(field)
            unit = schema.ROW_COLUMNS[field][1] if field in schema.ROW_COLUMNS else \
                schema.COLUMN_BY_NAME[name].unit
            assert name.endswith({"%": "_pct", "bytes/s": "_bytes_per_s", "bytes": "_bytes",
                                  "us": "_us", "ns": "_ns"}.get(unit, "")), (field, unit)
    with pytest.raises(KeyError):
        schema.column_name("no_such_figure")


@pytest.mark.parametrize("grouping", top.GROUPINGS)
def test_csv_has_one_header_and_a_line_per_row_per_interval(grouping):
    ivs = [interval(_rows()), interval(_rows())]
    state = top.TopState(grouping=grouping)
    text = _print("csv", ivs, state)
    lines = list(csv.reader(io.StringIO(text)))
    header = lines[0]
    assert header[:3] == ["interval_start", "interval_end", "lost"]
    assert sum(1 for line in lines if line == header) == 1
    objects = [json.loads(line) for line in _print("json", ivs, state).splitlines()]
    want = [r for o in objects for r in o["rows"]]
    got = list(csv.DictReader(io.StringIO(text)))
    assert len(got) == len(want) > 0
    for g, w in zip(got, want):
        for name, value in w.items():
            assert g[name] == ("" if value is None else str(value)), (name, g, w)


def test_the_chosen_columns_are_the_ones_printed():
    state = top.TopState(hidden=frozenset(top.CHOOSABLE) - {"cpu", "write"})
    row = json.loads(_print("json", [interval(_rows())], state))["rows"][0]
    assert "cpu_pct" in row and "write_bytes_per_s" in row
    assert "read_bytes_per_s" not in row and "cpu_delay_pct" not in row
    text = "\n".join(top.render(interval(_rows()), state))
    assert "CPU%" in text and "WR/s" in text and "RD/s" not in text


def test_names_that_are_not_text_stay_parseable():
    iv = interval([task(5, comm=b'a"b,\nc\xff', cpu_ns=1_000_000, state=BORN)])
    obj = json.loads(_print("json", [iv]))
    assert obj["rows"][0]["ac_comm"] == 'a"b,\nc\ufffd'
    lines = list(csv.DictReader(io.StringIO(_print("csv", [iv]))))
    assert lines[0]["ac_comm"] == 'a"b,\nc\ufffd'


def test_cgroup_rows_carry_the_path():
    obj = json.loads(_print("json", [interval(_rows())], top.TopState(grouping="cgroup")))
    # cgroup_id 0 is unknown: an empty path, as the naming table says
    assert {r["cgroup"] for r in obj["rows"]} == {"", CGROUPS[5], CGROUPS[9]}
    assert all(isinstance(r["cgroup_id"], int) for r in obj["rows"])


def test_an_interval_with_no_rows_is_still_one_json_object():
    obj = json.loads(_print("json", [interval([])]))
    assert obj["rows"] == [] and obj["tasks"] == 0
    assert obj["interval_start"] == "2023-11-14T22:13:20.000000Z" and START % 10**9 == 0


def _readme_table():
    """{column name: unit} from the README's table of top's json/csv columns."""
    import pathlib
    import re
    text = (pathlib.Path(__file__).parent.parent / "README.md").read_text()
    section = text[text.index("## Live view: `taskstats-fast top`"):]
    table = section[section.index("| column | in | unit | what |"):]
    out = {}
    for line in table.splitlines()[2:]:
        if not line.startswith("|"):
            break
        name, _where, unit, what = (cell.strip() for cell in line.strip("|").split("|")[:4])
        names = re.findall(r"`(\w+_delay_pct)`", what) if name == "`<class>_delay_pct`" else [name.strip("`")]
        out.update({n: unit for n in names})
    return out


def test_the_readme_table_lists_every_column_the_formats_write_with_its_unit():
    state = top.TopState()
    fields = set(top_formats.interval_fields())
    for grouping in top.GROUPINGS:
        fields |= set(top_formats.row_fields(grouping, state, procfs=True))
    written = {}
    for field in fields:
        name = schema.column_name(field)
        written[name] = (schema.ROW_COLUMNS[field][1] if field in schema.ROW_COLUMNS
                         else schema.COLUMN_BY_NAME[name].unit)
    assert _readme_table() == written
