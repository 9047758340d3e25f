"""Data: reading tables and turning them into features."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from anomaly_vae.data.preprocessing import TablePreprocessor
    from anomaly_vae.data.tables import as_frame, label_vector, read_table, take_rows

__all__ = ["TablePreprocessor", "as_frame", "label_vector", "read_table", "take_rows"]

# Where each public name lives. They are loaded on first use: the tables modules import
# pandas and pyarrow, which importing a sibling such as data.images (the CLI does,
# for its help text) must not pay for.
_HOMES = {
    "TablePreprocessor": "preprocessing",
    "as_frame": "tables",
    "label_vector": "tables",
    "read_table": "tables",
    "take_rows": "tables",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
