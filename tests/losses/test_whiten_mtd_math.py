"""whitened_similarity_loss: spec examples (whiten_mtd.md §2), official golden values, invariances, errors."""

import math

import pytest
import torch
import torch.nn.functional as F

from distillery.losses.math.whiten_mtd import fuse_teacher_similarities, whitened_similarity_loss

I2 = torch.eye(2)


def _views(seed, b1, b2, ds=4, dts=(8, 5, 7), dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    s1 = torch.randn(b1, ds, generator=g)
    s2 = torch.randn(b2, ds, generator=g)
    t1 = [torch.randn(b1, d, generator=g) for d in dts]
    t2 = [torch.randn(b2, d, generator=g) for d in dts]
    return s1.to(dtype), s2.to(dtype), [t.to(dtype) for t in t1], [t.to(dtype) for t in t2]


def _loss(s1, t1, strategy="mean", st=1.0, tt=1.0, s2=None, t2=None):
    return whitened_similarity_loss(s1, t1, strategy, st, tt, s2, t2).item()


# --- spec worked examples -------------------------------------------------------------------------

def test_example1_single_teacher_and_scale_invariance():
    expected = 2 * math.log((1 + math.e) / 2) - 1
    assert _loss(I2, [torch.tensor([[1.0, 0.0], [1.0, 0.0]])]) == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(0.2402290, abs=1e-7)
    assert _loss(3 * I2, [5 * torch.tensor([[1.0, 0.0], [1.0, 0.0]])]) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(
    "strategy, st, tt, expected",
    [
        ("maxmin", 1.0, 1.0, 0.0),
        ("mean", 1.0, 1.0, 0.0192386),
        ("maxmean", 1.0, 1.0, 0.0192386),
        ("mean", 0.05, 0.05, 8.3194e-6),
        ("maxmin", 0.05, 0.05, 0.0),
        ("mean", 0.1, 0.05, 8.2483e-5),
        ("maxmin", 0.1, 0.05, 9.0752e-5),
    ],
)
def test_example2_two_teachers(strategy, st, tt, expected):
    teachers = [I2, torch.tensor([[1.0, 0.0], [0.6, 0.8]])]
    assert _loss(I2, teachers, strategy, st, tt) == pytest.approx(expected, rel=1e-4, abs=1e-7)


def test_example3_transposed_term_has_its_own_batchmean():
    s2 = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    assert _loss(I2, [I2], "mean", s2=s2, t2=[I2]) == pytest.approx(0.0431869 + 0.0810737, abs=2e-7)
    assert _loss(I2, [I2], "mean", s2=s2, t2=[I2]) == pytest.approx(0.1242606, abs=2e-7)


EX4 = dict(s2=torch.tensor([[0.6, 0.8], [0.0, 1.0]]),
           t2=[torch.tensor([[0.8, 0.6], [0.0, 1.0]]), torch.tensor([[0.6, 0.8], [0.6, 0.8]])])


@pytest.mark.parametrize("strategy, expected", [("mean", 0.0136190), ("maxmin", 0.0145885),
                                                ("maxmean", 0.0116241), ("maxfix", 0.0327204838)])
def test_example4_fusion_strategies(strategy, expected):
    # maxfix (not in the spec's table): golden value from the official s_maxfix
    assert _loss(I2, [I2, I2], strategy, **EX4) == pytest.approx(expected, abs=2e-7)


def test_fusion_matrices_example4():
    sims = torch.stack([torch.tensor([[0.8, 0.0], [0.6, 1.0]]), torch.tensor([[0.6, 0.6], [0.8, 0.8]])])
    expected = {"mean": [[0.7, 0.3], [0.7, 0.9]], "maxmin": [[0.8, 0.0], [0.6, 1.0]],
                "maxmean": [[0.8, 0.3], [0.7, 1.0]], "maxfix": [[0.8, 0.6], [0.8, 1.0]]}
    for strategy, f in expected.items():
        torch.testing.assert_close(fuse_teacher_similarities(sims, strategy), torch.tensor(f))


def test_fusion_non_square_uses_eye_n_m():
    sims = torch.stack([torch.zeros(2, 3), torch.ones(2, 3)])
    torch.testing.assert_close(fuse_teacher_similarities(sims, "maxmin"), torch.eye(2, 3))


# --- golden values from the official MultiTeacherDistillLoss (gather = identity) -----------------

GOLDEN = {  # (seed, B1, B2, same view) -> {(strategy, st, tt): value}
    (0, 6, 6, False): {("mean", 0.05, 0.05): 24.9009056, ("mean", 0.1, 0.05): 12.0217657,
                       ("maxmin", 0.05, 0.05): 25.3680687, ("maxmin", 0.1, 0.05): 12.8835144,
                       ("maxmean", 0.05, 0.05): 24.838501, ("maxmean", 0.1, 0.05): 12.5256643,
                       ("maxfix", 0.05, 0.05): 22.5351715, ("maxfix", 0.1, 0.05): 11.1793842},
    (1, 5, 3, False): {("mean", 0.05, 0.05): 8.44364738, ("mean", 0.1, 0.05): 3.91035128,
                       ("maxmin", 0.05, 0.05): 8.1175518, ("maxmin", 0.1, 0.05): 4.19888115,
                       ("maxmean", 0.05, 0.05): 5.54156494, ("maxmean", 0.1, 0.05): 2.59315228,
                       ("maxfix", 0.05, 0.05): 9.94393539, ("maxfix", 0.1, 0.05): 4.86336756},
    (2, 6, 6, True): {("mean", 0.05, 0.05): 0.407647043, ("mean", 0.1, 0.05): 0.778628051,
                      ("maxmin", 0.05, 0.05): 0.407658458, ("maxmin", 0.1, 0.05): 0.778641403,
                      ("maxmean", 0.05, 0.05): 0.407647043, ("maxmean", 0.1, 0.05): 0.778628051,
                      ("maxfix", 0.05, 0.05): 0.390012234, ("maxfix", 0.1, 0.05): 0.75988239},
}
CASES = [(k, s, v) for k, d in GOLDEN.items() for s, v in d.items()]


@pytest.mark.parametrize("key, setting, expected", CASES)
def test_golden_official(key, setting, expected):
    seed, b1, b2, same = key
    s1, s2, t1, t2 = _views(seed, b1, b2)
    if same:
        s2 = t2 = None
    out = whitened_similarity_loss(s1, t1, *setting, emb_s2=s2, embs_t2=t2)
    assert out.shape == () and out.dtype == torch.float32
    assert out.item() == pytest.approx(expected, rel=1e-5)


def test_golden_float64():
    s1, s2, t1, t2 = _views(0, 6, 6, dtype=torch.float64)
    out = whitened_similarity_loss(s1, t1, "maxmin", 0.05, 0.05, s2, t2)
    assert out.dtype == torch.float64 and out.item() == pytest.approx(25.3680687, rel=1e-5)


def test_defaults_are_maxmin_005():
    s1, s2, t1, t2 = _views(0, 6, 6)
    assert whitened_similarity_loss(s1, t1, emb_s2=s2, embs_t2=t2).item() == pytest.approx(25.3680687, rel=1e-5)


# --- invariances (whiten_mtd.md §2) ---------------------------------------------------------------

STRATEGIES = ["mean", "maxmin", "maxmean"]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_invariances(strategy):
    s1, s2, t1, t2 = _views(5, 5, 5)
    ref = _loss(s1, t1, strategy, 0.1, 0.05, s2, t2)
    assert ref >= 0
    g = torch.Generator().manual_seed(11)
    c = lambda b: torch.rand(b, 1, generator=g) + 0.5  # noqa: E731
    scaled = _loss(s1 * c(5), [t * c(5) for t in t1], strategy, 0.1, 0.05, s2 * c(5), [t * c(5) for t in t2])
    assert scaled == pytest.approx(ref, rel=1e-5)
    q = torch.linalg.qr(torch.randn(4, 4, generator=g))[0]
    qs = [torch.linalg.qr(torch.randn(t.shape[1], t.shape[1], generator=g))[0] for t in t1]
    rotated = _loss(s1 @ q, [t @ r for t, r in zip(t1, qs)], strategy, 0.1, 0.05, s2 @ q,
                    [t @ r for t, r in zip(t2, qs)])
    assert rotated == pytest.approx(ref, rel=1e-5)
    p = torch.randperm(5, generator=g)
    permuted = _loss(s1[p], [t[p] for t in t1], strategy, 0.1, 0.05, s2[p], [t[p] for t in t2])
    assert permuted == pytest.approx(ref, rel=1e-5)
    assert _loss(s2, t2, strategy, 0.1, 0.05, s1, t1) == pytest.approx(ref, rel=1e-5)
    order = [2, 0, 1]
    assert _loss(s1, [t1[i] for i in order], strategy, 0.1, 0.05, s2, [t2[i] for i in order]) == pytest.approx(
        ref, rel=1e-5)


def test_single_teacher_strategies_agree():
    s1, s2, t1, t2 = _views(6, 4, 4, dts=(3,))
    values = [_loss(s1, t1, s, 0.05, 0.05, s2, t2) for s in STRATEGIES]
    assert values == pytest.approx([values[0]] * 3, rel=1e-6)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_teachers_equal_to_student_give_zero(strategy):
    s1, s2, _, _ = _views(7, 4, 4)
    assert _loss(s1, [s1, 2 * s1], strategy, 0.07, 0.07, s2, [s2, 3 * s2]) == pytest.approx(0.0, abs=1e-6)


def test_same_view_is_twice_the_row_term():
    s1, _, t1, _ = _views(8, 5, 5)
    sim_s = F.normalize(s1, dim=-1) @ F.normalize(s1, dim=-1).T
    sim_t = torch.stack([F.normalize(t, dim=-1) @ F.normalize(t, dim=-1).T for t in t1]).mean(0)
    kl1 = F.kl_div(F.log_softmax(sim_s / 0.1, -1), F.softmax(sim_t / 0.05, -1), reduction="sum") / 5
    assert _loss(s1, t1, "mean", 0.1, 0.05) == pytest.approx(2 * kl1.item(), rel=1e-5)


def test_gradients_reach_student_and_teachers():
    s1, s2, t1, t2 = _views(9, 4, 4)
    s1.requires_grad_(True)
    t1[0].requires_grad_(True)
    whitened_similarity_loss(s1, t1, "mean", 0.1, 0.05, s2, t2).backward()
    assert s1.grad.abs().sum() > 0 and t1[0].grad.abs().sum() > 0  # nothing detached inside


# --- errors ---------------------------------------------------------------------------------------

def test_unknown_strategy_lists_valid_names():
    with pytest.raises(ValueError, match="maxmin"):
        whitened_similarity_loss(I2, [I2], "rand", 1.0, 1.0)


def test_bad_teacher_lists():
    with pytest.raises(ValueError):
        whitened_similarity_loss(I2, [], "mean", 1.0, 1.0)
    with pytest.raises(ValueError):
        whitened_similarity_loss(I2, [I2], "mean", 1.0, 1.0, I2, [I2, I2])
