"""Wall-clock to a trained student and its final metric, teacher-output cache off vs on (V recorded views).

Uses the embedded preset of params.yaml (teacher convnet_m @ 28 px costs ~8x the student convnet_s @ 14 px
per image) and the prepared data + teacher of a finished `dvc repro` (data/prepared, artifacts/). Each run
trains the same student (same seed) in a scratch folder; "build" is the one-off teacher_views stage, which
every method of the benchmark then shares. Example:

    python benchmarks/time_to_student.py --method d3still --views 0 1 4 16 --epochs 12
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
import time
from pathlib import Path

from distillery.config import load_params
from distillery.engine import steps
from distillery.engine.experiment import Paths


def run(params: dict, ds: str, method: str, views: int, work: Path) -> dict:
    p = copy.deepcopy(params)
    p["teacher_cache"]["views"] = views
    paths = Paths(work)
    t0 = time.perf_counter()
    build = steps.teacher_views(p, ds, paths, progress=False) if views else {"build_seconds": 0.0, "bytes": 0}
    t1 = time.perf_counter()
    info = steps.distill(p, ds, method, f"tts-{views}", paths, progress=False)
    t2 = time.perf_counter()
    metrics = steps.evaluate(p, ds, method, f"tts-{views}", paths, extra=info)
    return {"views": views, "build_s": t1 - t0, "train_s": t2 - t1, "total_s": t2 - t0,
            "cache_mib": build["bytes"] / 2**20, "asym_map": metrics["asym_map"], "sym_map": metrics["sym_map"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--method", default="d3still")
    parser.add_argument("--views", type=int, nargs="+", default=[0, 1, 4, 16])
    parser.add_argument("--epochs", type=int, default=None, help="student epochs (default: params.yaml)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    params = load_params(args.params)
    if args.epochs:
        params["training"]["epochs"] = args.epochs
    if args.threads:
        params["training"]["threads"] = args.threads
    repo = Paths(Path("."))
    for needed in (repo.prepared(args.dataset), repo.teacher(args.dataset), repo.gallery(args.dataset)):
        if not needed.exists():
            raise SystemExit(f"error: {needed} is missing; run `dvc repro gallery@{args.dataset}` first")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "data" / "prepared").mkdir(parents=True)
        os.symlink(repo.prepared(args.dataset).resolve(), work / "data" / "prepared" / args.dataset)
        (work / "artifacts" / args.dataset).mkdir(parents=True)
        os.symlink(repo.teacher(args.dataset).resolve(), work / "artifacts" / args.dataset / "teacher.pt")
        os.symlink(repo.gallery(args.dataset).resolve(), work / "artifacts" / args.dataset / "gallery")
        rows = [run(params, args.dataset, args.method, v, work) for v in args.views]
    base = next((r for r in rows if r["views"] == 0), rows[0])
    print(f"{args.method} on {args.dataset}, {params['training']['epochs']} epochs")
    print(f"{'V':>4} {'build s':>8} {'train s':>8} {'total s':>8} {'train/off':>9} {'MiB':>6} {'asym mAP':>9} {'sym mAP':>8}")
    for r in rows:
        print(f"{r['views']:>4} {r['build_s']:>8.1f} {r['train_s']:>8.1f} {r['total_s']:>8.1f} "
              f"{r['train_s'] / base['train_s']:>9.2f} {r['cache_mib']:>6.1f} {r['asym_map']:>9.2f} {r['sym_map']:>8.2f}")


if __name__ == "__main__":
    main()
