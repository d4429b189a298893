"""Run directories: where runs go, checking where outputs will be written, and reading runs back.

A run is saved as ``<out_dir>/runs/<name>/`` holding report.json, curves.parquet,
distributions.parquet (whole-span pair-distance histograms, for plots) and run.json (timings,
command line: the things that may differ between identical runs). Saving (atomic files, the
staging directory renamed into place, the ``latest`` switch with signals held, cleaning the
leftovers of killed runs) lives in :mod:`opis_cli.report.run_store` and is re-exported here.

The checks a command makes before any work, so that a long evaluation is never lost to an output
it cannot write: :func:`check_out_dir` (the run directory, ``latest`` and ``--name``) and
:func:`check_output_path` (each output file, e.g. ``--json``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from opis_cli.errors import ConfigError, InputError
from opis_cli.report.output_checks import (  # noqa: F401  (re-exported)
    check_out_dir,
    check_output_path,
    check_run_name,
)
from opis_cli.report.run_store import (  # noqa: F401  (re-exported: the saving API has always been opis_cli.report.runs's)
    DEFAULT_OUT_DIR,
    DeferredSignals,
    InterruptedAfterSave,
    atomic_write,
    atomic_write_text,
    clean_leftovers,
    default_run_name,
    save_run,
)

if TYPE_CHECKING:
    from opis_cli.engine.distributions import DistanceDistributions


def resolve_run(path: str | os.PathLike | None = None, out_dir: str | os.PathLike = DEFAULT_OUT_DIR) -> Path:
    """The report.json of a run directory, a report file, or (no path) of ``out_dir/latest``."""
    if path is None:
        link = Path(out_dir) / "latest"
        if link.is_symlink() or link.is_dir():
            target = link.resolve()
        elif link.is_file():
            target = (Path(out_dir) / link.read_text(encoding="utf-8").strip()).resolve()
        else:
            raise InputError(f"no previous run: {link} does not exist (run `opis evaluate` first)")
        path = target
    p = Path(path)
    if p.is_dir():
        p = p / "report.json"
    if not p.is_file():
        raise InputError(f"no report at {p}")
    return p


@dataclass
class SavedRun:
    """A saved evaluation as read back for plots and comparisons: the report's JSON and, when the
    run directory has them, the per-class curves and the distance distributions."""

    name: str
    report: dict
    grid: np.ndarray | None = None  # (T,) thresholds
    utility: np.ndarray | None = None  # (C, T), classes in the report's label order
    mean_curve: np.ndarray | None = None  # (T,)
    labels: list | None = None  # (C,)
    distributions: "DistanceDistributions | None" = None
    pooled_far: np.ndarray | None = None  # (T,) pooled FAR at each grid threshold (runs of schema 4 on)
    rates: dict | None = None  # --eer: {"threshold", "far", "frr", "classes": [(label, far, frr)]} (rates.parquet)

    @classmethod
    def from_report(cls, report, name: str) -> "SavedRun":
        """An evaluation still in memory (a :class:`~opis_cli.report.report.Report`) as a saved run."""
        rates = None
        if report.eer is not None:
            e = report.eer
            rates = {"threshold": e.edges, "far": e.pooled_far, "frr": e.pooled_frr,
                     "classes": [(report.labels[int(i)], e.shown_far[r], e.shown_frr[r]) for r, i in enumerate(e.shown)]}
        return cls(name=name, report=report.to_dict(), grid=report.curves.grid, utility=report.curves.utility,
                   mean_curve=report.mean_curve, labels=list(report.labels), distributions=report.distributions,
                   pooled_far=report.pooled_far, rates=rates)


JSON_BYTES_PER_FILE_BYTE = 12


def load_report_json(path: Path) -> dict:
    """A report.json as a dict, after checking that it is one this version can read and that
    every figure a verdict reads lies in its domain (opis_cli.report.report_checks)."""
    from opis_cli.memory import require
    from opis_cli.report.report_checks import check_report

    try:
        size = path.stat().st_size
    except OSError as exc:
        raise InputError(f"{path} cannot be read: {exc.strerror}") from None
    # Python's json holds about 11 bytes per byte of a report (floats and lists as objects):
    # measured 5.5 GB for a 500 MB file. Checked before reading, not after.
    require(JSON_BYTES_PER_FILE_BYTE * size, what=f"reading {path} ({size / 2**20:,.0f} MiB)",
            advice="this is not a report opis wrote for a realistic class count; check the file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except RecursionError:
        raise InputError(f"{path} is not an opis report (JSON nested too deeply)") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        # ValueError covers JSONDecodeError and integers beyond Python's digit limit.
        raise InputError(f"{path} is not an opis report (cannot read it as JSON: {exc})") from None
    return check_report(data, str(path))


def load_run(path: str | os.PathLike | None = None, out_dir: str | os.PathLike = DEFAULT_OUT_DIR) -> SavedRun:
    """Read a run directory, a report.json, or (no path) ``out_dir/latest``."""
    import pyarrow.parquet as pq

    report_path = resolve_run(path, out_dir).resolve()  # through `latest`: the run's own name
    report = load_report_json(report_path)
    folder = report_path.parent
    is_run_dir = (folder / "curves.parquet").is_file() and report_path.name == "report.json"
    name = folder.name if is_run_dir else report_path.stem
    run = SavedRun(name=name, report=report)
    curves_path = folder / "curves.parquet"
    if is_run_dir:
        try:
            table = pq.read_table(curves_path)
            curve = np.asarray(table.column("curve").to_pylist())
            thresholds = table.column("threshold").to_numpy()
            utility = table.column("utility").to_numpy()
            is_mean, is_class, is_pooled = curve == "mean", curve == "class", curve == "pooled"
            run.grid = thresholds[is_mean]
            t = len(run.grid)
            run.mean_curve = utility[is_mean]
            run.utility = utility[is_class].reshape(-1, t)
            run.labels = table.column("label").to_pylist()[: is_class.sum()][::t]
            if is_pooled.sum() == t:  # runs before schema 4 have no pooled rows
                run.pooled_far = 1.0 - table.column("trr").to_numpy()[is_pooled]
        except Exception as exc:  # any unreadable or foreign table is a bad input, not a crash
            raise InputError(f"{curves_path} is not a readable curves table: {exc}") from None
    rates_path = folder / "rates.parquet"
    if is_run_dir and rates_path.is_file():
        try:
            run.rates = _read_rates(pq.read_table(rates_path))
        except Exception as exc:
            raise InputError(f"{rates_path} is not a readable rates table: {exc}") from None
    dist_path = folder / "distributions.parquet"
    if is_run_dir and dist_path.is_file():
        from opis_cli.engine.distributions import DistanceDistributions

        try:
            run.distributions = DistanceDistributions.from_table(pq.read_table(dist_path))
        except Exception as exc:
            raise InputError(f"{dist_path} is not a readable distributions table: {exc}") from None
    return run


def _read_rates(table) -> dict:
    """rates.parquet (report.rates_table) as {"threshold", "far", "frr", "classes": [(label, far, frr)]}."""
    curve = np.asarray(table.column("curve").to_pylist())
    threshold, far, frr = (table.column(c).to_numpy() for c in ("threshold", "far", "frr"))
    labels = table.column("label").to_pylist()
    pooled = curve == "pooled"
    t = int(pooled.sum())
    out = {"threshold": threshold[pooled], "far": far[pooled], "frr": frr[pooled], "classes": []}
    rows = np.flatnonzero(curve == "class")
    for start in range(0, len(rows), t):
        r = rows[start:start + t]
        out["classes"].append((labels[r[0]], far[r], frr[r]))
    return out
