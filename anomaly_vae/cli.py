"""The `anomaly-vae` command line: a thin layer over fitting and scoring."""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import click
import numpy as np

from anomaly_vae import __version__
from anomaly_vae.config import (
    LABELLED_THRESHOLD_METHODS,
    QUANTILE_THRESHOLD,
    BatchConfig,
    Config,
    ViewConfig,
    load_config,
)
from anomaly_vae.data.images import TORCHVISION_SETS
from anomaly_vae.errors import AnomalyVAEError, ConfigError, DataError
from anomaly_vae.wording import counted

if TYPE_CHECKING:  # the command imports it when run: it loads pandas
    from anomaly_vae.batch import Failures

DEFAULTS = Config()
# The torchvision sources DATA may name, as the help texts list them ("mnist:ROOT, ...
# or kmnist:ROOT"), from the reader's own list so that --help names every one it accepts.
_SOURCES = [f"{prefix}:ROOT" for prefix in TORCHVISION_SETS]
TORCHVISION_SOURCES = f"{', '.join(_SOURCES[:-1])} or {_SOURCES[-1]}"

# What `calibrate --set` takes: the intervals of its figures and of the new threshold's
# expected false-positive rate (by default the model's), and the logged model's input
# example (by default its source fit's). evaluation.fraction splits a fit's own data and
# would be ignored; the model's other settings are its own.
INPUT_EXAMPLE_SETTING = "tracking.input_example"
EXPECTED_FPR_LEVEL_SETTING = "calibration.expected_fpr_level"
CALIBRATE_SETTINGS = (
    "evaluation.interval_level",
    "evaluation.interval_resamples",
    EXPECTED_FPR_LEVEL_SETTING,
    INPUT_EXAMPLE_SETTING,
)


def _help_names_torchvision_sources(command: Callable[..., Any]) -> Callable[..., Any]:
    """Put :data:`TORCHVISION_SOURCES` where the command's docstring says {torchvision}."""
    command.__doc__ = (command.__doc__ or "").replace("{torchvision}", TORCHVISION_SOURCES)
    return command


def _one_config_file(
    context: click.Context, parameter: click.Parameter, files: tuple[Path, ...]
) -> Path | None:
    """The --config file; given twice, click would keep the last one without a word."""
    if len(files) > 1:
        raise click.BadParameter("give one config file (combine them, or use --set)")
    return files[0] if files else None


# The config options of every command that builds a detector (fit, benchmark).
CONFIG_OPTION = click.option(
    "--config",
    "config_file",
    multiple=True,
    callback=_one_config_file,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML file of config overrides (see configs/). Defaults: the dataclasses in "
    "anomaly_vae/config.py.",
)
MODEL_OPTION = click.option(
    "--model",
    "model_ref",
    metavar="REF",
    help="A saved model folder, or an MLflow model URI such as "
    "models:/anomaly-vae@champion or runs:/<run_id>/model "
    "[default: the model saved last in this project folder, by fit or calibrate].",
)
THREADS_OPTION = click.option(
    "--threads",
    type=click.IntRange(min=0),
    default=0,
    help="torch CPU threads for scoring (0: one per core). On a host where other work "
    "keeps a core busy, 1 can be twice as fast (docs/configuration.md: CPU threads).",
)
# score's and batch's: the same columns whichever writes them.
EXPLAIN_OPTION = click.option(
    "--explain",
    type=click.IntRange(min=0),
    default=0,
    metavar="K",
    help="Tables: also write, per row, the K columns that added most to its score "
    "(why_1, why_1_nats, ..., why_K, why_K_nats; 0: none; K above the columns scored "
    "writes them all).",
)
# calibrate's and view's (fit's is --set data.anomaly_label=VALUE, saved with the model).
ANOMALY_LABEL_OPTION = click.option(
    "--anomaly-label",
    help="Tables whose label column holds text: the value that marks an anomaly "
    "[default: the model's data.anomaly_label, else 0/1 labels].",
)
SET_OPTION = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override one config value, e.g. --set model.latent_dim=4 "
    "--set training.epochs=50 (repeatable; applied after --config).",
)


def _set_threads(threads: int) -> None:
    """``threads`` torch CPU threads for this process (0: torch's default, one per core)."""
    if threads > 0:
        import torch

        torch.set_num_threads(threads)


def say_starting(step: str, quiet: bool) -> None:
    """``step ...`` on stderr as a data command starts, on a terminal and without
    ``--quiet``: before the command imports torch, pandas and (with tracking) MLflow,
    which kept a terminal silent for 3 to 6 s (``pipelines/time_startup.py``). Off a
    terminal (a log, cron) no one waits on it, and the output stays as it was."""
    if not quiet and sys.stderr.isatty():
        click.echo(f"{step} ...", err=True)


def model_named(model_ref: str | None) -> str:
    """The model ``--model`` names, as the starting line says it; without ``--model``, the
    model saved last here (its folder is found by a module that imports torch)."""
    return "the model saved last in this folder" if model_ref is None else f"the model {model_ref}"


def _user_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the errors a user can fix into a one-line message and the error's exit code
    (1, or 75 for a batch run that found another at work)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except AnomalyVAEError as exc:
            error = click.ClickException(str(exc))
            # click declares exit_code a ClassVar; an instance's own code is what it exits with.
            error.exit_code = exc.exit_code  # type: ignore[misc]
            raise error from exc

    return wrapper


def exit_on_termination() -> None:
    """Turn SIGTERM (``timeout``, systemd, a scheduler cancelling a run) and SIGHUP (a
    closed terminal) into SystemExit with the shell's code, 128 + the signal: the default
    action ended the process at once, leaving the hidden temporary file of an output
    being written (``.NAME.csv.XXXX.tmp``, as large as the rows written so far) that only
    an exception deletes. A signal ignored (``nohup``) stays ignored; only the main
    thread can set handlers."""
    if threading.current_thread() is not threading.main_thread():
        return
    for number in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(number) is signal.SIG_DFL:
            signal.signal(number, _terminated)


def _terminated(number: int, frame: Any) -> None:
    raise SystemExit(128 + number)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
# The running code's version: the installed metadata may be another copy's, or absent in
# a source checkout (PYTHONPATH=.), where click's lookup raised RuntimeError.
@click.version_option(version=__version__, prog_name="anomaly-vae")
@click.option("-v", "--verbose", is_flag=True, help="Log progress details (INFO level).")
def main(verbose: bool) -> None:
    """Anomaly detection with Variational Autoencoders.

    Fit a detector on normal data, score new data with it, and review every run
    in MLflow (`anomaly-vae ui`).
    """
    exit_on_termination()
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    if not verbose or not sys.stderr.isatty():
        # MLflow's own progress bars would bury the summary, and off a terminal (a log,
        # cron) no bar is drawn, as none of ours is.
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if not verbose:
        # and so would its INFO lines.
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")


@main.command()
@click.argument("data")
@CONFIG_OPTION
@click.option(
    "--label-col",
    help="Column with 0 = normal, 1 = anomaly (text labels: --set data.anomaly_label=VALUE "
    "names the anomaly value). Anomalous rows never reach training; they are used to "
    "evaluate (AUROC, AUCPR, curves).",
)
@click.option("--id-col", help="Column passed through to score output; never a feature.")
@click.option(
    "--ignore-col",
    "ignore_cols",
    multiple=True,
    metavar="COLUMN",
    help="Column that is not a feature and not needed to score, e.g. a timestamp or free "
    "text (repeatable; data.ignore_columns).",
)
@click.option(
    "--normal-class",
    help="Images: the normal class (a class folder name or index), or several separated "
    "by commas (a,b), which a cvae is conditioned on. The other classes are anomalies "
    "used only for evaluation.",
)
@click.option(
    "--eval",
    "eval_file",
    metavar="FILE",
    type=click.Path(path_type=Path),
    help="Extra labelled evaluation file (tables; needs --label-col). Images evaluate on "
    "the class folders of DATA that --normal-class does not name.",
)
@SET_OPTION
@click.option(
    "--register/--no-register",
    default=None,
    help="Move the MLflow alias 'champion' to the new model version, unless its threshold "
    "asks for a check (the summary says so, and how to move the alias once checked) "
    f"[default: tracking.register_champion = {DEFAULTS.tracking.register_champion}].",
)
@click.option(
    "--model-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to save the model [default: mlruns/models/<timestamp>/].",
)
@click.option(
    "--family",
    is_flag=True,
    help="Train every variant that suits the data (family.variants to choose), compare "
    "them and their ensemble, keep the best (family.select_by).",
)
@click.option(
    "--no-tracking", is_flag=True, help="Do not log to MLflow (the model is still saved)."
)
@click.option("--quiet", is_flag=True, help="No progress bar, nor the step lines of a large fit.")
@_user_errors
@_help_names_torchvision_sources
def fit(
    data: str,
    config_file: Path | None,
    label_col: str | None,
    id_col: str | None,
    ignore_cols: tuple[str, ...],
    normal_class: str | None,
    eval_file: Path | None,
    overrides: tuple[str, ...],
    register: bool | None,
    model_dir: Path | None,
    family: bool,
    no_tracking: bool,
    quiet: bool,
) -> None:
    """Fit a detector on the normal part of DATA, calibrate its threshold, save it and
    log the run to MLflow.

    DATA is a CSV or Parquet table, a folder of images (flat, every image normal; or
    one subfolder per class, with --normal-class), or a torchvision dataset under a
    local root: {torchvision}.
    """
    if no_tracking and register:
        raise click.UsageError("--register needs tracking: the alias lives in MLflow")
    cli_overrides = [*overrides]
    # Column names quoted, so that one named "yes" or "2024" stays a string in YAML.
    if label_col is not None:
        cli_overrides.append(f"data.label_column={json.dumps(label_col)}")
    if id_col is not None:
        cli_overrides.append(f"data.id_column={json.dumps(id_col)}")
    if ignore_cols:
        cli_overrides.append(f"data.ignore_columns={json.dumps(list(ignore_cols))}")
    if no_tracking:
        cli_overrides.append("tracking.enabled=false")
    config = load_config(config_file, cli_overrides)
    if register and not config.tracking.enabled:  # set false by --config or --set
        raise click.UsageError(
            "--register needs tracking: the alias lives in MLflow, and tracking.enabled is false"
        )
    config.training.progress = not quiet
    what = "the VAE family" if family else f"'{config.model.name}'"
    say_starting(f"Fitting {what} on {data}", quiet)
    from anomaly_vae.fitting import FitResult, fit_source

    arguments: dict[str, Any] = {
        "eval_source": eval_file,
        "normal_class": normal_class,
        "model_dir": model_dir,
        "register": register,
    }
    result: FitResult
    if family:
        from anomaly_vae.family import fit_family, format_comparison

        def announce(name: str) -> None:
            click.echo(f"Training {name} ...", err=True)

        result = fit_family(data, config, progress=None if quiet else announce, **arguments)
        click.echo(format_comparison(result))
        click.echo(f"Family trained in {result.seconds:.1f} s.\n")
        config.model.name = result.chosen
    else:
        result = fit_source(data, config, **arguments)
    _print_fit_summary(result, config)


def _print_schedule_notes(history: Any, config: Config, train_rows: int, unit: str) -> None:
    """Say when training.min_steps stretched the schedule, and why an epoch had so few
    batches (``train_rows`` training ``unit``, e.g. "rows", in batches, or the
    training.max_epoch_batches cap), and when the epoch limit (not early stopping) ended
    training."""
    from anomaly_vae.training import full_pass_batches

    training = config.training
    stretched = history.epoch_limit and history.epoch_limit != training.epochs
    if stretched:
        factor = history.epoch_limit // training.epochs
        batches = history.batches_per_epoch
        full_pass = full_pass_batches(train_rows, training.batch_size)
        # Two causes: a table of millions of rows with training.epochs=2 hits the cap
        # (200 batches an epoch), which "small data" misdescribed; else the rows are few.
        if full_pass > batches:
            why = (
                f"at most training.max_epoch_batches={training.max_epoch_batches}; a full pass "
                f"over the {train_rows:,} training {unit} is {full_pass:,}"
            )
        else:
            why = f"the {train_rows:,} training {unit} in batches of {training.batch_size}"
        click.echo(
            f"Stretched the epoch limit and patience from {training.epochs} and "
            f"{history.patience // factor} to {history.epoch_limit} and {history.patience} "
            f"epochs: {training.epochs} epoch{'s' if training.epochs != 1 else ''} of "
            f"{batches} batch{'es' if batches != 1 else ''} ({why}) are "
            f"{training.epochs * batches:,} optimizer steps, fewer than "
            f"training.min_steps={training.min_steps} (--set training.min_steps=0 keeps "
            "them as given)."
        )
    if not history.stopped_early:
        limit = history.epoch_limit or training.epochs
        above = f", N above {limit}" if stretched else ""
        click.echo(
            "The epoch limit ended training before early stopping did; the model may "
            f"still have been improving (raise it with --set training.epochs=N{above})."
        )


def target_percent(share: float) -> str:
    """A target given as a share (calibration.target_recall, target_fpr) in percent, as
    written: 0.0001 is "0.01%" (".0f" said "0%", and 0.995 "100%"), 0.8 is "80%"."""
    return f"{100 * share:g}%"


def percent_2(share: float) -> str:
    """A measured share in percent to 2 significant digits, never in e-notation:
    0.002374 is "0.24%", 0.1050 "11%"."""
    return f"{np.format_float_positional(100 * share, precision=2, fractional=False, trim='-')}%"


def expected_fpr_text(calibration: dict[str, Any], unit: str) -> str | None:
    """The false-positive rate to expect on new normal ``unit`` ("rows", "images") of the
    threshold, from its ``calibration`` record; None for a model saved before the record
    held it (and, before that, for a threshold chosen on labelled rows)."""
    if "expected_fpr_low" not in calibration:
        return None
    return (
        f"{percent_2(calibration['expected_fpr_low'])} to "
        f"{percent_2(calibration['expected_fpr_high'])} of new normal {unit} expected above "
        f"it, {100 * calibration['expected_fpr_level']:g}% interval"
    )


def few_above_hint(
    calibration: dict[str, Any], rows_name: str, advice: Callable[[int], str]
) -> str | None:
    """A line when fewer than FEW_ROWS_ABOVE of the calibration ``rows_name`` ("held-out
    normal rows") are above a quantile threshold, which leaves its false-positive rate on
    new rows uncertain by a factor of about 5 or more: how many would pin it down, and
    ``advice(that many)`` on how to get them. None otherwise."""
    from anomaly_vae.calibration import FEW_ROWS_ABOVE, rows_to_pin_down

    # Not a labelled threshold: its rate need not be near the target_fpr that
    # rows_to_pin_down counts rows for, and its binomial interval says how sure it is.
    quantile = calibration.get("method", QUANTILE_THRESHOLD) == QUANTILE_THRESHOLD
    if not quantile or "expected_fpr_low" not in calibration:
        return None
    n = calibration["n_calibration"]
    above = round(calibration["calibration_fpr"] * n)
    if above >= FEW_ROWS_ABOVE:
        return None
    needed = rows_to_pin_down(calibration["target_fpr"])
    some = f"Only {above} of" if above else "None of the"
    return (
        f"{some} {n:,} {rows_name} {'is' if above == 1 else 'are'} above the threshold, too "
        f"few to pin its false-positive rate down: about {needed:,} would put "
        f"{FEW_ROWS_ABOVE} above it ({advice(needed)})."
    )


def _print_fit_summary(result: Any, config: Config) -> None:
    from anomaly_vae.intervals import shown_metric

    detector, rows = result.detector, result.rows
    calibration = detector.calibration_
    n_fit = rows["train"] + rows["validation"] + rows["calibration"]
    unit = f"{detector.score_item}s"
    history = getattr(detector, "history_", None)
    epochs = ""
    if history is not None:
        trained = len(history.epochs)
        epochs = (
            f": {trained} epoch{'s' if trained != 1 else ''}, best {history.best_epoch}, "
            f"{history.seconds:.1f} s"
        )
    click.echo(
        f"Trained '{config.model.name}' on {n_fit:,} normal {unit} (train {rows['train']:,} / "
        f"validation {rows['validation']:,} / calibration {rows['calibration']:,}){epochs}"
    )
    if history is not None:
        _print_schedule_notes(history, config, rows["train"], unit)
    if rows["labelled_anomalies_excluded"]:
        click.echo(
            f"Kept {rows['labelled_anomalies_excluded']:,} labelled "
            f"{'anomaly' if rows['labelled_anomalies_excluded'] == 1 else 'anomalies'} "
            "out of training."
        )
    if rows.get("unused_other_classes"):
        click.echo(
            f"Left out the {rows['unused_other_classes']:,} images of other classes in the "
            "training split; evaluation uses the test split."
        )
    held_out_fpr = (
        f"{100 * calibration['calibration_fpr']:.2f}% of {calibration['n_calibration']:,} "
        f"held-out normal {unit} above it"
    )
    if calibration.get("method", "quantile") == "quantile":
        how = f"target false-positive rate {target_percent(calibration['target_fpr'])}"
    else:
        how = f"{calibration['description']} of {calibration['n_labelled']:,} labelled {unit}"
        if "target_recall" in calibration:
            how += f", target recall {target_percent(calibration['target_recall'])}"
    expected = expected_fpr_text(calibration, unit)
    click.echo(
        f"Threshold: {calibration['score']} > {detector.threshold_:.6g} ({how}; {held_out_fpr}"
        f"{'; ' + expected if expected else ''})"
    )
    if "expected_fpr_withheld" in calibration:  # as `calibrate` says it
        click.echo(
            f"No false-positive rate to expect on new normal {unit}: "
            f"{calibration['expected_fpr_withheld']}."
        )
    fraction = config.calibration.fraction
    hint = few_above_hint(
        calibration,
        f"held-out normal {unit}",
        lambda rows: (
            f"fit on about {rows / fraction:,.0f} normal {unit} at calibration."
            f"fraction={fraction:g}, or raise calibration.fraction"
        ),
    )
    if hint:
        click.echo(hint)
    if result.evaluation is not None:
        ev = result.evaluation
        cm = ev["confusion_matrix"]
        click.echo(
            f"Evaluation on {ev['n_normal']:,} normal + {ev['n_anomalous']:,} anomalous "
            f"held-out {unit}: "
            f"{shown_metric(ev, 'auroc')}, {shown_metric(ev, 'aucpr')}, "
            f"F1-optimal threshold {ev['f1_optimal_threshold']:.6g} (F1 {ev['f1_optimal']:.3f})"
        )
        chosen_here = (
            " (chosen on these rows, so optimistic)"
            if ev.get("threshold_chosen_on_these_rows")
            else ""
        )
        click.echo(
            f"  at the threshold{chosen_here}: precision {ev['precision']:.3f}, "
            f"recall {ev['recall']:.3f}, "
            f"false-positive rate {100 * ev['false_positive_rate']:.2f}% "
            f"(TP {cm['tp']}, FP {cm['fp']}, FN {cm['fn']}, TN {cm['tn']})"
        )
        target_recall = config.calibration.target_recall
        if calibration.get("method", "quantile") == "quantile" and ev["recall"] < target_recall:
            # The quantile threshold ignores the labels; a user who reads a low recall here
            # should learn that the labels can choose the threshold instead.
            click.echo(
                f"  the threshold flags fewer than {target_percent(target_recall)} of the "
                "labelled anomalies: to choose it on the labels instead, fit again with "
                "--set calibration.method=f1 (or recall), or run calibrate on labelled "
                f"{unit} (docs/thresholds.md)"
            )
    if result.check is not None:
        _print_check(detector)
    click.echo(f"Model saved to {result.model_dir}")
    if result.run is not None:
        from anomaly_vae.tracking import CHAMPION_ALIAS, tracking_uri

        run = result.run
        click.echo(f"MLflow run {run.run_id} in {tracking_uri()}")
        click.echo(f"Plots and tables: {run.artifact_uri}")
        alias = f" (alias '{CHAMPION_ALIAS}' moved to it)" if run.champion else ""
        click.echo(f"Registered model {run.model_uri}{alias}")
        _print_champion_held(run)


def _print_check(detector: Any) -> None:
    """On stderr, that ``detector``'s threshold, chosen on labelled rows at fit or by
    `calibrate`, asks for a check before use (:func:`~anomaly_vae.fitting.check_reason`)."""
    from anomaly_vae.fitting import ALARMING_FPR_FACTOR

    unit = f"{detector.score_item}s"
    target = detector.effective_config.calibration.target_fpr
    click.echo(
        f"Check before you use it: it flags more than {ALARMING_FPR_FACTOR} times "
        f"the {100 * target:g}% of normal {unit} the model was fit to flag; "
        f"the labelled normal {unit} may be too few or unlike normal operation",
        err=True,
    )


def _print_champion_held(run: Any) -> None:
    """On stderr, when the check kept the champion alias off the version ``run`` (a
    ``tracking.TrackedRun``) registered: where the alias stayed, and the command that
    moves it once the threshold is checked."""
    from anomaly_vae.tracking import CHAMPION_ALIAS

    if run.move_champion is None:
        return
    kept = run.champion_kept_on
    where = "left unset" if kept is None else f"left on version {kept}"
    click.echo(
        f"Alias '{CHAMPION_ALIAS}' {where}, as the threshold asks for a check; to "
        f"move it to version {run.model_version} once checked: {run.move_champion}",
        err=True,
    )


@main.command()
@click.argument("data")
@MODEL_OPTION
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Output file, CSV (or Parquet by suffix); replaced if it exists [default: "
    "<DATA stem>_scores.csv, or NAME_scores.csv for NAME:ROOT, which is never replaced].",
)
@click.option(
    "--maps",
    type=click.Path(file_okay=False, path_type=Path),
    help="Images: also write one anomaly-map PNG per image (|x - x_hat|) into this folder.",
)
@EXPLAIN_OPTION
@THREADS_OPTION
@click.option("--quiet", is_flag=True, help="No progress bar.")
@_user_errors
@_help_names_torchvision_sources
def score(
    data: str,
    model_ref: str | None,
    output: Path | None,
    maps: Path | None,
    explain: int,
    threads: int,
    quiet: bool,
) -> None:
    """Score every row of DATA: id (or row number), reconstruction error, negative
    ELBO, the variant's own scores, the score used (higher = more anomalous) and
    is_anomaly.

    DATA is a CSV or Parquet table, a folder of images (flat, or one subfolder per
    class), or {torchvision} (its test split); images get one row each.
    """
    from anomaly_vae.data.images import is_image_source, torchvision_source

    if output is None:
        # NAME:ROOT is named after the set: ROOT's folder (often data/) says nothing.
        torchvision = torchvision_source(data)
        # The folder's own name for "." or "imgs/" (whose stem is empty or the same).
        stem = torchvision[0] if torchvision else Path(data).resolve().stem
        output = Path(f"{stem}_scores.csv")
        if Path.cwd().resolve().is_relative_to(Path(data).resolve()) and not torchvision:
            # Scored from inside the image folder: the default would be written into it.
            raise click.UsageError(
                f"scoring {data}, the folder you are in: the default output {output} "
                f"would be written into it; give --output outside it ({'..' / output})"
            )
        if output.exists():
            # Inputs can share a stem (new.csv, new.parquet): a default name must not
            # silently replace scores written before, perhaps of another file.
            raise click.UsageError(
                f"{output}, the default output, exists: give --output {output} to replace "
                "it, or another name"
            )
    say_starting(f"Loading {model_named(model_ref)}", quiet)
    from anomaly_vae.outputs import OUTPUT_SUFFIXES
    from anomaly_vae.scoring import (
        check_data_kind,
        load_detector,
        map_scale,
        score_images,
        score_table,
    )

    _set_threads(threads)
    detector = load_detector(model_ref)
    if output.suffix.lower() not in OUTPUT_SUFFIXES:
        raise click.UsageError(
            f"--output {output}: scores are written as .csv, .parquet or .pq files"
        )
    images_given = is_image_source(data)
    check_data_kind(detector, data, images_given)
    if explain:
        _refuse_unexplained(detector)
    if images_given:
        scores = score_images(data, detector, output, maps, progress=not quiet)
        rows, flagged = len(scores), int(scores["is_anomaly"].sum())
    else:
        if maps is not None:
            raise click.UsageError("--maps is for image data")
        rows, flagged = score_table(data, detector, output, progress=not quiet, explain=explain)
    share = 100 * flagged / max(rows, 1)
    unit = "images" if images_given else "rows"
    click.echo(
        f"Scored {counted(rows, unit)}; flagged {flagged:,} ({share:.2f}%) as anomalous "
        f"({detector.calibration_['score']} > {detector.threshold_:.6g})."
    )
    click.echo(f"Scores written to {output}")
    if maps is not None:
        click.echo(
            f"Anomaly maps (|x - x_hat|, brighter = worse; white = an error of "
            f"{map_scale(detector):.3g} or more, the same for every image) written to {maps}/"
        )


@main.command()
@click.argument("source")
@click.option(
    "--output-dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for one output per input (a file's base name; <folder>.csv for a folder "
    "of images), the ledger and the lock.",
)
@click.option(
    "--model",
    "model_ref",
    default="models:/anomaly-vae@champion",
    metavar="REF",
    help="A saved model folder or an MLflow model URI.",
)
@click.option(
    "--chunk-rows",
    type=click.IntRange(min=1),
    default=BatchConfig.chunk_rows,
    help="Rows read and scored at a time (memory bound).",
)
@click.option(
    "--engine",
    type=click.Choice(["local", "spark"]),
    default="local",
    help="local: this process; spark: a Spark UDF of the registered model (needs the "
    "spark extra and Java 17+; local[2] unless run through spark-submit).",
)
@EXPLAIN_OPTION
@click.option(
    "--max-attempts",
    type=click.IntRange(min=0),
    default=BatchConfig.max_attempts,
    metavar="N",
    help="Quarantine an input after N failed attempts at the same bytes with this model: "
    "later runs pass it over, and it no longer fails them (0: never; docs/batch.md).",
)
@click.option(
    "--retry-quarantined",
    is_flag=True,
    help="Try the quarantined inputs once more (each that fails again stays quarantined).",
)
@click.option("--no-tracking", is_flag=True, help="Do not log the batch run to MLflow.")
@THREADS_OPTION
@click.option("--quiet", is_flag=True, help="No progress bars (none are drawn off a terminal).")
@_user_errors
def batch(
    source: str,
    output_dir: Path,
    model_ref: str,
    chunk_rows: int,
    engine: str,
    explain: int,
    max_attempts: int,
    retry_quarantined: bool,
    no_tracking: bool,
    threads: int,
    quiet: bool,
) -> None:
    """Score every CSV/Parquet file in SOURCE (a folder or a glob) that this model version
    has not scored yet, or for an image model every folder of images (SOURCE itself when
    it holds images, else its subfolders, or the folders a glob matches); safe to run on
    a schedule (see docs/batch.md)."""
    say_starting(f"Scoring {source} with the model {model_ref}", quiet)
    from anomaly_vae.batch import (
        DRIFT_P_VALUE,
        DRIFT_WARNING,
        check_source,
        detector_identity,
        drift_statistic,
        ledger_model,
        model_identity,
        model_inputs,
        named_for_good,
        output_lock,
        score_inputs,
    )
    from anomaly_vae.fitting import latest_model_dir
    from anomaly_vae.scoring import load_detector

    _set_threads(threads)  # the local engine's; Spark's executors keep their own

    check_source(source, output_dir)  # before the lock and the model: writes nothing
    is_uri = model_ref.startswith(("models:/", "runs:/")) or "://" in model_ref
    if engine == "spark" and not is_uri:
        raise click.UsageError("the Spark engine needs an MLflow model URI (models:/...)")
    # The lock first: a run that finds another at work exits before loading the model.
    with output_lock(output_dir):
        folder = None if is_uri else Path(model_ref) if model_ref else latest_model_dir()
        model_id = model_identity(model_ref, folder)
        if model_ref.startswith("models:/"):
            # The version an alias names now, for the loader, the ledger and Spark's UDF
            # alike: an alias moved during the run must not mix two models.
            model_ref = f"models:/{model_id}"
        detector = load_detector(model_ref)
        if is_uri and not named_for_good(model_ref):
            # file://, s3://, ...: a model replaced there keeps the URI; its content is
            # what the ledger must tell apart, as for a folder.
            model_id = detector_identity(detector)
        if detector.data_kind_ == "image" and engine == "spark":
            raise click.UsageError("the Spark engine scores tables; use the local engine")
        if explain:
            _refuse_unexplained(detector)
        paths, scorer = model_inputs(source, output_dir, detector, progress=not quiet)
        if engine == "spark":
            from anomaly_vae.spark_engine import SparkScorer

            scorer = SparkScorer(model_ref, detector, progress=not quiet, explain_top=explain)
        report = score_inputs(
            paths,
            output_dir,
            detector,
            model_id,
            chunk_rows,
            scorer,
            not quiet,
            explain,
            max_attempts,
            retry_quarantined,
        )
    scores = np.concatenate(report.scores) if report.scores else np.empty(0)
    drift = drift_statistic(scores, detector.calibration_scores_)
    inputs, unit = ("folders", "images") if detector.data_kind_ == "image" else ("files", "rows")
    # The model as the ledger names it, with --explain's K: a run with another K scores
    # every input again, which the summary should explain.
    click.echo(
        f"Model {ledger_model(model_id, explain)}: scored {counted(len(report.scored), inputs)} "
        f"({counted(report.rows, unit)}, "
        f"{100 * report.anomaly_rate:.2f}% flagged), skipped {len(report.skipped)} "
        f"already scored, {len(report.failed)} failed"
        + (f", {len(report.quarantined)} quarantined." if report.quarantined else ".")
    )
    if report.rows:
        note = ""
        if drift.warns:
            note = " (above the warning level: the scored data may have drifted)"
        elif drift.statistic > DRIFT_WARNING:
            # Said, so that a reader who knows the 0.1 level sees why there is no warning.
            note = (
                f" (above {DRIFT_WARNING}, but p = {drift.p_value:.2g} for {len(scores):,} "
                f"scores against {len(detector.calibration_scores_):,} calibration scores: "
                f"a gap this size is common by chance; it warns below p = {DRIFT_P_VALUE})"
            )
        click.echo(f"Score drift against calibration (KS statistic): {drift.statistic:.3f}{note}")
    for path, reason in report.failed.items():
        note = attempt_note(report.attempts.get(path), max_attempts)
        click.echo(f"failed: {failure_line(path, reason)}{note}", err=True)
    if report.quarantined:
        click.echo(quarantine_line(report.quarantined), err=True)
    # A run that scored nothing and tried nothing (every input skipped or quarantined) is
    # not logged: on a schedule it would add a run an hour that says nothing new.
    if not no_tracking and (report.scored or report.failed):
        import mlflow

        from anomaly_vae.data.images import source_location
        from anomaly_vae.tracking import (
            log_failed_inputs,
            log_quarantined_inputs,
            logging_after,
            quick_requests,
            use_tracking,
        )

        # Quick: the scores are kept either way; a tracking server that is down must not
        # hold a scheduled run (and its Spark session) for minutes of MLflow's retries.
        with logging_after(f"the scores are written to {output_dir}"), quick_requests():
            use_tracking("anomaly-vae-batch")
            with mlflow.start_run(run_name="batch"):
                # K apart from the model (0 for none): runs stay found by their model
                # version, and those that explained by tags.explain.
                mlflow.set_tags(
                    {"model": model_id, "explain": explain, "source": source_location(source)}
                )
                mlflow.log_metrics(
                    {
                        "files_scored": len(report.scored),
                        "files_failed": len(report.failed),
                        "files_skipped": len(report.skipped),
                        "files_quarantined": len(report.quarantined),
                        "rows_scored": report.rows,
                        "anomaly_rate": report.anomaly_rate,
                        **(
                            {"drift_ks": drift.statistic, "drift_p_value": drift.p_value}
                            if report.rows
                            else {}
                        ),
                    }
                )
                # What failed and why, which only the ledger and stderr said.
                log_failed_inputs(report.failed, report.attempts)
                log_quarantined_inputs(report.quarantined)
    # Exit 1 when an input tried in this run failed, whatever its attempt; one passed over
    # in quarantine failed runs before, and fails none after (its line above names it).
    if report.failed:
        raise click.exceptions.Exit(1)


def _refuse_unexplained(detector: Any) -> None:
    """A usage error when ``detector`` cannot explain rows (an image model, a family
    ensemble), before anything is scored."""
    from anomaly_vae.explanation import refuse_unexplained

    try:
        refuse_unexplained(detector)
    except DataError as exc:
        raise click.UsageError(str(exc)) from None


def attempt_note(attempt: int | None, max_attempts: int) -> str:
    """What the failure line of an input adds about its ``attempt`` (its number among the
    failed attempts at these bytes with this model; None for a conflict between inputs,
    which is none) given ``--max-attempts``.

    >>> attempt_note(1, 3), attempt_note(None, 3), attempt_note(2, 0)
    (' (attempt 1 of 3)', '', ' (attempt 2)')
    >>> attempt_note(3, 3)
    ' (attempt 3 of 3: quarantined; fix or replace it, or rerun with --retry-quarantined)'
    >>> attempt_note(4, 3)  # a run with --retry-quarantined tried it again
    ' (attempt 4, retried: still quarantined; fix or replace it)'
    """
    if attempt is None:
        return ""
    if not max_attempts:
        return f" (attempt {attempt})"
    if attempt < max_attempts:
        return f" (attempt {attempt} of {max_attempts})"
    if attempt == max_attempts:
        return (
            f" (attempt {attempt} of {max_attempts}: quarantined; fix or replace it, or "
            "rerun with --retry-quarantined)"
        )
    # Tried beyond the limit only by a run told to retry the quarantined inputs
    return f" (attempt {attempt}, retried: still quarantined; fix or replace it)"


def quarantine_line(quarantined: dict[str, Failures]) -> str:
    """The line naming the inputs a run passed over in quarantine (``BatchReport.
    quarantined``: ``{path: Failures}``), after how many failed attempts, and what to do
    about them (``2 inputs quarantined after 3 failed attempts: a.csv, b.csv; fix or
    replace them, or rerun with --retry-quarantined``)."""
    from anomaly_vae.batch import input_names

    counts = sorted({failures.attempts for failures in quarantined.values()})
    after = str(counts[0]) if len(counts) == 1 else f"{counts[0]} to {counts[-1]}"
    return (
        f"{counted(len(quarantined), 'inputs')} quarantined after {after} failed "
        f"attempt{'' if after == '1' else 's'}: {input_names(list(quarantined))}; fix or "
        f"replace {'it' if len(quarantined) == 1 else 'them'}, or rerun with "
        "--retry-quarantined"
    )


def failure_line(path: str, reason: str) -> str:
    """``PATH: REASON`` of an input batch could not score, or ``REASON`` alone when it
    begins with the input's path already (a file with no data rows, or that cannot be
    read, a bad cell: their errors name the file, as for `score`), so that the path is
    not said twice."""
    if reason.startswith((f"{path}:", f"{path} ")):
        return reason
    return f"{path}: {reason}"


def _view_condition(items: tuple[str, ...], data_kind: str) -> dict[str, Any] | str:
    """``--condition KEY=VALUE`` items: ``{column: value}`` (values read as YAML) for a
    table model; the class (text as given: a name, else an index) for an image model."""
    pairs: dict[str, str] = {}
    for item in items:
        key, equals, value = (part.strip() for part in item.partition("="))
        if not equals or not key:
            example = "class=NAME" if data_kind == "image" else "COLUMN=VALUE"
            raise click.UsageError(f"--condition {item!r}: give {example}")
        if key in pairs:
            raise click.UsageError(f"--condition {key} is given twice")
        pairs[key] = value
    if data_kind == "image":
        if set(pairs) != {"class"}:
            raise click.UsageError(
                "an image model's condition is its class: --condition class=NAME"
            )
        return pairs["class"]
    import yaml

    try:
        return {key: yaml.safe_load(value) for key, value in pairs.items()}
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or "not YAML"
        raise click.UsageError(f"--condition {' '.join(items)}: {problem}") from None


VIEW_KINDS = ("generate", "reconstruct", "latents", "manifold", "traversal", "interpolation", "all")


@main.command()
@click.argument("data")
@MODEL_OPTION
@click.option("--label-col", help="Tables: the column of 0 (normal) and 1 (anomaly) labels.")
@ANOMALY_LABEL_OPTION
@click.option(
    "--normal-class",
    help="Images: the normal class, or several separated by commas; the other classes "
    "are anomalies.",
)
@click.option(
    "--method",
    type=click.Choice((*LABELLED_THRESHOLD_METHODS, QUANTILE_THRESHOLD)),
    default="f1",
    help="f1: the F1-optimal threshold (precision-recall curve); recall: the highest "
    "threshold that flags --target-recall of the labelled anomalies (ROC curve); "
    "quantile: the 1 - --target-fpr quantile of the normal rows of DATA (all of them "
    "without --label-col), as at fit.",
)
@click.option(
    "--target-recall",
    type=click.FloatRange(0, 1, min_open=True),
    help="For --method recall: the share of labelled anomalies to flag [default: the "
    "model's calibration.target_recall].",
)
@click.option(
    "--target-fpr",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    help="For --method quantile: the share of normal rows to flag [default: the model's "
    "calibration.target_fpr].",
)
@click.option(
    "--model-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to save the recalibrated model [default: mlruns/models/<timestamp>/].",
)
@click.option(
    "--register",
    is_flag=True,
    help="Move the MLflow alias 'champion' to the new version, unless its threshold asks "
    "for a check (the summary says so, and how to move the alias once checked).",
)
@click.option(
    "--no-tracking", is_flag=True, help="Do not log to MLflow (the model is still saved)."
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Set the AUROC and AUCPR intervals, e.g. --set evaluation.interval_resamples=0, "
    "the level of the expected false-positive rate's interval, --set "
    "calibration.expected_fpr_level=0.95 [default: the model's], or the logged model's "
    "input example, --set tracking.input_example=synthetic [default: the source fit's] "
    "(repeatable; the model's other settings are its own).",
)
@click.option("--quiet", is_flag=True, help="No progress bar, nor the step lines of a large table.")
@_user_errors
@_help_names_torchvision_sources
def calibrate(
    data: str,
    model_ref: str | None,
    label_col: str | None,
    anomaly_label: str | None,
    normal_class: str | None,
    method: str,
    target_recall: float | None,
    target_fpr: float | None,
    model_dir: Path | None,
    register: bool,
    no_tracking: bool,
    overrides: tuple[str, ...],
    quiet: bool,
) -> None:
    """Choose a fitted model's threshold again on new DATA, without retraining, and save
    the result as a new model (the source model is not changed).

    For when labels arrive after the fit (alarms reviewed in operation, say: --method f1
    or recall), or when the fit's held-out normal rows no longer stand for normal
    operation (--method quantile on recent normal rows the model did not train on).
    DATA is a CSV or Parquet table (labelled with --label-col), or images: a folder with
    one subfolder per class, or {torchvision} (its test split), with
    --normal-class; for --method quantile also a flat folder of normal images. Figures
    on the rows that chose the threshold are optimistic; the false-positive rate on the
    fit's held-out normal rows (f1, recall) is not.
    """
    if target_fpr is not None and method != QUANTILE_THRESHOLD:
        raise click.UsageError("--target-fpr is for --method quantile")
    if target_recall is not None and method != "recall":
        raise click.UsageError("--target-recall is for --method recall")
    if anomaly_label is not None and label_col is None:
        raise click.UsageError("--anomaly-label names a value of the --label-col column")
    if no_tracking and register:
        raise click.UsageError("--register needs tracking: the alias lives in MLflow")
    others = [
        item for item in overrides if item.partition("=")[0].strip() not in CALIBRATE_SETTINGS
    ]
    if others:
        # A ConfigError, as a bad --set key is in fit, config and benchmark: the same exit
        # code (1) for a bad configuration in every command.
        raise ConfigError(
            f"--set {others[0]}: calibrate takes {', '.join(CALIBRATE_SETTINGS[:-1])} and "
            f"{CALIBRATE_SETTINGS[-1]} only; the model's other settings are those it was fit "
            "with"
        )
    settings = load_config(None, overrides)
    # Given, or None: the source fit's (recorded with its MLflow run)
    given = {item.partition("=")[0].strip() for item in overrides}
    input_example = None
    if INPUT_EXAMPLE_SETTING in given:
        input_example = settings.tracking.input_example
    # Given, or None: the model's own (saved with its calibration settings)
    expected_fpr_level = None
    if EXPECTED_FPR_LEVEL_SETTING in given:
        expected_fpr_level = settings.calibration.expected_fpr_level
    say_starting(f"Loading {model_named(model_ref)}", quiet)
    from anomaly_vae.recalibration import calibrate_model

    result = calibrate_model(
        data,
        model_ref,
        method,
        target_recall,
        label_column=label_col,
        anomaly_label=anomaly_label,
        normal_class=normal_class,
        model_dir=model_dir,
        track=not no_tracking,
        register=register,
        target_fpr=target_fpr,
        evaluation_settings=settings.evaluation,
        progress=not quiet,
        input_example=input_example,
        expected_fpr_level=expected_fpr_level,
    )
    detector, calibration = result.detector, result.detector.calibration_
    unit = f"{detector.score_item}s"
    previous = f"was {result.previous_threshold:.6g}"
    threshold = f"Threshold: {calibration['score']} > {detector.threshold_:.6g}"
    if method == QUANTILE_THRESHOLD:
        assert result.above_previous is not None  # calibrate_model sets it for the quantile
        target = 100 * calibration["target_fpr"]
        click.echo(
            f"{threshold} ({previous}; the {100 - target:g}% quantile of "
            f"{calibration['n_calibration']:,} normal {unit})"
        )
        expected = expected_fpr_text(calibration, unit)
        click.echo(
            f"On those {unit}: {100 * calibration['calibration_fpr']:.2f}% above the "
            f"threshold (target {target:g}%; {expected}); {100 * result.above_previous:.2f}% "
            "were above the previous one"
        )
        hint = few_above_hint(
            calibration, f"normal {unit}", lambda rows: f"calibrate on more normal {unit}"
        )
        if hint:
            click.echo(hint)
        if result.above_previous > 2 * calibration["target_fpr"]:
            click.echo(
                f"Check that these {unit} are all normal: an anomaly among them raises the "
                "threshold above others like it"
            )
    else:
        target = ""
        if method == "recall":
            target = f", target recall {target_percent(calibration['target_recall'])}"
        click.echo(
            f"{threshold} ({previous}; {calibration['description']} of "
            f"{calibration['n_labelled']:,} labelled {unit}{target})"
        )
    ev = result.evaluation
    if ev is not None:
        from anomaly_vae.intervals import shown_metric

        cm = ev["confusion_matrix"]
        click.echo(
            f"On the labelled {unit} (optimistic): precision {ev['precision']:.3f}, recall "
            f"{ev['recall']:.3f}, false-positive rate {100 * ev['false_positive_rate']:.2f}% "
            f"(TP {cm['tp']}, FP {cm['fp']}, FN {cm['fn']}, TN {cm['tn']}); "
            f"{shown_metric(ev, 'auroc')}"
        )
    if method != QUANTILE_THRESHOLD:
        from anomaly_vae.calibration import calibration_rows_from

        expected = expected_fpr_text(calibration, unit)
        # The rows the threshold's rate is counted on: an earlier quantile calibration's
        # replaced the fit's
        rows = f"the fit's {calibration['n_calibration']:,} held-out normal {unit}"
        if calibration_rows_from(calibration) is not False:
            rows = (
                f"the {calibration['n_calibration']:,} normal {unit} of the earlier "
                "calibrate --method quantile"
            )
        click.echo(
            f"On {rows}: "
            f"{100 * calibration['calibration_fpr']:.2f}% above the threshold"
            f"{'; ' + expected if expected else ''}"
        )
        if "expected_fpr_withheld" in calibration:
            click.echo(
                "No false-positive rate to expect on new normal "
                f"{unit}: {calibration['expected_fpr_withheld']}."
            )
        if result.check is not None:
            _print_check(detector)
    if result.map_scale_images is not None:
        from anomaly_vae.detector import MAP_SCALE_QUANTILE
        from anomaly_vae.scoring import map_scale

        # Worded as `score --maps` words it (a scale of None: maps unscaled, white = 1)
        previous_scale = result.previous_map_scale
        was = "unscaled" if previous_scale is None else f"{previous_scale:.3g}"
        click.echo(
            f"Anomaly maps: white = an error of {map_scale(detector):.3g} or more (was {was}; "
            f"the {100 * MAP_SCALE_QUANTILE:g}% quantile of the largest pixel error of each of "
            f"the {result.map_scale_images:,} normal {unit})"
        )
    click.echo(f"Model saved to {result.model_dir}")
    if result.run is not None:
        from anomaly_vae.tracking import CHAMPION_ALIAS

        run = result.run
        alias = f" (alias '{CHAMPION_ALIAS}' moved to it)" if run.champion else ""
        click.echo(f"MLflow run {run.run_id}; registered model {run.model_uri}{alias}")
        _print_champion_held(run)


@main.command()
@click.argument("kind", type=click.Choice(VIEW_KINDS))
@click.argument("data", required=False)
@MODEL_OPTION
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("views"),
    help="Folder for the PNG files and CSV files (a table model's rows behind each plot; "
    "an image model's names of the images shown).",
)
@click.option(
    "--label-col",
    help="Tables: colour the latent scatter by this column of 0 (normal) and 1 (anomaly) labels.",
)
@ANOMALY_LABEL_OPTION
@click.option(
    "--normal-class",
    help="Images of several classes (class subfolders, or a torchvision test split): colour "
    "the latent scatter by label; this class is normal (several: a,b), the others anomalous.",
)
@click.option(
    "--count",
    default=ViewConfig.count,
    type=click.IntRange(min=1),
    help="generate (and all): how many samples.",
)
@click.option(
    "--condition",
    "conditions",
    multiple=True,
    metavar="COLUMN=VALUE",
    help="generate (and manifold) with a conditional model: the condition, e.g. "
    "--condition machine=press "
    "(tables, repeat per condition column) or --condition class=NAME (images: a trained "
    "normal class, by name or index).",
)
@click.option(
    "--log", "log_to_run", is_flag=True, help="Also log the views to the model's MLflow run."
)
@click.option("--quiet", is_flag=True, help="No progress bars, nor the step line of a large table.")
@_user_errors
def view(
    kind: str,
    data: str | None,
    model_ref: str | None,
    out_dir: Path,
    label_col: str | None,
    anomaly_label: str | None,
    normal_class: str | None,
    count: int,
    conditions: tuple[str, ...],
    log_to_run: bool,
    quiet: bool,
) -> None:
    """Draw a classic VAE view of a model: samples from the prior (generate), the most
    anomalous inputs of DATA beside their reconstructions (reconstruct), latent means
    (latents), the decoded latent grid (manifold), single-dimension traversals and an
    interpolation between the first two rows of DATA. DATA: as for `score`."""
    if anomaly_label is not None and label_col is None:
        raise click.UsageError("--anomaly-label names a value of the --label-col column")
    if data is None and (label_col is not None or normal_class is not None):
        raise click.UsageError("--label-col and --normal-class label the rows of DATA: give DATA")
    say_starting(f"Loading {model_named(model_ref)}", quiet)
    from dataclasses import replace

    from anomaly_vae import views
    from anomaly_vae.data import label_vector, read_table
    from anomaly_vae.data.images import is_image_source, source_name
    from anomaly_vae.data.tables import ANOMALY_LABEL_VIA_OPTION
    from anomaly_vae.detector import VAEDetector
    from anomaly_vae.fitting import check_label_options, read_images_with_progress, say_reading
    from anomaly_vae.scoring import (
        check_data_kind,
        image_channels,
        image_size,
        load_detector,
        scores_in_parts,
    )

    detector = load_detector(model_ref)
    if not hasattr(detector, "model_"):
        raise click.UsageError("views need a single model, not a family ensemble")
    detector = cast(VAEDetector, detector)  # of the two kinds, only an ensemble lacks model_
    if log_to_run:
        # Before drawing, so a run that cannot be found costs no files; and with no
        # embedded store here, say so rather than create an empty one.
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        from anomaly_vae.errors import ModelNotFoundError
        from anomaly_vae.tracking import embedded_store, run_of_model

        advice = (
            "run the command in the project folder where the model was fit (with tracking), "
            "or set MLFLOW_TRACKING_URI to its tracking store"
        )
        store = embedded_store()
        if store is not None and not store.is_file():
            raise ModelNotFoundError(f"--log: no MLflow tracking store at {store}: {advice}")
        run_id = run_of_model(model_ref)
        try:
            MlflowClient().get_run(run_id)
        except MlflowException as exc:
            raise ModelNotFoundError(
                f"--log: the model's MLflow run {run_id} is not in this tracking store: {advice}"
            ) from exc
    frame, labels = None, None
    names: list[str] | None = None  # images: their names, as `score` writes them
    classes: list[str] | None = None  # and their classes, for a source of several
    if data is not None:
        images_given = is_image_source(data)
        check_data_kind(detector, data, images_given)
        check_label_options(images_given, label_col, normal_class)
        if images_given:
            # Counted as fit counts the images it reads (6,300 took 3 s in silence), and
            # checked against the model's size: the folder's first image may be the odd one.
            images = read_images_with_progress(
                data,
                train=False,
                size=detector.effective_config.data.image_size,
                grey_model=image_channels(detector) == 1,
                progress=not quiet,
                model_size=image_size(detector),
            )
            frame, names = images.images, images.names
            class_names = images.class_column()  # as `score` writes a `class` column
            classes = None if class_names is None else class_names.tolist()
            if normal_class is not None:
                # As fit and calibrate label a folder's classes: the others are anomalies.
                labels = ~np.isin(images.labels, images.class_indices(normal_class))
        else:
            # A large file is named as it starts to be read, as fit and calibrate name it.
            say_reading(data, replace(detector.effective_config.training, progress=not quiet))
            frame = read_table(
                data, categorical_columns=detector.effective_config.data.categorical_columns
            )
            if label_col is not None:
                anomaly_label = anomaly_label or detector.effective_config.data.anomaly_label
                labels = label_vector(frame, label_col, anomaly_label, ANOMALY_LABEL_VIA_OPTION)
    if kind in {"manifold", "traversal", "interpolation"}:
        views.require_continuous(detector, kind)  # before asking for DATA it could not use
    needs_data = {"reconstruct", "latents", "traversal", "interpolation", "all"}
    if frame is None and kind in needs_data:
        raise click.UsageError(f"the {kind} view needs DATA")
    condition = None
    if conditions:
        condition = detector.condition_vector(_view_condition(conditions, detector.data_kind_))
    scores = None
    shows_scores = kind in {"reconstruct", "all"} or (kind == "latents" and labels is None)
    if frame is not None and shows_scores:
        # Scored once for the views that show scores, a part at a time with a bar (off a
        # terminal, a line a minute) as `score` does: 6,300 images took 4 s in silence.
        # A table's warnings are given once by the views (data_warned_once), not here too.
        scores = scores_in_parts(
            detector, frame, None, source_name(str(data)), not quiet, log_warnings=False
        )
    makers = {
        "generate": lambda: [views.generation(detector, count, condition)],
        "reconstruct": lambda: [
            views.reconstructions(detector, frame, names=names, classes=classes, scores=scores)
        ],
        "latents": lambda: [views.latent_scatter(detector, frame, labels, scores)],
        "manifold": lambda: [views.manifold(detector, frame, condition=condition, labels=labels)],
        "traversal": lambda: [
            views.traversal(detector, frame, names=names, classes=classes, labels=labels)
        ],
        "interpolation": lambda: [
            views.interpolation(detector, frame, names=names, classes=classes, labels=labels)
        ],
    }
    if kind == "all":
        made, skipped = views.views_and_skips(
            detector,
            frame,
            labels,
            condition,
            names=names,
            classes=classes,
            scores=scores,
            count=count,
        )
        for reason in skipped:
            click.echo(f"skipped {reason}")
    else:
        # A single view can read DATA more than once (latents: for the latents and the
        # scores); the generated rows read none.
        with views.data_warned_once(detector, None if kind == "generate" else frame):
            made = makers[kind]()
    written = [path for item in made for path in views.save_view(item, out_dir)]
    for path in written:
        click.echo(f"wrote {path}")
    if log_to_run:
        from anomaly_vae.tracking import log_views_to_run

        run_id, artifact_path = log_views_to_run(model_ref, written)
        click.echo(f"logged to MLflow run {run_id}, artifacts {artifact_path}/")


def _comma_names(ctx: click.Context, param: click.Parameter, value: str | None) -> list[str] | None:
    """``a,b,c`` -> ``["a", "b", "c"]``; None when the option is not given."""
    if value is None:
        return None
    names = [part.strip() for part in value.split(",") if part.strip()]
    if not names:
        raise click.BadParameter("give at least one name")
    return names


def _comma_ints(ctx: click.Context, param: click.Parameter, value: str | None) -> list[int] | None:
    names = _comma_names(ctx, param, value)
    if names is None:
        return None
    try:
        numbers = [int(name) for name in names]
    except ValueError:
        raise click.BadParameter(f"expected whole numbers like 0,1,2, got {value!r}") from None
    if any(number < 0 for number in numbers):
        raise click.BadParameter("numbers must be >= 0")
    return numbers


def _method_names(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> list[str] | None:
    from anomaly_vae.benchmark.methods import check_method_names

    names = _comma_names(ctx, param, value)
    if names is not None:
        try:
            check_method_names(names)
        except AnomalyVAEError as exc:
            raise click.BadParameter(str(exc)) from exc
    return names


@main.command()
@click.option(
    "--protocol",
    required=True,
    # benchmark.tasks.PROTOCOLS, written out: importing it here would load torch for --help
    type=click.Choice(["t-clean", "t-contaminated", "i-oneclass"]),
    help="The evaluation protocol of shared/PROTOCOL.md: t-clean (tables, trained on half "
    "the normal rows), t-contaminated (tables, ADBench's unsupervised 70/30 split with "
    "anomalies in training) or i-oneclass (images, one class is normal).",
)
@click.option(
    "--data-dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Tables: a folder of ADBench-format .npz files (arrays X and y). i-oneclass: a "
    "torchvision root holding data sets in the MNIST layout, e.g. FashionMNIST/ or MNIST/ "
    "(NAME/raw/ with the idx files; any NAME; never downloaded).",
)
@click.option(
    "--datasets",
    callback=_comma_names,
    metavar="NAME,...",
    help="Data sets to run: .npz file stems (e.g. 4_breastw) or FashionMNIST / MNIST "
    "[default: every one in --data-dir].",
)
@click.option(
    "--classes",
    callback=_comma_ints,
    metavar="C,...",
    help="i-oneclass: the normal classes, one run each [default: 0,1,...,9].",
)
@click.option(
    "--seeds",
    callback=_comma_ints,
    metavar="S,...",
    help="Seeds of the splits (tables) and of every method [default: 0,1,2 for tables, "
    "0 for i-oneclass].",
)
@click.option(
    "--methods",
    callback=_method_names,
    metavar="NAME,...",
    help="Methods to compare: anomaly-vae (our default detector), a variant by registry "
    "name (see `anomaly-vae models`), ensemble (rank average of the variants), iforest, "
    "knn, pca, pyod-vae, pyod-ae [default: every one that suits the data].",
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for results.csv, unrounded.csv, summary.md, failures.csv, failures.log, "
    "warnings.csv and run.json. Rows already in its results.csv are not run again "
    "(resume); a resume with another protocol, config, data folder or data file is "
    "refused (use a new --out).",
)
@CONFIG_OPTION
@SET_OPTION
@click.option(
    "--threads",
    type=click.IntRange(min=0),
    default=0,
    metavar="N",
    help="Cap torch and BLAS threads at N, per job with --jobs (0: the libraries' default, "
    "one per core; with --jobs > 1, the cores shared out among the jobs).",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=1,
    metavar="N",
    help="Run the (data set, class, seed) units in N worker processes side by side, all "
    "methods of a unit in one worker (one progress bar over units). Only this process "
    "writes the files, each unit's rows as soon as it is done.",
)
@click.option("--quiet", is_flag=True, help="No progress bars.")
@_user_errors
def benchmark(
    protocol: str,
    data_dir: Path,
    datasets: list[str] | None,
    classes: list[int] | None,
    seeds: list[int] | None,
    methods: list[str] | None,
    out_dir: Path,
    config_file: Path | None,
    overrides: tuple[str, ...],
    threads: int,
    jobs: int,
    quiet: bool,
) -> None:
    """Compare our detector, its family and baselines on a published protocol.

    Every method runs on the same splits; results.csv gets one row per data set (and
    class), seed and method as soon as it is done (AUROC and AUCPR in percent), and
    summary.md the means per data set and method, best per row in bold. A failure (a
    data file that is not valid, labels other than 0/1, a metric that is not a finite
    number) is recorded in failures.csv and the run goes on; the exit code is then 1.
    """
    from anomaly_vae.benchmark import run_benchmark

    outcome = run_benchmark(
        protocol,
        data_dir,
        out_dir,
        datasets=datasets,
        classes=classes,
        seeds=seeds,
        methods=methods,
        config_path=config_file,
        overrides=overrides,
        threads=threads,
        jobs=jobs,
        progress=not quiet,
    )
    assert outcome.summary is not None  # run_benchmark writes it before it returns
    click.echo(outcome.summary.read_text())
    click.echo(
        f"{outcome.rows_new} new rows, {outcome.rows_done_before} already done, "
        f"{len(outcome.failures)} failed; results in {out_dir / 'results.csv'}"
    )
    if outcome.failures:
        raise click.exceptions.Exit(1)


@main.command("config")
@CONFIG_OPTION
@SET_OPTION
@_user_errors
def show_config(config_file: Path | None, overrides: tuple[str, ...]) -> None:
    """Print every setting with its value and what it does, as YAML.

    The values are the defaults, then --config, then --set, exactly as fit would use
    them; the output loads back with --config, so `anomaly-vae config > my.yaml` starts
    a config file. An unknown key or a bad value is reported without training anything.
    """
    from anomaly_vae.config_listing import config_yaml
    from anomaly_vae.models import check_model_name

    config = load_config(config_file, overrides)
    for name in [config.model.name, *config.family.variants]:
        check_model_name(name)  # a ConfigError listing the registry; no torch imported
    click.echo(config_yaml(config), nl=False)


@main.command()
def models() -> None:
    """List the VAE variants with the data kinds each accepts."""
    from anomaly_vae.models import available_models, get_model

    for name in available_models():
        cls = get_model(name)
        click.echo(f"{name:12s} {cls.description}  [data: {', '.join(cls.data_kinds)}]")


# Environment of `anomaly-vae ui`'s MLflow server (a variable already set is kept).
UI_ENVIRONMENT = {
    # MLflow's job runner (a huey consumer pool) runs GenAI scorers and trace jobs, which
    # this project has none of; it adds processes that compete with start-up.
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    # MLflow's own import of a deprecated Starlette module warns once per worker.
    "PYTHONWARNINGS": "ignore:starlette.middleware.wsgi is deprecated",
}


@main.command()
@click.option("--port", default=5000, help="Port on 127.0.0.1.")
def ui(port: int) -> None:
    """Start the MLflow UI on this project's tracking store, bound to localhost."""
    from anomaly_vae.store import embedded_store, tracking_uri

    remote = os.environ.get("MLFLOW_TRACKING_URI", "")
    if remote.startswith(("http://", "https://", "databricks")):
        raise click.UsageError(
            f"MLFLOW_TRACKING_URI names a tracking server ({remote}): open the UI it serves"
        )
    store = embedded_store()
    if store is not None and not store.is_file():
        raise click.UsageError(
            f"no MLflow store in this folder ({store}): run `anomaly-vae ui` in the project "
            "folder where you ran `anomaly-vae fit`"
        )
    uri = tracking_uri()
    click.echo(
        f"MLflow UI for {uri} on http://127.0.0.1:{port} (ready in some seconds; Ctrl-C stops it)"
    )
    # One reviewer needs one worker, not MLflow's 4: each one imports MLflow and its web
    # stack before the page answers, and four at once on a small machine keep it waiting.
    for name, value in UI_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    # This interpreter's mlflow, so that the UI starts without the environment on PATH.
    args = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--workers", "1"]
    os.execv(sys.executable, [*args, "--host", "127.0.0.1", "--port", str(port)])
