"""DML pieces of the S2SD recipes (s2sd_dml.md §2.3): distances, miners, margin/triplet/multisimilarity."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from distillery.losses.dml import (
    DistanceWeightedMiner,
    EuclideanDistance,
    MarginLoss,
    MultiSimilarityLoss,
    RandomTripletMiner,
    SemihardMiner,
    TripletLoss,
    all_triplets,
    distance_weighted_neg_probs,
    margin_loss,
    pairwise_l2,
    semihard_neg_mask,
    triplet_loss_sampled,
)
from distillery.losses.math.s2sd import multisimilarity_loss


def _unit(seed, n, d):
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=1)


# --- distance -------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_pairwise_l2_matches_explicit_loop(dtype):
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=dtype)
    loop = torch.tensor([[float((a - b).pow(2).sum().sqrt()) for b in x] for a in x], dtype=dtype)
    torch.testing.assert_close(pairwise_l2(x), loop, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(EuclideanDistance(squared=True)(x), loop**2, atol=1e-5, rtol=1e-5)
    assert (pairwise_l2(x) >= 0).all()


# --- distance-weighted miner ----------------------------------------------------------------------

DW_LABELS = torch.tensor([0, 0, 1, 1, 2, 3])
DW_GOLDEN = {  # official BatchMiner.inverse_sphere_distances rows (seed 7, 6 x 8 unit vectors)
    0: [0, 0, 0.28103006, 0.098981775, 0.097755663, 0.52223247],
    4: [0.22099628, 0.20944899, 0.17669268, 0.17890343, 0, 0.21395867],
    5: [0.37628835, 0.10394089, 0.38455892, 0.067018203, 0.068193622, 0],
}


def test_distance_weighted_probs_golden_official():
    probs = distance_weighted_neg_probs(_unit(7, 6, 8), DW_LABELS, lower_cutoff=0.5)
    for row, expected in DW_GOLDEN.items():
        torch.testing.assert_close(probs[row], torch.tensor(expected), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(probs.sum(1), torch.ones(6))


def test_distance_weighted_probs_formula_by_hand():
    emb, labels, n = _unit(3, 5, 6), [0, 1, 1, 2, 2], 6
    d = pairwise_l2(emb).clamp(min=0.5)
    for i in range(5):
        logq = [0.0 if labels[j] == labels[i] else
                (2 - n) * math.log(d[i, j]) - (n - 3) / 2 * math.log(1 - d[i, j] ** 2 / 4) for j in range(5)]
        q = [0.0 if labels[j] == labels[i] else math.exp(v - max(logq)) for j, v in enumerate(logq)]
        expected = torch.tensor([v / sum(q) for v in q])
        torch.testing.assert_close(distance_weighted_neg_probs(emb, torch.tensor(labels))[i], expected)


def test_distance_weighted_miner_triplets_and_reproducibility():
    emb, labels = _unit(7, 6, 8), DW_LABELS
    trip = DistanceWeightedMiner(generator=torch.Generator().manual_seed(0))(emb, labels)
    again = DistanceWeightedMiner(generator=torch.Generator().manual_seed(0))(emb, labels.numpy())
    assert trip.shape == (6, 3) and trip.dtype == torch.long and torch.equal(trip, again)
    assert torch.equal(trip[:, 0], torch.arange(6))
    a, p, n = trip.T
    assert (labels[a] == labels[p]).all() and (labels[a] != labels[n]).all()
    assert (p[:4] != a[:4]).all() and torch.equal(p[4:], a[4:])  # singletons: positive = anchor


def test_distance_weighted_miner_single_negative_is_forced():
    trip = DistanceWeightedMiner()(_unit(2, 3, 5), torch.tensor([0, 0, 1]))
    assert trip[:2, 2].tolist() == [2, 2] and trip[2, 2].item() in (0, 1)


def test_distance_weighted_miner_nan_rows_raise():
    antipodal = torch.tensor([[1.0, 0, 0, 0], [-1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, -1.0, 0, 0]])
    with pytest.raises(ValueError, match="negative"):
        DistanceWeightedMiner()(antipodal, torch.arange(4))  # d = 2 -> log(0): NaN as in the official code
    with pytest.raises(ValueError):
        DistanceWeightedMiner()(_unit(1, 3, 4), torch.zeros(3, dtype=torch.long))  # no negatives


# --- semihard miner -------------------------------------------------------------------------------

LINE = torch.tensor([[0.0], [0.1], [0.25], [0.35], [-1.0]])  # 1-d points: distances are |x_i - x_j|


def test_semihard_mask_by_hand():
    labels = torch.tensor([0, 0, 1, 1, 1])
    mask = semihard_neg_mask(pairwise_l2(LINE), labels, torch.tensor([1, 0, 3, 2, 2]), margin=0.2)
    # anchor 0: d_ap = 0.1, band (0.1, 0.3): negative 2 (0.25) only; anchor 1: d_ap 0.1, band (0.1, 0.3): 2, 3;
    # anchor 4: d_ap = 1.25 but its negatives lie at 1.0 and 1.1: empty band
    assert mask[0].tolist() == [False, False, True, False, False]
    assert mask[1].tolist() == [False, False, True, True, False]
    assert mask[4].tolist() == [False, False, False, False, False]


def test_semihard_miner_picks_band_or_falls_back():
    labels = torch.tensor([0, 0, 1, 1, 1])
    trip = SemihardMiner(margin=0.2, generator=torch.Generator().manual_seed(0))(LINE, labels)
    assert torch.equal(trip[:, 0], torch.arange(5)) and trip[0, 2].item() == 2
    assert (labels[trip[:, 1]] == labels).all() and (trip[:, 1] != trip[:, 0]).all()
    assert (labels[trip[:, 2]] != labels).all()  # anchor 4 has an empty band: any negative


def test_semihard_miner_needs_a_positive():
    with pytest.raises(ValueError, match="positive"):
        SemihardMiner()(LINE, torch.tensor([0, 0, 1, 1, 2]))


# --- random miner ---------------------------------------------------------------------------------

def test_random_miner_enumeration_and_draw():
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    every = all_triplets(labels)
    assert len(every) == 3 * 2 * 3 + 2 * 1 * 4  # Σ_c n_c (n_c − 1)(B − n_c)
    a, p, n = every.T
    assert (labels[a] == labels[p]).all() and (a != p).all() and (labels[n] != labels[a]).all()
    trip = RandomTripletMiner(generator=torch.Generator().manual_seed(0))(torch.zeros(6, 2), labels)
    assert trip.shape == (6, 3) and len({tuple(t) for t in trip.tolist()}) == 6
    assert {tuple(t) for t in trip.tolist()} <= {tuple(t) for t in every.tolist()}
    with pytest.raises(ValueError):
        RandomTripletMiner()(torch.zeros(4, 2), torch.tensor([0, 1, 2, 3]))


# --- margin loss ----------------------------------------------------------------------------------

def test_margin_loss_spec_example_or_count():
    emb = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.8, 0.6], [0.0, 1.0]])
    trip = torch.tensor([[0, 1, 2], [0, 3, 2]])
    out = margin_loss(emb, torch.zeros(4, dtype=torch.long), trip, beta=1.2, margin=0.2)
    assert out.shape == () and out.item() == pytest.approx(0.9746512, abs=2e-7)  # count 2, not 3


MG_LABELS = torch.tensor([0, 2, 3, 0, 1, 3, 2, 2, 2, 2])
MG_TRIP = torch.tensor([[6, 7, 8], [2, 5, 6], [7, 2, 7], [4, 7, 6], [5, 2, 0], [2, 7, 1], [6, 9, 4], [0, 4, 0],
                        [9, 5, 6], [9, 3, 0]])
MG_BETA = torch.tensor([1.1936733722686768, 1.4594273567199707, 1.459834337234497, 1.3957477807998657])


def _mg_emb():
    return F.normalize(torch.randn(10, 6, generator=torch.Generator().manual_seed(8)), dim=1)


def test_margin_loss_golden_official():
    emb = _mg_emb()
    assert margin_loss(emb, MG_LABELS, MG_TRIP, MG_BETA, 0.2).item() == pytest.approx(0.674472809, rel=1e-5)
    assert margin_loss(emb, MG_LABELS, MG_TRIP, 1.0, 0.1).item() == pytest.approx(0.614890456, rel=1e-5)


def test_margin_loss_empty_and_inactive():
    emb = _mg_emb().requires_grad_(True)
    assert margin_loss(emb, MG_LABELS, torch.zeros(0, 3, dtype=torch.long), 1.2).item() == 0.0
    far = torch.tensor([[0.0, 0.0], [0.0, 0.0], [5.0, 0.0]])  # d_ap ≈ 1e-4, d_an = 5: both terms inactive
    assert margin_loss(far, torch.tensor([0, 0, 1]), torch.tensor([[0, 1, 2]]), 1.0, 0.2).item() == 0.0


class _FixedMiner:
    def __call__(self, emb, labels):
        return MG_TRIP


def test_margin_loss_module_learnable_beta():
    module = MarginLoss(n_classes=4, beta=1.2, margin=0.2, miner=_FixedMiner())
    with torch.no_grad():
        module.beta.copy_(MG_BETA)
    out = module(_mg_emb(), MG_LABELS)
    assert out.item() == pytest.approx(0.674472809, rel=1e-5)
    out.backward()
    assert module.beta.grad is not None and module.beta.grad.abs().sum() > 0
    assert [n for n, _ in module.named_parameters()] == ["beta"]
    constant = MarginLoss(beta=1.0, margin=0.1, learn_beta=False, miner=_FixedMiner())
    assert constant(_mg_emb(), MG_LABELS).item() == pytest.approx(0.614890456, rel=1e-5)
    assert list(constant.parameters()) == []
    with pytest.raises(ValueError):
        MarginLoss(learn_beta=True)


def test_margin_loss_with_default_miner_runs_on_its_triplets():
    emb, labels = _unit(4, 8, 16), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    module = MarginLoss(n_classes=4, miner=DistanceWeightedMiner(generator=torch.Generator().manual_seed(1)))
    trip = DistanceWeightedMiner(generator=torch.Generator().manual_seed(1))(emb, labels)
    assert module(emb, labels).item() == pytest.approx(margin_loss(emb, labels, trip, module.beta, 0.2).item())


# --- triplet loss ---------------------------------------------------------------------------------

def test_triplet_loss_by_hand_and_golden_official():
    emb = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    # ‖a−p‖² − ‖a−n‖² + m: 1 − 4 + 0.2 < 0 -> 0; swapped: 4 − 1 + 0.2 = 3.2
    trip = torch.tensor([[0, 1, 2], [0, 2, 1]])
    assert triplet_loss_sampled(emb, trip, 0.2).item() == pytest.approx(1.6)
    assert triplet_loss_sampled(_mg_emb(), MG_TRIP, 0.2).item() == pytest.approx(0.464711577, rel=1e-5)
    assert TripletLoss(0.5, miner=_FixedMiner())(_mg_emb(), MG_LABELS).item() == pytest.approx(0.656764209, rel=1e-5)
    with pytest.raises(ValueError):
        triplet_loss_sampled(emb, torch.zeros(0, 3, dtype=torch.long))


# --- multisimilarity module -----------------------------------------------------------------------

def test_multisimilarity_module_wraps_functional():
    emb, labels = _unit(5, 8, 4), np.array([0, 0, 1, 1, 2, 2, 3, 3])
    module = MultiSimilarityLoss(1.5, 30, 0.2, 0.4)
    expected = multisimilarity_loss(emb, torch.as_tensor(labels), 1.5, 30, 0.2, 0.4)
    assert module(emb, labels).item() == pytest.approx(expected.item(), rel=1e-7)
    assert list(module.parameters()) == []
