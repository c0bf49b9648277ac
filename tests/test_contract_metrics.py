"""A version's validation metrics against values worked out by hand: the confusion matrix's rows
are true classes and its columns predictions (as the CLI prints it), precision is per predicted
column, recall per true row."""

from __future__ import annotations

import math

import pytest
import torch

from trainer.engine import metrics_from

# Truth -> predictions, written out: a: a a a b b; b: b b c; c: a c c c c
PAIRS = [(0, 0)] * 3 + [(0, 1)] * 2 + [(1, 1)] * 2 + [(1, 2)] + [(2, 0)] + [(2, 2)] * 4


def logits_for(predictions: list[int], k: int) -> torch.Tensor:
    """Logits whose softmax gives the predicted class 1/2 and each other class of 3 1/4."""
    out = torch.zeros((len(predictions), k))
    out[torch.arange(len(predictions)), torch.tensor(predictions)] = math.log(2)
    return out


def test_metrics_of_a_three_class_validation_set_match_the_hand_computed_ones():
    y = torch.tensor([t for t, _ in PAIRS])
    metrics = metrics_from(logits_for([p for _, p in PAIRS], 3), y, ["a", "b", "c"])
    assert metrics["confusion_matrix"] == [[3, 2, 0],  # true a
                                           [0, 2, 1],  # true b
                                           [1, 0, 4]]  # true c
    # a: 3 right of 4 predicted a (precision), of 5 truly a (recall)
    # b: 2 of 4 predicted b, of 3 truly b; c: 4 of 5 predicted c, of 5 truly c
    expected = {"a": (3 / 4, 3 / 5, 5), "b": (2 / 4, 2 / 3, 3), "c": (4 / 5, 4 / 5, 5)}
    for name, (p, r, support) in expected.items():
        assert metrics["per_class"][name] == {
            "precision": pytest.approx(p, abs=1e-4), "recall": pytest.approx(r, abs=1e-4),
            "f1": pytest.approx(2 * p * r / (p + r), abs=1e-4), "support": support}, name
    assert metrics["per_class"]["a"]["f1"] == pytest.approx(0.6667, abs=1e-4)
    assert metrics["per_class"]["b"]["f1"] == pytest.approx(0.5714, abs=1e-4)
    assert metrics["accuracy"] == pytest.approx(9 / 13, abs=1e-5)
    # cross-entropy: -ln(1/2) for the 9 right, -ln(1/4) for the 4 wrong
    assert metrics["loss"] == pytest.approx((9 * math.log(2) + 4 * math.log(4)) / 13, abs=1e-5)


def test_a_class_never_predicted_has_zero_precision_and_f1_not_an_error():
    y = torch.tensor([0, 0, 1, 1, 1])
    metrics = metrics_from(logits_for([0, 0, 0, 0, 1], 2), y, ["happy", "sad"])
    assert metrics["confusion_matrix"] == [[2, 0], [2, 1]]
    assert metrics["per_class"]["happy"] == {"precision": pytest.approx(0.5),
                                             "recall": 1.0, "f1": pytest.approx(0.6667, abs=1e-4),
                                             "support": 2}
    assert metrics["per_class"]["sad"] == {"precision": 1.0, "recall": pytest.approx(0.3333, abs=1e-4),
                                           "f1": pytest.approx(0.5), "support": 3}
    none = metrics_from(logits_for([0, 0, 0], 2), torch.tensor([0, 1, 1]), ["happy", "sad"])
    assert none["per_class"]["sad"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
