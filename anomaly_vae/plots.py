"""Matplotlib figures for review: score histogram, ROC/PR curves, latent scatter.

Each function returns a Figure (Agg backend, no display needed); callers save it.
"""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: figures are written to files, never shown

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from sklearn.decomposition import PCA

FIGSIZE = (6.4, 4.8)


def score_histogram(
    normal_scores: np.ndarray,
    threshold: float,
    score_name: str,
    anomalous_scores: np.ndarray | None = None,
    normal_label: str = "normal (calibration rows)",
) -> Figure:
    """Score distributions with the threshold drawn; labelled anomalies overlaid.

    Each group is normalised to a density, so a small normal group is not hidden by a
    large anomalous one. The x-axis ends a little past the larger of the threshold,
    the highest normal score and the 98th percentile of all scores; rows beyond it
    are counted in the last bin.
    """
    groups = [(normal_scores, normal_label, "tab:blue")]
    if anomalous_scores is not None and len(anomalous_scores):
        groups.insert(0, (anomalous_scores, "anomalous (labelled)", "tab:red"))
    every = np.concatenate([g[0] for g in groups])
    low = min(float(every.min()), threshold)
    high = max(threshold, float(normal_scores.max()), float(np.quantile(every, 0.98)))
    high += 0.05 * (high - low)
    bins = np.linspace(low, high, 50)
    fig, ax = plt.subplots(figsize=FIGSIZE, layout="constrained")
    for scores, label, colour in groups:
        ax.hist(
            np.clip(scores, low, high),
            bins=bins,  # type: ignore[arg-type]  # matplotlib's stubs omit arrays, which hist takes
            density=True,
            alpha=0.55,
            color=colour,
            label=f"{label}, n = {len(scores):,}",
        )
    ax.axvline(threshold, color="black", linestyle="--", label=f"threshold = {threshold:.4g}")
    ax.set_title(f"Anomaly scores: {score_name} (higher = more anomalous)")
    ax.set_xlabel(f"{score_name} (larger values counted in the last bin)")
    ax.set_ylabel("density (area 1 per group)")
    ax.legend()
    return fig


def roc_curve(evaluation: dict[str, Any]) -> Figure:
    """ROC curve from :func:`anomaly_vae.calibration.evaluate` output."""
    roc = evaluation["curves"]["roc"]
    fig, ax = plt.subplots(figsize=FIGSIZE, layout="constrained")
    ax.plot(roc["fpr"], roc["tpr"], label=f"detector (AUROC = {100 * evaluation['auroc']:.2f}%)")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="chance")
    ax.scatter(
        [evaluation["false_positive_rate"]],
        [evaluation["recall"]],
        color="black",
        zorder=3,
        label="chosen threshold",
    )
    ax.set(
        title="ROC curve (labelled evaluation rows)",
        xlabel="false-positive rate",
        ylabel="true-positive rate (recall)",
        xlim=(0, 1),
        ylim=(0, 1.02),
    )
    ax.legend(loc="lower right")
    return fig


def pr_curve(evaluation: dict[str, Any]) -> Figure:
    """Precision-recall curve from :func:`anomaly_vae.calibration.evaluate` output."""
    pr = evaluation["curves"]["pr"]
    base_rate = evaluation["n_anomalous"] / (evaluation["n_anomalous"] + evaluation["n_normal"])
    fig, ax = plt.subplots(figsize=FIGSIZE, layout="constrained")
    ax.plot(
        pr["recall"], pr["precision"], label=f"detector (AUCPR = {100 * evaluation['aucpr']:.2f}%)"
    )
    ax.axhline(
        base_rate, color="grey", linestyle=":", label=f"chance ({100 * base_rate:.1f}% anomalous)"
    )
    ax.scatter(
        [evaluation["recall"]],
        [evaluation["precision"]],
        color="black",
        zorder=3,
        label="chosen threshold",
    )
    ax.set(
        title="Precision-recall curve (labelled evaluation rows)",
        xlabel="recall",
        ylabel="precision",
        xlim=(0, 1),
        ylim=(0, 1.02),
    )
    ax.legend(loc="lower left")
    return fig


def latent_scatter(latents: np.ndarray, groups: np.ndarray, title: str = "Latent means") -> Figure:
    """2-D scatter of latent means ``(n, k)``; PCA to 2-D when ``k > 2``.

    ``groups (n,)`` holds a legend label per point (e.g. "normal", "anomalous").
    """
    if latents.shape[1] > 2:
        projected = PCA(n_components=2).fit_transform(latents)
        axes = ("first principal component", "second principal component")
        title = f"{title} (PCA of {latents.shape[1]} dimensions)"
    elif latents.shape[1] == 2:
        projected, axes = latents, ("z[0]", "z[1]")
    else:
        projected = np.column_stack([latents[:, 0], np.zeros(len(latents))])
        axes = ("z[0]", "(1-D latent)")
    fig, ax = plt.subplots(figsize=FIGSIZE, layout="constrained")
    colours = {"normal": "tab:blue", "anomalous": "tab:red"}
    for group in dict.fromkeys(groups.tolist()):
        mask = groups == group
        ax.scatter(
            projected[mask, 0],
            projected[mask, 1],
            s=8,
            alpha=0.6,
            color=colours.get(group),
            label=f"{group} ({int(mask.sum())})",
        )
    ax.set(title=title, xlabel=axes[0], ylabel=axes[1])
    ax.legend()
    return fig


def close(fig: Figure) -> None:
    plt.close(fig)
