"""Review in the MLflow UI: a real MLflow server on a free localhost port, against a
temporary store holding one fitted run, serves the run's metrics and every view
artifact; headless Chromium (where installed) renders the run page to a screenshot."""

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from anomaly_vae.fitting import fit_source
from tests.conftest import mixed_table, tiny_config

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
REVIEW_ARTIFACTS = {
    "plots/score_histogram.png",
    "plots/roc_curve.png",
    "plots/pr_curve.png",
    "plots/latent_means.png",
    "views/01_generated.png",
    "views/02_reconstructions.png",
    "views/03_latent_scatter.png",
    "views/04_manifold.png",
    "views/05_traversal.png",
    "views/06_interpolation.png",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("ui")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        mixed_table(400, seed=0, anomalies=20).to_csv(root / "train.csv", index=False)
        config = tiny_config("data.id_column=reading_id", "data.label_column=is_fault")
        result = fit_source(root / "train.csv", config, project_dir=root)
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            uri,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            get(f"{base}/health")
            break
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                pytest.fail("the MLflow server did not start within 90 s")
            time.sleep(0.5)
    yield base, result, root
    process.terminate()
    process.wait(timeout=30)


def test_server_serves_the_runs_metrics(server):
    base, result, _ = server
    run = json.loads(get(f"{base}/api/2.0/mlflow/runs/get?run_id={result.run.run_id}"))["run"]
    metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    assert {"auroc", "aucpr", "threshold", "val_loss", "train_loss", "val_kl"} <= set(metrics)
    assert metrics["threshold"] == pytest.approx(result.detector.threshold_)


def test_server_serves_every_view_artifact(server):
    base, result, _ = server
    run_id = result.run.run_id

    def listing(path: str) -> list[str]:
        query = urllib.parse.urlencode({"run_id": run_id, "path": path})
        files = json.loads(get(f"{base}/api/2.0/mlflow/artifacts/list?{query}")).get("files", [])
        return [f["path"] for f in files if not f["is_dir"]]

    served = set(listing("plots")) | set(listing("views"))
    assert served >= REVIEW_ARTIFACTS
    for path in sorted(REVIEW_ARTIFACTS):
        query = urllib.parse.urlencode({"path": path, "run_uuid": run_id})
        assert get(f"{base}/get-artifact?{query}")[:8] == b"\x89PNG\r\n\x1a\n", path


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="headless Chromium is not installed "
    "(Debian package chromium; .ci/run installs it where apt-get works)",
)
def test_browser_renders_the_run_page(server, tmp_path):
    base, result, _ = server
    from mlflow.tracking import MlflowClient

    experiment = MlflowClient().get_run(result.run.run_id).info.experiment_id
    run_page = f"{base}/#/experiments/{experiment}/runs/{result.run.run_id}"
    page = f"{run_page}/artifacts/views/02_reconstructions.png"
    shot = tmp_path / "run_page.png"
    subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--hide-scrollbars",
            "--window-size=1400,1000",
            "--virtual-time-budget=20000",
            f"--screenshot={shot}",
            page,
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one
    keep = Path(__file__).parents[1] / "results" / "ui"
    keep.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, keep / "run_page.png")
