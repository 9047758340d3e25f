"""How often does `VAEDetector.explain` name the column that made a row anomalous, on real tables?

Anomalies are planted in held-out normal rows of real tables, each in one known column,
and the explanation's first (top-1) and first three (top-3) columns are checked against
it, beside two naive rules computed from the same rows: the column of largest |z-score|
against the training mean and standard deviation (a rule a user could write without a
model), and a random column (1/d, 3/d for d columns).

Per table and seed: the default detector (no override: pass ``--set`` only for trial
runs, not for figures to publish) is fit on a seeded 70% of the normal rows. Each
held-out normal row gets one planted anomaly in a seeded random column among the
eligible ones (numeric with more than ``MIN_DISTINCT`` distinct training values, so a
move is not a jump between codes), the same column for every kind, in copies of the rows:

- ``shift S``: the value moved by +S or -S (seeded) times the column's training standard
  deviation, S in ``SHIFTS``; a single large value, what the |z-score| sees best;
- ``swap``: the value replaced by that column's value in another random held-out row
  (one with a different value), which stays in the column's range and can only be
  seen as a broken relation to the other columns.

Tables: scikit-learn's bundled ones with named columns (``breast_cancer``: the benign
rows; ``wine``: cultivar 1, the largest; ``diabetes``: every row, raw units), and with
``--data-dir`` every ADBench ``.npz`` file there (its normal rows, y = 0; columns x0..x{d-1}).

    python pipelines/explain_check.py --data-dir ../shared/data/adbench \\
        --out results/explain-check --jobs 2

Writes into OUT: results.csv (hit counts per table, seed and kind), eligible.csv (the
columns eligible for planting per table and seed) and summary.md (rates in percent,
pooled over seeds), which is also printed.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import sklearn
import torch
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine

from anomaly_vae import VAEDetector, load_config
from anomaly_vae.benchmark.runner import map_in_workers
from anomaly_vae.explanation import EXPLAIN_METHOD, EXPLAIN_METHODS
from anomaly_vae.protocols import load_npz

TRAIN_FRACTION = 0.7  # of a table's normal rows, to fit on; the rest get the planted anomalies
# A column with at most this many distinct training values is left out of planting: a
# move of a few sds on a 0/1 or 1-10 code is a jump to a code never seen, not a shift.
MIN_DISTINCT = 10
SHIFTS = (1.5, 3.0, 5.0)  # training sds; 1.5 shows where the planted value stops standing out
SWAP = "swap"
TOP = 3  # the columns of the explanation checked: a reviewer reads the first few
WINE_NORMAL_CLASS = 1  # the largest cultivar (71 rows)


def sklearn_tables() -> dict[str, Callable[[], pd.DataFrame]]:
    """Loaders of the normal rows of scikit-learn's bundled tables, by name, each a frame
    with the columns named as scikit-learn names them."""

    def breast_cancer() -> pd.DataFrame:
        data = load_breast_cancer(as_frame=True)  # target 1 = benign
        return data.data[data.target == 1].reset_index(drop=True)

    def wine() -> pd.DataFrame:
        data = load_wine(as_frame=True)
        return data.data[data.target == WINE_NORMAL_CLASS].reset_index(drop=True)

    def diabetes() -> pd.DataFrame:
        # Raw units; a regression set: every row is a normal row. `sex` (2 values) is
        # not eligible for planting.
        return load_diabetes(as_frame=True, scaled=False).data

    return {"breast_cancer": breast_cancer, "wine": wine, "diabetes": diabetes}


def normal_rows(source: str) -> pd.DataFrame:
    """The normal rows of ``source``: a name of :func:`sklearn_tables` or the path of an
    ADBench ``.npz`` file (its rows with y = 0, columns x0..x{d-1}), float64."""
    loaders = sklearn_tables()
    if source in loaders:
        return loaders[source]().astype(np.float64)
    X, y = load_npz(source)
    X = X[y == 0]
    return pd.DataFrame(X, columns=[f"x{j}" for j in range(X.shape[1])])


def split_rows(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded ``(training rows, held-out rows)`` of ``n`` rows, indices."""
    order = np.random.default_rng(seed).permutation(n)
    cut = round(TRAIN_FRACTION * n)
    return np.sort(order[:cut]), np.sort(order[cut:])


def eligible_columns(train: pd.DataFrame) -> np.ndarray:
    """Positions of the columns of ``train`` with more than ``MIN_DISTINCT`` distinct values."""
    return np.flatnonzero(train.nunique().to_numpy() > MIN_DISTINCT)


@dataclass
class Plan:
    """Where and how each held-out row is to be changed: the column ``(n,)`` (position),
    the shift's sign ``(n,)`` (+1 or -1) and, for ``swap``, the donor row ``(n,)``
    (position in the held-out rows; -1 where no other row has a different value)."""

    column: np.ndarray
    sign: np.ndarray
    donor: np.ndarray


def plan_anomalies(test: pd.DataFrame, eligible: np.ndarray, rng: np.random.Generator) -> Plan:
    """One planted anomaly per row of ``test``: a random column of ``eligible``, a random
    sign and a random donor row whose value in that column differs from the row's."""
    n = len(test)
    column = rng.choice(eligible, size=n)
    sign = rng.choice([-1.0, 1.0], size=n)
    values = test.to_numpy()
    donor = np.full(n, -1)
    for row in range(n):
        others = np.flatnonzero(values[:, column[row]] != values[row, column[row]])
        if len(others):
            donor[row] = rng.choice(others)
    return Plan(column, sign, donor)


def planted(test: pd.DataFrame, plan: Plan, kind: str, sd: np.ndarray) -> pd.DataFrame:
    """Copies of the rows of ``test`` with the anomaly of ``kind`` (``SWAP`` or a shift
    in training sds ``sd (d,)``, as text: ``"3.0"``) planted in ``plan.column``; for
    ``SWAP`` only the rows that have a donor."""
    values = test.to_numpy(dtype=np.float64, copy=True)
    rows = np.arange(len(test))
    if kind == SWAP:
        rows = rows[plan.donor >= 0]
        values[rows, plan.column[rows]] = values[plan.donor[rows], plan.column[rows]]
    else:
        values[rows, plan.column] += plan.sign * float(kind) * sd[plan.column]
    return pd.DataFrame(values[rows], columns=test.columns, index=test.index[rows])


def z_ranking(values: np.ndarray, mean: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """Column positions ``(n, d)`` of each row of ``values (n, d)``, largest |z-score|
    against the training ``mean (d,)`` and ``sd (d,)`` first (ties: column order). A
    column constant in training is infinitely far off when the value differs, else 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.abs(values - mean) / sd
    z[np.isnan(z)] = 0.0  # 0 / 0: the constant column's own value
    return np.argsort(-z, axis=1, kind="stable")[:, :TOP]


def hits(ranked: np.ndarray, truth: np.ndarray, top: int) -> np.ndarray:
    """``(n,)`` bool: ``truth (n,)`` is among the first ``top`` of ``ranked (n, >= top)``."""
    return (ranked[:, :top] == truth[:, None]).any(axis=1)


@dataclass(frozen=True)
class Unit:
    """One fit: a table (:func:`normal_rows` source), its name and a seed."""

    source: str
    name: str
    seed: int
    overrides: tuple[str, ...] = ()
    method: str = EXPLAIN_METHOD


def run_unit(unit: Unit) -> tuple[list[dict], dict]:
    """Fit on the unit's training rows and check every kind: ``(results rows, eligible
    row)``, counts of rows and hits (see the module docstring)."""
    frame = normal_rows(unit.source)
    train_rows, test_rows = split_rows(len(frame), unit.seed)
    train, test = frame.iloc[train_rows], frame.iloc[test_rows]
    eligible = eligible_columns(train)
    names = list(frame.columns)
    eligible_row = {
        "dataset": unit.name,
        "seed": unit.seed,
        "columns": len(names),
        "eligible": len(eligible),
        "excluded": " ".join(n for j, n in enumerate(names) if j not in set(eligible)),
    }
    if not len(eligible):
        return [], eligible_row
    mean, sd = train.mean().to_numpy(), train.std(ddof=0).to_numpy()
    config = load_config(overrides=[f"training.seed={unit.seed}", *unit.overrides])
    start = time.perf_counter()
    detector = VAEDetector(config.detector_config()).fit(train)
    fit_s = time.perf_counter() - start
    clean_flagged = int(detector.score_frame(test)["is_anomaly"].sum())
    plan = plan_anomalies(test, eligible, np.random.default_rng([unit.seed, 1]))
    position = {name: j for j, name in enumerate(names)}
    rows = []
    for kind in [*(f"{s:g}" for s in SHIFTS), SWAP]:
        rows_planted = planted(test, plan, kind, sd)
        kept = test.index.get_indexer(rows_planted.index)
        truth = plan.column[kept]
        start = time.perf_counter()
        why = detector.explain(rows_planted, top=TOP, method=unit.method)
        explain_s = time.perf_counter() - start
        named = why[[f"why_{r}" for r in range(1, TOP + 1)]]
        # A name that is no column would count as a miss, silently: refuse it.
        assert named.isin(names).all(axis=None), "explain named a column not in the table"
        explained = named.apply(lambda column: column.map(position)).to_numpy(dtype=int)
        by_z = z_ranking(rows_planted.to_numpy(), mean, sd)
        flagged = detector.score_frame(rows_planted)["is_anomaly"].to_numpy(dtype=bool)
        moved = np.abs(rows_planted.to_numpy() - test.to_numpy()[kept])[np.arange(len(kept)), truth]
        row = {
            "dataset": unit.name,
            "seed": unit.seed,
            "kind": kind if kind == SWAP else f"shift {kind}",
            "columns": len(names),
            "eligible": len(eligible),
            "rows": len(rows_planted),
            "flagged": int(flagged.sum()),
            "clean_rows": len(test),
            "clean_flagged": clean_flagged,
            "median_move_sd": float(np.median(moved / sd[truth])),
            "fit_s": round(fit_s, 1),
            "explain_s": round(explain_s, 3),  # the explain call on these rows
            "epochs": len(detector.history_.epochs),
        }
        for method, ranked in (("vae", explained), ("z", by_z)):
            for top in (1, TOP):
                hit = hits(ranked, truth, top)
                row[f"{method}_top{top}"] = int(hit.sum())
                row[f"flagged_{method}_top{top}"] = int(hit[flagged].sum())
        rows.append(row)
    return rows, eligible_row


def percent(hits: pd.Series, rows: pd.Series) -> pd.Series:
    """``100 hits / rows``; NaN where there are no rows."""
    return 100 * hits / rows.where(rows > 0)


def markdown(table: pd.DataFrame) -> str:
    """``table`` as a Markdown table, its numbers to one decimal, text left-aligned."""
    cells = [[str(c) for c in table.columns]]
    for row in table.itertuples(index=False):
        cells.append(
            [("-" if np.isnan(v) else f"{v:.1f}") if isinstance(v, float) else str(v) for v in row]
        )
    text = [not pd.api.types.is_numeric_dtype(table[c]) for c in table.columns]
    widths = [max(len(row[i]) for row in cells) for i in range(len(table.columns))]

    def line(row: list[str]) -> str:
        padded = [
            c.ljust(w) if left else c.rjust(w) for c, w, left in zip(row, widths, text, strict=True)
        ]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join(
        "-" * (w + 2) if left else "-" * (w + 1) + ":" for w, left in zip(widths, text, strict=True)
    )
    return "\n".join([line(cells[0]), rule + "|", *(line(row) for row in cells[1:])])


def summarise(results: pd.DataFrame, eligible: pd.DataFrame, header: str) -> str:
    """The Markdown summary: rates (percent) pooled over seeds, per table and kind, on all
    planted rows and on the flagged ones; their unweighted mean over tables per kind; the
    tables' eligible columns, flagged share of clean held-out rows and fit times."""
    kinds = [*(f"shift {s:g}" for s in SHIFTS), SWAP]
    counts = [c for c in results.columns if c.endswith(("top1", f"top{TOP}"))]
    pooled = results.groupby(["dataset", "kind"]).agg(
        columns=("columns", "first"),
        rows=("rows", "sum"),
        flagged=("flagged", "sum"),
        **{c: (c, "sum") for c in counts},
    )
    pooled = pooled.reset_index()
    pooled["kind"] = pd.Categorical(pooled["kind"], kinds, ordered=True)
    pooled = pooled.sort_values(["dataset", "kind"], ignore_index=True)
    labels = pooled[["dataset", "kind"]].astype(str)
    d = pooled["columns"]
    planted = labels.assign(
        rows=pooled["rows"],
        **{"flagged %": percent(pooled["flagged"], pooled["rows"])},
        **{
            f"{method} top{top}": percent(pooled[f"{method}_top{top}"], pooled["rows"])
            for top in (1, TOP)
            for method in ("vae", "z")
        },
        **{"random top1": 100 / d, f"random top{TOP}": 100 * np.minimum(TOP, d) / d},
    )
    planted = planted[
        ["dataset", "kind", "rows", "flagged %"]
        + [f"{m} top{t}" for t in (1, TOP) for m in ("vae", "z", "random")]
    ]
    flagged = labels.assign(
        **{"flagged rows": pooled["flagged"]},
        **{
            f"{method} top{top}": percent(pooled[f"flagged_{method}_top{top}"], pooled["flagged"])
            for top in (1, TOP)
            for method in ("vae", "z")
        },
    )
    rates = [c for c in planted.columns if c not in ("dataset", "rows")]
    mean = planted[rates].groupby("kind", sort=False).mean().reset_index()
    flagged_rates = [c for c in flagged.columns if c not in ("dataset", "flagged rows")]
    flagged_mean = flagged[flagged_rates].groupby("kind", sort=False).mean().reset_index()
    per_seed = results.groupby(["dataset", "seed"]).first()
    per_table = eligible.groupby("dataset").agg(
        columns=("columns", "first"),
        eligible=("eligible", "min"),
        excluded=("excluded", lambda s: " ".join(dict.fromkeys(" ".join(s).split())) or "none"),
    )
    fits = per_seed.groupby("dataset").agg(
        clean_rows=("clean_rows", "sum"),
        clean_flagged=("clean_flagged", "sum"),
        fit_s=("fit_s", "mean"),
    )
    per_table = per_table.join(fits, how="left")
    # What one fit's explanations cost: its four kinds' explain calls, summed, in ms
    explaining = results.groupby(["dataset", "seed"]).explain_s.sum().groupby("dataset").mean()
    per_table = per_table.join((1000 * explaining).rename("explain_ms"), how="left")
    per_table["clean flagged %"] = percent(per_table["clean_flagged"], per_table["clean_rows"])
    per_table = per_table.reset_index()[
        ["dataset", "columns", "eligible", "clean flagged %", "fit_s", "explain_ms", "excluded"]
    ].rename(
        columns={
            "eligible": "eligible (min)",
            "fit_s": "mean fit_s",
            "explain_ms": "mean explain ms",
        }
    )
    per_table["clean flagged %"] = per_table["clean flagged %"].astype(float)
    return (
        f"{header}\n\n"
        "Percent of the planted rows whose planted column is the explanation's first "
        f"(top1) or among its first {TOP} (top{TOP}), pooled over seeds: vae = "
        "`VAEDetector.explain`, z = largest |z-score| against the training mean and sd, "
        f"random = 1/d and {TOP}/d. flagged % = planted rows the model flags (is_anomaly).\n\n"
        f"## Mean over tables (unweighted), all planted rows\n\n{markdown(mean)}\n\n"
        f"## Mean over tables (unweighted), flagged planted rows only\n\n"
        f"{markdown(flagged_mean)}\n\n"
        f"## Per table, all planted rows\n\n{markdown(planted)}\n\n"
        f"## Per table, flagged planted rows only\n\n{markdown(flagged)}\n\n"
        "## Tables\n\n"
        f"Eligible: columns with more than {MIN_DISTINCT} distinct training values (the "
        "fewest over seeds; excluded: in any seed). clean flagged %: held-out normal rows "
        "flagged before planting, over seeds. mean explain ms: the explain calls of one fit "
        "(its four kinds of planted rows), mean over seeds.\n\n"
        f"{markdown(per_table)}\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="folder for the results")
    parser.add_argument(
        "--data-dir", type=Path, help="also every ADBench .npz file in this folder (y = 0 rows)"
    )
    parser.add_argument(
        "--tables",
        default=",".join(sklearn_tables()),
        help="scikit-learn tables to check, comma-separated ('' for none)",
    )
    parser.add_argument("--datasets", help="only these .npz file stems of --data-dir")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument(
        "--method",
        default=EXPLAIN_METHOD,
        choices=EXPLAIN_METHODS,
        help="how explain ranks the columns (VAEDetector.explain's method)",
    )
    parser.add_argument("--jobs", type=int, default=1, help="worker processes")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        help="config override key=value (repeatable; trial runs only)",
    )
    args = parser.parse_args()
    sources = {name: name for name in args.tables.split(",") if name}
    if args.data_dir is not None:
        stems = set(args.datasets.split(",")) if args.datasets else None
        for path in sorted(args.data_dir.glob("*.npz")):
            if stems is None or path.stem in stems:
                sources[path.stem] = str(path)
    seeds = [int(s) for s in args.seeds.split(",")]
    units = [
        Unit(source, name, seed, tuple(args.overrides), args.method)
        for name, source in sources.items()
        for seed in seeds
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    outcomes = map_in_workers(run_unit, units, args.jobs, args.threads)
    wall = time.perf_counter() - start
    results = pd.DataFrame([row for rows, _ in outcomes for row in rows])
    eligible = pd.DataFrame([row for _, row in outcomes])
    results.to_csv(args.out / "results.csv", index=False)
    eligible.to_csv(args.out / "eligible.csv", index=False)
    header = (
        f"# Explanation check (method {args.method}, seeds {args.seeds}, overrides "
        f"{args.overrides or 'none'})\n\n"
        f"{len(units)} fits, {args.jobs} processes x {args.threads} torch threads, wall "
        f"{wall:.0f} s; {os.cpu_count()} CPUs, Python {platform.python_version()}, torch "
        f"{torch.__version__}, scikit-learn {sklearn.__version__}, pandas {pd.__version__}."
    )
    text = summarise(results, eligible, header)
    (args.out / "summary.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
