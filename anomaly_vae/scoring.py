"""The `score` workflow: find a model by reference, score a table, write it atomically."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import tempfile
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd

from anomaly_vae.batch import drift_sample, holds_only_tables, score_file, scoring_progress
from anomaly_vae.data.images import (
    ImagePreprocessor,
    class_list,
    is_image_file,
    list_images,
    read_with_images,
    source_name,
)
from anomaly_vae.data.preprocessing import warnings_per_file
from anomaly_vae.data.tables import PARQUET_SUFFIXES
from anomaly_vae.detector import CONFIG_FILE, VAEDetector
from anomaly_vae.ensemble import ENSEMBLE_FILE, EnsembleDetector, load_saved
from anomaly_vae.errors import DataError, ModelNotFoundError
from anomaly_vae.fitting import latest_model_dir
from anomaly_vae.outputs import atomic_output, make_folder, refuse_overwriting_input, writing

if TYPE_CHECKING:
    from mlflow.exceptions import MlflowException

logger = logging.getLogger(__name__)

PROGRESS_CHUNK_ROWS = 50_000  # rows read and scored at a time: bounds memory; a progress step
# Images decoded and scored at a time: bounds memory (512 colour images of 128 x 128 are
# 100 MB as the model's float32 input, held a few times over while scored); a progress step
PROGRESS_CHUNK_IMAGES = 512
MAP_SUFFIX = ".png"  # anomaly maps are 8-bit PNGs
MAP_SCALE_KEY = "anomaly-vae map scale"  # PNG text chunk: the error each map shows white
# The longest file name most file systems take (NAME_MAX of ext4, XFS, Btrfs, APFS): a map
# name past it failed the whole run. Longer names are cut to it (map_names).
MAX_FILE_NAME_BYTES = 255
MAP_NAME_HASH_DIGITS = 8  # hex digits of a cut name's hash: 32 bits between names cut alike


def load_detector(
    reference: str | None = None, project_dir: Path | None = None
) -> VAEDetector | EnsembleDetector:
    """A detector from a local folder, an MLflow model URI, or (None) the latest local fit.

    URIs are anything with a scheme, e.g. ``models:/anomaly-vae@champion``,
    ``models:/anomaly-vae/3`` or ``runs:/<run_id>/model``.
    """
    if reference is None:
        latest = latest_model_dir(project_dir)
        if latest is None:
            raise ModelNotFoundError(
                "no model fit in this project yet; run `anomaly-vae fit DATA` or pass --model"
            )
        return load_saved(latest)
    if "://" in reference or reference.startswith(("models:/", "runs:/")):
        # A remote store's artifacts are copied here; the loaded detector needs no files.
        with tempfile.TemporaryDirectory(prefix="anomaly-vae-model-") as scratch:
            return load_saved(_download_mlflow_model(reference, project_dir, Path(scratch)))
    return load_saved(Path(reference))


def check_data_kind(detector: Any, data: str | Path, is_images: bool) -> None:
    """A one-line error when DATA is images for a table model, or the other way round.

    For an image model, DATA that is not an image source (:func:`is_image_source`) is
    said to be missing, or one image file, when it is: not a table. A folder of table
    files and no images is said to be one, for either kind of model.
    """
    given = "image" if is_images else "table"
    if detector.data_kind_ == "image" and is_images and holds_only_tables(Path(data)):
        # Read as images it would be "no images", which does not say what the files are.
        raise DataError(
            f"{data} is a folder of table files, and this model was fit on images: name one "
            "file and a model fit on tables with --model (`anomaly-vae batch` scores every "
            "CSV/Parquet file of a folder)"
        )
    if detector.data_kind_ == "image" and not is_images:
        path = Path(data)
        if not path.exists():
            raise DataError(f"{data}: no such file or folder")
        if is_image_file(path):
            # A folder is read with its class subfolders; one file has neither class nor
            # company, so it is not taken alone.
            raise DataError(
                f"{data} is one image file; an image model takes a folder of images (to "
                "score this one alone, put it in a folder of its own)"
            )
    if detector.data_kind_ == "table" and is_images and holds_only_tables(Path(data)):
        raise DataError(
            f"{data} is a folder of table files, which would be read as images: name one "
            "file (`anomaly-vae batch` scores every CSV/Parquet file of a folder)"
        )
    if detector.data_kind_ != given:
        raise DataError(
            f"this model was fit on {detector.data_kind_}s, but {data} is "
            f"{'an image source' if is_images else 'a table'}: name a model of its kind "
            "with --model (without it, the model saved last in this folder is used)"
        )


def use_model_store(uri: str, project_dir: Path | None = None) -> None:
    """Point MLflow at the store that holds the model ``uri`` names: the project's
    (``MLFLOW_TRACKING_URI``, else ``mlruns/mlflow.db``), not MLflow's own default, an
    ``mlflow.db`` in the working folder. Raises ModelNotFoundError when the project has
    no store for a ``models:/`` or ``runs:/`` URI to be found in."""
    from anomaly_vae.tracking import embedded_store, use_tracking

    store = embedded_store(project_dir)
    local_reference = uri.startswith(("models:/", "runs:/"))
    if local_reference and store is not None and not store.is_file():
        # Opening the store would create an empty one here and then fail to find the model.
        raise ModelNotFoundError(
            f"cannot load model {uri}: there is no MLflow store in this folder ({store}); "
            "run anomaly-vae here, set MLFLOW_TRACKING_URI, or pass --model FOLDER"
        )
    use_tracking(project_dir=project_dir)


def model_not_found(uri: str, exc: MlflowException) -> ModelNotFoundError:
    """The one-line error for a model URI that MLflow could not resolve."""
    hint = ""
    if "@" in uri and "alias" in exc.message.lower():
        hint = (
            " (`fit --register` or `calibrate --register` sets the champion alias; "
            "or name a version, models:/NAME/1)"
        )
    return ModelNotFoundError(f"cannot load model {uri}: {exc.message.splitlines()[0]}{hint}")


def _download_mlflow_model(uri: str, project_dir: Path | None, destination: Path) -> Path:
    import mlflow
    from mlflow.exceptions import MlflowException

    use_model_store(uri, project_dir)
    try:
        local = Path(
            mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(destination))
        )
    except MlflowException as exc:
        raise model_not_found(uri, exc) from exc
    # A logged pyfunc model keeps the saved detector (or ensemble) among its artifacts.
    for marker in (ENSEMBLE_FILE, CONFIG_FILE):
        found = sorted(local.rglob(marker), key=lambda p: len(p.parts))
        if found:
            return found[0].parent
    raise ModelNotFoundError(f"{uri} is not an anomaly-vae model")


def score_table(
    data: str | Path,
    detector: VAEDetector | EnsembleDetector,
    output: str | Path,
    progress: bool = False,
    explain: int = 0,
) -> tuple[int, int]:
    """Score every row of the file ``data``; write the result to ``output`` (CSV or Parquet).
    ``explain`` > 0 (a :class:`VAEDetector`): each row's ``explain`` columns that added
    most to its score follow, as :meth:`VAEDetector.explain` names them.

    The file is read and scored ``PROGRESS_CHUNK_ROWS`` rows at a time, so memory does
    not grow with it (as ``anomaly-vae batch`` does). The output appears whole or not at
    all: it is written to a temporary file in the same folder and renamed into place.
    Returns ``(rows scored, rows flagged)``. ``progress``: on a terminal, a bar over the
    bytes of a CSV file read (the rows of a Parquet file) with the rows scored beside, and
    off one the rows scored in a line every minute, as fit does its epochs.
    """
    path = Path(data)
    refuse_overwriting_input(Path(output), path)
    rows, flagged, _ = score_file(
        detector,
        path,
        Path(output),
        PROGRESS_CHUNK_ROWS,
        progress,
        progress_lines=True,
        naming=True,  # a bad cell named with its file, as fit names it
        explain=explain,
    )
    return rows, flagged


def score_images(
    source: str | Path,
    detector: VAEDetector | EnsembleDetector,
    output: str | Path,
    maps_dir: str | Path | None = None,
    progress: bool = False,
    progress_lines: bool = True,
) -> pd.DataFrame:
    """Score every image of ``source`` (a folder, or a torchvision source such as ``mnist:ROOT``,
    whose test split is scored); one output row per image, with its name and class.

    ``maps_dir`` receives one PNG per image: the per-pixel anomaly map |x - x_hat|,
    brighter = worse reconstructed (an ensemble's: its members' mean), divided by the
    model's :func:`map_scale` (white: that error or more), named in the scores' ``map``
    column. Like the scores, the maps appear all together or not at all
    (:func:`~anomaly_vae.outputs.atomic_output`): a file that cannot be read, found in a
    later part of the folder, leaves ``maps_dir`` as it was, not with the maps of the
    images before it, which a run after the file is fixed would mix with its own.

    The images are decoded and scored about ``PROGRESS_CHUNK_IMAGES`` at a time
    (:func:`image_chunk`), so memory does not grow with the folder (only the scores do,
    a row per image); the scores and maps are those of the folder read whole.
    ``progress``: on a terminal, a bar over the images listed, with a share done and the
    time left; off one, the images scored in a line a minute unless ``progress_lines`` is
    false (as in a batch run's log), as :func:`score_table` counts rows.
    """
    refuse_scores_in_source(Path(output), source)
    if maps_dir is not None:
        refuse_maps_in_source(Path(maps_dir), source)
    # For a grey model colour images are read as grey, and said so once (log_colour).
    grey_model = image_channels(detector) == 1
    size = detector.effective_config.data.image_size
    # Checked against the model's size: the folder's first image may be the odd one.
    listing = list_images(source, False, size, grey_model, image_size(detector))
    listing.check()  # a bad file among the last is found before the first is scored
    classes = listing.label_names()
    frames: list[pd.DataFrame] = []
    name = source_name(source)  # not ROOT's folder (data/) for a torchvision set
    maps_output = (
        contextlib.nullcontext(None)
        if maps_dir is None
        else atomic_output(Path(maps_dir), folder=True)
    )
    # The maps are moved into place before the scores are (contexts close in reverse), so
    # that scores, which name their maps, never come without them.
    with atomic_output(Path(output)) as scores_file, maps_output as maps_folder:
        # Map names are chosen over the whole folder: two 001.png in different class
        # folders are told apart even when they fall in different chunks. They are the
        # files the user asked for, written into the temporary folder under their names.
        map_files = None if maps_dir is None else anomaly_map_files(listing.names, Path(maps_dir))
        # The listing counts the images: on a terminal the bar shows a share done and
        # the time left, as a table's does.
        counting = scoring_progress(name, "images", progress, progress_lines, len(listing))
        with counting as count:
            chunk = image_chunk(detector)
            for start in range(0, len(listing), chunk):
                stop = start + chunk
                pixels = listing.read(start, stop).images
                # score_frame checks the images (their shape) first
                frames.append(detector.score_frame(pixels, classes[start:stop]))
                if start == 0:
                    warn_unknown_classes(detector, classes)
                if map_files is not None:
                    maps = detector.anomaly_map(pixels, classes[start:stop])
                    scale = map_scale(detector)
                    write_anomaly_maps(maps, map_files[start:stop], maps_folder, scale)
                count(len(pixels))
        listing.log_colour()
        scores = pd.concat(frames, ignore_index=True)
        scores.insert(0, "image", listing.names)
        class_names = listing.class_column()  # the views' CSVs name images the same way
        if class_names is not None:
            scores.insert(1, "class", class_names)
        if map_files is not None:
            scores["map"] = [file.name for file in map_files]  # can differ from the image's
        with writing(Path(output)):  # not blamed on the maps, whose context is inner
            write_frame(scores, scores_file, Path(output))
    return scores


def refuse_maps_in_source(maps_dir: Path, source: str | Path) -> None:
    """DataError when ``maps_dir`` is the image folder ``source`` or lies inside it, but
    not in a hidden folder there (``source/.maps``), which the listing never reads.

    Its maps, PNGs named after the images, could replace the images of their names, and
    the next run would score them as images (a class of their own in a folder of class
    subfolders, or within the class whose folder they are in). Refused, as ``batch``
    refuses an output folder there (the same rule, :func:`read_with_images`), rather
    than skipped: a maps folder skipped by its name would leave the folder read
    differently by ``fit`` and by ``batch``, which know nothing of it."""
    if not read_with_images(maps_dir, source):
        return
    same = maps_dir.resolve() == Path(source).resolve()
    where = "is the image folder" if same else "is inside the image folder"
    raise DataError(
        f"the maps folder {maps_dir} {where} {source} being scored: a map could replace "
        "an image of its name, and a later run would score the maps as images; write "
        f"them outside it, or into a hidden folder in it ({Path(source) / '.maps'}), "
        "which is never read as images"
    )


def refuse_scores_in_source(output: Path, source: str | Path) -> None:
    """DataError when the scores file ``output`` lies in the image folder ``source``, but
    not when it, or a folder it is in there, is hidden (``source/.scores.csv``).

    Not an image, it is never scored, but every later read of the folder (score, fit,
    calibrate, batch) would warn of it as a file not read; refused, as ``--maps`` there
    is (:func:`refuse_maps_in_source`) and as ``batch`` refuses an output folder there
    (:func:`read_with_images`)."""
    if not read_with_images(output, source):
        return
    raise DataError(
        f"the scores file {output} is inside the image folder {source} being scored, where "
        "every later run on the folder would warn of it as a file that is not an image; "
        f"write it outside, or as a hidden file in it ({Path(source) / ('.' + output.name)}), "
        "which is never read"
    )


def image_chunk(detector: VAEDetector | EnsembleDetector) -> int:
    """Images scored at a time: ``PROGRESS_CHUNK_IMAGES`` in whole scoring batches."""
    return whole_batches(detector, PROGRESS_CHUNK_IMAGES)


def whole_batches(detector: VAEDetector | EnsembleDetector, rows: int) -> int:
    """``rows`` rounded up to whole scoring batches of every model (an ensemble's members
    can pool, hence batch, differently). A batch then holds the rows (images) it holds
    when the data are scored whole: the same float32 products in another batch shape can
    differ in their last bits."""
    members = detector.members.values() if isinstance(detector, EnsembleDetector) else [detector]
    step = math.lcm(*(member.scoring_batch_rows for member in members))
    return -(-rows // step) * step


def scores_in_parts(
    detector: VAEDetector | EnsembleDetector,
    data: pd.DataFrame | np.ndarray,
    condition: np.ndarray | None,
    name: str,
    progress: bool = False,
    log_warnings: bool = True,
) -> np.ndarray:
    """``(n,)`` the anomaly scores of the rows (or images) of ``data`` (a table, or
    images ``(n, C, H, W)`` with their ``condition (n,)``), the same as of ``data`` scored
    whole, computed ``PROGRESS_CHUNK_ROWS`` rows (``PROGRESS_CHUNK_IMAGES`` images) at a
    time, as ``score`` does: scored whole, its features and their intermediates are held
    at once, memory that grows with the rows.

    ``progress``: on a terminal a bar over them, named ``name``, with the time left; off
    one a line a minute (:func:`~anomaly_vae.batch.scoring_progress`). A table's warnings
    (columns not seen in training, say) come once, judged over all its rows (none with
    ``log_warnings`` false, for a caller that gives them itself), and a DataError is
    that of ``data`` scored whole."""
    images = detector.data_kind_ == "image"
    chunk = whole_batches(detector, PROGRESS_CHUNK_IMAGES if images else PROGRESS_CHUNK_ROWS)
    parts = [np.empty(0)]
    counting = scoring_progress(name, f"{detector.score_item}s", progress, True, len(data))
    try:
        with counting as count, warnings_per_file() as gathered:
            for start in range(0, len(data), chunk):
                rows = slice(start, start + chunk)
                part = data.iloc[rows] if isinstance(data, pd.DataFrame) else data[rows]
                part_condition = None if condition is None else condition[rows]
                parts.append(detector.anomaly_score(part, part_condition))
                count(len(part))
    except DataError:
        # A part's error counts, and names by position, the rows of the part ("has 13
        # missing values" of 42 in all): scored whole again, ``data`` raises the error
        # of all its rows. Only this failing path holds every row at once.
        detector.anomaly_score(data, condition)
        raise
    if log_warnings:
        gathered.log(len(data))
    return np.concatenate(parts)


def image_channels(detector: VAEDetector | EnsembleDetector) -> int:
    """The colour channels of the images an image model (or an ensemble's) was fit on."""
    return int(_image_shape(detector)[0])


def image_size(detector: VAEDetector | EnsembleDetector) -> tuple[int, int]:
    """``(H, W)`` in pixels of the images an image model (or an ensemble's) takes, before
    its pool: after ``data.image_size`` when it was fit with it."""
    _, height, width = _image_shape(detector)
    return int(height), int(width)


def _image_shape(detector: VAEDetector | EnsembleDetector) -> tuple[int, ...]:
    """``(C, H, W)`` of the images an image model (or an ensemble's) was fit on."""
    member = detector.first if isinstance(detector, EnsembleDetector) else detector
    return cast(ImagePreprocessor, member.preprocessor_).shape


class ImageFolderScorer:
    """The batch scorer of an image model (``anomaly_vae.batch``): each input is a folder
    of images, scored as :func:`score_images` does, into one CSV."""

    def __init__(self, detector: VAEDetector | EnsembleDetector, progress: bool = False) -> None:
        self.detector = detector
        self.progress = progress  # a bar over each folder's images, on a terminal

    def score_file(
        self, source: Path, output: Path, chunk_rows: int
    ) -> tuple[int, int, np.ndarray]:
        """``(images, images flagged, a sample of the scores)``; ``chunk_rows`` is unused:
        images are scored ``PROGRESS_CHUNK_IMAGES`` at a time, fewer than a table's rows."""
        # A batch run's log keeps to its lines per input (--verbose), as for tables
        scores = score_images(
            source, self.detector, output, progress=self.progress, progress_lines=False
        )
        return (
            len(scores),
            int(scores["is_anomaly"].sum()),
            drift_sample(scores["score"].to_numpy()),
        )


def conditional_classes(detector: VAEDetector | EnsembleDetector) -> list[str]:
    """The classes a conditional image model (or an ensemble's) was trained on, sorted;
    empty for other models."""
    members = getattr(detector, "members", {"model": detector}).values()
    return sorted({name for member in members for name in getattr(member, "condition_names_", [])})


def warn_unknown_classes(detector: VAEDetector | EnsembleDetector, classes: np.ndarray) -> None:
    """A conditional image model scores an image given its class (its subfolder, or its
    torchvision label); say which images it had no such class for."""
    known = conditional_classes(detector)
    if not known:
        return
    names = pd.Series(classes, dtype=object).astype(str)
    unknown = names[~names.isin(known)].value_counts(sort=False)
    if len(unknown):
        named = ", ".join(
            f"{class_list([name]) or '(no class given)'}: {n}" for name, n in unknown.items()
        )
        logger.warning(
            "%d of %d images are not of a class the conditional model was trained on (%s); "
            "each is scored given the trained class that explains it best (lowest "
            "negative ELBO). Trained classes: %s",
            int(unknown.sum()),
            len(classes),
            named,
            class_list(known),
        )


def map_scale(detector: VAEDetector | EnsembleDetector) -> float:
    """The pixel error (0-1) a map file of ``detector`` shows white (255): its
    ``map_scale_``, set at fit from its held-out normal images; 1 (unscaled) for a model
    saved before maps had a scale, or whose normal images it reconstructed exactly."""
    return getattr(detector, "map_scale_", None) or 1.0


def save_anomaly_maps(
    maps: np.ndarray, names: list[str], folder: Path, scale: float = 1.0
) -> list[Path]:
    """Write ``maps (n, C, H, W)`` as 8-bit PNGs named after the images (see
    ``map_names``), one per image, ``scale`` and above white (see
    :func:`write_anomaly_maps`); returns the ``n`` files written, in the images' order."""
    files = anomaly_map_files(names, folder)
    write_anomaly_maps(maps, files, scale=scale)
    return files


def anomaly_map_files(names: list[str], folder: Path) -> list[Path]:
    """The anomaly map file in ``folder`` of each image of ``names`` (see ``map_names``)."""
    return [folder / f"{stem}{MAP_SUFFIX}" for stem in map_names(names)]


def write_anomaly_maps(
    maps: np.ndarray, files: list[Path], temporary: Path | None = None, scale: float = 1.0
) -> None:
    """Write ``maps (n, C, H, W)`` (pixel error, 0-1) as 8-bit PNGs, one per file of
    ``files``, channels averaged: level ``255 * min(error / scale, 1)``, the same ``scale``
    for every image so that their maps compare, and written in each file as the text
    chunk ``MAP_SCALE_KEY`` (a map read alone says what its white is). ``files`` are
    :func:`anomaly_map_files` of all the images scored, so that the names are decided
    over all of them when they are written a part at a time. With ``temporary`` (the
    folder of :func:`~anomaly_vae.outputs.atomic_output` that becomes theirs), each is
    written there under its name; an error still names the file of ``files``, not a
    hidden ``.maps.XXXX.tmp/001.png`` the user never asked for."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    if not scale > 0:  # NaN too
        raise ValueError(f"scale must be positive, not {scale}")
    if temporary is None:
        for folder in {file.parent for file in files}:
            make_folder(folder)
    # Channels averaged; rounded to the nearest level (a cast alone cut 100.7 to 100)
    pixels = np.rint(np.clip(maps.mean(axis=1) / scale, 0, 1) * 255).astype(np.uint8)
    legend = PngInfo()
    legend.add_text(MAP_SCALE_KEY, f"{scale:.6g}")
    for file, image in zip(files, pixels, strict=True):
        with writing(file):
            target = file if temporary is None else temporary / file.name
            Image.fromarray(image).save(target, pnginfo=legend)


def map_names(names: list[str]) -> list[str]:
    """One distinct file stem per image name, for its anomaly map.

    - the image's file stem (``good/001.png`` -> ``001``; ``test/123`` -> ``test_123``)
      when no other image has it;
    - else its folder (the class) before it: ``good/001.png`` and ``bad/001.png`` ->
      ``good_001`` and ``bad_001``;
    - a name still taken (``001.png`` and ``001.jpg`` in one folder) gets ``-2``, ``-3``,
      ... in the images' order, the first keeping it;
    - a name whose file (with ``.png``) would be longer than ``MAX_FILE_NAME_BYTES`` in
      UTF-8 is cut to fit, and ``~`` and the first hex digits of the SHA-256 of the whole
      name end it (``good_xxx...x~1a2b3c4d``): the same name in every run, and apart from
      the names of the other images.

    Names are compared ignoring case, as some file systems do.
    """
    paths = [Path(name) for name in names]
    stems = [
        path.stem if "/" not in name or path.suffix else name.replace("/", "_")
        for name, path in zip(names, paths, strict=True)
    ]
    counts = Counter(stem.casefold() for stem in stems)
    wanted = [
        stem
        if counts[stem.casefold()] == 1 or not path.parent.name
        else f"{path.parent.name}_{stem}"
        for stem, path in zip(stems, paths, strict=True)
    ]
    # Suffixes must not take a stem a later image wants, hence all of them reserved.
    reserved = {stem.casefold() for stem in wanted}
    used: set[str] = set()
    chosen = []
    for stem in wanted:
        unique, number = stem, 1
        while unique.casefold() in used or (number > 1 and unique.casefold() in reserved):
            number += 1
            unique = f"{stem}-{number}"
        used.add(unique.casefold())
        chosen.append(unique)
    return _cut_to_fit(chosen)


def _fits(stem: str) -> bool:
    return len(f"{stem}{MAP_SUFFIX}".encode()) <= MAX_FILE_NAME_BYTES


def _cut_to_fit(stems: list[str]) -> list[str]:
    """``stems`` (distinct, ignoring case) with each one too long for a file name (see
    :func:`map_names`) cut to fit; the names that fit are kept, and no cut name takes one
    of them or another cut name (a hash that does is salted again)."""
    taken = {stem.casefold() for stem in stems if _fits(stem)}
    chosen = []
    for stem in stems:
        if _fits(stem):
            chosen.append(stem)
            continue
        salt = 0
        while True:
            text = stem if salt == 0 else f"{stem}\0{salt}"
            tail = "~" + hashlib.sha256(text.encode()).hexdigest()[:MAP_NAME_HASH_DIGITS]
            room = MAX_FILE_NAME_BYTES - len(MAP_SUFFIX) - len(tail)
            # Cut between characters: a multi-byte one cut in two is dropped whole.
            cut = stem.encode()[:room].decode(errors="ignore") + tail
            if cut.casefold() not in taken:
                break
            salt += 1
        taken.add(cut.casefold())
        chosen.append(cut)
    return chosen


def write_frame(frame: pd.DataFrame, file: Path, path: Path) -> None:
    """Write ``frame`` to ``file``, as Parquet when ``path`` (the output it becomes) ends
    in .parquet or .pq, else as CSV."""
    if path.suffix.lower() in PARQUET_SUFFIXES:
        frame.to_parquet(file, index=False)
    else:
        frame.to_csv(file, index=False)
