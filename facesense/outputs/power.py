"""How many images per group would detect a difference in shares that a summary's comparison
did not find significant: the sample size of a two-sided test of two proportions at 80 % power,
with Fleiss' continuity correction, which tracks Fisher's exact test (the test the summary
runs). Pure Python (statistics.NormalDist), like the rest of the summary's statistics.

With shares p1 and p2 (q = 1 - p), pbar = (p1 + p2) / 2, d = |p1 - p2|, z_a the standard normal's
1 - alpha/2 quantile and z_b its power quantile:

    n' = (z_a sqrt(2 pbar qbar) + z_b sqrt(p1 q1 + p2 q2))^2 / d^2            (no correction)
    n  = n'/4 (1 + sqrt(1 + 4 / (n' d)))^2                          (continuity-corrected)

Fleiss, Levin & Paik, Statistical Methods for Rates and Proportions (3rd ed., 2003), ch. 4;
Casagrande, Pike & Smith (1978), Biometrics 34:483. n' is R's power.prop.test's n."""

from __future__ import annotations

import math
from statistics import NormalDist

POWER = 0.8  # the chance of finding the difference significant, if it is real
MAX_PER_GROUP = 100_000  # beyond this a difference is too small to chase with more photos
_NORMAL = NormalDist()


def n_uncorrected(p1: float, p2: float, alpha: float, power: float = POWER) -> float:
    """n' per group for a two-sided test at alpha with this power (no continuity correction)."""
    z_a, z_b = _NORMAL.inv_cdf(1 - alpha / 2), _NORMAL.inv_cdf(power)
    p_bar = (p1 + p2) / 2
    root = (z_a * math.sqrt(2 * p_bar * (1 - p_bar))
            + z_b * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2)))
    return root * root / (p1 - p2) ** 2


def n_corrected(p1: float, p2: float, alpha: float, power: float = POWER) -> float:
    """n per group with Fleiss' continuity correction: n'/4 (1 + sqrt(1 + 4 / (n' d)))^2."""
    n = n_uncorrected(p1, p2, alpha, power)
    return n / 4 * (1 + math.sqrt(1 + 4 / (n * abs(p1 - p2)))) ** 2


def sample_size(share_a: float, share_b: float, alpha: float, power: float = POWER) -> dict:
    """Images per group to detect share_a vs share_b (per_group), or None and the reason."""
    out = {"per_group": None, "alpha": round(alpha, 6), "power": power, "reason": None}
    if share_a == share_b:
        out["reason"] = "no difference observed: no number of images can detect it"
        return out
    n = math.ceil(n_corrected(share_a, share_b, alpha, power) - 1e-9)  # 57.0000001 is 57
    if n > MAX_PER_GROUP:
        out["reason"] = (f"over {MAX_PER_GROUP:,} per group: the difference is too small to "
                         "detect in practice")
    else:
        out["per_group"] = n
    return out
