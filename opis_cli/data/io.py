"""Reading embeddings and labels from Parquet, Arrow IPC/Feather, NPY and NPZ files.

Everything goes through pyarrow or numpy buffers: no per-row Python objects, and float32
embedding columns are viewed without a copy. Label values of any supported type are encoded
once into integer codes whose order is the natural order of the values (numeric for integers,
code point order for strings); that order is the "label order" the definitions refer to.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from opis_cli.errors import InputError
from opis_cli.data.duplicates import count_duplicate_rows  # noqa: F401  (re-exported)
from opis_cli.data.input_checks import (LABEL_COLUMN_NAMES, check_npy_memory, check_npz_memory, check_table_memory,
                                        detect_format, label_values, labels_format_error, pick_embedding_column,
                                        pick_label_column, require_float32_range, require_regular_file, sniff_format)

__all__ = ["Labels", "InputInfo", "Dataset", "content_hash", "encode_labels", "detect_format", "load_dataset",
           "as_embedding_matrix", "count_duplicate_rows", "embedding_matrix_from_arrow", "LABEL_COLUMN_NAMES"]


@dataclass(frozen=True)
class Labels:
    """Labels encoded as integer codes.

    ``codes[i]`` indexes ``values``; ``values`` is sorted in label order, so comparing codes
    compares labels. ``values`` holds plain Python ints or strs (JSON-ready).
    """

    codes: np.ndarray  # (N,) int64
    values: list

    @property
    def n_classes(self) -> int:
        return len(self.values)

    def counts_hash(self) -> str:
        """SHA-256 of the label values and their counts, independent of row order and of any
        model: two reports with the same hash were evaluated on the same labelled set (as far as
        labels can tell), whatever embeddings were compared. A gate uses it to refuse comparing a
        model evaluated on one set with a baseline evaluated on another."""
        h = hashlib.sha256(b"opis-labels-v1:")
        counts = np.bincount(self.codes, minlength=self.n_classes)
        for value, count in ((v, c) for v, c in zip(self.values, counts) if c):  # 0: the other side's label
            h.update(f"{type(value).__name__}:{value}\x00{int(count)}\x00".encode("utf-8", "surrogatepass"))
        return h.hexdigest()


@dataclass(frozen=True)
class InputInfo:
    """Where a dataset came from, for the report's ``input`` section."""

    path: str | None
    format: str
    embedding_column: str | None = None
    label_column: str | None = None
    dtype: str = "float32"  # of the embeddings as stored (computed in float32 whatever it is)
    group_column: str | None = None


@dataclass(frozen=True)
class Dataset:
    """Embeddings (N, D) float32 and their encoded labels, as loaded (rows in file order)."""

    embeddings: np.ndarray
    labels: Labels
    info: InputInfo
    groups: Labels | None = None  # a second key (customer, domain): opis_cli.analyses.groups
    reference: "Dataset | None" = None  # query/reference mode: the references (data/reference.py)
    own_hash: str | None = None  # content_hash before the joint label encoding of data/reference.py

    @property
    def n(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def d(self) -> int:
        return int(self.embeddings.shape[1])

    def content_hash(self) -> str:
        """SHA-256 of the float32 embeddings and the labels, in row order.

        Two reports with the same hash were computed on the same data, whatever the files were
        called; a gate uses it to tell a report from another dataset.
        """
        return self.own_hash or content_hash(self.embeddings, self.labels)


def content_hash(embeddings: np.ndarray, labels: Labels) -> str:
    h = hashlib.sha256()
    n, d = embeddings.shape
    h.update(f"opis-input-v1:{n}:{d}:".encode())
    # Hash in row chunks: a C-contiguous view is needed and a full copy of a large
    # non-contiguous array would double peak memory.
    step = max(1, (64 << 20) // max(1, 4 * d))
    for start in range(0, n, step):
        chunk = np.ascontiguousarray(embeddings[start:start + step], dtype=np.float32)
        h.update(memoryview(chunk).cast("B"))
    h.update(np.ascontiguousarray(labels.codes, dtype="<i8").tobytes())
    for v in labels.values:
        h.update(f"{type(v).__name__}:{v}\x00".encode("utf-8", "surrogatepass"))
    return h.hexdigest()


# --------------------------------------------------------------------------- labels

def encode_labels(labels: Any) -> Labels:
    """Encode labels (a pyarrow array, numpy array or sequence of ints/strs) into codes.

    Which values are accepted is one rule for every format: :func:`opis_cli.data.input_checks.label_values`
    (integers, strings, whole-number floats as integers; no booleans, NaN or fractions).
    Codes follow label order: integers numerically, strings by code point.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = _to_arrow_labels(labels)
    if arr.null_count:
        first = int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])
        raise InputError(f"labels contain {arr.null_count} null value(s) (first at row {first})")
    arr = label_values(arr)
    encoded = pc.dictionary_encode(arr)
    dictionary = encoded.dictionary
    order = pc.sort_indices(dictionary).to_numpy()
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order), dtype=np.int64)
    codes = rank[encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)]
    values = dictionary.take(pa.array(order)).to_pylist()
    return Labels(codes=codes, values=values)


def _to_arrow_labels(labels: Any):
    import pyarrow as pa

    if isinstance(labels, pa.ChunkedArray):
        return labels.combine_chunks()
    if isinstance(labels, pa.Array):
        return labels
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise InputError(f"labels must be one-dimensional, got shape {arr.shape}")
    # Numbers and booleans go to Arrow as they are: label_values then judges them exactly as it
    # judges a Parquet column of the same type.
    if arr.dtype.kind in "iufb":
        return pa.array(arr)
    if arr.dtype.kind == "U":
        return pa.array(arr, type=pa.string())
    if arr.dtype.kind == "S":
        return pa.array(arr.tolist(), pa.binary())
    if arr.dtype.kind == "O":
        try:
            out = pa.array(arr.tolist())
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
            raise InputError("labels mix several types; use all integers or all strings") from None
        return out
    raise InputError(f"labels must be integers or strings, got dtype {arr.dtype}")


# --------------------------------------------------------------------------- files

def load_dataset(
    path: str | os.PathLike,
    *,
    labels: str | os.PathLike | None = None,
    embedding_col: str | None = None,
    label_col: str | None = None,
    group_col: str | None = None,
    labels_option: str = "--labels",
) -> Dataset:
    """Load embeddings and labels (and, with ``group_col``, a group key) from a file.

    Parameters
    ----------
    path : Parquet or Arrow IPC/Feather table, ``.npy`` matrix (with ``labels``), or ``.npz``
        holding arrays ``embeddings`` and ``labels``.
    labels : path to a ``.npy`` label vector (or an ``.npz``: its array ``labels``, else its only
        array); required with a ``.npy`` embeddings file.
    embedding_col, label_col : table column names; auto-detected when omitted (the single list
        column, and the column named label/labels/class/y).
    group_col : a table column, or an array of an ``.npz``, of group keys (integers or strings).
    labels_option : the option that gave ``labels``, named in messages (``--dev-labels`` for a
        development set).
    """
    p = Path(path)
    require_regular_file(p)
    if labels is not None:
        require_regular_file(Path(labels), labels_option)
    fmt = detect_format(p)
    if fmt in ("parquet", "arrow"):
        if labels is not None:
            raise InputError(f"{labels_option} is for .npy embeddings; tables carry their own label column")
        return _load_table(p, fmt, embedding_col, label_col, group_col)
    if embedding_col is not None or label_col is not None:
        raise InputError("--embedding-col/--label-col apply to Parquet and Arrow tables only")
    if fmt == "npy":
        if group_col is not None:
            raise InputError("--group-col needs a Parquet/Arrow table or an .npz holding that array")
        if labels is None:
            raise InputError(f"{p} holds only embeddings; pass the labels with {labels_option} labels.npy")
        emb = _load_npy(p, "embeddings")
        lab = _load_labels_file(Path(labels), labels_option)
        return _assemble(emb, lab, InputInfo(path=str(path), format="npy"))
    # npz
    if labels is not None:
        raise InputError(f"{labels_option} is for .npy embeddings; an .npz carries its own 'labels' array")
    return _load_npz(p, str(path), group_col)


def _with_groups(dataset: Dataset, groups: Any, name: str) -> Dataset:
    encoded = encode_labels(groups)  # same rules as labels: integers or strings, no nulls
    if len(encoded.codes) != dataset.n:
        raise InputError(f"group column {name!r} has {len(encoded.codes)} values for {dataset.n} embeddings")
    return replace(dataset, groups=encoded, info=replace(dataset.info, group_column=name))


def _assemble(emb: np.ndarray, lab: Any, info: InputInfo) -> Dataset:
    if getattr(emb, "dtype", None) is not None and info.dtype == "float32":
        info = replace(info, dtype=str(emb.dtype))
    emb = as_embedding_matrix(emb)
    encoded = encode_labels(lab)
    if len(encoded.codes) != emb.shape[0]:
        raise InputError(
            f"length mismatch: {emb.shape[0]} embeddings but {len(encoded.codes)} labels"
        )
    return Dataset(embeddings=emb, labels=encoded, info=info)


def as_embedding_matrix(emb: Any) -> np.ndarray:
    """Check shape and dtype of an embedding matrix; return it as float32 (a view when possible)."""
    arr = np.asarray(emb)
    if arr.ndim != 2:
        raise InputError(f"embeddings must be a 2-D matrix (N, D), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise InputError("no embeddings: the input has 0 rows")
    if arr.shape[1] == 0:
        raise InputError("embeddings have dimension 0")
    if arr.dtype.kind != "f":
        raise InputError(f"embeddings must be floating point (float16/32/64), got dtype {arr.dtype}")
    if arr.dtype != np.float32:
        if arr.dtype.itemsize > 4:
            require_float32_range(arr)
        with np.errstate(invalid="ignore", over="ignore"):  # NaN/Inf are reported by the preparation pass
            arr = arr.astype(np.float32)
    return arr


def _load_npy(path: Path, what: str) -> np.ndarray:
    check_npy_memory(path, what)
    try:
        return np.load(path, mmap_mode="r" if what == "embeddings" else None, allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc).lower() or "object" in str(exc).lower():
            raise InputError(f"{path}: object arrays are not supported; save {what} as numbers or fixed-width strings") from None
        raise InputError(f"{path}: cannot read .npy file ({_first_line(exc)})") from None
    except MemoryError:
        raise InputError(f"{path}: the .npy header asks for more memory than this machine has") from None
    except Exception as exc:  # a damaged header reaches numpy's parser (tokenize, SyntaxError, ...)
        raise InputError(f"{path}: cannot read .npy file (damaged header: {exc.__class__.__name__})") from None


def _load_labels_file(path: Path, option: str = "--labels") -> Any:
    fmt = sniff_format(path)
    if fmt == "npy":
        return _load_npy(path, "labels")
    if fmt != "npz":
        raise labels_format_error(path, fmt, option)

    # An .npz given to --labels: its array named 'labels' (the name an .npz input uses), else its
    # only array (np.savez(f, y) calls it arr_0). With several arrays and none called 'labels',
    # picking one by length could silently take ids or a split column for the classes: refuse.
    def choose(names: list[str]) -> list[str]:
        if "labels" not in names and len(names) != 1:
            raise InputError(f"{option} {path} holds arrays {', '.join(map(repr, names)) or '(none)'}, none named "
                             "'labels'; save the labels alone with numpy.save, or name the array 'labels'")
        return ["labels" if "labels" in names else names[0]]

    return next(iter(_npz_arrays(path, choose).values()))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


def _npz_arrays(path: Path, choose) -> dict[str, np.ndarray]:
    """The arrays ``choose(names in the archive)`` names, each checked for size before numpy
    decompresses it."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            wanted = choose(list(archive.files))
            check_npz_memory(path, wanted)
            return {name: archive[name] for name in wanted}
    except InputError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc).lower() or "object" in str(exc).lower():
            raise InputError(f"{path}: object arrays are not supported in .npz inputs") from None
        raise InputError(f"{path}: cannot read .npz file ({exc})") from None
    except Exception as exc:  # zipfile.BadZipFile, OSError, EOFError, ...
        raise InputError(f"{path}: cannot read .npz file ({exc.__class__.__name__}: {exc})") from None


def _load_npz(path: Path, shown: str, group_col: str | None = None) -> Dataset:
    def choose(names: list[str]) -> list[str]:
        wanted = ["embeddings", "labels"] + ([group_col] if group_col else [])
        missing = [k for k in wanted if k not in names]
        if missing:
            raise InputError(f"{path}: .npz must hold arrays 'embeddings' and 'labels'; "
                             f"missing {', '.join(missing)} (found: {', '.join(names) or 'none'})")
        return wanted

    arrays = _npz_arrays(path, choose)
    dataset = _assemble(arrays["embeddings"], arrays["labels"], InputInfo(path=shown, format="npz"))
    return _with_groups(dataset, arrays[group_col], group_col) if group_col else dataset


def _load_table(path: Path, fmt: str, embedding_col: str | None, label_col: str | None,
                group_col: str | None = None) -> Dataset:
    import pyarrow as pa

    try:
        schema = _read_schema(path, fmt)
        emb_name = pick_embedding_column(schema, embedding_col)
        lab_name = pick_label_column(schema, label_col, exclude=emb_name)
        if group_col is not None and group_col not in schema.names:
            raise InputError(f"no column {group_col!r} for --group-col; available columns: {', '.join(schema.names)}")
        if fmt == "parquet":
            check_table_memory(path, emb_name, schema=schema)
        table = _read_columns(path, fmt, list(dict.fromkeys([emb_name, lab_name] + ([group_col] if group_col else []))))
    except InputError:
        raise
    except (pa.ArrowException, OSError, ValueError) as exc:
        kind = "Parquet" if fmt == "parquet" else "Arrow IPC"
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise InputError(f"{path}: cannot read {kind} file ({msg})") from None
    if table.num_rows == 0:
        raise InputError(f"{path}: the table has 0 rows")
    column = table.column(emb_name)
    if fmt == "arrow":  # memory-mapped, so only now are the sizes known without a read
        check_table_memory(path, emb_name, mapped=column)
    emb = embedding_matrix_from_arrow(column, emb_name)
    info = InputInfo(path=str(path), format=fmt, embedding_column=emb_name, label_column=lab_name,
                     dtype=_stored_float_type(column.type))
    dataset = _assemble(emb, table.column(lab_name), info)
    return _with_groups(dataset, table.column(group_col), group_col) if group_col else dataset


def _stored_float_type(list_type) -> str:
    try:
        return str(np.dtype(list_type.value_type.to_pandas_dtype()))
    except Exception:  # not a list of floats: the matrix conversion has said so already
        return "float32"


def _read_schema(path: Path, fmt: str):
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.read_schema(path)
    import pyarrow as pa

    with pa.memory_map(str(path), "r") as source:
        return pa.ipc.open_file(source).schema


def _read_columns(path: Path, fmt: str, columns: list[str]):
    if fmt == "parquet":
        import pyarrow.parquet as pq

        # Pages written with checksums are verified: damaged data pages otherwise decode to
        # plausible wrong numbers and give a wrong report instead of an error.
        return pq.read_table(path, columns=columns, page_checksum_verification=True)
    import pyarrow as pa

    source = pa.memory_map(str(path), "r")
    return pa.ipc.open_file(source).read_all().select(columns)


def embedding_matrix_from_arrow(column, name: str = "embedding") -> np.ndarray:
    """Turn a list / large_list / fixed_size_list column into an (N, D) float32 matrix.

    float32 values are viewed in place (no copy when the column is a single chunk);
    float16/float64 are converted to float32.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n = len(arr)
    if arr.null_count:
        first = int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])
        raise InputError(f"embedding column {name!r} has {arr.null_count} null row(s) (first at row {first})")
    if pa.types.is_fixed_size_list(arr.type):
        d = arr.type.list_size
    else:
        lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False)
        d = int(lengths[0]) if n else 0
        bad = np.flatnonzero(lengths != d)
        if bad.size:
            raise InputError(
                f"embedding column {name!r} has lists of unequal length: row 0 has {d} values, "
                f"row {int(bad[0])} has {int(lengths[bad[0]])}"
            )
    values = arr.flatten()
    vt = values.type
    if not pa.types.is_floating(vt):
        raise InputError(f"embedding column {name!r} holds {vt} values; expected floats")
    if values.null_count:
        raise InputError(f"embedding column {name!r} has {values.null_count} null value(s) inside its lists")
    if d == 0:
        raise InputError(f"embedding column {name!r} holds empty lists")
    flat = values.to_numpy(zero_copy_only=False).reshape(n, d)
    return as_embedding_matrix(flat)
