"""TCM margins for arrays in memory: ``opis_cli.recommend_margins(embeddings, labels, ...)``.

The same computation as ``opis margins`` (opis_cli.analyses.margins.margins_section, docs/margins.md),
returned as a typed :class:`MarginAdvice` instead of a report section, so a training loop can
ask for margins without a file or a subprocess. What the margins are worth in training is
measured in docs/tcm.md: compute them on the TRAINING classes embedded by the current model,
never on test classes, and validate on held-out classes before trusting them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from opis_cli.config import DEFAULT_CALIB_FAR, DEFAULT_MEMORY_BUDGET, EvalConfig


@dataclass(frozen=True)
class MarginAdvice:
    """TCM margins at pooled-rate targets and what they mean on the data they came from.

    margin_minus = 1 - t-, t- the smallest 1e-4 grid threshold where the pooled FAR reaches
    target_far (hard negatives: s >= m-; their share is FAR(t-)); margin_plus = 1 - t+, t+ the
    smallest where the pooled FRR falls to target_frr (hard positives: s <= m+; share FRR(t+)).
    tcm_loss = lambda_plus * mean_{hard pos}(m+ - s) + lambda_minus * mean_{hard neg}(s - m-) over
    all pairs. what_if_opis: OPIS if every hard pair sat on its margin (idealised).
    """

    margin_plus: float
    margin_minus: float
    target_far: float
    target_frr: float
    frr_at_margin_minus: float  # pooled FRR at threshold 1 - m- (a deployment at the FAR target)
    hard_positives: int
    hard_negatives: int
    hard_positive_share: float
    hard_negative_share: float
    tcm_loss: float
    lambda_plus: float
    lambda_minus: float
    opis: float  # the data's OPIS now
    what_if_opis: float
    what_if_eps_opis: float
    warnings: tuple[str, ...]
    explanation: tuple[str, ...]
    calibration: dict  # mode, lo, hi, far_target (the range the what-if is read on)
    candidates: tuple[dict, ...] = field(repr=False)
    report: Any = field(repr=False, compare=False)  # the full opis_cli.report.report.Report

    @classmethod
    def from_report(cls, report) -> "MarginAdvice":
        """The advice in a report produced by ``opis margins`` / pipeline.margins_dataset."""
        m = report.margins
        rec = m["recommended"]
        cal = report.calibration
        return cls(
            margin_plus=float(rec["margin_plus"]), margin_minus=float(rec["margin_minus"]),
            target_far=float(rec["target_far"]), target_frr=float(rec["target_frr"]),
            frr_at_margin_minus=float(rec["frr_at_margin_minus"]),
            hard_positives=int(rec["hard_positives"]), hard_negatives=int(rec["hard_negatives"]),
            hard_positive_share=float(rec["hard_positive_share"]),
            hard_negative_share=float(rec["hard_negative_share"]), tcm_loss=float(rec["tcm_loss"]),
            lambda_plus=float(m["lambda_plus"]), lambda_minus=float(m["lambda_minus"]), opis=float(report.opis),
            what_if_opis=float(rec["what_if_opis"]), what_if_eps_opis=float(rec["what_if_eps_opis"]),
            warnings=tuple(rec["warnings"]), explanation=tuple(rec["explanation"]),
            calibration={"mode": cal.mode, "lo": cal.lo, "hi": cal.hi,
                         **({"far_target": list(cal.far_target)} if cal.far_target else {})},
            candidates=tuple(m["candidates"]), report=report,
        )

    def pml_kwargs(self) -> dict:
        """Keyword arguments of pytorch-metric-learning's ``ThresholdConsistentMarginLoss``."""
        return {"lambda_plus": self.lambda_plus, "lambda_minus": self.lambda_minus,
                "margin_plus": self.margin_plus, "margin_minus": self.margin_minus}

    def pml_line(self) -> str:
        """The constructor call, as ``opis margins --format pml`` prints it."""
        return pml_line(self.report.margins)


def pml_line(margins: dict) -> str:
    """``ThresholdConsistentMarginLoss(...)`` for a report's ``margins`` section (given margins
    when there are any, else the margins at the targets)."""
    chosen = margins.get("given") or margins["recommended"]
    return (f"ThresholdConsistentMarginLoss(lambda_plus={float(margins['lambda_plus'])!r}, "
            f"lambda_minus={float(margins['lambda_minus'])!r}, margin_plus={chosen['margin_plus']:.4f}, "
            f"margin_minus={chosen['margin_minus']:.4f})")


def recommend_margins(
    embeddings: Any,
    labels: Any,
    *,
    target_far: float | None = None,
    target_frr: float | None = None,
    calib: tuple[float, float] | None = None,
    calib_far: tuple[float, float] = DEFAULT_CALIB_FAR,
    thresholds: int = 101,
    beta: float = 1.0,
    epsilon: float = 0.1,
    eps_contrast: str = "rest",
    lambda_plus: float = 1.0,
    lambda_minus: float = 1.0,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    threads: int | None = None,
    progress=None,
) -> MarginAdvice:
    """TCM margins for ``embeddings`` (N, D) and ``labels`` (N,), exactly as ``opis margins``.

    Defaults: target_far = the pooled FAR at the calibration range's upper end, target_frr = the
    pooled FRR at its lower end (the range from ``calib`` or ``calib_far``). Check
    ``advice.warnings`` before use (conflicting targets, most pairs hard, a what-if that helps
    nothing), and read docs/tcm.md: on held-out classes these margins were not measured to beat
    pytorch-metric-learning's defaults.

    >>> import numpy as np, opis_cli
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(300, 16)) + np.repeat(rng.normal(size=(15, 16)) * 2, 20, axis=0)
    >>> advice = opis_cli.recommend_margins(x, np.repeat(np.arange(15), 20))
    >>> -1 <= advice.margin_minus <= 1 and sorted(advice.pml_kwargs())[:2]
    ['lambda_minus', 'lambda_plus']
    """
    from opis_cli.pipeline.evaluation import array_dataset
    from opis_cli.pipeline.margins import margins_dataset

    config = EvalConfig(calib=calib, calib_far=tuple(calib_far), thresholds=thresholds, beta=beta, epsilon=epsilon,
                        eps_contrast=eps_contrast)
    report = margins_dataset(array_dataset(embeddings, labels), config, memory_budget=memory_budget, threads=threads, progress=progress,
                             target_far=target_far, target_frr=target_frr, lambda_plus=lambda_plus,
                             lambda_minus=lambda_minus)
    return MarginAdvice.from_report(report)


__all__: Sequence[str] = ("MarginAdvice", "recommend_margins", "pml_line")
