"""Generate the committed sample data: two synthetic "models" embedding the same 3,000 items.

60 classes of uneven size (two of them singletons, which evaluation reports as skipped).
Each model places class centres at random on the unit sphere and scatters a class's members
around its centre with a per-class spread:

* model_a: spreads in a narrow band, so one threshold suits every class about equally;
* model_b: spreads from tight to diffuse, so at any one threshold the tight classes reject
  few of their own members while the diffuse ones reject many: visibly less
  threshold-consistent (higher OPIS).

Run ``python sample_data/generate.py`` to rewrite the files; the output is deterministic.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

SEED = 20240507
N_ITEMS, DIM, N_CLASSES = 3000, 64, 60
HERE = Path(__file__).resolve().parent


def class_sizes(rng: np.random.Generator) -> np.ndarray:
    """Uneven sizes summing to N_ITEMS: two singletons, the rest log-normal (min 4)."""
    weights = rng.lognormal(mean=0.0, sigma=0.8, size=N_CLASSES - 2)
    rest = N_ITEMS - 2
    sizes = np.maximum(4, np.floor(weights / weights.sum() * rest)).astype(int)
    sizes[np.argmax(sizes)] += rest - sizes.sum()
    return np.concatenate([sizes, [1, 1]])


def embed(rng: np.random.Generator, codes: np.ndarray, noise: np.ndarray, spreads: np.ndarray) -> np.ndarray:
    centres = rng.normal(size=(N_CLASSES, DIM))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = centres[codes] + spreads[codes, None] * noise / np.sqrt(DIM)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


def main() -> None:
    rng = np.random.default_rng(SEED)
    sizes = class_sizes(rng)
    codes = rng.permutation(np.repeat(np.arange(N_CLASSES), sizes))
    labels = np.array([f"sp-{c:03d}" for c in codes])
    noise = rng.normal(size=(N_ITEMS, DIM))
    models = {
        "model_a": rng.uniform(1.25, 1.45, N_CLASSES),
        "model_b": rng.uniform(0.7, 2.0, N_CLASSES),
    }
    np.save(HERE / "labels.npy", labels)
    for name, spreads in models.items():
        x = embed(np.random.default_rng([SEED, len(name), ord(name[-1])]), codes, noise, spreads)
        np.save(HERE / f"{name}.npy", x)
        table = pa.table({
            "item_id": pa.array(np.arange(N_ITEMS, dtype=np.int32)),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), DIM),
            "label": pa.array(labels),
        })
        pq.write_table(table, HERE / f"{name}.parquet", compression="zstd")
    print(f"wrote {len(models)} models x {N_ITEMS} items x {DIM} dims, {N_CLASSES} classes, sizes "
          f"{sizes.min()}..{sizes.max()}, to {HERE}")


if __name__ == "__main__":
    main()
