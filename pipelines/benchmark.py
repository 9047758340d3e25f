"""Compare our detector, its family and baselines on a protocol of shared/PROTOCOL.md
(the pipeline behind `anomaly-vae benchmark`; see its --help for every option).

    python pipelines/benchmark.py --protocol t-clean --data-dir ../shared/data/adbench \
        --out results/bench-t-clean [--datasets 4_breastw,6_cardio] [--seeds 0,1,2] \
        [--methods anomaly-vae,knn] [--config FILE] [--set key=value ...] [--threads N] [--jobs N]
    python pipelines/benchmark.py --protocol i-oneclass --data-dir ../shared/data \
        --datasets FashionMNIST --out results/bench-fmnist

Writes OUT/results.csv (resumable), OUT/summary.md, OUT/failures.csv; exit code 1 if
anything failed.
"""

from __future__ import annotations

import argparse
import sys

from anomaly_vae.benchmark import run_benchmark
from anomaly_vae.benchmark.tasks import PROTOCOLS


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _ints(text: str) -> list[int]:
    return [int(part) for part in _names(text)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", required=True, choices=PROTOCOLS)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--datasets", type=_names)
    parser.add_argument("--classes", type=_ints)
    parser.add_argument("--seeds", type=_ints)
    parser.add_argument("--methods", type=_names)
    parser.add_argument("--out", required=True)
    parser.add_argument("--config")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    outcome = run_benchmark(
        args.protocol,
        args.data_dir,
        args.out,
        datasets=args.datasets,
        classes=args.classes,
        seeds=args.seeds,
        methods=args.methods,
        config_path=args.config,
        overrides=args.overrides,
        threads=args.threads,
        jobs=args.jobs,
        progress=not args.quiet,
    )
    print(outcome.summary.read_text())
    print(
        f"{outcome.rows_new} new rows, {outcome.rows_done_before} already done, "
        f"{len(outcome.failures)} failed; results in {outcome.out / 'results.csv'}"
    )
    return 1 if outcome.failures else 0


if __name__ == "__main__":
    sys.exit(main())
