"""Images of several normal classes: fitting on them, and a conditional VAE that scores an
image given its class, in Python and through the CLI."""

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image
from sklearn.metrics import roc_auc_score

from anomaly_vae import VAEDetector
from anomaly_vae.cli import main
from anomaly_vae.errors import DataError
from anomaly_vae.family import suitable_variants
from tests.conftest import tiny_config
from tests.test_images import bars

CVAE = ["model.name=cvae", "model.hidden_dims=[64]", "model.latent_dim=4"]


def two_classes(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` horizontal-bar images of class "h", then ``n`` vertical-bar images of "v"."""
    images = np.concatenate([bars(n, seed), bars(n, seed + 1, vertical=True)])
    return images, np.array(["h"] * n + ["v"] * n, dtype=object)


@pytest.fixture(scope="module")
def cvae() -> VAEDetector:
    images, classes = two_classes(200, seed=0)
    return VAEDetector(tiny_config(*CVAE).detector_config()).fit(images, condition=classes)


def test_a_conditional_image_model_scores_an_image_given_its_class(cvae):
    images, classes = two_classes(40, seed=10)
    swapped = np.where(classes == "h", "v", "h").astype(object)
    own = cvae.anomaly_score(images, classes)
    other = cvae.anomaly_score(images, swapped)
    # A vertical bar is normal for class v and anomalous for class h, and the other way.
    labels = np.r_[np.zeros(len(own)), np.ones(len(other))]
    assert roc_auc_score(labels, np.r_[own, other]) > 0.95
    # An image of no known class is scored under the class that explains it best.
    for unknown in (None, np.array(["?"] * len(images), dtype=object), np.full(len(images), -1)):
        best = cvae.all_scores(images, unknown)["negative_elbo"]
        np.testing.assert_allclose(best, np.minimum(own, other), rtol=1e-5)
    assert cvae.condition_names_ == ["h", "v"]
    # The scores say which class each image was scored under: its own when known, else
    # the one that explains it best (here its true class, h or v, for nearly every image).
    frame = cvae.score_frame(images, classes)
    assert frame["scored_class"].tolist() == classes.tolist()
    unknown = cvae.score_frame(images, None)
    np.testing.assert_allclose(unknown["negative_elbo"], np.minimum(own, other), rtol=1e-5)
    best = np.where(own <= other, classes, swapped)
    assert unknown["scored_class"].tolist() == best.tolist()
    assert (best == classes).mean() > 0.9
    # Class indices are the sorted names' positions.
    np.testing.assert_allclose(cvae.anomaly_score(images, (classes == "v").astype(int)), own)


def test_a_conditional_image_model_keeps_its_class_names_when_saved(cvae, tmp_path):
    images, classes = two_classes(10, seed=20)
    loaded = VAEDetector.load(cvae.save(tmp_path / "model"))
    assert loaded.condition_names_ == ["h", "v"]
    np.testing.assert_array_equal(
        loaded.anomaly_score(images, classes), cvae.anomaly_score(images, classes)
    )
    np.testing.assert_array_equal(loaded.condition_vector("v"), [0.0, 1.0])
    with pytest.raises(DataError, match="class 'x' was not seen in training; known classes: h, v"):
        loaded.condition_vector("x")
    with pytest.raises(DataError, match="one class per image"):
        loaded.anomaly_score(images, classes[:3])
    with pytest.raises(DataError, match=r"image classes must be in 0\.\.1"):
        loaded.anomaly_score(images, np.full(len(images), 2))


def test_every_training_image_of_a_conditional_model_needs_its_class():
    images, classes = two_classes(30, seed=30)
    classes[3] = None
    config = tiny_config(*CVAE).detector_config()
    with pytest.raises(DataError, match="every training image needs its class"):
        VAEDetector(config).fit(images, condition=classes)


def test_the_family_includes_the_cvae_for_images_of_two_or_more_normal_classes():
    config = tiny_config()
    assert "cvae" not in suitable_variants(config, "image", 1)
    assert "cvae" in suitable_variants(config, "image", 2)


def _write(folder, images, prefix):
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        Image.fromarray(image[0]).save(folder / f"{prefix}{i}.png")


def test_cli_fits_several_normal_classes_and_a_cvae_on_them(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "train" / "h", bars(150, seed=40), "h")
    _write(tmp_path / "train" / "v", bars(150, seed=41, vertical=True), "v")
    noise = np.random.default_rng(42).integers(0, 255, (15, 1, 16, 16), dtype=np.uint8)
    _write(tmp_path / "train" / "noise", noise, "n")
    options = ["--no-tracking", "--quiet", *(f"--set={item}" for item in CVAE)]
    one = CliRunner().invoke(main, ["fit", "train", "--normal-class", "h", *options])
    assert one.exit_code == 1
    assert "needs two or more normal classes (--normal-class a,b)" in one.output

    fit = CliRunner().invoke(main, ["fit", "train", "--normal-class", "h,v", *options])
    assert fit.exit_code == 0, fit.output
    assert "Kept 15 labelled anomalies out of training." in fit.output
    assert "on 240 normal images" in fit.output and "AUROC" in fit.output

    # New images in class folders: a vertical bar filed under h is the anomaly.
    _write(tmp_path / "new" / "h", np.concatenate([bars(5, 43), bars(3, 44, True)]), "h")
    _write(tmp_path / "new" / "v", bars(5, seed=45, vertical=True), "v")
    scored = CliRunner().invoke(main, ["score", "new", "-o", "s.csv", "--quiet"])
    assert scored.exit_code == 0, scored.output
    assert "not of a class" not in scored.output
    scores = pd.read_csv(tmp_path / "s.csv").set_index("image")["score"]
    misfiled = scores[[name for name in scores.index if "/h/h" in name and name[-5] in "567"]]
    filed = scores.drop(misfiled.index)
    assert misfiled.min() > filed.max()

    # A flat folder has no classes: each image is scored under its best class, and told.
    _write(tmp_path / "flat", bars(4, seed=46), "f")
    with caplog.at_level("WARNING"):
        flat = CliRunner().invoke(main, ["score", "flat", "-o", "f.csv", "--quiet"])
    assert flat.exit_code == 0, flat.output
    assert "4 of 4 images are not of a class the conditional model was trained on" in caplog.text
    assert "Trained classes: h, v" in caplog.text

    generated = CliRunner().invoke(
        main, ["view", "generate", "--condition", "class=v", "--out", "views"]
    )
    assert generated.exit_code == 0, generated.output
    assert (tmp_path / "views" / "01_generated.png").is_file()
    unknown = CliRunner().invoke(main, ["view", "generate", "--condition", "class=x"])
    assert unknown.exit_code == 1 and "known classes: h, v" in unknown.output


def test_cli_fits_a_plain_vae_on_several_normal_classes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "train" / "h", bars(60, seed=50), "h")
    _write(tmp_path / "train" / "v", bars(60, seed=51, vertical=True), "v")
    _write(tmp_path / "train" / "w", bars(60, seed=52, size=16), "w")
    fit = CliRunner().invoke(
        main,
        [
            "fit",
            "train",
            "--normal-class",
            "h, v",
            "--no-tracking",
            "--quiet",
            "--set=training.epochs=2",
        ],
    )
    assert fit.exit_code == 0, fit.output
    assert "Kept 60 labelled anomalies out of training." in fit.output
    bad = CliRunner().invoke(main, ["fit", "train", "--normal-class", "h,x", "--no-tracking"])
    assert bad.exit_code == 1 and "unknown class 'x'; classes: h, v, w" in bad.output


def test_the_conditional_images_pipeline_measures_misfiled_images(tmp_path, monkeypatch):
    import runpy
    import sys
    from pathlib import Path

    from anomaly_vae.data.images import write_idx_set
    from tests.conftest import TINY

    noise = np.random.default_rng(60).integers(0, 255, (30, 1, 16, 16), dtype=np.uint8)
    for train, seed in ((True, 61), (False, 62)):
        images, classes = two_classes(150 if train else 40, seed)
        labels = np.r_[(classes == "v").astype(np.uint8), np.full(len(noise), 2, np.uint8)]
        write_idx_set(tmp_path / "Bars", train, np.concatenate([images, noise]), labels)
    script = Path(__file__).parents[1] / "pipelines" / "conditional_images.py"
    arguments = ["--data-dir", str(tmp_path), "--dataset", "Bars", "--classes", "0,1"]
    overrides = [f"--set={item}" for item in (*TINY, "model.hidden_dims=[64]")]
    monkeypatch.setattr(sys, "argv", [str(script), *arguments, *overrides, "--out", str(tmp_path)])
    runpy.run_path(str(script), run_name="__main__")
    results = pd.read_csv(tmp_path / "results.csv").set_index("model")
    assert results.loc["vae", "other_classes_auroc"] > 90  # noise is no bar image
    assert results.loc["cvae", "misfiled_auroc"] > 90  # a vertical bar filed as horizontal
    assert results.loc["cvae", "misfiled_flagged_pct"] > results.loc["cvae", "filed_flagged_pct"]


def test_classes_are_named_by_name_first_and_mixed_up_names_are_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name, seed in (("1", 70), ("2", 71)):
        _write(tmp_path / "num" / name, bars(40, seed, vertical=name == "2"), "i")
    _write(tmp_path / "comma" / "bag, big", bars(40, 72), "i")
    _write(tmp_path / "comma" / "coat", bars(40, 73, vertical=True), "i")
    quick = ["--no-tracking", "--quiet", "--set=training.epochs=2", "--set=training.min_steps=0"]
    # "0" is no folder name, so the index of folder "1"; "1" is folder "1" by name.
    twice = CliRunner().invoke(main, ["fit", "num", "--normal-class", "0,1", *quick])
    assert twice.exit_code == 1 and "'0' and '1' both name class '1'" in twice.output
    comma = CliRunner().invoke(main, ["fit", "comma", "--normal-class", "bag, big,coat", *quick])
    assert comma.exit_code == 1
    assert "classes: 'bag, big', coat (or their indices, 0 to 1)" in comma.output
    fit = CliRunner().invoke(
        main,
        [
            "fit",
            "num",
            "--normal-class",
            "1,2",
            "--model-dir",
            "m",
            *quick,
            "--set=model.name=cvae",
        ],
    )
    assert fit.exit_code == 0, fit.output
    detector = VAEDetector.load(tmp_path / "m")
    np.testing.assert_array_equal(detector.condition_vector("1"), [1.0, 0.0])  # the name
    np.testing.assert_array_equal(detector.condition_vector(1), [1.0, 0.0])
    view = ["view", "generate", "--model", "m", "--out", "v"]
    typo = CliRunner().invoke(main, [*view, "--condition", "klass=1"])
    assert typo.exit_code == 2 and "--condition class=NAME" in typo.output
    odd = CliRunner().invoke(main, [*view, "--condition", "class=[x"])
    assert odd.exit_code == 1 and "class '[x' was not seen in training" in odd.output
    # A flat folder named like a trained class is that class: no warning, own-class scores.
    _write(tmp_path / "new" / "2", bars(3, seed=74, vertical=True), "n")
    flat = CliRunner().invoke(main, ["score", "new/2", "--model", "m", "-o", "s.csv", "--quiet"])
    assert flat.exit_code == 0 and "not of a class" not in flat.output
    own = detector.anomaly_score(bars(3, seed=74, vertical=True), np.array(["2"] * 3))
    np.testing.assert_allclose(pd.read_csv(tmp_path / "s.csv")["score"], own, rtol=1e-5)


def test_float_or_boolean_classes_and_indices_without_images_are_refused(cvae):
    images, classes = two_classes(10, seed=80)
    for ambiguous in (np.zeros(len(images)), np.ones(len(images), dtype=bool)):
        with pytest.raises(DataError, match="names or integer indices, not"):
            cvae.anomaly_score(images, ambiguous)
    config = tiny_config(*CVAE).detector_config()
    with pytest.raises(DataError, match="no training image has class index 1"):
        VAEDetector(config).fit(images, condition=np.where(classes == "h", 0, 2))


def test_a_served_conditional_image_model_takes_the_class_as_a_parameter(
    tracking_store, tmp_path, caplog
):
    import mlflow

    from anomaly_vae.fitting import fit_source

    _write(tmp_path / "train" / "h", bars(150, seed=90), "h")
    _write(tmp_path / "train" / "v", bars(150, seed=91, vertical=True), "v")
    config = tiny_config(*CVAE, "tracking.log_views=false")
    with caplog.at_level("WARNING"):
        result = fit_source(tmp_path / "train", config, normal_class="h,v", project_dir=tmp_path)
    # MLflow scores the input example as it logs the model: no warning about its images.
    assert "not of a class the conditional model was trained on" not in caplog.text
    run = mlflow.get_run(result.run.run_id)
    assert run.data.tags["normal_classes"] == "h, v"
    model = mlflow.pyfunc.load_model(f"runs:/{result.run.run_id}/model")
    vertical = bars(5, seed=92, vertical=True)
    as_v = model.predict(vertical, params={"image_class": "v"})["score"].to_numpy()
    as_h = model.predict(vertical, params={"image_class": "h"})["score"].to_numpy()
    best = model.predict(vertical)["score"].to_numpy()
    assert as_h.min() > as_v.max()  # a vertical bar filed as horizontal
    np.testing.assert_allclose(best, np.minimum(as_v, as_h), rtol=1e-5)
    # Pixels sent over REST as floats in [0, 1] arrive cast to uint8 0 and 1: refused.
    from mlflow.exceptions import MlflowException

    cast_floats = (vertical / 255.0).round().astype(np.uint8)
    mixed = np.concatenate([vertical[:4], cast_floats[:1]])
    with pytest.raises(MlflowException, match="1 of 5 images have pixels of 0 and 1 only"):
        model.predict(mixed, params={"image_class": "v"})
    black = np.zeros_like(vertical)  # a dead camera's frames: scored, not refused
    assert len(model.predict(black, params={"image_class": "v"})) == len(black)


def test_a_whole_config_is_refused_with_the_call_to_make():
    from anomaly_vae.errors import ConfigError

    with pytest.raises(ConfigError, match=r"pass config\.detector_config\(\)"):
        VAEDetector(tiny_config()).fit(bars(30, seed=0))


def test_a_conditional_image_model_generates_a_block_per_class_without_a_condition(cvae):
    from anomaly_vae import views

    images, _ = two_classes(5, seed=95)
    made, skipped = views.views_and_skips(cvae, images)
    generated = next(view for view in made if view.name == "01_generated")
    title = generated.figure.get_suptitle().replace("\n", " ")  # wrapped to the figure
    assert title == "32 samples from the prior per class, a block of 4 rows each: h, v"
    ax = generated.figure.axes[0]
    # 8 rows of 8: each class's block is named once, at its first row.
    assert [label.get_text() for label in ax.get_yticklabels()] == ["h", "v"]
    grid_height, grid_width = ax.images[0].get_array().shape[:2]
    cell = (grid_height - views.GRID_PADDING) / 8
    assert grid_width == grid_height
    assert ax.get_yticks()[1] - ax.get_yticks()[0] == pytest.approx(4 * cell)
    manifold = next(view for view in made if view.name == "04_manifold")
    assert (
        manifold.figure.get_suptitle()
        .replace("\n", " ")
        .endswith(", class h (prior standard deviations)")
    )  # the first image's class
    # The traversal decodes for that class too, and says so (it did not).
    traversal = next(view for view in made if view.name == "05_traversal")
    assert "around image 1, class h (one row per dimension)" in (
        traversal.figure.get_suptitle().replace("\n", " ")
    )
    assert not [reason for reason in skipped if reason.startswith("generate")]
    for view in made:
        views.plots.close(view.figure)
    chosen = views.generation(cvae, 16, cvae.condition_vector("v"))
    assert chosen.figure.get_suptitle().replace("\n", " ") == "16 samples from the prior, class v"
    views.plots.close(chosen.figure)


def test_a_conditional_interpolation_names_the_classes_it_moves_between(cvae):
    """The interpolation's condition moves from the first image's class to the second's,
    which the title did not say (the traversal and manifold name their one class)."""
    from anomaly_vae import views

    images, _ = two_classes(2, seed=95)  # h, h, v, v
    title = views.interpolation(cvae, images[[0, 2]]).figure.get_suptitle().replace("\n", " ")
    assert title.endswith("in latent space (10 steps), class h to v")
    title = views.interpolation(cvae, images[[0, 1]]).figure.get_suptitle().replace("\n", " ")
    assert title.endswith("in latent space (10 steps), class h")  # one class, named once


def test_the_scikit_learn_methods_take_each_images_class(cvae):
    # score_samples, decision_function and predict took no class: an image of class h
    # with a vertical bar, normal for class v, could not be judged for its own class.
    images, classes = two_classes(40, seed=40)
    swapped = np.where(classes == "h", "v", "h").astype(object)
    for condition in (classes, swapped):
        own = cvae.anomaly_score(images, condition)
        np.testing.assert_array_equal(cvae.score_samples(images, condition), -own)
        np.testing.assert_array_equal(
            cvae.decision_function(images, condition), -own - cvae.offset_
        )
        np.testing.assert_array_equal(
            cvae.predict(images, condition), np.where(own > cvae.threshold_, -1, 1)
        )
    assert (cvae.predict(images, swapped) == -1).mean() > 0.9  # misfiled: flagged
    assert (cvae.predict(images, classes) == 1).mean() > 0.9
    # fit_predict predicts under the classes it fit with, as fit(...).predict(..., classes).
    config = tiny_config(*CVAE).detector_config()
    train, train_classes = two_classes(100, seed=41)
    train_classes[:5] = np.where(train_classes[:5] == "h", "v", "h")  # 5 misfiled images
    fitted = VAEDetector(config).fit(train, condition=train_classes)
    # (under each image's best class the misfiled ones would pass as normal)
    assert (fitted.predict(train, train_classes) != fitted.predict(train)).any()
    np.testing.assert_array_equal(
        VAEDetector(config).fit_predict(train, condition=train_classes),
        fitted.predict(train, train_classes),
    )
