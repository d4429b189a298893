"""Run directories and atomic file output.

A run is saved as ``<out_dir>/runs/<name>/`` holding report.json, curves.parquet,
distributions.parquet (whole-span pair-distance histograms, for plots) and run.json (timings,
command line: the things that may differ between identical runs). The directory is
filled under a temporary name and renamed into place, then ``<out_dir>/latest`` is switched to
it, so a reader never sees a half-written run and an interrupted run leaves ``latest`` alone.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from .errors import InputError, OpisError

if TYPE_CHECKING:
    from .distributions import DistanceDistributions

DEFAULT_OUT_DIR = ".opis"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)``, fsync, then rename onto ``path``: readers see all or nothing.

    A target that exists and is not a regular file (``/dev/null``, ``/dev/stdout``, a FIFO) is
    written in place: renaming over it would replace a device node with a file (as root, it would
    destroy ``/dev/null`` for the whole machine), and such targets have no half-written state.
    """
    target = Path(path)
    if target.exists() and not target.is_file():
        if target.is_dir():
            raise OpisError(f"cannot write {target}: it is a directory")
        try:
            write(target)
        except OSError as exc:
            raise OpisError(f"cannot write {target}: {exc.strerror or exc}") from None
        return target
    directory = target.parent if str(target.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    except FileNotFoundError:
        raise OpisError(f"cannot write {target}: directory {directory} does not exist") from None
    except PermissionError:
        raise OpisError(f"cannot write {target}: no permission to write in {directory}") from None
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates 0600; an output file gets the permissions any new file would get.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        write(tmp_path)
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, target)
    except BaseException as exc:
        tmp_path.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise OpisError(f"cannot write {target}: {exc.strerror or exc}") from None
        raise
    _fsync_dir(directory)
    return target


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def default_run_name(input_path: str | None) -> str:
    stem = Path(input_path).stem if input_path else "array"
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-.") or "run"
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{stem}"


def save_run(report, out_dir: str | os.PathLike = DEFAULT_OUT_DIR, name: str | None = None,
             extra: dict | None = None) -> Path:
    """Write ``report`` as a run directory under ``out_dir/runs`` and point ``out_dir/latest`` at it."""
    import pyarrow.parquet as pq

    root = Path(out_dir)
    runs = root / "runs"
    try:
        runs.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OpisError(f"cannot create run directory {runs}: {exc.strerror or exc}") from None
    base = name or default_run_name(report.input.get("path"))
    if "/" in base or base in (".", ".."):
        raise OpisError(f"invalid run name {base!r}")
    final = runs / base
    suffix = 2
    while final.exists():
        if name is not None:
            raise OpisError(f"run {final} already exists; choose another --name")
        final = runs / f"{base}-{suffix}"
        suffix += 1
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=runs))
    except OSError as exc:
        raise OpisError(f"cannot write in {runs}: {exc.strerror or exc}") from None
    try:
        atomic_write_text(staging / "report.json", report.to_json())
        table = report.curves_table()
        atomic_write(staging / "curves.parquet", lambda p: pq.write_table(table, p, compression="zstd"))
        if report.distributions is not None:
            dist = report.distributions.to_table()
            atomic_write(staging / "distributions.parquet", lambda p: pq.write_table(dist, p, compression="zstd"))
        meta = {"name": final.name, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "timings": report.timings, **(extra or {})}
        atomic_write_text(staging / "run.json", json.dumps(meta, indent=2, sort_keys=True) + "\n")
        os.rename(staging, final)
    except BaseException:
        for child in staging.glob("*"):
            child.unlink(missing_ok=True)
        staging.rmdir()
        raise
    _fsync_dir(runs)
    _point_latest(root, final)
    return final


def _point_latest(root: Path, run_dir: Path) -> None:
    link = root / "latest"
    rel = os.path.relpath(run_dir, root)
    tmp = root / f".latest.{os.getpid()}.tmp"
    try:
        tmp.unlink(missing_ok=True)
        os.symlink(rel, tmp)
        os.replace(tmp, link)
    except OSError:
        # No symlinks (some Windows setups): a one-line file naming the run directory.
        atomic_write_text(link, rel + "\n")
    _fsync_dir(root)


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


def load_report_json(path: Path) -> dict:
    """A report.json as a dict, after checking that it is one this version can read and that
    every figure a verdict reads lies in its domain (opis_cli.report_checks)."""
    from .report_checks import check_report

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
