"""The layout table against a C compiler.

tests/c/taskstats_structs.h declares struct taskstats v15 and v17 as the kernel headers do,
written independently of taskstats_fast/layout.py.  A small C program prints offsetof() of every
field and the per-version sizes; every offset and size the table derives (and DTYPE) must match.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from taskstats_fast import DTYPE, layout

HEADER = os.path.join(os.path.dirname(__file__), "c", "taskstats_structs.h")

# The last member of each struct version, from the kernel's header history (not from the table).
LAST_FIELD_OF_VERSION = {
    4: "cancelled_write_bytes", 5: "nivcsw", 6: "cpu_scaled_run_real_total",
    7: "freepages_delay_total", 8: "freepages_delay_total", 9: "thrashing_delay_total",
    10: "ac_btime64", 11: "compact_delay_total", 12: "ac_exe_inode", 13: "wpcopy_delay_total",
    14: "irq_delay_total", 16: "irq_delay_min", 17: "irq_delay_max_ts",
}
# sizeof(struct taskstats) per version as documented in shared/taskstats-abi.md
DOCUMENTED_SIZE = {4: 272, 5: 288, 6: 312, 7: 328, 8: 328, 9: 344, 10: 352, 11: 368, 12: 400,
                   13: 416, 14: 432, 15: 560, 16: 560, 17: 688}


@pytest.fixture(scope="module")
def compiler_says(tmp_path_factory):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.fail("no C compiler: the layout check needs cc (install gcc)")
    lines = ['#include <stddef.h>', '#include <stdio.h>', f'#include "{HEADER}"',
             '#define END(s, f) (offsetof(struct s, f) + sizeof(((struct s *)0)->f))',
             'int main(void) {']
    for f in layout.FIELDS:
        c = f.c_name or f.name
        lines.append(f'printf("v17 {f.name} %zu\\n", offsetof(struct taskstats_v17, {c}));')
        if f.since <= 15:
            lines.append(f'printf("v15 {f.name} %zu\\n", offsetof(struct taskstats_v15, {c}));')
    lines.append('printf("size 15 %zu\\n", sizeof(struct taskstats_v15));')
    lines.append('printf("size 17 %zu\\n", sizeof(struct taskstats_v17));')
    for v, last in LAST_FIELD_OF_VERSION.items():
        lines.append(f'printf("size {v} %zu\\n", (END(taskstats_v17, {last}) + 7) / 8 * 8);')
    lines.append("return 0; }")
    d = tmp_path_factory.mktemp("layout")
    src, exe = d / "offsets.c", d / "offsets"
    src.write_text("\n".join(lines))
    subprocess.run([cc, "-std=gnu11", "-Wall", "-Wextra", "-Werror", "-o", str(exe), str(src)], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    said = {"v15": {}, "v17": {}, "size": {}}
    for line in out.splitlines():
        kind, name, value = line.split()
        said[kind][int(name) if kind == "size" else name] = int(value)
    return said


def test_v17_offsets_match_compiler(compiler_says):
    assert layout.offsets(17) == compiler_says["v17"]


def test_v15_offsets_match_compiler(compiler_says):
    assert layout.offsets(15) == compiler_says["v15"]


@pytest.mark.parametrize("version", [v for v in range(layout.MIN_VERSION, 17) if v != 15])
def test_older_versions_are_v17_prefixes(compiler_says, version):
    offs = layout.offsets(version)
    assert offs == {name: compiler_says["v17"][name] for name in offs}
    assert max(offs.values()) < layout.STRUCT_SIZE[version]


@pytest.mark.parametrize("version", sorted(DOCUMENTED_SIZE))
def test_sizes_match_compiler_and_abi_notes(compiler_says, version):
    assert layout.STRUCT_SIZE[version] == compiler_says["size"][version] == DOCUMENTED_SIZE[version]


def test_dtype_mirrors_v17_byte_for_byte(compiler_says):
    for name, off in compiler_says["v17"].items():
        if layout.FIELD_BY_NAME[name].padding:
            assert name not in DTYPE.names
            continue
        dt, at = DTYPE.fields[name][:2]
        assert at == off, name
        assert dt.itemsize == layout.FIELD_BY_NAME[name].size, name
    assert layout.STATS_SIZE == compiler_says["size"][17]
    meta_start = min(DTYPE.fields[name][1] for name, _, _ in layout.META_FIELDS)
    assert meta_start >= layout.STATS_SIZE


def test_v15_copy_plan_lands_every_field_at_its_v17_place(compiler_says):
    v15, v17 = compiler_says["v15"], compiler_says["v17"]
    runs = layout.copy_segments(15)
    for name, src in v15.items():
        size = layout.FIELD_BY_NAME[name].size
        covering = [(s, d) for s, d, n in runs if s <= src and src + size <= s + n]
        assert len(covering) == 1, name
        s, d = covering[0]
        assert d + (src - s) == v17[name], name


def test_combining_arrays_keeps_dtype_byte_for_byte():
    """numpy re-lays structured dtypes out by natural alignment when it combines arrays; the
    named holes make that the identity, so batches concatenate into DTYPE, not a look-alike."""
    import numpy as np
    batches = [np.zeros(2, DTYPE), np.ones(3, DTYPE)]
    assert np.result_type(DTYPE) == DTYPE
    joined = np.concatenate(batches)
    assert joined.dtype == DTYPE and joined.dtype.itemsize == DTYPE.itemsize
    assert all(not n.startswith("_pad") for n in layout.RECORD_FIELDS)
    assert set(DTYPE.names) - set(layout.RECORD_FIELDS) == {"_pad113"}
