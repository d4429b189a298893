"""Error bars of the approximate engine's figures (docs/approximate.md, "Error bars").

* **Sampled negatives: half-sample replicates.** The shared partner sample is dealt into G groups.
  A replicate keeps a random half of the groups (and its complement is the next replicate); its
  per-class estimate, shrunk towards the full one by the finite-population factor
  sqrt(1 - m_c / (N - n_c)), has the full estimate's sampling error once more on top, so

      se^2 = var_b(theta_b)          bias = mean_b(theta_b) - theta_hat

  (a delete-half jackknife; the delete-one jackknife's (G - 1) scaling turns the jumps of
  eps-OPIS's ranking into erratic standard errors, measured z sd 2-3).
  **OPIS** is reported bias-corrected, theta_hat - bias: each class's utility carries sampling
  noise e_i, which adds about mean_i var(e_i) to the across-class variance whatever the number of
  classes C, while se shrinks like 1/sqrt(C) (161 se at 100k classes of ~2 rows).
  **eps-OPIS** is reported as estimated (its correction is mostly ranking noise: sd +40%). Its
  error has two parts: the curves' noise with the worst classes kept (half-samples), and which
  classes are the worst, itself estimated: one class crossing the boundary moves the figure by a
  jump, a mixture no standard error describes. So the figure is recomputed under plausible
  rankings (each class's mean utility perturbed by its own replicate sd, t-distributed) and the
  interval covers both the quantiles of those values and +- t se around the estimate.
* **Recall@k: difference estimator.** The index's Recall@k over all queries, minus the mean over
  a seeded sample of exactly searched queries of (index hit - exact hit): a 0/1 difference
  (a missed other-label neighbour can only turn a miss into a hit), with a Wilson interval.
* **Range search**: the figure from the counts as found and from the counts divided by the lower
  95% bound of the measured range-search recall (no standard error).
"""

from __future__ import annotations

import math

import numpy as np

from opis_cli.engine.approximate_sampling import wilson_interval

from opis_cli.statistics.metrics import worst_count
from opis_cli.threads import numba_module

numba = numba_module()
njit, prange = numba.njit, numba.prange

SELECTION_DRAWS = 1000  # plausible rankings drawn for eps-OPIS's selection error
REPLICATE_BLOCKS = 256  # fixed blocks of classes for the replicate sums (thread-count independent)
# Beyond this mean share of the worst (best) classes changing between half-samples, eps-OPIS is
# dominated by which classes are ranked worst (best), a selection bias no interval here corrects
# (measured: 69% with --eps-contrast best on classes of 2-5 items, the intervals then missing;
# under 1% wherever they held).
RANKING_TURNOVER_LIMIT = 0.2


def trapezoid_weights(grid: np.ndarray) -> np.ndarray:
    """w with sum_k w_k f_k = trapz(f, grid) / (hi - lo) (metrics.range_average)."""
    grid = np.asarray(grid, np.float64)
    half = np.diff(grid) / 2
    w = np.zeros(len(grid))
    w[:-1] += half
    w[1:] += half
    return w / (grid[-1] - grid[0])


def half_sample_weights(groups: int, replicates: int, seed: int) -> np.ndarray:
    """(replicates, G) 0/1 weights: random halves of the groups, each followed by its complement
    (the pair's first-order deviations cancel, which steadies the bias estimate)."""
    rng = np.random.default_rng([seed, 5])
    w = np.zeros((replicates, groups))
    for b in range(0, replicates, 2):
        half = rng.permutation(groups)[: groups // 2]
        w[b, half] = 1
        if b + 1 < replicates:
            w[b + 1] = 1 - w[b]
    return w


@njit(inline="always")
def _replicate_row(counts, partners, comp, full, fpc, n_neg, w, r, out):
    """Class c's in-range negatives in replicate r, accumulated (the rows' cumulative counts)."""
    g_count, t = counts.shape
    den = 0.0
    for g in range(g_count):
        den += partners[g] * w[r, g]
    scale = comp / max(den, 1.0)
    for k in range(t):
        out[k] = 0.0
    for g in range(g_count):
        if w[r, g] != 0.0:
            for k in range(t):
                out[k] += counts[g, k] * w[r, g]
    acc = 0.0
    for k in range(t):
        e = full[k] + fpc * (out[k] * scale - full[k])
        e = min(max(e, 0.0), n_neg)  # as _histograms_from_inrange: an estimate cannot exceed |N_c|
        acc += e
        out[k] = acc


@njit(inline="always")
def _utility(tar, acc, n_neg, b2):
    trr = 1.0 - acc / n_neg
    den = b2 * trr + tar
    return (1.0 + b2) * tar * trr / den if den > 0 else 0.0


@njit(parallel=True, cache=True, nogil=True)
def replicate_moments(counts, partners, comp, full, fpc, n_neg, tar, w, b2, centre, tw, bounds, s1, s2, mean_u):
    """Per replicate r and block j of classes bounds[j]:bounds[j + 1]: s1[j, r, k] = sum_c
    (U_c(t_k) - centre_k), s2 the squares; mean_u[c, r] = avg_t U_c. Fixed blocks, each summed in
    class order by one thread: the same sums whatever the number of threads."""
    t = tar.shape[1]
    for j in prange(len(bounds) - 1):
        acc = np.empty(t)
        for c in range(bounds[j], bounds[j + 1]):
            for r in range(w.shape[0]):
                _replicate_row(counts[c], partners[c], comp[c], full[c], fpc[c], n_neg[c], w, r, acc)
                m = 0.0
                for k in range(t):
                    u = _utility(tar[c, k], acc[k], n_neg[c], b2)
                    dv = u - centre[k]
                    s1[j, r, k] += dv
                    s2[j, r, k] += dv * dv
                    m += tw[k] * u
                mean_u[c, r] = m


@njit(parallel=True, cache=True, nogil=True)
def replicate_set_sums(counts, partners, comp, full, fpc, n_neg, tar, w, b2, member, bounds, out):
    """out[j, r, k] = sum of U_c(t_k) over the classes c of block j with member[c, r]."""
    t = tar.shape[1]
    for j in prange(len(bounds) - 1):
        acc = np.empty(t)
        for c in range(bounds[j], bounds[j + 1]):
            for r in range(w.shape[0]):
                if member[c, r]:
                    _replicate_row(counts[c], partners[c], comp[c], full[c], fpc[c], n_neg[c], w, r, acc)
                    for k in range(t):
                        out[j, r, k] += _utility(tar[c, k], acc[k], n_neg[c], b2)


def replicate_figures(sampled, curves, mean_curve: np.ndarray, weights: np.ndarray, worst: np.ndarray,
                      best: np.ndarray | None = None, *, beta: float, epsilon: float, contrast: str,
                      threads: int | None = None) -> dict:
    """OPIS and eps-OPIS of every replicate (rows of ``weights``), from the group counts.

    OPIS_r = avg_t [mean_c (U_c - a)^2 - (mean_c U_c - a)^2] with a = the full estimate's mean
    curve (centred sums keep the difference of two sums accurate). ``eps_ranked``: eps-OPIS with
    the classes re-ranked by their replicate mean utility; ``eps_fixed``: with the full estimate's
    worst (and best) classes kept (``worst``: their rows). ``mean_sd``: each class's sd of
    m_c = avg_t U_c over the replicates.
    """
    from opis_cli.threads import thread_limit

    tar = np.ascontiguousarray(curves.tar, np.float64)
    c, t = tar.shape
    r = len(weights)
    args = (sampled.counts, sampled.partners.astype(np.float64), sampled.complement.astype(np.float64),
            np.ascontiguousarray(sampled.full_estimate()), np.sqrt(np.clip(1.0 - sampled.fraction, 0.0, 1.0)),
            curves.n_neg.astype(np.float64), tar, np.ascontiguousarray(weights, np.float64), float(beta * beta))
    tw = trapezoid_weights(curves.grid)
    k = worst_count(c, epsilon)
    blocks = min(c, REPLICATE_BLOCKS)
    bounds = np.linspace(0, c, blocks + 1).astype(np.int64)
    with thread_limit(threads):
        s1, s2 = np.zeros((blocks, r, t)), np.zeros((blocks, r, t))
        mean_u = np.empty((c, r))
        replicate_moments(*args, np.asarray(mean_curve, np.float64), tw, bounds, s1, s2, mean_u)
        s1, s2 = s1.sum(axis=0), s2.sum(axis=0)
        total = s1 + c * np.asarray(mean_curve)[None, :]
        ranked = {"worst": np.zeros((c, r), bool), "best": np.zeros((c, r), bool)}
        for j in range(r):
            order = np.lexsort((np.arange(c), mean_u[:, j]))  # ties: label order, as metrics.eps_opis
            ranked["worst"][order[:k], j] = True
            ranked["best"][order[c - k:], j] = True
        kept = np.zeros(c, bool)
        kept[worst] = True
        best_kept = np.zeros(c, bool)
        if best is not None:
            best_kept[best] = True

        def eps_values(worst_member, best_member):
            sw = np.zeros((blocks, r, t))
            replicate_set_sums(*args, worst_member, bounds, sw)
            sw = sw.sum(axis=0)
            if contrast == "best":
                sb = np.zeros((blocks, r, t))
                replicate_set_sums(*args, best_member, bounds, sb)
                other = sb.sum(axis=0) / k
            else:
                other = (total - sw) / (c - k)
            gap = sw / k - other
            return (gap * gap) @ tw

        eps_ranked = eps_values(ranked["worst"], ranked["best"])
        eps_fixed = eps_values(np.repeat(kept[:, None], r, axis=1), np.repeat(best_kept[:, None], r, axis=1))
    turnover = float(np.mean(ranked["worst"][~kept].sum(axis=0))) / k
    if contrast == "best":
        turnover = max(turnover, float(np.mean(ranked["best"][~best_kept].sum(axis=0))) / k)
    return {"opis": (s2 / c - (s1 / c) ** 2) @ tw, "eps_ranked": eps_ranked, "eps_fixed": eps_fixed,
            "mean_sd": mean_u.std(axis=1, ddof=1), "turnover": turnover}


def selection_spread(utility: np.ndarray, mean: np.ndarray, sd: np.ndarray, grid: np.ndarray, *, epsilon: float,
                     contrast: str, draws: int, seed: int, df: int) -> np.ndarray:
    """eps-OPIS of the estimated curves under ``draws`` plausible rankings: m_c + sd_c * z_c,
    z ~ N(0, 1) seeded, for the classes within 6 sd of a ranking boundary (the others cannot
    cross it). The spread of these values is the selection part of eps-OPIS's error: which
    classes are the worst is itself estimated, and a class crossing the boundary moves the
    figure by a jump that replicates of the whole statistic see erratically."""
    c, t = utility.shape
    k = worst_count(c, epsilon)
    tw = trapezoid_weights(grid)
    order = np.lexsort((np.arange(c), mean))
    rank = np.empty(c, np.int64)
    rank[order] = np.arange(c)
    cuts = [(k, True)] + ([(c - k, False)] if contrast == "best" else [])
    rng = np.random.default_rng([seed, 7])
    sets = {}
    for cut, is_worst in cuts:
        lo_edge, hi_edge = mean[order[cut - 1]], mean[order[cut]]
        near = np.flatnonzero((mean + 6 * sd >= lo_edge) & (mean - 6 * sd <= hi_edge))
        below = np.flatnonzero(rank < cut)
        fixed_below = np.setdiff1d(below, near)
        need = cut - len(fixed_below)
        base = utility[fixed_below].sum(axis=0)
        # Exact ties (classes with sd 0 and equal means) go in label order, as in eps_opis: a
        # jitter far below any real difference, increasing with the label.
        tie = np.arange(len(near)) * (np.finfo(float).eps * 4 * max(1.0, float(np.abs(mean).max())))
        low_sum = np.empty((draws, t))  # (draws, T): sum over the lower set
        step = max(1, (1 << 21) // max(len(near), 1))  # draws per chunk: bounded memory
        for d0 in range(0, draws, step):
            z = rng.standard_t(df, (min(step, draws - d0), len(near)))
            perturbed = mean[near][None, :] + sd[near][None, :] * z + tie[None, :]
            member = np.zeros(perturbed.shape)
            if 0 < need < len(near):
                np.put_along_axis(member, np.argpartition(perturbed, need - 1, axis=1)[:, :need], 1.0, axis=1)
            elif need:
                member[:] = 1.0
            low_sum[d0:d0 + len(z)] = base[None, :] + member @ utility[near]
        sets[is_worst] = low_sum if is_worst else utility.sum(axis=0)[None, :] - low_sum
    total = utility.sum(axis=0)[None, :]
    worst_sum = sets[True]
    other = sets[False] / k if contrast == "best" else (total - worst_sum) / (c - k)
    gap = worst_sum / k - other
    return (gap * gap) @ tw


def _t_quantile(df: int) -> float:
    from scipy.special import stdtrit  # scipy.stats takes seconds to import

    return float(stdtrit(df, 0.975))


def sampled_errors(sampled, curves, o, e, *, beta: float, epsilon: float, contrast: str, groups: int,
                   replicates: int, seed: int, threads: int | None = None) -> tuple[float, float, dict]:
    """(OPIS, eps-OPIS, errors) from sampled negatives (module docstring).

    OPIS = theta_hat - (mean_b theta_b - theta_hat), bias-corrected, se^2 = var_b(theta_b) over
    half-samples b, interval estimate +- t_{G/2-1, 0.975} se within [0, 1/4]. eps-OPIS = theta_hat;
    its plausible values are eps-OPIS under plausible rankings (:func:`selection_spread`) plus
    se_c * t_{G-1}, se_c^2 = var_b(theta_b | worst classes kept); se: their sd; interval: the union
    of their 2.5%-97.5% quantiles and theta_hat +- t_{G/2-1, 0.975} se.
    """
    w = half_sample_weights(groups, replicates, seed)
    reps = replicate_figures(sampled, curves, o.mean_curve, w, e.worst, e.contrast if contrast == "best" else None,
                             beta=beta, epsilon=epsilon, contrast=contrast, threads=threads)
    # G - 1 degrees of freedom would hold if every partner group carried as much information as
    # any other; partners near many classes make the variance estimate itself heavy-tailed
    # (measured z sd up to 1.25 over 100-class sets at 10-20% sampling), so t with G/2 - 1 df.
    q = _t_quantile(max(groups // 2 - 1, 1))
    se_o = float(np.std(reps["opis"], ddof=1))
    bias_o = float(np.mean(reps["opis"]) - o.value)
    value_o = min(max(o.value - bias_o, 0.0), 0.25)
    # eps-OPIS: which classes are the worst is estimated too; one class crossing the boundary
    # moves the figure by a jump. Plausible values: the figure under plausible rankings plus the
    # curves' own error (t with G - 1 df).
    spread = selection_spread(curves.utility, e.mean_utility, reps["mean_sd"], curves.grid, epsilon=epsilon,
                              contrast=contrast, draws=SELECTION_DRAWS, seed=seed, df=groups - 1)
    se_fixed = float(np.std(reps["eps_fixed"], ddof=1))
    plausible = spread + se_fixed * np.random.default_rng([seed, 8]).standard_t(groups - 1, len(spread))
    # The error is a mixture (no crossing, or a jump of either sign): the union of the quantile and
    # the symmetric t interval covers both an asymmetric jump and a spread centred off the estimate
    # (measured, docs/approximate.md: each alone held 83-93% of tiny-class sets, the union 93-100%).
    se_e = float(np.std(plausible, ddof=1))
    q_lo, q_hi = (float(v) for v in np.quantile(plausible, [0.025, 0.975]))
    lo_e, hi_e = min(q_lo, e.value - q * se_e), max(q_hi, e.value + q * se_e)
    bias_e = float(np.mean(reps["eps_ranked"]) - e.value)
    if reps["turnover"] > RANKING_TURNOVER_LIMIT:
        # Ranking-dominated: the selection bias (the worst classes picked partly for their noise) is
        # no longer small. The replicates' excess measures it at double noise; extrapolated to none
        # it is between bias_e (bias ~ variance) and bias_e / (sqrt 2 - 1) (bias ~ sd, dense ties):
        # the interval reaches that far (measured: z +20 at 59k classes of 2-5 items, inside after).
        far = e.value - bias_e / (math.sqrt(2.0) - 1.0)
        lo_e, hi_e = min(lo_e, far - q * se_e), max(hi_e, far + q * se_e)
    errors = {
        "opis": {"se": se_o, "interval": [max(0.0, value_o - q * se_o), min(0.25, value_o + q * se_o)],
                 "bias": bias_o, "uncorrected": o.value,
                 "method": f"bias-corrected (estimate minus the replicates' mean excess), se from {replicates} "
                           f"half-samples of {groups} partner groups, 95% t interval (+-{q:.3f} se)"},
        "eps_opis": {"se": se_e, "interval": [max(0.0, min(lo_e, e.value)), min(1.0, max(hi_e, e.value))],
                     "se_curves": se_fixed, "se_ranking": float(np.std(spread, ddof=1)),
                     "ranking_turnover": reps["turnover"], "bias": bias_e,
                     "method": f"union of the 2.5%-97.5% quantiles and the +-{q:.3f} se interval of the figure "
                               f"under {SELECTION_DRAWS} plausible rankings of the classes plus the curves' error "
                               f"(se from {replicates} half-samples of {groups} partner groups, worst classes kept)"},
    }
    return value_o, e.value, errors


def recall_estimates(index_hits: dict[int, np.ndarray], query_mask: np.ndarray, codes: np.ndarray, n_classes: int,
                     classes: np.ndarray, check_rows: np.ndarray, check_hits: np.ndarray):
    """Recall@k by the difference estimator, per-class hit counts consistent with it, and errors.

    R_k = (H_index - D_k) / Q, where H_index counts the queries the index calls hits, Q the
    queries, and D_k = round(Q * mean_s(index hit - exact hit)) over the s exactly searched
    queries. The interval is R_index - the Wilson interval of that mean (a 0/1 difference; a
    -1, possible only from float rounding at a tie, widens it by its own Wilson bound).
    Returns ({k: R_k}, (queries (C,), {k: hits (C,)}), {k: errors entry}, {k: index R_k}).
    """
    qc = codes[query_mask]
    queries = np.bincount(qc, minlength=n_classes)[classes].astype(np.int64)
    total = int(query_mask.sum())
    s = len(check_rows)
    recall, hits_out, errors, index_recall = {}, {}, {}, {}
    for k, hit in sorted(index_hits.items()):
        idx_class = np.bincount(qc, weights=hit[query_mask], minlength=n_classes)[classes].astype(np.int64)
        h_index = int(idx_class.sum())
        diff = hit[check_rows].astype(np.int64) - check_hits[:, k - 1].astype(np.int64)
        up, down = int((diff == 1).sum()), int((diff == -1).sum())
        exhaustive = s >= total
        d_total = (up - down) if exhaustive else int(round(total * (up - down) / s))
        class_hits = _apportion(idx_class, queries, d_total)
        value = float(class_hits.sum() / total)
        r_index = h_index / total
        if exhaustive:
            interval, method = [value, value], "every query searched exactly"
        else:
            u_lo, u_hi = wilson_interval(up, s)
            d_lo, d_hi = wilson_interval(down, s) if down else (0.0, 0.0)
            interval = [max(0.0, min(value, r_index - (u_hi - d_lo))), min(1.0, max(value, r_index - (u_lo - d_hi)))]
            method = (f"the index's Recall@{k} over all {total} queries minus the mean (index hit - exact hit) "
                      f"over {s} seeded queries searched exactly, 95% Wilson interval")
        mean_d = (up - down) / s if s else 0.0
        var_d = (up + down) / s - mean_d * mean_d if s else 0.0
        recall[k] = value
        hits_out[k] = class_hits
        index_recall[str(k)] = r_index
        errors[str(k)] = {"se": 0.0 if exhaustive else math.sqrt(max(var_d, 0.0) / s), "interval": interval,
                          "method": method, "queries": s,
                          "exact_on_sample": float(check_hits[:, k - 1].mean()) if s else None,
                          "index_only_hits": up, "exact_only_hits": down}
    return recall, (queries, hits_out), errors, index_recall


def _apportion(hits: np.ndarray, queries: np.ndarray, change: int) -> np.ndarray:
    """hits - change spread over classes in proportion to the hits that can move (largest
    remainder, ties in class order): integer per-class counts that sum to sum(hits) - change."""
    room = hits if change >= 0 else queries - hits
    need = min(abs(change), int(room.sum()))
    if need == 0:
        return hits.copy()
    quota = need * room / room.sum()
    take = np.floor(quota).astype(np.int64)
    rest = need - int(take.sum())
    order = np.argsort(-(quota - take), kind="stable")
    take[order[:rest]] += 1
    return hits - take if change >= 0 else hits + take


def range_errors(value: float, scaled: float, top: float) -> dict:
    """Range search: the figure from the counts as found and from the counts divided by the lower
    95% bound of the measured range-search recall (misses only lower a count)."""
    lo, hi = min(value, scaled), max(value, scaled)
    return {"se": None, "interval": [max(0.0, lo), min(top, hi)],
            "method": "in-range counts as found vs divided by the lower 95% bound of the measured range-search "
                      "recall"}


def approximate_figures(result, curves, o, e, config, prepared, opts, threads=None) -> dict:
    """Every headline figure of an approximate run with its 95% interval.

    Returns {"opis", "eps_opis", "contributions" (per class, summing to the OPIS reported),
    "recall_at_k", "class_recall", "errors", "index_recall_at_k", "warnings"}.
    """
    sizes = prepared.class_sizes
    errors: dict = {}
    opis_value, eps_value = o.value, e.value
    if result.sampled is not None:
        opis_value, eps_value, errors = sampled_errors(
            result.sampled, curves, o, e, beta=config.beta, epsilon=config.epsilon,
            contrast=config.eps_contrast, groups=opts.sample_groups, replicates=opts.replicates, seed=opts.seed,
            threads=threads)
    elif result.recall_scaled is not None:
        from opis_cli.statistics.curves import class_curves
        from opis_cli.statistics.metrics import eps_opis, opis

        scaled = class_curves(result.recall_scaled, sizes, beta=config.beta)
        errors["opis"] = range_errors(o.value, opis(scaled.utility, scaled.grid).value, 0.25)
        errors["eps_opis"] = range_errors(e.value, eps_opis(scaled.utility, scaled.grid, epsilon=config.epsilon,
                                                            contrast=config.eps_contrast).value, 1.0)
    # Per-class shares of OPIS, scaled to the figure reported (bias-corrected under sampling).
    contributions = o.contributions * (opis_value / o.value) if o.value > 0 else o.contributions
    query_mask = (sizes >= 2)[prepared.codes]
    index_hits = {int(k): result.neighbours.hits(int(k)) for k in config.k}
    recall, class_recall, recall_errors, index_recall = recall_estimates(
        index_hits, query_mask, prepared.codes, prepared.n_classes, curves.classes, result.check_rows,
        result.check_hits)
    errors["recall_at_k"] = recall_errors
    warnings = []
    turnover = (errors.get("eps_opis") or {}).get("ranking_turnover", 0.0)
    if turnover > RANKING_TURNOVER_LIMIT:
        which = "best" if config.eps_contrast == "best" else "worst"
        warnings.append(f"{turnover:.0%} of the {which} classes change between half-samples of the sampled "
                        f"negatives: eps-OPIS is dominated by which classes rank {which} and its interval is not "
                        "known to hold; raise --samples-per-anchor")
    return {"opis": opis_value, "eps_opis": eps_value, "contributions": contributions, "recall_at_k": recall,
            "class_recall": class_recall, "errors": errors, "index_recall_at_k": index_recall,
            "warnings": warnings}
