"""Numbers for the SDD / NKD loss math (spec sdd.md section 2; hand examples from section 2.7).

Golden values were computed by the official functions of shicaiwei123/SDD-CVPR2024 (e412036; ``Tensor.cuda``
stubbed to identity) on the seeded inputs built by the ``*_inputs`` helpers below (CPU, float32).
"""

import math

import pytest
import torch

from distillery.losses.math.mdistiller import dkd_loss, kd_loss
from distillery.losses.math.sdd import nkd_loss, sdd_dkd_loss, sdd_kd_loss, sdd_nkd_loss

LN = math.log


def _close(value, expected, rel=1e-5):
    assert value.dim() == 0
    assert value.item() == pytest.approx(expected, rel=rel, abs=1e-7)


def logit_inputs(seed=0, b=4, k=10):
    g = torch.Generator().manual_seed(seed)
    s, t = torch.randn(b, k, generator=g) * 3, torch.randn(b, k, generator=g) * 3
    return s, t, torch.randint(0, k, (b,), generator=g)


def region_inputs(seed=0, b=3, k=6, n=5):
    """Region logits B x K x N; the teacher's target logit is boosted on ~60% of (sample, region) cells so
    that consistent and complementary rows both occur."""
    g = torch.Generator().manual_seed(seed)
    s, t = torch.randn(b, k, n, generator=g) * 2, torch.randn(b, k, n, generator=g) * 2
    y = torch.randint(0, k, (b,), generator=g)
    t[torch.arange(b), y, :] += 6.0 * (torch.rand(b, n, generator=g) > 0.4)
    return s, t, y


def _pair(*regions):
    """B = 1 region logits K x N from per-region teacher vectors (student all zeros)."""
    t = torch.tensor(regions).T.unsqueeze(0)
    return torch.zeros_like(t), t


# ---------------------------------------------------------------------------------------- hand examples
def test_kd_examples_of_sdd_spec():
    s = torch.zeros(1, 2)
    t = torch.tensor([[LN(3), 0.0]])
    _close(kd_loss(s, t, 1.0), 0.130812)
    _close(kd_loss(s, t, 2.0), 0.145363)


def test_sdd_kd_hand_examples():
    s, t = _pair([LN(3), 0.0], [0.0, LN(9)])
    _close(sdd_kd_loss(s, t, torch.tensor([0]), 1.0), 0.433470)  # global true, region 1 wrong: w = 2
    _close(sdd_kd_loss(s, t, torch.tensor([1]), 1.0), 0.433470)  # global wrong, region 1 true: w = 2
    _close(sdd_kd_loss(s, t, torch.tensor([0]), 2.0), 0.595930)
    s, t = _pair([LN(3), 0.0], [LN(9), 0.0])
    _close(sdd_kd_loss(s, t, torch.tensor([0]), 1.0), 0.249438)  # consistent: w = 1


def test_dkd_and_sdd_dkd_hand_examples():
    y = torch.tensor([0])
    _close(dkd_loss(torch.zeros(1, 3), torch.tensor([[LN(4), LN(2), 0.0]]), y, 1.0, 8.0, 1.0), 0.571705)
    s, t = _pair([LN(4), LN(2), 0.0], [0.0, LN(4), LN(2)])
    _close(sdd_dkd_loss(s, t, y, 1.0, 8.0, 1.0), 0.833287)


def test_nkd_hand_examples():
    zeros, y = torch.zeros(1, 2), torch.tensor([0])
    _close(nkd_loss(zeros, zeros, y, 1.0, 1.0), 1.039721)
    _close(nkd_loss(zeros, zeros, y, 2.0, 1.5), 4.505457)  # not 0 at s == t (all-classes quirk)
    _close(nkd_loss(zeros, torch.tensor([[LN(3), 0.0]]), y, 1.0, 1.0), 1.213008)


def test_sdd_nkd_hand_examples():
    s, t = _pair([LN(3), 0.0], [0.0, LN(9)])
    y = torch.tensor([0])
    _close(sdd_nkd_loss(s, t, y, 1.0, 1.0), 1.368966)
    _close(sdd_nkd_loss(s, t, y, 2.0, 1.5), 6.567570)


# ---------------------------------------------------------------------------------------------- golden
def test_nkd_golden():
    s, t, y = logit_inputs()
    _close(nkd_loss(s, t, y), GOLDEN["nkd_default"])
    _close(nkd_loss(s, t, y, 4.0, 8.0), GOLDEN["nkd_T4_g8"])
    soft = torch.nn.functional.one_hot(y, 10).float() * 0.7 + 0.03  # soft labels: argmax is y
    _close(nkd_loss(s, t, soft), GOLDEN["nkd_default"])


def test_sdd_golden():
    s, t, y = region_inputs()
    _close(sdd_kd_loss(s, t, y), GOLDEN["sdd_kd_T4"])
    _close(sdd_kd_loss(s, t, y, 1.0), GOLDEN["sdd_kd_T1"])
    _close(sdd_dkd_loss(s, t, y), GOLDEN["sdd_dkd_default"])
    _close(sdd_dkd_loss(s, t, y, 0.5, 2.0, 1.0), GOLDEN["sdd_dkd_a05_b2_T1"])
    _close(sdd_nkd_loss(s, t, y), GOLDEN["sdd_nkd_T4_g8"])
    _close(sdd_nkd_loss(s, t, y, 1.0, 1.5), GOLDEN["sdd_nkd_T1_g15"])


# ------------------------------------------------------------------------------------------ invariances
def test_single_region_equals_global_loss():
    s, t, y = logit_inputs(seed=1)
    s3, t3 = s.unsqueeze(2), t.unsqueeze(2)
    _close(sdd_kd_loss(s3, t3, y, 4.0), kd_loss(s, t, 4.0).item())
    _close(sdd_dkd_loss(s3, t3, y, 1.0, 8.0, 4.0), dkd_loss(s, t, y, 1.0, 8.0, 4.0).item())
    _close(sdd_nkd_loss(s3, t3, y, 4.0, 8.0), nkd_loss(s, t, y, 4.0, 8.0).item())


def test_all_consistent_regions_give_region_mean():
    s, t, y = region_inputs(seed=2)
    t[torch.arange(3), y, :] += 100.0  # teacher right everywhere: every weight is 1
    n = s.shape[2]
    for sdd_fn, plain in [(sdd_kd_loss, lambda a, b: kd_loss(a, b, 4.0)),
                          (sdd_dkd_loss, lambda a, b: dkd_loss(a, b, y)),
                          (sdd_nkd_loss, lambda a, b: nkd_loss(a, b, y, 4.0, 8.0))]:
        mean = sum(plain(s[:, :, i], t[:, :, i]) for i in range(n)) / n
        _close(sdd_fn(s, t, y), mean.item())


def test_weights_bounded_by_region_mean():
    s, t, y = region_inputs(seed=3)
    n = s.shape[2]
    mean = (sum(kd_loss(s[:, :, i], t[:, :, i], 4.0) for i in range(n)) / n).item()
    value = sdd_kd_loss(s, t, y).item()
    assert mean < value <= 2 * mean  # some complementary rows exist for this seed


def test_permutation_invariances_and_global_region_matters():
    s, t, y = region_inputs(seed=4)
    ref = sdd_dkd_loss(s, t, y).item()
    perm_b = torch.tensor([2, 0, 1])
    _close(sdd_dkd_loss(s[perm_b], t[perm_b], y[perm_b]), ref)
    perm_n = torch.tensor([0, 3, 1, 4, 2])
    _close(sdd_dkd_loss(s[:, :, perm_n], t[:, :, perm_n], y), ref)
    _close(sdd_kd_loss(s[:, :, perm_n], t[:, :, perm_n], y), sdd_kd_loss(s, t, y).item())
    swap = torch.tensor([1, 0, 2, 3, 4])
    assert sdd_dkd_loss(s[:, :, swap], t[:, :, swap], y).item() != pytest.approx(ref, rel=1e-3)


def test_zero_when_student_equals_teacher():
    _, t, y = region_inputs(seed=5)
    assert abs(sdd_kd_loss(t, t, y).item()) < 1e-6
    assert abs(sdd_dkd_loss(t, t, y).item()) < 1e-5
    assert sdd_nkd_loss(t, t, y).item() > 1.0


# ------------------------------------------------------------------------------------ NaN / inf fallbacks
def test_sdd_kd_zeroes_nan_elements_but_sdd_dkd_falls_back():
    s, t = _pair([LN(3), 0.0], [float("nan"), 0.0])
    y = torch.tensor([0])
    # region 1 is all NaN after softmax -> its KL elements are zeroed: only region 0 (w = 1) remains
    _close(sdd_kd_loss(s, t, y, 1.0), 0.130812 / 2)
    out = sdd_dkd_loss(s, t, y, 1.0, 8.0, 1.0)  # no elementwise zeroing -> NaN total -> 0
    assert out.shape == () and out.item() == 0.0
    assert sdd_nkd_loss(s, t, y, 1.0, 1.0).item() == 0.0


def test_infinite_total_returns_zero():
    t = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])
    s = torch.tensor([[[0.0, 0.0], [-float("inf"), 0.0]]])  # student log-prob -inf where teacher > 0
    out = sdd_kd_loss(s, t, torch.tensor([0]), 1.0)
    assert out.shape == () and out.item() == 0.0


# --------------------------------------------------------------------------------------------- errors
def test_shape_errors():
    s, t, y = region_inputs()
    with pytest.raises(ValueError, match="B x K x N"):
        sdd_kd_loss(s[:, :, 0], t[:, :, 0], y)
    with pytest.raises(ValueError, match="B x K x N"):
        sdd_dkd_loss(s, t[:, :, :2], y)
    with pytest.raises(ValueError, match="1-D"):
        sdd_nkd_loss(s, t, y.reshape(-1, 1))
    with pytest.raises(ValueError, match="1-D"):
        sdd_kd_loss(s, t, y[:2])
    with pytest.raises(ValueError, match="B x K"):
        nkd_loss(s, t, y)


GOLDEN = {  # official SDD functions on the seeded inputs above
    "nkd_default": 9.01811695,
    "nkd_T4_g8": 327.265167,
    "sdd_kd_T4": 6.61496305,
    "sdd_kd_T1": 3.41744876,
    "sdd_dkd_default": 36.4085693,
    "sdd_dkd_a05_b2_T1": 6.65185595,
    "sdd_nkd_T4_g8": 360.715668,
    "sdd_nkd_T1_g15": 9.36741924,
}
