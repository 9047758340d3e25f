"""The family pipeline: train every suitable VAE variant on the same normal data with
the same splits, compare them, offer their ensemble, and keep the best.

The label-free criterion is the mean negative ELBO of the shared validation rows,
in nats per row: every variant's ``negative_elbo`` bounds -log p(x) of the same
features (for VQ-VAE the KL to its uniform code prior is the constant log K per
code), so the numbers are on one footing. Variants that model p(x | c) rather than
p(x) (conditional ones) and the ensemble have no such number; they can be chosen
only by AUROC on labelled evaluation data.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from anomaly_vae.config import Config
from anomaly_vae.data import take_rows
from anomaly_vae.detector import VAEDetector, available_scores
from anomaly_vae.ensemble import SCORE_NAME, EnsembleDetector, member_score_column
from anomaly_vae.errors import ConfigError
from anomaly_vae.fitting import (
    FitResult,
    TrainingData,
    calibrate_and_evaluate,
    check_reason,
    check_threshold_labels,
    fit_rows,
    load_training_data,
    mark_training_file,
    record_run,
    save_model,
)
from anomaly_vae.models import available_models, get_model
from anomaly_vae.outputs import refuse_id_named_like_outputs
from anomaly_vae.training import phase_line, shows_phases, warm_up_optimizer

logger = logging.getLogger(__name__)

ENSEMBLE = "ensemble"


@dataclass
class Candidate:
    name: str
    detector: Any
    config: Config
    evaluation: dict[str, Any] | None
    seconds: float
    criterion: float = math.nan  # mean validation -ELBO, nats per row (nan: not comparable)
    scores: np.ndarray | None = None  # (m,) its scores of the evaluation rows, if any


CRITERION_METRIC = "validation_neg_elbo_nats"  # comparison column and child-run metric


@dataclass
class FamilyResult(FitResult):
    chosen: str = ""
    comparison: pd.DataFrame = field(default_factory=pd.DataFrame)
    select_by: str = ""
    seconds: float = 0.0


def suitable_variants(config: Config, data_kind: str, image_classes: int = 0) -> list[str]:
    """Registry names that suit the data: the right data kind, and for conditional
    variants a condition: ``data.condition_columns`` for tables, two or more normal
    classes (``image_classes``) for images."""
    if data_kind == "table":
        has_condition = bool(config.data.condition_columns)
    else:
        has_condition = image_classes >= 2
    names = config.family.variants or available_models()
    unknown = [n for n in names if n not in available_models()]
    if unknown:
        get_model(unknown[0])  # raises with the list of valid names
    return [
        name
        for name in names
        if data_kind in get_model(name).data_kinds
        and (has_condition or not get_model(name).uses_condition)
    ]


def _unsuitable_reason(name: str, data_kind: str) -> str:
    """Why the variant ``name``, left out by :func:`suitable_variants`, does not suit
    ``data_kind`` data, e.g. "conv-vae (image data only)"."""
    kinds = get_model(name).data_kinds
    if data_kind not in kinds:
        return f"{name} ({' and '.join(kinds)} data only)"
    needs = "data.condition_columns" if data_kind == "table" else "two or more normal classes"
    return f"{name} (a conditional model: it needs {needs})"


def fit_family(
    source: str | Path,
    config: Config,
    eval_source: str | Path | None = None,
    normal_class: str | None = None,
    project_dir: Path | None = None,
    model_dir: Path | None = None,
    register: bool | None = None,
    progress: Any = None,
) -> FamilyResult:
    """Train the family on ``source`` and keep the best candidate (see module docstring).

    ``progress(name)`` is called before each variant is trained.
    """
    start = time.perf_counter()
    project_dir = project_dir or Path.cwd()
    data = load_training_data(source, config, eval_source, normal_class)
    check_threshold_labels(config, data)
    kind = "image" if isinstance(data.train, np.ndarray) and data.train.ndim >= 3 else "table"
    classes = 0 if data.train_condition is None else len(set(data.train_condition))
    names = suitable_variants(config, kind, classes)
    reasons = [
        _unsuitable_reason(name, kind) for name in config.family.variants if name not in names
    ]
    if not names:
        raise ConfigError(f"no variant in family.variants suits {kind} data: {'; '.join(reasons)}")
    if reasons:
        logger.warning("family.variants: left out %s", "; ".join(reasons))
    if config.family.ensemble and len(names) > 1 and kind == "table":  # before any training
        ensemble_columns = [member_score_column(name) for name in names] + [SCORE_NAME]
        refuse_id_named_like_outputs(config.data.id_column, ensemble_columns)
    select_by = config.family.select_by
    if select_by == "auto":
        select_by = "auroc" if data.has_evaluation() else "criterion"
    if select_by == "auroc" and not data.has_evaluation():  # before any training
        raise ConfigError("family.select_by=auroc needs labelled evaluation data (--label-col)")
    if config.tracking.enabled:
        from anomaly_vae import tracking  # MLflow import is slow; only when tracking

        tracking.check_store(
            config.tracking.experiment, project_dir, announce=config.training.progress
        )
    with _each_message_once():  # every variant meets the same data, and the same warnings
        candidates = [_fit_variant(name, config, data, progress) for name in names]
        if config.family.ensemble and len(candidates) > 1:
            if shows_phases(config.training, len(data.train)):
                # Its members score the validation and calibration rows (and it, the
                # evaluation rows): its lines would read as the last variant's.
                phase_line(f"building the ensemble of {len(candidates)} variants")
            candidates.append(_ensemble(candidates, data))
    chosen = _choose(candidates, select_by)
    comparison = _comparison_table(candidates, chosen.name)
    mark_training_file(chosen.detector, source, data)
    saved = save_model(chosen.detector, project_dir, model_dir)
    result = FamilyResult(
        detector=chosen.detector,
        model_dir=saved,
        rows=fit_rows(chosen.detector, data),
        evaluation=chosen.evaluation,
        data=data,
        evaluation_scores=chosen.scores,
        chosen=chosen.name,
        comparison=comparison,
        select_by=select_by,
        seconds=time.perf_counter() - start,
        # The chosen candidate's threshold is the one registered
        check=check_reason(chosen.detector, config.calibration.method),
    )
    if config.tracking.enabled:
        if shows_phases(config.training, len(data.train)):  # as a single fit says it
            phase_line(f"logging the family to MLflow ({len(candidates) + 1} runs)")
        with tracking.logging_after(f"the model is saved in {saved}"):
            result.run = _track(result, candidates, config, register, project_dir)
        record_run(result.model_dir, result.run.run_id)
    return result


class _FirstOccurrence(logging.Filter):
    """Passes each distinct message once."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message in self.seen:
            return False
        self.seen.add(message)
        return True


@contextlib.contextmanager
def _each_message_once() -> Iterator[None]:
    """Log each distinct message of the package's loggers once for the duration."""
    once = _FirstOccurrence()
    loggers = [
        logging.getLogger(name)
        for name in list(logging.Logger.manager.loggerDict)
        if name.startswith("anomaly_vae.")
    ]
    for logger_ in loggers:
        logger_.addFilter(once)
    try:
        yield
    finally:
        for logger_ in loggers:
            logger_.removeFilter(once)


def variant_config(config: Config, name: str) -> Config:
    """``config`` with ``model.name = name``; a score the variant lacks falls back to
    ``negative_elbo``, which every variant computes."""
    variant = copy.deepcopy(config)
    variant.model.name = name
    if variant.scoring.score not in (None, *available_scores(name)):
        variant.scoring.score = "negative_elbo"
    return variant


def _fit_variant(name: str, config: Config, data: TrainingData, progress: Any) -> Candidate:
    if progress is not None:
        progress(name)
    config = variant_config(config, name)
    warm_up_optimizer()  # the first variant's time would include a one-off import
    start = time.perf_counter()
    detector = VAEDetector(config.detector_config()).fit(data.train, condition=data.train_condition)
    seconds = time.perf_counter() - start
    criterion = math.nan
    if not get_model(name).uses_condition:
        validation = take_rows(data.train, detector.split_rows_["validation"])
        criterion = float(np.mean(detector.all_scores(validation)["negative_elbo"]))
    evaluation, scores = calibrate_and_evaluate(detector, data, config.evaluation)
    logger.info("%s: %.1f s, validation -ELBO %.4g", name, seconds, criterion)
    return Candidate(name, detector, config, evaluation, seconds, criterion, scores)


def _ensemble(candidates: list[Candidate], data: TrainingData) -> Candidate:
    start = time.perf_counter()
    members = {c.name: c.detector for c in candidates}
    ensemble = EnsembleDetector.from_members(members, data.train, data.train_condition)
    seconds = time.perf_counter() - start + sum(c.seconds for c in candidates)
    config = copy.deepcopy(candidates[0].config)
    config.model.name = ENSEMBLE
    evaluation, scores = calibrate_and_evaluate(ensemble, data, config.evaluation)
    return Candidate(ENSEMBLE, ensemble, config, evaluation, seconds, scores=scores)


def _choose(candidates: list[Candidate], select_by: str) -> Candidate:
    if select_by == "auroc":  # ties go to the better (lower) label-free criterion
        return max(
            candidates,
            key=lambda c: (
                (c.evaluation or {}).get("auroc", -1.0),
                -c.criterion if math.isfinite(c.criterion) else -math.inf,
            ),
        )
    comparable = [c for c in candidates if math.isfinite(c.criterion)]
    if not comparable:  # no variant has a validation -ELBO (e.g. cvae alone)
        if len(candidates) > 1:
            logger.warning(
                "no variant has a comparable validation -ELBO; keeping %s, the first",
                candidates[0].name,
            )
        return candidates[0]
    return min(comparable, key=lambda c: c.criterion)


def _comparison_table(candidates: list[Candidate], chosen: str) -> pd.DataFrame:
    rows = []
    for c in candidates:
        evaluation = c.evaluation or {}
        history = getattr(c.detector, "history_", None)
        rows.append(
            {
                "variant": c.name,
                CRITERION_METRIC: c.criterion,
                "auroc": 100 * evaluation["auroc"] if evaluation else math.nan,
                "aucpr": 100 * evaluation["aucpr"] if evaluation else math.nan,
                "threshold": c.detector.threshold_,
                "fit_seconds": c.seconds,
                "epochs": len(history.epochs) if history is not None else None,
                "chosen": c.name == chosen,
            }
        )
    return pd.DataFrame(rows).astype({"epochs": "Int64"})


def _track(
    result: FamilyResult,
    candidates: list[Candidate],
    config: Config,
    register: bool | None,
    project_dir: Path,
) -> Any:
    """One parent run (comparison table, chosen model) with a child run per candidate;
    ``register`` moves the champion alias to the chosen model's version, unless its
    threshold asks for a check (``result.check``, see :func:`~anomaly_vae.tracking.log_model`)."""
    import tempfile

    import mlflow

    from anomaly_vae import tracking

    assert result.data is not None  # fit_family's result carries the data it read
    tracking.use_tracking(config.tracking.experiment, project_dir)
    asked = tracking.champion_asked(config, register)
    moves = tracking.moves_champion(asked, result.check)  # as the run's parameters say
    config = tracking.with_register(config, moves)
    # The chosen candidate's config: the family settings, with the model it kept.
    chosen_config = next(c.config for c in candidates if c.name == result.chosen)
    chosen_config = tracking.with_register(chosen_config, moves)
    with mlflow.start_run(run_name="family") as parent:
        for candidate in candidates:
            with mlflow.start_run(run_name=candidate.name, nested=True):
                tracking.log_detector(
                    candidate.detector,
                    candidate.config,
                    result.data,
                    candidate.evaluation,
                    candidate.scores,
                )
                mlflow.log_metric("fit_seconds", candidate.seconds)
                if math.isfinite(candidate.criterion):  # the label-free selection criterion
                    mlflow.log_metric(CRITERION_METRIC, candidate.criterion)
        mlflow.set_tags(
            {
                "kind": "fit",  # as every fit run is tagged (calibrate runs: "calibrate")
                "chosen_variant": result.chosen,
                "selected_by": result.select_by,
                "model": result.chosen,  # as a fit run tags its model, for the runs table
                "score": result.detector.calibration_["score"],
            }
        )
        # The model settings that any candidate reads (the family config's model.name is
        # none of them in particular).
        variants = [name for c in candidates for name in tracking.variants_of(c.detector)]
        params = tracking.run_params(config, variants)
        mlflow.log_params({k: v for k, v in params.items() if k != "model.name"})
        mlflow.log_metric("family_seconds", result.seconds)
        # What every fit run records of its data (tags data, eval_data; the dataset input),
        # so that the registered model's run says what it was trained on.
        tracking.log_sources(result.data)
        with tempfile.TemporaryDirectory() as scratch:
            out = Path(scratch)
            tracking.write_config(chosen_config, out)
            result.comparison.to_csv(out / "comparison.csv", index=False)
            (out / "comparison.md").write_text(format_comparison(result) + "\n")
            tracking.log_calibration(
                result.detector, result.data, result.evaluation, out, result.evaluation_scores
            )
            mlflow.log_artifacts(str(out))
        return tracking.log_model(
            result.detector,
            chosen_config,
            result.model_dir,
            result.data,
            parent,
            asked,
            result.check,
        )


def format_comparison(result: FamilyResult) -> str:
    """The comparison table as aligned text, the chosen row marked."""
    table = result.comparison.copy()
    table["chosen"] = np.where(table["chosen"], "<-", "")
    text = table.to_string(index=False, float_format=lambda v: f"{v:.2f}", na_rep="-")
    caveat = (
        "; chosen on the same evaluation rows, so its AUROC is optimistic"
        if result.select_by == "auroc"
        else ""
    )
    item = result.detector.score_item
    return (
        f"{text}\n\nchosen: {result.chosen} (by {result.select_by}{caveat}). "
        f"validation -ELBO in nats per {item}, lower is better; AUROC/AUCPR in % on the "
        f"labelled evaluation {item}s"
    )
