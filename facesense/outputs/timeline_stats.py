"""Statistics over viewers for the video timeline: Student's t distribution (its two-sided tail
and quantile, from the regularized incomplete beta function by Lentz's continued fraction, as
in Numerical Recipes 6.4), the t-interval of a mean, Welch's unequal-variance t-test, a bin's
running moments over viewers, and the viewers a difference needs. Pure
Python like the rest of the summary's statistics: scipy is not a dependency of the core (the
tests check every figure here against scipy.stats)."""

from __future__ import annotations

import math
from functools import lru_cache
from statistics import NormalDist

from facesense.outputs.power import MAX_PER_GROUP, POWER

TINY = 1e-300  # keeps the continued fraction's denominators off zero
EPS = 1e-15  # a continued fraction's step this close to 1 ends it
MAX_STEPS = 100_000  # the fraction needs O(sqrt(df)) steps: ample for any number of viewers


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):  # the fraction converges fast on this side; else use symmetry
        return math.exp(log_front) * _fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _fraction(b, a, 1.0 - x) / b


def _fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b), by the modified Lentz method."""
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > TINY else TINY)
    h = d
    for m in range(1, MAX_STEPS):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((a - 1 + m2) * (a + m2)),  # the even step, then the odd
                    -(a + m) * (a + b + m) * x / ((a + m2) * (a + 1 + m2))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > TINY else TINY)
            c = 1.0 + num / c
            c = c if abs(c) > TINY else TINY
            h *= d * c
        if abs(d * c - 1.0) < EPS:
            break
    return h


def t_two_sided(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with df degrees of freedom (df may be fractional)."""
    if math.isinf(t):
        return 0.0
    return min(1.0, betainc(df / 2, 0.5, df / (df + t * t)))


@lru_cache(maxsize=4096)
def t_quantile(q: float, df: float) -> float:
    """The q quantile (q > 0.5) of Student's t with df degrees of freedom, by bisection on its
    two-sided tail (monotone in t) to float precision."""
    tail = 2 * (1 - q)
    lo, hi = 0.0, 2.0
    while t_two_sided(hi, df) > tail:
        lo, hi = hi, hi * 2
    for _ in range(200):
        mid = (lo + hi) / 2
        if mid in (lo, hi):
            break
        lo, hi = (mid, hi) if t_two_sided(mid, df) > tail else (lo, mid)
    return (lo + hi) / 2


def mean_var(values: list[float]) -> tuple[float, float]:
    """The mean and the sample variance (n - 1 in the denominator; 0 for one value)."""
    n = len(values)
    mean = math.fsum(values) / n
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return mean, var


def t_interval(values: list[float], q: float = 0.975) -> tuple[float, float] | None:
    """The two-sided t-interval of the mean of values (95 % by default); None under 2 values."""
    n = len(values)
    if n < 2:
        return None
    return mean_interval(*mean_var(values), n, q)


def mean_interval(mean: float, var: float, n: int, q: float = 0.975) -> tuple[float, float]:
    """The t-interval of a mean of n >= 2 values with this sample variance."""
    half = t_quantile(q, n - 1) * math.sqrt(max(0.0, var) / n)
    return mean - half, mean + half


def welch(a: list[float], b: list[float]) -> float:
    """Welch's two-sided t-test p-value of mean(a) = mean(b) (each at least 2 values). With no
    spread in either, the difference is exact: p is 1 if the means are equal, else 0."""
    (ma, va), (mb, vb) = mean_var(a), mean_var(b)
    sa, sb = va / len(a), vb / len(b)
    if sa + sb == 0:
        return 1.0 if ma == mb else 0.0
    t = (ma - mb) / math.sqrt(sa + sb)
    # Welch-Satterthwaite degrees of freedom; a side with no spread adds nothing to it
    df = (sa + sb) ** 2 / (sa * sa / (len(a) - 1) + sb * sb / (len(b) - 1))
    return t_two_sided(t, df)


class Moments:
    """One bin's viewers, faces, and per label the running mean and sum of squared deviations
    of the viewers' shares (Welford's update: stable, one pass)."""

    __slots__ = ("faces", "m2", "mean", "n")

    def __init__(self, labels: int):
        self.n = self.faces = 0
        self.mean, self.m2 = [0.0] * labels, [0.0] * labels

    def add(self, values: list[float], faces: int) -> None:
        self.n += 1
        self.faces += faces
        for i, x in enumerate(values):
            d = x - self.mean[i]
            self.mean[i] += d / self.n
            self.m2[i] += d * (x - self.mean[i])


def viewers_needed(a: list[float], b: list[float], alpha: float, power: float = POWER) -> dict:
    """Viewers per group for a two-sided test at alpha with this power to detect the observed
    difference of means, given the observed spread: 2 ((z_a + z_b) s / d)^2 + z_a^2 / 4 with s^2
    the mean of the two sample variances (the normal approximation, Guenther's t correction)."""
    out = {"per_group": None, "alpha": round(alpha, 6), "power": power, "reason": None,
           "unit": "viewers"}
    (ma, va), (mb, vb) = mean_var(a), mean_var(b)
    d, var = ma - mb, (va + vb) / 2
    if d == 0:
        out["reason"] = "no difference observed: no number of viewers can detect it"
        return out
    z_a, z_b = NormalDist().inv_cdf(1 - alpha / 2), NormalDist().inv_cdf(power)
    n = math.ceil(2 * ((z_a + z_b) ** 2) * var / (d * d) + z_a * z_a / 4 - 1e-9)
    if n > MAX_PER_GROUP:
        out["reason"] = (f"over {MAX_PER_GROUP:,} per group: the difference is too small to "
                         "detect in practice")
    else:
        out["per_group"] = max(2, n)
    return out
