"""What every command shares: exit codes, the stderr console, the one error-to-exit-code mapping
(:func:`exit_on_errors`), the lazy progress bar, library notes and the crash report.

User mistakes arrive as OpisError and leave as one line on stderr with exit code 2; Ctrl-C and
SIGTERM leave with 130 / 143 and a truthful word on whether the run was saved; anything else is a
bug (exit 3, :func:`_bug`).
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import typer

from opis_cli import __version__
from opis_cli.errors import OpisError

# 1 is reserved for a failed gate: a crash must never read as a regression in CI.
EXIT_OK, EXIT_GATE_FAILED, EXIT_USAGE, EXIT_BUG = 0, 1, 2, 3


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


@contextmanager
def exit_on_errors(progress: "_LazyProgress | None" = None):
    """The one mapping of a command's errors to exit codes, around its library call.

    OpisError leaves as one line and exit 2; Ctrl-C / SIGTERM as :func:`_interrupted` (130 / 143),
    naming the saved run if there is one: the library attaches it to the exception
    (``exc.run_dir``), or the command records it on the yielded state (``state.run_dir``). The
    progress bar is stopped first, so the message is not drawn over.
    """
    state = SimpleNamespace(run_dir=None)
    try:
        yield state
    except OpisError as exc:
        if progress is not None:
            progress.stop()
        raise _fail(str(exc)) from None
    except KeyboardInterrupt as exc:
        if progress is not None:
            progress.stop()
        raise _interrupted(exc, getattr(exc, "run_dir", None) or state.run_dir) from None


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


def _progress(quiet: bool) -> _LazyProgress:
    """The progress bar of a long command: on a terminal, unless --quiet."""
    return _LazyProgress(enabled=not quiet and sys.stderr.isatty())


def _input_files(*paths) -> list[Path]:
    """Every file a command reads from ``paths``: what no output may overwrite
    (opis_cli.report.output_checks.input_files)."""
    from opis_cli.report.output_checks import input_files

    return input_files(*paths)


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
