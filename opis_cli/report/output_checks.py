"""Checks of where a command will write, made before any work (exit 2, one line): a run name and
out-dir a run can be saved in, an output file that is writable and not one of the inputs."""

from __future__ import annotations

import os
from pathlib import Path

from opis_cli.errors import ConfigError, InputError

DEFAULT_OUT_DIR = ".opis"


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


def input_files(*paths) -> list[Path]:
    """Every file a command reads from ``paths`` (a run directory stands for the files in it; None
    is skipped): the ``inputs`` no output may overwrite (:func:`check_output_path`)."""
    out = []
    for p in paths:
        if p is None:
            continue
        path = Path(p)
        out.append(path)
        if path.is_dir():
            out += [f for f in path.iterdir() if f.is_file()]
    return out
