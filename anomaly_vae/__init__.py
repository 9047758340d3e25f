"""anomaly-vae: anomaly detection with Variational Autoencoders.

Public API: :class:`VAEDetector` (fit / score_samples / decision_function /
predict / save / load) and the configuration dataclasses.
"""

__version__ = "0.1.0"

from anomaly_vae.config import Config, DetectorConfig, load_config
from anomaly_vae.detector import VAEDetector

__all__ = ["Config", "DetectorConfig", "VAEDetector", "__version__", "load_config"]
