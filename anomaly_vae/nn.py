"""Network building blocks (architecture only, no objective)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


def mlp(
    in_features: int, hidden: Sequence[int], out_features: int, dropout: float = 0.0
) -> nn.Sequential:
    """Linear -> SiLU (-> Dropout) blocks, then a final Linear with no activation.

    Input ``(..., in_features)``, output ``(..., out_features)``.
    """
    layers: list[nn.Module] = []
    width = in_features
    for size in hidden:
        layers += [nn.Linear(width, size), nn.SiLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = size
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)
