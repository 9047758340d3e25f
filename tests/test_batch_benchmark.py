"""pipelines/batch_benchmark.py: a run's peak memory is its own."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "pipelines"))
import batch_benchmark

sys.path.pop(0)

MIB = 2**20


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads Linux's /proc")
def test_a_child_s_peak_memory_is_its_own_not_this_process_s():
    """A child that holds 200 MiB at most is measured at about that, however much more
    this process held before starting it: getrusage's ru_maxrss of RUSAGE_CHILDREN,
    which the script read before, starts each child at its parent's peak (through fork
    and exec), so it gave this process's 512 MiB and more."""
    held = np.ones(512 * MIB // 8)  # written, so resident: this process's peak exceeds it
    del held
    seconds, peak_mib = batch_benchmark.measured(
        "timeit", "-n", "1", "-r", "1", f"b'x' * {200 * MIB}"
    )
    assert 200 <= peak_mib < 400  # the bytes, plus the interpreter
    assert seconds > 0
