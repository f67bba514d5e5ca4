"""Task losses (``training.task_loss`` / a method's ``task_loss``) and the named DML criteria they build, with
hand-computed values, and their use by the trainer (term names, optimiser groups, samplers)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from distillery.data.transforms import ViewSpec
from distillery.engine.trainer import Recipe, TrainData, _optimizer, train
from distillery.losses import build_method
from distillery.losses.dml import (
    EMBEDDING_CRITERIA,
    DistanceWeightedMiner,
    MarginLoss,
    MultiSimilarityLoss,
    RandomTripletMiner,
    SemihardMiner,
    TripletLoss,
    build_criterion,
    triplet_loss_sampled,
)
from distillery.losses.task import TASK_LOSSES, build_task_loss
from distillery.models import ModelOutput, build_model

torch.set_num_threads(1)

MS_EMB = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.8, 0.6], [0.0, 1.0]])  # spec 2.2 hand example
MS_LABELS = torch.tensor([0, 0, 1, 1])
# regular tetrahedron on the unit sphere: every pair at distance sqrt(8/3), so any mined negative is equivalent
TETRA = F.normalize(torch.tensor([[1.0, 1.0, 1.0], [1.0, -1.0, -1.0], [-1.0, 1.0, -1.0], [-1.0, -1.0, 1.0]]), dim=1)


def _out(emb, logits=None, pooled=None):
    return ModelOutput(feats=[], pooled=emb if pooled is None else pooled, embedding=emb, logits=logits)


def test_names():
    assert TASK_LOSSES == ("ce_triplet", "multisimilarity", "margin", "triplet_semihard", "triplet_distance",
                           "triplet_random")
    assert EMBEDDING_CRITERIA == TASK_LOSSES[1:]
    with pytest.raises(ValueError, match="unknown task loss 'arcface'"):
        build_task_loss("arcface")
    with pytest.raises(ValueError, match="unknown criterion"):
        build_criterion("ce_triplet")
    assert build_task_loss("none")(_out(MS_EMB), MS_LABELS) == {}


def test_criteria_defaults():
    ms = build_criterion("multisimilarity")
    assert isinstance(ms, MultiSimilarityLoss) and (ms.pos_weight, ms.neg_weight, ms.margin, ms.thresh) == (2, 40, 0.1, 0.5)
    margin = build_criterion("margin", n_classes=7)
    assert isinstance(margin, MarginLoss) and margin.margin == 0.2 and isinstance(margin.miner, DistanceWeightedMiner)
    assert margin.beta.shape == (7,) and torch.equal(margin.beta.data, torch.full((7,), 1.2))
    assert margin.miner.lower_cutoff == 0.5
    for name, miner in [("triplet_semihard", SemihardMiner), ("triplet_distance", DistanceWeightedMiner),
                        ("triplet_random", RandomTripletMiner)]:
        crit = build_criterion(name)
        assert isinstance(crit, TripletLoss) and crit.margin == 0.2 and isinstance(crit.miner, miner)
    assert build_criterion("triplet_semihard").miner.margin == 0.2
    with pytest.raises(ValueError, match="number of classes"):
        build_criterion("margin")


def test_ce_triplet_hand_value():
    # CE: mean(log(1 + e^-2), log(1 + e^-1)); batch-hard triplet (margin 3) on 1-d points 0, 1 | 3, 4:
    # anchors' (hardest pos, hardest neg) = (1, 3), (1, 2), (1, 2), (1, 3) -> relu(d_p - d_n + 3) = 1, 2, 2, 1
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    pooled = torch.tensor([[0.0], [1.0], [3.0], [4.0]])
    task = build_task_loss("ce_triplet", label_smoothing=0.0, ce_weight=2.0, triplet_weight=0.5, triplet_margin=3.0)
    terms = task(_out(torch.zeros(4, 2), logits, pooled), torch.tensor([0, 1, 0, 1]))
    ce = (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-1)) + 2 * math.log(2)) / 4
    assert list(terms) == ["ce", "triplet"]
    torch.testing.assert_close(terms["ce"], torch.tensor(2.0 * ce))
    terms = task(_out(torch.zeros(4, 2), logits, pooled), torch.tensor([0, 0, 1, 1]))
    torch.testing.assert_close(terms["triplet"], torch.tensor(0.5 * 1.5), rtol=1e-5, atol=0.0)
    assert list(build_task_loss("ce_triplet", triplet_weight=0.0)(_out(pooled, logits), MS_LABELS)) == ["ce"]
    with pytest.raises(ValueError, match="needs logits"):
        task(_out(torch.zeros(4, 2)), MS_LABELS)


def test_multisimilarity_task_normalises_the_embedding():
    task = build_task_loss("multisimilarity")
    terms = task(_out(MS_EMB * torch.tensor([[3.0], [0.5], [2.0], [7.0]])), MS_LABELS)
    assert list(terms) == ["multisimilarity"]
    torch.testing.assert_close(terms["multisimilarity"], torch.tensor(0.6790903), rtol=1e-6, atol=0.0)


@pytest.mark.parametrize("name, expected", [
    ("margin", math.sqrt(8 / 3) - 1.0),        # pos = relu(d - 1.2 + 0.2), neg = relu(1.2 - d + 0.2) = 0, 4 pairs
    ("triplet_distance", 0.2), ("triplet_semihard", 0.2), ("triplet_random", 0.2),  # relu(d² - d² + 0.2)
])
def test_mined_criteria_hand_values_on_a_tetrahedron(name, expected):
    task = build_task_loss(name, num_classes=2)
    task.on_epoch_start(0, seed=0)
    value = task(_out(2.0 * TETRA), MS_LABELS)[name]
    torch.testing.assert_close(value, torch.tensor(expected), rtol=1e-5, atol=0.0)


@pytest.mark.parametrize("name, miner", [("triplet_semihard", lambda g: SemihardMiner(0.2, generator=g)),
                                         ("triplet_distance", lambda g: DistanceWeightedMiner(0.5, generator=g))])
def test_mined_criteria_are_the_composed_pieces(name, miner):
    """Random batch: the task value = triplet_loss_sampled on the triplets the same miner draws with the same
    generator seed; reseeding at an epoch start reproduces the draws."""
    g = torch.Generator().manual_seed(4)
    emb, labels = torch.randn(12, 5, generator=g), torch.arange(4).repeat(3)
    task = build_task_loss(name)
    task.on_epoch_start(3, seed=9)
    first = task(_out(emb), labels)[name]
    reference_gen = torch.Generator().manual_seed(task.generator.initial_seed())
    unit = F.normalize(emb, dim=1)
    torch.testing.assert_close(first, triplet_loss_sampled(unit, miner(reference_gen)(unit, labels), 0.2))
    task.on_epoch_start(3, seed=9)
    assert torch.equal(task(_out(emb), labels)[name], first)


def test_optimizer_groups_and_kinds():
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(3))
    sgd = _optimizer(Recipe(epochs=1, lr=0.1, weight_decay=0.01), [a], [b])
    assert isinstance(sgd, torch.optim.SGD) and [g["weight_decay"] for g in sgd.param_groups] == [0.01, 0.01]
    adam = _optimizer(Recipe(epochs=1, lr=0.1, weight_decay=4e-4, optimizer="adam", extra_weight_decay=0.0), [a], [b])
    assert isinstance(adam, torch.optim.Adam) and [g["weight_decay"] for g in adam.param_groups] == [4e-4, 0.0]
    assert len(_optimizer(Recipe(epochs=1, lr=0.1), [a], []).param_groups) == 1
    with pytest.raises(ValueError, match="optimizer"):
        _optimizer(Recipe(epochs=1, lr=0.1, optimizer="lamb"), [a], [b])


def _train(tmp_path, recipe, method="vanilla", **hyper):
    torch.manual_seed(0)
    student = build_model("convnet_s", embedding_dim=8, num_classes=4, in_channels=1)
    rng = np.random.default_rng(0)
    data = TrainData(rng.integers(0, 256, size=(18, 14, 14, 1), dtype=np.uint8), np.arange(18),
                     np.repeat(np.arange(4), [6, 4, 4, 4]))
    distiller = build_method(method, **hyper)
    result = train(student, data, recipe, ViewSpec(14, (0.5,), (0.25,)), seed=0, checkpoint_path=tmp_path / "c.pt",
                   distiller=distiller, progress=False)
    return result, torch.load(tmp_path / "c.pt", weights_only=False)


def test_trainer_uses_the_recipe_task_loss(tmp_path):
    recipe = Recipe(epochs=1, lr=0.01, ids_per_batch=2, samples_per_id=3, task_loss="margin", optimizer="adam",
                    extra_weight_decay=0.0)
    result, state = _train(tmp_path, recipe)
    assert "margin" in result.history[0] and "ce" not in result.history[0]
    beta = state["task_loss"]["criterion.beta"]
    assert beta.shape == (4,) and not torch.equal(beta, torch.full((4,), 1.2))  # trained with the network


def test_trainer_class_balanced_batches(tmp_path):
    """floor(18 / 4) batches of 2 class draws x 2 images (a batch of one class: multisimilarity returns 0)."""
    recipe = Recipe(epochs=1, lr=0.01, ids_per_batch=2, samples_per_id=2, task_loss="multisimilarity",
                    sampler="class_balanced")
    result, _ = _train(tmp_path, recipe)
    assert result.history[0]["steps"] == 4 and "multisimilarity" in result.history[0]


def test_trainer_method_task_loss_overrides_the_recipe(tmp_path):
    recipe = Recipe(epochs=1, lr=0.01, ids_per_batch=2, samples_per_id=4)  # task_loss ce_triplet
    plain, _ = _train(tmp_path / "a", recipe)
    assert {"ce", "triplet"} <= set(plain.history[0])
    ms, _ = _train(tmp_path / "b", recipe, "msloss")
    assert "multisimilarity" in ms.history[0] and "ce" not in ms.history[0]
    assert ms.history[0]["loss"] == ms.history[0]["multisimilarity"]
