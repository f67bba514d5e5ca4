"""PNG plots for the report: a bar chart per dataset and the training curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def bar_chart(results: pd.DataFrame, dataset: str, path) -> None:
    """Asymmetric and symmetric mAP of every method (and the teacher) on ``dataset`` (a video dataset: video
    mAP within the top 100 and over the whole list)."""
    from distillery.reporting.tables import VIDEO_COLUMNS, columns_for

    rows = results[results["dataset"] == dataset]
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(rows) + 2), 4))
    x = range(len(rows))
    bars = [("map_top100", "video mAP, top 100"), ("map_topinf", "video mAP, whole list")] \
        if columns_for(results, dataset) == VIDEO_COLUMNS else \
        [("asym_map", "asymmetric mAP (student query, teacher gallery)"), ("sym_map", "symmetric mAP (student/student)")]
    for offset, (key, label) in zip((-0.2, 0.2), bars):
        ax.bar([i + offset for i in x], rows[key].astype(float), width=0.4, label=label)
    ax.set_xticks(list(x), rows["method"], rotation=30, ha="right")
    ax.set_ylabel("mAP (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"{dataset}: retrieval mAP by method")
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def training_curves(logs: dict[str, pd.DataFrame], path, column: str = "loss") -> None:
    """``column`` per epoch for every run in ``logs`` (name -> train log with an ``epoch`` column)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, log in logs.items():
        if column in log:
            ax.plot(log["epoch"], log[column], marker="o", markersize=3, label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"training {column}")
    ax.set_yscale("log")
    ax.set_title(f"training {column} per epoch")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(Path(path), dpi=110)
    plt.close(fig)


def top1_chart(results: pd.DataFrame, dataset: str, path) -> None:
    """Test top-1 accuracy of every method (and the teacher) on a classification ``dataset``."""
    rows = results[results["dataset"] == dataset]
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(rows) + 2), 4))
    ax.bar(range(len(rows)), rows["top1"].astype(float), width=0.6)
    ax.set_xticks(list(range(len(rows))), rows["method"], rotation=40, ha="right")
    low = float(rows["top1"].astype(float).min())
    ax.set_ylim(max(0.0, low - 10.0), 100)
    ax.set_ylabel("top-1 (%)")
    ax.set_title(f"{dataset}: test top-1 by method")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
