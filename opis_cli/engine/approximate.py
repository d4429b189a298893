"""Approximate evaluation for millions of embeddings, with stated error bars.

Exact evaluation is O(N^2 D). This engine keeps exact what is cheap and counts or samples the
rest, and states every headline figure as an estimate with a 95% interval
(docs/approximate.md; the intervals are computed in approximate_errors.py):

* **Positives are exact.** A class's positive pairs are the within-class blocks (sum of n_c^2 / 2
  pairs); the exact kernel runs over class-aligned row segments. The same pass gives each item's
  exact nearest same-label distance (for Recall@k).
* **Only in-range negatives matter.** A negative pair with d > hi is rejected at every threshold
  of the calibration range; its count per class is known (|N_c| = n_c (N - n_c)). So per class
  only the negatives with d <= hi are needed:
  - ``range``: counted by FAISS IVF range search from every anchor (exact within the probed lists;
    cheap when hi sits at a low FAR). Its recall is measured against exact search on a seeded
    sample of queries.
  - ``sample``: every class's anchors against one shared seeded sample of m rows
    (approximate_sampling.py); counts scaled by (N - n_c) / m_c: unbiased.
  ``auto`` picks range search when the expected number of in-range results per query is small.
* **Recall@k**: the index's k-NN search gives every query's hit, and a seeded sample of queries
  searched exactly corrects its optimism (a difference estimator, approximate_errors.py).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from opis_cli.engine.approximate_cost import approximate_cost, coverage_problem  # noqa: F401  (public here)
from opis_cli.engine.approximate_sampling import wilson_interval
from opis_cli.engine.approximate_sampling import SampledNegatives, negatives_by_sampling
from opis_cli.engine.binning import ThresholdBins
from opis_cli.errors import ConfigError
from opis_cli.engine.neighbours import NeighbourState
from opis_cli.engine.histograms import PairHistograms
from opis_cli.engine.sweep import exact_pass
from opis_cli.data.prepare import PreparedEmbeddings

INDEXES = ("ivf", "hnsw")
NEGATIVE_MODES = ("auto", "range", "sample")
SEGMENT_ROWS = 4096
MIN_RANGE_RECALL = 0.95  # --negatives auto samples instead when range search finds fewer


@dataclass(frozen=True)
class ApproxOptions:
    """Parameters of the approximate engine (every one is written into the report)."""

    index: str = "ivf"
    nlist: int | None = None  # IVF lists; default ~ 4 sqrt(N)
    nprobe: int = 16
    hnsw_m: int = 32
    ef_construction: int = 64
    ef_search: int = 64
    negatives: str = "auto"
    samples_per_anchor: int | None = None  # rows of the shared partner sample; default clip(2e9 / N, 1000, 20000)
    sample_groups: int = 20
    # Queries searched exactly (2 N D flops each): Recall@k's correction and the index checks.
    check_queries: int = 2000
    replicates: int = 40  # half-sample replicates of the sampled figures (approximate_errors.py)
    range_max_per_query: int = 2000
    seed: int = 0

    def __post_init__(self) -> None:
        if not (isinstance(self.seed, int) and 0 <= self.seed < 2**63):
            raise ConfigError(f"--seed must be a non-negative integer, got {self.seed!r}")
        if self.index not in INDEXES:
            raise ConfigError(f"unknown index {self.index!r}; choose exact, {', '.join(INDEXES)}")
        if self.negatives not in NEGATIVE_MODES:
            raise ConfigError(f"unknown negatives mode {self.negatives!r}; choose {', '.join(NEGATIVE_MODES)}")
        if self.index == "hnsw" and self.negatives == "range":
            raise ConfigError("range search needs --index ivf (FAISS HNSW range search misses results: it is "
                              "tuned for k-NN); use --negatives sample or auto")
        for name in ("nprobe", "hnsw_m", "ef_construction", "ef_search", "check_queries", "range_max_per_query"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1")
        if self.sample_groups < 2:
            raise ConfigError("--sample-groups must be >= 2 (a half-sample needs two groups)")
        if self.replicates < 2:
            raise ConfigError("--replicates must be >= 2")
        if self.samples_per_anchor is not None and self.samples_per_anchor < self.sample_groups:
            raise ConfigError("--samples-per-anchor must be at least --sample-groups")

    def resolved_nlist(self, n: int) -> int:
        if self.nlist is not None:
            return max(1, min(self.nlist, n))
        return int(max(1, min(n // 39, 2 ** round(math.log2(max(1.0, 4 * math.sqrt(n)))))))

    def resolved_samples(self, n: int) -> int:
        if self.samples_per_anchor is not None:
            return self.samples_per_anchor
        return int(min(20000, max(1000, 2e9 / max(n, 1))))


@dataclass
class ApproxPassResult:
    """Histograms (negatives as float estimates), Recall@k state and what the report states."""

    histograms: PairHistograms
    neighbours: NeighbourState | None
    sampled: SampledNegatives | None  # per-group counts (sample mode), for the replicates
    recall_scaled: PairHistograms | None  # in-range negatives divided by the lower recall bound (range mode)
    info: dict = field(default_factory=dict)
    check_rows: np.ndarray | None = None  # the exactly searched queries (prepared row numbers)
    check_hits: np.ndarray | None = None  # their exact hit@k, (queries, kmax) bool


def _faiss(threads: int | None):
    import faiss

    from opis_cli.threads import available_cores

    faiss.omp_set_num_threads(int(threads or available_cores()))
    return faiss


def _similarity_metric(p: PreparedEmbeddings):
    import faiss

    return faiss.METRIC_L2 if p.sq_norms is not None else faiss.METRIC_INNER_PRODUCT


def _to_distance(p: PreparedEmbeddings, values: np.ndarray) -> np.ndarray:
    """FAISS scores (inner products, or squared L2 for raw l2) to the metric's distances."""
    v = np.asarray(values, np.float32)
    if p.sq_norms is not None:
        return np.sqrt(np.maximum(v, np.float32(0)))
    if p.metric == "cosine":
        return np.float32(1.0) - v
    return np.sqrt(np.maximum(np.float32(2.0) - np.float32(2.0) * v, np.float32(0)))


def build_index(p: PreparedEmbeddings, opts: ApproxOptions, threads: int | None = None):
    """A FAISS IVF-Flat or HNSW-Flat index over the prepared rows (ids = prepared row numbers)."""
    faiss = _faiss(threads)
    metric = _similarity_metric(p)
    rng = np.random.default_rng([opts.seed, 1])
    if opts.index == "hnsw":
        index = faiss.IndexHNSWFlat(p.d, opts.hnsw_m, metric)
        index.hnsw.efConstruction = opts.ef_construction
        index.add(p.x)
        index.hnsw.efSearch = opts.ef_search
        return index
    nlist = opts.resolved_nlist(p.n)
    quantizer = faiss.IndexFlatIP(p.d) if metric == faiss.METRIC_INNER_PRODUCT else faiss.IndexFlatL2(p.d)
    index = faiss.IndexIVFFlat(quantizer, p.d, nlist, metric)
    train = p.x[np.sort(rng.choice(p.n, size=min(p.n, 64 * nlist), replace=False))]
    index.cp.seed = int(opts.seed)
    index.train(np.ascontiguousarray(train))
    # Coarse assignment through numpy's BLAS: the faiss-cpu wheel's bundled BLAS is several
    # times slower on this kind of CPU (docs/performance.md).
    centroids = quantizer.reconstruct_n(0, nlist)
    assign = np.empty(p.n, np.int64)
    c_sq = (centroids * centroids).sum(axis=1)
    for s in range(0, p.n, 65536):
        sims = p.x[s:s + 65536] @ centroids.T
        if metric == faiss.METRIC_INNER_PRODUCT:
            assign[s:s + 65536] = np.argmax(sims, axis=1)
        else:
            assign[s:s + 65536] = np.argmin(c_sq[None, :] - 2 * sims, axis=1)
    index.add_core(p.n, faiss.swig_ptr(p.x), None, faiss.swig_ptr(assign))
    index.nprobe = min(opts.nprobe, nlist)
    return index


def _segment_view(p: PreparedEmbeddings, c0: int, c1: int) -> PreparedEmbeddings:
    s, e = int(p.class_bounds[c0]), int(p.class_bounds[c1])
    return PreparedEmbeddings(
        x=p.x[s:e], order=p.order[s:e], codes=p.codes[s:e] - c0, class_bounds=p.class_bounds[c0:c1 + 1] - s,
        metric=p.metric, normalized=p.normalized,
        sq_norms=None if p.sq_norms is None else p.sq_norms[s:e], max_norm=p.max_norm,
    )


def within_class_pass(p: PreparedEmbeddings, edges: np.ndarray, *, threads=None, progress=None):
    """Exact positive histograms (C, T + 1) and each item's nearest same-label distance (N,).

    Classes are packed into row segments of up to SEGMENT_ROWS rows (a larger class is a segment
    of its own) and the exact pass runs inside each segment.
    """
    t = len(edges)
    pos = np.zeros((p.n_classes, t + 1), np.int64)
    same = np.full(p.n, np.inf, np.float32)
    sizes = p.class_sizes
    c = 0
    done = 0
    total = int((sizes * (sizes - 1) // 2).sum())
    while c < p.n_classes:
        c1 = c + 1
        rows = int(sizes[c])
        while c1 < p.n_classes and rows + int(sizes[c1]) <= SEGMENT_ROWS:
            rows += int(sizes[c1])
            c1 += 1
        if rows >= 2:
            seg = _segment_view(p, c, c1)
            result = exact_pass(seg, edges, kmax=1, per_class=True, threads=threads)
            pos[c:c1] = result.histograms.pos
            s = int(p.class_bounds[c])
            same[s:s + rows] = result.neighbours.same
            done += int((sizes[c:c1] * (sizes[c:c1] - 1) // 2).sum())
            if progress is not None:
                progress(done, total)
        c = c1
    return pos, same


def _in_range_radius(p: PreparedEmbeddings, hi: float) -> float:
    """A FAISS range radius that keeps every pair with d <= hi (plus a margin; filtered exactly)."""
    if p.sq_norms is not None:
        return float(hi * hi * (1 + 1e-5) + 1e-6)
    if p.metric == "cosine":
        return float(1.0 - hi - 1e-5)
    return float(1.0 - hi * hi / 2.0 - 1e-5)


def negatives_by_range(p: PreparedEmbeddings, index, edges: np.ndarray, expected_per_query: float,
                       progress=None) -> np.ndarray:
    """In-range negative counts per class (C, T) from one range search per anchor."""
    t = len(edges)
    bins = ThresholdBins(edges)
    radius = _in_range_radius(p, edges[-1])
    out = np.zeros(p.n_classes * t, np.int64)
    # ~4M expected results per batch: FAISS holds ~24 bytes per result, the filtering a few more.
    batch = int(max(1, min(65536, 4_000_000 / max(1.0, expected_per_query))))
    for q0 in range(0, p.n, batch):
        q1 = min(p.n, q0 + batch)
        lims, dist, ids = index.range_search(p.x[q0:q1], radius)
        counts = np.diff(lims).astype(np.int64)
        anchors = np.repeat(np.arange(q0, q1), counts)
        ca = p.codes[anchors]
        keep = p.codes[ids] != ca
        b = bins.assign_simple(_to_distance(p, dist[keep]))
        inr = b < t
        out += np.bincount(ca[keep][inr] * t + b[inr], minlength=p.n_classes * t)
        if progress is not None:
            progress(q1, p.n)
    return out.reshape(p.n_classes, t)


def _histograms_from_inrange(p: PreparedEmbeddings, edges, pos: np.ndarray, neg_inrange: np.ndarray) -> PairHistograms:
    """Complete (C, T + 1) histograms: exact positives; negatives in range as given (possibly
    estimated, float) and the overflow bin as the remainder of the exact |N_c|."""
    sizes = p.class_sizes.astype(np.int64)
    n_neg = (sizes * (p.n - sizes)).astype(np.float64)
    neg_inrange = np.minimum(np.asarray(neg_inrange, np.float64),
                             np.maximum(n_neg[:, None], 0))  # a scaled estimate cannot exceed the total
    overflow = np.maximum(n_neg - neg_inrange.sum(axis=1), 0.0)
    neg = np.concatenate([neg_inrange, overflow[:, None]], axis=1)
    return PairHistograms(edges=np.asarray(edges, np.float64), pos=pos, neg=neg)


def knn_neighbours(p: PreparedEmbeddings, index, kmax: int, same: np.ndarray, progress=None) -> NeighbourState:
    """Recall@k state from the index's k-NN search (kmax + 1 results: the query itself may be one)."""
    state = NeighbourState(same=same.copy(), other=np.full((p.n, kmax), np.inf, np.float32))
    k = kmax + 1
    for q0 in range(0, p.n, 16384):
        q1 = min(p.n, q0 + 16384)
        scores, ids = index.search(p.x[q0:q1], k)
        d = _to_distance(p, scores)
        valid = ids >= 0
        other = valid & (p.codes[np.where(valid, ids, 0)] != p.codes[q0:q1, None])
        d = np.where(other, d, np.inf).astype(np.float32)
        d.sort(axis=1)
        state.other[q0:q1] = d[:, :kmax]
        if progress is not None:
            progress(q1, p.n)
    return state


def check_against_exact(p: PreparedEmbeddings, index, edges, kmax: int, opts: ApproxOptions,
                        use_range: bool, same: np.ndarray) -> tuple[dict, np.ndarray, np.ndarray]:
    """Search a seeded uniform sample of queries (items of classes with >= 2 members) exactly, by
    matrix products (2 N D flops per query), and measure the index on them: range-search recall of
    in-range negatives and k-NN recall of the kmax + 1 nearest items.

    Returns (diagnostics, the sampled rows, their exact hit@k for k = 1..kmax as (s, kmax) bool),
    the hits from ``same`` (exact nearest same-label distances) and the exact other-label ones.
    """
    rng = np.random.default_rng([opts.seed, 3])
    queries = np.flatnonzero(p.class_sizes[p.codes] >= 2)
    q = np.sort(rng.choice(queries, size=min(len(queries), opts.check_queries), replace=False))
    hi = float(edges[-1])
    true_in, found_in, knn_hit, knn_total = 0, 0, 0, 0
    hits = np.zeros((len(q), kmax), bool)
    k = min(kmax + 1, p.n - 1)
    radius = _in_range_radius(p, hi)
    step = max(1, (1 << 24) // p.n)  # queries per batch: ~16M distances (64 MiB) at a time
    for s in range(0, len(q), step):
        qs = q[s:s + step]
        g = p.x[qs] @ p.x.T
        if p.sq_norms is not None:
            g = p.sq_norms[qs][:, None] + p.sq_norms[None, :] - 2 * g
        d = _to_distance(p, g)
        d[np.arange(len(qs)), qs] = np.inf
        neg = p.codes[None, :] != p.codes[qs][:, None]
        true_in += int(((d <= hi) & neg).sum())
        closer = ((d <= same[qs][:, None]) & neg).sum(axis=1)
        hits[s:s + step] = closer[:, None] < np.arange(1, kmax + 1)[None, :]
        if use_range:
            lims, dist, ids = index.range_search(p.x[qs], radius)
            anchors = np.repeat(qs, np.diff(lims).astype(np.int64))
            dd = _to_distance(p, dist)
            found_in += int(((dd <= hi) & (p.codes[ids] != p.codes[anchors])).sum())
        true_knn = np.argpartition(d, k - 1, axis=1)[:, :k]
        _, got = index.search(p.x[qs], k + 1)
        for r in range(len(qs)):
            knn_total += k
            knn_hit += len(np.intersect1d(true_knn[r], got[r][got[r] != qs[r]]))
    out = {"check_queries": int(len(q)), "knn_recall": knn_hit / knn_total if knn_total else 1.0}
    if use_range:
        recall = found_in / true_in if true_in else 1.0
        out.update(range_recall=recall, range_recall_lower=_wilson_lower(found_in, true_in),
                   range_true_results=true_in)
    return out, q, hits


def _wilson_lower(hits: int, total: int, z: float = 1.96) -> float:
    return wilson_interval(hits, total, z)[0] if total else 1.0


def approximate_pass(
    p: PreparedEmbeddings,
    edges: np.ndarray,
    *,
    kmax: int,
    opts: ApproxOptions,
    far_at_hi: float,
    threads: int | None = None,
    progress=None,
) -> ApproxPassResult:
    """Histograms and Recall@k state by the approximate engine (module docstring).

    ``far_at_hi`` (the pooled FAR at the top of the range, possibly estimated) sets the expected
    number of range-search results per query, which decides ``negatives="auto"``.
    """
    edges = np.asarray(edges, np.float64)
    info: dict = {"options": {k: v for k, v in asdict(opts).items()}}
    timings: dict = {}
    stage = (lambda name: (lambda d, t: progress(name, d, t))) if progress else (lambda name: None)

    t0 = time.perf_counter()
    pos, same = within_class_pass(p, edges, threads=threads, progress=stage("positives (exact)"))
    timings["positives"] = time.perf_counter() - t0

    expected_per_query = far_at_hi * p.n
    mode = opts.negatives
    if mode == "auto":
        mode = "range" if (opts.index == "ivf" and expected_per_query <= opts.range_max_per_query) else "sample"
    info["negatives"] = mode
    info["expected_in_range_per_query"] = expected_per_query

    index = None
    if mode == "range" or kmax:
        t1 = time.perf_counter()
        index = build_index(p, opts, threads)
        timings["index_build"] = time.perf_counter() - t1
        if opts.index == "ivf":
            info["index"] = {"type": "IVF-Flat", "nlist": opts.resolved_nlist(p.n), "nprobe": int(index.nprobe)}
        else:
            info["index"] = {"type": "HNSW-Flat", "M": opts.hnsw_m, "ef_construction": opts.ef_construction,
                             "ef_search": opts.ef_search}

    checks, check_rows, check_hits = None, None, None
    if index is not None:
        t4 = time.perf_counter()
        checks, check_rows, check_hits = check_against_exact(p, index, edges, max(kmax, 1), opts,
                                                             use_range=(mode == "range"), same=same)
        timings["checks"] = time.perf_counter() - t4
        info["checks"] = checks
        if mode == "range" and opts.negatives == "auto" and checks["range_recall_lower"] < MIN_RANGE_RECALL:
            # Cheap is not enough: a range search that misses results would need a wide error bar.
            mode = "sample"
            info["negatives"] = mode
            info["negatives_note"] = (f"range-search recall {checks['range_recall']:.3f} on the check queries is "
                                      f"below {MIN_RANGE_RECALL}; negatives were sampled instead")

    sampled = None
    recall_scaled = None
    t2 = time.perf_counter()
    if mode == "range":
        neg_in = negatives_by_range(p, index, edges, expected_per_query, progress=stage("negatives (range search)"))
        hist = _histograms_from_inrange(p, edges, pos, neg_in)
    else:
        m = opts.resolved_samples(p.n)
        info["samples_per_anchor"] = m
        info["sample_groups"] = opts.sample_groups
        sampled = negatives_by_sampling(p, edges, m, opts.sample_groups, opts.seed, threads,
                                        progress=stage("negatives (sampling)"))
        full = np.zeros((p.n_classes, len(edges)))
        full[p.class_sizes >= 2] = sampled.full_estimate()
        hist = _histograms_from_inrange(p, edges, pos, full)
        info["exact_negatives_classes"] = int((sampled.fraction >= 1).sum())
    timings["negatives"] = time.perf_counter() - t2

    neighbours = None
    if kmax:
        t3 = time.perf_counter()
        neighbours = knn_neighbours(p, index, kmax, same, progress=stage("Recall@k (k-NN search)"))
        timings["knn"] = time.perf_counter() - t3
    if mode == "range":
        lower = max(checks["range_recall_lower"], 1e-3)
        recall_scaled = _histograms_from_inrange(p, edges, pos, hist.neg[:, :-1] / lower)
    info["timings"] = {k: round(v, 3) for k, v in timings.items()}
    return ApproxPassResult(histograms=hist, neighbours=neighbours, sampled=sampled, recall_scaled=recall_scaled,
                            info=info, check_rows=check_rows, check_hits=check_hits)
