"""The methods a benchmark compares, behind one small interface, found by name.

A method is built fresh for every (data set, class, seed) from a :class:`Context`,
then ``fit(X_train) -> self`` and ``score(X_test) -> (n,) float``, **higher = more
anomalous**. ``X`` is a table ``(n, d)`` float64 or images ``(n, C, H, W)`` uint8;
the baselines see images as flattened pixels in [0, 1]. A table may hold NaN: our
detectors and IsolationForest take it as it is (our detectors leave out a column empty
in every training row); the other baselines, which reject it, get the training rows'
column medians in its place.

Names (as written to results.csv): ``anomaly-vae`` (the default detector), each VAE
variant by its registry name, ``ensemble`` (rank-averaged variants), and the
baselines ``iforest``, ``knn``, ``pca``, ``pyod-vae``, ``pyod-ae``.
"""

from __future__ import annotations

import copy
import functools
import importlib
import inspect
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from anomaly_vae.config import Config, to_dict
from anomaly_vae.detector import VAEDetector
from anomaly_vae.ensemble import EnsembleDetector
from anomaly_vae.errors import ConfigError
from anomaly_vae.family import suitable_variants, variant_config
from anomaly_vae.models import available_models, get_model
from anomaly_vae.training import warm_up_optimizer

DEFAULT_DETECTOR = "anomaly-vae"
ENSEMBLE = "ensemble"
BASELINES = ("iforest", "knn", "pca", "pyod-vae", "pyod-ae")
KNN_NEIGHBOURS = 5  # the score is the distance to the k-th nearest training row
PCA_VARIANCE = 0.95  # principal components kept: this share of the training variance
IFOREST_TREES = 100


class Method(Protocol):
    """``fit`` on unlabelled training data, ``score`` test data, higher = more anomalous.

    A method may set ``fit_seconds_`` when its fit time is not the wall time of its own
    ``fit`` call (a detector reused from another method, or an ensemble of them).
    """

    def fit(self, X_train: np.ndarray) -> Method: ...

    def score(self, X_test: np.ndarray) -> np.ndarray: ...


class MethodUnavailable(Exception):
    """A method cannot run here (an optional package is missing): a skip, not a failure."""


# -- our detectors --------------------------------------------------------------------------


@dataclass
class FitCache:
    """VAEDetectors fit on one training set, by configuration: a variant whose config
    equals the default detector's, and the ensemble's members, are fit only once.

    A failed fit is kept too, so the ensemble does not retry a member that failed.
    """

    fits: dict[str, tuple[Any, float]] = field(default_factory=dict)

    def fit(self, config: Config, X_train: np.ndarray) -> tuple[VAEDetector, float]:
        """The fitted detector for ``config`` and the seconds its fit took."""
        key = json.dumps(to_dict(config.detector_config()), sort_keys=True, default=str)
        if key not in self.fits:
            warm_up_optimizer()  # a one-off import, as PyOD's warm-up: not in a fit time
            start = time.perf_counter()
            try:
                detector = VAEDetector(config.detector_config()).fit(X_train)
            except Exception as exc:
                self.fits[key] = (exc, time.perf_counter() - start)
                raise
            self.fits[key] = (detector, time.perf_counter() - start)
        fitted, seconds = self.fits[key]
        if isinstance(fitted, Exception):
            raise fitted
        return fitted, seconds


@dataclass
class Context:
    """What a method is built from: the seed, our resolved config for that seed (its
    ``training.seed`` already set), the data kind and the fits shared in this split."""

    seed: int
    config: Config
    kind: str  # "table" or "image"
    cache: FitCache = field(default_factory=FitCache)


def observed_columns(X_train: np.ndarray) -> np.ndarray | None:
    """A table's columns with a value in some training row, or None when that is every
    column (and for images): our detectors refuse a column empty in every training row,
    which the imputed baselines take as a constant; in a benchmark it is left out
    instead, as it says nothing. None leaves the data as they are: taking every column
    by index copied the whole split (0.6 GB for a T-clean half of a 299,285 x 500 table
    such as ADBench's census) for nothing."""
    if X_train.ndim != 2:
        return None
    kept = np.flatnonzero(~np.isnan(X_train).all(axis=0))
    return None if len(kept) == X_train.shape[1] else kept


def _columns(X: np.ndarray, kept: np.ndarray | None) -> np.ndarray:
    return X if kept is None else X[:, kept]


class DetectorMethod:
    """A VAEDetector with the given config; score = ``anomaly_score``."""

    def __init__(self, config: Config, cache: FitCache) -> None:
        self.config = config
        self.cache = cache

    def fit(self, X_train: np.ndarray) -> DetectorMethod:
        self.kept_ = observed_columns(X_train)
        X_train = _columns(X_train, self.kept_)
        self.detector_, self.fit_seconds_ = self.cache.fit(self.config, X_train)
        return self

    def score(self, X_test: np.ndarray) -> np.ndarray:
        return self.detector_.anomaly_score(_columns(X_test, self.kept_))


class EnsembleMethod:
    """The family ensemble over every suitable variant, fit (or reused) on this split.

    ``fit_seconds_`` is the members' fit times plus the ensemble's own build time.
    """

    def __init__(self, context: Context) -> None:
        self.context = context

    def fit(self, X_train: np.ndarray) -> EnsembleMethod:
        self.kept_ = observed_columns(X_train)
        X_train = _columns(X_train, self.kept_)
        members, seconds = {}, 0.0
        for name in suitable_variants(self.context.config, self.context.kind):
            config = variant_config(self.context.config, name)
            try:
                members[name], member_seconds = self.context.cache.fit(config, X_train)
            except Exception as exc:
                raise RuntimeError(f"ensemble member {name} failed: {exc}") from exc
            seconds += member_seconds
        start = time.perf_counter()
        self.detector_ = EnsembleDetector.from_members(members, X_train)
        self.fit_seconds_ = seconds + time.perf_counter() - start
        return self

    def score(self, X_test: np.ndarray) -> np.ndarray:
        return self.detector_.anomaly_score(_columns(X_test, self.kept_))


# -- baselines ------------------------------------------------------------------------------


def flat_features(X: np.ndarray) -> np.ndarray:
    """Tables unchanged; images ``(n, C, H, W)`` -> ``(n, C*H*W)`` float32 in [0, 1]."""
    if X.ndim <= 2:
        return X
    flat = X.reshape(len(X), -1)
    return flat.astype(np.float32) / 255.0 if flat.dtype == np.uint8 else flat.astype(np.float32)


class MedianImputed:
    """A baseline that rejects NaN (k-NN, PCA, PyOD's detectors), given each column's
    median over the training rows in place of a missing value, as its users would do
    (scikit-learn's ``SimpleImputer``). A column with no value in training gets 0.
    Images pass through: ``uint8`` pixels cannot be missing."""

    def __init__(self, method: Method) -> None:
        self.method = method

    def fit(self, X_train: np.ndarray) -> MedianImputed:
        from sklearn.impute import SimpleImputer

        self.imputer_ = None
        if X_train.ndim <= 2:
            self.imputer_ = SimpleImputer(strategy="median", keep_empty_features=True)
            X_train = self.imputer_.fit_transform(X_train)
        self.method.fit(X_train)
        return self

    def score(self, X_test: np.ndarray) -> np.ndarray:
        if self.imputer_ is not None:
            X_test = self.imputer_.transform(X_test)
        return self.method.score(X_test)


class IForestMethod:
    """scikit-learn IsolationForest; score = ``-score_samples``. Takes NaN as it is
    (scikit-learn's trees accept missing values)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def fit(self, X_train: np.ndarray) -> IForestMethod:
        from sklearn.ensemble import IsolationForest

        self.model_ = IsolationForest(n_estimators=IFOREST_TREES, random_state=self.seed)
        self.model_.fit(flat_features(X_train))
        return self

    def score(self, X_test: np.ndarray) -> np.ndarray:
        return -self.model_.score_samples(flat_features(X_test))


class KNNMethod:
    """Distance to the k-th nearest training row, on data min-max scaled on the
    training rows (a constant column scales by 1, so it cannot give NaN or inf)."""

    def fit(self, X_train: np.ndarray) -> KNNMethod:
        from sklearn.neighbors import NearestNeighbors
        from sklearn.preprocessing import MinMaxScaler

        X = flat_features(X_train)
        self.scaler_ = MinMaxScaler().fit(X)
        self.model_ = NearestNeighbors(n_neighbors=KNN_NEIGHBOURS).fit(self.scaler_.transform(X))
        return self

    def score(self, X_test: np.ndarray) -> np.ndarray:
        distances, _ = self.model_.kneighbors(self.scaler_.transform(flat_features(X_test)))
        return distances[:, -1]


class PCAMethod:
    """Squared reconstruction error (summed over features) of PCA keeping
    ``PCA_VARIANCE`` of the variance, on min-max scaled data as for k-NN; at most
    ``d - 1`` components of ``d`` features, since with all of them every row is
    reconstructed and the error is rounding noise (one feature: the squared distance
    from the training mean)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def fit(self, X_train: np.ndarray) -> PCAMethod:
        from sklearn.decomposition import PCA
        from sklearn.preprocessing import MinMaxScaler

        X = flat_features(X_train)
        self.scaler_ = MinMaxScaler().fit(X)
        X = self.scaler_.transform(X)
        pca = PCA(n_components=PCA_VARIANCE, svd_solver="full", random_state=self.seed).fit(X)
        kept = min(pca.n_components_, X.shape[1] - 1)
        # Components come by explained variance: the first `kept` are PCA with `kept`.
        self.mean_, self.components_ = pca.mean_, pca.components_[:kept]
        return self

    def score(self, X_test: np.ndarray) -> np.ndarray:
        centred = self.scaler_.transform(flat_features(X_test)) - self.mean_
        residual = centred - (centred @ self.components_.T) @ self.components_
        return np.sum(residual**2, axis=1)


def import_pyod_class(module: str, name: str) -> type:
    """A PyOD detector class; MethodUnavailable when PyOD is not installed."""
    try:
        return getattr(importlib.import_module(f"pyod.models.{module}"), name)
    except ImportError as exc:
        raise MethodUnavailable("PyOD is not installed (pip install 'anomaly-vae[bench]')") from exc


@functools.cache
def _warm_up_pyod(detector_class: type) -> None:
    """PyOD's deep detectors score with numba functions compiled on first use (seconds,
    once per process and dtype); a throw-away fit on a few rows compiles them outside
    the timed fit, so the first data set's row is not charged for it."""
    rows = np.random.default_rng(0).random((64, 2))
    detector_class(verbose=0).fit(rows)


class PyODMethod:
    """A PyOD deep detector with its defaults; score = ``decision_function``.

    Only ``random_state`` (the seed) and ``verbose=0`` (no per-epoch bar) are passed,
    each only if the constructor takes it.
    """

    def __init__(self, detector_class: type, seed: int) -> None:
        _warm_up_pyod(detector_class)
        accepted = inspect.signature(detector_class).parameters
        arguments = {"random_state": seed, "verbose": 0}
        self.model_ = detector_class(**{k: v for k, v in arguments.items() if k in accepted})

    def fit(self, X_train: np.ndarray) -> PyODMethod:
        self.model_.fit(flat_features(X_train))
        return self

    def score(self, X_test: np.ndarray) -> np.ndarray:
        return self.model_.decision_function(flat_features(X_test))


# -- the registry ---------------------------------------------------------------------------


def _always(config: Config, kind: str) -> bool:
    return True


def _nothing_needed() -> None:
    return None


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: ``build(context)`` makes an unfitted method; ``suits(config,
    kind)`` says whether it runs on this kind of data with this config; ``check()``
    raises MethodUnavailable when a package it needs is missing."""

    name: str
    build: Callable[[Context], Method]
    suits: Callable[[Config, str], bool] = _always
    check: Callable[[], object] = _nothing_needed


def _variant_spec(name: str) -> MethodSpec:
    return MethodSpec(
        name,
        lambda c: DetectorMethod(variant_config(c.config, name), c.cache),
        lambda config, kind: name in suitable_variants(config, kind),
    )


def _pyod_spec(name: str, module: str, class_name: str) -> MethodSpec:
    return MethodSpec(
        name,
        lambda c: MedianImputed(PyODMethod(import_pyod_class(module, class_name), c.seed)),
        check=lambda: import_pyod_class(module, class_name),
    )


def registry() -> dict[str, MethodSpec]:
    """Every method by name, in the order of a results table."""
    specs = [
        MethodSpec(DEFAULT_DETECTOR, lambda c: DetectorMethod(c.config, c.cache)),
        *(_variant_spec(name) for name in available_models()),
        MethodSpec(
            ENSEMBLE,
            EnsembleMethod,
            lambda config, kind: len(suitable_variants(config, kind)) > 1,
        ),
        MethodSpec("iforest", lambda c: IForestMethod(c.seed)),
        MethodSpec("knn", lambda c: MedianImputed(KNNMethod())),
        MethodSpec("pca", lambda c: MedianImputed(PCAMethod(c.seed))),
        _pyod_spec("pyod-vae", "vae", "VAE"),
        _pyod_spec("pyod-ae", "auto_encoder", "AutoEncoder"),
    ]
    return {spec.name: spec for spec in specs}


def check_method_names(names: list[str]) -> None:
    """ConfigError naming the valid methods if any of ``names`` is unknown."""
    valid = list(registry())
    unknown = [name for name in names if name not in valid]
    if unknown:
        raise ConfigError(f"unknown method {unknown[0]!r}; available: {', '.join(valid)}")


def plan_methods(
    names: list[str] | None, config: Config, kind: str
) -> tuple[list[str], dict[str, str]]:
    """The methods to run on ``kind`` data (``None``: all that suit it), and the skipped
    ones with the reason: unsuitable for the data, or an optional package missing."""
    specs = registry()
    requested = list(specs) if names is None else list(dict.fromkeys(names))
    check_method_names(requested)
    chosen: list[str] = []
    skipped: dict[str, str] = {}
    for name in requested:
        if not specs[name].suits(config, kind):
            if names is not None:  # asked for by name: say why it does not run
                skipped[name] = _unsuitable_reason(name, config, kind)
            continue
        try:
            specs[name].check()
        except MethodUnavailable as exc:
            skipped[name] = str(exc)
            continue
        chosen.append(name)
    return chosen, skipped


def _every_variant(config: Config) -> Config:
    """``config`` with ``family.variants`` empty: every variant is a candidate."""
    every = copy.deepcopy(config)
    every.family.variants = []
    return every


def variants_suiting(config: Config, kind: str) -> list[str]:
    """Every variant that suits ``kind`` data with ``config``, whatever its
    ``family.variants`` names (see :func:`~anomaly_vae.family.suitable_variants`)."""
    return suitable_variants(_every_variant(config), kind)


def unsuitable_detector(config: Config, kind: str) -> str | None:
    """Why our detector (``DEFAULT_DETECTOR``, the variant ``config.model.name``) cannot
    run on ``kind`` data, as :func:`plan_methods` says of a variant, or None when it can.
    Its ``suits`` is always true, so this is checked before a run: an image-only variant
    on a table protocol, or a conditional one without a condition, failed every row of
    our detector one by one."""
    every = _every_variant(config)
    if config.model.name in suitable_variants(every, kind):
        return None
    return _unsuitable_reason(config.model.name, every, kind)


def _unsuitable_reason(name: str, config: Config, kind: str) -> str:
    if name == ENSEMBLE:
        return f"needs two or more variants that suit {kind} data"
    model = get_model(name)
    if kind not in model.data_kinds:
        return f"accepts {' and '.join(model.data_kinds)} data, not {kind} data"
    if config.family.variants and name not in config.family.variants:
        return "not in family.variants"
    return "conditional, and the benchmark gives it no condition"
