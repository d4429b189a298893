"""Checks an input passes before, and while, opis_cli.data.io reads it.

* What a path is: only regular files are opened (a FIFO would block ``open`` forever, a directory
  fails deep inside a reader with an unhelpful error).
* What a file is, by its magic bytes, and what ``--labels`` can be; which table columns to read.
* Whether the machine has the memory to load it, from the .npy header, the .npz members'
  declared sizes or the Parquet metadata, before anything large is read or decompressed.
* The one rule for label values, for every format (:func:`label_values`).
* Whether float64 embeddings survive the conversion to float32 the computation runs in.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np

from opis_cli.errors import InputError
from opis_cli import memory
from opis_cli.memory import gib

_MAGIC = {b"PAR1": "parquet", b"ARROW1": "arrow", b"\x93NUMPY": "npy", b"PK\x03\x04": "npz",
          b"PK\x05\x06": "npz"}  # the last: an empty zip archive

_NOT_REGULAR = [(stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
                (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")]


# --------------------------------------------------------------------------- what a path is

def require_regular_file(path: Path, option: str | None = None) -> None:
    """Refuse a path that is missing or is not a regular file, without opening it.

    Opening a FIFO for reading blocks until a writer appears, so the check uses ``os.stat`` only.
    ``option`` names the command-line option the path came from (``--labels``), for the message.
    """
    shown = f"{option} {path}" if option else str(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InputError(f"no such file: {path}") from None
    except NotADirectoryError:
        raise InputError(f"no such file: {path} (a part of the path is a file, not a directory)") from None
    except PermissionError:
        raise InputError(f"no permission to read {path}") from None
    except OSError as exc:
        raise InputError(f"cannot read {path} ({exc.strerror or exc.__class__.__name__})") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{shown} is a directory; give a file")
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in _NOT_REGULAR if test(st.st_mode)), "a special file")
        # The readers seek (Parquet footer, memory maps), so even a pipe that would be written to
        # cannot be read: the data has to be saved first.
        raise InputError(f"{shown} is {kind}, not a regular file; save the data to a file and give that")


def sniff_format(path: Path) -> str | None:
    """The format named by the file's leading magic bytes (extensions can lie), or None."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except IsADirectoryError:
        raise InputError(f"{path} is a directory; give a file") from None
    except PermissionError:
        raise InputError(f"no permission to read {path}") from None
    if not head:
        raise InputError(f"{path} is empty")
    return next((fmt for magic, fmt in _MAGIC.items() if head.startswith(magic)), None)


def detect_format(path: Path) -> str:
    """Name the file format from its leading magic bytes; refuse an unrecognised one."""
    fmt = sniff_format(path)
    if fmt is None:
        raise InputError(f"{path}: unrecognised file format (expected Parquet, Arrow IPC/Feather, .npy or .npz)")
    return fmt


def labels_format_error(path: Path, fmt: str | None, option: str = "--labels") -> InputError:
    """The error for a ``--labels`` (``option``) file that is neither .npy nor .npz, with what to do
    instead."""
    if fmt in ("parquet", "arrow"):
        kind = "a Parquet" if fmt == "parquet" else "an Arrow"
        return InputError(f"{option} {path} is {kind} table, but {option} takes a .npy (or .npz) array: save the "
                          "label column with numpy.save, or put the embeddings in that table as a list column and "
                          "give the table alone (choose its label column with --label-col)")
    with open(path, "rb") as fh:
        head = fh.read(4096)
    text = head.decode("utf-8", "replace").rstrip("\ufffd")  # the cut at 4096 bytes may split a character
    looks_text = "\ufffd" not in text and all(ch.isprintable() or ch in "\t\r\n" for ch in text)
    what = "it looks like text, a CSV?" if looks_text else "unrecognised format"
    return InputError(f"{option} {path} is not a .npy file ({what}); {option} takes a .npy (or .npz) array: "
                      "save the labels with numpy.save")


# --------------------------------------------------------------------------- columns

LABEL_COLUMN_NAMES = ("label", "labels", "class", "y")


def _is_list_type(t) -> bool:
    import pyarrow as pa

    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def pick_embedding_column(schema, requested: str | None) -> str:
    """The embedding column: ``requested``, or the table's only list column."""
    names = list(schema.names)
    if requested is not None:
        if requested not in names:
            raise InputError(f"no column {requested!r}; available columns: {', '.join(names)}")
        if not _is_list_type(schema.field(requested).type):
            raise InputError(
                f"column {requested!r} has type {schema.field(requested).type}; "
                "the embedding column must be a list of floats"
            )
        return requested
    candidates = [f.name for f in schema if _is_list_type(f.type)]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise InputError(
            f"no list column to use as embeddings; available columns: {', '.join(names)} "
            "(store embeddings as a list<float> column)"
        )
    raise InputError(
        f"several list columns ({', '.join(candidates)}); choose one with --embedding-col"
    )


def pick_label_column(schema, requested: str | None, exclude: str) -> str:
    """The label column: ``requested``, or the one named label/labels/class/y (not ``exclude``)."""
    names = list(schema.names)
    if requested is not None:
        if requested not in names:
            raise InputError(f"no column {requested!r}; available columns: {', '.join(names)}")
        return requested
    found = [n for n in names if n.lower() in LABEL_COLUMN_NAMES and n != exclude]
    if len(found) == 1:
        return found[0]
    if not found:
        raise InputError(
            f"no label column (looked for {'/'.join(LABEL_COLUMN_NAMES)}); "
            f"choose one with --label-col; available columns: {', '.join(names)}"
        )
    raise InputError(f"several label columns ({', '.join(found)}); choose one with --label-col")


# --------------------------------------------------------------------------- memory

def require_memory(path: Path, need: int, what: str) -> None:
    """Refuse to load ``path`` when ``need`` bytes exceed the available memory; ``what`` says
    what the bytes are. Running out later kills the process or ends in a MemoryError deep in
    the computation, after minutes of work."""
    have = memory.available_memory()
    if have is not None and need > have:
        raise InputError(f"{path}: loading it needs about {gib(need)} of memory ({what}) but {gib(have)} is "
                         "available; evaluate a sample of the rows or use a machine with more memory")


def _embedding_copies(n: int, d: int, dtype: np.dtype) -> int:
    """Bytes of the float32 matrices made from stored embeddings: the conversion when they are not
    float32, and the normalised, class-sorted copy every evaluation prepares (opis_cli.data.prepare)."""
    return n * d * 4 * (1 if dtype == np.float32 else 2)


def _copies_of(shape, dtype: np.dtype) -> str:
    copies = "working copy" if dtype == np.float32 else "conversion and working copy"
    return f"the float32 {copies} of a {' x '.join(f'{s:,}' for s in shape)} {dtype} matrix"


def npy_header(fh) -> tuple[tuple, bool, np.dtype] | None:
    """(shape, fortran_order, dtype) from an open .npy stream positioned at its start, reading
    only the header; None when it cannot be read (the loader then reports why)."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fh)
        if version == (1, 0):
            return fmt.read_array_header_1_0(fh)
        if version == (2, 0):
            return fmt.read_array_header_2_0(fh)
    except Exception:  # a damaged header: np.load reports it in its own words
        pass
    return None


def check_npy_memory(path: Path, role: str) -> None:
    """Refuse an .npy whose header asks for more memory than is available, before loading it.

    ``role``: "embeddings" (memory-mapped: the file's pages are cache the kernel can drop, so
    only the float32 copies count) or "labels" (read in full, then encoded).
    """
    with open(path, "rb") as fh:
        header = npy_header(fh)
        offset = fh.tell()
    if header is None:
        return
    shape, fortran, dtype = header
    count = int(np.prod(shape, dtype=object))
    stored = count * dtype.itemsize
    if offset + stored > path.stat().st_size:
        return  # a truncated file: np.load says so, which is the real problem
    if role == "embeddings":
        if len(shape) != 2 or dtype.kind != "f":
            return  # refused for its shape or type without allocating anything
        n, d = shape
        # A Fortran-ordered map is copied to rows once (opis_cli.data.io.count_duplicate_rows).
        need = _embedding_copies(n, d, dtype) + (n * d * 4 if fortran else 0)
        require_memory(path, need, _copies_of(shape, dtype))
    else:
        require_memory(path, 2 * stored + 16 * count, f"{count:,} labels of type {dtype}, and their encoding")


def check_npz_memory(path: Path, arrays: list[str]) -> None:
    """Refuse an .npz whose named ``arrays`` would decompress to more memory than is available.

    Only the arrays that will be read count: np.load decompresses a member when it is accessed,
    so a bomb in another member is never expanded. A member's size is the larger of what the zip
    directory declares and what its .npy header asks numpy to allocate; the header is read
    through the decompressor, a few hundred bytes of it.
    """
    import zipfile

    stored, copies, shown = 0, 0, []
    try:
        with zipfile.ZipFile(path) as zf:
            members = {(i.filename[:-4] if i.filename.endswith(".npy") else i.filename): i for i in zf.infolist()}
            for name in (a for a in arrays if a in members):
                with zf.open(members[name]) as fh:
                    header = npy_header(fh)
                asked = 0 if header is None else int(np.prod(header[0], dtype=object)) * header[2].itemsize
                stored += max(members[name].file_size, asked)
                shown.append(repr(name))
                if name == "embeddings" and header is not None and len(header[0]) == 2 and header[2].kind == "f":
                    copies, matrix = _embedding_copies(*header[0], header[2]), _copies_of(header[0], header[2])
    except Exception:  # not a readable zip: the loader reports it
        return
    what = f"arrays {', '.join(shown)} decompress to {gib(stored)}"
    if copies:
        what += f", plus {matrix}"
    require_memory(path, stored + copies, what)


def check_table_memory(path: Path, column: str, schema=None, mapped=None) -> None:
    """Refuse a table whose embedding ``column`` needs more memory than is available once decoded
    and converted to float32: a Parquet file from its metadata (``schema``), before reading; an
    Arrow IPC file (``mapped``, its memory-mapped column) before the conversion."""
    import pyarrow as pa

    value_type = getattr((mapped if mapped is not None else schema.field(column)).type, "value_type", None)
    if value_type is None or not pa.types.is_floating(value_type):
        return  # refused for its type, by the conversion
    if mapped is not None:
        values, chunks, decoded = sum(len(chunk.flatten()) for chunk in mapped.chunks), mapped.num_chunks, 0
    else:
        import pyarrow.parquet as pq

        meta = pq.read_metadata(path)
        leaves = [i for i in range(meta.num_columns) if meta.schema.column(i).path.split(".")[0] == column]
        values = sum(meta.row_group(r).column(i).num_values for r in range(meta.num_row_groups) for i in leaves)
        chunks, decoded = meta.num_row_groups, values * value_type.bit_width // 8
    # Chunks (row groups, record batches) are joined into one buffer: a copy of the decoded values.
    if chunks > 1:
        decoded += values * value_type.bit_width // 8
    need = decoded + values * 4 * (1 if value_type.bit_width == 32 else 2)
    require_memory(path, need, f"{values:,} float{value_type.bit_width} embedding values, decoded and in float32")


# --------------------------------------------------------------------------- values

def label_values(arr):
    """THE rule for label values, applied to labels (and group keys) from every format.

    Takes a pyarrow array without nulls; returns an int64 or string array, or raises InputError.

    * integers: as they are;
    * strings (also dictionary-encoded, large or view strings, and binary holding valid UTF-8): as text;
    * floating point: accepted when every value is a whole number within +-2**53 (exact in a
      float64), encoded as those integers, so 3.0 and 3 are the same label and a float column gives
      the same report and hashes as the integer column it came from (pandas turns an integer
      column with a missing value into float64); NaN (a missing label) and fractions are refused;
    * booleans: refused. True/false makes two classes, which is almost always a flag column picked
      by mistake rather than class identities; store them as integers 0/1 if two classes are meant.
    * anything else (dates, decimals, lists): refused.
    """
    import pyarrow as pa

    t = arr.type
    if pa.types.is_dictionary(t):
        arr = arr.dictionary_decode()
        t = arr.type
    if pa.types.is_large_string(t) or getattr(pa.types, "is_string_view", lambda _: False)(t):
        return arr.cast(pa.string())
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return _utf8_labels(arr)
    if pa.types.is_integer(t) or pa.types.is_string(t):
        return arr
    if pa.types.is_boolean(t):
        raise InputError("labels are true/false values, which make only two classes (a flag column?): give the "
                         "class labels, or store them as integers 0/1 if two classes are meant")
    if pa.types.is_floating(t):
        return pa.array(_integral_floats(arr.to_numpy(zero_copy_only=False)))
    raise InputError(f"labels must be integers or strings, got {t}")


def _integral_floats(values: np.ndarray) -> np.ndarray:
    values = values.astype(np.float64, copy=False)
    nan = np.isnan(values)
    if nan.any():
        raise InputError(f"labels contain {int(nan.sum())} NaN value(s) (first at row {int(np.flatnonzero(nan)[0])}); "
                         "missing labels? drop those rows")
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(values) | (values != np.round(values)) | (np.abs(values) > 2.0 ** 53)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise InputError(f"labels are floating point and row {row} holds {float(values[row])!r}; floating-point labels "
                         "must all be whole numbers (up to 2**53): store class labels as integers or strings")
    return values.astype(np.int64)


def _utf8_labels(arr):
    """Binary labels as strings when every value is valid UTF-8 (writers often store text as binary)."""
    import pyarrow as pa

    values = arr.to_pylist()
    for row, raw in enumerate(values):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"labels are byte strings that are not valid UTF-8 (row {row}: {raw[:24]!r}, byte "
                             f"{exc.start}); store them as integers or text") from None
    return pa.array([v.decode("utf-8") for v in values], pa.string())


_FLOAT32_MAX = float(np.finfo(np.float32).max)
_FLOAT32_TINY = float(np.finfo(np.float32).tiny)  # the smallest normal float32, ~1.2e-38


def require_float32_range(arr: np.ndarray, chunk_rows: int = 1 << 16) -> None:
    """Refuse wider-than-float32 embeddings that the conversion to float32 would damage.

    Finite values beyond float32's range would become Inf and be reported as a diverged model. A
    row whose values are all below float32's smallest normal (~1.2e-38) would become zeros, or
    keep only a few bits, and be reported as an all-zero vector or give wrong distances. Rescaling
    is the user's call: it leaves cosine figures alone but changes every l2 one. NaN/Inf
    themselves are reported by the preparation pass; a single tiny component in an ordinary row
    is harmless and passes.
    """
    for start in range(0, arr.shape[0], chunk_rows):
        with np.errstate(invalid="ignore"):
            block = np.abs(np.asarray(arr[start:start + chunk_rows]))
            finite = np.isfinite(block)
            over = finite & (block > _FLOAT32_MAX)
        if over.any():
            row = start + int(np.flatnonzero(over.any(axis=1))[0])
            raise InputError(
                f"embeddings hold finite values beyond float32's range (|x| up to {float(block[over].max()):.3g}, "
                f"first at row {row}); computation is in float32: rescale the embeddings"
            )
        largest = np.where(finite, block, 0.0).max(axis=1)
        tiny = (largest > 0) & (largest < _FLOAT32_TINY)
        if tiny.any():
            row = int(np.flatnonzero(tiny)[0])
            raise InputError(
                f"embeddings hold rows whose values are all too small for float32 (first at row {start + row}: |x| "
                f"at most {float(largest[row]):.3g}, below ~1.2e-38), which computation in float32 would turn "
                "into zeros; rescale the embeddings (e.g. normalise each row in float64 first)"
            )
