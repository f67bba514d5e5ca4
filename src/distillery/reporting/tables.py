"""The benchmark table (methods x datasets), built from the metrics JSON files only."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

COLUMNS = [("asym_map", "asym mAP"), ("asym_recall_at_1", "asym R@1"), ("sym_map", "sym mAP"),
           ("sym_recall_at_1", "sym R@1")]
VIDEO_COLUMNS = [("map_top100", "mAP@100"), ("map_topinf", "mAP")]  # video datasets (SVD): whiten_mtd's protocol


def columns_for(results: pd.DataFrame, dataset: str) -> list[tuple[str, str]]:
    """The metric columns of ``dataset``: the video ones where its cells hold ``map_topinf``, else COLUMNS."""
    rows = results[results["dataset"] == dataset]
    video = "map_topinf" in rows and rows["map_topinf"].notna().any()
    return VIDEO_COLUMNS if video else COLUMNS


def collect_results(metrics_dir, datasets: list[str], methods: list[str], teachers: list[str] = (),
                    multi_teacher_methods: list[str] = ()) -> pd.DataFrame:
    """One row per (dataset, method) cell of the benchmark plus one ``teacher`` row per dataset (and one
    ``teacher:<name>`` row per extra teacher).

    Reads ``metrics/bench/<ds>-<method>.json`` and ``metrics/teacher-<ds>[-<name>].json``; a missing cell is a
    FileNotFoundError naming the stage that writes it.
    """
    metrics_dir = Path(metrics_dir)
    rows = []
    for ds in datasets:
        for name in ["teacher", *teachers]:
            tag, stage = (f"teacher-{ds}", f"teacher@{ds}") if name == "teacher" else \
                (f"teacher-{ds}-{name}", f"extra_teacher@{ds}-{name}")
            teacher_file = metrics_dir / f"{tag}.json"
            if not teacher_file.is_file():
                raise FileNotFoundError(f"{teacher_file} is missing; run `dvc repro {stage}`")
            t = json.loads(teacher_file.read_text())
            rows.append({"dataset": ds, "method": "teacher" if name == "teacher" else f"teacher:{name}",
                         "asym_map": t.get("map"), "asym_recall_at_1": t.get("recall_at_1"), "sym_map": t.get("map"),
                         "sym_recall_at_1": t.get("recall_at_1"), "train_seconds": t.get("train_seconds"),
                         **{k: t.get(k) for k, _ in VIDEO_COLUMNS}})
        for method in [*methods, *multi_teacher_methods]:
            cell = metrics_dir / "bench" / f"{ds}-{method}.json"
            if not cell.is_file():
                stage = "bench" if method in methods else "bench_mt"
                raise FileNotFoundError(f"{cell} is missing; run `dvc repro {stage}@{ds}-{method}`")
            m = json.loads(cell.read_text())
            rows.append({"dataset": ds, "method": method, **{k: m.get(k) for k, _ in COLUMNS + VIDEO_COLUMNS},
                         "train_seconds": m.get("train_seconds"), "teacher_sha256": m.get("teacher_sha256"),
                         "seed": m.get("seed")})
    return pd.DataFrame(rows)


def attach_paper_numbers(results: pd.DataFrame, paper: dict, settings: dict[str, str | None]) -> pd.DataFrame:
    """Add ``paper_map`` / ``paper_r1`` where the seeds publish a number for the same dataset, setting, method."""
    out = results.copy()
    out["paper_map"], out["paper_r1"] = None, None
    for i, row in out.iterrows():
        setting = settings.get(row["dataset"])
        number = ((paper.get(row["dataset"]) or {}).get(setting) or {}).get(row["method"]) if setting else None
        if number:
            out.at[i, "paper_map"], out.at[i, "paper_r1"] = number.get("map"), number.get("r1")
    return out


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    return f"{value:.2f}" if isinstance(value, (int, float)) else str(value)


def markdown_table(results: pd.DataFrame) -> str:
    """Rows = methods, column groups = datasets (asym/sym mAP and R@1, or video mAP@100 / mAP on a video dataset;
    paper mAP/R@1 where published)."""
    datasets = list(dict.fromkeys(results["dataset"]))
    methods = list(dict.fromkeys(results["method"]))
    has_paper = results[["paper_map"]].notna().any().iloc[0] if "paper_map" in results else False
    header = ["method"]
    columns = {ds: columns_for(results, ds) for ds in datasets}
    for ds in datasets:
        header += [f"{ds} {label}" for _, label in columns[ds]]
        if has_paper:
            header += [f"{ds} paper mAP", f"{ds} paper R@1"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method in methods:
        cells = [method if method not in ("teacher", "vanilla") else
                 {"teacher": "teacher (gallery net)", "vanilla": "vanilla (no distillation)"}[method]]
        for ds in datasets:
            row = results[(results["dataset"] == ds) & (results["method"] == method)]
            rec = row.iloc[0].to_dict() if len(row) else {}
            cells += [_fmt(rec.get(key)) for key, _ in columns[ds]]
            if has_paper:
                cells += [_fmt(rec.get("paper_map")), _fmt(rec.get("paper_r1"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ classification task
CLS_COLUMNS = [("top1", "top-1"), ("top5", "top-5")]


def collect_classification(metrics_dir, datasets: list[str], methods: list[str]) -> pd.DataFrame:
    """One row per (dataset, method) cell of the classification benchmark plus one ``teacher`` row per dataset
    (``metrics/teacher-<ds>.json``, ``metrics/bench/<ds>-<method>.json``); a missing file is a FileNotFoundError
    naming the stage that writes it."""
    metrics_dir = Path(metrics_dir)
    rows = []
    for ds in datasets:
        teacher_file = metrics_dir / f"teacher-{ds}.json"
        if not teacher_file.is_file():
            raise FileNotFoundError(f"{teacher_file} is missing; run `dvc repro teacher_cls@{ds}`")
        t = json.loads(teacher_file.read_text())
        rows.append({"dataset": ds, "method": "teacher", **{k: t.get(k) for k, _ in CLS_COLUMNS},
                     "train_seconds": t.get("train_seconds")})
        for method in methods:
            cell = metrics_dir / "bench" / f"{ds}-{method}.json"
            if not cell.is_file():
                raise FileNotFoundError(f"{cell} is missing; run `dvc repro bench_cls@{ds}-{method}`")
            m = json.loads(cell.read_text())
            rows.append({"dataset": ds, "method": method, **{k: m.get(k) for k, _ in CLS_COLUMNS},
                         "train_seconds": m.get("train_seconds"), "teacher_sha256": m.get("teacher_sha256"),
                         "seed": m.get("seed")})
    return pd.DataFrame(rows, columns=["dataset", "method", "top1", "top5", "train_seconds", "teacher_sha256", "seed"])


def attach_classification_paper(results: pd.DataFrame, paper: dict, settings: dict[str, str | None]) -> pd.DataFrame:
    """Add ``paper_top1``: ``paper_numbers.yaml`` classification -> <dataset> -> <setting> -> <method> -> top1."""
    out = results.copy()
    out["paper_top1"] = None
    published = paper.get("classification") or {}
    for i, row in out.iterrows():
        setting = settings.get(row["dataset"])
        number = ((published.get(row["dataset"]) or {}).get(setting) or {}).get(row["method"]) if setting else None
        if number:
            out.at[i, "paper_top1"] = number.get("top1")
    return out


def classification_table(results: pd.DataFrame, pairs: dict[str, str]) -> str:
    """MDistiller layout: rows = methods, one top-1 column per (dataset, teacher -> student pair), followed by
    the published top-1 where the dataset's ``paper_setting`` has one."""
    datasets = list(dict.fromkeys(results["dataset"]))
    methods = list(dict.fromkeys(results["method"]))
    has_paper = "paper_top1" in results and results["paper_top1"].notna().any()
    header = ["method"]
    for ds in datasets:
        header.append(f"{ds} {pairs.get(ds, '')} top-1".replace("  ", " "))
        if has_paper:
            header.append(f"{ds} paper top-1")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    names = {"teacher": "teacher", "vanilla": "vanilla (student, CE only)"}
    for method in methods:
        cells = [names.get(method, method)]
        for ds in datasets:
            row = results[(results["dataset"] == ds) & (results["method"] == method)]
            rec = row.iloc[0].to_dict() if len(row) else {}
            cells.append(_fmt(rec.get("top1")))
            if has_paper:
                cells.append(_fmt(rec.get("paper_top1")))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
