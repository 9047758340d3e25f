"""Errors a user can fix. The CLI prints them as one line and exits non-zero."""

from __future__ import annotations

import contextlib
import json
import pickle
from collections.abc import Iterator
from pathlib import Path


class AnomalyVAEError(Exception):
    """Base of the errors caused by input, configuration or a model reference."""

    exit_code = 1  # the CLI's exit status for this error


class ConfigError(AnomalyVAEError, ValueError):
    """A configuration value or key is invalid."""


class DataError(AnomalyVAEError, ValueError):
    """Input data cannot be read or does not match what the model expects."""


class ModelNotFoundError(AnomalyVAEError, FileNotFoundError):
    """A model reference does not point at a saved detector."""


class TrackingError(AnomalyVAEError):
    """The MLflow tracking store cannot be reached, or refused what was logged."""


@contextlib.contextmanager
def reading_model(path: Path) -> Iterator[None]:
    """Turn what a damaged or edited model folder raises while it is read into a
    ModelNotFoundError naming the folder (the library's own errors pass through)."""
    try:
        yield
    except AnomalyVAEError:
        raise
    except pickle.UnpicklingError as exc:
        # torch's message suggests weights_only=False, which would run the file's code.
        raise ModelNotFoundError(
            f"{path} holds weights that are not plain tensors; they were not loaded"
        ) from exc
    except (
        json.JSONDecodeError,
        KeyError,
        TypeError,
        ValueError,
        RuntimeError,
        OSError,
        EOFError,
    ) as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        raise ModelNotFoundError(
            f"{path} is a damaged anomaly-vae model ({type(exc).__name__}: {first_line})"
        ) from exc
