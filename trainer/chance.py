"""Does a version beat chance? A one-sided exact binomial test against the majority class."""

from __future__ import annotations

import math

ALPHA = 0.05  # the test's level: a version must be right more often than this would allow by luck


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), summed exactly in log space (no underflow)."""
    if k <= 0:
        return 1.0
    if p <= 0:
        return 0.0
    if p >= 1:
        return 1.0
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
            + i * math.log(p) + (n - i) * math.log1p(-p) for i in range(k, n + 1)]
    top = max(logs)
    return min(1.0, math.exp(top) * sum(math.exp(x - top) for x in logs))


def chance_test(correct: int, support: list[int], alpha: float = ALPHA) -> dict:
    """The manifest's "chance" record: the majority-class baseline on the validation images,
    the p-value of scoring `correct` of them right by always guessing that class, and whether
    the version beats it at alpha."""
    n = sum(support)
    baseline = max(support) / n if n else 1.0
    p_value = binomial_tail(correct, n, baseline)
    return {"baseline": round(baseline, 5), "correct": correct, "images": n,
            "p_value": float(f"{p_value:.4g}"), "alpha": alpha, "beats_chance": p_value < alpha,
            "test": "one-sided exact binomial test of validation accuracy against the "
                    "majority-class share"}


def images_needed(baseline: float, alpha: float = ALPHA) -> int | None:
    """The fewest validation images with which even a perfect score beats the baseline (None:
    one class only, which nothing beats)."""
    if baseline >= 1:
        return None
    return math.floor(math.log(alpha) / math.log(baseline)) + 1


def plain_reason(record: dict) -> str:
    """Why a version that does not beat chance is not promoted, in plain words."""
    return (f"{record['correct']} of {record['images']} validation images right does not beat "
            f"always guessing the commonest class ({record['baseline']:.0%} right) clearly "
            f"enough (p = {record['p_value']:.3g}, needs < {record['alpha']}); promote "
            "\"force\" promotes it anyway")
