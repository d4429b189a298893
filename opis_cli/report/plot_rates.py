"""ROC and DET figures of runs evaluated with ``--eer`` (their rates.parquet: the full-span FAR and
FRR of the pooled pairs and of the classes with the highest EER).

* ``roc``: TAR = 1 - FRR against FAR on a log FAR axis (bob.measure's ``roc(..., CAR=True)``);
* ``det``: FRR against FAR, both on normal-deviate axes (probit: norm.ppf of the rate), as
  bob.measure's ``det`` draws them, with ticks in percent and the EER diagonal FAR = FRR.

Both: the pooled curve bold with its EER point, the highest-EER classes in shades of red named in
the legend with their EER, and the calibration range's FAR band (pooled FAR at lo and hi) shaded.
"""

from __future__ import annotations

import numpy as np

from opis_cli.errors import InputError
from opis_cli.report.figure_files import MEAN_COLOUR, RANGE_COLOUR, short_label
from opis_cli.report.runs import SavedRun

#: DET ticks (rates), as bob.measure's det_axis offers them.
DET_TICKS = (1e-4, 1e-3, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8)
RUN_COLOURS = ("#111111", "#3b6ea8", "#2a9d8f", "#8e5ea2", "#e9a03b")
CLASS_SHADES = ("#b2182b", "#d6604d", "#e08214", "#c51b7d", "#8c510a")  # the highest-EER classes, highest first


def _need_rates(run: SavedRun) -> dict:
    if run.rates is None:
        raise InputError(f"{run.name}: no full-span FAR/FRR curves (rates.parquet): evaluate with --eer, and pass "
                         "the run directory")
    return run.rates


def _probit(rate: np.ndarray) -> np.ndarray:
    from scipy.stats import norm

    return norm.ppf(rate)


def _open(rate: np.ndarray) -> np.ndarray:
    """Points strictly inside (0, 1): the only ones a probit or log axis can show."""
    return (rate > 0) & (rate < 1)


def rates_figure(plt, runs: list[SavedRun], title: str | None, kind: str):
    """The ROC (``kind="roc"``) or DET figure of one or more runs: each run's pooled curve; with
    one run also its highest-EER classes; the calibration band of the first run."""
    rates = [_need_rates(run) for run in runs]
    fig, ax = plt.subplots(figsize=(6.8, 5.6))
    det = kind == "det"
    x_of = _probit if det else (lambda v: v)
    y_of = _probit if det else (lambda v: v)
    cal = runs[0].report.get("calibration", {})
    if "far_at_lo" in cal and cal["far_at_hi"] > 0:
        lo = max(cal["far_at_lo"], 1e-9)
        ax.axvspan(float(x_of(np.array(lo))), float(x_of(np.array(cal["far_at_hi"]))), color=RANGE_COLOUR,
                   alpha=0.18, lw=0, label=f"calibration range (FAR {cal['far_at_lo']:.2g}..{cal['far_at_hi']:.2g})")
    if len(runs) == 1:
        # Named in the legend, not on the curves: their ends bunch where every curve meets.
        eers = {row["label"]: row.get("eer") for row in runs[0].report.get("classes", [])}
        for r, (label, far, frr) in enumerate(rates[0]["classes"]):
            y = frr if det else 1.0 - frr
            keep = _open(far) & (_open(frr) if det else True)
            eer = eers.get(label)
            ax.plot(x_of(far[keep]), y_of(y[keep]), color=CLASS_SHADES[r % len(CLASS_SHADES)], lw=1.0, alpha=0.85,
                    label=f"{short_label(label, 20)}" + (f" (EER {eer:.3g})" if eer is not None else ""))
    for i, (run, rt) in enumerate(zip(runs, rates)):
        far, frr = rt["far"], rt["frr"]
        y = frr if det else 1.0 - frr
        keep = _open(far) & (_open(frr) if det else True)
        colour = RUN_COLOURS[i % len(RUN_COLOURS)] if len(runs) > 1 else MEAN_COLOUR
        eer = run.report["metrics"].get("eer", {})
        ax.plot(x_of(far[keep]), y_of(y[keep]), color=colour, lw=2.2, zorder=5,
                label=f"{'pooled' if len(runs) == 1 else short_label(run.name, 28)}"
                      + (f" (EER {eer['eer']:.3g})" if eer else ""))
        if eer and 0 < eer["far"] < 1 and (not det or 0 < eer["frr"] < 1):
            ey = eer["frr"] if det else 1.0 - eer["frr"]
            ax.scatter([x_of(np.array(eer["far"]))], [y_of(np.array(ey))], s=36, color=colour, zorder=6,
                       edgecolor="white")
    if det:
        ticks = np.array(DET_TICKS)
        labels = [f"{100 * t:g}" for t in ticks]
        ax.set_xticks(_probit(ticks), labels, fontsize=7)
        ax.set_yticks(_probit(ticks), labels, fontsize=7)
        span = _probit(np.array([DET_TICKS[0] / 2, 0.9]))
        ax.plot(span, span, color="#999999", lw=0.7, ls="--", label="FAR = FRR (EER)")
        ax.set_xlim(*span)
        ax.set_ylim(*span)
        ax.set_xlabel("false accept rate (%)")
        ax.set_ylabel("false reject rate (%)")
    else:
        ax.set_xscale("log")
        ax.set_xlim(left=max(1e-6, _smallest_far(rates)), right=1.0)
        ax.set_ylim(0.0, 1.01)
        ax.set_xlabel("false accept rate (pooled FAR, log scale)")
        ax.set_ylabel("true accept rate (1 - FRR)")
    ax.grid(alpha=0.25, lw=0.5)
    ax.legend(loc="upper right" if det else "lower right", fontsize=7, framealpha=0.9)
    name = runs[0].name if len(runs) == 1 else f"{len(runs)} runs"
    ax.set_title(title or f"{'DET' if det else 'ROC'}: {name}", fontsize=11)
    return fig


def _smallest_far(rates: list[dict]) -> float:
    values = [float(rt["far"][rt["far"] > 0].min()) for rt in rates if (rt["far"] > 0).any()]
    return min(values) if values else 1e-6
