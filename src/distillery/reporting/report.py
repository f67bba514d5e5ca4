"""Build ``reports/results.md``, ``reports/results.csv`` and ``reports/plots/*.png`` from ``metrics/``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

from distillery.reporting.plots import bar_chart, training_curves
from distillery.reporting.tables import attach_paper_numbers, collect_results, markdown_table
from distillery.utils.io import atomic_dir, atomic_path

INTRO = """# Distillery benchmark results

Asymmetric retrieval (D3still protocol): queries are embedded by the student at its low resolution, the
gallery by the teacher at full resolution; **sym** = student embeds both sides. mAP over the whole ranking
and R@1 (hit@1), in percent; query = gallery with the query itself excluded where the dataset has one test
set. `teacher` = the gallery network alone; `vanilla` = the student trained without distillation (its
gallery is its own, so asym = sym). `teacher:<name>` = an extra teacher of the multi-teacher methods
(`whiten_mtd*`: label-free similarity distillation from every teacher at once, symmetric retrieval only, so
no asym number; `whiten_mtd_nowhiten` = the same without the teachers' PCA-whitening).
Paper columns: the published number for the same setting, where one exists.
"""


def build_report(params: dict, metrics_dir="metrics", out_dir="reports", paper_file="configs/paper_numbers.yaml") -> str:
    """Write the table and plots; returns the markdown table."""
    bench = params["benchmark"]
    results = collect_results(metrics_dir, bench["datasets"], bench["methods"], bench.get("teachers") or [],
                              bench.get("multi_teacher_methods") or [])
    paper = yaml.safe_load(Path(paper_file).read_text()) if Path(paper_file).is_file() else {}
    settings = {ds: params["data"][ds].get("paper_setting") for ds in bench["datasets"]}
    results = attach_paper_numbers(results, paper or {}, settings)
    table = markdown_table(results)
    provenance = "\n".join(
        f"- `{ds}`: seed {params['seed']}, teacher `{params['teacher']['model']}` @ {params['teacher']['resolution']} px, "
        f"student `{params['student']['model']}` @ {params['student']['resolution']} px, teacher checkpoint sha256 "
        f"`{results[(results['dataset'] == ds) & results['teacher_sha256'].notna()]['teacher_sha256'].iloc[0] if results['teacher_sha256'].notna().any() else '?'}`"
        for ds in bench["datasets"])
    out_dir = Path(out_dir)
    with atomic_path(out_dir / "results.md", ".md") as tmp:
        tmp.write_text(f"{INTRO}\n{table}\n\n## Provenance\n{provenance}\n\nMethod hyper-parameters: `params.yaml` "
                       f"(`methods.<name>`); per-cell metrics: `metrics/bench/<dataset>-<method>.json`.\n")
    with atomic_path(out_dir / "results.csv", ".csv") as tmp:
        results.to_csv(tmp, index=False)
    with atomic_dir(out_dir / "plots") as tmp:
        for ds in bench["datasets"]:
            bar_chart(results, ds, tmp / f"map_{ds}.png")
            methods = bench["methods"] + (bench.get("multi_teacher_methods") or [])
            logs = {m: pd.read_csv(Path(metrics_dir) / "train_logs" / f"{ds}-{m}.csv") for m in methods
                    if (Path(metrics_dir) / "train_logs" / f"{ds}-{m}.csv").is_file()}
            training_curves(logs, tmp / f"training_loss_{ds}.png")
    return table
