"""Figures of saved runs (matplotlib with the Agg backend; imported by ``opis plot`` only).

Kinds:

* ``curves``: every class's utility against the threshold, thin and translucent (alpha and width
  adapt to the number of classes), the mean curve bold, the eps-worst classes in a contrasting
  colour with the few worst labelled, the calibration range shaded, OPIS / eps-OPIS / Recall@1 in
  a box. The paper's central picture.
* ``compare``: that picture for two or more runs side by side on shared axes (before/after TCM).
* ``pareto``: runs as points of OPIS against recognition error 1 - Recall@1.
* ``distributions``: positive and negative pair-distance densities over the whole span, pooled
  and for the worst classes, with the calibration range and any TCM margins marked.
* ``roc`` and ``det`` (runs evaluated with ``--eer``): full-span ROC / DET curves, pooled and of
  the highest-EER classes, the calibration range's FAR band marked (report/plot_rates.py).
* ``operating-points`` (from an ``opis thresholds --json`` report): every class's FAR against
  FRR at the shipped threshold, the pooled point marked (:func:`plot_operating_points`).

The output format follows the extension of the output path: .png, .svg or .pdf.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from opis_cli.errors import ConfigError, InputError
from opis_cli.report.figure_files import (CLASS_COLOUR, MEAN_COLOUR, NEG_COLOUR, POS_COLOUR, RANGE_COLOUR,
                                          WORST_COLOUR, check_dpi, figure_data, format_of, save_figure, short_label)
from opis_cli.report.runs import SavedRun

KINDS = ("curves", "compare", "pareto", "distributions", "roc", "det")
LABELLED_WORST = 3


def plot_runs(runs: list[SavedRun], out: str | Path, *, kind: str = "curves", dpi: int = 150,
              title: str | None = None) -> Path:
    """Draw ``kind`` for ``runs`` and write it atomically to ``out`` (format from its extension)."""
    out = Path(out)
    fmt = format_of(out)
    plt, fig = _draw(runs, kind, dpi, title)
    return save_figure(plt, fig, out, fmt, dpi)


def figure_bytes(runs: list[SavedRun], kind: str, fmt: str, *, dpi: int = 110, title: str | None = None) -> bytes:
    """The figure ``plot_runs`` would write, as the bytes of a ``fmt`` file ("svg" or "png"),
    for pages that inline it (pages/html_report.py)."""
    plt, fig = _draw(runs, kind, dpi, title)
    return figure_data(plt, fig, fmt, dpi)


def _draw(runs: list[SavedRun], kind: str, dpi: int, title: str | None):
    """(pyplot, figure) of ``kind`` for ``runs``, after the checks every kind shares."""
    if kind not in KINDS:
        raise ConfigError(f"unknown plot kind {kind!r}; choose {', '.join(KINDS)}")
    if not runs:
        raise InputError("no runs to plot")
    check_dpi(dpi)
    if kind in ("curves", "distributions") and len(runs) != 1:
        raise ConfigError(f"--kind {kind} draws one run, got {len(runs)}; use --kind compare or pareto")
    if kind == "compare" and len(runs) < 2:
        raise ConfigError("--kind compare needs two or more runs")

    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    if kind in ("roc", "det"):
        from opis_cli.report.plot_rates import rates_figure

        return plt, rates_figure(plt, runs, title, kind)
    draw = {"curves": _curves_figure, "compare": _compare_figure, "pareto": _pareto_figure,
            "distributions": _distributions_figure}[kind]
    return plt, draw(plt, runs, title)


# ---------------------------------------------------------------------------------- curves
def _need_curves(run: SavedRun) -> None:
    if run.utility is None:
        raise InputError(f"{run.name}: no per-class curves (curves.parquet); pass a run directory, "
                         "not a bare report file")


def _style(n_classes: int) -> tuple[float, float]:
    """(alpha, line width) of one class's curve: ten curves read as lines, ten thousand as a
    density whose spread is visible."""
    alpha = float(np.clip(3.0 / math.sqrt(max(n_classes, 1)), 0.02, 0.7))
    width = 1.2 if n_classes <= 20 else 0.8 if n_classes <= 300 else 0.5
    return alpha, width


def _worst_rows(run: SavedRun) -> tuple[list[int], list[int]]:
    """Curve rows of the eps-worst classes, and the few worst of them (lowest mean utility)."""
    classes = run.report.get("classes", [])
    flagged = [i for i, c in enumerate(classes) if c.get("in_worst_eps")]
    ranked = sorted(flagged, key=lambda i: (classes[i]["mean_utility"], i))
    return flagged, ranked[:LABELLED_WORST]


def _draw_curves(ax, run: SavedRun, *, legend: bool = True) -> None:
    from matplotlib.collections import LineCollection

    _need_curves(run)
    grid, utility = run.grid, run.utility
    c = utility.shape[0]
    alpha, width = _style(c)
    flagged, labelled = _worst_rows(run)
    worst = np.zeros(c, bool)
    worst[flagged] = True
    lo, hi = float(grid[0]), float(grid[-1])
    pad = 0.04 * (hi - lo)
    ax.axvspan(lo, hi, color=RANGE_COLOUR, alpha=0.12, lw=0, label="calibration range")
    segments = np.stack([np.broadcast_to(grid, utility.shape), utility], axis=-1)
    ax.add_collection(LineCollection(segments[~worst], colors=CLASS_COLOUR, alpha=alpha, linewidths=width,
                                     label=f"class ({int((~worst).sum()):,})"))
    if worst.any():
        ax.add_collection(LineCollection(segments[worst], colors=WORST_COLOUR,
                                         alpha=max(alpha, min(0.8, 3.0 / math.sqrt(worst.sum()))),
                                         linewidths=max(width, 0.9), label=f"ε-worst ({int(worst.sum()):,})"))
    ax.plot(grid, run.mean_curve, color=MEAN_COLOUR, lw=2.4, label="mean", zorder=5)
    for i, y in zip(labelled, _spread([float(utility[i, -1]) for i in labelled], gap=0.035)):
        # Outside the frame, on the right: inside, the frame line would cross the label.
        ax.annotate(short_label(run.labels[i]), (1.0, y), xycoords=("axes fraction", "data"), xytext=(3, 0),
                    textcoords="offset points", fontsize=7, color=WORST_COLOUR, va="center", ha="left",
                    annotation_clip=False)
    ax.set_xlim(lo - pad, hi + pad)
    if run.pooled_far is not None:
        _far_axis(ax, grid, run.pooled_far)
    ax.set_ylim(min(0.0, float(np.nanmin(utility))) - 0.02, 1.02)
    ax.set_xlabel(f"distance threshold ({run.report.get('config', {}).get('metric', 'cosine')})")
    ax.set_ylabel("utility")
    ax.grid(alpha=0.25, lw=0.5)
    m = run.report["metrics"]
    ax.text(0.02, 0.03, _figures_text(m), transform=ax.transAxes, fontsize=8, va="bottom",
            bbox=dict(boxstyle="round,pad=0.4", fc="white", ec="#bbbbbb", alpha=0.9))
    if legend:  # below the axes: inside, the lower right corner is where the worst curves run
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=4, fontsize=7, frameon=False)


def _far_axis(ax, grid: np.ndarray, pooled_far: np.ndarray) -> None:
    """A top axis reading the pooled FAR at five of the grid's thresholds: where each threshold
    sits as an operating point (it follows the main axis's limits)."""
    top = ax.twiny()
    top.set_xlim(ax.get_xlim())
    ax.callbacks.connect("xlim_changed", lambda a: top.set_xlim(a.get_xlim()))
    idx = np.unique(np.linspace(0, len(grid) - 1, 5).round().astype(int))
    top.set_xticks(grid[idx])
    top.set_xticklabels([f"{pooled_far[i]:.2g}" for i in idx], fontsize=7)
    top.set_xlabel("pooled FAR at the threshold", fontsize=8)
    top.tick_params(axis="x", length=3, pad=1)


def _spread(ys: list[float], gap: float) -> list[float]:
    """Label positions near ``ys`` at least ``gap`` apart, keeping their order."""
    order = sorted(range(len(ys)), key=lambda i: ys[i])
    out = list(ys)
    for a, b in zip(order, order[1:]):
        out[b] = max(out[b], out[a] + gap)
    return out


def _figures_text(m: dict) -> str:
    lines = [f"OPIS {m['opis']:.4g}", f"ε-OPIS {m['eps_opis']:.4g}"]
    r1 = m.get("recall_at_k", {}).get("1")
    if r1 is not None:
        lines.append(f"Recall@1 {r1:.4f}")
    return "\n".join(lines)


def _curves_figure(plt, runs, title):
    run = runs[0]
    fig, ax = plt.subplots(figsize=(8, 5))
    _draw_curves(ax, run)
    ax.set_title(title or f"Per-class utility vs threshold: {run.name}", fontsize=11)
    return fig


def _compare_figure(plt, runs, title):
    for run in runs:
        _need_curves(run)
    cols = min(len(runs), 3)
    rows = math.ceil(len(runs) / cols)
    # Room between panels for the worst classes' labels right of each frame.
    fig, axes = plt.subplots(rows, cols, figsize=(5.6 * cols, 4.4 * rows), sharex=True, sharey=True,
                             squeeze=False, gridspec_kw={"wspace": 0.32, "hspace": 0.45})
    for ax, run in zip(axes.flat, runs):
        _draw_curves(ax, run, legend=ax is axes.flat[0])
        ax.set_title(run.name, fontsize=10)
    for ax in list(axes.flat)[len(runs):]:
        ax.set_visible(False)
    # Shared axes: the widest range of any run.
    lo = min(float(r.grid[0]) for r in runs)
    hi = max(float(r.grid[-1]) for r in runs)
    axes.flat[0].set_xlim(lo - 0.04 * (hi - lo), hi + 0.04 * (hi - lo))
    fig.suptitle(title or "Per-class utility vs threshold", fontsize=12, y=1.06)  # above the FAR axes
    return fig


# ---------------------------------------------------------------------------------- pareto
def _pareto_figure(plt, runs, title):
    from opis_cli.report.plot_labels import place_labels

    fig, ax = plt.subplots(figsize=(6.5, 5))
    xs, ys = [], []
    for run in runs:
        m = run.report["metrics"]
        r1 = m.get("recall_at_k", {}).get("1")
        if r1 is None:
            raise InputError(f"{run.name}: the report has no Recall@1 (evaluate with --k 1)")
        x, y = 1.0 - r1, m["opis"]
        err = (run.report.get("approximation") or {}).get("errors", {}).get("opis")
        if err:
            lo, hi = err["interval"]
            ax.errorbar([x], [y], yerr=[[y - lo], [hi - y]], fmt="none", ecolor="#777777", capsize=3)
        ax.scatter([x], [y], s=46, color=CLASS_COLOUR, edgecolor="white", zorder=3)
        xs.append(x)
        ys.append(y)
    ax.set_xlabel("recognition error (1 - Recall@1)")
    ax.set_ylabel("OPIS (lower: more threshold-consistent)")
    ax.grid(alpha=0.25, lw=0.5)
    ax.margins(0.15)
    ax.set_title(title or "Accuracy vs threshold consistency", fontsize=11)
    # Labels last, once the limits are final: nearby runs get labels that do not overprint.
    place_labels(ax, xs, ys, [short_label(run.name, 30) for run in runs])
    return fig


# ---------------------------------------------------------------------------- operating points
def load_thresholds_report(path: str | Path) -> dict:
    """A JSON report of ``opis thresholds`` (``kind: "thresholds"``), checked."""
    import json

    from opis_cli.analyses.operating_points import SCHEMA_VERSION

    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path} is not an opis thresholds report (cannot read it as JSON: {exc})") from None
    if not isinstance(data, dict) or data.get("kind") != "thresholds" or not isinstance(data.get("classes"), list):
        raise InputError(f"{path} is not an opis thresholds report (write one with opis thresholds --json)")
    if not isinstance(data.get("schema_version"), int) or data["schema_version"] > SCHEMA_VERSION:
        raise InputError(f"{path} has schema version {data.get('schema_version')!r}; upgrade opis-cli")
    return data


def plot_operating_points(report: dict, out: str | Path, *, dpi: int = 150, title: str | None = None) -> Path:
    """Per-class FAR against FRR at the shipped threshold (one point per class, area ~ class size),
    the pooled operating point marked, the worst classes labelled. Log FAR axis: impostor rates
    that differ by 10x matter as much near 1e-4 as near 1e-2."""
    out = Path(out)
    fmt = format_of(out)
    check_dpi(dpi)
    plt, fig = operating_points_figure(report, title)
    return save_figure(plt, fig, out, fmt, dpi)


def operating_points_figure(report: dict, title: str | None = None):
    """(pyplot, figure) of :func:`plot_operating_points` (the page and the tests draw it too)."""
    try:
        classes = report["classes"]
        far = np.array([c["far"] for c in classes], float)
        frr = np.array([c["frr"] for c in classes], float)
        size = np.array([c["size"] for c in classes], float)
        t, pooled = report["threshold"]["value"], report["pooled"]
        worst = list(report.get("worst_by_utility", []))[:LABELLED_WORST]
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"the thresholds report is incomplete ({exc})") from None
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.8, 5.2))
    floor = max(1e-6, 0.5 * far[far > 0].min()) if (far > 0).any() else 1e-6
    shown = np.maximum(far, floor)  # FAR 0 drawn at the axis floor (noted in the legend)
    area = 12 + 140 * np.sqrt(size / size.max())
    ax.scatter(shown, frr, s=area, color=CLASS_COLOUR, alpha=min(0.8, max(0.15, 30 / len(classes) ** 0.5)),
               edgecolor="white", linewidth=0.4, label=f"class ({len(classes)}; area ~ size)")
    labels = [c["label"] for c in classes]
    rows = [labels.index(lab) for lab in worst]
    for i in rows:
        ax.scatter([shown[i]], [frr[i]], s=area[i], color=WORST_COLOUR, edgecolor="white", zorder=3)
    ax.scatter([max(pooled["far"], floor)], [pooled["frr"]], marker="X", s=110, color=MEAN_COLOUR, zorder=4,
               label=f"pooled (FAR {pooled['far']:.3g}, FRR {pooled['frr']:.3g})")
    ax.set_xscale("log")
    ax.set_xlabel("class FAR at the global threshold (impostors accepted)" + (" [0 at the floor]" if (far == 0).any()
                                                                             else ""))
    ax.set_ylabel("class FRR at the global threshold (members rejected)")
    ax.grid(alpha=0.25, lw=0.5, which="both")
    # Below the axes: inside, it would cover classes (any corner can hold some).
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    _log_ticks(ax)
    from opis_cli.report.plot_labels import place_labels

    place_labels(ax, shown[rows], frr[rows], [short_label(str(labels[i]), 18) for i in rows], fontsize=7,
                 color=WORST_COLOUR)
    how = {"given": "given", "dev": "chosen on dev", "input": "chosen on this set"}.get(report["threshold"].get(
        "chosen_on"), "")
    ax.set_title(title or f"Operating points at threshold {t:.4f} ({how})", fontsize=11)
    return plt, fig


def _log_ticks(ax) -> None:
    """Labelled ticks on a log x axis that never collide: 1, 2, 5 per decade over a narrow span,
    powers of ten alone over a wide one; minor ticks unlabelled."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    lo, hi = ax.get_xlim()
    decades = np.log10(hi / lo) if lo > 0 else 10.0
    subs = (1.0, 2.0, 5.0) if decades <= 2 else (1.0,)
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


# ---------------------------------------------------------------------------- distributions
def _density(counts: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Density on bins merged to about Rice's rule, 2 n^(1/3) bins over the occupied span (a small
    class on 400 bins is noise), and the merged edges."""
    total = int(counts.sum())
    if total == 0:
        return np.zeros(len(counts)), edges
    occupied = np.flatnonzero(counts)
    span_bins = occupied[-1] - occupied[0] + 1
    target = max(10, int(2 * total ** (1 / 3)))
    factor = 1
    for f in (1, 2, 4, 5, 8, 10, 16, 20, 25, 40):
        if len(counts) % f == 0 and span_bins / f >= min(target, span_bins):
            factor = f
    merged = counts.reshape(-1, factor).sum(axis=1)
    merged_edges = edges[::factor]
    return merged / (total * np.diff(merged_edges)), merged_edges


def _span(dist, quantile: float = 0.001) -> tuple[float, float]:
    """The x range of the distributions plot: every positive pair (all of them: the hard ones in
    the tail are the point) and the negatives but for a ``quantile`` at each end (a few far
    outliers would squeeze the rest)."""
    edges = dist.edges
    pos, neg = dist.pos.sum(axis=0), dist.neg.sum(axis=0)
    lo, hi = [], []
    present = np.flatnonzero(pos)
    if present.size:
        lo.append(edges[present[0]])
        hi.append(edges[present[-1] + 1])
    if neg.sum():
        cum = np.cumsum(neg) / neg.sum()
        lo.append(edges[int(np.searchsorted(cum, quantile))])
        hi.append(edges[min(len(edges) - 1, int(np.searchsorted(cum, 1 - quantile)) + 1)])
    return (float(min(lo)), float(max(hi))) if lo else (float(edges[0]), float(edges[-1]))


def _margin_lines(run: SavedRun) -> list[tuple[str, float]]:
    """TCM margins saved with the run by ``opis margins`` (the given ones if any, else the
    recommended), as cosine distances d = 1 - m."""
    margins = run.report.get("margins") or {}
    chosen = margins.get("given") or margins.get("recommended") or {}
    return [(name, 1.0 - float(chosen[key])) for key, name in (("margin_plus", "m+"), ("margin_minus", "m-"))
            if key in chosen]


def _draw_distribution(ax, run, s: int, lo_hi) -> None:
    dist = run.distributions
    edges = dist.edges
    cal = run.report["calibration"]
    for counts, colour, name in ((dist.pos[s], POS_COLOUR, "positive pairs"), (dist.neg[s], NEG_COLOUR,
                                                                                  "negative pairs")):
        dens, e = _density(counts, edges)
        ax.stairs(dens, e, color=colour, lw=1.2, label=f"{name} ({int(counts.sum()):,})")
        ax.stairs(dens, e, color=colour, alpha=0.15, fill=True)
    ax.axvspan(cal["lo"], cal["hi"], color=RANGE_COLOUR, alpha=0.18, lw=0, label="calibration range")
    for name, d in _margin_lines(run):
        ax.axvline(d, color="#444444", ls="--", lw=1)
        ax.annotate(name, (d, 1.0), xycoords=("data", "axes fraction"), xytext=(2, -10), textcoords="offset points",
                    fontsize=8)
    ax.set_xlim(*lo_hi)
    ax.grid(alpha=0.25, lw=0.5)


def _distributions_figure(plt, runs, title):
    run = runs[0]
    dist = run.distributions
    if dist is None and run.report["input"].get("reference") is not None:
        raise InputError(f"{run.name}: a query/reference run has no distance distributions (not yet computed in "
                         "that mode); --kind curves, roc and det work")
    if dist is None:
        raise InputError(f"{run.name}: no distance distributions (distributions.parquet); pass a run directory "
                         "saved by this version of opis evaluate")
    lo_hi = _span(dist)
    n_classes = len(dist.scopes) - 1
    fig = plt.figure(figsize=(9, 6.5 if n_classes else 4))
    gs = fig.add_gridspec(2 if n_classes else 1, max(1, n_classes), height_ratios=[1.3, 1] if n_classes else None)
    ax = fig.add_subplot(gs[0, :])
    _draw_distribution(ax, run, 0, lo_hi)
    metric = run.report.get("config", {}).get("metric", "cosine")
    ax.set_title(f"pooled (a sample of {dist.anchors[0]:,} anchors, each against every item)", fontsize=9)
    ax.set_xlabel(f"pair distance ({metric})")
    ax.set_ylabel("density")
    ax.legend(fontsize=7, loc="upper right")
    for k in range(n_classes):
        sub = fig.add_subplot(gs[1, k], sharex=ax)
        _draw_distribution(sub, run, k + 1, lo_hi)
        sub.set_title(f"worst: {short_label(dist.scopes[k + 1], 18)}", fontsize=8, color=WORST_COLOUR)
        sub.tick_params(labelsize=7)
        sub.set_yticks([])
    fig.suptitle(title or f"Pair-distance distributions: {run.name}", fontsize=11)
    fig.tight_layout()
    return fig
