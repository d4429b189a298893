"""The CLI is a thin layer over the library: ``opis evaluate`` is one call to
opis_cli.pipeline.evaluate_command.run_evaluate, and the one error mapping (cli.common.exit_on_errors)
says truthfully when an interrupted run was saved."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import typer

from opis_cli.config import EvalConfig
from opis_cli.pipeline.evaluate_command import EvaluateRequest, run_evaluate

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data" / "model_a.parquet"


def test_the_python_api_gives_the_cli_report_byte_for_byte(tmp_path):
    out = tmp_path / "cli.json"
    opis = Path(sys.executable).parent / "opis"
    command = [str(opis)] if opis.exists() else [sys.executable, "-m", "opis_cli"]
    proc = subprocess.run([*command, "evaluate", str(SAMPLE), "--calib", "0.2:0.8", "--k", "1", "--k", "5",
                           "--no-save", "--json", str(out), "--quiet"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    request = EvaluateRequest(input=str(SAMPLE), config=EvalConfig(calib=(0.2, 0.8), k=(1, 5)), save=False)
    outcome = run_evaluate(request)
    assert outcome.run_dir is None and outcome.gate_result is None
    assert outcome.report.to_json() == out.read_text()
    assert not (tmp_path / ".opis").exists()


def test_an_interrupt_after_saving_names_the_saved_run(tmp_path, monkeypatch, capsys):
    from opis_cli.cli.common import exit_on_errors
    from opis_cli.report import runs

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runs, "atomic_write_text", interrupted)  # Ctrl-C during the --json write
    request = EvaluateRequest(input=str(SAMPLE), config=EvalConfig(calib=(0.2, 0.8)), out_dir=tmp_path / "o",
                              name="kept", json_path=str(tmp_path / "r.json"))
    with pytest.raises(KeyboardInterrupt) as caught:
        run_evaluate(request)
    run_dir = caught.value.run_dir
    assert run_dir == tmp_path / "o" / "runs" / "kept" and (run_dir / "report.json").is_file()

    with pytest.raises(typer.Exit) as exited:
        with exit_on_errors():
            raise caught.value
    assert exited.value.exit_code == 130
    assert f"interrupted after the run was saved as {run_dir}" in capsys.readouterr().err


def test_errors_leave_with_exit_code_2_and_one_line(capsys):
    from opis_cli.cli.common import EXIT_USAGE, exit_on_errors
    from opis_cli.pipeline.cluster import cluster_client

    with pytest.raises(typer.Exit) as exited:
        with exit_on_errors():
            with cluster_client("local", workers=2):
                pass
    assert exited.value.exit_code == EXIT_USAGE
    assert capsys.readouterr().err.strip() == "error: --scheduler and --workers need --engine dask"


def test_the_public_api_does_what_every_command_does(tmp_path):
    # The README's Python API section, run: each command's work is one documented call.
    import opis_cli
    from opis_cli.verdicts.gate import Limit

    data = Path(__file__).resolve().parents[1] / "sample_data"
    config = opis_cli.EvalConfig(calib=(0.2, 0.8))
    runs = []
    for name in ("model_a", "model_b"):
        outcome = opis_cli.run_evaluate(opis_cli.EvaluateRequest(
            data / f"{name}.parquet", config=config, bootstrap=50, out_dir=tmp_path, name=name))
        assert outcome.run_dir == tmp_path / "runs" / name and outcome.report.bootstrap is not None
        runs.append(opis_cli.load_run(outcome.run_dir))
    # Model B is the sample data's worse model (OPIS ~15x A's): a 10% gate fails, a lax one passes.
    strict = opis_cli.run_gate(runs[1], runs[0], opis_cli.GateOptions(max_opis_increase=Limit(0.1, relative=True)))
    lax = opis_cli.run_gate(runs[1], runs[0], opis_cli.GateOptions(max_opis_increase=Limit(100.0, relative=True)))
    assert not strict.passed and lax.passed
    assert opis_cli.compare_runs(runs) is not None
    assert opis_cli.plot_runs(runs, tmp_path / "compare.png", kind="compare").exists()
    view = opis_cli.thresholds_file(data / "model_a.parquet", config=config, target_far=1e-2)
    assert 0.0 <= view.value <= 2.0 and view.to_dict()["kind"] == "thresholds"
    with pytest.raises(opis_cli.OpisError, match="the default --target-frr, the pooled FRR at lo = 0.2, is 1"):
        opis_cli.margins_file(data / "model_a.parquet", config=config)  # no positive pair at or below 0.2
    report = opis_cli.margins_file(data / "model_a.parquet", config=config, target_frr=0.2)
    assert -1.0 <= report.margins["recommended"]["margin_minus"] <= 1.0
    plain = opis_cli.evaluate_file(data / "model_a.parquet", config=config)
    with_intervals = opis_cli.bootstrap_report(plain, 20)
    assert plain.bootstrap is None and with_intervals.bootstrap is not None  # a new Report
