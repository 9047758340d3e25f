"""MLflow models-from-code entry point, logged with every model.

MLflow runs this file when it loads the model; it is not imported by the package
(``set_model`` is a side effect that belongs here only).
"""

import mlflow

from anomaly_vae.tracking import AnomalyVAEPyfunc

mlflow.models.set_model(AnomalyVAEPyfunc())
