"""Video retrieval (whiten_mtd SVD): chamfer / pooled similarity and map_top{k} / map_topinf by hand, golden
values of the official evaluator (datasets/svd/eval.py DistEvaluator, single process), layout and blocking
invariances, the test view and the error cases."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from distillery.evaluation import METRIC_DEFINITIONS, chamfer_similarity, video_retrieval_metrics, video_similarity
from distillery.evaluation.video import group_frames, svd_test_view

R2 = 1 / math.sqrt(2)


def flat(*videos):
    """(N_frames x D float32, lengths) of videos given as lists of frames."""
    return np.array([f for v in videos for f in v], np.float32), np.array([len(v) for v in videos])


def padded(feats, lengths, width):
    out = np.full((len(lengths), width, feats.shape[1]), 7.0, np.float32)  # junk past each length
    for i, (s, n) in enumerate(zip(np.cumsum(lengths) - lengths, lengths)):
        out[i, :n] = feats[s:s + n]
    return out


# ---------------------------------------------------------------- similarities by hand
def test_chamfer_by_hand_and_asymmetry():
    q, ql = flat([[1, 0], [0, 2]], [[1, 0]])
    g, gl = flat([[3, 0], [1, 1]], [[0, -1]], [[1, 0], [0, 1]])
    s = chamfer_similarity(q, ql, g, gl)
    # q0 vs g0: frame (1,0) best 1; frame (0,1) best cos 45 deg -> (1 + 1/sqrt2) / 2
    assert s[0, 0] == pytest.approx((1 + R2) / 2)
    assert s[0, 1] == pytest.approx((0 - 1) / 2)
    assert s[1, 2] == pytest.approx(1.0)
    back = chamfer_similarity(g, gl, q, ql)  # g2 as query against q1: frames (1,0) -> 1, (0,1) -> 0
    assert back[2, 1] == pytest.approx(0.5) and s[1, 2] != back[2, 1]
    assert s.dtype == np.float32 and s.shape == (2, 3)


def test_pooled_vectors_pool_raw_frames_then_normalise():
    q, ql = flat([[1, 0]])
    g, gl = flat([[3, -1], [0, 1]])
    # mean of raw frames (1.5, 0) -> cos 1 (normalising frames first would give (0.47, 0.18): cos 0.93)
    assert video_similarity(q, ql, g, gl, similarity="mean")[0, 0] == pytest.approx(1.0)
    # elementwise max (3, 1) -> cos 3 / sqrt(10)
    assert video_similarity(q, ql, g, gl, similarity="max")[0, 0] == pytest.approx(3 / math.sqrt(10))


@pytest.mark.parametrize("similarity", ["chamfer", "mean", "max"])
def test_layouts_blocks_and_invariances(similarity):
    rng = np.random.default_rng(0)
    ql, gl = np.array([3, 1, 4]), np.array([2, 5, 1, 3, 2])
    q = rng.standard_normal((ql.sum(), 6)).astype(np.float32)
    g = rng.standard_normal((gl.sum(), 6)).astype(np.float32)
    s = video_similarity(q, ql, g, gl, similarity=similarity)
    assert np.allclose(video_similarity(q, ql, g, gl, similarity=similarity, block_elements=1), s, atol=1e-6)
    assert np.allclose(video_similarity(padded(q, ql, 5), ql, torch.tensor(padded(g, gl, 6)), torch.tensor(gl),
                                        similarity=similarity), s, atol=1e-6)
    assert np.allclose(video_similarity(q.astype(np.float64), ql, g, gl, similarity=similarity), s, atol=1e-6)
    if similarity == "chamfer":  # frame scale and frame order do not matter
        assert np.allclose(video_similarity(q * 5, ql, g[::-1].copy(), gl[::-1].copy())[:, ::-1], s, atol=1e-6)
        brute = [[(F.normalize(torch.tensor(a), dim=1) @ F.normalize(torch.tensor(b), dim=1).T).max(1).values.mean()
                  for b in np.split(g, np.cumsum(gl)[:-1])] for a in np.split(q, np.cumsum(ql)[:-1])]
        assert np.allclose(s, np.array(brute), atol=1e-6)


# ---------------------------------------------------------------- metrics by hand
def angles(*cosines):
    """One 1-frame video per cosine: its cosine with the query frame (1, 0) is exactly that value."""
    return flat(*[[[c, math.sqrt(max(0.0, 1 - c * c))]] for c in cosines])


def test_ap_by_hand_with_distractors_and_cutoffs():
    q, ql = flat([[1, 0]], [[1, 0]])
    ids = ["l0", "l1", "l2", "l3", "u0", "u1", "u2"]
    g, gl = angles(0.9, 0.8, 0.6, 0.99, 0.95, 0.85, 0.7)
    gt = {"a": {"l0": 1, "l1": 0, "l2": 1}, "b": {"l1": 0, "l3": 0}}
    out = video_retrieval_metrics(q, ql, ["a", "b"], g, gl, ids, gt, distractors=[0, 0, 0, 0, 1, 1, 1], ks=(1, 3))
    # query a: l3 is not in its ground truth, so its list is u0 .95, l0 .9 (1), u1 .85, l1 .8, u2 .7, l2 .6 (1)
    ap_a = {"inf": (1 / 2 + 2 / 6) / 2, 3: (1 / 2) / 1, 1: 0.0}  # AP divides by the relevant items within the cut
    # query b has no relevant item: AP 0, still averaged in
    for k, ap in ap_a.items():
        assert out[f"map_top{k}"] == pytest.approx(100 * ap / 2)
    assert (out["n_queries"], out["n_queries_without_positive"]) == (2, 1)
    assert set(out) == {"map_top1", "map_top3", "map_topinf", "n_queries", "n_queries_without_positive"}
    subset = video_retrieval_metrics(q, ql, ["a", "b"], g[:4], gl[:4], ids[:4], gt)  # no distractors
    assert subset["map_top100"] == pytest.approx(100 * (1 + 2 / 3) / 2 / 2)


def test_ties_and_distractor_labels_follow_the_official_list_order():
    q, ql = flat([[1, 0]])
    g, gl = flat([[2, 0]], [[1, 0]], [[1, 0]])  # three exact ties
    gt = {"a": {"x": 1, "y": 0, "z": 1}}
    # labeled entries before distractors: x (1) first whatever its gallery position
    assert video_retrieval_metrics(q, ql, ["a"], g, gl, ["z", "y", "x"], gt,
                                   distractors=[1, 1, 0])["map_top100"] == pytest.approx(100.0)
    # among labeled entries, gallery order: y (0) then x (1) -> AP 1/2; z as a distractor counts as label 0
    out = video_retrieval_metrics(q, ql, ["a"], g, gl, ["y", "x", "z"], gt, distractors=[0, 0, 1])
    assert out["map_top100"] == pytest.approx(50.0)
    # a gallery id listed twice enters the list twice (as the official loop does)
    out = video_retrieval_metrics(q, ql, ["a"], g, gl, ["y", "x", "x"], gt)
    assert out["map_topinf"] == pytest.approx(100 * (1 / 2 + 2 / 3) / 2)


# ---------------------------------------------------------------- golden values of the official evaluator
def seeded_videos():
    g = torch.Generator().manual_seed(11)
    q_len, lab_len, unl_len = (torch.randint(1, 6, (n,), generator=g) for n in (3, 5, 6))
    q, lab, unl = (torch.randn(int(n.sum()), 8, generator=g) for n in (q_len, lab_len, unl_len))
    gt = {"q0": {"l0": 1, "l1": 0, "l3": 1}, "q1": {"l1": 1, "l2": 1, "l4": 0}, "q2": {"l2": 0, "l3": 0}}
    return q, q_len, lab, lab_len, unl, unl_len, gt


# DistEvaluator(topk=[100, 3], max_frames=5), labeled batches of 2, unlabeled of 4: (full eval, subset eval)
GOLDEN = {
    "chamfer": ((0.31111112236976624, 0.3333333432674408), 0.6111111044883728, 7.22432254254818, 124.09152793884277),
    "mean": ((0.4166666567325592, 0.5), 0.6666666865348816, -2.306791588664055, -50.00704714283347),
    "max": ((0.21984128654003143, 0.1666666716337204), 0.6111111044883728, 6.373992171138525, 82.28205282613635),
}


@pytest.mark.parametrize("similarity", sorted(GOLDEN))
def test_golden_official_evaluator(similarity):
    (full_100, full_3), subset, total, weighted = GOLDEN[similarity]
    q, ql, lab, ll, unl, ul, gt = seeded_videos()
    qids, ids = ["q0", "q1", "q2"], [f"l{i}" for i in range(5)] + [f"u{i}" for i in range(6)]
    g, gl = torch.cat([lab, unl]), torch.cat([ll, ul])
    s = video_similarity(q, ql, g, gl, similarity=similarity).astype(np.float64)  # official cal_sim: Q x C
    assert s.sum() == pytest.approx(total, rel=1e-6)
    assert (s * np.arange(1, s.size + 1).reshape(s.shape)).sum() == pytest.approx(weighted, rel=1e-6)
    out = video_retrieval_metrics(q, ql, qids, g, gl, ids, gt, distractors=[False] * 5 + [True] * 6,
                                  similarity=similarity, ks=(100, 3), block_elements=50)
    assert out["map_top100"] == pytest.approx(100 * full_100, rel=1e-6)
    assert out["map_topinf"] == pytest.approx(100 * full_100, rel=1e-6)
    assert out["map_top3"] == pytest.approx(100 * full_3, rel=1e-6)
    out = video_retrieval_metrics(q, ql, qids, lab, ll, ids[:5], gt, similarity=similarity)
    assert out["map_topinf"] == pytest.approx(100 * subset, rel=1e-6)


def fuzz_case(seed, onehot):
    """6 queries, 15 labeled and 25 unlabeled videos of 1-6 frames; one-hot frames make exact ties."""
    g = torch.Generator().manual_seed(seed)
    d = 4 if onehot else 6
    lens = [torch.randint(1, 7, (n,), generator=g) for n in (6, 15, 25)]

    def make(n):
        if onehot:
            return F.one_hot(torch.randint(0, d, (n,), generator=g), d).float() * 3.0
        return torch.randn(n, d, generator=g)

    feats = [make(int(n.sum())) for n in lens]
    gt = {}
    for i in range(6):
        cands = torch.randperm(15, generator=g)[:5].tolist()
        gt[f"q{i}"] = {f"l{c}": int(torch.randint(0, 2, (1,), generator=g)) for c in cands}
    return feats, lens, gt


# DistEvaluator(topk=[100, 4, 10], max_frames=6): top-100 (= top-inf here), top-4, top-10
GOLDEN_FUZZ = [
    (False, 0, "chamfer", (0.10229328274726868, 0.0, 0.05000000074505806)),
    (False, 0, "mean", (0.13051103055477142, 0.1388888955116272, 0.1666666716337204)),
    (False, 0, "max", (0.15616364777088165, 0.1388888955116272, 0.1675925999879837)),
    (True, 1, "chamfer", (0.4772179126739502, 0.75, 0.7666666507720947)),
    (True, 1, "max", (0.32124418020248413, 0.5833333134651184, 0.5958333611488342)),
]


@pytest.mark.parametrize("onehot, seed, similarity, expected", GOLDEN_FUZZ)
def test_golden_official_evaluator_with_ties(onehot, seed, similarity, expected):
    (q, lab, unl), (ql, ll, ul), gt = fuzz_case(seed, onehot)
    ids = [f"l{i}" for i in range(15)] + [f"u{i}" for i in range(25)]
    out = video_retrieval_metrics(q, ql, list(gt), torch.cat([lab, unl]), torch.cat([ll, ul]), ids, gt,
                                  distractors=[False] * 15 + [True] * 25, similarity=similarity, ks=(100, 4, 10),
                                  block_elements=97)
    for key, value in zip(("map_top100", "map_top4", "map_top10"), expected):
        assert out[key] == pytest.approx(100 * value, rel=1e-6, abs=1e-9)
    assert out["map_topinf"] == pytest.approx(100 * expected[0], rel=1e-6)


# ---------------------------------------------------------------- helpers and errors
def test_group_frames():
    ids, lengths = group_frames(["b", "b", "a", "c", "c", "c"])
    assert ids == ["b", "a", "c"] and lengths.tolist() == [2, 1, 3]
    with pytest.raises(ValueError, match="frames of video 'b' are not consecutive"):
        group_frames(["b", "a", "b"])


def test_svd_test_view_matches_torchvision_and_normalise_option():
    tv = pytest.importorskip("torchvision.transforms")
    frames = np.random.default_rng(0).integers(0, 256, (2, 20, 30, 3), dtype=np.uint8)
    x = svd_test_view(frames, resize=16, crop=12)
    ref = tv.Compose([tv.Resize(16, antialias=True), tv.CenterCrop(12)])(
        torch.as_tensor(frames).permute(0, 3, 1, 2).float() / 255)
    assert x.shape == (2, 3, 12, 12) and torch.allclose(x, ref, atol=1e-6)
    assert x.min() >= 0 and x.max() <= 1  # the official quirk: no ImageNet Normalize at test time
    normed = svd_test_view(frames, resize=16, crop=12, imagenet_normalize=True)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(normed, (x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1), atol=1e-6)
    with pytest.raises(ValueError, match="resize 8 is smaller than crop 12"):
        svd_test_view(frames, resize=8, crop=12)


def test_metric_definitions():
    assert "whiten_mtd" in METRIC_DEFINITIONS["map_top100"] and "map_topinf" in METRIC_DEFINITIONS


def test_errors():
    q, ql = flat([[1, 0]])
    g, gl = flat([[1, 0]], [[0, 1]])
    with pytest.raises(ValueError, match="unknown video similarity 'cf'"):
        video_similarity(q, ql, g, gl, similarity="cf")
    with pytest.raises(ValueError, match="at least one frame"):
        video_similarity(q, ql, g, np.array([2, 0]))
    with pytest.raises(ValueError, match="lengths sum to 3 frames but gallery_feats has 2 rows"):
        video_similarity(q, ql, g, np.array([2, 1]))
    with pytest.raises(ValueError, match="query frames are 3-d but gallery frames are 2-d"):
        video_similarity(np.ones((1, 3), np.float32), ql, g, gl)
    with pytest.raises(ValueError, match="NaN or infinite"):
        video_similarity(q * np.nan, ql, g, gl)
    with pytest.raises(ValueError, match="integer"):
        video_similarity(q, np.array([1.0]), g, gl)
    gt = {"a": {"x": 1}}
    with pytest.raises(ValueError, match="one flag per gallery video"):
        video_retrieval_metrics(q, ql, ["a"], g, gl, ["x", "y"], gt, distractors=[True])
    with pytest.raises(ValueError, match="2 query ids for 1 query videos"):
        video_retrieval_metrics(q, ql, ["a", "b"], g, gl, ["x", "y"], gt)
    with pytest.raises(ValueError, match="ks must be positive"):
        video_retrieval_metrics(q, ql, ["a"], g, gl, ["x", "y"], gt, ks=(0,))
