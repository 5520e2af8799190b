"""Accuracy protocols (spec §8) on hand-made numbers."""

from __future__ import annotations

import pytest

from scorers.accuracy import (
    hpdv2_ranking_accuracy,
    imagereward_accuracy,
    inversion_score,
    pairwise_probs,
    pickapic_accuracy,
    pickapic_chance,
    pickapic_tuned_accuracy,
    predicted_ranks,
    unique_pairs_accuracy,
)


def test_predicted_ranks_and_inversions():
    assert predicted_ranks([0.1, 0.9, 0.5]) == [2, 0, 1]
    assert predicted_ranks([0.5, 0.5, 0.1]) == [0, 1, 2]  # stable on ties
    assert inversion_score([0, 1, 2], [0, 1, 2]) == 1.0
    assert inversion_score([0, 1, 2], [2, 1, 0]) == 0.0
    assert inversion_score([0, 1, 2], [1, 0, 2]) == pytest.approx(2 / 3)
    assert inversion_score([0, 1, 2], [1, 1, 2]) == 1.0  # GT tie is never an inversion


def test_hpdv2_ranking_accuracy_macro():
    # prompt A: 3 images, GT ranks (lower = better) [1, 2, 3], scores in the right order -> 1.0
    # prompt B: 4 images, GT [1, 2, 2, 4]; scores give predicted ranks [1, 0, 2, 3]: pair (0,1) inverted,
    #           pair (1,2) tied in GT -> not an inversion: 1 - 1/6
    acc = hpdv2_ranking_accuracy([[3.0, 2.0, 1.0], [0.8, 0.9, 0.3, 0.1]], [[1, 2, 3], [1, 2, 2, 4]])
    assert acc == pytest.approx((1.0 + 5 / 6) / 2)
    with pytest.raises(ValueError, match="prompt 0: 2 scores but 3 ranks"):
        hpdv2_ranking_accuracy([[1.0, 2.0]], [[1, 2, 3]])


def test_imagereward_accuracy_micro_skips_gt_ties_pred_ties_wrong():
    # prompt A: GT [1, 2, 2]: pairs (0,1), (0,2) counted, (1,2) skipped. scores [0.9, 0.5, 0.9]:
    #   (0,1) correct; (0,2) predicted tie -> wrong
    # prompt B: GT [2, 1]: scores [0.2, 0.4] -> correct
    acc = imagereward_accuracy([[0.9, 0.5, 0.9], [0.2, 0.4]], [[1, 2, 2], [2, 1]])
    assert acc == pytest.approx(2 / 3)  # micro: 2 correct of 3 pairs (macro would be (1/2 + 1) / 2)
    assert unique_pairs_accuracy([[0.9, 0.5, 0.9], [0.2, 0.4]], [[1, 2, 2], [2, 1]]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="no pairs"):
        imagereward_accuracy([[1.0, 2.0]], [[1, 1]])


def test_pickapic_accuracy_with_ties():
    p0 = [0.9, 0.3, 0.52, 0.5, 0.7]
    p1 = [0.1, 0.7, 0.48, 0.5, 0.3]
    label = [1, 1, 0.5, 0, 0.5]
    # t=0: [right=1, wrong=0, gt tie & pred non-tie=0.5, pred tie & gt non-tie=0.5, gt tie & pred non-tie=0.5]
    assert pickapic_accuracy(p0, p1, label, threshold=0.0) == pytest.approx(2.5 / 5)
    # t=0.1: row 2 becomes a predicted tie (|0.04| <= 0.1) matching the GT tie -> 1
    assert pickapic_accuracy(p0, p1, label, threshold=0.1) == pytest.approx(3.0 / 5)
    # t=1: everything is a predicted tie: GT ties 1, others 0.5
    assert pickapic_accuracy(p0, p1, label, threshold=1.0) == pytest.approx((0.5 + 0.5 + 1 + 0.5 + 1) / 5)
    with pytest.raises(ValueError, match="label_0 must be 0, 0.5 or 1"):
        pickapic_accuracy([0.6], [0.4], [0.7])


def test_pickapic_tuned_threshold_and_chance():
    val = ([0.52, 0.9], [0.48, 0.1], [0.5, 1])  # best at t >= 0.1 (first best: 0.1)
    test = ([0.55, 0.2], [0.45, 0.8], [0.5, 1])
    tuned = pickapic_tuned_accuracy(val, test)
    assert tuned.threshold == 0.1 and tuned.validation == 1.0
    assert tuned.test == pytest.approx((1 + 0) / 2)
    assert pickapic_chance(0.0, 10, 100) == pytest.approx(0.5)
    assert pickapic_chance(1.0, 10, 100) == pytest.approx(0.1 + 0.45)


def test_pairwise_probs_is_softmax():
    p0, p1 = pairwise_probs([2.0, 0.0], [0.0, 0.0])
    assert float(p0[0]) == pytest.approx(1 / (1 + 2.718281828459045 ** -2))
    assert float(p0[1]) == pytest.approx(0.5) and float(p1[1]) == pytest.approx(0.5)
