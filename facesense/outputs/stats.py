"""Statistics for the summary: Wilson intervals on shares, Fisher exact tests between groups
with Holm's correction. Pure Python (math.lgamma), no scipy: the API and the core stay light."""

from __future__ import annotations

import math
from itertools import combinations

from facesense.outputs.power import sample_size

Z95 = 1.959963984540054  # the standard normal's 97.5th percentile: a two-sided 95 % interval
ALPHA = 0.05  # a comparison is significant when its Holm-adjusted p-value is below this
REL_TOL = 1e-7  # tables as likely as the observed one, up to float error, count as extreme (R's rule)
TAIL_NATS = 40.0  # stop walking a tail once terms are e^-40 below the observed table's probability


def wilson(count: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval for count successes in n trials; None when n is 0."""
    if n <= 0:
        return None
    p = count / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # 0 of n and n of n: the closed form gives the bound up to rounding; pin it exactly
    low = 0.0 if count == 0 else max(0.0, centre - half)
    high = 1.0 if count == n else min(1.0, centre + half)
    return low, high


def _log_choose(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def fisher_exact(a: int, b: int, c: int, d: int) -> float:
    """Two-sided Fisher exact p-value of the 2x2 table [[a, b], [c, d]]: the probability, with
    the margins fixed, of every table no more likely than the observed one."""
    row1, col1, n = a + b, a + c, a + b + c + d
    lo, hi = max(0, col1 - (n - row1)), min(row1, col1)  # the support of the top-left cell
    if lo == hi:
        return 1.0
    const = _log_choose(n, col1)

    def logp(x: int) -> float:  # hypergeometric log-probability of top-left cell x
        return _log_choose(row1, x) + _log_choose(n - row1, col1 - x) - const

    observed = logp(a) + math.log1p(REL_TOL)
    # The distribution is unimodal, so the tables no more likely than the observed one are two
    # tails: find where each starts by bisection, then add up each tail outward until its terms
    # are negligible (a big job's table has a huge support; this stays O(its spread)).
    mode = min(hi, max(lo, (row1 + 1) * (col1 + 1) // (n + 2)))
    total = 0.0
    left = _last(lo, mode, lambda x: logp(x) <= observed)  # logp rises up to the mode
    right = _first(mode + 1, hi, lambda x: logp(x) <= observed)  # and falls after it
    for start, step, end in ((left, -1, lo - 1), (right, 1, hi + 1)):
        if start is None:
            continue
        for x in range(start, end, step):
            lp = logp(x)
            total += math.exp(lp)
            if lp < observed - TAIL_NATS:
                break
    return min(1.0, total)


def _last(lo: int, hi: int, ok) -> int | None:
    """The largest x in [lo, hi] with ok(x), for a predicate true on a prefix; None if none."""
    if lo > hi or not ok(lo):
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid - 1)
    return lo


def _first(lo: int, hi: int, ok) -> int | None:
    """The smallest x in [lo, hi] with ok(x), for a predicate true on a suffix; None if none."""
    if lo > hi or not ok(hi):
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid + 1, hi)
    return lo


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given (monotone, capped at 1)."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def compare(groups: dict[str, dict], classes: list[str], names: list[str]) -> list[dict]:
    """For each label and each pair of the named groups (summary tallies with scored and labels),
    the shares, their difference, Fisher's p-value, Holm's adjustment across that label's pairs,
    whether it is significant and, if not, the images per group that would detect it."""
    out = []
    for label in classes:
        rows, shares = [], []
        for a, b in combinations(names, 2):
            ta, tb = groups[a], groups[b]
            ka, kb = ta["labels"][label]["count"], tb["labels"][label]["count"]
            na, nb = ta["scored"], tb["scored"]
            share_a, share_b = ka / na, kb / nb
            shares.append((share_a, share_b))
            rows.append({"label": label, "a": a, "b": b, "share_a": round(share_a, 6),
                         "share_b": round(share_b, 6),
                         "difference": round(share_a - share_b, 6),
                         "p_value": fisher_exact(ka, na - ka, kb, nb - kb)})
        for row, adj, pair in zip(rows, holm([r["p_value"] for r in rows]), shares, strict=True):
            row["p_adjusted"] = adj
            row["significant"] = adj < ALPHA
            # Holm's first step tests at ALPHA / pairs: a new sample of this size must pass it
            # even if this pair is the label's only real difference
            row["sample_size"] = None if row["significant"] else sample_size(
                *pair, alpha=ALPHA / len(rows))
        out += rows
    return out


def ci95(count: int, n: int) -> list[float] | None:
    """The Wilson 95 % interval as a JSON-ready [low, high] rounded like shares; None for n=0."""
    interval = wilson(count, n)
    return None if interval is None else [round(interval[0], 6), round(interval[1], 6)]
