"""Shared fixtures: a fabricated Fashion-MNIST and tiny, fast pipeline params built from params.yaml."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

import distillery  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads OpenMP)
import torch

from tests.data.fabricate import make_fashion_mnist

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Tiny tensors run fastest (and most reproducibly) on one thread on the 2-core CI machine."""
    torch.set_num_threads(1)


def tiny_params(data_root: Path) -> dict:
    """params.yaml with the embedded dataset pointed at ``data_root`` and every size shrunk for a test."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params = copy.deepcopy(params)
    ds = params["data"]["fashion_mnist"]
    ds.update(root=str(data_root), max_train_per_class=None, max_test_per_class=None)
    for group in ("teacher", "training"):
        params[group].update(epochs=2, warmup_epochs=1, cosine_start=1, ids_per_batch=5, samples_per_id=4)
    params["training"].update(kd_batch_size=20, threads=1)
    for hyper in params["methods"].values():
        for key in ("topk", "top_k"):
            if key in (hyper or {}):
                hyper[key] = min(hyper[key], 20)
    params["evaluation"]["batch_size"] = 64
    params["benchmark"]["methods"] = ["vanilla", "kd", "fitnet"]
    params["benchmark"].update(teachers=[], multi_teacher_methods=[])  # multi-teacher: test_pipeline_revisited.py
    params["benchmark_cls"].update(datasets=[], methods=[])  # classification: see tiny_cls_params
    return params


def tiny_cls_params(data_root: Path) -> dict:
    """Classification-only tiny params (dataset ``fashion_mnist_cls`` at ``data_root``, 2 epochs, batch 16)."""
    params = tiny_params(data_root)
    params["data"]["fashion_mnist_cls"].update(root=str(data_root), max_train_per_class=None, max_test_per_class=None)
    for group in ("teacher_cls", "training_cls"):
        params[group].update(epochs=2, lr_decay_epochs=[1], batch_size=16)
    params["benchmark"].update(datasets=[], methods=[])
    params["benchmark_cls"].update(datasets=["fashion_mnist_cls"], methods=["vanilla", "dkd", "sdd_kd"])
    params.update(dataset="fashion_mnist_cls", method="dkd")
    return params


@pytest.fixture
def fmnist_root(tmp_path) -> Path:
    return make_fashion_mnist(tmp_path / "fmnist", train_per_class=12, test_per_class=6)


@pytest.fixture
def params(fmnist_root) -> dict:
    return tiny_params(fmnist_root)
