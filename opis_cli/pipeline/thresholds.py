"""``opis thresholds`` as library calls: load -> prepare (the checks every command shares,
stages.py) -> choose the threshold (a pooled pass on the set that chooses it) -> one sweep ->
the deployment view (analyses/operating_points.py), a typed :class:`OperatingPoints`."""

from __future__ import annotations

import os

from opis_cli.analyses.operating_points import OperatingPoints, check_options, operating_points
from opis_cli.config import DEFAULT_MEMORY_BUDGET, EvalConfig
from opis_cli.data.io import Dataset, load_dataset
from opis_cli.pipeline.stages import StageProgress, prepare


def thresholds_dataset(
    dataset: Dataset,
    config: EvalConfig | None = None,
    *,
    dev: Dataset | None = None,
    target_far: float | None = None,
    threshold: float | None = None,
    tar_at_far: tuple[float, ...] = (),
    worst: int = 10,
    min_class_size: int = 2,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    threads: int | None = None,
    progress: StageProgress | None = None,
) -> OperatingPoints:
    """The deployment view of a loaded dataset at one global threshold: ``threshold`` given, or
    chosen for pooled FAR <= ``target_far`` on ``dev`` (else on the dataset itself); see
    :func:`opis_cli.analyses.operating_points.operating_points` for every figure."""
    config = config or EvalConfig()
    check_options(config, dataset, dev, target_far=target_far, threshold=threshold, tar_at_far=tar_at_far,
                  min_class_size=min_class_size)
    prep = prepare(dataset, config)
    prep_dev = prepare(dev, config) if dev is not None else None
    return operating_points(prep.embeddings, prep.sizes, dataset, config,
                            p_dev=prep_dev.embeddings if prep_dev else None, dev=dev,
                            digests=(prep.digest, prep_dev.digest if prep_dev else None),
                            target_far=target_far, threshold=threshold, tar_at_far=tar_at_far, worst=worst,
                            min_class_size=min_class_size, memory_budget=memory_budget, threads=threads,
                            progress=progress)


def thresholds_file(
    path: str | os.PathLike,
    *,
    labels: str | os.PathLike | None = None,
    dev: str | os.PathLike | None = None,
    dev_labels: str | os.PathLike | None = None,
    embedding_col: str | None = None,
    label_col: str | None = None,
    group_col: str | None = None,
    reference: str | os.PathLike | None = None,
    reference_labels: str | os.PathLike | None = None,
    config: EvalConfig | None = None,
    **options,
) -> OperatingPoints:
    """Load the evaluated set (and ``dev``, the set that chooses the threshold; ``reference``: the
    references of query/reference mode) and run :func:`thresholds_dataset` (``options``: its
    keyword arguments). What ``opis thresholds`` calls."""
    dataset = load_dataset(path, labels=labels, embedding_col=embedding_col, label_col=label_col, group_col=group_col)
    from opis_cli.data.reference import with_reference_file

    dataset = with_reference_file(dataset, reference, reference_labels, embedding_col=embedding_col, label_col=label_col)
    dev_set = load_dataset(dev, labels=dev_labels, embedding_col=embedding_col, label_col=label_col,
                           labels_option="--dev-labels") if dev is not None else None
    return thresholds_dataset(dataset, config, dev=dev_set, **options)
