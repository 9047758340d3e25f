"""The classic VAE views: every kind for tables and images, the CLI, logging to a run."""

import datetime
import shutil

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from anomaly_vae import VAEDetector, views
from anomaly_vae.errors import DataError
from tests.conftest import correlated_normal, mixed_table, tiny_config
from tests.test_images import IMAGE_MODEL, bars


@pytest.fixture(autouse=True)
def close_figures():
    """The view functions hand their figures to the caller, here the test; closed after
    each test so that the suite does not pile up open figures."""
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def table_detector():
    config = tiny_config("data.id_column=reading_id", "data.label_column=is_fault")
    return VAEDetector(config.detector_config()).fit(mixed_table(600, seed=0))


@pytest.fixture(scope="module")
def image_detector():
    config = tiny_config("model.name=conv-vae", *IMAGE_MODEL)
    return VAEDetector(config.detector_config()).fit(bars(300, seed=0))


def test_every_table_view_is_written_with_tables_in_original_units(table_detector, tmp_path):
    test = mixed_table(200, seed=1, anomalies=20)
    made = views.standard_views(table_detector, test, test["is_fault"].to_numpy() == 1)
    names = [v.name for v in made]
    assert names == sorted(names) and len(names) == 6
    paths = [p for v in made for p in views.save_view(v, tmp_path)]
    assert all(p.stat().st_size > 1000 for p in paths if p.suffix == ".png")
    generated = pd.read_csv(tmp_path / "01_generated.csv")
    assert list(generated.columns) == ["machine", "temperature", "load", "vibration"]
    assert set(generated["machine"]) <= {"press", "lathe", "drill"}
    assert 40 < generated["temperature"].median() < 80  # original units (training mean 60)
    # machine is in the CSV, but a histogram panel draws numbers only: the title says so.
    assert (
        made[0]
        .figure.get_suptitle()
        .replace("\n", " ")
        .endswith("(1 categorical column not drawn; all in the CSV)")
    )


def test_reconstruction_view_names_the_broken_columns(table_detector):
    test = mixed_table(200, seed=1, anomalies=20)
    view = views.reconstructions(table_detector, test, count=10)
    table = view.table
    assert table["score"].is_monotonic_decreasing
    assert set(test["is_fault"].iloc[table["row"] - 1]) == {1}  # the worst rows are the faults
    surprise = table.filter(like="surprise:").mean()
    # Faults break the load-temperature relation: those two columns carry the surprise.
    assert set(surprise.nlargest(2).index) == {"surprise:load", "surprise:temperature"}
    assert "reconstructed:load" in table.columns


def test_the_reconstruction_heat_map_shows_every_row_beside_an_extreme_one(table_detector):
    # One row far off (load 1,000 standard deviations out) put thousands of nats in one
    # cell: on a linear colour scale every other cell of the map was black.
    test = mixed_table(200, seed=1, anomalies=20)
    test.loc[test.index[0], "load"] = 5e3
    view = views.reconstructions(table_detector, test, count=10)
    image = view.figure.axes[0].images[0]
    surprise = view.table.filter(like="surprise:").to_numpy()
    assert surprise.max() > 1e3 * np.median(surprise[1:].max(axis=1))  # one row stands out
    colours = image.norm(surprise[1:].max(axis=1))  # the others' worst cells, in [0, 1]
    assert colours.min() > 0.1  # not black (linear: under 0.01)
    assert "log scale beyond" in view.figure.axes[-1].get_ylabel()
    # Without such a row the scale stays linear, as its label says.
    calm = views.reconstructions(table_detector, mixed_table(200, seed=2), count=10)
    assert calm.table.filter(like="surprise:").to_numpy().max() < 100
    assert "log" not in calm.figure.axes[-1].get_ylabel()


def test_table_views_name_their_axes_units_and_rows(table_detector):
    test = mixed_table(200, seed=1, anomalies=20)
    manifold = views.manifold(table_detector, test)  # a 2-D latent: the grid is on z
    panel = manifold.figure.axes[0]
    assert (panel.get_xlabel(), panel.get_ylabel()) == ("z[0]", "z[1]")
    assert manifold.figure.axes[-1].get_ylabel() == "decoded (original units)"  # colour bar
    assert panel.images[0].get_cmap().name == "viridis"  # sequential: no false midpoint

    # One legend beside the panels, not over the first panel's lines.
    traversal = views.traversal(table_detector, test)
    assert len(traversal.figure.legends) == 1
    assert all(ax.get_legend() is None for ax in traversal.figure.axes)

    # The interpolation's lines are in training standard deviations, so they compare:
    # each column's own change along the path would take every line to +-1.
    interpolation = views.interpolation(table_detector, test)
    ax = interpolation.figure.axes[0]
    assert ax.get_ylabel() == "change from position 0 (training standard deviations)"
    scale = {c.name: c.scale for c in table_detector.preprocessor_.columns}["load"]
    load = interpolation.table["load"].to_numpy()
    line = next(line for line in ax.get_lines() if line.get_label() == "load")
    np.testing.assert_allclose(line.get_ydata(), (load - load[0]) / scale, rtol=1e-5)

    # Rows by id (at fit the rows are a sample, whose positions say nothing); features
    # without surprise in any row shown are left out of the figure, not of the CSV.
    reconstruction = views.reconstructions(table_detector, test, count=5)
    ax = reconstruction.figure.axes[0]
    ids = reconstruction.table["reading_id"]
    assert [t.get_text().split(" (")[0] for t in ax.get_yticklabels()] == [
        f"reading_id {i}" for i in ids
    ]
    shown = [t.get_text() for t in ax.get_xticklabels()]
    surprise = reconstruction.table.filter(like="surprise:")
    quiet = surprise.columns[surprise.max() < views.SURPRISE_SHOWN_MIN_NATS]
    assert not {name.removeprefix("surprise:") for name in quiet} & set(shown)
    assert len(shown) + len(quiet) == surprise.shape[1]
    for view in (manifold, traversal, interpolation, reconstruction):
        views.plots.close(view.figure)


def test_image_grids_label_their_rows_and_columns_and_wrap_the_title(image_detector):
    test = np.concatenate([bars(30, seed=1), bars(5, seed=2, vertical=True)])
    traversal = views.traversal(image_detector, test)
    ax = traversal.figure.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["z[0]", "z[1]", "z[2]", "z[3]"]
    assert [t.get_text() for t in ax.get_xticklabels()][::4] == ["-3", "0", "3"]
    title = traversal.figure.get_suptitle()
    assert "\n" in title  # wrapped: it ran off both sides of the figure
    assert title.replace("\n", " ").endswith("(one row per dimension)")

    manifold = views.manifold(image_detector, test)  # a 4-D latent: principal directions
    ax = manifold.figure.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == (
        "principal direction 1",
        "principal direction 2",
    )
    assert [t.get_text() for t in ax.get_yticklabels()] == ["3", "0", "-3"]  # 3 on top
    axes_only = views.manifold(image_detector)  # no DATA: the first two latent axes
    assert "of z[0] and z[1], the other 2 dimensions at 0" in (
        axes_only.figure.get_suptitle().replace("\n", " ")
    )
    views.plots.close(axes_only.figure)

    reconstruction = views.reconstructions(image_detector, test, count=4)
    labels = [t.get_text() for t in reconstruction.figure.axes[0].get_xticklabels()]
    assert labels == ["input", "recon."] * 4
    for view in (traversal, manifold, reconstruction):
        views.plots.close(view.figure)


def test_the_most_anomalous_images_are_named_with_their_scores(image_detector, tmp_path):
    """The reconstructions view of images showed the worst images and named none: a
    reviewer saw that some looked wrong, not which files they were. Its CSV names them in
    the grid's reading order, as `score` names images, from `view` and from a fit's run."""
    from PIL import Image

    from anomaly_vae.cli import main
    from anomaly_vae.fitting import TrainingData
    from anomaly_vae.tracking import _log_views

    folder = tmp_path / "check"
    folder.mkdir()
    images = np.concatenate([bars(6, seed=1), bars(2, seed=2, vertical=True)])
    for i, image in enumerate(images):
        Image.fromarray(image[0]).save(folder / f"{'odd' if i >= 6 else 'ok'}{i}.png")
    image_detector.save(tmp_path / "model")
    model, out = str(tmp_path / "model"), str(tmp_path / "v")
    result = CliRunner().invoke(
        main, ["view", "reconstruct", str(folder), "--model", model, "--out", out]
    )
    assert result.exit_code == 0, result.output
    assert f"wrote {tmp_path / 'v' / '02_reconstructions.csv'}" in result.output
    table = pd.read_csv(tmp_path / "v" / "02_reconstructions.csv")
    scores = image_detector.anomaly_score(images)
    names = [str(folder / f"{'odd' if i >= 6 else 'ok'}{i}.png") for i in range(8)]
    assert table["rank"].tolist() == list(range(1, 9))
    assert table["image"].tolist() == [names[i] for i in np.argsort(-scores)]
    np.testing.assert_allclose(table["score"], np.sort(scores)[::-1])
    assert set(table["image"][:2]) == {names[6], names[7]}  # the vertical bars first
    # Arrays, named by their place in X; a fit's logged view by the image files.
    shown = views.reconstructions(image_detector, images, count=3).table
    assert shown is not None and shown["image"].tolist() == [
        f"image {i + 1}" for i in np.argsort(-scores)[:3]
    ]
    # The data the fixture was fit on, as a folder of files f0.png ... would give it.
    data = TrainingData(bars(300, seed=0), train_names=[f"f{i}.png" for i in range(300)])
    _log_views(image_detector, data, 300, tmp_path / "run")
    logged = pd.read_csv(tmp_path / "run" / "views" / "02_reconstructions.csv")
    validation = image_detector.split_rows_["validation"]
    worst = validation[np.argsort(-image_detector.anomaly_score(data.train[validation]))]
    assert logged["image"].tolist() == [f"f{i}.png" for i in worst[:16]]


def test_view_help_says_image_models_write_csv_files_too():
    """`view --help` said CSV files were written for table models only, but an image
    model's reconstructions, traversal and interpolation write CSVs naming the images."""
    from anomaly_vae.cli import main

    result = CliRunner().invoke(main, ["view", "--help"], terminal_width=200)
    assert result.exit_code == 0
    out = " ".join(result.output.split())
    assert "for table models, CSV files" not in out
    assert "an image model's names of the images shown" in out


def test_traversal_and_interpolation_name_the_images_they_start_from(image_detector, tmp_path):
    """The traversal and interpolation of an image model started from "the first input"
    and "two inputs", named nowhere: a reader could not tell which files they were (the
    first in sorted order from `view`, a seeded sample's at fit). Their titles and CSVs
    name them as `score` does, from `view`, from Python and from a fit's run."""
    from PIL import Image

    from anomaly_vae.cli import main
    from anomaly_vae.fitting import TrainingData
    from anomaly_vae.tracking import _log_views

    folder = tmp_path / "check"
    folder.mkdir()
    images = bars(3, seed=1)
    for i, image in enumerate(images):
        Image.fromarray(image[0]).save(folder / f"shoe{i}.png")
    image_detector.save(tmp_path / "model")
    first, second = str(folder / "shoe0.png"), str(folder / "shoe1.png")
    for kind in ("traversal", "interpolation"):
        result = CliRunner().invoke(
            main,
            [
                "view",
                kind,
                str(folder),
                "--model",
                str(tmp_path / "model"),
                "--out",
                str(tmp_path / "v"),
            ],
        )
        assert result.exit_code == 0, result.output
    traversed = pd.read_csv(tmp_path / "v" / "05_traversal.csv")
    assert traversed["image"].tolist() == [first]
    ends = pd.read_csv(tmp_path / "v" / "06_interpolation.csv")
    assert ends.to_dict("list") == {"weight": [0.0, 1.0], "image": [first, second]}
    # Named in the figures too, where a reader of the PNG looks (titles are wrapped).
    given = ["check/shoe0.png", "check/shoe1.png", "check/shoe2.png"]
    traversal = views.traversal(image_detector, images, names=given)
    assert "around check/shoe0.png (one row" in traversal.figure.get_suptitle().replace("\n", " ")
    interpolation = views.interpolation(image_detector, images, names=given)
    assert "between check/shoe0.png and check/shoe1.png in" in (
        interpolation.figure.get_suptitle().replace("\n", " ")
    )
    # Arrays, by their place in X.
    assert views.traversal(image_detector, images).table["image"].tolist() == ["image 1"]
    assert views.interpolation(image_detector, images).table["image"].tolist() == [
        "image 1",
        "image 2",
    ]
    # A fit's logged views: the first two images of its (sorted) sample of validation images.
    data = TrainingData(bars(300, seed=0), train_names=[f"f{i}.png" for i in range(300)])
    _log_views(image_detector, data, 20, tmp_path / "run")
    validation = image_detector.split_rows_["validation"]
    assert len(validation) > 20  # so that the views see a sample of them, as at fit
    chosen = np.sort(np.random.default_rng(0).choice(len(validation), 20, replace=False))
    start = validation[chosen]
    logged = pd.read_csv(tmp_path / "run" / "views" / "05_traversal.csv")
    assert logged["image"].tolist() == [f"f{start[0]}.png"]
    logged = pd.read_csv(tmp_path / "run" / "views" / "06_interpolation.csv")
    assert logged["image"].tolist() == [f"f{start[0]}.png", f"f{start[1]}.png"]


def test_image_views_name_each_images_class_as_score_does(image_detector, tmp_path):
    """The views' CSVs named a torchvision image "test/1686" and no class, where `score`'s
    CSV gives each image's class for a source of several classes; they now do the same,
    from `view` and from a fit's run (a flat folder's, one class, have no such column)."""
    from anomaly_vae.cli import main
    from anomaly_vae.fitting import TrainingData
    from anomaly_vae.tracking import _log_views

    folder = class_folders(tmp_path / "imgs", normal=3, odd=2)
    model, out = str(image_detector.save(tmp_path / "m")), tmp_path / "v"
    scored = CliRunner().invoke(
        main, ["score", folder, "--model", model, "--output", str(tmp_path / "s.csv")]
    )
    assert scored.exit_code == 0, scored.output
    class_of = pd.read_csv(tmp_path / "s.csv").set_index("image")["class"]
    for kind in ("reconstruct", "traversal", "interpolation"):
        result = CliRunner().invoke(main, ["view", kind, folder, "--model", model, "--out", out])
        assert result.exit_code == 0, result.output
    shown = pd.read_csv(out / "02_reconstructions.csv")
    assert list(shown.columns) == ["rank", "image", "class", "score"]
    assert shown["class"].tolist() == class_of[shown["image"]].tolist()
    assert set(shown["class"]) == {"normal", "odd"}
    started = pd.read_csv(out / "05_traversal.csv")
    assert started.to_dict("list") == {"image": [class_of.index[0]], "class": ["normal"]}
    ends = pd.read_csv(out / "06_interpolation.csv")
    assert list(ends.columns) == ["weight", "image", "class"]
    assert ends["class"].tolist() == class_of[ends["image"]].tolist()
    # A fit's run: its images' classes, when they are of several.
    data = TrainingData(
        bars(300, seed=0),
        train_names=[f"f{i}.png" for i in range(300)],
        train_condition=np.array(["a", "b"] * 150, dtype=object),
    )
    _log_views(image_detector, data, 20, tmp_path / "run")
    logged = pd.read_csv(tmp_path / "run" / "views" / "06_interpolation.csv")
    assert [int(name[1:-4]) % 2 for name in logged["image"]] == [
        "ab".index(c) for c in logged["class"]
    ]


def test_image_grids_hold_long_image_names_within_the_figure(image_detector):
    """The traversal and interpolation name their images by path in the title; a path is
    never split, and one wider than the grid (a camera's folder of images) ran off both
    sides of the figure, the file names cut off."""
    images = bars(3, seed=1)
    folder = "/data/production_line_3_camera_2_inspection_images_2026-12-07_shift_morning"
    names = [f"{folder}/img{i:04d}.png" for i in range(3)]
    for view in (
        views.traversal(image_detector, images, names=names),
        views.interpolation(image_detector, images, names=names),
    ):
        figure = view.figure
        figure.canvas.draw()  # lays out the axis label under the tick labels
        renderer = figure.canvas.get_renderer()
        texts = [figure._suptitle, figure.axes[0].xaxis.label]
        for text in texts:
            assert text is not None and text.get_text()
            box = text.get_window_extent(renderer)
            assert box.x0 >= 0 and box.x1 <= figure.bbox.width, (text.get_text(), box)
            assert box.y0 >= 0 and box.y1 <= figure.bbox.height, (text.get_text(), box)
        assert names[0] in figure.get_suptitle().replace("\n", " ")
    # The interpolation named both paths in its title and again in its x label, which
    # wrapped to lines of its own under the grid: each is named once, in the title, and
    # the label says which end is which by their order there.
    figure = views.interpolation(image_detector, images, names=names).figure
    texts = [figure.get_suptitle(), figure.axes[0].get_xlabel()]
    for name in names[:2]:
        assert sum(text.replace("\n", " ").count(name) for text in texts) == 1, texts
    assert (
        figure.get_suptitle()
        .replace("\n", " ")
        .startswith(f"Interpolation between {names[0]} and {names[1]} in latent space")
    )
    assert texts[1] == "position (0 = the first image, 1 = the second; both decoded)"


def test_a_table_interpolation_names_its_rows_once_in_the_title(table_detector):
    """The table interpolation named its first row in the title and again in its y label
    (`change from plant.csv row 4 (...)`), as the image one named both ends twice: the
    rows are named once, in the title, and the labels say what the axes are."""
    test = mixed_table(6, seed=1)
    origin = pd.DataFrame({"file": ["plant.csv"] * 6, "row": [4, 9, 12, 15, 20, 31]})
    figure = views.interpolation(table_detector, test, origin=origin).figure
    ax = figure.axes[0]
    texts = [ax.get_title().replace("\n", " "), ax.get_xlabel(), ax.get_ylabel()]
    assert texts[0].startswith(
        "Interpolation between plant.csv row 4 and plant.csv row 9 in latent space"
    )
    for name in ("plant.csv row 4", "plant.csv row 9"):
        assert sum(text.count(name) for text in texts) == 1, texts
    assert texts[1:] == [
        "position (0 = the first row, 1 = the second; both decoded)",
        "change from position 0 (training standard deviations)",
    ]
    views.plots.close(figure)


def test_traversal_and_interpolation_start_from_normal_rows_when_labels_are_known(
    image_detector, table_detector, tmp_path
):
    """With --normal-class 7 on Fashion-MNIST the traversal and interpolation started
    from test/0 and test/1, anomalies for that model; given labels they now start from
    the first normal images (rows), and from the first ones without labels."""
    from anomaly_vae.cli import main

    folder = class_folders(tmp_path / "imgs", normal=3, odd=3)  # normal/ sorts first
    model, out = str(image_detector.save(tmp_path / "m")), tmp_path / "v"
    for kind in ("traversal", "interpolation"):
        args = ["view", kind, folder, "--model", model, "--out", str(out)]
        result = CliRunner().invoke(main, [*args, "--normal-class", "odd"])
        assert result.exit_code == 0, result.output
    odd = [str(tmp_path / "imgs" / "odd" / f"{i}.png") for i in range(2)]
    assert pd.read_csv(out / "05_traversal.csv")["image"].tolist() == odd[:1]
    assert pd.read_csv(out / "06_interpolation.csv")["image"].tolist() == odd
    unlabelled = CliRunner().invoke(
        main, ["view", "traversal", folder, "--model", model, "--out", str(tmp_path / "u")]
    )
    assert unlabelled.exit_code == 0, unlabelled.output
    started = pd.read_csv(tmp_path / "u" / "05_traversal.csv")["image"]
    assert started.tolist() == [str(tmp_path / "imgs" / "normal" / "0.png")]
    # Tables: a first row labelled anomalous is passed over, and the rows are named.
    test = mixed_table(20, seed=1)
    labels = np.zeros(len(test), bool)
    labels[[0, 2]] = True
    traversal = views.traversal(table_detector, test, labels=labels)
    assert " around row 2 (one line" in traversal.figure.get_suptitle().replace("\n", " ")
    ax = views.interpolation(table_detector, test, labels=labels).figure.axes[0]
    assert "between row 2 and row 4 in" in ax.get_title().replace("\n", " ")
    # Named in the title, not again along the x axis.
    assert ax.get_xlabel() == "position (0 = the first row, 1 = the second; both decoded)"
    assert ax.get_ylabel() == "change from position 0 (training standard deviations)"
    # Too few normal rows: the anomalies follow them.
    assert views.interpolation(
        image_detector, bars(3, seed=1), labels=np.array([1, 0, 1], bool)
    ).table["image"].tolist() == ["image 2", "image 1"]


def test_image_views_and_discrete_latents(image_detector, tmp_path):
    test = np.concatenate([bars(30, seed=1), bars(5, seed=2, vertical=True)])
    # The CSVs of image views name the images they show or start from; the others have none.
    with_names = {"02_reconstructions", "05_traversal", "06_interpolation"}
    for view in views.standard_views(image_detector, test):
        path, *table = views.save_view(view, tmp_path)
        assert path.stat().st_size > 1000
        named = [f"{view.name}.csv"] if view.name in with_names else []
        assert [t.name for t in table] == named
    vq = VAEDetector(tiny_config("model.name=vq-vae", "training.epochs=2").detector_config())
    vq.fit(mixed_table(100, seed=0).drop(columns=["reading_id", "is_fault"]))
    with pytest.raises(DataError, match="discrete latent: no manifold"):
        views.manifold(vq)
    # Named by KIND, as `anomaly-vae view all` prints them ("skipped manifold: ...").
    _, skipped = views.views_and_skips(vq, mixed_table(20, seed=1))
    assert [s.split(":")[0] for s in skipped] == ["manifold", "traversal", "interpolation"]
    # The CLI says why before asking for DATA the view could not use ("needs DATA" before)
    from anomaly_vae.cli import main

    vq.save(tmp_path / "vq")
    result = CliRunner().invoke(main, ["view", "traversal", "--model", str(tmp_path / "vq")])
    assert result.exit_code == 1 and "discrete latent: no traversal" in result.output, result.output


def test_view_count_defaults_to_the_view_config_as_help_shows():
    """--count's default (64) was the one CLI default written in its option, and again
    in views.generation: both take ViewConfig.count, which --help shows."""
    import inspect

    from anomaly_vae.cli import main
    from anomaly_vae.config import ViewConfig
    from anomaly_vae.errors import ConfigError

    option = next(param for param in main.commands["view"].params if param.name == "count")
    assert option.default == ViewConfig.count == 64
    assert inspect.signature(views.generation).parameters["count"].default == ViewConfig.count
    shown = CliRunner().invoke(main, ["view", "--help"], terminal_width=200).output
    assert "generate (and all): how many samples. [default: 64; x>=1]" in " ".join(shown.split())
    with pytest.raises(ConfigError, match=r"^view\.count must be >= 1$"):
        ViewConfig(count=0)


def test_view_cli_writes_and_logs_to_the_models_run(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from anomaly_vae.cli import main
    from anomaly_vae.fitting import latest_model_dir

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    mixed_table(400, seed=0, anomalies=20).to_csv("train.csv", index=False)
    options = [f"--set={item}" for item in ("model.hidden_dims=[32]", "training.epochs=20")]
    fit = CliRunner().invoke(
        main,
        [
            "fit",
            "train.csv",
            "--label-col",
            "is_fault",
            "--id-col",
            "reading_id",
            "--set=tracking.log_views=false",
            "--quiet",
            *options,
        ],
    )
    assert fit.exit_code == 0, fit.output
    # A file of another model already in the folder must not reach this model's run.
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "01_generated.png").write_bytes(b"another model's view")
    # As on Python 3.10, which pyproject.toml supports: datetime.UTC came in 3.11.
    monkeypatch.delattr(datetime, "UTC", raising=False)
    result = CliRunner().invoke(main, ["view", "reconstruct", "train.csv", "--out", "v", "--log"])
    assert result.exit_code == 0, result.output
    assert not plt.get_fignums()  # the command closes what it drew
    assert (tmp_path / "v" / "02_reconstructions.png").is_file()
    run_id, folder = result.output.strip().split()[-3].rstrip(","), result.output.split()[-1]
    assert folder.startswith("views/added-")
    client = MlflowClient()
    assert [a.path for a in client.list_artifacts(run_id, "views")] == [folder.rstrip("/")]
    logged = {a.path for a in client.list_artifacts(run_id, folder.rstrip("/"))}
    added = {f"{folder}02_reconstructions.png", f"{folder}02_reconstructions.csv"}
    assert logged == added
    missing = CliRunner().invoke(main, ["view", "latents"])
    assert missing.exit_code == 2 and "needs DATA" in missing.output
    for count in ("0", "-3"):
        bad = CliRunner().invoke(main, ["view", "generate", "--count", count])
        assert bad.exit_code == 2 and "--count" in bad.output

    # --log finds the run before drawing: no files, one line, when it cannot.
    model = latest_model_dir(tmp_path)
    untracked = tmp_path / "untracked"
    shutil.copytree(model, untracked)
    (untracked / "mlflow_run_id").unlink()  # as a fit with --no-tracking leaves it
    args = ["view", "reconstruct", "train.csv", "--out", "w", "--log"]
    result = CliRunner().invoke(main, [*args, "--model", str(untracked)])
    assert result.exit_code == 1 and "no MLflow run is recorded" in result.output
    assert not (tmp_path / "w").exists()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    args[2] = str(tmp_path / "train.csv")
    result = CliRunner().invoke(main, [*args, "--model", str(model)])
    assert result.exit_code == 1 and "project folder where the model was fit" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert list(elsewhere.iterdir()) == []  # neither views nor an empty mlruns/ store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{elsewhere / 'other.db'}")
    result = CliRunner().invoke(main, [*args, "--model", str(model)])
    assert result.exit_code == 1 and "is not in this tracking store" in result.output
    assert not (elsewhere / "w").exists()


def test_view_colours_by_text_labels_with_the_anomaly_label_option(table_detector, tmp_path):
    from anomaly_vae.cli import main

    table_detector.save(tmp_path / "model")
    labelled = mixed_table(100, seed=1, anomalies=10)
    labelled["is_fault"] = labelled["is_fault"].map({0: "ok", 1: "fault"})
    labelled.to_csv(tmp_path / "labelled.csv", index=False)
    args = ["view", "latents", str(tmp_path / "labelled.csv"), "--model", str(tmp_path / "model")]
    args += ["--out", str(tmp_path / "v"), "--label-col", "is_fault"]
    refused = CliRunner().invoke(main, args)
    assert refused.exit_code == 1
    assert "name the value that marks an anomaly: --anomaly-label VALUE" in refused.output
    assert "--set" not in refused.output  # view has no --set
    drawn = CliRunner().invoke(main, [*args, "--anomaly-label", "fault"])
    assert drawn.exit_code == 0, drawn.output
    assert (tmp_path / "v" / "03_latent_scatter.png").is_file()
    unlabelled = CliRunner().invoke(main, [*args[:-2], "--anomaly-label", "fault"])
    assert unlabelled.exit_code == 2 and "--anomaly-label names a value of the --label-col" in (
        unlabelled.output
    )


@pytest.fixture(scope="module")
def cvae_detector():
    config = tiny_config(
        "model.name=cvae",
        "data.id_column=reading_id",
        "data.label_column=is_fault",
        "data.condition_columns=[machine]",
    )
    return VAEDetector(config.detector_config()).fit(mixed_table(600, seed=0))


def test_cvae_generates_for_a_chosen_condition(cvae_detector):
    detector = cvae_detector
    loads = {}
    for machine in ("drill", "lathe"):
        rows = views.generation(detector, 200, detector.condition_vector({"machine": machine}))
        loads[machine] = rows.table["load"].mean()
        assert set(rows.table["machine"]) == {machine}  # the condition is written back
        assert f"rows generated from the prior, given machine={machine}" in (
            rows.figure.get_suptitle().replace("\n", " ")
        )
        views.plots.close(rows.figure)
    # Normal loads sit 10 units apart between drills and lathes (offsets -5 and +5).
    assert loads["lathe"] - loads["drill"] > 5
    with pytest.raises(DataError, match=r"columns \(machine\), on the command line --condition"):
        views.generation(detector)
    # A bare value, as an image model takes its class, is not a table's condition.
    for bare in ("drill", 1):
        with pytest.raises(DataError, match=r"a value for each condition column \('machine'\)"):
            detector.condition_vector(bare)
    with pytest.raises(DataError, match="'bogus' is not a condition column of this model"):
        detector.condition_vector({"machine": "drill", "bogus": 1})


def test_view_refuses_a_malformed_repeated_or_unknown_condition(cvae_detector, tmp_path):
    from anomaly_vae.cli import main

    cvae_detector.save(tmp_path / "m")
    view = ["view", "generate", "--model", str(tmp_path / "m"), "--out", str(tmp_path / "v")]
    cases = [
        (["machine=drill", "machine=lathe"], 2, "--condition machine is given twice"),
        (["drill"], 2, "--condition 'drill': give COLUMN=VALUE"),
        (["machine=drill", "bogus=1"], 1, "'bogus' is not a condition column of this model"),
    ]
    for conditions, code, message in cases:
        arguments = [part for item in conditions for part in ("--condition", item)]
        result = CliRunner().invoke(main, [*view, *arguments])
        assert result.exit_code == code and message in result.output, result.output
    assert not (tmp_path / "v").exists()  # nothing drawn
    drawn = CliRunner().invoke(main, [*view, "--condition", "machine = drill"])
    assert drawn.exit_code == 0, drawn.output


def test_cvae_views_decode_for_the_datas_conditions(cvae_detector):
    test = mixed_table(50, seed=1)
    # The first two rows on two machines, so the interpolation moves between conditions.
    other = int(np.argmax(test["machine"] != test["machine"].iloc[0]))
    test = test.iloc[[0, other, *range(1, other), *range(other + 1, len(test))]]
    first, second = test["machine"].iloc[0], test["machine"].iloc[1]
    made, skipped = views.views_and_skips(cvae_detector, test)
    assert [v.name for v in made] == [
        "02_reconstructions",
        "03_latent_scatter",
        "04_manifold",
        "05_traversal",
        "06_interpolation",
    ]
    assert skipped == ["generate: a conditional model generates for a condition (--condition)"]
    tables = {v.name: v.table for v in made}
    assert set(tables["04_manifold"]["machine"]) == {first}  # the first row's condition
    assert set(tables["05_traversal"]["machine"]) == {first}
    ends = tables["06_interpolation"]["machine"]
    assert (ends.iloc[0], ends.iloc[-1]) == (first, second)  # each row's own condition
    # The title names both ends' conditions, as the traversal's names its one.
    interpolation = next(v for v in made if v.name == "06_interpolation")
    title = interpolation.figure.axes[0].get_title().replace("\n", " ")
    assert f", given machine={first} to machine={second}" in title
    with pytest.raises(DataError, match="needs a condition: pass DATA"):
        views.manifold(cvae_detector)
    chosen = cvae_detector.condition_vector({"machine": "drill"})
    drawn = views.manifold(cvae_detector, condition=chosen)
    assert set(drawn.table["machine"]) == {"drill"}
    assert ", given machine=drill: decoded value" in drawn.figure.get_suptitle().replace("\n", " ")
    views.plots.close(drawn.figure)


def test_a_cvae_manifold_decodes_for_the_first_normal_rows_condition(cvae_detector):
    # With labels, the traversal starts from the first normal row; the manifold took the
    # first row's condition all the same, an anomaly's when the data began with one.
    test = mixed_table(50, seed=1)
    other = int(np.argmax(test["machine"] != test["machine"].iloc[0]))
    test = test.iloc[[0, other, *range(1, other), *range(other + 1, len(test))]]
    labels = np.r_[True, np.zeros(len(test) - 1, bool)]  # the first row an anomaly
    normal_machine = test["machine"].iloc[1]
    assert normal_machine != test["machine"].iloc[0]
    made, _ = views.views_and_skips(cvae_detector, test, labels)
    tables = {v.name: v.table for v in made}
    assert set(tables["04_manifold"]["machine"]) == {normal_machine}
    assert set(tables["05_traversal"]["machine"]) == {normal_machine}
    for view in made:
        views.plots.close(view.figure)


def test_views_of_one_row_say_they_need_two(table_detector):
    one = mixed_table(5, seed=1).iloc[:1]
    for view in (views.interpolation, views.latent_scatter):
        with pytest.raises(DataError, match="at least 2 rows of DATA, got 1"):
            view(table_detector, one)
    assert len(views.traversal(table_detector, one).table) == 2 * 9  # one row is enough
    _, skipped = views.views_and_skips(table_detector, one)
    assert [s.split(":")[0] for s in skipped] == ["latents", "interpolation"]


def test_image_views_of_one_image_count_images(image_detector):
    with pytest.raises(DataError, match="at least 2 images of DATA, got 1"):
        views.interpolation(image_detector, bars(1, seed=3))


def test_manifold_tables_hold_grid_coordinates_and_a_1d_latent_is_one_line(table_detector):
    grid = views.manifold(table_detector, steps=5).table
    assert list(grid.columns[:2]) == ["z0", "z1"] and len(grid) == 25
    assert set(grid["z0"]) == set(grid["z1"]) == {-3.0, -1.5, 0.0, 1.5, 3.0}
    config = tiny_config("model.latent_dim=1", "training.epochs=2", "data.id_column=reading_id")
    line = VAEDetector(config.detector_config()).fit(
        mixed_table(100, seed=0).drop(columns="is_fault")
    )
    table = views.manifold(line, steps=7).table
    assert list(table.columns[:2]) == ["z0", "machine"] and len(table) == 7
    assert table["z0"].is_monotonic_increasing


def class_folders(root, normal: int, odd: int) -> str:
    """``root`` with subfolders ``normal`` (horizontal bars) and ``odd`` (vertical) of
    PNG images, as an ImageFolder holds classes."""
    from PIL import Image

    groups = {"normal": bars(normal, seed=1), "odd": bars(odd, seed=2, vertical=True)}
    for name, images in groups.items():
        (root / name).mkdir(parents=True)
        for i, pixels in enumerate(images):
            Image.fromarray(pixels[0]).save(root / name / f"{i}.png")
    return str(root)


def test_options_for_the_other_kind_of_data_are_refused(image_detector, tmp_path):
    from anomaly_vae.cli import main

    model = str(image_detector.save(tmp_path / "m"))
    images = class_folders(tmp_path / "imgs", normal=4, odd=4)
    latents = CliRunner().invoke(
        main, ["view", "latents", images, "--model", model, "--label-col", "x", "--out", "v"]
    )
    assert (
        latents.exit_code == 1
        and ("--label-col is for tables; for images, --normal-class names the normal classes")
        in latents.output
    )
    calibrate = ["calibrate", images, "--model", model, "--no-tracking"]
    labelled = CliRunner().invoke(
        main, [*calibrate, "--label-col", "x", "--normal-class", "normal"]
    )
    assert labelled.exit_code == 1 and "--label-col is for tables" in labelled.output
    assert not (tmp_path / "v").exists()


def test_view_colours_images_by_class_with_normal_class(image_detector, tmp_path, monkeypatch):
    """Images of several classes are coloured by label, as issue 5 asks ("by label when
    known"): --normal-class names the normal ones, as at fit and calibrate."""
    from anomaly_vae.cli import main

    model = str(image_detector.save(tmp_path / "m"))
    images = class_folders(tmp_path / "imgs", normal=4, odd=3)
    drawn_with = []
    latent_scatter = views.latent_scatter
    monkeypatch.setattr(
        views,
        "latent_scatter",
        lambda detector, X, labels=None, scores=None: (
            drawn_with.append(labels) or latent_scatter(detector, X, labels, scores)
        ),
    )
    out = tmp_path / "v"
    args = ["view", "latents", images, "--model", model, "--out", str(out)]
    result = CliRunner().invoke(main, [*args, "--normal-class", "normal"])
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(drawn_with[0], [False] * 4 + [True] * 3)
    assert (out / "03_latent_scatter.png").is_file()
    unknown = CliRunner().invoke(main, [*args, "--normal-class", "nope"])
    assert unknown.exit_code == 1 and "unknown class 'nope'" in unknown.output
    without_data = CliRunner().invoke(
        main, ["view", "generate", "--model", model, "--normal-class", "normal"]
    )
    assert without_data.exit_code == 2 and "give DATA" in without_data.output


def _progress_lines(stderr: str) -> list[str]:
    """The progress lines of ``stderr`` (``reading new: 2 images (0 s)``), without the time."""
    return [
        line.split(" (")[0]
        for line in stderr.splitlines()
        if line.startswith(("reading", "scoring"))
    ]


def test_view_counts_the_images_it_reads_and_scores_unless_quiet(
    image_detector, tmp_path, monkeypatch
):
    """`view` on a folder of 6,300 images printed nothing (8 s for `view all`) until its
    files were written, and took no --quiet. It counts the images it
    reads, as fit does, and those it scores (once, for every view that shows scores), as
    `score` does: a bar on a terminal, off one a line every PROGRESS_LINE_SECONDS (here,
    every image read and every part scored); none with --quiet."""
    from anomaly_vae import training
    from anomaly_vae.cli import main

    model = str(image_detector.save(tmp_path / "m"))
    folder = tmp_path / "new"
    folder.mkdir()
    for i, image in enumerate(bars(3, seed=1)):
        Image.fromarray(image[0]).save(folder / f"{i}.png")
    monkeypatch.setattr(training, "PROGRESS_LINE_SECONDS", 0.0)
    scored = []
    anomaly_score = VAEDetector.anomaly_score
    monkeypatch.setattr(
        VAEDetector,
        "anomaly_score",
        lambda self, X, condition=None: scored.append(len(X)) or anomaly_score(self, X, condition),
    )
    args = ["view", "all", str(folder), "--model", model, "--out", str(tmp_path / "v")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert _progress_lines(result.stderr) == [
        "reading new: 1 image",
        "reading new: 2 images",
        "reading new: 3 images",
        "scoring new: 3 images",
    ]
    assert scored == [3]  # the reconstructions and the latent scatter share the scores
    assert (tmp_path / "v" / "02_reconstructions.csv").is_file()
    quiet = CliRunner().invoke(main, [*args, "--quiet"])
    assert quiet.exit_code == 0, quiet.output
    assert _progress_lines(quiet.stderr) == []
    # The scores shown are those of the images scored whole.
    shown = pd.read_csv(tmp_path / "v" / "02_reconstructions.csv")
    expected = np.sort(anomaly_score(image_detector, bars(3, seed=1)))[::-1]
    np.testing.assert_allclose(shown["score"], expected, rtol=1e-5)
    table = tmp_path / "readings.csv"
    mixed_table(150, seed=1).to_csv(table, index=False)
    table_model = str(_table_model(tmp_path))
    args = ["view", "reconstruct", str(table), "--model", table_model, "--out", str(tmp_path / "t")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert _progress_lines(result.stderr) == ["scoring readings.csv: 150 rows"]
    assert _progress_lines(CliRunner().invoke(main, [*args, "--quiet"]).stderr) == []


def _table_model(tmp_path):
    config = tiny_config("data.id_column=reading_id", "training.epochs=2")
    return VAEDetector(config.detector_config()).fit(mixed_table(200, seed=0)).save(tmp_path / "tm")


def test_a_numeric_condition_is_shown_to_four_significant_digits():
    table = mixed_table(300, seed=0)
    table["setpoint"] = np.round(table["temperature"] / 10) * 10.0
    config = tiny_config(
        "model.name=cvae",
        "data.id_column=reading_id",
        "data.label_column=is_fault",
        "data.condition_columns=[machine,setpoint]",
        "training.epochs=3",
    )
    detector = VAEDetector(config.detector_config()).fit(table)
    chosen = detector.condition_vector({"machine": "drill", "setpoint": 60.123456})
    drawn = views.generation(detector, 16, chosen)
    # Decoded in float32: without the rounding the title showed 60.12345504760742.
    assert "given machine=drill, setpoint=60.12 " in drawn.figure.get_suptitle().replace("\n", " ")
    views.plots.close(drawn.figure)


def test_hvae_views_span_the_prior_of_z1_the_latent_they_decode():
    # hvae's decoder takes z1, whose prior is p(z1 | z2), not N(0, I): the manifold spanned
    # z1 = -3..3 itself under a label of prior standard deviations, while z1's prior spread
    # about 3 in each dimension, so the grid showed one of its standard deviations.
    config = tiny_config("model.name=hvae", "model.top_latent_dim=2", "training.epochs=60")
    detector = VAEDetector(config.detector_config()).fit(correlated_normal(600, seed=0))
    model = detector.model_.eval()
    with torch.no_grad():  # z1's prior, drawn apart from the model's own estimate
        generator = torch.Generator().manual_seed(7)
        mu, logvar = model.prior_z1(torch.randn(50_000, 2, generator=generator))
        z1 = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=generator)
    mean, spread = z1.mean(0).numpy(), z1.std(0).numpy()
    assert (spread > 1.5).all()  # else this test would not tell the two grids apart
    manifold = views.manifold(detector, steps=3)
    title = manifold.figure.get_suptitle().replace("\n", " ")
    assert "grid in z1 prior standard deviations from its mean (z1 ~ p(z1 | z2)" in title
    assert set(manifold.table["z0"]) == {-3.0, 0.0, 3.0}  # in those units
    # Each grid point decodes z1 at the prior's mean plus its value in standard deviations.
    grid = manifold.table[["z0", "z1"]].to_numpy(np.float32)
    expected = detector.preprocessor_.inverse_transform(
        model.mean_output(model.decode(torch.from_numpy(mean + grid * spread))).detach().numpy()
    )
    np.testing.assert_allclose(manifold.table["x0"], expected["x0"], rtol=0.05, atol=0.05)
    traversal = views.traversal(detector, correlated_normal(2, seed=1), steps=3)
    assert "values in z1 prior standard deviations" in traversal.figure.get_suptitle().replace(
        "\n", " "
    )
    first = traversal.table.iloc[0]  # z[0] at -3 standard deviations, z[1] the row's own
    assert (first["dimension"], first["value"]) == (0, -3.0)
    latent = detector.encode(correlated_normal(2, seed=1)[:1])[0]
    latent[0] = mean[0] - 3 * spread[0]
    decoded = model.mean_output(model.decode(torch.from_numpy(latent[None]))).detach().numpy()
    row = detector.preprocessor_.inverse_transform(decoded).iloc[0]
    assert first["x0"] == pytest.approx(row["x0"], rel=0.05, abs=0.05)


def test_the_reconstructions_name_each_rows_explanation(table_detector, cvae_detector):
    # The heat map is the surprise at a row's own posterior mean, which for one large
    # value blames the columns related to it; `score --explain` ranks by repair. The view
    # gave no explanation, so a reviewer of a run read the heat map's brightest column as
    # the reason. Now each row's explanation is in the CSV, and its why_1 in its label.
    test = mixed_table(200, seed=1, anomalies=20)
    test.loc[test.index[3], "load"] = 500.0  # one large value
    for detector in (table_detector, cvae_detector):
        view = views.reconstructions(detector, test, count=6)
        table = view.table
        why = [f"why_{rank}{part}" for rank in (1, 2, 3) for part in ("", "_nats")]
        assert list(table.columns[: 3 + len(why)]) == ["row", "reading_id", "score", *why]
        rows = test.iloc[table["row"] - 1]
        expected = detector.explain(rows).reset_index(drop=True)
        pd.testing.assert_frame_equal(table[why], expected)
        assert set(table["why_1"]) <= {"machine", "temperature", "load", "vibration"}
        assert (table["row"].iloc[0], table["why_1"].iloc[0]) == (4, "load")
        labels = [t.get_text() for t in view.figure.axes[0].get_yticklabels()]
        assert all(
            f"(why: {column};" in label
            for label, column in zip(labels, table["why_1"], strict=True)
        )
        assert "why: the column the row's explanation names first" in (
            view.figure.axes[0].get_title().replace("\n", " ")
        )
    # A condition column is given, not explained: the cvae never names machine.
    assert "machine" not in set(table[["why_1", "why_2", "why_3"]].to_numpy().ravel())


def test_the_views_warn_of_the_data_once(table_detector, cvae_detector, tmp_path, caplog):
    # Scoring the data warned of it, and then each read of the rows shown warned again:
    # `view reconstruct` of a file with a column the model ignores gave its warning five
    # times, and an unseen category's twice; `view all` gave both six times (a read per
    # view), `view latents` twice, and the views fit logs (tracking.log_views) gave an
    # --eval file's unseen category six times more after fit's scoring had given it.
    from anomaly_vae.cli import main
    from anomaly_vae.fitting import TrainingData
    from anomaly_vae.tracking import _log_views

    test = mixed_table(200, seed=1, anomalies=20)
    test["note"] = "checked"
    test.loc[test.index[0], "machine"] = "saw"
    labels = test["is_fault"].to_numpy() == 1

    def warnings_of(draw, *args, **options) -> list[str]:
        caplog.clear()
        with caplog.at_level("WARNING", logger="anomaly_vae"):
            draw(*args, **options)
        return [r.getMessage() for r in caplog.records if "not seen in training" in r.message]

    for detector in (table_detector, cvae_detector):
        for messages in (
            warnings_of(views.reconstructions, detector, test, count=5),
            warnings_of(views.views_and_skips, detector, test, labels),
        ):
            assert sum("not seen in training: note" in m for m in messages) == 1, messages
            (saw,) = [m for m in messages if "'saw'" in m]  # once, with its one row
            assert "(1 row)" in saw or "1 row(s)" in saw, saw  # a cvae's condition words it so
    # The one read checks the data first: a missing column was "skipped KIND: missing
    # column" for each view and the generated rows written; now one error, nothing drawn.
    with pytest.raises(DataError, match="missing column 'load'"):
        views.views_and_skips(table_detector, test.drop(columns="load"))
    # At fit: none, as fit's scoring of its evaluation rows gave them.
    data = TrainingData(mixed_table(20, seed=2), evaluation=test, evaluation_labels=labels)
    assert warnings_of(_log_views, table_detector, data, 50, tmp_path / "run") == []
    # The command, a single view: once each.
    test.to_csv(tmp_path / "new.csv", index=False)
    model = str(table_detector.save(tmp_path / "model"))
    args = ["view", "latents", str(tmp_path / "new.csv"), "--model", model]
    runner = CliRunner()
    messages = warnings_of(runner.invoke, main, [*args, "--out", str(tmp_path / "v")])
    assert (tmp_path / "v" / "03_latent_scatter.png").is_file()
    assert [m.split(":")[0][:22] for m in messages] == [
        "ignoring column not se",
        "column 'machine' holds",
    ], messages


def test_view_all_draws_as_many_samples_as_count_says(tmp_path):
    # `view all` drew the default 64 whatever --count said; `view generate` took it.
    from anomaly_vae.cli import main

    table = tmp_path / "readings.csv"
    mixed_table(60, seed=1).to_csv(table, index=False)
    model = str(_table_model(tmp_path))
    for kind in ("all", "generate"):
        out = tmp_path / kind
        args = ["view", kind, str(table), "--model", model, "--out", str(out), "--count", "5"]
        result = CliRunner().invoke(main, [*args, "--quiet"])
        assert result.exit_code == 0, result.output
        assert len(pd.read_csv(out / "01_generated.csv")) == 5, kind
