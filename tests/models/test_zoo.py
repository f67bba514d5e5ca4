"""Model zoo: every registered backbone is checked against numbers computed with the official code.

Fixtures were computed with mdistiller a08d46f (CIFAR / ImageNet), SDD-CVPR2024 e412036 (SPP patch logits) and
D3still b9801b9 (retrieval), torch 2.14 CPU float32:
- OFFICIAL: (parameter count, state-dict entries, buffer elements, sha1[:16] of the "key:shape" lines of the
  state dict) of the official model (CIFAR num_classes 100, ImageNet 1000, retrieval 100, last_stride 1);
  equal digests mean equal parameter names, order and shapes, i.e. official checkpoints load strictly;
- GOLDEN / PATCH_GOLDEN: eval-mode outputs of the official model after ``fill_state`` on ``_input``.
"""

from __future__ import annotations

import functools
import hashlib

import pytest
import torch
import torch.nn as nn
from torchvision import models as tvm

from distillery.models import available_models, build_model
from distillery.models.heads import RetrievalHead
from distillery.models.output import ModelOutput
from distillery.models.shapes import probe_shapes
from distillery.models.spp import parse_scales, patch_logits, spp_pool
from distillery.models.zoo._common import load_pretrained
from distillery.models.zoo.shufflenetv1 import channel_shuffle

torch.set_num_threads(1)

OFFICIAL = {
    "resnet8": (83892, 56, 681, "831f64d7444b548b"),
    "resnet14": (181108, 92, 1135, "fa169bf28b929c5f"),
    "resnet20": (278324, 128, 1589, "45ee7f94befec23b"),
    "resnet32": (472756, 200, 2497, "8160a3a24d4d9314"),
    "resnet44": (667188, 272, 3405, "5cc7f2afc2348ee3"),
    "resnet56": (861620, 344, 4313, "4274425b1d0a9761"),
    "resnet110": (1736564, 668, 8399, "496bf94732fdbf60"),
    "resnet8x4": (1233540, 62, 2762, "f75dd6770d9a0a8e"),
    "resnet32x4": (7433860, 206, 9954, "5baed42a49df9d31"),
    "resnet18_cifar": (11220132, 122, 9620, "4ea8e3b0e778d72d"),
    "resnet34_cifar": (21328292, 218, 17060, "0669a699c1f3e40c"),
    "resnet50_cifar": (23705252, 320, 53173, "76e3f97d9d5d836b"),
    "wrn_16_1": (180916, 82, 941, "9ef0b2e238327b89"),
    "wrn_16_2": (703284, 83, 1837, "c05c20f486b6990a"),
    "wrn_40_1": (569780, 226, 2757, "95ae1bd4358fdd7d"),
    "wrn_40_2": (2255156, 227, 5445, "300a8404c74e66e6"),
    "vgg8": (3965028, 37, 2949, "3e1fe60b492fea75"),
    "vgg11": (9277284, 58, 5512, "54506af80898518f"),
    "vgg13": (9462180, 72, 5898, "0a33da377f23634a"),
    "vgg16": (14774436, 93, 8461, "d6bb31f6534ae9ee"),
    "vgg19": (20086692, 114, 11024, "80289b6b6ea4a6fb"),
    "mobilenetv2": (812836, 320, 18421, "fdb708b1871a52c9"),
    "shufflev1": (949258, 296, 23785, "42ca995735aef6aa"),
    "shufflev2": (1355528, 338, 16236, "c0db1f26642cba8c"),
    "resnet18": (11689512, 122, 9620, "8c77f762fcb95fb6"),
    "resnet34": (21797672, 218, 17060, "006acad82d6b9652"),
    "resnet50": (25557032, 320, 53173, "926e0f6c3a389f66"),
    "resnet101": (44549160, 626, 105448, "2506d75f6cd5a62f"),
    "mobilenetv1": (4231976, 164, 21915, "75cec9c083a235b0"),
    "retrieval_resnet18": (11491904, 132, 11670, "d024c7aa51ba2580"),
    "retrieval_resnet34": (21600064, 228, 19110, "15c9806c0ffff8b2"),
    "retrieval_resnet50": (24612928, 330, 58295, "39343f0ddad81b7d"),
    "retrieval_resnet101": (43605056, 636, 110570, "253ed4780bf19d9a"),
    "retrieval_mobilenetv3_small": (1275296, 252, 14324, "8ec03769a60f37d2"),
    # not official: D3still builds this teacher with timm; these are our torchvision stand-in's own numbers
    "retrieval_swinv2_s": (49415418, 459, 111666, "59cbbb3ad2106c80"),
}


def _s(*shapes):
    return [tuple(s) for s in shapes]


_R_CIFAR = _s((16, 32, 32), (16, 32, 32), (32, 16, 16), (64, 8, 8))
_R_X4 = _s((32, 32, 32), (64, 32, 32), (128, 16, 16), (256, 8, 8))
_V2 = _s((64, 32, 32), (64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4))
_VGG = _s((64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4), (512, 4, 4))
_IN_BASIC = _s((64, 32, 32), (64, 16, 16), (128, 8, 8), (256, 4, 4), (512, 2, 2))
_IN_BOTTLE = _s((64, 32, 32), (256, 16, 16), (512, 8, 8), (1024, 4, 4), (2048, 2, 2))
_RET_BASIC = _s((64, 16, 16), (128, 8, 8), (256, 4, 4), (512, 4, 4))
_RET_BOTTLE = _s((256, 16, 16), (512, 8, 8), (1024, 4, 4), (2048, 4, 4))


def _wrn(k):
    return _s((16, 32, 32), (16 * k, 32, 32), (32 * k, 16, 16), (64 * k, 8, 8))


# name -> (build kwargs, probe size, feats C x H x W at that size, preact like feats?, pooled dim, logits dim,
#          embedding dim, forward/backward test size)
SPECS = {
    **{f"resnet{d}": ({}, 32, _R_CIFAR, True, 64, 100, 64, 16 if d == 110 else 32)
       for d in (8, 14, 20, 32, 44, 56, 110)},
    "resnet8x4": ({}, 32, _R_X4, True, 256, 100, 256, 32),
    "resnet32x4": ({}, 32, _R_X4, True, 256, 100, 256, 16),
    "resnet18_cifar": ({}, 32, _V2, True, 512, 100, 512, 16),
    "resnet34_cifar": ({}, 32, _V2, True, 512, 100, 512, 16),
    "resnet50_cifar": ({}, 32, _s((64, 32, 32), (256, 32, 32), (512, 16, 16), (1024, 8, 8), (2048, 4, 4)), True,
                       2048, 100, 2048, 16),
    "wrn_16_1": ({}, 32, _wrn(1), True, 64, 100, 64, 32),
    "wrn_16_2": ({}, 32, _wrn(2), True, 128, 100, 128, 32),
    "wrn_40_1": ({}, 32, _wrn(1), True, 64, 100, 64, 32),
    "wrn_40_2": ({}, 32, _wrn(2), True, 128, 100, 128, 16),
    **{v: ({}, 32, _VGG, True, 512, 100, 512, 32 if v == "vgg8" else 16)
       for v in ("vgg8", "vgg11", "vgg13", "vgg16", "vgg19")},
    "mobilenetv2": ({}, 32, _s((16, 16, 16), (12, 16, 16), (16, 8, 8), (48, 4, 4), (160, 2, 2)), False, 1280, 100,
                    1280, 32),
    "shufflev1": ({}, 32, _s((24, 32, 32), (240, 16, 16), (480, 8, 8), (960, 4, 4)), True, 960, 100, 960, 32),
    "shufflev2": ({}, 32, _s((24, 32, 32), (116, 16, 16), (232, 8, 8), (464, 4, 4)), True, 1024, 100, 1024, 32),
    "resnet18": ({}, 64, _IN_BASIC, True, 512, 1000, 512, 32),
    "resnet34": ({}, 64, _IN_BASIC, True, 512, 1000, 512, 32),
    "resnet50": ({}, 64, _IN_BOTTLE, True, 2048, 1000, 2048, 32),
    "resnet101": ({}, 64, _IN_BOTTLE, True, 2048, 1000, 2048, 32),
    "mobilenetv1": ({}, 64, _s((128, 16, 16), (256, 8, 8), (512, 4, 4), (1024, 2, 2)), True, 1024, 1000, 1024, 32),
    "convnet_s": ({"in_channels": 3, "head": "linear"}, 28, _s((16, 28, 28), (32, 14, 14), (64, 7, 7)), True, 64, 10,
                  64, 32),
    "convnet_m": ({"in_channels": 3, "head": "linear"}, 28, _s((16, 28, 28), (32, 14, 14), (64, 7, 7)), True, 64, 10,
                  64, 32),
    "retrieval_resnet18": ({"num_classes": 100}, 64, _RET_BASIC, False, 512, 100, 512, 64),
    "retrieval_resnet34": ({"num_classes": 100}, 64, _RET_BASIC, False, 512, 100, 512, 64),
    "retrieval_resnet50": ({"num_classes": 100}, 64, _RET_BOTTLE, False, 2048, 100, 512, 64),
    "retrieval_resnet101": ({"num_classes": 100}, 64, _RET_BOTTLE, False, 2048, 100, 512, 64),
    "retrieval_mobilenetv3_small": ({"num_classes": 100}, 64, _s((16, 16, 16), (24, 8, 8), (48, 4, 4), (576, 4, 4)),
                                    False, 576, 100, 512, 64),
    "retrieval_swinv2_s": ({"num_classes": 100}, 64, _s((96, 16, 16), (192, 8, 8), (384, 4, 4), (768, 2, 2)), False,
                           768, 100, 512, 64),
    # S2SD's resnet50_frozen_normalize: no classifier (logits None); tested in test_dml_resnet.py
    "dml_resnet50": ({}, 64, _s((256, 16, 16), (512, 8, 8), (1024, 4, 4), (2048, 2, 2)), False, 2048, None, 128, 32),
}
ALL = sorted(SPECS)
RETRIEVAL_PREFIXES = ("retrieval_", "dml_")
CLASSIFICATION = [n for n in ALL if not n.startswith(RETRIEVAL_PREFIXES)]


@functools.lru_cache(maxsize=None)
def _model(name: str) -> nn.Module:
    """One instance per name; classification nets are built as SDD variants (SPP adds no parameters)."""
    torch.manual_seed(0)
    spp = {} if name.startswith(RETRIEVAL_PREFIXES) or name.startswith("convnet") and not SPECS[name][0].get("head") \
        else {"spp": (1, 2, 4)}
    return build_model(name, **SPECS[name][0], **spp)


def _input(batch: int, size: int) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))


def fill_state(model: nn.Module, seed: int = 0) -> nn.Module:
    """Deterministic weights independent of init (same function used on the official models for the fixtures)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, v in model.state_dict().items():
        if not v.is_floating_point():
            state[key] = v
        elif key.endswith("running_var"):
            state[key] = torch.rand(v.shape, generator=g) + 0.5
        elif key.endswith("running_mean") or key.endswith("bias"):
            state[key] = 0.1 * torch.randn(v.shape, generator=g)
        elif v.dim() == 1:
            state[key] = 1.0 + 0.1 * torch.randn(v.shape, generator=g)
        else:
            state[key] = torch.randn(v.shape, generator=g) / (v[0].numel() ** 0.5)
    model.load_state_dict(state)
    return model


def test_every_registered_model_has_a_spec():
    assert set(available_models()) == set(SPECS)


@pytest.mark.parametrize("name", sorted(OFFICIAL))  # our own embedded convnets have no official counterpart
def test_parameters_match_official(name):
    model = _model(name)
    text = "\n".join(f"{k}:{tuple(v.shape)}" for k, v in model.state_dict().items())
    got = (
        sum(p.numel() for p in model.parameters()),
        len(model.state_dict()),
        sum(b.numel() for b in model.buffers()),
        hashlib.sha1(text.encode()).hexdigest()[:16],
    )
    assert got == OFFICIAL[name]


@pytest.mark.parametrize("name", ALL)
def test_probe_shapes_match_spec(name):
    _, size, feats, has_preact, pooled, n_logits, emb, _ = SPECS[name]
    shapes = probe_shapes(_model(name), size)
    assert [tuple(s) for s in shapes["feats"]] == [(1, *f) for f in feats]
    assert [tuple(s) for s in shapes["preact_feats"]] == ([(1, *f) for f in feats] if has_preact else [])
    assert tuple(shapes["pooled"]) == (1, pooled)
    assert tuple(shapes["embedding"]) == (1, emb)
    assert shapes["logits"] is None if n_logits is None else tuple(shapes["logits"]) == (1, n_logits)
    patch = {} if name.startswith(RETRIEVAL_PREFIXES) else {"patch_logits": (1, n_logits, 21)}
    assert {k: tuple(v) for k, v in shapes["extras"].items()} == patch


@pytest.mark.parametrize("name", ALL)
def test_train_forward_backward(name):
    _, size, feats, has_preact, pooled, n_logits, emb, train_size = SPECS[name]
    model = _model(name).train()
    model.zero_grad(set_to_none=True)
    out = model(_input(2, train_size))
    assert isinstance(out, ModelOutput)
    k = train_size / size
    assert [tuple(f.shape) for f in out.feats] == [(2, c, int(h * k), int(w * k)) for c, h, w in feats]
    assert len(out.preact_feats) == (len(feats) if has_preact else 0)
    assert out.pooled.shape == (2, pooled) and out.embedding.shape == (2, emb)
    assert out.logits is None if n_logits is None else out.logits.shape == (2, n_logits)
    if name in CLASSIFICATION:
        patch = out.extras["patch_logits"]
        assert patch.shape == (2, n_logits, 21)
        # every final map here is 4x4-divisible or at most 2x2: region 0 is the global mean -> the main logits
        torch.testing.assert_close(patch[:, :, 0], out.logits, rtol=1e-4, atol=1e-5)
        out.logits = out.logits + patch.mean()
    logits_term = 0.0 if out.logits is None else out.logits.square().mean()
    (logits_term + out.embedding.square().mean()).backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    model.zero_grad(set_to_none=True)


# ---- golden outputs of the official code (eval mode, fill_state weights) ----
GOLDEN = {
    "resnet8": (32, 2, {"logits": [[0.263158, 0.270783, -0.655256, -0.399511], [0.194192, 0.263572, -0.670102, -0.36888]], "feats": [15261.95703, 15409.962945, 4909.696462, 2786.786997], "preact": [15261.95703, 10275.386986, -4742.914066, -125.225666], "pooled": 43.543547422857955}),  # noqa: E501
    "resnet8x4": (32, 2, {"logits": [[-0.099649, 0.475617, -0.004601, -0.15895], [-0.105571, 0.414872, -0.006897, -0.140375]], "feats": [27858.589997, 49999.411941, 23157.02843, 10557.967424], "preact": [27858.589997, -2696.073014, -2781.525747, -1568.175234], "pooled": 164.9682401768514}),  # noqa: E501
    "resnet50_cifar": (16, 2, {"logits": [[-0.885078, -0.022153, 0.68534, 0.253139], [-0.591598, 0.011594, 0.682888, 0.149335]], "feats": [14016.221844, 73239.855729, 48206.524002, 32238.286395, 13432.554074], "preact": [14016.221844, 65936.656052, 41569.777817, 28690.411548, 11921.062336], "pooled": 3358.138517107698}),  # noqa: E501
    "wrn_16_1": (32, 2, {"logits": [[-0.449301, 0.22503, 0.255525, -1.37768], [-0.467149, 0.354809, 0.202353, -1.410804]], "feats": [118.623238, -9168.64306, 3132.371221, 449.697365], "preact": [118.623238, -10171.740833, 3388.930672, 317.151531], "pooled": 68.94306186633185}),  # noqa: E501
    "vgg8": (32, 2, {"logits": [[-0.289557, 0.505115, 0.020445, -0.455734], [-0.289022, 0.503008, 0.050319, -0.420474]], "feats": [51886.215456, 33364.033355, 12248.829716, 5696.605625, 3956.692188], "preact": [51886.215456, -621.728522, -6430.046025, 218.860217, 193.388349], "pooled": 247.2932619311323}),  # noqa: E501
    "vgg8@64": (64, 1, {"logits": [[-0.448849, 0.527742, 0.006088, -0.901801]], "feats": [104134.513079, 68436.981517, 24750.954531, 12286.066035, 2620.174855], "preact": [104134.513079, -757.894997, -14654.492205, 332.076063, 90.845497], "pooled": 163.76092908135615}),  # noqa: E501
    "mobilenetv2": (32, 2, {"logits": [[-0.590749, -0.228441, 0.134623, -0.0144], [-0.593869, -0.240104, 0.140011, -0.020634]], "feats": [3859.616409, -517.579545, -106.423565, 107.30321, -7.604978], "preact": [], "pooled": 338.33817941110465}),  # noqa: E501
    "shufflev1": (32, 2, {"logits": [[-0.604425, -0.016622, 0.2899, -0.244715], [-0.623059, -0.009133, 0.283363, -0.234941]], "feats": [18797.422191, 33666.284681, 37714.278716, 15117.879706], "preact": [18797.422191, 28308.902378, 34567.387978, 13664.952389], "pooled": 944.8674810589291}),  # noqa: E501
    "shufflev2": (32, 2, {"logits": [[0.143997, -0.36119, -0.099104, 0.333306], [0.145329, -0.361137, -0.099682, 0.331147]], "feats": [18797.422191, 9496.442853, 3369.167064, 1634.545507], "preact": [18797.422191, 7266.195437, 2154.933926, 950.875278], "pooled": 206.7411837435866}),  # noqa: E501
    "resnet18": (224, 1, {"logits": [[0.774857, -0.883966, -1.619816, 0.74477]], "feats": [327712.38445, 333830.652532, 153014.746905, 88206.788115, 40825.442243], "preact": [327712.38445, 297379.690848, 118211.274171, 70644.557784, 29773.65572], "pooled": 833.1722963701213}),  # noqa: E501
    "mobilenetv1": (224, 1, {"logits": [[-0.121703, -0.35799, -0.24905, -0.094484]], "feats": [37933.617748, 13514.519157, 8411.650774, 4390.567313], "preact": [-12998.327773, -2716.557142, -525.711439, 214.064012], "pooled": 89.60341428178799}),  # noqa: E501
    "retrieval_resnet18": (64, 2, {"logits": [[-0.703617, -0.380016, -0.499516, -0.01555], [-0.698923, -0.566785, -0.632405, 0.030963]], "feats": [39979.067343, 17831.150557, 8802.231172, 15998.280363], "preact": [], "pooled": 999.8925233704504, "embedding": -61.72113257017918}),  # noqa: E501
    "retrieval_mobilenetv3_small": (64, 2, {"logits": [[-0.202265, 0.357163, 0.491131, -0.40283], [-0.202269, 0.357161, 0.491114, -0.402795]], "feats": [-408.852853, -176.754171, 23.498217, 255.55563], "preact": [], "pooled": 15.972226715646684, "embedding": 4.477456772419828}),  # noqa: E501
}
# SDD official *_sdd models with M = "[1,2,4]": patch logits of sample 0 summed over classes, per region (N = 21)
PATCH_GOLDEN = {
    "resnet8x4": (32, 2, [-3.525478, -4.202029, -3.849399, -3.556115, -2.494374, -3.664343, -4.924765, -5.082707, -1.90923, -3.264489, -4.95452, -8.15221, -0.253444, -3.772861, -3.85742, -4.003497, -0.274833, -2.869121, -3.725057, -4.335408, -1.36376]),  # noqa: E501
    "mobilenetv1": (224, 1, [4.928299, 4.973119, 4.69197, 5.129765, 4.918337, 4.815552, 4.679914, 4.957056, 3.897084, 5.154888, 5.242117, 5.541279, 4.372469, 5.158372, 5.274562, 5.51884, 4.321644, 5.025425, 5.0607, 5.252141, 4.580725]),  # noqa: E501
}


def _sums(tensors):
    return torch.tensor([t.double().sum().item() for t in tensors], dtype=torch.float64)


@pytest.mark.parametrize("key", sorted(GOLDEN))
def test_forward_matches_official(key):
    name = key.split("@")[0]
    size, batch, ref = GOLDEN[key]
    model = fill_state(build_model(name, **SPECS[name][0])).eval()
    with torch.no_grad():
        out = model(_input(batch, size))
    torch.testing.assert_close(out.logits[:, :4].double(), torch.tensor(ref["logits"], dtype=torch.float64),
                               rtol=1e-4, atol=2e-5)
    torch.testing.assert_close(_sums(out.feats), torch.tensor(ref["feats"], dtype=torch.float64), rtol=1e-5, atol=0.05)
    torch.testing.assert_close(_sums(out.preact_feats), torch.tensor(ref["preact"], dtype=torch.float64),
                               rtol=1e-5, atol=0.05)
    assert out.pooled.double().sum().item() == pytest.approx(ref["pooled"], rel=1e-5, abs=1e-3)
    if "embedding" in ref:
        assert out.embedding.double().sum().item() == pytest.approx(ref["embedding"], rel=1e-5, abs=1e-3)


@pytest.mark.parametrize("name", sorted(PATCH_GOLDEN))
def test_patch_logits_match_official(name):
    size, batch, ref = PATCH_GOLDEN[name]
    model = fill_state(build_model(name, spp=(1, 2, 4))).eval()
    with torch.no_grad():
        out = model(_input(batch, size))
    region_sums = out.extras["patch_logits"][0].double().sum(0)
    torch.testing.assert_close(region_sums, torch.tensor(ref, dtype=torch.float64), rtol=1e-5, atol=1e-4)


# ---- SDD spatial pyramid ----
@pytest.mark.parametrize("name", ["resnet8", "mobilenetv2", "mobilenetv1"])
@pytest.mark.parametrize("scales,n", [(None, 0), ((1, 2, 4), 21), ("[1,2]", 5), ([1], 1)])
def test_spp_options(name, scales, n):
    model = build_model(name, spp=scales).eval()
    with torch.no_grad():
        out = model(_input(2, 32))
    if scales is None:
        assert out.extras == {}
    else:
        assert out.extras["patch_logits"].shape == (2, out.logits.shape[1], n)


def test_spp_pool_hand_values():
    ramp = torch.arange(16.0).reshape(1, 1, 4, 4)
    regions = spp_pool(ramp, (1, 2, 4))[0, 0]
    assert regions[0].item() == 7.5  # global mean
    assert regions[1:5].tolist() == [2.5, 4.5, 10.5, 12.5]  # 2x2 cells TL, TR, BL, BR
    assert regions[5:].tolist() == list(range(16))  # 4x4 cells row-major
    # 7x7 map: overlapping bins [0,2),[1,4),[3,6),[5,7); a single 1 at (0,0) lands only in 4x4 cell 0 as 1/4
    impulse = torch.zeros(1, 1, 7, 7)
    impulse[0, 0, 0, 0] = 1.0
    regions = spp_pool(impulse, (1, 2, 4))[0, 0]
    assert regions[0].item() == pytest.approx(0.25 / 16)  # not the plain mean 1/49
    assert regions[1].item() == pytest.approx(0.25 / 4)
    assert regions[5].item() == pytest.approx(0.25)


def test_patch_logits_row_order():
    feat = torch.randn(3, 5, 8, 8, generator=torch.Generator().manual_seed(0))
    identity = patch_logits(feat, lambda rows: rows, (1, 2))
    torch.testing.assert_close(identity, spp_pool(feat, (1, 2)))
    linear = nn.Linear(5, 7)
    logits = patch_logits(feat, linear, (1, 2, 4))
    torch.testing.assert_close(logits[1, :, 6], linear(spp_pool(feat, (1, 2, 4))[1, :, 6]))


@pytest.mark.parametrize("bad", ["[1, 2]", "[2,4]", (1, 3), (4, 2, 1)])
def test_spp_rejects_unknown_scales(bad):
    with pytest.raises(ValueError):
        parse_scales(bad)
    with pytest.raises(ValueError):
        build_model("resnet8", spp=bad)


# ---- probe_shapes ----
def test_probe_shapes_is_side_effect_free():
    model = build_model("resnet8", spp=(1, 2))
    model.train()
    model.layer2.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    shapes = probe_shapes(model, (3, 32, 16), batch_size=2)
    assert tuple(shapes["extras"]["patch_logits"]) == (2, 100, 5)
    assert tuple(shapes["feats"][-1]) == (2, 64, 8, 4)
    assert model.training and not model.layer2.training and model.layer3.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(ValueError):
        probe_shapes(model, (1, 3, 32, 32))


# ---- documented quirks ----
def test_wrn_preact_bn_updates_running_stats_twice():
    model = build_model("wrn_16_1").train()
    seen = []
    model.block3.layer[0].bn1.register_forward_hook(lambda m, inp, out: seen.append(inp[0].detach()))
    model(_input(2, 32))
    assert len(seen) == 2 and torch.equal(seen[0], seen[1])
    batch_mean = seen[0].mean((0, 2, 3))
    # running mean from 0 with momentum 0.1, updated twice with the same batch: 0.1·m, then 0.9·0.1·m + 0.1·m
    torch.testing.assert_close(model.block3.layer[0].bn1.running_mean, 0.19 * batch_mean, rtol=1e-5, atol=1e-7)


def test_shufflev2_preact_is_unshuffled():
    model = build_model("shufflev2").eval()
    with torch.no_grad():
        out = model(_input(2, 32))
    for feat, pre in zip(out.feats[1:], out.preact_feats[1:]):
        torch.testing.assert_close(channel_shuffle(torch.relu(pre), 2), feat)
        assert not torch.allclose(torch.relu(pre), feat)


def test_imagenet_resnet_stem_preact_is_post_relu():
    model = build_model("resnet18").eval()
    with torch.no_grad():
        out = model(_input(1, 32))
    assert torch.equal(out.preact_feats[0], out.feats[0])
    assert out.preact_feats[1].min() < 0  # stage outputs are genuine pre-activations


@pytest.mark.parametrize("head", ["retrieval", "linear"])
def test_convnet_preact_feats_are_the_last_bn_outputs(head):
    torch.manual_seed(0)
    model = build_model("convnet_m", in_channels=3, head=head).train()
    out = model(_input(2, 28))
    assert [p.shape for p in out.preact_feats] == [f.shape for f in out.feats]
    for pre, post in zip(out.preact_feats, out.feats):
        assert torch.equal(torch.relu(pre), post) and pre.min() < 0


def test_vgg_pool3_only_at_height_64():
    model = build_model("vgg8").eval()
    with torch.no_grad():
        assert model(_input(1, 64)).feats[4].shape[-1] == 4  # 64 / 16: pooled before block4
        assert model(_input(1, 48)).feats[4].shape[-1] == 6  # 48 / 8: not pooled


@pytest.mark.parametrize("name,channels", [("resnet8x4", [64, 128, 256]), ("wrn_16_2", [32, 64, 128]),
                                           ("vgg8", [128, 256, 512, 512]), ("mobilenetv2", [12, 16, 48, 160]),
                                           ("resnet50_cifar", [256, 512, 1024, 2048]), ("resnet34", [128, 256, 512]),
                                           ("mobilenetv1", [128, 256, 512, 1024]), ("convnet_m", [32, 64])])
def test_bn_before_relu(name, channels):
    bns = _model(name).get_bn_before_relu()
    assert all(isinstance(bn, nn.BatchNorm2d) for bn in bns)
    assert [bn.num_features for bn in bns] == channels


@pytest.mark.parametrize("name", ["shufflev1", "shufflev2"])
def test_bn_before_relu_missing_for_shufflenets(name):
    with pytest.raises(NotImplementedError):
        _model(name).get_bn_before_relu()


# ---- retrieval options, head and weight loading ----
def test_retrieval_options():
    model = build_model("retrieval_resnet18", num_classes=10, embedding_dim=128, last_stride=2).eval()
    with torch.no_grad():
        out = model(_input(2, 64))
    assert out.feats[-1].shape == (2, 512, 2, 2)  # last_stride 2 halves layer4
    assert out.embedding.shape == (2, 128) and out.logits.shape == (2, 10)
    mp = model.maxpool
    assert (mp.kernel_size, mp.stride, mp.padding) == (2, 2, 0)  # official quirk (torchvision: 3/2/1)
    mnv3 = build_model("retrieval_mobilenetv3_small", last_stride=2).eval()
    with torch.no_grad():
        assert mnv3(_input(1, 64)).feats[-1].shape == (1, 576, 2, 2)


def test_retrieval_head_layout_and_init():
    assert isinstance(_model("retrieval_resnet50").fc, RetrievalHead)
    head = RetrievalHead(2048, 100)
    assert [type(m) for m in head.add_block] == [nn.BatchNorm1d, nn.ReLU, nn.Linear, nn.BatchNorm1d]
    assert head.add_block[2].bias is None and head.classifier.bias is None
    assert head.add_block[0].weight.eq(1).all() and head.add_block[3].bias.eq(0).all()
    assert head.classifier.weight.std().item() == pytest.approx(0.001, rel=0.05)
    # Kaiming normal, fan_out = 512 -> std sqrt(2 / 512)
    assert head.add_block[2].weight.std().item() == pytest.approx((2 / 512) ** 0.5, rel=0.05)
    # embedding is the post-BN bottleneck: in eval mode with fresh stats it equals the BN-free linear output
    pooled = torch.rand(4, 2048, generator=torch.Generator().manual_seed(0))
    head.eval()
    _, emb = head(pooled)
    expected = head.add_block[2](torch.relu(pooled / (1 + 1e-5) ** 0.5)) / (1 + 1e-5) ** 0.5
    torch.testing.assert_close(emb, expected)


def test_torchvision_state_dicts_load():
    reference = tvm.resnet18().state_dict()
    imagenet = build_model("resnet18")
    imagenet.load_state_dict(reference)  # strict: identical key set
    retrieval = build_model("retrieval_resnet18", num_classes=7)
    load_pretrained(retrieval, reference, skip_prefix="fc.")
    assert torch.equal(retrieval.layer3[1].bn2.running_var, reference["layer3.1.bn2.running_var"])
    assert retrieval.fc.classifier.weight.shape == (7, 512)
    with pytest.raises(RuntimeError):
        load_pretrained(build_model("retrieval_resnet34"), reference, skip_prefix="fc.")


def test_mobilenetv1_has_no_pretrained_weights():
    with pytest.raises(ValueError):
        build_model("mobilenetv1", pretrained=True)


@pytest.mark.parametrize("name, depth", [("convnet_s", 1), ("convnet_m", 2)])
def test_convnet_presets_take_widths_and_depth_from_model_options(name, depth):
    """model_options widths / depth override the preset (a wider teacher: benchmarks/time_to_student.py)."""
    net = build_model(name, in_channels=1, widths=(8, 12, 24), embedding_dim=16)
    shapes = [f.shape[1] for f in net(torch.zeros(2, 1, 16, 16)).feats]
    assert shapes == [8, 12, 24]
    convs = sum(isinstance(m, torch.nn.Conv2d) for m in net.modules())
    assert convs == 3 * depth and sum(isinstance(m, torch.nn.Conv2d)
                                      for m in build_model(name, depth=3).modules()) == 9
