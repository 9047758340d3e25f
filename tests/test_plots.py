"""The review figures: what a reader needs is in them (read from matplotlib's objects)."""

import numpy as np

from anomaly_vae import plots


def _evaluation(auroc: float = 1.0) -> dict:
    """A perfect detector's evaluation, as calibration.evaluate returns it."""
    return {
        "auroc": auroc,
        "aucpr": auroc,
        "auroc_interval": [auroc, auroc],
        "aucpr_interval": [0.9, auroc],
        "interval_level": 0.95,
        "n_normal": 80,
        "n_anomalous": 40,
        "threshold": 23.47,
        "false_positive_rate": 0.0,
        "recall": 1.0,
        "precision": 1.0,
        "curves": {
            "roc": {"fpr": [0.0, 0.0, 1.0], "tpr": [0.0, 1.0, 1.0]},
            "pr": {"recall": [1.0, 1.0, 0.0], "precision": [0.33, 1.0, 1.0]},
        },
    }


def test_a_long_tail_of_anomalies_gets_a_log_axis_that_keeps_the_normal_rows_apart():
    rng = np.random.default_rng(0)
    normal = rng.uniform(7, 25, size=48)  # negative ELBOs in nats
    anomalous = rng.uniform(80, 320, size=40)
    fig = plots.score_histogram(normal, 23.5, "negative_elbo", anomalous)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert "nats per row" in ax.get_xlabel() and "log scale" in ax.get_xlabel()
    # Log bins: the normal rows fill many bins, not the first two or three.
    normal_bars = [bar for bar in ax.containers[1] if bar.get_height() > 0]
    assert len(normal_bars) >= 10
    # Headroom above the bars for the legend in the upper corner.
    tallest = max(bar.get_height() for bars in ax.containers for bar in bars)
    assert ax.get_ylim()[1] >= plots.HISTOGRAM_HEADROOM * tallest * 0.999
    assert "threshold = 23.5" in [text.get_text() for text in ax.get_legend().get_texts()]
    plots.close(fig)


def test_scores_near_zero_or_negative_stay_on_a_linear_axis():
    rng = np.random.default_rng(1)
    # Negative ELBOs of images can be negative; an ensemble's percentiles start near 0.
    for normal, anomalous, name in [
        (rng.uniform(-170, -40, 31), rng.uniform(-50, 300, 40), "negative_elbo"),
        (rng.uniform(0.02, 1.0, 48), rng.uniform(1.3, 5.5, 40), "ensemble_rank"),
    ]:
        fig = plots.score_histogram(normal, float(normal.max()), name, anomalous)
        assert fig.axes[0].get_xscale() == "linear", name
        plots.close(fig)


def test_normal_rows_crowded_by_a_long_tail_that_log_cannot_draw_get_a_symlog_axis():
    # make demo's held-out normal rows (negative ELBOs in nats, two of them negative) and
    # its labelled anomalies, up to 42,000: on a linear axis 94% of the normal rows fell
    # into the first of 50 bins, and a log axis cannot take the negative scores.
    normal = np.r_[
        [-1.28, -0.49, 4.51, 4.52, 5.85, 5.86, 7.66, 7.85, 7.97, 8.65, 9.55, 11.27],
        [15.09, 15.15, 18.77, 18.86, 20.32, 22.13, 22.16, 22.79, 23.48, 25.09, 25.73],
        [32.66, 38.16, 42.13, 43.25, 57.8, 59.74, 65.17, 72.65, 72.72, 87.95, 107.06, 379.83],
    ]
    anomalous = np.exp(np.random.default_rng(5).uniform(np.log(15.8), np.log(42162), 165))
    fig = plots.score_histogram(normal, 379.83, "negative_elbo", anomalous)
    ax = fig.axes[0]
    assert ax.get_xscale() == "symlog"
    assert "log scale beyond" in ax.get_xlabel()
    normal_bars = [bar.get_height() for bar in ax.containers[1]]
    assert max(normal_bars) < 0.2  # the largest bin's share of the normal rows
    assert sum(height > 0 for height in normal_bars) >= 10
    low, high = ax.get_xlim()
    assert low <= -1.28 and low > -2  # every normal row drawn, no empty decades below 0
    assert high >= 379.83
    ticks = [tick for tick in ax.get_xticks() if low <= tick <= high]
    assert ticks == [0, 10, 100, 1000, 10000][: len(ticks)]  # none crowded around 0
    plots.close(fig)


def test_roc_and_pr_name_the_threshold_and_show_a_perfect_curve_inside_the_frame():
    for make in (plots.roc_curve, plots.pr_curve):
        fig = make(_evaluation())
        ax = fig.axes[0]
        legend = [text.get_text() for text in ax.get_legend().get_texts()]
        assert "chosen threshold (23.47)" in legend
        assert any(label.startswith("chance") for label in legend)
        shown = (
            "AUROC 100.00% (95% interval 100.00"
            if make is plots.roc_curve
            else "AUCPR 100.00% (95% interval 90.00 to 100.00)"
        )
        assert any(shown in label for label in legend)
        # Curves on 0 and 1 are drawn inside the frame, and the point is never clipped.
        assert ax.get_xlim()[0] < 0 < 1 < ax.get_xlim()[1]
        assert ax.get_ylim()[0] < 0 < 1 < ax.get_ylim()[1]
        assert not ax.collections[0].get_clip_on()
        plots.close(fig)


def test_latent_scatter_titles_fit_and_axes_give_the_variance_share():
    latents = np.random.default_rng(2).normal(size=(60, 8)) * np.arange(8, 0, -1)
    groups = np.array(["normal"] * 40 + ["anomalous"] * 20, dtype=object)
    fig = plots.latent_scatter(
        latents, groups, "Latent means of validation rows and labelled anomalies"
    )
    ax = fig.axes[0]
    # The projection's note on a line of its own, where it was cut off at the right.
    assert ax.get_title().split("\n") == [
        "Latent means of validation rows and labelled anomalies",
        "(PCA of 8 latent dimensions)",
    ]
    assert ax.get_xlabel().startswith("principal component 1 (")
    assert ax.get_xlabel().endswith("% of variance)")
    # Told apart by marker as well as colour.
    markers = {tuple(c.get_paths()[0].vertices.round(3).ravel()) for c in ax.collections}
    assert len(markers) == 2
    plots.close(fig)


def test_latent_scatter_by_score_uses_a_log_colour_scale_for_a_long_tail():
    rng = np.random.default_rng(3)
    latents = rng.normal(size=(200, 2))
    scores = np.r_[rng.uniform(7, 25, 180), rng.uniform(80, 320, 20)]
    fig = plots.latent_scatter_by_score(latents, scores, "negative_elbo", "Latent means")
    points = fig.axes[0].collections[0]
    assert type(points.norm).__name__ == "LogNorm"
    assert "nats per row" in fig.axes[1].get_ylabel()  # the colour bar
    assert fig.axes[0].get_xlabel() == "z[0]"
    plots.close(fig)


def test_a_symlog_axis_of_positive_scores_numbers_the_bulk_in_plain_numbers():
    # As a 6_cardio model's 400 held-out normal rows: negative ELBOs of 10 to 3,567 nats,
    # median 20, a long tail. Its axis was ticked at 100 and 1,000 only, none under the
    # bulk (10 to 100), and labelled ten thousand "1e+04".
    rng = np.random.default_rng(7)
    normal = np.r_[10 + rng.lognormal(np.log(10), 0.5, 380), np.geomspace(100, 3567, 20)]
    anomalous = np.geomspace(30, 15000, 100)
    fig = plots.score_histogram(normal, 3521.8, "negative_elbo", anomalous)
    ax = fig.axes[0]
    assert ax.get_xscale() == "symlog"
    fig.canvas.draw()
    low, high = ax.get_xlim()
    ticks = [tick for tick in ax.get_xticks() if low <= tick <= high]
    assert min(ticks) <= np.median(normal)  # a number under the bulk of the normal rows
    labels = [label.get_text() for label in ax.get_xticklabels() if label.get_text()]
    assert "10,000" in labels and not any("e+" in label for label in labels)
    plots.close(fig)


def test_latent_scatter_by_score_keeps_the_bulk_apart_beside_a_few_extreme_anomalies():
    # Negative ELBOs of normal rows near 0 (some negative, so no log scale) and five
    # anomalies up to 600,000, as a VAE scored a table with a few extreme rows: on a
    # linear colour scale the middle 80% of the other rows took 0.0% of it, one colour.
    rng = np.random.default_rng(6)
    latents = rng.normal(size=(305, 2))
    bulk = rng.normal(1.0, 2.0, 300)
    scores = np.r_[bulk, [7e4, 1e5, 2.4e5, 4.2e5, 6.1e5]]
    fig = plots.latent_scatter_by_score(latents, scores, "negative_elbo", "Latent means")
    norm = fig.axes[0].collections[0].norm
    low, high = np.quantile(bulk, [0.1, 0.9])
    assert norm(high) - norm(low) > 0.15  # of the colour scale
    assert norm(6.1e5) == 1.0 and norm(1e5) < 1.0  # the anomalies still ordered
    label = fig.axes[1].get_ylabel()
    assert "log scale beyond" in label and "nats per row" in label
    ticks = [t for t in fig.axes[1].get_yticks() if scores.min() <= t <= scores.max()]
    assert ticks == [0, 10, 100, 1000, 10000, 100000]  # as the histogram's symlog axis
    plots.close(fig)
    # Scores a linear scale shows well keep it.
    fig = plots.latent_scatter_by_score(latents, bulk, "negative_elbo", "Latent means")
    assert type(fig.axes[0].collections[0].norm).__name__ == "Normalize"
    plots.close(fig)


def test_image_scores_are_labelled_per_image_not_per_row():
    # An image model's histogram and scatter said "nats per row" and "calibration rows".
    rng = np.random.default_rng(4)
    normal = rng.normal(10, 1, 100)
    fig = plots.score_histogram(normal, 12.0, "negative_elbo", normal + 5, item="image")
    ax = fig.axes[0]
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert "nats per image" in ax.get_xlabel() and "images per bin" in ax.get_ylabel()
    assert any(label.startswith("normal (calibration images)") for label in legend), legend
    assert "row" not in " ".join([ax.get_xlabel(), ax.get_ylabel(), *legend])
    plots.close(fig)
    latents = rng.normal(size=(100, 2))
    fig = plots.latent_scatter_by_score(latents, normal, "elbo_latent_knn", "t", item="image")
    assert "typical normal image" in fig.axes[1].get_ylabel()
    plots.close(fig)
    for make in (plots.roc_curve, plots.pr_curve):
        fig = make(_evaluation(), item="image")
        assert fig.axes[0].get_title().endswith("(labelled evaluation images)")
        plots.close(fig)


def test_long_titles_are_wrapped_to_the_figure():
    title = "Traversal of latent dimensions 0..7 over [-3, 3] around the first row (one row each)"
    lines = plots.wrap_title(title, 4.8, 10).split("\n")
    assert len(lines) == 2 and " ".join(lines) == title


def test_titles_are_wrapped_at_spaces_only():
    # textwrap broke at hyphens and inside words longer than a line: an image's path came
    # out as "/tmp/pytest-of-" over "root/pytest-12/...", two names that are neither.
    path = "/tmp/pytest-of-root/pytest-12/test_traversal_and_interp0/check/shoe0.png"
    title = f"Interpolation between {path} and {path.replace('0.png', '1.png')} (10 steps)"
    wrapped = plots.wrap_title(title, 4.8, 10)
    assert len(wrapped.split("\n")) > 2 and wrapped.split() == title.split()
    assert path in wrapped.split("\n")


def test_a_discrete_latents_scatter_title_stays_inside_the_figure():
    # VQ-VAE's scatter titles carry a note on the quantised latent; coloured by score the
    # title ran past both sides of the figure, so the note was cut (the file is saved
    # at the figure's size, views.save_view).
    from types import SimpleNamespace

    from anomaly_vae.views import latent_title

    vq = SimpleNamespace(model_=SimpleNamespace(continuous_latent=False))
    title = latent_title(vq, "Latent means")
    latents = np.random.default_rng(0).normal(size=(50, 6))
    figures = [
        plots.latent_scatter_by_score(
            latents, np.arange(50.0), "negative_elbo", f"{title} coloured by anomaly score"
        ),
        plots.latent_scatter(latents, np.array(["normal", "anomalous"] * 25), title),
    ]
    for fig in figures:
        fig.set_dpi(plots.DPI)
        fig.canvas.draw()
        extent = fig.axes[0].title.get_window_extent()
        assert extent.x0 >= 0 and extent.x1 <= fig.bbox.width, fig.axes[0].get_title()
        assert plots.DISCRETE_LATENT_NOTE in fig.axes[0].get_title().replace("\n", " ")
        plots.close(fig)
