"""Every case of the error catalogue (tests/error_cases.py) through the real entry point: the exit
code, the exact output docs/errors.md records for it, one line and no traceback for a user error."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from error_cases import CASES, run_case, shown_output, unprivileged_prefix

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "errors.md").read_text()


def documented(case_id: str) -> tuple[str, list[str], int]:
    m = re.search(rf"^### `{re.escape(case_id)}`: .*?\n\n```\n\$ (.*?)\n(.*?)```\n\nexit code (\d+)\n", DOC, re.S | re.M)
    assert m, f"case {case_id} is not in docs/errors.md: run make docs"
    return m.group(1), m.group(2).splitlines(), int(m.group(3))


def test_the_catalogue_is_complete():
    assert len(CASES) >= 25 and len({c.id for c in CASES}) == len(CASES)
    listed = re.findall(r"^### `([^`]+)`", DOC, re.M)
    assert listed == [c.id for c in sorted(CASES, key=lambda c: list(dict.fromkeys(x.section for x in CASES))
                                           .index(c.section))], "docs/errors.md is stale: run make docs"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_error_case(case, tmp_path):
    if case.how == "unprivileged" and unprivileged_prefix() is None:
        pytest.skip("running as root without setpriv: every file is readable")
    outcome = run_case(case, tmp_path)
    command, lines, code = documented(case.id)
    assert outcome.code == case.code == code, (outcome.code, outcome.stderr, outcome.stdout)
    assert outcome.command == command
    assert "Traceback" not in outcome.stderr
    assert shown_output(outcome) == lines
    if case.code == 2:
        assert len(outcome.stderr.strip().splitlines()) == 1 and outcome.stderr.startswith("error: ")
