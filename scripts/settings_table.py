"""Print the README's table of environment variables from ``backend.config.Settings``.

Usage: ``.venv/bin/python scripts/settings_table.py [--update README.md]`` (prints the table, or rewrites it
between the README's ``settings-table`` markers). tests/test_readme.py checks the README lists them all.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from backend.config import Settings


def rows() -> list[tuple[str, str, str]]:
    result = []
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        if isinstance(default, list):
            default = ",".join(default)
        shown = "(unset)" if default is None else f"`{default}`"
        description = (field.description or "").replace("\n", " ").replace("|", "\\|")
        result.append((name.upper(), shown, description))
    return result


def table() -> str:
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    lines += [f"| `{n}` | {d} | {m} |" for n, d, m in rows()]
    return "\n".join(lines) + "\n"


def update(readme: Path) -> None:
    text = readme.read_text()
    pattern = re.compile(r"(<!-- settings-table[^\n]*-->\n).*?(<!-- /settings-table -->)", re.DOTALL)
    if not pattern.search(text):
        raise SystemExit(f"{readme} has no settings-table markers")
    readme.write_text(pattern.sub(lambda m: m.group(1) + table() + m.group(2), text))


def main() -> None:
    if sys.argv[1:2] == ["--update"]:
        update(Path(sys.argv[2] if len(sys.argv) > 2 else "README.md"))
    else:
        sys.stdout.write(table())


if __name__ == "__main__":
    main()
