"""The Whiten-MTD workflow end to end through the stage functions (not dvc) on fabricated miniatures: GLDv2
trains two teachers, each gets its gallery and a whitening fitted on its training embeddings, a student is
distilled from both whitened teachers and evaluated on a miniature Revisited Oxford (multi-scale, queries
cropped to their bbox) with the Easy / Medium / Hard protocol.

The same through DVC, from the repository root (``make_roxford5k(<tmp>/revisitop)``,
``make_gldv2(<tmp>/gldv2, groups=gldv2_groups(4, 20))``; the tiny sizes keep it to seconds)::

    dvc exp run evaluate -S dataset=roxford5k -S method=whiten_mtd -S 'benchmark.datasets=[roxford5k]' \\
        -S data.roxford5k.root=<tmp>/revisitop -S data.roxford5k.train_from.root=<tmp>/gldv2 \\
        -S data.roxford5k.store_size=8 -S student.resolution=8 -S 'evaluation.scales=[1.0,0.7071]' \\
        -S teacher.resolution=8 -S teacher.padding=0 -S teacher.epochs=1 -S teacher.ids_per_batch=2 \\
        -S teacher.samples_per_id=2 -S teachers.teacher_b.resolution=8 -S teachers.teacher_b.padding=0 \\
        -S teachers.teacher_b.epochs=1 -S teachers.teacher_b.ids_per_batch=2 \\
        -S teachers.teacher_b.samples_per_id=2 -S training.epochs=2

``metrics/focus.json`` then holds ``map_easy``, ``map_medium``, ``map_hard`` and ``mp_at_{1,5,10}_*``.
"""

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from distillery.config import validate
from distillery.data.cache import PreparedDataset
from distillery.engine import steps
from distillery.engine.experiment import Paths, multiscale
from distillery.models import build_model
from distillery.models.whitening import PCAWhitening
from tests.data.fabricate import gldv2_groups, make_gldv2, make_roxford5k

torch.set_num_threads(1)
ROOT = Path(__file__).parents[2]


def _params(tmp: Path) -> dict:
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p.update(dataset="roxford5k", method="whiten_mtd")
    p["benchmark"]["datasets"] = ["roxford5k"]
    rox = p["data"]["roxford5k"]
    rox.update(root=str(tmp / "revisitop"), store_size=8)
    rox["train_from"]["root"] = str(tmp / "gldv2")
    for group in (p["teacher"], p["teachers"]["teacher_b"]):
        group.update(resolution=8, padding=0, epochs=1, ids_per_batch=2, samples_per_id=2)
    p["student"]["resolution"] = 8
    p["training"].update(epochs=2, threads=1)  # KD batch 80 = the 80 GLDv2 images: one step per epoch
    p["evaluation"]["scales"] = [1.0, 0.7071]
    return validate(p)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mtd")
    make_roxford5k(tmp / "revisitop")
    make_gldv2(tmp / "gldv2", groups=gldv2_groups(4, 20))
    params, paths = _params(tmp), Paths(tmp / "work")
    out = {"params": params, "paths": paths, "tmp": tmp, "prepare": steps.prepare(params, "roxford5k", paths, False)}
    for name in ("teacher", "teacher_b"):
        out[name] = steps.train_teacher(params, "roxford5k", paths, progress=False, name=name)
        steps.gallery(params, "roxford5k", paths, name=name)
        out[f"white_{name}"] = steps.whitening(params, "roxford5k", paths, name=name)
    info = steps.distill(params, "roxford5k", "whiten_mtd", "focus", paths, progress=False)
    out["metrics"] = steps.evaluate(params, "roxford5k", "whiten_mtd", "focus", paths, extra=info)
    return out


def test_prepared_cache_trains_on_gldv2_and_keeps_the_revisited_ground_truth(run):
    assert run["prepare"]["splits"] == {"train": 80, "query": 2, "gallery": 6}
    prepared = PreparedDataset(run["paths"].prepared("roxford5k"))
    assert prepared.gnd == [{"bbx": [1.0, 2.0, 6.0, 7.0], "easy": [0, 1], "hard": [2], "junk": [3]},
                            {"bbx": [0.0, 0.0, 8.0, 8.0], "easy": [], "hard": [4, 5], "junk": []}]
    assert sorted(set(prepared.labels(prepared.rows("train")))) == [1, 2, 3, 4]


def test_queries_are_cropped_to_their_bbox(run):
    """Query 0's 8 x 8 image cropped to [1, 2, 6, 7] (5 x 5 pixels) and resized to the 8 px store size."""
    prepared = PreparedDataset(run["paths"].prepared("roxford5k"))
    jpg = run["tmp"] / "revisitop" / "roxford5k" / "jpg"
    with Image.open(jpg / "roxford5k_query_0.jpg") as img:
        expected = np.asarray(img.convert("RGB").crop((1, 2, 6, 7)).resize((8, 8), Image.BILINEAR))
    row = prepared.rows("query")[0]
    assert np.abs(prepared.images[row].astype(int) - expected.astype(int)).max() <= 1
    with Image.open(jpg / "roxford5k_query_1.jpg") as img:  # bbox = the whole image
        np.testing.assert_array_equal(prepared.images[prepared.rows("query")[1]], np.asarray(img.convert("RGB")))


def test_whitening_is_fitted_on_each_teachers_training_embeddings(run):
    paths = run["paths"]
    for name in ("teacher", "teacher_b"):
        train = torch.from_numpy(np.load(paths.gallery("roxford5k", name) / "train.npy"))
        assert train.shape == (80, 64)
        white = PCAWhitening.load(paths.whitening("roxford5k", name))
        assert white.n_samples == 80 and run[f"white_{name}"]["in_dim"] == 64
        k = white.in_dim - white.n_floored  # directions below the eigenvalue floor are not whitened
        assert 1 < k <= 64
        y = white.apply(train)[:, :k]
        torch.testing.assert_close(y.mean(0), torch.zeros(k), atol=1e-4, rtol=0)
        torch.testing.assert_close(y.T @ y / len(y), torch.eye(k), atol=1e-2, rtol=0)  # float32 fit, small λ
    assert paths.teacher("roxford5k", "teacher_b") == paths.root / "artifacts/roxford5k/teachers/teacher_b/teacher.pt"


def test_teachers_differ_and_report_the_revisited_protocol(run):
    paths = run["paths"]
    a, b = (torch.load(paths.teacher("roxford5k", n), weights_only=False) for n in ("teacher", "teacher_b"))
    assert (a["seed"], b["seed"]) == (0, 1) and a["architecture"]["model"] != b["architecture"]["model"]
    for name in ("teacher", "teacher_b"):
        assert {"map_easy", "map_medium", "map_hard", "mp_at_5_hard"} <= set(run[name])


def test_student_metrics_are_the_revisited_protocol(run):
    m = run["metrics"]
    keys = {f"map_{s}" for s in ("easy", "medium", "hard")} | \
        {f"mp_at_{k}_{s}" for k in (1, 5, 10) for s in ("easy", "medium", "hard")}
    assert keys <= set(m) and all(0.0 <= m[k] <= 100.0 for k in keys)
    assert "asym_map" not in m and m["effective_batch_size"] == 80
    state = torch.load(run["paths"].student("focus"), weights_only=False)
    assert state["architecture"]["model_options"] == {"head": "l2_linear", "pooling": "gem", "gem_p": 3.0}


def test_evaluation_uses_multiscale_descriptors(run):
    """Recompute the student's scores with experiment.multiscale and the reference revisited_map."""
    from distillery.evaluation import revisited_map
    from distillery.data.transforms import eval_view
    from distillery.engine.experiment import view_spec

    params, paths = run["params"], run["paths"]
    prepared = PreparedDataset(paths.prepared("roxford5k"))
    state = torch.load(paths.student("focus"), weights_only=False)
    net = build_model("convnet_s", in_channels=3, embedding_dim=64, **state["architecture"]["model_options"])
    net.load_state_dict(state["model"])
    net.eval()
    spec = view_spec(state["architecture"], params["data"]["roxford5k"], train=False)
    with torch.no_grad():
        q, g = (multiscale(net, eval_view(prepared.images[prepared.rows(s)], spec), [1.0, 0.7071])
                for s in ("query", "gallery"))
    q, g = torch.nn.functional.normalize(q, dim=-1), torch.nn.functional.normalize(g, dim=-1)
    expected = revisited_map(q @ g.T, prepared.gnd)
    for key, value in expected.items():
        assert run["metrics"][key] == pytest.approx(value, abs=1e-3)


def test_multiscale_is_the_mean_of_normalised_scale_descriptors():
    torch.manual_seed(0)
    net = build_model("convnet_s", in_channels=1, embedding_dim=4).eval()
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        half = net(torch.nn.functional.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False))
        expected = (torch.nn.functional.normalize(net(x).embedding, dim=-1)
                    + torch.nn.functional.normalize(half.embedding, dim=-1)) / 2
        torch.testing.assert_close(multiscale(net, x, [1.0, 0.5]), expected)
        torch.testing.assert_close(multiscale(net, x, [1]), net(x).embedding)  # single scale: raw output


def test_import_an_external_checkpoint_as_a_teacher(run, tmp_path):
    """An external state dict (DDP ``module.`` prefix, another class count) + architecture name -> the teacher
    stage's output, usable by gallery / whitening / whiten_mtd like a trained one."""
    params, src = copy.deepcopy(run["params"]), run["paths"]
    paths = Paths(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "prepared").symlink_to(src.root / "data" / "prepared")
    torch.manual_seed(3)
    external = build_model("convnet_s", in_channels=3, embedding_dim=64, num_classes=7)
    torch.save({"state_dict": {f"module.{k}": v for k, v in external.state_dict().items()}}, tmp_path / "ext.pt")
    params["teachers"]["teacher_b"]["checkpoint"] = str(tmp_path / "ext.pt")
    metrics = steps.train_teacher(params, "roxford5k", paths, progress=False, name="teacher_b")
    assert metrics["epochs"] == 0 and "map_medium" in metrics
    loaded = steps.load_teacher(params, "roxford5k", paths, "teacher_b")
    for k, v in external.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)
    params["teachers"]["teacher_b"]["checkpoint"] = str(tmp_path / "missing.pt")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        steps.train_teacher(params, "roxford5k", paths, progress=False, name="teacher_b")
    params["teachers"]["teacher_b"].update(checkpoint=str(tmp_path / "ext.pt"), model="convnet_m")
    with pytest.raises(ValueError, match="does not fit model 'convnet_m'"):
        steps.train_teacher(params, "roxford5k", paths, progress=False, name="teacher_b")
    params["teachers"]["teacher_b"].update(checkpoint="pretrained")
    with pytest.raises(ValueError, match="pretrained: true"):
        steps.train_teacher(params, "roxford5k", paths, progress=False, name="teacher_b")
