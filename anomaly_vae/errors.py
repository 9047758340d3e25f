"""Errors a user can fix. The CLI prints them as one line and exits non-zero."""


class AnomalyVAEError(Exception):
    """Base of the errors caused by input, configuration or a model reference."""


class ConfigError(AnomalyVAEError, ValueError):
    """A configuration value or key is invalid."""


class DataError(AnomalyVAEError, ValueError):
    """Input data cannot be read or does not match what the model expects."""


class ModelNotFoundError(AnomalyVAEError, FileNotFoundError):
    """A model reference does not point at a saved detector."""
