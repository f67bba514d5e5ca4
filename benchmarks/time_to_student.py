"""Wall-clock to a trained student, teacher-output cache off (V = 0: the teacher runs every step) vs on
(V recorded views, built once by the teacher_views stage, which every method of the benchmark then shares).

Default mode: the embedded preset of params.yaml (teacher convnet_m @ 28 px costs ~8x the student convnet_s @ 14
px per image) on the prepared data + teacher of a finished `dvc repro` (data/prepared, artifacts/); each run
trains the same student (same seed) in a scratch folder and is evaluated (final asymmetric / symmetric mAP).

--synthetic-cub: timing only, on the D3still CUB shapes (configs/cub200.yaml: teacher retrieval_resnet101 @ 256
px, student retrieval_resnet18 @ 128 px, 512-d, 3 channels) with random data (a fabricated prepared cache of
256 px uint8 images) and a random-init teacher; CPU-sized batches by default (the recipe's P x K = 16 x 6 and
KD batch 256: --ids-per-batch 16 --samples-per-id 6 --kd-batch 256). No evaluation.

Columns: build s (teacher_views stage), train s (distill stage, wall), train/off (train s / that of V = 0),
MiB (cache size), img/s (images the student sees, P x K + KD batch per step, per second of the training loop),
s/step (the last epoch's seconds per step), teacher% (the share of the training loop spent in the teacher's
forwards, timed by hooks inside the same run, so less disturbed than the other columns by a busy machine).
Examples:

    python benchmarks/time_to_student.py --method d3still --views 0 1 4 16 --epochs 12
    python benchmarks/time_to_student.py --method d3still --views 0 1 4 12 --epochs 12 --teacher-widths 32 64 128
    python benchmarks/time_to_student.py --synthetic-cub --views 0 1 4 --threads 2
    python benchmarks/time_to_student.py --synthetic-cub --device cuda --ids-per-batch 16 --samples-per-id 6 \\
        --kd-batch 256 --classes 32 --per-class 24
"""

from __future__ import annotations

import argparse
import copy
import csv
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from distillery.config import load_params
from distillery.engine import steps
from distillery.engine.checkpoint import save_checkpoint
from distillery.engine.experiment import Paths, build_network
from distillery.utils.io import write_json

CUB = "cub200"


class TeacherClock:
    """Wall seconds of the teacher's training-loop forwards (those under ``inference_mode``: not the shape probe
    nor the cache build), via forward hooks on every teacher that ``steps.load_teacher`` returns meanwhile (on
    CUDA the hooks synchronise, so the teacher no longer overlaps the rest of the step)."""

    def __enter__(self):
        self.seconds, self.calls, self._load = 0.0, 0, steps.load_teacher

        def load(*args, **kwargs):
            teacher = self._load(*args, **kwargs)
            teacher.register_forward_pre_hook(lambda module, inputs: self._tick(inputs[0], start=True))
            teacher.register_forward_hook(lambda module, inputs, out: self._tick(inputs[0], start=False))
            return teacher

        steps.load_teacher = load
        return self

    def __exit__(self, *exc):
        steps.load_teacher = self._load

    def _tick(self, x: torch.Tensor, start: bool) -> None:
        if not torch.is_inference_mode_enabled():
            return
        if x.is_cuda:
            torch.cuda.synchronize(x.device)
        if start:
            self._t0 = time.perf_counter()
        else:
            self.seconds, self.calls = self.seconds + time.perf_counter() - self._t0, self.calls + 1


def run(params: dict, ds: str, method: str, views: int, work: Path, evaluate: bool = True) -> dict:
    """Build the V-view cache (V > 0), distill the student, optionally evaluate it; times and throughput."""
    p = copy.deepcopy(params)
    p["teacher_cache"]["views"] = views
    paths, cell = Paths(work), f"tts-{views}"
    t0 = time.perf_counter()
    build = steps.teacher_views(p, ds, paths, progress=False) if views else {"build_seconds": 0.0, "bytes": 0}
    t1 = time.perf_counter()
    with TeacherClock() as clock:
        info = steps.distill(p, ds, method, cell, paths, progress=False)
    t2 = time.perf_counter()
    with open(paths.train_log(cell)) as f:
        epochs = list(csv.DictReader(f))
    t = p["training"]
    images = sum(int(e["steps"]) for e in epochs) * (t["ids_per_batch"] * t["samples_per_id"] + t["kd_batch_size"])
    row = {"views": views, "build_s": t1 - t0, "train_s": t2 - t1, "total_s": t2 - t0,
           "cache_mib": build["bytes"] / 2**20, "img_s": images / info["train_seconds"],
           "step_s": float(epochs[-1]["seconds"]) / int(epochs[-1]["steps"]),
           "teacher_pct": 100 * clock.seconds / info["train_seconds"],
           "teacher_batch_s": clock.seconds / max(clock.calls, 1)}
    if evaluate:
        metrics = steps.evaluate(p, ds, method, cell, paths, extra=info)
        row.update(asym_map=metrics["asym_map"], sym_map=metrics["sym_map"])
    return row


def print_table(rows: list[dict]) -> None:
    base = next((r for r in rows if r["views"] == 0), rows[0])
    scores = "asym_map" in rows[0]
    print(f"{'V':>4} {'build s':>8} {'train s':>8} {'total s':>8} {'train/off':>9} {'MiB':>6} {'img/s':>7} "
          f"{'s/step':>7} {'teacher%':>8}" + (f" {'asym mAP':>9} {'sym mAP':>8}" if scores else ""))
    for r in rows:
        print(f"{r['views']:>4} {r['build_s']:>8.1f} {r['train_s']:>8.1f} {r['total_s']:>8.1f} "
              f"{r['train_s'] / base['train_s']:>9.2f} {r['cache_mib']:>6.1f} {r['img_s']:>7.1f} {r['step_s']:>7.2f} "
              f"{r['teacher_pct']:>8.0f}"
              + (f" {r['asym_map']:>9.2f} {r['sym_map']:>8.2f}" if scores else ""))


def link_repo_outputs(ds: str, work: Path, teacher: bool = True) -> None:
    """Symlink the prepared data (and the teacher and its gallery) of a finished `dvc repro` into the scratch
    folder."""
    repo, scratch = Paths(Path(".")), Paths(work)
    pairs = [(repo.prepared(ds), scratch.prepared(ds))]
    if teacher:
        pairs += [(repo.teacher(ds), scratch.teacher(ds)), (repo.gallery(ds), scratch.gallery(ds))]
    for source, target in pairs:
        if not source.exists():
            raise SystemExit(f"error: {source} is missing; run `dvc repro gallery@{ds}` first")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(source.resolve(), target)


def cub_params(args) -> dict:
    """params.yaml overlaid with configs/cub200.yaml's data/teacher/student/training groups (random init, the
    method groups of params.yaml) and this run's batch sizes."""
    params = load_params(args.params)
    cub = yaml.safe_load(Path(args.cub_config).read_text())
    for group in ("teacher", "student", "training"):
        params[group] = {**params[group], **cub[group]}
    params["data"][CUB] = {**params["data"][CUB], **cub["data"][CUB]}
    params["teacher"]["pretrained"] = params["student"]["pretrained"] = False  # no download
    params["training"].update(ids_per_batch=args.ids_per_batch, samples_per_id=args.samples_per_id,
                              kd_batch_size=args.kd_batch)
    return params


def fabricate_cub(params: dict, work: Path, classes: int, per_class: int, n_test: int = 4) -> None:
    """A prepared cache of random uint8 images (``classes`` x ``per_class`` train, ``n_test`` test) at the
    dataset's store size, and a random-init teacher checkpoint as ``steps.train_teacher`` writes it."""
    cfg, paths, seed = params["data"][CUB], Paths(work), params["seed"]
    labels = np.r_[np.repeat(np.arange(classes), per_class), np.arange(n_test) % classes]
    split = ["train"] * (classes * per_class) + ["test"] * n_test
    folder = paths.prepared(CUB)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    size, channels = cfg["store_size"], cfg["channels"]
    np.save(folder / "images.npy", rng.integers(0, 256, (len(labels), size, size, channels), dtype=np.uint8))
    pd.DataFrame({"path": [f"synthetic/{i}.jpg" for i in range(len(labels))], "label": labels,
                  "split": split}).to_csv(folder / "index.csv", index=False)
    write_json(folder / "meta.json", {"dataset": "synthetic_" + CUB, "n_images": len(labels), "channels": channels,
                                      "image_size": size, "splits": {"test": n_test, "train": classes * per_class},
                                      "n_classes_train": classes, "n_skipped_images": 0, "skipped_images": []})
    torch.manual_seed(seed)
    teacher = build_network(params["teacher"], classes, channels)
    save_checkpoint(paths.teacher(CUB), {"model": teacher.state_dict(), "architecture": params["teacher"],
                                         "num_classes": classes, "history": [], "seed": seed})


def synthetic_cub(args, params: dict) -> None:
    t, tg, sg = params["training"], params["teacher"], params["student"]
    print(f"{args.method} on synthetic CUB shapes: {args.classes} x {args.per_class} random train images "
          f"{params['data'][CUB]['store_size']} px; teacher {tg['model']} @ {tg['resolution']}, student "
          f"{sg['model']} @ {sg['resolution']}, {sg['embedding_dim']}-d; P x K = {t['ids_per_batch']} x "
          f"{t['samples_per_id']}, KD batch {t['kd_batch_size']}; {t['epochs']} epochs; threads {t['threads']}; "
          f"torch device {t['device']}")
    with tempfile.TemporaryDirectory() as tmp:
        fabricate_cub(params, Path(tmp), args.classes, args.per_class)
        rows = [run(params, CUB, args.method, v, Path(tmp), evaluate=False) for v in args.views]
    print_table(rows)
    for r in rows:
        if r["views"] == 0:
            print(f"teacher forward of a KD batch ({t['kd_batch_size']} @ {tg['resolution']} px): "
                  f"{r['teacher_batch_s']:.2f} s, {r['teacher_pct']:.0f}% of the uncached training loop")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--method", default="d3still")
    parser.add_argument("--views", type=int, nargs="+", default=None, help="default 0 1 4 16 (synthetic: 0 1 4)")
    parser.add_argument("--epochs", type=int, default=None, help="student epochs (default: params; synthetic: 2)")
    parser.add_argument("--threads", type=int, default=None, help="default: params (synthetic: 2)")
    parser.add_argument("--device", default=None, help="training.device (default: params; synthetic: cpu)")
    parser.add_argument("--teacher-widths", type=int, nargs=3, default=None, metavar="W",
                        help="train a wider teacher (model_options.widths) in the scratch folder instead of using the "
                             "repo's, e.g. 32 64 128: ~18x the student per image, near the D3still CUB shapes'")
    group = parser.add_argument_group("--synthetic-cub")
    group.add_argument("--synthetic-cub", action="store_true", help="time the D3still CUB shapes on random data")
    group.add_argument("--cub-config", default="configs/cub200.yaml")
    group.add_argument("--classes", type=int, default=6)
    group.add_argument("--per-class", type=int, default=8)
    group.add_argument("--ids-per-batch", type=int, default=4)
    group.add_argument("--samples-per-id", type=int, default=4)
    group.add_argument("--kd-batch", type=int, default=16)
    args = parser.parse_args()
    defaults = dict(views=[0, 1, 4], epochs=2, threads=2, device="cpu") if args.synthetic_cub else \
        dict(views=[0, 1, 4, 16])
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    params = cub_params(args) if args.synthetic_cub else load_params(args.params)
    for key in ("epochs", "threads", "device"):
        if getattr(args, key):
            params["training"][key] = getattr(args, key)
    if args.synthetic_cub:
        return synthetic_cub(args, params)
    with tempfile.TemporaryDirectory() as tmp:
        link_repo_outputs(args.dataset, Path(tmp), teacher=not args.teacher_widths)
        header = f"{args.method} on {args.dataset}, {params['training']['epochs']} epochs"
        if args.teacher_widths:
            header += wider_teacher(params, args.dataset, args.teacher_widths, Path(tmp))
        rows = [run(params, args.dataset, args.method, v, Path(tmp)) for v in args.views]
    print(header)
    print_table(rows)


def wider_teacher(params: dict, ds: str, widths: list[int], work: Path) -> str:
    """Train the ``teacher`` group with ``model_options.widths`` (and its gallery) in ``work``; returns a header
    note with its training time and its forward cost per image relative to the student's (2 threads)."""
    params["teacher"]["model_options"] = {**(params["teacher"].get("model_options") or {}), "widths": widths}
    metrics = steps.train_teacher(params, ds, Paths(work), progress=False)
    steps.gallery(params, ds, Paths(work))
    channels = params["data"][ds]["channels"]
    nets = {k: build_network(params[k], 5, channels).eval() for k in ("teacher", "student")}
    cost = {}
    with torch.inference_mode():
        for key, net in nets.items():
            x = torch.randn(80, channels, params[key]["resolution"], params[key]["resolution"])
            for _ in range(3):
                net(x)
            t0 = time.perf_counter()
            for _ in range(10):
                net(x)
            cost[key] = time.perf_counter() - t0
    return (f"; teacher {params['teacher']['model']} widths {widths} (mAP {metrics['map']:.2f}, trained in "
            f"{metrics['train_seconds']:.0f} s), forward {cost['teacher'] / cost['student']:.1f}x the student's per image")


if __name__ == "__main__":
    main()
