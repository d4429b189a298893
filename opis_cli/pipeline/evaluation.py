"""``opis evaluate`` as library calls: load -> prepare -> choose the engine -> calibrate -> one
sweep -> figures -> Report (stages.py, exact.py; approximate_run.py for the approximate engines).
The CLI's ``opis evaluate`` is one call to
:func:`opis_cli.pipeline.evaluate_command.run_evaluate`, which calls :func:`evaluate_file`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from opis_cli.config import DEFAULT_CALIB_FAR, DEFAULT_MEMORY_BUDGET, EvalConfig
from opis_cli.data.io import Dataset, InputInfo, as_embedding_matrix, encode_labels, load_dataset
from opis_cli.errors import ConfigError, InputError
from opis_cli.pipeline.stages import Prepared, StageProgress, check_classes, prepare
from opis_cli.report.report import Report

if TYPE_CHECKING:
    from opis_cli.engine.approximate import ApproxOptions

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
    eer: bool = False,
    retrieval: bool = False,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    threads: int | None = None,
    index: str = "auto",
    approx: "ApproxOptions | None" = None,
    progress: StageProgress | None = None,
    client=None,
    tar_at_far: Sequence[float] = (),
    reference: tuple[Any, Any] | None = None,
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
        :mod:`opis_cli.engine.approximate`) or ``"auto"`` (exact unless it would take over 10 minutes).
    approx : :class:`~opis_cli.engine.approximate.ApproxOptions` for the approximate engines.
    progress : optional ``progress(stage, done, total)`` callback.
    client : a ``dask.distributed.Client``: the exact passes run on its workers (same figures;
        docs/distributed.md). Needs the ``dask`` extra.
    tar_at_far : pooled FAR targets: ``report.tar_at_far`` then holds every class's TAR and FAR
        at the global threshold of each (docs/deployment.md).
    retrieval : also ``report.retrieval``: MAP@R and R-precision, exact (opis_cli.engine.retrieval).
    reference : ``(embeddings, labels)`` of references: query/reference mode (docs/definitions.md),
        only (query, reference) pairs count and every query retrieves from the references.
    eer : also ``report.eer``: the equal error rate, pooled and per class, with an interval that
        holds it at any threshold (opis_cli.statistics.eer), and the full-span ROC/DET curves.

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
        beta=beta, epsilon=epsilon, eps_contrast=eps_contrast, k=tuple(k), eer=eer,
        retrieval=retrieval,
    )
    dataset = array_dataset(embeddings, labels)
    if reference is not None:
        from opis_cli.data.reference import with_reference

        dataset = with_reference(dataset, array_dataset(*reference))
    return evaluate_dataset(dataset, config, memory_budget=memory_budget, threads=threads, engine=index,
                            approx=approx, progress=progress, client=client, tar_at_far=tar_at_far)


def array_dataset(embeddings: Any, labels: Any) -> Dataset:
    """A :class:`~opis_cli.data.io.Dataset` from arrays in memory (N, D) and (N,), checked as a file is."""
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
    reference: str | os.PathLike | None = None,
    reference_labels: str | os.PathLike | None = None,
) -> Report:
    """Load a Parquet / Arrow / NPY / NPZ file (see :func:`opis_cli.data.io.load_dataset`) and evaluate it
    (``client``: a ``dask.distributed.Client`` for the exact passes; ``group_col``: also OPIS across
    groups, opis_cli.analyses.groups; ``reference``: a second file of the same kind, the
    references of query/reference mode, with ``reference_labels`` for a .npy one)."""
    dataset = load_dataset(path, labels=labels, embedding_col=embedding_col, label_col=label_col,
                           group_col=group_col)
    from opis_cli.data.reference import with_reference_file

    dataset = with_reference_file(dataset, reference, reference_labels, embedding_col=embedding_col, label_col=label_col)
    return evaluate_dataset(dataset, config or EvalConfig(), memory_budget=memory_budget, threads=threads,
                            kernel=kernel, engine=index, approx=approx, max_exact_seconds=max_exact_seconds,
                            progress=progress, notify=notify, client=client, tar_at_far=tar_at_far)


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
    """Evaluate a loaded :class:`~opis_cli.data.io.Dataset` under ``config``.

    ``kernel`` picks the pair kernel (``"auto"``, ``"numba"``, ``"numpy"``); like ``threads`` and
    ``memory_budget`` it changes speed, never a figure. ``engine``: ``"exact"``, ``"ivf"`` or
    ``"hnsw"`` (approximate, see approximate.py, tuned by ``approx``), or ``"auto"``: exact while
    its estimated time is at most ``max_exact_seconds``, else ``"ivf"`` (``notify`` is told).
    With a Dask ``client`` the exact passes run on its workers (``"auto"`` then means exact).
    ``tar_at_far``: pooled FAR targets; the report's ``tar_at_far`` section gives every class's
    TAR and FAR at the global threshold of each (exact engine only).
    """
    check_classes(dataset)
    database = dataset.n - 1 if dataset.reference is None else dataset.reference.n
    if max(config.k) > database:  # before the engine options, as prepare() will check it again
        raise ConfigError(f"--k {max(config.k)} is larger than the database ({'N - 1' if dataset.reference is None else 'the references'}"
                          f" = {database} items per query)")
    if engine not in ENGINES:
        raise ConfigError(f"unknown index {engine!r}; choose {', '.join(ENGINES)}")
    if not max_exact_seconds >= 0:  # also catches NaN, which would silently force the approximate engine
        raise ConfigError(f"--max-exact-minutes must be a non-negative number, got {max_exact_seconds / 60:g}")
    prep = prepare(dataset, config, notify)
    engine, choice = _choose_engine(prep, engine, client, approx, max_exact_seconds, memory_budget, tar_at_far,
                                    notify)
    if engine != "exact":
        from opis_cli.pipeline.approximate_run import evaluate_approximate

        return evaluate_approximate(prep, engine, approx, threads=threads, progress=progress, choice=choice,
                                    notify=notify, memory_budget=memory_budget)
    from opis_cli.pipeline.exact import run_exact

    run = run_exact(prep, memory_budget=memory_budget, threads=threads, kernel=kernel, client=client,
                    progress=progress, tar_at_far=tar_at_far, choice=choice)
    return Report(**run.fields)


def _choose_engine(prep: Prepared, engine: str, client, approx, max_exact_seconds: float, memory_budget: int,
                   tar_at_far, notify) -> tuple[str, dict]:
    """The engine to run and the report's record of why (cost.py's deterministic choice for auto)."""
    dataset, config = prep.dataset, prep.config
    say = notify or (lambda message: None)
    choice = {"choice": "given"}
    if engine == "auto" and client is not None:
        engine = "exact"  # a cluster is there to make exact affordable
        choice = {"choice": "auto", "reason": "a Dask cluster was given"}
    elif engine == "auto":
        from opis_cli.engine.cost import choose_engine

        n, d = dataset.embeddings.shape
        if dataset.reference is not None:  # the estimate's N: a single set with as many pairs
            n = int(round((2 * n * dataset.reference.n) ** 0.5))
        picked = choose_engine(n, d, prep.sizes, kmax=max(config.k), calib_given=config.calib is not None,
                               far_at_hi=config.calib_far[1], max_exact_seconds=max_exact_seconds,
                               memory_budget=memory_budget, approx=approx)
        engine, choice = picked.engine, picked.to_dict()
        needs = [name for name, on in (("--group-col", dataset.groups is not None), ("--tar-at-far", bool(tar_at_far)),
                                       ("--eer", config.eer), ("--retrieval", config.retrieval),
                                       ("--reference", dataset.reference is not None)) if on]
        if engine != "exact" and needs:
            which = needs[0]
            engine, choice = "exact", {**choice, "reason": f"{which} needs the exact engine ({picked.reason})"}
        elif engine != "exact":
            say(f"using the approximate engine: {picked.reason}. Its figures are estimates with 95% intervals; "
                "pass --index exact to force exact figures.")
    if engine != "exact" and tar_at_far:
        raise ConfigError("--tar-at-far needs the exact engine (--index exact)")
    if engine != "exact" and config.eer:
        raise ConfigError("--eer needs the exact engine (--index exact): the approximate engines do not count the "
                          "pairs far from the calibration range")
    if engine != "exact" and dataset.reference is not None:
        raise ConfigError("--reference needs the exact engine (--index exact): the approximate engines index one set")
    if engine != "exact" and config.retrieval:
        raise ConfigError("--retrieval needs the exact engine (--index exact): MAP@R ranks every reference")
    if engine != "exact" and dataset.groups is not None:
        raise ConfigError("--group-col needs the exact engine (--index exact); the approximate engines count "
                          "classes only")
    return engine, choice
