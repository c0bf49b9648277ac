"""The precision benchmark's decisions: agreement with fp32 and when a precision may be default."""

from __future__ import annotations

import numpy as np
import pytest

from bench.precision import agreement, eligible, judge


def test_precision_agreement_counts_labels_and_the_largest_probability_gap():
    reference = np.array([[0.9, 0.1], [0.2, 0.8], [0.51, 0.49], [0.3, 0.7]])
    probs = np.array([[0.89, 0.11], [0.2, 0.8], [0.49, 0.51], [0.3, 0.7]], np.float32)
    got = agreement(reference, probs)
    assert got["label_agreement"] == 0.75  # the near tie flipped
    assert got["max_prob_diff"] == pytest.approx(0.02, abs=1e-4)
    assert agreement(reference, reference.astype(np.float32))["label_agreement"] == 1.0


@pytest.mark.parametrize("figures, expected", [
    ({"images_per_s": 200, "label_agreement": 0.996, "max_prob_diff": 0.009}, True),
    ({"images_per_s": 200, "label_agreement": 0.99, "max_prob_diff": 0.009}, False),
    ({"images_per_s": 200, "label_agreement": 1.0, "max_prob_diff": 0.02}, False),
    ({"images_per_s": 50, "label_agreement": 1.0, "max_prob_diff": 0.0}, False),  # slower
])
def test_a_reduced_precision_is_eligible_as_default_only_if_faster_and_close(figures, expected):
    assert eligible(figures, fp32_rate=100) is expected


def test_judging_marks_fp32_as_the_reference_and_decides_on_unrounded_figures():
    precisions = {"fp32": {"images_per_s": 100.0, "label_agreement": 1.0, "max_prob_diff": 0.0,
                           "mean_prob_diff": 0.0},
                  "bf16": {"images_per_s": 300.04, "label_agreement": 0.99496,
                           "max_prob_diff": 0.001, "mean_prob_diff": 0.0001}}
    judge(precisions)
    assert precisions["fp32"]["eligible_as_default"] is None
    assert precisions["bf16"]["eligible_as_default"] is False  # 99.496 % rounds up, yet fails
    assert precisions["bf16"]["label_agreement"] == 0.995 and precisions["bf16"]["x_fp32"] == 3.0
