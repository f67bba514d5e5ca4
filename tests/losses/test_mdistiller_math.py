"""Numbers for the mdistiller loss math (spec mdistiller.md section 2).

Golden values were computed by the official functions of megvii-research/mdistiller (a08d46f) on the
seeded inputs built by the ``*_inputs`` helpers below (CPU, float32).
"""

import math

import pytest
import torch

from distillery.losses.math.mdistiller import (
    at_loss,
    dkd_loss,
    hcl_loss,
    kd_loss,
    kdsvd_loss,
    nst_loss,
    ofd_loss,
    sp_loss,
    vid_loss,
)

REL = 1e-5


def _randn(gen, *shape, scale=1.0):
    return torch.randn(*shape, generator=gen) * scale


def logit_inputs(seed=0, b=4, k=10, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    s, t = _randn(g, b, k, scale=scale), _randn(g, b, k, scale=scale)
    y = torch.randint(0, k, (b,), generator=g)
    return s, t, y


def stage_inputs(seed=0):
    """Two post-ReLU stages: student 8x8 (pooled to 4x4) and 4x4, teacher 4x4 twice; channels differ."""
    g = torch.Generator().manual_seed(seed)
    fs = [_randn(g, 2, 3, 8, 8).relu(), _randn(g, 2, 4, 4, 4).relu()]
    ft = [_randn(g, 2, 5, 4, 4).relu(), _randn(g, 2, 2, 4, 4).relu()]
    return fs, ft


def svd_inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    fs = [_randn(g, 2, 3, 8, 8), _randn(g, 2, 4, 4, 4), _randn(g, 2, 4, 2, 3)]
    ft = [_randn(g, 2, 5, 4, 8), _randn(g, 2, 2, 4, 4), _randn(g, 2, 2, 2, 3)]
    return fs, ft


def ofd_inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    s, t = _randn(g, 2, 3, 4, 4, scale=2.0), _randn(g, 2, 3, 8, 8, scale=2.0)
    margin = -torch.rand(1, 3, 1, 1, generator=g)
    return s, t, margin


def vid_inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return _randn(g, 2, 3, 4, 4), _randn(g, 3, scale=2.0), _randn(g, 2, 3, 8, 8)


def hcl_inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    sizes = (1, 2, 3, 8)
    return [_randn(g, 2, 3, h, h) for h in sizes], [_randn(g, 2, 3, h, h) for h in sizes]


def _close(value, expected, rel=REL):
    assert value.dim() == 0
    assert value.item() == pytest.approx(expected, rel=rel, abs=1e-7)


# ------------------------------------------------------------------------------------------------ KD
def test_kd_hand_examples():
    s = torch.zeros(1, 2)
    _close(kd_loss(s, torch.tensor([[math.log(3), 0.0]]), 1.0), 0.1308120)
    _close(kd_loss(s, torch.tensor([[2 * math.log(3), 0.0]]), 2.0), 0.5232481)
    _close(kd_loss(s, torch.tensor([[0.0, 2 * math.log(3)]]), 2.0), 0.523248)  # d3still.md 2.1 (same function)


def test_kd_golden():
    s, t, _ = logit_inputs()
    _close(kd_loss(s, t, 4.0), GOLDEN["kd_T4"])
    _close(kd_loss(s, t, 1.0), GOLDEN["kd_T1"])
    _close(kd_loss(s, t), GOLDEN["kd_T4"])  # default T = 4


def test_kd_invariances():
    s, t, _ = logit_inputs(seed=1)
    assert kd_loss(s, s, 4.0).abs().item() < 1e-6
    shift = torch.arange(4.0).unsqueeze(1)
    _close(kd_loss(s + shift, t - 2 * shift, 4.0), kd_loss(s, t, 4.0).item())


# ----------------------------------------------------------------------------------------------- DKD
def test_dkd_hand_examples():
    s = torch.zeros(1, 3)
    y = torch.tensor([0])
    _close(dkd_loss(s, torch.tensor([[math.log(2), 0.0, 0.0]]), y, 1.0, 8.0, 1.0), 0.0588915)
    _close(dkd_loss(s, torch.tensor([[math.log(2), 0.0, 0.0]]), y, 3.0, 8.0, 1.0), 3 * 0.0588915)
    t = torch.tensor([[0.0, math.log(3), 0.0]])
    _close(dkd_loss(s, t, y, 1.0, 8.0, 1.0), 1.0901884)
    _close(dkd_loss(s, t, y, 1.0, 0.0, 1.0), 0.0436921)
    _close(dkd_loss(s, 2 * t, y, 1.0, 8.0, 2.0), 4 * 1.0901884)


def test_dkd_golden():
    s, t, y = logit_inputs()
    _close(dkd_loss(s, t, y), GOLDEN["dkd_default"])
    _close(dkd_loss(s, t, y, 0.5, 2.0, 1.0), GOLDEN["dkd_a05_b2_T1"])
    # target of any shape is flattened; the batch divisor is target.shape[0]
    _close(dkd_loss(s, t, y.reshape(-1, 1)), GOLDEN["dkd_default"])


def test_dkd_zero_when_equal_and_errors():
    s, _, y = logit_inputs(seed=2)
    assert dkd_loss(s, s, y).abs().item() < 1e-5
    with pytest.raises(ValueError):
        dkd_loss(s[:1], s[:1], torch.tensor(3))


# ------------------------------------------------------------------------------------------------ AT
def test_at_hand_example_and_square_pooling():
    f_s, f_t = torch.tensor([[[[1.0, 0.0]]]]), torch.tensor([[[[0.0, 1.0]]]])
    _close(at_loss([f_s], [f_t], 2), 1.0)
    # student 4x4 of constant blocks pooled to the teacher's 2x2: identical attention -> 0
    f_t = torch.rand(1, 2, 2, 2, generator=torch.Generator().manual_seed(0))
    f_s = f_t.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    assert at_loss([f_s], [f_t]).item() < 1e-12


def test_at_golden_and_invariances():
    fs, ft = stage_inputs()
    _close(at_loss(fs, ft, 2), GOLDEN["at_p2"])
    _close(at_loss(fs, ft), GOLDEN["at_p2"])
    _close(at_loss(fs, ft, 3.0), GOLDEN["at_p3"])
    _close(at_loss([3.0 * f for f in fs], ft, 2), GOLDEN["at_p2"])
    _close(at_loss(fs[:1], ft), at_loss(fs[:1], ft[:1]).item())  # zip truncates
    assert at_loss(fs, fs).item() == 0.0


def test_at_errors():
    with pytest.raises(ValueError):
        at_loss([], [])
    with pytest.raises(ValueError, match="spatial"):
        at_loss([torch.rand(1, 1, 4, 4)], [torch.rand(1, 1, 2, 3)])


# ----------------------------------------------------------------------------------------------- NST
def test_nst_hand_examples():
    f_s = torch.tensor([1.0, 0.0]).reshape(1, 1, 1, 2)
    _close(nst_loss([f_s], [torch.tensor([0.0, 1.0]).reshape(1, 1, 1, 2)]), 2.0)
    _close(nst_loss([f_s], [torch.tensor([1.0, 1.0]).reshape(1, 1, 1, 2)]), 1.0)


def test_nst_golden_and_invariances():
    fs, ft = stage_inputs()
    _close(nst_loss(fs, ft), GOLDEN["nst"])
    scale = torch.tensor([1.0, 2.0, 5.0]).reshape(1, 3, 1, 1)
    _close(nst_loss([fs[0] * scale, fs[1]], ft), GOLDEN["nst"])
    assert abs(nst_loss(fs, fs).item()) < 1e-6
    with pytest.raises(ValueError):
        nst_loss([], ft)


# ------------------------------------------------------------------------------------------------ SP
def test_sp_hand_example():
    f_s = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    f_t = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    _close(sp_loss([f_s], [f_t]), 1 - 1 / math.sqrt(2))


def test_sp_golden_and_invariances():
    fs, ft = stage_inputs()
    value = sp_loss(fs, ft)
    assert value.shape == ()  # official: shape (1,)
    _close(value, GOLDEN["sp"])
    _close(sp_loss([2.5 * f for f in fs], ft), GOLDEN["sp"])
    assert sp_loss(fs, fs).item() == 0.0
    with pytest.raises(ValueError, match="batch"):
        sp_loss([fs[0]], [ft[0][:1]])


# --------------------------------------------------------------------------------------------- KDSVD
def test_kdsvd_golden():
    fs, ft = svd_inputs()
    _close(kdsvd_loss(fs, ft, 1), GOLDEN["kdsvd_k1"])
    _close(kdsvd_loss(fs, ft), GOLDEN["kdsvd_k1"])
    _close(kdsvd_loss(fs, ft, 2), GOLDEN["kdsvd_k2"])


def test_kdsvd_float32_zero_cases_and_errors():
    fs, ft = svd_inputs(seed=3)
    assert kdsvd_loss([f.double() for f in fs], [f.double() for f in ft]).dtype == torch.float32
    assert kdsvd_loss(ft, ft).item() < 1e-10
    single = kdsvd_loss(fs[:1], ft[:1])  # official returns the int 0
    assert single.shape == () and single.item() == 0.0
    with pytest.raises(ValueError, match="4-D"):
        kdsvd_loss([torch.rand(2, 3, 4)], [torch.rand(2, 3, 4)])


# ----------------------------------------------------------------------------------------------- OFD
@pytest.mark.parametrize(
    "s, t, expected", [(1.0, 2.0, 1.0), (0.0, -2.0, 1.0), (-3.0, -2.0, 0.0), (0.0, -0.5, 0.25), (-0.8, -0.5, 0.0)]
)
def test_ofd_hand_examples(s, t, expected):
    margin = torch.full((1, 1, 1, 1), -1.0)
    _close(ofd_loss(torch.full((1, 1, 1, 1), s), torch.full((1, 1, 1, 1), t), margin), expected)


def test_ofd_batch_mean_and_golden():
    margin = torch.full((1, 1, 1, 1), -1.0)
    s, t = torch.tensor([1.0, 0.0]).reshape(2, 1, 1, 1), torch.tensor([2.0, -0.5]).reshape(2, 1, 1, 1)
    _close(ofd_loss(s, t, margin), (1.0 + 0.25) / 2)
    s, t, margin = ofd_inputs()
    _close(ofd_loss(s, t, margin), GOLDEN["ofd_pooled_teacher"])
    _close(ofd_loss(s, t, margin.double()), GOLDEN["ofd_pooled_teacher"])  # margin cast to feat_s
    _close(ofd_loss(s, t, margin.flatten()), GOLDEN["ofd_pooled_teacher"])  # (C,) margin vector
    assert ofd_loss(s, s, margin).item() == 0.0


def test_ofd_teacher_detached():
    s, t, margin = ofd_inputs(seed=1)
    s, t = s.requires_grad_(), t.requires_grad_()
    ofd_loss(s, t, margin).backward()
    assert t.grad is None and s.grad.abs().sum() > 0


# ----------------------------------------------------------------------------------------------- VID
def test_vid_hand_example():
    t = torch.randn(2, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    _close(vid_loss(t, torch.zeros(3), t, 1e-5), 0.5 * math.log(math.log(2) + 1e-5))


def test_vid_golden_and_gradient():
    mu, log_scale, t = vid_inputs()
    _close(vid_loss(mu, log_scale, t), GOLDEN["vid_teacher_pooled"])
    _close(vid_loss(mu, log_scale, t, 1e-3), GOLDEN["vid_eps1e-3"])
    mu = mu.clone().requires_grad_()
    vid_loss(mu, torch.zeros(3), mu.detach() + 1.0, 0.0).backward()
    expected = 1.0 / (math.log(2) * mu.numel())  # gradient (mu - t) / (var * N), mu - t = -1, var = ln 2
    assert torch.allclose(mu.grad, torch.full_like(mu, -expected), rtol=1e-5)


# ----------------------------------------------------------------------------------------------- HCL
def test_hcl_constant_difference_gives_d_squared_per_level():
    fs, _ = hcl_inputs()
    _close(hcl_loss(fs, [f + 0.5 for f in fs]), 4 * 0.25)


def test_hcl_weights_and_golden():
    g = torch.Generator().manual_seed(5)
    f_s, f_t = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g)
    mse = torch.nn.functional.mse_loss
    pool = torch.nn.functional.adaptive_avg_pool2d
    by_hand = (mse(f_s, f_t) + sum(mse(pool(f_s, l), pool(f_t, l)) / 2**i for i, l in enumerate((4, 2, 1), 1))) / 1.875
    _close(hcl_loss([f_s], [f_t]), by_hand.item())
    fs, ft = hcl_inputs()
    _close(hcl_loss(fs, ft), GOLDEN["hcl"])
    with pytest.raises(ValueError):
        hcl_loss([], [])


GOLDEN = {  # official mdistiller functions on the seeded inputs above
    "kd_T4": 7.47077608,
    "kd_T1": 3.89239931,
    "dkd_default": 56.6101303,
    "dkd_a05_b2_T1": 7.20827675,
    "at_p2": 0.110446036,
    "at_p3": 0.157947063,
    "nst": 1.0095911,
    "sp": 0.0192105379,
    "kdsvd_k1": 0.113483824,
    "kdsvd_k2": 0.0777762085,
    "ofd_pooled_teacher": 211.202896,
    "vid_teacher_pooled": 0.81518507,
    "vid_eps1e-3": 0.814764321,
    "hcl": 9.71184731,
}
