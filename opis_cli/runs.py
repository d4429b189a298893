"""Run directories and atomic file output.

A run is saved as ``<out_dir>/runs/<name>/`` holding report.json, curves.parquet and run.json
(timings, command line: the things that may differ between identical runs). The directory is
filled under a temporary name and renamed into place, then ``<out_dir>/latest`` is switched to
it, so a reader never sees a half-written run and an interrupted run leaves ``latest`` alone.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Callable

from .errors import InputError, OpisError

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
    """Call ``write(tmp_path)``, fsync, then rename onto ``path``: readers see all or nothing."""
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    except FileNotFoundError:
        raise OpisError(f"cannot write {target}: directory {directory} does not exist") from None
    except PermissionError:
        raise OpisError(f"cannot write {target}: no permission to write in {directory}") from None
    os.close(fd)
    tmp_path = Path(tmp)
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
