"""The stages every exact command shares: load -> prepare -> calibrate -> sweep -> figures.

``opis evaluate``, ``opis margins`` and ``opis thresholds`` differ only in the accumulators they
add to the one sweep and in what they compute from the results; the checks, the notes, the input
section and the calibration range are made here, once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from opis_cli.config import EvalConfig
from opis_cli.data.duplicates import count_duplicate_rows
from opis_cli.data.io import Dataset
from opis_cli.data.reference import reference_section
from opis_cli.data.prepare import PreparedEmbeddings, prepare_embeddings
from opis_cli.errors import ConfigError, InputError
from opis_cli.statistics.calibration import CalibrationRange, resolve_far_range
from opis_cli.statistics.curves import class_curves
from opis_cli.statistics.metrics import eps_opis, opis

# progress(stage, pairs_done, pairs_total); stages: "calibrating", "counting pairs".
StageProgress = Callable[[str, int, int], None]


def stage(progress: StageProgress | None, name: str):
    """A pairs-progress callback reporting under ``name`` (None without a progress callback)."""
    if progress is None:
        return None
    return lambda done, total: progress(name, done, total)


@dataclass
class Prepared:
    """A checked dataset ready for a sweep: the prepared embeddings, class sizes, and the input
    section of the report (hashes, counts, duplicates)."""

    dataset: Dataset
    config: EvalConfig
    embeddings: PreparedEmbeddings
    sizes: np.ndarray
    used: int
    digest: str
    duplicates: int
    timings: dict = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    def input_section(self) -> dict:
        info = self.dataset.info
        n, d = self.dataset.embeddings.shape
        return {
            "path": info.path,
            "format": info.format,
            "embedding_column": info.embedding_column,
            "label_column": info.label_column,
            "n": int(n),
            "d": int(d),
            "classes": int(self.dataset.labels.n_classes),
            "classes_used": self.used,
            "classes_skipped": int(self.dataset.labels.n_classes - self.used),
            "sha256": self.digest,
            "labels_sha256": self.dataset.labels.counts_hash(),
            "dtype": info.dtype,
            "duplicate_rows": int(self.duplicates),
            **({"reference": {**reference_section(self.dataset.reference),
                              "queries_without_reference": int((~self.query_mask).sum())}}
               if self.dataset.reference is not None else {}),
        }

    def labels_of(self, classes) -> list:
        return [self.dataset.labels.values[int(c)] for c in classes]

    @property
    def totals(self) -> tuple[np.ndarray, np.ndarray]:
        """(|P_c|, |N_c|) of every class, on whichever pairs count (query/reference mode too)."""
        p = self.embeddings
        pos = p.positive_totals()
        return pos, p.anchored_totals() - 2 * pos

    @property
    def query_mask(self) -> np.ndarray:
        """The prepared rows that are queries (Recall@k, MAP@R): a same-label item to retrieve."""
        return self.embeddings.relevant_counts() > 0


def check_classes(dataset: Dataset) -> tuple[np.ndarray, int]:
    """Class sizes and the number of usable classes (two or more members; with references, at
    least one query and one reference); InputError under two."""
    sizes = np.bincount(dataset.labels.codes, minlength=dataset.labels.n_classes)
    if dataset.reference is not None:
        refs = np.bincount(dataset.reference.labels.codes, minlength=dataset.labels.n_classes)
        used = int(((sizes >= 1) & (refs >= 1)).sum())
        if used < 2:
            raise InputError(f"need at least two classes with both queries and references; found {used} "
                             f"(of {int((sizes > 0).sum())} query classes and {int((refs > 0).sum())} reference classes)")
        return sizes, used
    used = int((sizes >= 2).sum())
    if used < 2:
        raise InputError(
            f"need at least two classes with two or more members; found {used} "
            f"(among {dataset.labels.n_classes} classes, {int((sizes == 1).sum())} singletons)"
        )
    return sizes, used


def prepare(dataset: Dataset, config: EvalConfig, notify: Callable[[str], None] | None = None) -> Prepared:
    """Check the dataset against ``config``, prepare the embeddings (normalised, grouped by class)
    and tell ``notify`` what the user should know (dtype, duplicate rows, a k past the classes)."""
    t0 = time.perf_counter()
    n = dataset.embeddings.shape[0]
    sizes, used = check_classes(dataset)
    kmax = max(config.k)
    ref = dataset.reference
    database = n - 1 if ref is None else ref.n
    if kmax > database:
        raise ConfigError(f"--k {kmax} is larger than the database ({'N - 1' if ref is None else 'the references'}"
                          f" = {database} items per query)")
    prepared = prepare_embeddings(dataset.embeddings, dataset.labels.codes, dataset.labels.n_classes,
                                  metric=config.metric, normalize=config.normalize)
    if ref is not None:
        from opis_cli.data.prepare import with_reference

        prepared = with_reference(prepared, prepare_embeddings(ref.embeddings, ref.labels.codes, ref.labels.n_classes,
                                                               metric=config.metric, normalize=config.normalize))
    # Notes come after validation: a rejected input gets its error alone.
    say = notify or (lambda message: None)
    if kmax >= int(sizes.max()):
        say(f"--k {kmax} is not below the largest class ({int(sizes.max())} members): Recall@{kmax} counts a hit "
            "whenever any same-label item is among that many neighbours, which says little")
    if dataset.info.dtype != "float32":
        say(f"embeddings are {dataset.info.dtype}; computed in float32 (docs/computation.md)")
    duplicates = count_duplicate_rows(dataset.embeddings)
    if duplicates:
        say(f"{duplicates:,} row(s) repeat an earlier row exactly; allowed (such pairs have distance 0), "
            "counted in input.duplicate_rows")
    out = Prepared(dataset, config, prepared, sizes, used, dataset.content_hash(), duplicates, started=t0)
    out.timings["prepare"] = time.perf_counter() - t0
    return out


@dataclass
class Calibrated:
    """The calibration range, its grid, and (FAR mode) the fine pooled histogram it was read from."""

    range: CalibrationRange
    grid: np.ndarray
    fine: object = None  # PooledHistogram on the 1e-4 grid, or None for a pinned range
    passes: int = 0  # exact passes it took


def calibrate(prep: Prepared, *, memory_budget: int, threads: int | None, kernel: str = "auto", client=None,
              progress: StageProgress | None = None) -> Calibrated:
    """The pinned range, or [lo, hi] read off an exact pooled pass at the FAR bounds; its grid."""
    config = prep.config
    fine, passes = None, 0
    if config.calib is not None:
        calibration = CalibrationRange(lo=config.calib[0], hi=config.calib[1], mode="distance")
    else:
        t1 = time.perf_counter()
        calibration, fine = resolve_far_range(prep.embeddings, *config.calib_far, memory_budget=memory_budget,
                                              progress=stage(progress, "calibrating"), threads=threads,
                                              kernel=kernel, client=client)
        prep.timings["calibration_pass"] = time.perf_counter() - t1
        passes = 1
    grid = check_grid(calibration, config.thresholds)
    return Calibrated(calibration, grid, fine, passes)


def check_grid(calibration: CalibrationRange, thresholds: int) -> np.ndarray:
    grid = calibration.grid(thresholds)
    if not np.all(np.diff(grid) > 0):
        raise ConfigError(f"calibration range [{calibration.lo:g}, {calibration.hi:g}] is too narrow for "
                          f"{thresholds} distinct thresholds")
    return grid


def require_pairs_in_range(hist, calibration: CalibrationRange) -> None:
    """A range with no pair distance inside (lo, hi] makes every curve flat: refuse it."""
    pooled = hist.pooled()
    inside = float(pooled.pos[1:-1].sum() + pooled.neg[1:-1].sum())
    if inside > 0:
        return
    below = int(round(float(pooled.pos[0] + pooled.neg[0])))
    above = int(round(float(pooled.pos[-1] + pooled.neg[-1])))
    raise ConfigError(
        f"no pair distance lies inside the calibration range [{calibration.lo:g}, {calibration.hi:g}] "
        f"({below:,} pairs at or below lo, {above:,} above hi): every curve would be flat; choose a range "
        "where pairs lie (e.g. --calib-far 0.001:0.1)"
    )


def figures(hist, sizes, config: EvalConfig, totals=None):
    """(per-class curves, OPIS, eps-OPIS) of histograms on the calibration grid (``totals``:
    Prepared.totals, the pairs of each class whatever the mode)."""
    curves = class_curves(hist, sizes, beta=config.beta, totals=totals)
    o = opis(curves.utility, curves.grid)
    e = eps_opis(curves.utility, curves.grid, epsilon=config.epsilon, contrast=config.eps_contrast)
    return curves, o, e


def class_recall(neighbours, prepared: PreparedEmbeddings, query_mask, classes, ks):
    """Per-class query counts (C,) and hits {k: (C,)} of the curve rows' classes (for the bootstrap)."""
    codes = prepared.codes[query_mask]
    n = prepared.n_classes
    queries = np.bincount(codes, minlength=n)[classes].astype(np.int64)
    hits = {int(k): np.bincount(codes, weights=neighbours.hits(int(k))[query_mask], minlength=n)[classes]
            .astype(np.int64) for k in ks}
    return queries, hits


PLOTTED_WORST_CLASSES = 4


def plotted_classes(curves, e) -> list[int]:
    """Class codes of the few eps-worst classes the distributions plot singles out."""
    rows = sorted((int(i) for i in e.worst), key=lambda i: (e.mean_utility[i], i))[:PLOTTED_WORST_CLASSES]
    return [int(curves.classes[i]) for i in rows]
