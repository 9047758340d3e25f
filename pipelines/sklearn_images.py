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

from anomaly_vae.data.images import write_idx_set

DATASET = "Digits"  # folder name, the benchmark's --datasets
MAX_COUNT = 16  # load_digits pixels count ink in 4x4 blocks: 0-16
GREY_MAX = 255  # grey level of a full count


def write_digits(root: Path) -> dict[str, int]:
    """Write ``root/Digits/raw/``; returns the number of images per split."""
    digits = load_digits()
    grey = np.rint(digits.images * (GREY_MAX / MAX_COUNT)).astype(np.uint8)  # (1797, 8, 8)
    counts = {}
    for train, rows in ((True, slice(0, None, 2)), (False, slice(1, None, 2))):
        write_idx_set(root / DATASET, train, grey[rows], digits.target[rows])
        counts["train" if train else "test"] = len(grey[rows])
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="torchvision root to write")
    args = parser.parse_args()
    counts = write_digits(args.out)
    print(f"{args.out / DATASET}: {counts['train']} training, {counts['test']} test images")


if __name__ == "__main__":
    main()
