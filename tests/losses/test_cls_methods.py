"""Classification distiller modules (mdistiller / SDD): every method of ``benchmark_cls.methods`` is built from
its params.yaml group (classification options), set up from probed shapes, checked against ``kd_weight x`` its
functional loss on the embedded convnets, and back-propagated on three teacher -> student pairs
(convnet_m -> convnet_s, resnet32x4 -> resnet8x4, vgg13 -> vgg8; tiny inputs). Module specifics (connectors,
margins, derived ReviewKD configuration, CRD sampling, warm-ups, the SDD N = 1 branch) follow.
"""

import functools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from distillery.config import method_options
from distillery.losses import functional
from distillery.losses.math.crd import crd_contrast_loss, crd_normalizer, crd_scores
from distillery.losses.methods.ofd import ofd_margin
from distillery.losses.registry import build_method, method_hyperparameters
from distillery.models import build_model
from distillery.models.shapes import probe_shapes

ALL_PARAMS = yaml.safe_load((Path(__file__).parents[2] / "params.yaml").read_text())
CLS_METHODS = [m for m in ALL_PARAMS["benchmark_cls"]["methods"] if m != "vanilla"]
# teacher, student, input resolution, batch, channels, model options
PAIRS = {
    "convnet": ("convnet_m", "convnet_s", 16, 8, 1, {"head": "linear", "in_channels": 1}),
    "resnet32x4-resnet8x4": ("resnet32x4", "resnet8x4", 32, 4, 3, {}),
    "vgg13-vgg8": ("vgg13", "vgg8", 32, 4, 3, {}),
}
CLASSES = 5


def options(name: str) -> dict:
    return method_options(ALL_PARAMS, name, "classification")


@functools.lru_cache(maxsize=None)
def _teacher_case(pair: str):
    """Frozen teacher (eval), its outputs on a seeded batch, the batch, targets and the probed teacher shapes."""
    t_name, _, res, batch, channels, extra = PAIRS[pair]
    torch.manual_seed(0)
    teacher = build_model(t_name, num_classes=CLASSES, spp=(1, 2, 4), **extra).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, channels, res, res, generator=g)
    with torch.no_grad():
        out_t = teacher(x)
    target = torch.arange(batch) % CLASSES
    return teacher, x, out_t, target, probe_shapes(teacher, (channels, res, res))


def _student(pair: str):
    _, s_name, res, _, channels, extra = PAIRS[pair]
    torch.manual_seed(2)
    student = build_model(s_name, num_classes=CLASSES, spp=(1, 2, 4), **extra).train()
    return student, probe_shapes(student, (channels, res, res))


def _setup(name: str, pair: str, **hyper):
    teacher, x, out_t, target, shapes_t = _teacher_case(pair)
    student, shapes_s = _student(pair)
    distiller = build_method(name, **hyper)
    distiller.setup(shapes_s, shapes_t)
    distiller.bind_teacher(teacher)
    distiller.bind_data(np.arange(64) % CLASSES, seed=0)
    distiller.train()
    return distiller, student, x, out_t, target


def _forward(distiller, student, x, out_t, target):
    extra = {"index": torch.arange(len(target))} if distiller.needs_sample_index else {}
    return distiller(student(x), out_t, target, **extra)


# ------------------------------------------------------------------------ reference values (functional layer)
def _ofd_reference(d, s, t, y, hp, net, memory):
    n = d.n_stages
    total = 0.0
    for i, (f_s, f_t, bn) in enumerate(zip(s.preact_feats[1:][-n:], t.preact_feats[1:][-n:],
                                           net.get_bn_before_relu()[-n:])):
        total = total + functional.ofd_loss(d.connectors[i](f_s), f_t, _margin_by_hand(bn)) / 2 ** (n - 1 - i)
    return total


def _vid_reference(d, s, t, y, hp, *_):
    init = math.log(math.exp(hp["init_pred_var"] - hp["eps"]) - 1.0)
    return sum(functional.vid_loss(reg(f_s), torch.full((f_t.shape[1],), init), f_t, eps=hp["eps"])
               for reg, f_s, f_t in zip(d.regressors, s.feats[1:], t.feats[1:]))


def _crd_reference(d, s, t, y, hp, net, memory):
    d.set_epoch(1)
    idx = d.contrast_indices(torch.arange(len(y)))
    d.set_epoch(1)  # the forward draws the same negatives again
    v_s, v_t = d.embed_s(s.pooled), d.embed_t(t.pooled)
    n = memory[0].shape[0]
    scores_s = crd_scores(memory[1], v_s, idx, hp["nce_t"])
    scores_t = crd_scores(memory[0], v_t, idx, hp["nce_t"])
    return (crd_contrast_loss(scores_s / crd_normalizer(scores_s, n), n)
            + crd_contrast_loss(scores_t / crd_normalizer(scores_t, n), n))


def _reviewkd_reference(d, s, t, y, hp, *_):
    """The official forward written out: levels deep -> shallow through the ABFs, then hcl_loss."""
    n = d.n_levels
    x = (s.feats[-n:] + [s.pooled[:, :, None, None]])[::-1]
    out, res = d.abfs[0](x[0], None, d.shapes[0], d.out_shapes[0])
    results = [out]
    for feat, abf, shape, out_shape in zip(x[1:], d.abfs[1:], d.shapes[1:], d.out_shapes[1:]):
        out, res = abf(feat, res, shape, out_shape)
        results.insert(0, out)
    return functional.hcl_loss(results, t.preact_feats[1:][-n:] + [t.pooled[:, :, None, None]])


def _patch(out):
    return out.extras["patch_logits"]


REFERENCE = {
    "kd": lambda d, s, t, y, hp, *_: functional.kd_loss(s.logits, t.logits, hp["temperature"]),
    "dot": lambda d, s, t, y, hp, *_: functional.kd_loss(s.logits, t.logits, hp["temperature"]),
    "fitnet": lambda d, s, t, y, hp, *_: functional.fitnet_loss(d.conv_reg(s.feats[hp["hint_layer"]]),
                                                            t.feats[hp["hint_layer"]]),
    "at": lambda d, s, t, y, hp, *_: functional.at_loss(s.feats[1:], t.feats[1:], p=hp["p"]),
    "nst": lambda d, s, t, y, hp, *_: functional.nst_loss(s.feats[1:], t.feats[1:]),
    "sp": lambda d, s, t, y, hp, *_: functional.sp_loss([s.feats[-1]], [t.feats[-1]]),
    "kdsvd": lambda d, s, t, y, hp, *_: functional.kdsvd_loss(s.feats[1:], t.feats[1:], k=hp["k"]),
    "pkt": lambda d, s, t, y, hp, *_: functional.pkt_loss(s.pooled, t.pooled, eps=hp["eps"]),
    "rkd": lambda d, s, t, y, hp, *_: functional.rkd_loss(s.pooled, t.pooled, squared=hp["squared"], eps=hp["eps"],
                                                      distance_weight=hp["distance_weight"],
                                                      angle_weight=hp["angle_weight"]),
    "ofd": _ofd_reference,
    "vid": _vid_reference,
    "crd": _crd_reference,
    "reviewkd": _reviewkd_reference,
    "dkd": lambda d, s, t, y, hp, *_: functional.dkd_loss(s.logits, t.logits, y, alpha=hp["alpha"], beta=hp["beta"],
                                                      temperature=hp["temperature"]),
    "nkd": lambda d, s, t, y, hp, *_: functional.nkd_loss(s.logits, t.logits, y, temperature=hp["temperature"],
                                                      gamma=hp["gamma"]),
    "sdd_kd": lambda d, s, t, y, hp, *_: functional.sdd_kd_loss(_patch(s), _patch(t), y, temperature=hp["temperature"]),
    "sdd_dkd": lambda d, s, t, y, hp, *_: functional.sdd_dkd_loss(_patch(s), _patch(t), y, alpha=hp["alpha"],
                                                              beta=hp["beta"], temperature=hp["temperature"]),
    "sdd_nkd": lambda d, s, t, y, hp, *_: functional.sdd_nkd_loss(_patch(s), _patch(t), y, temperature=hp["temperature"],
                                                              gamma=hp["gamma"]),
}

# Non-default hyper-parameters (each differs from its default and from params.yaml).
PERTURBED = {
    "kd": {"kd_weight": 0.5, "temperature": 3.0, "ce_weight": 0.3},
    "dot": {"kd_weight": 0.5, "temperature": 3.0, "ce_weight": 0.3, "delta": 0.05},
    "fitnet": {"kd_weight": 3.0, "hint_layer": 2},
    "at": {"kd_weight": 10.0, "p": 4.0},
    "nst": {"kd_weight": 2.0},
    "sp": {"kd_weight": 20.0},
    "kdsvd": {"kd_weight": 2.0, "k": 2},
    "pkt": {"kd_weight": 2.0, "eps": 1e-3, "feature": "pooled"},
    "rkd": {"kd_weight": 0.5, "distance_weight": 10.0, "angle_weight": 20.0, "squared": True, "feature": "pooled"},
    "ofd": {"kd_weight": 0.01, "teacher_train_mode": False},
    "vid": {"kd_weight": 2.0, "eps": 1e-3, "init_pred_var": 2.0},
    "crd": {"kd_weight": 0.5, "feat_dim": 16, "nce_k": 20, "nce_t": 0.2},
    "reviewkd": {"kd_weight": 2.0, "warmup_epochs": 5.0},
    "dkd": {"kd_weight": 2.0, "alpha": 0.5, "beta": 2.0, "temperature": 2.0, "warmup_epochs": 5.0},
    "nkd": {"kd_weight": 2.0, "temperature": 2.0, "gamma": 1.0, "warmup_epochs": 5.0},
    "sdd_kd": {"kd_weight": 0.5, "temperature": 2.0},
    "sdd_dkd": {"kd_weight": 2.0, "alpha": 0.5, "beta": 2.0, "temperature": 2.0, "warmup_epochs": 5.0},
    "sdd_nkd": {"kd_weight": 2.0, "temperature": 2.0, "gamma": 3.0, "warmup_epochs": 5.0},
}


def _margin_by_hand(bn) -> torch.Tensor:
    """The spec's margin formula with an independent normal pdf/cdf (torch.distributions, float64)."""
    normal = torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0)
    s, m = bn.weight.detach().double().abs(), bn.bias.detach().double()
    cdf = normal.cdf(-m / s)
    margin = torch.where(cdf > 0.001, m - s * normal.log_prob(m / s).exp() / cdf, -3 * s)
    return margin.float().reshape(1, -1, 1, 1)


@pytest.mark.parametrize("source", ["params", "perturbed"])
@pytest.mark.parametrize("name", CLS_METHODS)
def test_weighted_value_is_kd_weight_times_functional(name, source):
    assert name in REFERENCE and name in PERTURBED, f"add {name} to REFERENCE and PERTURBED in this file"
    group = options(name) if source == "params" else PERTURBED[name]
    hyper = {**method_hyperparameters(name), **group}
    distiller, student, x, out_t, target = _setup(name, "convnet", **group)
    s = student(x)
    memory = (distiller.memory_s.clone(), distiller.memory_t.clone()) if name == "crd" else None
    expected = REFERENCE[name](distiller, s, out_t, target, hyper, _teacher_case("convnet")[0], memory)
    extra = {"index": torch.arange(len(target))} if distiller.needs_sample_index else {}
    terms = distiller(s, out_t, target, **extra)
    assert list(terms) == ["kd"] and terms["kd"].dim() == 0
    torch.testing.assert_close(terms["kd"], hyper["kd_weight"] * expected, rtol=1e-5, atol=1e-7)
    assert terms["kd"].item() != 0
    assert distiller.ce_weight == hyper["ce_weight"]


@pytest.mark.parametrize("pair", sorted(PAIRS))
@pytest.mark.parametrize("name", CLS_METHODS)
def test_builds_and_backpropagates_on_every_pair(name, pair):
    distiller, student, x, out_t, target = _setup(name, pair, **options(name))
    teacher = _teacher_case(pair)[0]
    loss = _forward(distiller, student, x, out_t, target)["kd"]
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in student.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0
    assert all(p.grad is None for p in teacher.parameters())
    for p in distiller.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()


@pytest.mark.parametrize("name", CLS_METHODS)
def test_loss_decreases_with_sgd(name):
    """20 SGD steps on student + connectors, gradients scaled so that the first step's norm is 1. Only a
    decrease is required: VID's fixed variance and NKD's all-classes term leave large constant parts."""
    distiller, student, x, out_t, target = _setup(name, "convnet", **options(name))
    params = list(student.parameters()) + list(distiller.parameters())
    optimizer = torch.optim.SGD(params, lr=0.05, momentum=0.9)
    values, scale = [], None
    for _ in range(20):
        loss = _forward(distiller, student, x, out_t, target)["kd"]
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
    assert values[-1] < values[0] - 1e-3 * abs(values[0]), values


# ------------------------------------------------------------------------------------------ specifics
@pytest.mark.parametrize("gamma, beta, expected", [(1.0, 0.0, -0.7978846), (1.0, 1.0, -0.5251353),
                                                   (1.0, -1.0, -1.2876000), (-2.0, 0.0, -1.5957691),
                                                   (1.0, 4.0, -3.0), (1.0, -4.0, -4.0001338)])
def test_ofd_margin_hand_values(gamma, beta, expected):
    bn = torch.nn.BatchNorm2d(1)
    with torch.no_grad():
        bn.weight.fill_(gamma)
        bn.bias.fill_(beta)
    torch.testing.assert_close(ofd_margin(bn), torch.tensor([expected]), rtol=1e-6, atol=1e-6)
    bn.weight.data.zero_()
    with pytest.raises(ValueError, match="0"):
        ofd_margin(bn)


def test_ofd_connectors_margins_and_teacher_mode():
    distiller, *_ = _setup("ofd", "resnet32x4-resnet8x4", **options("ofd"))
    assert distiller.n_stages == 3 and distiller.teacher_train_mode
    assert [c[0].weight.shape for c in distiller.connectors] == [(64, 64, 1, 1), (128, 128, 1, 1), (256, 256, 1, 1)]
    assert all(c[0].bias is None for c in distiller.connectors)
    assert not any(k.startswith("margin") for k in distiller.state_dict())  # recomputed, not saved
    assert distiller.margin2.shape == (1, 256, 1, 1)
    assert not build_method("ofd", teacher_train_mode=False).teacher_train_mode
    with pytest.raises(ValueError, match="get_bn_before_relu"):
        build_method("ofd").bind_teacher(torch.nn.Linear(2, 2))


def test_fitnet_connector_follows_the_official_rules():
    s8, s16, s32 = (1, 4, 8, 8), (1, 4, 16, 16), (1, 4, 32, 32)
    kinds = {}
    for s, t in [(s16, s8), (s8, s16), (s16, s16), ((1, 4, 10, 10), s8)]:
        distiller = build_method("fitnet", hint_layer=0)
        distiller.setup({"feats": [s], "embedding": (1, 2)}, {"feats": [t], "embedding": (1, 3)})
        kinds[(s[2], t[2])] = (type(distiller.conv_reg.conv).__name__, distiller.conv_reg.conv.kernel_size)
    assert kinds == {(16, 8): ("Conv2d", (3, 3)), (8, 16): ("ConvTranspose2d", (4, 4)), (16, 16): ("Conv2d", (1, 1)),
                     (10, 8): ("Conv2d", (3, 3))}
    with pytest.raises(ValueError, match="hint_layer"):
        build_method("fitnet", hint_layer=0).setup({"feats": [s8]}, {"feats": [s32]})
    with pytest.raises(ValueError, match="hint_layer"):
        build_method("fitnet", hint_layer=3).setup({"feats": [s8]}, {"feats": [s8]})
    assert build_method("fitnet").needs_equal_embedding_dims  # retrieval default: no connector
    assert not build_method("fitnet", hint_layer=1).needs_equal_embedding_dims


def test_reviewkd_configuration_is_derived_as_the_official_cifar_one():
    """resnet32x4 -> resnet8x4 gives IN = OUT_CHANNELS [64, 128, 256, 256], SHAPES = OUT_SHAPES [1, 8, 16, 32]."""
    distiller, *_ = _setup("reviewkd", "resnet32x4-resnet8x4", **options("reviewkd"))
    assert distiller.shapes == distiller.out_shapes == [1, 8, 16, 32]
    ins = [abf.conv1[0].in_channels for abf in distiller.abfs][::-1]
    outs = [abf.conv2[0].out_channels for abf in distiller.abfs][::-1]
    assert ins == outs == [64, 128, 256, 256]
    assert {abf.conv1[0].out_channels for abf in distiller.abfs} == {256}  # mid = min(512, 256)
    assert [abf.att_conv is None for abf in distiller.abfs] == [True, False, False, False]


def test_vid_variance_is_fixed_unless_learned():
    distiller, *_ = _setup("vid", "convnet", **options("vid"))
    assert not any("log_scale" in k for k, _ in distiller.named_parameters())
    assert not any("log_scale" in k for k in distiller.state_dict())
    torch.testing.assert_close(torch.nn.functional.softplus(distiller.log_scale0) + 1e-5,
                               torch.full((32,), 5.0), rtol=1e-6, atol=0)
    learned, *_ = _setup("vid", "convnet", learn_variance=True)
    assert sorted(k for k, _ in learned.named_parameters() if "log_scale" in k) == ["log_scale0", "log_scale1"]


def test_crd_negatives_banks_and_normaliser():
    labels = np.repeat(np.arange(4), 10)
    distiller = build_method("crd", feat_dim=8, nce_k=25)
    distiller.setup({"pooled": (1, 6)}, {"pooled": (1, 7)})
    distiller.bind_data(labels, seed=3)
    distiller.set_epoch(2)
    idx = distiller.contrast_indices(torch.tensor([0, 15, 39]))
    assert idx.shape == (3, 26) and idx[:, 0].tolist() == [0, 15, 39]
    for row in idx:
        negatives = row[1:].numpy()
        assert len(set(negatives)) == 25  # without replacement (30 candidates)
        assert (labels[negatives] != labels[row[0].item()]).all()
    distiller.set_epoch(2)
    assert torch.equal(distiller.contrast_indices(torch.tensor([0, 15, 39])), idx)  # seeded by (seed, epoch)
    bound = 1 / math.sqrt(8 / 3)
    assert distiller.memory_s.shape == (40, 8) and distiller.memory_s.abs().max() <= bound
    assert set(distiller.state_dict()) >= {"memory_s", "memory_t", "z"}
    with pytest.raises(ValueError, match="index"):
        distiller(None, None, None)


def test_crd_fixes_z_on_the_first_batch_and_updates_the_banks():
    distiller, student, x, out_t, target = _setup("crd", "convnet", **PERTURBED["crd"])
    before = distiller.memory_s.clone()
    _forward(distiller, student, x, out_t, target)
    z = distiller.z.clone()
    assert (z > 0).all()
    rows = torch.arange(len(target))
    assert not torch.equal(distiller.memory_s[rows], before[rows]) and torch.equal(distiller.memory_s[8:], before[8:])
    torch.testing.assert_close(distiller.memory_s[rows].norm(dim=1), torch.ones(len(target)))
    _forward(distiller, student, x, out_t, target)
    assert torch.equal(distiller.z, z)


@pytest.mark.parametrize("name", ["dkd", "nkd", "reviewkd", "sdd_dkd", "sdd_nkd"])
def test_warmup_scales_with_the_one_based_epoch(name):
    distiller, student, x, out_t, target = _setup(name, "convnet", warmup_epochs=20.0)
    s = student(x)
    full = distiller(s, out_t, target)["kd"]  # no epoch set: factor 1
    distiller.set_epoch(1)
    torch.testing.assert_close(distiller(s, out_t, target)["kd"], 0.05 * full)
    distiller.set_epoch(25)
    torch.testing.assert_close(distiller(s, out_t, target)["kd"], full)


@pytest.mark.parametrize("name", ["sdd_kd", "sdd_dkd", "sdd_nkd"])
def test_sdd_single_region_uses_the_main_logits(name):
    """M = [1]: the official modules fall back to the global loss on the main logits."""
    teacher, x, _, target, _ = _teacher_case("convnet")
    extra = PAIRS["convnet"][5]
    torch.manual_seed(0)
    t1 = build_model("convnet_m", num_classes=CLASSES, spp=(1,), **extra).eval()
    t1.load_state_dict(teacher.state_dict())
    student = build_model("convnet_s", num_classes=CLASSES, spp=(1,), **extra)
    distiller = build_method(name)
    distiller.setup(probe_shapes(student, (1, 16, 16)), probe_shapes(t1, (1, 16, 16)))
    s, t = student(x), t1(x)
    base = {"sdd_kd": "kd", "sdd_dkd": "dkd", "sdd_nkd": "nkd"}[name]
    plain = build_method(base, **{k: v for k, v in vars(distiller).items()
                                  if k in method_hyperparameters(base) and k != "kd_weight"})
    torch.testing.assert_close(distiller(s, t, target)["kd"] / distiller.kd_weight, plain(s, t, target)["kd"] / plain.kd_weight)


def test_sdd_needs_patch_logits_from_both_networks():
    student = build_model("convnet_s", num_classes=CLASSES, head="linear", in_channels=1)
    _, _, _, _, shapes_t = _teacher_case("convnet")
    with pytest.raises(ValueError, match="student has none"):
        build_method("sdd_kd").setup(probe_shapes(student, (1, 16, 16)), shapes_t)


def test_feature_methods_reject_networks_without_stages_and_bad_features():
    shapes = {"feats": [(1, 4, 8, 8)], "preact_feats": [], "pooled": (1, 4), "embedding": (1, 4)}
    for name in ("at", "nst", "kdsvd", "vid", "ofd"):
        with pytest.raises(ValueError, match=r"\[1:\]"):
            build_method(name).setup(shapes, shapes)
    with pytest.raises(ValueError, match="feature"):
        build_method("rkd", feature="logits")


def test_dot_makes_the_two_momentum_optimizer():
    from distillery.engine.classification import ClassificationRecipe
    from distillery.losses.math.dot import DistillationOrientedSGD

    recipe = ClassificationRecipe(epochs=1, lr=0.05, momentum=0.9, weight_decay=5e-4)
    opt = build_method("dot").make_optimizer([torch.nn.Parameter(torch.zeros(2))], recipe)
    assert isinstance(opt, DistillationOrientedSGD)
    group = opt.param_groups[0]
    assert (group["lr"], group["weight_decay"]) == (0.05, 5e-4)
    assert group["momentum"] == pytest.approx(0.825) and group["momentum_kd"] == pytest.approx(0.975)
    assert build_method("kd").make_optimizer([], recipe) is None
    assert build_method("dot").ce_weight == 0.1 and build_method("dot").kd_weight == 0.9


# ------------------------------------------------------------- golden values of the official modules
# Computed by running the official modules (megvii-research/mdistiller a08d46f: OFD.init_ofd_modules + ofd_loss,
# ReviewKD.forward_train with stub networks returning the outputs below, VID.init_vid_modules + vid_loss,
# FitNet's ConvReg + mse, CRD's ContrastMemory + ContrastLoss with Tensor.cuda / AliasMethod.cuda stubbed) with
# the parameters of the Distillery module copied in by position, on the seeded outputs of ``_golden_case``
# (CPU, float32).
def _golden_case():
    """Seeded student / teacher ModelOutputs with unequal channels and spatial sizes, and a BN-bearing teacher."""
    from distillery.models import ModelOutput

    g = torch.Generator().manual_seed(11)
    b = 4

    def rnd(*shape):
        return torch.randn(*shape, generator=g)

    def out(specs, dim):
        pre = [rnd(b, c, h, h) for c, h in specs]
        return ModelOutput(feats=[p.relu() for p in pre], preact_feats=pre, pooled=rnd(b, dim).relu(),
                           embedding=None, logits=rnd(b, 3))

    student = out([(4, 8), (6, 8), (8, 8), (10, 2)], 10)
    teacher = out([(5, 8), (7, 8), (9, 4), (12, 2)], 12)
    net = torch.nn.Module()
    bns = [torch.nn.BatchNorm2d(c) for c in (7, 9, 12)]
    for bn in bns:
        bn.weight.data.copy_(rnd(bn.num_features))
        bn.bias.data.copy_(rnd(bn.num_features))
    net.get_bn_before_relu = lambda: bns
    return student, teacher, net, torch.tensor([0, 1, 2, 1])


def _shapes(out):
    return {"feats": [f.shape for f in out.feats], "preact_feats": [f.shape for f in out.preact_feats],
            "pooled": out.pooled.shape, "embedding": None, "logits": out.logits.shape, "extras": {}}


def _filled(distiller, seed=5):
    """Deterministic parameters and BN buffers (independent of init), then train mode."""
    g = torch.Generator().manual_seed(seed)
    for name, t in list(distiller.named_parameters()) + [(n, b) for n, b in distiller.named_buffers()
                                                         if n.endswith(("running_mean", "running_var"))]:
        if name.endswith("running_var"):
            t.data.copy_(torch.rand(t.shape, generator=g) + 0.5)
        else:
            t.data.copy_(torch.randn(t.shape, generator=g) / max(1, t[0].numel()) ** 0.5)
    return distiller.train()


GOLDEN = {"ofd": 1056.7821044921875, "reviewkd": 10.013339042663574, "vid": 2.5692498683929443,
          "fitnet": 1.4112744331359863}


@pytest.mark.parametrize("name, hyper", [("ofd", {"kd_weight": 1.0}), ("reviewkd", {"kd_weight": 1.0}),
                                         ("vid", {"kd_weight": 1.0}), ("fitnet", {"kd_weight": 1.0, "hint_layer": 2})])
def test_module_matches_official_golden_value(name, hyper):
    student, teacher, net, target = _golden_case()
    distiller = build_method(name, **hyper)
    distiller.setup(_shapes(student), _shapes(teacher))
    distiller.bind_teacher(net)
    loss = _filled(distiller)(student, teacher, target)["kd"]
    torch.testing.assert_close(loss, torch.tensor(GOLDEN[name]), rtol=1e-5, atol=1e-6)


def test_crd_matches_official_golden_values_over_two_steps():
    """Official ContrastMemory / Embed / ContrastLoss fed the same contrast indices: step 1 sets Z, step 2 reuses
    it with the updated banks."""
    student, teacher, _, target = _golden_case()
    distiller = build_method("crd", kd_weight=1.0, feat_dim=6, nce_k=5, nce_t=0.1)
    distiller.setup(_shapes(student), _shapes(teacher))
    distiller.bind_data(np.arange(12) % 3, seed=4)
    _filled(distiller)
    index = torch.tensor([0, 4, 8, 10])
    losses = []
    for epoch in (1, 2):
        distiller.set_epoch(epoch)
        losses.append(distiller(student, teacher, target, index=index)["kd"])
    torch.testing.assert_close(torch.stack(losses), torch.tensor([20.052581787109375, 13.154300689697266]),
                               rtol=1e-5, atol=0)
    torch.testing.assert_close(distiller.z, torch.tensor([336.7136535644531, 59008.8828125]), rtol=1e-6, atol=0)
