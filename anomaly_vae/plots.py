"""Matplotlib figures for review: score histogram, ROC/PR curves, latent scatter.

Each function returns a Figure (Agg backend, no display needed); callers save it at
:data:`DPI`.
"""

from __future__ import annotations

import math
import textwrap
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: figures are written to files, never shown

import matplotlib.pyplot as plt
import numpy as np
from matplotlib import ticker
from matplotlib.colors import LogNorm, Normalize, SymLogNorm
from matplotlib.figure import Figure
from matplotlib.scale import SymmetricalLogTransform
from sklearn.decomposition import PCA

from anomaly_vae.intervals import shown_metric

FIGSIZE = (6.4, 4.8)
DPI = 110  # every figure is saved at this resolution: 6.4 x 4.8 in -> 704 x 528 pixels
HISTOGRAM_BINS = 50
# A histogram shows up to this quantile of all scores (and every normal score and the
# threshold); a few extreme anomalies beyond it would otherwise squeeze the rest.
HISTOGRAM_TOP_QUANTILE = 0.98
# Scores that are all positive and whose bulk (the normal rows and the threshold, or
# the lower 90% of the rows) spans less than this share of the range drawn are drawn on
# a log scale: a long tail of anomalies (negative ELBOs of 300 beside normal rows of 10)
# would otherwise squeeze the normal rows and the threshold into two or three bins.
LONG_TAIL_SHARE = 0.25
# ... but only when the bulk itself lies within this ratio (a decade): scores near 0,
# such as the ensemble's percentiles, would spread over decades that mean nothing.
LOG_BULK_RATIO = 10.0
# Scores with a long tail that no log axis can take (a normal row's negative ELBO can be
# negative: make demo's -1.3 and -0.5 beside anomalies up to 5,000; or normal rows spread
# over decades themselves) get a symmetric-log axis when a linear one would crowd the
# middle 80% of the normal rows into fewer than this many of its bins (make demo's: into
# one, which held 94% of them).
MIN_NORMAL_BINS = 5
NORMAL_MIDDLE = (0.1, 0.9)  # the quantiles of the normal scores that bound their middle
# The symmetric-log axis is linear within +-(this quantile of the normal scores' sizes, or
# the lowest normal score's size if larger) and logarithmic beyond: the lower normal rows
# and every negative one on a linear stretch, the rest, and the anomalies, on decades.
SYMLOG_LINEAR_QUANTILE = 0.25
HISTOGRAM_MARGIN = 0.05  # share of the range drawn past the highest score shown
# The y-axis reaches this many times the highest bar, so that the legend in the upper
# corner sits above the bars rather than on them.
HISTOGRAM_HEADROOM = 1.4
# ROC and PR axes run a little past 0 and 1: a perfect detector's curve lies on 0 or 1
# and would be hidden under the frame.
UNIT_LIMITS = (-0.02, 1.02)
LABEL_POINTS = 10  # matplotlib's axis label size ("medium")
TITLE_POINTS = 12  # matplotlib's axes title size ("large")
# About the share of the figure's width that axes beside a colour bar take: their title
# is centred over them, so a title as wide as the figure ran off both sides (VQ-VAE's
# scatter coloured by score lost its note on the quantised latent).
COLOUR_BAR_AXES_SHARE = 0.7
# Log axes label their minor ticks (20, 30, 50, ...) when they span up to 2 decades, all
# of them up to half a decade: a log axis of scores from 7 to 300 otherwise reads "10,
# 100" and nothing else.
LOG_MINOR_LABEL_DECADES = (2.0, 0.5)
BULK_QUANTILE = 0.9  # without labels, the scores below this quantile are the bulk
TITLE_CHARACTER_WIDTH = 0.6  # average character width in ems, to wrap titles to a figure
# Each group's colour and marker: blue and red stay apart for the common colour-vision
# deficiencies, and the markers tell the groups apart without colour.
GROUP_STYLES = {"normal": ("tab:blue", "o"), "anomalous": ("tab:red", "^")}
# A discrete latent's scatter shows codebook vectors: many rows share one point.
DISCRETE_LATENT_NOTE = "quantised: rows with the same codes coincide"
# What each score is measured in (docs/scores.md), for axis labels; {item} is what a
# score is of ("row" of a table, "image").
SCORE_UNITS = {
    "negative_elbo": "nats per {item}",
    "negative_iwae_bound": "nats per {item}",
    "reconstruction_error": "squared error in scaled feature units",
    "latent_knn_distance": "latent units",
    "elbo_latent_knn": "no unit; 0 = a typical normal {item}",
    "code_distance": "squared latent units",
    "ensemble_rank": "mean percentile among validation {item}s; above 1 beyond them all",
}


def score_label(score_name: str, item: str = "row") -> str:
    """``score_name`` with its unit, e.g. ``"negative_elbo (nats per row)"``; ``item``
    is what a score is of: ``"row"`` for a table, ``"image"`` for images."""
    unit = SCORE_UNITS.get(score_name)
    return f"{score_name} ({unit.format(item=item)})" if unit else score_name


def wrap_title(title: str, width_inches: float, fontsize: float) -> str:
    """``title`` broken into lines that fit ``width_inches`` at ``fontsize`` points,
    at spaces only: a path or class name is never split (``/tmp/pytest-of-`` over
    ``root/...`` read as two names), and one longer than a line has a line of its own."""
    characters = max(20, int(width_inches * 72 / (fontsize * TITLE_CHARACTER_WIDTH)))
    return "\n".join(
        textwrap.wrap(title, characters, break_on_hyphens=False, break_long_words=False)
    )


def long_tailed(bulk_high: float, low: float, high: float) -> bool:
    """True when scores from ``low`` to ``high`` are all positive, the bulk (from
    ``low`` to ``bulk_high``) lies within :data:`LOG_BULK_RATIO` and takes less than
    :data:`LONG_TAIL_SHARE` of the whole range on a linear axis: such scores are drawn
    on a log scale."""
    return (
        low > 0
        and bulk_high < LOG_BULK_RATIO * low
        and (bulk_high - low) < LONG_TAIL_SHARE * (high - low)
    )


def symlog_threshold(normal_scores: np.ndarray, low: float, high: float) -> float | None:
    """The linear half-width of a symmetric-log axis for scores from ``low`` to ``high``
    whose normal ones ``(n,)`` a linear axis would crowd together (see
    :data:`MIN_NORMAL_BINS`); None when a linear axis shows them well enough, or when
    the log part would span less than a decade."""
    middle_low, middle_high = np.quantile(normal_scores, NORMAL_MIDDLE)
    bin_width = (1 + HISTOGRAM_MARGIN) * (high - low) / (HISTOGRAM_BINS - 1)
    if middle_high - middle_low >= MIN_NORMAL_BINS * bin_width:
        return None
    sizes = np.abs(normal_scores)
    linear = max(float(np.quantile(sizes, SYMLOG_LINEAR_QUANTILE)), -float(normal_scores.min()))
    if not linear > 0 or max(high, -low) < LOG_BULK_RATIO * linear:
        return None
    return linear


def symlog_ticks(low: float, high: float, linear_within: float) -> list[float]:
    """Major ticks of a symmetric-log axis from ``low`` to ``high``: 0, and the powers of
    ten beyond the linear part on either side (symlog's own locator also ticks the
    powers inside it, whose labels then overlap near 0). When the linear part in view
    holds none of them (scores all above 0, as a table's negative ELBO often is), a round
    value or two within it: else the bulk of the normal rows, drawn there and in the
    decade beyond, had no number under it.

    >>> symlog_ticks(-3.0, 5000.0, 4.0)
    [0.0, 10.0, 100.0, 1000.0]
    >>> symlog_ticks(9.97, 12000.0, 15.3)
    [10.0, 15.0, 100.0, 1000.0, 10000.0]
    """
    top = math.ceil(math.log10(max(abs(low), abs(high), linear_within)))
    powers = [10.0**k for k in range(math.floor(math.log10(linear_within)), top + 1)]
    ticks = [0.0, *(p for p in powers if p >= linear_within), *(-p for p in powers)]
    ticks = [t for t in ticks if low <= t <= high and (t == 0 or abs(t) >= linear_within)]
    inside = (max(low, -linear_within), min(high, linear_within))
    if inside[0] < inside[1] and not any(inside[0] <= t <= inside[1] for t in ticks):
        locator = ticker.MaxNLocator(nbins=2, steps=[1, 2, 5, 10])
        ticks += [float(t) for t in locator.tick_values(*inside) if inside[0] <= t <= inside[1]]
    return sorted(ticks)


def tick_label(value: float) -> str:
    """A tick's number as a reader writes it: thousands separated, never in e-notation
    (``:,.4g`` wrote ten thousand as ``1e+04`` beside ``1,000``).

    >>> [tick_label(v) for v in (-10000.0, 0.0, 0.01, 15.0, 1000.0, 10000.0)]
    ['-10,000', '0', '0.01', '15', '1,000', '10,000']
    """
    if abs(value) >= 1:
        return f"{value:,.0f}" if value == round(value) else f"{value:,.4g}"
    return f"{value:.4g}"


def _numbered_log_axis(axis: Any) -> None:
    """Plain numbers on a log axis (``ax.xaxis``, a colour bar's ``yaxis``), minor
    ticks included where they fit."""
    axis.set_major_formatter(ticker.LogFormatter(labelOnlyBase=False))
    axis.set_minor_formatter(
        ticker.LogFormatter(labelOnlyBase=False, minor_thresholds=LOG_MINOR_LABEL_DECADES)
    )


def score_histogram(
    normal_scores: np.ndarray,
    threshold: float,
    score_name: str,
    anomalous_scores: np.ndarray | None = None,
    item: str = "row",
) -> Figure:
    """Score distributions ``(n,)`` with the threshold drawn; labelled anomalies overlaid;
    ``item``: what a score is of, ``"row"`` or ``"image"``, for the labels.

    Each group's bars add up to 1 (its share of rows per bin), so a small normal group
    is not hidden by a large anomalous one. The x-axis ends a little past the larger of
    the threshold, the highest normal score and the 98th percentile of all scores; rows
    beyond it are counted in the last bin. Positive scores with a long tail
    (:func:`long_tailed`) get log-spaced bins on a log axis; other scores whose normal
    rows a linear axis would crowd into a few bins (:func:`symlog_threshold`), bins
    evenly spaced on a symmetric-log axis.
    """
    groups = [(normal_scores, f"normal (calibration {item}s)", "normal")]
    if anomalous_scores is not None and len(anomalous_scores):
        groups.insert(0, (anomalous_scores, "anomalous (labelled)", "anomalous"))
    every = np.concatenate([g[0] for g in groups])
    low = min(float(every.min()), threshold)
    bulk_high = max(threshold, float(normal_scores.max()))
    high = max(bulk_high, float(np.quantile(every, HISTOGRAM_TOP_QUANTILE)))
    log_scale = long_tailed(bulk_high, low, high)
    linear_within = None if log_scale else symlog_threshold(normal_scores, low, high)
    if log_scale:
        high *= (high / low) ** HISTOGRAM_MARGIN
        bins = np.geomspace(low, high, HISTOGRAM_BINS)
    elif linear_within is not None:
        # Bins of one width on the axis as drawn: evenly spaced in symlog's coordinates.
        to_axis = SymmetricalLogTransform(10, linear_within, 1.0)
        start, end = to_axis.transform(np.array([low, high]))
        end += HISTOGRAM_MARGIN * (end - start)
        bins = to_axis.inverted().transform(np.linspace(start, end, HISTOGRAM_BINS))
        high = float(bins[-1])
    else:
        high += HISTOGRAM_MARGIN * (high - low)
        bins = np.linspace(low, high, HISTOGRAM_BINS)
    fig, ax = plt.subplots(figsize=FIGSIZE, layout="constrained")
    tallest = 0.0
    for scores, label, group in groups:
        counts, _, _ = ax.hist(
            np.clip(scores, low, high),
            bins=bins,  # type: ignore[arg-type]  # matplotlib's stubs omit arrays, which hist takes
            weights=np.full(len(scores), 1 / len(scores)),
            alpha=0.55,
            color=GROUP_STYLES[group][0],
            label=f"{label}, n = {len(scores):,}",
        )
        tallest = max(tallest, float(np.max(counts)))
    ax.axvline(threshold, color="black", linestyle="--", label=f"threshold = {threshold:.4g}")
    scale = ""
    if log_scale:
        ax.set_xscale("log")
        _numbered_log_axis(ax.xaxis)
        scale = ", log scale"
    elif linear_within is not None:
        ax.set_xscale("symlog", linthresh=linear_within, linscale=1.0)
        # The bins' span: autoscaling's margin would open decades of empty axis below 0.
        ax.set_xlim(float(bins[0]), float(bins[-1]))
        ax.xaxis.set_major_locator(ticker.FixedLocator(symlog_ticks(low, high, linear_within)))
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: tick_label(value)))
        scale = f", linear from -{linear_within:.3g} to {linear_within:.3g}, log scale beyond"
    ax.set_ylim(0, HISTOGRAM_HEADROOM * tallest)
    ax.set_title(f"Anomaly scores: {score_name} (higher = more anomalous)")
    label = score_label(score_name, item) + scale
    if every.max() > high:
        label += "; last bin includes larger values"
    ax.set_xlabel(wrap_title(label, FIGSIZE[0], LABEL_POINTS))
    ax.set_ylabel(f"share of the group's {item}s per bin")
    ax.legend(loc="upper right")
    return fig


def roc_curve(evaluation: dict[str, Any], item: str = "row") -> Figure:
    """ROC curve from :func:`anomaly_vae.calibration.evaluate` output; ``item``: what a
    score is of, ``"row"`` or ``"image"``."""
    roc = evaluation["curves"]["roc"]
    fig, ax = plt.subplots(figsize=FIGSIZE, layout="constrained")
    ax.plot(roc["fpr"], roc["tpr"], label=f"detector: {shown_metric(evaluation, 'auroc')}")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="chance")
    _threshold_point(ax, evaluation, evaluation["false_positive_rate"], evaluation["recall"])
    ax.set(
        title=f"ROC curve (labelled evaluation {item}s)",
        xlabel="false-positive rate",
        ylabel="true-positive rate (recall)",
        xlim=UNIT_LIMITS,
        ylim=UNIT_LIMITS,
    )
    ax.legend(loc="lower right")
    return fig


def pr_curve(evaluation: dict[str, Any], item: str = "row") -> Figure:
    """Precision-recall curve from :func:`anomaly_vae.calibration.evaluate` output;
    ``item``: what a score is of, ``"row"`` or ``"image"``."""
    pr = evaluation["curves"]["pr"]
    base_rate = evaluation["n_anomalous"] / (evaluation["n_anomalous"] + evaluation["n_normal"])
    fig, ax = plt.subplots(figsize=FIGSIZE, layout="constrained")
    ax.plot(pr["recall"], pr["precision"], label=f"detector: {shown_metric(evaluation, 'aucpr')}")
    ax.axhline(
        base_rate, color="grey", linestyle=":", label=f"chance ({100 * base_rate:.1f}% anomalous)"
    )
    _threshold_point(ax, evaluation, evaluation["recall"], evaluation["precision"])
    ax.set(
        title=f"Precision-recall curve (labelled evaluation {item}s)",
        xlabel="recall",
        ylabel="precision",
        xlim=UNIT_LIMITS,
        ylim=UNIT_LIMITS,
    )
    ax.legend(loc="lower left")
    return fig


def _threshold_point(ax: Any, evaluation: dict[str, Any], x: float, y: float) -> None:
    """The chosen threshold's point, named with its value; not clipped, as a perfect
    detector puts it on the border of the axes."""
    ax.scatter(
        [x],
        [y],
        color="black",
        zorder=3,
        clip_on=False,
        label=f"chosen threshold ({evaluation['threshold']:.4g})",
    )


def project_latents(latents: np.ndarray) -> tuple[np.ndarray, tuple[str, str], str]:
    """Latent means ``(n, k)`` as ``(n, 2)`` points to draw: PCA for ``k > 2`` (each
    axis labelled with its share of the variance), the axes themselves for ``k = 2``,
    and a line at 0 for ``k = 1``. Returns the points, the axis labels and a note on
    the projection for the title ("" when there is none)."""
    k = latents.shape[1]
    if k > 2:
        pca = PCA(n_components=2).fit(latents)
        shares = 100 * pca.explained_variance_ratio_
        axes = (
            f"principal component 1 ({shares[0]:.0f}% of variance)",
            f"principal component 2 ({shares[1]:.0f}% of variance)",
        )
        return pca.transform(latents), axes, f"PCA of {k} latent dimensions"
    if k == 2:
        return latents, ("z[0]", "z[1]"), ""
    return np.column_stack([latents[:, 0], np.zeros(len(latents))]), ("z[0]", "(1-D latent)"), ""


def _no_ticks_on_a_missing_axis(ax: Any, latents: np.ndarray) -> None:
    """A 1-D latent is drawn on a line at 0: its y-axis has no values to read."""
    if latents.shape[1] == 1:
        ax.set_yticks([])


def _titled(title: str, note: str, width_inches: float = FIGSIZE[0]) -> str:
    """``title`` wrapped to ``width_inches``, then ``note`` (the projection) on a line of
    its own."""
    title = wrap_title(title, width_inches, TITLE_POINTS)
    return f"{title}\n({note})" if note else title


def latent_scatter(latents: np.ndarray, groups: np.ndarray, title: str = "Latent means") -> Figure:
    """2-D scatter of latent means ``(n, k)``; PCA to 2-D when ``k > 2``.

    ``groups (n,)`` holds a legend label per point (e.g. "normal", "anomalous").
    """
    projected, axes, note = project_latents(latents)
    fig, ax = plt.subplots(figsize=FIGSIZE, layout="constrained")
    for group in dict.fromkeys(groups.tolist()):
        mask = groups == group
        colour, marker = GROUP_STYLES.get(group, (None, "o"))
        ax.scatter(
            projected[mask, 0],
            projected[mask, 1],
            s=10,
            alpha=0.6,
            color=colour,
            marker=marker,
            label=f"{group} ({int(mask.sum())})",
        )
    ax.set(title=_titled(title, note), xlabel=axes[0], ylabel=axes[1])
    _no_ticks_on_a_missing_axis(ax, latents)
    ax.legend()
    return fig


def latent_scatter_by_score(
    latents: np.ndarray, scores: np.ndarray, score_name: str, title: str, item: str = "row"
) -> Figure:
    """2-D scatter of latent means ``(n, k)`` coloured by score ``(n,)`` (higher = more
    anomalous). The colour scale follows the score histogram's rule, with the scores
    below the 90th percentile as the bulk: log for positive scores with a long tail
    (:func:`long_tailed`), symmetric-log where a linear one would give the bulk's middle
    80% a few colours (:func:`symlog_threshold`), else linear. ``item``: what a score is
    of, ``"row"`` or ``"image"``, for the colour bar's unit."""
    projected, axes, note = project_latents(latents)
    low, high = float(scores.min()), float(scores.max())
    bulk_high = float(np.quantile(scores, BULK_QUANTILE))
    log_scale = long_tailed(bulk_high, low, high)
    # A few extreme anomalies on a linear scale gave every other point one colour: the
    # bulk is judged as the histogram judges the normal rows, over as many bins.
    linear_within = None if log_scale else symlog_threshold(scores[scores <= bulk_high], low, high)
    norm: Normalize
    if log_scale:
        norm = LogNorm(low, high)
    elif linear_within is not None:
        norm = SymLogNorm(linear_within, linscale=1.0, vmin=low, vmax=high, base=10)
    else:
        norm = Normalize(low, high)
    fig, ax = plt.subplots(figsize=FIGSIZE, layout="constrained")
    # The most anomalous on top, so that a few of them are not hidden under the rest.
    order = np.argsort(scores)
    points = ax.scatter(
        projected[order, 0], projected[order, 1], c=scores[order], cmap="viridis", norm=norm, s=10
    )
    scale = ", log scale" if log_scale else ""
    if linear_within is not None:
        scale = f", linear from -{linear_within:.3g} to {linear_within:.3g}, log scale beyond"
    bar = fig.colorbar(
        points, ax=ax, label=f"{score_label(score_name, item)}{scale}\nhigher = more anomalous"
    )
    if log_scale:
        _numbered_log_axis(bar.ax.yaxis)
    elif linear_within is not None:
        bar.set_ticks(symlog_ticks(low, high, linear_within))
        bar.ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: tick_label(value)))
    width = COLOUR_BAR_AXES_SHARE * FIGSIZE[0]
    ax.set(title=_titled(title, note, width), xlabel=axes[0], ylabel=axes[1])
    _no_ticks_on_a_missing_axis(ax, latents)
    return fig


def close(fig: Figure) -> None:
    plt.close(fig)
