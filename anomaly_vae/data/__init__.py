"""Data: reading tables and turning them into features."""

from anomaly_vae.data.preprocessing import TablePreprocessor
from anomaly_vae.data.tables import as_frame, label_vector, read_table, take_rows

__all__ = ["TablePreprocessor", "as_frame", "label_vector", "read_table", "take_rows"]
