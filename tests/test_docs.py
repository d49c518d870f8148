"""The README and docs/architecture.md stay true of the code: every setting and every module is named."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from infra.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
LAYOUT_FOLDERS = ["dags", "pipeline", "infra", "infra/sources", "teacher", "students", "adapters"]


def _readme_settings() -> dict[str, str]:
    """The README's settings table: variable -> its default as written."""
    rows = re.findall(r"^\| `(DISTILLERY_\w+)` \| `([^`]*)` \|", (ROOT / "README.md").read_text(), re.M)
    return dict(rows)


def _layout_row(folder: str) -> str:
    text = (ROOT / "docs" / "architecture.md").read_text()
    match = re.search(rf"^\| `{re.escape(folder)}/` \|(.*)$", text, re.M)
    assert match, f"docs/architecture.md: the layout table has no row for `{folder}/`"
    return match.group(1)


def test_the_readme_names_every_setting_with_its_default() -> None:
    documented = _readme_settings()
    fields = {f"DISTILLERY_{f.name.upper()}": f.default for f in dataclasses.fields(Settings)}
    assert set(documented) == set(fields), "README.md's settings table and infra/settings.py differ"
    for variable, default in fields.items():
        if default != "":  # an empty default is resolved at run time; the README says to what
            assert documented[variable] == str(default), f"README.md: {variable}'s default"


@pytest.mark.parametrize("folder", LAYOUT_FOLDERS)
def test_the_layout_table_names_every_module(folder: str) -> None:
    row = _layout_row(folder)
    modules = sorted(p.stem for p in (ROOT / folder).glob("*.py") if p.stem != "__init__")
    missing = [m for m in modules if f"`{m}" not in row]
    assert not missing, f"docs/architecture.md's row for `{folder}/` does not name {missing}"
