"""Time ``retrieval_metrics`` on N synthetic clustered embeddings (query = gallery, exclude self).

Reports wall seconds and peak RSS (``resource.getrusage``: the process peak so far, data included) of the
blockwise evaluator, then of the naive full-distance-matrix oracle on the first min(N, --baseline-max-n)
samples, with the blockwise time on the same subset and the largest difference between the two. Example:

    PYTHONPATH=src python benchmarks/eval_scale.py --n 60502 --dim 512 --baseline-max-n 8000
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import numpy as np
import torch

from distillery.evaluation.reference import naive_retrieval_metrics
from distillery.evaluation.retrieval import retrieval_metrics
from distillery.evaluation.search import BLOCK_ELEMENTS


def clustered_embeddings(n: int, dim: int, n_classes: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n x dim float32 points around ``n_classes`` random unit centres, with their class labels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, n)
    centres = rng.standard_normal((n_classes, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = rng.standard_normal((n, dim), dtype=np.float32)
    x *= noise / np.sqrt(dim)
    x += centres[labels]
    return x, labels


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def timed(fn, *args, **kwargs) -> tuple[dict, float]:
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=60502, help="number of samples (query = gallery)")
    parser.add_argument("--dim", type=int, default=512, help="embedding size")
    parser.add_argument("--classes", type=int, default=0, help="number of classes (0: n // 5, SOP-like)")
    parser.add_argument("--noise", type=float, default=2.2,
                        help="within-class noise norm (class centres have norm 1; 2.2 gives a SOP-like Recall@1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--block-elements", type=int, default=BLOCK_ELEMENTS,
                        help="query x gallery entries per block")
    parser.add_argument("--baseline-max-n", type=int, default=5000,
                        help="run the naive full-matrix baseline on min(n, this) samples (0: skip)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    n_classes = args.classes or max(1, args.n // 5)
    x, labels = clustered_embeddings(args.n, args.dim, n_classes, args.noise, args.seed)
    report = {"n": args.n, "dim": args.dim, "classes": n_classes, "threads": args.threads}
    print(f"data ready, peak RSS {peak_rss_mb():.0f} MiB", file=sys.stderr)

    metrics, seconds = timed(retrieval_metrics, x, labels, x, labels, exclude_self=True,
                             block_elements=args.block_elements)
    report.update(seconds=round(seconds, 2), peak_rss_mib=round(peak_rss_mb()), metrics=metrics)

    n_base = min(args.n, args.baseline_max_n)
    if n_base > 0:  # after the main run, so that its peak RSS above is not the baseline's
        xb, lb = x[:n_base], labels[:n_base]
        base, t_base = timed(naive_retrieval_metrics, xb, lb, xb, lb, exclude_self=True)
        fast, t_fast = timed(retrieval_metrics, xb, lb, xb, lb, exclude_self=True, block_elements=args.block_elements)
        report["baseline"] = {"n": n_base, "naive_seconds": round(t_base, 2), "blockwise_seconds": round(t_fast, 2),
                              "peak_rss_mib_after_naive": round(peak_rss_mb()),
                              "max_abs_diff": max(abs(base[k] - fast[k]) for k in base)}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
