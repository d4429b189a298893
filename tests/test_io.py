"""Loading every supported input format, column auto-detection, and input errors."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opis_cli.errors import InputError
from opis_cli.data.io import encode_labels, load_dataset


def _table(n=12, d=4, list_type="fixed", labels=None):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d)).astype(np.float32)
    flat = pa.array(x.reshape(-1))
    if list_type == "fixed":
        col = pa.FixedSizeListArray.from_arrays(flat, d)
    else:
        offsets = pa.array(np.arange(0, n * d + 1, d, dtype=np.int32 if list_type == "list" else np.int64))
        cls = pa.ListArray if list_type == "list" else pa.LargeListArray
        col = cls.from_arrays(offsets, flat)
    lab = labels if labels is not None else pa.array(np.arange(n) % 3)
    return x, pa.table({"id": pa.array(np.arange(n)), "emb": col, "label": lab})


@pytest.mark.parametrize("list_type", ["fixed", "list", "large"])
def test_parquet_list_types_load_exactly(tmp_path, list_type):
    x, table = _table(list_type=list_type)
    pq.write_table(table, tmp_path / "e.parquet")
    ds = load_dataset(tmp_path / "e.parquet")
    np.testing.assert_array_equal(ds.embeddings, x)
    assert ds.info.embedding_column == "emb" and ds.info.label_column == "label"
    assert ds.labels.values == [0, 1, 2]


def test_feather_and_multichunk_tables(tmp_path):
    x, table = _table(n=20)
    table = pa.concat_tables([table.slice(0, 7), table.slice(7)])
    feather.write_feather(table, tmp_path / "e.arrow")
    ds = load_dataset(tmp_path / "e.arrow")
    np.testing.assert_array_equal(ds.embeddings, x)
    assert ds.info.format == "arrow"


def test_float32_column_is_zero_copy(tmp_path):
    x, table = _table()
    from opis_cli.data.io import embedding_matrix_from_arrow

    col = table.column("emb").chunk(0)
    m = embedding_matrix_from_arrow(col)
    assert np.shares_memory(m, np.frombuffer(col.values.buffers()[1], dtype=np.float32))


def test_float64_and_float16_columns_become_float32(tmp_path):
    for dtype in (np.float64, np.float16):
        x = np.arange(12, dtype=dtype).reshape(6, 2)
        col = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 2)
        pq.write_table(pa.table({"e": col, "y": pa.array([0, 0, 1, 1, 2, 2])}), tmp_path / "t.parquet")
        ds = load_dataset(tmp_path / "t.parquet")
        assert ds.embeddings.dtype == np.float32
        np.testing.assert_array_equal(ds.embeddings, x.astype(np.float32))


def test_string_and_dictionary_labels_follow_label_order():
    enc = encode_labels(pa.array(["b", "a", "c", "a"]).dictionary_encode())
    assert enc.values == ["a", "b", "c"]
    np.testing.assert_array_equal(enc.codes, [1, 0, 2, 0])
    enc = encode_labels(np.array([10, -3, 10, 7]))
    assert enc.values == [-3, 7, 10]
    np.testing.assert_array_equal(enc.codes, [2, 0, 2, 1])


def test_npy_and_npz(tmp_path):
    x = np.random.default_rng(0).normal(size=(9, 3)).astype(np.float32)
    y = np.array(["u", "v", "w"] * 3)
    np.save(tmp_path / "e.npy", x)
    np.save(tmp_path / "y.npy", y)
    ds = load_dataset(tmp_path / "e.npy", labels=tmp_path / "y.npy")
    np.testing.assert_array_equal(ds.embeddings, x)
    np.savez(tmp_path / "d.npz", embeddings=x, labels=y)
    ds2 = load_dataset(tmp_path / "d.npz")
    assert ds2.content_hash() == ds.content_hash()


def test_sample_data_formats_agree(sample_dir):
    a = load_dataset(sample_dir / "model_a.parquet")
    b = load_dataset(sample_dir / "model_a.npy", labels=sample_dir / "labels.npy")
    assert a.content_hash() == b.content_hash()


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_bytes(b""), "is empty"),
        (lambda p: p.write_bytes(b"hello world, not a table"), "unrecognised file format"),
        (lambda p: p.write_bytes(b"PAR1" + b"\0" * 40), "cannot read Parquet"),
    ],
)
def test_unreadable_files(tmp_path, make, message):
    p = tmp_path / "bad.parquet"
    make(p)
    with pytest.raises(InputError, match=message):
        load_dataset(p)


def test_column_errors(tmp_path):
    x, table = _table()
    two_lists = table.append_column("emb2", table.column("emb"))
    pq.write_table(two_lists, tmp_path / "two.parquet")
    with pytest.raises(InputError, match="several list columns"):
        load_dataset(tmp_path / "two.parquet")
    with pytest.raises(InputError, match=r"no column 'nope'; available columns: id, emb, label, emb2"):
        load_dataset(tmp_path / "two.parquet", embedding_col="nope")
    pq.write_table(table.rename_columns(["id", "emb", "target"]), tmp_path / "nolabel.parquet")
    with pytest.raises(InputError, match="no label column"):
        load_dataset(tmp_path / "nolabel.parquet")
    assert load_dataset(tmp_path / "nolabel.parquet", label_col="target").labels.n_classes == 3


def test_unequal_lists_and_nulls(tmp_path):
    col = pa.array([[1.0, 2.0], [3.0], [1.0, 1.0]], type=pa.list_(pa.float32()))
    pq.write_table(pa.table({"e": col, "label": [0, 0, 1]}), tmp_path / "u.parquet")
    with pytest.raises(InputError, match="unequal length: row 0 has 2 values, row 1 has 1"):
        load_dataset(tmp_path / "u.parquet")
    col = pa.array([[1.0, 2.0], None, [1.0, 1.0]], type=pa.list_(pa.float32()))
    pq.write_table(pa.table({"e": col, "label": [0, 0, 1]}), tmp_path / "n.parquet")
    with pytest.raises(InputError, match="null row"):
        load_dataset(tmp_path / "n.parquet")
    col = pa.array([[1.0, 2.0], [1.0, 2.0], [1.0, 1.0]], type=pa.list_(pa.float32()))
    pq.write_table(pa.table({"e": col, "label": pa.array([0, None, 1])}), tmp_path / "l.parquet")
    with pytest.raises(InputError, match="labels contain 1 null"):
        load_dataset(tmp_path / "l.parquet")


def test_length_mismatch(tmp_path):
    np.save(tmp_path / "e.npy", np.ones((5, 2), np.float32))
    np.save(tmp_path / "y.npy", np.arange(4))
    with pytest.raises(InputError, match="length mismatch: 5 embeddings but 4 labels"):
        load_dataset(tmp_path / "e.npy", labels=tmp_path / "y.npy")


@given(st.integers(2, 60), st.integers(1, 9), st.integers(0, 2**32 - 1), st.integers(0, 20))
@settings(max_examples=60, deadline=None)
def test_count_duplicate_rows_matches_bruteforce(n, d, seed, copies):
    from opis_cli.data.io import count_duplicate_rows

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    x[rng.integers(0, n, copies)] = x[rng.integers(0, n, copies)]  # planted repeats
    x[rng.integers(0, n, 2)] = -0.0  # -0.0 and 0.0 differ bit for bit: not duplicates of 0.0
    want = n - len(np.unique(x.view(np.uint32), axis=0))
    assert count_duplicate_rows(x) == want
