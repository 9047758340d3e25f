"""The benchmark harness: protocol splits, methods, results files, resume, failures,
the summary and the CLI. Our own detector runs only with tiny configs."""

from __future__ import annotations

import ast
import csv
import importlib.util
import json
import re
import runpy
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from anomaly_vae.benchmark import methods as bench_methods
from anomaly_vae.benchmark import run_benchmark, runner, tasks
from anomaly_vae.benchmark.report import RunInfo, write_summary
from anomaly_vae.benchmark.results import RESULT_COLUMNS
from anomaly_vae.benchmark.tasks import PROTOCOLS, find_datasets
from anomaly_vae.cli import main
from anomaly_vae.data.images import ImageSet, write_idx_set
from anomaly_vae.detector import VAEDetector
from anomaly_vae.errors import ConfigError, DataError
from anomaly_vae.protocols import (
    MAX_ROWS,
    MIN_ROWS,
    i_oneclass_split,
    load_npz,
    t_clean_split,
    t_contaminated_split,
)
from tests.conftest import (
    TINY,
    correlated_normal,
    planted_anomalies,
    run_pipeline_script,
    traced_peak,
    traced_peaks,
)

FAST = [*TINY, "training.epochs=5"]  # our detector: seconds, not minutes
BASELINES = ["iforest", "knn", "pca"]


def write_npz(path: Path, seed: int, normal: int = 200, anomalies: int = 20) -> None:
    X = np.vstack([correlated_normal(normal, seed), planted_anomalies(anomalies, seed + 100)])
    y = np.r_[np.zeros(normal), np.ones(anomalies)].astype(int)
    np.savez(path, X=X, y=y)


@pytest.fixture
def table_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "adbench"
    folder.mkdir()
    write_npz(folder / "1_first.npz", seed=0)
    write_npz(folder / "2_second.npz", seed=1)
    return folder


def read_rows(out: Path, name: str = "results.csv") -> list[dict[str, str]]:
    with (out / name).open(newline="") as file:
        return list(csv.DictReader(file))


# -- splits -----------------------------------------------------------------------------------


def labelled_table(n: int, anomaly_share: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Column 0 is the label and column 1 a row id, so a split's rows can be traced."""
    y = (np.arange(n) < round(anomaly_share * n)).astype(int)
    X = np.column_stack([y, np.arange(n), np.random.default_rng(0).normal(size=n)])
    return X.astype(float), y


@pytest.mark.parametrize(
    ("rows", "expected", "unique"),
    [(200, MIN_ROWS, False), (3000, 3000, True), (12_000, MAX_ROWS, True)],
)
def test_t_contaminated_split_resizes_then_splits_70_30(rows, expected, unique):
    X, y = labelled_table(rows)
    X_train, X_test, y_test = t_contaminated_split(X, y, seed=0)
    assert len(X_train) + len(X_test) == expected
    assert len(X_test) == int(np.ceil(0.3 * expected))
    np.testing.assert_array_equal(X_test[:, 0], y_test)  # rows and labels stay together
    assert X_train[:, 0].sum() > 0  # training rows hold anomalies (labels ignored)
    ids = np.r_[X_train[:, 1], X_test[:, 1]]
    assert (len(np.unique(ids)) == len(ids)) == unique  # with replacement only when small


def test_t_contaminated_split_is_stratified_and_seeded():
    X, y = labelled_table(3000)  # 150 anomalies, no resizing
    _, _, y_test = t_contaminated_split(X, y, seed=0)
    assert y_test.sum() == 45  # exactly 30% of the anomalies
    again = t_contaminated_split(X, y, seed=0)
    other = t_contaminated_split(X, y, seed=1)
    np.testing.assert_array_equal(again[0], t_contaminated_split(X, y, seed=0)[0])
    assert not np.array_equal(again[0][:, 1], other[0][:, 1])
    small = labelled_table(200)
    first, second = (t_contaminated_split(*small, seed=s)[0] for s in (0, 1))
    assert not np.array_equal(np.sort(first[:, 1]), np.sort(second[:, 1]))  # resampled by seed


def test_i_oneclass_split_trains_on_one_class_and_labels_the_rest():
    images = np.arange(12, dtype=np.uint8).reshape(12, 1, 1, 1)
    train = ImageSet(images, np.array([0, 1, 2] * 4), ["a", "b", "c"])
    test = ImageSet(images[:6], np.array([0, 1, 2, 0, 1, 2]), ["a", "b", "c"])
    X_train, X_test, y_test = i_oneclass_split(train, test, 1)
    assert X_train.ravel().tolist() == [1, 4, 7, 10]
    assert len(X_test) == 6
    assert y_test.tolist() == [1, 0, 1, 1, 0, 1]
    with pytest.raises(DataError, match="no training images of class 5"):
        i_oneclass_split(train, test, 5)


@pytest.mark.parametrize(
    ("labels", "found"), [((0, -1), "found -1 in 20"), ((0.0, 0.5), "found 0.5 in 20")]
)
def test_labels_other_than_0_and_1_are_refused(tmp_path, labels, found):
    """ADBench-like files coding anomalies as -1 (or 0.5, which a cast makes 0) would
    leave the test split without anomalies, and every AUROC of the file undefined."""
    X = correlated_normal(220, seed=0)
    y = np.r_[np.full(200, labels[0]), np.full(20, labels[1])]
    np.savez(tmp_path / "coded.npz", X=X, y=y)
    with pytest.raises(DataError, match=rf"coded.npz: labels must be 0 \(normal\) or 1.*{found}"):
        load_npz(tmp_path / "coded.npz")
    with pytest.raises(DataError, match="labels must be 0"):
        t_clean_split(X, y, seed=0)
    with pytest.raises(DataError, match="labels must be 0"):
        t_contaminated_split(X, y, seed=0)
    np.savez(tmp_path / "normal.npz", X=X, y=np.zeros(220, int))
    with pytest.raises(DataError, match=r"needs both normal \(0\) and anomalous \(1\) rows"):
        load_npz(tmp_path / "normal.npz")


def test_a_float64_file_loads_without_a_second_copy_of_x(tmp_path):
    """Most ADBench files store X as float64; casting it to float64 copied it, two of X at
    once while loading (1.2 GB each for a census-sized 299,285 x 500 file: the peak
    resident memory of a T-contaminated run, 3.1 GB against 2.1 GB now). Other dtypes
    are still cast."""
    X = np.random.default_rng(0).normal(size=(100_000, 20))
    y = np.r_[np.zeros(99_000), np.ones(1_000)].astype(np.int64)
    np.savez(tmp_path / "wide.npz", X=X, y=y)
    np.savez(tmp_path / "small.npz", X=np.ones((4, 2), dtype=np.uint8), y=[0, 0, 1, 0])
    (loaded, _), peak = traced_peak(lambda: load_npz(tmp_path / "wide.npz"))
    np.testing.assert_array_equal(loaded, X)
    assert peak < 1.5 * X.nbytes  # before: 2 times
    small, _ = load_npz(tmp_path / "small.npz")
    assert small.dtype == np.float64 and small.sum() == 8.0


def test_a_corrupt_npz_is_not_a_valid_adbench_file_and_is_never_unpickled(tmp_path):
    """numpy's own message advises allow_pickle=True, which would run the file's code."""
    np.savez(tmp_path / "objects.npz", X=np.array([{"a": 1}], dtype=object), y=np.array([0]))
    (tmp_path / "text.npz").write_bytes(b"not a zip file")
    np.savez(tmp_path / "no_y.npz", X=np.zeros((3, 2)))
    expected = {
        "objects": "arrays of Python objects",
        "text": "not a zip archive",
        "no_y": "no array 'y' .arrays there: X.",
    }
    for name, reason in expected.items():
        with pytest.raises(DataError) as error:
            load_npz(tmp_path / f"{name}.npz")
        message = str(error.value)
        assert re.search(rf"{name}.npz is not a valid ADBench .npz file.*{reason}", message)
        assert "pickle" not in message and error.value.__cause__ is None


# -- methods ----------------------------------------------------------------------------------


def test_knn_scores_a_planted_far_point_highest_and_copes_with_a_constant_column():
    rng = np.random.default_rng(0)
    train = np.column_stack([rng.normal(size=(200, 3)), np.ones(200)])  # last column constant
    test = np.column_stack([rng.normal(size=(50, 3)), np.ones(50)])
    test[17, :3] = [6.0, -6.0, 6.0]
    test[3, 3] = 1.2  # off the constant value (a constant column scales by 1)
    scores = bench_methods.KNNMethod().fit(train).score(test)
    assert np.isfinite(scores).all()
    assert np.argmax(scores) == 17
    assert scores[3] > np.median(scores)


def test_baselines_flatten_images_to_unit_pixels():
    images = np.full((4, 1, 2, 2), 255, dtype=np.uint8)
    flat = bench_methods.flat_features(images)
    assert flat.shape == (4, 4) and flat.max() == 1.0


def test_pyod_methods_get_the_seed_and_no_epoch_bar(monkeypatch):
    pyod_ae = pytest.importorskip("pyod.models.auto_encoder")
    monkeypatch.setattr(bench_methods, "_warm_up_pyod", lambda detector_class: None)
    method = bench_methods.PyODMethod(pyod_ae.AutoEncoder, seed=3)
    assert method.model_.random_state == 3
    assert method.model_.verbose == 0
    assert method.model_.epoch_num == pyod_ae.AutoEncoder().epoch_num  # defaults otherwise


# -- runs -------------------------------------------------------------------------------------


def test_results_csv_has_the_protocol_columns(table_dir, tmp_path):
    out = tmp_path / "out"
    outcome = run_benchmark("t-clean", table_dir, out, seeds=[0], methods=BASELINES)
    assert not outcome.failures
    with (out / "results.csv").open() as file:
        assert file.readline().strip() == ",".join(RESULT_COLUMNS)
    rows = read_rows(out)
    assert len(rows) == 2 * len(BASELINES)
    assert {r["dataset"] for r in rows} == {"1_first", "2_second"}
    for row in rows:
        assert row["protocol"] == "t-clean" and row["class"] == "" and row["seed"] == "0"
        assert re.fullmatch(r"\d{1,3}\.\d{2}", row["aucroc"]), row
        assert re.fullmatch(r"\d{1,3}\.\d{2}", row["aucpr"]), row
        assert (int(row["n_train"]), int(row["n_test"])) == (100, 120)  # half the normals
        assert float(row["fit_s"]) >= 0 and float(row["score_s"]) >= 0
    assert min(float(r["aucroc"]) for r in rows if r["method"] == "knn") > 90
    exact = read_rows(out, "unrounded.csv")  # the same rows, every digit
    assert [(e["dataset"], e["method"]) for e in exact] == [
        (r["dataset"], r["method"]) for r in rows
    ]
    for row, unrounded in zip(rows, exact, strict=True):
        assert f"{float(unrounded['aucroc']):.2f}" == row["aucroc"]
        assert f"{float(unrounded['aucpr']):.2f}" == row["aucpr"]


def test_resume_runs_only_the_missing_rows(table_dir, tmp_path, monkeypatch):
    out = tmp_path / "out"
    run_benchmark("t-clean", table_dir, out, seeds=[0], methods=["knn", "pca"], progress=False)
    first = read_rows(out)
    fits = []
    original = bench_methods.KNNMethod.fit

    def counting_fit(self, X_train):
        fits.append(len(X_train))
        return original(self, X_train)

    monkeypatch.setattr(bench_methods.KNNMethod, "fit", counting_fit)
    again = run_benchmark("t-clean", table_dir, out, seeds=[0], methods=["knn", "pca"])
    assert fits == [] and again.rows_new == 0 and again.rows_done_before == 4
    assert read_rows(out) == first
    more = run_benchmark("t-clean", table_dir, out, seeds=[0, 1], methods=["knn", "pca"])
    assert len(fits) == 2 and more.rows_new == 4  # seed 1 only, both files
    assert read_rows(out)[:4] == first


def test_resume_refuses_rows_made_with_another_config_or_data(table_dir, tmp_path):
    """Rows are done only for the protocol, config and data they were made with (run.json);
    otherwise the run stops with one line naming the difference, changing nothing."""
    out = tmp_path / "out"

    def run(data=table_dir, overrides=("training.epochs=5",), protocol="t-clean", **kwargs):
        return run_benchmark(
            protocol, data, out, seeds=[0], methods=["knn"], overrides=overrides, **kwargs
        )

    run()
    rows = read_rows(out)
    again = run(jobs=1, threads=1)  # how a run is spread over cores is no difference
    assert again.rows_new == 0 and again.rows_done_before == 2
    with pytest.raises(ConfigError, match=r"config \(training.epochs: 5 there, 6 now\); use a new"):
        run(overrides=["training.epochs=6"])
    with pytest.raises(ConfigError, match=r"config \(model.latent_dim: 8 there, 2 now\); use"):
        run(overrides=["training.epochs=5", "model.latent_dim=2"])
    copy = shutil.copytree(table_dir, tmp_path / "copy")
    with pytest.raises(ConfigError, match=f"data in {re.escape(str(table_dir.resolve()))}, not in"):
        run(data=copy)
    with pytest.raises(ConfigError, match="made with protocol t-clean, not t-contaminated"):
        run(protocol="t-contaminated")
    write_npz(table_dir / "2_second.npz", seed=7)  # the same name, other rows
    with pytest.raises(ConfigError, match="other contents of 2_second"):
        run()
    assert read_rows(out) == rows  # refused runs changed nothing
    description = json.loads((out / "run.json").read_text())
    assert description["protocol"] == "t-clean" and description["data_dir"] == str(table_dir)
    assert (
        description["config"]["training.epochs"] == 5
        and "training.seed" not in description["config"]
    )
    assert set(description["data"]) == {"1_first", "2_second"}
    args = ["benchmark", "--protocol", "t-clean", "--data-dir", str(table_dir), "--out", str(out)]
    result = CliRunner().invoke(main, [*args, "--seeds", "0", "--methods", "knn", "--quiet"])
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert result.output.startswith(f"Error: {out} holds 2 rows made with")


def test_a_results_folder_without_run_json_resumes_with_a_note(table_dir, tmp_path, capsys):
    """A folder of an older version: its rows are resumed, said to be of unknown settings."""
    out = tmp_path / "out"
    run_benchmark("t-clean", table_dir, out, seeds=[0], methods=["knn"], progress=False)
    (out / "run.json").unlink()
    (out / "unrounded.csv").unlink()
    capsys.readouterr()
    again = run_benchmark(
        "t-clean",
        table_dir,
        out,
        seeds=[0],
        methods=["knn", "pca"],
        overrides=["training.epochs=6"],
    )
    assert again.rows_done_before == 2 and again.rows_new == 2
    assert "has no run.json (written by an older version): its 2 rows are resumed" in (
        capsys.readouterr().err
    )
    assert json.loads((out / "run.json").read_text())["unchecked_rows"] == 2
    summary = (out / "summary.md").read_text()
    assert "- 2 rows were in results.csv before run.json" in summary
    assert "for 2 rows of an older version: of the two-decimal values" in summary


def test_labels_other_than_0_and_1_fail_that_data_set_and_the_run_goes_on(table_dir, tmp_path):
    X = correlated_normal(100, seed=3)
    np.savez(table_dir / "0_coded.npz", X=X, y=np.r_[np.zeros(90), -np.ones(10)])
    out = tmp_path / "out"
    outcome = run_benchmark("t-clean", table_dir, out, seeds=[0], methods=["knn"], progress=False)
    assert list(outcome.failures) == [("t-clean", "0_coded", "", "", "")]
    assert (
        "labels must be 0 (normal) or 1 (anomaly), found -1"
        in outcome.failures[("t-clean", "0_coded", "", "", "")]
    )
    assert {r["dataset"] for r in read_rows(out)} == {"1_first", "2_second"}


def test_a_metric_that_is_not_finite_is_a_failure_retried_next_run(
    table_dir, tmp_path, monkeypatch
):
    def only_normals(X, y, seed):  # a test split without anomalies: AUROC undefined (NaN)
        return X[y == 0][:50], X[y == 0][50:], np.zeros(int((y == 0).sum()) - 50, int)

    monkeypatch.setitem(tasks.TABLE_SPLITS, "t-clean", only_normals)
    out = tmp_path / "out"
    outcome = run_benchmark("t-clean", table_dir, out, seeds=[0], methods=["knn"], progress=False)
    assert read_rows(out) == []  # no row with aucroc nan counted as done
    assert len(outcome.failures) == 2
    assert all("not finite (test labels present: 0;" in e for e in outcome.failures.values())
    monkeypatch.undo()
    again = run_benchmark("t-clean", table_dir, out, seeds=[0], methods=["knn"], progress=False)
    assert again.rows_new == 2 and not again.failures


def test_seeds_and_classes_are_checked_before_anything_runs(table_dir, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match="seeds must be 0 or more, got -1"):
        run_benchmark("t-clean", table_dir, out, seeds=[0, -1], methods=["knn"])
    with pytest.raises(ConfigError, match="classes must be 0 or more, got -2"):
        run_benchmark("i-oneclass", table_dir, out, classes=[-2], methods=["knn"])
    with pytest.raises(ConfigError, match=r"seeds must be below 2\*\*32, got 4294967296"):
        run_benchmark("t-clean", table_dir, out, seeds=[2**32], methods=["knn"])
    assert not out.exists()
    outcome = run_benchmark("t-clean", table_dir, out, seeds=[0, 0], methods=["knn"])
    assert outcome.rows_new == 2 and len(read_rows(out)) == 2  # a repeated seed runs once


def test_methods_that_suit_none_of_the_data_are_an_error(table_dir, tmp_path):
    out = tmp_path / "out"
    args = ["benchmark", "--protocol", "t-clean", "--data-dir", str(table_dir), "--out", str(out)]
    result = CliRunner().invoke(main, [*args, "--methods", "conv-vae", "--quiet"])
    assert result.exit_code == 1, result.output
    assert "none of the requested methods can run on table data (conv-vae: accepts image" in (
        result.output
    )
    assert not out.exists()


def test_failures_are_recorded_and_the_run_goes_on(table_dir, tmp_path, monkeypatch):
    (table_dir / "0_broken.npz").write_bytes(b"not a zip file")
    out = tmp_path / "out"

    def broken_fit(self, X_train):
        raise RuntimeError("pca exploded")

    monkeypatch.setattr(bench_methods.PCAMethod, "fit", broken_fit)
    args = ["benchmark", "--protocol", "t-clean", "--data-dir", str(table_dir), "--out", str(out)]
    result = CliRunner().invoke(main, [*args, "--seeds", "0", "--methods", "knn,pca", "--quiet"])
    assert result.exit_code == 1, result.output
    failures = read_rows(out, "failures.csv")
    assert {(f["dataset"], f["method"]) for f in failures} == {
        ("0_broken", ""),
        ("1_first", "pca"),
        ("2_second", "pca"),
    }
    assert "not a valid ADBench .npz file (not a zip archive)" in failures[0]["error"]
    assert "RuntimeError: pca exploded" in failures[1]["error"]
    assert {(r["dataset"], r["method"]) for r in read_rows(out)} == {
        ("1_first", "knn"),
        ("2_second", "knn"),
    }
    summary = (out / "summary.md").read_text()
    assert "## Failures (3" in summary and "pca exploded" in summary
    assert "pca exploded" in (out / "failures.log").read_text()

    monkeypatch.undo()  # the next run retries the failures
    (table_dir / "0_broken.npz").unlink()
    result = CliRunner().invoke(main, [*args, "--seeds", "0", "--methods", "knn,pca", "--quiet"])
    assert result.exit_code == 0, result.output
    assert read_rows(out, "failures.csv") == []
    assert len(read_rows(out)) == 4


def test_warnings_are_recorded_in_warnings_csv(table_dir, tmp_path, monkeypatch, caplog):
    original = bench_methods.KNNMethod.fit

    def warning_fit(self, X_train):
        import logging
        import warnings

        warnings.warn("calibration looks odd", UserWarning, stacklevel=1)
        logging.getLogger("anomaly_vae.detector").warning("too few calibration rows")
        return original(self, X_train)

    monkeypatch.setattr(bench_methods.KNNMethod, "fit", warning_fit)
    out = tmp_path / "out"
    outcome = run_benchmark("t-clean", table_dir, out, seeds=[0], methods=["knn"], progress=False)
    assert not outcome.failures and outcome.rows_new == 2
    warned = read_rows(out, "warnings.csv")
    assert [(w["dataset"], w["category"], w["message"]) for w in warned] == [
        ("1_first", "UserWarning", "calibration looks odd"),
        ("1_first", "log WARNING", "too few calibration rows"),
        ("2_second", "UserWarning", "calibration looks odd"),
        ("2_second", "log WARNING", "too few calibration rows"),
    ]
    summary = (out / "summary.md").read_text()
    assert "UserWarning x2 (knn): calibration looks odd" in summary
    assert "too few calibration rows" not in caplog.text  # recorded, not printed
    run_benchmark("t-clean", table_dir, out, seeds=[0], methods=["knn"], progress=False)
    assert read_rows(out, "warnings.csv") == warned  # resumed rows keep their warnings


def test_summary_means_are_of_the_unrounded_values(tmp_path):
    """results.csv holds two decimals; the means come from unrounded.csv where it has the
    row (its last row of a key), else from results.csv, and the summary says so."""
    exact = {0: 90.0051, 1: 90.0051, 2: 90.0001}  # as rounded: 90.01, 90.01, 90.00
    with (tmp_path / "results.csv").open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(RESULT_COLUMNS)
        for seed, auc in exact.items():
            writer.writerow(
                ["t-clean", "A", "", seed, "knn", f"{auc:.2f}", f"{auc:.2f}", 1, 1, 9, 9]
            )
        writer.writerow(["t-clean", "B", "", 0, "knn", "80.00", "70.00", 1, 1, 9, 9])
    with (tmp_path / "unrounded.csv").open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["protocol", "dataset", "class", "seed", "method", "aucroc", "aucpr"])
        writer.writerow(["t-clean", "A", "", 0, "knn", 1.0, 1.0])  # superseded by a rerun
        for seed, auc in exact.items():
            writer.writerow(["t-clean", "A", "", seed, "knn", repr(auc), repr(auc)])
    text = write_summary(tmp_path, RunInfo("t-clean", "data", [0, 1, 2])).read_text()
    auroc = text.split("mean AUROC (%)")[1].split("##")[0]
    assert re.search(r"^\| A +\| +\*\*90\.00\*\* \|$", auroc, re.MULTILINE), auroc  # not 90.01
    assert re.search(r"^\| B +\| +\*\*80\.00\*\* \|$", auroc, re.MULTILINE), auroc
    assert "mean over seeds of the unrounded values (for 1 row of an older version" in text


def test_summary_bolds_the_best_mean_per_row(tmp_path):
    rows = [  # dataset, seed, method, aucroc
        ("A", 0, "iforest", "94.00"),
        ("A", 1, "iforest", "96.00"),
        ("A", 0, "knn", "90.00"),
        ("A", 1, "knn", "90.00"),
        ("B", 0, "iforest", "70.00"),
        ("B", 0, "knn", "80.00"),
    ]
    with (tmp_path / "results.csv").open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(RESULT_COLUMNS)
        for dataset, seed, method, auc in rows:
            writer.writerow(["t-clean", dataset, "", seed, method, auc, auc, 1, 1, 10, 10])
    text = write_summary(tmp_path, RunInfo("t-clean", "data", [0, 1])).read_text()
    auroc = text.split("mean AUROC (%)")[1].split("##")[0]
    cells = {
        line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
        for line in auroc.strip().splitlines()[2:]
    }
    assert cells == {
        "A": ["**95.00**", "90.00"],
        "B": ["70.00", "**80.00**"],
        "mean": ["82.50", "**85.00**"],
    }
    assert "| method  | fits |" in text and "python" in text and "CPUs" in text


def test_pyod_is_skipped_with_a_note_when_missing(table_dir, tmp_path, monkeypatch):
    for name in ("pyod", "pyod.models", "pyod.models.vae", "pyod.models.auto_encoder"):
        monkeypatch.setitem(sys.modules, name, None)  # import fails as if not installed
    out = tmp_path / "out"
    outcome = run_benchmark(
        "t-clean",
        table_dir,
        out,
        datasets=["1_first"],
        seeds=[0],
        overrides=[*FAST, "family.variants=[vae]"],
    )
    assert set(outcome.skipped) == {"pyod-vae", "pyod-ae"}
    assert not outcome.failures
    methods = {r["method"] for r in read_rows(out)}
    assert {"knn", "anomaly-vae", "vae"} <= methods and not methods & {"pyod-vae", "pyod-ae"}
    summary = (out / "summary.md").read_text()
    assert "## Skipped methods" in summary
    assert "- pyod-vae: PyOD is not installed" in summary


def test_missing_values_in_a_table_run_every_method(tmp_path):
    folder = tmp_path / "adbench"
    folder.mkdir()
    write_npz(folder / "1_gaps.npz", seed=0)
    with np.load(folder / "1_gaps.npz") as data:
        X, y = data["X"].copy(), data["y"]
    X[::9, 4] = np.nan  # a gap in every 9th row, normal and anomalous alike
    X[1::5, 0] = np.nan
    X = np.column_stack([X, np.full(len(X), np.nan)])  # a column empty in every row
    np.savez(folder / "1_gaps.npz", X=X, y=y)
    out = tmp_path / "out"
    methods = ["anomaly-vae", "ensemble", *BASELINES, "pyod-ae"]
    outcome = run_benchmark(
        "t-clean", folder, out, seeds=[0], methods=methods, overrides=FAST, threads=1
    )
    assert not outcome.failures
    aucroc = {row["method"]: float(row["aucroc"]) for row in read_rows(out)}
    expected = set(methods) if importlib.util.find_spec("pyod") else set(methods) - {"pyod-ae"}
    assert set(aucroc) == expected
    assert min(aucroc[name] for name in ("knn", "pca")) > 80, aucroc  # the gaps are filled
    assert min(aucroc[name] for name in ("anomaly-vae", "ensemble")) > 80, aucroc


def test_our_detector_is_given_a_table_without_empty_columns_uncopied():
    """Leaving out the columns empty in every training row took every column by index
    when none was: a full copy of the training split at fit and of the test split at
    scoring (0.6 GB each for ADBench's 299,285 x 500 census under T-clean), beside what
    the detector itself holds (the features and their parts, 2.1 times X here)."""
    from anomaly_vae.config import load_config

    config = load_config(overrides=[*TINY, "training.epochs=1", "training.max_epoch_batches=1"])
    X = np.random.default_rng(0).normal(size=(20_000, 20))
    bench_methods.DetectorMethod(config, bench_methods.FitCache()).fit(X[:100])  # one-off imports
    method = bench_methods.DetectorMethod(config, bench_methods.FitCache())
    _, (fit_peak, score_peak) = traced_peaks(lambda: method.fit(X), lambda _: method.score(X))
    # 2.1 and 1.3 times X here; before, 3.1 and 2.3
    assert fit_peak < 2.5 * X.nbytes
    assert score_peak < 1.8 * X.nbytes
    with_gap = np.column_stack([X[:300], np.full(300, np.nan)])  # still left out
    method = bench_methods.DetectorMethod(config, bench_methods.FitCache()).fit(with_gap)
    assert method.detector_.n_features_in_ == 20 and method.score(with_gap).shape == (300,)


def test_median_imputation_uses_the_training_medians_and_leaves_images_alone():
    seen = []

    class Recorder:
        def fit(self, X):
            seen.append(X)
            return self

        def score(self, X):
            seen.append(X)
            return np.zeros(len(X))

    train = np.array([[1.0, np.nan], [3.0, np.nan], [np.nan, np.nan], [10.0, np.nan]])
    bench_methods.MedianImputed(Recorder()).fit(train).score(np.array([[np.nan, 7.0]]))
    np.testing.assert_array_equal(seen[0][:, 0], [1.0, 3.0, 3.0, 10.0])  # median of 1, 3, 10
    np.testing.assert_array_equal(seen[1], [[3.0, 7.0]])  # an empty column is kept
    images = np.zeros((2, 1, 2, 2), dtype=np.uint8)
    bench_methods.MedianImputed(Recorder()).fit(images)
    assert seen[2] is images


def test_pyod_autoencoder_runs_when_installed(table_dir, tmp_path, capsys):
    pytest.importorskip("pyod")
    out = tmp_path / "out"
    outcome = run_benchmark(
        "t-clean", table_dir, out, datasets=["1_first"], seeds=[0], methods=["pyod-ae"], threads=1
    )
    assert not outcome.failures
    (row,) = read_rows(out)
    assert row["method"] == "pyod-ae" and float(row["aucroc"]) > 70
    assert "Training" not in capsys.readouterr().err  # PyOD's per-epoch bar is off


def test_ensemble_reuses_the_variant_fits_and_counts_their_time(table_dir, tmp_path, monkeypatch):
    fits = []
    original = VAEDetector.fit

    def counting_fit(self, X, *args, **kwargs):
        fits.append(self.config.model.name)
        return original(self, X, *args, **kwargs)

    monkeypatch.setattr(VAEDetector, "fit", counting_fit)
    out = tmp_path / "out"
    outcome = run_benchmark(
        "t-clean",
        table_dir,
        out,
        datasets=["1_first"],
        seeds=[0],
        methods=["vae", "beta-vae", "ensemble"],
        overrides=[*FAST, "family.variants=[vae,beta-vae]"],
    )
    assert not outcome.failures
    assert sorted(fits) == ["beta-vae", "vae"]
    fit_s = {r["method"]: float(r["fit_s"]) for r in read_rows(out)}
    assert fit_s["ensemble"] >= fit_s["vae"] + fit_s["beta-vae"] - 0.002  # 3-decimal rounding


def test_jobs_2_gives_the_rows_of_jobs_1(table_dir, tmp_path):
    """Units in two worker processes: the same rows and AUROCs as in one process (one torch
    thread either way, so the fits do the same arithmetic), written by this process; a
    data set that fails to load is one failure, as in one process."""
    (table_dir / "0_broken.npz").write_bytes(b"not a zip file")
    methods = [*BASELINES, "anomaly-vae"]
    args = ["benchmark", "--protocol", "t-clean", "--data-dir", str(table_dir)]
    args += ["--seeds", "0,1", "--methods", ",".join(methods), "--threads", "1", "--quiet"]
    for override in FAST:
        args += ["--set", override]
    rows, failures = {}, {}
    for jobs in (1, 2):
        out = tmp_path / f"jobs{jobs}"
        result = CliRunner().invoke(main, [*args, "--out", str(out), "--jobs", str(jobs)])
        assert result.exit_code == 1, result.output  # the broken file
        failures[jobs] = read_rows(out, "failures.csv")
        rows[jobs] = {
            (r["dataset"], r["seed"], r["method"]): (r["aucroc"], r["aucpr"], r["n_train"])
            for r in read_rows(out)
        }
        assert len(rows[jobs]) == len(read_rows(out)) == 2 * 2 * len(methods)
    assert rows[2] == rows[1]
    assert failures[2] == failures[1]
    assert [(f["dataset"], f["seed"], f["method"]) for f in failures[2]] == [("0_broken", "", "")]
    summary = (tmp_path / "jobs2" / "summary.md").read_text()
    assert "2 jobs (worker processes) side by side, 1 torch thread each" in summary
    assert "1 job, 1 torch thread" in (tmp_path / "jobs1" / "summary.md").read_text()
    again = run_benchmark(
        "t-clean",
        table_dir,
        tmp_path / "jobs2",
        seeds=[0, 1],
        methods=methods,
        jobs=2,
        overrides=FAST,
    )
    assert again.rows_new == 0 and again.rows_done_before == 2 * 2 * len(methods)  # resumed
    assert list(again.failures) == [("t-clean", "0_broken", "", "", "")]


def test_workers_share_out_the_cpus_unless_threads_is_set(monkeypatch):
    monkeypatch.setattr(runner, "available_cpus", lambda: 8)
    assert runner.worker_threads(0, 2) == 4
    assert runner.worker_threads(0, 3) == 2
    assert runner.worker_threads(0, 16) == 1
    assert runner.worker_threads(3, 2) == 3


def fake_fashion_mnist(
    root: Path, per_class: tuple[int, int] = (40, 20), name: str = "FashionMNIST"
) -> None:
    """Two classes of 28x28 images: bright top half (0) or bright bottom half (1), in
    torchvision's MNIST layout under ``root/name``."""
    rng = np.random.default_rng(0)
    for train, n in ((True, per_class[0]), (False, per_class[1])):
        labels = np.repeat([0, 1], n)
        images = rng.integers(0, 60, size=(2 * n, 28, 28))
        images[labels == 0, :14] += 180
        images[labels == 1, 14:] += 180
        write_idx_set(root / name, train, images, labels)


def test_i_oneclass_on_a_tiny_fashion_mnist(tmp_path):
    root = tmp_path / "torchvision"
    fake_fashion_mnist(root)
    out = tmp_path / "out"
    methods = ["anomaly-vae", *BASELINES]
    outcome = run_benchmark(
        "i-oneclass", root, out, classes=[0, 1], methods=methods, overrides=FAST
    )
    assert not outcome.failures, outcome.failures
    rows = read_rows(out)
    assert sorted((r["class"], r["method"]) for r in rows) == sorted(
        (c, m) for c in ("0", "1") for m in methods
    )
    for row in rows:
        assert row["dataset"] == "FashionMNIST" and row["seed"] == "0"
        assert (row["n_train"], row["n_test"]) == ("40", "40")
        if row["method"] != "anomaly-vae":
            assert float(row["aucroc"]) > 95, row
    summary = (out / "summary.md").read_text()
    assert "i-oneclass, FashionMNIST: mean AUROC" in summary
    assert re.search(r"^\| 1 +\|", summary, re.MULTILINE)  # one row per class


def test_i_oneclass_takes_any_mnist_layout_folder_by_its_name(tmp_path):
    """A torchvision root may hold sets torchvision does not know by name (data we do not
    have are checked in the same layout); folders without the idx files are not sets."""
    root = tmp_path / "torchvision"
    fake_fashion_mnist(root, name="NotMNIST")
    fake_fashion_mnist(root, name="KMNIST")
    (root / "notes" / "raw").mkdir(parents=True)
    assert [d.name for d in find_datasets("i-oneclass", root)] == ["KMNIST", "NotMNIST"]
    out = tmp_path / "out"
    outcome = run_benchmark(
        "i-oneclass", root, out, datasets=["NotMNIST"], classes=[0, 1], methods=["knn"]
    )
    assert not outcome.failures, outcome.failures
    rows = read_rows(out)
    assert [(r["dataset"], r["class"]) for r in rows] == [("NotMNIST", "0"), ("NotMNIST", "1")]
    assert all(float(r["aucroc"]) > 95 for r in rows), rows
    with pytest.raises(DataError, match=r"no data set 'MNIST'.*KMNIST, NotMNIST"):
        find_datasets("i-oneclass", root, ["MNIST"])


# -- the command line -------------------------------------------------------------------------


def test_cli_names_the_valid_methods_and_datasets(table_dir, tmp_path):
    base = ["benchmark", "--protocol", "t-clean", "--data-dir", str(table_dir)]
    base += ["--out", str(tmp_path / "out")]
    result = CliRunner().invoke(main, [*base, "--methods", "knn,nope"])
    assert result.exit_code == 2
    assert "unknown method 'nope'" in result.output
    assert "anomaly-vae" in result.output and "pyod-ae" in result.output
    result = CliRunner().invoke(main, [*base, "--datasets", "1_first,3_third"])
    assert result.exit_code == 1
    assert "no data set '3_third'" in result.output and "1_first, 2_second" in result.output
    images = ["benchmark", "--protocol", "i-oneclass", "--data-dir", str(table_dir)]
    result = CliRunner().invoke(main, [*images, "--out", str(tmp_path / "o2")])
    assert result.exit_code == 1 and "FashionMNIST" in result.output


def test_an_unknown_model_name_is_refused_before_any_row_runs(table_dir, tmp_path):
    # It failed our detector's rows one by one (recorded in failures.csv) while the other
    # methods ran on; fit and config refuse it at once.
    out = tmp_path / "out"
    base = ["benchmark", "--protocol", "t-clean", "--data-dir", str(table_dir), "--out", str(out)]
    result = CliRunner().invoke(
        main, [*base, "--methods", "anomaly-vae,knn", "--set", "model.name=nope"]
    )
    assert result.exit_code == 1
    assert result.output.startswith("Error: unknown model 'nope'; available: beta-vae")
    assert not out.exists()


def test_a_variant_that_cannot_run_on_the_protocol_is_refused_before_any_row_runs(
    table_dir, tmp_path
):
    # conv-vae on a table protocol failed our detector's rows one by one ("accepts image
    # data, not tables") while the other methods ran on, as an unknown model name did.
    out = tmp_path / "out"
    base = ["benchmark", "--protocol", "t-clean", "--data-dir", str(table_dir), "--out", str(out)]
    result = CliRunner().invoke(
        main, [*base, "--methods", "anomaly-vae,knn", "--set", "model.name=conv-vae"]
    )
    assert result.exit_code == 1
    assert result.output == (
        "Error: model.name=conv-vae cannot run on t-clean (accepts image data, not table "
        "data): set model.name to a variant that suits table data (beta-vae, hvae, vae, "
        "vq-vae), or leave anomaly-vae out of --methods\n"
    )
    assert not out.exists()
    # No variant is for tables only; the other way round, images have one normal class
    # in i-oneclass, so a conditional variant has no condition there.
    root = tmp_path / "torchvision"
    fake_fashion_mnist(root)
    with pytest.raises(ConfigError, match=r"^model.name=cvae cannot run on i-oneclass \(cond"):
        run_benchmark("i-oneclass", root, out, classes=[0], overrides=["model.name=cvae"])
    assert not out.exists()
    # Without our detector, model.name configures nothing that runs.
    outcome = run_benchmark(
        "t-clean", table_dir, out, seeds=[0], methods=["knn"], overrides=["model.name=conv-vae"]
    )
    assert not outcome.failures and len(read_rows(out)) == 2


def test_cli_protocols_are_the_runners():
    choices = next(p for p in main.commands["benchmark"].params if p.name == "protocol")
    assert tuple(choices.type.choices) == PROTOCOLS


def test_pipeline_script_is_the_cli_command(table_dir, tmp_path, monkeypatch, capsys):
    """Its options, help and errors are those of `anomaly-vae benchmark`: no tracebacks."""
    base = ["--protocol", "t-clean", "--data-dir", str(table_dir), "--out", str(tmp_path / "o")]
    assert run_pipeline_script(monkeypatch, "benchmark.py", *base, "--methods", "knn,nope") == 2
    err = capsys.readouterr().err
    assert "Invalid value for '--methods': unknown method 'nope'; available: anomaly-vae" in err
    assert "Traceback" not in err and "Usage: python pipelines/benchmark.py [OPTIONS]" in err
    missing = ["--protocol", "t-clean", "--data-dir", str(tmp_path / "nowhere"), "--out", "o"]
    assert run_pipeline_script(monkeypatch, "benchmark.py", *missing) == 2
    assert "'--data-dir': Directory" in capsys.readouterr().err
    assert run_pipeline_script(monkeypatch, "benchmark.py", *base, "--seeds", "-1") == 2
    assert "numbers must be >= 0" in capsys.readouterr().err
    assert run_pipeline_script(monkeypatch, "benchmark.py", *base, "--datasets", "3_third") == 1
    assert "Error: no data set '3_third'" in capsys.readouterr().err
    assert run_pipeline_script(monkeypatch, "benchmark.py", "--help") == 0
    help_text = " ".join(capsys.readouterr().out.split())
    cli_help = " ".join(CliRunner().invoke(main, ["benchmark", "--help"]).output.split())
    assert help_text.split("[OPTIONS]", 1)[1] == cli_help.split("[OPTIONS]", 1)[1]
    script = Path(__file__).parents[1] / "pipelines" / "benchmark.py"
    docstring = ast.get_docstring(ast.parse(script.read_text()))
    for name in ("results.csv", "unrounded.csv", "summary.md", "warnings.csv", "failures.csv"):
        assert name in docstring
    assert "failures.log" in docstring and "run.json" in docstring


def test_pipeline_script_calls_the_same_runner(table_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    script = Path(__file__).parents[1] / "pipelines" / "benchmark.py"
    argv = [str(script), "--protocol", "t-contaminated", "--data-dir", str(table_dir)]
    argv += ["--out", str(out), "--seeds", "1", "--methods", "knn", "--quiet"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(script), run_name="__main__")
    assert exit_info.value.code == 0
    rows = read_rows(out)
    assert [(r["protocol"], r["seed"], r["n_train"], r["n_test"]) for r in rows] == [
        ("t-contaminated", "1", "700", "300"),  # 220 rows resampled to 1,000
        ("t-contaminated", "1", "700", "300"),
    ]
    assert "mean AUROC" in capsys.readouterr().out


def test_help_explains_every_option():
    result = CliRunner().invoke(main, ["benchmark", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for option in ("--protocol", "--data-dir", "--datasets", "--classes", "--seeds"):
        assert option in text
    for option in ("--methods", "--out", "--config", "--set KEY=VALUE", "--threads N", "--jobs N"):
        assert option in text
    assert "default: 0,1,2 for tables, 0 for i-oneclass" in text
    assert "pyod-vae, pyod-ae" in text and "resume" in text


# -- audit-a ----------------------------------------------------------------------------------


def test_labels_stored_as_a_column_are_read_as_one_label_per_row(tmp_path):
    X = np.arange(20.0).reshape(10, 2)
    y = np.r_[np.zeros(8), np.ones(2)].astype(int)
    np.savez(tmp_path / "column.npz", X=X, y=y.reshape(-1, 1))
    X_read, y_read = load_npz(tmp_path / "column.npz")
    assert y_read.shape == (10,) and (y_read == y).all() and X_read.shape == (10, 2)
    np.savez(tmp_path / "two.npz", X=X, y=np.c_[y, y])  # two labels per row: ambiguous
    with pytest.raises(DataError, match="y \\(n,\\)"):
        load_npz(tmp_path / "two.npz")


def test_a_torn_last_row_is_run_again_and_nothing_is_glued_to_it(table_dir, tmp_path):
    out = tmp_path / "out"
    run_benchmark("t-clean", table_dir, out, seeds=[0], methods=["knn", "pca"], progress=False)
    first = read_rows(out)
    for name, cut in (("results.csv", "t-clean,2_sec"), ("unrounded.csv", "t-clean,2_second,,0")):
        lines = (out / name).read_text().splitlines(keepends=True)
        (out / name).write_text("".join(lines[:-1]) + cut)  # killed while writing it
    torn = {name: (out / name).read_bytes() for name in ("results.csv", "unrounded.csv")}
    # A resume refused for other settings changes no file, the torn rows included.
    with pytest.raises(ConfigError, match="rows made with"):
        run_benchmark("t-clean", table_dir, out, seeds=[0], methods=["knn"], overrides=FAST)
    assert {name: (out / name).read_bytes() for name in torn} == torn
    again = run_benchmark("t-clean", table_dir, out, seeds=[0], methods=["knn", "pca"])
    assert again.rows_new == 1 and again.rows_done_before == 3 and not again.failures
    assert [r["method"] for r in read_rows(out)] == [r["method"] for r in first]
    assert [r["aucroc"] for r in read_rows(out)] == [r["aucroc"] for r in first]
    assert len(read_rows(out, "unrounded.csv")) == 4
    assert "2_second" in (out / "summary.md").read_text()


def test_a_mean_over_fewer_data_sets_is_never_bold(tmp_path):
    rows = [("A", "iforest", "90.00"), ("A", "knn", "95.00"), ("B", "iforest", "60.00")]
    with (tmp_path / "results.csv").open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(RESULT_COLUMNS)
        for dataset, method, auc in rows:
            writer.writerow(["t-clean", dataset, "", 0, method, auc, auc, 1, 1, 10, 10])
    text = write_summary(tmp_path, RunInfo("t-clean", "data", [0])).read_text()
    auroc = text.split("mean AUROC (%)")[1].split("##")[0]
    mean = next(line for line in auroc.splitlines() if line.startswith("| mean"))
    assert [c.strip() for c in mean.split("|")[2:-1]] == ["**75.00**", "95.00*"]


def test_a_partial_mean_tied_with_the_best_is_not_bold():
    from anomaly_vae.benchmark.report import format_table

    table = pd.DataFrame({"iforest": [90.0, 60.0], "knn": [75.0, np.nan]}, index=["A", "B"])
    mean = format_table(table, "data set").splitlines()[-1]
    assert [c.strip() for c in mean.split("|")[2:-1]] == ["**75.00**", "75.00*"]


def test_npz_files_of_any_suffix_case_count_and_hidden_files_do_not(tmp_path):
    write_npz(tmp_path / "lower.npz", seed=0)
    write_npz(tmp_path / "upper.npz", seed=1)  # np.savez adds ".npz" to "X.NPZ"
    (tmp_path / "upper.npz").rename(tmp_path / "UPPER.NPZ")
    write_npz(tmp_path / "._lower.npz", seed=2)  # macOS's resource-fork copy
    (tmp_path / "folder.npz").mkdir()
    found = find_datasets("t-clean", tmp_path)
    assert [d.name for d in found] == ["lower", "UPPER"]
    (tmp_path / "lower.npz").with_name("lower.NPZ").write_bytes(b"")
    with pytest.raises(DataError, match="same name"):
        find_datasets("t-clean", tmp_path)


def test_an_out_folder_that_cannot_be_made_is_a_one_line_error(table_dir, tmp_path):
    (tmp_path / "file").write_text("not a folder")
    out = tmp_path / "file" / "out"
    args = ["--protocol", "t-clean", "--data-dir", str(table_dir), "--methods", "knn"]
    result = CliRunner().invoke(main, ["benchmark", *args, "--seeds", "0", "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert "cannot make the results folder" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("features", [1, 2])
def test_pca_ranks_outliers_when_its_variance_share_needs_every_component(features):
    # Independent features of similar spread: 95% of the variance needs all of them, and
    # PCA with every component reconstructs each row, leaving rounding noise as the score.
    rng = np.random.default_rng(0)
    spread = np.array([0.1, 0.08])[:features]
    normal = 0.5 + rng.uniform(-1, 1, size=(300, features)) * spread
    test_normal = 0.5 + rng.uniform(-1, 1, size=(50, features)) * spread
    # Off the first component (feature 0, the widest): far out on the last feature.
    outliers = np.full((10, features), 0.5)
    outliers[:, -1] = rng.choice([0.0, 1.0], size=10)
    method = bench_methods.PCAMethod(seed=0).fit(normal)
    scores = method.score(np.vstack([test_normal, outliers]))
    assert method.components_.shape == (features - 1, features)
    assert scores[50:].min() > scores[:50].max()
