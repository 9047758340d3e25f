"""Images: reading folders and torchvision datasets, fitting and scoring image models."""

import copy
import itertools
import logging
import re
import runpy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.metrics import roc_auc_score

from anomaly_vae import VAEDetector
from anomaly_vae.benchmark.tasks import find_datasets
from anomaly_vae.data import images as images_module
from anomaly_vae.data.images import (
    ImagePreprocessor,
    is_image_source,
    read_idx_set,
    read_images,
    write_idx_set,
)
from anomaly_vae.errors import DataError, ModelNotFoundError
from anomaly_vae.scoring import map_names, save_anomaly_maps
from tests.conftest import TINY, mixed_table, tiny_config, traced_peak


def bars(n: int, seed: int, vertical: bool = False, size: int = 16) -> np.ndarray:
    """``(n, 1, size, size)`` uint8 images with one bright bar at a random position."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 30, size=(n, 1, size, size), dtype=np.uint8)
    where = rng.integers(2, size - 2, size=n)
    rows = np.arange(n)
    if vertical:
        images[rows, 0, :, where] = 230
    else:
        images[rows, 0, where, :] = 230
    return images


def good_and_bad_folder(folder: Path) -> Path:
    """``folder`` with class subfolders ``good`` (2 horizontal bars) and ``bad`` (2
    vertical), PNGs named ``000.png``, ``001.png``."""
    for label, vertical in (("good", False), ("bad", True)):
        (folder / label).mkdir(parents=True)
        for i, image in enumerate(bars(2, seed=3, vertical=vertical)):
            Image.fromarray(image[0]).save(folder / label / f"{i:03d}.png")
    return folder


@pytest.fixture(scope="module")
def bars_detector() -> VAEDetector:
    """A tiny vae fit on 100 horizontal-bar images, scoring 2 images a batch (so a
    folder of a few images is several batches); tests only score with it."""
    config = tiny_config("training.epochs=5", "scoring.batch_size=2").detector_config()
    return VAEDetector(config).fit(bars(100, seed=0))


IMAGE_MODEL = ["model.conv_channels=[8, 16]", "model.latent_dim=4", "model.hidden_dims=[64]"]


@pytest.mark.parametrize("name", ["conv-vae", "vae"])
def test_image_models_rank_other_shapes_above_normal_images(name):
    config = tiny_config(f"model.name={name}", *IMAGE_MODEL).detector_config()
    detector = VAEDetector(config).fit(bars(400, seed=0))
    test = np.concatenate([bars(100, seed=1), bars(20, seed=2, vertical=True)])
    labels = np.r_[np.zeros(100), np.ones(20)]
    scores = detector.score_frame(test)
    assert roc_auc_score(labels, scores["score"]) > 0.9
    maps = detector.anomaly_map(test)
    assert maps.shape == test.shape and maps.min() >= 0
    # The map points at the unexpected bar: brighter on anomalies than on normal images.
    assert maps[100:].mean() > maps[:100].mean()


def test_a_family_ensemble_writes_anomaly_maps_the_mean_of_its_members(tmp_path):
    # `fit images/ --family` can keep the ensemble; `score --maps` then refused it.
    from anomaly_vae.ensemble import EnsembleDetector
    from anomaly_vae.scoring import score_images

    train = bars(300, seed=0)
    members = {
        name: VAEDetector(tiny_config(f"model.name={name}", *IMAGE_MODEL).detector_config()).fit(
            train
        )
        for name in ("conv-vae", "vae")
    }
    ensemble = EnsembleDetector.from_members(members, train)
    folder = tmp_path / "new"
    folder.mkdir()
    test = np.concatenate([bars(6, seed=1), bars(3, seed=2, vertical=True)])
    for i, image in enumerate(test):
        Image.fromarray(image[0]).save(folder / f"{i}.png")
    scores = score_images(folder, ensemble, tmp_path / "s.csv", maps_dir=tmp_path / "maps")
    assert len(list((tmp_path / "maps").glob("*.png"))) == 9 and "map" in scores
    maps = ensemble.anomaly_map(test)
    expected = (members["conv-vae"].anomaly_map(test) + members["vae"].anomaly_map(test)) / 2
    np.testing.assert_allclose(maps, expected, rtol=1e-6)
    assert maps.shape == test.shape and maps[6:].mean() > maps[:6].mean()


@pytest.mark.parametrize(("name", "pool"), [("conv-vae", 1), ("vae", 2)])
def test_image_detector_saves_and_loads(tmp_path, name, pool):
    # Auto pool: 28 / 2 = 14 fits the MLP VAE; 14 does not divide by conv-vae's stride 4.
    config = tiny_config(
        f"model.name={name}", *IMAGE_MODEL, "training.epochs=3", "scoring.score=elbo_latent_knn"
    )
    detector = VAEDetector(config.detector_config()).fit(bars(100, seed=0, size=28))
    detector.save(tmp_path / "m")
    loaded = VAEDetector.load(tmp_path / "m")
    assert loaded.preprocessor_.pool == detector.preprocessor_.pool == pool
    test = bars(10, seed=3, size=28)
    pd.testing.assert_frame_equal(loaded.score_frame(test), detector.score_frame(test))
    with pytest.raises(DataError, match="takes grey 28 x 28 images, these are grey 8 x 8"):
        loaded.anomaly_score(bars(5, seed=0, size=8))
    # The same pictures saved in colour: a grey model scores their grey levels.
    np.testing.assert_array_equal(
        loaded.anomaly_score(np.repeat(test, 3, axis=1)), loaded.anomaly_score(test)
    )


def test_nan_or_out_of_range_pixels_are_refused_not_scored():
    config = tiny_config("training.epochs=2", *IMAGE_MODEL).detector_config()
    detector = VAEDetector(config).fit(bars(100, seed=0))
    blank = np.zeros((1, 1, 16, 16), np.float32)
    with pytest.raises(DataError, match="NaN or infinite"):
        detector.predict(np.full_like(blank, np.nan))
    with pytest.raises(DataError, match=r"uint8 pixels \(0 to 255\) or floats in \[0, 1\]"):
        detector.predict((blank + 200).astype(np.int64))


def test_auto_score_adds_latent_density_for_images_with_enough_rows():
    config = tiny_config(*IMAGE_MODEL, "training.epochs=1").detector_config()
    assert VAEDetector(config).fit(bars(499, seed=0)).score_name == "negative_elbo"
    detector = VAEDetector(config).fit(bars(500, seed=0))
    assert detector.score_name == detector.calibration_["score"] == "elbo_latent_knn"
    assert {"latent_knn_distance", "elbo_latent_knn"} <= set(detector.score_frame(bars(3, 1)))


def test_pooling_averages_pixel_blocks_and_maps_return_at_input_size():
    images = np.arange(2 * 16, dtype=np.uint8).reshape(2, 1, 4, 4) * 8
    pre = ImagePreprocessor(pool=2).fit(images)
    pooled = pre.transform(images)
    assert pooled.shape == (2, 1, 2, 2) and pre.model_shape == (1, 2, 2)
    np.testing.assert_allclose(pooled[0, 0, 0, 0], images[0, 0, :2, :2].mean() / 255, rtol=1e-6)
    assert pre.upsample(pooled).shape == images.shape
    assert (
        ImagePreprocessor.from_dict(pre.to_dict()).transform(images).tobytes() == pooled.tobytes()
    )
    with pytest.raises(DataError, match=r"does not divide by data\.image_pool=3"):
        ImagePreprocessor(pool=3).fit(images)


def test_auto_pool_shrinks_images_as_far_as_the_model_still_fits_them():
    images = bars(60, seed=0, size=28)
    mlp = VAEDetector(tiny_config(*IMAGE_MODEL, "training.epochs=1").detector_config())
    assert mlp.fit(images).model_.input_shape == (1, 14, 14)
    # A conv-vae gets 14 x 14 when 14 divides by its stride, else the full resolution.
    for channels, side in (("[8]", 14), ("[8, 16]", 28)):
        conv = tiny_config(
            "model.name=conv-vae",
            *IMAGE_MODEL,
            f"model.conv_channels={channels}",
            "training.epochs=1",
        )
        assert VAEDetector(conv.detector_config()).fit(images).model_.input_shape == (1, side, side)
    # 12 / 2 = 6 pixels a side would lose the shapes: small images are not pooled.
    assert mlp.fit(images[:, :, :12, :12]).model_.input_shape == (1, 12, 12)
    chosen = tiny_config(*IMAGE_MODEL, "training.epochs=1", "data.image_pool=4")
    detector = VAEDetector(chosen.detector_config()).fit(images)
    assert detector.model_.input_shape == (1, 7, 7)
    assert detector.anomaly_map(images[:2]).shape == (2, 1, 28, 28)


def test_table_only_model_refuses_images_and_image_model_refuses_tables():
    with pytest.raises(DataError, match="accepts image data, not tables"):
        VAEDetector(tiny_config("model.name=conv-vae").detector_config()).fit(np.zeros((50, 3)))


def test_an_image_model_says_when_data_is_missing_or_one_image_file(tmp_path):
    from types import SimpleNamespace

    from anomaly_vae.batch import image_folders
    from anomaly_vae.scoring import check_data_kind

    image_model = SimpleNamespace(data_kind_="image")
    Image.fromarray(bars(1, seed=0)[0, 0]).save(tmp_path / "one.png")
    pd.DataFrame({"x": [1.0]}).to_csv(tmp_path / "t.csv", index=False)
    missing = f"{tmp_path / 'nothing'}/"
    with pytest.raises(DataError, match=f"^{re.escape(missing)}: no such file or folder$"):
        check_data_kind(image_model, missing, is_images=False)
    with pytest.raises(DataError, match=r"one.png is one image file; an image model takes a fo"):
        check_data_kind(image_model, tmp_path / "one.png", is_images=False)
    with pytest.raises(DataError, match=r"fit on images, but .*t.csv is a table"):
        check_data_kind(image_model, tmp_path / "t.csv", is_images=False)
    with pytest.raises(DataError, match=r"one.png is a file; an image model scores folders"):
        image_folders(tmp_path / "one.png", tmp_path / "out")


def test_an_image_model_given_a_folder_of_tables_says_they_are_tables(bars_detector, tmp_path):
    """An image model given a folder of CSV/Parquet files said only 'days holds no images
    and no class subfolders with images' (after a warning that the files are not read),
    where a table model given it is told it is a folder of table files. Both are now."""
    from click.testing import CliRunner

    from anomaly_vae.cli import main

    bars_detector.save(tmp_path / "model")
    (tmp_path / "days" / "old").mkdir(parents=True)
    mixed_table(20, seed=3).to_csv(tmp_path / "days" / "day1.csv", index=False)
    mixed_table(20, seed=4).to_parquet(tmp_path / "days" / "old" / "day0.parquet")
    days, model = str(tmp_path / "days"), str(tmp_path / "model")
    scored = ["score", days, "--model", model, "-o", str(tmp_path / "s.csv")]
    for command in (scored, ["calibrate", days, "--model", model, "--no-tracking"]):
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 1, result.output
        assert f"Error: {days} is a folder of table files, and this model was fit on images: " in (
            result.output
        )
        assert "a model fit on tables with --model" in result.output
        assert "`anomaly-vae batch`" in result.output
        assert "holds no images" not in result.output and "not read" not in result.output
    assert not (tmp_path / "s.csv").exists()


@pytest.mark.parametrize("options", [[], ["--set", "model.name=conv-vae"], ["--label-col", "y"]])
def test_fit_given_a_folder_of_tables_says_they_are_tables(tmp_path, options):
    """fit on a folder of CSV/Parquet files said 'days holds no images and no class
    subfolders with images' after a warning that they are not read (with --label-col,
    '--label-col is for tables'), where score names it a folder of table files. So does
    fit now, with what to do instead."""
    from click.testing import CliRunner

    from anomaly_vae.cli import main

    (tmp_path / "days" / "old").mkdir(parents=True)
    mixed_table(20, seed=3).to_csv(tmp_path / "days" / "day1.csv", index=False)
    mixed_table(20, seed=4).to_parquet(tmp_path / "days" / "old" / "day0.parquet")
    days = str(tmp_path / "days")
    result = CliRunner().invoke(main, ["fit", days, "--no-tracking", "--quiet", *options])
    assert result.exit_code == 1, result.output
    assert f"Error: {days} is a folder of table files, which would be read as images: " in (
        result.output
    )
    assert "fit on one file" in result.output
    assert "holds no images" not in result.output and "not read" not in result.output
    assert "--label-col is for tables" not in result.output


def test_a_model_folder_that_does_not_exist_is_named_so(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match=r"^model folder .*nothing does not exist$"):
        VAEDetector.load(tmp_path / "nothing")
    with pytest.raises(ModelNotFoundError, match="empty is not a saved anomaly-vae model"):
        VAEDetector.load(tmp_path / "empty")


def test_a_flat_folder_with_subfolders_says_what_it_does_not_read(tmp_path, caplog):
    (tmp_path / "square").mkdir()
    for i, image in enumerate(bars(3, seed=4)):
        Image.fromarray(image[0]).save(tmp_path / "square" / f"{i}.png")
    Image.fromarray(bars(1, seed=5)[0, 0]).save(tmp_path / "top.png")
    with caplog.at_level("WARNING"):
        images = read_images(tmp_path)
    assert len(images.images) == 1
    assert "its subfolders (square) are not read" in caplog.text


def test_channel_last_arrays_are_refused_with_the_transpose_to_use():
    config = tiny_config("training.epochs=2", *IMAGE_MODEL).detector_config()
    channel_last = bars(40, seed=0).transpose(0, 2, 3, 1)  # (n, H, W, 1), as PIL gives
    with pytest.raises(DataError, match=r"channel-last .* images.transpose\(0, 3, 1, 2\)"):
        VAEDetector(config).fit(channel_last)


def test_reads_an_image_folder(tmp_path):
    for label, vertical in (("good", False), ("scratch", True)):
        (tmp_path / label).mkdir()
        for i, image in enumerate(bars(3, seed=4, vertical=vertical)):
            Image.fromarray(image[0]).save(tmp_path / label / f"{i}.png")
    images = read_images(tmp_path)
    assert images.images.shape == (6, 1, 16, 16) and images.images.dtype == np.uint8
    assert images.classes == ["good", "scratch"]
    assert images.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert images.class_index("scratch") == 1 and images.names[0].endswith("good/0.png")
    assert is_image_source(tmp_path) and not is_image_source(tmp_path / "x.csv")
    (tmp_path / "good" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"broken\.png is not a readable image"):
        read_images(tmp_path)
    # An empty file (a copy cut short) says so: PIL's "cannot identify image file" did not.
    (tmp_path / "good" / "broken.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"broken\.png is not a readable image: the file is empty"):
        read_images(tmp_path)


@pytest.mark.parametrize("layout", ["flat", "class folders"])
def test_a_broken_link_named_as_an_image_is_refused_naming_it(tmp_path, layout):
    # A flat folder left out a link whose target was gone (a data store moved, a drive
    # not mounted) without a word, and scored the rest; a class folder refused it with
    # "[Errno 2] No such file or directory" of a file `ls` lists. Both now name the link.
    folder = tmp_path / "imgs"
    images = folder if layout == "flat" else folder / "good"
    images.mkdir(parents=True)
    for i, image in enumerate(bars(3, seed=4)):
        Image.fromarray(image[0]).save(images / f"{i}.png")
    (images / "gone.png").symlink_to(tmp_path / "moved" / "gone.png")
    refusal = r"gone\.png is a broken symbolic link: its target .*moved/gone\.png does not exist"
    with pytest.raises(DataError, match=refusal):
        read_images(folder)
    with pytest.raises(DataError, match=r"gone\.png is a broken symbolic link"):
        images_module.list_images(folder).check()


def test_an_image_too_large_for_pil_is_a_data_error_naming_it(tmp_path, monkeypatch):
    # PIL refuses images over twice Image.MAX_IMAGE_PIXELS (179 million pixels, a 23 kB
    # PNG of 14,000 x 14,000) with DecompressionBombError, no OSError: a traceback that
    # did not name the file, after the folder's earlier chunks were scored.
    for i, image in enumerate(bars(2, seed=4)):
        Image.fromarray(image[0]).save(tmp_path / f"{i}.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 16 x 16 = 256 pixels is over 200
    with pytest.raises(DataError, match=r"0\.png is too large to read: Image size \(256 pixels\)"):
        read_images(tmp_path)


def test_an_image_over_pils_warning_limit_is_read_with_a_line_naming_it(
    bars_detector, tmp_path, monkeypatch, caplog
):
    # Between Image.MAX_IMAGE_PIXELS and twice it (89 to 179 million pixels) PIL reads an
    # image with a DecompressionBombWarning, printed as a Python warning that named no
    # file, and once a run at most for one size: the file could not be found.
    import warnings

    from anomaly_vae import scoring

    detector = bars_detector
    folder = tmp_path / "new"
    folder.mkdir()
    for i, image in enumerate(bars(3, seed=1)):
        Image.fromarray(image[0]).save(folder / f"{i}.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 200)  # 16 x 16 = 256 pixels: over, not twice
    with warnings.catch_warnings(record=True) as caught, caplog.at_level("WARNING"):
        warnings.simplefilter("always")
        scores = scoring.score_images(folder, detector, tmp_path / "s.csv")
    assert len(scores) == 3  # read, as PIL reads them
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    lines = [r.getMessage() for r in caplog.records if "decompression-bomb" in r.getMessage()]
    assert [line.split(":")[0] for line in lines] == [str(folder / f"{i}.png") for i in range(3)]
    assert lines[0].endswith(
        ": 256 pixels, over Pillow's decompression-bomb warning limit of 200 "
        "(PIL.Image.MAX_IMAGE_PIXELS); read, as Pillow reads images up to "
        "twice the limit"
    )
    # Made an error (python -W error::PIL.Image.DecompressionBombWarning), it still is
    # one, naming the file, not a traceback.
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with pytest.raises(DataError, match=r"0\.png is too large to read: Image size"):
            read_images(folder)


def test_hidden_files_and_folders_and_folders_without_images_are_no_images_or_classes(
    tmp_path, caplog
):
    for label, vertical in (("good", False), ("scratch", True)):
        (tmp_path / label / ".thumbnails").mkdir(parents=True)
        for i, image in enumerate(bars(2, seed=4, vertical=vertical)):
            Image.fromarray(image[0]).save(tmp_path / label / f"{i}.png")
            Image.fromarray(image[0]).save(tmp_path / label / ".thumbnails" / f"{i}.png")
            (tmp_path / label / f"._{i}.png").write_bytes(b"\x00\x05\x16\x07 macOS's copy")
    (tmp_path / ".ipynb_checkpoints").mkdir()  # Jupyter's: it was a class without images
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("not an image")
    images = read_images(tmp_path)
    assert images.classes == ["good", "scratch"] and images.labels.tolist() == [0, 0, 1, 1]
    assert [Path(name).name for name in images.names] == ["0.png", "1.png"] * 2
    assert "subfolders without image files (notes) are not read as classes" in caplog.text
    (tmp_path / "good" / "0.png").rename(tmp_path / "good" / ".0.png")
    (tmp_path / "good" / "1.png").rename(tmp_path / "good" / "1.heic")
    images = read_images(tmp_path)  # a class folder left with no images is no class
    assert images.classes == ["scratch"] and images.labels.tolist() == [0, 0]
    flat = tmp_path / "scratch"
    assert read_images(flat).names == [str(flat / "0.png"), str(flat / "1.png")]


def test_a_folder_without_images_or_subfolders_is_said_to_hold_no_images(tmp_path, caplog):
    # An empty folder, or one of other files only (notes, CSV files), failed `score` and
    # `fit` with torchvision's "ValueError: 'class_to_index' must have at least one entry
    # to collect any samples" traceback; a folder with empty subfolders was already
    # refused in words.
    folders = {
        "empty": [],
        "notes": ["readme.txt"],
        "tables": ["a.csv", "b.parquet"],
        "hidden": [".DS_Store", ".thumbnails/0.png"],
    }
    for name, files in folders.items():
        (tmp_path / name).mkdir()
        for file in files:
            (tmp_path / name / file).parent.mkdir(exist_ok=True)
            (tmp_path / name / file).write_bytes(b"no image")
        with pytest.raises(DataError, match=r"^\S+ holds no images and no class subfolders"):
            read_images(tmp_path / name)
    assert "2 files are not read" in caplog.text and "a.csv, b.parquet" in caplog.text


def test_files_not_named_as_images_are_named_and_jfif_files_read_as_jpeg(tmp_path, caplog):
    # A folder's files of other suffixes were left out without a word: a JPEG saved as
    # .jfif (as Windows names them) was not scored, and nothing said so.
    grey = bars(1, seed=4)[0, 0]
    for folder in (tmp_path / "flat", tmp_path / "classes" / "good"):
        folder.mkdir(parents=True)
        Image.fromarray(grey).save(folder / "a.png")
        Image.fromarray(grey).save(folder / "b.jfif", "JPEG", quality=95)
        Image.fromarray(grey).save(folder / "c.jpe", "JPEG", quality=95)
        (folder / "d.heic").write_bytes(b"not read")
        (folder / ".DS_Store").write_bytes(b"hidden: not named")
    images = read_images(tmp_path / "flat")
    assert [Path(name).name for name in images.names] == ["a.png", "b.jfif", "c.jpe"]
    assert "flat: 1 file is not read, as it is not named as an image file (d.heic)" in (caplog.text)
    caplog.clear()
    (tmp_path / "classes" / "good" / "notes.txt").write_text("not an image")
    assert len(read_images(tmp_path / "classes").names) == 3
    assert (
        "classes: 2 files are not read, as they are not named as image files "
        "(good/d.heic, good/notes.txt)"
    ) in caplog.text
    assert ".DS_Store" not in caplog.text


def test_a_picture_reads_the_same_whatever_png_mode_it_was_saved_in(tmp_path):
    grey = bars(1, seed=4)[0, 0]  # (16, 16) uint8
    colour = np.stack([grey, 255 - grey, grey // 2], axis=-1)  # (16, 16, 3)
    (tmp_path / "grey").mkdir()
    Image.fromarray(grey).save(tmp_path / "grey" / "l.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "grey" / "i16.png")
    Image.fromarray(grey).convert("LA").save(tmp_path / "grey" / "la.png")
    Image.fromarray(grey).convert("P").save(tmp_path / "grey" / "p.png")  # grey palette
    assert [Image.open(tmp_path / "grey" / f"{m}.png").mode for m in ("i16", "la", "p")] == [
        "I;16",
        "LA",
        "P",
    ]
    images = read_images(tmp_path / "grey")
    assert images.images.shape == (4, 1, 16, 16) and images.images.dtype == np.uint8
    for image in images.images:
        np.testing.assert_array_equal(image[0], grey)
    # A 16-bit level v reads as round(v / 257): the brightest level is 255, none saturate.
    (tmp_path / "levels").mkdir()
    levels = np.array([[0, 128, 129, 65535]], np.uint16)
    Image.fromarray(levels).save(tmp_path / "levels" / "i16.png")
    assert read_images(tmp_path / "levels").images.ravel().tolist() == [0, 0, 1, 255]
    (tmp_path / "colour").mkdir()
    Image.fromarray(colour).save(tmp_path / "colour" / "rgb.png")
    Image.fromarray(colour).convert("RGBA").save(tmp_path / "colour" / "rgba.png")
    palette = Image.fromarray(colour).quantize(64)
    palette.save(tmp_path / "colour" / "p.png")
    images = read_images(tmp_path / "colour")
    assert images.images.shape == (3, 3, 16, 16)
    by_palette, rgb, rgba = images.images.transpose(0, 2, 3, 1)  # in file name order
    np.testing.assert_array_equal(rgb, colour)
    np.testing.assert_array_equal(rgba, colour)
    np.testing.assert_array_equal(by_palette, np.asarray(palette.convert("RGB")))
    # A grey image beside a colour one: 3 channels, the grey level in each.
    Image.fromarray(grey).convert("LA").save(tmp_path / "colour" / "z.png")
    mixed = read_images(tmp_path / "colour").images
    assert mixed.shape == (4, 3, 16, 16) and (mixed[3] == grey).all()


def test_grey_pictures_saved_as_colour_read_as_grey_and_each_model_takes_the_other_kind(
    tmp_path, caplog
):
    grey = bars(1, seed=4)[0, 0]  # (16, 16) uint8
    (tmp_path / "grey").mkdir()
    rgb = Image.fromarray(grey).convert("RGB")
    rgb.save(tmp_path / "grey" / "a.png")
    rgb.save(tmp_path / "grey" / "b.jpg", quality=95)
    rgb.save(tmp_path / "grey" / "c.webp", quality=80)  # lossy: channels up to 1 level apart
    rgb.save(tmp_path / "grey" / "d.gif")
    images = read_images(tmp_path / "grey")
    assert images.images.shape == (4, 1, 16, 16)
    assert [Path(n).suffix for n in images.names] == [".png", ".jpg", ".webp", ".gif"]
    (tmp_path / "classes" / "good").mkdir(parents=True)  # class subfolders read alike
    rgb.save(tmp_path / "classes" / "good" / "d.gif")
    assert read_images(tmp_path / "classes").images.shape == (1, 1, 16, 16)
    np.testing.assert_array_equal(images.images[0, 0], grey)
    np.testing.assert_array_equal(images.images[3, 0], grey)
    assert np.abs(images.images[2, 0].astype(int) - grey).max() <= 10  # WebP is lossy
    # Two levels apart is a tint, not grey.
    tinted = np.stack([grey, grey, np.clip(grey.astype(int) + 2, 0, 255)], axis=-1)
    Image.fromarray(tinted.astype(np.uint8)).save(tmp_path / "grey" / "e.png")
    assert read_images(tmp_path / "grey").images.shape == (5, 3, 16, 16)
    assert "1 of 5 images are colour (e.png), so every image is read in colour" in caplog.text
    caplog.clear()
    # A colour model scores grey images as grey pictures in colour, as a folder of grey
    # and colour images is read; a grey model scores colour images by their luma, as PIL
    # converts them to grey, and says how many were not grey.
    colour = np.repeat(bars(4, seed=5), 3, axis=1)
    colour[:, 2] //= 2
    for_colour = ImagePreprocessor().fit(colour)
    np.testing.assert_array_equal(
        for_colour.transform(images.images[:1]),
        for_colour.transform(np.repeat(images.images[:1], 3, axis=1)),
    )
    for_grey = ImagePreprocessor().fit(images.images[:1])
    pil_grey = [Image.fromarray(image.transpose(1, 2, 0).copy()).convert("L") for image in colour]
    np.testing.assert_array_equal(
        for_grey.transform(colour)[:, 0],
        np.stack([np.asarray(image) for image in pil_grey]).astype(np.float32) / 255,
    )
    assert "4 of 4 images are colour and are scored by their grey levels" in caplog.text
    caplog.clear()
    for_grey.transform(colour.astype(np.float32) / 255)  # levels in [0, 1] alike
    assert "4 of 4 images are colour and are scored by their grey levels" in caplog.text


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".tif"])
def test_photos_with_an_exif_orientation_read_upright_as_a_viewer_shows_them(tmp_path, suffix):
    # A camera stores a turned shot's pixels as the sensor saw them and an EXIF tag
    # saying how to show them; read unturned, the picture was sideways (and 16 x 24, so
    # a folder with an upright shot of it was refused for its sizes). Pillow turns TIFFs
    # itself as it loads them: they must not be turned twice.
    upright = np.full((16, 24, 3), 200, np.uint8)
    upright[:6, :6] = (230, 30, 30)  # a red corner, top left as shown
    turns = {
        1: None,
        2: Image.Transpose.FLIP_LEFT_RIGHT,
        3: Image.Transpose.ROTATE_180,
        4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE,
        6: Image.Transpose.ROTATE_90,  # stored turned left; shown turned right
        7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_270,
    }
    for orientation, stored in turns.items():
        exif = Image.Exif()
        exif[0x0112] = orientation
        picture = Image.fromarray(upright)
        picture = picture if stored is None else picture.transpose(stored)
        picture.save(tmp_path / f"o{orientation}{suffix}", exif=exif, quality=95)
    images = read_images(tmp_path)
    assert images.images.shape == (8, 3, 16, 24)
    # score checks sizes from the headers first; PIL turns a TIFF's size itself there too
    from anomaly_vae.data.images import _header_size

    assert {_header_size(name) for name in images.names} == {(16, 24)}
    for name, image in zip(images.names, images.images, strict=True):
        pixels = image.transpose(1, 2, 0).astype(int)
        assert np.abs(pixels - upright).mean() < 5, name  # JPEG is lossy at edges
        assert (pixels[:4, :4, 0] > 180).all() and (pixels[:4, :4, 1] < 80).all(), name


def test_a_folder_is_read_into_one_array_as_its_images_are_decoded(tmp_path):
    """The decoded images and their pixels were listed, then stacked: twice the folder's
    pixels as numpy arrays at the end of a read (and once more as PIL images)."""
    images = bars(500, seed=0, size=64)
    (tmp_path / "imgs").mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image[0]).save(tmp_path / "imgs" / f"{i:03d}.png")
    read_images(tmp_path / "imgs")  # the modules a read imports are not its pixels
    read, peak = traced_peak(lambda: read_images(tmp_path / "imgs"))
    np.testing.assert_array_equal(read.images, images)
    assert peak < 1.5 * images.nbytes


@pytest.mark.parametrize("size", [None, 24])
def test_grey_images_beside_colour_ones_read_as_pil_converts_them_to_rgb(tmp_path, size):
    # Read one at a time, the grey images before the first colour one are made colour
    # then: as before, when every image was converted once all were decoded.
    rng = np.random.default_rng(0)
    (tmp_path / "imgs").mkdir()
    for name in ("a", "b", "d", "e"):
        Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(
            tmp_path / "imgs" / f"{name}.png"
        )
    colour = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(colour, "RGB").save(tmp_path / "imgs" / "c.png")
    files = sorted((tmp_path / "imgs").iterdir())
    as_rgb = []
    for file in files:
        with Image.open(file) as image:
            as_rgb.append(image.convert("RGB"))
    if size is not None:
        as_rgb = [image.resize((size, size), Image.Resampling.BILINEAR) for image in as_rgb]
    expected = np.stack([np.asarray(image) for image in as_rgb]).transpose(0, 3, 1, 2)
    read = read_images(tmp_path / "imgs", size=size).images
    np.testing.assert_array_equal(read, expected)
    assert read.strides == expected.strides  # channels last in memory, as PIL gives them


def test_uint8_images_become_the_model_input_a_block_at_a_time(monkeypatch):
    """transform made the whole set float32 at input resolution, twice over (the
    division made a second), before it pooled: 2.6 GB for 20,000 images of 128 x 128.
    A block at a time, each image's values and the memory layout are those of the whole
    set at once, for any rows picked."""
    monkeypatch.setattr(images_module, "TRANSFORM_BLOCK_VALUES", 8 * 32 * 32, raising=False)
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (2000, 1, 32, 32), dtype=np.uint8)
    pre = ImagePreprocessor(pool=2).fit(grey)
    features, peak = traced_peak(lambda: pre.transform(grey))
    assert features.shape == (2000, 1, 16, 16) and peak < 1.2 * features.nbytes
    colour = rng.integers(0, 256, (300, 12, 12, 3), dtype=np.uint8).transpose(0, 3, 1, 2)
    small = grey[:300, :, :12, :12].copy()
    for images in (small, colour, np.asfortranarray(colour)):  # C order, channels last, other
        for pool in (1, 2, 3):
            pre = ImagePreprocessor(pool=pool).fit(images)
            with monkeypatch.context() as whole_at_once:
                whole_at_once.setattr(images_module, "TRANSFORM_BLOCK_VALUES", 1 << 30)
                whole = pre.transform(images)
            rows = rng.permutation(len(images))[:250]
            for blocks, expected in (
                (pre.transform(images), whole),
                (pre.transform(images, rows), whole[rows]),
            ):
                assert blocks.tobytes() == expected.tobytes()
                assert blocks.strides == expected.strides


def test_an_image_fit_holds_the_model_input_of_its_images_once(monkeypatch):
    """Fit made the model input of every image at once, the float32 images at input
    resolution twice over on the way, then copied its training, validation and
    calibration parts and the training images beside it: 4.2 GB at its peak for 20,000
    images of 128 x 128, whose model input is 1.3 GB. The parts are pooled from the uint8
    images a block at a time."""
    monkeypatch.setattr(images_module, "TRANSFORM_BLOCK_VALUES", 64 * 32 * 32, raising=False)
    images = np.random.default_rng(0).integers(0, 256, (3000, 1, 32, 32), dtype=np.uint8)
    config = tiny_config("training.epochs=1").detector_config()
    VAEDetector(config).fit(images[:100])  # the modules a fit imports are not its data
    detector, peak = traced_peak(lambda: VAEDetector(config).fit(images))
    assert detector.auto_settings["data.image_pool"] == 2  # model input: as many bytes
    assert peak < 2 * images.nbytes


def test_float_images_read_as_grey_levels_and_unscaled_ones_are_refused(tmp_path):
    grey = bars(1, seed=4)[0, 0]  # (16, 16) uint8
    (tmp_path / "float").mkdir()
    Image.fromarray(grey.astype(np.float32) / 255, "F").save(tmp_path / "float" / "unit.tif")
    Image.fromarray(grey.astype(np.float32), "F").save(tmp_path / "float" / "levels.tif")
    assert Image.open(tmp_path / "float" / "unit.tif").mode == "F"
    images = read_images(tmp_path / "float")
    assert images.images.shape == (2, 1, 16, 16)
    for image in images.images:
        np.testing.assert_array_equal(image[0], grey)
    (tmp_path / "wide").mkdir()
    Image.fromarray(grey.astype(np.float32) * 4 - 2, "F").save(tmp_path / "wide" / "w.tif")
    with pytest.raises(DataError, match=r"w\.tif: float grey levels from -2 to 918; expected"):
        read_images(tmp_path / "wide")


def test_images_of_different_sizes_are_resized_when_asked_and_refused_otherwise(tmp_path):
    for i, image in enumerate(bars(2, seed=4)):
        Image.fromarray(image[0]).save(tmp_path / f"small{i}.png")
    for i, image in enumerate(bars(2, seed=5, size=32)):
        Image.fromarray(image[0]).save(tmp_path / f"large{i}.png")
    with pytest.raises(DataError, match=r"different sizes .* data\.image_size"):
        read_images(tmp_path)
    # The files are named: one sorting last is met in a folder's last part when scored.
    with pytest.raises(DataError, match=r"\(\S*small0\.png: 16 x 16, \S*large0\.png: 32 x 32\)"):
        read_images(tmp_path)
    images = read_images(tmp_path, size=16)
    assert images.images.shape == (4, 1, 16, 16) and images.images.dtype == np.uint8
    # A resized horizontal bar is still a bright row, not a blur over the whole image.
    large = images.images[[n.endswith("large0.png") for n in images.names]][0, 0]
    assert large.mean(axis=1).max() > 2 * large.mean(axis=0).max()


def test_a_folder_is_checked_against_the_models_image_size_not_its_first_image(
    bars_detector, tmp_path
):
    """Scoring with a model fit at 16 x 16 without data.image_size, a folder whose first
    image (in sorted order) is 40 x 40 named the one image of the model's size as the odd
    one (``photo01.JPG: 16 x 16, photo00.jpg: 40 x 40``) and advised data.image_size as if
    the folder's sizes were the trouble. Every image not of the model's size is named,
    with the size the model takes, by `score` before anything is written, and by the
    reads of `view` and `calibrate`."""
    from anomaly_vae import scoring

    folder = tmp_path / "new"
    folder.mkdir()
    Image.fromarray(bars(1, seed=1, size=40)[0, 0]).save(folder / "photo00.jpg")
    Image.fromarray(bars(1, seed=2)[0, 0]).save(folder / "photo01.JPG")
    Image.fromarray(bars(1, seed=3, size=24)[0, 0, :20]).save(folder / "photo02.png")
    expected = (
        r"new: 2 images are not 16 x 16, the size the model takes: \S*photo00\.jpg \(40 x 40\), "
        r"\S*photo02\.png \(20 x 24\); resize them to 16 x 16, or fit with --set data\.image_size"
    )
    with pytest.raises(DataError, match=expected) as refused:
        scoring.score_images(folder, bars_detector, tmp_path / "s.csv")
    assert "photo01" not in str(refused.value) and not (tmp_path / "s.csv").exists()
    assert scoring.image_size(bars_detector) == (16, 16)
    with pytest.raises(DataError, match=expected):
        read_images(folder, False, model_size=(16, 16))
    # One odd image, among others of the model's size, is named alone; past three, counted.
    (folder / "photo02.png").unlink()
    with pytest.raises(
        DataError, match=r"1 image is not 16 x 16.*photo00\.jpg \(40 x 40\); resize it"
    ):
        read_images(folder, False, model_size=(16, 16))
    for i in range(4):
        Image.fromarray(bars(1, seed=i, size=20)[0, 0]).save(folder / f"z{i}.png")
    with pytest.raises(DataError, match=r"5 images are not .*z1\.png \(20 x 20\) and 2 more;"):
        read_images(folder, False, model_size=(16, 16))


def test_an_array_of_another_size_is_told_what_the_models_image_size_resizes(
    bars_detector, tmp_path
):
    """A model fit with data.image_size resizes image files as it reads them, not arrays
    (Python, a served model): an array of another size was told to "fit with --set
    data.image_size=N", which this model had been."""
    config = tiny_config("training.epochs=1", "data.image_size=16").detector_config()
    resizing = VAEDetector(config).fit(bars(40, seed=0))
    resizing.save(tmp_path / "model")
    for detector in (resizing, VAEDetector.load(tmp_path / "model")):
        with pytest.raises(DataError) as refused:
            detector.score_frame(bars(2, seed=1, size=20))
        assert str(refused.value).endswith(
            "resize them to 16 x 16; this model resizes image files as it reads them "
            "(data.image_size=16), not arrays"
        )
    # A model without it: resize, or fit with it.
    with pytest.raises(DataError, match=r"resize them to 16 x 16, or fit with --set data\.image_s"):
        bars_detector.score_frame(bars(2, seed=1, size=20))


def test_map_levels_are_rounded_to_the_nearest(tmp_path):
    from PIL import Image

    from anomaly_vae.scoring import save_anomaly_maps

    maps = np.full((1, 1, 4, 4), 100.7 / 255)
    (file,) = save_anomaly_maps(maps, ["a.png"], tmp_path)
    assert (np.asarray(Image.open(file)) == 101).all()  # the cast alone gave 100


def test_images_sharing_a_file_name_in_different_classes_get_a_map_each(tmp_path):
    for label in ("good", "bad"):
        (tmp_path / "collide" / label).mkdir(parents=True)
    for file in ("good/001.png", "bad/001.png", "good/002.png"):
        Image.fromarray(bars(1, seed=4)[0, 0]).save(tmp_path / "collide" / file)
    names = read_images(tmp_path / "collide").names  # bad/001, good/001, good/002
    maps = np.linspace(0, 1, 3)[:, None, None, None] * np.ones((3, 1, 16, 16))
    files = save_anomaly_maps(maps, names, tmp_path / "maps")
    written = sorted(p.name for p in (tmp_path / "maps").iterdir())
    assert [f.name for f in files] == ["bad_001.png", "good_001.png", "002.png"]
    assert written == sorted(f.name for f in files)  # one map per image, none overwritten
    assert np.asarray(Image.open(tmp_path / "maps" / "bad_001.png")).max() == 0  # its own
    # Still one each where the class does not part them (one folder, two extensions),
    # and case does not count, as on file systems that ignore it.
    assert map_names(["f/a.png", "f/a.jpg", "g/A.png", "test/1"]) == [
        "f_a",
        "f_a-2",
        "g_A",
        "test_1",
    ]


def test_a_map_name_too_long_for_the_file_system_is_cut_with_a_hash_of_it(bars_detector, tmp_path):
    """A long image stem with its class before it ('good_' + 247 bytes + '.png') made a
    map name over 255 bytes, and the whole run failed ('cannot write maps/good_xxx...png:
    File name too long'). Such a name is now cut to fit, and a hash of the whole name
    (the same in every run) keeps it apart from the others; names that fit are kept."""
    from anomaly_vae import scoring

    stem = "x" * 246
    folder = tmp_path / "imgs"
    for label in ("good", "bad"):
        (folder / label).mkdir(parents=True)
        for i, image in enumerate(bars(2, seed=5)):
            Image.fromarray(image[0]).save(folder / label / f"{stem}{i}.png")
    Image.fromarray(bars(1, seed=6)[0, 0]).save(folder / "good" / f"{'y' * 251}.png")
    scores = scoring.score_images(folder, bars_detector, tmp_path / "s.csv", tmp_path / "maps")
    written = sorted(p.name for p in (tmp_path / "maps").iterdir())
    assert written == sorted(scores["map"]) and len(written) == 5
    assert all(len(name.encode()) <= 255 for name in written)
    # 255 bytes: they fit, unchanged; good_ is a byte longer than bad_, one too many.
    assert {f"{'y' * 251}.png", f"bad_{stem}0.png", f"bad_{stem}1.png"} < set(written)
    cut = [name for name in written if name.startswith("good_")]
    assert len(cut) == 2 and all(re.fullmatch(r"good_x+~[0-9a-f]{8}\.png", n) for n in cut)
    # The name of a map depends on its image's name alone, not on the other images.
    wanted = f"good_{stem}0"
    assert (
        map_names([f"good/{stem}0.png", f"bad/{stem}0.png"])[0]
        == map_names([f"bad/{stem}0.png", f"good/{stem}0.png", "good/other.png"])[1]
    )
    (short,) = [n for n in map_names([f"good/{stem}0.png", f"bad/{stem}0.png"]) if "good" in n]
    assert len(f"{short}.png".encode()) == 255 and short.startswith(wanted[:200])
    # A multi-byte name is cut between characters, and "-2" names are cut as well.
    cut = map_names(["a/" + "é" * 130 + ".png", "a/" + "é" * 130 + ".jpg"])
    assert len(set(cut)) == 2 and all(len(f"{n}.png".encode()) <= 255 for n in cut)
    assert all(n.startswith("a_" + "é" * 100) and "\ufffd" not in n for n in cut)
    assert map_names(["f/a.png", "f/a.jpg"]) == ["f_a", "f_a-2"]  # short names as before


def test_cli_resizes_images_with_the_size_saved_in_the_model(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from anomaly_vae.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "train").mkdir()
    for size in (16, 32):
        for i, image in enumerate(bars(60, seed=size, size=size)):
            Image.fromarray(image[0]).save(tmp_path / "train" / f"t{size}_{i}.png")
    (tmp_path / "new").mkdir()
    for i, image in enumerate(bars(3, seed=3, size=24)):
        Image.fromarray(image[0]).save(tmp_path / "new" / f"n{i}.png")
    options = [f"--set={item}" for item in ("data.image_size=16", *TINY)]
    fit = CliRunner().invoke(main, ["fit", "train", "--no-tracking", "--quiet", *options])
    assert fit.exit_code == 0, fit.output
    scored = CliRunner().invoke(main, ["score", "new", "-o", "s.csv", "--quiet"])
    assert scored.exit_code == 0, scored.output
    assert len(pd.read_csv(tmp_path / "s.csv")) == 3


def test_reads_torchvision_mnist_layout_from_a_local_root(tmp_path):
    """Writes a tiny MNIST in the idx format, then loads it with torchvision's reader."""
    images = bars(12, seed=5, size=28)[:, 0]
    labels = np.arange(12, dtype=np.uint8) % 10
    for train in (True, False):
        write_idx_set(tmp_path / "MNIST", train, images, labels)
    loaded = read_images(f"mnist:{tmp_path}", train=False)
    assert loaded.images.shape == (12, 1, 28, 28)
    np.testing.assert_array_equal(loaded.images[:, 0], images)
    assert loaded.labels.tolist() == labels.tolist()
    assert read_images(f"mnist:{tmp_path}", size=14).images.shape == (12, 1, 14, 14)
    with pytest.raises(DataError, match="FashionMNIST not found"):
        read_images(f"fashionmnist:{tmp_path}")


def test_gzipped_idx_files_are_named_with_how_to_read_them(tmp_path):
    import gzip

    images = bars(4, seed=5, size=28)[:, 0]
    for train in (True, False):
        write_idx_set(tmp_path / "MNIST", train, images, np.arange(4, dtype=np.uint8))
    for path in (tmp_path / "MNIST" / "raw").iterdir():
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(path.read_bytes()))
        path.unlink()
    with pytest.raises(DataError, match=r"read uncompressed: gunzip those in .*MNIST/raw"):
        read_images(f"mnist:{tmp_path}")
    with pytest.raises(DataError, match=r"holds no data sets .*: gunzip those in .*MNIST/raw"):
        find_datasets("i-oneclass", tmp_path)
    with pytest.raises(DataError, match=r"it is never downloaded$"):  # not about MNIST
        read_images(f"fashionmnist:{tmp_path}")


def test_fit_on_a_torchvision_set_evaluates_on_its_test_split(tmp_path, monkeypatch):
    """The training split's other classes are never used: the summary says so, and the
    evaluation counts the test split's images."""
    from click.testing import CliRunner

    from anomaly_vae.cli import main

    monkeypatch.chdir(tmp_path)
    vertical = bars(40, seed=1, vertical=True, size=28)
    horizontal = bars(40, seed=2, size=28)
    labels = np.repeat(np.array([0, 1], dtype=np.uint8), 40)
    write_idx_set(tmp_path / "MNIST", True, np.concatenate([vertical, horizontal])[:, 0], labels)
    test_images = np.concatenate(
        [bars(20, seed=3, vertical=True, size=28), bars(10, seed=4, size=28)]
    )
    test_labels = np.repeat(np.array([0, 1], dtype=np.uint8), [20, 10])
    write_idx_set(tmp_path / "MNIST", False, test_images[:, 0], test_labels)
    options = [f"--set={item}" for item in ("data.image_size=14", *TINY)]
    fit = CliRunner().invoke(
        main, ["fit", f"mnist:{tmp_path}", "--normal-class", "0", "--no-tracking", *options]
    )
    assert fit.exit_code == 0, fit.output
    assert "Left out the 40 images of other classes in the training split" in fit.output
    assert "labelled anomalies out of training" not in fit.output
    assert "Evaluation on 20 normal + 10 anomalous held-out images" in fit.output


def test_a_torchvision_fit_resizes_only_the_normal_images_of_its_training_split(tmp_path):
    """The whole training split was resized before its normal class was picked, though
    its other classes are never used: at data.image_size=64, Fashion-MNIST's 60,000
    images (246 MB) for the 6,000 trained on. The images trained on are still those of
    the split resized whole, bit for bit."""
    from anomaly_vae.config import load_config
    from anomaly_vae.fitting import load_training_data

    images = np.random.default_rng(0).integers(0, 256, (1000, 28, 28), dtype=np.uint8)
    labels = (np.arange(1000) % 10).astype(np.uint8)
    write_idx_set(tmp_path / "MNIST", True, images, labels)
    write_idx_set(tmp_path / "MNIST", False, images[:50], labels[:50])
    source, config = f"mnist:{tmp_path}", load_config(overrides=["data.image_size=84"])
    load_training_data(source, config, normal_class="3")  # the modules it imports are no data
    data, peak = traced_peak(lambda: load_training_data(source, config, normal_class="3"))
    whole = read_images(source, size=84)
    np.testing.assert_array_equal(data.train, whole.images[whole.labels == 3])
    assert data.train.flags.c_contiguous  # the layout the model's float rounding follows
    assert peak < whole.images.nbytes / 2  # 7.1 MB; the 100 normal images resized: 0.7 MB


def test_reads_any_mnist_layout_folder_and_rejects_broken_idx_files(tmp_path):
    """KMNIST gets torchvision's class names; an unknown set gets its label values."""
    images = bars(6, seed=1, size=28)[:, 0]
    labels = np.array([0, 1, 2, 0, 1, 2], dtype=np.uint8)
    for name in ("KMNIST", "Glyphs"):
        for train in (True, False):
            write_idx_set(tmp_path / name, train, images, labels)
    kmnist = read_images(f"kmnist:{tmp_path}")
    assert kmnist.classes[:3] == ["o", "ki", "su"] and kmnist.images.shape == (6, 1, 28, 28)
    glyphs = read_idx_set(tmp_path / "Glyphs", train=False)
    assert glyphs.classes == ["0", "1", "2"] and glyphs.labels.tolist() == labels.tolist()
    np.testing.assert_array_equal(glyphs.images[:, 0], images)
    (tmp_path / "Glyphs" / "raw" / "t10k-images-idx3-ubyte").write_bytes(b"not an idx file")
    with pytest.raises(DataError, match="not an idx file of the MNIST layout"):
        read_idx_set(tmp_path / "Glyphs", train=False)
    (tmp_path / "Glyphs" / "raw" / "train-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="train-labels-idx1-ubyte: missing"):
        read_idx_set(tmp_path / "Glyphs", train=True)


def test_idx_writer_refuses_what_unsigned_bytes_cannot_hold(tmp_path):
    images = bars(4, seed=2, size=8)
    with pytest.raises(ValueError, match="grey-scale"):
        write_idx_set(tmp_path, True, np.repeat(images, 3, axis=1), np.zeros(4, np.uint8))
    with pytest.raises(ValueError, match="do not pair up"):
        write_idx_set(tmp_path, True, images, np.zeros(3, np.uint8))
    labels = np.zeros(4, dtype=np.uint8)
    with pytest.raises(ValueError, match="outside 0-255"):
        write_idx_set(tmp_path, True, images.astype(int) * 2, labels)
    with pytest.raises(ValueError, match="whole numbers"):
        write_idx_set(tmp_path, True, images / 255, labels)
    assert not (tmp_path / "raw").exists()  # nothing half-written


def test_sklearn_digits_pipeline_writes_a_set_the_benchmark_reads(tmp_path):
    """pipelines/sklearn_images.py: even rows train, odd rows test, counts 0-16 as grey."""
    script = Path(__file__).parents[1] / "pipelines" / "sklearn_images.py"
    write_digits = runpy.run_path(str(script))["write_digits"]
    assert write_digits(tmp_path) == {"train": 899, "test": 898}
    digits = load_digits()
    train = read_idx_set(tmp_path / "Digits", train=True)
    test = read_idx_set(tmp_path / "Digits", train=False)
    assert train.images.shape == (899, 1, 8, 8) and test.images.shape == (898, 1, 8, 8)
    assert train.labels.tolist() == digits.target[::2].tolist()
    assert test.labels.tolist() == digits.target[1::2].tolist()
    assert train.classes == [str(d) for d in range(10)]
    np.testing.assert_array_equal(train.images[:, 0] == 255, digits.images[::2] == 16)
    np.testing.assert_array_equal(test.images[:, 0] == 0, digits.images[1::2] == 0)


def test_validation_latents_of_images_are_named_by_their_image(tmp_path):
    """The fit run's latents/validation_latent_means.csv names each image as `score`
    does; it numbered them 0, 1, ... among the validation images, which said nothing of
    which image a row was."""
    from anomaly_vae import plots
    from anomaly_vae.fitting import load_training_data
    from anomaly_vae.tracking import _log_latents

    for label, vertical, count in (("good", False, 80), ("odd", True, 6)):
        (tmp_path / "imgs" / label).mkdir(parents=True)
        for i, image in enumerate(bars(count, seed=11, vertical=vertical)):
            Image.fromarray(image[0]).save(tmp_path / "imgs" / label / f"{label}{i}.png")
    config = tiny_config("model.name=conv-vae", *IMAGE_MODEL, "training.epochs=2")
    data = load_training_data(tmp_path / "imgs", config, normal_class="good")
    detector = VAEDetector(config.detector_config()).fit(data.train)
    (tmp_path / "out").mkdir()
    titles = []
    scatter = plots.latent_scatter

    def recorded(latents, groups, title, *args, **kwargs):
        titles.append(title)
        return scatter(latents, groups, title, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(plots, "latent_scatter", recorded)
        _log_latents(detector, data, tmp_path / "out")
    # Of images, as the run's histogram says: the plot's title said "validation rows".
    assert titles == ["Latent means of validation images and labelled anomalies"]
    table = pd.read_csv(tmp_path / "out" / "latents" / "validation_latent_means.csv")
    validation = data.train[detector.split_rows_["validation"]]
    assert list(table.columns[:2]) == ["image", "z0"] and len(table) == len(validation) > 1
    for name, pixels in zip(table["image"], validation, strict=True):
        assert Path(name).parent.name == "good"
        np.testing.assert_array_equal(np.asarray(Image.open(name))[None], pixels)


def test_fit_on_images_refuses_an_eval_file_and_table_columns(tmp_path):
    """`fit FOLDER --eval OTHER` was run without a word about --eval, which nothing read
    for images: the summary's evaluation looked as if it covered OTHER."""
    from tests.conftest import tiny_fit

    for label, vertical, count in (("good", False, 40), ("bad", True, 3)):
        (tmp_path / "imgs" / label).mkdir(parents=True)
        for i, image in enumerate(bars(count, seed=6, vertical=vertical)):
            Image.fromarray(image[0]).save(tmp_path / "imgs" / label / f"{i:03d}.png")
    good_and_bad_folder(tmp_path / "reviewed")
    # So are the table columns --id-col and --ignore-col name, ignored as well.
    refused = (
        (["--eval", str(tmp_path / "reviewed")], "--eval adds a labelled table file; for images"),
        (["--id-col", "name"], "Error: --id-col (data."),
        (["--ignore-col", "name"], "Error: --ignore-col (data."),
    )
    for options, message in refused:
        result = tiny_fit(
            str(tmp_path / "imgs"),
            "--normal-class",
            "good",
            "--set",
            "training.epochs=2",
            *options,
            "--no-tracking",
            "--model-dir",
            str(tmp_path / "model"),
        )
        assert result.exit_code == 1, result.output
        assert message in result.output
        if options[0] != "--eval":
            assert "table columns; images have none" in result.output
        assert not (tmp_path / "model").exists()


def test_few_labelled_images_are_warned_about_as_images(bars_detector, caplog):
    """A threshold chosen on few labelled images (calibrate on a reviewed folder) warned
    of "labelled rows", where every other message of an image model says images."""
    images = np.concatenate([bars(20, seed=4), bars(3, seed=5, vertical=True)])
    labels = np.r_[np.zeros(20), np.ones(3)]
    detector = copy.deepcopy(bars_detector)
    with caplog.at_level(logging.WARNING):
        detector.calibrate_threshold(images, labels, method="f1")
    assert "chosen on 3 anomalous and 20 normal labelled images" in caplog.text
    assert "far with one more image" in caplog.text and "rows" not in caplog.text


def test_cli_fits_an_image_folder_and_scores_with_anomaly_maps(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from anomaly_vae.cli import main

    monkeypatch.chdir(tmp_path)
    for label, vertical, count in (("good", False, 150), ("scratch", True, 15)):
        (tmp_path / "train" / label).mkdir(parents=True)
        for i, image in enumerate(bars(count, seed=6 if vertical else 7, vertical=vertical)):
            Image.fromarray(image[0]).save(tmp_path / "train" / label / f"{label}{i}.png")
    (tmp_path / "new").mkdir()
    for i, image in enumerate(np.concatenate([bars(4, seed=8), bars(2, seed=9, vertical=True)])):
        Image.fromarray(image[0]).save(tmp_path / "new" / f"n{i}.png")
    options = [f"--set={item}" for item in (*IMAGE_MODEL, "model.name=conv-vae")]
    fit = CliRunner().invoke(
        main, ["fit", "train", "--normal-class", "good", "--no-tracking", "--quiet", *options]
    )
    assert fit.exit_code == 0, fit.output
    assert "Kept 15 labelled anomalies out of training." in fit.output and "AUROC" in fit.output
    assert "on 120 normal images (train" in fit.output and "held-out images" in fit.output
    scored = CliRunner().invoke(main, ["score", "new", "-o", "s.csv", "--maps", "maps"])
    assert scored.exit_code == 0, scored.output
    assert "Scored 6 images; flagged" in scored.output
    import pandas as pd

    scores = pd.read_csv(tmp_path / "s.csv")
    assert [name.split("/")[-1] for name in scores["image"]] == [f"n{i}.png" for i in range(6)]
    assert scores["score"][4:].min() > scores["score"][:4].max()  # vertical bars stand out
    assert sorted(p.name for p in (tmp_path / "maps").iterdir()) == [f"n{i}.png" for i in range(6)]
    assert scores["map"].tolist() == [f"n{i}.png" for i in range(6)]  # each row's own map
    pd.DataFrame({"x": [1.0, 2.0]}).to_csv(tmp_path / "table.csv", index=False)
    table = CliRunner().invoke(main, ["score", "table.csv"])
    assert table.exit_code == 1 and "fit on images, but table.csv is a table" in table.output
    unnamed = CliRunner().invoke(main, ["fit", "train", "--no-tracking", *options])
    assert unnamed.exit_code == 1 and "name the normal one with --normal-class" in unnamed.output
    # Labelled images set the threshold of the fitted model again (anomaly-vae calibrate).
    recalibrated = CliRunner().invoke(
        main, ["calibrate", "train", "--normal-class", "good", "--no-tracking"]
    )
    assert recalibrated.exit_code == 0, recalibrated.output
    assert "of 165 labelled images" in recalibrated.output
    rescored = CliRunner().invoke(main, ["score", "new", "-o", "s2.csv", "--quiet"])
    assert rescored.exit_code == 0, rescored.output
    assert pd.read_csv(tmp_path / "s2.csv")["is_anomaly"].tolist() == [False] * 4 + [True] * 2
    # A flat folder of normal images takes the quantile again; a labelled one needs its class.
    (tmp_path / "normal").mkdir()
    for i, image in enumerate(bars(40, seed=10)):
        Image.fromarray(image[0]).save(tmp_path / "normal" / f"ok{i}.png")
    arguments = ["calibrate", "--method", "quantile", "--target-fpr", "0.05", "--no-tracking"]
    by_quantile = CliRunner().invoke(main, [*arguments, "normal"])
    assert by_quantile.exit_code == 0, by_quantile.output
    assert "the 95% quantile of 40 normal images" in by_quantile.output
    unnamed_class = CliRunner().invoke(main, [*arguments, "train"])
    assert unnamed_class.exit_code == 1 and "or give a flat folder" in unnamed_class.output
    # The default --method f1 needs labelled images; a flat folder has one class.
    flat = CliRunner().invoke(main, ["calibrate", "normal", "--no-tracking"])
    assert flat.exit_code == 1 and "--method f1 chooses the threshold on labelled images: " in (
        flat.output
    )
    assert "--normal-class, or use --method quantile on a folder of normal images" in flat.output
    # Classes named normal that leave no anomalies: counted in images, not rows.
    one_class = CliRunner().invoke(
        main, ["calibrate", "train", "--normal-class", "good,scratch", "--no-tracking"]
    )
    assert one_class.exit_code == 1 and "needs labelled images of both classes" in (
        one_class.output
    )


# What a grey model says of colour images in a folder it reads (ImageListing.log_colour).
GREY_MODEL_READS_COLOUR = (
    "{} images are colour ({}); the model was trained on grey images, so they are scored "
    "by their grey levels (luma): colour alone does not make them anomalous"
)


def test_colour_images_for_a_grey_model_are_one_warning(
    bars_detector, tmp_path, monkeypatch, caplog
):
    """A folder of grey and colour images given to a grey model warned "2 of 5 images are
    colour (...), so every image is read in colour" and then "... are scored by their grey
    levels": read in colour, or scored in grey? `view` repeated the second once per view,
    counting the images each drew ("1 of 1 images"). Now one warning says both, from
    `score`, `view` and `calibrate`, with the scores they gave before."""
    from click.testing import CliRunner

    from anomaly_vae.cli import main

    monkeypatch.chdir(tmp_path)
    detector = bars_detector
    detector.save(tmp_path / "grey")
    test = bars(5, seed=1)
    Path("mixed").mkdir()
    for i, image in enumerate(test):
        pixels = image[0] if i < 3 else np.stack([image[0], image[0] // 2, image[0] // 3], -1)
        Image.fromarray(pixels).save(f"mixed/{'grey' if i < 3 else 'colour'}{i}.png")
    message = f"mixed: {GREY_MODEL_READS_COLOUR.format('2 of 5', 'colour3.png, colour4.png')}"
    commands = {
        "score": ["score", "mixed", "-o", "s.csv", "--quiet"],
        "view": ["view", "all", "mixed", "--out", "v"],
        "calibrate": ["calibrate", "mixed", "--method", "quantile", "--no-tracking", "--quiet"],
    }
    for command, arguments in commands.items():
        caplog.clear()
        result = CliRunner().invoke(main, [*arguments, "--model", str(tmp_path / "grey")])
        assert result.exit_code == 0, (command, result.output)
        assert caplog.text.count("images are colour") == 1, (command, caplog.text)
        assert message in caplog.text, (command, caplog.text)
    # Scored as before: each colour image by its luma, as PIL converts it to grey.
    grey = np.stack(
        [np.asarray(Image.open(f).convert("L")) for f in sorted(Path("mixed").iterdir())]
    )
    scores = pd.read_csv("s.csv").sort_values("image")["score"].to_numpy()
    np.testing.assert_allclose(scores, detector.anomaly_score(grey[:, None]), rtol=1e-6)


@pytest.mark.parametrize("name", ["vae", "cvae"])
def test_a_folder_is_scored_a_chunk_at_a_time_as_if_read_whole(name, tmp_path, monkeypatch, caplog):
    """score_images decodes and scores PROGRESS_CHUNK_IMAGES images at a time (a folder of
    50,000 photos held whole took gigabytes): the scores and maps are those of one chunk,
    map names are decided over the whole folder (bad/003 and good/003 in different
    chunks), a colour image in one chunk is taken to grey as when the folder is read in
    colour, and each warning is given once, counted over the folder."""
    from anomaly_vae import scoring

    train = bars(200, seed=0)
    classes = np.array(["good", "bad"], dtype=object)[np.arange(len(train)) % 2]
    # Scoring passes of 2 images: chunks of 3 are rounded up to 4, whole passes.
    config = tiny_config(f"model.name={name}", "scoring.batch_size=2").detector_config()
    detector = VAEDetector(config).fit(train, condition=classes if name == "cvae" else None)
    folder = tmp_path / "new"
    test = np.concatenate([bars(5, seed=1), bars(3, seed=2, vertical=True)])
    files = ["bad/001.png", "bad/002.png", "bad/003.png", "good/001.png", "good/003.jpg"]
    files += [f"good/{i:03d}.png" for i in (3, 4, 5)]  # 003.png beside 003.jpg
    for file, image in zip(files, test, strict=True):
        (folder / file).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[0]).save(folder / file)
    colour = np.repeat(test[6, 0][..., None], 3, axis=-1)
    colour[..., 0] = 255 - colour[..., 0]
    Image.fromarray(colour).save(folder / "good" / "004.png")  # a colour image, in chunk 2

    lengths: list[int] = []  # of the images given to score_frame at a time
    score_frame = detector.score_frame

    def counting(X, *args):
        lengths.append(len(X))
        return score_frame(X, *args)

    monkeypatch.setattr(detector, "score_frame", counting)

    def scored(chunk: int, out: str) -> tuple[bytes, dict[str, bytes], list[int]]:
        monkeypatch.setattr(scoring, "PROGRESS_CHUNK_IMAGES", chunk, raising=False)
        lengths.clear()
        caplog.clear()
        scoring.score_images(folder, detector, tmp_path / f"{out}.csv", tmp_path / out)
        # One warning, what was found and what is done with it, counted over the folder.
        assert len(re.findall(r"images are colour", caplog.text)) == 1
        assert f"new: {GREY_MODEL_READS_COLOUR.format('1 of 8', '004.png')}" in caplog.text
        maps = {p.name: p.read_bytes() for p in (tmp_path / out).iterdir()}
        return (tmp_path / f"{out}.csv").read_bytes(), maps, list(lengths)

    whole, whole_maps, whole_lengths = scored(100, "whole")
    chunked, chunked_maps, chunked_lengths = scored(3, "chunked")
    assert whole_lengths == [8] and chunked_lengths == [4, 4]
    assert chunked == whole  # byte for byte: rows, order, classes, scores, map names
    assert chunked_maps == whole_maps
    frame = pd.read_csv(tmp_path / "whole.csv")
    assert frame["map"].tolist() == [
        "bad_001.png",
        "002.png",
        "bad_003.png",  # its namesakes are in the second chunk, yet not "003.png"
        "good_001.png",
        "good_003.png",
        "good_003-2.png",
        "004.png",
        "005.png",
    ]
    assert sorted(whole_maps) == sorted(frame["map"])
    assert frame["class"].tolist() == ["bad"] * 3 + ["good"] * 5


def test_an_image_folder_scored_on_a_terminal_shows_how_much_is_left(
    bars_detector, tmp_path, monkeypatch
):
    """The bar of `score FOLDER` counted the images with no total ('new: 4 images [...]'),
    so no share done and no time left, though the listing counts them before the first
    is scored; a table's bar has its total (the bytes read, or a Parquet file's rows)."""
    import io
    import sys

    from anomaly_vae import scoring

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    detector = bars_detector
    monkeypatch.setattr(scoring, "PROGRESS_CHUNK_IMAGES", 2)  # 3 parts
    folder = tmp_path / "new"
    folder.mkdir()
    for i, image in enumerate(bars(6, seed=1)):
        Image.fromarray(image[0]).save(folder / f"{i:03d}.png")
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    scoring.score_images(folder, detector, tmp_path / "s.csv", progress=True)
    monkeypatch.undo()
    frames = terminal.getvalue().split("\r")
    first = frames[1]  # the bar as drawn when scoring starts
    assert first.startswith("new:   0%") and " 0/6 [" in first, first
    assert first.endswith(" images/s]"), first


def folder_contents(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones included), by its path in it, with its bytes."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


@pytest.mark.parametrize("failure", ["unreadable", "truncated", "other size", "interrupted"])
def test_anomaly_maps_are_written_all_or_nothing(bars_detector, failure, tmp_path, monkeypatch):
    """A folder is scored a chunk at a time; a file found unreadable (or of another size)
    in a later chunk, or Ctrl-C there, failed the run after the earlier chunks' maps were
    written into MAPS, with no scores: a rerun then left a mix of old and new maps. Now
    MAPS is left as it was, and a run that succeeds replaces its maps whole. (A file cut
    short is found only as it is decoded, in its chunk; the others before scoring.)"""
    from anomaly_vae import scoring

    detector = bars_detector
    monkeypatch.setattr(scoring, "PROGRESS_CHUNK_IMAGES", 2)  # 3 chunks before the last
    folder = tmp_path / "new"
    folder.mkdir()
    for i, image in enumerate(bars(6, seed=1)):
        Image.fromarray(image[0]).save(folder / f"{i:03d}.png")
    last = folder / "zzz.png"  # sorts last: in the fourth chunk
    if failure == "unreadable":
        last.write_bytes(b"not a png")
    elif failure == "truncated":  # its header whole, its pixels not
        last.write_bytes((folder / "000.png").read_bytes()[:60])
    else:
        Image.fromarray(bars(1, seed=2, size=20 if failure == "other size" else 16)[0, 0]).save(
            last
        )
    if failure == "interrupted":
        anomaly_map = detector.anomaly_map
        calls = itertools.cycle(range(4))  # the fourth chunk of each run

        def interrupted(*args):
            if next(calls) == 3:
                raise KeyboardInterrupt
            return anomaly_map(*args)

        monkeypatch.setattr(detector, "anomaly_map", interrupted)
    maps = tmp_path / "maps"
    maps.mkdir()
    (maps / "notes.txt").write_text("the user's own file")
    (maps / "000.png").write_bytes(b"an earlier run's map of 000.png")
    before = folder_contents(tmp_path)
    for maps_dir in (maps, tmp_path / "new_maps"):
        with pytest.raises(KeyboardInterrupt if failure == "interrupted" else DataError) as error:
            scoring.score_images(folder, detector, tmp_path / "s.csv", maps_dir)
        if failure != "interrupted":
            assert "zzz.png" in str(error.value)  # the file is named
        # No new map, no scores, no temporary file or folder left behind
        assert folder_contents(tmp_path) == before
        assert sorted(p.name for p in tmp_path.iterdir()) == ["maps", "new"]
    # Fixed, the folder is scored: its maps replace those of their names; other files stay.
    last.unlink()
    monkeypatch.undo()
    scores = scoring.score_images(folder, detector, tmp_path / "s.csv", maps)
    written = folder_contents(maps)
    assert sorted(written) == [*scores["map"], "notes.txt"] and len(scores) == 6
    assert written["notes.txt"] == b"the user's own file"
    assert written["000.png"] != before["maps/000.png"]
    assert oct(maps.stat().st_mode & 0o777) == oct(0o777 & ~_umask())
    fresh = tmp_path / "fresh" / "maps"  # a new folder, and its parent, are made
    scoring.score_images(folder, detector, tmp_path / "s2.csv", fresh)
    assert folder_contents(fresh) == {name: written[name] for name in scores["map"]}
    assert oct(fresh.stat().st_mode & 0o777) == oct(0o777 & ~_umask())  # not mkdtemp's 0o700
    with pytest.raises(DataError, match=r"notes\.txt: it is a file, not a folder"):
        scoring.score_images(folder, detector, tmp_path / "s3.csv", maps / "notes.txt")
    assert not (tmp_path / "s3.csv").exists()


def test_maps_inside_the_folder_scored_are_refused_unless_in_a_hidden_folder(
    bars_detector, tmp_path
):
    """``score imgs --maps imgs/maps`` wrote the maps where the next run scored them as
    images (a class "maps", doubling the rows); ``--maps imgs`` replaced a flat folder's
    images by their maps, and ``--maps imgs/good`` a class's. Now refused before
    anything is read or written; a hidden folder in it is never read, so it is taken."""
    from anomaly_vae import scoring

    detector = bars_detector
    folder = good_and_bad_folder(tmp_path / "imgs")
    before = folder_contents(tmp_path)
    inside = [folder / "maps", folder / "good", folder, folder / "good" / "deep", folder / "."]
    for maps_dir in [*inside, tmp_path / "elsewhere" / ".." / "imgs" / "maps"]:
        with pytest.raises(DataError) as error:
            scoring.score_images(folder, detector, tmp_path / "s.csv", maps_dir)
        message = str(error.value)
        assert "\n" not in message and f"the maps folder {maps_dir} is " in message, message
        assert "a later run would score the maps as images" in message
        assert folder_contents(tmp_path) == before  # no scores, no maps, images untouched
    scores = scoring.score_images(folder, detector, tmp_path / "s.csv", folder / ".maps")
    assert sorted(p.name for p in (folder / ".maps").iterdir()) == sorted(scores["map"])
    again = scoring.score_images(folder, detector, tmp_path / "s2.csv", tmp_path / "maps")
    assert len(again) == len(scores) == 4 and again["class"].tolist() == scores["class"].tolist()


def test_scores_inside_the_folder_scored_are_refused_unless_hidden(bars_detector, tmp_path, caplog):
    """``score imgs -o imgs/scores.csv`` wrote the scores into the image folder, and every
    later run on it warned 'imgs: 1 file is not read, as it is not named as an image file
    (scores.csv)'. Now refused before anything is read or written, as ``--maps`` there
    is and as ``batch`` refuses an output folder inside an input folder; a hidden file
    there is never read, so it is taken."""
    from anomaly_vae import scoring

    folder = good_and_bad_folder(tmp_path / "imgs")
    before = folder_contents(tmp_path)
    inside = [folder / "scores.csv", folder / "good" / "s.parquet"]
    for output in [*inside, tmp_path / "elsewhere" / ".." / "imgs" / "scores.csv"]:
        with pytest.raises(DataError) as error:
            scoring.score_images(folder, bars_detector, output)
        message = str(error.value)
        assert "\n" not in message
        assert f"the scores file {output} is inside the image folder {folder} " in message
        assert f"or as a hidden file in it ({folder / ('.' + output.name)})" in message
        assert folder_contents(tmp_path) == before  # nothing read into scores, nothing written
    hidden = scoring.score_images(folder, bars_detector, folder / ".scores.csv")
    caplog.clear()
    again = scoring.score_images(folder, bars_detector, tmp_path / "s.csv")
    assert "not read" not in caplog.text and len(again) == len(hidden) == 4


def test_a_map_that_cannot_be_written_is_named_as_asked_not_by_its_temporary_path(
    bars_detector, tmp_path, monkeypatch
):
    """A disk full (or a name too long) while writing a map said 'cannot write
    maps/.maps.k2j1x0qz.tmp/001.png': the hidden temporary folder the maps are written
    to before they are moved into place, a path the user never gave nor will find."""
    import errno

    from anomaly_vae import scoring

    detector = bars_detector
    folder = tmp_path / "new"
    folder.mkdir()
    for i, image in enumerate(bars(3, seed=1)):
        Image.fromarray(image[0]).save(folder / f"{i:03d}.png")
    save = Image.Image.save

    def disk_full(image, file, *args, **kwargs):
        if Path(file).name == "001.png":
            raise OSError(errno.ENOSPC, "No space left on device")
        return save(image, file, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", disk_full)
    for maps in (tmp_path / "maps", tmp_path / "existing"):  # temporary beside it, in it
        if maps.name == "existing":
            maps.mkdir()
        with pytest.raises(DataError) as error:
            scoring.score_images(folder, detector, tmp_path / "s.csv", maps)
        assert str(error.value) == f"cannot write {maps / '001.png'}: No space left on device"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing", "new"]


def _umask() -> int:
    import os

    umask = os.umask(0)
    os.umask(umask)
    return umask


@pytest.mark.parametrize("bad", ["unreadable", "other size", "too large"])
def test_a_bad_image_sorting_last_is_refused_before_any_image_is_scored(
    bars_detector, bad, tmp_path, monkeypatch
):
    # Found in the folder's last chunk, after every other chunk was decoded and scored,
    # then the error; the headers, read first without decoding, tell before any scoring.
    from anomaly_vae import scoring

    detector = bars_detector
    monkeypatch.setattr(scoring, "PROGRESS_CHUNK_IMAGES", 2)
    for i, image in enumerate(bars(6, seed=1)):
        Image.fromarray(image[0]).save(tmp_path / f"{i:03d}.png")
    if bad == "unreadable":
        (tmp_path / "zzz.png").write_bytes(b"not a png")
    else:
        side = 40 if bad == "too large" else 20
        Image.fromarray(bars(1, seed=2, size=side)[0, 0]).save(tmp_path / "zzz.png")
    if bad == "too large":  # 1,600 pixels, over twice PIL's MAX_IMAGE_PIXELS; 256 are not
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300)
    scored = []
    monkeypatch.setattr(detector, "score_frame", lambda *args: scored.append(args))
    with pytest.raises(DataError) as error:
        scoring.score_images(tmp_path, detector, tmp_path.parent / "s.csv")
    reason = {
        "unreadable": " is not a readable image",
        "other size": " (20 x 20)",
        "too large": " is too large to read",
    }
    assert f"zzz.png{reason[bad]}" in str(error.value).replace(str(tmp_path) + "/", "")
    assert scored == []
    # A header giving another size than the pixels (an orientation after a PNG's pixels)
    # is not taken at its word: the image is decoded to confirm it.
    (tmp_path / "zzz.png").unlink()
    monkeypatch.undo()
    monkeypatch.setattr("anomaly_vae.data.images._header_size", lambda file: (16, 20))
    scores = scoring.score_images(tmp_path, detector, tmp_path.parent / "s.csv")
    assert len(scores) == 6


def test_scoring_the_folder_one_is_in_asks_for_an_output_outside_it(
    bars_detector, tmp_path, monkeypatch
):
    """``cd imgs && anomaly-vae score .`` defaulted to ``_scores.csv`` (the stem of ".")
    in the folder scored, then refused it, suggesting the hidden name ``._scores.csv``;
    the default is named after the folder and the message asks for --output outside."""
    from click.testing import CliRunner

    from anomaly_vae.cli import main

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, image in enumerate(bars(3, seed=3)):
        Image.fromarray(image[0]).save(folder / f"{i:03d}.png")
    bars_detector.save(tmp_path / "model")
    monkeypatch.chdir(folder)
    inside = CliRunner().invoke(main, ["score", ".", "--model", "../model", "--quiet"])
    assert inside.exit_code == 2
    assert "the default output imgs_scores.csv would be written into it" in inside.output
    assert "give --output outside it (../imgs_scores.csv)" in inside.output
    assert sorted(p.name for p in folder.iterdir()) == ["000.png", "001.png", "002.png"]
    monkeypatch.chdir(tmp_path)
    outside = CliRunner().invoke(main, ["score", "imgs", "--model", "model", "--quiet"])
    assert outside.exit_code == 0, outside.output
    assert len(pd.read_csv(tmp_path / "imgs_scores.csv")) == 3
    # Scored from inside it, its progress names it: "." has no name, and its bar and
    # lines read ":  33%|" and "scoring : 1 images".
    from anomaly_vae import training

    monkeypatch.setattr(training, "PROGRESS_LINE_SECONDS", 0.0)
    monkeypatch.chdir(folder)
    here = CliRunner().invoke(main, ["score", ".", "--model", "../model", "-o", "../here.csv"])
    assert here.exit_code == 0, here.output
    assert "scoring imgs: 3 images" in here.output, here.output


def test_too_few_calibration_images_are_called_images(bars_detector, caplog):
    # The warning that a quantile cannot resolve the target rate said "calibration rows"
    # of an image model's images too.
    detector = copy.deepcopy(bars_detector)  # its threshold is the module's to keep
    with caplog.at_level(logging.WARNING, logger="anomaly_vae"):
        detector.threshold_from_normal_scores(np.arange(30.0), 0.01)
    assert "30 calibration images cannot resolve a 1% false-positive rate" in caplog.text


def test_anomaly_maps_clip_the_reconstruction_to_the_pixel_range(bars_detector):
    """The decoder mean overshoots [0, 1] (on a boot under a model of sneakers: -0.29 to
    1.29): the map showed error on black background reconstructed "blacker than black"."""
    import torch

    detector = copy.deepcopy(bars_detector)
    detector.model_.reconstruct = lambda x, condition=None: torch.full_like(x, -0.3)  # type: ignore[method-assign]
    images = bars(3, seed=1)
    maps = detector.anomaly_map(images)
    x = detector._image_preprocessor.upsample(detector.transform_features(images))
    np.testing.assert_allclose(maps, x, atol=1e-6)  # |x - 0|: black pixels show no error
    assert (maps[x == 0] == 0).all()  # the old map showed 0.3 on every black pixel


def test_anomaly_maps_share_one_scale_saved_with_the_model(bars_detector, tmp_path):
    """Maps were written with error 1 as white: normal images' maps looked black. Now
    every map of a model is divided by its map_scale_ (from the fit's held-out normal
    images), written in each PNG, kept by save/load; a model saved before has none and
    writes unscaled maps."""
    import json

    from anomaly_vae.detector import MAP_SCALE_QUANTILE
    from anomaly_vae.scoring import MAP_SCALE_KEY, map_scale, score_images

    detector = bars_detector
    scale = detector.map_scale_
    calibration = bars(100, seed=0)[detector.split_rows_["calibration"]]
    peaks = detector.anomaly_map(calibration).reshape(len(calibration), -1).max(axis=1)
    assert scale == pytest.approx(np.quantile(peaks, MAP_SCALE_QUANTILE), rel=1e-6)
    assert 0 < scale < 1
    folder = tmp_path / "new"
    folder.mkdir()
    test = np.concatenate([bars(3, seed=1), bars(2, seed=2, vertical=True)])
    for i, image in enumerate(test):
        Image.fromarray(image[0]).save(folder / f"{i}.png")
    score_images(folder, detector, tmp_path / "s.csv", maps_dir=tmp_path / "maps")
    expected = np.rint(np.clip(detector.anomaly_map(test)[:, 0] / scale, 0, 1) * 255)
    for i in range(len(test)):
        written = Image.open(tmp_path / "maps" / f"{i}.png")
        np.testing.assert_array_equal(np.asarray(written), expected[i])  # one scale for all
        assert float(written.text[MAP_SCALE_KEY]) == pytest.approx(scale, rel=1e-5)
    assert expected.max() > 255 * detector.anomaly_map(test).max()  # brighter than x1
    saved = detector.save(tmp_path / "model")
    assert VAEDetector.load(saved).map_scale_ == scale
    document = json.loads((saved / "detector.json").read_text())
    del document["map_scale"]  # as a model saved before map scales
    (saved / "detector.json").write_text(json.dumps(document))
    old = VAEDetector.load(saved)
    assert old.map_scale_ is None and map_scale(old) == 1.0
    score_images(folder, old, tmp_path / "s2.csv", maps_dir=tmp_path / "old_maps")
    unscaled = np.asarray(Image.open(tmp_path / "old_maps" / "0.png"))
    np.testing.assert_array_equal(unscaled, np.rint(detector.anomaly_map(test[:1])[0, 0] * 255))


def noisy_bars(n: int, seed: int, vertical: bool = False) -> np.ndarray:
    """:func:`bars` under more background noise (levels 0-229 against 0-29): normal
    images whose pixel errors are larger, as from another camera."""
    images = bars(n, seed, vertical)
    noise = np.random.default_rng(seed + 100).integers(0, 200, size=images.shape)
    return np.clip(images.astype(int) + noise, 0, 255).astype(np.uint8)


def save_pngs(images: np.ndarray, folder: Path) -> None:
    """``images (n, 1, H, W)`` uint8 as ``folder/000.png``, ``001.png``, ..."""
    folder.mkdir(parents=True)
    for i, image in enumerate(images):
        Image.fromarray(image[0]).save(folder / f"{i:03d}.png")


@pytest.mark.parametrize("method", ["quantile", "f1"])
def test_calibrate_reads_the_map_scale_off_its_normal_images(bars_detector, method, tmp_path):
    """calibrate kept the fit's map scale: on noisier normal images every map came out
    brighter, normal or not. It reads it again off the normal images it is given (the
    flat folder for the quantile; with labels, only the normal class), as fit does."""
    import json

    from click.testing import CliRunner

    from anomaly_vae.cli import main
    from anomaly_vae.detector import MAP_SCALE_QUANTILE

    source = bars_detector.save(tmp_path / "source")
    normal = noisy_bars(60, seed=5)
    if method == "quantile":
        data, extra = tmp_path / "normal", []
        save_pngs(normal, data)
    else:
        data, extra = tmp_path / "labelled", ["--normal-class", "good"]
        save_pngs(normal, data / "good")
        # Their maps peak higher (a vertical bar): read off them too, the scale would be
        # larger
        save_pngs(noisy_bars(20, seed=6, vertical=True), data / "bad")
    command = ["calibrate", str(data), *extra, "--method", method, "--model", str(source)]
    out = tmp_path / "recalibrated"
    result = CliRunner().invoke(main, [*command, "--model-dir", str(out), "--no-tracking"])
    assert result.exit_code == 0, result.output
    peaks = bars_detector.anomaly_map(normal).reshape(len(normal), -1).max(axis=1)
    expected = float(np.quantile(peaks, MAP_SCALE_QUANTILE))
    saved = json.loads((out / "detector.json").read_text())["map_scale"]
    assert saved == pytest.approx(expected, rel=1e-5)
    assert saved > 1.5 * bars_detector.map_scale_  # the fit's, on its quieter images
    assert VAEDetector.load(out).map_scale_ == saved
    assert json.loads((source / "detector.json").read_text())["map_scale"] == (
        bars_detector.map_scale_
    )  # the source model is left as it was
    said = (
        f"Anomaly maps: white = an error of {saved:.3g} or more (was "
        f"{bars_detector.map_scale_:.3g}; the 99% quantile of the largest pixel error of each "
        "of the 60 normal images)"
    )
    assert said in " ".join(result.output.split())


def test_calibrating_a_family_ensemble_reads_its_own_map_scale_off_its_maps(tmp_path):
    """An ensemble's scale is read off its own maps (the mean of its members'), as at
    fit; its members keep theirs, as they keep their thresholds."""
    from anomaly_vae.detector import MAP_SCALE_QUANTILE
    from anomaly_vae.ensemble import EnsembleDetector
    from anomaly_vae.recalibration import calibrate_model

    train = bars(100, seed=0)
    settings = ("training.epochs=2", *IMAGE_MODEL)
    members = {
        name: VAEDetector(tiny_config(f"model.name={name}", *settings).detector_config()).fit(train)
        for name in ("conv-vae", "vae")
    }
    ensemble = EnsembleDetector.from_members(members, train)
    source = ensemble.save(tmp_path / "source")
    normal = noisy_bars(40, seed=5)
    save_pngs(normal, tmp_path / "normal")
    result = calibrate_model(
        tmp_path / "normal", str(source), "quantile", model_dir=tmp_path / "new", track=False
    )
    peaks = ensemble.anomaly_map(normal).reshape(len(normal), -1).max(axis=1)
    expected = float(np.quantile(peaks, MAP_SCALE_QUANTILE))
    assert ensemble.map_scale_ is not None and expected > 1.5 * ensemble.map_scale_
    loaded = EnsembleDetector.load(result.model_dir)
    assert loaded.map_scale_ == pytest.approx(expected, rel=1e-5)
    assert result.previous_map_scale == ensemble.map_scale_ and result.map_scale_images == 40
    for name, member in loaded.members.items():
        assert member.map_scale_ == members[name].map_scale_


def test_the_map_scale_is_read_a_batch_of_peaks_at_a_time(bars_detector):
    """normal_map_scale (what calibrate reads the maps' scale with) built the upsampled
    anomaly map of every normal image at once, twice their float32 size with the error
    beside it. It keeps each map's peak a batch at a time (a detector's before they are
    upsampled, as fit reads them): the same scale, a detector's and an ensemble's (off
    its members' averaged maps), in a fraction of the maps' memory."""
    import torch

    from anomaly_vae.detector import MAP_SCALE_QUANTILE
    from anomaly_vae.ensemble import EnsembleDetector

    assert bars_detector.model_.input_shape == (1, 8, 8)  # pooled: maps are upsampled
    halved = copy.deepcopy(bars_detector)  # a second member, whose maps differ
    halved.model_.reconstruct = lambda x, condition=None: torch.clamp(0.5 * x, 0, 1)  # type: ignore[method-assign]
    members = {"vae": bars_detector, "halved": halved}
    ensemble = EnsembleDetector.from_members(members, bars(100, seed=0))
    images = noisy_bars(400, seed=5)
    scales = {}
    for model in (bars_detector, ensemble):
        maps = model.anomaly_map(images)
        peaks = maps.mean(axis=1).reshape(len(maps), -1).max(axis=1)
        expected = float(np.quantile(peaks, MAP_SCALE_QUANTILE))
        scale, peak = traced_peak(lambda model=model: model.normal_map_scale(images))
        assert scale == expected  # the same batches of images through the models
        assert peak < maps.nbytes / 4  # it held them all: more than maps.nbytes
        scales[model] = scale
    assert scales[ensemble] != pytest.approx(scales[bars_detector], rel=1e-3)  # averaged maps


def test_the_served_image_model_scores_the_request_docs_mlflow_shows(
    tracking_store, tmp_path, monkeypatch
):
    """docs/mlflow.md showed how to post a table to a served model, not images: its
    Python example for an image model runs as written, its body posted to MLflow's
    scoring server, which answers with the detector's scores."""
    import json

    import mlflow
    import requests
    from mlflow.pyfunc.scoring_server import invocations

    from anomaly_vae.fitting import fit_source

    page = (Path(__file__).parents[1] / "docs" / "mlflow.md").read_text(encoding="utf-8")
    start = page.index("Post the array as MLflow's tensor input")
    example = re.compile(r"```python\n(.*?)```", re.S).search(page, start)
    assert example is not None
    (tmp_path / "train").mkdir()
    for i, image in enumerate(bars(120, seed=60)):
        Image.fromarray(image[0]).save(tmp_path / "train" / f"{i:03d}.png")
    config = tiny_config("training.epochs=3", "tracking.log_views=false")
    result = fit_source(tmp_path / "train", config, project_dir=tmp_path)
    model = mlflow.pyfunc.load_model(result.run.model_uri)
    # The two pictures the example reads: a normal bar and a vertical one.
    new = np.concatenate([bars(1, seed=61), bars(1, seed=62, vertical=True)])
    (tmp_path / "new").mkdir()
    for i, image in enumerate(new, start=1):
        Image.fromarray(image[0]).save(tmp_path / "new" / f"part{i}.png")
    posted = []

    def post(url, **request):  # what `mlflow models serve` does with the body posted
        posted.append((url, request["json"]))
        served = invocations(
            json.dumps(request["json"]),
            "application/json",
            model,
            model.metadata.get_input_schema(),
        )
        answer = requests.Response()
        answer.status_code, answer._content = served.status, served.response.encode()
        return answer

    monkeypatch.setattr(requests, "post", post)
    namespace: dict = {}
    exec(compile(example.group(1), "docs/mlflow.md", "exec"), namespace)
    ((url, body),) = posted
    assert url == "http://127.0.0.1:5001/invocations" and list(body) == ["inputs"]
    assert np.array(body["inputs"]).shape == (2, 1, 16, 16)
    scores = pd.DataFrame(namespace["scores"])
    expected = result.detector.score_frame(new)
    assert list(scores.columns) == list(expected.columns)  # the scores, score, is_anomaly
    assert list(scores.columns[-2:]) == ["score", "is_anomaly"], list(scores.columns)
    numbers = expected.columns.drop("is_anomaly")
    np.testing.assert_allclose(scores[numbers], expected[numbers], rtol=1e-5)
    assert scores["is_anomaly"].tolist() == expected["is_anomaly"].tolist()
    # The same nested lists as "instances", which the page says is read alike.
    instances = json.dumps({"instances": body["inputs"]})
    served = invocations(instances, "application/json", model, model.metadata.get_input_schema())
    pd.testing.assert_frame_equal(pd.DataFrame(json.loads(served.response)["predictions"]), scores)
    assert scores["score"][1] > scores["score"][0]  # the vertical bar, as the detector says
