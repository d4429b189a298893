"""Figures do not depend on row order, label names or block size."""

from __future__ import annotations

import numpy as np
import pytest

import opis_cli

OPTIONS = dict(calib=(0.3, 1.1), thresholds=41, k=(1, 3))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    sizes = rng.integers(1, 40, size=30)
    labels = np.repeat(np.arange(30), sizes)
    spreads = rng.uniform(0.5, 1.5, 30)
    x = rng.normal(size=(30, 24))[labels] + spreads[labels, None] * rng.normal(size=(len(labels), 24))
    return x.astype(np.float32), labels


def _figures(report):
    d = report.to_dict()
    d["input"].pop("sha256")  # a hash of the rows as given: changes with their order by design
    return d


def test_row_permutation(data):
    x, labels = data
    base = opis_cli.evaluate(x, labels, **OPTIONS)
    perm = np.random.default_rng(1).permutation(len(labels))
    other = opis_cli.evaluate(x[perm], labels[perm], **OPTIONS)
    assert _figures(other) == _figures(base)


def test_block_size(data):
    x, labels = data
    base = opis_cli.evaluate(x, labels, **OPTIONS)
    for tile in (8, 40, 96):
        assert _figures(opis_cli.evaluate(x, labels, memory_budget=tile * tile * 30, **OPTIONS)) == _figures(base)


def test_order_preserving_renaming_changes_nothing_but_labels(data):
    x, labels = data
    base = opis_cli.evaluate(x, labels, **OPTIONS)
    renamed = opis_cli.evaluate(x, np.array([f"class-{v:04d}" for v in labels]), **OPTIONS)
    a, b = _figures(base), _figures(renamed)
    for row in a["classes"]:
        row["label"] = f"class-{row['label']:04d}"
    assert a["classes"] == b["classes"]
    assert a["metrics"] == b["metrics"] and a["calibration"] == b["calibration"]


def test_arbitrary_renaming_keeps_the_figures(data):
    x, labels = data
    base = opis_cli.evaluate(x, labels, **OPTIONS)
    mapping = np.random.default_rng(3).permutation(labels.max() + 1) * 7 + 1000
    renamed = opis_cli.evaluate(x, mapping[labels], **OPTIONS)
    assert renamed.opis == pytest.approx(base.opis, rel=1e-12)
    assert renamed.eps_opis == pytest.approx(base.eps_opis, rel=1e-12)
    assert renamed.recall_at_k == base.recall_at_k
    by_label = {row["label"]: row for row in base.class_rows()}
    for row in renamed.class_rows():
        orig = by_label[int(np.flatnonzero(mapping == row["label"])[0])]
        assert row["mean_utility"] == orig["mean_utility"]
        assert row["size"] == orig["size"]


def test_same_input_same_json_bytes(data):
    x, labels = data
    assert opis_cli.evaluate(x, labels, **OPTIONS).to_json() == opis_cli.evaluate(x, labels, **OPTIONS).to_json()


def test_precision_of_input_does_not_matter_beyond_float32(data):
    x, labels = data
    a = _figures(opis_cli.evaluate(x.astype(np.float64), labels, **OPTIONS))
    b = _figures(opis_cli.evaluate(x, labels, **OPTIONS))
    assert (a["input"].pop("dtype"), b["input"].pop("dtype")) == ("float64", "float32")  # stated, not hidden
    assert a == b
