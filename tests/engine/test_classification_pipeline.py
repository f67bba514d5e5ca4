"""End to end on a fabricated Fashion-MNIST, classification task: prepare -> teacher -> bench cells (vanilla,
dkd, sdd_kd) -> report, through the same stage functions as the retrieval pipeline."""

from __future__ import annotations

import json

import pytest
import torch

from distillery.engine import steps
from distillery.engine.experiment import Paths
from distillery.reporting import build_report
from tests.conftest import REPO, tiny_cls_params
from tests.data.fabricate import make_fashion_mnist

DS = "fashion_mnist_cls"


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("cls")
    params = tiny_cls_params(make_fashion_mnist(root / "fmnist", train_per_class=12, test_per_class=6))
    paths = Paths(root)
    meta = steps.prepare(params, DS, paths, progress=False)
    teacher = steps.train_teacher(params, DS, paths, progress=False)
    cells = {}
    for method in params["benchmark_cls"]["methods"]:
        cell = f"{DS}-{method}"
        info = steps.distill(params, DS, method, cell, paths, progress=False)
        cells[method] = {**steps.provenance(params, DS, method, paths),
                         **steps.evaluate(params, DS, method, cell, paths, extra=info)}
        (root / "metrics" / "bench").mkdir(parents=True, exist_ok=True)
        (root / "metrics" / "bench" / f"{cell}.json").write_text(json.dumps(cells[method]))
    table = build_report(params, metrics_dir=root / "metrics", out_dir=root / "reports",
                         paper_file=REPO / "configs" / "paper_numbers.yaml")
    return {"root": root, "params": params, "paths": paths, "meta": meta, "teacher": teacher, "cells": cells,
            "table": table}


def test_standard_split_and_top_k_metrics(pipeline):
    assert pipeline["meta"]["splits"] == {"train": 120, "test": 60}
    for metrics in [pipeline["teacher"], *pipeline["cells"].values()]:
        assert set(metrics) >= {"top1", "top5", "train_seconds"}
        assert 0 <= metrics["top1"] <= metrics["top5"] <= 100
        correct = metrics["top1"] * 60 / 100  # percent of 60 test images, rounded to 4 decimals
        assert correct == pytest.approx(round(correct), abs=1e-3)


def test_cells_use_the_classification_groups(pipeline):
    params, cells = pipeline["params"], pipeline["cells"]
    assert cells["dkd"]["teacher"] == params["teacher_cls"]["model"]
    assert cells["dkd"]["method_params"]["warmup_epochs"] == params["methods"]["dkd"]["warmup_epochs"]
    state = torch.load(pipeline["paths"].student(f"{DS}-sdd_kd"), weights_only=False)
    assert len(state["history"]) == params["training_cls"]["epochs"] and "kd" in state["history"][0]
    assert state["history"][0]["steps"] == 8  # 120 images in batches of 16 (the last one holds 8)


def test_report_has_the_classification_table(pipeline):
    table = pipeline["table"]
    text = (pipeline["root"] / "reports" / "results.md").read_text()
    assert "## Classification" in text and "| dkd |" in table and "| sdd_kd |" in table
    assert f"{DS} convnet_m→convnet_s top-1" in table
    assert (pipeline["root"] / "reports" / "plots" / f"top1_{DS}.png").is_file()
    assert "fashion_mnist asym mAP" not in table  # no retrieval benchmark configured


def test_evaluate_is_deterministic(pipeline, tmp_path):
    params, paths = pipeline["params"], pipeline["paths"]
    again = steps.evaluate(params, DS, "dkd", f"{DS}-dkd", paths)
    assert again["top1"] == pipeline["cells"]["dkd"]["top1"]
