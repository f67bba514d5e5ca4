"""S2SD loss math (s2sd_dml.md §2.1, §2.2): spec examples, official golden values, invariances, errors."""

import math

import pytest
import torch
import torch.nn.functional as F

from distillery.losses.math.s2sd import multisimilarity_loss, similarity_kl_loss

# --- similarity_kl_loss ---------------------------------------------------------------------------


@pytest.mark.parametrize("swap, temperature, expected", [(False, 1.0, 0.1201145), (False, 2.0, 0.1237192),
                                                         (True, 1.0, 0.1109441)])
def test_similarity_kl_spec_example(swap, temperature, expected):
    a, b = torch.eye(2), torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    if swap:
        a, b = b, a
    out = similarity_kl_loss(a, b, temperature)
    assert out.shape == ()
    assert out.item() == pytest.approx(expected, abs=2e-7)
    if not swap and temperature == 1.0:
        assert expected == pytest.approx(math.log(1 + math.e) - 0.5 - math.log(2), abs=1e-7)


@pytest.mark.parametrize("temperature, expected", [(1.0, 0.129585028), (0.5, 0.0914867744), (2.0, 0.146743894)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_similarity_kl_golden_official(temperature, expected, dtype):
    g = torch.Generator().manual_seed(3)
    es, et = torch.randn(7, 5, generator=g), torch.randn(7, 9, generator=g)
    out = similarity_kl_loss(es.to(dtype), et.to(dtype), temperature)
    assert out.dtype == dtype and out.item() == pytest.approx(expected, rel=1e-5)


def test_similarity_kl_invariances_and_detached_target():
    g = torch.Generator().manual_seed(12)
    es = torch.randn(6, 4, generator=g)
    q = torch.linalg.qr(torch.randn(4, 4, generator=g))[0]
    assert similarity_kl_loss(es, 3 * es, 0.5).item() == pytest.approx(0.0, abs=1e-6)
    assert similarity_kl_loss(es, es @ q, 0.5).item() == pytest.approx(0.0, abs=1e-6)
    et = torch.randn(6, 8, generator=g, requires_grad=True)
    es.requires_grad_(True)
    loss = similarity_kl_loss(es * 2.5, et, 1.0)
    assert loss.item() == pytest.approx(similarity_kl_loss(es, et * 0.1, 1.0).item(), rel=1e-5)
    assert loss.item() >= 0
    loss.backward()
    assert et.grad is None and es.grad.abs().sum() > 0  # the target matrix is detached


# --- multisimilarity_loss -------------------------------------------------------------------------

HAND = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.8, 0.6], [0.0, 1.0]])


def test_multisimilarity_spec_example():
    l_outer = 0.5 * math.log(1 + math.exp(-0.2)) + math.log(1 + math.exp(12)) / 40
    l_inner = 0.5 * math.log(1 + math.exp(-0.2)) + math.log(1 + math.exp(18.4) + math.exp(12)) / 40
    assert (l_outer, l_inner) == pytest.approx((0.5990696, 0.7591109), abs=1e-7)
    out = multisimilarity_loss(HAND, torch.tensor([0, 0, 1, 1]), 2.0, 40.0, 0.1, 0.5)
    assert out.shape == ()
    assert out.item() == pytest.approx(0.6790903, abs=2e-7)


def _ms_inputs(seed, n_cls, per, d):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n_cls).repeat_interleave(per)[torch.randperm(n_cls * per, generator=g)]
    return F.normalize(torch.randn(n_cls * per, d, generator=g), dim=1), labels


@pytest.mark.parametrize("inputs, params, expected", [
    ((4, 6, 2, 6), (2, 40, 0.1, 0.5), 0.884311855), ((4, 6, 2, 6), (1.5, 30, 0.2, 0.4), 0.99677515),
    ((5, 4, 4, 8), (2, 40, 0.1, 0.5), 1.39252281), ((5, 4, 4, 8), (1.5, 30, 0.2, 0.4), 1.59087205),
    ((6, 3, 3, 3), (2, 40, 0.1, 0.5), 0.649990082), ((6, 3, 3, 3), (1.5, 30, 0.2, 0.4), 0.783524096),
])
def test_multisimilarity_golden_official(inputs, params, expected):
    emb, labels = _ms_inputs(*inputs)
    assert multisimilarity_loss(emb, labels, *params).item() == pytest.approx(expected, rel=1e-5)


def _reference_loop(emb, labels, a=2.0, b=40.0, m=0.1, lam=0.5):
    """The spec's per-anchor definition written out literally, skipping anchors with no P_i/N_i."""
    sim, terms = emb @ emb.T, []
    for i in range(len(emb)):
        pos = [j for j in range(len(emb)) if j != i and labels[j] == labels[i]]
        neg = [j for j in range(len(emb)) if labels[j] != labels[i]]
        if not pos or not neg:
            continue
        sp, sn = sim[i, pos], sim[i, neg]
        sp, sn = sp[sp - m < sn.max()], sn[sn + m > sp.min()]
        if len(sp) and len(sn):
            terms.append(math.log(1 + torch.exp(-a * (sp - lam)).sum()) / a
                         + math.log(1 + torch.exp(b * (sn - lam)).sum()) / b)
    return sum(terms) / len(terms)


def test_multisimilarity_singleton_class_anchor_is_skipped():
    emb, labels = _ms_inputs(13, 4, 3, 5)
    labels[0] = 9  # anchor 0 has no positive: the official code raises, we skip it
    expected = _reference_loop(emb, labels)
    assert multisimilarity_loss(emb, labels).item() == pytest.approx(expected, rel=1e-5)


def test_multisimilarity_separated_batch_is_a_graph_zero():
    emb = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], requires_grad=True)
    out = multisimilarity_loss(emb, torch.tensor([0, 0, 1, 1]))
    assert out.shape == () and out.item() == 0.0
    out.backward()
    assert torch.equal(emb.grad, torch.zeros_like(emb))
    single_class = multisimilarity_loss(HAND, torch.zeros(4, dtype=torch.long))
    assert single_class.item() == 0.0


def test_multisimilarity_gradient_only_through_kept_pairs():
    emb = HAND.clone().requires_grad_(True)
    multisimilarity_loss(emb, torch.tensor([0, 0, 1, 1])).backward()
    assert torch.isfinite(emb.grad).all() and emb.grad.abs().sum() > 0


def test_multisimilarity_literal_log_overflows_like_official():
    emb, labels = _ms_inputs(4, 6, 2, 6)
    assert torch.isinf(multisimilarity_loss(emb * 10, labels))  # log(1 + Σexp) computed literally


def test_multisimilarity_shape_errors():
    with pytest.raises(ValueError):
        multisimilarity_loss(HAND, torch.tensor([0, 0, 1]))
