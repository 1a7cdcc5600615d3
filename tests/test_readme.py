"""The README is the user's first contact: it must list every setting and the two commands CI runs."""

from __future__ import annotations

import re
from pathlib import Path

from backend.config import Settings

ROOT = Path(__file__).resolve().parent.parent


def test_readme_documents_every_environment_variable() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [name.upper() for name in Settings.model_fields if f"`{name.upper()}`" not in readme]
    assert not missing, f"README.md lacks these settings (run scripts/settings_table.py): {missing}"


def test_every_setting_has_a_description() -> None:
    undocumented = [name for name, field in Settings.model_fields.items() if not field.description]
    assert not undocumented, f"give these fields a docstring in backend/config.py: {undocumented}"


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"^\s*(\S*scripts/(?:serve|test)\.sh)\s*$", readme, flags=re.MULTILINE)
    assert {Path(c).name for c in commands} >= {"serve.sh", "test.sh"}, "README must show both commands"
    assert "scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
