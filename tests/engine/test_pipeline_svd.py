"""Whiten-MTD's video workflow (SVD) end to end through the stage functions on a fabricated SVD tree in the
published layout: prepare (frames + ground truth), two frame teachers, per-teacher whitening fitted on random
augmented training frames, a student distilled from the whitened teachers on one random frame per video in
whiten_mtd's two asymmetric SSL views, and near-duplicate video retrieval (chamfer, map_top100 / map_topinf).

The same through DVC: see README "Video retrieval (SVD)" (``dvc exp run -S dataset=svd ...``)."""

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from distillery.config import validate
from distillery.data.cache import PreparedDataset
from distillery.data.transforms import eval_view
from distillery.engine import steps
from distillery.engine.experiment import Paths, build_network, train_data, view_spec
from distillery.engine.video import fit_frames
from distillery.evaluation.video import group_frames, svd_test_view, video_retrieval_metrics
from tests.data.fabricate import SVD_FRAMES, SVD_TEST_GT, make_svd

torch.set_num_threads(1)
ROOT = Path(__file__).parents[2]


def svd_params(root: Path) -> dict:
    """params.yaml on the fabricated tree: 16 px frames, teachers at 16 px, student at 8 px, tiny batches."""
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p.update(dataset="svd", method="whiten_mtd")
    p["benchmark"].update(datasets=["svd"], methods=[], multi_teacher_methods=["whiten_mtd"])
    p["data"]["svd"].update(root=str(root), store_size=16)
    for group in (p["teacher"], p["teachers"]["teacher_b"]):
        group.update(resolution=16, padding=0, epochs=1, ids_per_batch=2, samples_per_id=2)
    p["student"]["resolution"] = 8
    p["training"].update(epochs=2, threads=1, kd_batch_size=4)  # 5 training videos: one KD batch per epoch
    return validate(p)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("svd")
    make_svd(tmp / "svd")
    params, paths = svd_params(tmp / "svd"), Paths(tmp / "work")
    out = {"params": params, "paths": paths, "prepare": steps.prepare(params, "svd", paths, False)}
    for name in ("teacher", "teacher_b"):
        out[name] = steps.train_teacher(params, "svd", paths, progress=False, name=name)
        out[f"gallery_{name}"] = steps.gallery(params, "svd", paths, name=name)
        out[f"white_{name}"] = steps.whitening(params, "svd", paths, name=name)
    out["train"] = steps.distill(params, "svd", "whiten_mtd", "focus", paths, progress=False)
    out["metrics"] = steps.evaluate(params, "svd", "whiten_mtd", "focus", paths, extra=out["train"])
    return out


def test_prepared_frames_and_ground_truth(run):
    assert run["prepare"]["splits"] == {"train": 12, "query": 6, "gallery": 18}
    prepared = PreparedDataset(run["paths"].prepared("svd"))
    assert prepared.images.shape[1:] == (16, 16, 3)
    assert prepared.video_groundtruth == {"q0": {"c0": 1, "c1": 0, "c2": 1}, "q1": {"c1": 1, "c3": 0}}
    ids, lengths = group_frames(prepared.index["video_id"].to_numpy()[prepared.rows("gallery")])
    assert ids == ["c0", "c1", "c2", "c3", "u0", "u1", "u2"] and lengths.tolist() == [3, 2, 5, 2, 2, 3, 1]
    data = train_data(prepared)
    assert data.groups.tolist() == [0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 4]  # tq0 tc0 tc1 tq1 tc2
    pool = data.kd_pool(seed=0, epoch=1)
    assert data.groups[pool].tolist() == [0, 1, 2, 3, 4]  # one frame of every training video


def test_teachers_report_video_map(run):
    for name in ("teacher", "teacher_b"):
        m = run[name]
        assert {"map_top100", "map_topinf", "n_queries"} <= set(m) and m["n_queries"] == 2
        assert 0.0 <= m["map_topinf"] <= 100.0


def test_whitening_is_fitted_on_random_augmented_training_frames(run):
    """Up to 60 frames per training video: all 12 here; fit_frames caps and keeps video order."""
    assert run["gallery_teacher"]["n_train"] == 12 and run["white_teacher"]["in_dim"] == 64
    videos = np.repeat(np.arange(3), [70, 5, 61])
    picked = fit_frames(videos)
    assert len(picked) == 60 + 5 + 60 and len(set(picked.tolist())) == len(picked)
    assert (np.diff(videos[picked]) >= 0).all() and np.array_equal(picked, fit_frames(videos))
    train = np.load(run["paths"].gallery("svd") / "train.npy")
    assert train.shape == (12, 64) and np.isfinite(train).all()


def test_student_metrics_are_whiten_mtds_video_protocol(run):
    """Recompute map_top100 / map_topinf from the student's frames at the official test view (Resize,
    CenterCrop, no Normalize), chamfer similarity, unlabeled videos as distractors."""
    params, paths, m = run["params"], run["paths"], run["metrics"]
    assert {"map_top100", "map_topinf"} <= set(m) and "asym_map" not in m
    assert m["n_queries"] == 2 and m["effective_batch_size"] == 4
    prepared = PreparedDataset(paths.prepared("svd"))
    state = torch.load(paths.student("focus"), weights_only=False)
    net = build_network({**state["architecture"], "pretrained": False}, state["num_classes"], 3)
    net.load_state_dict(state["model"])
    net.eval()
    spec = view_spec(state["architecture"], params["data"]["svd"], train=False)
    feats, sides = {}, {}
    with torch.no_grad():
        for side in ("query", "gallery"):
            rows = prepared.rows(side)
            x = eval_view(prepared.images[rows], spec)
            torch.testing.assert_close(x, svd_test_view(prepared.images[rows], resize=9, crop=8))
            feats[side] = net(x).embedding.numpy()
            sides[side] = group_frames(prepared.index["video_id"].to_numpy()[rows])
    gt = {q: dict((c, lab) for qq, c, lab in SVD_TEST_GT if qq == q) for q in ("q0", "q1")}
    expected = video_retrieval_metrics(feats["query"], sides["query"][1], sides["query"][0], feats["gallery"],
                                       sides["gallery"][1], sides["gallery"][0], gt,
                                       distractors=[False] * 4 + [True] * 3, ks=(100,))
    assert m["map_top100"] == pytest.approx(expected["map_top100"], abs=1e-3)
    assert m["map_topinf"] == pytest.approx(expected["map_topinf"], abs=1e-3)
    assert steps.summary(m).startswith("video mAP top-100")


def test_whitening_does_not_depend_on_the_student_method():
    """dvc.yaml: the whitening stages read the teacher gallery and the whitening params only, so changing the
    student method (or its recipe) reruns distill / evaluate, never the whitening fit."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name in ("whitening", "extra_whitening", "gallery", "extra_gallery"):
        stage = stages[name].get("do", stages[name])
        keys = [k if isinstance(k, str) else next(iter(k)) for k in stage.get("params", [])]
        runtime = ("training.device", "training.threads")  # where it runs, not what it computes
        assert not any(k.startswith(("method", "training", "student")) and k not in runtime for k in keys), keys
        assert not any("students" in str(d) for d in stage["deps"])


def test_similarity_option_and_frames_per_video(run):
    params = copy.deepcopy(run["params"])
    params["data"]["svd"]["video_similarity"] = "mean"
    m = steps.evaluate(params, "svd", "whiten_mtd", "focus", run["paths"])
    assert m["map_topinf"] >= 0 and m.keys() >= {"map_top100", "map_topinf"}
    assert sum(SVD_FRAMES[v] for v in ("tq0", "tc0", "tc1", "tq1", "tc2")) == 12


@pytest.mark.parametrize("layout", ["mocov3", "barlowtwins"])
def test_self_supervised_resnet50_checkpoints_import_as_frame_teachers(tmp_path, layout):
    """A MoCo v3 checkpoint (``state_dict`` of ``module.base_encoder.*`` with a projection MLP as ``fc``, plus a
    momentum encoder and predictor) or a Barlow Twins backbone (torchvision keys, no ``fc``) loads into
    ``resnet50``: the backbone exactly, the classifier keeps its init, the descriptor is the 2048-d pooled vector."""
    from distillery.engine.stage_common import import_teacher
    from distillery.models import build_model

    torch.manual_seed(0)
    source = build_model("resnet50", num_classes=10)
    backbone = {k: v for k, v in source.state_dict().items() if not k.startswith("fc.")}
    if layout == "mocov3":
        state = {f"module.base_encoder.{k}": v for k, v in backbone.items()}
        state.update({"module.base_encoder.fc.0.weight": torch.randn(4096, 2048),
                      "module.momentum_encoder.conv1.weight": torch.randn(64, 3, 7, 7),
                      "module.predictor.0.weight": torch.randn(4096, 256)})
        state = {"epoch": 300, "state_dict": state}
    else:
        state = backbone
    torch.save(state, tmp_path / "ssl.pth")
    group = {"model": "resnet50", "pretrained": False, "embedding_dim": 64, "checkpoint": str(tmp_path / "ssl.pth")}
    model, num_classes = import_teacher(group, 7, 3)
    assert num_classes == 7 and model.fc.out_features == 7
    for k, v in backbone.items():
        assert torch.equal(model.state_dict()[k], v), k
    model.eval()
    source.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x).embedding, source(x).pooled)
    assert model(x).embedding.shape == (1, 2048)


def test_a_full_imagenet_checkpoint_keeps_its_classifier(tmp_path):
    """With the whole classifier present (another class count), the import adopts it, as before."""
    from distillery.engine.stage_common import import_teacher
    from distillery.models import build_model

    torch.manual_seed(1)
    source = build_model("resnet18", num_classes=12)
    torch.save(source.state_dict(), tmp_path / "tv.pth")
    group = {"model": "resnet18", "pretrained": False, "embedding_dim": 64, "checkpoint": str(tmp_path / "tv.pth")}
    model, num_classes = import_teacher(group, 7, 3)
    assert num_classes == 12 and torch.equal(model.fc.weight, source.fc.weight)
