"""The trainer's multi-teacher path (whiten_mtd): two views, several frozen teachers, no task loss."""

import numpy as np
import pytest
import torch

from distillery.data.transforms import ViewSpec
from distillery.engine.trainer import Recipe, TrainData, train
from distillery.losses import build_method
from distillery.models import build_model
from distillery.models.whitening import WhiteningLayer, fit_pca_whitening

torch.set_num_threads(1)
RES_S, RES_T = 8, 16


def _data():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 4)  # 3 classes: fewer than the identity sampler's P = 16
    images = (rng.integers(0, 60, size=(12, RES_T, RES_T, 1)) + 60 * labels[:, None, None, None]).astype(np.uint8)
    return TrainData(images, np.arange(12), labels)


def _nets():
    torch.manual_seed(0)
    student = build_model("convnet_s", embedding_dim=8, in_channels=1, head="l2_linear", pooling="gem")
    teachers = [build_model(name, embedding_dim=12, num_classes=3, in_channels=1).eval()
                for name in ("convnet_m", "convnet_s")]
    return student, teachers


def _run(tmp_path, epochs=1, shared_view=False, whiten=True, stop=None, name="c.pt"):
    student, teachers = _nets()
    distiller = build_method("whiten_mtd", teachers=["teacher", "teacher_b"], whiten=whiten,
                             shared_view=shared_view, temp_student=0.1, temp_teacher=0.1)
    if whiten:
        g = torch.Generator().manual_seed(1)
        distiller.set_whitening([WhiteningLayer(fit_pca_whitening(torch.randn(40, 12, generator=g))) for _ in range(2)])
    recipe = Recipe(epochs=epochs, lr=0.05, kd_batch_size=6, warmup_epochs=0)
    views_t = [ViewSpec(RES_T, (0.5,), (0.25,)), ViewSpec(RES_T, (0.5,), (0.25,))]
    seen = {"student": [], "teacher": [[], []], "calls": []}
    student.register_forward_hook(lambda m, i, o: seen["student"].append(i[0].detach().clone()))
    for k, t in enumerate(teachers):
        t.register_forward_hook(lambda m, i, o, k=k: seen["teacher"][k].append(i[0].detach().clone()))
    forward = distiller.forward
    distiller.forward = lambda s, t, y: (seen["calls"].append((s, t)), forward(s, t, y))[1]
    before = [{k: v.clone() for k, v in t.state_dict().items()} for t in teachers]
    result = train(student, _data(), recipe, ViewSpec(RES_S, (0.5,), (0.25,)), seed=0,
                   checkpoint_path=tmp_path / name, distiller=distiller, teachers=teachers, views_t=views_t,
                   progress=False, stop_after_steps=stop)
    return student, teachers, before, result, seen


def test_views_teachers_and_no_task_loss(tmp_path):
    student, teachers, before, result, seen = _run(tmp_path)
    assert [set(r) - {"epoch", "lr", "steps", "seconds"} for r in result.history] == [{"loss", "kd"}]
    assert result.history[0]["steps"] == 2  # 12 images / KD batch 6; no identity batch drawn
    s, t = seen["calls"][0]
    assert isinstance(s, tuple) and len(s) == 2 and len(t) == 2 and all(len(v) == 2 for v in t)
    # teachers see the same images at their own 16 px view (probe forwards excluded: eval-mode zeros)
    shapes = [x.shape for x in seen["teacher"][0] if x.abs().sum() > 0]
    assert shapes and all(sh[-1] == RES_T for sh in shapes)
    for net, state in zip(teachers, before):  # frozen: no grad, no BN statistics update
        assert not net.training and all(p.grad is None for p in net.parameters())
        assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())


def test_shared_view_feeds_the_student_tensors(tmp_path):
    _, _, _, _, seen = _run(tmp_path, shared_view=True)
    xs = [x for x in seen["student"] if x.abs().sum() > 0]
    xt = [x for x in seen["teacher"][1] if x.abs().sum() > 0]
    assert len(xs) == len(xt) == 4  # 2 steps x 2 views
    assert all(torch.equal(a, b) for a, b in zip(xs, xt))
    assert not torch.equal(xs[0], xs[1])  # the two views differ


def test_loss_decreases_on_a_tiny_problem(tmp_path):
    _, _, _, result, _ = _run(tmp_path, epochs=6)
    kd = [r["kd"] for r in result.history]
    assert np.isfinite(kd).all() and kd[-1] < 0.8 * kd[0], kd


def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    full = _run(tmp_path, epochs=2, name="full.pt")[0]
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, epochs=2, stop=3, name="cut.pt")
    resumed = _run(tmp_path, epochs=2, name="cut.pt")
    assert resumed[3].resumed_from_epoch == 1
    for k, v in full.state_dict().items():
        torch.testing.assert_close(resumed[0].state_dict()[k], v, rtol=0, atol=0)


def test_multi_teacher_arguments_are_checked(tmp_path):
    student, teachers = _nets()
    distiller = build_method("whiten_mtd", teachers=["teacher", "teacher_b"], whiten=False)
    with pytest.raises(ValueError, match="one per teacher name"):
        train(student, _data(), Recipe(epochs=1, lr=0.1, kd_batch_size=6), ViewSpec(RES_S, (0.5,), (0.25,)),
              seed=0, checkpoint_path=tmp_path / "c.pt", distiller=distiller, teachers=teachers[:1],
              views_t=[ViewSpec(RES_T)], progress=False)
