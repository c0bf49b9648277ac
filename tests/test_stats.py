"""The summary's statistics: Wilson intervals, Fisher exact tests and Holm's correction, checked
against published values and against independent computations (exact enumeration in integers,
the score equation solved by bisection)."""

from __future__ import annotations

import math
import random
from fractions import Fraction

import pytest

from facesense.outputs.results import Summary, bounded, summary_csv
from facesense.outputs.stats import Z95, ci95, compare, fisher_exact, holm, wilson


def fisher_by_enumeration(a: int, b: int, c: int, d: int) -> float:
    """Two-sided Fisher p-value by listing every table with these margins, in exact integers."""
    row1, row2, col1 = a + b, c + d, a + c
    weight = {x: math.comb(row1, x) * math.comb(row2, col1 - x)
              for x in range(max(0, col1 - row2), min(row1, col1) + 1)}
    observed = weight[a]
    return float(Fraction(sum(w for w in weight.values() if w <= observed), sum(weight.values())))


def wilson_by_bisection(count: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson interval as the two roots of its score equation (p - pi)^2 = z^2 pi(1-pi)/n,
    found by bisection on each side of the observed share: no closed form involved."""
    p = count / n

    def f(pi: float) -> float:
        return (p - pi) ** 2 - z * z * pi * (1 - pi) / n

    def root(lo: float, hi: float) -> float:  # f changes sign on [lo, hi]
        for _ in range(200):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if (f(lo) > 0) == (f(mid) > 0) else (lo, mid)
        return (lo + hi) / 2

    low = 0.0 if count == 0 else root(0.0, p)
    high = 1.0 if count == n else root(p, 1.0)
    return low, high


# --- Fisher exact ----------------------------------------------------------------------------


def test_fisher_matches_the_tea_tasting_experiment():
    # Fisher (1935): the lady guesses 3 of 4 milk-first cups; R's fisher.test gives p = 0.4857
    assert fisher_exact(3, 1, 1, 3) == pytest.approx(0.4857142857, abs=1e-10)
    assert fisher_exact(3, 1, 1, 3) == pytest.approx(34 / 70)


def test_fisher_matches_the_published_dieting_example():
    # Wikipedia's "Fisher's exact test" example: 1 of 10 men, 11 of 14 women dieting
    assert fisher_exact(1, 9, 11, 3) == pytest.approx(0.002759, abs=5e-7)


def test_fisher_agrees_with_exact_enumeration_on_random_tables():
    rng = random.Random(18)
    for _ in range(300):
        table = [rng.randint(0, 25) for _ in range(4)]
        assert fisher_exact(*table) == pytest.approx(fisher_by_enumeration(*table), rel=1e-9), table


def test_fisher_agrees_with_exact_enumeration_on_large_tables():
    # big groups: the tails are summed outward from where they start, not over the whole support
    for table in ([620, 380, 480, 520], [1200, 1200, 1290, 1110], [3, 997, 0, 1000],
                  [900, 100, 100, 900]):
        assert fisher_exact(*table) == pytest.approx(fisher_by_enumeration(*table), rel=1e-8), table


def test_fisher_edge_tables():
    assert fisher_exact(0, 5, 0, 7) == 1.0  # no one has the label: nothing to compare
    assert fisher_exact(5, 0, 7, 0) == 1.0  # everyone has it
    assert fisher_exact(1, 0, 0, 1) == 1.0  # two groups of one: as extreme as it can be, p = 1
    assert fisher_exact(0, 0, 3, 4) == 1.0  # an empty row
    assert fisher_exact(10, 0, 0, 10) == pytest.approx(fisher_by_enumeration(10, 0, 0, 10))
    assert fisher_exact(2_000, 0, 0, 2_000) < 1e-300  # underflows gracefully, never negative


# --- Wilson ----------------------------------------------------------------------------------


def test_wilson_matches_newcombes_published_intervals():
    # Newcombe (1998), Statistics in Medicine 17:857, Table I, method 3 (score interval)
    for (count, n), (low, high) in {(81, 263): (0.2553, 0.3662), (15, 148): (0.0624, 0.1605),
                                    (0, 20): (0.0, 0.1611), (1, 29): (0.0061, 0.1718)}.items():
        got = wilson(count, n)
        assert got == pytest.approx((low, high), abs=6e-5), (count, n)


@pytest.mark.parametrize("count,n", [(81, 263), (0, 10), (10, 10), (1, 1), (0, 1), (3, 7),
                                     (499, 1000), (1, 100_000)])
def test_wilson_is_the_root_of_the_score_equation(count, n):
    assert wilson(count, n) == pytest.approx(wilson_by_bisection(count, n), abs=1e-12)


def test_wilson_edge_cases():
    assert wilson(0, 0) is None and ci95(0, 0) is None  # nothing scored: no interval
    low, high = wilson(0, 10)
    assert low == 0.0 and high == pytest.approx(Z95 ** 2 / (10 + Z95 ** 2))
    low, high = wilson(10, 10)
    assert high == 1.0 and low == pytest.approx(10 / (10 + Z95 ** 2))
    assert ci95(1, 1) == [round(1 / (1 + Z95 ** 2), 6), 1.0]  # a group of one: very wide


# --- Holm ------------------------------------------------------------------------------------


def test_holm_steps_down_and_stays_monotone():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 -> 0.02, 0.03, 0.06, then max(0.04, 0.06)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == [1.0, 1.0]  # capped at 1
    assert holm([]) == []


# --- the summary ----------------------------------------------------------------------------


def tally(groups: dict[str, tuple[int, int]]) -> Summary:
    """A summary with, per group, (happy, sad) scored rows."""
    summary = Summary(["happy", "sad"])
    for group, (happy, sad) in groups.items():
        for label, n in (("happy", happy), ("sad", sad)):
            for _ in range(n):
                summary.add({"group": group, "label": label, "confidence": 0.9, "error": None})
    return summary


def test_the_summary_gives_every_share_its_interval_and_every_pair_a_test():
    data = tally({"a": (48, 52), "b": (62, 38), "c": (1, 0)}).to_dict()
    assert data["groups"]["a"]["labels"]["happy"]["ci95"] == ci95(48, 100)
    assert data["groups"]["c"]["labels"]["sad"]["ci95"] == [0.0, round(wilson(0, 1)[1], 6)]
    assert data["overall"]["labels"]["happy"]["ci95"] == ci95(111, 201)
    pairs = [(c["label"], c["a"], c["b"]) for c in data["comparisons"]]
    assert pairs == [(lab, a, b) for lab in ("happy", "sad")
                     for a, b in (("a", "b"), ("a", "c"), ("b", "c"))]
    ab = data["comparisons"][0]
    assert (ab["share_a"], ab["share_b"], ab["difference"]) == (0.48, 0.62, -0.14)
    p = [fisher_by_enumeration(48, 52, 62, 38), fisher_by_enumeration(48, 52, 1, 0),
         fisher_by_enumeration(62, 38, 1, 0)]
    assert [c["p_value"] for c in data["comparisons"][:3]] == pytest.approx(p, rel=1e-9)
    assert ab["p_adjusted"] == pytest.approx(min(1, 3 * p[0]))  # the smallest of three pairs
    assert ab["significant"] is (ab["p_adjusted"] < 0.05)
    assert data["comparisons_left_out"] == []


def test_one_group_has_no_comparisons_and_an_empty_group_is_left_out():
    assert tally({"only": (3, 4)}).to_dict()["comparisons"] == []
    summary = tally({"a": (3, 4), "b": (5, 1)})
    summary.add({"group": "broken", "label": None, "confidence": None, "error": "bad"})
    data = summary.to_dict()
    assert {(c["a"], c["b"]) for c in data["comparisons"]} == {("a", "b")}
    assert data["comparisons_left_out"] == ["broken"]  # nothing scored: no share to compare
    assert data["groups"]["broken"]["labels"]["happy"]["ci95"] is None


def test_comparisons_are_bounded_to_the_largest_groups_and_bounded_keeps_them_consistent():
    sizes = {"g1": (30, 20), "g2": (10, 30), "g3": (12, 12), "g4": (5, 5), "g5": (1, 2)}
    data = tally(sizes).to_dict(compare_max_groups=3)
    assert {c["a"] for c in data["comparisons"]} | {c["b"] for c in data["comparisons"]} == \
        {"g1", "g2", "g3"}
    assert len(data["comparisons"]) == 2 * 3
    assert data["comparisons_left_out"] == ["g4", "g5"]
    # the record keeps 2 groups: only their pair, with summary.json's very figures
    small = bounded(data, 2)
    assert list(small["groups"]) == ["g1", "g2"]
    assert small["comparisons"] == [c for c in data["comparisons"] if {c["a"], c["b"]} ==
                                    {"g1", "g2"}]
    assert small["comparisons_left_out"] == []  # the other groups are in other_groups
    assert small["other_groups"]["labels"]["happy"]["ci95"] == ci95(18, 37)
    assert compare(data["groups"], ["happy"], []) == []


def test_summary_csv_has_one_row_per_group_and_label_and_is_safe_in_a_spreadsheet():
    summary = tally({"=HYPERLINK(1)": (2, 1), "b": (0, 3)})
    summary.add({"group": "dead", "label": None, "confidence": None, "error": "bad"})
    text = summary_csv(summary.to_dict())
    assert text.splitlines() == [
        "group,label,count,share,ci95_low,ci95_high",
        f"'=HYPERLINK(1),happy,2,{round(2 / 3, 6)},{ci95(2, 3)[0]},{ci95(2, 3)[1]}",
        f"'=HYPERLINK(1),sad,1,{round(1 / 3, 6)},{ci95(1, 3)[0]},{ci95(1, 3)[1]}",
        f"b,happy,0,0.0,0.0,{ci95(0, 3)[1]}",
        f"b,sad,3,1.0,{ci95(3, 3)[0]},1.0",
        "dead,happy,0,0.0,,",  # nothing scored: no interval
        "dead,sad,0,0.0,,"]
