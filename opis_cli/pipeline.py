"""The evaluation pipeline as library calls: load -> prepare -> calibrate -> count pairs ->
curves -> metrics -> Report. The CLI's ``opis evaluate`` is one call to :func:`evaluate_file`.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from .calibration import resolve_far_range
from .config import DEFAULT_CALIB_FAR, DEFAULT_MEMORY_BUDGET, EvalConfig
from .curves import class_curves
from .errors import ConfigError, InputError
from .io import Dataset, InputInfo, as_embedding_matrix, count_duplicate_rows, encode_labels, load_dataset
from .metrics import eps_opis, opis, recall_at_k
from .pairs import exact_pass
from .calibration import CalibrationRange
from .prepare import prepare_embeddings
from .report import Report

if TYPE_CHECKING:
    from .approximate import ApproxOptions

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
    index: str = "auto",
    approx: "ApproxOptions | None" = None,
    progress: StageProgress | None = None,
    client=None,
    tar_at_far: Sequence[float] = (),
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
    index : ``"exact"``, ``"ivf"``, ``"hnsw"`` (approximate, with error bars; see
        :mod:`opis_cli.approximate`) or ``"auto"`` (exact unless it would take over 10 minutes).
    approx : :class:`~opis_cli.approximate.ApproxOptions` for the approximate engines.
    progress : optional ``progress(stage, done, total)`` callback.
    client : a ``dask.distributed.Client``: the exact passes run on its workers (same figures;
        docs/distributed.md). Needs the ``dask`` extra.
    tar_at_far : pooled FAR targets: ``report.tar_at_far`` then holds every class's TAR and FAR
        at the global threshold of each (docs/deployment.md).

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
    return evaluate_dataset(array_dataset(embeddings, labels), config, memory_budget=memory_budget, threads=threads, engine=index,
                            approx=approx, progress=progress, client=client, tar_at_far=tar_at_far)


def array_dataset(embeddings: Any, labels: Any) -> Dataset:
    """A :class:`~opis_cli.io.Dataset` from arrays in memory (N, D) and (N,), checked as a file is."""
    stored = str(getattr(embeddings, "dtype", np.asarray(embeddings).dtype))
    emb = as_embedding_matrix(embeddings)
    encoded = encode_labels(labels)
    if len(encoded.codes) != emb.shape[0]:
        raise InputError(f"length mismatch: {emb.shape[0]} embeddings but {len(encoded.codes)} labels")
    return Dataset(embeddings=emb, labels=encoded, info=InputInfo(path=None, format="array", dtype=stored))


def evaluate_file(
    path: str | os.PathLike,
    *,
    labels: str | os.PathLike | None = None,
    embedding_col: str | None = None,
    label_col: str | None = None,
    group_col: str | None = None,
    config: EvalConfig | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    threads: int | None = None,
    kernel: str = "auto",
    index: str = "auto",
    approx: "ApproxOptions | None" = None,
    max_exact_seconds: float = 600.0,
    progress: StageProgress | None = None,
    notify: Callable[[str], None] | None = None,
    client=None,
    tar_at_far: Sequence[float] = (),
) -> Report:
    """Load a Parquet / Arrow / NPY / NPZ file (see :func:`opis_cli.io.load_dataset`) and evaluate it
    (``client``: a ``dask.distributed.Client`` for the exact passes; ``group_col``: also OPIS across
    groups, opis_cli.groups)."""
    dataset = load_dataset(path, labels=labels, embedding_col=embedding_col, label_col=label_col,
                           group_col=group_col)
    return evaluate_dataset(dataset, config or EvalConfig(), memory_budget=memory_budget, threads=threads,
                            kernel=kernel, engine=index, approx=approx, max_exact_seconds=max_exact_seconds,
                            progress=progress, notify=notify, client=client, tar_at_far=tar_at_far)


def margins_file(
    path: str | os.PathLike,
    *,
    labels: str | os.PathLike | None = None,
    embedding_col: str | None = None,
    label_col: str | None = None,
    config: EvalConfig | None = None,
    target_far: float | None = None,
    target_frr: float | None = None,
    margin_plus: float | None = None,
    margin_minus: float | None = None,
    lambda_plus: float = 1.0,
    lambda_minus: float = 1.0,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    threads: int | None = None,
    progress: StageProgress | None = None,
) -> Report:
    """Evaluate a file exactly and attach TCM margin recommendations (``report.margins``; see
    :func:`opis_cli.margins.margins_section` and docs/margins.md)."""
    dataset = load_dataset(path, labels=labels, embedding_col=embedding_col, label_col=label_col)
    return margins_dataset(dataset, config or EvalConfig(), target_far=target_far, target_frr=target_frr,
                           margin_plus=margin_plus, margin_minus=margin_minus, lambda_plus=lambda_plus,
                           lambda_minus=lambda_minus, memory_budget=memory_budget, threads=threads,
                           progress=progress)


def margins_dataset(dataset: Dataset, config: EvalConfig, *, memory_budget: int = DEFAULT_MEMORY_BUDGET,
                    threads: int | None = None, progress: StageProgress | None = None, **options) -> Report:
    """:func:`margins_file` on a loaded dataset; ``options`` go to ``margins.margins_section``."""
    from .margins import margins_section

    if config.metric != "cosine":
        raise ConfigError("TCM margins are cosine similarities: use --metric cosine")
    report = evaluate_dataset(dataset, config, memory_budget=memory_budget, threads=threads, engine="exact",
                              progress=progress)
    prepared = prepare_embeddings(dataset.embeddings, dataset.labels.codes, dataset.labels.n_classes,
                                  metric=config.metric, normalize=config.normalize)
    report.margins = margins_section(prepared, report, memory_budget=memory_budget, threads=threads,
                                       progress=progress, **options)
    return report


ENGINES = ("auto", "exact", "ivf", "hnsw")


def evaluate_dataset(
    dataset: Dataset,
    config: EvalConfig,
    *,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    threads: int | None = None,
    kernel: str = "auto",
    engine: str = "auto",
    approx: "ApproxOptions | None" = None,
    max_exact_seconds: float = 600.0,
    progress: StageProgress | None = None,
    notify: Callable[[str], None] | None = None,
    client=None,
    tar_at_far: Sequence[float] = (),
) -> Report:
    """Evaluate a loaded :class:`~opis_cli.io.Dataset` under ``config``.

    ``kernel`` picks the pair kernel (``"auto"``, ``"numba"``, ``"numpy"``); like ``threads`` and
    ``memory_budget`` it changes speed, never a figure. ``engine``: ``"exact"``, ``"ivf"`` or
    ``"hnsw"`` (approximate, see approximate.py, tuned by ``approx``), or ``"auto"``: exact while
    its estimated time is at most ``max_exact_seconds``, else ``"ivf"`` (``notify`` is told).
    With a Dask ``client`` the exact passes run on its workers (``"auto"`` then means exact).
    ``tar_at_far``: pooled FAR targets; the report's ``tar_at_far`` section gives every class's
    TAR and FAR at the global threshold of each (exact engine only).
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
    if engine not in ENGINES:
        raise ConfigError(f"unknown index {engine!r}; choose {', '.join(ENGINES)}")
    if not max_exact_seconds >= 0:  # also catches NaN, which would silently force the approximate engine
        raise ConfigError(f"--max-exact-minutes must be a non-negative number, got {max_exact_seconds / 60:g}")
    prepared = prepare_embeddings(
        dataset.embeddings, dataset.labels.codes, dataset.labels.n_classes,
        metric=config.metric, normalize=config.normalize,
    )
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
    digest = dataset.content_hash()
    timings["prepare"] = time.perf_counter() - t0
    choice = {"choice": "given"}
    if engine == "auto" and client is not None:
        engine = "exact"  # a cluster is there to make exact affordable
        choice = {"choice": "auto", "reason": "a Dask cluster was given"}
    elif engine == "auto":
        from .cost import choose_engine

        picked = choose_engine(
            n, d, sizes, kmax=kmax, calib_given=config.calib is not None, far_at_hi=config.calib_far[1],
            max_exact_seconds=max_exact_seconds, memory_budget=memory_budget,
            approx=approx)
        engine, choice = picked.engine, picked.to_dict()
        if engine != "exact" and (dataset.groups is not None or tar_at_far):
            which = "--group-col" if dataset.groups is not None else "--tar-at-far"
            engine, choice = "exact", {**choice, "reason": f"{which} needs the exact engine ({picked.reason})"}
        elif engine != "exact":
            say(f"using the approximate engine: {picked.reason}. Its figures are estimates with 95% intervals; "
                "pass --index exact to force exact figures.")
    if engine != "exact" and tar_at_far:
        raise ConfigError("--tar-at-far needs the exact engine (--index exact)")
    if engine != "exact" and dataset.groups is not None:
        raise ConfigError("--group-col needs the exact engine (--index exact); the approximate engines count "
                          "classes only")
    if engine != "exact":
        return _evaluate_approximate(dataset, config, prepared, digest, sizes, used, engine, approx, threads,
                                     progress, timings, t0, duplicates, choice=choice, notify=notify,
                                     memory_budget=memory_budget)

    passes = 1
    fine = None
    if config.calib is not None:
        calibration = CalibrationRange(lo=config.calib[0], hi=config.calib[1], mode="distance")
    else:
        t1 = time.perf_counter()
        stage = _stage(progress, "calibrating")
        calibration, fine = resolve_far_range(
            prepared, *config.calib_far, memory_budget=memory_budget, progress=stage, threads=threads,
            kernel=kernel, client=client,
        )
        timings["calibration_pass"] = time.perf_counter() - t1
        passes = 2
    grid = calibration.grid(config.thresholds)
    if not np.all(np.diff(grid) > 0):
        raise ConfigError(
            f"calibration range [{calibration.lo:g}, {calibration.hi:g}] is too narrow for "
            f"{config.thresholds} distinct thresholds"
        )
    far_thresholds = {}
    if tar_at_far:
        from .calibration import pooled_fine_histogram, threshold_at_most_far

        if any(not 0.0 < f < 1.0 for f in tar_at_far):
            raise ConfigError(f"--tar-at-far values must lie in (0, 1), got {', '.join(map(str, tar_at_far))}")
        top = max(tar_at_far)
        if config.calib is not None or not fine.neg[:-1].sum() > top * fine.neg.sum():
            # No fine pooled histogram reaching that FAR yet: one more pooled pass.
            _, fine, _ = pooled_fine_histogram(prepared, top, memory_budget=memory_budget,
                                               progress=_stage(progress, "thresholds for --tar-at-far"),
                                               threads=threads, kernel=kernel, client=client)
            passes += 1
        far_thresholds = {f: threshold_at_most_far(fine.edges, fine.neg, f) for f in tar_at_far}
    # The TAR@FAR thresholds join the grid for the pair pass; the curves use the grid's own bins.
    pass_edges = np.unique(np.concatenate([grid, list(far_thresholds.values())])) if far_thresholds else grid

    t2 = time.perf_counter()
    result = exact_pass(
        prepared, pass_edges, kmax=kmax, per_class=True, memory_budget=memory_budget,
        progress=_stage(progress, "counting pairs"), kernel=kernel, threads=threads, client=client,
    )
    timings["pair_pass"] = time.perf_counter() - t2

    t3 = time.perf_counter()
    hist = result.histograms.on_edges(grid) if far_thresholds else result.histograms
    _require_pairs_in_range(hist, calibration)
    curves, o, e = _figures(hist, sizes, config)
    tar_section = None
    if far_thresholds:
        from .operating_points import tar_at_far_section

        tar_section = tar_at_far_section(result.histograms, sizes, far_thresholds)
    query_mask = (sizes >= 2)[prepared.codes]
    recall = recall_at_k(result.neighbours, query_mask, config.k)
    class_recall = _class_recall(result.neighbours, prepared, query_mask, curves.classes, config.k)
    timings["metrics"] = time.perf_counter() - t3
    t4 = time.perf_counter()
    distributions = _distributions(prepared, dataset, curves, e, memory_budget, threads)
    timings["distributions"] = time.perf_counter() - t4
    groups = None
    if dataset.groups is not None:
        from .groups import group_histograms, group_section

        t5 = time.perf_counter()
        ghist = group_histograms(prepared, dataset.groups.codes, dataset.groups.n_classes, grid,
                                 memory_budget=memory_budget, threads=threads, progress=_stage(progress, "groups"))
        groups = group_section(ghist, dataset.groups, dataset.info.group_column, beta=config.beta,
                               epsilon=config.epsilon, contrast=config.eps_contrast)
        timings["group_pass"] = time.perf_counter() - t5
    timings["total"] = time.perf_counter() - t0

    input_section = _input_section(dataset, used, digest, duplicates)
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
        pooled=hist.pooled(),
        tar_at_far=tar_section,
        engine={"name": "exact", "passes": passes, **choice, **({"executor": "dask"} if client is not None else {})},
        distributions=distributions,
        class_recall=class_recall,
        groups=groups,
        timings={"kernel": result.kernel, "threads": result.threads, "tile": result.tile, "pairs": result.pairs,
                 **{k: round(v, 4) for k, v in timings.items()}},
    )


def _input_section(dataset: Dataset, used: int, digest: str, duplicates: int) -> dict:
    info = dataset.info
    n, d = dataset.embeddings.shape
    return {
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
        "labels_sha256": dataset.labels.counts_hash(),
        "dtype": info.dtype,
        "duplicate_rows": int(duplicates),
    }


def _class_recall(neighbours, prepared, query_mask, classes, ks):
    """Per-class query counts (C,) and hits {k: (C,)} of the curve rows' classes (for the bootstrap)."""
    codes = prepared.codes[query_mask]
    n = prepared.n_classes
    queries = np.bincount(codes, minlength=n)[classes].astype(np.int64)
    hits = {int(k): np.bincount(codes, weights=neighbours.hits(int(k))[query_mask], minlength=n)[classes]
            .astype(np.int64) for k in ks}
    return queries, hits


PLOTTED_WORST_CLASSES = 4


def _distributions(prepared, dataset, curves, e, memory_budget, threads):
    """Whole-span distance distributions, pooled and of the few worst classes (for plots)."""
    from .distributions import distance_distributions
    from .threads import thread_limit

    rows = [int(i) for i in e.worst]
    rows = sorted(rows, key=lambda i: (e.mean_utility[i], i))[:PLOTTED_WORST_CLASSES]
    codes = [int(curves.classes[i]) for i in rows]
    with thread_limit(threads):
        return distance_distributions(prepared, codes, [dataset.labels.values[c] for c in codes],
                                      memory_budget=memory_budget)


def _require_pairs_in_range(hist, calibration) -> None:
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


def _figures(hist, sizes, config: EvalConfig):
    curves = class_curves(hist, sizes, beta=config.beta)
    o = opis(curves.utility, curves.grid)
    e = eps_opis(curves.utility, curves.grid, epsilon=config.epsilon, contrast=config.eps_contrast)
    return curves, o, e


def _evaluate_approximate(dataset, config, prepared, digest, sizes, used, engine, approx, threads, progress,
                          timings, t0, duplicates, choice=None, notify=None,
                          memory_budget=DEFAULT_MEMORY_BUDGET) -> Report:
    import dataclasses

    from .approximate import ApproxOptions, approximate_pass
    from .calibration import estimate_far_range, sampled_pooled_histogram

    opts = approx or ApproxOptions(index=engine)
    if opts.index != engine:
        opts = dataclasses.replace(opts, index=engine)
    n = prepared.n
    from .approximate import approximate_cost
    from .memory import require, size_option

    # What the run holds whatever the block size (sampled counts per class and group, k-NN state):
    # checked before the index is built, as --index auto does before choosing it.
    need = approximate_cost(n, prepared.d, sizes, max(config.k), opts, config.calib_far[1], memory_budget)
    require(need["working_bytes"], what=f"the approximate engine on {int((sizes >= 2).sum()):,} classes",
            budget=memory_budget, advice=f"pass --memory-budget {size_option(need['working_bytes'])} or --index exact")
    anchors = int(min(n, max(500, 2e9 / n)))
    t1 = time.perf_counter()
    if config.calib is not None:
        calibration = CalibrationRange(lo=config.calib[0], hi=config.calib[1], mode="distance")
        grid = calibration.grid(config.thresholds)
        sample, _ = sampled_pooled_histogram(prepared, grid, min(anchors, 200), opts.seed, threads)
        far_at_hi = float(sample.neg[:-1].sum() / max(1, sample.neg.sum()))
    else:
        calibration = estimate_far_range(prepared, *config.calib_far, anchors=anchors, seed=opts.seed,
                                         threads=threads)
        grid = calibration.grid(config.thresholds)
        far_at_hi = config.calib_far[1]
    timings["calibration"] = time.perf_counter() - t1
    if not np.all(np.diff(grid) > 0):
        raise ConfigError(f"calibration range [{calibration.lo:g}, {calibration.hi:g}] is too narrow for "
                          f"{config.thresholds} distinct thresholds")
    kmax = max(config.k)
    from .threads import thread_limit

    with thread_limit(threads):  # BLAS products outside the exact passes obey --threads too
        result = approximate_pass(prepared, grid, kmax=kmax, opts=opts, far_at_hi=far_at_hi, threads=threads,
                                  progress=progress)
    _require_pairs_in_range(result.histograms, calibration)
    curves, o, e = _figures(result.histograms, sizes, config)
    from .approximate import coverage_problem
    from .approximate_errors import approximate_figures

    # Every headline figure is an estimate with its interval (approximate_errors.py); the index's own
    # Recall@k stays a diagnostic.
    figures = approximate_figures(result, curves, o, e, config, prepared, opts, threads)
    problem = coverage_problem(sizes, n, prepared.d, opts)
    warnings = ([problem] if problem is not None else []) + figures["warnings"]
    for message in warnings if notify is not None else ():
        notify(message)
    info = result.info
    approximation = {
        "method": "approximate",
        "index": info.get("index"),
        "negatives": info["negatives"],
        **({"negatives_note": info["negatives_note"]} if "negatives_note" in info else {}),
        "positives": "exact",
        "options": info["options"],
        **({"samples_per_anchor": info["samples_per_anchor"], "sample_groups": info["sample_groups"]}
           if "samples_per_anchor" in info else {}),
        "expected_in_range_per_query": info["expected_in_range_per_query"],
        "checks": {**(info.get("checks") or {}), "index_recall_at_k": figures["index_recall_at_k"]},
        "errors": figures["errors"],
        "warnings": warnings,
    }
    timings.update({f"approx_{k}": v for k, v in info["timings"].items()})
    timings["total"] = time.perf_counter() - t0
    return Report(
        config=config, calibration=calibration, input=_input_section(dataset, used, digest, duplicates),
        labels=[dataset.labels.values[int(c)] for c in curves.classes], curves=curves, opis=figures["opis"],
        eps_opis=figures["eps_opis"], opis_contributions=figures["contributions"], mean_utility=e.mean_utility,
        mean_curve=o.mean_curve, worst=e.worst, contrast=e.contrast, recall_at_k=figures["recall_at_k"],
        pooled=result.histograms.pooled(), engine={"name": "approximate", "index": engine, **(choice or {})},
        timings={k: (round(v, 4) if isinstance(v, float) else v) for k, v in timings.items()},
        approximation=approximation,
        distributions=_distributions(prepared, dataset, curves, e, memory_budget, threads),
        class_recall=figures["class_recall"],
    )


def _stage(progress: StageProgress | None, name: str):
    if progress is None:
        return None
    return lambda done, total: progress(name, done, total)
