"""The benchmark loop: data sets (and classes) x seeds x methods on the protocol's splits.

Each finished row is appended to results.csv at once; rows already there are not run
again (resume), provided they were made with the same protocol, config and data: run.json
records these, and a resume with others is refused. A failure (one method, or loading or
splitting a data set, or a metric that is not a finite number) is recorded in
failures.csv and the run goes on; failures are retried by the next run. Warnings raised
or logged (by this library) while a method fits and scores are collected into
warnings.csv instead of being printed through the progress bar.

With ``jobs`` > 1 the work is split into units, one per (data set, class, seed) with
every pending method of it (the ensemble reuses the variant fits of its split), run
in that many worker processes. Workers send their rows, warnings and failures back;
only this process writes the files, a unit's rows as soon as the unit is done.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import multiprocessing
import os
import sys
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from anomaly_vae.benchmark.methods import (
    BASELINES,
    DEFAULT_DETECTOR,
    Context,
    FitCache,
    plan_methods,
    registry,
    unsuitable_detector,
    variants_suiting,
)
from anomaly_vae.benchmark.report import RunInfo, write_summary
from anomaly_vae.benchmark.results import Key, RunDescription, RunFiles, row_key
from anomaly_vae.benchmark.tasks import (
    DEFAULT_CLASSES,
    DEFAULT_SEEDS,
    IMAGE_PROTOCOL,
    Dataset,
    data_kind,
    find_datasets,
)
from anomaly_vae.config import Config, flatten, load_config
from anomaly_vae.errors import ConfigError
from anomaly_vae.models import check_model_name

MAX_SEED = 2**32  # a benchmark seed is also scikit-learn's random_state, below 2**32

# Imported on first use, inside the first timed fit of a process: the forkserver imports
# them for every worker (building a torch optimizer imports torch._dynamo: seconds).
WORKER_PRELOAD = ("torch._dynamo", "sklearn.ensemble", "sklearn.neighbors", "sklearn.decomposition")


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


# Settings that do not change a row's numbers: those the benchmark sets itself (each
# row's seed, torch threads from --threads, no progress bar) and the config sections it
# does not use (`fit`'s labelled evaluation, MLflow).
PER_RUN_SETTINGS = ("training.seed", "training.num_threads", "training.progress")
UNUSED_SECTIONS = ("evaluation.", "tracking.")


def row_settings(config: Config) -> dict[str, Any]:
    """The settings a row's numbers depend on, flat (``{"training.epochs": 5, ...}``) and
    as JSON gives them back, so that they compare equal to those read from run.json."""
    settings = {
        key: value
        for key, value in flatten(config).items()
        if key not in PER_RUN_SETTINGS and not key.startswith(UNUSED_SECTIONS)
    }
    return json.loads(json.dumps(settings, default=str))


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity where the OS tells it)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def worker_threads(threads: int, jobs: int) -> int:
    """Torch and BLAS threads per worker with ``jobs`` > 1: ``threads`` if set, else the
    CPUs shared out among the workers (at least one each)."""
    return threads or max(1, available_cpus() // jobs)


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
    jobs: int = 1,
    progress: bool = True,
) -> BenchmarkOutcome:
    """Run ``protocol`` on the data sets in ``data_dir``, writing into ``out``.

    ``datasets``: file stems (tables) or folder names (images), default all found;
    ``classes``: the normal classes of i-oneclass (default 0..9); ``seeds``: default
    0, 1, 2 for tables and 0 for images; ``methods``: names as in results.csv, default
    every one that suits the data; ``config_path`` and ``overrides`` (``key=value``)
    configure our detector as `anomaly-vae fit` does; ``threads`` > 0 caps torch and
    BLAS threads (per worker with ``jobs`` > 1, where 0 means CPUs // jobs); ``jobs``
    > 1 runs the (data set, class, seed) units in that many worker processes. Writes
    results.csv, unrounded.csv, warnings.csv, failures.csv, failures.log, run.json and
    summary.md. Raises ConfigError/DataError for bad arguments, and when ``out`` holds
    rows made with another protocol, config or data folder or file, before anything runs.
    """
    kind = data_kind(protocol)
    out = Path(out)
    if jobs < 1:
        raise ConfigError(f"jobs must be 1 or more, got {jobs}")
    if threads < 0:
        raise ConfigError(f"threads must be 0 (default) or more, got {threads}")
    # Repeats dropped: a repeated seed would run (and write) its rows twice.
    seeds = list(dict.fromkeys(seeds if seeds is not None else DEFAULT_SEEDS[protocol]))
    classes = (
        list(dict.fromkeys(classes if classes is not None else DEFAULT_CLASSES))
        if protocol == IMAGE_PROTOCOL
        else None
    )
    # Table units have no class: one unit per seed, with class None.
    unit_classes: list[int | None] = [*classes] if classes is not None else [None]
    if not seeds or not unit_classes:
        raise ConfigError("give at least one seed (and one class for i-oneclass)")
    # numpy's generators take no negative seed: every row would fail, one by one.
    for what, numbers in (("seeds", seeds), ("classes", unit_classes)):
        negative = [n for n in numbers if n is not None and n < 0]
        if negative:
            raise ConfigError(f"{what} must be 0 or more, got {negative[0]}")
    # and scikit-learn's random_state (the splits, IsolationForest, PCA) none of 2**32 or
    # more: every unit failed, one by one, with its InvalidParameterError.
    too_large = [seed for seed in seeds if seed >= MAX_SEED]
    if too_large:
        raise ConfigError(f"seeds must be below 2**32, got {too_large[0]}")
    config_path = Path(config_path) if config_path is not None else None
    overrides = list(overrides)
    planning_config = detector_config(config_path, overrides, seeds[0], threads)
    # As fit and config refuse it: an unknown model.name would otherwise fail our
    # detector's every row, one by one, while the rest of the run goes on.
    check_model_name(planning_config.model.name)
    found = find_datasets(protocol, Path(data_dir), datasets)
    chosen, skipped = plan_methods(methods, planning_config, kind)
    if not chosen:  # only when methods were named: the baselines suit any data
        reasons = "; ".join(f"{name}: {reason}" for name, reason in skipped.items())
        raise ConfigError(f"none of the requested methods can run on {kind} data ({reasons})")
    # Likewise a variant that cannot run on this protocol's data (conv-vae on tables:
    # "accepts image data, not tables"), which plan_methods cannot skip: our detector
    # is the one the config makes.
    unsuitable = unsuitable_detector(planning_config, kind) if DEFAULT_DETECTOR in chosen else None
    if unsuitable is not None:
        raise ConfigError(
            f"model.name={planning_config.model.name} cannot run on {protocol} "
            f"({unsuitable}): set model.name to a variant that suits {kind} data "
            f"({', '.join(variants_suiting(planning_config, kind))}), or leave "
            f"{DEFAULT_DETECTOR} out of --methods"
        )
    for name, reason in skipped.items():
        _note(f"skipping {name}: {reason}")

    config_text = ", ".join(
        ([f"file {config_path}"] if config_path else []) + [f"--set {o}" for o in overrides]
    )
    description = RunDescription(
        protocol,
        str(Path(data_dir).resolve()),
        row_settings(planning_config),
        config_text or "defaults",
        {dataset.name: dataset.digest() for dataset in found},
    )
    files = RunFiles(out)
    done = files.start(description)
    if files.adopted_rows:
        _note(
            f"{out} has no run.json (written by an older version): its {files.adopted_rows} "
            "rows are resumed, but what config and data they were made with is unknown"
        )
    outcome = BenchmarkOutcome(out, skipped=skipped)
    run = RunInfo(
        protocol,
        str(data_dir),
        seeds,
        classes if protocol == IMAGE_PROTOCOL else None,
        description.config_text,
        jobs=jobs,
        skipped=skipped,
        unchecked_rows=description.unchecked_rows,
    )
    units: list[Unit] = []
    for dataset in found:
        pending = pending_units(dataset, unit_classes, seeds, chosen, done)
        units += pending
        total = len(unit_classes) * len(seeds) * len(chosen)
        outcome.rows_done_before += total - sum(len(unit.methods) for unit in pending)
    state = _Run(files, outcome, progress)
    try:
        if jobs == 1:
            settings = Settings(config_path, tuple(overrides), threads)
            with _threads(threads) as used, logging_redirect_tqdm():
                run.threads = used
                if units and set(chosen) - set(BASELINES):  # our detectors train
                    warm_up_torch()
                for dataset in found:
                    state.run_dataset(dataset, [u for u in units if u.dataset is dataset], settings)
        else:
            run.threads = worker_threads(threads, jobs)
            settings = Settings(config_path, tuple(overrides), run.threads)
            with logging_redirect_tqdm():
                state.run_parallel(units, settings, jobs, protocol)
    finally:
        run.rows_new = outcome.rows_new
        outcome.summary = write_summary(out, run)
    return outcome


@dataclass(frozen=True)
class Settings:
    """How every split configures our detector; sent to the workers."""

    config_path: Path | None
    overrides: tuple[str, ...]
    threads: int  # 0: leave torch's threads as they are


@dataclass(frozen=True)
class Unit:
    """Every pending method of one (data set, class, seed): run together, in one process,
    because the ensemble reuses the variant fits of its split."""

    dataset: Dataset
    cls: int | None
    seed: int
    methods: tuple[str, ...]

    def key(self, method: str) -> Key:
        return row_key(self.dataset.protocol, self.dataset.name, self.cls, self.seed, method)

    def dataset_key(self) -> Key:
        """The key of a failure to load the data set."""
        return row_key(self.dataset.protocol, self.dataset.name, None, None, "")

    @property
    def where(self) -> str:
        return f"seed {self.seed}" if self.cls is None else f"class {self.cls}, seed {self.seed}"


def pending_units(
    dataset: Dataset,
    classes: list[int | None],
    seeds: list[int],
    methods: list[str],
    done: set[Key],
) -> list[Unit]:
    """The units of ``dataset`` with methods whose rows are not in ``done``."""
    units = []
    for cls in classes:
        for seed in seeds:
            key = functools.partial(row_key, dataset.protocol, dataset.name, cls, seed)
            todo = tuple(m for m in methods if key(m) not in done)
            if todo:
                units.append(Unit(dataset, cls, seed, todo))
    return units


class Sink(Protocol):
    """Where a split's outcomes go: the run files (in this process) or a record (in a
    worker, sent back)."""

    def result(
        self,
        key: Key,
        aucroc: float,
        aucpr: float,
        fit_s: float,
        score_s: float,
        n_train: int,
        n_test: int,
    ) -> None: ...

    def warnings(self, key: Key, counts: Counter[tuple[str, str]]) -> None: ...

    def failure(self, key: Key, error: str, traceback_text: str) -> None: ...


@dataclass
class UnitRecord:
    """What a worker did on one unit, in order: ``(sink method, arguments)``."""

    events: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)

    def result(self, *args: Any) -> None:
        self.events.append(("result", args))

    def warnings(self, *args: Any) -> None:
        self.events.append(("warnings", args))

    def failure(self, *args: Any) -> None:
        self.events.append(("failure", args))

    def replay(self, sink: Sink) -> None:
        for name, args in self.events:
            getattr(sink, name)(*args)


def describe(exc: BaseException) -> tuple[str, str]:
    """A failure as ``(one-line error, traceback)``."""
    error = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return error, "".join(traceback.format_exception(exc))


def run_split(
    unit: Unit,
    loaded: Any,
    settings: Settings,
    sink: Sink,
    started: Callable[[str], None] = lambda method: None,
    finished: Callable[[int], None] = lambda count: None,
) -> None:
    """Split ``loaded`` for ``unit`` and run its methods; ``started(method)`` before each
    method, ``finished(count)`` after each (or once for all when the split fails)."""
    try:
        X_train, X_test, y_test = unit.dataset.split(loaded, unit.cls, unit.seed)
    except Exception as exc:
        sink.failure(unit.key(""), *describe(exc))
        finished(len(unit.methods))
        return
    config = detector_config(settings.config_path, settings.overrides, unit.seed, settings.threads)
    context = Context(unit.seed, config, data_kind(unit.dataset.protocol), FitCache())
    for method in unit.methods:
        started(method)
        run_method(method, context, X_train, X_test, y_test, unit.key(method), settings, sink)
        finished(1)


def run_method(
    method: str,
    context: Context,
    X_train: np.ndarray,
    X_test: np.ndarray,
    y_test: np.ndarray,
    key: Key,
    settings: Settings,
    sink: Sink,
) -> None:
    """Fit and score one method; its warnings, then its row or its failure, to ``sink``."""
    if settings.threads:  # a detector may have set torch threads for itself
        import torch

        torch.set_num_threads(settings.threads)
    failure = None
    with collect_warnings() as caught:
        try:
            scores, fit_s, score_s = measure(method, context, X_train, X_test)
            aucroc, aucpr = metrics(y_test, scores)
        except Exception as exc:
            failure = exc
    if caught:
        sink.warnings(key, caught)
    if failure is not None:
        sink.failure(key, *describe(failure))
        return
    sink.result(key, aucroc, aucpr, fit_s, score_s, len(X_train), len(X_test))


def metrics(y_test: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """``(AUROC, AUCPR)`` as fractions of ``scores (n,)``, higher = more anomalous, against
    ``y_test (n,)`` (1 = anomaly). ValueError when either is not a finite number (a test
    split with one class only): such a row is a failure, retried, never a finished row."""
    aucroc = float(roc_auc_score(y_test, scores))
    aucpr = float(average_precision_score(y_test, scores))
    if not (np.isfinite(aucroc) and np.isfinite(aucpr)):
        labels = ", ".join(str(v) for v in np.unique(y_test))
        raise ValueError(
            f"AUROC {aucroc}, AUCPR {aucpr}: not finite (test labels present: {labels}; "
            "both 0 = normal and 1 = anomaly are needed)"
        )
    return aucroc, aucpr


@dataclass
class _Run:
    """The run in this process: its files and outcome; the sink of every split."""

    files: RunFiles
    outcome: BenchmarkOutcome
    progress: bool

    def result(
        self,
        key: Key,
        aucroc: float,
        aucpr: float,
        fit_s: float,
        score_s: float,
        n_train: int,
        n_test: int,
    ) -> None:
        self.files.add_result(key, aucroc, aucpr, fit_s, score_s, n_train, n_test)
        self.outcome.rows_new += 1

    def warnings(self, key: Key, counts: Counter[tuple[str, str]]) -> None:
        self.files.add_warnings(key, counts)

    def failure(self, key: Key, error: str, traceback_text: str) -> None:
        if key in self.outcome.failures:  # a data set failing to load, told by each unit
            return
        self.files.add_failure(key, error, traceback_text)
        self.outcome.failures[key] = error
        _note(f"FAILED {' / '.join(part for part in key[1:] if part)}: {error}")

    def run_dataset(self, dataset: Dataset, units: list[Unit], settings: Settings) -> None:
        """``units`` of ``dataset`` in this process, under one progress bar."""
        total = sum(len(unit.methods) for unit in units)
        if not total:
            return
        bar = tqdm(total=total, desc=dataset.name, disable=not self.progress, file=sys.stderr)
        with bar:
            try:
                loaded = dataset.load()
            except Exception as exc:
                self.failure(units[0].dataset_key(), *describe(exc))
                return
            for unit in units:

                def started(method: str, u: Unit = unit) -> None:
                    bar.set_postfix_str(f"{u.where}: {method}")

                run_split(unit, loaded, settings, self, started=started, finished=bar.update)

    def run_parallel(self, units: list[Unit], settings: Settings, jobs: int, label: str) -> None:
        """``units`` in ``jobs`` worker processes, under one progress bar over units; each
        unit's rows are written when it is done."""
        if not units:
            return
        bar = tqdm(
            total=len(units),
            desc=f"{label}, {jobs} jobs",
            unit="unit",
            disable=not self.progress,
            file=sys.stderr,
        )
        executor = ProcessPoolExecutor(
            max_workers=min(jobs, len(units)),
            mp_context=worker_context(),
            initializer=_start_worker,
            initargs=(settings.threads,),
        )
        try:
            with bar:
                futures = {executor.submit(run_unit, unit, settings): unit for unit in units}
                for future in as_completed(futures):
                    unit = futures[future]
                    try:
                        record = future.result()
                    except Exception as exc:  # the worker died (e.g. out of memory)
                        self.failure(unit.key(""), *describe(exc))
                    else:
                        record.replay(self)
                    bar.set_postfix_str(f"{unit.dataset.name}, {unit.where}")
                    bar.update(1)
        except BaseException:
            executor.shutdown(wait=False, cancel_futures=True)
            raise
        executor.shutdown()


# -- in a worker process ----------------------------------------------------------------------


def worker_context() -> multiprocessing.context.BaseContext:
    """How workers start: forked from a fresh server process ("forkserver") that has
    imported this module, torch included, and run nothing; never from this process,
    where torch has run (forking that is unsafe). The server imports once (seconds)
    and stays for later runs. "spawn" where there is no forkserver (Windows)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["__main__", __name__, *WORKER_PRELOAD])
    return context


def map_in_workers(
    function: Callable[[Any], Any], units: list[Any], jobs: int, threads: int
) -> list[Any]:
    """``[function(unit) for unit in units]``, in order, in ``jobs`` worker processes
    (:func:`worker_context`) of ``threads`` torch and BLAS threads each, or in this process
    with its threads so capped when ``jobs`` is 1. For the pipelines' checks, whose units
    run no benchmark bookkeeping; ``function`` and the units must pickle."""
    if jobs <= 1:
        _start_worker(threads)
        return [function(unit) for unit in units]
    with ProcessPoolExecutor(
        jobs, mp_context=worker_context(), initializer=_start_worker, initargs=(threads,)
    ) as executor:
        return list(executor.map(function, units))


def _start_worker(threads: int) -> None:
    """Cap torch and BLAS/OpenMP threads for the worker's life; warm torch up."""
    import torch

    torch.set_num_threads(threads)
    _limit_native_threads(threads)
    warm_up_torch()


def _limit_native_threads(threads: int) -> None:
    """Cap the BLAS/OpenMP libraries loaded so far (threadpoolctl sees only those)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads)  # kept: the limits stay until the worker ends


def _load(dataset: Dataset) -> Any:
    """The last data set a worker loaded is kept: consecutive units of one data set (the
    classes and seeds of an image set) load it once per worker."""
    return _load_cached(dataset.protocol, dataset.name, dataset.location)


@functools.lru_cache(maxsize=1)
def _load_cached(protocol: str, name: str, location: Path) -> Any:
    return Dataset(protocol, name, location).load()


def run_unit(unit: Unit, settings: Settings) -> UnitRecord:
    """Run one unit in a worker; what it did comes back as a record."""
    _limit_native_threads(settings.threads)  # also libraries loaded by earlier units
    record = UnitRecord()
    try:
        loaded = _load(unit.dataset)
    except Exception as exc:
        record.failure(unit.dataset_key(), *describe(exc))
        return record
    run_split(unit, loaded, settings, record)
    return record


# -- shared -----------------------------------------------------------------------------------


def warm_up_torch() -> None:
    """Build a throw-away Adam optimizer, as training does, so that torch's lazy imports
    happen here and not in the first timed fit of a process."""
    import torch

    torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], fused=True)


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
