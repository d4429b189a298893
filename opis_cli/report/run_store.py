"""Saving runs safely: atomic files, run directories, the ``latest`` link, and the checks before work.

A run is saved as ``<out_dir>/runs/<name>/``. Its files are written into a staging directory
``runs/.new.<owner>.<token>`` (``<owner>`` is ``<pid>-<host tag>``), which is then renamed to its
final name; ``<out_dir>/latest`` is switched to it by renaming a fresh symbolic link
``.latest.<owner>.<token>.tmp`` over it. A reader therefore never sees a half-written run, and a
run that fails or is interrupted before the rename leaves ``runs/`` and ``latest`` as they were.

* **Names taken concurrently.** The rename is the claim: renaming a directory onto an existing,
  non-empty one fails atomically, so of two processes saving the same name exactly one wins.
  An explicit name (``--name``) is never changed behind the user's back: the loser gets
  :class:`~opis_cli.errors.ConfigError` "a run named NAME already exists" (exit 2). A default
  name (a timestamp and the input's stem) names nothing the user chose, so the loser takes the
  next free ``NAME-2``, ``NAME-3``, ... and says so in its path (and in run.json's ``name``).
* **Signals.** The publication (rename, then the ``latest`` switch) runs with SIGINT and SIGTERM
  held (:class:`DeferredSignals`); a signal that arrived meanwhile is acted on once the run is
  complete, as :class:`InterruptedAfterSave`, whose message says that the run *was* saved.
  A signal before that point interrupts the writing, and the staging directory is removed.
* **Leftovers** of a killed process (``kill -9``, a power cut) are removed by the next save:
  only those whose owner process is gone (same host) or that are older than an hour.
* **Permissions** are those of any file the user creates: directories ``0777 & ~umask``, files
  ``0666 & ~umask``.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Callable

from opis_cli.errors import ConfigError, InputError, OpisError
from opis_cli.report.output_checks import DEFAULT_OUT_DIR

STALE_AFTER = 3600.0  # seconds: no save takes an hour between creating its staging and publishing it
_STAGING = ".new."
_LEFTOVER = re.compile(r"^\.(?:new|latest)\.(\d+)(?:-([0-9a-f]{8}))?\.")
# rename(2) onto a name that is taken: a non-empty directory (ENOTEMPTY, or EEXIST on some
# systems), a file (ENOTDIR), or a directory where the source is a file (EISDIR).
_TAKEN = {errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR}


# ----------------------------------------------------------------------------- owner tags and leftovers

def _host_tag() -> str:
    """Eight hex digits naming this machine: PIDs are only comparable on the host that issued them
    (an out-dir on a shared file system is written by several machines)."""
    return hashlib.sha1(socket.gethostname().encode("utf-8", "surrogateescape")).hexdigest()[:8]


def owner_tag() -> str:
    """``<pid>-<host tag>``: who owns a temporary file or staging directory."""
    return f"{os.getpid()}-{_host_tag()}"


def _pid_alive(pid: int) -> bool:
    if pid <= 0 or pid == os.getpid():
        return pid > 0  # our own (another thread's save); 0 and below would signal process groups
    if os.name == "nt":
        return True  # os.kill(pid, 0) on Windows sends CTRL_C_EVENT: judge by age alone there
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, another user's
        return True
    return True


def _is_stale(entry: os.DirEntry, now: float) -> bool:
    try:
        age = now - entry.stat(follow_symlinks=False).st_mtime
    except OSError:
        return False  # gone already (another save cleaned it)
    if age > STALE_AFTER:
        return True
    m = _LEFTOVER.match(entry.name)
    if m is None:
        return False
    host = m.group(2)
    if host is not None and host != _host_tag():
        return False  # another machine's process: its liveness cannot be checked from here
    return not _pid_alive(int(m.group(1)))


def clean_leftovers(out_dir: str | os.PathLike) -> list[Path]:
    """Remove what killed saves left in ``out_dir``: ``runs/.new.*`` staging directories and
    ``.latest.*.tmp`` links, when their owner process is gone or they are older than an hour.
    A live concurrent save's staging directory is never touched. Returns what was removed."""
    root = Path(out_dir)
    now = time.time()
    removed = []
    for folder, prefix, suffix in ((root / "runs", _STAGING, ""), (root, ".latest.", ".tmp")):
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            if not (entry.name.startswith(prefix) and entry.name.endswith(suffix)) or not _is_stale(entry, now):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
            except OSError:
                continue  # removed concurrently by another save, or not ours to remove: leave it
            removed.append(Path(entry.path))
    return removed


# ----------------------------------------------------------------------------- atomic files

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


def _create_temp(directory: Path, stem: str) -> Path:
    """A new empty file ``directory/.<stem>.<owner>.<token>.tmp``, created with mode 0666 so that
    the umask applies as for any new file (mkstemp's 0600 would make outputs private). The owner
    tag lets a later save tell a dead process's leftover from a live one's."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    while True:
        # stem shortened: the temporary name must fit NAME_MAX whenever the target's name does.
        path = directory / f".{stem[:120]}.{owner_tag()}.{secrets.token_hex(4)}.tmp"
        try:
            os.close(os.open(path, flags, 0o666))
        except FileExistsError:
            continue
        return path


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)``, fsync, then rename onto ``path``: readers see all or nothing, and
    on any failure (or Ctrl-C) the temporary file is removed and ``path`` is left as it was.

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
        tmp_path = _create_temp(directory, target.name)
    except FileNotFoundError:
        raise OpisError(f"cannot write {target}: directory {directory} does not exist") from None
    except PermissionError:
        raise OpisError(f"cannot write {target}: no permission to write in {directory}") from None
    except OSError as exc:
        raise OpisError(f"cannot write {target}: {exc.strerror or exc}") from None
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
    """:func:`atomic_write` of a UTF-8 text."""
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


# ----------------------------------------------------------------------------- signals

class InterruptedAfterSave(KeyboardInterrupt):
    """Ctrl-C or SIGTERM arrived while a run was being published and was acted on once the run
    was complete: the run *is* saved (``run_dir``), and ``str()`` says so. ``exit_code`` is the
    one the interrupted process should end with (130 for SIGINT, 143 for SIGTERM)."""

    def __init__(self, signum: int, run_dir: Path, exit_code: int):
        self.signum, self.run_dir, self.exit_code = signum, run_dir, exit_code
        what = "terminated" if signum == signal.SIGTERM else "interrupted"
        super().__init__(f"{what} after the run was saved as {run_dir}")


class DeferredSignals:
    """Hold SIGINT and SIGTERM for the body of a ``with``; act on the first one after it.

    While held, a signal is only recorded (``pending``). On a clean exit, the handler that was in
    place before is then called with it; when that handler stops the program (raises
    KeyboardInterrupt, as Python's Ctrl-C handler and opis's SIGTERM handler do) and ``saved`` was
    set in the body, the exception becomes :class:`InterruptedAfterSave`, so that no one reports
    "no run was saved" about a run that was. A default disposition (SIG_DFL) is re-raised with
    ``signal.raise_signal``; an ignored signal stays ignored. When the body raises, that
    exception goes on and the pending signal is dropped: the program is stopping anyway.

    Python lets only the main thread set handlers: elsewhere nothing is held (signals are then
    delivered to the main thread, not to the thread that is saving).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.pending: int | None = None
        self.saved: Path | None = None
        self._previous: dict[int, object] = {}

    def _record(self, signum, frame) -> None:
        if self.pending is None:
            self.pending = signum

    def __enter__(self) -> "DeferredSignals":
        if threading.current_thread() is not threading.main_thread():
            return self
        try:
            for sig in self.SIGNALS:
                previous = signal.getsignal(sig)
                if previous in (signal.SIG_IGN, None):  # ignored, or a handler Python did not set
                    continue
                signal.signal(sig, self._record)
                self._previous[sig] = previous
        except BaseException:
            # A signal between two installations: put everything back before it goes on.
            self._restore()
            raise
        return self

    def _restore(self) -> None:
        items = list(self._previous.items())
        self._previous.clear()

        def put_back(i: int) -> None:
            # try/finally: a signal handled by the first handler put back (raising KeyboardInterrupt)
            # must not leave the second one recording forever.
            if i < len(items):
                try:
                    signal.signal(*items[i])
                finally:
                    put_back(i + 1)

        put_back(0)

    def __exit__(self, exc_type, exc, tb) -> bool:
        previous = dict(self._previous)
        try:
            self._restore()
            if self.pending is None or exc_type is not None:
                return False
            handler = previous.get(self.pending)
            if handler is signal.SIG_DFL:
                signal.raise_signal(self.pending)  # the default action: the process ends here
            elif callable(handler):
                handler(self.pending, None)
        except KeyboardInterrupt as stop:
            # Also a signal that arrived right after the handlers were put back: the run is saved.
            if self.saved is None or exc_type is not None:
                raise
            signum = self.pending if self.pending is not None else (
                signal.SIGTERM if getattr(stop, "exit_code", 130) == 143 else signal.SIGINT)
            raise InterruptedAfterSave(signum, self.saved, getattr(stop, "exit_code", 128 + signum)) from None
        return False



# ----------------------------------------------------------------------------- run directories

def default_run_name(input_path: str | None) -> str:
    """``<YYYYmmdd-HHMMSS>-<input stem>``: a valid run name whatever the input is called (the stem
    is reduced to letters, digits, '_', '.', '-' and shortened to fit any file system)."""
    stem = Path(input_path).stem if input_path else "array"
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem)[:100].strip("-.") or "run"
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{stem}"


def _meta_text(meta: dict, name: str) -> str:
    return json.dumps({**meta, "name": name}, indent=2, sort_keys=True) + "\n"


def _fill(staging: Path, report, meta: dict, name: str) -> None:
    import pyarrow.parquet as pq

    atomic_write_text(staging / "report.json", report.to_json())
    table = report.curves_table()
    atomic_write(staging / "curves.parquet", lambda p: pq.write_table(table, p, compression="zstd"))
    if report.eer is not None:
        from opis_cli.report.report import rates_table

        rates = rates_table(report)
        atomic_write(staging / "rates.parquet", lambda p: pq.write_table(rates, p, compression="zstd"))
    if report.distributions is not None:
        dist = report.distributions.to_table()
        atomic_write(staging / "distributions.parquet", lambda p: pq.write_table(dist, p, compression="zstd"))
    atomic_write_text(staging / "run.json", _meta_text(meta, name))
    _fsync_dir(staging)


def _publish(staging: Path, runs: Path, base: str, explicit: bool, meta: dict) -> Path:
    """Rename ``staging`` to ``runs/base`` (or, for a default name, the first free ``base-N``).

    The rename is the claim on the name: onto a run directory (never empty) it fails, so two
    processes cannot both take one name. The existence check before it only keeps an empty
    directory someone made by hand from being replaced."""
    for attempt in range(1, 1000):
        candidate = base if attempt == 1 else f"{base}-{attempt}"
        final = runs / candidate
        if not os.path.lexists(final):
            if attempt > 1:
                atomic_write_text(staging / "run.json", _meta_text(meta, candidate))
            try:
                os.rename(staging, final)
                return final
            except OSError as exc:
                if exc.errno not in _TAKEN:
                    raise OpisError(f"cannot save the run as {final}: {exc.strerror or exc}") from None
        if explicit:
            raise ConfigError(f"a run named {base} already exists in {runs} (choose another --name)")
    raise OpisError(f"cannot save the run in {runs}: {base} and {base}-2 to {base}-999 are all taken")


def _switch_latest(root: Path, run_dir: Path) -> None:
    """Point ``root/latest`` at ``run_dir``: a new symbolic link renamed over the old one. The run
    is saved by now, so every failure says so, and the temporary link never outlives it."""
    link = root / "latest"
    rel = os.path.relpath(run_dir, root)
    tmp = root / f".latest.{owner_tag()}.{secrets.token_hex(4)}.tmp"
    try:
        os.symlink(rel, tmp)
    except OSError:
        # No symbolic links here (some Windows setups, FAT): a one-line file naming the run.
        try:
            atomic_write_text(link, rel + "\n")
        except OpisError as exc:
            raise OpisError(f"the run was saved as {run_dir}, but {link} could not be updated: {exc}") from None
        return
    try:
        os.replace(tmp, link)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise OpisError(f"the run was saved as {run_dir}, but {link} could not be pointed at it: "
                            f"{exc.strerror or exc}") from None
        raise
    _fsync_dir(root)


def save_run(report, out_dir: str | os.PathLike = DEFAULT_OUT_DIR, name: str | None = None,
             extra: dict | None = None) -> Path:
    """Write ``report`` as a run directory under ``out_dir/runs`` and point ``out_dir/latest`` at it.

    Returns the run directory. ``name`` None takes :func:`default_run_name`, moved on to
    ``NAME-2``, ``NAME-3``... when taken (even by a concurrent save); an explicit ``name`` that is
    taken, or becomes taken while this run is written, raises ConfigError "a run named NAME
    already exists" (exit 2): an explicit name is never silently changed. The checks of
    :func:`opis_cli.report.runs.check_out_dir` come first, so nothing is written into an out-dir the run
    could not be saved in. On any failure nothing is left behind (no staging directory, no
    temporary file) and ``latest`` is unchanged. Ctrl-C or SIGTERM during the publication is
    acted on after it, as :class:`InterruptedAfterSave` (see the module docstring).
    """
    from opis_cli.report.output_checks import check_out_dir

    check_out_dir(out_dir, name)
    root = Path(out_dir)
    runs = root / "runs"
    try:
        runs.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create run directory {runs}: {exc.strerror or exc}") from None
    clean_leftovers(root)
    base = name if name is not None else default_run_name(report.input.get("path"))
    meta = {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "timings": report.timings,
            **(extra or {})}
    while True:
        staging = runs / f"{_STAGING}{owner_tag()}.{secrets.token_hex(4)}"
        try:
            os.mkdir(staging)  # mode 0777 & ~umask, like any directory the user makes (mkdtemp: 0700)
            break
        except FileExistsError:
            continue
        except OSError as exc:
            raise InputError(f"cannot save runs in {runs}: {exc.strerror or exc}") from None
    try:
        _fill(staging, report, meta, base)
        with DeferredSignals() as held:
            final = _publish(staging, runs, base, name is not None, meta)
            held.saved = final
            _fsync_dir(runs)
            _switch_latest(root, final)
    except BaseException:
        if os.path.lexists(staging):  # not published: remove it, undisturbed by a second Ctrl-C
            with DeferredSignals():
                shutil.rmtree(staging, ignore_errors=True)
        raise
    return final
