"""CRD memory-bank math (mdistiller.md section 3, CRD).

Golden values were computed by the official ``ContrastMemory`` / ``ContrastLoss`` modules of
megvii-research/mdistiller (a08d46f; ``Tensor.cuda`` stubbed to identity) on the seeded banks and batches of
``crd_inputs`` below, two steps in a row (Z fixed on the first step, banks updated after each).
"""

import math

import pytest
import torch

from distillery.losses.math.crd import crd_contrast_loss, crd_loss, crd_memory_update, crd_normalizer, crd_scores

N, D, K, B, T, MOM = 20, 8, 5, 4, 0.07, 0.5


def _unit(x):
    return x / x.norm(dim=1, keepdim=True)


def crd_inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    stdv = 1.0 / math.sqrt(D / 3)
    memory_s = torch.rand(N, D, generator=g) * 2 * stdv - stdv
    memory_t = torch.rand(N, D, generator=g) * 2 * stdv - stdv
    steps = []
    for _ in range(2):
        emb_s, emb_t = _unit(torch.randn(B, D, generator=g)), _unit(torch.randn(B, D, generator=g))
        index = torch.randperm(N, generator=g)[:B]
        contrast_idx = torch.cat([index[:, None], torch.randint(0, N, (B, K), generator=g)], dim=1)
        steps.append((emb_s, emb_t, index, contrast_idx))
    return memory_s, memory_t, steps


def test_contrast_loss_by_hand():
    # B = 1, K = 1, N = 2: m * Pn = 0.5; eps dropped (1e-7 effect)
    x = torch.tensor([[1.5, 0.5]])
    expected = -(math.log(1.5 / 2.0) + math.log(0.5 / 1.0))
    assert crd_contrast_loss(x, 2).item() == pytest.approx(expected, rel=1e-6)
    assert crd_contrast_loss(x.unsqueeze(2), 2).shape == ()  # official B x (K+1) x 1 layout accepted


def test_scores_and_normalizer_by_hand():
    memory = torch.eye(3)
    emb = torch.tensor([[1.0, 0.0, 0.0]])
    scores = crd_scores(memory, emb, torch.tensor([[0, 1, 2]]), temperature=0.5)
    torch.testing.assert_close(scores, torch.tensor([[math.exp(2.0), 1.0, 1.0]]))
    assert crd_normalizer(scores, 10).item() == pytest.approx((math.exp(2.0) + 2) / 3 * 10, rel=1e-6)


def test_memory_update_by_hand():
    memory = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    new = crd_memory_update(memory, torch.tensor([[0.0, 1.0]]), torch.tensor([0]), momentum=0.5)
    torch.testing.assert_close(new, torch.tensor([[0.5**0.5, 0.5**0.5], [0.0, 1.0], [0.6, 0.8]]))
    assert memory[0, 0].item() == 1.0  # out of place


def test_two_steps_match_official():
    memory_s, memory_t, steps = crd_inputs()
    z_s = z_t = None
    losses = []
    for emb_s, emb_t, index, contrast_idx in steps:
        if z_s is None:
            z_s = crd_normalizer(crd_scores(memory_t, emb_s, contrast_idx, T), N)
            z_t = crd_normalizer(crd_scores(memory_s, emb_t, contrast_idx, T), N)
        losses.append(crd_loss(emb_s, emb_t, memory_s, memory_t, contrast_idx, N, z_s, z_t, T).item())
        memory_s = crd_memory_update(memory_s, emb_s, index, MOM)
        memory_t = crd_memory_update(memory_t, emb_t, index, MOM)
    assert losses == pytest.approx(GOLDEN["losses"], rel=1e-5)
    assert [z_s.item(), z_t.item()] == pytest.approx(GOLDEN["z"], rel=1e-6)
    assert [memory_t.sum().item(), memory_s.sum().item()] == pytest.approx(GOLDEN["bank_sums"], rel=1e-5)


def test_gradients_reach_embeddings_not_banks():
    memory_s, memory_t, steps = crd_inputs(seed=1)
    emb_s, emb_t, _, contrast_idx = steps[0]
    emb_s, emb_t, memory_t = emb_s.requires_grad_(), emb_t.requires_grad_(), memory_t.requires_grad_()
    crd_loss(emb_s, emb_t, memory_s, memory_t, contrast_idx, N, 1.0, 1.0).backward()
    assert emb_s.grad.abs().sum() > 0 and emb_t.grad.abs().sum() > 0 and memory_t.grad is None


def test_errors():
    with pytest.raises(ValueError):
        crd_contrast_loss(torch.rand(3, 1), N)
    with pytest.raises(ValueError):
        crd_scores(torch.rand(5, 2), torch.rand(3, 2), torch.zeros(2, 4, dtype=torch.long))


GOLDEN = {  # official ContrastMemory + ContrastLoss on crd_inputs()
    "losses": [24.2983742, 21.8703651],
    "z": [109417.531, 16406.1562],  # Z_v1 (student scores), Z_v2 (teacher scores)
    "bank_sums": [-2.3772552013397217, -4.115810871124268],  # teacher bank, student bank after two steps
}
