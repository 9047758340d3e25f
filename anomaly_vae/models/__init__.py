"""Registry of VAE variants, found by name.

The names and the modules that define them are listed here; a variant's module (and
torch with it) is imported only when its class is asked for, so that checking a
model name (`anomaly-vae config`) takes milliseconds, not the seconds torch does.

>>> from anomaly_vae.models import get_model
>>> get_model("vae").__name__
'MLPVAE'
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from anomaly_vae.errors import ConfigError

if TYPE_CHECKING:
    from anomaly_vae.models.base import BaseVAE

# Every variant: its registry name and the module of this package that defines it (with
# @register(name), which refuses a name or module not listed here, so the two agree).
VARIANT_MODULES = {
    "vae": "vae",
    "beta-vae": "beta_vae",
    "conv-vae": "conv_vae",
    "cvae": "cvae",
    "hvae": "hvae",
    "vq-vae": "vq_vae",
}

_REGISTRY: dict[str, type[BaseVAE]] = {}


def register(name: str) -> Callable[[type[BaseVAE]], type[BaseVAE]]:
    """Class decorator: make a variant available as ``model.name = <name>``; the name must
    be listed in :data:`VARIANT_MODULES` with the class's module."""

    def decorator(cls: type[BaseVAE]) -> type[BaseVAE]:
        listed = VARIANT_MODULES.get(name)
        if listed is None or cls.__module__ != f"{__name__}.{listed}":
            raise ValueError(
                f"model name {name!r} of {cls.__module__} is not listed with that module "
                "in anomaly_vae.models.VARIANT_MODULES"
            )
        if name in _REGISTRY:
            raise ValueError(f"model name {name!r} is registered twice")
        _REGISTRY[name] = cls
        cls.registry_name = name
        return cls

    return decorator


def check_model_name(name: str) -> None:
    """ConfigError listing the names unless ``name`` is a variant (imports no model)."""
    if name not in VARIANT_MODULES:
        raise ConfigError(f"unknown model {name!r}; available: {', '.join(available_models())}")


def get_model(name: str) -> type[BaseVAE]:
    """The variant class registered as ``name``; ConfigError listing the names otherwise."""
    check_model_name(name)
    if name not in _REGISTRY:  # its module registers it on import
        importlib.import_module(f"{__name__}.{VARIANT_MODULES[name]}")
    return _REGISTRY[name]


def available_models() -> list[str]:
    return sorted(VARIANT_MODULES)


def __getattr__(name: str) -> Any:
    # BaseVAE imports torch: loaded on first use, like the variants.
    if name == "BaseVAE":
        from anomaly_vae.models.base import BaseVAE

        return BaseVAE
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "VARIANT_MODULES",
    "BaseVAE",
    "available_models",
    "check_model_name",
    "get_model",
    "register",
]
