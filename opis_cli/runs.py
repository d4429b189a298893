"""Run directories: where runs go, checking where outputs will be written, and reading runs back.

A run is saved as ``<out_dir>/runs/<name>/`` holding report.json, curves.parquet,
distributions.parquet (whole-span pair-distance histograms, for plots) and run.json (timings,
command line: the things that may differ between identical runs). Saving (atomic files, the
staging directory renamed into place, the ``latest`` switch with signals held, cleaning the
leftovers of killed runs) lives in :mod:`opis_cli.run_store` and is re-exported here.

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

from .errors import ConfigError, InputError
from .run_store import (  # noqa: F401  (re-exported: the saving API has always been opis_cli.runs's)
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
    from .distributions import DistanceDistributions


# ----------------------------------------------------------------------------- checks before any work

def _nearest_existing(path: Path) -> Path:
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    return path


def _name_max(directory: Path) -> int:
    try:
        return os.pathconf(_nearest_existing(directory), "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):  # no pathconf (Windows) or no limit reported
        return 255


def check_run_name(name: str, runs: str | os.PathLike) -> None:
    """Refuse (ConfigError) a run name that cannot be a directory name in ``runs``: empty, with a
    '/', starting with '.' (hidden, and the prefix of opis's temporary names), with control or
    unprintable characters, or longer than the file system allows (PC_NAME_MAX bytes; the staging
    and temporary names do not contain the run name, so the whole limit is available)."""
    if not name:
        raise ConfigError("the run name is empty")
    if not name.isprintable():  # newlines, escapes, undecodable bytes (surrogates) in argv
        raise ConfigError(f"the run name {name!r} contains a character that cannot be shown; use letters, digits, "
                          "'-', '_' and '.'")
    if "/" in name or (os.altsep and os.altsep in name):
        raise ConfigError(f"the run name {name!r} contains '/': a run name is one directory name, not a path")
    if name.startswith("."):
        raise ConfigError(f"the run name {name!r} starts with '.': such names are hidden and kept for temporary files")
    size, limit = len(os.fsencode(name)), _name_max(Path(runs))
    if size > limit:
        raise ConfigError(f"the run name is {size} bytes long; the file system allows at most {limit}")


def _check_dir_usable(path: Path) -> None:
    """``path`` is a writable directory, or can be created as one (its nearest existing ancestor is
    a writable directory). The messages keep "cannot create run directory", which scripts match."""
    existing = _nearest_existing(path)
    if existing == path:
        if not path.is_dir():
            raise InputError(f"cannot save runs in {path}: it is not a directory")
        if not os.access(path, os.W_OK | os.X_OK):
            raise InputError(f"cannot save runs in {path}: no permission to write in it")
    elif not existing.is_dir():
        raise InputError(f"cannot create run directory {path}: {existing} is not a directory")
    elif not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"cannot create run directory {path}: no permission to write in {existing}")


def check_out_dir(out_dir: str | os.PathLike = DEFAULT_OUT_DIR, name: str | None = None) -> None:
    """Refuse, before any work, an output directory a run could not be saved in.

    Raises :class:`~opis_cli.errors.InputError` (exit 2, one line) when ``out_dir`` or
    ``out_dir/runs`` is not a writable directory and cannot be created as one, or when
    ``out_dir/latest`` is something opis must not replace (a real directory, a FIFO...: only a
    symbolic link, or the one-line file written where symbolic links are unavailable, is ours);
    :class:`~opis_cli.errors.ConfigError` when ``name`` (None: a default name, always valid) is not
    a valid run name or is taken. Creates and changes nothing. :func:`save_run` makes the same
    checks, but only after the work.
    """
    root = Path(out_dir)
    runs = root / "runs"
    _check_dir_usable(runs)
    latest = root / "latest"
    if os.path.lexists(latest) and not latest.is_symlink() and not latest.is_file():
        what = "a directory" if latest.is_dir() else "a special file"
        raise InputError(f"cannot save runs in {root}: {latest} is {what}, not the link to the latest run "
                         "(move it away)")
    if name is not None:
        check_run_name(name, runs)
        if os.path.lexists(runs / name):
            raise ConfigError(f"a run named {name} already exists in {runs} (choose another --name)")


def check_output_path(path: str | os.PathLike | None, inputs=(), *, option: str | None = None) -> None:
    """Refuse (InputError, exit 2), before any work, an output file that would destroy an input or
    that cannot be written.

    ``path`` is refused when it is the same file as one of ``inputs`` (``os.path.samefile`` when
    both exist, so hard links and symbolic links count; otherwise the resolved paths), when it is
    a directory, or when its directory does not exist, is not a directory or is not writable.
    ``None`` and ``"-"`` (standard output) pass, as do existing non-regular files such as
    ``/dev/null``, which are written in place. ``inputs`` may hold None (an absent option).
    ``option`` (e.g. ``"--json"``) starts the message: "--json nodir/r.json: the directory nodir
    does not exist".
    """
    if path is None or str(path) == "-":
        return
    target = Path(path)
    shown = f"{option} {path}" if option else str(path)
    if target.is_dir():
        raise InputError(f"{shown}: it is a directory")
    for source in inputs:
        if source is None or str(source) == "-":
            continue
        if os.path.exists(target) and os.path.exists(source):
            same = os.path.samefile(target, source)
        else:
            same = target.resolve() == Path(source).resolve()
        if same:
            raise InputError(f"{shown}: it is the input {source}; writing there would destroy it")
    if target.exists() and not target.is_file():
        return
    parent = target.parent
    if not os.path.lexists(parent):
        raise InputError(f"{shown}: the directory {parent} does not exist")
    if not parent.is_dir():
        raise InputError(f"{shown}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{shown}: no permission to write in the directory {parent}")


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

    @classmethod
    def from_report(cls, report, name: str) -> "SavedRun":
        """An evaluation still in memory (a :class:`~opis_cli.report.Report`) as a saved run."""
        return cls(name=name, report=report.to_dict(), grid=report.curves.grid, utility=report.curves.utility,
                   mean_curve=report.mean_curve, labels=list(report.labels), distributions=report.distributions)


JSON_BYTES_PER_FILE_BYTE = 12


def load_report_json(path: Path) -> dict:
    """A report.json as a dict, after checking that it is one this version can read and that
    every figure a verdict reads lies in its domain (opis_cli.report_checks)."""
    from .memory import require
    from .report_checks import check_report

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
            is_mean = curve == "mean"
            run.grid = thresholds[is_mean]
            t = len(run.grid)
            run.mean_curve = utility[is_mean]
            run.utility = utility[~is_mean].reshape(-1, t)
            run.labels = table.column("label").to_pylist()[: (~is_mean).sum()][::t]
        except Exception as exc:  # any unreadable or foreign table is a bad input, not a crash
            raise InputError(f"{curves_path} is not a readable curves table: {exc}") from None
    dist_path = folder / "distributions.parquet"
    if is_run_dir and dist_path.is_file():
        from .distributions import DistanceDistributions

        try:
            run.distributions = DistanceDistributions.from_table(pq.read_table(dist_path))
        except Exception as exc:
            raise InputError(f"{dist_path} is not a readable distributions table: {exc}") from None
    return run
