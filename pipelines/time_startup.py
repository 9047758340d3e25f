"""How long does each data command of `anomaly-vae` sit silent before its first output,
and which heavy libraries does it import on the way?

    python pipelines/time_startup.py [--out results/time-startup.json] [--repeats 3]

In a temporary folder, writes a small table (``--rows`` normal Gaussian rows of 10
columns, and 100 new rows to score), fits a tiny model on it (configs/fast.yaml, no
tracking), then runs each data command (``fit`` with and without MLflow tracking,
``score``, ``calibrate``, ``view``, ``batch``) ``--repeats`` times in a fresh process,
its stderr on a pseudo-terminal (as a user at a terminal sees it; a status line and
progress bars are drawn only there) and its stdout on a pipe. For each it records the
seconds until the first byte of stderr, of stdout and of either, the whole run, and the
first line of stderr. One more run of each with ``python -X importtime`` gives the
cumulative import time of each heavy library it imports (seconds; a library imported
inside another's import counts in both) and which ones it never imports.

Prints a markdown table of the medians; with ``--out`` writes every figure as JSON.
The commands run this interpreter with ``-m anomaly_vae`` and the environment's
PYTHONPATH, so set PYTHONPATH to time a source checkout.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import re
import selectors
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FAST_CONFIG = REPO / "configs" / "fast.yaml"
# The libraries that take a noticeable share of start-up (seconds between them).
HEAVY = ("torch", "torchvision", "mlflow", "matplotlib", "sklearn", "scipy", "pandas", "pyarrow")
COLUMNS = 10
NEW_ROWS = 100


def commands(run: int) -> dict[str, list[str]]:
    """Each data command as a user would type it, on the files :func:`write_data` writes,
    its outputs named by ``run`` so that no run finds another's."""
    fast = ["--config", str(FAST_CONFIG), "--model-dir"]
    return {
        "fit": ["fit", "train.csv", *fast, f"fit-{run}"],
        "fit --no-tracking": ["fit", "train.csv", "--no-tracking", *fast, f"fitnt-{run}"],
        "score": ["score", "new.csv", "--model", "model", "--output", f"scores-{run}.csv"],
        "calibrate": [
            "calibrate",
            "new.csv",
            "--model",
            "model",
            "--method",
            "quantile",
            "--no-tracking",
            "--model-dir",
            f"cal-{run}",
        ],
        "view": ["view", "latents", "new.csv", "--model", "model", "--out", f"views-{run}"],
        "batch": [
            "batch",
            "inbox",
            "--model",
            "model",
            "--output-dir",
            f"out-{run}",
            "--no-tracking",
        ],
    }


def write_data(folder: Path, rows: int) -> None:
    """train.csv (``rows`` normal rows), new.csv and inbox/new.csv (100 rows, 5 shifted)."""
    rng = np.random.default_rng(0)
    header = ",".join(f"x{i}" for i in range(COLUMNS))
    train = rng.normal(size=(rows, COLUMNS))
    new = rng.normal(size=(NEW_ROWS, COLUMNS))
    new[:5] += 4.0
    np.savetxt(folder / "train.csv", train, delimiter=",", header=header, comments="")
    np.savetxt(folder / "new.csv", new, delimiter=",", header=header, comments="")
    (folder / "inbox").mkdir()
    np.savetxt(folder / "inbox" / "new.csv", new, delimiter=",", header=header, comments="")


def cli(arguments: list[str], *flags: str) -> list[str]:
    return [sys.executable, *flags, "-m", "anomaly_vae", *arguments]


def time_run(arguments: list[str], folder: Path, env: dict[str, str]) -> dict[str, object]:
    """One run of the CLI with stderr on a pseudo-terminal: seconds to the first byte of
    stderr, of stdout, of either, and to the end; the first line of stderr."""
    controller, terminal = os.openpty()
    # 24 rows of 80 columns: a terminal of no width, as a new pseudo-terminal is, draws
    # no progress bar.
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    started = time.perf_counter()
    process = subprocess.Popen(
        cli(arguments), cwd=folder, env=env, stdout=subprocess.PIPE, stderr=terminal
    )
    os.close(terminal)  # the child holds it; end of file once it exits
    first: dict[str, float] = {}
    stderr = b""
    selector = selectors.DefaultSelector()
    assert process.stdout is not None
    selector.register(process.stdout, selectors.EVENT_READ, "stdout")
    selector.register(controller, selectors.EVENT_READ, "stderr")
    while selector.get_map():
        for key, _ in selector.select():
            try:
                chunk = os.read(key.fd, 65536)
            except OSError:  # a pseudo-terminal whose other side closed: EIO
                chunk = b""
            if not chunk:
                selector.unregister(key.fileobj)
                continue
            first.setdefault(key.data, time.perf_counter() - started)
            if key.data == "stderr":
                stderr += chunk
    code = process.wait()
    total = time.perf_counter() - started
    os.close(controller)
    if code != 0:
        raise RuntimeError(f"{' '.join(arguments)} exited {code}: {stderr.decode()[-2000:]}")
    lines = stderr.decode(errors="replace").replace("\r", "\n").splitlines()
    return {
        "first_stderr_s": first.get("stderr"),
        "first_stdout_s": first.get("stdout"),
        "first_output_s": min(first.values()) if first else None,
        "total_s": total,
        "first_stderr_line": next((line.strip() for line in lines if line.strip()), None),
    }


def import_times(arguments: list[str], folder: Path, env: dict[str, str]) -> dict[str, float]:
    """Cumulative import seconds of each of :data:`HEAVY` the command imports (its
    top-level package's line of ``-X importtime``)."""
    result = subprocess.run(
        cli(arguments, "-X", "importtime"), cwd=folder, env=env, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(arguments)} exited {result.returncode}: {result.stderr}")
    seconds: dict[str, float] = {}
    pattern = re.compile(r"import time:\s+\d+ \|\s+(\d+) \|\s*(\S+)$")
    for line in result.stderr.splitlines():
        match = pattern.match(line)
        if match and match.group(2) in HEAVY:
            seconds[match.group(2)] = int(match.group(1)) / 1e6
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=400, help="normal rows to fit on")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each command")
    parser.add_argument("--out", type=Path, help="also write the figures here (JSON)")
    args = parser.parse_args()
    figures: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory(prefix="time-startup-") as name:
        folder = Path(name)
        write_data(folder, args.rows)
        env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}",
            "TERM": os.environ.get("TERM", "xterm"),
        }
        setup = ["fit", "train.csv", "--no-tracking", "--quiet", "--config", str(FAST_CONFIG)]
        subprocess.run(cli([*setup, "--model-dir", "model"]), cwd=folder, env=env, check=True)
        # A first tracked fit creates the MLflow store (seconds of its own, said in a line
        # of their own): the timed fits find it, as every fit after the first does.
        warm = ["fit", "train.csv", "--quiet", "--config", str(FAST_CONFIG), "--model-dir", "w"]
        subprocess.run(cli(warm), cwd=folder, env=env, check=True, capture_output=True)
        for command in commands(0):
            repeats = range(1, args.repeats + 1)
            runs = [time_run(commands(run)[command], folder, env) for run in repeats]
            imports = import_times(commands(args.repeats + 1)[command], folder, env)

            def median(key: str, runs: list[dict[str, object]] = runs) -> float | None:
                values = [run[key] for run in runs if run[key] is not None]
                return round(statistics.median(values), 2) if values else None  # type: ignore[arg-type]

            figures[command] = {
                "first_output_s": median("first_output_s"),
                "first_stderr_s": median("first_stderr_s"),
                "first_stdout_s": median("first_stdout_s"),
                "total_s": median("total_s"),
                "first_stderr_line": runs[0]["first_stderr_line"],
                "import_s": {lib: round(s, 2) for lib, s in imports.items()},
                "not_imported": [lib for lib in HEAVY if lib not in imports],
                "runs": runs,
            }
    print("| command | first output (s) | first stderr (s) | whole run (s) | first stderr line |")
    print("|---|---|---|---|---|")
    for command, row in figures.items():
        print(
            f"| {command} | {row['first_output_s']} | {row['first_stderr_s']} | "
            f"{row['total_s']} | {row['first_stderr_line']} |"
        )
    print()
    print("| command | imports (cumulative s) | not imported |")
    print("|---|---|---|")
    for command, row in figures.items():
        imported = ", ".join(f"{lib} {s}" for lib, s in row["import_s"].items())  # type: ignore[attr-defined]
        print(f"| {command} | {imported} | {', '.join(row['not_imported']) or '-'} |")  # type: ignore[arg-type]
    if args.out is not None:
        document = {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "repeats": args.repeats,
            "rows": args.rows,
            "commands": figures,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    main()
