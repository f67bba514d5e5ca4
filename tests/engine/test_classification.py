"""The classification trainer (mdistiller recipe): learning-rate steps, batches, a two-step run with top-1,
DOT's two-branch stepping against a hand-written update, hooks (epoch, sample index, teacher mode) and resume."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from distillery.data.transforms import ViewSpec, train_views
from distillery.engine.classification import (STREAM_CLS, ClassificationRecipe, epoch_batches, evaluate_classifier,
                                              predict_logits, step_lr, train_classifier)
from distillery.engine.trainer import TrainData
from distillery.losses import build_method
from distillery.losses.functional import kd_loss
from distillery.models import build_model

SPEC = ViewSpec(8, (0.5,), (0.25,), padding=1)
CLASSES = 4


def _data(n: int = 16) -> TrainData:
    rng = np.random.default_rng(0)
    return TrainData(rng.integers(0, 256, size=(n, 8, 8, 1), dtype=np.uint8), np.arange(n), np.arange(n) % CLASSES)


def _nets():
    torch.manual_seed(0)
    student = build_model("convnet_s", num_classes=CLASSES, in_channels=1, head="linear", spp=(1, 2))
    teacher = build_model("convnet_m", num_classes=CLASSES, in_channels=1, head="linear", spp=(1, 2)).eval()
    return student, teacher


def test_step_lr_is_mdistillers_schedule():
    recipe = ClassificationRecipe(epochs=240, lr=0.05, lr_decay_epochs=[150, 180, 210], lr_decay_rate=0.1)
    got = [step_lr(e, recipe) for e in (1, 150, 151, 180, 181, 210, 211, 240)]
    assert got == pytest.approx([0.05, 0.05, 0.005, 0.005, 0.0005, 0.0005, 0.00005, 0.00005])


def test_epoch_batches_keep_the_last_partial_batch_but_not_a_single_sample():
    assert [len(b) for b in epoch_batches(10, 4, seed=0, epoch=0)] == [4, 4, 2]
    assert [len(b) for b in epoch_batches(9, 4, seed=0, epoch=0)] == [4, 4]
    batches = epoch_batches(10, 4, seed=0, epoch=1)
    assert sorted(np.concatenate(batches).tolist()) == list(range(10))
    assert not all(np.array_equal(a, b) for a, b in zip(batches, epoch_batches(10, 4, seed=0, epoch=0)))


def test_two_steps_then_top1(tmp_path):
    student, teacher = _nets()
    data = _data(8)
    recipe = ClassificationRecipe(epochs=1, lr=0.1, batch_size=4)
    result = train_classifier(student, data, recipe, SPEC, seed=0, checkpoint_path=tmp_path / "c.pt",
                              distiller=build_method("kd", ce_weight=0.1, kd_weight=0.9, temperature=4.0),
                              teacher=teacher, progress=False)
    (record,) = result.history
    assert record["steps"] == 2 and set(record) >= {"ce", "kd", "loss", "train_top1", "lr"}
    assert record["loss"] == pytest.approx(record["ce"] + record["kd"])
    labels = np.array([0, 1, 2, 3, 3, 2, 1, 0])
    metrics = evaluate_classifier(student, data.images, data.rows, labels, SPEC, ks=(1, 2, 5))
    logits = predict_logits(student, data.images, data.rows, SPEC)
    assert set(metrics) == {"top1", "top2"}  # k > number of classes is left out
    assert metrics["top1"] == pytest.approx(100.0 * (logits.argmax(1).numpy() == labels).mean())
    assert (tmp_path / "c.pt").is_file()


def _manual_dot(student, teacher, data, recipe, delta, steps):
    """Hand-written DOT update (spec mdistiller.md section 3) on the trainer's batches and views."""
    mu_task, mu_kd = recipe.momentum - delta, recipe.momentum + delta
    lr, wd = recipe.lr, recipe.weight_decay
    params = list(student.parameters())
    task_buf, kd_buf = {}, {}
    batches = epoch_batches(len(data.rows), recipe.batch_size, seed=0, epoch=0)
    student.train()
    for pos in batches[:steps]:
        x = train_views(data.images[pos], pos, SPEC, seed=0, stream=STREAM_CLS, view=0)
        y = torch.as_tensor(data.labels[pos])
        out = student(x)
        with torch.no_grad():
            out_t = teacher(x)
        g_kd = torch.autograd.grad(0.9 * kd_loss(out.logits, out_t.logits, 4.0), params, retain_graph=True,
                                   allow_unused=True)
        g_ce = torch.autograd.grad(0.1 * F.cross_entropy(out.logits, y), params, allow_unused=True)
        with torch.no_grad():
            for i, p in enumerate(params):
                if g_ce[i] is None:
                    continue
                d = g_ce[i] + wd * p
                mom = mu_task if g_kd[i] is not None else (mu_task + mu_kd) / 2
                task_buf[i] = d.clone() if i not in task_buf else mom * task_buf[i] + d
                p -= lr * task_buf[i]
            for i, p in enumerate(params):
                if g_kd[i] is None:
                    continue
                if i not in kd_buf:
                    kd_buf[i] = g_kd[i].clone()
                elif g_ce[i] is not None:
                    kd_buf[i] = mu_kd * kd_buf[i] + g_kd[i]
                else:
                    kd_buf[i] = (mu_task + mu_kd) / 2 * kd_buf[i] + g_kd[i] + wd * p
                p -= lr * kd_buf[i]


def test_dot_stepping_matches_a_manual_two_branch_update(tmp_path):
    student, teacher = _nets()
    manual = copy.deepcopy(student)
    data = _data(8)
    recipe = ClassificationRecipe(epochs=1, lr=0.05, momentum=0.9, weight_decay=5e-4, batch_size=4)
    distiller = build_method("dot", ce_weight=0.1, kd_weight=0.9, temperature=4.0, delta=0.075)
    train_classifier(student, data, recipe, SPEC, seed=0, checkpoint_path=tmp_path / "c.pt", distiller=distiller,
                     teacher=teacher, progress=False)
    _manual_dot(manual, teacher, data, recipe, 0.075, steps=2)
    for (name, a), b in zip(student.state_dict().items(), manual.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    plain = copy.deepcopy(manual)  # sanity: a plain SGD run ends elsewhere
    train_classifier(plain, data, recipe, SPEC, seed=0, checkpoint_path=tmp_path / "p.pt", progress=False,
                     distiller=build_method("kd", ce_weight=0.1, kd_weight=0.9, temperature=4.0), teacher=teacher)
    assert not torch.allclose(plain.fc.weight, student.fc.weight)


def test_hooks_epoch_index_and_teacher_mode(tmp_path):
    student, teacher = _nets()
    seen = []
    teacher.register_forward_hook(lambda m, i, o: seen.append(m.training))
    distiller = build_method("ofd", teacher_train_mode=True)
    recipe = ClassificationRecipe(epochs=2, lr=0.01, batch_size=8)
    train_classifier(student, _data(16), recipe, SPEC, seed=0, checkpoint_path=tmp_path / "c.pt",
                     distiller=distiller, teacher=teacher, progress=False)
    assert seen.count(True) == 4 and not teacher.training  # train mode while training (official OFD), eval after
    assert distiller.epoch == 2


def test_resume_after_interrupt_reproduces_crd_run(tmp_path):
    """CRD exercises the sample index, the seeded negatives and the saved banks / Z."""
    data, recipe = _data(16), ClassificationRecipe(epochs=2, lr=0.05, batch_size=4)

    def run(path, stop=None):
        student, teacher = _nets()
        distiller = build_method("crd", feat_dim=8, nce_k=6)
        train_classifier(student, data, recipe, SPEC, seed=3, checkpoint_path=path, distiller=distiller,
                         teacher=teacher, progress=False, stop_after_steps=stop)
        return student, distiller

    clean_student, clean_crd = run(tmp_path / "clean.pt")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "killed.pt", stop=6)  # inside epoch 2
    resumed_student, resumed_crd = run(tmp_path / "killed.pt")
    for key, value in clean_student.state_dict().items():
        assert torch.equal(value, resumed_student.state_dict()[key]), key
    for key in ("memory_s", "memory_t", "z"):
        assert torch.equal(getattr(clean_crd, key), getattr(resumed_crd, key)), key


def test_teacher_only_run_and_errors(tmp_path):
    student, _ = _nets()
    result = train_classifier(student, _data(8), ClassificationRecipe(epochs=1, lr=0.1, batch_size=4), SPEC, seed=0,
                              checkpoint_path=tmp_path / "t.pt", progress=False)
    assert result.history[0]["loss"] == pytest.approx(result.history[0]["ce"])
    with pytest.raises(ValueError, match="teacher"):
        train_classifier(student, _data(8), ClassificationRecipe(epochs=1, lr=0.1), SPEC, seed=0,
                         checkpoint_path=tmp_path / "x.pt", distiller=build_method("dkd"), progress=False)
