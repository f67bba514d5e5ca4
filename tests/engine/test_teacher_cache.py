"""Teacher-output cache: cached outputs equal an on-the-fly forward on the same replayed view."""

import numpy as np
import pytest
import torch

from distillery.data.transforms import ViewSpec, train_views
from distillery.engine.teacher_cache import (STREAM_KD_TEACHER, CacheRefused, TeacherCache, build_teacher_cache,
                                             check_cacheable)
from distillery.engine.trainer import STREAM_KD_TEACHER as TRAINER_STREAM
from distillery.models import build_model


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.manual_seed(0)
    teacher = build_model("convnet_m", num_classes=7, in_channels=1, embedding_dim=16).eval()
    images = np.random.default_rng(0).integers(0, 255, size=(10, 12, 12, 1), dtype=np.uint8)
    rows = np.array([1, 3, 4, 8, 9])
    view = ViewSpec(12, (0.5,), (0.5,), padding=2)
    out = tmp_path_factory.mktemp("cache") / "views"
    meta = build_teacher_cache(teacher, images, rows, view, out, seed=5, views=3, logits_topk=None, progress=False)
    return teacher, images, rows, view, out, meta


def test_cached_outputs_equal_on_the_fly_forward(setup):
    teacher, images, rows, view, out, meta = setup
    assert STREAM_KD_TEACHER == TRAINER_STREAM
    assert meta["views"] == 3 and meta["n_images"] == 5 and meta["bytes"] > 0
    cache = TeacherCache(out, seed=5)
    positions = np.array([0, 2, 4])
    for epoch in range(3):  # epoch < V: the cache replays view = epoch, like the uncached trainer
        with torch.no_grad():  # the same batch as the build (conv kernels may round differently per batch size)
            live = teacher(train_views(images[rows], rows, view, seed=5, stream=STREAM_KD_TEACHER, view=epoch))
        cached = cache.outputs(positions, epoch)
        assert torch.equal(cached.embedding, live.embedding[positions])
        assert torch.equal(cached.logits, live.logits[positions])


def test_later_epochs_pick_recorded_views(setup):
    *_, out, _ = setup
    cache = TeacherCache(out, seed=5)
    picks = cache.view_for(np.arange(5), epoch=10)
    assert picks.min() >= 0 and picks.max() < 3
    assert np.array_equal(picks, cache.view_for(np.arange(5), epoch=10))


def test_topk_logits_keep_the_largest(setup, tmp_path):
    teacher, images, rows, view, _, _ = setup
    build_teacher_cache(teacher, images, rows, view, tmp_path / "topk", seed=5, views=1, logits_topk=2, progress=False)
    cache = TeacherCache(tmp_path / "topk", seed=5, num_classes=7)
    full = TeacherCache(setup[4], seed=5).outputs(np.arange(5), 0).logits
    approx = cache.outputs(np.arange(5), 0).logits
    assert torch.equal(approx.argmax(1), full.argmax(1))
    top2 = full.topk(2, 1)
    assert torch.equal(approx.gather(1, top2.indices), top2.values)


def test_methods_reading_feature_maps_refuse_the_cache():
    check_cacheable("kd", ("logits",))
    with pytest.raises(CacheRefused, match="method 'ugd' reads the teacher's feats"):
        check_cacheable("ugd", ("embedding", "feats"))


def test_training_from_the_cache_equals_training_with_the_teacher(tmp_path):
    """V >= epochs replays exactly the views the uncached run shows the teacher: same student weights."""
    from distillery.engine.trainer import Recipe, TrainData, train
    from distillery.losses import build_method

    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, size=(40, 12, 12, 1), dtype=np.uint8)
    data = TrainData.from_split(images, np.arange(40), np.repeat(np.arange(5), 8))
    view_s, view_t = ViewSpec(8, (0.5,), (0.5,), padding=1), ViewSpec(12, (0.5,), (0.5,), padding=2)
    recipe = Recipe(epochs=2, lr=0.05, ids_per_batch=5, samples_per_id=4, kd_batch_size=10)
    torch.manual_seed(0)
    teacher = build_model("convnet_m", num_classes=5, in_channels=1, embedding_dim=16).eval()
    build_teacher_cache(teacher, images, data.rows, view_t, tmp_path / "views", seed=0, views=2, progress=False,
                        batch_size=10)
    weights = []
    for cache in (None, TeacherCache(tmp_path / "views", seed=0)):
        torch.manual_seed(1)
        student = build_model("convnet_s", num_classes=5, in_channels=1, embedding_dim=16)
        train(student, data, recipe, view_s, seed=0, checkpoint_path=tmp_path / f"c{cache is None}.pt",
              distiller=build_method("fitnet"), teacher=teacher, view_t=view_t, progress=False, teacher_cache=cache)
        weights.append(student.state_dict())
    for key in weights[0]:
        torch.testing.assert_close(weights[0][key], weights[1][key], rtol=1e-5, atol=1e-6)


def test_trainer_refuses_the_cache_for_feature_map_methods(tmp_path):
    from distillery.engine.trainer import Recipe, TrainData, train
    from distillery.losses import build_method

    images = np.zeros((20, 12, 12, 1), dtype=np.uint8)
    data = TrainData.from_split(images, np.arange(20), np.repeat(np.arange(5), 4))
    model = build_model("convnet_s", num_classes=5, in_channels=1, embedding_dim=16)
    teacher = build_model("convnet_m", num_classes=5, in_channels=1, embedding_dim=16)
    with pytest.raises(CacheRefused, match="method 'ugd' reads the teacher's feats"):
        train(model, data, Recipe(epochs=1, lr=0.1, ids_per_batch=5, samples_per_id=4, kd_batch_size=10),
              ViewSpec(12, (0.5,), (0.5,)), seed=0, checkpoint_path=tmp_path / "c.pt", distiller=build_method("ugd"),
              teacher=teacher, view_t=ViewSpec(12, (0.5,), (0.5,)), progress=False, teacher_cache=object())
