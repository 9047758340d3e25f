"""Train the whole VAE family on one data source and keep the best: `anomaly-vae fit
--family` under another name. This script runs that very command, so its options,
--help, defaults, errors, exit codes and (quiet) output are the command's.

    python pipelines/family.py DATA [--label-col C] [--id-col C] [--ignore-col C]
        [--normal-class K] [--eval FILE] [--config FILE] [--set key=value ...]
        [--register] [--model-dir DIR] [--no-tracking] [--quiet]
    python pipelines/family.py --help

DATA is a CSV/Parquet table, an image folder, or a torchvision source (see --help).
"""

from __future__ import annotations

import copy
import functools

import click

from anomaly_vae import cli

PROG = "python pipelines/family.py"  # how usage lines and error hints name this script


def family_command() -> click.Command:
    """`anomaly-vae fit` with --family always on, and so without the --family option."""
    command = copy.copy(cli.fit)
    command.params = [param for param in cli.fit.params if param.name != "family"]
    command.callback = functools.partial(cli.fit.callback, family=True)
    command.help = (
        "`anomaly-vae fit --family`: train every variant that suits DATA (family.variants "
        "to choose), compare them and their ensemble, keep the best (family.select_by), "
        "calibrate its threshold, save it and log the runs to MLflow.\n\n"
        + cli.fit.help.split("\n\n", 1)[1]  # the paragraph on what DATA can be
    )
    return command


def main(argv: list[str] | None = None) -> None:
    """Run `anomaly-vae fit --family` with ``argv`` (default: this script's arguments)
    and exit with its exit code."""
    cli.main.callback(verbose=False)  # the logging set-up of `anomaly-vae` (no -v here)
    # The settings of the `anomaly-vae` group (-h, [default: ...] in the help) as well.
    family_command().main(args=argv, prog_name=PROG, **cli.main.context_settings)


if __name__ == "__main__":
    main()
