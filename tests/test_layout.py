"""layout.DELAY_CLASSES: the one list of delay classes, checked against the field table."""

from __future__ import annotations

import re

from taskstats_fast import layout, recording
from taskstats_fast import schema as frames
from taskstats_fast.kernel import delayacct


def test_every_delay_field_belongs_to_one_class_with_its_version():
    pattern = re.compile(r"^([a-z]+)_(count|delay_total|delay_max|delay_min|delay_max_ts_n?sec)$")
    prefixes = {m.group(1) for f in layout.FIELDS if (m := pattern.match(f.name))}
    assert prefixes == {c.name for c in layout.DELAY_CLASSES}
    for c in layout.DELAY_CLASSES:
        assert layout.FIELD_BY_NAME[f"{c.name}_count"].since == c.since
        assert layout.FIELD_BY_NAME[f"{c.name}_delay_total"].since == c.since


def test_classes_are_in_the_struct_order_of_the_max_min_block():
    maxes = [f.name[:-len("_delay_max")] for f in layout.FIELDS if f.name.endswith("_delay_max")]
    assert maxes == [c.name for c in layout.DELAY_CLASSES]
    assert frames.DELAY_CLASSES == tuple(maxes)


def test_only_run_queue_delays_ignore_the_sysctl():
    assert [c.name for c in layout.DELAY_CLASSES if not c.switched] == ["cpu"]
    switched = {c.name for c in layout.DELAY_CLASSES if c.switched}
    assert {f.split("_", 1)[0] for f in delayacct.DELAYACCT_FIELDS} == switched
    for c in layout.DELAY_CLASSES:
        assert (c.label in delayacct.DELAYACCT_OFF_MESSAGE) == c.switched or c.name == "cpu"


def test_reports_and_summaries_use_the_labels():
    assert all(f"{c.name}_delay_total_ns" in recording.SUMMARY_COLUMNS for c in layout.DELAY_CLASSES)
    assert len({c.label for c in layout.DELAY_CLASSES}) == len(layout.DELAY_CLASSES)
