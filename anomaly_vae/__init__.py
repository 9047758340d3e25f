"""anomaly-vae: anomaly detection with Variational Autoencoders.

Public API: :class:`VAEDetector` (fit / score_samples / decision_function /
predict / save / load) and the configuration dataclasses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from anomaly_vae.config import Config, DetectorConfig, load_config

if TYPE_CHECKING:
    from anomaly_vae.detector import VAEDetector

__version__ = "0.1.0"

__all__ = ["Config", "DetectorConfig", "VAEDetector", "__version__", "load_config"]


def __getattr__(name: str) -> Any:
    # The detector imports torch (seconds): loaded on first use, so that commands that
    # never fit or score (`anomaly-vae --help`, `config`, `ui`) start without it.
    if name == "VAEDetector":
        from anomaly_vae.detector import VAEDetector

        return VAEDetector
    raise AttributeError(f"module 'anomaly_vae' has no attribute {name!r}")
