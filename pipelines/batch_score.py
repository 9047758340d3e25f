"""Batch scoring as a pipeline script (the same as `anomaly-vae batch`), for cron,
systemd or `spark-submit`:

    spark-submit --master yarn pipelines/batch_score.py /mnt/shared/incoming \\
        --output-dir /mnt/shared/scored --model models:/anomaly-vae@champion --engine spark

This script runs that very command, so its options, --help, errors and exit codes are
the command's. A first argument ``-v`` or ``--verbose`` is `anomaly-vae --verbose`: a log
line as each input starts and ends, for a scheduler's log.
"""

from __future__ import annotations

import sys

from anomaly_vae import cli

# How usage lines name this script (it also runs under spark-submit, so no "python").
PROG = "pipelines/batch_score.py"


VERBOSE_FLAGS = ("-v", "--verbose")  # as `anomaly-vae -v batch`, before the command's own


def main(argv: list[str] | None = None) -> None:
    """Run `anomaly-vae batch` with ``argv`` (default: this script's arguments) and exit
    with its exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    verbose = bool(args) and args[0] in VERBOSE_FLAGS
    cli.main.callback(verbose=verbose)  # the logging set-up of `anomaly-vae`
    cli.batch.main(args=args[verbose:], prog_name=PROG, **cli.main.context_settings)


if __name__ == "__main__":
    main()
