"""summary.md: the run's setting, mean AUROC/AUCPR per data set (or class) and method
with the best per row in bold, times per method, skipped methods, failures and warnings.

Built from results.csv (with the unrounded AUROC and AUCPR of unrounded.csv, and the
latest run's failures and warnings), so it covers rows of resumed runs too. Tables are
Markdown with padded columns, readable in a terminal as well.
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from anomaly_vae.benchmark.methods import registry
from anomaly_vae.benchmark.results import KEY_COLUMNS
from anomaly_vae.benchmark.tasks import IMAGE_PROTOCOL, natural_key

SUMMARY_FILE = "summary.md"
METRICS = {"aucroc": "AUROC", "aucpr": "AUCPR"}
PARTIAL = "*"  # marks a mean over fewer data sets (or classes) than the others


@dataclass
class RunInfo:
    """How the latest run was started; the rest of the summary comes from the files."""

    protocol: str
    data_dir: str
    seeds: list[int]
    classes: list[int] | None = None
    config: str = "defaults"
    threads: int = 0  # torch threads during the run (per worker with jobs > 1)
    jobs: int = 1  # worker processes running (data set, class, seed) units side by side
    rows_new: int = 0  # rows this run added to results.csv
    unchecked_rows: int = 0  # rows from before run.json: made with unknown settings
    skipped: dict[str, str] = field(default_factory=dict)
    # Read when the run starts: the code that ran, not what the checkout holds at the end.
    versions: dict[str, str] = field(default_factory=lambda: versions())


def versions() -> dict[str, str]:
    """Versions of Python and the libraries whose code produced the numbers."""
    found = {"python": platform.python_version()}
    for package in ("torch", "scikit-learn", "numpy", "pyod", "anomaly-vae"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            if package != "pyod":
                found[package] = "not installed"
    commit = _git_commit()
    if commit:
        found["anomaly-vae"] += f" (git {commit})"
    return found


def _git_commit() -> str:
    """The source checkout's commit, with ``-dirty`` for local changes; empty outside git."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=10"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return commit.stdout.strip()


def machine() -> str:
    """CPU count, platform and CPU model."""
    return f"{os.cpu_count()} CPUs, {platform.platform()}, {_cpu_model()}"


def _cpu_model() -> str:
    try:  # Linux; platform.processor() is often empty there
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _method_order(methods: list[str]) -> list[str]:
    known = [name for name in registry() if name in methods]
    return known + sorted(set(methods) - set(known))


def mean_table(results: pd.DataFrame, rows: str, metric: str) -> pd.DataFrame:
    """Mean of ``metric`` over seeds: ``rows`` (dataset or class) x method."""
    table = results.pivot_table(index=rows, columns="method", values=metric, aggfunc="mean")
    table = table[_method_order(list(table.columns))]
    return table.loc[sorted(table.index, key=lambda v: natural_key(str(v)))]


def format_table(table: pd.DataFrame, row_label: str) -> str:
    """A padded Markdown table with an overall-mean row; the best cell per row in bold.

    The overall mean of a method is the mean of its row means; a method missing some
    rows gets ``*`` after its mean and is never bold there (a mean over fewer data sets
    is not comparable with the others').
    """
    complete = table.notna().all(axis=0)
    body = [[str(index), *row] for index, row in zip(table.index, table.to_numpy(), strict=True)]
    body.append(["mean", *table.mean(axis=0).to_numpy()])
    header = [row_label, *table.columns]
    lines = []
    for number, (label, *values) in enumerate(body):
        rounded = [round(v, 2) if np.isfinite(v) else np.nan for v in values]
        if number == len(body) - 1:  # a mean over fewer rows is not comparable: never best
            rounded_complete = [
                v if ok else np.nan for v, ok in zip(rounded, complete, strict=True)
            ]
        else:
            rounded_complete = rounded
        finite = np.isfinite(rounded_complete)
        best = np.nanmax(rounded_complete) if finite.any() else np.nan
        cells = []
        for column, value in enumerate(rounded):
            text = "-" if np.isnan(value) else f"{value:.2f}"
            if number == len(body) - 1 and not complete.iloc[column] and text != "-":
                text += PARTIAL
            # rounded_complete: a partial mean tied with the best is still not bold.
            cells.append(f"**{text}**" if rounded_complete[column] == best else text)
        lines.append([label, *cells])
    return markdown_rows([header, *lines])


def markdown_rows(rows: list[list[str]]) -> str:
    """A padded Markdown table of text ``rows``, the first the header: the first column
    left-aligned, the others right-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]

    def line(row: list[str]) -> str:
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        return "| " + " | ".join(cells) + " |"

    rule = "|" + "|".join(["-" * (widths[0] + 2)] + ["-" * (w + 1) + ":" for w in widths[1:]])
    return "\n".join([line(rows[0]), rule + "|", *(line(row) for row in rows[1:])])


def markdown_frame(table: pd.DataFrame) -> str:
    """:func:`markdown_rows` of ``table``: its column names, then its cells as text."""
    return markdown_rows(
        [list(map(str, table.columns)), *(list(map(str, row)) for row in table.to_numpy())]
    )


def time_table(results: pd.DataFrame) -> str:
    """Total fit and score seconds per method, and how many fits they cover."""
    totals = results.groupby("method").agg(
        fits=("fit_s", "size"), fit_s=("fit_s", "sum"), score_s=("score_s", "sum")
    )
    totals = totals.loc[_method_order(list(totals.index))]
    rows = [["method", "fits", "total fit_s", "total score_s", "mean fit_s"]]
    for method, item in totals.iterrows():
        rows.append(
            [
                method,
                str(int(item["fits"])),
                f"{item['fit_s']:.1f}",
                f"{item['score_s']:.1f}",
                f"{item['fit_s'] / item['fits']:.2f}",
            ]
        )
    return markdown_rows(rows)


def _read(path: Path) -> pd.DataFrame:
    if not path.exists() or path.stat().st_size == 0:
        return pd.DataFrame()
    return pd.read_csv(path, dtype={"class": str, "seed": str}, keep_default_na=False)


def read_results(out: Path) -> pd.DataFrame:
    """results.csv with each row's AUROC and AUCPR unrounded where unrounded.csv has them
    (its last row of a key: a row killed before results.csv was written is run again),
    so that means are not means of values already rounded to two decimals. Column
    ``unrounded``: whether the row had them (rows of older versions do not)."""
    results = _read(out / "results.csv")
    exact = _read(out / "unrounded.csv")
    if not len(results):
        return results
    results["unrounded"] = False
    if not len(exact):
        return results
    exact = exact.drop_duplicates(KEY_COLUMNS, keep="last")
    merged = results.merge(exact, on=KEY_COLUMNS, how="left", suffixes=("", "_exact"))
    found = merged["aucroc_exact"].notna()
    for metric in METRICS:
        results[metric] = merged[f"{metric}_exact"].where(found, merged[metric])
    results["unrounded"] = found.to_numpy()
    return results


def summary_text(out: Path, run: RunInfo | None = None) -> str:
    """The text of summary.md for the run folder ``out``."""
    results = read_results(out)
    failures = _read(out / "failures.csv")
    warned = _read(out / "warnings.csv")
    protocols = sorted(results["protocol"].unique()) if len(results) else []
    if run is not None and run.protocol not in protocols:
        protocols.append(run.protocol)
    lines = [f"# Benchmark: {', '.join(protocols) or 'no results'}", ""]
    lines += _setting(results, run)
    for protocol in protocols:
        lines += _protocol_section(results[results["protocol"] == protocol], protocol)
    if run is not None and run.skipped:
        lines += ["## Skipped methods", ""]
        lines += [f"- {name}: {reason}" for name, reason in run.skipped.items()]
        lines.append("")
    if len(failures):
        lines += [f"## Failures ({len(failures)}, retried by the next run; see failures.log)", ""]
        for _, row in failures.iterrows():
            where = " / ".join(
                str(row[c]) for c in ("dataset", "class", "seed", "method") if row[c]
            )
            lines.append(f"- {where}: {row['error']}")
        lines.append("")
    if len(warned):
        lines += ["## Warnings (warnings.csv)", ""]
        grouped = warned.groupby(["category", "message"], sort=False)
        for (category, message), group in grouped:
            methods = ", ".join(_method_order(list(group["method"].unique())))
            lines.append(f"- {category} x{int(group['count'].sum())} ({methods}): {message}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _setting(results: pd.DataFrame, run: RunInfo | None) -> list[str]:
    seeds = sorted({int(s) for s in results["seed"]}) if len(results) else []
    lines = []
    if run is not None:
        lines += [
            f"- protocol: {run.protocol} (shared/PROTOCOL.md); data: `{run.data_dir}`",
            f"- seeds of this run: {', '.join(map(str, run.seeds))}"
            + (f"; classes: {', '.join(map(str, run.classes))}" if run.classes else ""),
            f"- anomaly-vae config: {run.config}",
        ]
        if run.unchecked_rows:
            lines.append(
                f"- {run.unchecked_rows} rows were in results.csv before run.json recorded "
                "what rows are made with: their config and data are unknown"
            )
    rounded = int((~results["unrounded"]).sum()) if len(results) else 0
    means = "mean over seeds of the unrounded values"
    if rounded:
        means += (
            f" (for {rounded} row{'s' if rounded != 1 else ''} of an older version: of the "
            "two-decimal values in results.csv)"
        )
    lines += [
        f"- seeds in results.csv: {', '.join(map(str, seeds)) or '-'}; rows: {len(results)}"
        + (f" ({run.rows_new} from this run)" if run is not None else ""),
        f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- machine: {machine()}" + (_parallelism(run) if run is not None else ""),
        "- versions: "
        + ", ".join(f"{k} {v}" for k, v in (run.versions if run else versions()).items()),
        "",
        f"AUROC and AUCPR in percent, {means}; the mean row is the mean over the rows. "
        f"Best per row in **bold**; `{PARTIAL}`: the method lacks some rows.",
        "",
    ]
    return lines


def _parallelism(run: RunInfo) -> str:
    threads = f"{run.threads} torch thread{'s' if run.threads != 1 else ''}" if run.threads else ""
    if run.jobs == 1:
        return f"; 1 job, {threads}" if threads else "; 1 job"
    return (
        f"; {run.jobs} jobs (worker processes) side by side, {threads or 'default threads'} "
        "each; fit_s and score_s are timed per fit inside the workers, so their totals "
        "can exceed the run's wall time"
    )


def _protocol_section(results: pd.DataFrame, protocol: str) -> list[str]:
    lines: list[str] = []
    if not len(results):
        return [f"## {protocol}", "", "No finished rows.", ""]
    results = results.astype({"aucroc": float, "aucpr": float, "fit_s": float, "score_s": float})
    groups = (
        [(name, part) for name, part in results.groupby("dataset", sort=False)]
        if protocol == IMAGE_PROTOCOL
        else [("", results)]
    )
    for name, part in groups:
        rows, label = ("class", "class") if protocol == IMAGE_PROTOCOL else ("dataset", "dataset")
        title = f"{protocol}, {name}" if name else protocol
        for metric, metric_name in METRICS.items():
            lines += [f"## {title}: mean {metric_name} (%)", ""]
            lines += [format_table(mean_table(part, rows, metric), label), ""]
    lines += [
        f"## {protocol}: time per method (seconds, all rows)",
        "",
        time_table(results),
        "",
        "fit_s is what a method costs on its own: a variant whose config equals the default "
        "detector's shares that fit (same fit_s), and the ensemble's is its members' fits "
        "plus its own build.",
        "",
    ]
    return lines


def write_summary(out: Path, run: RunInfo | None = None) -> Path:
    """Write ``out/summary.md`` from the files in ``out``; return its path."""
    path = Path(out) / SUMMARY_FILE
    path.write_text(summary_text(Path(out), run))
    return path
