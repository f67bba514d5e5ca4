"""End to end on a fabricated Fashion-MNIST: every stage function, the report, determinism and kill-and-resume."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from distillery.engine import steps
from distillery.engine.experiment import Paths
from distillery.reporting import build_report
from tests.conftest import REPO, tiny_params
from tests.data.fabricate import make_fashion_mnist


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """prepare -> teacher -> gallery -> whitening -> bench cells (vanilla, kd, fitnet) -> report, in a tmp dir."""
    root = tmp_path_factory.mktemp("e2e")
    params = tiny_params(make_fashion_mnist(root / "fmnist", train_per_class=12, test_per_class=6))
    paths = Paths(root)
    ds = "fashion_mnist"
    steps.prepare(params, ds, paths, progress=False)
    teacher_metrics = steps.train_teacher(params, ds, paths, progress=False)
    steps.gallery(params, ds, paths)
    steps.whitening(params, ds, paths)
    cells = {}
    for method in params["benchmark"]["methods"]:
        cell = f"{ds}-{method}"
        info = steps.distill(params, ds, method, cell, paths, progress=False)
        cells[method] = steps.evaluate(params, ds, method, cell, paths, extra=info)
        (root / "metrics" / "bench").mkdir(parents=True, exist_ok=True)
        (root / "metrics" / "bench" / f"{cell}.json").write_text(json.dumps(cells[method]))
    table = build_report(params, metrics_dir=root / "metrics", out_dir=root / "reports",
                         paper_file=REPO / "configs" / "paper_numbers.yaml")
    return {"root": root, "params": params, "paths": paths, "teacher": teacher_metrics, "cells": cells,
            "table": table}


def test_every_stage_writes_its_outputs(pipeline):
    root, paths = pipeline["root"], pipeline["paths"]
    for path in (paths.prepared("fashion_mnist") / "images.npy", paths.teacher("fashion_mnist"),
                 paths.gallery("fashion_mnist") / "train.npy", paths.gallery("fashion_mnist") / "gallery.npy",
                 paths.whitening("fashion_mnist"), root / "reports" / "results.md", root / "reports" / "results.csv",
                 root / "reports" / "plots" / "map_fashion_mnist.png",
                 root / "metrics" / "train_logs" / "fashion_mnist-kd.csv"):
        assert path.is_file(), path
    assert not list((root / "checkpoints").glob("*.pt"))  # resume checkpoints are removed after success


def test_metrics_are_flat_percentages(pipeline):
    for method, metrics in pipeline["cells"].items():
        for key in ("asym_map", "asym_recall_at_1", "sym_map", "sym_recall_at_1", "train_seconds"):
            assert isinstance(metrics[key], float) and math.isfinite(metrics[key]), (method, key)
        assert 0 <= metrics["asym_map"] <= 100 and 0 <= metrics["sym_recall_at_1"] <= 100
    vanilla = pipeline["cells"]["vanilla"]
    assert vanilla["asym_map"] == vanilla["sym_map"]  # no teacher: the gallery is the student's own
    assert 0 <= pipeline["teacher"]["map"] <= 100


def test_report_lists_every_method_and_the_teacher(pipeline):
    table = pipeline["table"]
    for row in ("teacher (gallery net)", "vanilla (no distillation)", "| kd |", "| fitnet |"):
        assert row in table
    assert "fashion_mnist asym mAP" in table


def test_same_seed_same_metrics(pipeline, tmp_path):
    params, ds = pipeline["params"], "fashion_mnist"
    paths = Paths(tmp_path)
    paths.prepared(ds).parent.mkdir(parents=True)
    os.symlink(pipeline["paths"].prepared(ds), paths.prepared(ds))
    (tmp_path / "artifacts").mkdir()
    os.symlink(pipeline["paths"].teacher(ds).parent, tmp_path / "artifacts" / ds)
    info = steps.distill(params, ds, "kd", "again", paths, progress=False)
    again = steps.evaluate(params, ds, "kd", "again", paths, extra=info)
    first = pipeline["cells"]["kd"]
    assert {k: v for k, v in again.items() if "seconds" not in k} == \
        {k: v for k, v in first.items() if "seconds" not in k}


# --------------------------------------------------------------------------- kill and resume (SIGKILL)
def _run_stage(cwd: Path, script: str, *args) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.Popen([sys.executable, str(REPO / "stages" / script), "--no-progress", *args], cwd=cwd,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _workspace(tmp: Path, data_root: Path) -> Path:
    params = tiny_params(data_root)
    params["teacher"].update(epochs=3, ids_per_batch=5, samples_per_id=4)
    tmp.mkdir()
    (tmp / "params.yaml").write_text(yaml.safe_dump(params))
    assert _run_stage(tmp, "prepare.py", "--dataset", "fashion_mnist").wait(timeout=120) == 0
    return tmp


def test_teacher_killed_mid_run_resumes_bitwise(tmp_path):
    data_root = make_fashion_mnist(tmp_path / "fmnist", train_per_class=40, test_per_class=4)
    clean, killed = _workspace(tmp_path / "clean", data_root), _workspace(tmp_path / "killed", data_root)
    assert _run_stage(clean, "teacher.py", "--dataset", "fashion_mnist").wait(timeout=300) == 0

    proc = _run_stage(killed, "teacher.py", "--dataset", "fashion_mnist")
    deadline = time.time() + 300
    while not list((killed / "checkpoints").glob("teacher-*.pt")) and time.time() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # after epoch 1's checkpoint, inside epoch 2
    proc.wait()
    assert not (killed / "artifacts" / "fashion_mnist" / "teacher.pt").exists()  # no half-written final output
    rerun = _run_stage(killed, "teacher.py", "--dataset", "fashion_mnist")
    assert rerun.wait(timeout=300) == 0, rerun.stdout.read()

    a = torch.load(clean / "artifacts" / "fashion_mnist" / "teacher.pt", weights_only=False)
    b = torch.load(killed / "artifacts" / "fashion_mnist" / "teacher.pt", weights_only=False)
    assert b["history"][0]["epoch"] == 1 and len(b["history"]) == 3
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert json.loads((clean / "metrics" / "teacher-fashion_mnist.json").read_text())["map"] == \
        json.loads((killed / "metrics" / "teacher-fashion_mnist.json").read_text())["map"]
