"""The benchmark loop: data sets (and classes) x seeds x methods on the protocol's splits.

Each finished row is appended to results.csv at once; rows already there are not run
again (resume). A failure (one method, or loading or splitting a data set) is recorded
in failures.csv and the run goes on; failures are retried by the next run. Warnings
raised or logged (by this library) while a method fits and scores are collected into
warnings.csv instead of being printed through the progress bar.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from anomaly_vae.benchmark.methods import Context, FitCache, plan_methods, registry
from anomaly_vae.benchmark.report import RunInfo, write_summary
from anomaly_vae.benchmark.results import Key, RunFiles, row_key
from anomaly_vae.benchmark.tasks import (
    DEFAULT_CLASSES,
    DEFAULT_SEEDS,
    IMAGE_PROTOCOL,
    Dataset,
    data_kind,
    find_datasets,
)
from anomaly_vae.config import Config, load_config
from anomaly_vae.errors import ConfigError


@dataclass
class BenchmarkOutcome:
    """What a run did. ``failures`` maps a row key to its error; ``skipped`` a method
    that did not run at all to the reason."""

    out: Path
    rows_new: int = 0
    rows_done_before: int = 0
    failures: dict[Key, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    summary: Path | None = None


def detector_config(
    config_path: Path | None, overrides: list[str] | tuple[str, ...], seed: int, threads: int
) -> Config:
    """Our detector's config for one seed: ``training.seed`` (and ``training.num_threads``
    when ``threads`` is set) under the user's file and overrides; no progress bar."""
    base = [f"training.seed={seed}"] + ([f"training.num_threads={threads}"] if threads else [])
    config = load_config(config_path, [*base, *overrides])
    config.training.progress = False  # the benchmark has its own progress bar
    return config


def run_benchmark(
    protocol: str,
    data_dir: str | Path,
    out: str | Path,
    *,
    datasets: list[str] | None = None,
    classes: list[int] | None = None,
    seeds: list[int] | None = None,
    methods: list[str] | None = None,
    config_path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    threads: int = 0,
    progress: bool = True,
) -> BenchmarkOutcome:
    """Run ``protocol`` on the data sets in ``data_dir``, writing into ``out``.

    ``datasets``: file stems (tables) or torchvision names (images), default all found;
    ``classes``: the normal classes of i-oneclass (default 0..9); ``seeds``: default
    0, 1, 2 for tables and 0 for images; ``methods``: names as in results.csv, default
    every one that suits the data; ``config_path`` and ``overrides`` (``key=value``)
    configure our detector as `anomaly-vae fit` does; ``threads`` > 0 caps torch and
    BLAS threads. Writes results.csv, failures.csv, warnings.csv, failures.log and
    summary.md. Raises ConfigError/DataError for bad arguments before anything runs.
    """
    kind = data_kind(protocol)
    out = Path(out)
    seeds = list(seeds) if seeds is not None else list(DEFAULT_SEEDS[protocol])
    classes = (
        (list(classes) if classes is not None else list(DEFAULT_CLASSES))
        if protocol == IMAGE_PROTOCOL
        else [None]
    )
    if not seeds or not classes:
        raise ConfigError("give at least one seed (and one class for i-oneclass)")
    config_path = Path(config_path) if config_path is not None else None
    overrides = list(overrides)
    planning_config = detector_config(config_path, overrides, seeds[0], threads)
    found = find_datasets(protocol, Path(data_dir), datasets)
    chosen, skipped = plan_methods(methods, planning_config, kind)
    for name, reason in skipped.items():
        _note(f"skipping {name}: {reason}")

    files = RunFiles(out)
    done = files.start()
    outcome = BenchmarkOutcome(out, skipped=skipped)
    config_text = ", ".join(
        ([f"file {config_path}"] if config_path else []) + [f"--set {o}" for o in overrides]
    )
    run = RunInfo(
        protocol,
        str(data_dir),
        seeds,
        classes if protocol == IMAGE_PROTOCOL else None,
        config_text or "defaults",
        skipped=skipped,
    )
    state = _Run(files, done, outcome, config_path, overrides, threads, progress)
    try:
        with _threads(threads) as used, logging_redirect_tqdm():
            run.threads = used
            for dataset in found:
                state.run_dataset(dataset, classes, seeds, chosen)
    finally:
        run.rows_new = outcome.rows_new
        outcome.summary = write_summary(out, run)
    return outcome


@dataclass
class _Run:
    """The state one run shares across data sets: its files, the rows done, the outcome
    and how to configure our detector."""

    files: RunFiles
    done: set[Key]
    outcome: BenchmarkOutcome
    config_path: Path | None
    overrides: list[str]
    threads: int
    progress: bool

    def run_dataset(
        self,
        dataset: Dataset,
        classes: list[int | None],
        seeds: list[int],
        methods: list[str],
    ) -> None:
        """Every pending (class, seed, method) of ``dataset``, under one progress bar."""

        def key(cls: int | None, seed: int | None, method: str) -> Key:
            return row_key(dataset.protocol, dataset.name, cls, seed, method)

        pending = {
            (cls, seed): [m for m in methods if key(cls, seed, m) not in self.done]
            for cls in classes
            for seed in seeds
        }
        total = sum(len(todo) for todo in pending.values())
        self.outcome.rows_done_before += len(classes) * len(seeds) * len(methods) - total
        if not total:
            return
        bar = tqdm(total=total, desc=dataset.name, disable=not self.progress, file=sys.stderr)
        with bar:
            try:
                loaded = dataset.load()
            except Exception as exc:
                self.fail(key(None, None, ""), exc)
                return
            for (cls, seed), todo in pending.items():
                if not todo:
                    continue
                where = f"seed {seed}" if cls is None else f"class {cls}, seed {seed}"
                try:
                    X_train, X_test, y_test = dataset.split(loaded, cls, seed)
                except Exception as exc:
                    self.fail(key(cls, seed, ""), exc)
                    bar.update(len(todo))
                    continue
                config = detector_config(self.config_path, self.overrides, seed, self.threads)
                context = Context(seed, config, data_kind(dataset.protocol), FitCache())
                for method in todo:
                    bar.set_postfix_str(f"{where}: {method}")
                    self.run_method(
                        method, context, X_train, X_test, y_test, key(cls, seed, method)
                    )
                    bar.update(1)

    def run_method(
        self,
        method: str,
        context: Context,
        X_train: np.ndarray,
        X_test: np.ndarray,
        y_test: np.ndarray,
        key: Key,
    ) -> None:
        """Fit and score one method; append its row, or record its failure."""
        if self.threads:  # a detector may have set torch threads for itself
            import torch

            torch.set_num_threads(self.threads)
        failure = None
        with collect_warnings() as caught:
            try:
                scores, fit_s, score_s = measure(method, context, X_train, X_test)
                aucroc = roc_auc_score(y_test, scores)
                aucpr = average_precision_score(y_test, scores)
            except Exception as exc:
                failure = exc
        if caught:
            self.files.add_warnings(key, caught)
        if failure is not None:
            self.fail(key, failure)
            return
        self.files.add_result(key, aucroc, aucpr, fit_s, score_s, len(X_train), len(X_test))
        self.outcome.rows_new += 1

    def fail(self, key: Key, exc: BaseException) -> None:
        error = f"{type(exc).__name__}: {exc}".replace("\n", " ")
        self.files.add_failure(key, error, "".join(traceback.format_exception(exc)))
        self.outcome.failures[key] = error
        _note(f"FAILED {' / '.join(part for part in key[1:] if part)}: {error}")


def _note(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


@contextlib.contextmanager
def _threads(threads: int) -> Iterator[int]:
    """Cap torch and BLAS/OpenMP threads at ``threads`` (0: leave them); yields torch's."""
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    if not threads:
        yield before
        return
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads):
            yield threads
    finally:
        torch.set_num_threads(before)


class _LogRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def collect_warnings() -> Iterator[Counter[tuple[str, str]]]:
    """Count Python warnings and our library's logged warnings by (category, message)
    instead of printing them; the counts are filled in when the block ends."""
    counts: Counter[tuple[str, str]] = Counter()
    library = logging.getLogger("anomaly_vae")
    handler, propagate = _LogRecords(), library.propagate
    library.addHandler(handler)
    library.propagate = False
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield counts
    finally:
        library.removeHandler(handler)
        library.propagate = propagate
        counts.update((w.category.__name__, str(w.message).strip()) for w in caught)
        counts.update((f"log {r.levelname}", r.getMessage().strip()) for r in handler.records)


def measure(
    method_name: str, context: Context, X_train: np.ndarray, X_test: np.ndarray
) -> tuple[np.ndarray, float, float]:
    """Build, fit and score one method: ``(scores (n_test,) float64, fit_s, score_s)``.

    ``fit_s`` is the method's own ``fit_seconds_`` when it sets one (reused fits and
    the ensemble), else the wall time of ``fit``. ValueError for missing or
    non-finite scores.
    """
    method = registry()[method_name].build(context)
    start = time.perf_counter()
    method.fit(X_train)
    fit_s = getattr(method, "fit_seconds_", time.perf_counter() - start)
    start = time.perf_counter()
    scores = np.asarray(method.score(X_test), dtype=np.float64)
    score_s = time.perf_counter() - start
    if scores.shape != (len(X_test),):
        raise ValueError(f"expected {len(X_test)} scores, got shape {scores.shape}")
    if not np.isfinite(scores).all():
        raise ValueError(f"{int((~np.isfinite(scores)).sum())} scores are NaN or infinite")
    return scores, fit_s, score_s
