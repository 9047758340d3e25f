"""Typed configuration: dataclass defaults < YAML file < ``--set key=value`` overrides.

Every default is written once, here, with its reason. ``configs/*.yaml`` hold
overrides only. Unknown keys are an error that names the valid ones.

>>> cfg = load_config(overrides=["model.latent_dim=4", "training.epochs=5"])
>>> cfg.model.latent_dim, cfg.training.epochs
(4, 5)
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from anomaly_vae.errors import ConfigError

SCORE_NAMES = (
    "negative_elbo",
    "negative_iwae_bound",
    "reconstruction_error",
    "code_distance",
    "latent_knn_distance",
    "elbo_latent_knn",
)


# Field metadata of the settings whose None means "chosen at fit from the data": such a
# setting is written `auto` in YAML and the listing (null is read the same way).
AUTO = {"auto": True}
TABLE_TRIM_FRACTION = 0.05  # what model.trim_fraction=None (auto) means for tables
TABLE_MIN_LOG_VARIANCE = -6.0  # what model.min_log_variance=None (auto) means for tables
IMAGE_MIN_LOG_VARIANCE = -4.0  # and for images
MAX_MIN_LOG_VARIANCE = 0.0  # highest model.min_log_variance: features are scaled to
# variance 1 or less (standard scaling; minmax and pixels in [0, 1]), so a floor above
# log 1 only drowns the reconstruction error in the variance (at 50 every row's
# negative ELBO was the same within 0.2 nats); 0 is the fixed unit-variance decoder
IMAGE_POOL = 2  # what data.image_pool=None (auto) means where the pooled images fit the model
MIN_IMAGE_SIDE = 4  # smallest data.image_size: below it no shape is left to model
MIN_POOLED_SIDE = 7  # auto pooling never makes an image side shorter than this
TABLE_SCORE = "negative_elbo"  # what scoring.score=None (auto) means for tables
IMAGE_SCORE = "elbo_latent_knn"  # and for images with at least IMAGE_SCORE_MIN_ROWS rows
TABLE_PATIENCE = 10  # what training.patience=None (auto) means for tables
IMAGE_PATIENCE = 30  # and for images
MIN_INTERVAL_RESAMPLES = 100  # fewer bootstrap resamples give intervals that may miss the
# estimate
IMAGE_SCORE_MIN_ROWS = 500  # below this the k-NN distance among few latent means is noise
# (I-oneclass Fashion-MNIST, 7x7: against the ELBO alone, -0.4 AUROC when trained on 150
# images per class, +0.5 on 500, +1.3 on all 6,000; docs/tuning.md)


def resolve_score(score: str | None, data_kind: str, rows: int) -> str:
    """``scoring.score`` with None (auto) resolved for ``data_kind`` ("table" or "image")
    and the number of training rows.

    >>> resolve_score(None, "table", 6000), resolve_score(None, "image", 6000)
    ('negative_elbo', 'elbo_latent_knn')
    >>> resolve_score(None, "image", 150), resolve_score("reconstruction_error", "image", 6000)
    ('negative_elbo', 'reconstruction_error')
    """
    if score is not None:
        return score
    if data_kind == "image" and rows >= IMAGE_SCORE_MIN_ROWS:
        return IMAGE_SCORE
    return TABLE_SCORE


def resolve_patience(patience: int | None, data_kind: str) -> int:
    """``training.patience`` with None (auto) resolved for ``data_kind``.

    >>> resolve_patience(None, "table"), resolve_patience(None, "image")
    (10, 30)
    >>> resolve_patience(5, "image")
    5
    """
    if patience is not None:
        return patience
    return IMAGE_PATIENCE if data_kind == "image" else TABLE_PATIENCE


class ChangedSettingsRepr:
    """``repr`` naming only the settings that differ from their defaults, as
    scikit-learn prints an estimator's changed parameters only: in full, every setting
    of a detector filled a notebook cell. The result is Python that rebuilds the config:
    ``DetectorConfig(model=ModelConfig(latent_dim=4))``."""

    def __repr__(self) -> str:
        defaults = type(self)()
        changed = [
            f"{item.name}={getattr(self, item.name)!r}"
            for item in dataclasses.fields(self)  # type: ignore[arg-type]
            if getattr(self, item.name) != getattr(defaults, item.name)
        ]
        return f"{type(self).__name__}({', '.join(changed)})"


@dataclass(repr=False)
class ModelConfig(ChangedSettingsRepr):
    """The VAE architecture and objective."""

    name: str = "vae"  # registry name, see `anomaly-vae models`
    latent_dim: int = 8  # small tables rarely need more; larger latents weaken the KL bottleneck
    hidden_dims: list[int] = field(default_factory=lambda: [128, 64])  # encoder; decoder mirrors it
    beta: float = 1.0  # weight of the KL term (1 = the true ELBO)
    likelihood: str = "auto"  # auto: Gaussian for real features, Bernoulli for binary ones; or
    # "gaussian" / "bernoulli" for every feature (bernoulli needs data in [0, 1])
    decoder_variance: str = "calibrated"  # Gaussian variance per feature: "calibrated" sets
    # it to the reconstruction MSE (its maximum-likelihood value; fast, stable); "learned"
    # trains it by gradient descent like the other weights
    min_log_variance: float | None = field(
        default=None, metadata=AUTO
    )  # floor of the decoder log-variance: stops
    # variance collapse on near-constant features from dominating the likelihood. None =
    # auto: -6 for tables, -4 for images, where pixels that are dark in almost every
    # training image would otherwise get so small a variance that a faint stroke there
    # outweighs the shape (I-oneclass, MLP VAE at 14x14 against -6: MNIST 94.86 -> 97.23
    # AUROC, Fashion-MNIST 93.55 -> 93.88; docs/tuning.md). At most 0, the log of the
    # scaled features' largest variance (MAX_MIN_LOG_VARIANCE): a higher floor drowns
    # their reconstruction error
    quantisation_floor: bool = True  # tables: no feature's decoder variance below
    # step^2 / 12, the variance of a uniform spread over one quantisation step of the
    # feature (data.ColumnSchema.step). A Gaussian on integer-coded or rarely non-zero
    # features otherwise shrinks its variance to the floor above and lets one such feature
    # outweigh all others (held-out scikit-learn tables, pipelines/sklearn_tables.py:
    # T-clean AUROC 76.1 without, 91.8 with; development files 93.20 -> 93.33)
    dropout: float = 0.0  # dropout in the hidden layers (regularises tiny data sets)
    trim_fraction: float | None = field(
        default=None, metadata=AUTO
    )  # share of each batch's rows with the largest loss
    # left out of the training (and validation) loss, and of each feature's largest squared
    # errors left out of the calibrated decoder variance: anomalies hidden in the training
    # data, and heavy tails of normal features, then shape the model less (trimmed
    # likelihood); 0 = every row counts. None = auto: 0.05 for tables (against 0: T-clean
    # AUROC +1.1, T-contaminated +1.4, docs/benchmarks.md), 0 for images (a pixel that is
    # almost always dark would get a near-zero variance)
    conv_channels: list[int] = field(default_factory=lambda: [32])  # conv-vae and vq-vae:
    # channels of the stride-2 layers; image sides must divide by 2 ** len(conv_channels).
    # One layer lets auto pooling give them 14x14 (Fashion-MNIST against [32, 64] at
    # 28x28: conv-vae 93.24 against 93.06 AUROC, vq-vae 88.03 against 89.58, at a fifth
    # of the fit time; docs/benchmarks.md)
    kl_warmup_epochs: int = 10  # beta-vae: the KL weight rises linearly from 0 to beta
    # over these epochs, so the decoder learns to use z before the KL pulls q to the prior
    capacity: float = 0.0  # beta-vae controlled capacity (Burgess et al. 2018), in nats;
    # 0 = off. With capacity C the loss is reconstruction + beta * |KL - C(t)|, with C(t)
    # rising linearly to C over capacity_epochs
    capacity_epochs: int = 50  # beta-vae with capacity > 0: epochs over which C(t) rises
    # from 0 to capacity
    top_latent_dim: int = 4  # hvae: size of the top stochastic layer (latent_dim is the bottom)
    codebook_size: int = 64  # vq-vae: number of code vectors
    code_slots: int = 4  # vq-vae on tables: code vectors per row (images: one per position)
    commitment_cost: float = 0.25  # vq-vae: weight of ||z_e - sg(e)||^2 (van den Oord et al.)
    codebook_decay: float = 0.99  # vq-vae: EMA decay of codebook updates


@dataclass(repr=False)
class TrainingConfig(ChangedSettingsRepr):
    """The optimisation loop."""

    epochs: int = 200  # upper bound; early stopping usually ends training sooner
    batch_size: int = 128  # rows per optimizer step
    learning_rate: float = 3e-3  # Adam; against 1e-3 (with min_steps 2000): the same
    # T-clean AUROC in three quarters of the fit time (docs/benchmarks.md)
    weight_decay: float = 0.0  # Adam's L2 penalty on the weights; 0 = none
    patience: int | None = field(
        default=None, metadata=AUTO
    )  # epochs without validation improvement before stopping.
    # None = auto: 10 for tables (against 15: the same AUROC on T-clean and
    # T-contaminated, shorter fits on large tables), 30 for images (Fashion-MNIST fits
    # then ran to the epochs cap. I-oneclass Fashion-MNIST, training seeds 0, 1, 2,
    # against 10: 94.20 -> 94.28, 93.83 -> 94.00, 93.82 -> 94.06 AUROC; docs/tuning.md)
    min_steps: int = 1000  # small data sets have few batches per epoch: when epochs x
    # batches is below this, epochs and patience are stretched by the same factor so
    # training can run this many optimizer steps (2 batches x 200 epochs did not converge)
    max_epoch_batches: int = 200  # an epoch is at most this many batches (a fresh random
    # subset of the training rows each time), so that on very large tables validation and
    # early stopping come every few seconds instead of once per full pass (300,000 rows:
    # 2,300 batches); 0 = always full passes. The development files need at most 134
    validation_fraction: float = 0.1  # share of normal rows held out for early stopping
    image_shift: float = 0.04  # images: each training image is moved by this share of
    # its shorter side (rounded to whole pixels: 1 pixel at 28 x 28) up, down, left or
    # right, or not at all, at random every time it is drawn (translation augmentation,
    # data/augmentation.py); 0 = off, and so is a share that rounds to 0 pixels (8 x 8
    # images, where one pixel is an eighth of the image). I-oneclass, MLP VAE, against
    # 0: Fashion-MNIST 93.88 -> 94.20 AUROC, MNIST 97.23 -> 97.52 (docs/tuning.md)
    seed: int = 0  # seeds weight init, shuffling, splits and scoring noise
    progress: bool = False  # show a progress bar (Python API; the CLI sets it from --quiet)
    num_threads: int = 0  # torch CPU threads; 0 = one per core


@dataclass(repr=False)
class ScoringConfig(ChangedSettingsRepr):
    """How samples are scored."""

    score: str | None = field(
        default=None, metadata=AUTO
    )  # which score drives predict: negative_elbo, negative_iwae_bound
    # (Gaussian latents), reconstruction_error, code_distance (vq-vae), latent_knn_distance
    # or elbo_latent_knn (latent_density.py). None = auto: elbo_latent_knn for images with
    # at least IMAGE_SCORE_MIN_ROWS (500) normal images to fit on, before the validation
    # and calibration split (docs/tuning.md), else negative_elbo (it ranked best on
    # tables, docs/scores.md)
    mc_samples: int = 16  # L, Monte Carlo samples of z per row for the ELBO estimate
    batch_size: int = 8192  # rows per forward pass when scoring (memory only, not results)
    max_batch_values: int = 2**20  # and at most this many decoded values (rows x L x
    # features) per pass: keeps the working memory of scoring to about 100 MB
    latent_neighbours: int = 5  # k of the latent scores: distance to the k-th nearest
    # training latent mean (5, as the k-NN baseline of the benchmark)
    latent_reference_rows: int = 10000  # the latent scores keep at most this many training
    # rows' latent means (a seeded sample) with the model: bounds its size and scoring time


QUANTILE_THRESHOLD = "quantile"
LABELLED_THRESHOLD_METHODS = ("f1", "recall")  # calibration.method values that need labels


@dataclass(repr=False)
class CalibrationConfig(ChangedSettingsRepr):
    """How the decision threshold is chosen."""

    fraction: float = 0.15  # share of normal rows held out to calibrate the threshold
    target_fpr: float = 0.01  # false-positive rate the threshold aims for on normal data
    method: str = QUANTILE_THRESHOLD  # "quantile": the 1 - target_fpr quantile of the
    # held-out normal rows' scores (no labels needed). With labelled rows (fit --label-col,
    # or VAEDetector.calibrate_threshold): "f1", the F1-optimal threshold (precision-recall
    # curve), or "recall", the highest threshold that flags target_recall of the labelled
    # anomalies (ROC curve)
    target_recall: float = 0.9  # for method "recall": share of labelled anomalies to flag
    expected_fpr_level: float = 0.9  # level of the interval of the false-positive rate to
    # expect on new normal rows, stated at fit and calibrate: at least that share of
    # calibration sets give a threshold whose rate lies in it (docs/thresholds.md)


@dataclass(repr=False)
class DataConfig(ChangedSettingsRepr):
    """How table columns and images are read."""

    id_column: str | None = None  # passed through to the output, never a feature
    label_column: str | None = None  # evaluation only: 1/True = anomaly; never trained on
    anomaly_label: str | None = None  # a label column of text (e.g. "anomaly"/"normal"):
    # the value that marks an anomaly, every other value is normal. None: 0/1 or booleans
    ignore_columns: list[str] = field(default_factory=list)  # never features and not
    # needed to score (timestamps, free text, columns derived from the label)
    condition_columns: list[str] = field(default_factory=list)  # cvae: context columns (e.g.
    # machine id, hour of day) that a row is scored given; other models treat them as features
    categorical_columns: list[str] = field(default_factory=list)  # force these to categories
    # (string and boolean columns are categorical anyway)
    missing_indicators: bool = True  # NaN becomes the training median plus a binary
    # "was missing" feature, so unseen missingness scores as unusual, not as normal
    scaling: str = "standard"  # numeric columns: "standard" (mean/std) or "minmax" ([0, 1])
    max_categories: int = 100  # more distinct text values than this is likely an id or free
    # text column, which one-hot encoding would blow up: an error, not a silent explosion
    image_size: int | None = None  # image folders and sets: resize every image to
    # image_size x image_size pixels as it is read (bilinear), for folders whose images
    # differ in size; saved with the model, so scoring resizes the same way. None: keep
    # the images as they are (they must then share one size)
    image_pool: int | None = field(
        default=None, metadata=AUTO
    )  # images: average each pool x pool block of pixels into
    # one before the model (1 = full resolution; sides must divide by it). None = auto:
    # the largest divisor of IMAGE_POOL (2) whose pooled sides are at least
    # MIN_POOLED_SIDE (7) and still divide by the model's total stride, else 1 (I-oneclass,
    # MLP VAE with elbo_latent_knn: 14x14 ranks best on MNIST and within 0.2 AUROC of 7x7
    # on Fashion-MNIST, docs/tuning.md); anomaly maps are repeated back to the input size


@dataclass(repr=False)
class DetectorConfig(ChangedSettingsRepr):
    """Everything a fitted detector needs to be rebuilt; saved with the model."""

    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    data: DataConfig = field(default_factory=DataConfig)

    def __post_init__(self) -> None:
        validate(self)


@dataclass(repr=False)
class EvaluationConfig(ChangedSettingsRepr):
    """Labelled evaluation during `anomaly-vae fit`."""

    fraction: float = 0.2  # share of labelled-normal rows held out for evaluation when the
    # training data carries anomaly labels (AUROC/AUCPR need unseen normals too)
    interval_level: float = 0.95  # confidence level of the bootstrap intervals reported
    # with AUROC and AUCPR (normal and anomalous rows resampled apart)
    interval_resamples: int = 1000  # bootstrap resamples for those intervals; 0: none,
    # else at least 100. 0.1 s for 10,000 labelled rows, 2.6 s for 300,000 (10% anomalies;
    # pipelines/time_intervals.py)


@dataclass(repr=False)
class FamilyConfig(ChangedSettingsRepr):
    """`anomaly-vae fit --family`: train every suitable variant and pick one."""

    variants: list[str] = field(default_factory=list)  # registry names; empty = every
    # variant that suits the data (conditional ones only with a condition: for tables
    # data.condition_columns, for images two or more normal classes)
    ensemble: bool = True  # also offer the rank-averaged ensemble of the variants
    select_by: str = "auto"  # "criterion" (validation -ELBO, needs no labels), "auroc"
    # (labelled evaluation data), or "auto": auroc when labels exist, else criterion


FIRST_ROWS_EXAMPLE = "rows"  # tracking.input_example: the first rows of the data fit on
SYNTHETIC_EXAMPLE = "synthetic"  # and one made from the model's schema, no real row
INPUT_EXAMPLES = (FIRST_ROWS_EXAMPLE, SYNTHETIC_EXAMPLE)


@dataclass(repr=False)
class TrackingConfig(ChangedSettingsRepr):
    """MLflow tracking and registry."""

    enabled: bool = True  # log each fit to MLflow; false is fit --no-tracking (the model
    # is still saved)
    experiment: str = "anomaly-vae"  # MLflow experiment the fit runs are logged in
    registered_model_name: str = "anomaly-vae"  # MLflow registered model each fit adds a
    # version to; --register moves its alias champion to that version
    register_champion: bool = False  # move the `champion` alias to the new model version
    log_views: bool = True  # log the standard views (generation, reconstructions, latents,
    # manifold, traversal, interpolation) with every fit
    view_rows: int = 2000  # at most this many rows (or images) feed the logged views
    input_example: str = FIRST_ROWS_EXAMPLE  # the logged model's input example (MLflow shows
    # it and serves it as serving_input_example.json): "rows", the first 5 rows of the data
    # fit on, id column included (2 images); "synthetic", no real row, for data that may not
    # be stored: a row of each numeric column's training median and each text column's most
    # common value, no id column (a mid-grey image). calibrate keeps its source fit's choice


@dataclass(repr=False)
class BatchConfig(ChangedSettingsRepr):
    """`anomaly-vae batch` on a schedule: settings of the command (its options take their
    defaults from here), no part of a fit's :class:`Config`."""

    max_attempts: int = 3  # failed attempts at scoring the same bytes of an input with the
    # same model before later runs pass it over (quarantine, docs/batch.md): a failure that
    # passes (a full disk, a lost Spark executor) gets two more runs, and a bad file turns
    # three runs red, not every run; 0: never quarantine, every run tries again

    chunk_rows: int = 100_000  # rows read and scored at a time (--chunk-rows): bounds memory
    # whatever the file size (docs/batch.md, "Speed and memory")

    def __post_init__(self) -> None:
        if self.max_attempts < 0:
            raise ConfigError("batch.max_attempts must be >= 0 (0: never quarantine)")
        if self.chunk_rows < 1:
            raise ConfigError("batch.chunk_rows must be >= 1")


@dataclass(repr=False)
class ViewConfig(ChangedSettingsRepr):
    """`anomaly-vae view`: settings of the command (its options take their defaults from
    here), no part of a fit's :class:`Config`."""

    count: int = 64  # generate (--count): samples drawn from the prior, an 8 x 8 grid of
    # images (the grid is ceil(sqrt(count)) a row)

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ConfigError("view.count must be >= 1")


@dataclass(repr=False)
class Config(DetectorConfig):
    """A whole `fit` run: the detector plus evaluation and tracking."""

    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    family: FamilyConfig = field(default_factory=FamilyConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        checks = [
            (
                self.family.select_by in ("auto", "criterion", "auroc"),
                "family.select_by must be auto, criterion or auroc",
            ),
            (
                len(set(self.family.variants)) == len(self.family.variants),
                "family.variants names a variant twice",
            ),
            (0 < self.evaluation.fraction < 1, "evaluation.fraction must be in (0, 1)"),
            (
                0 < self.evaluation.interval_level < 1,
                "evaluation.interval_level must be in (0, 1)",
            ),
            (
                self.evaluation.interval_resamples == 0
                or self.evaluation.interval_resamples >= MIN_INTERVAL_RESAMPLES,
                f"evaluation.interval_resamples must be 0 (no intervals) or at least "
                f"{MIN_INTERVAL_RESAMPLES}",
            ),
            (self.tracking.view_rows >= 1, "tracking.view_rows must be >= 1"),
            (
                self.tracking.input_example in INPUT_EXAMPLES,
                f"tracking.input_example must be {' or '.join(INPUT_EXAMPLES)}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    def detector_config(self) -> DetectorConfig:
        """The part of this config that belongs to the saved detector."""
        return DetectorConfig(
            **{f.name: getattr(self, f.name) for f in dataclasses.fields(DetectorConfig)}
        )


def validate(cfg: DetectorConfig) -> None:
    """Raise ConfigError for values that cannot work, naming the key."""
    for key, value in flatten(cfg).items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key} must be a finite number, not {value}")
    checks = [
        (cfg.model.latent_dim >= 1, "model.latent_dim must be >= 1"),
        (all(h >= 1 for h in cfg.model.hidden_dims), "model.hidden_dims must be positive"),
        (cfg.model.beta >= 0, "model.beta must be >= 0"),
        (
            cfg.model.min_log_variance is None
            or cfg.model.min_log_variance <= MAX_MIN_LOG_VARIANCE,
            f"model.min_log_variance must be <= {MAX_MIN_LOG_VARIANCE:g} (or auto): the "
            "features are scaled to variance 1 or less, and a higher floor on the decoder's "
            "log-variance leaves their reconstruction out of the score",
        ),
        (
            cfg.model.likelihood in ("auto", "gaussian", "bernoulli"),
            "model.likelihood must be auto, gaussian or bernoulli",
        ),
        (0 <= cfg.model.dropout < 1, "model.dropout must be in [0, 1)"),
        (
            cfg.model.decoder_variance in ("calibrated", "learned"),
            "model.decoder_variance must be calibrated or learned",
        ),
        (cfg.data.scaling in ("standard", "minmax"), "data.scaling must be standard or minmax"),
        (
            len(cfg.model.conv_channels) >= 1 and all(c >= 1 for c in cfg.model.conv_channels),
            "model.conv_channels must be one or more positive channel counts",
        ),
        (cfg.model.commitment_cost >= 0, "model.commitment_cost must be >= 0"),
        (cfg.training.weight_decay >= 0, "training.weight_decay must be >= 0"),
        (cfg.training.seed >= 0, "training.seed must be >= 0"),
        # torch takes 64-bit seeds: 2**64 failed fit with a ValueError traceback ("Overflow
        # when unpacking long long")
        (cfg.training.seed < 2**64, "training.seed must be below 2**64"),
        (cfg.training.num_threads >= 0, "training.num_threads must be >= 0 (0: one per core)"),
        (cfg.model.kl_warmup_epochs >= 0, "model.kl_warmup_epochs must be >= 0"),
        (cfg.model.capacity >= 0, "model.capacity must be >= 0"),
        (cfg.model.capacity_epochs >= 1, "model.capacity_epochs must be >= 1"),
        (cfg.model.top_latent_dim >= 1, "model.top_latent_dim must be >= 1"),
        (cfg.model.codebook_size >= 2, "model.codebook_size must be >= 2"),
        (cfg.model.code_slots >= 1, "model.code_slots must be >= 1"),
        (0 < cfg.model.codebook_decay < 1, "model.codebook_decay must be in (0, 1)"),
        (cfg.data.max_categories >= 1, "data.max_categories must be >= 1"),
        (
            cfg.data.image_pool is None or cfg.data.image_pool >= 1,
            "data.image_pool must be >= 1 (or auto)",
        ),
        (
            cfg.data.image_size is None or cfg.data.image_size >= MIN_IMAGE_SIDE,
            f"data.image_size must be >= {MIN_IMAGE_SIDE} (or null to keep the size)",
        ),
        (cfg.training.epochs >= 1, "training.epochs must be >= 1"),
        (cfg.training.batch_size >= 1, "training.batch_size must be >= 1"),
        (cfg.training.learning_rate > 0, "training.learning_rate must be > 0"),
        (cfg.training.min_steps >= 0, "training.min_steps must be >= 0"),
        (cfg.training.max_epoch_batches >= 0, "training.max_epoch_batches must be >= 0"),
        (
            cfg.training.patience is None or cfg.training.patience >= 1,
            "training.patience must be >= 1",
        ),
        (
            cfg.model.trim_fraction is None or 0 <= cfg.model.trim_fraction < 0.5,
            "model.trim_fraction must be in [0, 0.5)",
        ),
        (
            0 < cfg.training.validation_fraction < 1,
            "training.validation_fraction must be in (0, 1)",
        ),
        (
            cfg.scoring.score is None or cfg.scoring.score in SCORE_NAMES,
            f"scoring.score must be one of {', '.join(SCORE_NAMES)} (or auto)",
        ),
        (cfg.scoring.latent_neighbours >= 1, "scoring.latent_neighbours must be >= 1"),
        (
            0 <= cfg.training.image_shift < 0.5,
            "training.image_shift must be >= 0 and < 0.5 (a share of the image side)",
        ),
        (
            cfg.scoring.latent_reference_rows >= cfg.scoring.latent_neighbours,
            "scoring.latent_reference_rows must be >= scoring.latent_neighbours",
        ),
        (cfg.scoring.mc_samples >= 1, "scoring.mc_samples must be >= 1"),
        (cfg.scoring.batch_size >= 1, "scoring.batch_size must be >= 1"),
        (cfg.scoring.max_batch_values >= 1, "scoring.max_batch_values must be >= 1"),
        (0 < cfg.calibration.fraction < 1, "calibration.fraction must be in (0, 1)"),
        (0 < cfg.calibration.target_fpr < 1, "calibration.target_fpr must be in (0, 1)"),
        (
            cfg.calibration.method in (QUANTILE_THRESHOLD, *LABELLED_THRESHOLD_METHODS),
            "calibration.method must be one of "
            + ", ".join((QUANTILE_THRESHOLD, *LABELLED_THRESHOLD_METHODS)),
        ),
        (0 < cfg.calibration.target_recall <= 1, "calibration.target_recall must be in (0, 1]"),
        (
            0 < cfg.calibration.expected_fpr_level < 1,
            "calibration.expected_fpr_level must be in (0, 1)",
        ),
        (
            cfg.training.validation_fraction + cfg.calibration.fraction < 0.9,
            "training.validation_fraction + calibration.fraction leave too little to train on",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Config as plain nested dicts (JSON/YAML-safe)."""
    return dataclasses.asdict(cfg)


def flatten(cfg: Any) -> dict[str, Any]:
    """``{"model.latent_dim": 8, ...}``: the form logged as MLflow parameters."""
    flat: dict[str, Any] = {}
    for section, values in to_dict(cfg).items():
        for key, value in values.items():
            flat[f"{section}.{key}"] = value
    return flat


def from_dict(data: dict[str, Any], cls: type = Config) -> Any:
    """Build a config dataclass from nested dicts, rejecting unknown keys."""
    return _build(cls, data or {}, prefix="")


# Settings that moved, as a model saved before the move names them: {old key: new key}.
RENAMED_KEYS = {
    # 0bdcdb9 (2026-11-30): the trimmed loss became a model setting when it came to trim
    # the calibrated decoder variance too. Neither is used in scoring (the variance is in
    # the saved weights), so an older model scores as it did.
    "training.trim_fraction": "model.trim_fraction",
}


def renamed_to_current(data: dict[str, Any]) -> dict[str, Any]:
    """A saved model's config (nested dicts) with each key of :data:`RENAMED_KEYS` under
    its current name, unless that name is given too; a copy, ``data`` is unchanged.

    >>> renamed_to_current({"training": {"trim_fraction": 0.05, "epochs": 5}})
    {'training': {'epochs': 5}, 'model': {'trim_fraction': 0.05}}
    """
    upgraded = {
        section: dict(values) if isinstance(values, dict) else values
        for section, values in data.items()
    }
    for old, new in RENAMED_KEYS.items():
        (old_section, old_name), (new_section, new_name) = old.split("."), new.split(".")
        values = upgraded.get(old_section)
        if not isinstance(values, dict) or old_name not in values:
            continue
        target = upgraded.setdefault(new_section, {})
        if isinstance(target, dict) and new_name not in target:
            target[new_name] = values.pop(old_name)
    return upgraded


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    cls: type = Config,
) -> Any:
    """Dataclass defaults, then the YAML file at ``path``, then ``key=value`` overrides.

    Override values are parsed as YAML scalars, so ``training.epochs=5`` is an int,
    ``model.hidden_dims=[32,16]`` a list and ``data.id_column=null`` None.
    """
    data: dict[str, Any] = {}
    if path is not None:
        try:
            # Bytes: PyYAML reads UTF-16 by its byte-order mark (PowerShell's `>` writes it)
            # and reports bytes that are not text as a YAMLError, not a UnicodeDecodeError.
            loaded = yaml.load(Path(path).read_bytes(), Loader=_UniqueKeyLoader)
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(
                f"config file {path} is not valid YAML: {_yaml_problem(exc)}"
            ) from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of sections")
        data = loaded or {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        section, dot, name = (part.strip() for part in key.partition("."))
        if not (sep and dot and section and name):
            raise ConfigError(f"override {item!r} must look like section.key=value")
        if data.get(section) is None:  # absent, or `model:` with its keys commented out
            data[section] = {}
        if not isinstance(data[section], dict):
            raise ConfigError(f"config section {section!r} must be a mapping")
        data[section][name] = _override_value(raw)
    return from_dict(data, cls)


MERGE_TAG = "tag:yaml.org,2002:merge"


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping: PyYAML keeps the
    last, so a second ``model:`` section would silently drop every setting of the first."""


def _unique_key_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen = set()
    for key_node, _ in node.value:
        if key_node.tag == MERGE_TAG:  # `<<: *base`: its keys may be overridden here
            continue
        key = loader.construct_object(key_node)
        with contextlib.suppress(TypeError):  # unhashable: construct_mapping says so
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    problem=f"{key!r} is given twice", problem_mark=key_node.start_mark
                )
            seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _unique_key_mapping,
)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """``line 3, column 1: expected ',' or ']', but got '<stream end>' (while parsing a
    flow sequence opened at line 2, column 15)``: what PyYAML's report says and where,
    on one line (the rest of it quotes the text and names the file "<unicode string>")."""
    if isinstance(exc, yaml.reader.ReaderError):  # before any YAML is parsed
        if exc.encoding != "unicode":  # bytes that do not decode
            return f"byte {exc.position} is not {exc.encoding} text ({exc.reason})"
        return f"character {exc.position}: {exc.reason} (#x{exc.character:02x})"
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if mark is None:
        return problem
    where = f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    context, start = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and start is not None and start.line != mark.line:
        # e.g. an unclosed [ is found at the end of the file: say where it opened
        where += f" ({context} opened at line {start.line + 1}, column {start.column + 1})"
    return where


def _override_value(raw: str) -> Any:
    """A ``--set`` value as YAML, except that yes/no/on/off stay words (YAML 1.1 would
    read them as booleans, turning a label such as ``yes`` into True); booleans are
    written true/false. Text that is not YAML (``[x``, ``*x``, ``...``) is taken as
    written: a label value may be any text, and a key of another type refuses it by name."""
    if not raw.strip():
        return None
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw.strip()
    if isinstance(value, bool) and raw.strip().lower() not in ("true", "false"):
        return raw.strip()
    return value


def _build(cls: type, data: dict[str, Any], prefix: str, root: type | None = None) -> Any:
    root = root or cls
    if not isinstance(data, dict):
        raise ConfigError(f"config section {prefix.rstrip('.')!r} must be a mapping")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(
            f"unknown config key {prefix}{unknown[0]}; valid keys: "
            + ", ".join(prefix + k for k in known)
            + _suggestion(str(unknown[0]), data[unknown[0]], list(known), prefix, root)
        )
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if known[name].metadata.get("auto") and str(value).lower() in ("auto", "none"):
            value = None
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value or {}, prefix=f"{prefix}{name}.", root=root)
        else:
            kwargs[name] = _coerce(value, hint, f"{prefix}{name}")
    return cls(**kwargs)


def _suggestion(name: str, value: Any, known: list[str], prefix: str, root: type) -> str:
    """``"; did you mean KEY?"`` for the unknown key ``prefix + name`` set to ``value``, or
    "" when no key is likely meant. The full list of valid keys runs to 20 names, too
    many to spot the one meant.

    First a key of that name in another section of ``root`` that takes ``value``
    (``model.epochs=5``: training.epochs; ``model.batch_size=64`` names training's and
    scoring's). A key of that name that refuses the value is not suggested: the name is
    then a common word the sections share, not the key meant (``tracking.name=x`` is no
    ``model.name``, as x is no model). Else the closest spelling in this section
    (``model.latnet_dim``), else nothing.
    """
    if prefix:
        moved = [
            f"{section}.{name}"
            for section, hint in typing.get_type_hints(root).items()
            if dataclasses.is_dataclass(hint)
            and name in {f.name for f in dataclasses.fields(hint)}
            and _takes(root, section, name, value)
        ]
        if moved:
            return f"; did you mean {' or '.join(moved)}?"
    close = difflib.get_close_matches(name, known, n=1)
    return f"; did you mean {prefix}{close[0]}?" if close else ""


def _takes(root: type, section: str, name: str, value: Any) -> bool:
    """Whether ``section.name`` of a ``root`` config takes ``value`` (its other keys
    at their defaults), a model name only when it is a variant's."""
    from anomaly_vae.models import check_model_name  # the names only: no torch

    try:
        from_dict({section: {name: value}}, root)
        if (section, name) == ("model", "name"):
            check_model_name(value)
    except ConfigError:
        return False
    return True


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check (and gently convert) a value against its annotated type."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        (inner,) = [a for a in args if a is not type(None)]
        # Python's spelling of null, as the comments write it; a text setting keeps the
        # word, since a column may be called None.
        python_none = inner is not str and str(value).lower() == "none"
        if (value is None or python_none) and type(None) in args:
            return None
        return _coerce(value, inner, key)
    if origin is list:
        if isinstance(value, str) and value.lstrip().startswith("["):  # unclosed: not YAML
            raise ConfigError(f"{key} must be a list such as [1, 2], got {value!r}")
        if not isinstance(value, (list, tuple)):
            value = [value]
        return [_coerce(v, args[0], key) for v in value]
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if hint in (int, float) and isinstance(value, str):
        with contextlib.suppress(ValueError):  # YAML reads 3e-3 (no dot) as text
            value = hint(value)
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    if hint is str and isinstance(value, bool):
        raise ConfigError(
            f"{key} must be text, got the boolean {value!r}: quote it, e.g. '\"true\"'"
        )
    raise ConfigError(f"{key} must be of type {getattr(hint, '__name__', hint)}, got {value!r}")
