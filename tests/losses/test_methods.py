"""Distiller modules: every registered method is built from its params.yaml group, set up from probed shapes,
checked against ``kd_weight x`` its functional loss, and trained for a few steps on a fixed tiny problem.

The UGD golden value was computed by running the official ``UGD.ugd_loss`` (SCY-X/D3still b9801b9, with
``Tensor.cuda`` patched to the identity and ``teacher.fc`` = the same ClassBlock returning (logits, embedding))
on the seeded inputs of :func:`_ugd_case`, CPU float32.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from distillery.config import method_options
from distillery.data.transforms import ViewSpec
from distillery.engine.trainer import Recipe, TrainData, train
from distillery.losses import functional
from distillery.losses.methods.s2sd import branch_features
from distillery.losses.methods.ugd import grid_features
from distillery.losses.registry import available_methods, build_method, method_hyperparameters
from distillery.models import ModelOutput, build_model
from distillery.models.heads import RetrievalHead
from distillery.models.shapes import probe_shapes
from distillery.models.whitening import WhiteningLayer, fit_pca_whitening

torch.set_num_threads(1)  # tiny tensors: threads only add contention on a shared CPU
ALL_PARAMS = yaml.safe_load((Path(__file__).parents[2] / "params.yaml").read_text())
PARAMS = {name: method_options(ALL_PARAMS, name) for name in ALL_PARAMS["methods"]}  # retrieval hyper-parameters
# classification-only methods (tested in tests/losses/test_cls_methods.py on classification networks)
CLS_ONLY = set(ALL_PARAMS["benchmark_cls"]["methods"]) - set(ALL_PARAMS["benchmark"]["methods"])
B, RES_S, RES_T = 8, 14, 28
# whiten_mtd's teacher whitening in these tables: fitted on seeded 64-d data (the teacher's embedding width)
WHITENING = fit_pca_whitening(torch.randn(200, 64, generator=torch.Generator().manual_seed(5)) + 0.5)


def _nets():
    """Seeded convnet_s student (train mode) and frozen convnet_m teacher (eval mode).

    Both classifiers are redrawn with std 0.2 (init: 0.001), so the logits are not all ~0 (KD would be ~0).
    """
    torch.manual_seed(0)
    student = build_model("convnet_s", embedding_dim=64, num_classes=5, in_channels=1)
    teacher = build_model("convnet_m", embedding_dim=64, num_classes=5, in_channels=1).eval()
    with torch.no_grad():
        for net in (student, teacher):
            net.fc.classifier.weight.normal_(0.0, 0.2)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return student, teacher


@pytest.fixture(scope="module")
def problem():
    """A fixed tiny KD batch: the same 8 images at the student (14 px) and the teacher (28 px) views."""
    student, teacher = _nets()
    g = torch.Generator().manual_seed(1)
    x_t = torch.randn(B, 1, RES_T, RES_T, generator=g)
    x_s = torch.nn.functional.interpolate(x_t, size=RES_S, mode="bilinear", align_corners=False)
    with torch.no_grad():
        out_t = teacher(x_t)
    return {"x_s": x_s, "out_t": out_t, "target": torch.tensor([0, 1, 2, 3, 4, 0, 1, 2]),
            "shapes_s": probe_shapes(student, (1, RES_S, RES_S)), "shapes_t": probe_shapes(teacher, (1, RES_T, RES_T))}


def _distiller(name, problem, teacher, **hyper):
    distiller = build_method(name, **hyper)
    if distiller.multi_teacher:  # the tables feed one teacher output (one view): one teacher, WHITENING
        distiller = build_method(name, **{**hyper, "teachers": ["teacher"]})
        distiller.set_whitening([WhiteningLayer(WHITENING)])
    distiller.setup(problem["shapes_s"], problem["shapes_t"] if distiller.uses_teacher else {})
    distiller.bind_teacher(teacher)
    return distiller


def _whiten_mtd_reference(d, s, t, y, net, whiten, strategy, temp_student, temp_teacher, **_):
    emb_t = WHITENING.apply(t.embedding) if whiten else t.embedding
    return functional.whitened_similarity_loss(s.embedding, [emb_t], strategy, temp_student, temp_teacher)


def _ugd_reference(d, s, t, target, teacher, alpha, beta, **_):
    """ugd_loss on local features built as the spec says (pooling grid, projectors, teacher head)."""
    local_s, local_t, logits_t = [], [], []
    for size, projector in zip(d.sizes, d.projectors):
        local_s.append(projector(grid_features(s.feats[d.layer - 1], size)))
        logits, emb = teacher.fc(grid_features(t.feats[-1], size))
        local_t.append(emb)
        logits_t.append(logits)
    return functional.ugd_loss(s.embedding, t.embedding, local_s, local_t, logits_t, target, alpha=alpha, beta=beta)


# name -> unweighted functional value from (distiller, student out, teacher out, target, teacher, **hyper-params)
REFERENCE = {
    "kd": lambda d, s, t, y, net, **hp: functional.kd_loss(s.logits, t.logits, **hp),
    "fitnet": lambda d, s, t, y, net, **hp: functional.fitnet_loss(s.embedding, t.embedding),
    "rkd": lambda d, s, t, y, net, **hp: functional.rkd_loss(s.embedding, t.embedding, **hp),
    "pkt": lambda d, s, t, y, net, **hp: functional.pkt_loss(s.embedding, t.embedding, **hp),
    "cc": lambda d, s, t, y, net, **hp: functional.cc_loss(s.embedding, t.embedding, **hp),
    "csd": lambda d, s, t, y, net, **hp: functional.csd_loss(s.embedding, t.embedding, **hp),
    "raml": lambda d, s, t, y, net, **hp: functional.raml_loss(s.embedding, t.embedding, **hp),
    "rop": lambda d, s, t, y, net, **hp: functional.rop_loss(s.embedding, t.embedding, **hp),
    "d3still": lambda d, s, t, y, net, **hp: functional.d3still_loss(s.embedding, t.embedding, **hp),
    "ugd": _ugd_reference,
    "whiten_mtd": _whiten_mtd_reference,
}

def _s2sd_reference(d, s, y, kd_weight, temperature, pool_aggr, feat_distill, feat_weight, feat_distill_delay, **_):
    """The spec's total, from the functional pieces (multisimilarity source and targets, defaults)."""
    e = torch.nn.functional.normalize(s.embedding, dim=1)
    f = branch_features(s, pool_aggr)
    z = [torch.nn.functional.normalize(net(f), dim=-1) for net in d.target_nets]
    dml = (torch.stack([functional.multisimilarity_loss(b, y) for b in z]).mean()
           + functional.multisimilarity_loss(e, y)) / 2
    total = dml + kd_weight * torch.stack([functional.similarity_kl_loss(e, b, temperature) for b in z]).mean()
    if feat_distill and feat_distill_delay == 0:
        total = total + feat_weight * functional.similarity_kl_loss(e, f, temperature)
    return total


# Methods without a teacher that return terms (self-distillation): name -> total from (distiller, student out,
# target, **hyper-parameters); the methods' terms are already weighted, their sum is compared.
SELF_REFERENCE = {"s2sd": _s2sd_reference}
# Methods without a teacher and without a term (the task loss trains the student alone).
NO_TERM = ["vanilla", "msloss"]

# Non-default hyper-parameters (every one differs from its default and matters at B = 8).
PERTURBED = {
    "kd": {"kd_weight": 0.5, "temperature": 3.0},
    "fitnet": {"kd_weight": 3.0},
    "rkd": {"kd_weight": 0.5, "distance_weight": 10.0, "angle_weight": 20.0, "squared": True, "eps": 1e-8},
    "pkt": {"kd_weight": 2.0, "eps": 1e-3},
    "cc": {"kd_weight": 2.0, "normalize": False},
    "csd": {"kd_weight": 3.0, "top_k": 5, "temp_student": 0.5, "temp_teacher": 0.1},
    "raml": {"kd_weight": 2.0, "lambda1": 0.3, "lambda2": 0.9},
    "rop": {"kd_weight": 2.0, "topk": 5, "temperature": 0.2, "rank_weight": 0.5},
    "d3still": {"kd_weight": 2.0, "topk": 5, "alpha": 10.0, "beta": 3.0, "gamma": 2.0},
    "ugd": {"kd_weight": 2.0, "alpha": 1.5, "beta": 3.0, "layer": 2, "pool_size": 4},
    "whiten_mtd": {"kd_weight": 2.0, "teachers": ["teacher"], "whiten": False, "strategy": "mean",
                   "temp_student": 0.1, "temp_teacher": 0.04, "shared_view": False},
    "s2sd": {"kd_weight": 3.0, "temperature": 2.0, "target_dims": [16, 24], "pool_aggr": False, "feat_distill": True,
             "feat_weight": 5.0, "feat_distill_delay": 0},
}

KD_METHODS = [m for m in available_methods() if build_method(m).uses_teacher and m not in CLS_ONLY]
SELF_METHODS = [m for m in available_methods() if not build_method(m).uses_teacher and m not in NO_TERM]


@pytest.mark.parametrize("name", available_methods())
def test_every_method_is_in_a_table(name):
    assert name in REFERENCE or name in SELF_REFERENCE or name in NO_TERM or name in CLS_ONLY, \
        f"add {name} to REFERENCE (teacher methods), SELF_REFERENCE (self-distillation) or NO_TERM in this file"


@pytest.mark.parametrize("task", ["retrieval", "classification"])
@pytest.mark.parametrize("name", available_methods())
def test_params_group_builds_the_method(name, task):
    assert name in PARAMS, f"add a methods.{name} group to params.yaml"
    group = method_options(ALL_PARAMS, name, task)
    assert set(group) <= set(method_hyperparameters(name))
    distiller = build_method(name, **group)
    assert distiller.kd_weight == group.get("kd_weight", method_hyperparameters(name).get("kd_weight", 0.0))
    assert distiller.ce_weight == group.get("ce_weight", method_hyperparameters(name).get("ce_weight", 1.0))
    assert distiller.method_name == name


@pytest.mark.parametrize("name, task_loss", [("vanilla", None), ("msloss", "multisimilarity")])
def test_no_term_methods_have_no_teacher_and_no_term(name, task_loss, problem):
    student, teacher = _nets()
    distiller = _distiller(name, problem, teacher, **(PARAMS[name] or {}))
    assert not distiller.uses_teacher and distiller.task_loss == task_loss and distiller.kd_weight == 0.0
    assert distiller(student(problem["x_s"]), None, problem["target"]) == {}
    assert list(distiller.parameters()) == []


@pytest.mark.parametrize("source", ["params", "perturbed"])
@pytest.mark.parametrize("name", SELF_METHODS)
def test_self_distillation_total_matches_functional(name, source, problem):
    assert name in SELF_REFERENCE and name in PERTURBED, f"add {name} to SELF_REFERENCE and PERTURBED in this file"
    student, teacher = _nets()
    group = PARAMS[name] if source == "params" else PERTURBED[name]
    hyper = {**method_hyperparameters(name), **group}
    distiller = _distiller(name, problem, teacher, **group).train()
    s, y = student(problem["x_s"]), problem["target"]
    terms = distiller(s, None, y)
    assert all(t.dim() == 0 for t in terms.values()) and "kd" in terms
    total = sum(terms.values())
    torch.testing.assert_close(total, SELF_REFERENCE[name](distiller, s, y, **hyper), rtol=1e-6, atol=0.0)
    assert terms["kd"].item() > 0


@pytest.mark.parametrize("name", SELF_METHODS)
def test_self_distillation_backward_reaches_student_and_branches(name, problem):
    student, teacher = _nets()
    distiller = _distiller(name, problem, teacher, **PARAMS[name]).train()
    sum(distiller(student(problem["x_s"]), None, problem["target"]).values()).backward()
    grads = [p.grad for p in student.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads) and sum(g.abs().sum() for g in grads) > 0
    assert all(p.grad is None for p in teacher.parameters())
    for p in distiller.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()


@pytest.mark.parametrize("name", SELF_METHODS)
def test_self_distillation_loss_decreases_with_sgd(name, problem):
    """As test_loss_decreases_with_sgd, on the sum of the method's terms."""
    student, teacher = _nets()
    distiller = _distiller(name, problem, teacher, **PARAMS[name]).train()
    params = list(student.parameters()) + list(distiller.parameters())
    optimizer = torch.optim.SGD(params, lr=0.05, momentum=0.9)
    values, scale = [], None
    for _ in range(20):
        loss = sum(distiller(student(problem["x_s"]), None, problem["target"]).values())
        values.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        grads = [p.grad for p in params if p.grad is not None]
        if scale is None:
            scale = 1.0 / torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads])).item()
        for g in grads:
            g.mul_(scale)
        optimizer.step()
    assert np.isfinite(values).all()
    assert values[-1] < 0.9 * values[0], values


@pytest.mark.parametrize("source", ["params", "perturbed"])
@pytest.mark.parametrize("name", KD_METHODS)
def test_weighted_value_is_kd_weight_times_functional(name, source, problem):
    assert name in REFERENCE and name in PERTURBED, f"add {name} to REFERENCE and PERTURBED in this file"
    student, teacher = _nets()
    group = PARAMS[name] if source == "params" else PERTURBED[name]
    hyper = {**method_hyperparameters(name), **group}
    distiller = _distiller(name, problem, teacher, **group)
    s, t, y = student(problem["x_s"]), problem["out_t"], problem["target"]
    terms = distiller(s, t, y)
    assert list(terms) == ["kd"] and terms["kd"].dim() == 0
    kd_weight = hyper.pop("kd_weight")
    for key in ("ce_weight", "feature", "hint_layer"):  # classification-task arguments, at their retrieval values
        assert hyper.pop(key, None) in (1.0, "embedding", None)
    expected = kd_weight * REFERENCE[name](distiller, s, t, y, teacher, **hyper)
    assert terms["kd"].dtype == expected.dtype
    torch.testing.assert_close(terms["kd"], expected, rtol=1e-6, atol=0.0)
    assert terms["kd"].item() > 0


@pytest.mark.parametrize("name", KD_METHODS)
def test_forward_backward_reaches_student_and_connectors_only(name, problem):
    student, teacher = _nets()
    distiller = _distiller(name, problem, teacher, **PARAMS[name])
    loss = distiller(student(problem["x_s"]), problem["out_t"], problem["target"])["kd"]
    loss.backward()
    grads = [p.grad for p in student.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0
    assert all(p.grad is None for p in teacher.parameters())
    for p in distiller.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()


@pytest.mark.parametrize("name", KD_METHODS)
def test_loss_decreases_with_sgd(name, problem):
    """20 SGD steps on student + connector parameters; the gradients are scaled by one constant, chosen so that
    the first step's gradient has norm 1 (one learning rate then fits every method's loss scale)."""
    student, teacher = _nets()
    distiller = _distiller(name, problem, teacher, **PARAMS[name])
    params = list(student.parameters()) + list(distiller.parameters())
    optimizer = torch.optim.SGD(params, lr=0.05, momentum=0.9)
    values, scale = [], None
    for _ in range(20):
        loss = distiller(student(problem["x_s"]), problem["out_t"], problem["target"])["kd"]
        values.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        grads = [p.grad for p in params if p.grad is not None]
        if scale is None:
            scale = 1.0 / torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads])).item()
        for g in grads:
            g.mul_(scale)
        optimizer.step()
    assert np.isfinite(values).all()
    assert values[-1] < 0.9 * values[0], values


# --- UGD specifics --------------------------------------------------------------------------------------------

def test_grid_features_are_sample_major_then_row_major():
    x = torch.arange(16.0).reshape(2, 2, 2, 2)  # B=2, C=2, 2x2
    rows = grid_features(x, 2)
    assert rows.shape == (8, 2)
    assert rows[:, 0].tolist() == [0, 1, 2, 3, 8, 9, 10, 11]
    assert rows[:, 1].tolist() == [4, 5, 6, 7, 12, 13, 14, 15]
    assert grid_features(x, 1).tolist() == [[1.5, 5.5], [9.5, 13.5]]


@pytest.mark.parametrize("stage_shape, hyper, sizes", [
    ((2, 256, 8, 8), {}, (8, 4)),          # R18 at 128 px: official p = 128 // 16
    ((2, 256, 4, 4), {}, (4, 2)),          # R18 at 64 px
    ((2, 256, 10, 5), {}, (10, 5)),        # R18 at 160 x 80: official p = 160 // 16
    ((2, 256, 8, 8), {"pool_size": 6}, (6, 3)),
])
def test_ugd_grid_and_projectors_from_probed_shapes(stage_shape, hyper, sizes):
    shapes_s = {"feats": [(2, 64, 32, 32), (2, 128, 16, 16), stage_shape, (2, 512, 8, 8)], "embedding": (2, 512)}
    distiller = build_method("ugd", **hyper)
    distiller.setup(shapes_s, {"feats": [(2, 2048, 16, 16)], "embedding": (2, 512)})
    assert distiller.sizes == sizes
    assert len(distiller.projectors) == 2
    for projector in distiller.projectors:
        assert projector[1].weight.shape == (512, 256) and projector[1].bias is None


def _ugd_case():
    """Seeded outputs: student stage 3 is 4 x 4 (grids 4 and 2), teacher map 7 x 7 (uneven adaptive pooling)."""
    g = torch.Generator().manual_seed(3)
    b, d, c_s, c_t, classes = 4, 8, 6, 10, 3

    def rnd(*shape):
        return torch.randn(*shape, generator=g)

    student = ModelOutput(feats=[rnd(b, 3, 16, 16), rnd(b, 5, 8, 8), rnd(b, c_s, 4, 4)], pooled=rnd(b, c_s),
                          embedding=rnd(b, d))
    teacher = ModelOutput(feats=[rnd(b, c_t, 7, 7)], pooled=rnd(b, c_t), embedding=rnd(b, d))
    head = RetrievalHead(c_t, classes, d)
    for tensor in list(head.parameters()) + [m for m in head.buffers() if m.dtype.is_floating_point]:
        tensor.data.copy_(rnd(*tensor.shape))
    head.add_block[0].running_var.abs_().add_(0.5)
    head.add_block[3].running_var.abs_().add_(0.5)
    distiller = build_method("ugd", kd_weight=1.5, alpha=2.0, beta=3.0)
    distiller.setup({"feats": [tuple(f.shape) for f in student.feats], "embedding": (b, d)},
                    {"feats": [tuple(teacher.feats[0].shape)], "embedding": (b, d)})
    for p in distiller.parameters():
        p.data.copy_(rnd(*p.shape))
    target = torch.tensor([0, 1, 2, 1])
    return distiller, student, teacher, head.eval(), target


def test_ugd_matches_official_golden_value():
    distiller, student, teacher, head, target = _ugd_case()
    net = torch.nn.Module()
    net.fc = head
    distiller.bind_teacher(net)
    distiller.train()
    loss = distiller(student, teacher, target)["kd"]
    torch.testing.assert_close(loss, torch.tensor(1.5 * 12.286720275878906), rtol=1e-5, atol=0.0)


def test_ugd_local_term_only_on_correct_teacher_regions():
    """A 1-class teacher head predicts class 0 everywhere: labels 0 keep every region, labels 1 none."""
    distiller, student, teacher, _, _ = _ugd_case()
    net = torch.nn.Module()
    net.fc = RetrievalHead(teacher.feats[0].shape[1], 1, 8).eval()
    distiller.bind_teacher(net)
    f = functional.ugd_loss(student.embedding, teacher.embedding, [], [], [], torch.zeros(4, dtype=torch.long),
                            alpha=2.0, beta=0.0)
    none = distiller(student, teacher, torch.ones(4, dtype=torch.long))["kd"]
    every = distiller(student, teacher, torch.zeros(4, dtype=torch.long))["kd"]
    torch.testing.assert_close(none, 1.5 * f)
    assert every > none


def test_ugd_keeps_the_teacher_head_out_of_its_parameters(problem):
    student, teacher = _nets()
    distiller = _distiller("ugd", problem, teacher, **PARAMS["ugd"])
    assert all(k.startswith("projectors.") for k in distiller.state_dict())
    assert {id(p) for p in distiller.parameters()}.isdisjoint(id(p) for p in teacher.parameters())
    distiller.train()
    assert not teacher.fc.training


def test_ugd_errors(problem):
    with pytest.raises(ValueError, match="layer"):
        build_method("ugd", layer=4).setup(problem["shapes_s"], problem["shapes_t"])
    with pytest.raises(ValueError, match="2 x 2"):
        build_method("ugd", pool_size=1).setup(problem["shapes_s"], problem["shapes_t"])
    shapes_t = {**problem["shapes_t"], "embedding": (2, 32)}
    with pytest.raises(ValueError, match="embedding dims"):
        build_method("ugd").setup(problem["shapes_s"], shapes_t)
    student, _ = _nets()
    distiller = build_method("ugd")
    distiller.setup(problem["shapes_s"], problem["shapes_t"])
    with pytest.raises(ValueError, match="head"):
        distiller.bind_teacher(torch.nn.Linear(2, 2))
    with pytest.raises(RuntimeError, match="bind_teacher"):
        distiller(student(problem["x_s"]), problem["out_t"], problem["target"])


def test_trainer_binds_the_teacher(tmp_path):
    """One real training step of UGD through the trainer (which must call bind_teacher)."""
    student, teacher = _nets()
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(5), 4)
    data = TrainData(rng.integers(0, 256, size=(20, 28, 28, 1), dtype=np.uint8), np.arange(20), labels)
    recipe = Recipe(epochs=1, lr=0.01, ids_per_batch=2, samples_per_id=4, kd_batch_size=8)
    distiller = build_method("ugd", **PARAMS["ugd"])
    with pytest.raises(KeyboardInterrupt):
        train(student, data, recipe, ViewSpec(RES_S, (0.5,), (0.25,)), seed=0, checkpoint_path=tmp_path / "c.pt",
              distiller=distiller, teacher=teacher, view_t=ViewSpec(RES_T, (0.5,), (0.25,)), progress=False,
              stop_after_steps=1)
    assert distiller._teacher_head is teacher.fc
    assert distiller.projectors[0][1].weight.grad is not None
