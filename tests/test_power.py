"""The images per group a summary asks for when a comparison is not significant: checked against
R's power.prop.test and a textbook's worked example, against the power equations solved by
bisection, and against the exact power of Fisher's test (the summary's test) at that size."""

from __future__ import annotations

import json
import math

import pytest

from facesense.outputs.power import MAX_PER_GROUP, n_corrected, n_uncorrected, sample_size
from facesense.outputs.results import Summary, bounded
from tests.test_stats import fisher_by_enumeration


def phi(x: float) -> float:
    """The standard normal CDF from math.erf (not statistics.NormalDist, which the code uses)."""
    return (1 + math.erf(x / math.sqrt(2))) / 2


def quantile(q: float) -> float:
    """The standard normal quantile by bisection on phi."""
    lo, hi = -10.0, 10.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if phi(mid) < q else (lo, mid)
    return (lo + hi) / 2


def n_by_bisection(p1: float, p2: float, alpha: float, power: float, corrected: bool) -> float:
    """The n solving the two-proportion power equation (R's power.prop.test, strict=FALSE); with
    the continuity correction the difference shrinks by 1/n (Yates' 1/2 (1/n + 1/n))."""
    d, p_bar = abs(p1 - p2), (p1 + p2) / 2
    z_a = quantile(1 - alpha / 2)
    spread = math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))

    def power_at(n: float) -> float:
        shift = d - 1 / n if corrected else d
        return phi((math.sqrt(n) * shift - z_a * math.sqrt(2 * p_bar * (1 - p_bar))) / spread)

    lo, hi = 1.0, 1e9
    for _ in range(300):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if power_at(mid) < power else (lo, mid)
    return (lo + hi) / 2


def fisher_power(n: int, p1: float, p2: float, alpha: float) -> float:
    """The exact power of the two-sided Fisher test at alpha with n per group: every outcome's
    binomial probability times whether Fisher's p (by exact enumeration) is below alpha."""
    def binomial(p: float) -> list[tuple[int, float]]:
        masses = [(k, math.comb(n, k) * p ** k * (1 - p) ** (n - k)) for k in range(n + 1)]
        return [(k, m) for k, m in masses if m > 1e-12]  # what is left out sums to < 1e-9
    return sum(m1 * m2 for x1, m1 in binomial(p1) for x2, m2 in binomial(p2)
               if fisher_by_enumeration(x1, n - x1, x2, n - x2) < alpha)


def test_the_uncorrected_n_is_r_power_prop_tests():
    # power.prop.test(p1 = 0.5, p2 = 0.75, power = 0.8) in R: n = 57.67 per group
    assert n_uncorrected(0.5, 0.75, 0.05) == pytest.approx(57.67, abs=0.005)


def test_the_uncorrected_n_matches_a_textbook_worked_example():
    # Dunn & Clark, Basic Statistics (ch. 10): pi1 = .12, pi2 = .20, 80 % power, two-sided .05:
    # n = 328.6 with z_b rounded to .842 (exact z_b = 0.8416 gives 328.47), rounded up to 329
    assert n_uncorrected(0.12, 0.20, 0.05) == pytest.approx(328.6, rel=1e-3)
    assert math.ceil(n_uncorrected(0.12, 0.20, 0.05)) == 329


@pytest.mark.parametrize("p1,p2,alpha", [(0.5, 0.75, 0.05), (0.12, 0.2, 0.05), (0.05, 0.1, 0.05),
                                         (0.3, 0.6, 0.01), (0.9, 0.2, 0.05 / 45), (0.0, 0.4, 0.05)])
def test_both_closed_forms_solve_their_power_equations(p1, p2, alpha):
    assert n_uncorrected(p1, p2, alpha) == pytest.approx(
        n_by_bisection(p1, p2, alpha, 0.8, corrected=False), rel=1e-9)
    assert n_corrected(p1, p2, alpha) == pytest.approx(
        n_by_bisection(p1, p2, alpha, 0.8, corrected=True), rel=1e-9)


@pytest.mark.parametrize("p1,p2,alpha", [(0.5, 0.75, 0.05), (0.3, 0.6, 0.05), (0.2, 0.5, 0.05),
                                         (0.25, 0.4, 0.05), (0.5, 0.75, 0.05 / 3)])
def test_fishers_exact_test_has_80_percent_power_at_the_corrected_n(p1, p2, alpha):
    # Given the figure the summary gives, when samples of that size are drawn with these shares,
    # then Fisher's test (the summary's) finds the difference 80 to 83 % of the time (exact)
    n = sample_size(p1, p2, alpha)["per_group"]
    assert 0.80 <= fisher_power(n, p1, p2, alpha) <= 0.83, n
    # the uncorrected n is too few for Fisher's exact test: why the correction is there
    assert fisher_power(math.ceil(n_uncorrected(p1, p2, alpha)), p1, p2, alpha) < 0.78


def test_a_difference_of_zero_cannot_be_detected_and_a_tiny_one_is_capped():
    none = sample_size(0.4, 0.4, 0.05)
    assert none["per_group"] is None and "no difference" in none["reason"]
    tiny = sample_size(0.5, 0.501, 0.05)  # ~3.9 million per group
    assert n_corrected(0.5, 0.501, 0.05) > MAX_PER_GROUP
    assert tiny["per_group"] is None and f"over {MAX_PER_GROUP:,}" in tiny["reason"]
    everything = sample_size(0.0, 1.0, 0.05)  # none vs all: 4 each, and Fisher's p is 2/70
    assert everything == {"per_group": 4, "alpha": 0.05, "power": 0.8, "reason": None}
    assert fisher_by_enumeration(0, 4, 4, 0) < 0.05 < fisher_by_enumeration(0, 3, 3, 0)


def summary_of(groups: dict[str, tuple[int, int]]) -> dict:
    """A summary with, per group, (happy, sad) scored rows."""
    summary = Summary(["happy", "sad"])
    for group, counts in groups.items():
        for label, n in zip(("happy", "sad"), counts, strict=True):
            for _ in range(n):
                summary.add({"group": group, "label": label, "confidence": 0.9, "error": None})
    return summary.to_dict()


def test_the_summary_gives_the_figure_for_each_comparison_that_is_not_significant():
    # three groups: Holm's first step is at 0.05 / 3, so that is the alpha the figure uses
    data = json.loads(json.dumps(summary_of({"a": (12, 8), "b": (9, 11), "c": (40, 0)})))
    rows = {(c["label"], c["a"], c["b"]): c for c in data["comparisons"]}
    ab = rows[("happy", "a", "b")]
    assert not ab["significant"]
    assert ab["sample_size"] == {"per_group": math.ceil(n_corrected(0.6, 0.45, 0.05 / 3)),
                                 "alpha": round(0.05 / 3, 6), "power": 0.8, "reason": None}
    assert ab["sample_size"]["per_group"] > 20  # more than each group has now
    assert rows[("sad", "a", "b")]["sample_size"] == ab["sample_size"]  # the same question
    for row in data["comparisons"]:
        assert (row["sample_size"] is None) is row["significant"], row
    assert rows[("happy", "b", "c")]["significant"]  # 9 of 20 vs 40 of 40


def test_two_equal_shares_say_why_there_is_no_figure_and_bounded_keeps_the_figures():
    data = summary_of({"a": (5, 5), "b": (10, 10), "c": (1, 0)})
    ab = next(c for c in data["comparisons"] if (c["label"], c["a"], c["b"]) == ("happy", "a", "b"))
    assert ab["sample_size"]["per_group"] is None
    assert ab["sample_size"]["reason"].startswith("no difference observed")
    small = bounded(data, 2)  # the record keeps two groups and summary.json's figures
    assert [c["sample_size"] for c in small["comparisons"]] == \
        [c["sample_size"] for c in data["comparisons"] if {c["a"], c["b"]} == {"a", "b"}]


def test_the_cli_lists_the_images_needed_fewest_first():
    from cli.tables import summary_lines

    data = summary_of({"ad1": (12, 8), "ad2": (9, 11), "ad3": (40, 0), "ad4": (11, 9)})
    lines = summary_lines(data)
    head = next(i for i, line in enumerate(lines) if line.startswith("images per group to detect"))
    assert "80 % power at alpha 0.00833, 0.05 over 6 pairs" in lines[head]
    shown = [line.split() for line in lines[head + 2:] if line.strip()]
    open_ = sorted((c for c in data["comparisons"] if not c["significant"]),
                   key=lambda c: c["sample_size"]["per_group"])
    assert [(r[0], r[1], r[2], r[-1]) for r in shown] == [
        (c["label"], c["a"], c["b"], f"{c['sample_size']['per_group']:,}") for c in open_]
    assert shown[0][-4:-1] == ["20", "/", "20"]  # each group's images now, beside what is needed
    # a summary written before the figure existed prints no such table
    for c in data["comparisons"]:
        c.pop("sample_size")
    assert not any(line.startswith("images per group") for line in summary_lines(data))


def test_the_documented_summary_schema_accepts_the_figure(monkeypatch):
    import jsonschema

    import api.openapi.builders
    from api.summaries import openapi_paths

    monkeypatch.setattr(api.openapi.builders, "auth_enabled", lambda: False)  # no app needed
    schema = openapi_paths()["/v1/jobs/{job_id}/summary"]["get"]["responses"]["200"][
        "content"]["application/json"]["schema"]
    data = json.loads(json.dumps(summary_of({"a": (5, 5), "b": (9, 1), "c": (0, 10)})))
    assert {c["sample_size"] is None for c in data["comparisons"]} == {True, False}
    jsonschema.validate(data, schema)
    data["comparisons"][0]["sample_size"] = {"per_group": "many"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, schema)
