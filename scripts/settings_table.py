"""Print the README's table of environment variables from ``backend.config.Settings``.

Usage: ``.venv/bin/python scripts/settings_table.py`` (tests/test_readme.py checks the README has them all).
"""

from __future__ import annotations

import sys

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


def main() -> None:
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    lines += [f"| `{n}` | {d} | {m} |" for n, d, m in rows()]
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
