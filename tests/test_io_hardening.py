"""The input layer refuses what it cannot read, before reading it (issue 15): special files, wrong
--labels files, inputs too large for the machine, zip bombs, float64 values float32 cannot hold;
and one rule for label values whatever the format."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

from opis_cli import memory as opis_memory
from opis_cli.errors import InputError
from opis_cli.data.io import load_dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from error_cases import cli_env, opis_command  # noqa: E402


def _rows(n_classes=5, per_class=6, d=4, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), per_class)
    return rng.normal(size=(len(y), d)).astype(np.float32), y


def _table(path: Path, x, labels, writer=pq.write_table) -> Path:
    emb = pa.FixedSizeListArray.from_arrays(pa.array(np.asarray(x).reshape(-1)), x.shape[1])
    writer(pa.table({"embedding": emb, "label": labels}), path)
    return path


def _cli(*args, memory: int | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    env = cli_env()
    env.pop("OPIS_AVAILABLE_MEMORY", None)
    if memory is not None:
        env["OPIS_AVAILABLE_MEMORY"] = str(memory)
    return subprocess.run([*opis_command(), *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=timeout)


def _refused(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("error: "), proc.stderr
    for word in words:
        assert word in proc.stderr, proc.stderr


# --------------------------------------------------------------------------- special files

def test_a_fifo_is_refused_without_being_opened(tmp_path):
    """Input, --labels and --dev: opening a FIFO would wait for a writer forever; the timeout
    turns such a hang into a failure."""
    x, y = _rows()
    np.save(tmp_path / "emb.npy", x)
    np.save(tmp_path / "labels.npy", y)
    table = _table(tmp_path / "emb.parquet", x, pa.array(y))
    os.mkfifo(tmp_path / "pipe")
    _refused(_cli("evaluate", tmp_path / "pipe", timeout=30), "pipe is a named pipe (FIFO), not a regular file")
    _refused(_cli("evaluate", tmp_path / "emb.npy", "--labels", tmp_path / "pipe", timeout=30),
             "--labels", "named pipe (FIFO)")
    _refused(_cli("thresholds", table, "--dev", tmp_path / "pipe", "--target-far", "0.01", timeout=30),
             "pipe is a named pipe (FIFO)")


def test_special_files_and_directories(tmp_path):
    x, y = _rows()
    np.save(tmp_path / "emb.npy", x)
    (tmp_path / "dir").mkdir()
    with pytest.raises(InputError, match=r"dir is a directory; give a file"):
        load_dataset(tmp_path / "dir")
    with pytest.raises(InputError, match=r"^--labels .*dir is a directory; give a file$"):
        load_dataset(tmp_path / "emb.npy", labels=tmp_path / "dir")
    with pytest.raises(InputError, match="character device, not a regular file"):
        load_dataset("/dev/null")
    with pytest.raises(InputError, match="part of the path is a file"):
        load_dataset(tmp_path / "emb.npy" / "x.npy")


# --------------------------------------------------------------------------- what --labels can be

def test_labels_must_be_npy_or_npz(tmp_path):
    x, y = _rows()
    np.save(tmp_path / "emb.npy", x)
    (tmp_path / "y.csv").write_text("label\n" + "\n".join(map(str, y)) + "\n")
    with pytest.raises(InputError, match=r"not a \.npy file \(it looks like text, a CSV\?\).*numpy\.save"):
        load_dataset(tmp_path / "emb.npy", labels=tmp_path / "y.csv")
    for name, writer in (("y.parquet", pq.write_table), ("y.arrow", feather.write_feather)):
        _table(tmp_path / name, x, pa.array(y), writer)
        with pytest.raises(InputError, match=r"table, but --labels takes a \.npy \(or \.npz\) array.*--label-col"):
            load_dataset(tmp_path / "emb.npy", labels=tmp_path / name)
    (tmp_path / "y.bin").write_bytes(bytes(range(256)))
    with pytest.raises(InputError, match=r"not a \.npy file \(unrecognised format\)"):
        load_dataset(tmp_path / "emb.npy", labels=tmp_path / "y.bin")


def test_labels_npz_rule(tmp_path):
    """An .npz for --labels: its array 'labels', else its only array; several others are refused."""
    x, y = _rows()
    np.save(tmp_path / "emb.npy", x)
    expected = load_dataset(tmp_path / "emb.npy", labels=_save(tmp_path / "y.npy", y)).content_hash()
    np.savez(tmp_path / "one.npz", y)
    np.savez(tmp_path / "named.npz", ids=np.arange(len(y)), labels=y)
    for name in ("one.npz", "named.npz"):
        assert load_dataset(tmp_path / "emb.npy", labels=tmp_path / name).content_hash() == expected
    np.savez(tmp_path / "two.npz", ids=np.arange(len(y)), target=y)
    with pytest.raises(InputError, match=r"holds arrays 'ids', 'target', none named 'labels'"):
        load_dataset(tmp_path / "emb.npy", labels=tmp_path / "two.npz")


def _save(path: Path, array) -> Path:
    np.save(path, array)
    return path


# --------------------------------------------------------------------------- label values: one rule

def _load_with_labels(tmp_path: Path, fmt: str, x, labels):
    if fmt == "npy":
        np.save(tmp_path / "e.npy", x)
        return load_dataset(tmp_path / "e.npy", labels=_save(tmp_path / "y.npy", labels))
    if fmt == "npz":
        np.savez(tmp_path / "e.npz", embeddings=x, labels=labels)
        return load_dataset(tmp_path / "e.npz")
    writer = pq.write_table if fmt == "parquet" else feather.write_feather
    return load_dataset(_table(tmp_path / f"e.{fmt}", x, pa.array(labels), writer))


@pytest.mark.parametrize("fmt", ["npy", "npz", "parquet", "arrow"])
def test_label_values_follow_one_rule_in_every_format(tmp_path, fmt):
    x, y = _rows()
    reference = _load_with_labels(tmp_path, fmt, x, y)
    for dtype in (np.float64, np.float32, np.float16):
        same = _load_with_labels(tmp_path, fmt, x, y.astype(dtype))
        assert same.labels.values == reference.labels.values == [0, 1, 2, 3, 4]
        assert same.content_hash() == reference.content_hash()
    with pytest.raises(InputError, match=r"labels are true/false values.*integers 0/1"):
        _load_with_labels(tmp_path, fmt, x, y % 2 == 0)
    with pytest.raises(InputError, match=r"row 3 holds 0\.5; floating-point labels must all be whole numbers"):
        _load_with_labels(tmp_path, fmt, x, np.where(np.arange(len(y)) == 3, 0.5, y))
    nan = y.astype(float)
    nan[[4, 9]] = np.nan
    with pytest.raises(InputError, match=r"labels contain 2 NaN value\(s\) \(first at row 4\)"):
        _load_with_labels(tmp_path, fmt, x, nan)
    with pytest.raises(InputError, match="whole numbers"):
        _load_with_labels(tmp_path, fmt, x, np.where(np.arange(len(y)) == 0, 2.0 ** 60, y))


# --------------------------------------------------------------------------- float64 -> float32

def test_float64_values_too_small_for_float32(tmp_path):
    x, y = _rows()
    tiny = x.astype(np.float64) * 1e-310
    for fmt in ("npy", "parquet"):
        with pytest.raises(InputError, match=r"too small for float32 \(first at row 0: .*below ~1\.2e-38\).*rescale"):
            _load_with_labels(tmp_path, fmt, tiny, y)
    one_tiny = x.astype(np.float64)
    one_tiny[2, 1] = 1e-310  # harmless beside ordinary components
    one_tiny[3] = 0.0  # all-zero rows stay the preparation pass's to report
    assert _load_with_labels(tmp_path, "npy", one_tiny, y).embeddings[2, 1] == 0.0


# --------------------------------------------------------------------------- memory

def _sparse_npy(path: Path, shape, descr="<f4") -> Path:
    with open(path, "wb") as fh:  # the header, then a hole: no disk used
        np.lib.format.write_array_header_1_0(fh, {"descr": descr, "fortran_order": False, "shape": shape})
        fh.truncate(fh.tell() + int(np.prod(shape)) * np.dtype(descr).itemsize)
    return path


@pytest.fixture
def little_memory(monkeypatch):
    def set_to(nbytes: int):
        monkeypatch.setattr(opis_memory, "available_memory", lambda: nbytes)
    return set_to


def test_a_10_gib_npy_is_refused_from_its_header(tmp_path, little_memory, monkeypatch):
    big = _sparse_npy(tmp_path / "big.npy", (2_621_440, 1024))
    np.save(tmp_path / "y.npy", np.zeros(2_621_440, np.int32))
    little_memory(4 << 30)
    monkeypatch.setattr(np, "load", lambda *a, **k: pytest.fail("np.load ran before the memory check"))
    with pytest.raises(InputError, match=r"big\.npy: loading it needs about 10\.0 GiB .* but 4\.0 GiB is available"):
        load_dataset(big, labels=tmp_path / "y.npy")
    f64 = _sparse_npy(tmp_path / "f64.npy", (1_310_720, 1024), "<f8")  # 10 GiB stored, two float32 copies
    with pytest.raises(InputError, match=r"10\.0 GiB .*conversion and working copy of a 1,310,720 x 1,024 float64"):
        load_dataset(f64, labels=tmp_path / "y.npy")


def test_a_truncated_npy_is_reported_as_truncated_not_as_too_large(tmp_path, little_memory):
    path = _sparse_npy(tmp_path / "cut.npy", (1000, 1000))
    with open(path, "r+b") as fh:
        fh.truncate(1000)
    np.save(tmp_path / "y.npy", np.zeros(1000, np.int32))
    little_memory(1 << 20)
    with pytest.raises(InputError, match=r"cannot read \.npy file"):
        load_dataset(path, labels=tmp_path / "y.npy")


@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> Path:
    """80 MB of zeros compressed to about 80 KB."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.npz"
    np.savez_compressed(path, embeddings=np.zeros((20_000, 1024), np.float32), labels=np.arange(20_000) % 50)
    assert path.stat().st_size < 1 << 20
    return path


def test_a_zip_bomb_is_refused_before_decompressing(bomb, little_memory, monkeypatch):
    little_memory(64 << 20)
    monkeypatch.setattr(np.lib.npyio.NpzFile, "__getitem__", lambda *a: pytest.fail("a member was decompressed"))
    with pytest.raises(InputError, match=r"needs about 156 MiB .*decompress to 78 MiB.* but 64 MiB is available"):
        load_dataset(bomb)
    monkeypatch.undo()
    little_memory(1 << 30)
    assert load_dataset(bomb).n == 20_000


def test_a_zip_bomb_given_to_labels_is_refused(tmp_path, little_memory):
    np.save(tmp_path / "e.npy", np.ones((10, 2), np.float32))
    np.savez_compressed(tmp_path / "y.npz", labels=np.zeros(20_000_000, np.int64))
    little_memory(64 << 20)
    with pytest.raises(InputError, match=r"arrays 'labels' decompress to 153 MiB"):
        load_dataset(tmp_path / "e.npy", labels=tmp_path / "y.npz")


def test_tables_too_large_are_refused_from_metadata(tmp_path, little_memory, monkeypatch):
    x, y = _rows(n_classes=50, per_class=100, d=64)
    little_memory(1 << 20)
    parquet = _table(tmp_path / "e.parquet", x.astype(np.float64), pa.array(y))
    monkeypatch.setattr(pq, "read_table", lambda *a, **k: pytest.fail("read before the memory check"))
    with pytest.raises(InputError, match=r"320,000 float64 embedding values, decoded and in float32"):
        load_dataset(parquet)
    arrow = _table(tmp_path / "e.arrow", x, pa.array(y), feather.write_feather)
    with pytest.raises(InputError, match=r"needs about 1 MiB .*320,000 float32 embedding values"):
        load_dataset(arrow)
    little_memory(1 << 30)
    assert load_dataset(arrow).n == 5000


def test_the_cli_refuses_with_how_much_it_needs_and_has(tmp_path, bomb):
    big = _sparse_npy(tmp_path / "big.npy", (2_621_440, 1024))
    np.save(tmp_path / "y.npy", np.arange(2_621_440) % 1000)
    _refused(_cli("evaluate", big, "--labels", tmp_path / "y.npy", "--no-save", memory=1 << 30),
             "needs about 10.0 GiB", "but 1.0 GiB is available")
    _refused(_cli("evaluate", bomb, "--no-save", memory=32 << 20), "decompress to 78 MiB", "32 MiB is available")


def test_available_memory_is_capped_by_the_cgroup(monkeypatch):
    monkeypatch.delenv("OPIS_AVAILABLE_MEMORY", raising=False)
    assert opis_memory.available_memory() > 0
    monkeypatch.setattr(opis_memory, "_cgroup_available", lambda: 12345)
    assert opis_memory.available_memory() == 12345
    monkeypatch.setenv("OPIS_AVAILABLE_MEMORY", str(1 << 30))  # the test override wins
    assert opis_memory.available_memory() == 1 << 30
