"""GeM pooling and whiten_mtd's L2-Linear student head (whiten_mtd.md section 4.1)."""

import pytest
import torch
import torch.nn.functional as F

from distillery.models import build_model
from distillery.models.heads import L2LinearHead
from distillery.models.pooling import gem, global_pool

torch.set_num_threads(1)


def test_gem_hand_values():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 2, 2)
    # ((1 + 8 + 27 + 64) / 4)^(1/3) = 25^(1/3)
    torch.testing.assert_close(gem(x, 3.0), torch.tensor([[25.0 ** (1 / 3)]]))
    torch.testing.assert_close(gem(x, 2.0), torch.tensor([[7.5 ** 0.5]]))
    torch.testing.assert_close(global_pool(x, "avg"), torch.tensor([[2.5]]))


def test_gem_clamps_except_for_p_one():
    x = torch.tensor([-2.0, 0.0, 2.0, 4.0]).reshape(1, 1, 2, 2)
    # p = 1: plain mean, negatives kept (official GeM special case)
    assert gem(x, 1.0).item() == pytest.approx(1.0)
    # p = 3: negatives and 0 clamped to 1e-6
    expected = ((2 * 1e-18 + 8.0 + 64.0) / 4) ** (1 / 3)
    assert gem(x, 3.0).item() == pytest.approx(expected, rel=1e-6)


def test_gem_large_p_tends_to_max_and_is_per_channel():
    x = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(0)) + 0.1
    torch.testing.assert_close(gem(x, 200.0), x.amax(dim=(2, 3)), rtol=2e-2, atol=0)
    torch.testing.assert_close(gem(x, 3.0)[1, 2], gem(x[1:2, 2:3], 3.0)[0, 0])


def test_l2_linear_head_normalises_before_the_linear():
    head = L2LinearHead(4, 3)
    pooled = torch.tensor([[3.0, 4.0, 0.0, 0.0], [0.0, 0.0, 0.0, 2.0]])
    logits, emb = head(pooled)
    assert logits is None
    torch.testing.assert_close(emb, F.normalize(pooled, dim=-1) @ head.fc.weight.T + head.fc.bias)
    torch.testing.assert_close(head(pooled * 5.0)[1], emb)  # scale invariant


@pytest.mark.parametrize("name, res, channels", [("convnet_s", 14, 1), ("retrieval_resnet18", 32, 3)])
def test_models_take_gem_pooling_and_the_l2_linear_head(name, res, channels):
    torch.manual_seed(0)
    options = {"in_channels": channels} if name.startswith("convnet") else {}
    net = build_model(name, num_classes=5, embedding_dim=16, pooling="gem", gem_p=3.0, head="l2_linear", **options)
    net.eval()
    x = torch.randn(2, channels, res, res)
    out = net(x)
    assert out.logits is None and out.embedding.shape == (2, 16)
    torch.testing.assert_close(out.pooled, gem(out.feats[-1], 3.0))
    torch.testing.assert_close(out.embedding, net.fc(out.pooled)[1])


def test_pooling_errors():
    with pytest.raises(ValueError, match="pooling"):
        build_model("convnet_s", pooling="max")
    with pytest.raises(ValueError, match="gem_p"):
        build_model("convnet_s", pooling="gem", gem_p=0.0)
    with pytest.raises(ValueError, match="head"):
        build_model("retrieval_resnet18", head="linear")
    with pytest.raises(ValueError, match="pooling"):
        global_pool(torch.zeros(1, 1, 2, 2), "median")
