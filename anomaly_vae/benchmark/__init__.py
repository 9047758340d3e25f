"""The benchmark of issue 7: our detector, its family and the baselines users would
otherwise pick, on the published protocols of shared/PROTOCOL.md.

- :mod:`~anomaly_vae.benchmark.tasks`: protocols, data sets found in a folder, splits;
- :mod:`~anomaly_vae.benchmark.methods`: the compared methods, by name;
- :mod:`~anomaly_vae.benchmark.runner`: the loop, timing, resume and failures;
- :mod:`~anomaly_vae.benchmark.results`: results.csv and the other run files;
- :mod:`~anomaly_vae.benchmark.report`: summary.md.
"""

from anomaly_vae.benchmark.runner import BenchmarkOutcome, run_benchmark

__all__ = ["BenchmarkOutcome", "run_benchmark"]
