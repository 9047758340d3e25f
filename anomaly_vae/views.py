"""The classic VAE views of a fitted detector, for people to look at.

Each function returns a :class:`View`: a named matplotlib figure and, where it fits,
a table (generated rows in the original units, per-feature reconstruction errors).
Names start with a number so the views sort in a sensible order in a folder or in
the MLflow UI. Images are drawn pixel for pixel (nearest-neighbour upscaling, no blur).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import torch
from matplotlib import ticker
from matplotlib.axes import Axes
from matplotlib.colors import SymLogNorm
from matplotlib.figure import Figure
from sklearn.decomposition import PCA

from anomaly_vae import plots
from anomaly_vae.config import ViewConfig
from anomaly_vae.data.images import class_list
from anomaly_vae.data.preprocessing import warnings_per_file
from anomaly_vae.errors import DataError
from anomaly_vae.explanation import EXPLAINED_COLUMNS, WHY_COLUMN

logger = logging.getLogger(__name__)

plt = plots.plt
MAX_TABLE_FEATURES = 6  # table views plot at most this many numeric columns, to stay legible
# Table views put at most this many column panels side by side: a strip of six panels is
# shrunk to a third of its height at the width of a page or of the MLflow UI.
PANEL_COLUMNS = 3
# The reconstruction heat map leaves out features whose surprise is below this (nats) in
# every row shown (missing-value indicators of complete columns, say): they are all dark
# and crowd the ones that matter. The CSV keeps every feature.
SURPRISE_SHOWN_MIN_NATS = 0.01
# Its colours are linear up to this many nats (a feature about as expected) and on a log
# scale beyond once the worst cell is over SURPRISE_LOG_DECADES decades above it: on a
# linear scale one extreme row's cells (tens of thousands of nats) left every other cell
# black, the features that make those rows anomalous unseen.
SURPRISE_LINEAR_NATS = 1.0
SURPRISE_LOG_DECADES = 2
# Image grids: small images are blown up until the grid's longer side is at least this
# many pixels (under twice as many), each image pixel a whole number of output pixels.
IMAGE_GRID_PIXELS = 480
GRID_PADDING = 2  # white pixels between and around the images of a grid
GRID_TITLE_POINTS = 10
TITLE_POINTS = 12  # matplotlib's axes title size ("large")
GRID_LABEL_POINTS = 8
# Margins of an image grid in inches: around it, per title line, for a line of tick
# labels and for an axis label.
GRID_EDGE_INCHES = 0.1
GRID_TITLE_LINE_INCHES = 0.2
GRID_TICK_LABEL_INCHES = 0.2
GRID_AXIS_LABEL_INCHES = 0.25
GRID_LABEL_LINE_INCHES = 0.15  # each further line of a wrapped axis label (8 points)


@dataclass
class View:
    name: str  # file stem, e.g. "02_reconstructions"
    figure: Figure
    table: pd.DataFrame | None = None
    grid: bool = False  # an image grid, laid out to the inch (see save_view)


def save_view(view: View, folder: Path) -> list[Path]:
    """Write ``<folder>/<name>.png`` (and ``.csv`` with a table); return the paths."""
    png = folder / f"{view.name}.png"
    png.parent.mkdir(parents=True, exist_ok=True)
    # Table views are panels laid out by matplotlib, whose colour-bar labels can reach
    # past the figure's edge; image grids are laid out to the inch and kept as they are.
    tight = "tight" if view.table is not None and not view.grid else None
    view.figure.savefig(png, dpi=plots.DPI, bbox_inches=tight)
    plots.close(view.figure)
    paths = [png]
    if view.table is not None:
        csv = folder / f"{view.name}.csv"
        view.table.to_csv(csv, index=False)
        paths.append(csv)
    return paths


# -- helpers -------------------------------------------------------------------------------
def _is_image(detector: Any) -> bool:
    return detector.data_kind_ == "image"


def _decode(detector: Any, z: torch.Tensor, condition: torch.Tensor | None = None) -> np.ndarray:
    """Expected x for latents ``z (n, k)``, in model-input units, ``(n, *input_shape)``."""
    model = detector.model_
    model.eval()
    with torch.no_grad():
        return model.mean_output(model.decode(z, condition)).numpy()


def _latent_prior(detector: Any) -> tuple[np.ndarray, np.ndarray, str]:
    """Mean ``(k,)`` and covariance ``(k, k)`` of the prior of the latent the decoder
    takes, and what a step of 1 along the views' latent axes is: a standard deviation of
    that prior (N(0, I) for most variants; hvae's decoder takes z1, whose prior is not)."""
    model = detector.model_
    model.eval()  # a prior network's dropout (hvae's p(z1 | z2)) off
    mean, covariance = model.latent_prior_moments()
    return mean.numpy(), covariance.numpy(), model.latent_prior_unit


def require_continuous(detector: Any, view: str) -> None:
    """DataError naming ``view`` when the detector's latent is discrete (vq-vae)."""
    if not getattr(detector.model_, "continuous_latent", True):
        raise DataError(f"{detector.effective_config.model.name} has a discrete latent: no {view}")


def _image_grid(
    images: np.ndarray,
    title: str,
    columns: int,
    row_labels: list[str] | None = None,
    column_labels: list[str] | None = None,
    axis_labels: tuple[str, str] = ("", ""),
) -> Figure:
    """Images ``(n, C, H, W)`` in [0, 1] as one grid, drawn pixel for pixel.

    ``row_labels`` and ``column_labels`` name the grid's rows and columns ("" leaves a
    place unnamed); ``axis_labels`` (x, y) say what runs along them. The title is
    wrapped to the figure's width, the x label to the grid's; the figure is widened
    where a line of either is still wider (a long path is never split).
    """
    from torchvision.utils import make_grid

    grid = make_grid(
        torch.from_numpy(images).float(), nrow=columns, padding=GRID_PADDING, pad_value=1.0
    )
    pixels = grid.permute(1, 2, 0).numpy()
    height, width = pixels.shape[:2]
    # Whole output pixels per image pixel, at least IMAGE_GRID_PIXELS on the longer side.
    scale = max(1, math.ceil(IMAGE_GRID_PIXELS / max(height, width)))
    image_width, image_height = width * scale / plots.DPI, height * scale / plots.DPI
    label_width = max((len(label) for label in row_labels or []), default=0)
    left = GRID_EDGE_INCHES + label_width * GRID_LABEL_POINTS * plots.TITLE_CHARACTER_WIDTH / 72
    left += GRID_AXIS_LABEL_INCHES if axis_labels[1] else 0
    fig_width = left + image_width + GRID_EDGE_INCHES
    wrapped = plots.wrap_title(title, fig_width, GRID_TITLE_POINTS)
    # The x label is centred under the images, so it wraps to their width.
    x_label = plots.wrap_title(axis_labels[0], image_width, GRID_LABEL_POINTS)
    # A path is never split (wrap_title), and an image's file named in the traversal's or
    # the interpolation's title is often wider than the grid: its ends were cut off at the
    # figure's edges. The figure widens to hold the widest line, the images centred in the
    # width added.
    widen = max(
        0.0,
        _text_inches(wrapped, GRID_TITLE_POINTS) + 2 * GRID_EDGE_INCHES - fig_width,
        _text_inches(x_label, GRID_LABEL_POINTS) - image_width,
    )
    left += widen / 2
    fig_width += widen
    bottom = GRID_EDGE_INCHES + (GRID_TICK_LABEL_INCHES if column_labels else 0)
    if x_label:
        bottom += GRID_AXIS_LABEL_INCHES + GRID_LABEL_LINE_INCHES * x_label.count("\n")
    top = 2 * GRID_EDGE_INCHES + GRID_TITLE_LINE_INCHES * (wrapped.count("\n") + 1)
    fig_height = bottom + image_height + top
    fig = plt.figure(figsize=(fig_width, fig_height), dpi=plots.DPI)
    ax = fig.add_axes(
        (left / fig_width, bottom / fig_height, image_width / fig_width, image_height / fig_height)
    )
    ax.imshow(
        pixels if pixels.shape[2] == 3 else pixels[..., 0],
        cmap="gray",
        interpolation="nearest",
        vmin=0,
        vmax=1,
    )
    ax.set_frame_on(False)
    ax.tick_params(length=0, labelsize=GRID_LABEL_POINTS)
    ax.set_xticks(*_grid_ticks(column_labels, images.shape[3]))
    ax.set_yticks(*_grid_ticks(row_labels, images.shape[2]))
    ax.set_xlabel(x_label, fontsize=GRID_LABEL_POINTS)
    ax.set_ylabel(axis_labels[1], fontsize=GRID_LABEL_POINTS)
    fig.suptitle(wrapped, fontsize=GRID_TITLE_POINTS, y=1 - GRID_EDGE_INCHES / fig_height, va="top")
    return fig


def _text_inches(text: str, points: float) -> float:
    """The width in inches of the widest line of ``text`` in matplotlib's default font
    at ``points``, as drawn (measured, where wrap_title estimates by characters)."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextToPath

    measure = TextToPath().get_text_width_height_descent
    font = FontProperties(size=points)
    lines = text.split("\n") if text else []
    return max((measure(line, font, ismath=False)[0] for line in lines), default=0.0) / 72


def _grid_ticks(labels: list[str] | None, side: int) -> tuple[list[float], list[str]]:
    """Tick positions (grid pixels, at the centres of cells of ``side`` pixels) and the
    labels of the cells that have one."""
    named = [(place, label) for place, label in enumerate(labels or []) if label]
    cell = side + GRID_PADDING
    centres = [GRID_PADDING + place * cell + (side - 1) / 2 for place, _ in named]
    return centres, [label for _, label in named]


def _ends_labelled(values: np.ndarray) -> list[str]:
    """Tick labels for a row of cells at ``values``: the first, the middle and the last."""
    labels = [""] * len(values)
    for place in (0, len(values) // 2, len(values) - 1):
        labels[place] = f"{values[place]:g}"
    return labels


def _panels(count: int, size: float) -> tuple[Figure, list[Axes]]:
    """``count`` square panels of ``size`` inches, at most :data:`PANEL_COLUMNS` a row;
    the axes in reading order (panels left over are hidden)."""
    count = max(1, count)
    columns = min(count, PANEL_COLUMNS)
    rows = math.ceil(count / columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(size * columns, size * rows), layout="constrained", squeeze=False
    )
    flat = list(axes.flat)
    for ax in flat[count:]:
        ax.set_axis_off()
    return fig, flat[:count]


def _suptitle(fig: Figure, title: str) -> None:
    """``title`` over the whole figure, wrapped to its width."""
    fig.suptitle(plots.wrap_title(title, fig.get_figwidth(), TITLE_POINTS))


def _require_rows(X: Any, view: str, needed: int = 2) -> None:
    """A one-line error when DATA has fewer than ``needed`` rows (or images)."""
    if len(X) < needed:
        # Images arrive as an array (n, C, H, W), tables as a frame.
        noun = "image" if isinstance(X, np.ndarray) and X.ndim == 4 else "row"
        raise DataError(
            f"the {view} view needs at least {needed} {noun}{'s' if needed > 1 else ''} "
            f"of DATA, got {len(X)}"
        )


def _start_rows(X: Any, labels: np.ndarray | None, needed: int) -> np.ndarray:
    """The positions ``(needed,)`` of the rows a traversal or interpolation starts from:
    the first rows of X, or with ``labels (n,)`` (True = anomaly) the first normal rows,
    anomalies after them only when too few are normal. A labelled set often starts with
    an anomaly (Fashion-MNIST's test/0 for a model of sneakers), whose latent mean a
    model of the normal rows places badly: its traversal says little about what the
    model learned."""
    if labels is None:
        return np.arange(needed)
    # A stable sort keeps each group in X's order: normal (False) rows first.
    return np.argsort(np.asarray(labels, bool), kind="stable")[:needed]


def _row_conditions(detector: Any, X: Any, rows: np.ndarray) -> np.ndarray | None:
    """The conditions ``(len(rows), c)`` of the chosen rows of X for a conditional model
    (None for other models): the views of a conditional model decode for the data's own
    conditions, as the decoder cannot run without one. An image's class is not part of
    the image: it is the trained class that explains the image best."""
    if not detector.model_.condition_dim:
        return None
    return detector._model_input(_take(X, rows))[1]


def _numeric_columns(detector: Any) -> list[str]:
    return [c.name for c in detector.preprocessor_.columns if c.kind == "numeric"][
        :MAX_TABLE_FEATURES
    ]


def _columns_note(detector: Any) -> str:
    """What a table view's figure leaves out, for its title ("" when nothing)."""
    columns = detector.preprocessor_.columns
    numeric = sum(c.kind == "numeric" for c in columns)
    categorical = len(columns) - numeric
    left_out = []
    if numeric > MAX_TABLE_FEATURES:
        left_out.append(f"the first {MAX_TABLE_FEATURES} of {numeric} numeric columns")
    if categorical:
        left_out.append(
            f"{categorical} categorical column{'s' if categorical > 1 else ''} not drawn"
        )
    return f" ({'; '.join(left_out)}; all in the CSV)" if left_out else ""


def _to_rows(
    detector: Any, features: np.ndarray, condition: np.ndarray | None = None
) -> pd.DataFrame:
    """Model features of a table model back to rows in the original units; a conditional
    model's condition features ``(n, c)`` are put back in their columns."""
    mask = detector._condition_mask()
    if mask.any():
        full = np.zeros((len(features), len(mask)), dtype=np.float32)
        full[:, ~mask] = features
        full[:, mask] = condition
        features = full
    return detector.preprocessor_.inverse_transform(features)


def _condition_note(detector: Any, condition: np.ndarray | None) -> str:
    """A conditional view's condition ``(c,)`` for its title: ", class NAME" for images,
    ", given COLUMN=VALUE, ..." for tables; "" without one."""
    if condition is None:
        return ""
    kind, value = _condition_words(detector, condition)
    return f", {kind} {value}"


def _condition_path_note(detector: Any, start: np.ndarray, end: np.ndarray) -> str:
    """An interpolation's conditions ``(c,)`` at its two ends for its title: ", class A to
    B" for images, ", given COLUMN=A to COLUMN=B" for tables, as :func:`_condition_note`
    names one (that alone when both ends share it)."""
    kind, first = _condition_words(detector, start)
    second = _condition_words(detector, end)[1]
    return f", {kind} {first}" + ("" if second == first else f" to {second}")


def _condition_words(detector: Any, condition: np.ndarray) -> tuple[str, str]:
    """A condition ``(c,)`` as ("class", NAME) for images, ("given", "COLUMN=VALUE, ...")
    for tables."""
    condition = np.asarray(condition, np.float32).reshape(1, -1)
    if _is_image(detector):
        return "class", str(detector.condition_names_[int(np.argmax(condition[0]))])
    features = int((~detector._condition_mask()).sum())
    row = _to_rows(detector, np.zeros((1, features), np.float32), condition).iloc[0]
    values = [
        f"{column}={row[column]:.4g}"
        # np.floating too: decoded columns are float32, which is no Python float
        if isinstance(row[column], (float, np.floating))
        else f"{column}={row[column]}"
        for column in detector.effective_config.data.condition_columns
    ]
    return "given", ", ".join(values)


# -- views ---------------------------------------------------------------------------------
def generation(
    detector: Any,
    count: int = ViewConfig.count,
    condition: np.ndarray | None = None,
    seed: int = 0,
) -> View:
    """Samples from the prior, decoded: an image grid, or table rows (a CSV in the
    original units, and histograms of them). ``condition``: one condition vector
    ``(c,)`` for conditional models; without one a conditional image model generates up
    to ``count / K`` samples for each of its K classes, a block of whole rows each."""
    cond = None
    title, per_row = f"{count} samples from the prior", math.ceil(math.sqrt(count))
    row_labels = None
    if detector.model_.condition_dim:
        if condition is not None:
            cond = torch.as_tensor(np.asarray(condition, np.float32)).reshape(1, -1)
            cond = cond.repeat(count, 1)
        elif _is_image(detector):
            # A block of whole rows per class, no wider than the square grid would be:
            # with two classes one row each was a strip of tiny images.
            classes = detector.condition_names_
            per_class = max(1, count // len(classes))
            per_row = min(per_row, per_class)
            rows_per_class = per_class // per_row
            per_class = per_row * rows_per_class
            cond = torch.eye(len(classes)).repeat_interleave(per_class, dim=0)
            count = len(cond)
            block = "a row" if rows_per_class == 1 else f"a block of {rows_per_class} rows"
            title = (
                f"{per_class} samples from the prior per class, {block} each: {class_list(classes)}"
            )
            row_labels = [
                str(name) if row == 0 else "" for name in classes for row in range(rows_per_class)
            ]
        else:
            columns = detector.effective_config.data.condition_columns
            raise DataError(
                "a conditional table model generates for one condition: give a value for "
                f"each of its condition columns ({', '.join(columns)}), on the command line "
                "--condition COLUMN=VALUE once per column"
            )
    # The condition asked for (a model without one takes none).
    given = _condition_note(detector, condition) if detector.model_.condition_dim else ""
    title += given
    generator = torch.Generator().manual_seed(seed)
    samples = detector.model_.generate(count, cond, generator=generator).numpy()
    if _is_image(detector):
        figure = _image_grid(np.clip(samples, 0, 1), title, per_row, row_labels=row_labels)
        return View("01_generated", figure)
    rows = _to_rows(detector, samples, None if cond is None else cond.numpy())
    columns = _numeric_columns(detector)
    fig, axes = _panels(len(columns), 3)
    for ax, column in zip(axes, columns, strict=False):
        ax.hist(rows[column].dropna(), bins=20, color="tab:purple", alpha=0.8)
        ax.set(title=column, xlabel="value (original units)", ylabel="generated rows")
    _suptitle(fig, f"{count} rows generated from the prior{given}{_columns_note(detector)}")
    return View("01_generated", fig, rows)


def reconstructions(
    detector: Any,
    X: Any,
    count: int = 16,
    origin: pd.DataFrame | None = None,
    names: Sequence[str] | None = None,
    classes: Sequence[str] | None = None,
    scores: np.ndarray | None = None,
) -> View:
    """The ``count`` most anomalous inputs beside their reconstructions, worst first.

    Tables get, per feature, the surprise (its share of -log p(x|z) in nats beyond what
    every row pays) at the row's posterior mean, drawn as a heat map, and the
    reconstruction in original units; and each row's explanation
    (:meth:`VAEDetector.explain`, its default method), ``why_1``, ``why_1_nats`` ... up to
    ``EXPLAINED_COLUMNS``, in the CSV after ``score`` and ``why_1`` in the row's label.
    A row is named by its id where it has one, else by its 1-based position in X, or,
    given ``origin`` (:func:`row_name`), by its file and row there. Images get a table of
    the images shown, in the grid's reading order: ``rank``, ``image`` (from ``names
    (n,)``, :func:`image_names`), ``class`` (from ``classes (n,)``, when given) and
    ``score``, as the grid has no room to name them. ``scores``: ``(n,)`` X's anomaly
    scores when scored already (`anomaly-vae view` scores with a progress bar), else
    they are computed here.
    """
    if scores is None:
        scores = detector.anomaly_score(X)
    order = np.argsort(-scores)[:count]
    shown_rows = _take(X, order)
    # Scoring X gave its data's warnings (an ignored column, an unseen category); each
    # read below would give them again, an ignored column five times: gathered, dropped.
    with warnings_per_file():
        features = detector.transform_features(X)[order]
        rebuilt = detector.reconstruct(shown_rows)
        if not _is_image(detector):
            surprise = detector.feature_surprise(shown_rows)
            # The explanation `score --explain` gives of these rows, beside the heat map:
            # the heat map's surprise at a row's own posterior mean blames, for one large
            # value, the columns related to it, which its posterior mean was pulled away
            # from (explanation.py).
            why = detector.explain(shown_rows, EXPLAINED_COLUMNS).reset_index(drop=True)
            conditions = detector._model_input(shown_rows)[1]
    if _is_image(detector):
        pairs = np.stack([features, np.clip(rebuilt, 0, 1)], axis=1).reshape(
            -1, *features.shape[1:]
        )
        columns = min(8, 2 * len(order)) // 2 * 2
        figure = _image_grid(
            pairs,
            "Most anomalous inputs, each beside its reconstruction, worst first "
            "(in reading order; named in 02_reconstructions.csv)",
            columns,
            column_labels=["input", "recon."] * (columns // 2),
        )
        # Without names a reviewer saw which images looked wrong, not which files they were.
        shown = _images_named(names, classes, order)
        shown.insert(0, "rank", np.arange(1, len(order) + 1))
        shown["score"] = scores[order]
        return View("02_reconstructions", figure, shown, grid=True)
    feature_names = detector.preprocessor_.feature_names
    mask = getattr(detector, "_condition_mask", lambda: np.zeros(len(feature_names), bool))()
    feature_names = [n for n, skip in zip(feature_names, mask, strict=True) if not skip]
    id_column = detector.effective_config.data.id_column
    ids = _row_ids(detector, X, order)
    # 1-based, as `score` writes and messages count rows
    rows_named = pd.DataFrame({"row": order + 1, "score": scores[order]})
    if origin is not None:
        rows_named["row"] = origin["row"].to_numpy()[order]
        rows_named.insert(0, "file", origin["file"].to_numpy()[order])
    if ids is not None:
        rows_named.insert(rows_named.columns.get_loc("row") + 1, id_column, ids)
    table = pd.concat(
        [
            rows_named,
            why,
            pd.DataFrame(surprise, columns=[f"surprise:{n}" for n in feature_names]),
            _to_rows(detector, rebuilt, conditions).add_prefix("reconstructed:"),
        ],
        axis=1,
    )
    shown = surprise.max(axis=0) >= SURPRISE_SHOWN_MIN_NATS
    fig, ax = plt.subplots(
        figsize=(max(6, 0.5 * shown.sum() + 2), max(3, 0.35 * len(order) + 1.5)),
        layout="constrained",
    )
    drawn = surprise[:, shown]
    worst = float(drawn.max()) if drawn.size else 0.0
    log_beyond = worst > SURPRISE_LINEAR_NATS * 10**SURPRISE_LOG_DECADES
    norm = (
        SymLogNorm(SURPRISE_LINEAR_NATS, linscale=1.0, vmin=0.0, vmax=worst, base=10)
        if log_beyond
        else None
    )
    image = ax.imshow(drawn, aspect="auto", cmap="magma", interpolation="nearest", norm=norm)
    shown_names = [name for name, keep in zip(feature_names, shown, strict=True) if keep]
    ax.set_xticks(range(len(shown_names)), shown_names, rotation=60, ha="right", fontsize=8)
    # A row is named by its id where the data has one, else by where it is: at fit the
    # views see a sample of the evaluation rows, whose positions no reader can look up.
    named = (
        [row_name(origin, r) for r in order] if ids is None else [f"{id_column} {i}" for i in ids]
    )
    first = why[WHY_COLUMN.format(rank=1)]
    ax.set_yticks(
        range(len(order)),
        [
            f"{name} (why: {column}; score {s:.3g})"
            for name, column, s in zip(named, first, scores[order], strict=True)
        ],
        fontsize=8,
    )
    # The heat map's brightest cell and the named column can differ: say which is which.
    title = (
        "What makes the most anomalous rows anomalous (worst on top). why: the column the "
        "row's explanation names first (as score --explain); colours: each feature's "
        "surprise at the row's posterior mean"
    )
    ax.set_title(plots.wrap_title(title, fig.get_figwidth(), TITLE_POINTS))
    if not shown.all():
        ax.set_xlabel(
            f"{(~shown).sum()} features under {SURPRISE_SHOWN_MIN_NATS:g} nats in every row "
            "left out (all in the CSV)",
            fontsize=8,
        )
    # The score also holds the KL term and the spread of z, so a row's surprises need
    # not add up to its score; the labels say which is which.
    label = "surprise at the posterior mean, nats per feature"
    if log_beyond:
        label += f"\nlinear to {SURPRISE_LINEAR_NATS:g}, log scale beyond"
    bar = fig.colorbar(image, ax=ax, label=label)
    if log_beyond:
        bar.set_ticks(plots.symlog_ticks(0.0, worst, SURPRISE_LINEAR_NATS))
        bar.ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: plots.tick_label(v)))
    return View("02_reconstructions", fig, table)


def row_name(origin: pd.DataFrame | None, position: int, default: str = "") -> str:
    """What to call row ``position`` of a view's data: ``"plant.csv row 141"`` from
    ``origin`` (columns ``file`` and ``row``, 1-based, a row per row of the data: where
    each was read), else ``default`` or ``"row N"``, N its 1-based position."""
    if origin is None:
        return default or f"row {position + 1}"
    return f"{origin['file'].iloc[position]} row {origin['row'].iloc[position]}"


def image_names(names: Sequence[str] | None, positions: np.ndarray) -> list[str]:
    """What to call the images at ``positions (m,)`` of a view's data: their ``names``
    (``(n,)``, as `score` writes them), else ``"image N"``, N the 1-based place in X."""
    if names is None:
        return [f"image {position + 1}" for position in positions]
    return [names[position] for position in positions]


def _images_named(
    names: Sequence[str] | None, classes: Sequence[str] | None, positions: np.ndarray
) -> pd.DataFrame:
    """The images at ``positions (m,)`` as `score`'s CSV names them: ``image``
    (:func:`image_names`) and, given each image's ``classes (n,)`` (a source of several
    classes, :func:`~anomaly_vae.data.images.class_column`), ``class``; a
    ``test/1686`` of a torchvision set tells no reader what it shows."""
    named = pd.DataFrame({"image": image_names(names, positions)})
    if classes is not None:
        named["class"] = [classes[position] for position in positions]
    return named


def _row_ids(detector: Any, X: Any, rows: np.ndarray) -> np.ndarray | None:
    """The id column's values ``(len(rows),)`` of the chosen rows of a table, or None
    when the model has no id column or X lacks it."""
    id_column = detector.effective_config.data.id_column
    if not isinstance(X, pd.DataFrame) or id_column is None or id_column not in X.columns:
        return None
    return X[id_column].to_numpy()[rows]


def latent_scatter(
    detector: Any, X: Any, labels: np.ndarray | None = None, scores: np.ndarray | None = None
) -> View:
    """Latent means in 2-D (PCA above 2 dimensions), coloured by label when known,
    otherwise by anomaly score (``scores (n,)`` of X when scored already)."""
    _require_rows(X, "latents")  # PCA and a scatter need two points
    latents = detector.encode(X)
    title = latent_title(detector, "Latent means")
    if labels is not None:
        groups = np.where(np.asarray(labels, bool), "anomalous", "normal").astype(object)
        return View("03_latent_scatter", plots.latent_scatter(latents, groups, title))
    figure = plots.latent_scatter_by_score(
        latents,
        detector.anomaly_score(X) if scores is None else scores,
        detector.calibration_["score"],
        f"{title} coloured by anomaly score",
        item=detector.score_item,
    )
    return View("03_latent_scatter", figure)


def latent_title(detector: Any, title: str) -> str:
    """``title`` for a latent scatter, saying so for a discrete latent, whose rows share
    codebook vectors and so are drawn on top of each other."""
    if getattr(detector.model_, "continuous_latent", True):
        return title
    return f"{title} ({plots.DISCRETE_LATENT_NOTE})"


def _leading_directions(detector: Any, X: Any | None) -> np.ndarray:
    """``(2, k)`` unit directions: the latent axes for k = 2, else the two leading
    principal directions of the latent means of ``X`` (the first two axes without X);
    ``(1, 1)`` for a 1-D latent."""
    k = detector.model_.latent_dim
    if k <= 2 or X is None:
        return np.eye(k)[:2] if k >= 2 else np.eye(1)
    _require_rows(X, "manifold")  # PCA needs two points
    return PCA(n_components=2).fit(detector.encode(X)).components_


def manifold(
    detector: Any,
    X: Any | None = None,
    steps: int = 15,
    extent: float = 3.0,
    condition: np.ndarray | None = None,
    labels: np.ndarray | None = None,
) -> View:
    """Decoded grid over [-extent, extent]^2 of the latent (or its two leading directions);
    one line of ``steps`` points along z[0] for a 1-D latent. The grid is in standard
    deviations of the latent's prior around its mean, along each direction (for N(0, I):
    the latent's own values; hvae's z1 has another prior, see ``latent_prior_moments``).
    The table starts with the grid coordinates, in those units: ``z0, z1`` on the latent
    axes, ``pc1, pc2`` on principal directions. ``condition``: one condition ``(c,)``
    for a conditional model (default: the first row's, or with ``labels (n,)``, True =
    anomaly, the first normal row's, as the traversal starts from it)."""
    require_continuous(detector, "manifold")
    directions = _leading_directions(detector, X).astype(np.float32)
    principal = detector.model_.latent_dim > 2 and X is not None
    names = ["pc1", "pc2"] if principal else ["z0", "z1"][: len(directions)]
    values = np.linspace(-extent, extent, steps)
    if len(directions) == 1:
        grid = values[:, None].astype(np.float32)
    else:
        grid = np.array([(a, b) for b in values[::-1] for a in values], dtype=np.float32)
    prior_mean, covariance, unit = _latent_prior(detector)
    # The prior's standard deviation along each direction d: sqrt(d' Cov d).
    spread = np.sqrt(np.einsum("ik,kl,il->i", directions, covariance, directions))
    z = torch.from_numpy((prior_mean + (grid * spread) @ directions).astype(np.float32))
    cond = None
    if detector.model_.condition_dim:
        if condition is None and X is None:
            raise DataError("a conditional model's manifold needs a condition: pass DATA")
        if condition is None:
            # A conditional model's rows have conditions (None is for other models).
            start = _start_rows(X, labels, 1)
            condition = cast(np.ndarray, _row_conditions(detector, X, start))[0]
        cond = np.repeat(np.asarray(condition, np.float32).reshape(1, -1), len(grid), axis=0)
    decoded = _decode(detector, z, None if cond is None else torch.from_numpy(cond))
    # What runs along each side of the grid, in standard deviations of the prior (`unit`).
    if principal:
        axes_named = ("principal direction 1", "principal direction 2")
        span = f"[-{extent:g}, {extent:g}]^2 along the two leading principal directions"
    elif len(directions) > 1:
        axes_named, span = ("z[0]", "z[1]"), f"[-{extent:g}, {extent:g}]^2"
    else:
        axes_named, span = ("z[0]", ""), f"[-{extent:g}, {extent:g}] along z[0]"
    title = f"Decoded latent grid over {span}"
    if principal:
        title += " of the latent means"
    elif detector.model_.latent_dim > 2:
        others = detector.model_.latent_dim - 2
        at = "at 0" if not prior_mean.any() else "at their prior mean"
        title += f" of z[0] and z[1], the other {others} dimension{'s' if others > 1 else ''} {at}"
    if cond is not None:
        title += _condition_note(detector, cond[0])
    if _is_image(detector):
        figure = _image_grid(
            np.clip(decoded, 0, 1),
            f"{title} ({unit})",
            steps,
            row_labels=_ends_labelled(values[::-1]) if len(directions) > 1 else None,
            column_labels=_ends_labelled(values),
            axis_labels=axes_named,
        )
        return View("04_manifold", figure)
    rows = _to_rows(detector, decoded, cond)
    for position, name in reversed(list(enumerate(names))):
        rows.insert(0, name, grid[:, position])
    columns = _numeric_columns(detector)
    fig, axes = _panels(len(columns), 3.2)
    for ax, column in zip(axes, columns, strict=False):
        if len(directions) == 1:
            ax.plot(values, rows[column], color="tab:purple")
            ax.set(title=column, xlabel="z[0]", ylabel="decoded (original units)")
            continue
        # A sequential map: a decoded value has no natural midpoint for a diverging one.
        image = ax.imshow(
            rows[column].to_numpy().reshape(steps, steps),
            cmap="viridis",
            extent=(-extent, extent, -extent, extent),
            interpolation="nearest",
        )
        ax.set(title=column, xlabel=axes_named[0], ylabel=axes_named[1])
        fig.colorbar(image, ax=ax, shrink=0.8, label="decoded (original units)")
    _suptitle(
        fig, f"{title}: decoded value of each column, grid in {unit}{_columns_note(detector)}"
    )
    return View("04_manifold", fig, rows)


def traversal(
    detector: Any,
    X: Any,
    steps: int = 9,
    extent: float = 3.0,
    dimensions: int = 8,
    origin: pd.DataFrame | None = None,
    names: Sequence[str] | None = None,
    classes: Sequence[str] | None = None,
    labels: np.ndarray | None = None,
) -> View:
    """Vary one latent dimension at a time around the first row's latent mean, or with
    ``labels (n,)`` (True = anomaly) the first normal row's (:func:`_start_rows`; a
    conditional model decodes for that row's condition, named in the title as the
    manifold names its condition); ``origin`` names that row
    by its file and row there (:func:`row_name`). The values are standard
    deviations of the dimension's prior from its mean (for N(0, I): the values set).
    Images: the title and a one-row table (``image``, as :func:`image_names` gives it
    from ``names (n,)``, and ``class`` from ``classes (n,)`` when given) name the image
    the traversal starts from."""
    require_continuous(detector, "traversal")
    _require_rows(X, "traversal", needed=1)
    start = _start_rows(X, labels, 1)
    first = _row_conditions(detector, X, start)
    base = detector.encode(_take(X, start))[0]
    k = min(dimensions, len(base))
    values = np.linspace(-extent, extent, steps, dtype=np.float32)
    prior_mean, covariance, unit = _latent_prior(detector)
    spread = np.sqrt(np.diag(covariance))
    z = np.repeat(base[None], k * steps, axis=0).reshape(k, steps, -1)
    z[np.arange(k), :, np.arange(k)] = (prior_mean[:k, None] + values * spread[:k, None]).astype(
        np.float32
    )
    cond = None if first is None else np.repeat(first, k * steps, axis=0)
    decoded = _decode(
        detector,
        torch.from_numpy(z.reshape(k * steps, -1)),
        None if cond is None else torch.from_numpy(cond),
    )
    dimensions_shown = "latent dimension 0" if k == 1 else f"latent dimensions 0..{k - 1}"
    image = _is_image(detector)
    # An image is named as `score` names it: "the first input" left a reader to find
    # which file sorts first in the folder (or which image was sampled at fit).
    # A table row is "the first input" when it is, else named by its 1-based place.
    first_row = (
        image_names(names, start)[0]
        if image
        else row_name(origin, int(start[0]), "" if start[0] else "the first input")
    )
    title = f"Traversal of {dimensions_shown} over [-{extent:g}, {extent:g}] around {first_row}"
    # The condition decoded for, as the manifold's title gives it: an image's is the trained
    # class that explains it best, which its name does not tell.
    title += "" if first is None else _condition_note(detector, first[0])
    if image:
        figure = _image_grid(
            np.clip(decoded, 0, 1),
            f"{title} (one row per dimension)",
            steps,
            row_labels=[f"z[{dim}]" for dim in range(k)],
            column_labels=[f"{value:g}" for value in values],
            axis_labels=(f"value of the dimension ({unit})", ""),
        )
        started = _images_named(names, classes, start)
        return View("05_traversal", figure, started, grid=True)
    rows = _to_rows(detector, decoded, cond)
    rows.insert(0, "value", np.tile(values, k))
    rows.insert(0, "dimension", np.repeat(np.arange(k), steps))
    columns = _numeric_columns(detector)
    fig, axes = _panels(len(columns), 3.2)
    for ax, column in zip(axes, columns, strict=False):
        for dim in range(k):
            part = rows[rows["dimension"] == dim]
            ax.plot(part["value"], part[column], label=f"z[{dim}]")
        ax.set(title=column, xlabel="latent value", ylabel="decoded (original units)")
    # One legend beside the panels: inside the first one it hid that panel's lines.
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right upper", fontsize=8)
    # The values' unit once, in the title: hvae's is too long for a panel's axis.
    _suptitle(fig, f"{title} (one line per dimension; values in {unit}){_columns_note(detector)}")
    return View("05_traversal", fig, rows)


def interpolation(
    detector: Any,
    X: Any,
    steps: int = 10,
    origin: pd.DataFrame | None = None,
    names: Sequence[str] | None = None,
    classes: Sequence[str] | None = None,
    labels: np.ndarray | None = None,
) -> View:
    """Decode the straight line between the latent means of the first two rows of X, or
    with ``labels (n,)`` (True = anomaly) of the first two normal rows (:func:`_start_rows`; a
    conditional model's condition moves along the line between the rows' own conditions,
    so both ends decode as their row); ``origin`` names the two rows by their file and
    row there (:func:`row_name`), once, in the title (the x label says which end is
    which by their order there). Images: the title and a two-row table (``weight`` 0
    and 1, ``image`` as :func:`image_names` gives it from ``names (n,)``, ``class`` from
    ``classes (n,)`` when given) name them."""
    require_continuous(detector, "interpolation")
    _require_rows(X, "interpolation")
    pair = _start_rows(X, labels, 2)
    conditions = _row_conditions(detector, X, pair)
    ends = detector.encode(_take(X, pair))
    weights = np.linspace(0, 1, steps, dtype=np.float32)[:, None]
    cond = None
    if conditions is not None:
        cond = (1 - weights) * conditions[0] + weights * conditions[1]
    decoded = _decode(
        detector,
        torch.from_numpy((1 - weights) * ends[0] + weights * ends[1]),
        None if cond is None else torch.from_numpy(cond),
    )
    image = _is_image(detector)
    title = f"Interpolation between two inputs in latent space ({steps} steps)"
    position = "position (0 = first input, 1 = second; both decoded)"
    ends_named = None
    if image:
        ends_named = image_names(names, pair)
    elif origin is not None or pair.tolist() != [0, 1]:
        ends_named = [row_name(origin, int(place)) for place in pair]
    if ends_named is not None:
        first, second = ends_named
        title = f"Interpolation between {first} and {second} in latent space ({steps} steps)"
        # Named once, in the title, as the traversal names its start: the x label repeated
        # both (two paths under a grid made it wrap to lines of its own and widen the
        # figure); it says which end is which by their order there.
        kind = "image" if image else "row"
        position = f"position (0 = the first {kind}, 1 = the second; both decoded)"
    # The conditions the path moves between, as the traversal names its one: an image's is
    # the trained class that explains it best, which its name does not tell.
    if conditions is not None:
        title += _condition_path_note(detector, conditions[0], conditions[1])
    if image:
        figure = _image_grid(
            np.clip(decoded, 0, 1),
            title,
            steps,
            column_labels=[f"{weight:.2g}" for weight in weights[:, 0]],
            axis_labels=(position, ""),
        )
        ends = _images_named(names, classes, pair)
        ends.insert(0, "weight", [0.0, 1.0])
        return View("06_interpolation", figure, ends, grid=True)
    rows = _to_rows(detector, decoded, cond)
    rows.insert(0, "weight", weights[:, 0])
    columns = _numeric_columns(detector)
    scales = {c.name: c.scale for c in detector.preprocessor_.columns}
    unit = "ranges" if detector.effective_config.data.scaling == "minmax" else "standard deviations"
    fig, ax = plt.subplots(figsize=plots.FIGSIZE, layout="constrained")
    for column in columns:
        values = rows[column].to_numpy(dtype=float)
        # In the column's training scale, so that lines compare: each divided by its own
        # change along the path would end at +-1, a large change and a tiny one alike.
        ax.plot(rows["weight"], (values - values[0]) / scales[column], label=column)
    ax.set(
        title=plots.wrap_title(f"{title}{_columns_note(detector)}", plots.FIGSIZE[0], TITLE_POINTS),
        xlabel=position,
        # From the start of the path, which the x label places: the row's name there
        # repeated the title's.
        ylabel=f"change from position 0 (training {unit})",
    )
    ax.legend(fontsize=8)
    return View("06_interpolation", fig, rows)


def standard_views(
    detector: Any,
    X: Any,
    labels: np.ndarray | None = None,
    origin: pd.DataFrame | None = None,
    names: Sequence[str] | None = None,
    classes: Sequence[str] | None = None,
) -> list[View]:
    """The views logged with every fit: generation, reconstructions, latent scatter and,
    for continuous latents, manifold, traversal and interpolation (those that cannot be
    drawn are left out; :func:`views_and_skips` says why). ``origin``: where each row of
    a table X was read (:func:`row_name`), to name rows by; ``names``: images' names;
    ``classes``: their classes, for a source of several."""
    made, skipped = views_and_skips(
        detector, X, labels, origin=origin, names=names, classes=classes
    )
    for reason in skipped:
        logger.info("view not logged, %s", reason)
    return made


def views_and_skips(
    detector: Any,
    X: Any,
    labels: np.ndarray | None = None,
    condition: np.ndarray | None = None,
    origin: pd.DataFrame | None = None,
    names: Sequence[str] | None = None,
    classes: Sequence[str] | None = None,
    scores: np.ndarray | None = None,
    count: int = ViewConfig.count,
) -> tuple[list[View], list[str]]:
    """The standard views that can be drawn, and ``"<kind>: <why not>"`` for the others
    (the kind as `anomaly-vae view KIND` names it, e.g. ``"manifold: ..."``).
    ``condition``: ``(c,)`` for a conditional model's generation (without it, none for
    tables and a block of rows per class for images) and manifold (without it, the first row's).
    ``origin``: where each row of a table X was read (:func:`row_name`), to name rows by;
    ``names``: ``(n,)`` the name of each image of X (:func:`image_names`); ``classes``:
    ``(n,)`` the class of each, for a source of several (their CSVs' ``class``);
    ``scores``: ``(n,)`` X's anomaly scores when scored already; ``count``: how many
    samples the generation draws."""
    with data_warned_once(detector, X):
        return _views_and_skips(
            detector, X, labels, condition, origin, names, classes, scores, count
        )


@contextlib.contextmanager
def data_warned_once(detector: Any, X: Any) -> Iterator[None]:
    """Give a table X's warnings about its data (a column the model ignores, an unseen
    category) once, from one read of X, and gather and drop those of the reads within:
    each view reads X again, and `view all` gave an ignored column's warning six times.
    A table X the model cannot read (a missing column) raises its DataError here, before
    anything is drawn. Images warn as they are read, not here."""
    if X is not None and not _is_image(detector):
        detector.transform_features(X)
    with warnings_per_file():  # gathered here and dropped
        yield


def _views_and_skips(
    detector: Any,
    X: Any,
    labels: np.ndarray | None,
    condition: np.ndarray | None,
    origin: pd.DataFrame | None,
    names: Sequence[str] | None,
    classes: Sequence[str] | None,
    scores: np.ndarray | None = None,
    count: int = ViewConfig.count,
) -> tuple[list[View], list[str]]:
    """:func:`views_and_skips`, its warnings about X not yet dealt with."""
    made: list[View] = []
    skipped: list[str] = []
    if detector.model_.condition_dim and condition is None and not _is_image(detector):
        skipped.append("generate: a conditional model generates for a condition (--condition)")
    else:
        made.append(generation(detector, count, condition))
    makers = [
        (
            "reconstruct",
            lambda: reconstructions(
                detector, X, origin=origin, names=names, classes=classes, scores=scores
            ),
        ),
        ("latents", lambda: latent_scatter(detector, X, labels, scores)),
        ("manifold", lambda: manifold(detector, X, condition=condition, labels=labels)),
        (
            "traversal",
            lambda: traversal(
                detector, X, origin=origin, names=names, classes=classes, labels=labels
            ),
        ),
        (
            "interpolation",
            lambda: interpolation(
                detector, X, origin=origin, names=names, classes=classes, labels=labels
            ),
        ),
    ]
    for kind, make in makers:
        try:
            made.append(make())
        except DataError as exc:  # e.g. a discrete latent, or a single row
            skipped.append(f"{kind}: {exc}")
    return made, skipped


def _take(X: Any, rows: np.ndarray) -> Any:
    from anomaly_vae.data import take_rows

    return take_rows(X, rows)
