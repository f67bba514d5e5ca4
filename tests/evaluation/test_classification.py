"""classification_metrics against hand counts and mdistiller's accuracy()."""

import numpy as np
import pytest
import torch

from distillery.evaluation import classification_metrics


def test_hand_computed():
    logits = [[3.0, 1.0, 2.0], [0.0, 5.0, 1.0], [1.0, 2.0, 3.0]]
    out = classification_metrics(np.array(logits), np.array([2, 1, 0]), ks=(1, 2))
    assert out == pytest.approx({"top1": 100 / 3, "top2": 200 / 3})


def test_golden_mdistiller_accuracy():
    # mdistiller engine/utils.py accuracy(output, target, topk=(1, 5)) -> 14.0, 54.0
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(50, 10, generator=g)
    labels = torch.randint(0, 10, (50,), generator=g)
    assert classification_metrics(logits, labels) == pytest.approx({"top1": 14.0, "top5": 54.0}, rel=1e-6)


def test_topk_monotone_and_full_k():
    g = torch.Generator().manual_seed(3)
    logits, labels = torch.randn(30, 4, generator=g), torch.randint(0, 4, (30,), generator=g)
    out = classification_metrics(logits, labels, ks=(1, 2, 4))
    assert out["top1"] <= out["top2"] <= out["top4"] == 100.0


def test_errors():
    with pytest.raises(ValueError, match="number of classes"):
        classification_metrics(torch.zeros(2, 3), torch.tensor([0, 1]), ks=(1, 5))
    with pytest.raises(ValueError, match="labels must lie"):
        classification_metrics(torch.zeros(2, 3), torch.tensor([0, 3]), ks=(1,))
    with pytest.raises(ValueError, match="N x C"):
        classification_metrics(torch.zeros(2, 3), torch.tensor([0]), ks=(1,))
