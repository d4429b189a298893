"""What every figure shares: the output format from the path, the dpi check, the atomic write
with no creation date (the same run gives the same file), the colours and short labels."""

from __future__ import annotations

from pathlib import Path

from opis_cli.errors import ConfigError
from opis_cli.report.runs import atomic_write

FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}

CLASS_COLOUR = "#3b6ea8"
WORST_COLOUR = "#d1495b"
MEAN_COLOUR = "#111111"
RANGE_COLOUR = "#f2c14e"
POS_COLOUR = "#2a9d8f"
NEG_COLOUR = "#e76f51"


def check_dpi(dpi: int) -> None:
    if dpi < 10 or dpi > 2000:
        raise ConfigError(f"--dpi must lie in [10, 2000], got {dpi}")


def format_of(out: Path) -> str:
    fmt = FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise ConfigError(f"cannot tell the image format of {out.name!r}: use a .png, .svg or .pdf path")
    return fmt


def save_figure(plt, fig, out: Path, fmt: str, dpi: int) -> Path:
    """Write ``fig`` atomically (no half-written image for a reader) and close it; the same
    figure gives the same bytes in every format."""
    atomic_write(out, lambda p: _render(plt, fig, p, fmt, dpi))
    return out


def figure_data(plt, fig, fmt: str, dpi: int) -> bytes:
    """``fig`` as the bytes of a ``fmt`` file (for pages that inline it), closed after."""
    import io

    buf = io.BytesIO()
    _render(plt, fig, buf, fmt, dpi)
    return buf.getvalue()


def _render(plt, fig, target, fmt: str, dpi: int) -> None:
    try:
        # A fixed salt: matplotlib otherwise names SVG clip paths and glyphs with random ids, and
        # two identical runs would give two different files.
        with plt.rc_context({"svg.hashsalt": "opis-cli"}):
            fig.savefig(target, format=fmt, dpi=dpi, bbox_inches="tight", metadata=metadata(fmt))
    finally:
        plt.close(fig)


def metadata(fmt: str) -> dict:
    # No creation dates: the same run gives the same file.
    if fmt == "png":
        return {"Software": "opis-cli"}
    if fmt == "svg":
        return {"Date": None}
    return {"CreationDate": None}


def short_label(label, width: int = 22) -> str:
    s = str(label)
    return s if len(s) <= width else s[: width - 1] + "…"
