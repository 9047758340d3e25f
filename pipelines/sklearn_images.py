"""Write scikit-learn's 8x8 digits as a held-out image set in the MNIST layout.

The image defaults were chosen on Fashion-MNIST and MNIST (28 x 28, 6,000 training
images per class). These small images, with about 90 training images per class, check
that they carry over to another size and a tiny training set: no pooling applies
(8 / 2 = 4 pixels a side is below ``MIN_POOLED_SIDE``) and the score is the ELBO (fewer
than ``IMAGE_SCORE_MIN_ROWS`` images). Even rows are the training split, odd rows the test
split; pixel counts 0-16 become grey levels 0-255.

    python pipelines/sklearn_images.py --out results/sklearn-images
    anomaly-vae benchmark --protocol i-oneclass --data-dir results/sklearn-images \\
        --datasets Digits --jobs 2 --threads 1 --out results/bench-digits
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

from anomaly_vae.data.images import IDX_FILES

DATASET = "Digits"  # folder name, the benchmark's --datasets
MAX_COUNT = 16  # load_digits pixels count ink in 4x4 blocks: 0-16
IDX_IMAGES_MAGIC = 2051  # idx3 header: unsigned bytes, three dimensions
IDX_LABELS_MAGIC = 2049  # idx1 header: unsigned bytes, one dimension


def write_idx(path: Path, array: np.ndarray, magic: int) -> None:
    """``array`` of uint8 as an idx file: big-endian magic, then each dimension's size."""
    header = np.array([magic, *array.shape], dtype=">i4").tobytes()
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def write_digits(root: Path) -> dict[str, int]:
    """Write ``root/Digits/raw/``; returns the number of images per split."""
    digits = load_digits()
    grey = np.rint(digits.images * (255 / MAX_COUNT)).astype(np.uint8)  # (1797, 8, 8)
    raw = root / DATASET / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, rows in (("train", slice(0, None, 2)), ("test", slice(1, None, 2))):
        images_file, labels_file = IDX_FILES[split]
        write_idx(raw / images_file, grey[rows], IDX_IMAGES_MAGIC)
        write_idx(raw / labels_file, digits.target[rows].astype(np.uint8), IDX_LABELS_MAGIC)
        counts[split] = len(grey[rows])
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="torchvision root to write")
    args = parser.parse_args()
    counts = write_digits(args.out)
    print(f"{args.out / DATASET}: {counts['train']} training, {counts['test']} test images")


if __name__ == "__main__":
    main()
