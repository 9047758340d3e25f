"""Compare our detector, its family and baselines on a protocol of shared/PROTOCOL.md:
`anomaly-vae benchmark` under another name. This script runs that very command, so its
options, --help, defaults, errors and exit codes are the command's.

    python pipelines/benchmark.py --protocol t-clean --data-dir ../shared/data/adbench \
        --out results/bench-t-clean [--datasets 4_breastw,6_cardio] [--seeds 0,1,2] \
        [--methods anomaly-vae,knn] [--config FILE] [--set key=value ...] [--threads N] [--jobs N]
    python pipelines/benchmark.py --protocol i-oneclass --data-dir ../shared/data \
        --datasets FashionMNIST --out results/bench-fmnist
    python pipelines/benchmark.py --help

Writes into OUT: results.csv (one row per data set or class, seed and method; a rerun
skips the rows there), unrounded.csv (their AUROC and AUCPR unrounded), summary.md,
warnings.csv, failures.csv with the tracebacks in failures.log, and run.json (the
protocol, config and data the rows were made with: a rerun with others is refused).
Exit code 1 if anything failed or an argument is wrong (2 for a bad option value).
"""

from __future__ import annotations

from anomaly_vae import cli

PROG = "python pipelines/benchmark.py"  # how usage lines and error hints name this script


def main(argv: list[str] | None = None) -> None:
    """Run `anomaly-vae benchmark` with ``argv`` (default: this script's arguments) and
    exit with its exit code."""
    cli.main.callback(verbose=False)  # the logging set-up of `anomaly-vae` (no -v here)
    # The settings of the `anomaly-vae` group (-h, [default: ...] in the help) as well.
    cli.benchmark.main(args=argv, prog_name=PROG, **cli.main.context_settings)


if __name__ == "__main__":
    main()
