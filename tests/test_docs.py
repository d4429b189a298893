"""Docs stay true: the definitions copy is in sync and every command and option is documented."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.main import get_command

from opis_cli.cli.app import app

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "docs" / "definitions.md"


@pytest.mark.skipif(not SHARED.exists(), reason="shared/ contract not checked out beside the repo")
def test_definitions_copy_is_in_sync():
    assert (ROOT / "docs" / "definitions.md").read_text() == SHARED.read_text()


def test_every_command_and_option_is_in_the_cli_reference():
    doc = (ROOT / "docs" / "cli.md").read_text()
    group = get_command(app)
    for name, command in group.commands.items():
        assert f"## opis {name}" in doc, f"command {name} undocumented: run make docs"
        for param in command.params:
            for opt in param.opts:
                if opt.startswith("-"):
                    assert opt in doc, f"{name} {opt} undocumented: run make docs"


def test_readme_starts_with_the_two_setup_commands():
    lines = [line for line in (ROOT / "README.md").read_text().splitlines() if line.strip()]
    block = lines[lines.index("```") + 1: lines.index("```") + 3]
    assert [line.split()[0:2] for line in block] == [["make", "demo"], ["make", "test"]]
