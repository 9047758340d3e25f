"""VAEDetector.explain and `score --explain`: the original columns that made a row anomalous."""

import logging
import math

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from anomaly_vae import VAEDetector
from anomaly_vae.cli import main
from anomaly_vae.errors import DataError
from anomaly_vae.explanation import REPAIR_CANDIDATES, explanation_columns
from anomaly_vae.tracking import AnomalyVAEPyfunc
from tests.conftest import mixed_table, tiny_config
from tests.test_images import bars, good_and_bad_folder

# Eight columns on a 2-D plane: each is predicted by the others (a column moved off the
# plane moves the posterior mean little, so the others stay well reconstructed)
MIXING = np.array(
    [[1.0, 0.0, 1.0, 1.0, 0.5, -0.5, 0.8, 0.3], [0.0, 1.0, 1.0, -1.0, 0.8, 0.6, -0.3, 1.0]]
)
TIGHT = [f"c{i}" for i in range(MIXING.shape[1])]  # 0.05 noise off the plane
# How far each column is moved, in the model's standard deviations for it: far enough that
# the column stands out, near enough that ranking by raw -log p(x | z) would not say so
SHIFT_SDS = 3
LOOSE_VALUE = 1.5  # `loose` in the rows explained: in its usual range (13% of rows are beyond)


def plane_rows(n: int, seed: int) -> pd.DataFrame:
    """Columns c0..c7 on a 2-D plane with little noise, the model predicts them closely
    (small decoder variance); ``loose``, independent of them, it cannot predict at all."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        rng.normal(size=(n, 2)) @ MIXING + 0.05 * rng.normal(size=(n, len(TIGHT))), columns=TIGHT
    )
    frame["loose"] = rng.normal(size=n)
    return frame


def run_score(data, model, output, *extra):
    """``anomaly-vae score DATA --model MODEL -o OUTPUT EXTRA --quiet``: the CliRunner result."""
    arguments = ["score", str(data), "--model", str(model), "-o", str(output), *extra]
    return CliRunner().invoke(main, [*arguments, "--quiet"])


@pytest.fixture(scope="module")
def plane_detector() -> VAEDetector:
    return VAEDetector(tiny_config().detector_config()).fit(plane_rows(600, seed=0))


@pytest.fixture(scope="module")
def mixed_detector() -> VAEDetector:
    config = tiny_config("data.id_column=reading_id", "data.label_column=is_fault")
    return VAEDetector(config.detector_config()).fit(mixed_table(400, seed=0))


def test_a_column_moved_off_what_the_model_predicts_is_named_first(plane_detector):
    """Each column in turn moved by SHIFT_SDS of the model's standard deviations for it,
    in an otherwise normal row."""
    detector = plane_detector
    scaled_sd = np.exp(0.5 * detector.model_.log_variance().numpy())
    names = detector.preprocessor_.feature_names
    base = pd.DataFrame(np.array([[0.4, -0.7]]) @ MIXING, columns=TIGHT).assign(loose=LOOSE_VALUE)
    rows = pd.concat([base] * len(base.columns), ignore_index=True)
    for i, column in enumerate(base.columns):
        sd = scaled_sd[names.index(column)] * detector.preprocessor_.columns[i].scale
        rows.loc[i, column] += SHIFT_SDS * sd
    why = detector.explain(rows)
    assert why["why_1"].tolist() == list(base.columns)
    assert (why["why_1_nats"] > why["why_2_nats"]).all()
    # The test can fail: ranked by raw per-feature -log p(x | z), whose log-normaliser
    # is 3 nats higher for `loose` than for the closely predicted columns, `loose` came
    # first in rows where a c column is the one moved.
    log_variance = detector.model_.log_variance().numpy()
    raw = detector.feature_surprise(rows) + 0.5 * (math.log(2 * math.pi) + log_variance)
    raw_first = base.columns[raw[:, [names.index(c) for c in base.columns]].argmax(axis=1)]
    assert (raw_first[:-1] == "loose").sum() >= len(TIGHT) // 2


def correlated_pair_rows(n: int, seed: int) -> pd.DataFrame:
    """``a`` and ``b`` nearly equal (0.05 noise), ``c0..c3`` independent of them and of
    each other, all standard normal."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=n)
    frame = pd.DataFrame({"a": a, "b": a + 0.05 * rng.normal(size=n)})
    return frame.join(pd.DataFrame(rng.normal(size=(n, 4)), columns=[f"c{i}" for i in range(4)]))


@pytest.mark.parametrize("moved", ["a", "b"])
def test_a_large_shift_of_one_of_two_related_columns_names_it_not_its_partner(moved):
    """5 training sds added to one column of a closely related pair: the posterior mean
    follows the moved value, so at the row's own posterior mean the moved column was
    reconstructed nearly right and its partner took the blame ("posterior": `why_1` was
    the moved column in 46 and 26 of the 60 rows, for a and b); what repairing each
    column would save names the moved one (59 of 60: with two columns, repairing the
    partner makes the pair agree again too, and one row's gains were within 3 nats)."""
    train = correlated_pair_rows(600, seed=0)
    detector = VAEDetector(tiny_config().detector_config()).fit(train)
    rows = correlated_pair_rows(60, seed=1)
    rows[moved] += np.resize([5.0, -5.0], len(rows)) * train[moved].std(ddof=0)
    why = detector.explain(rows)
    assert (why["why_1"] == moved).sum() >= 57, why["why_1"].value_counts().to_dict()


def test_a_wide_row_is_explained_alike_alone_and_among_others(plane_detector):
    """More columns than REPAIR_CANDIDATES: each row tries its own candidate columns."""
    assert len(plane_detector.preprocessor_.columns) > REPAIR_CANDIDATES
    rows = plane_rows(100, seed=3)
    rows.loc[::7, "c2"] += 1.0
    whole = plane_detector.explain(rows, top=3)
    assert np.isfinite(whole[["why_1_nats", "why_2_nats", "why_3_nats"]].to_numpy()).all()
    for position in (0, 49, 99):
        alone = plane_detector.explain(rows.iloc[[position]], top=3)
        pd.testing.assert_frame_equal(alone, whole.iloc[[position]], rtol=1e-6)


def test_a_top_above_the_candidates_gets_every_contribution(plane_detector):
    """explain(top=K) with K above REPAIR_CANDIDATES tries K columns: the K-th has nats
    (it had NaN, the columns past the candidates named in column order)."""
    columns = len(plane_detector.preprocessor_.columns)
    why = plane_detector.explain(plane_rows(40, seed=4), top=columns)
    nats = why[[f"why_{rank}_nats" for rank in range(1, columns + 1)]].to_numpy()
    assert np.isfinite(nats).all()


@pytest.mark.parametrize("variant", ["vae", "beta-vae", "hvae", "vq-vae"])
def test_every_table_variant_explains_rows_with_a_category(variant):
    """A categorical column's stand-in is decoded from the row of medians: VQ-VAE, whose
    latent has no prior mean, failed with a shape error when it was decoded from that."""
    config = tiny_config(
        "data.id_column=reading_id", "data.label_column=is_fault", f"model.name={variant}"
    )
    detector = VAEDetector(config.detector_config()).fit(mixed_table(300, seed=0))
    why = detector.explain(mixed_table(40, seed=1), top=4)
    assert set(why["why_1"]) <= {"machine", "temperature", "load", "vibration"}
    assert np.isfinite(why["why_1_nats"]).all()


def test_an_unseen_category_or_a_missing_value_names_its_column(mixed_detector):
    rows = mixed_table(20, seed=1)
    rows.loc[:9, "machine"] = "mill"  # not seen in training: all its one-hots at once
    rows.loc[10:, "vibration"] = np.nan  # its missing indicator, which training rarely set
    why = mixed_detector.explain(rows, top=10)
    assert why.columns.tolist() == explanation_columns(4)  # capped at the 4 scored columns
    assert why["why_1"].tolist() == ["machine"] * 10 + ["vibration"] * 10
    named = set(why[[f"why_{rank}" for rank in range(1, 5)]].to_numpy().ravel())
    assert named == {"machine", "temperature", "load", "vibration"}  # never machine=press
    assert why.index.equals(rows.index)


def test_a_conditional_model_never_names_its_condition_columns():
    config = tiny_config(
        "model.name=cvae",
        "data.condition_columns=[machine]",
        "data.id_column=reading_id",
        "data.label_column=is_fault",
        "training.epochs=20",
    )
    detector = VAEDetector(config.detector_config()).fit(mixed_table(300, seed=0))
    why = detector.explain(mixed_table(40, seed=1, anomalies=5), top=5)
    assert why.columns.tolist() == explanation_columns(3)
    named = set(why[["why_1", "why_2", "why_3"]].to_numpy().ravel())
    assert named == {"temperature", "load", "vibration"}


def test_a_row_is_explained_alike_alone_and_among_others(mixed_detector):
    rows = mixed_table(300, seed=2, anomalies=10)
    whole = mixed_detector.explain(rows)
    for position in (0, 137, 299):
        alone = mixed_detector.explain(rows.iloc[[position]])
        assert alone.index.tolist() == [position]
        pd.testing.assert_frame_equal(alone, whole.iloc[[position]], rtol=1e-6)


def test_explanations_are_refused_for_images_with_a_pointer_to_maps(tmp_path):
    config = tiny_config("training.epochs=2").detector_config()
    detector = VAEDetector(config).fit(bars(40, seed=0))
    with pytest.raises(DataError, match="--maps"):
        detector.explain(bars(2, seed=1))
    detector.save(tmp_path / "model")
    folder = good_and_bad_folder(tmp_path / "images")
    result = run_score(folder, tmp_path / "model", tmp_path / "s.csv", "--explain", "2")
    assert result.exit_code == 2
    assert "--explain is for tables" in result.output and "--maps DIR" in result.output


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_score_explain_writes_the_columns_also_when_reading_in_parts(
    mixed_detector, tmp_path, monkeypatch, suffix
):
    monkeypatch.setattr("anomaly_vae.scoring.PROGRESS_CHUNK_ROWS", 100)  # 3 parts of 300 rows
    mixed_detector.save(tmp_path / "model")
    rows = mixed_table(300, seed=3, anomalies=10)
    data = tmp_path / f"new{suffix}"
    rows.to_csv(data, index=False) if suffix == ".csv" else rows.to_parquet(data)
    output = tmp_path / f"scores{suffix}"
    result = run_score(data, tmp_path / "model", output, "--explain", "2")
    assert result.exit_code == 0, result.output
    scores = pd.read_csv(output) if suffix == ".csv" else pd.read_parquet(output)
    expected = ["reading_id", "reconstruction_error", "negative_elbo", "negative_iwae_bound"]
    assert scores.columns.tolist() == [*expected, "score", "is_anomaly", *explanation_columns(2)]
    why = mixed_detector.explain(rows.drop(columns="is_fault"), top=2)
    assert scores["why_1"].tolist() == why["why_1"].tolist()
    assert scores["why_2"].tolist() == why["why_2"].tolist()
    np.testing.assert_allclose(scores["why_1_nats"], why["why_1_nats"], rtol=1e-5)
    # Off by default: the score file keeps its columns.
    plain = run_score(data, tmp_path / "model", output)
    assert plain.exit_code == 0, plain.output
    scores = pd.read_csv(output) if suffix == ".csv" else pd.read_parquet(output)
    assert scores.columns.tolist() == [*expected, "score", "is_anomaly"]


def test_explaining_scored_rows_warns_of_their_data_once(mixed_detector, tmp_path, caplog):
    """score --explain and the logged model's explain read each row a second time: their
    warnings (an unseen category, an ignored column) came twice, and a file's count of
    the unseen category's rows doubled ("(6 rows)" for 3)."""
    mixed_detector.save(tmp_path / "model")
    rows = mixed_table(50, seed=1).assign(comment="x")
    rows.loc[:2, "machine"] = "mill"
    rows.to_csv(tmp_path / "new.csv", index=False)
    unseen = "column 'machine' holds 'mill' not seen in training (3 rows)"
    with caplog.at_level(logging.WARNING):
        result = run_score(
            tmp_path / "new.csv", tmp_path / "model", tmp_path / "s.csv", "--explain", "2"
        )
    assert result.exit_code == 0, result.output
    assert caplog.text.count(unseen) == 1, caplog.text
    assert caplog.text.count("ignoring column not seen in training: comment") == 1
    model = AnomalyVAEPyfunc()
    model.detector = mixed_detector  # as load_context sets it
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="anomaly_vae"):
        explained = model.predict(None, rows, params={"explain": 2})
    assert explained.columns[-4:].tolist() == explanation_columns(2)
    assert caplog.text.count(unseen) == 1, caplog.text


def test_score_explain_refuses_a_family_ensemble_naming_its_members(mixed_detector, tmp_path):
    from anomaly_vae.ensemble import EnsembleDetector

    train = mixed_table(400, seed=0)
    EnsembleDetector.from_members({"vae": mixed_detector}, train).save(tmp_path / "family")
    mixed_table(50, seed=1).to_csv(tmp_path / "new.csv", index=False)
    result = run_score(
        tmp_path / "new.csv", tmp_path / "family", tmp_path / "s.csv", "--explain", "1"
    )
    assert result.exit_code == 2
    assert "family ensemble" in result.output and "members/<variant>" in result.output
    assert not (tmp_path / "s.csv").exists()
    # In Python too, with the same pointer (it was an AttributeError: no explain)
    ensemble = EnsembleDetector.from_members({"vae": mixed_detector}, train)
    with pytest.raises(DataError, match=r"family ensemble.*members\[variant\]\.explain"):
        ensemble.explain(mixed_table(5, seed=1))


def test_a_top_that_is_no_whole_number_is_refused_naming_its_type(mixed_detector):
    # It failed deep in numpy ("slice indices must be integers or None")
    with pytest.raises(TypeError, match="'float' object cannot be interpreted as an integer"):
        mixed_detector.explain(mixed_table(5, seed=1), top=2.0)


@pytest.mark.parametrize("method", ["repair", "posterior"])
def test_no_rows_are_explained_as_no_rows_as_they_are_scored(mixed_detector, method):
    """A request of no rows (the served model's explain): score_frame answers it with its
    columns and no rows; explain raised numpy's AxisError."""
    rows = mixed_table(5, seed=1).iloc[:0]
    why = mixed_detector.explain(rows, top=2, method=method)
    assert why.columns.tolist() == explanation_columns(2) and why.empty
    assert why.index.equals(rows.index)
    model = AnomalyVAEPyfunc()
    model.detector = mixed_detector
    answer = model.predict(None, rows, params={"explain": 2})
    assert answer.empty and answer.columns[-4:].tolist() == explanation_columns(2)


def test_the_logged_models_explain_refuses_a_negative_count_in_its_own_words(mixed_detector):
    """A served model answers a DataError's message as a 400 error; explain's ValueError
    ("top must be at least 1", though 0 is allowed) came as MLflow's "unexpected error"."""
    from mlflow.exceptions import MlflowException

    model = AnomalyVAEPyfunc()
    model.detector = mixed_detector
    with pytest.raises(MlflowException, match=r"'explain' is how many columns.*not -1"):
        model.predict(None, mixed_table(5, seed=1), params={"explain": -1})


def test_the_logged_models_explain_keeps_a_row_per_row_of_a_repeated_index(mixed_detector):
    """Frames concatenated keep their indexes (0, 1, 2, 0, 1, 2): the explanation was
    joined on the index, and each of the 6 rows came back twice."""
    model = AnomalyVAEPyfunc()
    model.detector = mixed_detector
    part = mixed_table(3, seed=1, anomalies=1)
    frame = pd.concat([part, part])
    answer = model.predict(None, frame, params={"explain": 2})
    assert answer.index.tolist() == frame.index.tolist()
    assert answer["reading_id"].tolist() == frame["reading_id"].tolist()
    why = mixed_detector.explain(frame, top=2)
    assert answer["why_1"].tolist() == why["why_1"].tolist()
    np.testing.assert_allclose(answer["why_2_nats"], why["why_2_nats"])


def test_an_unknown_method_is_refused_naming_the_methods(mixed_detector):
    with pytest.raises(ValueError, match="available: repair, posterior"):
        mixed_detector.explain(mixed_table(5, seed=1), method="shapley")


def test_an_id_column_named_like_an_explanation_column_is_refused_before_anything_is_scored(
    tmp_path, monkeypatch
):
    """An id column `why_1` was accepted at fit and refused by `score --explain` only
    after a part of the file was scored ("the scores add ... give the new name as the id
    column (--id-col)", an option score does not take); `batch --explain` failed every
    input in turn, each recorded as failed in the ledger. Fit now refuses any name
    --explain gives a column, before it reads the data; a model fit before is refused
    with --explain, by score, batch and the logged model, before anything is scored."""
    from mlflow.exceptions import MlflowException

    from anomaly_vae.batch import LEDGER_FILE
    from anomaly_vae.scoring import score_table

    monkeypatch.chdir(tmp_path)
    table = mixed_table(300, seed=0).rename(columns={"reading_id": "why_1"})
    table.to_csv("train.csv", index=False)
    for name in ("why_1", "why_2_nats"):
        config = tiny_config(f"data.id_column={name}").detector_config()
        with pytest.raises(DataError, match=f"id column '{name}' is named as score --explain"):
            VAEDetector(config).fit(table.rename(columns={"why_1": name}))
    fit = CliRunner().invoke(
        main, ["fit", "missing.csv", "--id-col", "why_1", "--no-tracking", "--model-dir", "m"]
    )
    assert fit.exit_code == 1, fit.output  # before the file is read: it is not there
    assert "Error: the id column 'why_1' is named as score --explain names its columns" in (
        fit.output
    )
    # A model fit before fit refused the name.
    monkeypatch.setattr("anomaly_vae.detector.refuse_id_named_like_scores", lambda *_: None)
    config = tiny_config("data.id_column=why_1", "training.epochs=2").detector_config()
    VAEDetector(config).fit(table).save(tmp_path / "old")
    (tmp_path / "in").mkdir()
    table.head(40).to_csv(tmp_path / "in" / "new.csv", index=False)
    data, said = tmp_path / "in" / "new.csv", "this model's id column 'why_1' is named as"
    refused = run_score(data, tmp_path / "old", tmp_path / "s.csv", "--explain", "2")
    assert refused.exit_code == 2 and said in refused.output, refused.output
    assert "score without --explain, or refit the model" in refused.output
    assert not (tmp_path / "s.csv").exists()
    plain = run_score(data, tmp_path / "old", tmp_path / "s.csv")  # scores as before
    assert plain.exit_code == 0 and pd.read_csv(tmp_path / "s.csv").columns[0] == "why_1"
    batch = ["batch", "in", "--output-dir", "out", "--model", "old", "--no-tracking"]
    refused = CliRunner().invoke(main, [*batch, "--explain", "1"])
    assert refused.exit_code == 2 and said in refused.output, refused.output
    assert not (tmp_path / "out" / LEDGER_FILE).exists()  # no input recorded as failed
    old = VAEDetector.load(tmp_path / "old")
    with pytest.raises(DataError, match=said):  # in Python too
        score_table(data, old, tmp_path / "s.parquet", explain=1)
    model = AnomalyVAEPyfunc()
    model.detector = old
    monkeypatch.setattr(old, "score_frame", None)  # refused before it is called
    with pytest.raises(MlflowException, match=said):
        model.predict(None, table.head(3), params={"explain": 1})
