"""Images: reading a folder (torchvision ``ImageFolder`` layout) or a torchvision
MNIST-style dataset from a local root, and turning images into model input.

An image source is written as a string:
- ``path/to/folder``: one subfolder per class, images inside (``ImageFolder``);
- ``fashionmnist:ROOT``, ``mnist:ROOT`` or ``kmnist:ROOT``: the torchvision dataset
  under ``ROOT`` (the folder holding ``FashionMNIST/``, ``MNIST/`` or ``KMNIST/``), never
  downloaded.

Data sets in torchvision's MNIST layout (``NAME/raw/`` with the uncompressed idx files
of the ``train`` and ``t10k`` splits) are read by ``read_idx_set`` whatever their name,
so the benchmark takes any such set without code changes.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import ExifTags, Image, ImageOps

from anomaly_vae.config import IMAGE_POOL, MIN_POOLED_SIDE
from anomaly_vae.errors import DataError

logger = logging.getLogger(__name__)

# Source prefix -> folder name of the torchvision data sets in the MNIST layout.
TORCHVISION_SETS = {"mnist": "MNIST", "fashionmnist": "FashionMNIST", "kmnist": "KMNIST"}
# Split -> (images, labels) file names in ``NAME/raw/``, as torchvision's MNIST reads them.
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# File suffixes read as images: those of torchvision's ImageFolder, GIF (its first
# frame; a palette image as any other), and .jfif and .jpe, JPEG files as Windows and
# browsers often name them.
IMAGE_SUFFIXES = (
    ".jpg",
    ".jpeg",
    ".jfif",
    ".jpe",
    ".png",
    ".ppm",
    ".bmp",
    ".pgm",
    ".tif",
    ".tiff",
    ".webp",
    ".gif",
)
SKIPPED_FILES_SHOWN = 3  # files named when a folder holds files that are not images
IDX_UBYTE = 0x08  # idx type code of unsigned bytes, the only type of the MNIST layout
UINT8_MAX = 255
COLOUR_CHANNELS = 3
# Colour channels at most this many levels apart in every pixel are grey: lossy WebP
# stores a grey picture saved as RGB with its channels up to 1 level apart.
GREY_SPREAD = 1
# Divisors taking 16- and 32-bit grey levels onto 0-255: (2**16 - 1) / 255 and
# (2**32 - 1) / 255, so that the brightest level stays the brightest.
GREY_16BIT = 257
GREY_32BIT = 16843009
COLOUR_FILES_SHOWN = 3  # colour files named when a folder is mostly grey
LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601-2 luma, PIL's grey of an RGB image
LUMA_FIXED_POINT = (19595, 38470, 7471)  # the same in PIL's 16-bit fixed point
# EXIF orientations that turn an image by a quarter (with or without a mirror image):
# its stored width is its height upright.
TRANSPOSED_ORIENTATIONS = (5, 6, 7, 8)
# Input values (pixels x channels) that ImagePreprocessor.transform turns into floats
# at a time: 16 MB of float32, 200 images of 128 x 128.
TRANSFORM_BLOCK_VALUES = 1 << 22


@dataclass
class ImageSet:
    """Images as ``(n, C, H, W)`` uint8, their class indices ``(n,)`` and names."""

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    names: list[str] = field(default_factory=list)  # file paths, or "test/123" indices

    def select(self, rows: np.ndarray) -> ImageSet:
        names = [self.names[i] for i in rows] if self.names else []
        return ImageSet(self.images[rows], self.labels[rows], self.classes, names)

    def class_index(self, name: str) -> int:
        """The index of class ``name`` (a class name, or an index as text)."""
        if name in self.classes:
            return self.classes.index(name)
        if name.isdigit() and int(name) < len(self.classes):
            return int(name)
        raise DataError(
            f"unknown class {name!r}; classes: {class_list(self.classes)} (or their indices, "
            f"0 to {len(self.classes) - 1})"
        )

    def class_indices(self, names: str) -> list[int]:
        """The indices of the classes in ``names``: one class (a name, or an index as
        text), or several separated by commas (``"bag,coat"``, ``"0,4"``).

        >>> images = ImageSet(np.zeros((0, 1, 2, 2)), np.zeros(0), ["bag", "coat", "a,b"])
        >>> images.class_indices("coat, 0"), images.class_indices("a,b")
        ([1, 0], [2])
        """
        if names in self.classes:  # a class whose own name holds a comma
            return [self.classes.index(names)]
        parts = [part.strip() for part in names.split(",")]
        indices = [self.class_index(part) for part in parts]
        for i, index in enumerate(indices):
            if index in indices[:i]:  # e.g. "0,1" where the folder "1" is class 0
                first = parts[indices.index(index)]
                raise DataError(
                    f"{first!r} and {parts[i]!r} both name class {self.classes[index]!r} "
                    "(a class is named first by its name, else by its index)"
                )
        return indices

    def label_names(self) -> np.ndarray:
        """``(n,)`` the class name of every image (object array of str)."""
        return np.asarray(self.classes, dtype=object)[self.labels]

    def class_column(self) -> np.ndarray | None:
        """``(n,)`` every image's class as `score`'s ``class`` column gives it
        (:func:`class_column`); None for a source of one class."""
        return class_column(self.classes, self.labels)


def class_column(classes: list[str], labels: np.ndarray) -> np.ndarray | None:
    """The ``class`` column of a table naming images (`score`'s, the views' CSVs): the
    class name of each image, from its index ``labels (n,)`` into ``classes``; None when
    the source has one class (a flat folder), where the column would say nothing."""
    if len(classes) < 2:
        return None
    return np.asarray(classes, dtype=object)[labels]


def class_list(names: list[str]) -> str:
    """Class names for a message, comma-separated; a name holding a comma is quoted.

    >>> class_list(["bag", "bag, big", "7"])
    "bag, 'bag, big', 7"
    """
    return ", ".join(repr(name) if "," in name else name for name in names)


def torchvision_source(source: str | Path) -> tuple[str, Path] | None:
    """``(set name, ROOT)`` of a torchvision source ``NAME:ROOT`` (NAME one of
    ``TORCHVISION_SETS``, any case), else None: ``readings_12:00.csv`` is a file name.

    >>> torchvision_source("FashionMNIST:../data"), torchvision_source("readings_12:00.csv")
    (('fashionmnist', PosixPath('../data')), None)
    """
    text = str(source)
    prefix, _, root = text.partition(":")
    if prefix.lower() in TORCHVISION_SETS and root and not Path(text).is_file():
        return prefix.lower(), Path(root)
    return None


def source_name(source: str | Path) -> str:
    """A source's short name for messages and progress bars: a torchvision set's
    (``fashionmnist``), else the file's or folder's own; ``.`` and ``..`` by the folder
    they are, as their own names (``""``, ``".."``) said nothing (``WARNING:  is the
    folder this model was fit on``).

    >>> source_name("fashionmnist:../data"), source_name("data/imgs/"), source_name("a.csv")
    ('fashionmnist', 'imgs', 'a.csv')
    """
    torchvision = torchvision_source(source)
    if torchvision is not None:
        return torchvision[0]
    path = Path(source)
    if path.name in ("", ".."):
        return path.resolve().name or str(path)  # the root folder has no name either
    return path.name


def source_location(source: str | Path) -> str:
    """Where ``source`` is, as a run records it: a local path (or glob pattern) made
    absolute, since a reviewer of the run cannot resolve one relative to the folder it
    ran in; a torchvision set as ``NAME:ABSOLUTE_ROOT``; a URL as given.

    >>> source_location("/data/../data/a.csv"), source_location("s3://bucket/a.csv")
    ('/data/a.csv', 's3://bucket/a.csv')
    """
    text = str(source)
    if "://" in text:
        return text
    torchvision = torchvision_source(text)
    if torchvision is not None:
        return f"{text.partition(':')[0]}:{os.path.abspath(torchvision[1])}"
    return os.path.abspath(text)


def is_image_source(source: str | Path) -> bool:
    """True for torchvision sources (``mnist:``, ...) and for folders (tables are files)."""
    text = str(source)
    return text.split(":", 1)[0].lower() in TORCHVISION_SETS or Path(text).is_dir()


def read_images(
    source: str | Path,
    train: bool = True,
    size: int | None = None,
    grey_model: bool = False,
    model_size: tuple[int, int] | None = None,
) -> ImageSet:
    """Load an image source (see the module docstring); ``train`` picks the torchvision
    split; ``size`` (``data.image_size``) resizes every image to ``size x size`` pixels;
    ``grey_model``: read for a model fit on grey images (:attr:`ImageListing.grey_model`);
    ``model_size``: the ``(H, W)`` a model takes, which every image must have when not
    resized (:attr:`ImageListing.model_size`)."""
    listing = list_images(source, train, size, grey_model, model_size)
    if model_size is not None:
        listing.check()  # names every file not of the model's size, not only the first
    try:
        return listing.read(0, len(listing))
    finally:
        listing.log_colour()


def list_images(
    source: str | Path,
    train: bool = True,
    size: int | None = None,
    grey_model: bool = False,
    model_size: tuple[int, int] | None = None,
) -> ImageListing:
    """The images of ``source`` as :func:`read_images` takes them (names, classes, the
    same warnings), their pixels not yet decoded: :meth:`ImageListing.read` decodes a
    range of them, so that a folder larger than memory can be scored a part at a time."""
    text = str(source)
    torchvision = torchvision_source(text)
    if torchvision is not None:
        images = _read_torchvision(*torchvision, train)
        # The split's idx file is read whole (its pixels are the file); only the
        # resizing, which can make them many times larger, is left to ``read``.
        return ImageListing(
            images.names, images.labels, images.classes, Path(text), size, images.images
        )
    path = Path(text)
    if not path.is_dir():
        raise DataError(f"{path}: no such image folder")
    listing = _list_folder(path, size)
    listing.grey_model = grey_model
    listing.model_size = model_size
    return listing


@dataclass
class ImageListing:
    """The images of a source, listed: ``names``, class indices ``labels (n,)`` and
    ``classes``; their pixels are decoded by :meth:`read`, a range at a time.

    A folder is read as a whole would be: colour when any of its images is colour, one
    size for all (unless resized to ``size``). ``read`` checks each image's size against
    ``model_size``, the size a model takes, when it is read for one (``score``, ``view``,
    ``calibrate``), else against the first image read (``fit``), and records the colour
    files for :meth:`log_colour`. Read for
    a model fit on grey images (``grey_model``), colour images are read as their luma,
    as the model's preprocessing would take them (the same levels).
    """

    names: list[str]  # file paths, or "test/123" indices
    labels: np.ndarray
    classes: list[str]
    path: Path  # the folder or source, for messages
    size: int | None  # data.image_size: every image resized to size x size
    pixels: np.ndarray | None = None  # a torchvision split's (n, 1, H, W) uint8, in memory
    first: tuple[str, tuple[int, int]] | None = None  # the first image read, its (H, W)
    colour: list[str] = field(default_factory=list)  # colour files among those read
    grey: int = 0  # grey images among those read
    large: set[str] = field(default_factory=set)  # files over PIL's warning limit, named
    grey_model: bool = False  # read for a model fit on grey images: colour ones as grey
    # (H, W) of the images a model takes (before its pool), when read for one and not
    # resized: checked against it, not the first image, which may be the odd one.
    model_size: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self.names)

    def label_names(self) -> np.ndarray:
        """``(n,)`` the class name of every image (object array of str)."""
        return np.asarray(self.classes, dtype=object)[self.labels]

    def class_column(self) -> np.ndarray | None:
        """``(n,)`` every image's class for `score`'s ``class`` column
        (:func:`class_column`); None for a source of one class."""
        return class_column(self.classes, self.labels)

    def read(self, start: int, stop: int, advance: Callable[[int], None] | None = None) -> ImageSet:
        """Images ``start`` to ``stop`` (not included) as ``(m, C, H, W)`` uint8, ``C`` = 1
        when every one of them is grey or ``grey_model`` (colour ones as their luma), else
        3 (grey ones repeated in R, G and B: the same values a grey model takes from them
        as from a grey read, and a colour model repeats itself). ``advance(1)`` is called
        as each image file is decoded (a progress bar's count)."""
        names = self.names[start:stop]
        labels = self.labels[start:stop]
        # Each image goes into one array as it is decoded: a list of the decoded images
        # and one of their pixels, stacked at the end, held the images three times over.
        array: np.ndarray | None = None
        if self.pixels is not None:
            array = self.pixels[start:stop]
            if self.size is not None:
                array = resized_grey(array, self.size)
            return ImageSet(array, labels, self.classes, names)
        # (m, H, W) grey, or (m, H, W, 3) colour: channels last in memory, as PIL gives them
        # (the model's float input keeps that layout, on which its float rounding depends).
        for index, file in enumerate(names):
            image = _decoded(file)
            self._log_large(file, image.size)
            colour = image.mode != "L"
            if colour:
                self.colour.append(file)
            else:
                self.grey += 1
            pixels = _pixels(image, self.size)  # (H, W) grey or (H, W, 3) colour
            self._check_size(file, pixels.shape[:2])
            if array is None:
                shape = (len(names), *pixels.shape[:2])
                array = np.empty((*shape, COLOUR_CHANNELS) if colour else shape, np.uint8)
            elif colour and array.ndim == 3:
                # The first colour image: the grey ones before it get their level in R, G
                # and B, the pixels PIL gives for them converted to RGB (resized or not).
                array = np.repeat(array[..., None], COLOUR_CHANNELS, axis=3)
            # A grey image's (H, W, 1) fills every channel of a colour array.
            array[index] = pixels[..., None] if array.ndim == 4 and pixels.ndim == 2 else pixels
            if advance is not None:
                advance(1)
        if array is None:  # no images in the range
            return ImageSet(np.empty((0, 1, 0, 0), np.uint8), labels, self.classes, names)
        array = array[:, None] if array.ndim == 3 else array.transpose(0, 3, 1, 2)
        if self.grey_model and array.shape[1] == COLOUR_CHANNELS:
            # Taken to grey here, as the model's preprocessing would take them, so that
            # one warning (log_colour) says what was found and what is done with it: the
            # preprocessing warned again, of each part read, after "read in colour".
            array = luma(array)
        return ImageSet(array, labels, self.classes, names)

    def check(self) -> None:
        """Open every image file's header, decoding only the first image: a file that is
        no image (or too large for PIL), or whose size differs from ``model_size`` (else
        from the first's) when they are not resized, is a DataError before anything is
        scored, not after the folder's earlier parts were (a header is read without
        decoding the image, so this pass costs little beside scoring); against
        ``model_size`` it names every file of another size. A file whose header
        gives another size is decoded to confirm it: an orientation can be stored after
        a PNG's pixels. A file cut short is found only when decoded, by :meth:`read`."""
        if self.pixels is not None:  # a torchvision split, in memory
            return
        odd: list[tuple[str, tuple[int, int]]] = []  # files not of the model's size
        for file in self.names:
            size = _header_size(file)
            self._log_large(file, size)
            if self.size is not None:
                continue
            if self.model_size is not None:
                if size != self.model_size:
                    width, height = _decoded(file).size
                    if (height, width) != self.model_size:
                        odd.append((file, (height, width)))
            elif self.first is None or size != self.first[1]:
                width, height = _decoded(file).size
                self._check_size(file, (height, width))
        if odd:
            raise self._not_model_size(odd)

    def _log_large(self, file: str, size: tuple[int, int]) -> None:
        """Log, once per file, that ``file`` of ``size`` (either order) has more pixels
        than ``PIL.Image.MAX_IMAGE_PIXELS``: PIL reads it with a DecompressionBombWarning
        that names no file (and shows it once a run for one size), which ``_reading``
        keeps from being shown. Over twice the limit PIL refuses the file, as before."""
        limit = Image.MAX_IMAGE_PIXELS
        pixels = size[0] * size[1]
        if limit is None or pixels <= limit or file in self.large:
            return
        self.large.add(file)
        logger.warning(
            "%s: %s pixels, over Pillow's decompression-bomb warning limit of %s "
            "(PIL.Image.MAX_IMAGE_PIXELS); read, as Pillow reads images up to twice the limit",
            file,
            f"{pixels:,}",
            f"{limit:,}",
        )

    def _check_size(self, file: str, size: tuple[int, int]) -> None:
        """DataError naming ``file`` when its size ``(H, W)`` is not ``model_size``, or,
        read for no model, differs from the first image read's, which it names too (the
        sizes alone left the odd file to be found among thousands)."""
        if self.model_size is not None:
            if size != self.model_size:
                raise self._not_model_size([(file, size)])
        elif self.first is None:
            self.first = file, size
        elif size != self.first[1]:
            first, first_size = self.first
            raise DataError(
                f"images in {self.path} have different sizes ({file}: {size[0]} x {size[1]}, "
                f"{first}: {first_size[0]} x {first_size[1]}); resize them when read with "
                "data.image_size (at fit, e.g. --set data.image_size=64; the model then "
                "resizes what it scores)"
            )

    def _not_model_size(self, odd: list[tuple[str, tuple[int, int]]]) -> DataError:
        """The DataError naming the files of ``odd`` (``(file, (H, W))``, the first
        ``SKIPPED_FILES_SHOWN`` of them), whose size is not ``model_size``: the folder's
        first image is no guide, as it may be the odd one."""
        assert self.model_size is not None
        height, width = self.model_size
        shown = ", ".join(f"{file} ({h} x {w})" for file, (h, w) in odd[:SKIPPED_FILES_SHOWN])
        hidden = len(odd) - SKIPPED_FILES_SHOWN
        more = f" and {hidden} more" if hidden > 0 else ""
        which = "1 image is" if len(odd) == 1 else f"{len(odd)} images are"
        return DataError(
            f"{self.path}: {which} not {height} x {width}, the size the model takes: "
            f"{shown}{more}; resize {'it' if len(odd) == 1 else 'them'} to {height} x {width}, "
            "or fit with --set data.image_size=N, which resizes images at fit and when scoring"
        )

    def log_colour(self) -> None:
        """Warn, naming the colour files among those read, when some, not all, are colour,
        so all were read in colour (a stray file is often the cause, and a model fit on
        them is colour); or, read for a grey model, when any are colour: they are scored
        by their grey levels, which one warning says beside what was found."""
        if not self.colour or not (self.grey or self.grey_model):
            return
        found = "%s: %d of %d images are colour (%s%s)"
        if self.grey_model:
            done = (
                "; the model was trained on grey images, so they are scored by their grey "
                "levels (luma): colour alone does not make them anomalous"
            )
        else:
            done = ", so every image is read in colour"
        logger.warning(
            found + done,
            self.path,
            len(self.colour),
            len(self.colour) + self.grey,
            ", ".join(Path(file).name for file in self.colour[:COLOUR_FILES_SHOWN]),
            " and more" if len(self.colour) > COLOUR_FILES_SHOWN else "",
        )


def _read_torchvision(name: str, root: Path, train: bool) -> ImageSet:
    folder_name = TORCHVISION_SETS[name]
    if not holds_idx_files(root / folder_name):
        raise DataError(
            f"{folder_name} not found under {root} (expected the idx files of "
            f"{', '.join(IDX_FILES)} in {root / folder_name / 'raw'}); it is never downloaded"
            + gzipped_idx_hint([root / folder_name])
        )
    return read_idx_set(root / folder_name, train, torchvision_classes(folder_name))


def torchvision_classes(folder_name: str) -> list[str] | None:
    """torchvision's class names for the MNIST-layout set in ``folder_name``, or None for
    a set torchvision does not know."""
    if folder_name not in TORCHVISION_SETS.values():
        return None
    import torchvision

    return list(getattr(torchvision.datasets, folder_name).classes)


def holds_idx_files(folder: Path, suffix: str = "") -> bool:
    """True when ``folder/raw`` holds the four idx files of the MNIST layout (with
    ``suffix`` ".gz": gzipped, as downloaded)."""
    raw = Path(folder) / "raw"
    return all(
        (raw / f"{name}{suffix}").is_file() for names in IDX_FILES.values() for name in names
    )


def gzipped_idx_hint(folders: list[Path]) -> str:
    """A hint naming those of ``folders`` whose idx files are only gzipped (as
    downloaded, before torchvision extracts them), or ""."""
    gzipped = sorted(
        str(path / "raw")
        for path in folders
        if not holds_idx_files(path) and holds_idx_files(path, ".gz")
    )
    if not gzipped:
        return ""
    return f"; the idx files are read uncompressed: gunzip those in {', '.join(gzipped)}"


def read_idx_set(folder: Path, train: bool, classes: list[str] | None = None) -> ImageSet:
    """One split of a data set in torchvision's MNIST layout (``folder/raw/`` holding the
    uncompressed idx files), whatever the set is called: MNIST, Fashion-MNIST, KMNIST or
    another set written the same way. Images ``(n, 1, H, W)`` uint8; ``classes`` defaults
    to the label values as text ("0" ... the largest label)."""
    from torchvision.datasets.mnist import read_image_file, read_label_file

    split = "train" if train else "test"
    image_file, label_file = (Path(folder) / "raw" / name for name in IDX_FILES[split])
    try:
        images = read_image_file(str(image_file)).numpy()[:, None, :, :]
        labels = read_label_file(str(label_file)).numpy().astype(np.int64)
    except FileNotFoundError as exc:
        raise DataError(f"{exc.filename}: missing; the {split} split needs it") from exc
    except (AssertionError, ValueError, RuntimeError) as exc:
        # torchvision asserts on the idx header (type, dimensions, size).
        raise DataError(
            f"{image_file} or {label_file} is not an idx file of the MNIST layout"
        ) from exc
    if len(images) != len(labels):
        raise DataError(f"{image_file}: {len(images)} images but {len(labels)} labels")
    if classes is None:
        classes = [str(label) for label in range(int(labels.max(initial=0)) + 1)]
    names = [f"{split}/{i}" for i in range(len(images))]
    return ImageSet(images, labels, classes, names)


def write_idx_set(folder: Path, train: bool, images: np.ndarray, labels: np.ndarray) -> None:
    """Write one split in the layout ``read_idx_set`` reads: ``folder/raw/`` with the idx
    files of ``IDX_FILES``. ``images`` ``(n, H, W)`` or ``(n, 1, H, W)``, grey levels
    0-255; ``labels`` ``(n,)`` class indices 0-255. Lets any grey-scale set be benchmarked
    like MNIST."""
    images = np.asarray(images)
    if images.ndim == 4:
        if images.shape[1] != 1:
            raise ValueError(f"idx files hold grey-scale images, not {images.shape[1]} channels")
        images = images[:, 0]
    labels = np.asarray(labels)
    if images.ndim != 3 or labels.shape != (len(images),):
        raise ValueError(f"images {images.shape} and labels {labels.shape} do not pair up")
    names = IDX_FILES["train" if train else "test"]
    for array, name in zip((images, labels), names, strict=True):
        if not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"{name}: needs whole numbers, not {array.dtype}")
        if array.min(initial=0) < 0 or array.max(initial=0) > UINT8_MAX:
            raise ValueError(f"{name}: values outside 0-{UINT8_MAX} do not fit unsigned bytes")
    raw = Path(folder) / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for array, name in zip((images, labels), names, strict=True):
        # Header: two zero bytes, the type code of unsigned bytes, the number of
        # dimensions, then each dimension's size as a big-endian int32.
        header = bytes([0, 0, IDX_UBYTE, array.ndim]) + np.array(array.shape, ">i4").tobytes()
        (raw / name).write_bytes(header + np.ascontiguousarray(array, np.uint8).tobytes())


def _list_folder(path: Path, size: int | None) -> ImageListing:
    """An ``ImageFolder`` (class subfolders), or a flat folder of images (one class, the
    folder's name). Hidden files and folders (a name starting with ".": macOS's ``._``
    copies, ``.ipynb_checkpoints``) are no images and no classes."""
    from torchvision.datasets.folder import make_dataset

    # A broken link named as an image is listed, to be refused naming it, as in a class
    # folder (torchvision lists it there): left out, its image went unscored without a word.
    flat = sorted(
        p for p in path.iterdir() if is_image_file(p) and (p.is_file() or _broken_link(p))
    )
    subfolders = sorted(p.name for p in path.iterdir() if p.is_dir() and not _hidden(p.name))
    _warn_not_images(path, path.iterdir() if flat else path.rglob("*"))
    if flat:
        if subfolders:
            logger.warning(
                "%s holds images of its own, so it is read as one flat folder; its "
                "subfolders (%s) are not read",
                path,
                ", ".join(subfolders),
            )
        # One class, named after the folder: a folder named like a trained class is that
        # class to a conditional model.
        names = [str(p) for p in flat]
        return ImageListing(
            names, np.zeros(len(names), np.int64), [path.resolve().name], path, size
        )
    no_images = DataError(f"{path} holds no images and no class subfolders with images")
    if not subfolders:  # torchvision's make_dataset raises a ValueError without classes
        raise no_images
    samples = make_dataset(
        path,
        {name: index for index, name in enumerate(subfolders)},
        is_valid_file=lambda file: is_image_file(file) and not hidden_below(file, path),
        allow_empty=True,
    )
    if not samples:
        raise no_images
    filled = sorted({index for _, index in samples})
    empty = [name for index, name in enumerate(subfolders) if index not in filled]
    if empty:  # not classes: no image says what they look like
        logger.warning(
            "%s: subfolders without image files (%s) are not read as classes; image files "
            "are named %s",
            path,
            ", ".join(empty),
            " ".join(IMAGE_SUFFIXES),
        )
    renumbered = {old: new for new, old in enumerate(filled)}
    labels = np.array([renumbered[index] for _, index in samples], dtype=np.int64)
    classes = [subfolders[index] for index in filled]
    return ImageListing([str(file) for file, _ in samples], labels, classes, path, size)


def _warn_not_images(path: Path, files: Iterable[Path]) -> None:
    """Name the files under ``path`` (of ``files``) that are not read, being named as no
    image file: a picture saved as ``.heic`` or ``.avif`` would otherwise be left out of
    a fit or a score without a word. Hidden files (``.DS_Store``, ``._name.png``) are
    left out silently, as are the files of hidden folders."""
    skipped = sorted(
        file.relative_to(path).as_posix()
        for file in files
        if not _hidden(file.name)
        and not is_image_file(file)
        and not hidden_below(file, path)
        and file.is_file()
    )
    if skipped:
        logger.warning(
            "%s: %s not read, as %s (%s%s); image files are named %s",
            path,
            "1 file is" if len(skipped) == 1 else f"{len(skipped)} files are",
            "it is not named as an image file"
            if len(skipped) == 1
            else "they are not named as image files",
            ", ".join(skipped[:SKIPPED_FILES_SHOWN]),
            " and more" if len(skipped) > SKIPPED_FILES_SHOWN else "",
            " ".join(IMAGE_SUFFIXES),
        )


def is_image_file(path: str | Path) -> bool:
    """Whether ``path`` is named as an image file (:data:`IMAGE_SUFFIXES`), and not as a
    hidden file (macOS writes ``._name.png`` beside ``name.png`` on shared drives)."""
    name = Path(path).name
    return name.lower().endswith(IMAGE_SUFFIXES) and not _hidden(name)


def _hidden(name: str) -> bool:
    return name.startswith(".")


def _empty(path: Path) -> bool:
    """Whether ``path`` is a file of 0 bytes."""
    try:
        return path.is_file() and path.stat().st_size == 0
    except OSError:
        return False


def _broken_link(path: Path) -> bool:
    """Whether ``path`` is a symbolic link whose target does not exist."""
    return path.is_symlink() and not path.exists()


def read_with_images(path: Path, source: str | Path) -> bool:
    """Whether ``path`` is the image folder ``source`` or lies inside it, where a listing
    of the folder reaches it: not in a hidden folder there, nor hidden itself. Never for a
    torchvision source (``mnist:ROOT``), whose idx files are all it reads. The rule for
    what a command writes (``score``'s scores and maps, ``batch``'s output folder): not
    where it would be read with the images."""
    if torchvision_source(source) is not None:
        return False
    folder, resolved = Path(source).resolve(), path.resolve()  # symlinks, "..", "."
    return resolved.is_relative_to(folder) and not any(
        _hidden(part) for part in resolved.relative_to(folder).parts
    )


def hidden_below(file: str | Path, root: Path) -> bool:
    """Whether a folder between ``root`` and ``file`` is hidden (``.thumbnails/``)."""
    return any(_hidden(part) for part in Path(file).relative_to(root).parts[:-1])


def _pixels(image: Image.Image, size: int | None) -> np.ndarray:
    """The pixels of ``image``, resized to ``size x size`` (bilinear) unless ``size`` is None."""
    if size is not None and image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(image)


def resized_grey(images: np.ndarray, size: int) -> np.ndarray:
    """Grey images ``(n, 1, H, W)`` uint8 (the MNIST layout's) resized to ``(n, 1, size,
    size)`` uint8 (bilinear), each on its own, so a subset resized is that subset of the
    set resized."""
    resized = np.empty((len(images), size, size), np.uint8)
    for index, image in enumerate(images):
        resized[index] = _pixels(Image.fromarray(image[0]), size)
    return resized[:, None]


def to_8bit(image: Image.Image) -> Image.Image:
    """``image`` as 8-bit grey (mode ``L``) or 8-bit colour (mode ``RGB``), whatever its
    file's mode, so that a picture reads the same however it was saved:

    - ``1`` and ``L``: grey; ``LA`` (and ``La``): grey, the alpha dropped;
    - 16-bit grey (``I;16``, ``I;16B``, ...; ``I`` read from a PNG, whose grey samples
      hold at most 16 bits): level ``v`` (0-65535) reads as ``round(v / 257)`` (0-255);
    - 32-bit integer grey (``I`` from other files): ``round(v / 16843009)``, that is
      0 to 2**32 - 1 onto 0-255, negative levels as 0;
    - palette (``P``, ``PA``): the palette's colours, alpha dropped;
    - 32-bit float grey (``F``, e.g. from a TIFF): levels in [0, 1] are scaled by 255,
      levels up to 255 rounded; others (negative, above 255, NaN) are refused, as no
      scale can be read off them;
    - anything else (``RGB``, ``RGBA``, ``CMYK``, ...): colour, any alpha dropped.

    Colour (from a palette or not) whose three channels are equal in every pixel (within
    ``GREY_SPREAD`` levels) is grey: a grey picture saved as RGB, as JPEG and WebP files
    often are, reads as that picture saved as grey.
    """
    mode = image.mode
    if mode in ("1", "L", "LA", "La"):
        return image.convert("L")
    if mode.startswith("I;16") or (mode == "I" and image.format == "PNG"):
        levels = np.asarray(image).astype(np.float64) / GREY_16BIT
        return Image.fromarray(np.rint(levels).astype(np.uint8), "L")
    if mode == "I":
        levels = np.clip(np.asarray(image).astype(np.float64), 0, None) / GREY_32BIT
        return Image.fromarray(np.rint(levels).astype(np.uint8), "L")
    if mode == "F":
        return _float_grey(np.asarray(image, dtype=np.float64))
    if mode in ("P", "PA"):
        # Through RGBA, which takes a palette's transparency too, then the alpha dropped.
        return _grey_if_channels_agree(np.asarray(image.convert("RGBA"))[..., :3])
    return _grey_if_channels_agree(np.asarray(image.convert("RGB")))


def _grey_if_channels_agree(rgb: np.ndarray) -> Image.Image:
    """``rgb`` ``(H, W, 3)`` uint8 as a grey image (its luma) when its channels are
    within ``GREY_SPREAD`` levels of each other in every pixel, else as a colour one."""
    image = Image.fromarray(np.ascontiguousarray(rgb), "RGB")
    return image.convert("L") if _channels_agree(np.moveaxis(rgb, -1, 0)[None])[0] else image


def _channels_agree(images: np.ndarray) -> np.ndarray:
    """``(n,)`` bool: which colour images ``(n, 3, H, W)`` are grey, their channels within
    ``GREY_SPREAD`` levels of each other in every pixel (levels of 0-255; float images
    hold theirs in [0, 1])."""
    spread = images.max(axis=1).astype(np.float64) - images.min(axis=1)
    limit = GREY_SPREAD if images.dtype.kind in "iu" else GREY_SPREAD / UINT8_MAX
    return spread.reshape(len(images), -1).max(axis=1, initial=0) <= limit


def _grey_for_grey_model(images: np.ndarray) -> np.ndarray:
    """Colour images ``(n, 3, H, W)`` as grey ``(n, 1, H, W)``, their luma, as PIL's
    ``convert("L")`` gives it (the grey of a picture read as grey at fit), with a warning
    naming how many differ from grey: a folder with one colour image among grey ones is
    read as colour, and a grey model would otherwise refuse all of it."""
    warn_colour_for_grey_model(colour_count(images), len(images))
    return luma(images)


def colour_count(images: np.ndarray) -> int:
    """How many of the colour images ``(n, 3, H, W)`` are not grey (``_channels_agree``)."""
    return int((~_channels_agree(images)).sum())


def warn_colour_for_grey_model(colour: int, images: int) -> None:
    """Say that ``colour`` of ``images`` images, scored by a grey model, are colour."""
    if colour:
        logger.warning(
            "the model was trained on grey images: %d of %d images are colour and are "
            "scored by their grey levels (luma), so colour alone does not make them "
            "anomalous",
            colour,
            images,
        )


def luma(images: np.ndarray) -> np.ndarray:
    """Colour images ``(n, 3, H, W)`` as grey ``(n, 1, H, W)``: ITU-R 601-2 luma, exactly
    as PIL's ``convert("L")`` for uint8 (so that grey repeated in R, G and B stays itself)."""
    if images.dtype == np.uint8:
        # ITU-R 601-2 luma in PIL's fixed point: (R 19595 + G 38470 + B 7471 + 2^15) >> 16
        fixed_point = np.array(LUMA_FIXED_POINT, dtype=np.int64).reshape(1, 3, 1, 1)
        levels = (images.astype(np.int64) * fixed_point).sum(axis=1, keepdims=True)
        return ((levels + (1 << 15)) >> 16).astype(np.uint8)
    weights = np.array(LUMA_WEIGHTS, dtype=np.float32).reshape(1, 3, 1, 1)
    levels = (images.astype(np.float32) * weights).sum(axis=1, keepdims=True)
    # Other integer types keep theirs, so that a refusal of their values names it.
    return np.rint(levels).astype(images.dtype) if images.dtype.kind in "iu" else levels


def _float_grey(levels: np.ndarray) -> Image.Image:
    """Float grey levels in [0, 1] or [0, 255] as an 8-bit grey image (see ``to_8bit``)."""
    if not np.isfinite(levels).all():
        raise DataError("a float image with NaN or infinite levels")
    low, high = levels.min(initial=0.0), levels.max(initial=0.0)
    if low < 0 or high > UINT8_MAX:
        raise DataError(
            f"float grey levels from {low:g} to {high:g}; expected 0 to 1 or 0 to "
            f"{UINT8_MAX}: save the images as 8- or 16-bit"
        )
    scale = UINT8_MAX if high <= 1 else 1
    return Image.fromarray(np.rint(levels * scale).astype(np.uint8), "L")


def _decoded(file: str) -> Image.Image:
    """The image in ``file`` as 8-bit grey or colour (see ``to_8bit``), turned upright."""
    with _reading(file), Image.open(file) as image:
        # As a viewer shows it: a camera stores a portrait shot's pixels sideways,
        # with an EXIF orientation saying how to turn them; unturned, its anomaly
        # map would not lie over the picture a reviewer sees.
        return to_8bit(ImageOps.exif_transpose(image))


def _header_size(file: str) -> tuple[int, int]:
    """``(H, W)`` of the image in ``file`` turned upright, from its header: no pixels are
    decoded. A PNG's orientation is taken only from an EXIF chunk before its pixels (PIL
    decodes the image to look for one after them): it may differ from ``_decoded``'s."""
    with _reading(file), Image.open(file) as image:
        width, height = image.size
        # PIL gives a TIFF's size upright already; looking for a PNG's orientation
        # after its header would decode it.
        turnable = image.format != "TIFF" and (image.format != "PNG" or "exif" in image.info)
        orientation = image.getexif().get(ExifTags.Base.Orientation) if turnable else None
        if orientation in TRANSPOSED_ORIENTATIONS:
            width, height = height, width
        return height, width


@contextlib.contextmanager
def _reading(file: str) -> Iterator[None]:
    """Around reading the image ``file``: its errors become a DataError naming it.

    PIL's DecompressionBombWarning (an image over ``Image.MAX_IMAGE_PIXELS``, read) is
    not shown: it names no file, and :class:`ImageListing` logs a line that does. The
    warnings' filters are left as they are (``catch_warnings`` would reset which
    warnings were shown, so that another warning of PIL's came once per file, not once);
    one that makes it an error still refuses the file."""
    shown = warnings.showwarning

    def show(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        if not issubclass(category, Image.DecompressionBombWarning):
            shown(message, category, *args, **kwargs)

    warnings.showwarning = show
    try:
        yield
    except OSError as exc:
        if _broken_link(Path(file)):
            # "[Errno 2] No such file or directory" of a file `ls` lists puzzled.
            raise DataError(
                f"{file} is a broken symbolic link: its target {os.readlink(file)} does not exist"
            ) from exc
        if _empty(Path(file)):
            # PIL's "cannot identify image file" did not say why: an empty file is a copy
            # or an upload cut short, found at once.
            raise DataError(f"{file} is not a readable image: the file is empty (0 bytes)") from exc
        raise DataError(f"{file} is not a readable image: {exc}") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Not an OSError: PIL's refusal of an image over twice MAX_IMAGE_PIXELS (or over
        # it, with the warning made an error) was a traceback that did not name the file.
        raise DataError(f"{file} is too large to read: {exc}") from exc
    except DataError as exc:
        raise DataError(f"{file}: {exc}") from exc
    finally:
        warnings.showwarning = shown


def auto_pool(shape: tuple[int, ...], side_multiple: int) -> int:
    """``data.image_pool=None``: the largest divisor of ``IMAGE_POOL`` whose pooled sides of
    ``(C, H, W)`` images are whole, at least ``MIN_POOLED_SIDE`` and divide by
    ``side_multiple`` (a model's total stride); 1 when none is.

    >>> auto_pool((1, 28, 28), 1), auto_pool((1, 28, 28), 2), auto_pool((1, 28, 28), 4)
    (2, 2, 1)
    >>> auto_pool((3, 27, 27), 1), auto_pool((1, 12, 12), 1)  # 12 -> 6 would lose the shapes
    (1, 1)
    """
    sides = shape[1:3]
    for pool in range(IMAGE_POOL, 1, -1):
        if IMAGE_POOL % pool:
            continue
        whole = all(side % (pool * side_multiple) == 0 for side in sides)
        if whole and min(sides) >= pool * MIN_POOLED_SIDE:
            return pool
    return 1


class ImagePreprocessor:
    """Images -> ``(n, C, H / pool, W / pool)`` float32 in [0, 1]; checks the shape at
    scoring time.

    ``pool`` averages each ``pool x pool`` block of pixels into one (1 = full resolution).
    The model then sees shapes rather than pixel-level texture: on I-oneclass
    Fashion-MNIST and MNIST the MLP VAE ranks anomalies better at 14x14 than at 28x28
    (docs/tuning.md).
    """

    kind = "image"

    def __init__(self, pool: int | None = 1, image_size: int | None = None) -> None:
        self.shape: tuple[int, ...] = ()  # (C, H, W) of the input images
        self.pool = pool  # None: chosen by fit with auto_pool
        # data.image_size: image files are resized to it as they are read, arrays are not;
        # only the advice of a refused size depends on it (not saved: the config holds it).
        self.image_size = image_size

    def fit(self, images: np.ndarray, side_multiple: int = 1) -> ImagePreprocessor:
        """Record the image shape; ``side_multiple`` is the model's total stride, which
        the pooled sides must divide by when the pool is chosen automatically."""
        shape = tuple(as_nchw(images).shape[1:])
        if self.pool is None:
            self.pool = auto_pool(shape, side_multiple)
        if shape[1] % self.pool or shape[2] % self.pool:
            raise DataError(
                f"image size {shape[1]}x{shape[2]} does not divide by data.image_pool={self.pool}"
            )
        self.shape = shape
        return self

    @property
    def _fitted_pool(self) -> int:
        """``pool`` as chosen by fit; before fit it may be None, which cannot pool."""
        if self.pool is None:
            raise TypeError("data.image_pool=None is chosen by fit; fit the preprocessor first")
        return self.pool

    @property
    def model_shape(self) -> tuple[int, ...]:
        """``(C, H / pool, W / pool)``: the shape the model sees."""
        channels, height, width = self.shape
        return channels, height // self._fitted_pool, width // self._fitted_pool

    def transform(self, images: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """``images (n, C, H, W)`` (or ``(n, H, W)``), uint8 or floats in [0, 1], as the
        model's input ``(n, *model_shape)`` float32 in [0, 1]; ``rows`` (int indices),
        when given, picks the images to transform, in their order (``images[rows]``,
        without a copy of them at input resolution)."""
        array = as_nchw(images)
        if rows is not None and array.shape[1] != self.shape[0]:
            # Converted below, as a whole: only the rows picked are counted as colour.
            array, rows = array[rows], None
        if array.shape[1] == 1 and self.shape[0] == COLOUR_CHANNELS:
            # Grey images for a colour model: each level in R, G and B, as a folder of grey
            # and colour images is read.
            array = np.repeat(array, COLOUR_CHANNELS, axis=1)
        elif array.shape[1] == COLOUR_CHANNELS and self.shape[0] == 1:
            array = _grey_for_grey_model(array)
        if tuple(array.shape[1:]) != self.shape:
            given = tuple(array.shape[1:])
            resize = f"resize them to {self.shape[1]} x {self.shape[2]}"
            if given[0] != self.shape[0]:
                fix = "convert them to " + ("grey" if self.shape[0] == 1 else "colour")
            elif self.image_size is not None:
                # Advising a fit with data.image_size misled: this model has it, and arrays
                # (Python, a served model) reach it at their own size.
                fix = (
                    f"{resize}; this model resizes image files as it reads them "
                    f"(data.image_size={self.image_size}), not arrays"
                )
            else:
                fix = (
                    f"{resize}, or fit with --set data.image_size=N, which resizes images at "
                    "fit and when scoring"
                )
            raise DataError(
                f"the model takes {_described(self.shape)} images, these are "
                f"{_described(given)} (shape {given}): {fix}"
            )
        if array.dtype == np.uint8:
            return self._transform_bytes(array, rows)
        dtype = array.dtype
        # Checked whole, rows picked or not: a refusal names the values of every image.
        array = array.astype(np.float32)
        if not np.isfinite(array).all():
            raise DataError("images hold NaN or infinite pixel values")
        if array.size and (array.min() < 0 or array.max() > 1):
            raise DataError(
                "images must be uint8 pixels (0 to 255) or floats in [0, 1]; got values "
                f"from {array.min():g} to {array.max():g} as {dtype}"
            )
        return self._pooled(array if rows is None else array[rows])

    def _transform_bytes(self, array: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
        """:meth:`transform` of uint8 images ``(n, *shape)`` (``array[rows]``), a block of
        ``TRANSFORM_BLOCK_VALUES`` input values at a time into the output: the whole set as
        float32 at input resolution, 4 bytes a pixel and twice over (the division made a
        second), took 2.6 GB for 20,000 images of 128 x 128 before the pool cut it by 4.
        Each image's values are those of the whole set transformed at once: the pool's
        float sums take the order of the array's memory layout, so only C order and
        channels last (colour read from files) are taken in blocks, other layouts whole."""
        if not (array.flags.c_contiguous or array.transpose(0, 2, 3, 1).flags.c_contiguous):
            whole = self._pooled(array.astype(np.float32) / 255.0)
            return whole if rows is None else whole[rows]
        count = len(array) if rows is None else len(rows)
        shape = (count, *self.model_shape)
        out: np.ndarray | None = None
        step = max(1, TRANSFORM_BLOCK_VALUES // max(1, math.prod(self.shape)))
        for start in range(0, count, step):
            stop = min(start + step, count)
            block = array[start:stop] if rows is None else array[rows[start:stop]]
            pooled = self._pooled(block.astype(np.float32) / 255.0)
            if out is None:
                # In the memory layout of the whole set transformed at once (colour read
                # from files is channels-last), on which the model's float rounding depends.
                out = np.empty_like(pooled, shape=shape)
            out[start:stop] = pooled
        return np.empty(shape, np.float32) if out is None else out

    def _pooled(self, array: np.ndarray) -> np.ndarray:
        """Float images ``(n, *shape)`` averaged over each ``pool x pool`` block,
        ``(n, *model_shape)``."""
        if self.pool == 1:
            return array
        channels, height, width = self.model_shape
        pool = self._fitted_pool
        blocks = array.reshape(len(array), channels, height, pool, width, pool)
        return blocks.mean(axis=(3, 5))

    def upsample(self, maps: np.ndarray) -> np.ndarray:
        """``(n, *model_shape)`` -> ``(n, *shape)``: each value repeated over its block."""
        pool = self._fitted_pool
        return maps.repeat(pool, axis=-2).repeat(pool, axis=-1)

    @property
    def binary_features(self) -> None:
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "shape": list(self.shape), "pool": self.pool}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImagePreprocessor:
        pre = cls(data.get("pool", 1))
        pre.shape = tuple(data["shape"])
        return pre


def _described(shape: tuple[int, ...]) -> str:
    """``(C, H, W)`` in words: ``grey 28 x 28``, ``colour 64 x 64``."""
    return f"{'grey' if shape[0] == 1 else 'colour'} {shape[1]} x {shape[2]}"


def as_nchw(images: np.ndarray) -> np.ndarray:
    array = np.asarray(images)
    if array.ndim == 3:  # (n, H, W) grayscale
        array = array[:, None]
    if array.ndim == 4 and array.shape[1] not in (1, 3) and array.shape[3] in (1, 3):
        raise DataError(
            f"expected images of shape (n, 1 or 3, H, W), got {array.shape}, which looks "
            "channel-last (as PIL gives): pass images.transpose(0, 3, 1, 2)"
        )
    if array.ndim != 4 or array.shape[1] not in (1, 3):
        raise DataError(f"expected images of shape (n, 1 or 3, H, W), got {array.shape}")
    return array
