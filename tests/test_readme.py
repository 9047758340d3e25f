"""The README's examples run as written: its quick start (`make demo`, which is
pipelines/demo.py) and its Python snippet; and the README, the reference pages in docs/,
the commands' help and the code's comments point only to pages, sections (by link or by
name) and project files that exist."""

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


def anchors(page: Path) -> set[str]:
    """Every anchor GitHub gives a page's headings: a repeated heading's second and later
    copies get -1, -2, ... (benchmarks.md repeats "i-oneclass: time per method"), which a
    link may need to reach the copy it means."""
    seen: dict[str, int] = {}
    found = set()
    for heading in headings(page):
        base = anchor(heading)
        copies = seen.get(base, 0)
        found.add(f"{base}-{copies}" if copies else base)
        seen[base] = copies + 1
    return found


def test_a_repeated_headings_copies_get_numbered_anchors(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "# Time (s)\n\n## Time (s)\n\n```\n# Time (s)\n```\n\n### Time (s)\n", encoding="utf-8"
    )
    assert anchors(page) == {"time-s", "time-s-1", "time-s-2"}  # the fenced line is no heading


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
            elif fragment and fragment not in anchors(linked):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert not broken, broken


# A section named in prose or a comment, not linked: (tuning.md, "How high the T-clean bar
# is"), (docs/batch.md, "Speed and memory"). The name may be a heading's start or a
# paragraph's bold lead (**How high the T-clean bar is.**).
QUOTED_POINTER = re.compile(r'\b((?:docs/)?[\w-]+\.md), "([^"]+)"')
BOLD_LEAD = re.compile(r"^\*\*([^*]+)\*\*", re.M)
# A file of the project named in the docs: a pipelines/ script that produced a figure, a
# test that checks a claim, a module that holds a default.
PROJECT_PATH = re.compile(r"(?<![\w./-])((?:anomaly_vae|pipelines|tests|configs)/[\w./-]*\w)")


def _prose(path: Path) -> str:
    """The text of a page or module with its lines joined: a pointer wrapped over two
    comment lines (``# ... (docs/batch.md,\n    # "Speed and memory")``) reads as one."""
    return re.sub(r"\s*\n\s*(?:#\s*)?", " ", path.read_text(encoding="utf-8"))


def test_sections_named_in_prose_and_comments_exist():
    sources = [
        ROOT / "README.md",
        *sorted((ROOT / "docs").glob("*.md")),
        *sorted((ROOT / "anomaly_vae").rglob("*.py")),
        *sorted((ROOT / "pipelines").glob("*.py")),
    ]
    pointers = [
        (source, page, section)
        for source in sources
        for page, section in QUOTED_POINTER.findall(_prose(source))
    ]
    assert pointers  # the search finds the pointers
    broken = []
    for source, page, section in pointers:
        path = ROOT / page if page.startswith("docs/") else ROOT / "docs" / page
        if page == "README.md":
            path = ROOT / "README.md"
        text = FENCE.sub("", path.read_text(encoding="utf-8")) if path.is_file() else ""
        names = [*headings(path), *BOLD_LEAD.findall(text)] if text else []
        if not any(name.lower().startswith(section.lower()) for name in names):
            broken.append(f"{source.relative_to(ROOT)}: {page}, {section!r}")
    assert not broken, broken


def test_the_files_the_docs_name_exist():
    # The docs name the scripts behind their figures (python pipelines/time_family.py
    # ...), the tests behind their claims and the modules of the defaults; a script
    # renamed or removed leaves a figure whose command no longer exists.
    missing = [
        f"{page.name}: {name}"
        for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
        for name in PROJECT_PATH.findall(page.read_text(encoding="utf-8"))
        if not (ROOT / name).exists()
    ]
    assert not missing, missing
