"""Registry of VAE variants, found by name.

>>> from anomaly_vae.models import get_model
>>> get_model("vae").__name__
'MLPVAE'
"""

from __future__ import annotations

from collections.abc import Callable

from anomaly_vae.errors import ConfigError
from anomaly_vae.models.base import BaseVAE

_REGISTRY: dict[str, type[BaseVAE]] = {}


def register(name: str) -> Callable[[type[BaseVAE]], type[BaseVAE]]:
    """Class decorator: make a variant available as ``model.name = <name>``."""

    def decorator(cls: type[BaseVAE]) -> type[BaseVAE]:
        if name in _REGISTRY:
            raise ValueError(f"model name {name!r} is registered twice")
        _REGISTRY[name] = cls
        cls.registry_name = name
        return cls

    return decorator


def get_model(name: str) -> type[BaseVAE]:
    """The variant class registered as ``name``; ConfigError listing the names otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"unknown model {name!r}; available: {', '.join(available_models())}"
        ) from None


def available_models() -> list[str]:
    return sorted(_REGISTRY)


# Variants register themselves on import.
from anomaly_vae.models import beta_vae, conv_vae, cvae, hvae, vae, vq_vae  # noqa: E402, F401

__all__ = ["BaseVAE", "available_models", "get_model", "register"]
