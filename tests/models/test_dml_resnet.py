"""dml_resnet50 (S2SD's resnet50_frozen_normalize): frozen BatchNorm, normalised embedding, pretrained loading."""

import pytest
import torch
from torchvision import models as tvm

from distillery.models import build_model
from distillery.models.registry import model_arguments
from distillery.models.shapes import probe_shapes

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return build_model("dml_resnet50", embedding_dim=16)


def _bns(model):
    return [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]


def test_outputs_and_shapes(net):
    shapes = probe_shapes(net, (3, 32, 32), batch_size=2)
    assert [s[1] for s in shapes["feats"]] == [256, 512, 1024, 2048]
    assert shapes["pooled"] == (2, 2048) and shapes["embedding"] == (2, 16) and shapes["logits"] is None
    assert model_arguments("dml_resnet50") == {"embedding_dim", "pretrained", "frozen_bn", "normalize"}


def test_frozen_batchnorm_keeps_running_statistics_and_trains_affine(net):
    net.train()
    assert net.training and not any(bn.training for bn in _bns(net))
    before = [bn.running_mean.clone() for bn in _bns(net)]
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    out = net(x)
    assert all(torch.equal(a, bn.running_mean) for a, bn in zip(before, _bns(net)))
    out.embedding.sum().backward()
    assert net.bn1.weight.grad is not None and net.bn1.weight.grad.abs().sum() > 0
    net.zero_grad()
    torch.testing.assert_close(out.embedding.norm(dim=1), torch.ones(2))
    torch.testing.assert_close(out.pooled, out.feats[-1].mean((2, 3)))
    torch.testing.assert_close(out.embedding, torch.nn.functional.normalize(net.last_linear(out.pooled), dim=-1))


def test_options_off():
    torch.manual_seed(0)
    plain = build_model("dml_resnet50", embedding_dim=4, frozen_bn=False, normalize=False).train()
    assert all(bn.training for bn in _bns(plain))
    out = plain.eval()(torch.randn(2, 3, 32, 32))
    torch.testing.assert_close(out.embedding, plain.last_linear(out.pooled))


def test_pretrained_loads_torchvision_weights_except_fc(monkeypatch):
    torch.manual_seed(1)
    reference = tvm.resnet50(weights=None).state_dict()
    reference["bn1.running_mean"] += 3.0
    monkeypatch.setattr(tvm.ResNet50_Weights.IMAGENET1K_V1, "get_state_dict", lambda *a, **k: reference, raising=False)
    model = build_model("dml_resnet50", embedding_dim=8, pretrained=True)
    assert torch.equal(model.bn1.running_mean, reference["bn1.running_mean"])
    assert torch.equal(model.layer4[2].conv3.weight, reference["layer4.2.conv3.weight"])
    assert model.last_linear.weight.shape == (8, 2048)
