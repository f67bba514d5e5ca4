"""Build ``reports/results.md``, ``reports/results.csv`` and ``reports/plots/*.png`` from ``metrics/``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

from distillery.reporting.plots import bar_chart, top1_chart, training_curves
from distillery.reporting.tables import (attach_classification_paper, attach_paper_numbers, classification_table,
                                         collect_classification, collect_results, markdown_table)
from distillery.utils.io import atomic_dir, atomic_path

INTRO = """# Distillery benchmark results

Asymmetric retrieval (D3still protocol): queries are embedded by the student at its low resolution, the
gallery by the teacher at full resolution; **sym** = student embeds both sides. mAP over the whole ranking
and R@1 (hit@1), in percent; query = gallery with the query itself excluded where the dataset has one test
set. `teacher` = the gallery network alone; `vanilla` = the student trained without distillation (its
gallery is its own, so asym = sym); `msloss` = the student alone with the multi-similarity loss and `s2sd` = the
student distilled from its own auxiliary branches (no teacher either: asym = sym). `teacher:<name>` = an extra
teacher of the multi-teacher methods (`whiten_mtd*`: label-free similarity distillation from every teacher at
once, symmetric retrieval only, so no asym number; `whiten_mtd_nowhiten` = the same without the teachers'
PCA-whitening). Paper columns: the published number for the same setting, where one exists.
"""

CLS_INTRO = """## Classification

Test top-1 accuracy (%) of the student's logits (mdistiller layout: rows = methods, columns = teacher -> student
pairs); teacher and student see the same training batch and view; `vanilla` = the student trained with CE only.
Paper column: the published top-1 of the dataset's `paper_setting` pair, where one exists (mdistiller / SDD
READMEs, `configs/paper_numbers.yaml`).
"""


def _provenance_line(params: dict, results, ds: str) -> str:
    hashes = results.loc[(results["dataset"] == ds) & results["teacher_sha256"].notna(), "teacher_sha256"]
    teacher, student = params["teacher"], params["student"]
    return (f"- `{ds}`: seed {params['seed']}, teacher `{teacher['model']}` @ {teacher['resolution']} px, "
            f"student `{student['model']}` @ {student['resolution']} px, teacher checkpoint sha256 "
            f"`{hashes.iloc[0] if len(hashes) else 'unknown'}`")


def build_report(params: dict, metrics_dir="metrics", out_dir="reports", paper_file="configs/paper_numbers.yaml") -> str:
    """Write the tables and plots; returns the markdown tables (retrieval, then classification)."""
    bench = params["benchmark"]
    paper = (yaml.safe_load(Path(paper_file).read_text()) if Path(paper_file).is_file() else {}) or {}
    settings = {ds: params["data"][ds].get("paper_setting") for ds in params["data"]}
    cls_section, cls_results = _classification_section(params, metrics_dir, paper, settings)
    if not bench["datasets"]:  # a classification-only configuration (e.g. the CIFAR-100 preset)
        return _write(out_dir, metrics_dir, f"# Distillery benchmark results\n\n{cls_section}", None, cls_results,
                      params, cls_section)
    results = collect_results(metrics_dir, bench["datasets"], bench["methods"], bench.get("teachers") or [],
                              bench.get("multi_teacher_methods") or [])
    results = attach_paper_numbers(results, paper, settings)
    table = markdown_table(results)
    provenance = "\n".join(_provenance_line(params, results, ds) for ds in bench["datasets"])
    text = (f"{INTRO}\n{table}\n\n## Provenance\n{provenance}\n\nMethod hyper-parameters: `params.yaml` "
            f"(`methods.<name>`); per-cell metrics: `metrics/bench/<dataset>-<method>.json`.\n")
    if cls_section:
        text += f"\n{cls_section}"
    return _write(out_dir, metrics_dir, text, results, cls_results, params, table + (f"\n\n{cls_section}" if cls_section else ""))


def _classification_section(params: dict, metrics_dir, paper: dict, settings: dict) -> tuple[str, pd.DataFrame | None]:
    bench = params["benchmark_cls"]
    if not bench["datasets"]:
        return "", None
    results = collect_classification(metrics_dir, bench["datasets"], bench["methods"])
    results = attach_classification_paper(results, paper, settings)
    teacher, student = params["teacher_cls"], params["student_cls"]
    pair = f"{teacher['model']}→{student['model']}"
    table = classification_table(results, {ds: pair for ds in bench["datasets"]})
    provenance = "\n".join(
        f"- `{ds}`: seed {params['seed']}, teacher `{teacher['model']}` @ {teacher['resolution']} px, student "
        f"`{student['model']}` @ {student['resolution']} px, {params['training_cls']['epochs']} epochs, paper "
        f"setting {'`' + settings[ds] + '`' if settings.get(ds) else 'none (no published number)'}"
        for ds in bench["datasets"])
    return f"{CLS_INTRO}\n{table}\n\n{provenance}\n", results


def _write(out_dir, metrics_dir, text: str, results, cls_results, params: dict, returned: str) -> str:
    """results.md (``text``), results.csv (both tasks' rows, column ``task``) and the plots; returns ``returned``."""
    out_dir = Path(out_dir)
    with atomic_path(out_dir / "results.md", ".md") as tmp:
        tmp.write_text(text)
    frames = [df.assign(task=task) for df, task in ((results, "retrieval"), (cls_results, "classification"))
              if df is not None]
    with atomic_path(out_dir / "results.csv", ".csv") as tmp:
        (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()).to_csv(tmp, index=False)
    with atomic_dir(out_dir / "plots") as tmp:
        for bench, chart, data in ((params["benchmark"], bar_chart, results),
                                   (params["benchmark_cls"], top1_chart, cls_results)):
            for ds in bench["datasets"]:
                chart(data, ds, tmp / (f"map_{ds}.png" if chart is bar_chart else f"top1_{ds}.png"))
                methods = bench["methods"] + (bench.get("multi_teacher_methods") or [])
                logs = {m: pd.read_csv(Path(metrics_dir) / "train_logs" / f"{ds}-{m}.csv") for m in methods
                        if (Path(metrics_dir) / "train_logs" / f"{ds}-{m}.csv").is_file()}
                training_curves(logs, tmp / f"training_loss_{ds}.png")
    return returned
