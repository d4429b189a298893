"""The evaluation pipeline as library calls: load -> prepare -> calibrate -> count pairs ->
curves -> metrics -> Report. The CLI's ``opis evaluate`` is one call to :func:`evaluate_file`.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Sequence

import numpy as np

from .calibration import CalibrationRange, resolve_far_range
from .config import DEFAULT_CALIB_FAR, DEFAULT_MEMORY_BUDGET, EvalConfig
from .curves import class_curves
from .errors import ConfigError, InputError
from .io import Dataset, InputInfo, as_embedding_matrix, encode_labels, load_dataset
from .metrics import eps_opis, opis, recall_at_k
from .pairs import exact_pass
from .prepare import prepare_embeddings
from .report import Report

# progress(stage, pairs_done, pairs_total); stages: "calibrating", "counting pairs".
StageProgress = Callable[[str, int, int], None]


def evaluate(
    embeddings: Any,
    labels: Any,
    *,
    metric: str = "cosine",
    normalize: bool = True,
    calib: tuple[float, float] | None = None,
    calib_far: tuple[float, float] = DEFAULT_CALIB_FAR,
    thresholds: int = 101,
    beta: float = 1.0,
    epsilon: float = 0.1,
    eps_contrast: str = "rest",
    k: Sequence[int] = (1,),
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    threads: int | None = None,
    progress: StageProgress | None = None,
) -> Report:
    """Exact OPIS, eps-OPIS, per-class utility curves and Recall@k of an embedding set.

    Parameters
    ----------
    embeddings : (N, D) float array (float16/32/64; computed in float32).
    labels : (N,) integer or string labels.
    metric : ``"cosine"`` (d = 1 - cos) or ``"l2"``.
    normalize : L2-normalise before ``l2`` (cosine always does).
    calib : calibration range (lo, hi) in distance units; overrides ``calib_far``.
    calib_far : pooled FAR bounds from which [lo, hi] is derived (default 0.001, 0.1).
    thresholds, beta, epsilon, eps_contrast, k : see docs/definitions.md.
    memory_budget : bytes of block working memory; changes speed, never a figure.
    threads : cap on BLAS and kernel threads (default: all cores this process may use).
    progress : optional ``progress(stage, done, total)`` callback.

    Returns
    -------
    Report
        ``report.opis``, ``report.eps_opis``, ``report.recall_at_k[k]``, ``report.curves``;
        ``report.to_json()`` is the CLI's JSON.

    Examples
    --------
    >>> import numpy as np, opis_cli
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(200, 16)) + np.repeat(rng.normal(size=(10, 16)) * 2, 20, axis=0)
    >>> report = opis_cli.evaluate(x, np.repeat(np.arange(10), 20), calib=(0.2, 0.8))
    >>> 0 <= report.opis < 0.25 and report.recall_at_k[1] > 0.5
    True
    """
    config = EvalConfig(
        metric=metric, normalize=normalize, calib=calib, calib_far=calib_far, thresholds=thresholds,
        beta=beta, epsilon=epsilon, eps_contrast=eps_contrast, k=tuple(k),
    )
    emb = as_embedding_matrix(embeddings)
    encoded = encode_labels(labels)
    if len(encoded.codes) != emb.shape[0]:
        raise InputError(f"length mismatch: {emb.shape[0]} embeddings but {len(encoded.codes)} labels")
    dataset = Dataset(embeddings=emb, labels=encoded, info=InputInfo(path=None, format="array"))
    return evaluate_dataset(dataset, config, memory_budget=memory_budget, threads=threads, progress=progress)


def evaluate_file(
    path: str | os.PathLike,
    *,
    labels: str | os.PathLike | None = None,
    embedding_col: str | None = None,
    label_col: str | None = None,
    config: EvalConfig | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    threads: int | None = None,
    kernel: str = "auto",
    progress: StageProgress | None = None,
) -> Report:
    """Load a Parquet / Arrow / NPY / NPZ file (see :func:`opis_cli.io.load_dataset`) and evaluate it."""
    dataset = load_dataset(path, labels=labels, embedding_col=embedding_col, label_col=label_col)
    return evaluate_dataset(dataset, config or EvalConfig(), memory_budget=memory_budget, threads=threads,
                            kernel=kernel, progress=progress)


def evaluate_dataset(
    dataset: Dataset,
    config: EvalConfig,
    *,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    threads: int | None = None,
    kernel: str = "auto",
    progress: StageProgress | None = None,
) -> Report:
    """Evaluate a loaded :class:`~opis_cli.io.Dataset` under ``config``.

    ``kernel`` picks the pair kernel (``"auto"``, ``"numba"``, ``"numpy"``); like ``threads`` and
    ``memory_budget`` it changes speed, never a figure.
    """
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    n, d = dataset.embeddings.shape
    sizes = np.bincount(dataset.labels.codes, minlength=dataset.labels.n_classes)
    used = int((sizes >= 2).sum())
    if used < 2:
        raise InputError(
            f"need at least two classes with two or more members; found {used} "
            f"(among {dataset.labels.n_classes} classes, {int((sizes == 1).sum())} singletons)"
        )
    kmax = max(config.k)
    if kmax > n - 1:
        raise ConfigError(f"--k {kmax} is larger than the database (N - 1 = {n - 1} items per query)")

    prepared = prepare_embeddings(
        dataset.embeddings, dataset.labels.codes, dataset.labels.n_classes,
        metric=config.metric, normalize=config.normalize,
    )
    digest = dataset.content_hash()
    timings["prepare"] = time.perf_counter() - t0

    passes = 1
    if config.calib is not None:
        calibration = CalibrationRange(lo=config.calib[0], hi=config.calib[1], mode="distance")
    else:
        t1 = time.perf_counter()
        stage = _stage(progress, "calibrating")
        calibration, _ = resolve_far_range(
            prepared, *config.calib_far, memory_budget=memory_budget, progress=stage, threads=threads,
            kernel=kernel,
        )
        timings["calibration_pass"] = time.perf_counter() - t1
        passes = 2
    grid = calibration.grid(config.thresholds)
    if not np.all(np.diff(grid) > 0):
        raise ConfigError(
            f"calibration range [{calibration.lo:g}, {calibration.hi:g}] is too narrow for "
            f"{config.thresholds} distinct thresholds"
        )

    t2 = time.perf_counter()
    result = exact_pass(
        prepared, grid, kmax=kmax, per_class=True, memory_budget=memory_budget,
        progress=_stage(progress, "counting pairs"), kernel=kernel, threads=threads,
    )
    timings["pair_pass"] = time.perf_counter() - t2

    t3 = time.perf_counter()
    curves = class_curves(result.histograms, sizes, beta=config.beta)
    o = opis(curves.utility, grid)
    e = eps_opis(curves.utility, grid, epsilon=config.epsilon, contrast=config.eps_contrast)
    query_mask = (sizes >= 2)[prepared.codes]
    recall = recall_at_k(result.neighbours, query_mask, config.k)
    timings["metrics"] = time.perf_counter() - t3
    timings["total"] = time.perf_counter() - t0

    info = dataset.info
    input_section = {
        "path": info.path,
        "format": info.format,
        "embedding_column": info.embedding_column,
        "label_column": info.label_column,
        "n": int(n),
        "d": int(d),
        "classes": int(dataset.labels.n_classes),
        "classes_used": used,
        "classes_skipped": int(dataset.labels.n_classes - used),
        "sha256": digest,
    }
    return Report(
        config=config,
        calibration=calibration,
        input=input_section,
        labels=[dataset.labels.values[int(c)] for c in curves.classes],
        curves=curves,
        opis=o.value,
        eps_opis=e.value,
        opis_contributions=o.contributions,
        mean_utility=e.mean_utility,
        mean_curve=o.mean_curve,
        worst=e.worst,
        contrast=e.contrast,
        recall_at_k=recall,
        pooled=result.histograms.pooled(),
        engine={"name": "exact", "passes": passes},
        timings={"kernel": result.kernel, "threads": result.threads, "tile": result.tile, "pairs": result.pairs,
                 **{k: round(v, 4) for k, v in timings.items()}},
    )


def _stage(progress: StageProgress | None, name: str):
    if progress is None:
        return None
    return lambda done, total: progress(name, done, total)
