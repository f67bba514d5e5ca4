"""Throughput of a distillation training step, and how much of it is pipeline overhead.

full step: the real trainer (``distillery.engine.trainer.train``) on a synthetic prepared dataset (an N x S x S x C
    uint8 array, as ``prepare`` writes): P x K identity batch and shuffled KD batch drawn by the samplers, views
    made by ``data/transforms.py`` on the training device, student forward/backward on both batches, frozen
    teacher forward, CE + triplet + the registered method's loss, optimizer step.
compute: the same networks, forwards, backward and optimizer step on tensors already on the device (no data,
    no loss: the backward starts from fixed output gradients).
overhead = full step time / compute time - 1 (the cost of data, views and losses).

Both are timed in one process, ``--repeats`` times: on CPU step by step alternately (a compute step runs
from the trainer's step callback), on CUDA in blocks of ``--steps`` steps. A shared machine is noisy: compare
the ratios, and the medians. Images/s counts the images the student sees per step (P x K + KD batch). On CPU the process
time (CPU seconds of this process) is timed too: with one thread it is the work done, and is far less
disturbed than wall time by other processes on the machine.

  python benchmarks/train_throughput.py --preset cpu-small --threads 1
  python benchmarks/train_throughput.py --preset cub --device cuda --amp bf16 --channels-last
  python benchmarks/train_throughput.py --preset cub --device cpu --ids-per-batch 4 --samples-per-id 2 --kd-batch 8
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from distillery.data.samplers import identity_batches, shuffled_batches  # noqa: E402
from distillery.data.transforms import ViewSpec  # noqa: E402
from distillery.engine import accel  # noqa: E402
from distillery.engine.trainer import Recipe, TrainData, train  # noqa: E402
from distillery.losses import build_method  # noqa: E402
from distillery.models import build_model  # noqa: E402

PRESETS = {
    # the embedded default of params.yaml (Fashion-MNIST, 1 channel)
    "cpu-small": dict(teacher="convnet_m", student="convnet_s", teacher_res=28, student_res=14, store_size=28,
                      channels=1, padding_t=2, padding_s=1, embedding_dim=64, classes=5, ids_per_batch=5,
                      samples_per_id=16, kd_batch=80, device="cpu", steps=20, warmup=3),
    # D3still CUB-200 recipe (configs/cub200.yaml): R101@256 -> R18@128, P x K 16 x 6, KD batch 256
    "cub": dict(teacher="retrieval_resnet101", student="retrieval_resnet18", teacher_res=256, student_res=128,
                store_size=256, channels=3, padding_t=8, padding_s=4, embedding_dim=512, classes=200,
                ids_per_batch=16, samples_per_id=6, kd_batch=256, device="cuda", steps=20, warmup=5),
}


class _Done(Exception):
    """Raised by the step callback once the timed steps are over."""


def _now(device: torch.device) -> tuple[float, float]:
    """(wall, process CPU) seconds, after the device has finished its queued work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter(), time.process_time()


def _per_step(start, end, steps) -> tuple[float, float]:
    return (end[0] - start[0]) / steps, (end[1] - start[1]) / steps


def _dataset(cfg: dict, total_steps: int) -> TrainData:
    """Random uint8 images, ``classes`` labels, enough rows for ``total_steps`` steps of one epoch."""
    p, k, kd = cfg["ids_per_batch"], cfg["samples_per_id"], cfg["kd_batch"]
    need = max(total_steps * kd, (total_steps + 2) * p * k)
    per_class = -(-need // cfg["classes"])
    per_class = -(-per_class // k) * k + k
    n = per_class * cfg["classes"]
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, cfg["store_size"], cfg["store_size"], cfg["channels"]), dtype=np.uint8)
    data = TrainData.from_split(images, np.arange(n), np.repeat(np.arange(cfg["classes"]), per_class))
    n_id = len(identity_batches(data.labels, p, k, seed=0, epoch=0))
    n_kd = len(shuffled_batches(n, kd, seed=0, epoch=0))
    if min(n_id, n_kd) < total_steps:
        raise SystemExit(f"synthetic epoch too short ({n_id} / {n_kd} batches < {total_steps} steps)")
    return data


def _networks(cfg: dict):
    torch.manual_seed(0)
    common = dict(embedding_dim=cfg["embedding_dim"], num_classes=cfg["classes"])
    extra = {"in_channels": cfg["channels"]} if cfg["student"].startswith("convnet") else {}
    student = build_model(cfg["student"], **common, **extra)
    teacher = build_model(cfg["teacher"], **common, **({"in_channels": cfg["channels"]}
                                                         if cfg["teacher"].startswith("convnet") else {}))
    return student, teacher.eval()


def _recipe(cfg: dict, args) -> Recipe:
    return Recipe(epochs=1, lr=0.01, ids_per_batch=cfg["ids_per_batch"], samples_per_id=cfg["samples_per_id"],
                  kd_batch_size=cfg["kd_batch"], amp=args.amp, channels_last=args.channels_last,
                  compile=args.compile)


def compute_step(cfg, args, student, teacher, device):
    """A function running one step of pure model compute: the same forwards (student on the P x K and KD
    batches, teacher under inference_mode), a backward from fixed output gradients and an SGD step, on
    tensors already on the device."""
    amp = accel.resolve_amp(args.amp, device)
    for net in (student, teacher):
        accel.prepare_module(net, device, args.channels_last)
    net_s, net_t = accel.maybe_compile(student, args.compile), accel.maybe_compile(teacher, args.compile)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    g = torch.Generator().manual_seed(0)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format

    def batch(n, res):
        return torch.randn(n, cfg["channels"], res, res, generator=g).to(device).contiguous(memory_format=fmt)

    pk, kd = cfg["ids_per_batch"] * cfg["samples_per_id"], cfg["kd_batch"]
    x_id, x_s, x_t = batch(pk, cfg["student_res"]), batch(kd, cfg["student_res"]), batch(kd, cfg["teacher_res"])
    grads = []

    def step() -> None:
        student.train()
        with accel.autocast(amp, device):
            out_id = net_s(x_id)
        with torch.inference_mode(), accel.autocast(amp, device):
            net_t(x_t)
        with accel.autocast(amp, device):
            out_kd = net_s(x_s)
        outputs = [out_id.logits, out_id.pooled, out_kd.embedding]
        if not grads:
            grads.extend(torch.full_like(o, 1.0 / o.numel()) for o in outputs)
        optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(outputs, grads)
        optimizer.step()

    return step


def _train(cfg, args, data, student, teacher, device, on_step) -> None:
    """The real trainer on the synthetic data until ``on_step`` raises _Done."""
    mean, std = (0.5,) * cfg["channels"], (0.25,) * cfg["channels"]
    view_s = ViewSpec(cfg["student_res"], mean, std, padding=cfg["padding_s"])
    view_t = ViewSpec(cfg["teacher_res"], mean, std, padding=cfg["padding_t"])
    with tempfile.TemporaryDirectory() as folder:
        try:
            train(student, data, _recipe(cfg, args), view_s, seed=0, checkpoint_path=Path(folder) / "run.pt",
                  distiller=build_method(args.method), teacher=teacher, view_t=view_t, device=device,
                  progress=False, step_callback=on_step)
        except _Done:
            pass


def measure_interleaved(cfg, args, data, student, teacher, device):
    """(wall, CPU) seconds per full step and per compute step, alternating one trainer step and one compute
    step (run from the trainer's step callback), so that a change of machine load hits both alike."""
    compute, full, last, run = [], [], [], []

    def on_step(done: int) -> None:
        end_full = _now(device)
        if last and done > cfg["warmup"]:
            full.append(_per_step(last[-1], end_full, 1))
        if not run:
            run.append(compute_step(cfg, args, student, teacher, device))
        run[0]()
        last.append(_now(device))
        if done > cfg["warmup"]:
            compute.append(_per_step(end_full, last[-1], 1))
        if len(full) == cfg["steps"]:
            raise _Done

    _train(cfg, args, data, student, teacher, device, on_step)
    return [tuple(map(statistics.fmean, zip(*times))) for times in (full, compute[:len(full)])]


def measure_blocks(cfg, args, data, student, teacher, device):
    """(wall, CPU) seconds per step of ``steps`` trainer steps in a row, then of ``steps`` compute steps (the
    way to time a GPU, whose queue must not be drained between steps)."""
    marks = {}

    def on_step(done: int) -> None:
        if done in (cfg["warmup"], cfg["warmup"] + cfg["steps"]):
            marks[done] = _now(device)
        if done == cfg["warmup"] + cfg["steps"]:
            raise _Done

    _train(cfg, args, data, student, teacher, device, on_step)
    full = _per_step(marks[cfg["warmup"]], marks[cfg["warmup"] + cfg["steps"]], cfg["steps"])
    step = compute_step(cfg, args, student, teacher, device)
    for _ in range(cfg["warmup"]):
        step()
    start = _now(device)
    for _ in range(cfg["steps"]):
        step()
    return full, _per_step(start, _now(device), cfg["steps"])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu-small")
    for key in ("teacher", "student"):
        parser.add_argument(f"--{key}", help=f"{key} model name (default: the preset's)")
    for key in ("teacher-res", "student-res", "store-size", "ids-per-batch", "samples-per-id", "kd-batch",
                "steps", "warmup", "classes", "embedding-dim"):
        parser.add_argument(f"--{key}", type=int, help="default: the preset's")
    parser.add_argument("--device", help="cpu | cuda (default: the preset's)")
    parser.add_argument("--method", default="d3still", help="registered distillation method (default d3still)")
    parser.add_argument("--amp", choices=("none", "bf16", "fp16"), default="none", help="autocast (CUDA only)")
    parser.add_argument("--channels-last", action="store_true", help="NHWC networks and inputs")
    parser.add_argument("--compile", action="store_true", help="torch.compile the forwards")
    parser.add_argument("--repeats", type=int, default=3, help="measurements of full and compute (default 3)")
    parser.add_argument("--mode", choices=("interleaved", "blocks"),
                        help="alternate the two step by step (default on CPU) or time each in a block of --steps "
                             "(default on CUDA)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)

    cfg = dict(PRESETS[args.preset])
    cfg.update({k: v for k, v in vars(args).items() if k in cfg and v is not None})
    device = torch.device(cfg["device"])
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    data = _dataset(cfg, cfg["warmup"] + cfg["steps"])
    student, teacher = _networks(cfg)
    images = cfg["ids_per_batch"] * cfg["samples_per_id"] + cfg["kd_batch"]
    mode = args.mode or ("blocks" if device.type == "cuda" else "interleaved")
    measure = measure_blocks if mode == "blocks" else measure_interleaved
    rows = []
    for _ in range(args.repeats):
        (full, full_cpu), (compute, compute_cpu) = measure(cfg, args, data, student, teacher, device)
        row = {"full_ms": 1e3 * full, "full_img_s": images / full, "compute_ms": 1e3 * compute,
               "compute_img_s": images / compute, "overhead_pct": 100 * (full / compute - 1)}
        if device.type == "cpu":
            row.update(full_cpu_ms=1e3 * full_cpu, compute_cpu_ms=1e3 * compute_cpu,
                       cpu_overhead_pct=100 * (full_cpu / compute_cpu - 1))
        rows.append(row)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} thread(s)"
    print(f"preset {args.preset}: teacher {cfg['teacher']}@{cfg['teacher_res']}, student {cfg['student']}@"
          f"{cfg['student_res']}, P x K {cfg['ids_per_batch']}x{cfg['samples_per_id']}, KD batch {cfg['kd_batch']}, "
          f"method {args.method}, {name}, amp {args.amp}, channels_last {args.channels_last}, "
          f"compile {args.compile}, {cfg['steps']} timed steps after {cfg['warmup']}, {mode}")
    cpu = device.type == "cpu"
    header = f"{'repeat':>7} | {'full step ms':>12} | {'full img/s':>10} | {'compute ms':>10} | " \
             f"{'compute img/s':>13} | {'overhead':>8}" + \
             (f" | {'full CPU ms':>11} | {'compute CPU ms':>14} | {'CPU overhead':>12}" if cpu else "")
    print(header)
    print("-" * len(header))
    median = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    for label, r in [*((str(i + 1), r) for i, r in enumerate(rows)), ("median", median)]:
        print(f"{label:>7} | {r['full_ms']:12.1f} | {r['full_img_s']:10.1f} | {r['compute_ms']:10.1f} | "
              f"{r['compute_img_s']:13.1f} | {r['overhead_pct']:7.1f}%" +
              (f" | {r['full_cpu_ms']:11.1f} | {r['compute_cpu_ms']:14.1f} | {r['cpu_overhead_pct']:11.1f}%"
               if cpu else ""))
    print("(median row: the median of each column; overheads are medians of the per-repeat ratios)")
    result = {"preset": args.preset, "config": cfg, "device": name, "mode": mode, "method": args.method,
              "amp": args.amp,
              "channels_last": args.channels_last, "compile": args.compile, "repeats": rows, "median": median}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
