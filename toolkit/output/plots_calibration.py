"""Plots for calibration, thresholds and confusion matrices (PNG, dpi 110).

matplotlib is imported inside each function, with the Agg backend, so `import toolkit`
stays light and plotting works on headless CI machines.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from toolkit.output.style import pyplot

DPI = 110


def _save(fig: Any, path: str | Path) -> Path:
    """Write the figure as PNG and close it, so long runs do not leak figures."""
    plt = pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(path, dpi=DPI, format="png", bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def _bins_ece(bins: dict) -> float:
    """ECE from a reliability_bins dict (same number as calibration.ece)."""
    if "ece" in bins:
        return float(bins["ece"])
    count = np.asarray(bins["count"], dtype=float)
    gaps = [abs(a - c) * n for a, c, n in zip(bins["accuracy"], bins["confidence"], count) if n > 0]
    return float(sum(gaps) / count.sum())


def _draw_reliability(ax: Any, name: str, bins: dict) -> None:
    edges = np.asarray(bins["bin_edges"], dtype=float)
    left, width = edges[:-1], np.diff(edges)
    filled = np.array([n > 0 for n in bins["count"]])
    acc = np.array([a if a is not None else 0.0 for a in bins["accuracy"]])
    conf = np.array([c if c is not None else 0.0 for c in bins["confidence"]])
    ax.bar(left[filled], acc[filled], width=width[filled], align="edge",
           color="tab:blue", edgecolor="black", linewidth=0.5, label="accuracy")
    # Gap bars: from accuracy up (or down) to mean confidence, hatched red.
    ax.bar(left[filled], (conf - acc)[filled], bottom=acc[filled], width=width[filled], align="edge",
           color="tab:red", alpha=0.35, edgecolor="tab:red", hatch="//", linewidth=0.5, label="gap")
    ax.plot([0, 1], [0, 1], linestyle="--", color="gray", linewidth=1, label="perfect")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_title(f"{name}\nECE = {_bins_ece(bins):.4f} (n = {int(sum(bins['count']))})", fontsize=10)
    ax.set_aspect("equal")


def plot_reliability(pairs: list[tuple[str, dict]], path: str | Path) -> Path:
    """Reliability diagrams side by side, e.g. fp32 / selected, before / after temperature."""
    if not pairs:
        raise ValueError("plot_reliability needs at least one (name, reliability_bins) pair")
    plt = pyplot()
    fig, axes = plt.subplots(1, len(pairs), figsize=(3.6 * len(pairs), 3.9), squeeze=False)
    for ax, (name, bins) in zip(axes[0], pairs):
        _draw_reliability(ax, name, bins)
    axes[0][0].set_ylabel("accuracy")
    axes[0][0].legend(loc="upper left", fontsize=8)
    fig.suptitle("Reliability (top-label, equal-width bins)", fontsize=11)
    return _save(fig, path)


def plot_threshold_curves(curves: dict, path: str | Path, title: str) -> Path:
    """P/R/F1 vs threshold, the PR curve and the ROC curve (from threshold_curves) in one figure."""
    plt = pyplot()
    fig, (ax_t, ax_pr, ax_roc) = plt.subplots(1, 3, figsize=(13, 4))
    for key, color in (("precision", "tab:blue"), ("recall", "tab:orange"), ("f1", "tab:green")):
        ax_t.plot(curves["thresholds"], curves[key], label=key, color=color)
    ax_t.set_xlabel("threshold (predict positive if score >= t)")
    ax_t.set_ylim(0, 1.02)
    ax_t.set_title("precision / recall / F1 vs threshold", fontsize=10)
    ax_t.legend(fontsize=8)

    pr = curves["pr_curve"]
    ax_pr.plot(pr["recall"], pr["precision"], color="tab:purple", drawstyle="steps-post")
    ax_pr.set_xlabel("recall")
    ax_pr.set_ylabel("precision")
    ax_pr.set_xlim(0, 1)
    ax_pr.set_ylim(0, 1.02)
    ax_pr.set_title(f"PR curve (AP = {pr['average_precision']:.4f})", fontsize=10)

    roc = curves["roc"]
    ax_roc.plot(roc["fpr"], roc["tpr"], color="tab:red")
    ax_roc.plot([0, 1], [0, 1], linestyle="--", color="gray", linewidth=1)
    ax_roc.set_xlabel("false positive rate")
    ax_roc.set_ylabel("true positive rate")
    ax_roc.set_title(f"ROC (AUC = {roc['auc']:.4f})", fontsize=10)
    for ax in (ax_t, ax_pr, ax_roc):
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def plot_confusion(matrix: list[list[int]], labels: list[str], path: str | Path, title: str) -> Path:
    """Confusion matrix (rows = true, columns = predicted), counts annotated when it is small."""
    cm = np.asarray(matrix, dtype=float)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] != len(labels):
        raise ValueError(f"matrix must be square with one row per label; got shape {cm.shape} for {len(labels)} labels")
    plt = pyplot()
    k = cm.shape[0]
    size = max(4.0, 0.45 * k + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(cm, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ticks = np.arange(k)
    ax.set_xticks(ticks, labels=[str(x) for x in labels], rotation=45, ha="right")
    ax.set_yticks(ticks, labels=[str(x) for x in labels])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 20:
        threshold = cm.max() / 2 if cm.max() > 0 else 1
        for i in range(k):
            for j in range(k):
                ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=8,
                        color="white" if cm[i, j] > threshold else "black")
    ax.set_title(title, fontsize=11)
    return _save(fig, path)
