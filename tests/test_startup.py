"""Each data command says what it is doing on a terminal before it imports torch, which
(with pandas and MLflow) kept it silent for seconds; not with --quiet, nor off a terminal.

The CLI runs in a subprocess whose import hook writes a marker to stderr when torch is
first imported, and ends the process there: only start-up is run, not the work.
"""

from __future__ import annotations

import fcntl
import os
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

TORCH_MARKER = "<torch imported>"
# Stops the command at its first import of torch, after saying so on stderr.
HOOK = f"""
import os, runpy, sys

class TorchMarker:
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            sys.stderr.write({TORCH_MARKER!r} + "\\n")
            sys.stderr.flush()
            os._exit(0)
        return None

sys.meta_path.insert(0, TorchMarker())
sys.argv = ["anomaly-vae", *sys.argv[1:]]
runpy.run_module("anomaly_vae", run_name="__main__")
"""
REPO = Path(__file__).resolve().parents[1]


def start(arguments: list[str], folder: Path, terminal: bool = True) -> tuple[str, str]:
    """(stderr, stdout) of ``anomaly-vae ARGUMENTS`` run in ``folder`` up to its first
    import of torch, stderr on a pseudo-terminal (or, ``terminal=False``, a pipe)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-c", HOOK, *arguments]
    if not terminal:
        result = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
        return result.stderr, result.stdout
    controller, child = os.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    process = subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=child)
    os.close(child)
    stderr = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # EIO: the process ended and closed the terminal
            break
        if not chunk:
            break
        stderr += chunk
    stdout, _ = process.communicate(timeout=60)
    os.close(controller)
    return stderr.decode().replace("\r\n", "\n"), stdout.decode()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A folder with a small table, new.csv, and inbox/ holding a copy (batch's source)."""
    table = "a,b\n" + "".join(f"{i},{2 * i}\n" for i in range(30))
    (tmp_path / "new.csv").write_text(table)
    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / "new.csv").write_text(table)
    return tmp_path


@pytest.mark.parametrize(
    ("arguments", "line"),
    [
        (["fit", "new.csv", "--no-tracking"], "Fitting 'vae' on new.csv ..."),
        (
            ["fit", "new.csv", "--family", "--no-tracking"],
            "Fitting the VAE family on new.csv ...",
        ),
        (["score", "new.csv", "--model", "m"], "Loading the model m ..."),
        (["score", "new.csv"], "Loading the model saved last in this folder ..."),
        (
            ["calibrate", "new.csv", "--model", "m", "--method", "quantile"],
            "Loading the model m ...",
        ),
        (["view", "latents", "new.csv", "--model", "m"], "Loading the model m ..."),
        (
            ["batch", "inbox", "--output-dir", "out", "--model", "m"],
            "Scoring inbox with the model m ...",
        ),
    ],
)
def test_data_command_says_what_it_does_before_importing_torch(
    folder: Path, arguments: list[str], line: str
) -> None:
    stderr, stdout = start(arguments, folder)
    assert stderr.splitlines() == [line, TORCH_MARKER]
    assert stdout == ""  # scores and summaries on stdout stay as they were


@pytest.mark.parametrize(
    "arguments",
    [
        ["score", "new.csv", "--model", "m", "--quiet"],
        ["fit", "new.csv", "--no-tracking", "--quiet"],
    ],
)
def test_quiet_command_says_nothing_before_its_work(folder: Path, arguments: list[str]) -> None:
    stderr, _ = start(arguments, folder)
    assert stderr.splitlines() == [TORCH_MARKER]


def test_no_starting_line_off_a_terminal(folder: Path) -> None:
    # A log or cron output stays as it was: no one waits there for the first line.
    stderr, _ = start(["score", "new.csv", "--model", "m"], folder, terminal=False)
    assert stderr.splitlines() == [TORCH_MARKER]


def test_usage_error_comes_before_any_starting_line(folder: Path) -> None:
    # The default output exists: refused at once, without loading anything first.
    (folder / "new_scores.csv").write_text("row\n")
    stderr, _ = start(["score", "new.csv"], folder)
    assert TORCH_MARKER not in stderr and "Loading" not in stderr
    assert "new_scores.csv, the default output, exists" in stderr
