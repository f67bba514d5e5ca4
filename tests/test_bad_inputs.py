"""Bad input: a one-line error naming the problem and the fix, a non-zero exit, and no output left behind."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from distillery.engine import checkpoint as ckpt
from distillery.engine.checkpoint import load_model_weights, save_checkpoint
from distillery.engine.trainer import Recipe, TrainData, TrainingDiverged, train
from distillery.data.transforms import ViewSpec
from distillery.losses import build_method
from distillery.models import build_model
from distillery.models.shapes import probe_shapes
from tests.conftest import REPO, tiny_params


def _stage(cwd: Path, params: dict, script: str, *args):
    (cwd / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run([sys.executable, str(REPO / "stages" / script), "--no-progress", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def _assert_one_line_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_missing_dataset_root_cli(tmp_path, params):
    params["data"]["fashion_mnist"]["root"] = str(tmp_path / "nowhere")
    result = _stage(tmp_path, params, "prepare.py", "--dataset", "fashion_mnist")
    _assert_one_line_error(result, "nowhere", "does not exist")
    assert not (tmp_path / "data").exists()


def test_mistyped_param_cli(tmp_path, params):
    params["training"]["lr"] = -0.5
    result = _stage(tmp_path, params, "teacher.py", "--dataset", "fashion_mnist")
    _assert_one_line_error(result, "training.lr must be > 0")
    assert not (tmp_path / "artifacts").exists() and not (tmp_path / "metrics").exists()


def test_topk_larger_than_batch(params):
    from distillery.config import ConfigError, validate

    params["methods"]["rop"]["topk"] = 500
    validate(params)  # rop is not run by this configuration: no error
    params["benchmark"]["methods"].append("rop")
    with pytest.raises(ConfigError, match="methods.rop.topk = 500 exceeds training.kd_batch_size"):
        validate(params)


def test_teacher_checkpoint_of_wrong_architecture(tmp_path):
    small = build_model("convnet_s", num_classes=5, in_channels=1)
    save_checkpoint(tmp_path / "t.pt", {"model": small.state_dict()})
    other = build_model("convnet_m", num_classes=5, in_channels=1)
    with pytest.raises(ValueError, match="teacher checkpoint .* does not fit the configured architecture"):
        load_model_weights(other, tmp_path / "t.pt")


def test_embedding_dim_mismatch_names_the_fix():
    s = build_model("convnet_s", num_classes=5, in_channels=1, embedding_dim=32)
    t = build_model("convnet_m", num_classes=5, in_channels=1, embedding_dim=64)
    with pytest.raises(ValueError, match="fitnet.*equal student and teacher embedding dims.*32 vs 64.*embedding_dim: 64"):
        build_method("fitnet").setup(probe_shapes(s, (1, 14, 14)), probe_shapes(t, (1, 28, 28)))


def _tiny_data():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, size=(40, 12, 12, 1), dtype=np.uint8)
    return TrainData.from_split(images, np.arange(40), np.repeat(np.arange(5), 8))


def test_nan_loss_stops_with_step_terms_and_checkpoint(tmp_path):
    model = build_model("convnet_s", num_classes=5, in_channels=1)
    recipe = Recipe(epochs=2, lr=1e30, ids_per_batch=5, samples_per_id=4, kd_batch_size=10)
    with pytest.raises(TrainingDiverged, match=r"loss is (nan|inf) at epoch \d+, step \d+ \(ce=.*triplet=.*\); "):
        train(model, _tiny_data(), recipe, ViewSpec(12, (0.5,), (0.5,)), seed=0, checkpoint_path=tmp_path / "c.pt",
              progress=False)


def test_disk_full_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"epoch": 1})

    def full_disk(obj, f, *a, **k):
        Path(f).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt.torch, "save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(path, {"epoch": 2})
    monkeypatch.undo()
    assert torch.load(path, weights_only=False) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary file left behind
