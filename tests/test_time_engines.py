"""pipelines/time_engines.py: the batch engines timed, with the local engine alone here
(the Spark run is in tests/test_spark.py)."""

import json
import runpy
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import run_pipeline_script

SCRIPT = Path(__file__).parents[1] / "pipelines" / "time_engines.py"

# A model that fits in a second: the script times the engines, not the model.
QUICK_YAML = """\
model: {hidden_dims: [8], latent_dim: 2}
training: {epochs: 2, min_steps: 0}
scoring: {mc_samples: 2}
"""


def script() -> dict:
    """The script's functions (run as a module, not as __main__)."""
    return runpy.run_path(str(SCRIPT))


def test_compare_tells_scores_within_float32_tolerance_from_others(tmp_path):
    compare = script()["compare"]
    local = pd.DataFrame({"id": ["a", "b"], "score": [10.0, 20.0], "is_anomaly": [False, True]})
    local.to_csv(tmp_path / "local.csv", index=False)
    for gap, agree in ((1e-7, True), (1e-2, False)):
        local.assign(score=local["score"] + gap).to_csv(tmp_path / "spark.csv", index=False)
        found = compare(tmp_path / "local.csv", tmp_path / "spark.csv")
        assert found["agree"] is agree and abs(found["max_abs_gap"] - gap) < 1e-9
    local.assign(is_anomaly=[True, True]).to_csv(tmp_path / "spark.csv", index=False)
    found = compare(tmp_path / "local.csv", tmp_path / "spark.csv")
    assert not found["agree"] and found["differing_rows_by_column"] == {"is_anomaly": 1}


@pytest.mark.slow  # a fit logged to a new MLflow store: some 10 s, most of it MLflow's
def test_the_script_times_the_local_engine_for_each_k(tmp_path, monkeypatch, capsys):
    config = tmp_path / "quick.yaml"
    config.write_text(QUICK_YAML)
    out = tmp_path / "timing.json"
    args = ["--rows", "300", "--warm-up-rows", "20", "--repeats", "2", "--engines", "local"]
    code = run_pipeline_script(
        monkeypatch,
        "time_engines.py",
        *args,
        "--explain",
        "0",
        "2",
        "--config",
        str(config),
        "--out",
        str(out),
    )
    assert code == 0
    results = json.loads(out.read_text())
    assert [(r["engine"], r["explain"], len(r["seconds"])) for r in results["runs"]] == [
        ("local", 0, 2),
        ("local", 2, 2),
    ]
    assert all(r["median_seconds"] > 0 and r["warm_up_seconds"] > 0 for r in results["runs"])
    assert results["rows"] == 300 and results["spark_session_start_seconds"] is None
    assert results["model_uri"] == "models:/time-engines/1"
    assert results["table"] in capsys.readouterr().out
    assert results["table"].startswith("| engine | K | seconds (median) |")
