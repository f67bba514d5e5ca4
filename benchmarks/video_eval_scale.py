"""Time ``video_retrieval_metrics`` on a synthetic SVD-like gallery: N videos x F frames x D-d frame features.

The gallery is ``--labeled`` ground-truth candidates followed by distractors (the unlabeled videos of the
full evaluation). Each query has ``--positives`` relevant candidates (its frames plus noise, frames shuffled)
and ``--negatives`` candidates labelled 0. Features are generated chunk by chunk into one float32 array
(N x F x D x 4 bytes: 2.46 GB for the defaults), which the evaluator reads block by block without copying.
Reports wall seconds of the evaluation, peak RSS (``resource.getrusage``: process peak, data included) and
the metrics. Example (a quick check first):

    PYTHONPATH=src python benchmarks/video_eval_scale.py --videos 500
    PYTHONPATH=src python benchmarks/video_eval_scale.py            # 20,000 x 60 x 512
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import numpy as np
import torch

from distillery.evaluation.video import BLOCK_ELEMENTS, SIMILARITIES, video_retrieval_metrics


def peak_rss_mib() -> float:
    """Peak resident set size of this process in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def synthetic_svd(args: argparse.Namespace) -> dict:
    """Flat per-frame features, lengths, ids and ground truth (see the module docstring)."""
    rng = np.random.default_rng(args.seed)
    f, d = args.frames, args.dim
    queries = rng.standard_normal((args.queries * f, d), dtype=np.float32)
    gallery = np.empty((args.videos * f, d), dtype=np.float32)
    for start in range(0, args.videos, 1024):  # chunked: no full-size temporaries
        rng.standard_normal(dtype=np.float32, out=gallery[start * f:min(args.videos, start + 1024) * f])
    per_query = args.positives + args.negatives
    if args.queries * per_query > args.labeled or args.labeled > args.videos:
        raise SystemExit("need queries * (positives + negatives) <= labeled <= videos")
    gt = {}
    for i in range(args.queries):
        first = i * per_query
        for p in range(args.positives):  # near-duplicates: the query's frames, shuffled, plus noise
            v = first + p
            frames = queries[i * f:(i + 1) * f][rng.permutation(f)]
            gallery[v * f:(v + 1) * f] = frames + args.noise * rng.standard_normal((f, d), dtype=np.float32)
        gt[f"q{i}"] = {f"v{first + k}": int(k < args.positives) for k in range(per_query)}
    return {
        "query_feats": queries, "query_lengths": np.full(args.queries, f), "query_ids": list(gt),
        "gallery_feats": gallery, "gallery_lengths": np.full(args.videos, f),
        "gallery_ids": [f"v{k}" for k in range(args.videos)], "groundtruth": gt,
        "distractors": np.arange(args.videos) >= args.labeled,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=20000, help="gallery videos (labeled + distractors)")
    parser.add_argument("--frames", type=int, default=60, help="frames per video")
    parser.add_argument("--dim", type=int, default=512, help="frame feature size")
    parser.add_argument("--queries", type=int, default=100, help="query videos")
    parser.add_argument("--labeled", type=int, default=1000, help="ground-truth candidates at the gallery's start")
    parser.add_argument("--positives", type=int, default=3, help="relevant candidates per query")
    parser.add_argument("--negatives", type=int, default=5, help="candidates labelled 0 per query")
    parser.add_argument("--noise", type=float, default=14.0, help="noise std added to a positive's frames")
    parser.add_argument("--similarity", choices=SIMILARITIES, default="chamfer")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--block-elements", type=int, default=BLOCK_ELEMENTS,
                        help="frame-pair similarities held at once")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    data = synthetic_svd(args)
    report = {k: getattr(args, k) for k in ("videos", "frames", "dim", "queries", "labeled", "similarity", "threads")}
    report["data_gib"] = round((data["gallery_feats"].nbytes + data["query_feats"].nbytes) / 2**30, 3)
    report["peak_rss_mib_data_ready"] = round(peak_rss_mib())
    print(f"data ready, peak RSS {report['peak_rss_mib_data_ready']} MiB", file=sys.stderr)
    start = time.perf_counter()
    metrics = video_retrieval_metrics(**data, similarity=args.similarity, block_elements=args.block_elements)
    report["seconds"] = round(time.perf_counter() - start, 2)
    report["peak_rss_mib"] = round(peak_rss_mib())
    report["metrics"] = metrics
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
