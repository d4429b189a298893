"""Regenerate docs/cli.md from the commands' own --help (run: make docs)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

INTRO = """# CLI reference

Generated from `--help` by `make docs` (docs/gen_cli.py); a test fails when a command or option
is missing here. Exit codes: 0 success, 1 a gate check failed, 2 bad usage or input (one line on
stderr, never a traceback), 130 interrupted.
"""


def command_help(args: list[str]) -> str:
    env = {**os.environ, "COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb"}
    out = subprocess.run([sys.executable, "-m", "opis_cli", *args, "--help"], capture_output=True, text=True,
                         env=env, check=True).stdout
    return "\n".join(line.rstrip() for line in out.splitlines()).strip("\n")


def main() -> None:
    from typer.main import get_command

    from opis_cli.cli.app import app

    group = get_command(app)
    parts = [INTRO, "## opis", "", "```", command_help([]).replace("python -m opis_cli", "opis"), "```", ""]
    for name in sorted(group.commands):
        parts += [f"## opis {name}", "", "```",
                  command_help([name]).replace("python -m opis_cli", "opis"), "```", ""]
    (HERE / "cli.md").write_text("\n".join(parts))
    print(f"wrote {HERE / 'cli.md'}")


if __name__ == "__main__":
    main()
