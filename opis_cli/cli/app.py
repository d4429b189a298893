"""The ``opis`` command line: parse options, make one library call, render.

This module is the typer ``app``: the root callback (``--version``), the commands registered
from their modules (evaluate, gate, compare, margins, thresholds, plot, report) and :func:`main`, the
console-script entry point. Every command maps its options onto a library call inside
:func:`opis_cli.cli.common.exit_on_errors`, the one mapping of errors to exit codes: user
mistakes arrive as OpisError and leave as one line on stderr with exit code 2.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from opis_cli import __version__
from opis_cli.cli import evaluate, gate, margins, plot, report_page, thresholds
from opis_cli.cli.common import EXIT_USAGE, Terminated, _bug, _fail, _interrupted

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

# In this order in `opis --help`.
app.command(epilog=evaluate.EPILOG)(evaluate.evaluate)
app.command(epilog=gate.GATE_EPILOG)(gate.gate)
app.command(epilog=gate.COMPARE_EPILOG)(gate.compare)
app.command(epilog=margins.EPILOG)(margins.margins)
app.command(epilog=thresholds.EPILOG)(thresholds.thresholds)
app.command(epilog=plot.EPILOG)(plot.plot)
app.command(epilog=report_page.EPILOG)(report_page.report)


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
