"""``opis evaluate``: options -> :class:`~opis_cli.pipeline.evaluate_command.EvaluateRequest`, one
call to :func:`~opis_cli.pipeline.evaluate_command.run_evaluate`, then the report and the gate."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from opis_cli.cli.common import EXIT_GATE_FAILED, _Notes, _progress, _stderr, exit_on_errors
from opis_cli.cli.gate import _print_gate
from opis_cli.cli.options import (
    MEMORY_BUDGET_DEFAULT,
    EpsContrast,
    EpsilonOpt,
    Executor,
    GridOpt,
    Index,
    InputArg,
    JsonOpt,
    Kernel,
    LabelsOpt,
    Metric,
    Mismatch,
    Negatives,
    NoSaveOpt,
    OutputFormat,
    QuietOpt,
    ReferenceLabelsOpt,
    ReferenceOpt,
    RunsOutDirOpt,
    WorstOpt,
    _far_list,
    _gate_options,
    _range_options,
)

EPILOG = (
    "Examples:\n\n"
    "  opis evaluate embeddings.parquet                      (calibration from pooled FAR 0.001:0.1)\n\n"
    "  opis evaluate embeddings.parquet --calib 0.1:0.9 --json report.json\n\n"
    "  opis evaluate emb.npy --labels labels.npy --k 1 --k 5 --format markdown\n\n"
    "  opis evaluate data.npz --metric l2 --no-normalize --calib 0.5:4\n\n"
    "  opis evaluate probes.parquet --reference gallery.parquet --retrieval    (query/reference)\n\n"
    "  opis evaluate big.parquet --index ivf --calib-far 1e-5:1e-3      (millions of rows: approximate)\n\n"
    "Every run is saved to .opis/runs/NAME/ (report.json, curves.parquet) and .opis/latest."
)


def _opt(type_, *names, **kwargs):
    """``Annotated[type_, typer.Option(*names, **kwargs)]``: evaluate has 45 options; one expression each."""
    return Annotated[type_, typer.Option(*names, **kwargs)]


# Input
EmbeddingColOpt = _opt(Optional[str], help="Embedding column (default: the only list column).", rich_help_panel="Input")
LabelColOpt = _opt(Optional[str], help="Label column (default: label/labels/class/y).", rich_help_panel="Input")
GroupColOpt = _opt(Optional[str], rich_help_panel="Input",
                   help="Also OPIS and eps-OPIS across groups (customers, regions) of this column (or .npz array): a "
                        "group's pairs are those with an end in it.")
# Calibration, distance, figures
CalibOpt = _opt(Optional[str], metavar="LO:HI", rich_help_panel="Calibration",
                help="Calibration range in distance units: for one model on new data (the deployed threshold fixed "
                     "in distance). Compare different models with the same --calib-far instead (docs/ci.md).")
CalibFarOpt = _opt(Optional[str], metavar="LO:HI", rich_help_panel="Calibration",
                   help="Derive the range from pooled FAR bounds (default 0.001:0.1; costs one extra pass over all "
                        "pairs).")
MetricOpt = _opt(Metric, help="cosine: d = 1 - cos; l2: Euclidean.", rich_help_panel="Distance")
NoNormalizeOpt = _opt(bool, "--no-normalize", help="l2 on raw vectors (no L2 normalisation).",
                      rich_help_panel="Distance")
BetaOpt = _opt(float, help="Utility weight: >1 favours few false rejects, <1 few false accepts.",
               rich_help_panel="Figures")
EpsContrastOpt = _opt(EpsContrast, help="Contrast the worst classes with the rest or with the best.",
                      rich_help_panel="Figures")
KOpt = _opt(Optional[List[int]], "--k", help="Recall@k (repeatable).", rich_help_panel="Figures")
TarAtFarOpt = _opt(Optional[str], metavar="F1,F2,...", rich_help_panel="Figures",
                   help="Also every class's TAR at the global threshold of each pooled FAR (exact engine).")
EerOpt = _opt(bool, "--eer", rich_help_panel="Figures",
              help="Also the equal error rate, pooled and per class, on a 2,001-threshold grid over the whole "
                   "distance span (one fuller pass), and the curves of opis plot --kind roc|det.")
RetrievalOpt = _opt(bool, "--retrieval", rich_help_panel="Figures",
                    help="Also MAP@R and R-precision (as pytorch-metric-learning defines them), exact, overall and "
                         "per class; memory grows with the sum of squared class sizes.")
# Output
FormatOpt = _opt(OutputFormat, "--format", help="What to print: a table, Markdown (for PR comments) or JSON.",
                 rich_help_panel="Output")
NameOpt = _opt(Optional[str], help="Run name (default: time and input name).", rich_help_panel="Output")
# Performance, engine, cluster
MemoryBudgetOpt = _opt(str, help="Block working memory, e.g. 512M or 2G. Changes speed only.",
                       rich_help_panel="Performance")
ThreadsOpt = _opt(Optional[int], help="Threads for matrix products and kernels (default: all cores).",
                  rich_help_panel="Performance")
KernelOpt = _opt(Kernel, help="Pair kernel: numba (fused, parallel) or numpy (reference).",
                 rich_help_panel="Performance")
IndexOpt = _opt(Index, rich_help_panel="Engine",
                help="exact (every pair), ivf or hnsw (approximate, with error bars), or auto: exact unless its "
                     "estimate (from N, D and the class sizes; never timed) exceeds --max-exact-minutes and the "
                     "approximate engine fits this data and --memory-budget and is twice as fast. The report says "
                     "why (engine.reason).")
MaxExactMinutesOpt = _opt(float, rich_help_panel="Engine",
                          help="Longest exact run --index auto accepts, in minutes on the reference machine "
                               "(docs/performance.md).")
EngineOpt = _opt(Executor, rich_help_panel="Cluster",
                 help="Where the exact passes run: this machine, or a Dask cluster (needs opis-cli[dask]; same "
                      "figures).")
SchedulerOpt = _opt(Optional[str], metavar="tcp://HOST:PORT", help="--engine dask: the scheduler of an existing "
                    "cluster.", rich_help_panel="Cluster")
WorkersOpt = _opt(Optional[int], help="--engine dask without --scheduler: start a local cluster of this many worker "
                  "processes.", rich_help_panel="Cluster")
NegativesOpt = _opt(Negatives, rich_help_panel="Engine",
                    help="Approximate engines: in-range negatives by IVF range search, by seeded sampling, or auto "
                         "(range search when hi sits at a low FAR).")
NlistOpt = _opt(Optional[int], help="IVF lists (default ~4 sqrt(N)).", rich_help_panel="Engine")
NprobeOpt = _opt(int, help="IVF lists probed per query: higher is slower and more exact.", rich_help_panel="Engine")
HnswMOpt = _opt(int, help="HNSW links per node.", rich_help_panel="Engine")
EfSearchOpt = _opt(int, help="HNSW search depth: higher is slower and more exact.", rich_help_panel="Engine")
SamplesPerAnchorOpt = _opt(Optional[int], rich_help_panel="Engine",
                           help="Negative partners sampled per class (default clip(2e9/N, 1000, 20000)).")
SeedOpt = _opt(int, help="Seed of every random choice (approximate engines, --bootstrap).", min=0, max=2**63 - 1,
               rich_help_panel="Engine")
BootstrapOpt = _opt(int, metavar="B", rich_help_panel="Uncertainty",
                    help="Add 95% intervals for OPIS, eps-OPIS and Recall@k from B class resamples (0: off).")
# CI gate (the checks of opis gate, here in one panel)
BaselineOpt = _opt(Optional[str], metavar="RUN_OR_REPORT", help="Gate against this baseline run or report (see "
                   "opis gate).", rich_help_panel="CI gate")
MaxOpisOpt = _opt(Optional[float], help="Fail (exit 1) if OPIS exceeds this.", rich_help_panel="CI gate")
MaxEpsOpisOpt = _opt(Optional[float], help="Fail if eps-OPIS exceeds this.", rich_help_panel="CI gate")
MinRecallOpt = _opt(Optional[List[str]], metavar="K=VALUE", help="Fail if Recall@K is below VALUE (repeatable).",
                    rich_help_panel="CI gate")
MaxOpisIncreaseOpt = _opt(Optional[str], metavar="X|P%", rich_help_panel="CI gate",
                          help="Fail if OPIS rose by more than X (or P% of the baseline).")
MaxEpsOpisIncreaseOpt = _opt(Optional[str], metavar="X|P%", help="Fail if eps-OPIS rose by more than X or P%.",
                             rich_help_panel="CI gate")
MaxRecallDropOpt = _opt(Optional[str], metavar="X|P%", help="Fail if any shared Recall@k fell by more than X or P%.",
                        rich_help_panel="CI gate")
SignificanceOpt = _opt(Optional[float], rich_help_panel="CI gate",
                       help="Fail only beyond the bootstrap uncertainty at this one-sided level (e.g. 0.95; needs "
                            "--bootstrap).")
OnMismatchOpt = _opt(Mismatch, help="When baseline and current differ in range, metric, beta, epsilon or thresholds.",
                     rich_help_panel="CI gate")
StrictOpt = _opt(bool, "--strict", help="Refuse (exit 2) a pinned-range comparison whose pooled FARs differ more "
                 "than 2x.", rich_help_panel="CI gate")
AllowApproximateOpt = _opt(bool, "--allow-approximate", rich_help_panel="CI gate",
                           help="Gate approximate figures, each judged at the unfavourable end of its interval.")


def evaluate(
    input: InputArg,
    labels: LabelsOpt = None,
    embedding_col: EmbeddingColOpt = None,
    label_col: LabelColOpt = None,
    group_col: GroupColOpt = None,
    reference: ReferenceOpt = None,
    reference_labels: ReferenceLabelsOpt = None,
    calib: CalibOpt = None,
    calib_far: CalibFarOpt = None,
    thresholds: GridOpt = 101,
    metric: MetricOpt = Metric.cosine,
    no_normalize: NoNormalizeOpt = False,
    beta: BetaOpt = 1.0,
    epsilon: EpsilonOpt = 0.1,
    eps_contrast: EpsContrastOpt = EpsContrast.rest,
    k: KOpt = None,
    tar_at_far: TarAtFarOpt = None,
    eer: EerOpt = False,
    retrieval: RetrievalOpt = False,
    json_path: JsonOpt = None,
    fmt: FormatOpt = OutputFormat.table,
    worst: WorstOpt = 10,
    out_dir: RunsOutDirOpt = Path(".opis"),
    name: NameOpt = None,
    no_save: NoSaveOpt = False,
    quiet: QuietOpt = False,
    memory_budget: MemoryBudgetOpt = MEMORY_BUDGET_DEFAULT,
    threads: ThreadsOpt = None,
    kernel: KernelOpt = Kernel.auto,
    index: IndexOpt = Index.auto,
    max_exact_minutes: MaxExactMinutesOpt = 10.0,
    engine: EngineOpt = Executor.local,
    scheduler: SchedulerOpt = None,
    workers: WorkersOpt = None,
    negatives: NegativesOpt = Negatives.auto,
    nlist: NlistOpt = None,
    nprobe: NprobeOpt = 16,
    hnsw_m: HnswMOpt = 32,
    ef_search: EfSearchOpt = 64,
    samples_per_anchor: SamplesPerAnchorOpt = None,
    seed: SeedOpt = 0,
    bootstrap: BootstrapOpt = 0,
    baseline: BaselineOpt = None,
    max_opis: MaxOpisOpt = None,
    max_eps_opis: MaxEpsOpisOpt = None,
    min_recall_at_k: MinRecallOpt = None,
    max_opis_increase: MaxOpisIncreaseOpt = None,
    max_eps_opis_increase: MaxEpsOpisIncreaseOpt = None,
    max_recall_drop: MaxRecallDropOpt = None,
    significance: SignificanceOpt = None,
    on_mismatch: OnMismatchOpt = Mismatch.refuse,
    strict: StrictOpt = False,
    allow_approximate: AllowApproximateOpt = False,
) -> None:
    """Compute exact per-class utility curves, OPIS, eps-OPIS and Recall@k of an embedding set."""
    progress, notes = _progress_and_notes(quiet)
    with exit_on_errors(progress):
        from opis_cli.config import EvalConfig, parse_memory_size
        from opis_cli.pipeline.evaluate_command import EvaluateRequest, run_evaluate

        config = EvalConfig(metric=metric.value, normalize=not no_normalize, thresholds=thresholds, beta=beta,
                            epsilon=epsilon, eps_contrast=eps_contrast.value, k=tuple(k or (1,)), eer=eer,
                            retrieval=retrieval, **_range_options(calib, calib_far))
        gate = _gate(_gate_options(max_opis, max_eps_opis, min_recall_at_k, max_opis_increase, max_eps_opis_increase,
                                   max_recall_drop, significance, on_mismatch, strict, allow_approximate,
                                   have_baseline=baseline is not None))
        request = EvaluateRequest(
            input=input, labels=labels, embedding_col=embedding_col, label_col=label_col, group_col=group_col,
            reference=reference, reference_labels=reference_labels, config=config, tar_at_far=_far_list(tar_at_far),
            memory_budget=parse_memory_size(memory_budget), threads=threads, kernel=kernel.value, index=index.value,
            max_exact_minutes=max_exact_minutes, negatives=negatives.value, nlist=nlist, nprobe=nprobe, hnsw_m=hnsw_m,
            ef_search=ef_search, samples_per_anchor=samples_per_anchor, seed=seed, engine=engine.value,
            scheduler=scheduler, workers=workers, bootstrap=bootstrap, save=not no_save, out_dir=out_dir, name=name,
            json_path=json_path, baseline=baseline, argv=sys.argv[1:])
        outcome = run_evaluate(request, progress=progress, notify=notes.add, gate=gate,
                               on_evaluated=lambda: (progress.stop(), notes.flush()))
    _render(outcome, fmt, json_path, quiet, worst)


def _progress_and_notes(quiet: bool):
    """The progress bar and the notes held back while it shows: once the figures are in, the bar
    goes and the notes are written (run_evaluate's on_evaluated)."""
    progress = _progress(quiet)
    return progress, _Notes(immediate=progress.enabled)


def _gate(options):
    """The gate run_evaluate calls once the run is saved (None when no check was asked for)."""
    if options is None:
        return None
    from opis_cli.verdicts.gate import run_gate

    return lambda current, baseline: run_gate(current, baseline, options)


def _render(outcome, fmt: OutputFormat, json_path: str | None, quiet: bool, worst: int) -> None:
    """The report (JSON, Markdown or tables) and the gate's verdict; exit 1 when the gate failed.

    With JSON on stdout, the human-readable summary moves to stderr; --quiet keeps only the JSON
    and a failed gate's one line."""
    report, run_dir, result = outcome.report, outcome.run_dir, outcome.gate_result
    json_on_stdout = json_path == "-" or fmt is OutputFormat.json
    if json_on_stdout:
        sys.stdout.write(report.to_json())
    if quiet:
        if result is not None and not result.passed:
            _stderr().print("[bold red]gate failed:[/] " + ", ".join(c.metric for c in result.checks if not c.passed))
            raise typer.Exit(EXIT_GATE_FAILED)
        return
    if fmt is OutputFormat.markdown:
        (sys.stderr if json_on_stdout else sys.stdout).write(report.to_markdown(worst))
    elif fmt is OutputFormat.table or json_on_stdout:
        from rich.console import Console

        from opis_cli.cli.render import print_report

        console = _stderr() if json_on_stdout else Console()
        print_report(report, console, worst)
        if run_dir is not None:
            console.print(f"saved {run_dir}", style="dim")
    if result is not None:
        _print_gate(result, OutputFormat.table if fmt is OutputFormat.json else fmt, to_stderr=json_on_stdout)
        if not result.passed:
            raise typer.Exit(EXIT_GATE_FAILED)
