"""The README's field reference is generated from the layout table (tests/field_reference.py)
and must be current."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from taskstats_fast import _version, layout
from taskstats_fast import schema as frames

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
TOOL = os.path.join(ROOT, "tests", "field_reference.py")
sys.path.insert(0, os.path.dirname(TOOL))
import field_reference as docs  # noqa: E402  (a script of the source tree, not a package module)


def readme_text():
    with open(README, encoding="utf-8") as f:
        return f.read()


def test_readme_field_reference_is_current():
    text = readme_text()
    block = text[text.index(docs.BEGIN):text.index(docs.END) + len(docs.END)]
    assert block == docs.render_block(), \
        "README.md's field reference is stale: run `python tests/field_reference.py`"


def test_every_field_and_its_column_is_in_the_table():
    table = "\n".join(docs.fields_table())
    for f in layout.FIELDS:
        if f.padding:
            assert f"`{f.name}`" not in table
            continue
        assert f"| `{f.name}` |" in table, f.name
        assert f"`{frames.COLUMN_FOR_FIELD[f.name]}` |" in table, f.name
    for name, _, _ in layout.META_FIELDS:
        assert f"| `{name}` |" in table, name


def test_a_changed_layout_makes_the_check_fail(tmp_path, monkeypatch):
    stale = tmp_path / "README.md"
    stale.write_text(readme_text(), encoding="utf-8")
    assert docs.update_file(str(stale), check=True) is False
    renamed = [layout.Field("version", "__u16", 1, "", "a new meaning")] + list(layout.FIELDS[1:])
    monkeypatch.setattr(layout, "FIELDS", tuple(renamed))
    assert docs.update_file(str(stale), check=True) is True
    assert docs.update_file(str(stale)) is True          # rewrites ...
    assert "a new meaning" in stale.read_text(encoding="utf-8")
    assert docs.update_file(str(stale), check=True) is False   # ... and is then current


def test_update_keeps_everything_outside_the_markers():
    text = f"before\n{docs.BEGIN}\nold table\n{docs.END}\nafter\n"
    new = docs.update_text(text)
    assert new.startswith("before\n") and new.endswith("\nafter\n")
    assert "old table" not in new and docs.render_block() in new


def test_missing_markers_are_an_error():
    with pytest.raises(ValueError, match="fields:begin"):
        docs.update_text("no markers here")


def test_check_command_exit_status(tmp_path):
    stale = tmp_path / "README.md"
    stale.write_text(f"{docs.BEGIN}\n{docs.END}\n", encoding="utf-8")
    cmd = [sys.executable, TOOL, "--check", "--readme", str(stale)]
    assert subprocess.run(cmd, capture_output=True).returncode == 1
    assert subprocess.run(cmd[:-3] + ["--readme", str(stale)], capture_output=True).returncode == 0
    assert subprocess.run(cmd, capture_output=True).returncode == 0


def _committed(directory, names):
    out = {}
    for name in names:
        path = os.path.join(ROOT, directory, name)
        out[name] = open(path, encoding="utf-8").read() if os.path.exists(path) else None
    return out


@pytest.mark.parametrize("directory, generate", [("contrib/man", "manpage"), ("contrib/completion", "completion")])
def test_man_pages_and_completions_are_current(directory, generate):
    """They are committed copies of what the parser generates: a changed option makes them stale."""
    module = __import__(f"taskstats_fast.cli.{generate}", fromlist=["main"])
    wanted = module.pages() if generate == "manpage" else module.scripts()
    assert _committed(directory, wanted) == wanted, \
        f"{directory}/ is stale (an option changed): run `make man-completion` and commit the result"
    extra = set(os.listdir(os.path.join(ROOT, directory))) - set(wanted)
    assert not extra, f"{directory}/ holds files the parser no longer makes: {sorted(extra)}"


def test_the_changelog_heads_this_version_and_links_every_release():
    """The newest release in CHANGELOG.md is the version the package says it is, each release
    has a date and a link, and nothing is listed under Unreleased that a release left behind."""
    with open(os.path.join(ROOT, "CHANGELOG.md"), encoding="utf-8") as f:
        text = f.read()
    releases = re.findall(r"^## \[(\d+\.\d+\.\d+)\](?: - (\d{4}-\d{2}-\d{2}))?$", text, re.M)
    assert releases and releases[0][0] == _version.__version__, (releases[:1], _version.__version__)
    assert all(date for _, date in releases[:-1]), "every release after the first has a date"
    for version, _ in releases:
        assert re.search(rf"^\[{re.escape(version)}\]: https://\S+$", text, re.M), version
    assert text.index("## [Unreleased]") < text.index(f"## [{releases[0][0]}]")
