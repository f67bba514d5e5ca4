"""The S2SD distiller (s2sd_dml.md section 3.1): official golden values, hand values, gradient paths, the
feature-distillation delay and the trainer integration.

Golden values: the official ``criteria.s2sd.Criterion`` (MLforHealth/S2SD 1ef26e4, multisimilarity source and
targets, its ``target_nets`` replaced by the seeded branches of :func:`_case` with input dim 6 instead of 2048),
called twice on the inputs of :func:`_case`, CPU float32.
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from distillery.data.transforms import ViewSpec
from distillery.engine.trainer import Recipe, TrainData, train
from distillery.losses import build_method
from distillery.losses.dml import MarginLoss, MultiSimilarityLoss
from distillery.losses.methods.s2sd import branch_features, target_branch
from distillery.models import ModelOutput, build_model

torch.set_num_threads(1)


def _case(seed):
    g = torch.Generator().manual_seed(seed)
    feat = torch.randn(8, 6, 3, 3, generator=g).relu()
    emb = torch.randn(8, 4, generator=g)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    nets = torch.nn.ModuleList([target_branch(6, t) for t in (5, 7)])
    for p in nets.parameters():
        p.data.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return ModelOutput(feats=[feat], pooled=feat.mean((2, 3)), embedding=emb), labels, nets


def _shapes(out, num_classes=4):
    return {"feats": [f.shape for f in out.feats], "pooled": out.pooled.shape, "embedding": out.embedding.shape,
            "logits": None, "num_classes": num_classes}


def _built(out, nets=None, **hyper):
    d = build_method("s2sd", **hyper)
    d.setup(_shapes(out), {})
    if nets is not None:
        d.target_nets.load_state_dict(nets.state_dict())
    return d.train()


@pytest.mark.parametrize("seed, hyper, golden", [
    (5, {"kd_weight": 50.0, "temperature": 1.0}, [9.954876899719238, 9.954876899719238]),
    (5, {"kd_weight": 3.0, "temperature": 2.0, "pool_aggr": True, "feat_distill": True, "feat_weight": 5.0,
         "feat_distill_delay": 1}, [1.4559168815612793, 2.2645626068115234]),
    (6, {"kd_weight": 10.0, "temperature": 0.5, "feat_distill": True, "feat_weight": 2.0, "feat_distill_delay": 0},
     [2.2817325592041016, 2.2817325592041016]),
])
def test_matches_official_criterion(seed, hyper, golden):
    out, labels, nets = _case(seed)
    d = _built(out, nets, target_dims=[5, 7], **hyper)
    values = [sum(d(out, None, labels).values()) for _ in range(2)]
    torch.testing.assert_close(torch.stack(values), torch.tensor(golden), rtol=1e-5, atol=0.0)


def _identity_branch(d):
    """Both layers = identity 2 x 2, zero bias: on non-negative inputs the branch returns its input."""
    with torch.no_grad():
        for net in d.target_nets:
            for i in (0, 2):
                net[i].weight.copy_(torch.eye(2))
                net[i].bias.zero_()


def test_hand_value_branch_equal_to_source():
    # spec 2.2 example; the branch reproduces the (non-negative) embedding: KL = 0, L = (L_k + L_src) / 2 = L_src
    emb = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.8, 0.6], [0.0, 1.0]])
    out = ModelOutput(feats=[emb[:, :, None, None]], pooled=emb, embedding=emb)
    d = _built(out, target_dims=[2], feat_distill=True, feat_distill_delay=0)
    _identity_branch(d)
    terms = d(out, None, torch.tensor([0, 0, 1, 1]))
    assert list(terms) == ["dml", "kd", "feat_kd"]
    torch.testing.assert_close(terms["dml"], torch.tensor(0.6790903), rtol=1e-6, atol=0.0)
    assert abs(terms["kd"].item()) < 1e-5 and abs(terms["feat_kd"].item()) < 1e-5  # 50 x rounding


def test_hand_value_similarity_kl_weighted_by_w():
    # spec 2.1 example: source [[1,0],[0,1]], branch output [[1,0],[1,0]]: KL = log(1+e) - 1/2 - log 2;
    # labels [0, 1]: multisimilarity has no positive pair, every anchor is skipped (0)
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    branch_in = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    out = ModelOutput(feats=[branch_in[:, :, None, None]], pooled=branch_in, embedding=emb)
    d = _built(out, target_dims=[2, 2], kd_weight=50.0)
    _identity_branch(d)
    terms = d(out, None, torch.tensor([0, 1]))
    kl = math.log(1 + math.e) - 0.5 - math.log(2)
    torch.testing.assert_close(terms["kd"], torch.tensor(50.0 * kl), rtol=1e-6, atol=0.0)
    assert terms["dml"].item() == 0.0


def test_branch_features_pooling():
    feat = torch.tensor([[[[1.0, 3.0], [2.0, 6.0]]]])  # B=1, C=1: mean 3, max 6
    out = ModelOutput(feats=[feat], pooled=torch.tensor([[3.0]]), embedding=torch.ones(1, 2))
    assert branch_features(out, pool_aggr=False).tolist() == [[3.0]]
    assert branch_features(out, pool_aggr=True).tolist() == [[9.0]]


def test_branches_sized_from_probed_shapes():
    out, _, _ = _case(5)
    d = _built(out, target_dims=[5, 7, 9])
    assert [(n[0].in_features, n[0].out_features, n[2].out_features) for n in d.target_nets] == \
        [(6, 5, 5), (6, 7, 7), (6, 9, 9)]
    assert len(d.target_criteria) == 3 and isinstance(d.source_criterion, MultiSimilarityLoss)


def test_margin_criteria_own_a_beta_each():
    out, labels, _ = _case(5)
    d = _built(out, target_dims=[5, 7], source="margin", target="margin")
    crits = [*d.target_criteria, d.source_criterion]
    assert all(isinstance(c, MarginLoss) and c.beta.shape == (4,) for c in crits)
    assert len({id(c.beta) for c in crits}) == 3
    assert sum(p.numel() for p in d.parameters()) == sum(p.numel() for p in d.target_nets.parameters()) + 12
    sum(d(out, None, labels).values()).backward()
    assert all(c.beta.grad is not None for c in crits)


def test_gradient_paths():
    """KL terms reach the source only; target losses reach the branches and the features; feature KL: source only."""
    out, labels, nets = _case(5)
    emb = out.embedding.clone().requires_grad_(True)
    pooled = out.pooled.clone().requires_grad_(True)
    out = ModelOutput(feats=out.feats, pooled=pooled, embedding=emb)
    d = _built(out, nets, target_dims=[5, 7], feat_distill=True, feat_distill_delay=0)
    terms = d(out, None, labels)
    for name, reaches_emb, reaches_branch in [("kd", True, False), ("feat_kd", True, False), ("dml", True, True)]:
        d.zero_grad()
        emb.grad = pooled.grad = None
        terms[name].backward(retain_graph=True)
        assert (emb.grad is not None and emb.grad.abs().sum() > 0) == reaches_emb, name
        branch_grads = [p.grad for p in d.target_nets.parameters()]
        assert (all(g is not None and g.abs().sum() > 0 for g in branch_grads)) == reaches_branch, name
        assert (pooled.grad is not None and pooled.grad.abs().sum() > 0) == reaches_branch, name


def test_feature_distillation_delay_counts_training_iterations():
    out, labels, nets = _case(5)
    d = _built(out, nets, target_dims=[5, 7], feat_distill=True, feat_distill_delay=3)
    assert ["feat_kd" in d(out, None, labels) for _ in range(5)] == [False, False, False, True, True]
    d.eval()
    assert "feat_kd" in d(out, None, labels) and d.iter_count == 5  # eval calls do not count
    d.on_epoch_start(1, step=2, seed=0)  # a resumed run restores the counter from the steps done
    d.train()
    assert ["feat_kd" in d(out, None, labels) for _ in range(2)] == [False, True]


def test_no_teacher_and_own_task_loss():
    d = build_method("s2sd")
    assert not d.uses_teacher and d.task_loss == "none" and d.kd_weight == 50.0
    assert d.target_dims == [512, 1024, 1536, 2048] and not d.pool_aggr and not d.feat_distill


@pytest.mark.parametrize("hyper, match", [
    ({"target_dims": []}, "target_dims"), ({"target_dims": [0, 4]}, "target_dims"),
    ({"target_dims": 128}, "target_dims"), ({"target_dims": [2.5]}, "target_dims"),
    ({"source": "proxynca"}, "source"), ({"target": "tripletx"}, "target"),
    ({"temperature": 0.0}, "temperature"), ({"feat_distill_delay": -1}, "delay"),
])
def test_errors(hyper, match):
    with pytest.raises(ValueError, match=match):
        build_method("s2sd", **hyper)


def test_forward_before_setup_and_margin_without_classes():
    out, labels, _ = _case(5)
    with pytest.raises(RuntimeError, match="setup"):
        build_method("s2sd")(out, None, labels)
    shapes = {**_shapes(out), "num_classes": None}
    with pytest.raises(ValueError, match="number of classes"):
        build_method("s2sd", target="margin").setup(shapes, {})


def _tiny_run(tmp_path, name, epochs, stop=None, **hyper):
    torch.manual_seed(0)
    student = build_model("convnet_s", embedding_dim=8, num_classes=4, in_channels=1)
    rng = np.random.default_rng(0)
    data = TrainData(rng.integers(0, 256, size=(16, 14, 14, 1), dtype=np.uint8), np.arange(16), np.repeat(np.arange(4), 4))
    recipe = Recipe(epochs=epochs, lr=0.01, ids_per_batch=2, samples_per_id=4, optimizer="adam",
                    extra_weight_decay=0.0)
    distiller = build_method(name, **hyper)
    kwargs = dict(seed=0, checkpoint_path=tmp_path / "c.pt", distiller=distiller, progress=False)
    if stop is not None:
        with pytest.raises(KeyboardInterrupt):
            train(student, data, recipe, ViewSpec(14, (0.5,), (0.25,)), stop_after_steps=stop, **kwargs)
        student = build_model("convnet_s", embedding_dim=8, num_classes=4, in_channels=1)
        distiller = build_method(name, **hyper)
        kwargs["distiller"] = distiller
    result = train(student, data, recipe, ViewSpec(14, (0.5,), (0.25,)), **kwargs)
    return student, distiller, result


def test_trainer_runs_s2sd_on_the_task_batch_and_resumes_exactly(tmp_path):
    """Through the trainer: terms dml/kd/feat_kd, no task term of its own, branches trained; a run interrupted
    in epoch 2 and resumed gives the same history and weights (the delay of 3 steps falls inside epoch 2)."""
    hyper = {"target_dims": [6, 10], "target": "margin", "feat_distill": True, "feat_distill_delay": 3}
    student, distiller, result = _tiny_run(tmp_path / "a", "s2sd", epochs=3, **hyper)
    assert [r["steps"] for r in result.history] == [2, 2, 2]
    assert set(result.history[0]) >= {"dml", "kd", "loss"} and "feat_kd" not in result.history[0]
    assert "feat_kd" in result.history[1] and "ce" not in result.history[0]
    assert distiller.iter_count == 6
    resumed, _, again = _tiny_run(tmp_path / "b", "s2sd", epochs=3, stop=3, **hyper)
    assert again.resumed_from_epoch == 1
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in again.history] == \
        [{k: v for k, v in r.items() if k != "seconds"} for r in result.history]
    for a, b in zip(student.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)


def test_s2sd_loss_decreases_on_a_tiny_problem():
    """30 Adam steps on one fixed batch: the full S2SD objective (all terms) goes down."""
    torch.manual_seed(0)
    student = build_model("convnet_s", embedding_dim=8, num_classes=4, in_channels=1)
    x = torch.randn(8, 1, 14, 14, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    d = build_method("s2sd", target_dims=[16, 32], pool_aggr=True, feat_distill=True, feat_distill_delay=0)
    d.setup({**_shapes(student(x)), "num_classes": 4}, {})
    d.train()
    opt = torch.optim.Adam(list(student.parameters()) + list(d.parameters()), lr=3e-3)
    values = []
    for _ in range(30):
        loss = sum(d(student(x), None, y).values())
        values.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert np.isfinite(values).all() and values[-1] < 0.7 * values[0], values
    assert F.normalize(student(x).embedding, dim=1).shape == (8, 8)
