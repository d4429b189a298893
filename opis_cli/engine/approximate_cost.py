"""Where the approximate engine's intervals are known to hold, and what a run costs.

Both are pure functions of the data's shape and the options (no timing, no probing of the
machine), so ``--index auto`` makes the same choice on an idle and on a busy machine.
"""

from __future__ import annotations

import math

import numpy as np

# Reference machine: this project's 2-core Intel Xeon VM (AVX-512), 2 threads, numpy's OpenBLAS
# 0.3.31, faiss-cpu 1.15.1. Measured 2026-11-28 from the stage timings of whole runs
# (benchmarks/bench_approx.py; N = 50k-400k, D = 64-512, sampled and range negatives, classes of
# ~2 and of ~100 rows) and benchmarks/bench_approx.py --cost-constants (HNSW). Model against
# measurement: docs/approximate.md, "Cost".
GEMM_SECONDS_PER_ELEMENT = 1.3e-9  # float32 matrix product: writing one output element...
GEMM_FLOPS_PER_S = 113e9  # ...plus 2D flops at this rate (fit over D = 32, 128, 512)
CALIBRATION_PAIR_SECONDS = 8e-9  # sampled pooled histogram (FAR-derived range), per anchor x row
POSITIVE_PAIR_SECONDS = 3.7e-9  # exact kernel over class-packed segments
CHECK_ELEMENT_SECONDS = 10.7e-9  # exact search of the check queries: distances, masks, partition
PARTNER_PAIR_SECONDS = 1.0e-9  # sampled-negatives kernel (approximate_sampling.partner_counts)
FAISS_TRAIN_FLOPS_PER_S = 80e9  # IVF k-means (25 iterations on 64 nlist rows)
IVF_SCAN_FLOPS_PER_S = 11e9  # IVF-Flat list scanning, k-NN and range search
HNSW_BUILD_UNITS_PER_S = 1.2e9  # HNSW construction, N x ef_construction x M x D units
HNSW_SEARCH_UNITS_PER_S = 1.7e9  # HNSW search, N x ef_search x M x D units
REPLICATE_CELLS_PER_S = 1.2e9  # half-sample replicates: C x R x T x (G + 12) cells
DISTRIBUTION_ELEMENT_SECONDS = 1.5e-9  # the plots' distributions' binning kernel (was 40e-9 in numpy); 7.6 ns
# per distance all told at D = 512, 40k rows (measured 2026-11-29), the product dominating
DISTRIBUTION_BYTES_PER_ELEMENT = 8  # their working memory per distance (distributions.BYTES_PER_DISTANCE)
OVERHEAD_SECONDS = 2.0

# Where the intervals were measured to hold (docs/approximate.md, coverage tables): classes of
# 2-5 members up to ~26,000 of them (50 seeds at ~2,300, 16 seeds at 26,000), and no class with
# fewer than 400 sampled anchor x partner pairs (2 anchors x 200 partners).
TINY_CLASS = 5
MEASURED_TINY_CLASSES = 30_000
MIN_SAMPLED_PAIRS = 400


def coverage_problem(class_sizes: np.ndarray, n: int, d: int, opts) -> str | None:
    """A one-sentence reason why the stated 95% intervals are not known to hold for this shape
    and these options, or None.

    Sampled negatives (``negatives`` sample or auto): a class's utility carries sampling noise,
    which biases OPIS by about mean_c var(e_c) whatever the number of classes C while its se
    shrinks like 1/sqrt(C); the bias correction was measured to keep coverage up to ~26,000
    classes of 2-5 members. Beyond MEASURED_TINY_CLASSES such classes, or with fewer than
    MIN_SAMPLED_PAIRS = n_c x m_c sampled pairs for the median class, it is not known to hold.
    """
    sizes = np.asarray(class_sizes, np.int64)
    used = sizes[sizes >= 2]
    if opts.negatives == "range" or len(used) == 0:
        return None
    m = min(opts.resolved_samples(n), n)
    tiny = int((used <= TINY_CLASS).sum())
    if tiny > MEASURED_TINY_CLASSES and tiny * 2 > len(used):
        return (f"{tiny:,} of the {len(used):,} classes have 2-{TINY_CLASS} members, beyond the "
                f"{MEASURED_TINY_CLASSES:,} such classes where the sampled-negative intervals were measured to hold "
                "(docs/approximate.md)")
    median = float(np.median(used))
    pairs = median * m * (n - median) / n
    if pairs < MIN_SAMPLED_PAIRS:
        return (f"the median class gets about {pairs:,.0f} sampled anchor x partner pairs (fewer than the "
                f"{MIN_SAMPLED_PAIRS} measured to hold); raise --samples-per-anchor")
    return None


def approximate_cost(n: int, d: int, class_sizes: np.ndarray, kmax: int, opts, far_at_hi: float,
                     memory_budget: int = 1 << 30) -> dict:
    """Estimated wall seconds on the reference machine and peak working memory beyond the
    embeddings of an approximate run (``opts``: ApproxOptions; ``far_at_hi``: pooled FAR at hi;
    ``memory_budget``: the block budget, which sizes the distributions pass).

    With g(x) = x (GEMM_SECONDS_PER_ELEMENT + 2D / GEMM_FLOPS_PER_S), the time of x products:
      calibration   g(a N) + a N CALIBRATION_PAIR_SECONDS, a = min(N, max(500, 2e9 / N)) anchors
                    (a range derived from --calib-far; a pinned range costs far less)
      positives     g(P) + P POSITIVE_PAIR_SECONDS, P = sum of n_s^2 / 2 over the row segments
                    (classes packed into segments of up to 4096 rows)
      index         IVF: 25 x 64 nlist x nlist x 2D / FAISS_TRAIN + g(N nlist); HNSW: build units
      checks        g(s N) + s N CHECK_ELEMENT_SECONDS, s = check_queries
      negatives     sample: g(A m) + A m PARTNER_PAIR_SECONDS + C R T (G + 12) / REPLICATE_CELLS
                    (A anchors and C classes with >= 2 members); range: 1.2 x the IVF scan
      k-NN          IVF: N nprobe (N / nlist) 2D / IVF_SCAN + g(N nlist); HNSW: search units
      distributions g(E) + E DISTRIBUTION_ELEMENT_SECONDS, E = (1000 + 4 min(mean n_c, 1000)) N
    bytes: what stays for the whole run (k-NN state, histograms and curves, sampled counts) plus
    the largest transient (the plots' distributions pass, the index with its copy of the rows,
    or the exact check batch). working_bytes: what the run holds beyond the input whatever the
    block budget: ``bytes`` without the index's copy of the rows, N (4D + 8) (a second copy of
    the input, like the embeddings outside the budget) and without the distributions block
    (sized to fit ``memory_budget``). ``--index auto`` compares it with ``--memory-budget``.
    """
    sizes = np.asarray(class_sizes, np.int64)
    used = sizes[sizes >= 2]
    c, t = len(used), 101
    anchors = int(used.sum())
    nlist = opts.resolved_nlist(n)
    nprobe = min(opts.nprobe, nlist)

    def gemm(elements: float) -> float:
        return elements * (GEMM_SECONDS_PER_ELEMENT + 2.0 * d / GEMM_FLOPS_PER_S)

    cal = min(n, max(500, 2e9 / max(n, 1))) * n
    seconds = {"calibration": gemm(cal) + cal * CALIBRATION_PAIR_SECONDS}
    small_rows = float(sizes[sizes <= 4096].sum())
    segment_pairs = float((sizes[sizes > 4096].astype(np.float64) ** 2).sum() / 2
                          + small_rows * min(4096.0, small_rows) / 2)
    seconds["positives"] = gemm(segment_pairs) + segment_pairs * POSITIVE_PAIR_SECONDS
    if opts.index == "ivf":
        seconds["index"] = 25 * min(n, 64 * nlist) * nlist * 2.0 * d / FAISS_TRAIN_FLOPS_PER_S + gemm(n * nlist)
        search = n * nprobe * (n / nlist) * 2.0 * d / IVF_SCAN_FLOPS_PER_S + gemm(n * nlist)
    else:
        seconds["index"] = n * opts.ef_construction * opts.hnsw_m * d / HNSW_BUILD_UNITS_PER_S
        search = n * opts.ef_search * opts.hnsw_m * d / HNSW_SEARCH_UNITS_PER_S
    checks = min(opts.check_queries, anchors) * n
    seconds["checks"] = gemm(checks) + checks * CHECK_ELEMENT_SECONDS
    use_range = opts.negatives == "range" or (opts.negatives == "auto" and opts.index == "ivf"
                                               and far_at_hi * n <= opts.range_max_per_query)
    m = min(opts.resolved_samples(n), n)
    groups, reps = opts.sample_groups, opts.replicates
    if use_range:
        seconds["negatives"] = 1.2 * n * nprobe * (n / nlist) * 2.0 * d / IVF_SCAN_FLOPS_PER_S
    else:
        seconds["negatives"] = (gemm(anchors * m) + anchors * m * PARTNER_PAIR_SECONDS
                                + c * reps * t * (groups + 12) / REPLICATE_CELLS_PER_S)
    seconds["knn"] = search if kmax else 0.0
    dist = (1000 + 4 * min(float(used.mean()) if c else 0.0, 1000)) * n
    seconds["distributions"] = gemm(dist) + dist * DISTRIBUTION_ELEMENT_SECONDS
    total = sum(seconds.values()) + OVERHEAD_SECONDS

    count_bytes = 4 if int(sizes.max(initial=0)) * math.ceil(m / groups) < 2**31 - 1 else 8
    index_bytes = n * (4 * d + 8) + (n * opts.hnsw_m * 8 if opts.index == "hnsw" else nlist * d * 4)
    staying = (n * (4 * (kmax + 1) + 16)  # k-NN state and hit masks
               + 10 * c * (t + 1) * 8  # histograms, estimates and the curves' arrays
               + (0 if use_range else c * groups * t * count_bytes + c * reps * 10))
    rows_copy = n * (4 * d + 8)
    block = min(max(1, memory_budget // (DISTRIBUTION_BYTES_PER_ELEMENT * n)), 1000) * n
    transients = (block * DISTRIBUTION_BYTES_PER_ELEMENT, index_bytes + (1 << 26), (1 << 24) * 14)
    return {"seconds": float(f"{total:.4g}"), "bytes": int(staying + max(transients)),
            "working_bytes": int(staying + max(transients[1] - rows_copy, transients[2])),
            "stages": {k: float(f"{v:.3g}") for k, v in seconds.items()}}
