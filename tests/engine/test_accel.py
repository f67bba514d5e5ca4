"""Speed switches: GradScaler order (unscale -> clip -> one step), inference-mode teacher outputs usable by
autograd, float32 losses after autocast, NHWC copies, the lagged NaN check, and training with the switches."""

import numpy as np
import pytest
import torch

from distillery.data.transforms import ViewSpec
from distillery.engine import accel
from distillery.engine.trainer import Recipe, TrainData, TrainingDiverged, _LossSums, train
from distillery.losses import build_method
from distillery.models import ModelOutput, build_model
from distillery.utils.device import to_device

torch.set_num_threads(1)


def test_resolve_amp():
    assert accel.resolve_amp("none", torch.device("cpu")) == "none"
    with pytest.warns(UserWarning, match="needs a CUDA device"):
        assert accel.resolve_amp("bf16", torch.device("cpu")) == "none"
    assert accel.resolve_amp("fp16", torch.device("cuda")) == "fp16"
    with pytest.raises(ValueError, match="none, bf16 or fp16"):
        accel.resolve_amp("fp8", torch.device("cpu"))
    assert not accel.make_scaler("bf16", torch.device("cpu")).is_enabled()


def _clipped_step(scaler, grad_scale=1.0):
    """p = (3, 4), loss = 10 (p1 + p2) * grad_scale: gradient (10, 10) has norm 14.14, clipped to 1 -> p - 0.7071."""
    p = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
    optimizer = torch.optim.SGD([p], lr=1.0)
    accel.backward(10 * p.sum() * grad_scale, scaler)
    accel.clip_and_step(optimizer, scaler, [p], grad_clip=1.0)
    return p.detach()


def test_scaler_unscales_before_clipping_and_steps_once():
    expected = torch.tensor([3.0, 4.0]) - 1 / 2 ** 0.5
    torch.testing.assert_close(_clipped_step(torch.amp.GradScaler("cpu", enabled=False)), expected)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    torch.testing.assert_close(_clipped_step(scaler), expected)  # clipping the scaled gradient would move 1024x less
    assert scaler.get_scale() == 1024.0
    assert torch.equal(_clipped_step(scaler, grad_scale=float("inf")), torch.tensor([3.0, 4.0]))  # step skipped
    assert scaler.get_scale() == 512.0


def _nets():
    torch.manual_seed(0)
    return (build_model("convnet_s", embedding_dim=8, num_classes=4, in_channels=1),
            build_model("convnet_m", embedding_dim=8, num_classes=4, in_channels=1).eval())


def test_teacher_forward_outputs_feed_autograd():
    student, teacher = _nets()
    x = torch.randn(4, 1, 8, 8)
    out = accel.teacher_forward(teacher, x, ("embedding", "feats"))
    with torch.no_grad():
        ref = teacher(x)
    assert torch.equal(out.embedding, ref.embedding) and torch.equal(out.feats[-1], ref.feats[-1])
    assert not out.embedding.is_inference() and not out.feats[0].is_inference() and out.logits.is_inference()
    (student(x).embedding * out.embedding).sum().backward()  # an inference tensor here would raise
    assert student.fc.add_block[2].weight.grad is not None


def test_float_outputs():
    half = torch.randn(3, 2, requires_grad=True)
    out = ModelOutput(feats=[half.bfloat16()], pooled=half.bfloat16(), embedding=half, logits=None)
    assert accel.float_outputs(out, "none") is out
    cast = accel.float_outputs(out, "bf16")
    assert cast.pooled.dtype == cast.feats[0].dtype == torch.float32 and cast.embedding is half
    cast.pooled.sum().backward()
    assert half.grad is not None


def test_to_device_channels_last():
    x = torch.randn(2, 3, 4, 5)
    y = to_device(x, "cpu", channels_last=True)
    assert torch.equal(x, y) and y.is_contiguous(memory_format=torch.channels_last)
    assert to_device(x, "cpu") is x


def test_loss_sums_lagged_nan_check_names_the_step(tmp_path):
    sums = _LossSums(lag=1, epoch=0, checkpoint_path=tmp_path / "none.pt")
    sums.add(0, torch.tensor(float("nan")), {"kd": torch.tensor(float("nan"))})  # not read yet
    with pytest.raises(TrainingDiverged, match="step 1 .*no checkpoint"):
        sums.add(1, torch.tensor(1.0), {"kd": torch.tensor(1.0)})
    sums = _LossSums(lag=1, epoch=0, checkpoint_path=tmp_path / "none.pt")
    for step, value in enumerate([1.0, 2.0, 6.0]):
        sums.add(step, torch.tensor(value), {"kd": torch.tensor(value / 2)})
    assert sums.count == 2 and sums.means() == {"loss": 3.0, "kd": 1.5}


def _train(tmp_path, name, **switches):
    student, teacher = _nets()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(16, 8, 8, 1), dtype=np.uint8)
    data = TrainData.from_split(images, np.arange(16), np.repeat(np.arange(4), 4))
    recipe = Recipe(epochs=1, lr=0.1, ids_per_batch=2, samples_per_id=2, kd_batch_size=4, grad_clip=5.0, **switches)
    spec = ViewSpec(8, mean=(0.5,), std=(0.25,), padding=1)
    result = train(student, data, recipe, spec, seed=0, distiller=build_method("d3still", topk=4), teacher=teacher,
                   view_t=spec, checkpoint_path=tmp_path / f"{name}.pt", progress=False)
    return student.state_dict(), result.history[0]


def test_training_switches_on_cpu(tmp_path):
    plain, log = _train(tmp_path, "plain")
    assert log["steps"] == 4 and np.isfinite(log["loss"])
    with pytest.warns(UserWarning, match="needs a CUDA device"):
        amp, log_amp = _train(tmp_path, "amp", amp="bf16")
    assert all(torch.equal(v, amp[k]) for k, v in plain.items())  # float32 fallback: the same run
    nhwc, log_nhwc = _train(tmp_path, "nhwc", channels_last=True)
    for k, v in plain.items():
        torch.testing.assert_close(nhwc[k], v, rtol=1e-3, atol=1e-4)
    assert abs(log_nhwc["loss"] - log["loss"]) < 1e-3 * abs(log["loss"])


def test_interrupted_run_resumes_bit_for_bit(tmp_path):
    def run(name, stop=None):
        student, teacher = _nets()
        images = np.random.default_rng(0).integers(0, 256, size=(16, 8, 8, 1), dtype=np.uint8)
        data = TrainData.from_split(images, np.arange(16), np.repeat(np.arange(4), 4))
        recipe = Recipe(epochs=2, lr=0.1, ids_per_batch=2, samples_per_id=2, kd_batch_size=4)
        spec = ViewSpec(8, mean=(0.5,), std=(0.25,), padding=1, erase_prob=0.5)
        result = train(student, data, recipe, spec, seed=0, distiller=build_method("d3still", topk=4),
                       teacher=teacher, view_t=spec, checkpoint_path=tmp_path / f"{name}.pt", progress=False,
                       stop_after_steps=stop)
        return student.state_dict(), result

    with pytest.raises(KeyboardInterrupt):
        run("resumed", stop=6)  # 4 steps per epoch: dies in epoch 2
    resumed, result = run("resumed")
    assert result.resumed_from_epoch == 1
    uninterrupted, reference = run("uninterrupted")
    assert all(torch.equal(v, resumed[k]) for k, v in uninterrupted.items())
    drop = ("seconds",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in result.history] == \
        [{k: v for k, v in r.items() if k not in drop} for r in reference.history]
