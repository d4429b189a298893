"""An independent, deliberately plain reference implementation of docs/definitions.md.

All pairs, float64, loops where loops are clearest; it shares no code with opis_cli. Tests
compare the tool against it.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.integrate import trapezoid


def distance_matrix(x, metric="cosine", normalize=True, as_float32=True):
    # The tool reads float32: by default so does the reference; as_float32=False keeps the input's
    # own precision (the float64 truth of a float64 input).
    x = np.asarray(x, dtype=np.float32).astype(np.float64) if as_float32 else np.asarray(x, dtype=np.float64)
    if metric == "cosine" or normalize:
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
    if metric == "cosine":
        return 1.0 - x @ x.T
    diff = x[:, None, :] - x[None, :, :]
    return np.sqrt((diff ** 2).sum(-1))


def pair_lists(dist, labels):
    """Per class (sorted label order): positive and negative pair distances."""
    n = len(labels)
    iu, ju = np.triu_indices(n, 1)
    d = dist[iu, ju]
    a, b = labels[iu], labels[ju]
    out = {}
    for c in sorted(set(labels.tolist())):
        pos = d[(a == c) & (b == c)]
        neg = d[(a == c) != (b == c)]
        out[c] = (pos, neg)
    return out


def utility(tar, trr, beta):
    b2 = beta * beta
    out = np.zeros_like(tar)
    for i in range(len(tar)):
        den = b2 * trr[i] + tar[i]
        out[i] = 0.0 if (tar[i] == 0 and trr[i] == 0) else (1 + b2) * tar[i] * trr[i] / den
    return out


def curve_figures(per_class, grid, beta, epsilon, contrast):
    """Curves, OPIS and eps-OPIS from each class's (positive, negative) distances."""
    used = [c for c, (pos, _) in per_class.items() if len(pos) > 0]
    tar = np.array([[np.mean(per_class[c][0] <= t) for t in grid] for c in used])
    trr = np.array([[np.mean(per_class[c][1] > t) for t in grid] for c in used])
    u = np.array([utility(tar[i], trr[i], beta) for i in range(len(used))])
    span = grid[-1] - grid[0]
    ubar = u.mean(axis=0)
    contributions = np.array([trapezoid((u[i] - ubar) ** 2, grid) / span for i in range(len(used))]) / len(used)
    m = np.array([trapezoid(u[i], grid) / span for i in range(len(used))])
    c = len(used)
    w = math.ceil(round(epsilon * c, 9))
    ranking = sorted(range(c), key=lambda i: (m[i], i))
    worst = sorted(ranking[:w])
    other = sorted(ranking[w:]) if contrast == "rest" else sorted(ranking[c - w:])
    gap = u[worst].mean(axis=0) - u[other].mean(axis=0)
    eps = trapezoid(gap ** 2, grid) / span

    return {
        "labels": used, "tar": tar, "trr": trr, "utility": u, "opis": float(contributions.sum()),
        "contributions": contributions, "mean_utility": m, "eps_opis": float(eps), "worst": worst,
    }


def reference(x, labels, grid, *, metric="cosine", normalize=True, beta=1.0, epsilon=0.1,
              contrast="rest", ks=(1,), as_float32=True):
    labels = np.asarray(labels)
    grid = np.asarray(grid, dtype=np.float64)
    dist = distance_matrix(x, metric, normalize, as_float32)
    per_class = pair_lists(dist, labels)
    out = curve_figures(per_class, grid, beta, epsilon, contrast)
    recall = {}
    counts = {c_: int((labels == c_).sum()) for c_ in set(labels.tolist())}
    n = len(labels)
    for k in ks:
        hits = []
        for q in range(n):
            if counts[labels[q].item()] < 2:
                continue
            # Ties broken against the query: at equal distance an other-label item comes first.
            others = sorted(range(n), key=lambda j: (dist[q, j], labels[j] == labels[q]))
            others = [j for j in others if j != q][:k]
            hits.append(any(labels[j] == labels[q] for j in others))
        recall[k] = float(np.mean(hits))
    return {**out, "recall": recall, "dist": dist}


def far_threshold(dist, labels, far, resolution=1e-4, upper=2.0):
    """Smallest multiple t of ``resolution`` with pooled FAR(t) >= far."""
    labels = np.asarray(labels)
    iu, ju = np.triu_indices(len(labels), 1)
    neg = np.sort(dist[iu, ju][labels[iu] != labels[ju]])
    count = int(math.ceil(upper / resolution)) + 1
    for j in range(count):
        t = j / round(1 / resolution)
        if np.searchsorted(neg, t, side="right") >= far * len(neg):
            return t
    return (count - 1) / round(1 / resolution)


def retrieval(dist, labels):
    """Per item: (AP@R, R-precision) as Musgrave et al. define them (references: all other items;
    ties: an other-label item first), NaN for items without another member of their class."""
    labels = np.asarray(labels)
    n = len(labels)
    ap, rp = np.full(n, np.nan), np.full(n, np.nan)
    for q in range(n):
        r = int((labels == labels[q]).sum()) - 1
        if r == 0:
            continue
        others = sorted((j for j in range(n) if j != q), key=lambda j: (dist[q, j], labels[j] == labels[q]))
        rel = np.array([labels[j] == labels[q] for j in others[:r]], dtype=float)
        precision = np.cumsum(rel) / np.arange(1, r + 1)
        ap[q] = float((precision * rel).sum() / r)
        rp[q] = float(rel.sum() / r)
    return ap, rp


def cross_distances(xq, xg, metric="cosine", normalize=True):
    """(N_Q, N_G) distances between queries and references (float32 input, float64 arithmetic)."""
    q = np.asarray(xq, dtype=np.float32).astype(np.float64)
    g = np.asarray(xg, dtype=np.float32).astype(np.float64)
    if metric == "cosine" or normalize:
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        g = g / np.linalg.norm(g, axis=1, keepdims=True)
    if metric == "cosine":
        return 1.0 - q @ g.T
    return np.sqrt(((q[:, None, :] - g[None, :, :]) ** 2).sum(-1))


def cross_reference(xq, yq, xg, yg, grid, *, metric="cosine", normalize=True, beta=1.0, epsilon=0.1,
                    contrast="rest", ks=(1,)):
    """docs/definitions.md's query/reference mode, pair by pair: only (q, g) pairs; class i's
    positives have both ends in i, its negatives exactly one; queries retrieve from the references."""
    yq, yg = np.asarray(yq), np.asarray(yg)
    dist = cross_distances(xq, xg, metric, normalize)
    per_class = {}
    for c in sorted(set(yq.tolist()) | set(yg.tolist())):
        qi, gi = yq == c, yg == c
        pos = dist[np.ix_(qi, gi)].ravel()
        neg = np.concatenate([dist[np.ix_(qi, ~gi)].ravel(), dist[np.ix_(~qi, gi)].ravel()])
        per_class[c] = (pos, neg)
    out = curve_figures(per_class, np.asarray(grid, np.float64), beta, epsilon, contrast)
    recall, ap, rp = {}, [], []
    order = [sorted(range(len(yg)), key=lambda j: (dist[q, j], yg[j] == yq[q])) for q in range(len(yq))]
    queries = [q for q in range(len(yq)) if (yg == yq[q]).any()]
    for k in ks:
        recall[k] = float(np.mean([any(yg[j] == yq[q] for j in order[q][:k]) for q in queries]))
    for q in queries:
        r = int((yg == yq[q]).sum())
        rel = np.array([yg[j] == yq[q] for j in order[q][:r]], dtype=float)
        ap.append(float((np.cumsum(rel) / np.arange(1, r + 1) * rel).sum() / r))
        rp.append(float(rel.sum() / r))
    pos_all = np.concatenate([per_class[c][0] for c in per_class])
    neg_all = dist[yq[:, None] != yg[None, :]]
    return {**out, "recall": recall, "map_at_r": float(np.mean(ap)), "r_precision": float(np.mean(rp)),
            "queries": len(queries), "dist": dist, "pooled": (pos_all, neg_all), "per_class": per_class}
