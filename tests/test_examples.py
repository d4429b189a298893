"""The examples run end to end (only where their optional dependencies are installed:
``pip install 'opis-cli[examples]'``; the base install and CI skip them)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_tcm_loop_smoke(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("pytorch_metric_learning")
    pytest.importorskip("sklearn")
    out = tmp_path / "tcm.json"
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "tcm_loop.py"), "--smoke", "--quiet",
                           "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert doc["data"]["path"] == "digits" and doc["data"]["classes"] == 10
    run = doc["runs"][0]
    assert set(run["arms"]) >= {"none", "default", "opis"}
    call = run["frozen_opis_call"]  # the public API's answer, with its warnings list
    assert isinstance(call["warnings"], list) and -1 <= call["margin_minus"] <= 1
    assert "Paired deltas" in proc.stdout
