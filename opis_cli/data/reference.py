"""Query/reference mode (docs/definitions.md): queries and references in one label space.

Each file is loaded and checked on its own, hashed as it is (so a query file's ``sha256`` is the
one an evaluation of it alone reports), then both label sets are re-encoded onto the union of
their values, in label order: a class code means the same label on both sides.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from opis_cli.data.io import Dataset, Labels
from opis_cli.errors import InputError


def with_reference(queries: Dataset, reference: Dataset) -> Dataset:
    """``queries`` carrying ``reference``, both re-encoded onto the union of their label values.
    InputError when the dimensions differ or one side's labels are integers and the other's
    strings (no label could be shared)."""
    if queries.d != reference.d:
        raise InputError(f"the queries have {queries.d} dimensions and the references {reference.d}: both must "
                         "come from the same model")
    kinds = {_kind(queries.labels), _kind(reference.labels)} - {None}
    if len(kinds) > 1:
        raise InputError("the query labels and the reference labels are of different types (integers and strings): "
                         "no class could have both queries and references")
    values = sorted(set(queries.labels.values) | set(reference.labels.values))
    q, r = _recode(queries.labels, values), _recode(reference.labels, values)
    ref = replace(reference, labels=r, own_hash=reference.content_hash())
    return replace(queries, labels=q, reference=ref, own_hash=queries.content_hash())


def with_reference_file(dataset: Dataset, reference, reference_labels=None, *, embedding_col: str | None = None,
                        label_col: str | None = None) -> Dataset:
    """``dataset`` with the references loaded from ``reference`` (a file as any input, its column
    names as the queries'; ``reference_labels``: labels of a .npy one); unchanged for None."""
    if reference is None:
        return dataset
    from opis_cli.data.io import load_dataset

    return with_reference(dataset, load_dataset(reference, labels=reference_labels, embedding_col=embedding_col,
                                                label_col=label_col, labels_option="--reference-labels"))


def _kind(labels: Labels):
    return None if not labels.values else type(labels.values[0]).__name__


def _recode(labels: Labels, values: list) -> Labels:
    index = {v: i for i, v in enumerate(values)}
    remap = np.array([index[v] for v in labels.values], dtype=np.int64)
    return Labels(codes=remap[labels.codes] if len(remap) else labels.codes, values=list(values))


def reference_section(ref: Dataset) -> dict:
    """A report's ``input.reference``: the references' file, shape and hashes (as an input's)."""
    info = ref.info
    return {"path": info.path, "format": info.format, "n": ref.n, "d": ref.d,
            "classes": int((np.bincount(ref.labels.codes, minlength=ref.labels.n_classes) > 0).sum()),
            "sha256": ref.content_hash(), "labels_sha256": ref.labels.counts_hash(), "dtype": info.dtype}
