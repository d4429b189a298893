"""``opis evaluate`` as one library call, :func:`run_evaluate`: everything the command does
besides parsing and printing.

The steps, in order: check every output before any work (a failed run saves nothing, and no
output may overwrite an input), load the baseline, evaluate (on a Dask cluster if asked), add
bootstrap intervals, save the run, write the JSON report, run the gate. The gate itself is the
caller's (``gate``): verdicts sit above the pipeline.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from opis_cli.config import DEFAULT_MEMORY_BUDGET, EvalConfig
from opis_cli.errors import OpisError

if TYPE_CHECKING:
    from opis_cli.pipeline.stages import StageProgress
    from opis_cli.report.report import Report
    from opis_cli.report.runs import SavedRun


@dataclass(frozen=True)
class EvaluateRequest:
    """What ``opis evaluate`` is asked to do, one field per option (docs/cli.md).

    ``memory_budget`` is in bytes (``opis_cli.config.parse_memory_size`` reads ``"512M"``);
    ``json_path`` ``"-"`` means stdout, which is the caller's to write; ``argv`` is recorded in
    the saved run's run.json.
    """

    input: str | os.PathLike
    labels: str | os.PathLike | None = None
    embedding_col: str | None = None
    label_col: str | None = None
    group_col: str | None = None
    reference: str | os.PathLike | None = None  # query/reference mode: the references' file
    reference_labels: str | os.PathLike | None = None
    config: EvalConfig = field(default_factory=EvalConfig)
    tar_at_far: tuple[float, ...] = ()
    # Speed only: never a figure.
    memory_budget: int = DEFAULT_MEMORY_BUDGET
    threads: int | None = None
    kernel: str = "auto"
    # The engine: exact, approximate (ivf / hnsw, tuned below) or auto (--max-exact-minutes).
    index: str = "auto"
    max_exact_minutes: float = 10.0
    negatives: str = "auto"
    nlist: int | None = None
    nprobe: int = 16
    hnsw_m: int = 32
    ef_search: int = 64
    samples_per_anchor: int | None = None
    seed: int = 0
    # Where the exact passes run (cluster.cluster_client).
    engine: str = "local"
    scheduler: str | None = None
    workers: int | None = None
    bootstrap: int = 0
    # Outputs.
    save: bool = True
    out_dir: str | os.PathLike = Path(".opis")
    name: str | None = None
    json_path: str | None = None
    baseline: str | None = None
    argv: Sequence[str] | None = None


@dataclass
class EvaluateOutcome:
    """The report, where the run was saved (None with ``save=False``), the baseline run read back
    and the caller's gate result (None without a gate)."""

    report: "Report"
    run_dir: Path | None = None
    baseline: "SavedRun | None" = None
    gate_result: Any = None


def run_evaluate(
    request: EvaluateRequest,
    *,
    progress: "StageProgress | None" = None,
    notify: Callable[[str], None] | None = None,
    on_evaluated: Callable[[], None] | None = None,
    gate: "Callable[[SavedRun, SavedRun | None], Any] | None" = None,
) -> EvaluateOutcome:
    """Do what ``opis evaluate`` does, minus the printing; return the report and what became of it.

    ``progress(stage, done, total)`` and ``notify(message)`` are passed to
    :func:`~opis_cli.pipeline.evaluation.evaluate_file`; ``on_evaluated()`` is called once the
    figures are computed (before the bootstrap and the saving: a caller stops its progress bar
    there). ``gate(current, baseline)`` gets the run (as saved, or as it would be) and the
    baseline run and returns the gate's result (``outcome.gate_result``); it runs after saving,
    so a failed or refused gate keeps the run for a look.

    Raises OpisError on a user mistake, with nothing saved unless the run was saved before (the
    message then says where). A KeyboardInterrupt after the run was saved carries the run
    directory as ``exc.run_dir``.
    """
    from opis_cli.report.output_checks import input_files
    from opis_cli.report.runs import check_out_dir, check_output_path

    if request.save:
        check_out_dir(request.out_dir, request.name)
    check_output_path(request.json_path, input_files(request.input, request.labels, request.baseline,
                                                     request.reference, request.reference_labels), option="--json")
    baseline = None
    if request.baseline is not None:
        from opis_cli.report.runs import load_run

        baseline = load_run(request.baseline, request.out_dir)
    report = _evaluate(request, progress, notify)
    if on_evaluated is not None:
        on_evaluated()
    if request.bootstrap:
        from opis_cli.statistics.bootstrap import bootstrap_report

        report = bootstrap_report(report, request.bootstrap, request.seed)
    outcome = EvaluateOutcome(report=report, baseline=baseline)
    try:
        _publish(request, outcome, gate)
    except KeyboardInterrupt as exc:
        if outcome.run_dir is not None:  # after saving, during the --json write or the gate
            exc.run_dir = outcome.run_dir
        raise
    return outcome


def _evaluate(request: EvaluateRequest, progress, notify) -> "Report":
    """The figures: evaluate_file with the engine and the executor the request asks for."""
    from opis_cli.pipeline.cluster import cluster_client
    from opis_cli.pipeline.evaluation import evaluate_file
    from opis_cli.threads import check_threads

    check_threads(request.threads)
    if request.engine == "dask" and request.kernel == "numpy":  # before a cluster is started for nothing
        raise OpisError("--engine dask runs the fused kernel: drop --kernel numpy (the reference path runs in this "
                        "process only)")
    approx = None
    if request.index in ("ivf", "hnsw", "auto"):
        from opis_cli.engine.approximate import ApproxOptions

        approx = ApproxOptions(
            index="hnsw" if request.index == "hnsw" else "ivf", nlist=request.nlist, nprobe=request.nprobe,
            hnsw_m=request.hnsw_m, ef_search=request.ef_search, negatives=request.negatives,
            samples_per_anchor=request.samples_per_anchor, seed=request.seed,
        )
    with cluster_client(request.engine, request.scheduler, request.workers, request.threads) as client:
        return evaluate_file(
            request.input, labels=request.labels, embedding_col=request.embedding_col, label_col=request.label_col,
            group_col=request.group_col, config=request.config, memory_budget=request.memory_budget,
            threads=request.threads, kernel=request.kernel, index=request.index, approx=approx,
            tar_at_far=request.tar_at_far, max_exact_seconds=request.max_exact_minutes * 60, progress=progress,
            notify=notify, client=client, reference=request.reference, reference_labels=request.reference_labels,
        )


def _publish(request: EvaluateRequest, outcome: EvaluateOutcome, gate) -> None:
    """Save the run, write the JSON report, run the gate (recording each on ``outcome``)."""
    from opis_cli.report.runs import SavedRun, atomic_write_text, save_run

    report = outcome.report
    if request.save:
        extra = {"argv": list(request.argv)} if request.argv is not None else None
        outcome.run_dir = save_run(report, request.out_dir, request.name, extra=extra)
    if request.json_path is not None and request.json_path != "-":
        try:
            atomic_write_text(request.json_path, report.to_json())
        except OpisError as exc:
            if outcome.run_dir is None:
                raise
            raise OpisError(f"{exc} (the run itself was saved as {outcome.run_dir})") from None
    if gate is not None:
        run_dir = outcome.run_dir
        current = SavedRun.from_report(report, run_dir.name if run_dir else (request.name or "this run"))
        outcome.gate_result = gate(current, outcome.baseline)

