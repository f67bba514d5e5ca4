"""retrieval_metrics: hand-computed rankings, the full-matrix oracle, and golden values of the official code."""

import numpy as np
import pytest
import torch

from distillery.evaluation import METRIC_DEFINITIONS, metric_definition, retrieval_metrics
from distillery.evaluation.reference import naive_retrieval_metrics

KEYS = ["map", "recall_at_1", "recall_at_5", "recall_at_10", "map_at_r", "r_precision", "minp"]


def signs(*rows: str) -> np.ndarray:
    """Rows like "++-+" -> 0.5 * signs: unit vectors whose dot products (multiples of 1/4) are exact."""
    return np.array([[0.5 if c == "+" else -0.5 for c in r] for r in rows], dtype=np.float32)


def assert_metrics(out, expected, rel=1e-6):
    for key, value in expected.items():
        assert out[key] == pytest.approx(value, rel=rel, abs=1e-9), key


def test_hand_computed_separate_query_gallery():
    # query 0 (label 0) ranks g1, g0, g2, g4, g3 -> relevant at 1, 3, 5 of R = 3
    # query 1 (label 2) ranks g3, g4, g2, g0, g1 -> relevant at 2 of R = 1; query 2 (label 9) has no match
    gallery = signs("+++-", "++++", "++--", "----", "+---")
    g_labels = [1, 0, 0, 0, 2]
    query = signs("++++", "----", "+-+-")
    out = retrieval_metrics(query, [0, 2, 9], gallery, g_labels, exclude_self=False)
    ap0, ap1 = (1 + 2 / 3 + 3 / 5) / 3, 1 / 2
    assert_metrics(out, {
        "map": 100 * (ap0 + ap1) / 2, "recall_at_1": 50.0, "recall_at_5": 100.0, "recall_at_10": 100.0,
        "minp": 100 * (3 / 5 + 1 / 2) / 2, "map_at_r": 100 * ((1 + 2 / 3) / 3 + 0) / 2,
        "r_precision": 100 * (2 / 3 + 0) / 2, "n_queries": 3, "n_queries_without_match": 1,
    })


def test_ties_are_broken_by_gallery_index():
    # all three gallery items at cosine 0.5: ranking g0 (negative), g1, g2 -> AP = (1/2 + 2/3) / 2
    out = retrieval_metrics(signs("++++"), [0], signs("+++-", "++-+", "+-++"), [1, 0, 0], exclude_self=False)
    assert out["map"] == pytest.approx(100 * (1 / 2 + 2 / 3) / 2)
    assert out["recall_at_1"] == 0.0
    # the same items with the negative last: a perfect ranking
    out = retrieval_metrics(signs("++++"), [0], signs("++-+", "+-++", "+++-"), [0, 0, 1], exclude_self=False)
    assert out["map"] == pytest.approx(100.0)


def test_exclude_self_by_index_and_singleton_class():
    x = signs("++++", "+++-", "----", "++--", "+-+-")
    labels = [0, 0, 1, 1, 5]  # label 5 is a singleton: no match once its own item is removed
    out = retrieval_metrics(x, labels, x, labels, exclude_self=True)
    # query 3 ranks x1 (d .5), x0, x2, x4 (all d 1, by index) -> its relevant x2 at rank 3; the others rank 1
    assert_metrics(out, {
        "map": 100 * (3 + 1 / 3) / 4, "recall_at_1": 75.0, "recall_at_5": 100.0, "minp": 100 * (3 + 1 / 3) / 4,
        "map_at_r": 75.0, "r_precision": 75.0, "n_queries": 5, "n_queries_without_match": 1,
    })
    # without removal every query finds itself first
    assert retrieval_metrics(x, labels, x, labels, exclude_self=False)["recall_at_1"] == 100.0


def test_exclude_self_uses_index_not_distance():
    # two identical items of one class: removing "the nearest" could drop the other copy, by index it cannot
    x = signs("++++", "++++", "----")
    out = retrieval_metrics(x, [0, 0, 1], x, [0, 0, 1], exclude_self=True)
    assert out["map"] == 100.0 and out["n_queries_without_match"] == 1


def test_cameras_remove_same_label_same_camera():
    query, gallery = signs("++++"), signs("++++", "+++-", "++-+", "----")
    labels, cams = [0, 0, 3, 0], [0, 1, 0, 0]
    # g0 and g3 (label 0, camera 0) are dropped; g1 (relevant) ties g2 and wins by index -> AP 1
    out = retrieval_metrics(query, [0], gallery, labels, exclude_self=False, query_cams=[0], gallery_cams=cams)
    assert out["map"] == 100.0 and out["minp"] == 100.0
    # without cameras: relevant at ranks 1, 2, 4
    out = retrieval_metrics(query, [0], gallery, labels, exclude_self=False)
    assert out["map"] == pytest.approx(100 * (1 + 1 + 3 / 4) / 3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_full_matrix_oracle(seed):
    rng = np.random.default_rng(seed)
    n = 70
    if seed == 2:  # heavy exact ties
        x = np.zeros((n, 6), np.float32)
        for row in x:
            row[rng.choice(6, 4, replace=False)] = rng.choice([-0.5, 0.5], 4)
    else:
        x = rng.standard_normal((n, 5)).astype(np.float32)
    labels, cams = rng.integers(0, 8, n), rng.integers(0, 3, n)
    for kwargs in ({"exclude_self": True}, {"exclude_self": False, "query_cams": cams, "gallery_cams": cams},
                   {"exclude_self": True, "query_cams": cams, "gallery_cams": cams}):
        ref = naive_retrieval_metrics(x, labels, x, labels, ks=(1, 3, 10), **kwargs)
        for block in (1, 1 << 20):  # one query per block, all queries in one block
            out = retrieval_metrics(x, labels, x, labels, ks=(1, 3, 10), block_elements=block, **kwargs)
            assert out == pytest.approx(ref, rel=1e-12, abs=1e-12)
    ref = naive_retrieval_metrics(x[:20], labels[:20], x[20:], labels[20:], exclude_self=False)
    assert retrieval_metrics(x[:20], labels[:20], x[20:], labels[20:], exclude_self=False) == pytest.approx(ref)


def _seeded():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(90, 8, generator=g)
    labels = torch.randint(0, 7, (90,), generator=g)
    cams = torch.randint(0, 3, (90,), generator=g)
    y = x + 0.5 * torch.randn(90, 8, generator=g)
    return x, y, labels, cams


# Golden values: D3still utils/rank.py eval_market1501 on 1 - cos (float32, as R1_mAP_eval), exclusion via
# camids (unique per image = exclude self); pytorch-metric-learning 2.9 AccuracyCalculator(k=None).
def test_golden_d3still_exclude_self():
    x, _, labels, _ = _seeded()
    out = retrieval_metrics(x, labels, x, labels, exclude_self=True)
    assert_metrics(out, {"map": 18.266758005150844, "minp": 16.153243579452187, "recall_at_1": 11.111112,
                         "recall_at_5": 48.88889, "recall_at_10": 75.55556, "n_queries_without_match": 0}, rel=1e-5)


def test_golden_d3still_asymmetric_query_gallery():
    x, y, labels, _ = _seeded()  # query = "student" y, gallery = "teacher" x of the same 90 samples
    out = retrieval_metrics(y, labels, x, labels, exclude_self=True)
    assert_metrics(out, {"map": 18.77121913865626, "minp": 16.234328539144407, "recall_at_1": 14.444445,
                         "recall_at_5": 52.22222, "recall_at_10": 72.22222}, rel=1e-5)


def test_golden_d3still_cameras():
    x, _, labels, cams = _seeded()
    out = retrieval_metrics(x, labels, x, labels, exclude_self=False, query_cams=cams, gallery_cams=cams)
    assert_metrics(out, {"map": 14.549356252955835, "minp": 11.920135775840961, "recall_at_1": 10.0,
                         "recall_at_5": 38.88889, "recall_at_10": 67.77778}, rel=1e-5)


def test_golden_d3still_and_pml_separate_sets():
    x, _, labels, _ = _seeded()
    out = retrieval_metrics(x[:30].numpy(), labels[:30].numpy(), x[30:].numpy(), labels[30:].numpy(),
                            exclude_self=False)
    assert_metrics(out, {"map": 19.522414705443545, "minp": 16.541171665938037, "recall_at_1": 13.333334,
                         "recall_at_5": 66.66667, "recall_at_10": 93.333336, "map_at_r": 5.6079301225495,
                         "r_precision": 14.756535947712418, "n_queries": 30}, rel=1e-5)


def test_golden_pml_same_set():
    x, _, labels, _ = _seeded()
    out = retrieval_metrics(x, labels, x, labels, exclude_self=True)
    assert_metrics(out, {"map_at_r": 4.56304790595823, "r_precision": 13.683942600609267,
                         "recall_at_1": 11.11111111111111}, rel=1e-5)


def test_invariances():
    x, _, labels, _ = _seeded()
    base = retrieval_metrics(x, labels, x, labels, exclude_self=True)
    scaled = x * (0.5 + torch.rand(90, 1, generator=torch.Generator().manual_seed(4)))  # cosine unchanged
    assert retrieval_metrics(scaled, labels, scaled, labels, exclude_self=True) == pytest.approx(base, rel=1e-6)
    assert retrieval_metrics(x.double().numpy(), labels.numpy(), x.numpy(), labels.tolist(),
                             exclude_self=True) == pytest.approx(base, rel=1e-6)
    q = retrieval_metrics(x[:10], labels[:10], x[10:], labels[10:], exclude_self=False)
    g_perm = 10 + torch.randperm(80, generator=torch.Generator().manual_seed(5))  # tie-free data: order-free
    assert retrieval_metrics(x[:10], labels[:10], x[g_perm], labels[g_perm], exclude_self=False) == pytest.approx(q)
    relabel = retrieval_metrics(x, labels * 7 + 100, x, labels * 7 + 100, exclude_self=True)
    assert relabel == pytest.approx(base)


def test_string_labels_and_large_k():
    x = signs("++++", "+++-", "----")
    out = retrieval_metrics(x, ["a", "a", "b"], x, ["a", "a", "b"], exclude_self=False, ks=(1, 100))
    assert out["recall_at_100"] == 100.0 and out["map"] == 100.0


def test_errors():
    x = signs("++++", "+++-")
    with pytest.raises(ValueError, match="no query"):
        retrieval_metrics(x, [0, 1], x, [0, 1], exclude_self=True)
    with pytest.raises(ValueError, match="same samples"):
        retrieval_metrics(x, [0, 0], x[:1], [0], exclude_self=True)
    with pytest.raises(ValueError, match="same samples"):
        retrieval_metrics(x, [0, 0], x, [0, 1], exclude_self=True)
    with pytest.raises(ValueError, match="both"):
        retrieval_metrics(x, [0, 0], x, [0, 0], exclude_self=True, query_cams=[0, 0])
    with pytest.raises(ValueError, match="NaN"):
        retrieval_metrics(np.full((2, 4), np.nan), [0, 0], x, [0, 0], exclude_self=False)
    with pytest.raises(ValueError, match="sizes"):
        retrieval_metrics(x[:, :3], [0, 0], x, [0, 0], exclude_self=False)
    with pytest.raises(ValueError, match="one entry"):
        retrieval_metrics(x, [0], x, [0, 0], exclude_self=False)
    with pytest.raises(ValueError, match="positive"):
        retrieval_metrics(x, [0, 0], x, [0, 0], exclude_self=False, ks=(0,))


def test_metric_definitions_cover_every_key():
    x, _, labels, _ = _seeded()
    for key in retrieval_metrics(x, labels, x, labels, exclude_self=True, ks=(1, 2, 4, 8)):
        assert key in METRIC_DEFINITIONS
    assert "37" in metric_definition("recall_at_37")
    with pytest.raises(KeyError):
        metric_definition("bogus")
