"""Numbers for the D3still-codebase embedding losses (d3still.md section 2, mdistiller.md 2.3/2.11/2.12).

Golden values were computed by running the official functions (SCY-X/D3still b9801b9 and, for RKD/PKT/FitNet,
megvii-research/mdistiller a08d46f, which give identical numbers) on the seeded inputs built below, CPU float32;
ROP and UGD with ``Tensor.cuda`` patched to the identity.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from distillery.losses.math.d3still import (
    cc_loss,
    csd_loss,
    d3still_loss,
    fitnet_loss,
    pkt_loss,
    raml_loss,
    rkd_loss,
    rop_loss,
    triplet_loss,
    ugd_loss,
)

T = torch.tensor
LABELS = T([0, 0, 1, 1, 2, 2, 3, 3])  # P x K = 4 x 2


def _pair(seed=0, b=8, d=16):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, d, generator=g), torch.randn(b, d, generator=g)


def _ugd_inputs(seed=10, b=4, d=16, c=3):
    """G = 2 granularities with n_1 = 4 and n_2 = 1 local rows per sample."""
    g = torch.Generator().manual_seed(seed)
    emb_s, emb_t = torch.randn(b, d, generator=g), torch.randn(b, d, generator=g)
    ls = [torch.randn(b * 4, d, generator=g), torch.randn(b, d, generator=g)]
    lt = [torch.randn(b * 4, d, generator=g), torch.randn(b, d, generator=g)]
    lg = [torch.randn(b * 4, c, generator=g), torch.randn(b, c, generator=g)]
    return emb_s, emb_t, ls, lt, lg, torch.randint(0, c, (b,), generator=g)


def _close(value, expected, rel=1e-5, abs_=1e-7):
    assert isinstance(value, torch.Tensor) and value.shape == ()
    assert value.item() == pytest.approx(expected, rel=rel, abs=abs_)


# ---------------------------------------------------------------- worked examples (spec section 2)
E2 = T([[1.0, 0.0], [0.0, 1.0]])
DUP = T([[1.0, 0.0], [1.0, 0.0]])

WORKED = {
    "rkd_2d": (lambda: rkd_loss(T([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), T([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])),
               2.445554),
    "rkd_1d_mdistiller": (lambda: rkd_loss(T([[0.0], [1.0], [3.0]]), T([[0.0], [1.0], [2.0]])), 25 * 0.125 / 9),
    "pkt": (lambda: pkt_loss(E2, DUP), 0.0294457),
    "cc_raw": (lambda: cc_loss(T([[1.0], [2.0]]), T([[0.0], [0.0]]), normalize=False), 2.0),
    "cc_normalized": (lambda: cc_loss(T([[1.0], [2.0]]), T([[0.0], [0.0]]), normalize=True), 1.0),
    "csd_equal_temps": (lambda: csd_loss(DUP, E2, top_k=2, temp_student=1.0, temp_teacher=1.0), 0.231059),
    "csd_default_temps": (lambda: csd_loss(DUP, E2, top_k=2, temp_student=1.0, temp_teacher=0.01), 0.813262),
    "raml": (lambda: raml_loss(E2, DUP, lambda1=1.0, lambda2=1.0), 1.999998),
    "rop_cos1": (lambda: rop_loss(T([[1.0, 0.0]]), T([[2.0, 0.0]]), topk=1), 0.0),
    "rop_cos0": (lambda: rop_loss(T([[1.0, 0.0]]), T([[0.0, 1.0]]), topk=1), (0.5 - 1 / (1 + math.exp(10))) ** 2),
    "d3_a": (lambda: d3still_loss(DUP, E2, topk=2, alpha=1.0, beta=1.0, gamma=1.0), 0.5),
    "d3_b": (lambda: d3still_loss(T([[0.0, 1.0], [0.0, 1.0], [0.6, 0.8]]), T([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]),
                                  topk=3, alpha=1.0, beta=1.0, gamma=1.0), 1 / 3 + math.sqrt(2) * 0.8 / 0.7 / 6),
    "triplet_hard": (lambda: triplet_loss(T([[0.0], [1.0], [3.0], [6.0]]), T([0, 0, 1, 1])), 0.325),
    "triplet_soft_margin": (lambda: triplet_loss(T([[0.0], [1.0], [3.0], [6.0]]), T([0, 0, 1, 1]), margin=None),
                            0.470095),
}


@pytest.mark.parametrize("name", WORKED)
def test_worked_examples(name):
    fn, expected = WORKED[name]
    _close(fn(), expected, rel=2e-6, abs_=1e-6)


def test_d3_example_b_is_hard_only():
    s = T([[0.0, 1.0], [0.0, 1.0], [0.6, 0.8]])
    t = T([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    only_fd = d3still_loss(s, t, topk=3, alpha=1.0, beta=0.0, gamma=0.0)
    hard = d3still_loss(s, t, topk=3, alpha=0.0, beta=1.0, gamma=0.0)
    simple = d3still_loss(s, t, topk=3, alpha=0.0, beta=0.0, gamma=1.0)
    _close(only_fd, 1 / 3)
    _close(hard, 0.269374)
    _close(simple, 0.0)


def test_ugd_check_values():
    emb_s, emb_t, ls, lt, lg, target = _ugd_inputs()
    wrong = [torch.zeros_like(x).index_fill_(1, torch.tensor([0]), 1.0) for x in lg]  # always predicts class 0
    target = torch.ones_like(target)
    f = (F.normalize(emb_t) - F.normalize(emb_s)).norm(dim=1).mean()
    _close(ugd_loss(emb_s, emb_t, ls, lt, wrong, target, alpha=2.0, beta=2.0), 2 * f.item())
    _close(ugd_loss(emb_s, 3 * emb_s, ls, [2 * x for x in ls], lg, target), 0.0)


# ---------------------------------------------------------------- golden values from the official code
S0, T0 = _pair(0)
T0_TIE = T0.clone()
T0_TIE[3] = T0_TIE[1]  # an off-diagonal teacher tie (dt = 0 replaced by 1)
UGD0 = _ugd_inputs()

GOLDEN = {
    "fitnet": (lambda: fitnet_loss(S0, T0), 1.5800621509552002),
    "rkd": (lambda: rkd_loss(S0, T0), 1.3029398918151855),
    "rkd_squared": (lambda: rkd_loss(S0, T0, squared=True), 2.480194568634033),
    "pkt": (lambda: pkt_loss(S0, T0), 0.004935134202241898),
    "cc": (lambda: cc_loss(S0, T0), 1.1624213457107544),
    "cc_raw": (lambda: cc_loss(S0, T0, normalize=False), 16.839670181274414),
    "csd_k3": (lambda: csd_loss(S0, T0, top_k=3), 1.0371241389931969),
    "csd_k256": (lambda: csd_loss(S0, T0), 2.014202545927854),
    "csd_k8_temps": (lambda: csd_loss(S0, T0, 8, 0.5, 0.2), 1.647083237433681),
    "raml": (lambda: raml_loss(S0, T0), 0.9986786246299744),
    "raml_l2_eq_l1": (lambda: raml_loss(S0, T0, 0.7482, 0.7482), 1.0056045055389404),
    "raml_only_l2": (lambda: raml_loss(S0, T0, 0, 0.5), 0.895722508430481),
    "raml_none": (lambda: raml_loss(S0, T0, 0, 0), 0.8465330600738525),
    "rop_k4": (lambda: rop_loss(S0, T0, topk=4), 0.8431493598737974),
    "rop_k8": (lambda: rop_loss(S0, T0, topk=8), 0.9670794735728072),
    "rop_k8_b": (lambda: rop_loss(S0, T0, 8, 0.05, 1.0), 0.9260815904028443),
    "d3_k5": (lambda: d3still_loss(S0, T0, topk=5), 40.407936171918344),
    "d3_k10_gt_batch": (lambda: d3still_loss(S0, T0, 10, 1.0, 2.0, 3.0), 3.9236330415935834),
    "d3_teacher_tie": (lambda: d3still_loss(S0, T0_TIE, 6, 1.0, 1.0, 1.0), 2.271269297489282),
    "triplet_hard": (lambda: triplet_loss(S0, LABELS), 1.50002121925354),
    "triplet_hard_soft_margin": (lambda: triplet_loss(S0, LABELS, margin=None), 1.499475359916687),
    "triplet_hard_normalized": (lambda: triplet_loss(S0, LABELS, normalize=True), 0.561898410320282),
    "triplet_soft_soft_margin": (lambda: triplet_loss(S0, LABELS, None, "batch_soft"), 1.0903905630111694),
    "triplet_soft_margin_norm": (lambda: triplet_loss(S0, LABELS, 0.3, "batch_soft", True), 0.09273936599493027),
    "ugd": (lambda: ugd_loss(*UGD0), 7.888827800750732),
    "ugd_weights": (lambda: ugd_loss(*UGD0, alpha=1.0, beta=0.5), 2.636582374572754),
}


@pytest.mark.parametrize("name", GOLDEN)
def test_golden_official(name):
    fn, expected = GOLDEN[name]
    _close(fn(), expected)


@pytest.mark.parametrize("fn", [csd_loss, rop_loss, d3still_loss])
def test_float64_output(fn):
    assert fn(S0, T0).dtype == torch.float64


def test_rop_clamps_topk_to_batch():
    assert torch.equal(rop_loss(S0, T0, topk=100), rop_loss(S0, T0, topk=8))


# ---------------------------------------------------------------- invariances
def test_fitnet_invariances():
    _close(fitnet_loss(S0 + 3.0, T0 + 3.0), fitnet_loss(S0, T0).item())
    _close(fitnet_loss(2 * S0, 2 * T0), 4 * fitnet_loss(S0, T0).item())
    _close(fitnet_loss(S0, S0), 0.0)


def test_rkd_similarity_invariance():
    _close(rkd_loss(2.5 * S0 + 1.0, T0), rkd_loss(S0, T0).item())
    _close(rkd_loss(3.0 * T0 - 2.0, T0), 0.0, abs_=1e-5)
    _close(rkd_loss(S0[:2], T0[:2]), 0.0)  # B = 2 always gives 0


def test_pkt_zero_and_row_scaling():
    _close(pkt_loss(T0, T0), 0.0)
    scale = torch.linspace(0.5, 4.0, 8)[:, None]
    _close(pkt_loss(S0 * scale, T0), pkt_loss(S0, T0).item(), rel=1e-4)


def test_cc_depends_on_batch_order():
    perm = torch.tensor([1, 0, 2, 3, 4, 5, 7, 6])
    assert abs(cc_loss(S0[perm], T0[perm]).item() - cc_loss(S0, T0).item()) > 1e-3
    _close(cc_loss(T0, T0), 0.0)


def test_csd_batch_permutation_and_zero():
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(3))
    _close(csd_loss(S0[perm], T0[perm]), csd_loss(S0, T0).item())
    _close(csd_loss(T0, T0, temp_student=0.5, temp_teacher=0.5), 0.0, abs_=1e-9)
    assert csd_loss(T0, T0).item() > 0.1  # default temps differ: not zero at s = t


def test_raml_at_identity():
    _close(raml_loss(E2, 3 * E2, 0.5, 0.25), 1e-12 * 1.75, rel=1e-4, abs_=0)
    _close(raml_loss(T0, T0, 0.5, 0.25), 0.0, abs_=1e-11)


def test_rop_not_zero_at_identity():
    assert rop_loss(T0, T0, topk=8).item() > 1e-3


def test_d3_zero_at_identity_and_fd_only_for_topk2():
    _close(d3still_loss(T0, 2 * T0), 0.0, abs_=1e-9)
    cos = (F.normalize(S0) * F.normalize(T0)).sum(1).double()
    _close(d3still_loss(S0, T0, topk=2, alpha=7.0), 7.0 * (1 - cos).norm().item() / 8)


def test_triplet_matches_per_anchor_loop():
    d = torch.cdist(S0, S0)
    same = LABELS[:, None] == LABELS[None, :]
    d_ap = torch.stack([d[i][same[i]].max() for i in range(8)])
    d_an = torch.stack([d[i][~same[i]].min() for i in range(8)])
    _close(triplet_loss(S0, LABELS, margin=0.5), torch.relu(d_ap - d_an + 0.5).mean().item(), rel=1e-4)


def test_triplet_batch_permutation():
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(4))
    for mining in ("batch_hard", "batch_soft"):
        _close(triplet_loss(S0[perm], LABELS[perm], None, mining), triplet_loss(S0, LABELS, None, mining).item())


# ---------------------------------------------------------------- gradients
GRAD = {
    "fitnet": lambda s: fitnet_loss(s, T0),
    "rkd": lambda s: rkd_loss(s, T0),
    "pkt": lambda s: pkt_loss(s, T0),
    "cc": lambda s: cc_loss(s, T0),
    "csd": lambda s: csd_loss(s, T0, top_k=4),
    "raml": lambda s: raml_loss(s, T0),
    "rop": lambda s: rop_loss(s, T0, topk=6),
    "d3still": lambda s: d3still_loss(s, T0, topk=6),
    "ugd": lambda s: ugd_loss(s[:4], *UGD0[1:]),
    "triplet": lambda s: triplet_loss(s, LABELS, None, "batch_soft"),
}


@pytest.mark.parametrize("name", GRAD)
def test_gradient_reaches_student(name):
    s = S0.clone().requires_grad_()
    GRAD[name](s).backward()
    assert torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0


def test_detached_teacher_inputs():
    s, t = S0.clone().requires_grad_(), T0.clone().requires_grad_()
    rkd_loss(s, t).backward()
    assert t.grad is None
    emb_s, emb_t, ls, lt, lg, target = UGD0
    emb_t, lt0 = emb_t.clone().requires_grad_(), lt[0].clone().requires_grad_()
    ls0 = ls[0].clone().requires_grad_()
    ugd_loss(emb_s, emb_t, [ls0, ls[1]], [lt0, lt[1]], lg, target).backward()
    assert emb_t.grad is None and lt0.grad is None and ls0.grad.abs().sum() > 0


# ---------------------------------------------------------------- error cases
ERRORS = {
    "fitnet_shapes": lambda: fitnet_loss(S0, T0[:, :8]),
    "rkd_batch1": lambda: rkd_loss(S0[:1], T0[:1]),
    "pkt_not_2d": lambda: pkt_loss(S0[None], T0[None]),
    "cc_batch1": lambda: cc_loss(S0[:1], T0[:1]),
    "cc_batch_mismatch": lambda: cc_loss(S0, T0[:4]),
    "csd_topk0": lambda: csd_loss(S0, T0, top_k=0),
    "csd_dims": lambda: csd_loss(S0, T0[:, :8]),
    "raml_batch1": lambda: raml_loss(S0[:1], T0[:1]),
    "rop_topk0": lambda: rop_loss(S0, T0, topk=0),
    "d3_topk1": lambda: d3still_loss(S0, T0, topk=1),
    "ugd_list_lengths": lambda: ugd_loss(*UGD0[:2], UGD0[2], UGD0[3][:1], UGD0[4], UGD0[5]),
    "ugd_rows": lambda: ugd_loss(*UGD0[:2], [x[:-1] for x in UGD0[2]], UGD0[3], UGD0[4], UGD0[5]),
    "ugd_target": lambda: ugd_loss(*UGD0[:5], UGD0[5][:2]),
    "triplet_mining": lambda: triplet_loss(S0, LABELS, mining="batch_sample"),
    "triplet_no_negative": lambda: triplet_loss(S0, torch.zeros(8, dtype=torch.long)),
    "triplet_labels": lambda: triplet_loss(S0, LABELS[:4]),
}


@pytest.mark.parametrize("name", ERRORS)
def test_errors(name):
    with pytest.raises(ValueError):
        ERRORS[name]()


def test_raml_batch1_without_relational_terms():
    cos = (F.normalize(S0[:1]) * F.normalize(T0[:1])).sum().item()
    _close(raml_loss(S0[:1], T0[:1], 0, 0), (1 - cos + 1e-6) ** 2)


def test_ugd_empty_mask_is_zero_dim():
    emb_s, emb_t, ls, lt, lg, target = UGD0
    never = [torch.zeros_like(x).index_fill_(1, torch.tensor([2]), 1.0) for x in lg]
    out = ugd_loss(emb_s, emb_t, ls, lt, never, torch.zeros_like(target))
    assert out.shape == () and out.device == emb_s.device
