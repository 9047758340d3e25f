"""Batch scoring's two engines timed on one table: the local engine against `--engine spark`.

Writes a CSV of ``--rows`` rows of a 6-column table (an id, a category, three numbers,
some missing, and a 0/1 label: :func:`table`), fits a small model (``--config``,
configs/fast.yaml by default) on 2,000 other rows of it, registers the model in a
temporary MLflow store (the Spark engine needs a ``models:/`` URI), and times
:func:`anomaly_vae.batch.run_batch` on the CSV with each engine and each ``--explain K``:

- local: the detector in this process, torch's default threads (``anomaly-vae batch``);
- spark: a ``local[2]`` session (the master ``spark-submit`` gives, under it), started
  once; per K the scorer (``SparkScorer``: the workers' check and the model's UDF) is
  made once and the timed runs use it.

Before the timed runs each engine and K scores a ``--warm-up-rows`` file once (Python
workers starting, the model loaded on them, torch's first passes); those seconds, the
session's start and the scorer's set-up are reported apart, not in the runs' times.
Each timed run writes into a fresh output folder, so nothing is skipped. The outputs of
the two engines are compared (same rows and columns; numbers within float32 tolerance,
``rtol = atol = 1e-5`` as tests/test_spark.py; text equal): ``agree`` in the results.

    PYSPARK_PYTHON=.venv/bin/python python pipelines/time_engines.py --explain 0 3 \\
        --out results/time-engines.json

``--out`` takes ``.json`` (the results) or ``.md`` (the table); the table is printed
either way. Exit code 1 when the engines' outputs disagree.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
ENGINES = ("local", "spark")
TOLERANCE = 1e-5  # rtol and atol of the scores' comparison: float32's last digits
TRAIN_ROWS = 2_000  # the model's training rows; the engines, not the model, are compared
MODEL_NAME = "time-engines"


def table(n: int, seed: int) -> pd.DataFrame:
    """``n`` normal rows of the tests' mixed table (``tests/conftest.py:mixed_table``):
    ``reading_id``, ``machine`` (3 categories), ``temperature``, ``load`` (tracks
    temperature per machine), ``vibration`` (5% missing) and the label ``is_fault`` (all
    0). Imported, not copied, so that the figures stay those of the table docs/batch.md
    names."""
    sys.path.insert(0, str(ROOT))
    from tests.conftest import mixed_table

    return mixed_table(n, seed)


@contextlib.contextmanager
def environment(**values: str) -> Iterator[None]:
    """Environment variables set for the duration, then put back as they were."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def registered_model(folder: Path, config_file: Path) -> str:
    """Fit a model on :data:`TRAIN_ROWS` rows of :func:`table` with ``config_file`` and
    register it in the MLflow store ``MLFLOW_TRACKING_URI`` names; its ``models:/`` URI."""
    from anomaly_vae.config import load_config
    from anomaly_vae.fitting import fit_source

    train = folder / "train.csv"
    table(TRAIN_ROWS, seed=0).to_csv(train, index=False)
    config = load_config(
        config_file,
        overrides=[
            "data.id_column=reading_id",
            "data.label_column=is_fault",
            "tracking.log_views=false",
            f"tracking.registered_model_name={MODEL_NAME}",
            "training.progress=false",
        ],
    )
    run = fit_source(train, config, project_dir=folder).run
    if run is None or run.model_version is None:
        raise RuntimeError("the model was not registered")
    return str(run.model_uri)


def timed(function: Any, *args: Any, **kwargs: Any) -> tuple[float, Any]:
    """``(seconds, function(*args, **kwargs))``."""
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - start, result


def commit() -> str | None:
    """The checkout's commit (short hash, ``+`` when it has changes), None outside git."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
    except OSError:
        return None
    if head.returncode:
        return None
    return head.stdout.strip() + ("+" if changed.stdout.strip() else "")


def compare(local: Path, spark: Path) -> dict[str, Any]:
    """How the two engines' outputs of one input differ: rows and columns equal, the
    largest absolute gap of the numeric columns (and of each), the count of rows whose
    ``is_anomaly`` or text columns differ, and ``agree``."""
    a, b = pd.read_csv(local), pd.read_csv(spark)
    same_shape = a.shape == b.shape and list(a.columns) == list(b.columns)
    result: dict[str, Any] = {"rows": len(a), "same_rows_and_columns": same_shape}
    if not same_shape:
        return {**result, "agree": False}
    numeric = [c for c in a.columns if pd.api.types.is_float_dtype(a[c])]
    gaps = {c: float(np.nanmax(np.abs(a[c] - b[c]), initial=0.0)) for c in numeric}
    close = all(
        np.allclose(a[c], b[c], rtol=TOLERANCE, atol=TOLERANCE, equal_nan=True) for c in numeric
    )
    others = [c for c in a.columns if c not in numeric]
    differing = {c: int((a[c].astype(str) != b[c].astype(str)).sum()) for c in others}
    result.update(
        max_abs_gap=max(gaps.values(), default=0.0),
        max_abs_gap_by_column=gaps,
        differing_rows_by_column={c: n for c, n in differing.items() if n},
        agree=close and not any(differing.values()),
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="rows of the timed CSV")
    parser.add_argument(
        "--explain", type=int, nargs="+", default=[0], metavar="K", help="values of --explain"
    )
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per engine and K")
    parser.add_argument("--warm-up-rows", type=int, default=1_000)
    parser.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES))
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "fast.yaml")
    parser.add_argument("--out", type=Path, help="results as .json, or the table as .md")
    args = parser.parse_args(argv)
    if args.out is not None and args.out.suffix not in (".json", ".md"):
        parser.error("--out must end in .json or .md")

    with tempfile.TemporaryDirectory(prefix="time-engines-") as scratch:
        folder = Path(scratch)
        paths = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
        with environment(
            MLFLOW_TRACKING_URI=f"sqlite:///{folder / 'mlflow.db'}",
            MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false",
            # Spark's Python workers import this checkout's anomaly_vae, as this process.
            PYTHONPATH=paths,
        ):
            results = measure(args, folder)
    results["table"] = markdown(results)
    print(results["table"])
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        text = results["table"] if args.out.suffix == ".md" else json.dumps(results, indent=2)
        args.out.write_text(text + "\n")
    agree = all(c["agree"] for c in results["comparisons"].values())
    if not agree:
        print("the engines' outputs disagree: see comparisons", file=sys.stderr)
    return 0 if agree else 1


def measure(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """Fit, register, and time each engine and K (see the module's docstring)."""
    import torch

    from anomaly_vae.batch import model_identity, run_batch
    from anomaly_vae.scoring import load_detector

    started = datetime.datetime.now(datetime.UTC)
    load_before = os.getloadavg()
    for name, rows, seed in (("rows", args.rows, 1), ("warm-up", args.warm_up_rows, 2)):
        (folder / name).mkdir()
        table(rows, seed).to_csv(folder / name / f"{name}.csv", index=False)
    fit_seconds, uri = timed(registered_model, folder, args.config)
    detector = load_detector(uri)
    model_id = model_identity(uri)

    session = None
    session_seconds = None
    scorers: dict[int, Any] = {}
    setup_seconds: dict[str, float] = {}
    if "spark" in args.engines:
        from pyspark.sql import SparkSession

        from anomaly_vae.spark_engine import SparkScorer, spark_session

        # One already running (a test's) is used, and left running.
        ours = SparkSession.getActiveSession() is None
        session_seconds, session = timed(spark_session)
        for k in args.explain:
            setup_seconds[f"K={k}"], scorers[k] = timed(
                SparkScorer, uri, detector, spark=session, explain_top=k
            )
    runs: list[dict[str, Any]] = []
    try:
        for k in args.explain:
            for engine in args.engines:
                scorer = scorers.get(k) if engine == "spark" else None
                label = f"{engine}-K{k}"

                def run(source: str, out: str, k: int = k, scorer: Any = scorer) -> Any:
                    report = run_batch(
                        folder / source, folder / out, detector, model_id, scorer=scorer, explain=k
                    )
                    if report.failed or len(report.scored) != 1:
                        raise RuntimeError(f"{out}: {report.failed or 'nothing scored'}")
                    return report

                warm_up, _ = timed(run, "warm-up", f"warm-up-{label}")
                seconds = [timed(run, "rows", f"{label}-{r}")[0] for r in range(args.repeats)]
                runs.append(
                    {
                        "engine": engine,
                        "explain": k,
                        "warm_up_seconds": round(warm_up, 2),
                        "seconds": [round(s, 2) for s in seconds],
                        "median_seconds": round(statistics.median(seconds), 2),
                        "rows_per_second": round(args.rows / statistics.median(seconds)),
                    }
                )
                print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    finally:
        if session is not None and ours:
            session.stop()
    comparisons = {}
    if set(ENGINES) <= set(args.engines):
        for k in args.explain:
            comparisons[f"K={k}"] = compare(
                folder / f"local-K{k}-0" / "rows.csv", folder / f"spark-K{k}-0" / "rows.csv"
            )
    return {
        "rows": args.rows,
        "explain": args.explain,
        "repeats": args.repeats,
        "warm_up_rows": args.warm_up_rows,
        "config": str(args.config),
        "commit": commit(),
        "model_uri": uri,
        "started_utc": started.isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "fit_and_register_seconds": round(fit_seconds, 1),
        "spark_session_start_seconds": None
        if session_seconds is None
        else round(session_seconds, 1),
        "spark_scorer_setup_seconds": {k: round(s, 2) for k, s in setup_seconds.items()},
        "runs": runs,
        "comparisons": comparisons,
    }


def markdown(results: dict[str, Any]) -> str:
    """The runs as a markdown table, with the engines' agreement per K."""
    lines = [
        "| engine | K | seconds (median) | each run | rows per second | warm-up (s) |",
        "|---|---:|---:|---|---:|---:|",
    ]
    for run in results["runs"]:
        each = ", ".join(f"{s:.1f}" for s in run["seconds"])
        lines.append(
            f"| {run['engine']} | {run['explain']} | {run['median_seconds']:.1f} | {each} "
            f"| {run['rows_per_second']:,} | {run['warm_up_seconds']:.1f} |"
        )
    for k, c in results["comparisons"].items():
        lines.append(
            f"\n{k}: outputs {'agree' if c['agree'] else 'DISAGREE'} "
            f"(largest gap {c.get('max_abs_gap', float('nan')):.3g}, "
            f"differing rows {c.get('differing_rows_by_column', {})})"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
