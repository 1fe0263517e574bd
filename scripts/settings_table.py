"""Print the settings table of the README from the declarations (``lerobot_kfold.declared``).

The README's table between the ``settings-table`` markers is this script's output; a test checks that it
still is, so the documentation cannot drift from the code. Regenerate it with::

    .venv/bin/python scripts/settings_table.py --write README.md
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

# plugins/ is on sys.path in Airflow and in the tests; run as a script, put it there as well.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))

from kfold_cv.settings import CV_GROUPS
from lerobot_kfold.declared import declared, default_of, edge_value

BEGIN, END = "<!-- settings-table:begin -->", "<!-- settings-table:end -->"


def settings_table() -> str:
    """One row per declared setting: group, name, default, what it accepts, description."""
    lines = ["| group | setting | default | accepts | description |", "| --- | --- | --- | --- | --- |"]
    for cls, title in CV_GROUPS.values():
        for name, (field, spec) in declared(cls).items():
            default = edge_value(default_of(field), spec)
            accepts = spec.limits_text().replace("|", "\\|")
            lines.append(f"| {title} | `{name}` | `{json.dumps(default)}` | {accepts} | {spec.help} |")
    return "\n".join(lines)


def replace_table(text: str) -> str:
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise ValueError(f"no {BEGIN} ... {END} block to replace")
    return pattern.sub(f"{BEGIN}\n{settings_table()}\n{END}", text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--write", type=Path, help="replace the table in this Markdown file")
    args = parser.parse_args(argv)
    if args.write:
        args.write.write_text(replace_table(args.write.read_text()))
    else:
        print(settings_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
