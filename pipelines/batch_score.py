"""Batch scoring as a pipeline script (the same as `anomaly-vae batch`), for cron,
systemd or `spark-submit`:

    spark-submit --master yarn pipelines/batch_score.py /mnt/shared/incoming \\
        --output-dir /mnt/shared/scored --model models:/anomaly-vae@champion --engine spark

This script runs that very command, so its options, --help, errors and exit codes are
the command's.
"""

from __future__ import annotations

from anomaly_vae import cli

# How usage lines name this script (it also runs under spark-submit, so no "python").
PROG = "pipelines/batch_score.py"


def main(argv: list[str] | None = None) -> None:
    """Run `anomaly-vae batch` with ``argv`` (default: this script's arguments) and exit
    with its exit code."""
    cli.main.callback(verbose=False)  # the logging set-up of `anomaly-vae` (no -v here)
    cli.batch.main(args=argv, prog_name=PROG, **cli.main.context_settings)


if __name__ == "__main__":
    main()
