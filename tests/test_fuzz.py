"""Random and damaged inputs (tests/fuzz_inputs.py) in a child process under a 4 GiB address-space
limit and a time limit: every input succeeds or exits 2 with one line; no traceback, no hang."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HARNESS = Path(__file__).resolve().parent / "fuzz_inputs.py"


def test_random_and_mutated_inputs_fail_cleanly():
    proc = subprocess.run([sys.executable, str(HARNESS), "--examples", "400", "--seed", "0", "--memory-gib", "4"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    assert "every one succeeded or exited 2 with one line" in proc.stdout
