"""DML metrics: S2SD's mAP_c (official golden value and hand values) and the combined dml_metrics report."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from distillery.evaluation import nmi, retrieval_metrics
from distillery.evaluation.dml import DML_METRIC_DEFINITIONS, dml_metrics, map_c_s2sd


def _seeded():
    g = torch.Generator().manual_seed(11)
    labels = torch.tensor([0] * 5 + [1] * 4 + [2] * 3 + [3] * 2 + [4])  # class 4 is a singleton
    centers = torch.randn(5, 8, generator=g)
    return F.normalize(torch.randn(15, 8, generator=g) + centers[labels], dim=1), labels


def test_map_c_matches_official_golden():
    # S2SD metrics/mAP_c.py Metric()(labels, embeddings) on these inputs (numpy, faiss IndexFlatL2): 0.500222...
    emb, labels = _seeded()
    assert map_c_s2sd(emb, labels) == pytest.approx(100 * 0.5002222222222223, rel=1e-9)
    assert map_c_s2sd(emb, labels, block_elements=20) == pytest.approx(100 * 0.5002222222222223, rel=1e-9)


def test_map_c_hand_values():
    # 1-d points on a circle: angles 0, 10, 20 (class a), 100, 110 (class b)
    angles = np.deg2rad([0, 10, 20, 100, 110])
    emb = np.stack([np.cos(angles), np.sin(angles)], 1)
    labels = ["a", "a", "a", "b", "b"]
    # perfect ranking: each a-query finds its 2 classmates first: (1/3)(1 + 1) = 2/3; b: (1/2)(1) = 1/2
    assert map_c_s2sd(emb, labels) == pytest.approx(100 * (3 * 2 / 3 + 2 * 0.5) / 5)
    # labels a b a a b: windows n = 3 (a) / 2 (b) over the other items by angular distance:
    # q0 [b a a] -> (1/2 + 2/3)/3 = 7/18; q1 [a a] -> 0; q2 [b a a] -> 7/18; q3 (100°) [b a b] -> (1/2)/3; q4 [a a] -> 0
    assert map_c_s2sd(emb, ["a", "b", "a", "a", "b"]) == pytest.approx(100 * 17 / 90)


def test_map_c_relation_to_map_at_r():
    """On data where the rank-n term is 0, map_c = MAP@R * R / n per query; with one class size: a fixed ratio."""
    emb, labels = _seeded()
    keep = labels < 2  # classes of 5 and 4 items
    emb, labels = emb[keep], labels[keep]
    ret = retrieval_metrics(emb, labels, emb, labels, exclude_self=True)
    assert map_c_s2sd(emb, labels) <= ret["map_at_r"]
    perfect = torch.tensor([[1.0, 0.0]] * 3 + [[0.0, 1.0]] * 3)  # duplicates: ties broken by index
    assert map_c_s2sd(perfect + 1e-3 * torch.arange(6.0)[:, None], [0, 0, 0, 1, 1, 1]) == pytest.approx(100 * 2 / 3)


def test_dml_metrics_report():
    emb, labels = _seeded()
    out = dml_metrics(emb, labels, seed=1234)
    ret = retrieval_metrics(emb, labels, emb, labels, exclude_self=True, ks=(1, 2, 4, 8))
    assert {k: out[k] for k in ret} == ret
    assert set(out) == set(ret) | {"map_c_s2sd", "nmi"}
    assert out["nmi"] == nmi(emb, labels, seed=1234)
    assert out["map_c_s2sd"] == map_c_s2sd(emb, labels)
    assert "nmi" not in dml_metrics(emb, labels, nmi=False)
    assert set(DML_METRIC_DEFINITIONS) == {"map_c_s2sd"}
    with pytest.raises(ValueError, match="one entry"):
        map_c_s2sd(emb, labels[:3])
