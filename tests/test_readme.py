"""The README's examples run as written: its quick start (`make demo`, which is
pipelines/demo.py) and its Python snippet; and the README, the reference pages in docs/
and the commands' help point only to pages and sections that exist."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from tests.conftest import correlated_normal, planted_anomalies

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def fenced_block_after(heading_or_text: str, language: str) -> str:
    """The first ```language block of the README after ``heading_or_text``."""
    start = README.index(heading_or_text)
    match = re.compile(rf"```{language}\n(.*?)```", re.S).search(README, start)
    assert match is not None, f"no {language} block after {heading_or_text!r}"
    return match.group(1)


def test_the_quick_start_runs_the_commands_the_readme_shows(tmp_path, monkeypatch):
    # `make demo` is pipelines/demo.py; its two anomaly-vae commands are quoted in the
    # README, which a change to either could leave out of step.
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the default store, in tmp
    demo = subprocess.run(
        [sys.executable, str(ROOT / "pipelines" / "demo.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    quoted = [
        line.strip()
        for line in fenced_block_after("`make demo` writes", "bash").splitlines()
        if line.strip()
    ]
    ran = [line[2:] for line in demo.stdout.splitlines() if line.startswith("$ anomaly-vae ")]
    assert ran == quoted
    # What the README says it leaves: the scored file, a tracked run, a registered model.
    scores = pd.read_csv(tmp_path / "demo" / "new_rows_scores.csv")
    new_rows = pd.read_csv(tmp_path / "demo" / "new_rows.csv")
    assert len(scores) == len(new_rows) == 114
    assert {"patient_id", "score", "is_anomaly"} <= set(scores.columns)
    assert (tmp_path / "mlruns" / "mlflow.db").is_file()
    auroc = re.search(r"AUROC (\d+\.\d+)%", demo.stdout + demo.stderr)
    assert auroc is not None and float(auroc.group(1)) > 90  # malignant vs benign rows


def test_the_python_snippet_runs_as_written(tmp_path, monkeypatch):
    snippet = fenced_block_after("## The detector in Python", "python")
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    # The names the snippet leaves to the reader; few epochs keep it quick.
    monkeypatch.setattr(
        "anomaly_vae.load_config",
        _with_overrides(["training.epochs=5", "training.min_steps=0"]),
    )
    normal = pd.DataFrame(correlated_normal(300, seed=0), columns=[f"x{i}" for i in range(6)])
    odd = pd.DataFrame(planted_anomalies(20, seed=1), columns=normal.columns)
    labelled = pd.concat([normal.iloc[:80], odd], ignore_index=True)
    namespace = {
        "normal_frame": normal,
        "new_frame": normal.iloc[:10],
        "labelled_frame": labelled,
        "labels": np.r_[np.zeros(80), np.ones(20)],
    }
    exec(compile(snippet, "README.md", "exec"), namespace)
    assert (tmp_path / "my-model" / "detector.json").is_file()
    detector = namespace["detector"]
    assert detector.calibration_["method"] == "f1"
    loaded = namespace["VAEDetector"].load("my-model")
    pd.testing.assert_frame_equal(loaded.score_frame(labelled), detector.score_frame(labelled))


def _with_overrides(extra: list[str]):
    """``load_config`` with ``extra`` overrides after the caller's."""
    from anomaly_vae.config import load_config

    def load(path=None, overrides=(), **kwargs):
        return load_config(path, [*overrides, *extra], **kwargs)

    return load


def test_every_command_the_readme_lists_exists():
    # `anomaly-vae COMMAND` lines of the usage block name real subcommands.
    from anomaly_vae.cli import main

    commands = {
        line.split()[1]
        for line in fenced_block_after("## Use it on your data", "bash").splitlines()
        if line.startswith("anomaly-vae ")
    }
    assert commands and commands <= set(main.commands)


DOC_POINTER = re.compile(r"\b(README|docs/[\w-]+\.md)(?::\s*([^)]+))?\)")
MARKDOWN_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def headings(page: Path) -> list[str]:
    """The headings of a Markdown page, as written (code blocks left out)."""
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    return [line.lstrip("#").strip() for line in text.splitlines() if re.match(r"#{1,6} ", line)]


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lowercase, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def test_the_help_points_to_documentation_that_exists():
    # `--help` sends readers to a page and section, e.g. "(docs/configuration.md: CPU
    # threads)"; when the README's detail moved to docs/, "(README: CPU threads)" was
    # left naming a section the README no longer has.
    from click.testing import CliRunner

    from anomaly_vae.cli import main

    pointers = []
    for command in [[], *([name] for name in sorted(main.commands))]:
        result = CliRunner().invoke(main, [*command, "--help"])
        assert result.exit_code == 0, result.output
        pointers += DOC_POINTER.findall(" ".join(result.output.split()))
    assert pointers  # the search finds the help's pointers
    for page, section in pointers:
        path = ROOT / ("README.md" if page == "README" else page)
        assert path.is_file(), page
        if section:
            names = [heading.lower() for heading in headings(path)]
            assert section.strip().lower() in names, (page, section, names)


def test_every_relative_link_of_the_docs_resolves():
    # The README and the reference pages link each other's sections; a heading renamed
    # or moved to another page leaves a link that GitHub opens at the page's top.
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        for target in MARKDOWN_LINK.findall(FENCE.sub("", page.read_text(encoding="utf-8"))):
            if re.match(r"[a-z]+:", target):  # http:, mailto: and the like
                continue
            path, _, fragment = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists():
                broken.append(f"{page.name}: {target}")
            elif fragment and fragment not in {anchor(h) for h in headings(linked)}:
                broken.append(f"{page.name}: {target} (no such heading)")
    assert not broken, broken
