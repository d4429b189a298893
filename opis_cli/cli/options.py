"""Options shared by several commands, defined once: their choices (Enums), their definitions
(``Annotated`` aliases, one signature line each) and the parsing of their strings.

An option whose help or panel differs between commands (the wording says what it means *there*)
is defined in its command's module; one that reads the same everywhere is defined here.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from opis_cli.config import DEFAULT_MEMORY_BUDGET
from opis_cli.errors import OpisError


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


class MarginsFormat(str, Enum):
    table = "table"
    json = "json"
    markdown = "markdown"
    pml = "pml"


class ViewFormat(str, Enum):
    table = "table"
    markdown = "markdown"


class PlotKind(str, Enum):
    curves = "curves"
    compare = "compare"
    pareto = "pareto"
    distributions = "distributions"
    roc = "roc"
    det = "det"
    operating_points = "operating-points"


MEMORY_BUDGET_DEFAULT = f"{DEFAULT_MEMORY_BUDGET >> 20}M"

ReferenceOpt = Annotated[Optional[Path], typer.Option(
    metavar="REFERENCES", rich_help_panel="Input",
    help="Query/reference mode: INPUT holds the queries, this file the references (gallery); only (query, "
         "reference) pairs count and queries retrieve from the references.")]
ReferenceLabelsOpt = Annotated[Optional[Path], typer.Option(help="Labels .npy for a .npy --reference file.",
                                                            rich_help_panel="Input")]

# ----------------------------------------------------------------------------- input
InputArg = Annotated[Path, typer.Argument(
    help="Embeddings: Parquet, Arrow IPC/Feather, .npy (with --labels) or .npz.", show_default=False)]
LabelsOpt = Annotated[Optional[Path], typer.Option(help="Labels .npy for a .npy embeddings file.",
                                                   rich_help_panel="Input")]
EmbeddingColOpt = Annotated[Optional[str], typer.Option(help="Embedding column.", rich_help_panel="Input")]
LabelColOpt = Annotated[Optional[str], typer.Option(help="Label column.", rich_help_panel="Input")]

# ----------------------------------------------------------------------------- calibration and figures
GridOpt = Annotated[int, typer.Option(help="Grid size T over the range.", rich_help_panel="Calibration")]
EpsilonOpt = Annotated[float, typer.Option(help="Share of worst classes for eps-OPIS.", rich_help_panel="Figures")]

# ----------------------------------------------------------------------------- output
JsonOpt = Annotated[Optional[str], typer.Option("--json", metavar="PATH", help="Write the JSON report (- for stdout).",
                                                rich_help_panel="Output")]
WorstOpt = Annotated[int, typer.Option(help="Worst classes to list.", rich_help_panel="Output")]
RunsOutDirOpt = Annotated[Path, typer.Option(help="Where runs/ and latest go.", rich_help_panel="Output")]
NoSaveOpt = Annotated[bool, typer.Option("--no-save", help="Do not save a run directory.", rich_help_panel="Output")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar and no table.",
                                        rich_help_panel="Output")]

# ----------------------------------------------------------------------------- performance
MemoryBudgetOpt = Annotated[str, typer.Option(help="Block working memory, e.g. 512M or 2G.",
                                              rich_help_panel="Performance")]
ThreadsOpt = Annotated[Optional[int], typer.Option(help="Threads (default: all cores).",
                                                   rich_help_panel="Performance")]


# ----------------------------------------------------------------------------- parsing
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


def _far_list(text: str | None) -> tuple[float, ...]:
    """``"1e-3,1e-2"`` -> (0.001, 0.01)."""
    if not text:
        return ()
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise OpisError(f"--tar-at-far expects numbers like 1e-3,1e-2, got {text!r}") from None


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
