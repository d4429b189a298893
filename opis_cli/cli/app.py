"""The ``opis`` command line: parse options, make one library call, render.

Every command maps its options one to one onto keyword arguments of a library function; user
mistakes arrive as OpisError and leave as one line on stderr with exit code 2.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from opis_cli import __version__
from opis_cli.config import DEFAULT_MEMORY_BUDGET
from opis_cli.errors import OpisError

# 1 is reserved for a failed gate: a crash must never read as a regression in CI.
EXIT_OK, EXIT_GATE_FAILED, EXIT_USAGE, EXIT_BUG = 0, 1, 2, 3

app = typer.Typer(
    name="opis",
    help="Threshold-consistency evaluation of embedding models: OPIS, eps-OPIS, Recall@k.",
    epilog=(
        "Examples:\n\n"
        "  opis evaluate embeddings.parquet --calib 0.1:0.9\n\n"
        "  opis evaluate emb.npy --labels labels.npy --json report.json\n\n"
        "Docs: docs/definitions.md (the formulas), docs/cli.md (every option)."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)


class Metric(str, Enum):
    cosine = "cosine"
    l2 = "l2"


class EpsContrast(str, Enum):
    rest = "rest"
    best = "best"


class Kernel(str, Enum):
    auto = "auto"
    numba = "numba"
    numpy = "numpy"


class Index(str, Enum):
    auto = "auto"
    exact = "exact"
    ivf = "ivf"
    hnsw = "hnsw"


class Executor(str, Enum):
    local = "local"
    dask = "dask"


class Negatives(str, Enum):
    auto = "auto"
    range = "range"
    sample = "sample"


class Mismatch(str, Enum):
    refuse = "refuse"
    warn = "warn"


class OutputFormat(str, Enum):
    table = "table"
    markdown = "markdown"
    json = "json"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"opis-cli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    pass


def _stderr():
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def _si(value: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.1f}{unit}"
    return str(int(value))


def _fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    from opis_cli.cli.render import escape

    # Messages quote file names, labels and columns: never let them read as rich markup or reach
    # the terminal as control characters.
    _stderr().print(f"[bold red]error:[/] {escape(message)}", markup=True, soft_wrap=True)
    return typer.Exit(code)


class Terminated(KeyboardInterrupt):
    """SIGTERM (a cancelled CI job), raised like Ctrl-C so the same clean-up runs: temporary files
    are removed and `latest` is left alone."""

    exit_code = 143


def _interrupted(exc: KeyboardInterrupt, run_dir=None) -> typer.Exit:
    """Ctrl-C / SIGTERM: say truthfully whether the run was saved (a signal during the final
    rename is held until the run is in place: run_store.DeferredSignals)."""
    from opis_cli.report.run_store import InterruptedAfterSave

    code = getattr(exc, "exit_code", 130)
    if isinstance(exc, InterruptedAfterSave):
        return _fail(str(exc), code)
    what = "terminated" if code == 143 else "interrupted"
    if run_dir is not None:  # after saving, during the --json write or the gate
        return _fail(f"{what} after the run was saved as {run_dir}", code)
    return _fail(f"{what}; no run was saved", code)


class _LazyProgress:
    """A rich progress bar that appears only if the work takes longer than a second."""

    def __init__(self, enabled: bool, delay: float = 1.0):
        self.enabled = enabled
        self.delay = delay
        self.start = time.perf_counter()
        self.progress = None
        self.tasks: dict[str, int] = {}
        self.stage_start: dict[str, float] = {}
        self.last_call = self.start

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        # A stage starts before its first callback: when the previous stage reported last.
        started = self.stage_start.setdefault(stage, self.last_call)
        self.last_call = now
        if self.progress is None:
            if time.perf_counter() - self.start < self.delay:
                return
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[count]} pairs"),
                TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
                console=_stderr(), transient=True,
            )
            self.progress.start()
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(stage, total=total, rate="", count="")
        task = self.tasks[stage]
        elapsed = now - started
        rate = f"{done / elapsed / 1e6:,.1f} M/s" if elapsed > 0 else ""
        self.progress.update(task, completed=done, rate=rate, count=f"{_si(done)}/{_si(total)}")

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()


class _Notes:
    """Notes from the library (engine switch, float64 input, duplicates). Someone watching a
    terminal sees them at once; in a log they are written once the run has succeeded, so a
    failed run leaves exactly one line, its error."""

    def __init__(self, immediate: bool):
        self.immediate = immediate
        self.pending: list[str] = []

    def add(self, message: str) -> None:
        if self.immediate:
            self._print(message)
        else:
            self.pending.append(message)

    def flush(self) -> None:
        for message in self.pending:
            self._print(message)
        self.pending.clear()

    @staticmethod
    def _print(message: str) -> None:
        from rich.markup import escape

        _stderr().print(f"[yellow]note:[/] {escape(message)}", soft_wrap=True)


@app.command(
    epilog=(
        "Examples:\n\n"
        "  opis evaluate embeddings.parquet                      (calibration from pooled FAR 0.001:0.1)\n\n"
        "  opis evaluate embeddings.parquet --calib 0.1:0.9 --json report.json\n\n"
        "  opis evaluate emb.npy --labels labels.npy --k 1 --k 5 --format markdown\n\n"
        "  opis evaluate data.npz --metric l2 --no-normalize --calib 0.5:4\n\n"
        "  opis evaluate big.parquet --index ivf --calib-far 1e-5:1e-3      (millions of rows: approximate)\n\n"
        "Every run is saved to .opis/runs/NAME/ (report.json, curves.parquet) and .opis/latest."
    ),
)
def evaluate(
    input: Annotated[Path, typer.Argument(help="Embeddings: Parquet, Arrow IPC/Feather, .npy (with --labels) or .npz.",
                                          show_default=False)],
    labels: Annotated[Optional[Path], typer.Option(help="Labels .npy for a .npy embeddings file.",
                                                   rich_help_panel="Input")] = None,
    embedding_col: Annotated[Optional[str], typer.Option(help="Embedding column (default: the only list column).",
                                                         rich_help_panel="Input")] = None,
    label_col: Annotated[Optional[str], typer.Option(help="Label column (default: label/labels/class/y).",
                                                     rich_help_panel="Input")] = None,
    group_col: Annotated[Optional[str], typer.Option(
        help="Also OPIS and eps-OPIS across groups (customers, regions) of this column (or .npz array): a "
             "group's pairs are those with an end in it.", rich_help_panel="Input")] = None,
    calib: Annotated[Optional[str], typer.Option(
        metavar="LO:HI", rich_help_panel="Calibration",
        help="Calibration range in distance units: for one model on new data (the deployed threshold fixed in "
             "distance). Compare different models with the same --calib-far instead (docs/ci.md).")] = None,
    calib_far: Annotated[Optional[str], typer.Option(
        metavar="LO:HI", rich_help_panel="Calibration",
        help="Derive the range from pooled FAR bounds (default 0.001:0.1; costs one extra pass over all pairs).")] = None,
    thresholds: Annotated[int, typer.Option(help="Grid size T over the range.", rich_help_panel="Calibration")] = 101,
    metric: Annotated[Metric, typer.Option(help="cosine: d = 1 - cos; l2: Euclidean.", rich_help_panel="Distance")] = Metric.cosine,
    no_normalize: Annotated[bool, typer.Option("--no-normalize", help="l2 on raw vectors (no L2 normalisation).",
                                               rich_help_panel="Distance")] = False,
    beta: Annotated[float, typer.Option(help="Utility weight: >1 favours few false rejects, <1 few false accepts.",
                                        rich_help_panel="Figures")] = 1.0,
    epsilon: Annotated[float, typer.Option(help="Share of worst classes for eps-OPIS.", rich_help_panel="Figures")] = 0.1,
    eps_contrast: Annotated[EpsContrast, typer.Option(help="Contrast the worst classes with the rest or with the best.",
                                                      rich_help_panel="Figures")] = EpsContrast.rest,
    k: Annotated[Optional[List[int]], typer.Option("--k", help="Recall@k (repeatable).", rich_help_panel="Figures")] = None,
    tar_at_far: Annotated[Optional[str], typer.Option(
        metavar="F1,F2,...", help="Also every class's TAR at the global threshold of each pooled FAR (exact engine).",
        rich_help_panel="Figures")] = None,
    json_path: Annotated[Optional[str], typer.Option("--json", metavar="PATH", help="Write the JSON report (- for stdout).",
                                                     rich_help_panel="Output")] = None,
    fmt: Annotated[OutputFormat, typer.Option("--format", help="What to print: a table, Markdown (for PR comments) or JSON.",
                                              rich_help_panel="Output")] = OutputFormat.table,
    worst: Annotated[int, typer.Option(help="Worst classes to list.", rich_help_panel="Output")] = 10,
    out_dir: Annotated[Path, typer.Option(help="Where runs/ and latest go.", rich_help_panel="Output")] = Path(".opis"),
    name: Annotated[Optional[str], typer.Option(help="Run name (default: time and input name).",
                                                rich_help_panel="Output")] = None,
    no_save: Annotated[bool, typer.Option("--no-save", help="Do not save a run directory.", rich_help_panel="Output")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar and no table.", rich_help_panel="Output")] = False,
    memory_budget: Annotated[str, typer.Option(help="Block working memory, e.g. 512M or 2G. Changes speed only.",
                                               rich_help_panel="Performance")] = f"{DEFAULT_MEMORY_BUDGET >> 20}M",
    threads: Annotated[Optional[int], typer.Option(help="Threads for matrix products and kernels (default: all cores).",
                                                   rich_help_panel="Performance")] = None,
    kernel: Annotated[Kernel, typer.Option(help="Pair kernel: numba (fused, parallel) or numpy (reference).",
                                           rich_help_panel="Performance")] = Kernel.auto,
    index: Annotated[Index, typer.Option(
        help="exact (every pair), ivf or hnsw (approximate, with error bars), or auto: exact unless its "
             "estimate (from N, D and the class sizes; never timed) exceeds --max-exact-minutes and the "
             "approximate engine fits this data and --memory-budget and is twice as fast. The report says why "
             "(engine.reason).", rich_help_panel="Engine")] = Index.auto,
    max_exact_minutes: Annotated[float, typer.Option(
        help="Longest exact run --index auto accepts, in minutes on the reference machine "
             "(docs/performance.md).", rich_help_panel="Engine")] = 10.0,
    engine: Annotated[Executor, typer.Option(
        help="Where the exact passes run: this machine, or a Dask cluster (needs opis-cli[dask]; same figures).",
        rich_help_panel="Cluster")] = Executor.local,
    scheduler: Annotated[Optional[str], typer.Option(
        metavar="tcp://HOST:PORT", help="--engine dask: the scheduler of an existing cluster.",
        rich_help_panel="Cluster")] = None,
    workers: Annotated[Optional[int], typer.Option(
        help="--engine dask without --scheduler: start a local cluster of this many worker processes.",
        rich_help_panel="Cluster")] = None,
    negatives: Annotated[Negatives, typer.Option(
        help="Approximate engines: in-range negatives by IVF range search, by seeded sampling, or auto "
             "(range search when hi sits at a low FAR).", rich_help_panel="Engine")] = Negatives.auto,
    nlist: Annotated[Optional[int], typer.Option(help="IVF lists (default ~4 sqrt(N)).", rich_help_panel="Engine")] = None,
    nprobe: Annotated[int, typer.Option(help="IVF lists probed per query: higher is slower and more exact.",
                                        rich_help_panel="Engine")] = 16,
    hnsw_m: Annotated[int, typer.Option(help="HNSW links per node.", rich_help_panel="Engine")] = 32,
    ef_search: Annotated[int, typer.Option(help="HNSW search depth: higher is slower and more exact.",
                                           rich_help_panel="Engine")] = 64,
    samples_per_anchor: Annotated[Optional[int], typer.Option(
        help="Negative partners sampled per class (default clip(2e9/N, 1000, 20000)).",
        rich_help_panel="Engine")] = None,
    seed: Annotated[int, typer.Option(help="Seed of every random choice (approximate engines, --bootstrap).",
                                      min=0, max=2**63 - 1, rich_help_panel="Engine")] = 0,
    bootstrap: Annotated[int, typer.Option(
        metavar="B", help="Add 95% intervals for OPIS, eps-OPIS and Recall@k from B class resamples (0: off).",
        rich_help_panel="Uncertainty")] = 0,
    baseline: Annotated[Optional[str], typer.Option(
        metavar="RUN_OR_REPORT", help="Gate against this baseline run or report (see opis gate).",
        rich_help_panel="CI gate")] = None,
    max_opis: Annotated[Optional[float], typer.Option(help="Fail (exit 1) if OPIS exceeds this.",
                                                      rich_help_panel="CI gate")] = None,
    max_eps_opis: Annotated[Optional[float], typer.Option(help="Fail if eps-OPIS exceeds this.",
                                                          rich_help_panel="CI gate")] = None,
    min_recall_at_k: Annotated[Optional[List[str]], typer.Option(
        metavar="K=VALUE", help="Fail if Recall@K is below VALUE (repeatable).", rich_help_panel="CI gate")] = None,
    max_opis_increase: Annotated[Optional[str], typer.Option(
        metavar="X|P%", help="Fail if OPIS rose by more than X (or P% of the baseline).",
        rich_help_panel="CI gate")] = None,
    max_eps_opis_increase: Annotated[Optional[str], typer.Option(
        metavar="X|P%", help="Fail if eps-OPIS rose by more than X or P%.", rich_help_panel="CI gate")] = None,
    max_recall_drop: Annotated[Optional[str], typer.Option(
        metavar="X|P%", help="Fail if any shared Recall@k fell by more than X or P%.", rich_help_panel="CI gate")] = None,
    significance: Annotated[Optional[float], typer.Option(
        help="Fail only beyond the bootstrap uncertainty at this one-sided level (e.g. 0.95; needs --bootstrap).",
        rich_help_panel="CI gate")] = None,
    on_mismatch: Annotated[Mismatch, typer.Option(
        help="When baseline and current differ in range, metric, beta, epsilon or thresholds.",
        rich_help_panel="CI gate")] = Mismatch.refuse,
    strict: Annotated[bool, typer.Option(
        "--strict", help="Refuse (exit 2) a pinned-range comparison whose pooled FARs differ more than 2x.",
        rich_help_panel="CI gate")] = False,
    allow_approximate: Annotated[bool, typer.Option(
        "--allow-approximate", help="Gate approximate figures, each judged at the unfavourable end of its interval.",
        rich_help_panel="CI gate")] = False,
) -> None:
    """Compute exact per-class utility curves, OPIS, eps-OPIS and Recall@k of an embedding set."""
    progress = _LazyProgress(enabled=not quiet and sys.stderr.isatty())
    notes = _Notes(immediate=progress.enabled)
    run_dir = None
    try:
        from opis_cli.config import EvalConfig, parse_memory_size
        from opis_cli.pipeline.evaluation import evaluate_file
        from opis_cli.report.runs import check_out_dir, check_output_path

        # Every output is checked before any work: a failed command saves nothing, and no output
        # may overwrite an input.
        if not no_save:
            check_out_dir(out_dir, name)
        check_output_path(json_path, _input_files(input, labels, baseline), option="--json")

        config = EvalConfig(
            metric=metric.value, normalize=not no_normalize, thresholds=thresholds, beta=beta,
            epsilon=epsilon, eps_contrast=eps_contrast.value, k=tuple(k or (1,)), **_range_options(calib, calib_far),
        )
        gate_options = _gate_options(max_opis, max_eps_opis, min_recall_at_k, max_opis_increase,
                                     max_eps_opis_increase, max_recall_drop, significance, on_mismatch,
                                     strict, allow_approximate, have_baseline=baseline is not None)
        baseline_run = None
        if baseline is not None:
            from opis_cli.report.runs import load_run

            baseline_run = load_run(baseline, out_dir)
        budget = parse_memory_size(memory_budget)
        _check_threads(threads)
        approx = None
        if index in (Index.ivf, Index.hnsw, Index.auto):
            from opis_cli.engine.approximate import ApproxOptions

            approx = ApproxOptions(
                index="hnsw" if index is Index.hnsw else "ivf", nlist=nlist, nprobe=nprobe, hnsw_m=hnsw_m,
                ef_search=ef_search, negatives=negatives.value, samples_per_anchor=samples_per_anchor, seed=seed,
            )
        with _dask_client(engine, scheduler, workers, threads) as client:
            report = evaluate_file(
                input, labels=labels, embedding_col=embedding_col, label_col=label_col, group_col=group_col,
                config=config, memory_budget=budget, threads=threads, kernel=kernel.value, index=index.value,
                approx=approx, tar_at_far=_far_list(tar_at_far),
                max_exact_seconds=max_exact_minutes * 60, progress=progress, notify=notes.add, client=client,
            )
        progress.stop()
        notes.flush()
        if bootstrap:
            from opis_cli.statistics.bootstrap import bootstrap_report

            bootstrap_report(report, bootstrap, seed)
        if not no_save:
            from opis_cli.report.runs import save_run

            run_dir = save_run(report, out_dir, name, extra={"argv": sys.argv[1:]})
        if json_path is not None and json_path != "-":
            from opis_cli.report.runs import atomic_write_text

            try:
                atomic_write_text(json_path, report.to_json())
            except OpisError as exc:
                if run_dir is None:
                    raise
                raise OpisError(f"{exc} (the run itself was saved as {run_dir})") from None
        gate_result = None
        if gate_options is not None:  # after saving: a failed or refused gate keeps the run for a look
            from opis_cli.verdicts.gate import run_gate
            from opis_cli.report.runs import SavedRun

            current_run = SavedRun.from_report(report, run_dir.name if run_dir else (name or "this run"))
            gate_result = run_gate(current_run, baseline_run, gate_options)
    except OpisError as exc:
        progress.stop()
        raise _fail(str(exc)) from None
    except KeyboardInterrupt as exc:
        progress.stop()
        raise _interrupted(exc, run_dir) from None

    if json_path == "-" or fmt is OutputFormat.json:
        sys.stdout.write(report.to_json())
    json_on_stdout = json_path == "-" or fmt is OutputFormat.json
    if quiet:
        if gate_result is not None and not gate_result.passed:
            _stderr().print("[bold red]gate failed:[/] " + ", ".join(c.metric for c in gate_result.checks
                                                                      if not c.passed))
            raise typer.Exit(EXIT_GATE_FAILED)
        return
    # With JSON on stdout, the human-readable summary moves to stderr.
    if fmt is OutputFormat.markdown:
        (sys.stderr if json_on_stdout else sys.stdout).write(report.to_markdown(worst))
    elif fmt is OutputFormat.table or json_on_stdout:
        from rich.console import Console

        from opis_cli.cli.render import print_report

        console = _stderr() if json_on_stdout else Console()
        print_report(report, console, worst)
        if run_dir is not None:
            console.print(f"saved {run_dir}", style="dim")
    if gate_result is not None:
        _print_gate(gate_result, OutputFormat.table if fmt is OutputFormat.json else fmt, to_stderr=json_on_stdout)
        if not gate_result.passed:
            raise typer.Exit(EXIT_GATE_FAILED)


def _range_options(calib: str | None, calib_far: str | None) -> dict:
    """EvalConfig keyword arguments from --calib / --calib-far (at most one of them)."""
    from opis_cli.config import parse_range

    if calib is not None and calib_far is not None:
        raise OpisError("give either --calib or --calib-far, not both")
    if calib is not None:
        return {"calib": parse_range(calib, "--calib")}
    if calib_far is not None:
        return {"calib_far": parse_range(calib_far, "--calib-far")}
    return {}


def _check_threads(threads: int | None) -> None:
    if threads is not None and threads < 1:
        raise OpisError(f"--threads must be >= 1, got {threads}")


def _far_list(text: str | None) -> tuple[float, ...]:
    """``"1e-3,1e-2"`` -> (0.001, 0.01)."""
    if not text:
        return ()
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise OpisError(f"--tar-at-far expects numbers like 1e-3,1e-2, got {text!r}") from None


@contextmanager
def _dask_client(engine: "Executor", scheduler: str | None, workers: int | None, threads: int | None):
    """The Dask client --engine dask asks for (None for the local engine), closed afterwards."""
    if engine is Executor.local:
        if scheduler is not None or workers is not None:
            raise OpisError("--scheduler and --workers need --engine dask")
        yield None
        return
    from opis_cli.engine.dask_engine import connect, local_cluster_client

    if scheduler is not None and workers is not None:
        raise OpisError("give --scheduler (an existing cluster) or --workers (a local one), not both")
    if scheduler is not None:
        client = connect(scheduler)
    else:
        from opis_cli.threads import available_cores

        client = local_cluster_client(available_cores() if workers is None else workers, threads)
    try:
        yield client
    finally:
        cluster = getattr(client, "cluster", None) if scheduler is None else None
        client.close()
        if cluster is not None:
            cluster.close()


def _gate_options(max_opis, max_eps_opis, min_recall_at_k, max_opis_increase, max_eps_opis_increase,
                  max_recall_drop, significance, on_mismatch, strict, allow_approximate, *, have_baseline: bool,
                  required: bool = False):
    """GateOptions from the CLI's strings, or None when no check was asked for (and none is required)."""
    from opis_cli.verdicts.gate import GateOptions, parse_limit, parse_recall_limit

    recall = dict(parse_recall_limit(v) for v in (min_recall_at_k or []))
    options = GateOptions(
        max_opis=max_opis, max_eps_opis=max_eps_opis, min_recall=recall,
        max_opis_increase=parse_limit(max_opis_increase, "--max-opis-increase") if max_opis_increase else None,
        max_eps_opis_increase=(parse_limit(max_eps_opis_increase, "--max-eps-opis-increase")
                               if max_eps_opis_increase else None),
        max_recall_drop=parse_limit(max_recall_drop, "--max-recall-drop") if max_recall_drop else None,
        significance=significance, on_mismatch=on_mismatch.value, strict=strict,
        allow_approximate=allow_approximate,
    )
    if not options.any and not required:
        if have_baseline:
            raise OpisError("--baseline needs a check: --max-opis-increase, --max-eps-opis-increase or "
                            "--max-recall-drop")
        return None
    if options.relative and not have_baseline:
        raise OpisError("--max-opis-increase, --max-eps-opis-increase and --max-recall-drop need --baseline")
    return options


def _print_gate(result, fmt: "OutputFormat", to_stderr: bool = False) -> None:
    if fmt is OutputFormat.json:
        sys.stdout.write(result.to_json())
        return
    if fmt is OutputFormat.markdown:
        (sys.stderr if to_stderr else sys.stdout).write(result.to_markdown())
        return
    from rich.console import Console

    from opis_cli.cli.render import gate_table

    console = _stderr() if to_stderr else Console()
    console.print(gate_table(result))
    _print_warnings(console, result.warnings)


def _print_warnings(console, warnings: list[str]) -> None:
    from opis_cli.cli.render import escape

    for w in warnings:
        console.print(f"[yellow]warning:[/] {escape(w)}", soft_wrap=True)


@app.command(
    epilog=(
        "Examples:\n\n"
        "  opis gate --baseline baseline/report.json --max-opis-increase 10%        (the last run)\n\n"
        "  opis gate .opis/runs/new --baseline .opis/runs/released --max-opis-increase 0.002 "
        "--max-recall-drop 0.5% --significance 0.95\n\n"
        "  opis gate --max-opis 0.02 --min-recall-at-k 1=0.9 --format markdown >> $GITHUB_STEP_SUMMARY\n\n"
        "Exit codes: 0 every check passed, 1 a check failed, 2 bad usage or unreadable/incomparable reports."
    ),
)
def gate(
    current: Annotated[Optional[str], typer.Argument(
        metavar="[CURRENT]", help="Run directory or report.json to check (default: OUT_DIR/latest).")] = None,
    baseline: Annotated[Optional[str], typer.Option(metavar="RUN_OR_REPORT",
                                                    help="The released model's run or report.")] = None,
    max_opis: Annotated[Optional[float], typer.Option(help="Fail if OPIS exceeds this.")] = None,
    max_eps_opis: Annotated[Optional[float], typer.Option(help="Fail if eps-OPIS exceeds this.")] = None,
    min_recall_at_k: Annotated[Optional[List[str]], typer.Option(
        metavar="K=VALUE", help="Fail if Recall@K is below VALUE (repeatable).")] = None,
    max_opis_increase: Annotated[Optional[str], typer.Option(
        metavar="X|P%", help="Fail if OPIS rose by more than X, or by more than P% of the baseline.")] = None,
    max_eps_opis_increase: Annotated[Optional[str], typer.Option(
        metavar="X|P%", help="Fail if eps-OPIS rose by more than X or P%.")] = None,
    max_recall_drop: Annotated[Optional[str], typer.Option(
        metavar="X|P%", help="Fail if any shared Recall@k fell by more than X or P%.")] = None,
    significance: Annotated[Optional[float], typer.Option(
        help="Fail only when the excess is beyond the class-bootstrap uncertainty at this one-sided level "
             "(e.g. 0.95); both reports need --bootstrap.")] = None,
    on_mismatch: Annotated[Mismatch, typer.Option(
        help="Baseline and current differ in calibration, metric, beta, epsilon or thresholds: "
             "refuse (exit 2) or warn. Another evaluation set is always refused.")] = Mismatch.refuse,
    strict: Annotated[bool, typer.Option(
        "--strict", help="Refuse (exit 2) a pinned-range comparison whose pooled FAR at lo or hi differs more than "
                         "2x between the runs (different operating points), instead of warning.")] = False,
    allow_approximate: Annotated[bool, typer.Option(
        "--allow-approximate", help="Compare approximate reports (--index ivf|hnsw), each figure judged at the "
                                    "unfavourable end of its 95% interval.")] = False,
    fmt: Annotated[OutputFormat, typer.Option("--format", help="table, markdown (PR comment) or json.")]
    = OutputFormat.table,
    out_dir: Annotated[Path, typer.Option(help="Where runs are saved (for the default CURRENT).")] = Path(".opis"),
) -> None:
    """Fail a CI job (exit 1) when a model is less threshold-consistent than allowed."""
    try:
        from opis_cli.verdicts.gate import run_gate
        from opis_cli.report.runs import load_run

        options = _gate_options(max_opis, max_eps_opis, min_recall_at_k, max_opis_increase,
                                max_eps_opis_increase, max_recall_drop, significance, on_mismatch, strict,
                                allow_approximate, have_baseline=baseline is not None, required=True)
        cur = load_run(current, out_dir)
        base = load_run(baseline, out_dir) if baseline is not None else None
        result = run_gate(cur, base, options)
    except OpisError as exc:
        raise _fail(str(exc)) from None
    _print_gate(result, fmt)
    if not result.passed:
        raise typer.Exit(EXIT_GATE_FAILED)


@app.command(
    epilog=(
        "Examples:\n\n"
        "  opis compare .opis/runs/released .opis/runs/candidate      (both with the same --calib-far)\n\n"
        "  opis compare runs/*/ --format markdown >> $GITHUB_STEP_SUMMARY\n\n"
        "  opis compare runs/*-s*/ --group-by '^(.+)-s\\d+$'     (arms x seeds: mean +- sd, paired changes)\n\n"
        "The first run is the reference: every other run's change is shown with a 95% interval (paired when "
        "both are run directories on the same evaluation set)."
    ),
)
def compare(
    runs: Annotated[List[str], typer.Argument(metavar="RUN_OR_REPORT...", help="Two or more runs or reports.")],
    fmt: Annotated[OutputFormat, typer.Option("--format", help="table, markdown or json.")] = OutputFormat.table,
    strict: Annotated[bool, typer.Option(
        "--strict", help="Refuse (exit 2) instead of warning when runs are not comparable like with like.")] = False,
    group_by: Annotated[Optional[str], typer.Option(
        metavar="REGEX", help="Group runs by name: the regex's first capture group is the group (arm), the rest of "
                              "the name pairs runs across groups (seed). Shows mean +- sd per group and each "
                              "group's change against the first.", rich_help_panel="Groups")] = None,
    group_field: Annotated[Optional[str], typer.Option(
        metavar="PATH", help="Group runs by a report field instead (dotted, e.g. config.beta).",
        rich_help_panel="Groups")] = None,
    pair_by: Annotated[Optional[str], typer.Option(
        metavar="REGEX", help="With --group-field: the regex's first capture group pairs runs across groups.",
        rich_help_panel="Groups")] = None,
    out_dir: Annotated[Path, typer.Option(help="Where runs are saved.")] = Path(".opis"),
) -> None:
    """Show runs side by side with each run's change against the first (no pass/fail), or grouped into arms."""
    try:
        from opis_cli.verdicts.compare import compare_runs
        from opis_cli.report.runs import load_run

        if len(runs) < 2:
            raise OpisError("compare needs two or more runs")
        loaded = [load_run(r, out_dir) for r in runs]
        if group_by is not None or group_field is not None or pair_by is not None:
            from opis_cli.verdicts.compare_groups import group_runs

            if pair_by is not None and group_field is None:
                raise OpisError("--pair-by goes with --group-field (--group-by pairs by the rest of the name)")
            result = group_runs(loaded, pattern=group_by, field=group_field, pair_by=pair_by)
            if strict and result.warnings:
                raise OpisError(result.warnings[0] + " (refused under --strict)")
        else:
            result = compare_runs(loaded, strict=strict)
    except OpisError as exc:
        raise _fail(str(exc)) from None
    if fmt is OutputFormat.json:
        sys.stdout.write(result.to_json())
    elif fmt is OutputFormat.markdown:
        sys.stdout.write(result.to_markdown())
    else:
        from rich.console import Console

        from opis_cli.cli.render import compare_rich

        console = Console()
        console.print(compare_rich(*result.table()))
        _print_warnings(console, result.warnings)


class MarginsFormat(str, Enum):
    table = "table"
    json = "json"
    markdown = "markdown"
    pml = "pml"


@app.command(
    epilog=(
        "Examples:\n\n"
        "  opis margins embeddings.parquet                        (targets from the calibration range)\n\n"
        "  opis margins emb.parquet --target-far 0.01 --target-frr 0.05 --format pml\n\n"
        "  opis margins emb.parquet --margin-plus 0.9 --margin-minus 0.5     (assess given margins)\n\n"
        "Then: opis plot --kind distributions --out dist.png marks the margins. Run it on the TRAINING classes "
        "embedded by the current model; what margins are worth in training: docs/tcm.md."
    ),
)
def margins(
    input: Annotated[Path, typer.Argument(help="Embeddings: Parquet, Arrow IPC/Feather, .npy (with --labels) or .npz.",
                                          show_default=False)],
    labels: Annotated[Optional[Path], typer.Option(help="Labels .npy for a .npy embeddings file.",
                                                   rich_help_panel="Input")] = None,
    embedding_col: Annotated[Optional[str], typer.Option(help="Embedding column.", rich_help_panel="Input")] = None,
    label_col: Annotated[Optional[str], typer.Option(help="Label column.", rich_help_panel="Input")] = None,
    calib: Annotated[Optional[str], typer.Option(metavar="LO:HI", rich_help_panel="Calibration",
                                                 help="Calibration range in cosine distance.")] = None,
    calib_far: Annotated[Optional[str], typer.Option(metavar="LO:HI", rich_help_panel="Calibration",
                                                     help="Range from pooled FAR bounds (default 0.001:0.1).")] = None,
    thresholds: Annotated[int, typer.Option(help="Grid size T over the range.", rich_help_panel="Calibration")] = 101,
    beta: Annotated[float, typer.Option(help="Utility weight (as evaluate).", rich_help_panel="Figures")] = 1.0,
    epsilon: Annotated[float, typer.Option(help="Share of worst classes for eps-OPIS.", rich_help_panel="Figures")] = 0.1,
    eps_contrast: Annotated[EpsContrast, typer.Option(help="Contrast the worst classes with the rest or the best.",
                                                      rich_help_panel="Figures")] = EpsContrast.rest,
    target_far: Annotated[Optional[float], typer.Option(
        help="Pooled FAR that fixes m- (default: the FAR at the range's upper end).", rich_help_panel="Margins")] = None,
    target_frr: Annotated[Optional[float], typer.Option(
        help="Pooled FRR that fixes m+ (default: the FRR at the range's lower end).", rich_help_panel="Margins")] = None,
    margin_plus: Annotated[Optional[float], typer.Option(help="Assess this m+ too (with --margin-minus).",
                                                         rich_help_panel="Margins")] = None,
    margin_minus: Annotated[Optional[float], typer.Option(help="Assess this m- too (with --margin-plus).",
                                                          rich_help_panel="Margins")] = None,
    lambda_plus: Annotated[float, typer.Option(help="TCM weight of the positive term.", rich_help_panel="Margins")] = 1.0,
    lambda_minus: Annotated[float, typer.Option(help="TCM weight of the negative term.",
                                                rich_help_panel="Margins")] = 1.0,
    fmt: Annotated[MarginsFormat, typer.Option("--format", help="table, json (the report), markdown (PR "
                                                                 "comment) or pml (a ThresholdConsistentMarginLoss "
                                                                 "line).",
                                               rich_help_panel="Output")] = MarginsFormat.table,
    out_dir: Annotated[Path, typer.Option(help="Where runs/ and latest go.", rich_help_panel="Output")] = Path(".opis"),
    name: Annotated[Optional[str], typer.Option(help="Run name.", rich_help_panel="Output")] = None,
    no_save: Annotated[bool, typer.Option("--no-save", help="Do not save a run directory.", rich_help_panel="Output")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.", rich_help_panel="Output")] = False,
    memory_budget: Annotated[str, typer.Option(help="Block working memory, e.g. 512M or 2G.",
                                               rich_help_panel="Performance")] = f"{DEFAULT_MEMORY_BUDGET >> 20}M",
    threads: Annotated[Optional[int], typer.Option(help="Threads (default: all cores).",
                                                   rich_help_panel="Performance")] = None,
) -> None:
    """TCM margins m+ and m- at pooled-rate targets: what they mean (rates, hard pairs, TCM loss), warnings."""
    progress = _LazyProgress(enabled=not quiet and sys.stderr.isatty())
    run_dir = None
    try:
        from opis_cli.config import EvalConfig, parse_memory_size
        from opis_cli.pipeline.margins import margins_file
        from opis_cli.report.runs import check_out_dir

        if not no_save:
            check_out_dir(out_dir, name)

        kwargs = _range_options(calib, calib_far)
        config = EvalConfig(thresholds=thresholds, beta=beta, epsilon=epsilon, eps_contrast=eps_contrast.value,
                            **kwargs)
        _check_threads(threads)
        report = margins_file(
            input, labels=labels, embedding_col=embedding_col, label_col=label_col, config=config,
            target_far=target_far, target_frr=target_frr, margin_plus=margin_plus, margin_minus=margin_minus,
            lambda_plus=lambda_plus, lambda_minus=lambda_minus, memory_budget=parse_memory_size(memory_budget),
            threads=threads, progress=progress,
        )
        progress.stop()
        if not no_save:
            from opis_cli.report.runs import save_run

            run_dir = save_run(report, out_dir, name, extra={"argv": sys.argv[1:]})
    except OpisError as exc:
        progress.stop()
        raise _fail(str(exc)) from None
    except KeyboardInterrupt as exc:
        progress.stop()
        raise _interrupted(exc, run_dir) from None
    from opis_cli.pipeline.margin_advice import pml_line

    if fmt is MarginsFormat.pml:
        sys.stdout.write(pml_line(report.margins) + "\n")
    elif fmt is MarginsFormat.json:
        sys.stdout.write(report.to_json())
    elif fmt is MarginsFormat.markdown:
        from opis_cli.report.advice_markdown import margins_markdown

        sys.stdout.write(margins_markdown(report))
    else:
        from rich.console import Console

        from opis_cli.cli.render import margins_tables

        console = Console()
        console.print(margins_tables(report))
        console.print(pml_line(report.margins), style="bold", soft_wrap=True)
        if run_dir is not None:
            console.print(f"saved {run_dir}", style="dim")


class ViewFormat(str, Enum):
    table = "table"
    markdown = "markdown"


@app.command(
    epilog=(
        "Examples:\n\n"
        "  opis thresholds test.parquet --target-far 0.001                 (threshold chosen on the same set)\n\n"
        "  opis thresholds test.parquet --dev dev.parquet --target-far 0.001    (does a dev threshold hold?)\n\n"
        "  opis thresholds test.parquet --threshold 0.42 --tar-at-far 1e-3,1e-2 --json op.json\n\n"
        "Then: opis plot op.json --kind operating-points --out op.png"
    ),
)
def thresholds(
    input: Annotated[Path, typer.Argument(help="Embeddings: Parquet, Arrow IPC/Feather, .npy (with --labels) or .npz.",
                                          show_default=False)],
    dev: Annotated[Optional[Path], typer.Option(help="Development set on which to choose the threshold "
                                                     "(default: INPUT itself).", rich_help_panel="Threshold")] = None,
    target_far: Annotated[Optional[float], typer.Option(
        help="Choose the largest threshold whose pooled FAR is at most this.", rich_help_panel="Threshold")] = None,
    threshold: Annotated[Optional[float], typer.Option(help="Use this threshold (distance units).",
                                                       rich_help_panel="Threshold")] = None,
    tar_at_far: Annotated[Optional[str], typer.Option(
        metavar="F1,F2,...", help="Also report every class's TAR at the global thresholds for these pooled FARs.",
        rich_help_panel="Threshold")] = None,
    labels: Annotated[Optional[Path], typer.Option(help="Labels .npy for a .npy embeddings file.",
                                                   rich_help_panel="Input")] = None,
    dev_labels: Annotated[Optional[Path], typer.Option(help="Labels .npy for a .npy --dev file.",
                                                       rich_help_panel="Input")] = None,
    embedding_col: Annotated[Optional[str], typer.Option(help="Embedding column.", rich_help_panel="Input")] = None,
    label_col: Annotated[Optional[str], typer.Option(help="Label column.", rich_help_panel="Input")] = None,
    group_col: Annotated[Optional[str], typer.Option(
        help="Also every group's FAR, FRR and utility at the threshold (a column or .npz array: customers, "
             "regions).", rich_help_panel="Input")] = None,
    calib: Annotated[Optional[str], typer.Option(metavar="LO:HI", rich_help_panel="Calibration",
                                                 help="Range searched for each class's own best threshold.")] = None,
    calib_far: Annotated[Optional[str], typer.Option(metavar="LO:HI", rich_help_panel="Calibration",
                                                     help="That range from pooled FAR bounds (default 0.001:0.1).")] = None,
    thresholds_: Annotated[int, typer.Option("--thresholds", help="Grid size over the range.",
                                             rich_help_panel="Calibration")] = 101,
    metric: Annotated[Metric, typer.Option(help="cosine or l2.", rich_help_panel="Distance")] = Metric.cosine,
    no_normalize: Annotated[bool, typer.Option("--no-normalize", help="l2 on raw vectors.",
                                               rich_help_panel="Distance")] = False,
    beta: Annotated[float, typer.Option(help="Utility weight (as evaluate).", rich_help_panel="Distance")] = 1.0,
    worst: Annotated[int, typer.Option(help="Worst classes to list.", rich_help_panel="Output")] = 10,
    min_class_size: Annotated[int, typer.Option(
        help="Keep classes with fewer members out of the worst lists (their rates move in whole pairs); the "
             "report says how many were held back.", rich_help_panel="Output")] = 2,
    fmt: Annotated[ViewFormat, typer.Option("--format", help="table, or markdown (PR comment).",
                                            rich_help_panel="Output")] = ViewFormat.table,
    json_path: Annotated[Optional[str], typer.Option("--json", metavar="PATH", help="Write the JSON report (- for stdout).",
                                                     rich_help_panel="Output")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar and no table.",
                                        rich_help_panel="Output")] = False,
    memory_budget: Annotated[str, typer.Option(help="Block working memory, e.g. 512M or 2G.",
                                               rich_help_panel="Performance")] = f"{DEFAULT_MEMORY_BUDGET >> 20}M",
    threads: Annotated[Optional[int], typer.Option(help="Threads (default: all cores).",
                                                   rich_help_panel="Performance")] = None,
) -> None:
    """The deployment view: at one global threshold, every class's FAR, FRR and utility, and its own best threshold."""
    progress = _LazyProgress(enabled=not quiet and sys.stderr.isatty())
    try:
        import json as _json

        from opis_cli.config import EvalConfig, parse_memory_size
        from opis_cli.data.io import load_dataset
        from opis_cli.analyses.operating_points import operating_points

        if fmt is ViewFormat.markdown and json_path == "-":
            raise OpisError("--format markdown and --json - both write to stdout: write the JSON to a file")
        from opis_cli.report.runs import check_output_path

        check_output_path(json_path, _input_files(input, labels, dev, dev_labels), option="--json")
        kwargs = _range_options(calib, calib_far)
        config = EvalConfig(metric=metric.value, normalize=not no_normalize, thresholds=thresholds_, beta=beta,
                            **kwargs)
        fars = _far_list(tar_at_far)
        _check_threads(threads)
        dataset = load_dataset(input, labels=labels, embedding_col=embedding_col, label_col=label_col,
                               group_col=group_col)
        dev_set = (load_dataset(dev, labels=dev_labels, embedding_col=embedding_col, label_col=label_col)
                   if dev is not None else None)
        report = operating_points(dataset, config, dev=dev_set, target_far=target_far, threshold=threshold,
                                  tar_at_far=fars, worst=worst, min_class_size=min_class_size,
                                  memory_budget=parse_memory_size(memory_budget),
                                  threads=threads, progress=progress)
        progress.stop()
        text = _json.dumps(report, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
        if json_path is not None and json_path != "-":
            from opis_cli.report.runs import atomic_write_text

            atomic_write_text(json_path, text)
    except OpisError as exc:
        progress.stop()
        raise _fail(str(exc)) from None
    except KeyboardInterrupt as exc:
        progress.stop()
        raise _interrupted(exc) from None
    if json_path == "-":
        sys.stdout.write(text)
    if fmt is ViewFormat.markdown:
        from opis_cli.report.advice_markdown import thresholds_markdown

        sys.stdout.write(thresholds_markdown(report, worst))
        return
    if quiet:
        return
    from rich.console import Console

    from opis_cli.cli.render import thresholds_tables

    (_stderr() if json_path == "-" else Console()).print(thresholds_tables(report, worst))


class PlotKind(str, Enum):
    curves = "curves"
    compare = "compare"
    pareto = "pareto"
    distributions = "distributions"
    operating_points = "operating-points"


@app.command(
    epilog=(
        "Examples:\n\n"
        "  opis plot --out curves.png                              (the last run)\n\n"
        "  opis plot .opis/runs/base .opis/runs/tcm --kind compare --out before_after.svg\n\n"
        "  opis plot runs/*/ --kind pareto --out pareto.pdf\n\n"
        "  opis plot --kind distributions --out dist.png --dpi 200"
    ),
)
def plot(
    runs: Annotated[Optional[List[str]], typer.Argument(
        metavar="[RUN_OR_REPORT]...",
        help="Run directories or report.json files (default: the last run, OUT_DIR/latest).")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Image to write: .png, .svg or .pdf.")] = ...,
    kind: Annotated[PlotKind, typer.Option(help="curves: per-class utility; compare: runs side by side; "
                                                "pareto: OPIS vs 1 - Recall@1; distributions: pair distances; "
                                                "operating-points: class FAR vs FRR (an opis thresholds report).")]
    = PlotKind.curves,
    dpi: Annotated[int, typer.Option(help="Resolution of PNG output (dots per inch).")] = 150,
    title: Annotated[Optional[str], typer.Option(help="Figure title (default: describes the figure).")] = None,
    out_dir: Annotated[Path, typer.Option("--out-dir", help="Where runs are saved (for the default run).")]
    = Path(".opis"),
) -> None:
    """Draw a saved run (or several): **per-class utility curves**, a comparison, an
    accuracy-vs-consistency plot, or pair-distance distributions."""
    try:
        from opis_cli.report.runs import check_output_path

        check_output_path(out, _input_files(*(runs or [out_dir / "latest"])), option="--out")
        if kind is PlotKind.operating_points:
            from opis_cli.report.plot import load_thresholds_report, plot_operating_points

            if not runs or len(runs) != 1:
                raise OpisError("--kind operating-points draws one report of opis thresholds --json")
            written = plot_operating_points(load_thresholds_report(runs[0]), out, dpi=dpi, title=title)
            _stderr().print(f"wrote {written}", style="dim")
            return
        from opis_cli.report.plot import plot_runs
        from opis_cli.report.runs import load_run

        loaded = [load_run(r, out_dir) for r in runs] if runs else [load_run(None, out_dir)]
        written = plot_runs(loaded, out, kind=kind.value, dpi=dpi, title=title)
    except OpisError as exc:
        raise _fail(str(exc)) from None
    _stderr().print(f"wrote {written}", style="dim")


def _input_files(*paths) -> list[Path]:
    """Every file a command reads from ``paths`` (a run directory stands for the files in it): what
    no output may overwrite."""
    out = []
    for p in paths:
        if p is None:
            continue
        path = Path(p)
        out.append(path)
        if path.is_dir():
            out += [f for f in path.iterdir() if f.is_file()]
    return out


def _bug(exc: BaseException) -> None:
    """An unexpected exception: one line (what failed, where the traceback went) and exit 3.

    The traceback goes to a file, not the terminal: CI logs keep one readable line, and the file
    is what a bug report needs. If even that file cannot be written, the traceback is printed."""
    import tempfile
    import traceback

    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    frames = traceback.extract_tb(exc.__traceback__)
    where = next((f"{Path(f.filename).name}:{f.lineno}" for f in reversed(frames)
                  if "opis_cli" in f.filename), frames[-1].name if frames else "?")
    try:
        fd, path = tempfile.mkstemp(prefix="opis-crash-", suffix=".txt")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(f"opis {__version__}\nargv: {sys.argv!r}\n\n{text}")
        saved = f"traceback saved to {path}"
    except OSError:
        sys.stderr.write(text)
        saved = "traceback above"
    summary = " ".join(str(exc).split())[:200]
    from opis_cli.cli.render import escape

    _stderr().print(f"[bold red]internal error:[/] {escape(type(exc).__name__)}: {escape(summary)} (in {escape(where)});"
                    f" this is a bug in opis-cli {__version__}, please report it with the {escape(saved)}",
                    soft_wrap=True)
    sys.exit(EXIT_BUG)


def main() -> None:
    """Console-script entry point.

    Runs the app outside click's standalone mode so that its usage errors (a missing argument, an
    unknown choice) leave as one line on stderr with exit code 2, like every other user mistake,
    instead of a usage block and a framed panel. SIGTERM is handled like Ctrl-C.
    """
    import signal

    from typer.main import get_command

    def terminate(signum, frame):
        raise Terminated()

    try:
        signal.signal(signal.SIGTERM, terminate)
    except ValueError:  # not the main thread (embedded use): keep the default
        pass
    try:
        code = get_command(app).main(prog_name="opis", standalone_mode=False)
    except KeyboardInterrupt as exc:
        _interrupted(exc)
        sys.exit(getattr(exc, "exit_code", 130))
    except Exception as exc:
        # click's (typer-vendored) exceptions carry exit_code and format_message: duck-typed, as
        # typer does itself, because the vendored module is private.
        if not (hasattr(exc, "exit_code") and hasattr(exc, "format_message")):
            if type(exc).__name__ == "Abort":
                raise _fail("aborted", EXIT_USAGE) from None
            _bug(exc)
        if type(exc).__name__ != "NoArgsIsHelpError":  # that one has printed the help already
            ctx = getattr(exc, "ctx", None)
            hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            _fail(exc.format_message() + hint)
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)
