"""The README's settings table is generated from the declarations and must still match them."""

from __future__ import annotations

from pathlib import Path

from kfold_cv.settings import SETTING_NAMES
from scripts.settings_table import BEGIN, END, replace_table, settings_table

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_table_is_the_declarations() -> None:
    text = README.read_text()
    assert replace_table(text) == text, (
        "regenerate it: .venv/bin/python scripts/settings_table.py --write README.md"
    )


def test_one_row_per_setting() -> None:
    rows = settings_table().splitlines()[2:]
    assert [row.split("`")[1] for row in rows] == list(SETTING_NAMES)
    assert BEGIN in README.read_text() and END in README.read_text()
