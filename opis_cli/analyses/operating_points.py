"""The deployment view: one global threshold, and what it does to each class.

OPIS says how inconsistent a model is across thresholds; a deployment ships one threshold t. This
module answers, exactly over all pairs, what that t does:

* t is given, or chosen on a development set (or the evaluated set itself) by a target pooled
  FAR: the largest threshold on the 1e-4 distance grid whose pooled FAR is at most the target
  (bob.measure's "far" criterion; the achieved FAR is reported beside it);
* on the evaluated set, at t: the pooled TAR and FAR, and per class FAR_i(t), FRR_i(t) and
  U_i(t) (docs/definitions.md), their spread (min / median / max) and the worst classes;
* each class's own best threshold: argmax of U_i over the whole distance span (the calibration
  grid, t, and SPAN_POINTS evenly spaced thresholds from 0 to the metric's upper bound), and how
  far it lies from t (the threshold each class would want); ``best_at_search_bound`` when the
  maximum sits at the first or last searched threshold, and ``never_served`` (best_threshold
  null) when U_i is 0 at every searched threshold: such a class is listed apart, not as "+0";
* ``min_class_size``: classes smaller than it are kept out of the worst lists (counted in
  ``held_back``): a class of 2 has one positive pair, and its rates jump by whole units;
* per-class TAR at fixed FAR values (``tar_at_far``): for each F, the global threshold chosen
  for pooled FAR <= F on the same set as t, and every class's TAR and FAR there.

One pooled pass on the fine grid per set that chooses thresholds (it also gives the FAR-derived
calibration range), and one sweep of the evaluated set (per-class counts, and the group counts of
--group-col) whose grid is the calibration grid with the chosen thresholds inserted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from opis_cli import __version__
from opis_cli.statistics.calibration import CalibrationRange, far_range, pooled_fine_histogram, threshold_at_most_far
from opis_cli.config import DEFAULT_MEMORY_BUDGET, EvalConfig
from opis_cli.statistics.curves import class_curves
from opis_cli.errors import ConfigError, InputError
from opis_cli.data.io import Dataset
from opis_cli.engine.accumulators import ClassCounts, GroupCounts
from opis_cli.engine.sweep import sweep
from opis_cli.data.prepare import PreparedEmbeddings

# Version 2: whole-span best-threshold search (best_at_search_bound, never_served, search),
# min_class_size / held_back; docs/report-format.md.
SCHEMA_VERSION = 3
SPAN_POINTS = 201


def _choose(p, fars, memory_budget, threads, progress):
    """Thresholds for pooled FAR <= each of ``fars`` on the set ``p`` (exact on the 1e-4 grid),
    with the FAR each achieves; also returns the fine histogram for reuse."""
    top = max(fars)
    edges, pooled, step = pooled_fine_histogram(p, top, memory_budget=memory_budget, progress=progress,
                                                threads=threads)
    out = {}
    total = int(pooled.neg.sum())
    accepted = np.cumsum(pooled.neg[:-1])
    for far in fars:
        t = threshold_at_most_far(edges, pooled.neg, far)
        k = int(np.searchsorted(edges, t))
        out[far] = (t, float(accepted[k] / total) if total else 0.0)
    return out, edges, pooled, step


def check_options(config: EvalConfig, dataset: Dataset, dev: Dataset | None, *, target_far: float | None,
                  threshold: float | None, tar_at_far: tuple[float, ...], min_class_size: int) -> None:
    """ConfigError / InputError for options that cannot describe one deployment (before any work)."""
    if not (isinstance(min_class_size, int) and min_class_size >= 2):
        raise ConfigError(f"--min-class-size must be an integer >= 2, got {min_class_size!r}")
    if (target_far is None) == (threshold is None):
        raise ConfigError("give exactly one of --target-far and --threshold")
    for far in ([target_far] if target_far is not None else []) + list(tar_at_far):
        if not 0.0 < far < 1.0:
            raise ConfigError(f"FAR targets must lie in (0, 1), got {far:g}")
    span_lo, span_hi = config.metric_span()
    if threshold is not None and not (span_lo <= threshold <= span_hi):
        raise ConfigError(f"--threshold {threshold:g} lies outside the {config.metric} distance span "
                          f"[{span_lo:g}, {span_hi:g}]")
    if dataset.reference is not None and dataset.groups is not None:
        raise ConfigError("--group-col is not available with --reference yet (groups are counted over one set)")
    if dev is not None and dev.d != dataset.d:
        raise InputError(f"--dev has {dev.d}-dimensional embeddings but the input has {dataset.d}: a threshold "
                         "chosen on one model's distances means nothing for another's; embed both with the same model")


def operating_points(
    p: PreparedEmbeddings,
    sizes: np.ndarray,
    dataset: Dataset,
    config: EvalConfig,
    *,
    p_dev: PreparedEmbeddings | None = None,
    dev: Dataset | None = None,
    digests: tuple[str | None, str | None] = (None, None),
    target_far: float | None = None,
    threshold: float | None = None,
    tar_at_far: tuple[float, ...] = (),
    worst: int = 10,
    min_class_size: int = 2,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    threads: int | None = None,
    progress=None,
) -> "OperatingPoints":
    """The deployment view of ``dataset`` (prepared as ``p``, class sizes ``sizes``) at one global
    threshold (module docstring); options checked by :func:`check_options`. The library call is
    :func:`opis_cli.pipeline.thresholds.thresholds_file`.

    Exactly one of ``target_far`` (choose t on ``dev``, prepared as ``p_dev``, else on ``dataset``,
    for pooled FAR <= it) and ``threshold`` (t given, in distance units). Per class, at t:
    FAR_i = 1 - TRR_i(t), FRR_i = 1 - TAR_i(t), U_i(t) as in docs/definitions.md; the class's best
    threshold is argmax_t' U_i(t') over the searched thresholds (module docstring; the smallest on
    ties), null when U_i = 0 at all of them ("never served"). ``digests``: the content hashes of
    ``dataset`` and ``dev`` when the caller has them already (else computed here).
    """
    stage = (lambda name: (lambda d, t: progress(name, d, t))) if progress else (lambda name: None)

    # Thresholds: on dev (or the evaluated set) for the FAR targets.
    fars = tuple(sorted(set(([target_far] if target_far is not None else []) + list(tar_at_far))))
    chooser_name = "dev" if p_dev is not None else "input"
    chosen, input_fine = {}, None
    if fars:
        if p_dev is not None:
            chosen, *_ = _choose(p_dev, fars, memory_budget, threads, stage("choosing thresholds (dev)"))
        else:
            chosen, *rest = _choose(p, fars + ((config.calib_far[1],) if config.calib is None else ()),
                                    memory_budget, threads, stage("choosing thresholds"))
            input_fine = rest
    t = threshold if threshold is not None else chosen[target_far][0]

    # The calibration range of the evaluated set (the grid over which each class's best threshold
    # is sought), as `opis evaluate` defines it.
    if config.calib is not None:
        calibration = CalibrationRange(lo=config.calib[0], hi=config.calib[1], mode="distance")
    else:
        if input_fine is None:
            input_fine = list(_choose(p, (config.calib_far[1],), memory_budget, threads,
                                      stage("calibrating"))[1:])
        calibration = far_range(*input_fine, *config.calib_far)
    grid = calibration.grid(config.thresholds)
    special = [t] + [chosen[f][0] for f in tar_at_far]
    from opis_cli.engine.distance import metric_upper_bound

    top = metric_upper_bound(p.metric, p.normalized, p.max_norm)
    span = np.linspace(0.0, top, SPAN_POINTS)
    edges = np.unique(np.concatenate([span, grid, np.asarray(special, np.float64)]))
    # One sweep: the per-class counts and, with --group-col, the group counts.
    accs = [ClassCounts(edges)]
    if dataset.groups is not None:
        accs.append(GroupCounts(edges, np.asarray(dataset.groups.codes, np.int64)[p.order], dataset.groups.n_classes))
    swept = sweep(p, accs, memory_budget=memory_budget, threads=threads, progress=stage("counting pairs")).results
    hist = swept[0].histograms
    pos_totals = p.positive_totals()  # the pairs that count: one set's, or (query, reference) pairs
    totals = (pos_totals, p.anchored_totals() - 2 * pos_totals)
    curves = class_curves(hist, sizes, beta=config.beta, totals=totals)
    pooled = hist.pooled()
    pooled_pos = np.cumsum(pooled.pos[:-1])
    pooled_neg = np.cumsum(pooled.neg[:-1])
    n_pos, n_neg = int(pooled.pos.sum()), int(pooled.neg.sum())
    labels = [dataset.labels.values[int(c)] for c in curves.classes]

    def at(value: float) -> int:
        return int(np.searchsorted(edges, value))

    it = at(t)
    far_c = 1.0 - curves.trr[:, it]
    frr_c = 1.0 - curves.tar[:, it]
    u_c = curves.utility[:, it]
    best_idx = np.argmax(curves.utility, axis=1)  # every edge is searched; first maximum: smallest threshold
    best_u = curves.utility[np.arange(curves.n_classes), best_idx]
    served = best_u > 0
    best_t = edges[best_idx]
    classes = []
    for i in range(curves.n_classes):
        row = {"label": labels[i], "size": int(curves.sizes[i]), "far": float(far_c[i]), "frr": float(frr_c[i]),
               "utility": float(u_c[i]), "best_threshold": float(best_t[i]) if served[i] else None,
               "best_utility": float(best_u[i]),
               "best_minus_global": float(best_t[i] - t) if served[i] else None,
               "best_at_search_bound": bool(served[i] and best_idx[i] in (0, len(edges) - 1)),
               "never_served": bool(not served[i])}
        classes.append(row)

    def spread(values: np.ndarray) -> dict:
        if values.size == 0:
            return {"min": None, "median": None, "max": None}
        return {"min": float(values.min()), "median": float(np.median(values)), "max": float(values.max())}

    # The worst lists rank served classes of at least min_class_size; the rest are named apart.
    eligible = [i for i in range(len(classes)) if served[i] and curves.sizes[i] >= min_class_size]
    by_utility = sorted(eligible, key=lambda i: (u_c[i], i))[:worst]
    by_far = sorted(eligible, key=lambda i: (-far_c[i], i))[:worst]
    small = int(((curves.sizes < min_class_size) & served).sum())
    return OperatingPoints(
        input=_input_section(dataset, curves.n_classes, digests[0]),
        dev=_input_section(dev, None, digests[1]) if dev is not None else None,
        config=config,
        calibration=calibration,
        threshold={
            "value": float(t), "chosen_on": "given" if threshold is not None else chooser_name,
            **({"target_far": target_far, "far_on_chosen_set": chosen[target_far][1], "resolution": 1e-4}
               if target_far is not None else {}),
        },
        pooled={"tar": float(pooled_pos[it] / n_pos) if n_pos else 0.0,
                "far": float(pooled_neg[it] / n_neg) if n_neg else 0.0,
                "frr": float(1 - pooled_pos[it] / n_pos) if n_pos else 1.0,
                "positive_pairs": n_pos, "negative_pairs": n_neg},
        spread={"far": spread(far_c), "frr": spread(frr_c), "utility": spread(u_c),
                "best_minus_global": spread((best_t - t)[served])},
        search={"lo": 0.0, "hi": float(top), "thresholds": int(len(edges)),
                "note": f"the calibration grid, the chosen thresholds and {SPAN_POINTS} evenly spaced "
                        f"thresholds over [0, {top:g}]"},
        worst_by_utility=[labels[i] for i in by_utility],
        worst_by_far=[labels[i] for i in by_far],
        never_served=[labels[i] for i in range(len(classes)) if not served[i]],
        held_back={"min_class_size": min_class_size, "classes": small},
        tar_at_far={
            key: {"far_on_chosen_set": chosen[float(key)][1], **entry}
            for key, entry in tar_at_far_section(hist, sizes, {f: chosen[f][0] for f in tar_at_far}, totals).items()
        },
        classes=classes,
        groups=_groups_at(swept[1], dataset, it, config) if dataset.groups is not None else None,
    )


@dataclass
class OperatingPoints:
    """What ``opis thresholds`` computes: the deployment view at one global threshold.

    :meth:`to_dict` / :meth:`to_json` give the report (``kind: "thresholds"``, schema
    SCHEMA_VERSION; docs/report-format.md) with the JSON conventions of evaluate's Report: fixed
    key order, shortest float repr, no NaN, UTF-8."""

    input: dict
    config: EvalConfig
    calibration: CalibrationRange
    threshold: dict  # value, chosen_on, target_far, far_on_chosen_set, resolution
    pooled: dict  # tar, far, frr at the threshold; pair counts
    spread: dict  # min / median / max of far, frr, utility, best_minus_global across classes
    search: dict
    worst_by_utility: list
    worst_by_far: list
    never_served: list
    held_back: dict
    tar_at_far: dict
    classes: list
    dev: dict | None = None
    groups: dict | None = None

    @property
    def value(self) -> float:
        """The global threshold t (distance units)."""
        return float(self.threshold["value"])

    def to_dict(self) -> dict:
        out = {
            "schema_version": SCHEMA_VERSION,
            "kind": "thresholds",
            "tool": {"name": "opis-cli", "version": __version__},
            "input": self.input,
            **({"dev": self.dev} if self.dev is not None else {}),
            "config": self.config.to_dict(),
            "calibration": {"mode": self.calibration.mode, "lo": self.calibration.lo, "hi": self.calibration.hi,
                            "thresholds": self.config.thresholds},
            "threshold": self.threshold,
            "pooled": self.pooled,
            "spread": self.spread,
            "search": self.search,
            "worst_by_utility": self.worst_by_utility,
            "worst_by_far": self.worst_by_far,
            "never_served": self.never_served,
            "held_back": self.held_back,
            "tar_at_far": self.tar_at_far,
            "classes": self.classes,
        }
        if self.groups is not None:
            out["groups"] = self.groups
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def tar_at_far_section(hist, sizes: np.ndarray, thresholds: dict, totals=None) -> dict:
    """``{repr(F): {threshold, pooled_far, pooled_tar, tar, far}}``: for each pooled FAR target F
    and its global threshold t_F (an edge of ``hist``), the pooled rates and every used class's
    TAR and FAR at t_F (lists in label order, as the report's ``classes``)."""
    curves = class_curves(hist, sizes, totals=totals)
    pooled = hist.pooled()
    pos, neg = np.cumsum(pooled.pos[:-1]), np.cumsum(pooled.neg[:-1])
    out = {}
    for far, t in sorted(thresholds.items()):
        k = int(np.searchsorted(hist.edges, t))
        out[repr(far)] = {"threshold": float(t), "pooled_far": float(neg[k] / max(1, pooled.neg.sum())),
                          "pooled_tar": float(pos[k] / max(1, pooled.pos.sum())),
                          "tar": [float(v) for v in curves.tar[:, k]],
                          "far": [float(1.0 - v) for v in curves.trr[:, k]]}
    return out


def _groups_at(hist, dataset: Dataset, it: int, config: EvalConfig) -> dict:
    """Every group's FAR, FRR and utility at the global threshold (groups as in opis_cli.analyses.groups),
    from the group histograms of the sweep."""
    from opis_cli.statistics.curves import accepted_at_thresholds, utility

    rows = []
    for g in np.flatnonzero(hist.n_pos > 0):
        tar = float(accepted_at_thresholds(hist.pos[g:g + 1])[0, it] / hist.n_pos[g])
        far = float(accepted_at_thresholds(hist.neg[g:g + 1])[0, it] / hist.n_neg[g]) if hist.n_neg[g] else 0.0
        u = float(utility(np.array([tar]), np.array([1.0 - far]), config.beta)[0])
        rows.append({"group": dataset.groups.values[int(g)], "positive_pairs": int(hist.n_pos[g]),
                     "negative_pairs": int(hist.n_neg[g]), "far": far, "frr": 1.0 - tar, "utility": u})
    spread = {key: {"min": min(r[key] for r in rows), "median": float(np.median([r[key] for r in rows])),
                    "max": max(r[key] for r in rows)} for key in ("far", "frr", "utility")} if rows else {}
    from opis_cli.analyses.groups import disparity

    gaps = disparity([r["far"] for r in rows], [r["frr"] for r in rows], [r["group"] for r in rows]) if rows else {}
    return {"column": dataset.info.group_column, "rows": rows, "spread": spread, "disparity": gaps}


def _input_section(dataset: Dataset, used: int | None, digest: str | None = None) -> dict:
    info = dataset.info
    out = {"path": info.path, "format": info.format, "n": dataset.n, "d": dataset.d,
           "classes": dataset.labels.n_classes, "sha256": digest or dataset.content_hash(),
           "labels_sha256": dataset.labels.counts_hash()}
    if used is not None:
        out["classes_used"] = used
    if dataset.reference is not None:
        from opis_cli.data.reference import reference_section

        out["reference"] = reference_section(dataset.reference)
    return out
