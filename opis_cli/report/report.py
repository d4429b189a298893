"""The evaluation report: plain data, rendered as JSON, Markdown or text.

JSON schema (``schema_version`` 4; docs/report-format.md says what each version changed). Keys
marked * are a stable interface for CI jobs::

    schema_version*      int
    tool                 {name, version*}
    input*               {path, format, embedding_column, label_column, n, d, classes,
                          classes_used, classes_skipped, sha256 (embeddings and labels in row
                          order), labels_sha256 (label values and counts: the evaluation set,
                          whatever the model), dtype (as stored), duplicate_rows}
    config*              every option that changes a figure (EvalConfig.to_dict)
    calibration*         {mode, lo*, hi*, thresholds*, step, far_target, resolution,
                          far_at_lo, far_at_hi, tar_at_lo, tar_at_hi}
    metrics*             {opis*, eps_opis*, eps_contrast, eps_worst_classes, recall_at_k*, eer}
                         recall_at_k is keyed by k as a string: {"1": 0.93}; with
                         --retrieval also map_at_r, r_precision, queries; eer (--eer):
                         {eer, threshold, far, frr, interval, resolution, thresholds, span}
                         (opis_cli/statistics/eer.py)
    pairs                {positive, negative}
    engine               {name: exact, passes} or {name: approximate, index}; and choice: given
                         or auto, with reason and exact_minutes_estimate (opis_cli/cost.py)
    approximation        (approximate engines only) {method, index, negatives, positives, options,
                          checks: {knn_recall, range_recall, ...}, errors: {opis, eps_opis:
                          {se, interval, method}, recall_at_k: {k: {exact_on_sample, queries,
                          interval, method}}}} -- see docs/approximate.md
    bootstrap            (with --bootstrap) {replicates, seed, unit, confidence, method,
                          opis/eps_opis: {se, interval}, recall_at_k: {k: {se, interval}}}
                          -- see docs/ci.md
    groups               (--group-col) {column, groups, groups_used, opis, eps_opis, rows: [{group,
                          positive_pairs, negative_pairs, mean_utility, opis_contribution,
                          in_worst_eps}], disparity: [{at, threshold, far, frr}]} -- see
                          opis_cli/analyses/groups.py, docs/deployment.md
    tar_at_far           (--tar-at-far) {F: {threshold, pooled_far, pooled_tar, tar: [...], far: [...]}}
                          lists in the order of classes; threshold: the largest 1e-4 grid
                          threshold with pooled FAR <= F
    margins              (opis margins) {lambda_plus, lambda_minus, resolution, recommended, given,
                          candidates, classes, what_if_note} -- see docs/margins.md; recommended
                          and given carry frr_at_margin_minus and warnings, candidates conflict
    classes*             [{label, size, positive_pairs, negative_pairs, mean_utility,
                           opis_contribution, in_worst_eps, queries, recall_hits: {k: hits},
                           eer, eer_threshold (--eer), map_at_r, r_precision (--retrieval)}]
                          in label order

The same data and options give byte-identical JSON: no timestamps, no timings, no run names
(those go to run.json in the run directory).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from opis_cli import __version__
from opis_cli.statistics.calibration import CalibrationRange
from opis_cli.config import EvalConfig
from opis_cli.statistics.curves import ClassCurves
from opis_cli.engine.histograms import PooledHistogram

if TYPE_CHECKING:
    from opis_cli.engine.distributions import DistanceDistributions
    from opis_cli.statistics.eer import EerFigures
    from opis_cli.statistics.metrics import RetrievalFigures

SCHEMA_VERSION = 4


@dataclass
class Report:
    """Everything an evaluation produced. ``str(report)`` is a plain-text summary."""

    config: EvalConfig
    calibration: CalibrationRange
    input: dict
    labels: list  # label value of each curve row (used classes, label order)
    curves: ClassCurves
    opis: float
    eps_opis: float
    opis_contributions: np.ndarray
    mean_utility: np.ndarray
    mean_curve: np.ndarray
    worst: np.ndarray  # row indices of the eps-worst classes
    contrast: np.ndarray
    recall_at_k: dict[int, float]
    pooled: PooledHistogram
    engine: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    approximation: dict | None = None  # approximate engine: method, diagnostics, error bars
    groups: dict | None = None  # --group-col: OPIS and eps-OPIS across groups (opis_cli.analyses.groups)
    tar_at_far: dict | None = None  # --tar-at-far: per-class TAR/FAR at the global threshold of each FAR
    distributions: "DistanceDistributions | None" = None  # for plots; saved beside, not in the JSON
    class_recall: tuple | None = None  # (queries (C,), {k: hits (C,)}) per curve row, for the bootstrap
    bootstrap: dict | None = None  # class-bootstrap intervals (opis evaluate --bootstrap)
    margins: dict | None = None  # TCM margin recommendations (opis margins)
    eer: "EerFigures | None" = None  # --eer: pooled and per-class EER, full-span ROC/DET curves
    retrieval: "RetrievalFigures | None" = None  # --retrieval: MAP@R and R-precision

    # ------------------------------------------------------------------ derived figures
    @property
    def pooled_far(self) -> np.ndarray:
        """Pooled FAR at each grid threshold: accepted negatives / all negatives."""
        from opis_cli.statistics.curves import accepted_at_thresholds

        return accepted_at_thresholds(self.pooled.neg) / max(float(self.pooled.neg.sum()), 1.0)

    @property
    def far_at_lo(self) -> float:
        return _accepted_share(self.pooled.neg, 0)

    @property
    def far_at_hi(self) -> float:
        return _accepted_share(self.pooled.neg, -1)

    @property
    def tar_at_lo(self) -> float:
        return _accepted_share(self.pooled.pos, 0)

    @property
    def tar_at_hi(self) -> float:
        return _accepted_share(self.pooled.pos, -1)

    def class_rows(self) -> list[dict]:
        """One dict per used class, in label order (the report's ``classes`` list)."""
        in_worst = np.zeros(len(self.labels), bool)
        in_worst[self.worst] = True
        queries, hits = self.class_recall if self.class_recall is not None else (None, {})
        return [
            {
                "label": label,
                "size": int(self.curves.sizes[i]),
                "positive_pairs": int(self.curves.n_pos[i]),
                "negative_pairs": int(self.curves.n_neg[i]),
                "mean_utility": float(self.mean_utility[i]),
                "opis_contribution": float(self.opis_contributions[i]),
                "in_worst_eps": bool(in_worst[i]),
                # Per-class hits make a paired class bootstrap of two reports possible (opis gate).
                **({"queries": int(queries[i]),
                    "recall_hits": {str(k): int(hits[k][i]) for k in sorted(hits)}} if queries is not None else {}),
                **({"eer": float(self.eer.classes.eer[i]), "eer_threshold": float(self.eer.classes.threshold[i])}
                   if self.eer is not None else {}),
                **({"map_at_r": float(self.retrieval.class_map_at_r[i]),
                    "r_precision": float(self.retrieval.class_r_precision[i])} if self.retrieval is not None else {}),
            }
            for i, label in enumerate(self.labels)
        ]

    def worst_classes(self, count: int = 10) -> list[dict]:
        """The ``count`` classes with the lowest mean utility (ties: label order)."""
        rows = self.class_rows()
        order = np.lexsort((np.arange(len(self.mean_utility)), self.mean_utility))[:count]
        return [rows[int(i)] for i in order]

    # ------------------------------------------------------------------ renderers
    def to_dict(self) -> dict:
        cal = self.calibration
        grid = self.curves.grid
        calibration = {
            "mode": cal.mode,
            "lo": cal.lo,
            "hi": cal.hi,
            "thresholds": int(len(grid)),
            "step": float(grid[1] - grid[0]),
        }
        if cal.mode == "far":
            calibration["far_target"] = [cal.far_target[0], cal.far_target[1]]
            calibration["resolution"] = cal.resolution
            if cal.sampled_anchors is not None:
                calibration["far_estimated_from_anchors"] = cal.sampled_anchors
        calibration.update(
            far_at_lo=self.far_at_lo, far_at_hi=self.far_at_hi,
            tar_at_lo=self.tar_at_lo, tar_at_hi=self.tar_at_hi,
        )
        return {
            "schema_version": SCHEMA_VERSION,
            "tool": {"name": "opis-cli", "version": __version__},
            "input": dict(self.input),
            "config": self.config.to_dict(),
            "calibration": calibration,
            "metrics": {
                "opis": self.opis,
                "eps_opis": self.eps_opis,
                "eps_contrast": self.config.eps_contrast,
                "eps_worst_classes": int(len(self.worst)),
                "recall_at_k": {str(k): v for k, v in sorted(self.recall_at_k.items())},
                **({"eer": self.eer.section()} if self.eer is not None else {}),
                **(self.retrieval.section() if self.retrieval is not None else {}),
            },
            "pairs": {
                "positive": int(self.pooled.pos.sum()),
                "negative": int(round(float(self.pooled.neg.sum()))),
            },
            "engine": dict(self.engine),
            **({"approximation": self.approximation} if self.approximation is not None else {}),
            **({"bootstrap": self.bootstrap} if self.bootstrap is not None else {}),
            **({"margins": self.margins} if self.margins is not None else {}),
            **({"groups": self.groups} if self.groups is not None else {}),
            **({"tar_at_far": self.tar_at_far} if self.tar_at_far is not None else {}),
            "classes": self.class_rows(),
        }

    def to_json(self) -> str:
        """The report as JSON text (deterministic: fixed key order, shortest float repr)."""
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False, allow_nan=False) + "\n"

    def summary_rows(self) -> list[tuple[str, str]]:
        """(name, value) rows of the headline figures, shared by every renderer."""
        inp = self.input
        cal = self.calibration
        err = (self.approximation or {}).get("errors", {})

        boot = self.bootstrap or {}

        def with_error(name: str, value: float) -> str:
            text = f"{value:.6g}"
            if err.get(name):
                lo, hi = err[name]["interval"]
                text += f"  [{lo:.4g}, {hi:.4g}]"
            if boot.get(name):
                lo, hi = boot[name]["interval"]
                text += f"  classes 95% [{lo:.4g}, {hi:.4g}]"
            return text

        ref = inp.get("reference")
        rows = [
            ("embeddings", f"{inp['n']:,} x {inp['d']}" + (f" queries, {ref['n']:,} references" if ref else "")),
            ("classes used / skipped", f"{inp['classes_used']:,} / {inp['classes_skipped']:,}"),
            ("metric", self.config.metric + ("" if self.config.normalize else " (unnormalised)")),
            ("calibration range", f"[{cal.lo:.6g}, {cal.hi:.6g}] ({len(self.curves.grid)} thresholds)"),
            ("pooled FAR at lo / hi", f"{self.far_at_lo:.4g} / {self.far_at_hi:.4g}"
             + (f" (target {cal.far_target[0]:g} / {cal.far_target[1]:g})" if cal.mode == "far" else "")),
            ("OPIS", with_error("opis", self.opis)),
            (f"eps-OPIS (eps={self.config.epsilon:g}, vs {self.config.eps_contrast})",
             with_error("eps_opis", self.eps_opis)),
        ]
        if self.approximation is not None:
            a = self.approximation
            engine = (f"approximate: {(a.get('index') or {}).get('type', a['method'])}, "
                      f"negatives by {a['negatives']}")
        else:
            engine = "exact"
        if self.engine.get("reason"):
            engine += f" (auto: {self.engine['reason']})"
        rows.insert(2, ("engine", engine))
        sampled = err.get("recall_at_k", {})
        for k, v in sorted(self.recall_at_k.items()):
            s = sampled.get(str(k))
            extra = (f" (index); exact on {s['queries']} sampled queries: {s['exact_on_sample']:.4f} "
                     f"[{s['interval'][0]:.4f}, {s['interval'][1]:.4f}]") if s else ""
            b = boot.get("recall_at_k", {}).get(str(k))
            if b:
                extra += f"  classes 95% [{b['interval'][0]:.4f}, {b['interval'][1]:.4f}]"
            rows.append((f"Recall@{k}", f"{v:.4f}{extra}"))
        if self.retrieval is not None:
            rows.append(("MAP@R / R-precision", f"{self.retrieval.map_at_r:.4f} / {self.retrieval.r_precision:.4f} "
                                                f"({self.retrieval.queries:,} queries)"))
        if self.eer is not None:
            e = self.eer.section()
            rows.append(("EER (pooled)", f"{e['eer']:.4g} at d = {e['threshold']:.4g} (between {e['interval'][0]:.4g} "
                                         f"and {e['interval'][1]:.4g} at any threshold; grid step {e['resolution']:.3g})"))
        return rows

    def to_markdown(self, worst: int = 10) -> str:
        """A Markdown summary for a pull-request comment or $GITHUB_STEP_SUMMARY."""
        lines = ["### opis-cli evaluation", "", "| | |", "|---|---|"]
        lines += [f"| {name} | {value} |" for name, value in self.summary_rows()]
        lines += ["", f"**Worst classes** (lowest mean utility, {worst} shown)", "",
                  "| label | size | mean utility | OPIS contribution | share of OPIS |", "|---|---:|---:|---:|---:|"]
        for row in self.worst_classes(worst):
            share = row["opis_contribution"] / self.opis if self.opis > 0 else 0.0
            lines.append(f"| {md_escape(row['label'])} | {row['size']} | {row['mean_utility']:.4f} | "
                         f"{row['opis_contribution']:.3g} | {share:.1%} |")
        if self.groups is not None:
            lines += ["", self._groups_markdown(worst)]
        return "\n".join(lines) + "\n"

    def _groups_markdown(self, worst: int) -> str:
        """The groups section (--group-col): OPIS and eps-OPIS across groups, the disparity of
        their FAR and FRR, the groups with the lowest mean utility."""
        from opis_cli.analyses.groups import disparity_text

        g = self.groups
        eps = "-" if g["eps_opis"] is None else f"{g['eps_opis']:.6g}"
        head = [f"**Groups** ({md_escape(g['column'])}): OPIS {g['opis']:.6g}, eps-OPIS {eps} over "
                f"{g['groups_used']} of {g['groups']} groups", ""]
        head += [f"- at {d['at']} ({d['threshold']:.4g}): {md_escape(disparity_text(d))}" for d in g.get("disparity", [])]
        rows = sorted(g["rows"], key=lambda r: r["mean_utility"])[:max(worst, 1)]
        table = md_table(["group", "positive pairs", "negative pairs", "mean utility", "OPIS contribution"],
                         [[str(r["group"]), f"{r['positive_pairs']:,}", f"{r['negative_pairs']:,}",
                           f"{r['mean_utility']:.4f}", f"{r['opis_contribution']:.3g}"] for r in rows])
        return "\n".join(head) + "\n\n" + table.rstrip("\n")

    def __str__(self) -> str:
        width = max(len(name) for name, _ in self.summary_rows())
        return "\n".join(f"{name:<{width}}  {value}" for name, value in self.summary_rows())

    # ------------------------------------------------------------------ curves table
    def curves_table(self):
        """Long-format pyarrow table: label, curve ('class', 'mean' or 'pooled'), threshold, tar, trr,
        utility, pos_accepted, neg_accepted. 'mean' is the class average (counts null); 'pooled' the
        rates of all pairs at once (label null; trr = 1 - pooled FAR, the plot's FAR axis)."""
        import pyarrow as pa

        c, t = self.curves.utility.shape
        grid = self.curves.grid
        label_arr = pa.array(self.labels)
        labels = pa.concat_arrays([
            label_arr.take(pa.array(np.repeat(np.arange(c), t))),
            pa.nulls(2 * t, type=label_arr.type),
        ])
        from opis_cli.statistics.curves import accepted_at_thresholds, utility

        pos_acc, neg_acc = accepted_at_thresholds(self.pooled.pos), accepted_at_thresholds(self.pooled.neg)
        pooled_tar = pos_acc / max(float(self.pooled.pos.sum()), 1.0)
        pooled_trr = 1.0 - self.pooled_far
        no_counts = np.r_[np.zeros(c * t, bool), np.ones(t, bool), np.zeros(t, bool)]
        return pa.table({
            "label": labels,
            "curve": pa.array(["class"] * (c * t) + ["mean"] * t + ["pooled"] * t).dictionary_encode(),
            "threshold": np.concatenate([np.tile(grid, c), grid, grid]),
            "tar": np.concatenate([self.curves.tar.reshape(-1), self.curves.tar.mean(axis=0), pooled_tar]),
            "trr": np.concatenate([self.curves.trr.reshape(-1), self.curves.trr.mean(axis=0), pooled_trr]),
            "utility": np.concatenate([self.curves.utility.reshape(-1), self.mean_curve,
                                       utility(pooled_tar, pooled_trr, self.config.beta)]),
            "pos_accepted": pa.array(_counts_column(self.curves.pos_accepted, pos_acc), mask=no_counts),
            "neg_accepted": pa.array(_counts_column(self.curves.neg_accepted, neg_acc), mask=no_counts),
        })


def _counts_column(per_class: np.ndarray, pooled: np.ndarray) -> np.ndarray:
    """Class counts, the mean curve's placeholder zeros and the pooled counts, in the class
    counts' dtype (int64 exact, float64 for the approximate engine's estimates)."""
    dtype = per_class.dtype
    return np.concatenate([per_class.reshape(-1), np.zeros(pooled.size, dtype), pooled.astype(dtype)])


def rates_table(report: Report):
    """The full-span FAR and FRR curves of ``--eer`` (``rates.parquet``, for ``opis plot --kind
    roc|det``): columns curve ('pooled' or 'class'), label (null on the pooled curve), threshold,
    far, frr; the classes are the ones with the highest EER, highest first."""
    import pyarrow as pa

    e = report.eer
    t, s = e.edges.size, len(e.shown)
    labels = pa.array([report.labels[int(i)] for i in e.shown])
    return pa.table({
        "curve": pa.array(["pooled"] * t + ["class"] * (s * t)).dictionary_encode(),
        "label": pa.concat_arrays([pa.nulls(t, type=labels.type), labels.take(pa.array(np.repeat(np.arange(s), t)))]),
        "threshold": np.tile(e.edges, s + 1),
        "far": np.concatenate([e.pooled_far, e.shown_far.reshape(-1)]),
        "frr": np.concatenate([e.pooled_frr, e.shown_frr.reshape(-1)]),
    })


def _accepted_share(counts: np.ndarray, index: int) -> float:
    total = int(counts.sum())
    if total == 0:
        return math.nan
    accepted = np.cumsum(counts[:-1])
    return float(accepted[index] / total)


def md_escape(value) -> str:
    """A label or name as inert Markdown table text: no cell break (|, newlines), no HTML, no
    code-span end, no @mention."""
    text = " ".join(str(value).splitlines())
    for a, b in (("\\", "\\\\"), ("|", "\\|"), ("<", "&lt;"), (">", "&gt;"), ("`", "'"), ("@", "@\u200b")):
        text = text.replace(a, b)
    return text


def md_table(header: list[str], rows: list[list[str]], warnings: list[str] = ()) -> str:
    """A Markdown table (first column left, the rest right-aligned), every cell through
    :func:`md_escape`, then one ``> **warning:**`` line per warning."""
    lines = ["| " + " | ".join(md_escape(h) for h in header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    lines += ["| " + " | ".join(md_escape(c) for c in row) + " |" for row in rows]
    if warnings:
        lines.append("")
    lines += [f"> **warning:** {md_escape(w)}" for w in warnings]
    return "\n".join(lines) + "\n"
